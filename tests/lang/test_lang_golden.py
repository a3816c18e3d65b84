"""Golden files: valid programs -> IR JSON, invalid programs -> rendered errors, formatter pairs."""

from __future__ import annotations

from pathlib import Path

import pytest
from lang_support import FMT_INPUTS, INVALID, VALID, assert_golden, compile_error, compile_golden, golden_name

from steerlang.lang import LangError, format_program, ir


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_program_compiles_to_golden_ir(path: Path) -> None:
    program = compile_golden(path)
    text = program.model_dump_json(indent=2) + "\n"
    assert_golden(text, path.with_suffix(".ir.json"))
    # The IR round-trips through JSON unchanged.
    assert ir.Program.model_validate_json(text) == program


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_program_renders_golden_error(path: Path) -> None:
    rendered = compile_error(path).render() + "\n"
    assert_golden(rendered, path.with_suffix(".err"))
    assert rendered.startswith(golden_name(path)) or "lib/" in rendered.splitlines()[0]
    assert "internal error" not in rendered


def test_there_are_enough_goldens() -> None:
    assert len(VALID) >= 10
    assert len(INVALID) >= 20


@pytest.mark.parametrize("path", FMT_INPUTS, ids=lambda p: p.name.removesuffix(".in.stl"))
def test_formatter_golden(path: Path) -> None:
    expected = path.with_name(path.name.replace(".in.stl", ".out.stl"))
    out = format_program(path.read_text(encoding="utf-8"), golden_name(path))
    assert_golden(out, expected)
    # The expected file is an identity file: already canonical.
    assert format_program(expected.read_text(encoding="utf-8")) == expected.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", VALID + INVALID, ids=lambda p: p.parent.name + "/" + p.stem)
def test_formatter_is_idempotent_on_every_fixture(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    try:
        once = format_program(text, golden_name(path))
    except LangError as exc:  # syntax-error fixtures cannot be formatted; any other exception is a bug
        assert "syntax" in path.stem, f"{golden_name(path)} is not a syntax fixture but cannot be formatted:\n{exc.render()}"
        # The formatter reports the same syntax error the compiler does.
        assert exc.render() + "\n" == path.with_suffix(".err").read_text(encoding="utf-8")
        return
    assert format_program(once) == once
