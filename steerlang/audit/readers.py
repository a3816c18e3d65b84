"""What the audit reads at each position: joint concepts (both groups at one layer) and SAE-V latents.

Concept activations come from the concept set (`LatentGroup.activation`, in the set's units: a
group's threshold means "present", 1.0 its typical strength). SAE-V latents come from one
dictionary over both modalities (`steer dict train --modality both`), as the SAE-V paper trains
them, or, without one, from the concept set's aligned pairs (each joint concept acting as one
latent, its image group on image positions and its text group on caption positions).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from steerlang.dictionary.concepts import ConceptSet, LatentGroup
from steerlang.errors import InputError, SteerError


@dataclass(frozen=True)
class AuditConcept:
    """A joint concept as the audit reads it at one layer: its image and its text group."""

    name: str
    key: str
    image: LatentGroup
    text: LatentGroup


def is_named(name: str) -> bool:
    """Named joint concepts are words; the builder names the other matched pairs `word@L{layer}/joint{i}`."""
    return "@" not in name and "/" not in name


def audit_concepts(concepts: ConceptSet, image_layer: int, text_layer: int | None = None, *,
                   all_concepts: bool = False) -> list[AuditConcept]:
    """The joint concepts with an image group at `image_layer` and a text group at `text_layer`
    (default: the same layer): the named ones (cat, dog, ...), or every joint concept with
    `all_concepts`. InputError when there is none."""
    text_layer = image_layer if text_layer is None else text_layer
    for flag, layer in (("--layer", image_layer), ("--text-layer", text_layer)):
        if layer not in concepts.layer_numbers:
            raise InputError(f"{flag}: the dictionary {concepts.name!r} has no layer {layer}; its layers: "
                             f"{', '.join(map(str, concepts.layer_numbers))}")
    out = []
    for c in concepts.concepts:
        gi, gt = c.group(image_layer, "image"), c.group(text_layer, "text")
        if c.space == "joint" and gi is not None and gt is not None and (all_concepts or is_named(c.name)):
            out.append(AuditConcept(c.name, c.key, gi, gt))
    if not out:
        where = f"layer {image_layer}" if image_layer == text_layer else f"layers {image_layer} (image) and {text_layer} (text)"
        raise InputError(f"the dictionary {concepts.name!r} has no joint concept with image and text groups at {where}"
                         f"{'' if all_concepts else ' (named ones; try --all-concepts)'}")
    return out


def check_hidden_size(sae: Any, hidden: int, what: str) -> None:
    """A dictionary trained on another model's residual stream cannot read this one."""
    d_in = int(sae.cfg.d_in)
    if d_in != hidden:
        raise InputError(f"{what} reads hidden states of size {d_in} but the model's are {hidden}: it was trained on "
                         "another model; give --dictionary built for this model")


class EncodeOnce:
    """An SAE seen through a cache: every group read on the same hidden states (the same tensor
    object) shares one full encode, instead of one per group (a TopK SAE must compute all of its
    pre-activations to know any latent's code). Reads the same values as the SAE itself."""

    def __init__(self, sae: Any) -> None:
        self.sae = sae
        self._x: Tensor | None = None
        self._pre: Tensor | None = None
        self._z: Tensor | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sae, name)

    def _load(self, x: Tensor) -> Tensor:
        if x is not self._x:
            self._x, self._pre, self._z = x, self.sae.pre_acts(x), None
        assert self._pre is not None
        return self._pre

    def pre_acts(self, x: Tensor) -> Tensor:
        return self._load(x)

    def pre_acts_at(self, x: Tensor, idx: Tensor) -> Tensor:
        return self._load(x)[..., idx]

    def encode(self, x: Tensor) -> Tensor:
        pre = self._load(x)
        if self._z is None:
            self._z = self.sae.activation(pre)
        return self._z

    def encode_latents(self, x: Tensor, idx: Tensor) -> Tensor:
        return self.encode(x)[..., idx]


def group_max(group: LatentGroup, sae: Any, h: Tensor, owner: Tensor, n: int) -> Tensor:
    """[n] the group's largest activation over each sample's positions (h [N, d], owner [N] the
    sample of each row); -inf for a sample with no position."""
    a = group.activation(sae, h) if len(h) else torch.zeros(0)
    return torch.full((n,), -torch.inf).scatter_reduce(0, owner, a.float(), reduce="amax")


# -- SAE-V latents ---------------------------------------------------------------------------------

class SharedSAE:
    """SAE-V latents from one SAE trained on image and text positions together (the paper's SAE-V).

    A latent is *active* at a token when its code exceeds `delta` (the paper's activation bound,
    1 by default, in the SAE's code units) and *fires* (counts towards L0) when its code is > 0."""

    kind = "shared"

    def __init__(self, sae: Any, path: str, delta: float = 1.0) -> None:
        self.sae, self.path, self.delta = sae, path, float(delta)
        self.n_latents = int(sae.cfg.d_sae)

    def codes(self, h: Tensor, modality: str, sae: Any = None) -> Tensor:
        return self.sae.encode(h.to(self.sae.W_enc.dtype)).float()

    def fire_bound(self) -> Tensor | float:
        return 0.0

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "dictionary": self.path, "latents": self.n_latents, "delta": self.delta}


