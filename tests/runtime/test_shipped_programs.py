"""Every shipped program passes its own expectations: `steer test programs/` is a regression suite."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from steerlang.cli import app

ROOT = Path(__file__).resolve().parents[2]
HAVE = (ROOT / "dictionaries" / "toyworld" / "concepts.json").exists()


@pytest.mark.skipif(not HAVE, reason="the shipped concept set is not built")
def test_steer_test_programs_passes() -> None:
    res = CliRunner().invoke(app, ["test", str(ROOT / "programs")])
    assert res.exit_code == 0, res.output
    assert "0 failed" in res.stdout


PROGRAMS = sorted((ROOT / "programs").glob("*.stl"))


def test_there_are_shipped_programs() -> None:
    assert len(PROGRAMS) >= 7


@pytest.mark.parametrize("path", PROGRAMS, ids=lambda p: p.name)
def test_shipped_program_is_formatted(path: Path) -> None:
    # `steer fmt --check programs/*.stl` passes: each file is exactly its canonical formatting.
    from steerlang.lang import format_program

    text = path.read_text(encoding="utf-8")
    assert format_program(text, str(path)) == text, f"run: steer fmt --write {path.relative_to(ROOT)}"


def test_steer_fmt_check_programs() -> None:
    res = CliRunner().invoke(app, ["fmt", "--check", *map(str, PROGRAMS)])
    assert res.exit_code == 0, res.output
