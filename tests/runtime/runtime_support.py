"""Helpers for the runtime tests."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from steerlang.dictionary.harvest import LayerCapture
from steerlang.world.model import ModelBundle


def encode(bundle: ModelBundle, images: Sequence[Image.Image], prompt: str = "what is in the picture?") -> dict:
    return bundle.encode(list(images), [prompt] * len(images))


@torch.no_grad()
def gen_ids(bundle: ModelBundle, enc: dict, n: int = 6, **kw) -> torch.Tensor:
    out = bundle.model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=bundle.tokenizer.pad_token_id, **kw)
    return out[:, enc["input_ids"].shape[1]:]


@torch.no_grad()
def logits(bundle: ModelBundle, enc: dict) -> torch.Tensor:
    return bundle.model(**enc).logits


@torch.no_grad()
def states(bundle: ModelBundle, enc: dict, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """Hidden states entering each layer (captured after any steering pre-hook ran)."""
    with LayerCapture(bundle, layers) as cap:
        bundle.model(**enc)
    return {k: v.clone() for k, v in cap.captured.items()}
