"""Post-hoc alignment of separately learned image and text dictionaries (the matching rule is ours).

On paired samples (a scene's image and its caption), each image latent is pooled over the image's
patches and each text latent over the caption's tokens (max). The score of a pair (i, j) is
`lam * corr(z_img_i, z_txt_j) + (1 - lam) * cos(d_img_i, d_txt_j)` (activation correlation over
samples plus decoder-direction cosine); the Hungarian method (`scipy.optimize.linear_sum_assignment`)
finds the best one-to-one matching, and pairs below a confidence threshold on the correlation
are dropped: those latents stay modality-specific.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class Alignment:
    """Matched (image latent, text latent) pairs with their correlation and decoder cosine."""

    image: np.ndarray  # [m] image latent indices
    text: np.ndarray  # [m] text latent indices
    corr: np.ndarray  # [m]
    cosine: np.ndarray  # [m]

    def as_map(self) -> dict[int, int]:
        return dict(zip(self.image.tolist(), self.text.tolist(), strict=True))


def correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of every column of a [n, p] with every column of b [n, q] -> [p, q].

    Constant columns (dead latents) correlate 0 with everything.
    """
    a = a - a.mean(0)
    b = b - b.mean(0)
    na = np.linalg.norm(a, axis=0)
    nb = np.linalg.norm(b, axis=0)
    c = (a.T @ b) / np.maximum(np.outer(na, nb), 1e-12)
    c[na < 1e-12] = 0
    c[:, nb < 1e-12] = 0
    return c


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of every row of a [p, d] with every row of b [q, d] -> [p, q]."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def align(
    z_image: np.ndarray,
    z_text: np.ndarray,
    *,
    dec_image: np.ndarray | None = None,
    dec_text: np.ndarray | None = None,
    lam: float = 1.0,
    min_corr: float = 0.5,
) -> Alignment:
    """Hungarian matching of image latents [n, p] to text latents [n, q] over n paired samples."""
    if z_image.shape[0] != z_text.shape[0]:
        raise ValueError(f"paired samples differ: {z_image.shape[0]} image rows vs {z_text.shape[0]} text rows")
    corr = correlation(z_image.astype(np.float64), z_text.astype(np.float64))
    cos = np.zeros_like(corr)
    if dec_image is not None and dec_text is not None and lam < 1.0:
        cos = cosine_matrix(dec_image.astype(np.float64), dec_text.astype(np.float64))
    score = lam * corr + (1 - lam) * cos
    rows, cols = linear_sum_assignment(-score)
    keep = corr[rows, cols] >= min_corr
    rows, cols = rows[keep], cols[keep]
    return Alignment(rows, cols, corr[rows, cols], cos[rows, cols])


def retrieval_recall(
    q: np.ndarray, keys: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[int, float]:
    """R@k: fraction of queries i whose own key i ranks in the top k by cosine (ties count against)."""
    sim = cosine_matrix(q, keys)
    own = np.diag(sim)
    # rank = number of other keys strictly better, plus ties with other keys (pessimistic)
    better = (sim > own[:, None]).sum(1) + ((sim == own[:, None]).sum(1) - 1)
    return {k: float((better < k).mean()) for k in ks}


def caption_recall(
    q: np.ndarray, keys: np.ndarray, captions: Sequence[str], ks: tuple[int, ...] = (1, 5, 10)
) -> dict[int, float]:
    """R@k where a key counts as relevant when its scene's caption equals the query's (the retrieved
    text describes the query scene exactly, as with COCO's several captions per image): whether the
    best-ranked relevant key is in the top k, ties with irrelevant keys counted against."""
    sim = cosine_matrix(q, keys)
    cap = np.asarray(captions)
    rel = cap[:, None] == cap[None, :]
    best = np.where(rel, sim, -np.inf).max(1)
    rank = ((sim >= best[:, None]) & ~rel).sum(1)
    return {k: float((rank < k).mean()) for k in ks}


def strict_ceiling(captions: Sequence[str]) -> float:
    """The strict R@1 of a perfect matcher that cannot tell scenes with equal captions apart, ties
    in random order: mean over queries of 1 / (number of scenes sharing the query's caption)."""
    counts = Counter(captions)
    return float(np.mean([1.0 / counts[c] for c in captions])) if len(captions) else 0.0


def map_image_to_text(z_image: np.ndarray, alignment: Alignment, d_text: int) -> np.ndarray:
    """Project pooled image codes [n, p] into the text latent space [n, q] through the matching."""
    out = np.zeros((z_image.shape[0], d_text), dtype=z_image.dtype)
    out[:, alignment.text] = z_image[:, alignment.image]
    return out