class AlignedPairs:
    """SAE-V latents approximated by the concept set's aligned pairs: each joint concept at the layer
    acts as one latent whose activation is its image group's on image positions and its text
    group's on caption positions. Active and firing both mean: above the group's own threshold
    (the set's units replace the paper's raw code bound)."""

    kind = "aligned_pairs"

    def __init__(self, concepts: ConceptSet, layer: int) -> None:
        self.set, self.layer = concepts, layer
        self.concepts = audit_concepts(concepts, layer, layer, all_concepts=True)
        self.n_latents = len(self.concepts)
        self._thr = {m: torch.tensor([getattr(c, m).threshold for c in self.concepts]) for m in ("image", "text")}

    def codes(self, h: Tensor, modality: str, sae: Any = None) -> Tensor:
        sae = sae if sae is not None else EncodeOnce(self.set.sae(self.layer, modality))
        cols = [getattr(c, modality).activation(sae, h).float() for c in self.concepts]
        # Measured from each group's threshold, so that "> 0" (and > delta = 0) means active.
        return torch.stack(cols, 1) - self._thr[modality] if cols else torch.zeros(len(h), 0)

    @property
    def delta(self) -> float:
        return 0.0

    def fire_bound(self) -> Tensor | float:
        return 0.0

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "dictionary": f"{self.set.root} (aligned pairs at layer {self.layer})",
                "latents": self.n_latents, "delta": "each group's threshold"}


def load_shared_sae(path: str | os.PathLike, layer: int, hidden: int, delta: float) -> SharedSAE:
    """A shared (image + text) SAE folder for SAE-V scores; InputError for one of another model,
    layer or a single-modality one."""
    from steerlang.dictionary.io import load_dictionary

    p = Path(path)
    try:
        sae = load_dictionary(p)
    except SteerError as exc:
        raise InputError(f"--saev: {exc}") from None
    check_hidden_size(sae, hidden, f"--saev {p}")
    if sae.cfg.layer is not None and int(sae.cfg.layer) != layer:
        raise InputError(f"--saev: {p} was trained at layer {sae.cfg.layer}, the audit reads layer {layer}; "
                         f"train one there with `steer dict train --layer {layer} --modality both`")
    if sae.cfg.modality not in (None, "both"):
        raise InputError(f"--saev: {p} was trained on {sae.cfg.modality} positions only; SAE-V scores need one "
                         f"dictionary over both (`steer dict train --layer {layer} --modality both`)")
    return SharedSAE(sae.requires_grad_(False), str(p), delta)


class TopTokens:
    """Stage 1 of SAE-V: for every latent, its `top` most active tokens over the sample set (active:
    code > delta), with their hidden states and modality, kept as a running top-k."""

    def __init__(self, n_latents: int, d: int, *, top: int = 30, delta: float = 1.0) -> None:
        self.top, self.delta = top, delta
        self.vals = torch.full((top, n_latents), -torch.inf)
        self.h = torch.zeros(top, n_latents, d)
        self.is_text = torch.zeros(top, n_latents, dtype=torch.bool)

    def add(self, z: Tensor, h: Tensor, is_text: Tensor) -> None:
        """z [N, F] codes, h [N, d] hidden states, is_text [N] of one batch's tokens."""
        if not len(z):
            return
        z = torch.where(z > self.delta, z, torch.tensor(-torch.inf))
        vals, idx = torch.topk(torch.cat([self.vals, z]), self.top, dim=0)  # [top, F]
        old = idx < self.top
        h_old = self.h.gather(0, idx.clamp(max=self.top - 1)[..., None].expand(-1, -1, self.h.shape[2]))
        new_rows = (idx - self.top).clamp(min=0)
        self.h = torch.where(old[..., None], h_old, h[new_rows])
        self.is_text = torch.where(old, self.is_text.gather(0, idx.clamp(max=self.top - 1)), is_text[new_rows])
        self.vals = vals

    def weights(self, each: int = 5) -> np.ndarray:
        """Stage 2: the cross-modal weight per latent: when at least `each` of its top tokens are
        text and `each` image, the mean cosine between the hidden states of its `each` most active
        text tokens and its `each` most active image tokens (all each x each pairs); else 0."""
        hn = torch.nn.functional.normalize(self.h, dim=2)
        live = torch.isfinite(self.vals)
        out = np.zeros(self.vals.shape[1])
        for f in range(self.vals.shape[1]):
            rows = live[:, f].nonzero().flatten()  # already in descending activation
            txt, img = rows[self.is_text[rows, f]][:each], rows[~self.is_text[rows, f]][:each]
            if len(txt) == each and len(img) == each:
                out[f] = float((hn[txt, f] @ hn[img, f].T).mean())
        return out

    def state(self) -> dict[str, Tensor]:
        return {"vals": self.vals, "h": self.h, "is_text": self.is_text}

    def load(self, state: dict[str, Tensor]) -> None:
        if state["vals"].shape != self.vals.shape or state["h"].shape != self.h.shape:
            raise ValueError("saved SAE-V state does not fit")
        self.vals, self.h, self.is_text = state["vals"], state["h"], state["is_text"].bool()
