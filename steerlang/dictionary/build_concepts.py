"""The pieces every concept builder shares: sparse codes, latent-group choosers, names, assembly.

A concept's latent group in one (layer, modality) is chosen against per-row labels ("this patch /
token is the concept"); where those labels come from is the builder's business:
`steerlang.dictionary.caption_concepts` derives them from captions alone (what `steer dict build
--data` runs), and the toy world's supervised builder (`steerlang.world.oracle_concepts`, a benchmark
row) reads the renderer's patch truth. Nothing here knows either.

- `choose_pre_group`: latents read before TopK (encoder pre-activations), each above its own
  precise threshold, greedy union (`image_read="pre"`): where image states cannot see the prompt.
- `choose_linear_group`: a signed weighted sum of up to 32 latents' pre-activations, logistic
  regression (`image_read="linear"`): where they can, fitted under several prompts.
- `choose_image_group`: TopK codes, the fallback; `choose_extent`: latents that mark the rest of an
  object next to its group's patches; `choose_text_group`: latents that fire on the word.
- `name_latents`: TF-IDF names of every live latent scored by held-out detection;
  `assemble_concepts`: one variable per concept word across layers, then the remaining matched
  pairs and well-named unmatched latents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from steerlang.dictionary.name import (
    LatentEvidence,
    TfidfNamer,
    detection_score,
    top_samples,
)
from steerlang.dictionary.sae import SAE


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


def thresholds_for(scores: Tensor, truth: Tensor, min_precision: float, chunk: int = 32) -> Tensor:
    """`threshold_for` of every column of `scores` [N, C] at once: [C] (inf where none); the same
    values, one sort per chunk of columns instead of one call per column."""
    n = scores.shape[0]
    out = []
    ranks = torch.arange(1, n + 1)[:, None]
    rows = torch.arange(n)[:, None]
    for lo in range(0, scores.shape[1], chunk):
        s, order = torch.sort(scores[:, lo : lo + chunk], dim=0, descending=True)
        prec = truth[order].float().cumsum(0) / ranks
        cut = torch.ones_like(s, dtype=torch.bool)
        cut[:-1] = s[:-1] != s[1:]
        i = torch.where(cut & (prec >= min_precision), rows, -1).amax(0)  # [c] last precise cut
        at = s.gather(0, i.clamp(min=0)[None])[0]
        below = s.gather(0, (i + 1).clamp(max=n - 1)[None])[0]
        t = torch.where(i + 1 == n, at, (at + below) / 2)
        out.append(torch.where(i < 0, torch.full_like(t, float("inf")), t))
    return torch.cat(out) if out else torch.zeros(0)


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
    thr = dict(zip(candidates, thresholds_for(pre[:, list(candidates)], truth, min_precision).tolist(), strict=True))
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
    cols = list(candidates)
    t = thresholds_for(pre[:, cols], truth, min_precision)
    hit = ((pre[:, cols] >= t) & truth[:, None]).sum(0).float()  # an inf threshold covers nothing
    covered = dict(zip(cols, hit.tolist(), strict=True))
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


def scene_grid(split: Any, values: Tensor, fill: float | int | bool = 0) -> Tensor:
    """Per-patch row values laid out as [n_scenes, rows, cols] patch grids (missing patches: `fill`).
    `split`: anything with img_scene, img_cell, n_scenes and grid (rows, cols)."""
    rows, cols = split.grid
    g = torch.full((split.n_scenes, rows * cols), fill, dtype=values.dtype)
    g[split.img_scene, split.img_cell] = values
    return g.view(-1, rows, cols)


def object_mask(split: Any, codes: Codes, fires: Tensor, extent: Sequence[int] = ()) -> Tensor:
    """[n_scenes, 9, 9] bool: what the runtime's `off` rewrites for a group firing on rows `fires`
    (hooks._present): its patches, closed, extended to neighbours where an extent latent fires, closed."""
    from steerlang.grid import close, dilate

    mask = close(scene_grid(split, fires, False))
    if extent:
        fires = ((codes.idx[..., None] == torch.tensor(list(extent))).any(-1) & (codes.val > 0)).any(1)
        mask = close(mask | (dilate(mask) & scene_grid(split, fires, False)))
    return mask


def choose_extent(codes: Codes, split: Any, kind: int, fires: Tensor, *, max_latents: int = 16,
                  min_precision: float = 0.9, min_support: int = 20) -> list[int]:
    """Latents that mark the rest of an object next to its group's (closed) patches.

    Among the neighbours of the group's mask, a latent's firings are judged only there: latents
    for an outline that cats and dogs share are imprecise over all patches, yet precise next to a
    patch that is surely a cat. Greedy, like the group: add the latent that covers the most of the
    kind's missed neighbours while the union stays `min_precision` precise there.
    """
    from steerlang.grid import dilate

    base = object_mask(split, codes, fires)
    rows, cols = split.grid
    ring = (dilate(base) & ~base).view(-1)[split.img_scene * (rows * cols) + split.img_cell]  # per row
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


def assemble_concepts(layer_groups: dict[int, dict[str, Any]], *, words: Sequence[str],
                      min_detection: float = 0.75) -> list[Any]:
    """Concepts from every layer's groups, names and alignment (see the module docstring).

    joint#0.. are `words` (the object kinds; one variable across layers); further joint concepts are the
    remaining matched latent pairs; image#/text# concepts are unmatched latents whose automatic name
    detects well on held-out scenes.
    """
    from steerlang.dictionary.concepts import Concept, LatentGroup

    concepts: list[Concept] = []
    for k, kind in enumerate(words):
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
                                frequency=first.get("frequency", 0.0), evidence=evidence))
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


def text_entry(tg: GroupChoice, codes: Codes, pre: Tensor, tokens: Sequence[str], word: str) -> tuple[Tensor, dict[str, Any]]:
    """(held-out activations, the concept file's entry) of a text group on tokens `tokens`: its
    latents and reading, and its precision / recall at marking `word`."""
    truth = torch.tensor([t == word for t in tokens])
    act = tg.activation(codes, pre)
    p, r = precision_recall(act > tg.threshold, truth)
    return act, {"latents": tg.latents, "read": tg.read, "weights": tg.weights or [1.0] * len(tg.latents),
                 "offsets": tg.offsets, "scale": tg.scale, "threshold": tg.threshold,
                 "precision": p, "recall": r, "train_precision": tg.train_precision, "train_recall": tg.train_recall}


def concept_retrieval(held: Any, both: dict[str, dict[str, tuple[Tensor, float]]], words: Sequence[str]) -> dict[str, Any]:
    """`concept_recall` over the concept words that have an image and a text group, from held-out
    activations and thresholds `both[word][side]`. `held`: img_scene, img_cell, txt_scene, captions,
    n_scenes and grid (rows, cols)."""
    from steerlang.dictionary.concept_codes import concept_recall, grid_position, sample_codes, token_index

    ws = [w for w in words if len(both.get(w, {})) == 2]
    if not ws:
        return {}

    def codes(side: str, sample: Tensor, pos: Tensor) -> Any:
        act = torch.stack([both[w][side][0] for w in ws], 1)
        return sample_codes(act, torch.tensor([both[w][side][1] for w in ws]), sample, pos, held.n_scenes)

    tpos = torch.stack([torch.zeros_like(held.txt_scene), token_index(held.txt_scene)], 1)
    out = concept_recall(codes("image", held.img_scene, grid_position(held.img_cell, held.grid[1])),
                         codes("text", held.txt_scene, tpos), held.captions)
    return {**out, "concepts": ws}
