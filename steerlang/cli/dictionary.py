"""`steer dict ...`: harvest activations, train, evaluate and build dictionaries (SAEs).

Progress goes to stderr as rich bars or spinners, results to stdout (readable, or JSON with
--json). Ctrl-C on a long command prints one line saying what was kept and how to go on, and
exits with 130 (128 + SIGINT), without a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from steerlang.cli import app, err_console, out_console, user_errors
from steerlang.errors import InputError

dict_app = typer.Typer(help="Dictionaries: harvest activations, train and evaluate SAEs.", no_args_is_help=True)
app.add_typer(dict_app, name="dict")

MODEL_HELP = "\"toyworld\" (the shipped toy model), a model folder, or a hub id."


@contextmanager
def on_interrupt(what: Callable[[], str]) -> Iterator[None]:
    """Ctrl-C inside: print "interrupted: <what()>" (what was kept, how to resume) and exit 130,
    without a traceback. Wrap the progress display too, so it is closed before the line."""
    try:
        yield
    except KeyboardInterrupt:
        err_console.print(f"interrupted: {what()}", markup=False)
        raise typer.Exit(130) from None


def _progress(*extra: Any) -> Any:
    """The rich progress display used by every long command (on stderr)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *extra,
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, disable=not _main_process())


def _main_process() -> bool:
    """Not one of the other processes of a `torchrun` / `accelerate launch` run (rank 0 draws and prints)."""
    import os

    return os.environ.get("RANK", "0") in ("", "0")


def _start_distributed() -> None:
    """Under torchrun / accelerate launch (WORLD_SIZE > 1 in the environment): join the process
    group (steerlang.dictionary.distributed); otherwise nothing."""
    import os

    if os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
        from steerlang.dictionary import distributed

        distributed.init()


DATA_HELP = ("Dataset: an imagefolder corpus (metadata.jsonl/csv/parquet), a save_to_disk folder, or toyworld:SEED:COUNT "
             "(see docs/data.md).")
PROMPT_HELP = ("the prompt asked with each image (a row's own prompt, --prompt-column, comes first). Default: the model's own "
               "(the toy model's describe prompt), else its chat template with the image alone; a model with neither needs it.")


def _toy_only(data: str | None, **given: Any) -> None:
    """With --data, refuse the toy harvest's own options (they would be ignored)."""
    if data is None:
        return
    for flag, value in given.items():
        if value is not None:
            raise InputError(f"--{flag}: an option of the toy world's own harvest; with --data give the toy world as "
                             "--data toyworld:SEED:COUNT")


def _data_only(data: str | None, **given: Any) -> None:
    """Without --data, refuse the options that only a dataset harvest reads."""
    if data is not None:
        return
    for flag, value in given.items():
        if value not in (None, False):
            raise InputError(f"--{flag.replace('_', '-')}: only with --data DIR (the toy harvest, --seed/--count, "
                             "uses the toy model's own prompts and every layer)")


