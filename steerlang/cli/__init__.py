"""The `steer` command line: thin over the library; one module per command group.

Exit codes: 0 ok, 1 program or input error (one line, no traceback unless --debug), 2 usage.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import typer
from rich.console import Console

from steerlang.errors import SteerError, SteerWarning

app = typer.Typer(
    name="steer",
    help="steerlang: name what a multimodal LLM sees, and switch it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
out_console = Console(highlight=False, soft_wrap=True)
_state = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn a SteerError into a one-line message and exit code 1 (a traceback only with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SteerError as exc:
            if _state["debug"]:
                raise
            err_console.print(f"error: {exc}", markup=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def terminal_bar(label: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """A rich bar on stderr when stderr is a terminal; nothing otherwise (logs stay clean).
    Yields `update(done, total=None)`."""
    if not err_console.is_terminal:
        yield lambda _done, _total=None: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task(label, total=total)

        def update(done: int, new_total: int | None = None) -> None:
            bar.update(task, completed=done, **({"total": new_total} if new_total is not None else {}))

        yield update


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")) -> None:
    _state["debug"] = debug


def _register() -> None:
    # Each command group lives in its own module and adds itself to `app` on import.
    import importlib

    for name in ("world", "lang", "dictionary", "concepts", "run", "data", "audit"):
        try:
            importlib.import_module(f"steerlang.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"steerlang.cli.{name}":
                raise


_register()


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """steerlang's own warnings as one `warning: ...` line; others as Python prints them."""
    if issubclass(category, SteerWarning):
        err_console.print(f"warning: {message}", markup=False)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def main() -> None:
    # Accept --debug anywhere on the line, not only before the sub-command.
    if "--debug" in sys.argv[1:]:
        sys.argv = [sys.argv[0], "--debug"] + [a for a in sys.argv[1:] if a != "--debug"]
    warnings.showwarning = _show_warning
    app()
