"""docs/language.md: its program examples parse, its first example is the shipped programs/remove_cat.stl,
and its error example is what the checker prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from steerlang.lang import FakeConceptTable, LangError, compile_program, parse

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "language.md"
TEXT = DOC.read_text(encoding="utf-8")
BLOCKS = re.findall(r"```stl\n(.*?)```", TEXT, flags=re.S)
# The last column of every construct table row is an example in backticks.
ROWS = [
    m.group(1).replace("\\|", "|")
    for line in TEXT.splitlines()
    if line.startswith("| ") and (m := re.search(r"\| `([^`]*(?:\\\|[^`]*)*)` \|$", line))
]


def test_doc_has_examples() -> None:
    assert len(BLOCKS) >= 3 and len(ROWS) >= 29


@pytest.mark.parametrize("block", BLOCKS)
def test_program_blocks_parse(block: str) -> None:
    parse(block, "doc.stl")


@pytest.mark.parametrize("example", ROWS)
def test_table_examples_parse(example: str) -> None:
    parse(example, "doc.stl")


def test_lead_example_is_the_shipped_program() -> None:
    # The page opens with programs/remove_cat.stl, verbatim: when the program changes (a new
    # threshold, `steer fmt --write`), copy it into docs/language.md.
    shipped = (ROOT / "programs" / "remove_cat.stl").read_text(encoding="utf-8")
    assert BLOCKS[0] == shipped, "docs/language.md's first example differs from programs/remove_cat.stl"
    assert "programs/remove_cat.stl" in TEXT[: TEXT.index("```stl")]


def test_design_example_compiles() -> None:
    compile_program(BLOCKS[0], FakeConceptTable())


def test_error_example_is_current() -> None:
    program = (
        'model "toyworld"\nlet cat = concept "kat"\nlet dog = concept "dog"\n'
        "steer image where cat > 0.3 at layers 0..5 {\n    off cat\n}\n"
    )
    with pytest.raises(LangError) as info:
        compile_program(program, FakeConceptTable(), file="prog.stl")
    assert info.value.render() in TEXT
