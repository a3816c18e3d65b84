"""The front end in three calls: `parse`, `check`, `compile_program` (and `format_program`).

These are the only entry points the CLI, the REPL and the runtime need. Whatever goes wrong in
them reaches the caller as a `LangError` (a `SteerError`), never as another exception.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from steerlang.lang import ast, ir
from steerlang.lang.check import Loader
from steerlang.lang.check import check as _check
from steerlang.lang.concepts import ConceptTable
from steerlang.lang.errors import Diagnostic, LangError
from steerlang.lang.fmt import format_program as _format
from steerlang.lang.parser import parse as _parse

T = TypeVar("T")

__all__ = ["parse", "check", "compile_program", "compile_file", "format_program", "read_program", "require_content",
           "header_end_line"]


def parse(text: str, file: str = "<string>") -> ast.Program:
    """Parse program text into an AST (no name resolution). Raises `LangError`."""
    return _guard(lambda: _parse(text, file), file, text)


def check(program: ast.Program, table: ConceptTable | None = None, *, loader: Loader | None = None) -> ir.Program:
    """Resolve and check a parsed program and lower it to the IR. Raises `LangError` with every error.

    `table` is the dictionary's concept table (None: names are not resolved, ids not range-checked);
    `loader` reads imported files (default: from disk, relative to the importing file).
    """
    return _guard(lambda: _check(program, table, loader=loader), program.file, program.source)


def compile_program(source: str | Path, table: ConceptTable | None = None, *, file: str | None = None,
                    loader: Loader | None = None) -> ir.Program:
    """Program text (a `str`) or a file (a `Path`) -> checked IR. Raises `LangError`.

    `file` names the text in diagnostics and anchors relative imports (default: the path, or
    "<string>").
    """
    if isinstance(source, Path):
        text = read_program(source)
        file = file or str(source)
    else:
        text = source
        file = file or "<string>"
    return check(parse(text, file), table, loader=loader)


def compile_file(path: str | Path, table: ConceptTable | None = None) -> ir.Program:
    """`compile_program` of the file at `path`."""
    return compile_program(Path(path), table)


def format_program(text: str, file: str = "<string>") -> str:
    """The canonical formatting of a program (comments kept). Raises `LangError` on a syntax error."""
    return _guard(lambda: _format(text, file), file, text)


def read_program(path: str | Path) -> str:
    """A program file's text; a `LangError` naming the file if it cannot be read."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise LangError([Diagnostic(ast.Span(str(path), 1, 1, 1, 1), f"cannot read program: {reason}")]) from None


def require_content(program: ir.Program, *, run: bool = False) -> None:
    """A `LangError` naming the file if the program is empty, or (with `run`) has nothing to run.

    Empty: no statements at all (a blank file, or only comments), or only header lines (`model`,
    `dictionary`, `image`, `ask`, `generate`). A file that only defines names (`let`, `chain`,
    `import`) is a library: fine to check, but with `run=True` an error, since nothing in it steers,
    traces or expects anything.
    """
    file = program.source or "<string>"
    where = ast.Span(file, 1, 1, 1, 1)
    defines = bool(program.imports or program.bindings or program.chains)
    acts = bool(program.steps or program.chains or program.traces or program.expectations)
    if acts or (defines and not run):
        return
    if defines:
        raise LangError([Diagnostic(where, "nothing to run: the program only defines names (let, import)",
                                    "add what to do: steer, when, trace or expect (or import this file from a program "
                                    "that does)")])
    has_header = any(v is not None for v in program.header.model_dump().values())
    what = "it has only header lines (model, dictionary, image, ask, generate)" if has_header else \
        "it has no statements (the file is blank or only comments)"
    raise LangError([Diagnostic(where, f"empty program: {what}",
                                "a program steers, traces or expects something, e.g. steer image { off cat }")])


def header_end_line(text: str, file: str = "<string>") -> int:
    """The line just after the program's leading header statements (`model`, `dictionary`, `image`,
    `ask`, `import`, `generate`): where a new header line goes. 1 if there is none (or on a syntax
    error)."""
    try:
        program = _parse(text, file)
    except Exception:  # noqa: BLE001 - a hint's line number, never an error of its own
        return 1
    line = 1
    for stmt in program.statements:
        if not isinstance(stmt, ast.Header | ast.Generate):
            break
        line = stmt.span.end_line + 1
    return line


def _guard(fn: Callable[[], T], file: str, text: str) -> T:
    # The last line of defence: a bug in the front end still reaches the user as a LangError
    # (tests assert that no "internal error" is ever produced).
    try:
        return fn()
    except LangError:
        raise
    except RecursionError:
        raise LangError([Diagnostic(ast.Span(file, 1, 1, 1, 2), "program is nested too deeply")], {file: text}) from None
    except Exception as exc:  # noqa: BLE001 - deliberately total, see above
        message = f"internal error: {type(exc).__name__}: {exc}"
        raise LangError([Diagnostic(ast.Span(file, 1, 1, 1, 2), message, "please report this")], {file: text}) from exc