def _parse_layers(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        layers = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise InputError(f"--layers: give layer numbers separated by commas, e.g. 0,2,4; got {text!r}") from None
    if not layers:
        raise InputError("--layers: give at least one layer, e.g. 0,2,4")
    return layers


def _data_total(data: str, caption_column: str, prompt_column: str | None, split: str | None,
                max_samples: int | None) -> tuple[Any, int]:
    """The dataset opened (errors in its options show before any progress bar) and the bar's total."""
    from steerlang.data import open_dataset

    ds = open_dataset(data, caption_column, prompt_column=prompt_column, split=split, arg="--data")
    rows = ds.count_rows()
    return ds, rows if max_samples is None else min(rows, max_samples)


def _harvest_interrupted(out: Path) -> str:
    """What an interrupted harvest kept, and how to go on."""
    from steerlang.dictionary.harvest import harvest_status

    st = harvest_status(out)
    if st is None or not st.shards:
        return f"nothing kept ({out} is written only once the harvest is complete); rerun the same command to start again"
    return (f"{out} not written; kept {st.shards} complete shard{'s' if st.shards != 1 else ''} ({st.rows:,} rows, "
            f"the first {st.samples:,} samples) in "
            f"{st.dir}; rerun the same command to resume from there")


def _harvest_summary(path: Path) -> list[str]:
    """Readable lines for a finished harvest, from its manifest."""
    from steerlang.data.report import BadRow
    from steerlang.dictionary.source import read_manifest

    m = read_manifest(path)
    meta = m.get("metadata", {})
    counts = [sum(s.get("modality_counts", [0, 0, 0])[i] for s in m["shards"]) for i in range(3)]
    data = meta.get("data") or {}
    bad = data.get("bad_rows", 0)
    what = f"{meta['samples']:,} samples" if "samples" in meta else "samples"
    skipped = f" ({bad:,} bad row{'s' if bad != 1 else ''} skipped)" if bad else ""
    lines = [f"wrote {path}: {what}{skipped}, {m['rows']:,} rows at layers "
             f"{', '.join(map(str, m['layers']))} (image {counts[0]:,}, prompt {counts[1]:,}, caption {counts[2]:,}) "
             f"in {len(m['shards'])} shard{'s' if len(m['shards']) != 1 else ''}"]
    for reason, n in (data.get("bad") or {}).items():
        lines.append(f"  {reason}: {n}")
        shown = data.get("examples", {}).get(reason, [])
        lines.extend(f"    {BadRow(**ex).message()}" for ex in shown)
        if n > len(shown):
            lines.append(f"    ... and {n - len(shown)} more")
    return lines


@dict_app.command("harvest")
@user_errors
def harvest_cmd(
    out: Path = typer.Option(..., "--out", help="New folder for the activation shards (written beside it in .NAME.partial and "
                             "moved in when complete; an interrupted harvest resumes when the command is rerun)."),
    model: str = typer.Option("toyworld", "--model", help=MODEL_HELP),
    data: str | None = typer.Option(None, "--data", help=DATA_HELP + " Without it: the toy world's own harvest (--seed, --count, --prompts)."),
    caption_column: str | None = typer.Option(None, "--caption-column", help="With --data: the caption column (default text)."),
    prompt_column: str | None = typer.Option(None, "--prompt-column", help="With --data: a column holding each row's prompt."),
    split: str | None = typer.Option(None, "--split", help="With --data: the split to read (a split folder or save_to_disk split)."),
    prompt: str | None = typer.Option(None, "--prompt", help="With --data: " + PROMPT_HELP),
    layers: str | None = typer.Option(None, "--layers", help="With --data: layers to harvest, e.g. 0,2,4 (default: all; 0 = the LM input)."),
    max_samples: int | None = typer.Option(None, "--max-samples", min=1, help="With --data: stop after this many samples."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="With --data: samples per forward pass (default 16)."),
    shard_size: int | None = typer.Option(None, "--shard-size", min=1, help="With --data: rows (token positions) per shard file (default 65536)."),
    dtype: str | None = typer.Option(None, "--dtype", help="With --data: float32 (default) or float16 activations."),
    seed: int | None = typer.Option(None, "--seed", help="Toy harvest: scene stream (default 2, which trains dictionaries; 3 evaluates them)."),
    count: int | None = typer.Option(None, "--count", min=1, help="Toy harvest: number of scenes (default 3000)."),
    prompts: str | None = typer.Option(None, "--prompts", help="Toy harvest: describe (a caption per scene, default) or questions (a yes/no question per scene)."),
) -> None:
    """Capture the residual stream at every layer (or --layers), labelled image / prompt / caption."""
    from steerlang.dictionary.api import _activation_dtype, harvested

    _start_distributed()
    _toy_only(data, seed=seed, count=count, prompts=prompts)
    _data_only(data, caption_column=caption_column, prompt_column=prompt_column, split=split, prompt=prompt, layers=layers,
               max_samples=max_samples, batch_size=batch_size, shard_size=shard_size, dtype=dtype)
    with on_interrupt(lambda: _harvest_interrupted(out)):
        if data is None:
            total = 3000 if count is None else count
            with _progress() as bar:
                task = bar.add_task("harvesting scenes", total=total)
                path = harvested(model, seed=2 if seed is None else seed, count=total, acts_dir=out, prompts=prompts or "describe",
                                 on_batch=lambda n: bar.advance(task, n), log=lambda m: bar.console.print(m, markup=False))
        else:
            from steerlang.dictionary.distributed import device
            from steerlang.dictionary.harvest import check_harvest, harvest_dataset
            from steerlang.world.model import load_model

            parsed = _parse_layers(layers)
            torch_dtype = _activation_dtype(dtype or "float32")
            ds, total = _data_total(data, caption_column or "text", prompt_column, split, max_samples)
            with err_console.status(f"loading {model}"):
                bundle = load_model(model, device=device())
            check_harvest(bundle, ds, parsed, prompt)  # before any progress display
            with _progress() as bar:
                task = bar.add_task("harvesting samples", total=total)
                path = harvest_dataset(bundle, ds, parsed, out, prompt=prompt, batch_size=batch_size or 16,
                                       shard_size=shard_size or 65536, max_samples=max_samples, dtype=torch_dtype,
                                       on_batch=lambda n: bar.advance(task, n), log=lambda m: bar.console.print(m, markup=False))
                bar.update(task, completed=total)  # bad rows never reach the bar
    if not _main_process():
        return
    for line in _harvest_summary(path):
        err_console.print(line, markup=False, highlight=False)


@dict_app.command("train")
@user_errors
def train_cmd(
    out: Path = typer.Option(..., "--out", help="Dictionary folder to write (SAELens format + card.json)."),
    model: str = typer.Option("toyworld", "--model", help=MODEL_HELP),
    layer: int = typer.Option(..., "--layer", help="Residual stream entering block L: 0 = the LM input, n_layers = the last block's output."),
    modality: str = typer.Option("image", "--modality", help="image, text or both (one shared dictionary)."),
    arch: str = typer.Option("topk", "--arch", help="topk or relu."),
    latents: int = typer.Option(1024, "--latents", min=1, help="Dictionary size (number of latents)."),
    k: int = typer.Option(16, "--k", min=1, help="Active latents per token (topk)."),
    steps: int = typer.Option(3000, "--steps", min=1, help="Training steps (one batch each)."),
    batch_size: int = typer.Option(2048, "--batch-size", min=1, help="Tokens per training step."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate (after a short warm-up)."),
    l1_coeff: float = typer.Option(1.0, "--l1-coeff", help="Sparsity penalty of relu SAEs (ignored by topk)."),
    dead: str = typer.Option("auxk", "--dead", help="Dead-latent handling: auxk, resample or none."),
    whiten: bool = typer.Option(True, "--whiten/--no-whiten", help="Centre and whiten the input (folded into the weights)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initialisation and of the batch order."),
    count: int | None = typer.Option(None, "--count", min=1, help="Training scenes of the toy world to harvest (cached; default 3000)."),
    data: str | None = typer.Option(None, "--data", help=DATA_HELP + " Harvested at --layer (cached), then trained on."),
    caption_column: str | None = typer.Option(None, "--caption-column", help="With --data: the caption column (default text)."),
    prompt_column: str | None = typer.Option(None, "--prompt-column", help="With --data: a column holding each row's prompt."),
    split: str | None = typer.Option(None, "--split", help="With --data: the split to read."),
    prompt: str | None = typer.Option(None, "--prompt", help="With --data: " + PROMPT_HELP),
    max_samples: int | None = typer.Option(None, "--max-samples", min=1, help="With --data: harvest at most this many samples."),
    acts: Path | None = typer.Option(None, "--acts", help="Use or write activations in this folder."),
    work_dir: Path | None = typer.Option(None, "--work-dir", help="Checkpoints go here (with --checkpoint-every)."),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", min=0, help="Save a checkpoint every N steps in --work-dir (0: none)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in --work-dir."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object on stdout."),
) -> None:
    """Train one SAE on a layer's activations at image, text or all positions."""
    from steerlang.dictionary.api import check_data_prompt, check_train_args, train_dictionary

    _start_distributed()
    _toy_only(data, count=count)
    _data_only(data, caption_column=caption_column, prompt_column=prompt_column, split=split, prompt=prompt,
               max_samples=max_samples)
    check_train_args(model, layer, modality)  # before any progress display
    harvest_total = 3000 if count is None else count
    if data is not None:
        _ds, harvest_total = _data_total(data, caption_column or "text", prompt_column, split, max_samples)
        check_data_prompt(model, prompt, prompt_column)
    with on_interrupt(lambda: _train_interrupted(out, work_dir)):
        with _progress(_field_column("stats")) as bar:
            harvest_task: list[Any] = []

            def on_harvest(n: int) -> None:
                if not harvest_task:
                    what = "harvesting samples" if data is not None else "harvesting scenes"
                    harvest_task.append(bar.add_task(what, total=harvest_total, stats=""))
                bar.advance(harvest_task[0], n)

            task = bar.add_task(f"training layer{layer}-{modality}", total=steps, stats="")

            def on_step(done: int, last: dict | None) -> None:
                if harvest_task:
                    bar.update(harvest_task[0], completed=harvest_total)  # bad rows never reach the bar
                stats = f"FVU {last['fvu']:.4f}  L0 {last['l0']:.1f}  dead {last['dead']:.3f}" if last else ""
                bar.update(task, completed=done, stats=stats)

            res = train_dictionary(model=model, layer=layer, modality=modality, out=out, arch=arch, latents=latents, k=k,
                                   steps=steps, batch_size=batch_size, lr=lr, dead_method=dead, whiten=whiten, seed=seed,
                                   l1_coeff=l1_coeff, count=harvest_total if data is None else 3000, acts_dir=acts,
                                   work_dir=work_dir, checkpoint_every=checkpoint_every, resume=resume, progress=False,
                                   on_step=on_step, on_harvest=on_harvest, data=data, caption_column=caption_column or "text",
                                   prompt_column=prompt_column, split=split, prompt=prompt, max_samples=max_samples,
                                   on_log=lambda m: bar.console.print(m, markup=False))
    if not _main_process():
        return
    if as_json:
        out_console.print(json.dumps(res), markup=False)
        return
    c, last = res["card"], res["last"] or {}
    k_text = f", k {res['k']}" if res["k"] else ""
    out_console.print(f"wrote {res['out']}: layer {res['layer']} {res['modality']} SAE, {res['latents']} latents{k_text}", markup=False)
    out_console.print(f"  trained {res['steps']} steps in {res['seconds']:.1f}s ({res['tokens_per_s']:,} tokens/s)"
                      + (f"; last batch FVU {last['fvu']:.4f}" if "fvu" in last else ""), markup=False)
    out_console.print(f"  on {c['n_tokens']:,} training tokens: L0 {c['l0']:.1f}, dead {100 * c['dead_fraction']:.1f}%, "
                      f"dense {100 * c['dense_fraction']:.1f}%", markup=False)


def _field_column(field: str) -> Any:
    """A rich column showing a task's `field` (e.g. the latest training statistics)."""
    from rich.progress import TextColumn

    return TextColumn(f"{{task.fields[{field}]}}")


def _train_interrupted(out: Path, work_dir: Path | None) -> str:
    """What an interrupted `dict train` kept, and how to go on."""
    from steerlang.dictionary.train import latest_checkpoint

    ck = latest_checkpoint(work_dir / "checkpoints") if work_dir else None
    if ck is not None:
        return (f"{out} not written; kept the checkpoint of step {int(ck.name.split('_')[1])} in {ck.parent}; "
                "rerun the same command with --resume to continue from it")
    return (f"{out} not written, nothing kept (--work-dir DIR --checkpoint-every N make training resumable); "
            "rerun the same command to start again")


@dict_app.command("eval")
@user_errors
def eval_cmd(
    path: Path = typer.Argument(..., help="A dictionary: a folder (steerlang, SAELens, sparsify, dictionary_learning) or a Gemma Scope params.npz."),
    model: str | None = typer.Option(None, "--model", help="Default: the model named in the card."),
    layer: int | None = typer.Option(None, "--layer", min=0, help="The layer it reads (steerlang's: the stream entering block L), for a file that does not say."),
    count: int = typer.Option(500, "--count", min=1, help="Held-out scenes for reconstruction metrics."),
    splice_count: int = typer.Option(300, "--splice-count", min=1, help="Held-out scenes for the spliced loss."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object on stdout."),
) -> None:
    """MSE, FVU, L0, dead/dense fractions and spliced ΔCE on held-out scenes."""
    from steerlang.dictionary.api import evaluate_dictionary

    with on_interrupt(lambda: "nothing written; rerun the same command to start again"):
        with err_console.status(f"evaluating {path}") as status:
            res = evaluate_dictionary(path, model=model, count=count, splice_count=splice_count, layer=layer,
                                      on_phase=lambda what: status.update(f"evaluating {path}: {what}"))
    if as_json:
        out_console.print(json.dumps(res), markup=False)
        return
    r = res["reconstruction"]
    out_console.print(f"{path}  layer {res['layer']}  {res['modality']}  ({r['n_tokens']} held-out tokens)", markup=False)
    out_console.print(f"  MSE {r['mse']:.5g}  FVU {r['fvu']:.4f}  L0 {r['l0']:.1f}  dead {r['dead_fraction']:.3f}  dense {r['dense_fraction']:.3f}")
    for name, s in res["spliced"].items():
        out_console.print(f"  spliced at {name:5s}: ΔCE {s['delta_ce']:+.4f} nats  recovered {s['loss_recovered']:.3f}")


@dict_app.command("build")
@user_errors
def build_cmd(
    out: Path = typer.Option(..., "--out", help="Concept set folder to build. It is built in .NAME.build beside it and swapped "
                             "in whole at the end; an interrupted build resumes when rerun. An existing set is replaced only with --force."),
    model: str = typer.Option("toyworld", "--model", help=MODEL_HELP),
    count: int = typer.Option(3000, "--count", min=1, help="Training scenes (stream 2)."),
    skip_saes: bool = typer.Option(False, "--skip-saes", help="Keep the trained SAEs of --out; redo concepts only."),
    evaluate: bool = typer.Option(True, "--eval/--no-eval", help="Evaluate every SAE on held-out scenes (eval.json)."),
    force: bool = typer.Option(False, "--force", help="Replace the concept set already at --out (the shipped one included)."),
    data: str | None = typer.Option(None, "--data", help="Build from an image-caption dataset alone (an imagefolder corpus, a "
                                    "save_to_disk folder, or toyworld:SEED:COUNT; see docs/data.md): SAEs on its harvest, "
                                    "concepts named and grouped from its captions. Without it: the toy world's supervised build."),
    reuse_saes: str | None = typer.Option(None, "--reuse-saes", help="With --data: take the SAEs of this concept set "
                                          "(e.g. dictionaries/toyworld) instead of training them."),
    caption_column: str = typer.Option("text", "--caption-column", help="With --data: the caption column."),
    prompt_column: str | None = typer.Option(None, "--prompt-column", help="With --data: a column holding each row's prompt."),
    split: str | None = typer.Option(None, "--split", help="With --data: the split to read."),
    prompt: str | None = typer.Option(None, "--prompt", help="With --data: the prompt asked with each image (default: the "
                                      "model's own, else its chat template with the image alone)."),
    concept: list[str] | None = typer.Option(None, "--concept", help="With --data: a concept word (repeatable; default: the "
                                             "captions' content words that name at least 20 samples and at most half)."),
    question: str | None = typer.Option(None, "--question", help="With --data: a yes/no question with {word}, e.g. "
                                        "\"Is there a {word} in the image?\", to calibrate layers where image states see the "
                                        "prompt (default: the model's own; the toy model's \"is there a {word} ?\")."),
    concept_samples: int | None = typer.Option(None, "--concept-samples", help="With --data: fit the concepts on at most "
                                               "this many samples, evenly spread over the corpus (default 3,000; 0: all). "
                                               "The fits hold every patch of these samples: this sets their memory."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object on stdout."),
) -> None:
    """Train every layer's image and text dictionary, then align, name and group them into concepts."""
    from steerlang.dictionary.api import build_concept_set, check_build_target

    check_build_target(out, force=force, skip_saes=skip_saes)  # before any progress display
    with on_interrupt(lambda: _build_interrupted(out)), _RichBuildEvents() as events:
        summary = build_concept_set(out, model=model, count=count, skip_saes=skip_saes, evaluate=evaluate, force=force,
                                    events=events, data=data, reuse_saes=reuse_saes, caption_column=caption_column,
                                    prompt_column=prompt_column, split=split, prompt=prompt, words=concept or None,
                                    question=question, concept_samples=concept_samples)
    if as_json:
        out_console.print(json.dumps(summary), markup=False)
        return
    for line in _build_summary(summary):
        out_console.print(line, markup=False)


def _build_interrupted(out: Path) -> str:
    """What an interrupted `dict build` kept, and how to go on."""
    from steerlang.dictionary.api import build_status

    st = build_status(out)
    if st is None:
        return f"{out} is untouched; nothing kept; rerun the same command to start again"
    if st["mode"] == "concepts":
        return f"{out} is untouched; rerun the same command to rebuild the concepts"
    return (f"kept {st['finished']} of {st['total']} trained SAEs in {st['dir']}; {out} is untouched; "
            "rerun the same command to resume")


def _build_summary(s: dict[str, Any]) -> list[str]:
    """Readable lines for the summary `build_concept_set` returns."""
    from steerlang.dictionary.api import _duration

    if s.get("data") is not None:
        how = (f"on the {s['saes']} SAEs of {s['reused_from']}" if s.get("reused_from") else
               f"on its {s['saes']} SAEs" if s["skip_saes"] else f"{s['saes']} SAEs ({len(s['trained'])} trained)")
        lines = [f"built {s['out']} in {_duration(s['seconds'])} from the captions of {s['data']} ({s['samples']} samples), "
                 f"{how}; concept words: {', '.join(s['words'][:12])}{' ...' if len(s['words']) > 12 else ''}"]
    elif s["skip_saes"]:
        lines = [f"rebuilt the concepts of {s['out']} in {_duration(s['seconds'])}, on its {s['saes']} SAEs"]
    else:
        reused = f", {len(s['reused'])} reused from the unfinished build" if s["reused"] else ""
        lines = [f"built {s['out']} in {_duration(s['seconds'])}: {s['saes']} SAEs ({len(s['trained'])} trained{reused}) "
                 f"on {s['train_scenes']['count']} scenes of stream {s['train_scenes']['seed']}"]
    n = s["n_concepts"]
    lines.append(f"  concepts: {n['joint']} joint, {n['image']} image-only, {n['text']} text-only "
                 f"(details in {Path(s['out']) / 'concepts_report.json'})")
    if s["eval"]:
        fvu = [r["fvu"] for r in s["eval"]]
        dce = [r["delta_ce"] for r in s["eval"]]
        lines.append(f"  held-out: FVU {min(fvu):.4f} to {max(fvu):.4f}, spliced ΔCE {min(dce):+.4f} to {max(dce):+.4f} nats "
                     f"over {len(fvu)} SAEs ({Path(s['out']) / 'eval.json'})")
    return lines


class _RichBuildEvents:
    """The build's events (`steerlang.dictionary.api.BuildEvents`) drawn with rich on stderr: one
    bar per stage (harvesting, training over the steps of all SAEs, evaluating, concepts), log
    lines printed above them."""

    def __enter__(self) -> _RichBuildEvents:
        self.progress = _progress(_field_column("note"))
        self.progress.start()
        self.task: Any = None
        return self

    def __exit__(self, exc_type: object, *_exc: object) -> None:
        if exc_type is None and self.task is not None and self.progress.tasks[-1].total is None:
            self.progress.update(self.task, total=1, completed=1)  # the last (spinner) stage is done
        self.progress.stop()

    def log(self, msg: str) -> None:
        self.progress.console.print(msg, markup=False, highlight=False)

    def phase(self, name: str, total: float | None = None, done: float = 0) -> None:
        if self.task is not None and self.progress.tasks[-1].total is None:  # a spinner stage: done
            self.progress.update(self.task, total=1, completed=1)
        self.task = self.progress.add_task(name, total=total, completed=done, note="")

    def advance(self, n: float = 1, note: str | None = None) -> None:
        if self.task is not None:
            self.progress.update(self.task, advance=n, **({"note": note} if note else {}))


@dict_app.command("card")
@user_errors
def card_cmd(
    dictionary: str = typer.Argument("toyworld", help="Concept set folder (or \"toyworld\")."),
    html_out: Path = typer.Option(..., "--html", help="HTML file to write."),
    pictures: bool = typer.Option(True, "--pictures/--no-pictures", help="Embed top-patch heatmaps of joint concepts."),
    model: str | None = typer.Option(None, "--model", help="Model to draw the heatmaps with (default: the one the concept set names)."),
) -> None:
    """Write a static HTML page of every concept (with heatmaps of the named joint concepts)."""
    from steerlang.atomic import write_text
    from steerlang.dictionary.browse import render_html, top_patch_grid
    from steerlang.dictionary.concepts import load_concept_set

    cs = load_concept_set(dictionary)
    pics = {}
    if pictures:
        from steerlang.world.model import load_model

        with on_interrupt(lambda: f"{html_out} not written; rerun the same command to start again"):
            with err_console.status(f"loading {model or cs.model}"):
                bundle = load_model(model or cs.model)
            named = [c for c in cs.concepts if c.space == "joint" and "@" not in c.name and any(g.modality == "image" for g in c.groups)]
            from steerlang.world.scenes import make_scene, render

            images = [render(make_scene(3, i)) for i in range(120)]  # held-out toy scenes (stream 3)
            with _progress(_field_column("note")) as bar:
                task = bar.add_task("heatmaps", total=len(named), note="")
                for c in named:
                    bar.update(task, note=c.name)
                    pics[c.key] = top_patch_grid(bundle, cs, c, images, top=6)
                    bar.advance(task)
    write_text(html_out, render_html(cs, pics))
    err_console.print(f"wrote {html_out}")


@dict_app.command("align-eval")
@user_errors
def align_eval_cmd(
    dict_dir: Path = typer.Option(Path("dictionaries/toyworld"), "--dict", help="Concept set with saes.json."),
    layer: list[int] = typer.Option([0], "--layer", help="Layers to compare (repeatable)."),
    model: str = typer.Option("toyworld", "--model", help=MODEL_HELP),
    steps: int = typer.Option(400, "--steps", help="Training steps of the shared and VL-SAE models."),
    pool: str = typer.Option("max", "--pool", help="Scene pooling of codes: max or mean."),
    cache: Path = typer.Option(None, "--cache", help="Where trained joint models are kept (default: $STEERLANG_CACHE/joint)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout (no progress bars)."),
) -> None:
    """Compare aligned-separate, shared (SAE-V style) and VL-SAE style joint dictionaries on held-out scenes."""
    from steerlang.dictionary.api import EVAL_SCENE_SEED, TRAIN_SCENE_SEED, cache_root, harvested
    from steerlang.dictionary.concept_codes import concept_set_recall, measured_concepts
    from steerlang.dictionary.concepts import load_concept_set
    from steerlang.dictionary.crossmodal import compare_layer
    from steerlang.world.oracle_concepts import GRID, load_split

    cache = cache or cache_root() / "joint"
    train_acts = harvested(model, seed=TRAIN_SCENE_SEED, count=3000)
    held_acts = harvested(model, seed=EVAL_SCENE_SEED, count=500)
    res, concepts = {}, {}
    cs = load_concept_set(dict_dir) if (dict_dir / "concepts.json").exists() else None
    for L in layer:
        train = load_split(train_acts, L, TRAIN_SCENE_SEED)
        held = load_split(held_acts, L, EVAL_SCENE_SEED)
        res[L] = compare_layer(L, dict_dir, train, held, cache, steps=steps, pool=pool, progress=not as_json)
        if cs is not None and measured_concepts(cs, L):
            concepts[L] = concept_set_recall(cs, L, held, grid_cols=GRID)
    if as_json:
        out_console.print_json(json.dumps({"methods": res, "concepts": concepts}))
        return
    out_console.print("| layer | method | i2t R@1/5/10 strict | i2t R@1/5/10 caption | t2i R@1 strict / caption | intra / inter (VL-SAE) | joint latents | "
                      "SAE-V cross-modal latents (mean w) | median angle |")
    out_console.print("|---|---|---|---|---|---|---|---|---|")
    for L, methods in res.items():
        for name, r in methods.items():
            s, c = r["i2t"]["strict"], r["i2t"]["caption"]
            out_console.print(f"| {L} | {name} | {s[1]:.2f} / {s[5]:.2f} / {s[10]:.2f} | {c[1]:.2f} / {c[5]:.2f} / {c[10]:.2f} | "
                              f"{r['t2i']['strict'][1]:.2f} / {r['t2i']['caption'][1]:.2f} | {r['similarity']['intra']:.2f} / {r['similarity']['inter']:.2f} | "
                              f"{r['joint_latents']} | {r['cross_modal_latents']} ({r['cross_modal_weight_mean']:.2f}) | "
                              f"{r['angle_median_deg']:.0f} |")
    if concepts:
        out_console.print("\nThe concept set's joint concepts (the kinds), bag of strengths and with reading order:\n")
        out_console.print("| layer | code | i2t R@1/5/10 strict | i2t R@1/5/10 caption | t2i R@1 strict / caption |")
        out_console.print("|---|---|---|---|---|")
        for L, r in concepts.items():
            for name in ("bag", "ordered"):
                s, c, t = r[name]["i2t"]["strict"], r[name]["i2t"]["caption"], r[name]["t2i"]
                out_console.print(f"| {L} | {name} | {s[1]:.2f} / {s[5]:.2f} / {s[10]:.2f} | {c[1]:.2f} / {c[5]:.2f} / {c[10]:.2f} | "
                                  f"{t['strict'][1]:.2f} / {t['caption'][1]:.2f} |")
