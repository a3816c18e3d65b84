"""Retrieval codes over named joint concepts that keep reading order (issue 4).

A pooled bag of latents cannot tell "a cat and a tree ." from "a tree and a cat .": both name the
same concepts. Toy-world captions name objects in reading order, so a code that keeps order can.
Per sample (an image or a caption) and named concept k:

- strength a_k: the concept's largest activation over the sample's rows (patches or tokens), >= 0;
- position p_k: the activation-weighted mean position of the rows where it fires (above its
  group's threshold): (patch row, patch column) on the image, (0, token index) in a caption.

The ordered code is [a, sqrt(lam) * vec(O * a a^T)], where O[k, l] = +1 when k comes before l in
reading order and -1 when after (0 when either does not fire). Two positions are on one line when
their rows differ by at most `band` (an object's centroid moves with its shape, not by a whole
grid cell); then the column decides. Retrieval ranks by the cosine of these codes, so an image and
a caption agree in full only when they name the same concepts in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

LINE_BAND = 1.5  # patch rows: two centroids this close in height are read on one line
ORDER_WEIGHT = 1.0  # lam: weight of the pairwise order block against the bag of strengths


@dataclass(frozen=True)
class ConceptCodes:
    """Per-sample concept strengths [n, K] and positions [n, K, 2] (NaN where a concept does not fire)."""

    strength: np.ndarray
    position: np.ndarray


def concept_codes(act: Tensor, fires: Tensor, sample: Tensor, pos: Tensor, n: int) -> ConceptCodes:
    """act, fires: [N, K] activations and firing flags of K concepts on N rows; sample: [N] sample
    ids in [0, n); pos: [N, 2] row positions."""
    a = act.float().clamp(min=0)
    idx = sample.long()[:, None].expand_as(a)
    strength = torch.zeros(n, a.shape[1]).scatter_reduce_(0, idx, a, reduce="amax")
    w = a * fires
    mass = torch.zeros(n, a.shape[1]).index_add_(0, sample.long(), w)
    centre = torch.stack([torch.zeros(n, a.shape[1]).index_add_(0, sample.long(), w * pos[:, d : d + 1].float())
                          for d in range(2)], -1)
    position = torch.where(mass[..., None] > 0, centre / mass.clamp(min=1e-12)[..., None], torch.nan)
    return ConceptCodes(strength.numpy(), position.numpy())


def reading_order(position: np.ndarray, band: float = LINE_BAND) -> np.ndarray:
    """[n, K, K]: +1 where concept k precedes l in reading order, -1 where it follows, 0 if either is absent."""
    y, x = position[..., 0], position[..., 1]
    dy = y[:, None, :] - y[:, :, None]  # [n, k, l]: y_l - y_k
    dx = x[:, None, :] - x[:, :, None]
    before = (dy > band) | ((np.abs(dy) <= band) & (dx > 0))
    after = (dy < -band) | ((np.abs(dy) <= band) & (dx < 0))
    order = before.astype(np.float64) - after.astype(np.float64)
    present = ~np.isnan(y)
    return np.where(present[:, :, None] & present[:, None, :], order, 0.0)


def ordered_code(codes: ConceptCodes, *, band: float = LINE_BAND, lam: float = ORDER_WEIGHT) -> np.ndarray:
    """[n, K + K*K]: the strengths, then the order block weighted by sqrt(lam) (see the module docstring)."""
    a = codes.strength.astype(np.float64)
    pairs = reading_order(codes.position, band) * a[:, :, None] * a[:, None, :]
    return np.concatenate([a, np.sqrt(lam) * pairs.reshape(len(a), -1)], axis=1)


def token_index(sample: Tensor) -> Tensor:
    """Each row's index within its sample, for rows stored in position order per sample."""
    s = sample.long()
    change = torch.ones_like(s, dtype=torch.bool)
    change[1:] = s[1:] != s[:-1]
    start = torch.cummax(torch.where(change, torch.arange(len(s)), 0), 0).values
    return torch.arange(len(s)) - start


def grid_position(cell: Tensor, cols: int) -> Tensor:
    """[N, 2] (row, column) of patch indices on a grid `cols` patches wide."""
    return torch.stack([cell // cols, cell % cols], 1)


def sample_codes(act: Tensor, threshold: Tensor, sample: Tensor, pos: Tensor, n: int) -> ConceptCodes:
    """`concept_codes` with each concept firing where its activation exceeds its threshold [K]."""
    return concept_codes(act, act > threshold, sample, pos, n)


def concept_recall(img: ConceptCodes, txt: ConceptCodes, captions: list[str]) -> dict[str, Any]:
    """Image -> text and text -> image R@k (strict and caption-level) of the ordered code and, for
    comparison, of the bag of strengths alone."""
    from steerlang.dictionary.crossmodal import recall_at_k

    out: dict[str, Any] = {}
    for name, (qi, qt) in (("ordered", (ordered_code(img), ordered_code(txt))), ("bag", (img.strength, txt.strength))):
        out[name] = {"i2t": recall_at_k(qi, qt, captions), "t2i": recall_at_k(qt, qi, captions)}
    return out


def measured_concepts(cs: Any, layer: int) -> list[Any]:
    """The joint concepts with an image and a text group at `layer` whose image group carries a
    held-out precision: the curated variables (the object kinds), not single matched latent pairs."""
    return [c for c in cs.concepts if c.space == "joint" and c.group(layer, "text") is not None
            and (g := c.group(layer, "image")) is not None and g.precision is not None]


def _codes(cs: Any, layer: int, modality: str, x: Tensor, sample: Tensor, pos: Tensor, n: int) -> ConceptCodes:
    groups = [c.group(layer, modality) for c in measured_concepts(cs, layer)]
    sae = cs.sae(layer, modality)
    with torch.no_grad():
        act = torch.stack([g.activation(sae, x) for g in groups], 1)
    return sample_codes(act, torch.tensor([g.threshold for g in groups]), sample, pos, n)


def image_codes(cs: Any, layer: int, x: Tensor, sample: Tensor, cell: Tensor, n: int, *, grid_cols: int) -> ConceptCodes:
    """The measured joint concepts' codes of n images from patch states x [N, d] (patch index `cell`)."""
    return _codes(cs, layer, "image", x, sample, grid_position(cell, grid_cols), n)


def text_codes(cs: Any, layer: int, x: Tensor, sample: Tensor, n: int) -> ConceptCodes:
    """The measured joint concepts' codes of n captions from token states x [N, d], rows in
    position order within each sample."""
    return _codes(cs, layer, "text", x, sample, torch.stack([torch.zeros_like(sample), token_index(sample)], 1), n)


def concept_set_recall(cs: Any, layer: int, split: Any, *, grid_cols: int,
                          txt: tuple[Tensor, Tensor] | None = None) -> dict[str, Any]:
    """`concept_recall` of a concept set's measured joint concepts on a held-out `Split`.
    `txt`: other caption-token states and their sample ids (rows in position order per sample) to
    read the captions from instead of the split's (e.g. captions read after a blank image)."""
    concepts = measured_concepts(cs, layer)
    if not concepts:
        raise ValueError(f"layer {layer}: no joint concept has measured image and text groups")
    x_txt, t_sample = txt if txt is not None else (split.x_txt, split.txt_scene)
    n = split.n_scenes
    img = image_codes(cs, layer, split.x_img, split.img_scene, split.img_cell, n, grid_cols=grid_cols)
    out = concept_recall(img, text_codes(cs, layer, x_txt, t_sample, n), split.captions)
    out["concepts"] = [c.name for c in concepts]
    return out
