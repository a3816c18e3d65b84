"""Spliced next-token loss: how much the model's caption loss rises when an SAE replaces a layer.

As SAELens `evals.py` does it, per position group: CE_orig (no splice), CE_sae (the layer's output
replaced by the SAE reconstruction at the chosen positions), CE_zero (replaced by zeros there).
ΔCE = CE_sae - CE_orig; loss recovered = (CE_zero - CE_sae) / (CE_zero - CE_orig). CE is measured
on caption tokens of held-out scenes, teacher-forced.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

from steerlang.dictionary.harvest import check_layers, decoder_layers, hook_point
from steerlang.dictionary.sae import SAE
from steerlang.dictionary.source import MODALITY_CODES
from steerlang.models.bundle import ModelBundle

# Which modality codes each splice group covers.
GROUPS: dict[str, tuple[int, ...]] = {
    "image": (MODALITY_CODES["image"],),
    "text": (MODALITY_CODES["prompt"], MODALITY_CODES["caption"]),
}


@contextmanager
def replace_layer(bundle: ModelBundle, layer: int, fn: Callable[[Tensor], Tensor]):
    """Within the block, the hidden state at `layer` (0 = LM input) becomes fn(hidden)."""
    module, is_pre = hook_point(bundle, layer)
    if is_pre:
        def pre(_m: torch.nn.Module, args: tuple, kwargs: dict):
            if args:
                return (fn(args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}

        handle = module.register_forward_pre_hook(pre, with_kwargs=True)
    else:
        def post(_m: torch.nn.Module, _args: tuple, output: Tensor | tuple):
            if isinstance(output, tuple):
                return (fn(output[0]), *output[1:])
            return fn(output)

        handle = module.register_forward_hook(post)
    try:
        yield
    finally:
        handle.remove()


def _caption_ce(logits: Tensor, labels: Tensor) -> tuple[float, int]:
    """Summed CE over caption tokens (labels shifted as HF does) and the token count."""
    shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
    keep = shift_labels != -100
    ce = F.cross_entropy(shift_logits[keep], shift_labels[keep], reduction="sum")
    return float(ce), int(keep.sum())


@torch.no_grad()
def spliced_loss(
    bundle: ModelBundle,
    layer: int,
    saes: Mapping[str, SAE],
    *,
    seed: int = 3,
    count: int = 300,
    batch_size: int = 64,
    splices: Sequence[str] = ("image", "text", "both"),
) -> dict[str, dict[str, float]]:
    """ΔCE and loss recovered per splice group. `saes` maps "image"/"text" to the SAE used there
    (one shared SAE may be given for both); "both" splices each group with its own SAE. Measured
    on the toy world's held-out scenes of stream `seed` (the toy model's own teacher-forced batches)."""
    from steerlang.world.toy_harvest import position_labels, scene_batch

    check_layers(bundle, [layer])
    totals: dict[str, list[float]] = {name: [0.0, 0.0, 0.0] for name in splices}  # orig, sae, zero
    n_tok = 0
    for start in range(0, count, batch_size):
        batch = scene_batch(bundle, seed, range(start, min(count, start + batch_size)))
        keep, modality, _cell = position_labels(bundle, batch)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        ce_orig, n = _caption_ce(bundle.model(**inputs).logits, batch["labels"])
        n_tok += n
        for name in splices:
            groups = ("image", "text") if name == "both" else (name,)
            masks = {g: keep & torch.isin(modality, torch.tensor(GROUPS[g], dtype=torch.uint8)) for g in groups}
            for j, mode in ((1, "sae"), (2, "zero")):
                def fn(h: Tensor, masks: dict = masks, mode: str = mode) -> Tensor:
                    out = h.clone()
                    for g, m in masks.items():
                        out[m] = saes[g](h[m]).to(h.dtype) if mode == "sae" else 0.0
                    return out

                with replace_layer(bundle, layer, fn):
                    ce, _ = _caption_ce(bundle.model(**inputs).logits, batch["labels"])
                totals[name][j] += ce
            totals[name][0] += ce_orig
    result = {}
    for name, (o, s, z) in totals.items():
        o, s, z = o / n_tok, s / n_tok, z / n_tok
        result[name] = {
            "ce_orig": o, "ce_sae": s, "ce_zero": z, "delta_ce": s - o,
            "loss_recovered": (z - s) / (z - o) if z != o else float("nan"),
        }
    return result


__all__ = ["spliced_loss", "replace_layer", "decoder_layers"]
