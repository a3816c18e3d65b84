"""Baselines for removal and replacement, edited at the language model's input (layer 0) at prefill.

- difference of means (`dom`): d_k = mean state of kind k's patches - mean state of all other image
  patches, from training-stream scenes (stream 2, never the evaluation scenes); removal subtracts
  `alpha * d_cat` at every image position, replacement also adds `alpha * d_dog`.
- VISTA's "vision-only" ablation with the ground-truth patches (any object pixel): `zero` sets
  them to 0, `mean` to the mean image-token state; replacement writes the dog's mean state at each
  patch position (the same prototype steerlang's `replace` writes) with the oracle mask.

Plain forward pre-hooks, removed in `finally`; the same greedy generation as `Session.run`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

Edit = Callable[[int, Tensor], Tensor]  # (sample index, image states [n_patches, d]) -> new states


@torch.no_grad()
def image_states(bundle, scenes: Sequence, batch: int = 100) -> Tensor:  # noqa: ANN001
    """[n_scenes, n_patches, d] image-token states at the LM input."""
    from steerlang.dictionary.harvest import LayerCapture
    from steerlang.world.scenes import render
    from steerlang.world.vocab import DEFAULT_PROMPT

    out = []
    for i in range(0, len(scenes), batch):
        chunk = scenes[i : i + batch]
        enc = bundle.encode([render(s) for s in chunk], [DEFAULT_PROMPT] * len(chunk))
        with LayerCapture(bundle, [0]) as cap:
            bundle.model(**enc)
        img = enc["input_ids"] == bundle.image_token_id
        out.append(cap.captured[0][img].view(len(chunk), -1, cap.captured[0].shape[-1]).clone())
    return torch.cat(out)


def patch_kinds(scene, min_pixels: int) -> np.ndarray:  # noqa: ANN001
    """[n_patches] kind name index per patch (-1: none) under a pixel-count ground truth."""
    from steerlang.world.scenes import KINDS, patch_pixel_counts

    counts = patch_pixel_counts(scene)
    out = np.full(counts.shape[1], -1)
    for obj, c in zip(scene.objects, counts, strict=True):
        out[c >= min_pixels] = KINDS.index(obj.kind)
    return out


def reference(bundle, seed: int = 2, count: int = 600) -> dict[str, Tensor]:  # noqa: ANN001
    """Directions and states from training-stream scenes: per kind `dom.{kind}`, `proto.{kind}`
    ([n_patches, d] mean state per position, with `.count`), and `mean` (all image tokens)."""
    from steerlang.world.scenes import KINDS, make_scenes

    scenes = make_scenes(seed, count)
    x = image_states(bundle, scenes)  # [n, P, d]
    kinds = torch.from_numpy(np.stack([patch_kinds(s, 8) for s in scenes]))  # [n, P]
    out = {"mean": x.reshape(-1, x.shape[-1]).mean(0)}
    for k, kind in enumerate(KINDS):
        on = kinds == k
        out[f"dom.{kind}"] = x[on].mean(0) - x[~on].mean(0)
        cnt = on.sum(0).float()
        out[f"proto.{kind}"] = (x * on[..., None]).sum(0) / cnt.clamp(min=1)[:, None]
        out[f"proto.{kind}.count"] = cnt
    return out


@torch.no_grad()
def generate_with_edit(bundle, images: Sequence, edit: Edit, *, max_new_tokens: int = 24, batch: int = 100) -> list[str]:  # noqa: ANN001
    """Greedy captions with `edit` applied to the image states at the LM input at prefill."""
    from steerlang.dictionary.harvest import hook_point
    from steerlang.world.vocab import DEFAULT_PROMPT

    module, is_pre = hook_point(bundle, 0)
    assert is_pre, "layer 0 is the input of the first block"
    state: dict = {}

    def hook(_m: torch.nn.Module, args: tuple, kwargs: dict) -> tuple | None:
        h = args[0] if args else kwargs["hidden_states"]
        if h.shape[1] == 1:  # a decode step: the image is in the KV cache already
            return None
        h = h.clone()
        ids = state["ids"]
        for i in range(h.shape[0]):
            pos = (ids[i] == bundle.image_token_id).nonzero()[:, 0]
            h[i, pos] = edit(state["offset"] + i, h[i, pos]).to(h.dtype)
        if args:
            return (h, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": h}

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    outs: list[str] = []
    try:
        for i in range(0, len(images), batch):
            chunk = list(images[i : i + batch])
            enc = bundle.encode(chunk, [DEFAULT_PROMPT] * len(chunk))
            state.update(ids=enc["input_ids"], offset=i)
            gen = bundle.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                        pad_token_id=bundle.tokenizer.pad_token_id, eos_token_id=bundle.tokenizer.eos_token_id)
            new = gen[:, enc["input_ids"].shape[1] :]
            outs += [s.strip() for s in bundle.tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        handle.remove()
    return outs


def dom_edit(ref: dict[str, Tensor], alpha: float, target: str, new: str | None) -> Edit:
    shift = -alpha * ref[f"dom.{target}"] + (alpha * ref[f"dom.{new}"] if new else 0.0)
    return lambda _i, h: h + shift


def ablation_edit(ref: dict[str, Tensor], masks: Sequence[np.ndarray], how: str, new: str | None) -> Edit:
    """Write at the ground-truth patches: zeros, the mean image state, or the new kind's prototype."""

    def edit(i: int, h: Tensor) -> Tensor:
        m = torch.from_numpy(masks[i])
        h = h.clone()
        if new is not None:
            proto, seen = ref[f"proto.{new}"], ref[f"proto.{new}.count"] > 0
            fill = torch.where(seen[:, None], proto, ref["mean"])
            h[m] = fill[m]
        elif how == "zero":
            h[m] = 0.0
        else:
            h[m] = ref["mean"]
        return h

    return edit
