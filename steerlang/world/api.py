"""Library calls behind `steer world ...` (the CLI only parses arguments and prints)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from steerlang.atomic import write_text
from steerlang.errors import InputError


def write_scenes(
    out: str | os.PathLike,
    *,
    seed: int,
    count: int,
    with_kinds: Sequence[str] = (),
    without_kinds: Sequence[str] = (),
    objects: int | None = None,
    mismatch_rate: float = 0.0,
) -> int:
    """Render scenes to `out/0000.png ...` and `out/scenes.jsonl`; returns how many were written."""
    from steerlang.world.scenes import make_scenes, render

    scenes = make_scenes(seed, count, with_kinds=with_kinds, without_kinds=without_kinds, objects=objects,
                         mismatch_rate=mismatch_rate)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(count - 1)))
    lines = []
    for i, scene in enumerate(scenes):
        name = f"{i:0{width}d}.png"
        render(scene).save(out / name)
        lines.append(json.dumps(scene.to_json(name)))
    write_text(out / "scenes.jsonl", "\n".join(lines) + "\n")
    return len(scenes)


def caption_images(
    images: Sequence[str | os.PathLike], *, prompt: str | None = None, model: str = "toyworld", max_new_tokens: int = 16
) -> list[str]:
    """The model's greedy answer to `prompt` for each image file."""
    from steerlang.world.io import open_image
    from steerlang.world.model import load_model
    from steerlang.world.vocab import DEFAULT_PROMPT

    if not images:
        raise InputError("IMAGE: give at least one image file")
    pil = [open_image(p) for p in images]
    bundle = load_model(model)
    return bundle.generate(pil, prompt or DEFAULT_PROMPT, max_new_tokens=max_new_tokens)


def train_and_save(
    out: str | os.PathLike,
    *,
    steps: int = 880,
    batch_size: int = 64,
    seed: int = 0,
    threads: int = 2,
    eval_count: int = 500,
    on_step: Callable[[int, float], None] | None = None,
) -> dict:
    """Train the toy model, evaluate it on held-out scenes, save model + processor atomically."""
    from steerlang.world.io import atomic_dir
    from steerlang.world.model import TEMPLATE_FILE
    from steerlang.world.train import ToyTrainConfig, evaluate, train_toy_model

    cfg = ToyTrainConfig(steps=steps, batch_size=batch_size, seed=seed, threads=threads)
    t0 = time.perf_counter()
    bundle = train_toy_model(cfg, on_step=on_step)
    train_seconds = time.perf_counter() - t0
    report: dict = {"config": asdict(cfg), "train_seconds": round(train_seconds, 1)}
    if eval_count:
        ev = evaluate(bundle, seed=99, count=eval_count)
        report["eval"] = {"seed": 99, **asdict(ev)}
    with atomic_dir(out) as tmp:
        bundle.model.save_pretrained(tmp)
        bundle.processor.save_pretrained(tmp)  # type: ignore[attr-defined]
        (tmp / "train_report.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / TEMPLATE_FILE).write_text(json.dumps({"template": bundle.template}) + "\n")
    return report


def evaluate_model(model: str = "toyworld", *, seed: int = 99, count: int = 500) -> dict:
    """Caption exact match and yes/no accuracy of a saved model on held-out scenes."""
    from steerlang.world.model import load_model
    from steerlang.world.train import evaluate

    return asdict(evaluate(load_model(model), seed=seed, count=count))
