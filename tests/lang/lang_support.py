"""Helpers shared by the language tests: the golden table, golden-file comparison, fixtures."""

from __future__ import annotations

import os
from pathlib import Path

from steerlang.lang import FakeConceptTable, LangError, StaticConceptTable, compile_program, ir

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
UPDATE = os.environ.get("STEER_UPDATE_GOLDEN") == "1"
"""`STEER_UPDATE_GOLDEN=1 pytest tests/lang` rewrites the expected files; review the diff."""

VALID = sorted((GOLDEN / "valid").glob("*.stl"))
INVALID = sorted((GOLDEN / "invalid").glob("*.stl"))
FMT_INPUTS = sorted((GOLDEN / "fmt").glob("*.in.stl"))


def golden_table() -> StaticConceptTable:
    """The toy concept table of the goldens: "sun" exists only at layers 0 and 1."""
    return FakeConceptTable(layers_of={"sun": (0, 1)})


def golden_name(path: Path) -> str:
    """The file name diagnostics show: relative to the golden folder, so outputs are stable."""
    return path.relative_to(GOLDEN).as_posix()


def golden_loader(name: str) -> str:
    """Reads imported files relative to the golden folder (diagnostic names are relative to it)."""
    return (GOLDEN / name).read_text(encoding="utf-8")


def compile_golden(path: Path) -> ir.Program:
    """Compile a golden program: with the golden table unless it says `# golden: no-table`."""
    text = path.read_text(encoding="utf-8")
    table = None if "# golden: no-table" in text else golden_table()
    return compile_program(text, table, file=golden_name(path), loader=golden_loader)


def compile_error(path: Path) -> LangError:
    """The LangError a bad golden program raises (fails the test if it compiles)."""
    try:
        compile_golden(path)
    except LangError as exc:
        return exc
    raise AssertionError(f"{golden_name(path)} compiled, but it is an invalid-program golden")


def assert_golden(actual: str, expected: Path) -> None:
    """Compare with the expected file (or write it when STEER_UPDATE_GOLDEN=1)."""
    if UPDATE:
        expected.write_text(actual, encoding="utf-8")
        return
    assert expected.exists(), f"{expected} missing: run with STEER_UPDATE_GOLDEN=1 and review it"
    assert actual == expected.read_text(encoding="utf-8"), f"output differs from {expected.name}"
