from __future__ import annotations

import pytest
import torch
from dictionary_support import D_IN, planted, random_sae

from steerlang.dictionary.transform import Whitening, fold_whitening


@pytest.mark.parametrize("kind", ["zca", "pca"])
def test_whitening_whitens_and_inverts(kind):
    x = planted(2000) @ (torch.eye(D_IN) + 0.3 * torch.randn(D_IN, D_IN))
    wh = Whitening.fit(x, kind=kind, eps=1e-6)
    xw = wh.apply(x)
    cov = torch.cov(xw.double().T)
    assert torch.allclose(cov, torch.eye(D_IN, dtype=torch.float64), atol=2e-3)
    assert torch.allclose(wh.invert(xw), x, atol=1e-3 * float(x.abs().max()))


@pytest.mark.parametrize("arch", ["topk", "relu", "jumprelu"])
@pytest.mark.parametrize("kind", ["zca", "pca"])
def test_folded_equals_unfolded(arch, kind):
    """folded(x) == invert(sae(apply(x))), latents identical (TopK choices included)."""
    x = planted(400) @ torch.randn(D_IN, D_IN)
    wh = Whitening.fit(x, kind=kind, eps=1e-3)
    sae = random_sae(arch, k=5)
    folded = fold_whitening(sae, wh)
    z_ref = sae.encode(wh.apply(x))
    z = folded.encode(x)
    assert torch.allclose(z, z_ref, atol=1e-4)
    assert torch.equal(z > 0, z_ref > 0)
    ref = wh.invert(sae(wh.apply(x)))
    assert torch.allclose(folded(x), ref, atol=1e-4 * float(ref.abs().max()))
    assert folded.cfg.metadata["whitening"] == {"kind": kind, "eps": 1e-3, "folded": True, "centered": True}
