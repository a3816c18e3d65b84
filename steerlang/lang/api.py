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

__all__ = ["parse", "check", "compile_program", "compile_file", "format_program", "read_program"]


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
