"""`steer world ...`: toy-world scenes, captioning and training of the shipped toy model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from steerlang.cli import app, err_console, out_console, user_errors
from steerlang.errors import InputError

world_app = typer.Typer(help="The toy world: scenes, captions, and the toy model.", no_args_is_help=True)
app.add_typer(world_app, name="world")


@world_app.command("scenes")
@user_errors
def scenes_cmd(
    seed: int = typer.Option(..., "--seed", help="Scene stream; scene i of a seed never changes."),
    count: int = typer.Option(..., "--count", help="How many scenes to write."),
    out: Path = typer.Option(..., "--out", help="Output folder (PNG files + scenes.jsonl)."),
    with_kinds: list[str] = typer.Option([], "--with", help="A kind every scene contains (repeatable)."),
    without_kinds: list[str] = typer.Option([], "--without", help="A kind no scene contains (repeatable)."),
    objects: int | None = typer.Option(None, "--objects", help="Exact number of objects per scene (1-3)."),
    mismatch_rate: float = typer.Option(0.0, "--mismatch-rate", help="Fraction of pairs given a wrong shown_caption."),
) -> None:
    """Write toy-world scenes: DIR/0000.png ... and DIR/scenes.jsonl."""
    from steerlang.world.api import write_scenes

    n = write_scenes(out, seed=seed, count=count, with_kinds=with_kinds, without_kinds=without_kinds,
                     objects=objects, mismatch_rate=mismatch_rate)
    err_console.print(f"wrote {n} scenes to {out}")


@world_app.command("caption")
@user_errors
def caption_cmd(
    images: list[Path] = typer.Argument(..., help="Image files."),
    prompt: str | None = typer.Option(None, "--prompt", help="Prompt (default: the toy world's describe prompt)."),
    model: str = typer.Option("toyworld", "--model", help="\"toyworld\", a model folder, or a hub id."),
    jsonl: bool = typer.Option(False, "--jsonl", help="One JSON line {image, output} per image."),
    max_new_tokens: int = typer.Option(16, "--max-new-tokens", min=1, help="Longest answer to generate, in tokens."),
) -> None:
    """Answer the prompt for each image with the model (greedy, batched)."""
    from steerlang.world.api import caption_images

    for path, text in zip(images, caption_images(images, prompt=prompt, model=model, max_new_tokens=max_new_tokens), strict=True):
        if jsonl:
            out_console.print(json.dumps({"image": str(path), "output": text}), markup=False)
        else:
            out_console.print(f"{path}: {text}", markup=False)


@world_app.command("train")
@user_errors
def train_cmd(
    out: Path = typer.Option(..., "--out", help="Folder to write the trained model into (swapped in whole when done)."),
    steps: int = typer.Option(880, "--steps", min=1, help="Training steps (one batch of fresh scenes each)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Scenes per training step."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initialisation and of the prompt choices (scenes come from stream 1)."),
    threads: int = typer.Option(2, "--threads", min=1, help="CPU threads for torch."),
    eval_count: int = typer.Option(500, "--eval-count", min=0, help="Held-out scenes to evaluate on (0: skip)."),
    force: bool = typer.Option(False, "--force", help="Replace the shipped toy model when --out names it."),
) -> None:
    """Train the toy model from scratch (seeded) and save it with save_pretrained."""
    from steerlang.cli.dictionary import on_interrupt
    from steerlang.world.api import train_and_save
    from steerlang.world.io import check_model_out

    check_model_out(out, force=force)
    done = [0]

    def run(on_step):  # noqa: ANN001, ANN202
        def step(s: int, loss: float) -> None:
            done[0] = s + 1
            on_step(s, loss)

        return train_and_save(out, steps=steps, batch_size=batch_size, seed=seed, threads=threads,
                              eval_count=eval_count, on_step=step)

    def interrupted() -> str:
        where = "after training, while evaluating" if done[0] == steps else f"at step {done[0]} of {steps}"
        return (f"stopped {where}; nothing written to {out} (the model is saved only at the end, and toy "
                "training keeps no checkpoints); rerun the same command to start again")

    with on_interrupt(interrupted):
        report = _train_with_progress(run, steps)
    out_console.print(json.dumps(report, indent=2), markup=False)


def _train_with_progress(run, steps: int) -> dict:  # noqa: ANN001 - run(on_step) trains and returns the report
    """A live bar on a terminal, a line every 50 steps in a log file. The loss column shows "-"
    until the first step has finished (it used to start at "loss nan": the bar's initial value)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if err_console.is_terminal:
        with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=err_console) as bar:
            task = bar.add_task("train", total=steps, loss="-")
            return run(lambda s, loss: bar.update(task, completed=s + 1, loss=f"{loss:.4f}"))
    t0 = time.perf_counter()

    def log(s: int, loss: float) -> None:
        if s == 0 or (s + 1) % 50 == 0 or s + 1 == steps:
            err_console.print(f"step {s + 1}/{steps}  loss {loss:.4f}  {time.perf_counter() - t0:.0f}s", markup=False)

    return run(log)


@world_app.command("eval")
@user_errors
def eval_cmd(
    model: str = typer.Option("toyworld", "--model", help="\"toyworld\", a model folder, or a hub id."),
    seed: int = typer.Option(99, "--seed", help="Held-out scene stream (training uses stream 1)."),
    count: int = typer.Option(500, "--count", min=1, help="Held-out scenes (each also asked two yes/no questions)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object on stdout."),
) -> None:
    """Caption exact-match and yes/no accuracy on held-out scenes."""
    from steerlang.world.api import evaluate_model

    if seed == 1:
        raise InputError("--seed: stream 1 is the training stream; pick any other seed for held-out scenes")
    t0 = time.perf_counter()
    res = evaluate_model(model, seed=seed, count=count)
    res["seconds"] = round(time.perf_counter() - t0, 2)
    if as_json:
        out_console.print(json.dumps(res), markup=False)
    else:
        out_console.print(f"caption exact match: {res['caption_accuracy']:.4f} on {res['n_scenes']} scenes")
        out_console.print(f"yes/no accuracy:     {res['yesno_accuracy']:.4f} on {res['n_questions']} questions")
