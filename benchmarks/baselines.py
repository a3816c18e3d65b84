"""Baselines for removal and replacement, edited at the language model's image positions at prefill.

- difference of means (`dom`): at layer L, d_k = mean state of kind k's patches - mean state of all
  other image patches, from training-stream scenes (stream 2, never the evaluation scenes), under
  the same prompt as the program; removal subtracts `alpha * d_cat`, replacement also adds
  `alpha * d_dog`. Four variants: at layer 0 only or at every layer the program edits (0-4), and at
  every image position or only inside the mask steerlang's program edited at that layer on that
  scene (`capture_masks`). The last one is the same direction at the same layers in the same mask:
  what is left between it and steerlang is what the dictionaries write there.
- VISTA's "vision-only" ablation with the ground-truth patches (any object pixel): `zero` sets
  them to 0, `mean` to the mean image-token state; replacement writes the dog's mean state at each
  patch position (the same prototype steerlang's `replace` writes) with the oracle mask (layer 0).

Plain forward hooks, removed in `finally`; the same greedy generation as `Session.run`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

Edit = Callable[[int, Tensor], Tensor]  # (sample index, image states [n_patches, d]) -> new states


@torch.no_grad()
def image_states(bundle, scenes: Sequence, layers: Sequence[int] = (0,), prompt: str | None = None,  # noqa: ANN001
                 batch: int = 100) -> dict[int, Tensor]:
    """{layer: [n_scenes, n_patches, d]} image-token states at the input of each layer's block."""
    from steerlang.dictionary.harvest import LayerCapture
    from steerlang.world.scenes import render
    from steerlang.world.vocab import DEFAULT_PROMPT

    out: dict[int, list[Tensor]] = {la: [] for la in layers}
    for i in range(0, len(scenes), batch):
        chunk = scenes[i : i + batch]
        enc = bundle.encode([render(s) for s in chunk], [prompt or DEFAULT_PROMPT] * len(chunk))
        with LayerCapture(bundle, list(layers)) as cap:
            bundle.model(**enc)
        img = enc["input_ids"] == bundle.image_token_id
        for la in layers:
            h = cap.captured[la]
            out[la].append(h[img].view(len(chunk), -1, h.shape[-1]).clone())
    return {la: torch.cat(v) for la, v in out.items()}


def patch_kinds(scene, min_pixels: int) -> np.ndarray:  # noqa: ANN001
    """[n_patches] kind name index per patch (-1: none) under a pixel-count ground truth."""
    from steerlang.world.scenes import KINDS, patch_pixel_counts

    counts = patch_pixel_counts(scene)
    out = np.full(counts.shape[1], -1)
    for obj, c in zip(scene.objects, counts, strict=True):
        out[c >= min_pixels] = KINDS.index(obj.kind)
    return out


def reference(bundle, seed: int = 2, count: int = 600, layers: Sequence[int] = (0,),  # noqa: ANN001
              prompt: str | None = None) -> dict[int, dict[str, Tensor]]:
    """Per layer, from training-stream scenes: per kind `dom.{kind}`, `proto.{kind}` ([n_patches, d]
    mean state per position, with `.count`), and `mean` (all image tokens)."""
    from steerlang.world.scenes import KINDS, make_scenes

    scenes = make_scenes(seed, count)
    states = image_states(bundle, scenes, layers, prompt)  # {L: [n, P, d]}
    kinds = torch.from_numpy(np.stack([patch_kinds(s, 8) for s in scenes]))  # [n, P]
    refs: dict[int, dict[str, Tensor]] = {}
    for la, x in states.items():
        out = {"mean": x.reshape(-1, x.shape[-1]).mean(0)}
        for k, kind in enumerate(KINDS):
            on = kinds == k
            out[f"dom.{kind}"] = x[on].mean(0) - x[~on].mean(0)
            cnt = on.sum(0).float()
            out[f"proto.{kind}"] = (x * on[..., None]).sum(0) / cnt.clamp(min=1)[:, None]
            out[f"proto.{kind}.count"] = cnt
        refs[la] = out
    return refs


