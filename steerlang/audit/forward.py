"""Teacher-forced image-caption pairs through the model, and the hidden states at one layer.

A pair is run the way the dictionaries were harvested (`steerlang.dictionary.harvest`): the
model's template with the prompt and the image (``<s> prompt <image>*N`` for the toy model), then
the caption's tokens and ``</s>``, right-padded, in one plain forward pass. Positions are labelled
*image* (the image token's positions) and *caption* (the caption tokens and the closing ``</s>``);
``<s>``, the prompt and padding are neither. Everything goes through the bundle's processor and
tokenizer and the runtime's model adapter, so any model family the runtime can steer can be
audited; nothing here knows the toy world.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from steerlang.errors import InputError
from steerlang.models.bundle import DEFAULT_PROMPT  # noqa: F401 - the question asked when none is given; re-exported


@dataclass
class PairBatch:
    """A collated batch: model inputs and, per row, which positions are image / caption."""

    inputs: dict[str, Tensor]
    image: Tensor  # [B, T] bool
    caption: Tensor  # [B, T] bool


def pair_batch(bundle: Any, adapter: Any, images: Sequence[Image.Image], prompts: Sequence[str],
               captions: Sequence[str]) -> PairBatch:
    """Collate (image, prompt, caption) triples as the harvester does: the processor builds the head
    (prompt and image, as the bundle's template says; the image token expanded), the caption is
    tokenized alone and appended with ``</s>``; rows are right-padded."""
    tok = bundle.tokenizer
    image_token = getattr(bundle.processor, "image_token", "<image>")
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else (eos if eos is not None else 0)
    rows: list[list[int]] = []
    spans: list[tuple[int, int]] = []
    extras: dict[str, list[Tensor]] = {}
    for image, prompt, caption in zip(images, prompts, captions, strict=True):
        enc = bundle.processor(images=[image], text=[bundle.template.format(image=image_token, prompt=prompt)],
                               return_tensors="pt")
        head = enc["input_ids"][0].tolist()
        if eos is not None and len(head) > 1 and head[-1] == eos:  # a tokenizer that closes every text
            head = head[:-1]
        answer = tok(caption, add_special_tokens=False).input_ids + ([eos] if eos is not None else [])
        rows.append(head + answer)
        spans.append((len(head), len(head) + len(answer)))
        for k, v in enc.items():
            if k not in ("input_ids", "attention_mask") and isinstance(v, Tensor):
                extras.setdefault(k, []).append(v)
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    caption_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (r, (a, b)) in enumerate(zip(rows, spans, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
        caption_mask[i, a:b] = True
    inputs = {"input_ids": ids, "attention_mask": mask, **{k: torch.cat(v) for k, v in extras.items()}}
    image_mask = adapter.image_mask(ids).cpu() & mask.bool()
    if not image_mask.any(dim=1).all():
        raise InputError("the model's processor put no image token in a prompt; check the model's template")
    return PairBatch(inputs, image_mask, caption_mask)


class _Captured(Exception):
    """Raised by the capture hook to stop the forward pass once the layer is read."""


@torch.no_grad()
def hidden_states(adapter: Any, model: torch.nn.Module, inputs: dict[str, Tensor], layers: Sequence[int]) -> dict[int, Tensor]:
    """{layer: [B, T, d]} the residual stream at each of `layers` (entering block L; L = n_layers is
    the last block's output) from one forward pass, stopped once the deepest is read; the hooks are
    removed in `finally`."""
    captured: dict[int, Tensor] = {}
    wanted = sorted(set(layers))
    handles = []

    def keep(layer: int, h: Tensor) -> None:
        captured[layer] = h.detach().float().cpu()
        if len(captured) == len(wanted):
            raise _Captured  # nothing after the deepest layer is needed

    try:
        for layer in wanted:
            module, is_pre = adapter.hook_point(layer)
            if is_pre:
                handles.append(module.register_forward_pre_hook(
                    lambda _m, args, kwargs, la=layer: keep(la, args[0] if args else kwargs["hidden_states"]), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(
                    lambda _m, _a, out, la=layer: keep(la, out[0] if isinstance(out, tuple) else out)))
        device = next(model.parameters()).device
        model(**{k: v.to(device) for k, v in inputs.items()})
    except _Captured:
        pass
    finally:
        for h in handles:
            h.remove()
    return captured
