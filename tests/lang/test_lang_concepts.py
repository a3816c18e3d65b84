"""Concept tables: the protocol, the fake table, the JSON concept list loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steerlang.errors import InputError
from steerlang.lang import (
    ConceptInfo,
    ConceptTable,
    FakeConceptTable,
    compile_program,
    load_concept_table,
    load_concept_table_json,
)


def test_fake_table_fulfils_the_protocol() -> None:
    table = FakeConceptTable(layers_of={"sun": (0, 1)})
    assert isinstance(table, ConceptTable)
    assert table.lookup("kitty") == ConceptInfo("cat", "joint", 0)
    assert table.lookup("sun") is not None and table.lookup("sun").layers == (0, 1)  # type: ignore[union-attr]
    assert table.lookup_id("image", 3) == ConceptInfo("image_3", "image", 3)
    assert table.lookup_id("image", 10_000) is None
    assert "kitty" in table.names() and "cat" in table.names()
    assert table.layers() == [0, 1, 2, 3]
    assert (table.model_name, table.dictionary_name) == ("toyworld", "toyworld")


def test_json_concept_list(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({
        "model": "m", "dictionary": "d", "layers": [2, 1],
        "concepts": [
            {"name": "cat", "id": 4, "space": "image", "aliases": ["kitty"], "layers": [1]},
            {"name": "dog", "id": 0},
        ],
    }))
    table = load_concept_table_json(path)
    assert load_concept_table(path).names() == table.names() == ["cat", "dog", "kitty"]
    assert table.lookup("kitty") == ConceptInfo("cat", "image", 4, (1,))
    assert table.lookup_id("joint", 0) == ConceptInfo("dog", "joint", 0)
    assert table.layers() == [1, 2]
    prog = compile_program('model "m"\nlet c = concept "kitty"', table)
    assert prog.bindings["c"].terms[0].ref.layers == [1]


@pytest.mark.parametrize(
    "content",
    ["{", "[]", '{"concepts": [{"id": 1}]}', '{"concepts": [{"name": "a", "id": 1, "space": "audio"}]}'],
)
def test_bad_concept_lists_are_input_errors(tmp_path: Path, content: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(content)
    with pytest.raises(InputError):
        load_concept_table_json(path)


def test_missing_dictionary_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such folder: .*nope"):
        load_concept_table(tmp_path / "nope")
    with pytest.raises(InputError, match="cannot read concept list"):
        load_concept_table(tmp_path / "nope.json")
