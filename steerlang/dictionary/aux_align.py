"""VL-SAE's auxiliary autoencoder: an explicitly aligned space for a model without a contrastive objective.

The VL-SAE paper (Shen et al., "VL-SAE: Interpreting and Enhancing Vision-Language Alignment with a
Unified Concept Set") trains its distance-based SAE on representations where an image and its
caption already lie close (CLIP's). A LLaVA-style model is trained by next-token prediction only, so
its image and text hidden states are at most implicitly aligned; for such models the paper first
maps each modality's *mean hidden state* (over the sample's image tokens / text tokens) into an
explicitly aligned space with an autoencoder trained on paired samples by a symmetric InfoNCE loss
(temperature 0.07) plus reconstruction, and trains the VL-SAE there.

Our choices where the paper leaves details open: one encoder and one decoder per modality, linear
(`hidden=0`) or with one GELU hidden layer; inputs standardised per modality (training mean and
standard deviation); InfoNCE on the L2-normalised codes; reconstruction = each modality's FVU;
loss = InfoNCE + `recon_weight` * (FVU_image + FVU_text). Samples with equal captions are negatives
of each other in a batch, as in CLIP training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGE, TEXT = 0, 1


def symmetric_infonce(a: Tensor, b: Tensor, tau: float = 0.07) -> Tensor:
    """CLIP's loss: rows i of `a` and `b` are a pair, every other row of the batch a negative.
    (CE(cos(a, b) / tau, diagonal) + CE(cos(b, a) / tau, diagonal)) / 2."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / tau
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def fvu(x: Tensor, x_hat: Tensor) -> Tensor:
    return ((x - x_hat) ** 2).sum(-1).mean() / ((x - x.mean(0)) ** 2).sum(-1).mean().clamp(min=1e-12)


@dataclass
class AuxConfig:
    d_in: int
    d_aux: int = 128
    hidden: int = 0  # 0: linear encoder / decoder; else one GELU hidden layer of this width
    tau: float = 0.07
    recon_weight: float = 1.0
    steps: int = 2000
    batch: int = 512
    lr: float = 1e-3
    seed: int = 0


def _net(d_in: int, d_out: int, hidden: int) -> nn.Module:
    return nn.Linear(d_in, d_out) if hidden <= 0 else nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


class AuxAligner(nn.Module):
    """Per modality: standardise, encode into the aligned space, decode back (in standardised units)."""

    def __init__(self, cfg: AuxConfig) -> None:
        super().__init__()
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.enc = nn.ModuleList([_net(cfg.d_in, cfg.d_aux, cfg.hidden) for _ in (IMAGE, TEXT)])
        self.dec = nn.ModuleList([_net(cfg.d_aux, cfg.d_in, cfg.hidden) for _ in (IMAGE, TEXT)])
        self.register_buffer("mean", torch.zeros(2, cfg.d_in))
        self.register_buffer("std", torch.ones(2, cfg.d_in))

    def standardise(self, x: Tensor, modality: int) -> Tensor:
        return (x - self.mean[modality]) / self.std[modality]

    def embed(self, x: Tensor, modality: int) -> Tensor:
        """[N, d_in] mean hidden states of one modality -> [N, d_aux] in the aligned space."""
        return self.enc[modality](self.standardise(x, modality))

    def loss(self, x_img: Tensor, x_txt: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Paired rows: symmetric InfoNCE of the codes + recon_weight * (FVU image + FVU text)."""
        parts = {}
        codes = []
        rec = torch.zeros(())
        for m, x in ((IMAGE, x_img), (TEXT, x_txt)):
            s = self.standardise(x, m)
            c = self.enc[m](s)
            codes.append(c)
            r = fvu(s, self.dec[m](c))
            parts[("fvu_image", "fvu_text")[m]] = float(r.detach())
            rec = rec + r
        nce = symmetric_infonce(codes[0], codes[1], self.cfg.tau)
        parts["infonce"] = float(nce.detach())
        return nce + self.cfg.recon_weight * rec, parts


def train_aux(x_img: Tensor, x_txt: Tensor, cfg: AuxConfig) -> tuple[AuxAligner, list[dict[str, float]]]:
    """Adam on `AuxAligner.loss` over seeded random batches of the paired rows (x_img[i], x_txt[i])."""
    if len(x_img) != len(x_txt):
        raise ValueError(f"paired rows expected, got {len(x_img)} image and {len(x_txt)} text rows")
    model = AuxAligner(cfg)
    with torch.no_grad():
        for m, x in ((IMAGE, x_img), (TEXT, x_txt)):
            model.mean[m] = x.mean(0)
            model.std[m] = x.std(0).clamp(min=1e-6)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed)
    hist = []
    for _ in range(cfg.steps):
        idx = torch.randperm(len(x_img), generator=g)[: cfg.batch]
        loss, parts = model.loss(x_img[idx], x_txt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append(parts)
    return model.eval(), hist
