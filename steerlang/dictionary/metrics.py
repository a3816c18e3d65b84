"""Reconstruction metrics, with the definitions the SAE literature uses (SAELens, SAE-V).

- MSE = mean_t ||x_t - x̂_t||² (squared norm summed over d_in, averaged over tokens)
- FVU = Σ||x - x̂||² / Σ||x - mean(x)||²; explained variance = 1 - FVU
- L0 = mean_t #{j : z_tj > 0}
- dead fraction = latents that never fire over the evaluated tokens; dense = firing on > 5%.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from steerlang.dictionary.sae import SAE
from steerlang.dictionary.source import ActivationSource, as_source

DENSE_FREQ = 0.05


@torch.no_grad()
def reconstruction_metrics(
    sae: SAE, data: ActivationSource | Tensor, *, batch_size: int = 4096, max_rows: int | None = None
) -> dict[str, Any]:
    """One ordered pass over ``data``; float64 accumulators so the sums do not drift."""
    src = as_source(data)
    d_sae = sae.cfg.d_sae
    n = 0
    sq_err = 0.0
    s1 = torch.zeros(src.d_in, dtype=torch.float64)
    s2 = 0.0
    fires = torch.zeros(d_sae, dtype=torch.float64)
    for x in src.iter_batches(batch_size, max_rows=max_rows):
        z = sae.encode(x)  # [B, d_sae]
        x_hat = sae.decode(z)
        sq_err += float((x - x_hat).double().pow(2).sum())
        xd = x.double()
        s1 += xd.sum(0)
        s2 += float(xd.pow(2).sum())
        fires += (z > 0).double().sum(0)
        n += x.shape[0]
    total_var = s2 - float(s1.pow(2).sum()) / n  # Σ||x - mean||² = Σ||x||² - n ||mean||²
    fvu = sq_err / total_var if total_var > 0 else float("nan")
    freq = fires / n
    return {
        "n_tokens": n,
        "mse": sq_err / n,
        "fvu": fvu,
        "explained_variance": 1.0 - fvu,
        "l0": float(fires.sum()) / n,
        "dead_fraction": float((fires == 0).double().mean()),
        "dense_fraction": float((freq > DENSE_FREQ).double().mean()),
    }
