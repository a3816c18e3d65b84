"""Image groups read before TopK (`choose_pre_group`, `choose_linear_group`) on planted pre-activations."""

from __future__ import annotations

import pytest
import torch

from steerlang.dictionary.build_concepts import (
    PRE_THRESHOLD,
    choose_linear_group,
    choose_pre_group,
    threshold_for,
)
from steerlang.dictionary.concepts import LatentGroup
from steerlang.errors import DictionaryError


def _planted(n: int = 4000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Kind 0 on a third of the rows: latent 0 is high on its first half, latent 1 on its second
    half, latent 2 is high on every kind row and on as many background rows (imprecise)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.full((n,), 1)
    labels[: n // 3] = 0
    pre = torch.randn(n, 3, generator=g) * 0.3
    half = n // 6
    pre[:half, 0] += 3.0
    pre[half : n // 3, 1] += 3.0
    pre[: n // 3, 2] += 3.0
    pre[n // 3 : 2 * n // 3, 2] += 3.0
    return pre, labels


def test_threshold_is_the_lowest_that_keeps_precision() -> None:
    score = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    truth = torch.tensor([True, True, False, True, False])
    assert threshold_for(score, truth, 1.0) == 4.0
    assert threshold_for(score, truth, 0.75) == 2.0
    assert threshold_for(score, torch.zeros(5, dtype=torch.bool), 0.5) == float("inf")


def test_pre_group_unions_precise_latents_and_maps_them() -> None:
    pre, labels = _planted()
    g = choose_pre_group(pre, labels, 0, [0, 1, 2], min_precision=0.95)
    assert g is not None and g.read == "pre"
    assert sorted(g.latents) == [0, 1]  # the imprecise latent 2 is never added
    assert g.train_precision >= 0.95 and g.train_recall >= 0.95
    act = g.activation(None, pre)  # type: ignore[arg-type]
    truth = labels == 0
    assert float(act[truth].median()) > 0.8 and float(act[~truth].median()) < PRE_THRESHOLD
    for j, w, b in zip(g.latents, g.weights, g.offsets, strict=True):
        t = threshold_for(pre[:, j], truth, 0.95)
        assert abs(w * t + b - PRE_THRESHOLD) < 1e-4  # each latent's own threshold reads PRE_THRESHOLD


def test_linear_group_learns_signed_weights_and_maps_its_threshold() -> None:
    """Kind 0 is where latent 0 is high *and* latent 1 is low: latent 1 (high on every kind row's
    half and on background) must get a negative weight; latent 2 is noise."""
    g = torch.Generator().manual_seed(1)
    n = 6000
    a, b = torch.rand(n, generator=g) < 0.5, torch.rand(n, generator=g) < 0.5
    labels = torch.where(a & ~b, 0, 1)
    pre = torch.randn(n, 3, generator=g) * 0.3
    pre[:, 0] += 3.0 * a
    pre[:, 1] += 3.0 * b
    out = choose_linear_group(pre, labels, 0, [0, 1, 2], min_precision=0.95)
    assert out is not None and out.read == "linear" and len(out.offsets) == 1
    w = dict(zip(out.latents, out.weights, strict=True))
    assert w[0] > 0 and w[1] < 0 and abs(w[2]) < 0.2 * min(abs(w[0]), abs(w[1]))
    assert out.train_precision >= 0.95 and out.train_recall >= 0.9
    act = out.activation(None, pre)  # type: ignore[arg-type]
    truth = labels == 0
    above = act[truth & (act > PRE_THRESHOLD)]
    assert abs(float(above.mean()) - 1.0) < 1e-3  # the typical strength on the kind reads 1.0


def test_linear_group_keeps_at_most_max_group_latents() -> None:
    pre, labels = _planted()
    out = choose_linear_group(pre, labels, 0, [2, 1, 0], max_group=2, min_precision=0.9)
    assert out is not None and sorted(out.latents) == [0, 1]  # the two that alone cover the most at 0.9


def test_latent_group_checks_its_offsets() -> None:
    LatentGroup(1, "image", (3, 4), (1.0, -0.5), read="linear", offsets=(0.2,))
    with pytest.raises(DictionaryError, match="exactly one offset"):
        LatentGroup(1, "image", (3, 4), (1.0, -0.5), read="linear", offsets=(0.2, 0.1))
    with pytest.raises(DictionaryError, match="one offset per latent"):
        LatentGroup(1, "image", (3, 4), (1.0, -0.5), read="pre", offsets=(0.2,))
