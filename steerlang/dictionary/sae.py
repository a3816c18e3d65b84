"""Sparse autoencoder architectures: TopK, ReLU (+ L1 in training) and JumpReLU.

Every SAE maps an activation ``x [..., d_in]`` to latents ``z [..., d_sae]`` and back:

    pre   = (x - b_dec * apply_b_dec_to_input) @ W_enc + b_enc      [..., d_sae]
    z     = act(pre)                                                 [..., d_sae]
    x_hat = z @ W_dec + b_dec                                        [..., d_in]

with ``act`` the architecture's nonlinearity. The math (and parameter names and shapes) is the
one SAELens v6 uses, so a folder written by `steerlang.dictionary.io` loads there and gives the
same numbers. These classes are inference modules; the training loop lives in ``train.py``.

Steering keeps the SAE error: the runtime computes ``h' = h + decode_delta(z' - z, idx)``, which
is bit-exactly ``h`` when nothing is edited (the delta is an exact zero). ``decode(encode(x)) +
(x - decode(encode(x)))`` is *not* bit-exact in IEEE arithmetic in general (a float subtraction
followed by an addition can round), which is why the runtime uses the delta form.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from steerlang.errors import DictionaryError

Architecture = Literal["topk", "relu", "jumprelu"]
ARCHITECTURES: tuple[str, ...] = ("topk", "relu", "jumprelu")


@dataclass
class SAEConfig:
    """What defines an SAE besides its weights (mirrors SAELens v6 ``cfg.json``).

    ``layer``: the residual stream entering decoder block L (0 = the language model's input, the
    embeddings after the image features are merged in; n_layers = the last block's output). ``modality``: "image", "text", "caption"
    or "both" (which token positions the dictionary was trained on).
    """

    architecture: Architecture
    d_in: int
    d_sae: int
    k: int | None = None  # topk only: latents kept per token
    l1_coeff: float | None = None  # relu only: the L1 coefficient it was trained with (informational)
    apply_b_dec_to_input: bool = True
    hook_name: str = ""
    model_name: str = ""
    layer: int | None = None
    modality: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise DictionaryError(
                f"unknown SAE architecture {self.architecture!r}; expected one of {', '.join(ARCHITECTURES)}"
            )
        if self.d_in <= 0 or self.d_sae <= 0:
            raise DictionaryError(f"SAE sizes must be positive, got d_in={self.d_in}, d_sae={self.d_sae}")
        if self.architecture == "topk" and (self.k is None or not 0 < self.k <= self.d_sae):
            raise DictionaryError(f"a TopK SAE needs 0 < k <= d_sae={self.d_sae}, got k={self.k}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SAE(nn.Module):
    """Base class: shared parameters, affine maps and the sparse helpers used for steering."""

    cfg: SAEConfig

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d_in, d_sae = cfg.d_in, cfg.d_sae
        # Zero-initialised: weights come from a file (io.py) or from the trainer's seeded init.
        self.W_enc = nn.Parameter(torch.zeros(d_in, d_sae))  # [d_in, d_sae]
        self.W_dec = nn.Parameter(torch.zeros(d_sae, d_in))  # [d_sae, d_in]
        self.b_enc = nn.Parameter(torch.zeros(d_sae))  # [d_sae]
        self.b_dec = nn.Parameter(torch.zeros(d_in))  # [d_in]

    # -- dense path ------------------------------------------------------------------------
    def centred(self, x: Tensor) -> Tensor:
        """x [..., d_in] -> x - b_dec (when apply_b_dec_to_input) [..., d_in]."""
        return x - self.b_dec if self.cfg.apply_b_dec_to_input else x

    def pre_acts(self, x: Tensor) -> Tensor:
        """x [..., d_in] -> pre-activations [..., d_sae]."""
        return self.centred(x) @ self.W_enc + self.b_enc

    def pre_acts_at(self, x: Tensor, idx: Tensor) -> Tensor:
        """x [..., d_in] -> the pre-activations of latents `idx` only [..., len(idx)]."""
        return self.centred(x) @ self.W_enc[:, idx] + self.b_enc[idx]

    def activation(self, pre: Tensor) -> Tensor:
        """pre [..., d_sae] -> z [..., d_sae]; the architecture's nonlinearity."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tensor:
        """x [..., d_in] -> z [..., d_sae]."""
        return self.activation(self.pre_acts(x))

    def decode(self, z: Tensor) -> Tensor:
        """z [..., d_sae] -> x_hat [..., d_in]."""
        return z @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> Tensor:
        """x [..., d_in] -> x_hat [..., d_in]."""
        return self.decode(self.encode(x))

    # -- sparse helpers for the steering runtime -------------------------------------------
    def encode_latents(self, x: Tensor, idx: Tensor) -> Tensor:
        """x [..., d_in], idx LongTensor[m] -> z[..., idx] [..., m], computing only those latents.

        Exact for ReLU and JumpReLU (each latent depends on its own pre-activation only).
        """
        pre = self.centred(x) @ self.W_enc[:, idx] + self.b_enc[idx]  # [..., m]
        return self._activation_at(pre, idx)

    def _activation_at(self, pre: Tensor, idx: Tensor) -> Tensor:
        raise NotImplementedError

    def decode_delta(self, delta_z: Tensor, idx: Tensor) -> Tensor:
        """delta_z [..., m], idx LongTensor[m] -> delta_z @ W_dec[idx] [..., d_in] (no bias).

        A zero ``delta_z`` gives an exact zero, so ``h + decode_delta(0, idx) == h`` bit-exactly.
        """
        return delta_z @ self.W_dec[idx]

    def decoder_norms(self) -> Tensor:
        """||W_dec[j]|| for each latent [d_sae]."""
        return self.W_dec.detach().norm(dim=-1)


class TopKSAE(SAE):
    """z keeps the k largest pre-activations per token (then ReLU), zero elsewhere."""

    def topk(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [..., d_in] -> (values [..., k] >= 0, indices [..., k]): the sparse form of ``encode``."""
        vals, idx = self.pre_acts(x).topk(self.cfg.k, dim=-1, sorted=False)
        return vals.relu(), idx

    def activation(self, pre: Tensor) -> Tensor:
        vals, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, idx, vals.relu())

    def encode_latents(self, x: Tensor, idx: Tensor) -> Tensor:
        """As `SAE.encode_latents`, but TopK must compute all d_sae pre-activations to know which
        latents are in the top k; only the final gather is restricted to ``idx``."""
        return self.encode(x)[..., idx]

    def decode_sparse(self, vals: Tensor, idx: Tensor) -> Tensor:
        """(values [B, k], indices [B, k]) -> x_hat [B, d_in], gathering only the k active rows."""
        out = nn.functional.embedding_bag(idx, self.W_dec, per_sample_weights=vals, mode="sum")
        return out + self.b_dec


class ReLUSAE(SAE):
    """z = ReLU(pre); sparsity comes from the L1 penalty used in training ("standard" in SAELens)."""

    def activation(self, pre: Tensor) -> Tensor:
        return pre.relu()

    def _activation_at(self, pre: Tensor, idx: Tensor) -> Tensor:
        return pre.relu()


class JumpReLUSAE(SAE):
    """z = ReLU(pre) where pre > threshold (per latent), else 0 (as SAELens and Gemma Scope)."""

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        self.threshold = nn.Parameter(torch.zeros(cfg.d_sae))  # [d_sae]

    def activation(self, pre: Tensor) -> Tensor:
        return pre.relu() * (pre > self.threshold).to(pre.dtype)

    def _activation_at(self, pre: Tensor, idx: Tensor) -> Tensor:
        return pre.relu() * (pre > self.threshold[idx]).to(pre.dtype)


_CLASSES: dict[str, type[SAE]] = {"topk": TopKSAE, "relu": ReLUSAE, "jumprelu": JumpReLUSAE}


def make_sae(cfg: SAEConfig) -> SAE:
    """The SAE module for ``cfg.architecture``, with zero weights."""
    return _CLASSES[cfg.architecture](cfg)
