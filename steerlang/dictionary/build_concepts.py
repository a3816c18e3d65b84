"""Build the joint concept set of a dictionary set: align, name, group, measure.

Inputs: a model, its image and text SAEs at every layer (`saes.json`), and harvested activations of
training scenes and held-out scenes (toy world: the rendered ground truth is known exactly).

Per layer:
1. Encode every image patch and every caption token with its modality's SAE (sparse codes).
2. Name every live latent from its top-activating scenes (TF-IDF of their captions) and score the
   name by detection on held-out scenes.
3. Align image latents with text latents (Hungarian on scene-pooled activation correlation):
   matched pairs are joint; the rest stay modality-specific.
4. For each name that names an object kind, form a *latent group* per modality: image latents that
   carry the name, chosen greedily (at most `max_group` latents) to keep patch precision high while
   adding recall; text latents that fire on the word. The group's scale is its typical activation
   and its threshold the lowest that keeps training precision above `min_precision`.
   Image groups read their latents *before* TopK (encoder pre-activations, `choose_pre_group`):
   each latent gets its own precise threshold, and the group fires where any latent passes its
   own. A latent that marks a cat's patch can lose the TopK there to latents other kinds share;
   its pre-activation still says "cat". This is done where image states cannot see the prompt
   (`image_read="pre"`: the LM input, or every layer when the image precedes the text). Where they
   can (the toy model reads the question first, so layers >= 1), per-latent thresholds set under
   the describe prompt do not transfer to questions; there the group is a signed weighted sum of
   up to 32 latents' pre-activations (`choose_linear_group`, `image_read="linear"`) fitted on
   states harvested under describe prompts and yes/no questions together. The fallback, when no
   such group is precise enough, reads TopK codes (`choose_image_group`).
   Text groups are latents that fire on the word, or, where that is less accurate on training
   tokens, a signed sum of pre-activations (`choose_text_group`).
5. Retrieval over the kinds' joint concepts, with and without reading order (`concept_codes`).
A concept is then one variable across layers: same name, one group per (layer, modality).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from steerlang.dictionary.align import (
    align,
    caption_recall,
    map_image_to_text,
    retrieval_recall,
    strict_ceiling,
)
from steerlang.dictionary.concept_codes import (
    ConceptCodes,
    concept_recall,
    grid_position,
    sample_codes,
    token_index,
)
from steerlang.dictionary.name import (
    LatentEvidence,
    TfidfNamer,
    balanced_accuracy,
    detection_score,
    top_samples,
)
from steerlang.dictionary.sae import SAE
from steerlang.dictionary.source import ActivationSource
from steerlang.world.scenes import IMAGE_SIZE, KINDS, PATCH_SIZE, make_scene, patch_pixel_counts

GRID = IMAGE_SIZE // PATCH_SIZE  # patches per image row

BACKGROUND = len(KINDS)  # label of a patch with no object pixel
STRICT_PIXELS = 8  # ground truth: a patch belongs to an object when >= 8 of its pixels do


@dataclass
class Codes:
    """Sparse SAE codes of a set of rows: top entries per row (values > 0 only count)."""

    idx: Tensor  # [N, m] int64
    val: Tensor  # [N, m] float32

    @classmethod
    def encode(cls, sae: SAE, x: Tensor, m: int = 32, batch: int = 8192) -> Codes:
        idxs, vals = [], []
        with torch.no_grad():
            for chunk in x.split(batch):
                z = sae.encode(chunk)
                v, i = z.topk(min(m, z.shape[1]), dim=1)
                idxs.append(i)
                vals.append(v)
        return cls(torch.cat(idxs), torch.cat(vals))

    def group(self, latents: Sequence[int], weights: Sequence[float] | None = None) -> Tensor:
        """Raw group activation per row: sum_i w_i z_i  [N]."""
        w = torch.zeros(max(int(self.idx.max()) + 1, max(latents) + 1))
        w[list(latents)] = torch.tensor(list(weights) if weights is not None else [1.0] * len(latents))
        return (w[self.idx] * self.val).sum(1)

    def pooled(self, groups: Tensor, n_groups: int, d_sae: int) -> np.ndarray:
        """Max activation of every latent within each group of rows (e.g. a scene): [n_groups, d_sae]."""
        out = torch.zeros(n_groups, d_sae)
        rows = groups[:, None].expand_as(self.idx)
        flat = rows * d_sae + self.idx
        out.view(-1).scatter_reduce_(0, flat.reshape(-1), self.val.reshape(-1).clamp(min=0), reduce="amax")
        return out.numpy()

    def fire_counts(self, labels: Tensor, n_labels: int, d_sae: int) -> np.ndarray:
        """[d_sae, n_labels]: on how many rows of each label each latent fires."""
        fired = self.val > 0
        key = self.idx[fired] * n_labels + labels[:, None].expand_as(self.idx)[fired]
        return torch.bincount(key, minlength=d_sae * n_labels).reshape(d_sae, n_labels).numpy()


@dataclass
class Split:
    """Rows of one layer for one set of scenes, with their ground truth."""

    x_img: Tensor  # [Ni, d] raw hidden states of image patches
    img_scene: Tensor  # [Ni]
    img_cell: Tensor  # [Ni] patch index
    img_label: Tensor  # [Ni] kind index under the strict ground truth (BACKGROUND otherwise)
    img_any: Tensor  # [Ni] kind index of any object pixel in the patch (BACKGROUND if none)
    x_txt: Tensor  # [Nt, d] caption tokens
    txt_scene: Tensor  # [Nt]
    txt_token: list[str]  # [Nt]
    captions: list[str]  # [n_scenes]
    n_scenes: int
    kinds_present: np.ndarray  # [n_scenes, n_kinds] bool


def load_split(acts_dir: Any, layer: int, seed: int, *, images_only: bool = False) -> Split:
    """Image patches and caption tokens of one layer from a harvest, with toy-world ground truth.
    images_only: leave the answer tokens out (a question harvest's answers are yes/no, not captions)."""
    x, lab = ActivationSource.from_shards(acts_dir, layer, "image").load(with_labels=True)
    scene_ids = lab["scene"].long()
    n_scenes = int(scene_ids.max()) + 1
    scenes = [make_scene(seed, i) for i in range(n_scenes)]
    strict = torch.full((n_scenes, 81), BACKGROUND, dtype=torch.long)
    anyp = torch.full((n_scenes, 81), BACKGROUND, dtype=torch.long)
    for i, s in enumerate(scenes):
        counts = torch.from_numpy(patch_pixel_counts(s))
        for obj, c in zip(s.objects, counts, strict=True):
            k = KINDS.index(obj.kind)
            strict[i][c >= STRICT_PIXELS] = k
            anyp[i][c > 0] = k
    cell = lab["cell"].long()
    present = np.array([[k in s.kinds for k in KINDS] for s in scenes])
    if images_only:
        return Split(x, scene_ids, cell, strict[scene_ids, cell], anyp[scene_ids, cell], x[:0], scene_ids[:0], [],
                     [s.caption for s in scenes], n_scenes, present)
    xt, lt = ActivationSource.from_shards(acts_dir, layer, "caption").load(with_labels=True)
    t_scene = lt["scene"].long()
    tokens: list[str] = []
    # Caption rows of a scene come in position order: the caption's words, then </s>.
    order = torch.argsort(t_scene * 10_000 + lt["position"].long())
    xt, t_scene = xt[order], t_scene[order]
    for i in range(n_scenes):
        words = scenes[i].caption.split() + ["</s>"]
        tokens += words[: int((t_scene == i).sum())]
    return Split(x, scene_ids, cell, strict[scene_ids, cell], anyp[scene_ids, cell], xt, t_scene, tokens,
                 [s.caption for s in scenes], n_scenes, present)


def precision_recall(fires: Tensor, truth: Tensor) -> tuple[float, float]:
    tp = float((fires & truth).sum())
    return tp / max(float(fires.sum()), 1.0), tp / max(float(truth.sum()), 1.0)


@dataclass
class GroupChoice:
    latents: list[int]
    scale: float
    threshold: float
    train_precision: float
    train_recall: float
    weights: list[float] = field(default_factory=list)  # empty: all 1.0
    offsets: list[float] = field(default_factory=list)
    read: str = "code"

    def activation(self, codes: Codes, pre: Tensor | None = None) -> Tensor:
        """[N] the group's activation on rows given by their codes (and pre-activations for "pre")."""
        if self.read == "pre":
            assert pre is not None
            return (pre[:, self.latents] * torch.tensor(self.weights) + torch.tensor(self.offsets)).amax(1)
        if self.read == "linear":
            assert pre is not None
            return pre[:, self.latents] @ torch.tensor(self.weights) + self.offsets[0]
        return codes.group(self.latents, self.weights or None) / self.scale


PRE_THRESHOLD = 0.15  # where a "pre" group's activation crosses its latents' precise thresholds


def threshold_for(score: Tensor, truth: Tensor, min_precision: float) -> float:
    """The lowest threshold whose training precision (score >= t) stays >= min_precision, placed
    halfway to the next lower score; inf if none."""
    order = torch.argsort(score, descending=True)
    s, hits = score[order], truth[order].float()
    prec = hits.cumsum(0) / torch.arange(1, len(hits) + 1)
    # Only the last row of a run of equal scores is a cut `score >= t` can make: inside the run, the
    # prefix precision depends on how the sort broke the tie (words at layer 0 repeat one state).
    cut = torch.ones_like(hits, dtype=torch.bool)
    cut[:-1] = s[:-1] != s[1:]
    ok = torch.nonzero(cut & (prec >= min_precision))[:, 0]
    if len(ok) == 0:
        return float("inf")
    i = int(ok.max())
    # Halfway to the next lower score: a kind whose rows share one score (a word at layer 0) then
    # sits strictly above its threshold, not on it.
    return float(s[i]) if i + 1 == len(s) else float((s[i] + s[i + 1]) / 2)


def greedy_union(masks: dict[int, Tensor], truth: Tensor, max_n: int, min_precision: float, min_gain: float) -> list[int]:
    """Up to `max_n` keys of `masks` ([N] bool each), added one at a time: the one whose union with
    those chosen covers the most `truth` rows while staying `min_precision` precise and gaining more
    than `min_gain` true rows (ties: the first in `masks` order)."""
    chosen: list[int] = []
    union = torch.zeros_like(truth)
    covered = 0.0
    for _ in range(max_n):
        best = None
        for j, m in masks.items():
            if j in chosen:
                continue
            u = union | m
            tp = float((u & truth).sum())
            if tp / max(float(u.sum()), 1.0) >= min_precision and tp > covered + min_gain and (best is None or tp > best[1]):
                best = (j, tp)
        if best is None:
            break
        chosen.append(best[0])
        union |= masks[best[0]]
        covered = best[1]
    return chosen


def choose_pre_group(pre: Tensor, labels: Tensor, kind: int, candidates: Sequence[int], *, max_group: int = 8,
                     min_precision: float = 0.92) -> GroupChoice | None:
    """Greedy union of up to `max_group` latents read before TopK, each above its own threshold.

    Each candidate's threshold is the lowest pre-activation at which it alone stays `min_precision`
    precise on training patches; latents are added while the union stays that precise and gains
    recall. Each latent is then mapped affinely so that its threshold reads PRE_THRESHOLD and its
    mean pre-activation on the kind's patches above threshold reads 1.0.
    """
    truth = labels == kind
    n_true = float(truth.sum())
    if not candidates or n_true == 0:
        return None
    thr = {j: threshold_for(pre[:, j], truth, min_precision) for j in candidates}
    masks = {j: pre[:, j] >= t for j, t in thr.items() if t != float("inf")}
    chosen = greedy_union(masks, truth, max_group, min_precision, min_gain=0.01 * n_true)
    if not chosen:
        return None
    weights, offsets = [], []
    for j in chosen:
        above = pre[truth & (pre[:, j] >= thr[j]), j]
        typical = float(above.mean())
        w = (1.0 - PRE_THRESHOLD) / max(typical - thr[j], 1e-6)
        weights.append(round(w, 6))
        offsets.append(round(PRE_THRESHOLD - w * thr[j], 6))
    g = GroupChoice(chosen, 1.0, PRE_THRESHOLD, 0.0, 0.0, weights, offsets, "pre")
    prec, rec = precision_recall(g.activation(None, pre) > PRE_THRESHOLD, truth)  # type: ignore[arg-type]
    g.train_precision, g.train_recall = prec, rec
    return g


def fit_logistic(x: Tensor, y: Tensor, classes: int = 1, steps: int = 300, lr: float = 0.05) -> tuple[Tensor, Tensor]:
    """Full-batch logistic (classes=1, y bool) or softmax (y class ids) regression; seeded, Adam."""
    with torch.enable_grad():  # callers may hold no_grad for the encoding around it
        return _fit_logistic(x, y, classes, steps, lr)


def _fit_logistic(x: Tensor, y: Tensor, classes: int, steps: int, lr: float) -> tuple[Tensor, Tensor]:
    torch.manual_seed(0)
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(steps):
        z = x @ w + b
        if classes == 1:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(z[:, 0], y.float())
        else:
            loss = torch.nn.functional.cross_entropy(z, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach(), b.detach()


def choose_linear_group(pre: Tensor, labels: Tensor, kind: int, candidates: Sequence[int], *, max_group: int = 32,
                        min_precision: float = 0.93) -> GroupChoice | None:
    """A signed weighted group of up to `max_group` latents read before TopK (a "linear" group).

    The candidates whose pre-activation alone covers the most of the kind's training patches at
    `min_precision` are kept; their weights are a logistic regression of "this patch is the kind"
    on those pre-activations (standardised while fitting); the threshold is the lowest score at
    which training precision stays `min_precision`. The score is then mapped affinely so that this
    threshold reads PRE_THRESHOLD and the mean score of the kind's patches above it reads 1.0.
    Fitting on states harvested under several prompts makes the group hold under each of them.
    """
    truth = labels == kind
    if not candidates or not bool(truth.any()):
        return None
    covered = {}
    for j in candidates:
        t = threshold_for(pre[:, j], truth, min_precision)
        covered[j] = float(((pre[:, j] >= t) & truth).sum()) if t != float("inf") else 0.0
    keep = sorted(sorted(candidates), key=lambda j: -covered[j])[:max_group]
    x = pre[:, keep]
    sd = x.std(0).clamp(min=1e-6)
    w, _ = fit_logistic(x / sd, truth)
    w = w[:, 0] / sd
    score = x @ w
    t = threshold_for(score, truth, min_precision)
    if t == float("inf"):
        return None
    typical = float(score[truth & (score >= t)].mean())
    a = (1.0 - PRE_THRESHOLD) / max(typical - t, 1e-6)
    weights = [round(float(v) * a, 6) for v in w]
    g = GroupChoice(keep, 1.0, PRE_THRESHOLD, 0.0, 0.0, weights, [round(PRE_THRESHOLD - a * t, 6)], "linear")
    g.train_precision, g.train_recall = precision_recall(g.activation(None, pre) > PRE_THRESHOLD, truth)  # type: ignore[arg-type]
    return g


def choose_image_group(
    codes: Codes, labels: Tensor, kind: int, candidates: Sequence[int], *, max_group: int = 4, min_precision: float = 0.95
) -> GroupChoice | None:
    """Greedy union of up to `max_group` latents for one kind, keeping patch precision high."""
    truth = labels == kind
    if not candidates or not bool(truth.any()):
        return None
    fired = codes.val > 0
    masks = {j: ((codes.idx == j) & fired).any(1) for j in candidates}  # [N] bool per candidate
    chosen = greedy_union(masks, truth, max_group, min_precision, min_gain=0.01 * float(truth.sum()))
    if not chosen:
        # No latent is precise enough when firing at all: take the best one and rely on the threshold.
        chosen = [max(candidates, key=lambda j: float(np.prod(precision_recall(masks[j], truth))))]
    act = codes.group(chosen)
    scale = float(act[truth & (act > 0)].mean()) if (truth & (act > 0)).any() else 1.0
    threshold = pick_threshold(act / scale, truth, min_precision)
    prec, rec = precision_recall(act / scale > threshold, truth)
    return GroupChoice(chosen, scale, threshold, prec, rec)


def pick_threshold(act: Tensor, truth: Tensor, min_precision: float, floor: float = 0.05) -> float:
    """The lowest threshold (activation units) whose training precision reaches `min_precision`."""
    for t in np.arange(floor, 1.5, 0.05):
        prec, rec = precision_recall(act > t, truth)
        if prec >= min_precision:
            return float(round(t, 2))
    return 1.5


def scene_grid(split: Split, values: Tensor, fill: float | int | bool = 0) -> Tensor:
    """Per-patch row values laid out as [n_scenes, 9, 9] patch grids (missing patches: `fill`)."""
    g = torch.full((split.n_scenes, 81), fill, dtype=values.dtype)
    g[split.img_scene, split.img_cell] = values
    return g.view(-1, 9, 9)


def object_mask(split: Split, codes: Codes, fires: Tensor, extent: Sequence[int] = ()) -> Tensor:
    """[n_scenes, 9, 9] bool: what the runtime's `off` rewrites for a group firing on rows `fires`
    (hooks._present): its patches, closed, extended to neighbours where an extent latent fires, closed."""
    from steerlang.grid import close, dilate

    mask = close(scene_grid(split, fires, False))
    if extent:
        fires = ((codes.idx[..., None] == torch.tensor(list(extent))).any(-1) & (codes.val > 0)).any(1)
        mask = close(mask | (dilate(mask) & scene_grid(split, fires, False)))
    return mask


def choose_extent(codes: Codes, split: Split, kind: int, fires: Tensor, *, max_latents: int = 16,
                  min_precision: float = 0.9, min_support: int = 20) -> list[int]:
    """Latents that mark the rest of an object next to its group's (closed) patches.

    Among the neighbours of the group's mask, a latent's firings are judged only there: latents
    for an outline that cats and dogs share are imprecise over all patches, yet precise next to a
    patch that is surely a cat. Greedy, like the group: add the latent that covers the most of the
    kind's missed neighbours while the union stays `min_precision` precise there.
    """
    from steerlang.grid import dilate

    base = object_mask(split, codes, fires)
    ring = (dilate(base) & ~base).view(-1)[split.img_scene * 81 + split.img_cell]  # per row
    truth = split.img_label == kind
    fired = (codes.val > 0) & ring[:, None]
    d = int(codes.idx.max()) + 1
    on_kind = torch.bincount(codes.idx[fired & truth[:, None]], minlength=d).float()
    total = torch.bincount(codes.idx[fired], minlength=d).float()
    cands = [int(j) for j in torch.nonzero((on_kind / total.clamp(min=1) >= 0.8) & (on_kind >= min_support))[:, 0]]
    masks = {j: ((codes.idx == j) & fired).any(1) for j in cands}
    return greedy_union(masks, truth, max_latents, min_precision, min_gain=min_support // 4)


def choose_text_group(codes: Codes, tokens: Sequence[str], word: str, d_sae: int, *, max_group: int = 2,
                      min_precision: float = 0.9, pre: Tensor | None = None, linear_group: int = 32) -> GroupChoice | None:
    """Text latents that mark `word` among caption tokens.

    A "code" group: latents that fire on the word, most recall first, precise only. Given the
    tokens' pre-activations `pre`, a "linear" group (`choose_linear_group` over the latents that
    fire on the word at least 20 times) competes, and the one with the better training F1 among
    those at least `min_precision` precise wins: past the first layers a caption token's state is
    mostly about the next word, and the word itself is spread over several latents.
    """
    truth = torch.tensor([t == word for t in tokens])
    if not truth.any():
        return None
    counts = codes.fire_counts(truth.long(), 2, d_sae)  # [d_sae, 2]: fires on other / on word
    fired = counts.sum(1)
    prec = counts[:, 1] / np.maximum(fired, 1)
    rec = counts[:, 1] / float(truth.sum())
    cands = [int(j) for j in np.argsort(-rec) if prec[j] >= min_precision and rec[j] > 0.05][:max_group]
    if not cands:
        cands = [int(np.argmax(prec * rec))]
    act = codes.group(cands)
    scale = float(act[truth & (act > 0)].mean()) if (truth & (act > 0)).any() else 1.0
    threshold = pick_threshold(act / scale, truth, min_precision)
    p, r = precision_recall(act / scale > threshold, truth)
    best = GroupChoice(cands, scale, threshold, p, r)
    if pre is not None:
        lin = choose_linear_group(pre, truth.long(), 1, [int(j) for j in np.nonzero(counts[:, 1] >= 20)[0]],
                                  max_group=linear_group, min_precision=min_precision)
        if lin is not None and lin.train_precision >= min_precision and _f1(lin) > (_f1(best) if p >= min_precision else 0.0):
            best = lin
    return best


def _f1(g: GroupChoice) -> float:
    return 2 * g.train_precision * g.train_recall / max(g.train_precision + g.train_recall, 1e-12)


@dataclass
class LayerReport:
    layer: int
    retrieval_i2t: dict[int, float] = field(default_factory=dict)
    retrieval_t2i: dict[int, float] = field(default_factory=dict)
    # Relevance by caption: a retrieved text (image) counts when its scene's caption is the query's.
    retrieval_i2t_caption: dict[int, float] = field(default_factory=dict)
    retrieval_t2i_caption: dict[int, float] = field(default_factory=dict)
    strict_ceiling: float = 0.0  # strict R@1 of a perfect matcher that cannot tell equal captions apart
    # R@k over the kinds' joint concepts: a bag of their strengths, and with reading order (concept_codes)
    concept_retrieval: dict[str, Any] = field(default_factory=dict)
    matched: int = 0
    matching_rate: float = 0.0
    kinds: dict[str, dict[str, Any]] = field(default_factory=dict)


def name_latents(pooled: np.ndarray, captions: Sequence[str], held_pooled: np.ndarray, held_captions: Sequence[str],
                 modality: str) -> dict[int, dict[str, Any]]:
    """TF-IDF name and held-out detection score for every latent that fires."""
    namer = TfidfNamer(captions)
    names: dict[int, dict[str, Any]] = {}
    for j in range(pooled.shape[1]):
        top = top_samples(pooled, j)
        if not top:
            continue
        cand = namer.propose(LatentEvidence(j, modality, top, [captions[i] for i in top]))
        if cand is None:
            continue
        det = detection_score(held_pooled[:, j] > 0, held_captions, cand.name)
        names[j] = {"name": cand.name, "tfidf": round(cand.score, 4), "detection": round(det, 4),
                    "frequency": float((held_pooled[:, j] > 0).mean()), "top_words": cand.evidence["top_words"]}
    return names


def build_layer(
    layer: int, sae_img: SAE, sae_txt: SAE, train: Split, held: Split, *, min_precision: float = 0.95,
    pre_precision: float = 0.93, max_group: int = 8, image_read: str = "pre", linear_group: int = 32,
    questions: tuple[Split, Split] | None = None, log: Callable[[str], None] = lambda _m: None,
) -> tuple[LayerReport, dict[str, Any]]:
    """Everything the concept set needs from one layer (see the module docstring).

    `questions`: (training, held-out) image states of the same kind of scenes harvested under
    yes/no questions; "linear" groups are fitted on both prompt sets, and every image group's
    held-out precision / recall under questions is reported beside the describe-prompt figures.
    """
    if image_read not in ("code", "pre", "linear"):
        raise ValueError(f"image_read: 'code', 'pre' or 'linear', got {image_read!r}")
    ci, ct = Codes.encode(sae_img, train.x_img), Codes.encode(sae_txt, train.x_txt)
    with torch.no_grad():
        pre, held_pre = sae_img.pre_acts(train.x_img), sae_img.pre_acts(held.x_img)
        q_pre = tuple(sae_img.pre_acts(s.x_img) for s in questions) if questions else None
        txt_pre, held_txt_pre = sae_txt.pre_acts(train.x_txt), sae_txt.pre_acts(held.x_txt)
    q_codes = Codes.encode(sae_img, questions[1].x_img) if questions else None
    # "linear" groups fit on both prompt sets; concatenated once for all kinds (~1.5 GB at 1,024 latents).
    fit_pre, fit_labels = pre, train.img_label
    if image_read == "linear" and questions and q_pre:
        fit_pre, fit_labels = torch.cat([pre, q_pre[0]]), torch.cat([train.img_label, questions[0].img_label])
    hi, ht = Codes.encode(sae_img, held.x_img), Codes.encode(sae_txt, held.x_txt)
    di, dt = sae_img.cfg.d_sae, sae_txt.cfg.d_sae
    pi, pt = ci.pooled(train.img_scene, train.n_scenes, di), ct.pooled(train.txt_scene, train.n_scenes, dt)
    hpi, hpt = hi.pooled(held.img_scene, held.n_scenes, di), ht.pooled(held.txt_scene, held.n_scenes, dt)
    img_names = name_latents(pi, train.captions, hpi, held.captions, "image")
    txt_names = name_latents(pt, train.captions, hpt, held.captions, "text")
    al = align(pi, pt, min_corr=0.5)
    report = LayerReport(layer, matched=len(al.image))
    mapped = map_image_to_text(hpi, al, dt)
    report.retrieval_i2t = retrieval_recall(mapped, hpt)
    report.retrieval_t2i = retrieval_recall(hpt, mapped)
    report.retrieval_i2t_caption = caption_recall(mapped, hpt, held.captions)
    report.retrieval_t2i_caption = caption_recall(hpt, mapped, held.captions)
    report.strict_ceiling = strict_ceiling(held.captions)
    # Matching rate: top-3 image latents of each held-out image (no latent firing on > 5% of patches).
    patch_freq = ci.fire_counts(torch.zeros_like(train.img_label), 1, di)[:, 0] / len(train.img_label)
    eligible = np.array([j in img_names and patch_freq[j] <= 0.05 for j in range(di)])
    matches = []
    for s in range(held.n_scenes):
        scores = np.where(eligible, hpi[s], -1)
        top3 = [j for j in np.argsort(-scores)[:3] if scores[j] > 0]
        matches.append(any(img_names[j]["name"] in held.captions[s].split() for j in top3))
    report.matching_rate = float(np.mean(matches))
    # Monosemanticity per kind: of the latents that fire on >= 10% of a kind's patches, the best
    # purity (the fraction of the latent's firings that land on that kind's patches).
    fc = hi.fire_counts(held.img_label, BACKGROUND + 1, di)  # [d_sae, kinds + background]
    fired = fc.sum(1)
    for k, kind in enumerate(KINDS):
        n_k = max(int((held.img_label == k).sum()), 1)
        ok = fc[:, k] / n_k >= 0.1
        purity = np.where(ok, fc[:, k] / np.maximum(fired, 1), 0)
        j = int(np.argmax(purity))
        report.kinds.setdefault(kind, {})["best_latent"] = {"latent": j, "purity": float(purity[j]), "recall": float(fc[j, k] / n_k)}
    groups: dict[str, Any] = {"image": {}, "text": {}, "names": {"image": img_names, "text": txt_names},
                              "alignment": {"image": al.image.tolist(), "text": al.text.tolist(), "corr": al.corr.tolist()}}
    # Candidates for a kind's group: latents named after it, and latents whose training firings
    # land mostly (>= 80%) on its patches (a latent for a house's roof may be named by a co-occurring
    # word, yet mark house patches precisely).
    train_fc = ci.fire_counts(train.img_label, BACKGROUND + 1, di)
    train_purity = train_fc / np.maximum(train_fc.sum(1, keepdims=True), 1)
    both_sides: dict[str, dict[str, tuple[Tensor, float]]] = {}  # held-out activations for concept retrieval
    for k, kind in enumerate(KINDS):
        cands = sorted({j for j, n in img_names.items() if n["name"] == kind}
                       | {int(j) for j in np.nonzero((train_purity[:, k] >= 0.8) & (train_fc[:, k] >= 20))[0]})
        # Read before TopK, candidates are latents with >= 30% of their training firings on the kind.
        pre_cands = sorted(set(cands) | {int(j) for j in np.nonzero((train_purity[:, k] >= 0.3) & (train_fc[:, k] >= 20))[0]})
        g = None
        if image_read == "pre":
            g = choose_pre_group(pre, train.img_label, k, pre_cands, max_group=max_group, min_precision=pre_precision)
        elif image_read == "linear":
            g = choose_linear_group(fit_pre, fit_labels, k, pre_cands, max_group=linear_group, min_precision=pre_precision)
        if g is None:
            g = choose_image_group(ci, train.img_label, k, cands, min_precision=min_precision, max_group=max_group)
        tg = choose_text_group(ct, train.txt_token, kind, dt, pre=txt_pre)
        entry: dict[str, Any] = {}
        if g is not None:
            extent = choose_extent(ci, train, k, g.activation(ci, pre) > g.threshold)
            held_act = g.activation(hi, held_pre)
            fires = held_act > g.threshold
            both_sides.setdefault(kind, {})["image"] = (held_act, g.threshold)
            mask = object_mask(held, hi, fires, extent).view(-1)
            truth8, truth_any = scene_grid(held, held.img_label == k, False).view(-1), scene_grid(held, held.img_any == k, False).view(-1)
            mp8, mr8 = precision_recall(mask, truth8)
            mpa, mra = precision_recall(mask, truth_any)
            p8, r8 = precision_recall(fires, held.img_label == k)
            pa, ra = precision_recall(fires, held.img_any == k)
            scene_fires = np.zeros(held.n_scenes, dtype=bool)
            scene_fires[held.img_scene[fires].numpy()] = True
            det = balanced_accuracy(scene_fires, held.kinds_present[:, k])
            entry = {"latents": g.latents, "read": g.read, "weights": g.weights or [1.0] * len(g.latents), "offsets": g.offsets,
                     "scale": g.scale, "threshold": g.threshold, "precision": p8, "recall": r8,
                     "precision_any_pixel": pa, "recall_any_pixel": ra, "detection": det,
                     "train_precision": g.train_precision, "train_recall": g.train_recall, "extent": extent,
                     "mask": {"precision": mp8, "recall": mr8, "precision_any_pixel": mpa, "recall_any_pixel": mra}}
            if questions and q_pre and q_codes is not None:
                qp, qr = precision_recall(g.activation(q_codes, q_pre[1]) > g.threshold, questions[1].img_label == k)
                entry["under_questions"] = {"precision": qp, "recall": qr}
            groups["image"][kind] = entry
        if tg is not None:
            truth = torch.tensor([t == kind for t in held.txt_token])
            t_act = tg.activation(ht, held_txt_pre)
            both_sides.setdefault(kind, {})["text"] = (t_act, tg.threshold)
            p, r = precision_recall(t_act > tg.threshold, truth)
            groups["text"][kind] = {"latents": tg.latents, "read": tg.read, "weights": tg.weights or [1.0] * len(tg.latents),
                                    "offsets": tg.offsets, "scale": tg.scale, "threshold": tg.threshold,
                                    "precision": p, "recall": r, "train_precision": tg.train_precision,
                                    "train_recall": tg.train_recall}
        report.kinds[kind].update({"image": {k2: v for k2, v in entry.items() if k2 != "latents"},
                                   "text": groups["text"].get(kind, {})})
        mk = entry.get("mask", {})
        log(f"layer {layer} {kind}: image {entry.get('latents')} P {entry.get('precision', 0):.3f} R {entry.get('recall', 0):.3f} "
            f"det {entry.get('detection', 0):.3f}; mask (+{len(entry.get('extent', []))} extent) P {mk.get('precision', 0):.3f} "
            f"R {mk.get('recall', 0):.3f}; text {groups['text'].get(kind, {}).get('latents')}")
    report.concept_retrieval = kind_recall(held, both_sides)
    return report, groups


def kind_recall(held: Split, both_sides: dict[str, dict[str, tuple[Tensor, float]]]) -> dict[str, Any]:
    """`concept_recall` over the kinds that have an image and a text group (held-out activations)."""
    kinds = [k for k in KINDS if len(both_sides.get(k, {})) == 2]
    if not kinds:
        return {}

    def codes(side: str, sample: Tensor, pos: Tensor) -> ConceptCodes:
        act = torch.stack([both_sides[k][side][0] for k in kinds], 1)
        return sample_codes(act, torch.tensor([both_sides[k][side][1] for k in kinds]), sample, pos, held.n_scenes)

    tpos = torch.stack([torch.zeros_like(held.txt_scene), token_index(held.txt_scene)], 1)
    out = concept_recall(codes("image", held.img_scene, grid_position(held.img_cell, GRID)),
                            codes("text", held.txt_scene, tpos), held.captions)
    return {**out, "concepts": kinds}


@torch.no_grad()
def reference_states(bundle: Any, layers: Sequence[int], acts_dir: Any, seed: int) -> dict[str, Tensor]:
    """Blank-image states per layer, and per-kind prototypes per layer (mean state of each patch
    position over training scenes where the kind sits in that patch's cell)."""
    from steerlang.dictionary.harvest import LayerCapture
    from steerlang.world.scenes import blank_image
    from steerlang.world.vocab import DEFAULT_PROMPT

    out: dict[str, Tensor] = {}
    enc = bundle.encode([blank_image()], [DEFAULT_PROMPT])
    with LayerCapture(bundle, layers) as cap:
        bundle.model(**enc)
    is_img = enc["input_ids"][0] == bundle.image_token_id
    for layer in layers:
        out[f"background.L{layer}"] = cap.captured[layer][0][is_img].float().clone()
    rows, cols = bundle.patch_grid
    cell_of_patch = torch.tensor([(p // cols) // (rows // 3) * 3 + (p % cols) // (cols // 3) for p in range(rows * cols)])
    for layer in layers:
        x, lab = ActivationSource.from_shards(acts_dir, layer, "image").load(with_labels=True)
        scene, patch = lab["scene"].long(), lab["cell"].long()
        n_scenes = int(scene.max()) + 1
        kind_at_cell = torch.full((n_scenes, 9), -1, dtype=torch.long)
        for i in range(n_scenes):
            for o in make_scene(seed, i).objects:
                kind_at_cell[i, o.cell] = KINDS.index(o.kind)
        row_kind = kind_at_cell[scene, cell_of_patch[patch]]
        for k in range(len(KINDS)):
            sel = row_kind == k
            sums = torch.zeros(rows * cols, x.shape[1]).index_add_(0, patch[sel], x[sel])
            count = torch.bincount(patch[sel], minlength=rows * cols).float()
            out[f"prototype.{k}.L{layer}"] = sums / count.clamp(min=1)[:, None]
            out[f"prototype.{k}.L{layer}.count"] = count
    return out


def assemble_concepts(layer_groups: dict[int, dict[str, Any]], *, min_detection: float = 0.75) -> list[Any]:
    """Concepts from every layer's groups, names and alignment (see the module docstring).

    joint#0..7 are the object kinds (one variable across layers); further joint concepts are the
    remaining matched latent pairs; image#/text# concepts are unmatched latents whose automatic name
    detects well on held-out scenes.
    """
    from steerlang.dictionary.concepts import Concept, LatentGroup

    concepts: list[Concept] = []
    for k, kind in enumerate(KINDS):
        groups, evidence = [], {}
        for layer, g in sorted(layer_groups.items()):
            for modality in ("image", "text"):
                e = g[modality].get(kind)
                if e is None:
                    continue
                groups.append(LatentGroup(layer, modality, tuple(e["latents"]), tuple(e.get("weights") or [1.0] * len(e["latents"])),
                                          scale=round(e["scale"], 6), threshold=e["threshold"],
                                          precision=round(e["precision"], 4), recall=round(e["recall"], 4),
                                          extent=tuple(e.get("extent", ())), read=e.get("read", "code"),
                                          offsets=tuple(e.get("offsets", ()))))
                evidence[f"L{layer}.{modality}"] = {key: (round(v, 4) if isinstance(v, float) else v) for key, v in e.items()}
        first = layer_groups[min(layer_groups)]["image"].get(kind, {})
        concepts.append(Concept("joint", k, kind, (), tuple(groups), detection=first.get("detection"),
                                frequency=0.0, evidence=evidence))
    used = {(layer, m, j) for c in concepts for g in c.groups for (layer, m, j) in [(g.layer, g.modality, x) for x in g.latents]}
    n_joint, n_img, n_txt = len(concepts), 0, 0
    for layer, g in sorted(layer_groups.items()):
        names = g["names"]
        al = g["alignment"]
        matched_img, matched_txt = set(al["image"]), set(al["text"])
        for i, t, corr in zip(al["image"], al["text"], al["corr"], strict=True):
            if (layer, "image", i) in used or (layer, "text", t) in used:
                continue
            ni = names["image"].get(i, {}).get("name") or names["image"].get(str(i), {}).get("name", "latent")
            groups = (LatentGroup(layer, "image", (i,), (1.0,)), LatentGroup(layer, "text", (t,), (1.0,)))
            concepts.append(Concept("joint", n_joint, f"{ni}@L{layer}/joint{n_joint}", (), groups,
                                    detection=names["image"].get(i, {}).get("detection"),
                                    frequency=names["image"].get(i, {}).get("frequency", 0.0),
                                    evidence={"corr": round(corr, 4), "image_latent": i, "text_latent": t}))
            n_joint += 1
        for modality, matched in (("image", matched_img), ("text", matched_txt)):
            for j, info in sorted(names[modality].items()):
                if j in matched or (layer, modality, j) in used or info["detection"] < min_detection:
                    continue
                idx = n_img if modality == "image" else n_txt
                concepts.append(Concept(modality, idx, f"{info['name']}@L{layer}/{modality}{idx}", (),
                                        (LatentGroup(layer, modality, (j,), (1.0,)),), detection=info["detection"],
                                        frequency=info["frequency"], evidence={"latent": j, "top_words": info["top_words"]}))
                if modality == "image":
                    n_img += 1
                else:
                    n_txt += 1
    return concepts
