"""Concepts from image-caption pairs alone: no object lists, cells, masks or kinds.

What the builder reads: a harvest of a dataset (image patches with their patch index, caption tokens),
each sample's caption text, the model's patch grid, and the SAEs of every layer. What it never reads:
anything a renderer knows. The toy world's patch truth is used only by evaluation code, to measure.

Concept words are the captions' content words that name enough samples (`concept_words`). For each
word, a self-training loop turns "the caption names it" (an image-level label) into patch labels:

1. **Seed latents** (`seed_latents`): score each image by a latent's highest pre-activation over its
   patches; the latent's threshold is the score only `1 - neg_quantile` of the images whose caption
   lacks the word exceed; latents are added while image-level precision stays >= 0.98 and image
   recall grows (one to three latents a word).
2. **Objectness without labels** (`Objectness`): a patch's distance to the median state at its
   grid position, at the first layer; "object-like" is above the valley of the log-distance
   histogram between the background's peak and the objects' (`valley`; Otsu's cut where the
   histogram has no clear valley).
3. **Rough patch labels** (`rough_labels`): the caption names the word, a seed latent fires within
   one patch, and the patch is object-like. A patch two words claim goes to the one whose seed fires
   on the patch itself, else to neither (it counts as a negative for both).
4. **A second round**: the precision-constrained chooser (`choose_pre_group`) on the rough labels at
   the first layer; the labels are then redrawn around its (closed) firings, still object-like, and
   every layer's final group is chosen on them: pre-activation groups where image states cannot see
   the prompt (the first layer, or every layer when the image precedes the text), elsewhere a
   signed sum of pre-activations (`choose_linear_group`).

Text groups, names, alignment and the remaining joint / modality-specific concepts are as in the
supervised builder (they never needed labels). Reference states: the background at a patch position
is the mean state of patches there that are not object-like; a word's prototype is the mean state of
its final labelled patches there.

Every `HELD_EVERY`-th sample (row % HELD_EVERY == HELD_EVERY - 1) is held out: names are scored and
reports are measured on it, with its own rough labels (the same seeds and objectness cut).
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
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
from steerlang.dictionary.build_concepts import (
    Codes,
    GroupChoice,
    choose_extent,
    choose_image_group,
    choose_linear_group,
    choose_pre_group,
    choose_text_group,
    concept_retrieval,
    name_latents,
    precision_recall,
    text_entry,
)
from steerlang.dictionary.name import STOPWORDS, balanced_accuracy
from steerlang.dictionary.sae import SAE
from steerlang.dictionary.source import ActivationSource
from steerlang.errors import InputError, SteerError
from steerlang.grid import close, dilate

HELD_EVERY = 8


@dataclass
class CorpusLayer:
    """Rows of one layer for a set of samples, and what the captions say (no truth)."""

    x_img: Tensor  # [Ni, d] image patches, sample-major, patch order inside a sample
    img_scene: Tensor  # [Ni] local sample index
    img_cell: Tensor  # [Ni] patch index on the grid
    x_txt: Tensor  # [Nt, d] caption tokens
    txt_scene: Tensor  # [Nt]
    txt_token: list[str]  # [Nt] normalised token strings
    captions: list[str]  # [n] per local sample
    rows: list[int]  # [n] the dataset row of each local sample
    grid: tuple[int, int]
    img_label: Tensor = field(default=None)  # type: ignore[assignment]  # [Ni] rough labels, set by the builder

    @property
    def n_scenes(self) -> int:
        return len(self.rows)

    @property
    def patches(self) -> int:
        return self.grid[0] * self.grid[1]


def normalise_token(t: str) -> str:
    """A token string as a caption word: sentencepiece / byte-BPE word markers dropped, lower case."""
    return t.replace("\u2581", "").replace("\u0120", "").strip().lower()


def caption_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9][a-z0-9'-]*", text.lower()) if w not in STOPWORDS}


def concept_words(captions: Sequence[str], *, min_samples: int = 20, min_fraction: float = 0.01,
                  max_fraction: float = 0.5) -> list[str]:
    """Content words named by at least max(min_samples, min_fraction * n) captions and at most
    max_fraction of them (a word in every caption separates nothing); most frequent first."""
    df = Counter(w for c in captions for w in caption_words(c))
    n = len(captions)
    lo = max(min_samples, int(np.ceil(min_fraction * n)))
    keep = [w for w, c in df.items() if lo <= c <= max_fraction * n]
    return sorted(keep, key=lambda w: (-df[w], w))


def split_rows(rows: Sequence[int]) -> tuple[list[int], list[int]]:
    """(training rows, held-out rows): every HELD_EVERY-th row is held out."""
    rows = sorted(rows)
    return [r for r in rows if r % HELD_EVERY != HELD_EVERY - 1], [r for r in rows if r % HELD_EVERY == HELD_EVERY - 1]


def spread_rows(train_rows: Sequence[int], held_rows: Sequence[int], max_samples: int | None) -> tuple[list[int], list[int]]:
    """At most `max_samples` of the (training, held-out) rows, evenly spread over each list, one in
    HELD_EVERY held out as before: the concept fits hold every patch of the samples they read (with
    each latent's pre-activation), so their memory is set by this number, not by the corpus."""
    train_rows, held_rows = list(train_rows), list(held_rows)
    if max_samples is None or len(train_rows) + len(held_rows) <= max_samples:
        return train_rows, held_rows
    n_held = min(len(held_rows), max(1, round(max_samples / HELD_EVERY)))
    n_train = min(len(train_rows), max_samples - n_held)

    def pick(rows: list[int], n: int) -> list[int]:
        return [rows[i * len(rows) // n] for i in range(n)]

    return pick(train_rows, n_train), pick(held_rows, n_held)


def _of_rows(rows: Sequence[int]) -> Callable[[dict[str, Tensor]], Tensor]:
    """The `keep` of `ActivationSource.load` for the harvest rows of these samples."""
    want = torch.tensor(sorted(rows), dtype=torch.long)
    return lambda lab: torch.isin(lab["scene"].long(), want)


def load_corpus_layer(acts: Any, layer: int, rows: Sequence[int], text: Mapping[int, tuple[str, list[str]]],
                      grid: tuple[int, int]) -> CorpusLayer:
    """The image and caption rows of `rows` (dataset rows) at `layer` of the harvest `acts`, read
    shard by shard (memory: these samples' rows and one shard)."""
    rows = list(rows)
    x, lab = ActivationSource.from_shards(acts, layer, "image").load(with_labels=True, keep=_of_rows(rows))
    scene = lab["scene"].long()
    local = torch.full((int(scene.max()) + 1 if len(scene) else 1,), -1, dtype=torch.long)
    ok_rows = [r for r in rows if r < len(local)]
    local[ok_rows] = torch.arange(len(ok_rows))
    rows = ok_rows
    keep = local[scene] >= 0
    x, img_scene, cell = x[keep], local[scene[keep]], lab["cell"].long()[keep]
    order = torch.argsort(img_scene * (grid[0] * grid[1] + 1) + cell)
    x, img_scene, cell = x[order], img_scene[order], cell[order]
    xt, lt = ActivationSource.from_shards(acts, layer, "caption").load(with_labels=True, keep=_of_rows(rows))
    ts = lt["scene"].long()
    tkeep = (ts < len(local)) & (local[ts.clamp(max=len(local) - 1)] >= 0)
    xt, ts, pos = xt[tkeep], local[ts[tkeep]], lt["position"].long()[tkeep]
    order = torch.argsort(ts * 1_000_000 + pos)
    xt, ts = xt[order], ts[order]
    counts = torch.bincount(ts, minlength=len(rows)).tolist()
    tokens: list[str] = []
    for i, r in enumerate(rows):
        toks = text[r][1]
        if counts[i] != len(toks):
            raise SteerError(f"harvest {acts}: sample row {r} has {counts[i]} caption positions but its caption "
                             f"{text[r][0]!r} gives {len(toks)} tokens now; the dataset or the model changed since "
                             "the harvest: harvest again")
        tokens += [normalise_token(t) for t in toks]
    return CorpusLayer(x, img_scene, cell, xt, ts, tokens, [text[r][0] for r in rows], rows, grid)


class CaptionQuestions:
    """(prompt, answer) of a yes/no question about a caption word, for the harvest's `example`: a word
    the sample's caption names ("yes") or one it does not ("no"), half each, drawn from a generator
    seeded with the row (so a resumed or sharded harvest asks the same). Only the caption is read.
    Image states that can see the prompt are calibrated under these as well as under the caption's
    own prompt, so that a group chosen under one holds under the other."""

    def __init__(self, words: Sequence[str], template: str, seed: int = 0) -> None:
        if "{word}" not in template:
            raise InputError(f"--question: {template!r} has no {{word}} for the concept word, e.g. \"is there a {{word}} ?\"")
        self.words, self.template, self.seed = list(words), template, seed
        self.key = f"caption-questions:{seed}:{template}:{','.join(self.words)}"

    def __call__(self, sample: Any) -> tuple[str, str]:
        rng = np.random.default_rng([self.seed, int(sample.row)])
        have = caption_words(sample.text)
        yes = [w for w in self.words if w in have]
        no = [w for w in self.words if w not in have]
        if yes and (not no or rng.random() < 0.5):
            return self.template.format(word=str(rng.choice(yes))), "yes"
        return self.template.format(word=str(rng.choice(no))), "no"


def load_question_images(acts: Any, layer: int, like: CorpusLayer) -> Tensor:
    """[Ni, d] the image rows of a question harvest of the same samples, in `like`'s row order."""
    x, lab = ActivationSource.from_shards(acts, layer, "image").load(with_labels=True, keep=_of_rows(like.rows))
    p = like.patches
    key = lab["scene"].long() * p + lab["cell"].long()
    want = torch.tensor(like.rows)[like.img_scene] * p + like.img_cell
    order = torch.argsort(key)
    pos = torch.searchsorted(key[order], want)
    pos = pos.clamp(max=len(order) - 1)
    found = order[pos]
    if not bool((key[found] == want).all()):
        raise SteerError(f"harvest {acts}: its image rows are not those of the caption harvest (other samples or patches)")
    return x[found]


def _grid(split: CorpusLayer, values: Tensor, fill: Any = 0) -> Tensor:
    g = torch.full((split.n_scenes, split.patches), fill, dtype=values.dtype)
    g[split.img_scene, split.img_cell] = values
    return g.view(-1, *split.grid)


def _rows(split: CorpusLayer, grid: Tensor) -> Tensor:
    return grid.reshape(split.n_scenes, -1)[split.img_scene, split.img_cell]


def image_scores(split: CorpusLayer, pre: Tensor) -> Tensor:
    """[n, d_sae] each image's highest pre-activation of each latent over its patches."""
    out = torch.full((split.n_scenes, pre.shape[1]), float("-inf"))
    for lo in range(0, pre.shape[1], 256):
        cols = pre[:, lo : lo + 256]
        idx = split.img_scene[:, None].expand_as(cols)
        out[:, lo : lo + 256] = out[:, lo : lo + 256].scatter_reduce(0, idx, cols, reduce="amax")
    return out


@dataclass
class Seeds:
    latents: list[int]
    thresholds: list[float]
    image_precision: float
    image_recall: float


def seed_latents(scores: Tensor, named: Tensor, *, neg_quantile: float = 0.998, min_precision: float = 0.98,
                 max_seeds: int = 3, min_gain: float = 0.01) -> Seeds:
    """Latents whose image score says "the caption names the word" (module docstring, step 1)."""
    neg = scores[~named]
    if len(neg) == 0 or not bool(named.any()):
        return Seeds([], [], 0.0, 0.0)
    t = torch.quantile(neg, neg_quantile, dim=0) if len(neg) * neg.shape[1] < 16_000_000 else \
        torch.from_numpy(np.quantile(neg.numpy(), neg_quantile, axis=0)).float()
    fires = scores > t
    tp = (fires & named[:, None]).sum(0).float()
    prec = tp / fires.sum(0).clamp(min=1)
    n_pos = float(named.sum())
    order = [int(j) for j in torch.argsort(tp, descending=True) if prec[j] >= min_precision and tp[j] > 0]
    chosen: list[int] = []
    union = torch.zeros_like(named)
    best_p = best_r = 0.0
    for j in order:
        if len(chosen) >= max_seeds:
            break
        u = union | fires[:, j]
        p, r = float((u & named).sum()) / max(float(u.sum()), 1.0), float((u & named).sum()) / n_pos
        if p >= min_precision and r > best_r + min_gain:
            chosen.append(j)
            union, best_p, best_r = u, p, r
    return Seeds(chosen, [float(t[j]) for j in chosen], best_p, best_r)


def otsu(values: Tensor, bins: int = 256) -> float:
    """The cut that maximises the between-class variance of `values` (Otsu's method)."""
    lo, hi = float(values.min()), float(values.max())
    hist = torch.histc(values.float(), bins, lo, hi).double()
    centers = torch.linspace(lo, hi, bins + 1)[:-1].double() + (hi - lo) / bins / 2
    w0 = hist.cumsum(0)
    w1 = hist.sum() - w0
    m0 = (hist * centers).cumsum(0) / w0.clamp(min=1)
    m1 = ((hist * centers).sum() - (hist * centers).cumsum(0)) / w1.clamp(min=1)
    between = w0 * w1 * (m0 - m1) ** 2
    i = int(torch.argmax(between[:-1]))
    return float(centers[i] + (hi - lo) / bins / 2)


def valley(values: Tensor, bins: int = 64) -> float | None:
    """The lowest point of the (smoothed) histogram of `values` between its highest peak and the
    next peak that a valley below half their height separates from it; None when there is none."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return None
    h = torch.histc(values.float(), bins, lo, hi)
    hs = torch.nn.functional.avg_pool1d(h[None, None], 5, 1, 2, count_include_pad=False)[0, 0]
    peaks = [i for i in range(bins) if (i == 0 or hs[i] >= hs[i - 1]) and (i == bins - 1 or hs[i] >= hs[i + 1])]
    peaks.sort(key=lambda i: (-float(hs[i]), i))
    top = peaks[0]
    for other in peaks[1:]:
        a, b = sorted((top, other))
        v = a + int(torch.argmin(hs[a : b + 1]))
        if hs[v] < 0.5 * min(hs[top], hs[other]):
            return lo + (v + 0.5) * (hi - lo) / bins
    return None


@dataclass
class Objectness:
    median: Tensor  # [patches, d] median state at each grid position (training images)
    cut: float  # log-distance above which a patch is object-like

    @classmethod
    def fit(cls, split: CorpusLayer) -> Objectness:
        med = torch.zeros(split.patches, split.x_img.shape[1])
        for p in range(split.patches):
            sel = split.img_cell == p
            if bool(sel.any()):
                med[p] = split.x_img[sel].median(0).values
        d = cls._logdist(split, med)
        cut = valley(d)
        return cls(med, cut if cut is not None else otsu(d))

    @staticmethod
    def _logdist(split: CorpusLayer, med: Tensor) -> Tensor:
        return torch.log((split.x_img - med[split.img_cell]).norm(dim=1).clamp(min=1e-6))

    def object_like(self, split: CorpusLayer) -> Tensor:
        """[Ni] bool for the rows of a split at the layer this was fitted on."""
        return self._logdist(split, self.median) > self.cut


def rough_labels(split: CorpusLayer, fires: Sequence[Tensor], named: Sequence[Tensor], object_like: Tensor) -> Tensor:
    """[Ni] label per patch row: word index, len(words) for background, len(words) + 1 for a patch
    two words claim equally. `fires[w]` [Ni] bool: where word w's evidence fires; `named[w]` [n]
    bool: the sample's caption names w. A word claims a patch (2) where its evidence fires on it, or
    (1) within one patch of that, in an object-like patch of a sample whose caption names it."""
    n_words = len(fires)
    score = torch.zeros(n_words, len(split.img_scene), dtype=torch.long)
    for w in range(n_words):
        g = _grid(split, fires[w], False)
        ring = _rows(split, dilate(g))
        on = _rows(split, g)
        claim = object_like & named[w][split.img_scene]
        score[w] = torch.where(on & claim, 2, torch.where(ring & claim, 1, 0))
    label = torch.full((len(split.img_scene),), n_words, dtype=torch.long)
    if n_words == 0:
        return label
    top, arg = score.max(0)
    tied = (score == top[None]).sum(0) > 1
    label[top > 0] = arg[top > 0]
    label[(top > 0) & tied] = n_words + 1
    return label


@dataclass
class WordPlan:
    """What round 1 found for one word (kept for the report)."""

    seeds: Seeds
    rough: int = 0  # training patches with the rough label
    labelled: int = 0  # training patches with the final label


def _pre_candidates(codes: Codes, labels: Tensor, n_labels: int, d_sae: int) -> list[list[int]]:
    """Per label: latents with >= 30% of their training firings on it and >= 20 firings there."""
    fc = codes.fire_counts(labels, n_labels, d_sae)
    purity = fc / np.maximum(fc.sum(1, keepdims=True), 1)
    return [[int(j) for j in np.nonzero((purity[:, k] >= 0.3) & (fc[:, k] >= 20))[0]] for k in range(n_labels)]


def uncertain(split: CorpusLayer, labels: Tensor, named: Tensor, object_like: Tensor, n_words: int) -> Tensor:
    """[Ni] rows a word's chooser leaves out: object-like patches of images whose caption names the
    word that no word claims (or two claim equally). They may well be the word's, so counting them
    as negatives would cap the precision a perfect group could reach at the labels' recall."""
    return named[split.img_scene] & object_like & (labels >= n_words)


def choose_group(image_read: str, pre: Tensor, codes: Codes, labels: Tensor, k: int, cands: Sequence[int], *,
                 fit: tuple[Tensor, Tensor] | None = None, ignore: Tensor | None = None, max_group: int = 8,
                 linear_group: int = 32, pre_precision: float = 0.93, min_precision: float = 0.95) -> GroupChoice | None:
    """The supervised builder's choosers, on caption-derived labels (`image_read` as there), leaving
    out the rows `ignore` marks (`uncertain`; for `fit`, the same rows of each prompt set)."""
    if ignore is not None and bool(ignore.any()):
        keep = ~ignore
        pre, labels, codes = pre[keep], labels[keep], Codes(codes.idx[keep], codes.val[keep])
        if fit is not None:
            reps = len(fit[1]) // len(keep)
            fit = (fit[0][keep.repeat(reps)], fit[1][keep.repeat(reps)])
    g = None
    if image_read == "pre":
        g = choose_pre_group(pre, labels, k, cands, max_group=max_group, min_precision=pre_precision)
    elif image_read == "linear":
        fp, fl = fit if fit is not None else (pre, labels)
        g = choose_linear_group(fp, fl, k, cands, max_group=linear_group, min_precision=pre_precision)
    if g is None:
        g = choose_image_group(codes, labels, k, cands, min_precision=min_precision, max_group=max_group)
    return g


@dataclass
class CaptionLabels:
    """The label-free groundwork shared by every layer: concept words, seeds, objectness, labels."""

    words: list[str]
    train_named: list[Tensor]  # [n_train] per word
    held_named: list[Tensor]
    train_object_like: Tensor  # [Ni_train]
    held_object_like: Tensor
    train_labels: Tensor  # [Ni_train] final labels
    held_labels: Tensor
    plans: dict[str, WordPlan]


def _named(split: CorpusLayer, words: Sequence[str]) -> list[Tensor]:
    sets = [caption_words(c) for c in split.captions]
    return [torch.tensor([w in s for s in sets]) for w in words]


def label_patches(first: tuple[CorpusLayer, CorpusLayer], sae: SAE, words: Sequence[str], *, pre_precision: float = 0.93,
                  max_group: int = 8, log: Callable[[str], None] = lambda _m: None) -> CaptionLabels:
    """Steps 1-4 of the module docstring at the first layer: (train, held) splits and its image SAE."""
    train, held = first
    words = list(words)
    n_words = len(words)
    tn, hn = _named(train, words), _named(held, words)
    obj = Objectness.fit(train)
    t_obj, h_obj = obj.object_like(train), obj.object_like(held)
    log(f"objectness: {float(t_obj.float().mean()):.1%} of training patches object-like (log-distance cut {obj.cut:.3f})")
    with torch.no_grad():
        pre, h_pre = sae.pre_acts(train.x_img), sae.pre_acts(held.x_img)
    scores = image_scores(train, pre)
    plans: dict[str, WordPlan] = {}
    t_fires, h_fires = [], []
    for w, word in enumerate(words):
        s = seed_latents(scores, tn[w])
        plans[word] = WordPlan(s)
        t_fire = torch.zeros(len(train.img_scene), dtype=torch.bool)
        h_fire = torch.zeros(len(held.img_scene), dtype=torch.bool)
        for j, t in zip(s.latents, s.thresholds, strict=True):
            t_fire |= pre[:, j] > t
            h_fire |= h_pre[:, j] > t
        t_fires.append(t_fire)
        h_fires.append(h_fire)
        log(f"{word}: seed latents {s.latents} (image precision {s.image_precision:.3f}, recall {s.image_recall:.3f})")
    rough_t = rough_labels(train, t_fires, tn, t_obj)
    rough_h = rough_labels(held, h_fires, hn, h_obj)
    # Round 2: the chooser on the rough labels, then labels redrawn around its closed firings.
    codes, h_codes = Codes.encode(sae, train.x_img), Codes.encode(sae, held.x_img)
    cands = _pre_candidates(codes, rough_t, n_words + 2, sae.cfg.d_sae)
    t_fires2, h_fires2 = [], []
    for w, word in enumerate(words):
        plans[word].rough = int((rough_t == w).sum())
        g = choose_group("pre", pre, codes, rough_t, w, sorted(set(cands[w]) | set(plans[word].seeds.latents)),
                         ignore=uncertain(train, rough_t, tn[w], t_obj, n_words), max_group=max_group,
                         pre_precision=pre_precision)
        if g is None:
            t_fires2.append(rough_t == w)
            h_fires2.append(rough_h == w)
            continue
        t_fires2.append(_rows(train, close(_grid(train, g.activation(codes, pre) > g.threshold, False))))
        h_fires2.append(_rows(held, close(_grid(held, g.activation(h_codes, h_pre) > g.threshold, False))))
    labels_t = rough_labels(train, t_fires2, tn, t_obj)
    labels_h = rough_labels(held, h_fires2, hn, h_obj)
    for w, word in enumerate(words):
        plans[word].labelled = int((labels_t == w).sum())
        log(f"{word}: {plans[word].rough} rough, {plans[word].labelled} final labelled training patches")
    return CaptionLabels(words, tn, hn, t_obj, h_obj, labels_t, labels_h, plans)


@dataclass
class CaptionLayerReport:
    layer: int
    retrieval_i2t: dict[int, float] = field(default_factory=dict)
    retrieval_t2i: dict[int, float] = field(default_factory=dict)
    retrieval_i2t_caption: dict[int, float] = field(default_factory=dict)
    retrieval_t2i_caption: dict[int, float] = field(default_factory=dict)
    strict_ceiling: float = 0.0
    concept_retrieval: dict[str, Any] = field(default_factory=dict)
    matched: int = 0
    concepts: dict[str, dict[str, Any]] = field(default_factory=dict)


def build_caption_layer(layer: int, sae_img: SAE, sae_txt: SAE, train: CorpusLayer, held: CorpusLayer, labels: CaptionLabels,
                        *, image_read: str = "pre", questions: tuple[Tensor, Tensor] | None = None,
                        pre_precision: float = 0.93, min_precision: float = 0.95, max_group: int = 8, linear_group: int = 32,
                        log: Callable[[str], None] = lambda _m: None,
                        on_word: Callable[[str], None] | None = None) -> tuple[CaptionLayerReport, dict[str, Any]]:
    """One layer's groups, names and alignment, in the format `assemble_concepts` reads.
    `questions`: (training, held-out) image states of the same samples under yes/no questions
    (`CaptionQuestions`), row for row; "linear" groups are fitted on both prompt sets."""
    if image_read not in ("code", "pre", "linear"):
        raise ValueError(f"image_read: 'code', 'pre' or 'linear', got {image_read!r}")
    words = labels.words
    train.img_label, held.img_label = labels.train_labels, labels.held_labels
    ci, ct = Codes.encode(sae_img, train.x_img), Codes.encode(sae_txt, train.x_txt)
    hi, ht = Codes.encode(sae_img, held.x_img), Codes.encode(sae_txt, held.x_txt)
    with torch.no_grad():
        pre, held_pre = sae_img.pre_acts(train.x_img), sae_img.pre_acts(held.x_img)
        txt_pre, held_txt_pre = sae_txt.pre_acts(train.x_txt), sae_txt.pre_acts(held.x_txt)
    q_held = None  # (codes, pre-activations) of the held-out images under questions, for every word
    if questions is not None:
        with torch.no_grad():
            q_held = (Codes.encode(sae_img, questions[1]), sae_img.pre_acts(questions[1]))
    fit = None
    if questions is not None and image_read == "linear":
        with torch.no_grad():
            fit = (torch.cat([pre, sae_img.pre_acts(questions[0])]), torch.cat([train.img_label, train.img_label]))
    di, dt = sae_img.cfg.d_sae, sae_txt.cfg.d_sae
    pi, pt = ci.pooled(train.img_scene, train.n_scenes, di), ct.pooled(train.txt_scene, train.n_scenes, dt)
    hpi, hpt = hi.pooled(held.img_scene, held.n_scenes, di), ht.pooled(held.txt_scene, held.n_scenes, dt)
    img_names = name_latents(pi, train.captions, hpi, held.captions, "image")
    txt_names = name_latents(pt, train.captions, hpt, held.captions, "text")
    al = align(pi, pt, min_corr=0.5)
    report = CaptionLayerReport(layer, matched=len(al.image))
    mapped = map_image_to_text(hpi, al, dt)
    report.retrieval_i2t, report.retrieval_t2i = retrieval_recall(mapped, hpt), retrieval_recall(hpt, mapped)
    report.retrieval_i2t_caption = caption_recall(mapped, hpt, held.captions)
    report.retrieval_t2i_caption = caption_recall(hpt, mapped, held.captions)
    report.strict_ceiling = strict_ceiling(held.captions)
    groups: dict[str, Any] = {"image": {}, "text": {}, "names": {"image": img_names, "text": txt_names},
                              "alignment": {"image": al.image.tolist(), "text": al.text.tolist(), "corr": al.corr.tolist()}}
    n_labels = len(words) + 2
    cands = _pre_candidates(ci, train.img_label, n_labels, di)
    both: dict[str, dict[str, tuple[Tensor, float]]] = {}
    for k, word in enumerate(words):
        named_cands = {j for j, n in img_names.items() if n["name"] == word}
        ignore = uncertain(train, train.img_label, labels.train_named[k], labels.train_object_like, len(words))
        g = choose_group(image_read, pre, ci, train.img_label, k, sorted(set(cands[k]) | named_cands), fit=fit, ignore=ignore,
                         max_group=max_group, linear_group=linear_group, pre_precision=pre_precision,
                         min_precision=min_precision)
        tg = choose_text_group(ct, train.txt_token, word, dt, pre=txt_pre)
        entry: dict[str, Any] = {}
        if g is not None:
            # Next to a patch the group surely marks, an object-like patch of an image whose caption
            # names the word is most likely the word's own, labelled or not: extent latents are judged there.
            near = dataclasses.replace(train, img_label=torch.where(ignore, k, train.img_label))
            extent = choose_extent(ci, near, k, g.activation(ci, pre) > g.threshold)  # type: ignore[arg-type]
            act = g.activation(hi, held_pre)
            fires = act > g.threshold
            both.setdefault(word, {})["image"] = (act, g.threshold)
            p, r = precision_recall(fires, held.img_label == k)
            scene_fires = np.zeros(held.n_scenes, dtype=bool)
            scene_fires[held.img_scene[fires].numpy()] = True
            named = labels.held_named[k].numpy()
            entry = {"latents": g.latents, "read": g.read, "weights": g.weights or [1.0] * len(g.latents), "offsets": g.offsets,
                     "scale": g.scale, "threshold": g.threshold, "precision": p, "recall": r,
                     "detection": balanced_accuracy(scene_fires, named), "frequency": float(scene_fires.mean()),
                     "train_precision": g.train_precision, "train_recall": g.train_recall, "extent": extent,
                     "labels": "caption"}
            if q_held is not None:
                q_act = g.activation(*q_held)
                qp, qr = precision_recall(q_act > g.threshold, held.img_label == k)
                entry["under_questions"] = {"precision": qp, "recall": qr}
            groups["image"][word] = entry
        if tg is not None:
            t_act, groups["text"][word] = text_entry(tg, ht, held_txt_pre, held.txt_token, word)
            both.setdefault(word, {})["text"] = (t_act, tg.threshold)
        report.concepts[word] = {"image": {k2: v for k2, v in entry.items() if k2 != "latents"}, "text": groups["text"].get(word, {})}
        log(f"layer {layer} {word}: image {entry.get('latents')} ({entry.get('read')}) P {entry.get('precision', 0):.3f} "
            f"R {entry.get('recall', 0):.3f} det {entry.get('detection', 0):.3f} (held-out, against caption-derived labels); "
            f"text {groups['text'].get(word, {}).get('latents')}")
        if on_word is not None:
            on_word(word)
    report.concept_retrieval = concept_retrieval(held, both, words)
    return report, groups


def reference_states(split: CorpusLayer, labels: CaptionLabels, layer: int) -> dict[str, Tensor]:
    """Background and per-word prototypes at one layer, from training rows (module docstring)."""
    p = split.patches
    d = split.x_img.shape[1]

    def mean_at(sel: Tensor) -> tuple[Tensor, Tensor]:
        sums = torch.zeros(p, d).index_add_(0, split.img_cell[sel], split.x_img[sel])
        count = torch.bincount(split.img_cell[sel], minlength=p).float()
        return sums / count.clamp(min=1)[:, None], count

    bg, n_bg = mean_at(~labels.train_object_like)
    if bool((n_bg == 0).any()):  # a position never seen empty: its overall mean
        allm, _ = mean_at(torch.ones_like(labels.train_object_like))
        bg[n_bg == 0] = allm[n_bg == 0]
    out = {f"background.L{layer}": bg}
    for k, _w in enumerate(labels.words):
        proto, count = mean_at(labels.train_labels == k)
        out[f"prototype.{k}.L{layer}"] = proto
        out[f"prototype.{k}.L{layer}.count"] = count
    return out


def check_grid(grid: Any, where: str) -> tuple[int, int]:
    if not (isinstance(grid, (list, tuple)) and len(grid) == 2 and all(isinstance(v, int) and v > 0 for v in grid)):
        raise InputError(f"{where}: the model has no fixed patch grid (its images are tiled or resized per image); "
                         "building concepts from captions needs one grid per image for now")
    return int(grid[0]), int(grid[1])
