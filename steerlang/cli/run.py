"""`steer run`, `steer test`, `steer repl`: programs on a model, thin over `steerlang.api`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from steerlang.cli import app, err_console, out_console, user_errors
from steerlang.errors import SteerError
from steerlang.lang import LangError

_MODEL_HELP = "Model: \"toyworld\", a folder saved with save_pretrained, or a hub id (default: the program's `model`, else toyworld)."
_DICT_HELP = "Concept set folder or name (default: the program's `dictionary`, else toyworld)."


class _Sessions:
    """Sessions loaded once per (model, dictionary) for a whole command."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, bool], object] = {}

    def get(self, model: str, dictionary: str, dense: bool = False):  # noqa: ANN201 - api.Session
        from steerlang.api import load_session

        key = (model, dictionary, dense)
        if key not in self._cache:
            self._cache[key] = load_session(model, dictionary, dense=dense)
        return self._cache[key]


def _program_images(program: Path, header_image: str | None, images: list[Path] | None) -> list[Path]:
    from steerlang.api import load_image
    from steerlang.errors import InputError

    paths = list(images or [])
    if not paths:
        if header_image is None:
            raise InputError(f"{program}: no image: give --image or write `image \"PATH\"` in the program")
        paths = [program.parent / header_image]
    for p in paths:
        load_image(p)  # a missing or corrupt image is an error before any model is loaded
    return paths


@app.command("run")
@user_errors
def run_cmd(
    program: Path = typer.Argument(..., help="Program file (.stl)."),
    image: list[Path] | None = typer.Option(None, "--image", "-i", help="Image(s) to run on (default: the program's `image`)."),
    prompt: str | None = typer.Option(None, "--prompt", "-p", help="Prompt (default: the program's `ask`)."),
    compare: bool = typer.Option(False, "--compare", help="Also print the unsteered output."),
    jsonl: bool = typer.Option(False, "--jsonl", help="One JSON line per image: image, output, baseline, expectations."),
    trace_dir: Path | None = typer.Option(None, "--trace-dir", help="Write trace JSON and heatmap PNGs here."),
    model: str | None = typer.Option(None, "--model", "-m", help=_MODEL_HELP),
    dictionary: str | None = typer.Option(None, "--dictionary", "-d", help=_DICT_HELP),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", "-n", min=1, help="Tokens to generate (default: the program's, else 24)."),
    sample: bool = typer.Option(False, "--sample", help="Sample instead of greedy decoding."),
    seed: int = typer.Option(0, "--seed", help="Seed for --sample."),
    dense: bool = typer.Option(False, "--dense", help="Compute full SAE encodes (benchmarking)."),
) -> None:
    """Run a program: the steered output per image (with --compare the baseline), and its expectations."""
    from steerlang.api import read_header, write_trace

    try:
        header = read_header(program)
        images = _program_images(program, header.header.image, image)
        session = _Sessions().get(model or header.header.model or "toyworld", dictionary or header.header.dictionary or "toyworld", dense)
        prog = session.compile(program)
    except LangError as exc:
        err_console.out(exc.render(), highlight=False)
        raise typer.Exit(1) from None
    results = session.run(prog, images=images, prompt=prompt, max_new_tokens=max_new_tokens, compare=compare or jsonl,
                          sample=sample, seed=seed)
    for i, r in enumerate(results):
        if trace_dir is not None and r.trace is not None:
            write_trace(r.trace, r.sample, trace_dir, f"{i:03d}-{Path(r.image or 'image').stem}", session.images_for(prog, [r.image])[0][1])
        if jsonl:
            out_console.out(json.dumps(r.to_json()), highlight=False)
            continue
        out_console.out(f"{r.image}", highlight=False)
        out_console.out(f"  steered : {r.output}", highlight=False)
        if compare:
            out_console.out(f"  baseline: {r.baseline}", highlight=False)
        for e in r.expectations:
            out_console.out(f"  {'pass' if e.passed else 'FAIL'}: expect {e.text}" + ("" if e.passed else f"  ({e.detail})"), highlight=False)


@app.command("test")
@user_errors
def test_cmd(
    paths: list[Path] = typer.Argument(..., help="Program files or folders (searched for .stl files)."),
    image: list[Path] | None = typer.Option(None, "--image", "-i", help="Run every program on these images instead."),
    model: str | None = typer.Option(None, "--model", "-m", help=_MODEL_HELP),
    dictionary: str | None = typer.Option(None, "--dictionary", "-d", help=_DICT_HELP),
) -> None:
    """Run every program's expectations on its images; exit 1 if any fails."""
    from steerlang.api import find_programs, read_header

    sessions = _Sessions()
    passed = failed = 0
    for path in find_programs(paths):
        try:
            header = read_header(path)
            if header.header.image is None and not header.expectations and not image:
                out_console.out(f"skip {path}: no image and no expectations (a library?)", highlight=False)
                continue
            images = _program_images(path, header.header.image, image)
            session = sessions.get(model or header.header.model or "toyworld", dictionary or header.header.dictionary or "toyworld")
            results = session.run(session.compile(path), images=images)
        except LangError as exc:
            err_console.out(exc.render(), highlight=False)
            out_console.out(f"FAIL {path}: does not compile", highlight=False)
            failed += 1
            continue
        except SteerError as exc:
            out_console.out(f"FAIL {path}: {exc}", highlight=False)
            failed += 1
            continue
        bad = [(r.image, e) for r in results for e in r.expectations if not e.passed]
        if bad:
            failed += 1
            out_console.out(f"FAIL {path}", highlight=False)
            for img, e in bad:
                out_console.out(f"  {img}: expect {e.text} ({e.detail})", highlight=False)
        else:
            passed += 1
            n = sum(len(r.expectations) for r in results)
            out_console.out(f"pass {path} ({n} expectations on {len(results)} images)", highlight=False)
    out_console.out(f"{passed} passed, {failed} failed", highlight=False)
    if failed:
        raise typer.Exit(1)


@app.command("repl")
@user_errors
def repl_cmd(
    model: str = typer.Option("toyworld", "--model", "-m", help=_MODEL_HELP),
    dictionary: str = typer.Option("toyworld", "--dictionary", "-d", help=_DICT_HELP),
    image: Path | None = typer.Option(None, "--image", "-i", help="The image to start with."),
) -> None:
    """Interactive steering: statements run as you type them; :help for commands."""
    from steerlang.api import load_session
    from steerlang.repl import Repl

    Repl(load_session(model, dictionary), image=image).loop()
