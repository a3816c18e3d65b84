"""`steer check`, `steer compile`, `steer fmt`: the language front end on the command line."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import typer

from steerlang.cli import app, err_console, out_console, user_errors
from steerlang.lang import LangError, format_program, read_program
from steerlang.lang.concepts import ConceptTable

_DICTIONARY_HELP = ("Concept set to resolve names and layers against: \"toyworld\", a concept-set folder, raw SAEs "
                    "(an SAE folder or file, or a folder of them), or a JSON concept list (default: the program's `dictionary`, else toyworld, as `steer run` does).")


def _report(exc: LangError) -> None:
    err_console.out(exc.render(), highlight=False)


@app.command("check")
@user_errors
def check_cmd(
    programs: list[Path] = typer.Argument(..., help="Program files (.stl) to check."),
    dictionary: str | None = typer.Option(None, "--dictionary", "-d", help=_DICTIONARY_HELP),
) -> None:
    """Check programs without running them: syntax, concept names and layers (against the concept set
    each would run with), types, ranges, scopes. An empty program is an error. Exit 1 on any error."""
    from steerlang.api import check_program

    tables: dict[str, ConceptTable] = {}
    failed = 0
    for path in programs:
        try:
            check_program(path, dictionary, tables=tables)
        except LangError as exc:
            _report(exc)
            failed += 1
        else:
            out_console.out(f"{path}: ok", highlight=False)
    if failed:
        raise typer.Exit(1)


@app.command("compile")
@user_errors
def compile_cmd(
    program: Path = typer.Argument(..., help="Program file (.stl)."),
    as_json: bool = typer.Option(False, "--json", help="Print the IR as JSON."),
    dictionary: str | None = typer.Option(None, "--dictionary", "-d", help=_DICTIONARY_HELP),
    image: str | None = typer.Option(None, "--image", help="Use this image instead of the program's `image`."),
) -> None:
    """Compile a program to its IR (what the runtime executes), names resolved as `steer check` does."""
    from steerlang.api import check_program

    try:
        ir_program = check_program(program, dictionary)
    except LangError as exc:
        _report(exc)
        raise typer.Exit(1) from None
    if image is not None:
        ir_program.header.image = image
    if as_json:
        out_console.out(ir_program.model_dump_json(indent=2), highlight=False)
        return
    steps = len(ir_program.steps)
    out_console.out(
        f"{program}: ok: {len(ir_program.bindings)} bindings, {len(ir_program.chains)} chains, {steps} steps, "
        f"{len(ir_program.traces)} traces, {len(ir_program.expectations)} expectations (--json for the IR)",
        highlight=False,
    )


FMT_SEPARATOR = "# == {path} =="
"""With several files and neither --write nor --check, each printed file starts with this line."""


@app.command("fmt")
@user_errors
def fmt_cmd(
    programs: list[Path] = typer.Argument(..., help="Program files (.stl) to format."),
    write: bool = typer.Option(False, "--write", "-w", help="Rewrite the files in place."),
    check: bool = typer.Option(False, "--check", help="Exit 1 if a file is not formatted; change nothing."),
) -> None:
    """Print programs in canonical formatting (or rewrite them with --write).

    With several files, each printed file is preceded by a comment line `# == PATH ==` (a blank
    line between files); with one file the output is exactly the formatted file.
    """
    failed = False
    printed = 0
    for path in programs:
        try:
            text = read_program(path)
            formatted = format_program(text, str(path))
        except LangError as exc:
            _report(exc)
            failed = True
            continue
        if check:
            if formatted != text:
                err_console.out(f"{path}: not formatted (steer fmt --write {path} fixes it)", highlight=False)
                failed = True
        elif write:
            if formatted != text:
                _write_atomic(path, formatted)
        else:
            if len(programs) > 1:
                out_console.out(("\n" if printed else "") + FMT_SEPARATOR.format(path=path), highlight=False)
            out_console.out(formatted, end="", highlight=False)
            printed += 1
    if failed:
        raise typer.Exit(1)


def _write_atomic(path: Path, text: str) -> None:
    # Write beside the file then rename over it: a crash never leaves a half-written program.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
