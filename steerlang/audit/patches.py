"""SAE-V's patch scores: which image patches a shared image+text SAE says carry the image's content.

The SAE-V paper (Lou et al., "SAE-V: Interpreting Multimodal Models for Enhanced Alignment",
appendix C, algorithms 4-7) runs the model once on a fixed prompt and the image, encodes every
position with the SAE-V (one SAE over image and text positions), scores each image patch, and keeps
the top gamma of the patches (K = floor(gamma * P)). With delta the activation bound and w the
latents' cross-modal weights (`steerlang.audit.readers.TopTokens.weights`):

- ``l0``:     number of latents with code > delta at the patch;
- ``l1``:     sum of the patch's codes;
- ``co_l0``:  number of latents with code > delta at the patch that are *co-occurring* in this
  sample: active (> delta) at some text position and at some image position of the same pass;
- ``cosine``: sum of the cross-modal weights w_f of those latents.

`keep_top` turns a score into the kept patches, breaking ties by a given random order (patches
with equal scores are otherwise kept in index order, i.e. from the top-left of the image).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SCORES = ("l0", "l1", "co_l0", "cosine")


def patch_scores(z_img: Tensor, z_txt: Tensor, weights: Tensor, delta: float) -> dict[str, Tensor]:
    """One sample: z_img [P, F] codes at its P patches, z_txt [T, F] at its text positions,
    weights [F] the cross-modal weights. Returns {score name: [P]}."""
    active = z_img > delta  # [P, F]
    co = active.any(0) & (z_txt > delta).any(0) if len(z_txt) else torch.zeros(z_img.shape[1], dtype=torch.bool)
    act_co = active & co
    return {
        "l0": active.sum(1).float(),
        "l1": z_img.clamp(min=0).sum(1).float(),
        "co_l0": act_co.sum(1).float(),
        "cosine": (act_co.float() * weights.float()).sum(1),
    }


def keep_top(score: Tensor, gamma: float, tiebreak: Tensor) -> Tensor:
    """[P] bool: the floor(gamma * P) patches with the highest score; among equal scores, those
    first in `tiebreak` (a permutation of 0..P-1, e.g. a seeded random one) are kept."""
    p = score.shape[0]
    k = math.floor(gamma * p + 1e-9)
    rank = torch.empty(p, dtype=torch.long)
    rank[tiebreak] = torch.arange(p)
    order = sorted(range(p), key=lambda i: (-float(score[i]), int(rank[i])))
    keep = torch.zeros(p, dtype=torch.bool)
    keep[order[:k]] = True
    return keep
