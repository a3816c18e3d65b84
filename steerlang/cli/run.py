"""`steer run`, `steer test`, `steer repl`: programs on a model, thin over `steerlang.api`.

Human output goes to stdout (pass in green, FAIL in red on a terminal; plain text when piped) and
always ends with a summary line `N passed, M failed`, counted over programs x images: an image
whose expectations all pass is passed, one with any failing expectation failed, and runs with no
expectations are said so (`0 passed, 0 failed (1 run, no expectations)`). Exit 1 if any failed.
Machine-readable output only with --jsonl (the summary and any progress then go to stderr).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import typer
from rich.text import Text

from steerlang.cli import app, err_console, out_console, user_errors
from steerlang.errors import SteerError
from steerlang.lang import LangError

_MODEL_HELP = "Model: \"toyworld\", a folder saved with save_pretrained, or a hub id (default: the program's `model`, else toyworld)."
_DICT_HELP = ("Concept set: \"toyworld\", a concept-set folder, or raw SAEs (an SAE folder or file, or a folder of them; "
             "latents are then image#N / text#N). Given, it replaces the set the program's `dictionary` header names "
             "(default: the program's `dictionary`, else toyworld).")
FEW_IMAGES = 8
"""Runs on more images than this show their progress on stderr even when it is not a terminal."""


class _Sessions:
    """Sessions loaded once per (model, dictionary) for a whole command."""

    def __init__(self, dtype: str | None = None, device_map: str | None = None) -> None:
        self._cache: dict[tuple[str, str, bool], object] = {}
        self.dtype, self.device_map = dtype, device_map
        self.tables: dict[str, Any] = {}  # concept sets loaded by `check_program`, by name

    def get(self, model: str, dictionary: str, dense: bool = False):  # noqa: ANN201 - api.Session
        from steerlang.api import load_session
        from steerlang.dictionary.concepts import ConceptSet

        key = (model, dictionary, dense)
        if key not in self._cache:
            loaded = self.tables.get(dictionary)
            self._cache[key] = load_session(model, loaded if isinstance(loaded, ConceptSet) else dictionary, dense=dense,
                                            dtype=self.dtype, device_map=self.device_map)
        return self._cache[key]


@dataclass
class _Tally:
    """Runs (program x image) that passed, failed, or had no expectations to check."""

    passed: int = 0
    failed: int = 0
    unchecked: int = 0

    def add(self, results: Sequence[Any]) -> None:
        for r in results:
            if not r.expectations:
                self.unchecked += 1
            elif r.passed:
                self.passed += 1
            else:
                self.failed += 1

    def line(self) -> Text:
        text = Text.assemble((f"{self.passed} passed", "green" if self.passed else ""), ", ",
                             (f"{self.failed} failed", "bold red" if self.failed else ""))
        if self.unchecked:
            runs = f"{self.unchecked} run{'s' if self.unchecked != 1 else ''}"
            text.append(f" ({runs}, no expectations)" if not (self.passed or self.failed) else f" ({runs} without expectations)")
        return text


class _Progress:
    """Images done, on stderr: a rich bar when stderr is a terminal, else one plain line per batch
    when the run has more than FEW_IMAGES images (or --progress is given); never on stdout."""

    def __init__(self, label: str, total: int, want: bool | None) -> None:
        terminal = err_console.is_terminal
        if want is None:
            want = terminal or total > FEW_IMAGES
        self.mode = "off" if not want else ("bar" if terminal else "lines")
        self.label, self.total = label, total
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if self.mode == "bar":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("images"), TimeElapsedColumn(), console=err_console, transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total)
        return self

    def update(self, done: int, total: int) -> None:
        if self.mode == "bar":
            self._bar.update(self._task, completed=done, total=total)
        elif self.mode == "lines":
            err_console.out(f"{self.label}: {done}/{total} images", highlight=False)

    def __exit__(self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()


def _say(*parts: str | tuple[str, str]) -> None:
    """One line on stdout; (text, style) parts are coloured on a terminal, plain when piped."""
    out_console.print(Text.assemble(*parts), soft_wrap=True)


def _verdict(passed: bool) -> tuple[str, str]:
    return ("pass", "green") if passed else ("FAIL", "bold red")


@app.command("run")
@user_errors
def run_cmd(
    program: Path = typer.Argument(..., help="Program file (.stl)."),
    image: list[Path] | None = typer.Option(None, "--image", "-i", help="Image file(s) to run on, one --image per file (default: the program's `image`)."),
    prompt: str | None = typer.Option(None, "--prompt", "-p", help="Prompt (default: the program's `ask`)."),
    compare: bool = typer.Option(False, "--compare", help="Also print the unsteered output."),
    jsonl: bool = typer.Option(False, "--jsonl", help="One JSON line per image on stdout: image, output, baseline, expectations (the summary goes to stderr)."),
    trace_dir: Path | None = typer.Option(None, "--trace-dir", help="Write trace JSON and heatmap PNGs here."),
    model: str | None = typer.Option(None, "--model", "-m", help=_MODEL_HELP),
    dictionary: str | None = typer.Option(None, "--dictionary", "-d", help=_DICT_HELP),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", "-n", min=1, help="Tokens to generate (default: the program's, else 24)."),
    sample: bool = typer.Option(False, "--sample", help="Sample instead of greedy decoding."),
    seed: int = typer.Option(0, "--seed", help="Seed for --sample."),
    dense: bool = typer.Option(False, "--dense", help="Compute full SAE encodes (benchmarking)."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help=f"Show progress on stderr (default: when stderr is a terminal, or on more than {FEW_IMAGES} images)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images steered together in one generate (each keeps its own masks and rules)."),
    dtype: str | None = typer.Option(None, "--dtype", help="Model weights' dtype: float32 (default), bfloat16, float16, or auto (the checkpoint's)."),
    device_map: str | None = typer.Option(None, "--device-map", help="Let accelerate place the model's blocks (e.g. auto: across GPUs, CPU and disk)."),
) -> None:
    """Run a program: what it does, the steered output per image (with --compare the baseline), its
    expectations, and a summary `N passed, M failed`. Exit 1 if any expectation fails."""
    from steerlang.api import (
        check_program,
        describe_program,
        dictionary_for,
        model_for,
        program_images,
        require_content,
        write_trace,
    )

    sessions = _Sessions(dtype, device_map)
    try:
        # Exactly what `steer check` does (names, layers, header against the concept set), before the model loads.
        header = check_program(program, dictionary, tables=sessions.tables)
        require_content(header, run=True)
        images = program_images(header, image)
        session = sessions.get(model_for(header, model), dictionary_for(header, dictionary), dense)
        session.dictionary_override = dictionary is not None
        prog = session.compile(program)
    except LangError as exc:
        err_console.out(exc.render(), highlight=False)
        raise typer.Exit(1) from None
    if not jsonl:
        _say(f"{program}: {describe_program(prog)}")
    with _Progress(f"{program.name}", len(images), progress) as bar:
        results = session.run(prog, images=images, prompt=prompt, max_new_tokens=max_new_tokens, compare=compare or jsonl,
                              sample=sample, seed=seed, batch_size=batch_size, on_progress=bar.update)
    tally = _Tally()
    tally.add(results)
    for i, r in enumerate(results):
        if trace_dir is not None and r.trace is not None:
            write_trace(r.trace, r.sample, trace_dir, f"{i:03d}-{Path(r.image or 'image').stem}", session.images_for(prog, [r.image])[0][1])
        if jsonl:
            out_console.out(json.dumps(r.to_json()), highlight=False)
            continue
        _say(f"{r.image}")
        _say(f"  steered : {r.output}")
        if compare:
            _say(f"  baseline: {r.baseline}")
        for e in r.expectations:
            _say("  ", _verdict(e.passed), f": expect {e.text}" + ("" if e.passed else f"  ({e.detail})"))
    if jsonl:
        err_console.print(tally.line(), soft_wrap=True)
    else:
        out_console.print(tally.line(), soft_wrap=True)
    if tally.failed:
        raise typer.Exit(1)


@app.command("test")
@user_errors
def test_cmd(
    paths: list[Path] = typer.Argument(..., help="Program files or folders (searched for .stl files)."),
    image: list[Path] | None = typer.Option(None, "--image", "-i", help="Run every program on these image files instead."),
    model: str | None = typer.Option(None, "--model", "-m", help=_MODEL_HELP),
    dictionary: str | None = typer.Option(None, "--dictionary", "-d", help=_DICT_HELP),
) -> None:
    """Run every program's expectations on its images; a summary `N passed, M failed` over programs
    x images (a program that does not compile, or is empty, counts as one failure). Exit 1 if any
    fails. Files with neither an image nor expectations (libraries) are skipped."""
    from steerlang.api import (
        check_program,
        dictionary_for,
        find_programs,
        model_for,
        program_images,
        require_content,
    )

    sessions = _Sessions()
    tally = _Tally()
    for path in find_programs(paths):
        try:
            header = check_program(path, dictionary, tables=sessions.tables)
            if header.header.image is None and not header.expectations and not image:
                _say(("skip", "yellow"), f" {path}: no image and no expectations (a library?)")
                continue
            require_content(header, run=True)
            images = program_images(header, image)
            session = sessions.get(model_for(header, model), dictionary_for(header, dictionary))
            session.dictionary_override = dictionary is not None
            results = session.run(session.compile(path), images=images)
        except LangError as exc:
            err_console.out(exc.render(), highlight=False)
            why = exc.diagnostics[0].message if len(exc.diagnostics) == 1 else f"does not compile ({len(exc.diagnostics)} errors)"
            _say(_verdict(False), f" {path}: {why}")
            tally.failed += 1
            continue
        except SteerError as exc:
            _say(_verdict(False), f" {path}: {exc}")
            tally.failed += 1
            continue
        tally.add(results)
        bad = [(r.image, e) for r in results for e in r.expectations if not e.passed]
        n = sum(len(r.expectations) for r in results)
        if bad:
            _say(_verdict(False), f" {path}")
            for img, e in bad:
                _say(f"  {img}: expect {e.text} ({e.detail})")
        elif n == 0:
            _say(("ran", "yellow"), f" {path} on {len(results)} image{'s' if len(results) != 1 else ''} (no expectations)")
        else:
            _say(_verdict(True), f" {path} ({n} expectation{'s' if n != 1 else ''} on {len(results)} "
                                 f"image{'s' if len(results) != 1 else ''})")
    out_console.print(tally.line(), soft_wrap=True)
    if tally.failed:
        raise typer.Exit(1)


@app.command("repl")
@user_errors
def repl_cmd(
    model: str = typer.Option("toyworld", "--model", "-m", help="Model to load: \"toyworld\", a folder saved with save_pretrained, or a hub id."),
    dictionary: str = typer.Option("toyworld", "--dictionary", "-d", help="Concept set to load: \"toyworld\" or a concept-set folder."),
    image: Path | None = typer.Option(None, "--image", "-i", help="The image to start with (change it with :image PATH)."),
) -> None:
    """Interactive steering on one model and concept set: statements run as you type them; :help for commands."""
    from steerlang.api import load_session
    from steerlang.repl import Repl

    Repl(load_session(model, dictionary), image=image).loop()
