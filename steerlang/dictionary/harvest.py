"""Harvest residual-stream activations from a model, labelled by modality, streamed to shards.

Each sample is a toy-world scene run teacher-forced in the model's template (`<s> prompt <image>*N
caption </s>` for the toy model; the answer is the caption, or yes/no under a question). We
capture, with plain forward hooks (removed in `finally`), the residual stream at chosen layers.

Layer numbering (everywhere in steerlang, as HF `hidden_states` and TransformerLens `resid_pre`):
layer L is the residual stream entering decoder block L; layer 0 is the language model's input (the
projector's output merged into the text embeddings) and layer n_layers is the last block's output. Every kept position is labelled image / prompt / caption; image
positions also carry their patch index (row-major). `<s>` and padding are not harvested.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from steerlang.dictionary.source import MODALITY_CODES, ShardWriter
from steerlang.errors import InputError
from steerlang.world.model import ModelBundle
from steerlang.world.scenes import Scene, make_scene
from steerlang.world.train import Example, collate, question_example
from steerlang.world.vocab import DESCRIBE_PROMPTS

LM_INPUT = 0


def decoder_layers(bundle: ModelBundle) -> torch.nn.ModuleList:
    return bundle.model.model.language_model.layers  # type: ignore[no-any-return]


def check_layers(bundle: ModelBundle, layers: Sequence[int]) -> list[int]:
    """Validate layer numbers: 0 (LM input) to n_layers (the last block's output)."""
    n = len(decoder_layers(bundle))
    for layer in layers:
        if not 0 <= layer <= n:
            raise InputError(f"--layer: {layer} is out of range; this model has layers 0 (LM input) to {n} (last block's output)")
    return sorted(set(layers))


def hook_point(bundle: ModelBundle, layer: int) -> tuple[torch.nn.Module, bool]:
    """(module, is_pre): layer L < n is the input of block L (a pre-hook); L = n the last block's output."""
    blocks = decoder_layers(bundle)
    return (blocks[layer], True) if layer < len(blocks) else (blocks[-1], False)


class LayerCapture:
    """Context manager capturing hidden states at the chosen layers during forward passes."""

    def __init__(self, bundle: ModelBundle, layers: Sequence[int]) -> None:
        self.bundle = bundle
        self.layers = list(layers)
        self.captured: dict[int, Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> LayerCapture:
        try:
            for layer in self.layers:
                module, is_pre = hook_point(self.bundle, layer)
                if is_pre:
                    self._handles.append(module.register_forward_pre_hook(self._make_pre(layer), with_kwargs=True))
                else:
                    self._handles.append(module.register_forward_hook(self._make_post(layer)))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _make_pre(self, layer: int) -> Callable:
        def hook(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            self.captured[layer] = hidden.detach()

        return hook

    def _make_post(self, layer: int) -> Callable:
        def hook(_module: torch.nn.Module, _args: tuple, output: Tensor | tuple) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            self.captured[layer] = hidden.detach()

        return hook

    def __exit__(self, *_exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


PROMPT_SETS = ("describe", "questions")


def harvest_examples(scenes: Sequence[Scene], seed: int, prompts: str = "describe") -> list[Example]:
    """One teacher-forced example per scene, seeded: a description under one of the describe prompts,
    or (prompts="questions") a yes/no question about a present or an absent kind, half each, as in
    training. Question harvests calibrate concepts at layers where image states see the prompt."""
    if prompts not in PROMPT_SETS:
        raise InputError(f"prompts: must be one of {', '.join(PROMPT_SETS)}, got {prompts!r}")
    if prompts == "questions":
        rng = np.random.default_rng([seed, 999])
        return [question_example(s, rng) for s in scenes]
    rng = np.random.default_rng([seed, 4321])
    return [Example(s, str(rng.choice(DESCRIBE_PROMPTS)), s.caption) for s in scenes]


def position_labels(bundle: ModelBundle, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """(keep [B, T] bool, modality [B, T] uint8, cell [B, T] int16) for a collated batch."""
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"].bool()
    is_image = ids == bundle.image_token_id
    # labels mark the answer tokens themselves (HF shifts them inside the loss).
    is_caption = labels != -100
    is_bos = ids == bundle.tokenizer.bos_token_id
    keep = mask & ~is_bos
    modality = torch.full(ids.shape, MODALITY_CODES["prompt"], dtype=torch.uint8)
    modality[is_image] = MODALITY_CODES["image"]
    modality[is_caption] = MODALITY_CODES["caption"]
    cell = torch.where(is_image, is_image.long().cumsum(dim=1) - 1, torch.full_like(ids, -1)).to(torch.int16)
    return keep, modality, cell


def scene_batch(bundle: ModelBundle, seed: int, ids: range, prompts: str = "describe") -> dict[str, Tensor]:
    """The teacher-forced batch of scenes `ids` of stream `seed`, exactly as the harvester sees it
    (the spliced-loss evaluation reuses it, so both read the same prompts)."""
    scenes = [make_scene(seed, i) for i in ids]
    return collate(bundle, harvest_examples(scenes, seed * 1_000_003 + ids.start, prompts))


@torch.no_grad()
def harvest(
    bundle: ModelBundle,
    out_dir: str | os.PathLike,
    *,
    seed: int,
    count: int,
    layers: Sequence[int] | None = None,
    batch_size: int = 64,
    dtype: torch.dtype = torch.float32,
    shard_rows: int = 65536,
    prompts: str = "describe",
    on_batch: Callable[[int], None] | None = None,
) -> Path:
    """Run `count` scenes of stream `seed` and write their activations to `out_dir` (shards)."""
    if count <= 0:
        raise InputError(f"--count: must be at least 1, got {count}")
    if prompts not in PROMPT_SETS:
        raise InputError(f"--prompts: must be one of {', '.join(PROMPT_SETS)}, got {prompts!r}")
    n_layers = len(decoder_layers(bundle))
    layers = check_layers(bundle, range(0, n_layers + 1) if layers is None else layers)
    d_in = int(bundle.model.config.text_config.hidden_size)
    meta = {"scene_seed": seed, "scene_count": count, "patch_grid": list(bundle.patch_grid), "prompts": prompts}
    with ShardWriter(out_dir, layers, d_in, model=bundle.name, dtype=dtype, shard_rows=shard_rows, metadata=meta) as writer:
        for start in range(0, count, batch_size):
            ids = range(start, min(count, start + batch_size))
            batch = scene_batch(bundle, seed, ids, prompts)
            keep, modality, cell = position_labels(bundle, batch)
            with LayerCapture(bundle, layers) as cap:
                bundle.model(**{k: v for k, v in batch.items() if k != "labels"})
            scene_ids = torch.tensor(list(ids), dtype=torch.int32)[:, None].expand_as(keep)
            positions = torch.arange(keep.shape[1], dtype=torch.int32)[None].expand_as(keep)
            writer.add(
                {layer: cap.captured[layer][keep] for layer in layers},
                modality=modality[keep], cell=cell[keep], scene=scene_ids[keep], position=positions[keep],
            )
            if on_batch is not None:
                on_batch(len(ids))
    return Path(out_dir)
