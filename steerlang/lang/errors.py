"""Diagnostics of the language front end and the one error type it raises.

Every syntax and semantic problem becomes a `Diagnostic` with a source span. The checker
collects them all and raises one `LangError`; `LangError.render()` prints them the way a
compiler does::

    prog.stl:3:17: error: unknown concept "kat"
        3 | let c = concept "kat"
          |                 ^^^^^
    hint: did you mean "cat"?
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from steerlang.errors import SteerError
from steerlang.lang.ast import Span

__all__ = ["Diagnostic", "LangError", "did_you_mean"]

_TAB = "    "


@dataclass(frozen=True)
class Diagnostic:
    """One error at a place in a source file, with an optional hint for the fix."""

    span: Span
    message: str
    hint: str | None = None

    def render(self, source: str | None = None) -> str:
        """`file:line:col: error: message`, the source line with carets under the span, the hint."""
        span = self.span
        lines = [f"{span.file}:{span.line}:{span.col}: error: {self.message}"]
        text_lines = source.split("\n") if source is not None else []
        if 1 <= span.line <= len(text_lines):
            raw = text_lines[span.line - 1].rstrip("\r")
            # Tabs are expanded the same way in the line and in the caret offset so they line up.
            prefix = raw[: max(span.col - 1, 0)].replace("\t", _TAB)
            shown = raw.replace("\t", _TAB)
            if span.end_line == span.line and span.end_col > span.col:
                width = len(raw[span.col - 1 : span.end_col - 1].replace("\t", _TAB))
            else:
                width = 1
            width = max(1, min(width, max(1, len(shown) - len(prefix))))
            gutter = str(span.line)
            lines.append(f"{gutter:>5} | {shown}")
            lines.append(f"{'':>5} | {' ' * len(prefix)}{'^' * width}")
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


class LangError(SteerError):
    """Syntax or semantic errors in a steerlang program (one or many, all reported together).

    `diagnostics` holds every problem found; `sources` maps file names to their text so that
    `render()` can quote the offending lines.
    """

    def __init__(self, diagnostics: Iterable[Diagnostic], sources: Mapping[str, str] | None = None) -> None:
        self.diagnostics: list[Diagnostic] = _sorted(list(diagnostics))
        self.sources: dict[str, str] = dict(sources or {})
        first = self.diagnostics[0].message if self.diagnostics else "invalid program"
        super().__init__(first)

    def render(self) -> str:
        """All diagnostics, each with its source line and caret, separated by blank lines."""
        parts = [d.render(self.sources.get(d.span.file)) for d in self.diagnostics]
        count = len(self.diagnostics)
        if count > 1:
            parts.append(f"{count} errors")
        return "\n\n".join(parts)

    def __str__(self) -> str:
        return self.render()


def _sorted(diags: list[Diagnostic]) -> list[Diagnostic]:
    # Files in order of first appearance (the main program first), positions in order within each.
    order: dict[str, int] = {}
    for d in diags:
        order.setdefault(d.span.file, len(order))
    return sorted(diags, key=lambda d: (order[d.span.file], d.span.line, d.span.col))


def did_you_mean(name: str, known: Iterable[str]) -> str | None:
    """A `did you mean "x"?` hint naming the closest known names, or None when nothing is close."""
    close = difflib.get_close_matches(name, sorted(set(known)), n=3, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(f'"{c}"' for c in close) + "?"
