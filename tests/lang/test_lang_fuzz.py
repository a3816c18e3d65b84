"""Fuzzing: random text, token soup and mutated valid programs never raise anything but LangError.

The default run is small (keeps the suite fast); `STEER_FUZZ_EXAMPLES=10000 pytest tests/lang/test_lang_fuzz.py`
runs 10,000 inputs per strategy.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lang_support import FMT_INPUTS, GOLDEN, VALID, golden_table

from steerlang.lang import LangError, compile_program, format_program, ir

EXAMPLES = int(os.environ.get("STEER_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SEEDS = [p.read_text(encoding="utf-8") for p in VALID + FMT_INPUTS]
VOCAB = [
    "model", "dictionary", "import", "ask", "image", "generate", "tokens", "let", "concept", "chain", "force",
    "steer", "region", "where", "prompt", "output", "all", "at", "layer", "layers", "when", "in", "and", "or",
    "not", "trace", "expect", "has", "lacks", "off", "on", "set", "scale", "by", "clamp", "to", "add", "replace",
    "with", "=", "|", "+", "-", "*", "->", ":", ",", "..", "(", ")", "[", "]", "{", "}", ">", "<", "#", "\n",
    '"cat"', '"dog"', '"kat"', '"lib/animals.stl"', '"valid/header.stl"', '"x', "cat", "dog", "kitty", "x",
    "image#3", "text#7", "joint#999", "0", "1", "0.5", "-2", "1e999", "24", "3..1", "0..2", "\t", "\\", "é", "\x00",
]
# Imports only reach the golden files (never the rest of the disk).
_FILES = {p.relative_to(GOLDEN).as_posix(): p for p in GOLDEN.rglob("*.stl")}


def _loader(name: str) -> str:
    if name not in _FILES:
        raise FileNotFoundError(2, "No such file or directory", name)
    return _FILES[name].read_text(encoding="utf-8")


def _outcome(text: str, table: object) -> ir.Program | LangError:
    try:
        return compile_program(text, table, file="valid/fuzz.stl", loader=_loader)  # type: ignore[arg-type]
    except LangError as exc:
        _assert_clean(exc)
        return exc


def _assert_clean(exc: LangError) -> None:
    rendered = exc.render()
    assert exc.diagnostics and "internal error" not in rendered, rendered


def _exercise(text: str, with_table: bool) -> None:
    table = golden_table() if with_table else None
    result = _outcome(text, table)
    if isinstance(result, ir.Program):
        assert ir.Program.model_validate_json(result.model_dump_json()) == result
    try:
        formatted = format_program(text, "valid/fuzz.stl")
    except LangError as exc:
        _assert_clean(exc)
        return
    assert format_program(formatted) == formatted
    # Formatting never changes what a program means.
    again = _outcome(formatted, table)
    assert isinstance(again, ir.Program) == isinstance(result, ir.Program)
    if isinstance(result, ir.Program):
        assert again == result


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        n = len(text)
        i = draw(st.integers(0, n))
        j = draw(st.integers(i, min(n, i + 30)))
        kind = draw(st.sampled_from(["delete", "duplicate", "insert", "replace", "swap_lines"]))
        if kind == "delete":
            text = text[:i] + text[j:]
        elif kind == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        elif kind == "insert":
            text = text[:i] + draw(st.sampled_from(VOCAB)) + " " + text[i:]
        elif kind == "replace":
            text = text[:i] + draw(st.text(max_size=3)) + text[j:]
        else:
            lines = text.split("\n")
            a, b = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
    return text


_soup = st.lists(st.sampled_from(VOCAB), max_size=40).flatmap(
    lambda toks: st.sampled_from([" ", "\n", ""]).map(lambda sep: sep.join(toks))
)


@FUZZ
@given(text=st.text(max_size=300), with_table=st.booleans())
def test_random_text(text: str, with_table: bool) -> None:
    _exercise(text, with_table)


@FUZZ
@given(text=_soup, with_table=st.booleans())
def test_token_soup(text: str, with_table: bool) -> None:
    _exercise(text, with_table)


@FUZZ
@given(text=_mutated(), with_table=st.booleans())
def test_mutated_valid_programs(text: str, with_table: bool) -> None:
    _exercise(text, with_table)