@torch.no_grad()
def generate_with_edit(bundle, images: Sequence, edit: Edit | dict[int, Edit], *, prompt: str | None = None,  # noqa: ANN001
                       max_new_tokens: int = 24, batch: int = 100) -> list[str]:
    """Greedy captions with `edit` applied to the image states at prefill: one edit at the LM input
    (layer 0), or {layer: edit} (layer L < n: the input of block L; L = n: the last block's output)."""
    from steerlang.dictionary.harvest import hook_point
    from steerlang.world.vocab import DEFAULT_PROMPT

    edits = edit if isinstance(edit, dict) else {0: edit}
    state: dict = {}

    def apply(layer: int, h: Tensor) -> Tensor | None:
        if h.shape[1] == 1:  # a decode step: the image is in the KV cache already
            return None
        h = h.clone()
        ids = state["ids"]
        for i in range(h.shape[0]):
            pos = (ids[i] == bundle.image_token_id).nonzero()[:, 0]
            h[i, pos] = edits[layer](state["offset"] + i, h[i, pos]).to(h.dtype)
        return h

    def pre(layer: int) -> Callable:
        def hook(_m: torch.nn.Module, args: tuple, kwargs: dict) -> tuple | None:
            h = apply(layer, args[0] if args else kwargs["hidden_states"])
            if h is None:
                return None
            return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})
        return hook

    def post(layer: int) -> Callable:
        def hook(_m: torch.nn.Module, _args: tuple, output: object) -> object:
            h = apply(layer, output[0] if isinstance(output, tuple) else output)  # type: ignore[arg-type]
            if h is None:
                return None
            return (h, *output[1:]) if isinstance(output, tuple) else h
        return hook

    handles = []
    outs: list[str] = []
    try:
        for layer in sorted(edits):
            module, is_pre = hook_point(bundle, layer)
            handles.append(module.register_forward_pre_hook(pre(layer), with_kwargs=True) if is_pre
                           else module.register_forward_hook(post(layer)))
        for i in range(0, len(images), batch):
            chunk = list(images[i : i + batch])
            enc = bundle.encode(chunk, [prompt or DEFAULT_PROMPT] * len(chunk))
            state.update(ids=enc["input_ids"], offset=i)
            gen = bundle.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                        pad_token_id=bundle.tokenizer.pad_token_id, eos_token_id=bundle.tokenizer.eos_token_id)
            new = gen[:, enc["input_ids"].shape[1] :]
            outs += [s.strip() for s in bundle.tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        for h in handles:
            h.remove()
    return outs


@torch.no_grad()
def capture_masks(session, program, images: Sequence, layers: Sequence[int], prompt: str | None = None,  # noqa: ANN001
                  batch_size: int = 64) -> tuple[list[str], dict[int, list[np.ndarray]]]:
    """Run `program` through `session` and record, per layer and scene, which image patches its
    edits changed at prefill: ([steered outputs], {layer: [[n_patches] bool per image]}).

    The state before the edit is read by a hook put in front of the runtime's at the same point;
    the state after it by a hook added behind the runtime's once it is installed (at each prefill,
    through `on_forward`). A change outside the image positions is an error (the programs compared
    here steer image positions only)."""
    from steerlang.dictionary.harvest import hook_point

    bundle = session.bundle
    before: dict[int, Tensor] = {}
    masks: dict[int, list[np.ndarray]] = {la: [] for la in layers}
    late: list = []

    def hidden(args: tuple, kwargs: dict, output: object = None) -> Tensor:
        if output is not None:
            return output[0] if isinstance(output, tuple) else output  # type: ignore[return-value]
        return args[0] if args else kwargs["hidden_states"]

    def early(layer: int, is_pre: bool) -> Callable:
        if is_pre:
            def hook(_m: torch.nn.Module, args: tuple, kwargs: dict) -> None:
                h = hidden(args, kwargs)
                if h.shape[1] > 1:
                    before[layer] = h.detach().clone()
        else:
            def hook(_m: torch.nn.Module, _args: tuple, output: object) -> None:  # type: ignore[misc]
                h = hidden((), {}, output)
                if h.shape[1] > 1:
                    before[layer] = h.detach().clone()
        return hook

    def after(layer: int, is_pre: bool) -> Callable:
        def record(h: Tensor) -> None:
            if h.shape[1] == 1:
                return
            ids = state["ids"]
            changed = (h != before.pop(layer)).any(-1)  # [B, T]
            img = ids == bundle.image_token_id
            if bool((changed & ~img).any()):
                raise AssertionError(f"layer {layer}: the program changed a non-image position")
            for i in range(h.shape[0]):
                masks[layer].append(changed[i][img[i]].cpu().numpy())
        if is_pre:
            def hook(_m: torch.nn.Module, args: tuple, kwargs: dict) -> None:
                record(hidden(args, kwargs))
        else:
            def hook(_m: torch.nn.Module, _args: tuple, output: object) -> None:  # type: ignore[misc]
                record(hidden((), {}, output))
        return hook

    state: dict = {}

    def on_forward(steps: int) -> None:
        if steps:
            return
        while late:  # a new Steerer per batch: go behind its hooks again
            late.pop().remove()
        for la in layers:
            module, is_pre = hook_point(bundle, la)
            late.append(module.register_forward_pre_hook(after(la, True), with_kwargs=True) if is_pre
                        else module.register_forward_hook(after(la, False)))

    handles = []
    results = []
    try:
        for la in layers:
            module, is_pre = hook_point(bundle, la)
            handles.append(module.register_forward_pre_hook(early(la, True), with_kwargs=True, prepend=True) if is_pre
                           else module.register_forward_hook(early(la, False), prepend=True))
        for start in range(0, len(images), batch_size):
            chunk = list(images[start : start + batch_size])
            from steerlang.world.vocab import DEFAULT_PROMPT

            text = prompt or program.header.ask or DEFAULT_PROMPT
            state["ids"] = bundle.encode(chunk, [text] * len(chunk))["input_ids"]
            results += session.run(program, images=chunk, prompt=text, trace=False, batch_size=batch_size, on_forward=on_forward)
            while late:
                late.pop().remove()
    finally:
        for h in handles + late:
            h.remove()
    for la in layers:
        assert len(masks[la]) == len(images), (la, len(masks[la]), len(images))
    return [r.output for r in results], masks


def dom_edit(ref: dict[str, Tensor], alpha: float, target: str, new: str | None,
             masks: Sequence[np.ndarray] | None = None) -> Edit:
    """h - alpha * d_target (+ alpha * d_new) at every image position, or only at `masks[i]`."""
    shift = -alpha * ref[f"dom.{target}"] + (alpha * ref[f"dom.{new}"] if new else 0.0)
    if masks is None:
        return lambda _i, h: h + shift

    def edit(i: int, h: Tensor) -> Tensor:
        m = torch.from_numpy(masks[i])
        h = h.clone()
        h[m] = h[m] + shift
        return h

    return edit


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
