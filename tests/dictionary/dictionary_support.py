"""Helpers for the dictionary tests: d_in 16, d_sae 64, a few hundred planted-sparse rows."""

from __future__ import annotations

import torch

from steerlang.dictionary.sae import SAE, SAEConfig, make_sae

D_IN, D_SAE = 16, 64


def planted(n: int = 512, d_in: int = D_IN, n_feat: int = 48, p: float = 0.06, seed: int = 0) -> torch.Tensor:
    """Rows that are sparse non-negative combinations of unit directions, plus an offset [n, d_in]."""
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(n_feat, d_in, generator=g)
    D /= D.norm(dim=1, keepdim=True)
    codes = (torch.rand(n, n_feat, generator=g) < p).float() * torch.rand(n, n_feat, generator=g) * 3
    return codes @ D + 0.3


def random_sae(arch: str, *, d_in: int = D_IN, d_sae: int = D_SAE, k: int = 4, seed: int = 0, **kw) -> SAE:
    """An SAE with random (finite) weights; JumpReLU gets positive thresholds."""
    g = torch.Generator().manual_seed(seed)
    sae = make_sae(SAEConfig(architecture=arch, d_in=d_in, d_sae=d_sae, k=k if arch == "topk" else None, **kw))
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        if arch == "jumprelu":
            sae.threshold.copy_(torch.rand(d_sae, generator=g) * 0.2)
    return sae.requires_grad_(False)
