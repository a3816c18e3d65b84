"""The toy world's own harvests: its prompts (describe or yes/no questions) and its teacher-forced
batches. Toy-specific, and the only harvesting module that imports `steerlang.world`;
`steerlang.dictionary.harvest` loads it lazily, when a toy harvest asks for it.

`ToyExamples` gives each scene of a stream the prompt (and answer) that `steer dict build` has
always harvested it under, as a pure function of (stream, scene index): one of the three describe
prompts (the caption as the answer), or a yes/no question about a present or an absent kind (the
answer "yes" or "no"), drawn per block of 64 scenes from a generator seeded with the stream and the
block's first scene. `scene_batch` and `position_labels` build a toy batch the way the toy model was
trained (`steerlang.world.train.collate`); the spliced-loss evaluation reads them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from steerlang.data.sample import Sample
from steerlang.dictionary.source import MODALITY_CODES
from steerlang.errors import InputError
from steerlang.world.model import ModelBundle
from steerlang.world.scenes import Scene, make_scene
from steerlang.world.train import Example, collate, question_example
from steerlang.world.vocab import DEFAULT_PROMPT, DESCRIBE_PROMPTS

PROMPT_SETS = ("describe", "questions")
BLOCK = 64  # scenes per prompt draw: the batch size toy harvests have always used

__all__ = ["BLOCK", "DEFAULT_PROMPT", "PROMPT_SETS", "ToyExamples", "harvest_examples", "position_labels", "scene_batch"]


def check_prompts(prompts: str, flag: str = "prompts") -> None:
    if prompts not in PROMPT_SETS:
        raise InputError(f"{flag}: must be one of {', '.join(PROMPT_SETS)}, got {prompts!r}")


def harvest_examples(scenes: Sequence[Scene], seed: int, prompts: str = "describe") -> list[Example]:
    """One teacher-forced example per scene, seeded: a description under one of the describe prompts,
    or (prompts="questions") a yes/no question about a present or an absent kind, half each, as in
    training. Question harvests calibrate concepts at layers where image states see the prompt."""
    check_prompts(prompts)
    if prompts == "questions":
        rng = np.random.default_rng([seed, 999])
        return [question_example(s, rng) for s in scenes]
    rng = np.random.default_rng([seed, 4321])
    return [Example(s, str(rng.choice(DESCRIBE_PROMPTS)), s.caption) for s in scenes]


class ToyExamples:
    """(prompt, answer) of scene `row` of stream `seed`, as toy harvests draw them (module docstring).

    A pure function of the row, so a resumed harvest (or a shard of the stream) gets the same prompts
    as a whole run; it is cheapest called in row order (each block's generator is kept)."""

    def __init__(self, seed: int, prompts: str = "describe") -> None:
        check_prompts(prompts)
        self.seed, self.prompts = seed, prompts
        self.key = f"toyworld:{prompts}:{seed}"  # identifies the prompts in a harvest's settings
        self._state: tuple[int, int, np.random.Generator] | None = None  # (block start, next row, generator)

    def __call__(self, sample: Sample) -> tuple[str, str]:
        row = int(sample.row)
        start = row - row % BLOCK
        if self._state is None or self._state[0] != start or self._state[1] > row:
            salt = 999 if self.prompts == "questions" else 4321
            self._state = (start, start, np.random.default_rng([self.seed * 1_000_003 + start, salt]))
        _, nxt, rng = self._state
        ex = None
        for r in range(nxt, row + 1):  # replay the draws of the block's earlier scenes
            scene = make_scene(self.seed, r)
            ex = question_example(scene, rng) if self.prompts == "questions" else \
                Example(scene, str(rng.choice(DESCRIBE_PROMPTS)), scene.caption)
        assert ex is not None
        self._state = (start, row + 1, rng)
        return ex.prompt, ex.answer


def position_labels(bundle: ModelBundle, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """(keep [B, T] bool, modality [B, T] uint8, cell [B, T] int16) for a collated toy batch."""
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
    """The teacher-forced batch of scenes `ids` of stream `seed` (the spliced-loss evaluation reads
    it; a toy harvest builds the same inputs through `harvest_dataset`)."""
    scenes = [make_scene(seed, i) for i in ids]
    return collate(bundle, harvest_examples(scenes, seed * 1_000_003 + ids.start, prompts))
