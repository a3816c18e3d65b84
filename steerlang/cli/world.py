"""`steer world ...`: toy-world scenes, captioning, training of the shipped toy model and fine-tuning on a corpus."""

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


@world_app.command("finetune")
@user_errors
def finetune_cmd(
    start: str = typer.Option(..., "--from", help="Model to start from: \"toyworld\" (the shipped model), a model folder "
                              "saved with save_pretrained, or \"scratch\" (a fresh toy model initialised with --seed)."),
    data: str = typer.Option(..., "--data", help="Image–caption corpus to train on: an imagefolder, a save_to_disk "
                             "folder, or toyworld:SEED:COUNT (see docs/data.md). Only images and captions are read."),
    out: Path = typer.Option(..., "--out", help="Folder to write the fine-tuned model into (swapped in whole when done)."),
    steps: int = typer.Option(300, "--steps", min=1, help="Training steps (one batch drawn from the corpus each)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Examples per training step."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data order, the prompt and question choices "
                             "(and of the initialisation with --from scratch)."),
    lr: float = typer.Option(1e-3, "--lr", min=0.0, help="Peak learning rate (AdamW; linear warmup, then cosine decay to 10%)."),
    warmup: int = typer.Option(30, "--warmup", min=0, help="Warmup steps."),
    describe_fraction: float = typer.Option(0.6, "--describe-fraction", min=0.0, max=1.0,
                                            help="Fraction of examples that ask for the caption; the rest are yes/no "
                                            "questions derived from the caption's words."),
    questions: bool = typer.Option(True, "--questions/--no-questions",
                                   help="Also train yes/no questions derived from the captions (--no-questions: captions only)."),
    caption_column: str = typer.Option("text", "--caption-column", help="Column holding the caption."),
    prompt_column: str | None = typer.Option(None, "--prompt-column", help="Optional column with a per-row prompt "
                                             "(replaces the describe prompt for that row)."),
    split: str | None = typer.Option(None, "--split", help="Split to read (default: the corpus folder's own, the only one, or train)."),
    threads: int = typer.Option(2, "--threads", min=1, help="CPU threads for torch."),
    eval_seed: int = typer.Option(99, "--eval-seed", help="Held-out toy scene stream to evaluate on (not 1, the training stream)."),
    eval_count: int = typer.Option(500, "--eval-count", min=0, help="Held-out scenes to evaluate on (0: skip)."),
    projector_only: bool = typer.Option(False, "--projector-only", help="Train the projector alone; the vision tower "
                                        "and the language model stay frozen (as VISTA trains)."),
    sae_regularize: str | None = typer.Option(None, "--sae-regularize", help="A dictionary (concept set, SAE folder, or "
                                              "\"toyworld\") whose TEXT SAE at --sae-layer regularises the image positions: "
                                              "loss + --sae-weight x its FVU there (VISTA; the SAE stays frozen)."),
    sae_layer: int | None = typer.Option(None, "--sae-layer", min=0, help="Layer of the regularising text SAE "
                                         "(default: the middle layer, n_layers // 2; 2 for the toy model)."),
    sae_weight: float = typer.Option(1.0, "--sae-weight", min=0.0, help="Weight w of the SAE regulariser."),
    force: bool = typer.Option(False, "--force", help="Replace the shipped toy model when --out names it."),
) -> None:
    """Fine-tune a model (or train a fresh toy model) on an image–caption corpus, evaluate it on
    held-out toy scenes, and save it with save_pretrained."""
    from steerlang.cli.dictionary import on_interrupt
    from steerlang.world.io import check_model_out
    from steerlang.world.train import FinetuneConfig, finetune_and_save

    if eval_count and eval_seed == 1:
        raise InputError("--eval-seed: stream 1 is the training stream; pick any other seed for held-out scenes")
    check_model_out(out, force=force)
    cfg = FinetuneConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, seed=seed, threads=threads,
                         describe_fraction=describe_fraction, questions=questions, projector_only=projector_only,
                         sae_weight=sae_weight)
    done = [0]

    def run(on_step):  # noqa: ANN001, ANN202
        def step(s: int, loss: float) -> None:
            done[0] = s + 1
            on_step(s, loss)

        return finetune_and_save(out, start=start, data=data, cfg=cfg, caption_column=caption_column,
                                 prompt_column=prompt_column, split=split, eval_seed=eval_seed,
                                 eval_count=eval_count, sae_regularize=sae_regularize, sae_layer=sae_layer,
                                 on_step=step)

    def interrupted() -> str:
        where = "after training, while evaluating" if done[0] == steps else f"at step {done[0]} of {steps}"
        return (f"stopped {where}; nothing written to {out} (the model is saved only at the end); "
                "rerun the same command to start again")

    with on_interrupt(interrupted):
        report = _train_with_progress(run, steps)
    out_console.print(json.dumps(report, indent=2), markup=False)
