"""Mean centering + whitening as part of a dictionary, folded into the saved weights.

Train on ``x' = W (x - mu)`` (W symmetric for ZCA, ``diag(s) U^T`` for PCA whitening), then fold:
an SAE (W_enc, b_enc, W_dec, b_dec, apply_b_dec_to_input=True) on x' equals, on raw x,

    W_enc_f = W^T W_enc            [d_in, d_sae]
    b_enc_f = b_enc                [d_sae]
    W_dec_f = W_dec W^{-T}         [d_sae, d_in]
    b_dec_f = W^{-1} b_dec + mu    [d_in]

because ``x' - b_dec = W (x - mu - W^{-1} b_dec) = W (x - b_dec_f)`` (so the pre-activations and
hence the latents are unchanged, TopK choices and JumpReLU thresholds included), and the decoded
``W^{-1} (z W_dec + b_dec) + mu = z W_dec_f + b_dec_f``. The folded SAE is a plain SAELens SAE
(``normalize_activations: "none"``). Folded decoder rows are no longer unit norm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from steerlang.dictionary.sae import SAE, make_sae
from steerlang.dictionary.source import ActivationSource, as_source
from steerlang.errors import InputError


@dataclass
class Whitening:
    """x' = (x - mean) @ W^T; W_inv is W^{-1} (exact from the eigendecomposition, not inverted)."""

    mean: Tensor  # [d_in]
    W: Tensor  # [d_in, d_in]
    W_inv: Tensor  # [d_in, d_in]
    kind: Literal["zca", "pca"] = "zca"
    eps: float = 1e-4  # relative: added eigenvalue floor = eps * mean eigenvalue

    @classmethod
    def fit(
        cls,
        data: ActivationSource | Tensor,
        *,
        kind: Literal["zca", "pca"] = "zca",
        eps: float = 1e-4,
        max_rows: int | None = 65536,
        batch_size: int = 8192,
    ) -> Whitening:
        """Fit mean and whitening on (up to ``max_rows``) activations; float64 accumulation."""
        if kind not in ("zca", "pca"):
            raise InputError(f"whitening kind must be 'zca' or 'pca', got {kind!r}")
        src = as_source(data)
        d = src.d_in
        s1 = torch.zeros(d, dtype=torch.float64)
        s2 = torch.zeros(d, d, dtype=torch.float64)
        n = 0
        for x in src.iter_batches(batch_size, max_rows=max_rows):
            x = x.double()
            s1 += x.sum(0)
            s2 += x.T @ x
            n += x.shape[0]
        if n < 2:
            raise InputError("whitening needs at least 2 activation rows")
        mean = s1 / n
        cov = (s2 - n * torch.outer(mean, mean)) / (n - 1)
        lam, U = torch.linalg.eigh(cov)  # cov = U diag(lam) U^T
        lam = lam.clamp(min=0) + eps * lam.clamp(min=0).mean()
        if not bool((lam > 0).all()):
            raise InputError("activations have zero variance; cannot whiten")
        inv_sqrt, sqrt = lam.rsqrt(), lam.sqrt()
        if kind == "zca":
            W = U @ torch.diag(inv_sqrt) @ U.T
            W_inv = U @ torch.diag(sqrt) @ U.T
        else:
            W = torch.diag(inv_sqrt) @ U.T
            W_inv = U @ torch.diag(sqrt)
        return cls(mean=mean.float(), W=W.float(), W_inv=W_inv.float(), kind=kind, eps=eps)

    def apply(self, x: Tensor) -> Tensor:
        """x [..., d_in] -> x' [..., d_in]."""
        return (x - self.mean) @ self.W.T

    def invert(self, xw: Tensor) -> Tensor:
        """x' [..., d_in] -> x [..., d_in]."""
        return xw @ self.W_inv.T + self.mean

    def tensors(self) -> dict[str, Tensor]:
        """For checkpoints (safetensors)."""
        return {"whiten.mean": self.mean, "whiten.W": self.W, "whiten.W_inv": self.W_inv}

    def info(self) -> dict[str, Any]:
        """What the card records."""
        return {"kind": self.kind, "eps": self.eps, "folded": True, "centered": True}

    @classmethod
    def from_tensors(cls, t: dict[str, Tensor], kind: str, eps: float) -> Whitening:
        return cls(mean=t["whiten.mean"], W=t["whiten.W"], W_inv=t["whiten.W_inv"], kind=kind, eps=eps)  # type: ignore[arg-type]


@torch.no_grad()
def fold_whitening(sae: SAE, wh: Whitening) -> SAE:
    """A new SAE on raw activations equal to ``sae`` applied in the whitened space (see module doc)."""
    if not sae.cfg.apply_b_dec_to_input:
        raise InputError("folding a whitening needs apply_b_dec_to_input=True")
    W, W_inv, mu = wh.W.double(), wh.W_inv.double(), wh.mean.double()
    out = make_sae(sae.cfg)
    out.load_state_dict(sae.state_dict())
    out.W_enc.copy_(W.T @ sae.W_enc.double())
    out.W_dec.copy_(sae.W_dec.double() @ W_inv.T)
    out.b_dec.copy_(sae.b_dec.double() @ W_inv.T + mu)
    out.cfg = type(sae.cfg)(**{**sae.cfg.to_dict(), "metadata": {**sae.cfg.metadata, "whitening": wh.info()}})
    return out
