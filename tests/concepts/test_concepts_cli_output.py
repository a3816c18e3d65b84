"""`steer features` / `steer show` for people: 3 decimals, unmeasured frequencies, no silent empty tables."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from steerlang.cli import app
from steerlang.dictionary.concepts import save_concept_set

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = (ROOT / "dictionaries" / "toyworld" / "concepts.json").exists()
LONG_FLOAT = re.compile(r"\d\.\d{4,}")


def invoke(*args: str):  # noqa: ANN201
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture()
def concept_dir(tiny_concepts) -> Path:
    """The tiny set with raw floats everywhere, and cat's frequency never measured (stored 0)."""
    cs = tiny_concepts
    cat, dog, word = cs.concepts
    groups = tuple(dataclasses.replace(g, scale=6.8938117027282715, precision=0.9362244897959183, recall=0.768586387434555)
                   for g in cat.groups)
    cat = dataclasses.replace(cat, groups=groups, detection=0.9557291666666667, frequency=0.0)
    word = dataclasses.replace(word, groups=tuple(dataclasses.replace(g, scale=5.52049, precision=0.97483) for g in word.groups),
                               detection=0.8123456, frequency=0.123456789)
    save_concept_set(cs.root, name=cs.name, model=cs.model, layers=cs.layer_numbers, concepts=[cat, dog, word])
    return cs.root


def test_features_rounds_and_marks_unmeasured_frequency(concept_dir: Path) -> None:
    res = invoke("features", "--dictionary", concept_dir)
    assert res.exit_code == 0, res.output
    rows = {line.split()[1]: line for line in res.stdout.splitlines() if line.startswith("│")}
    assert "0.956" in rows["cat"] and "0.000" not in rows["cat"] and " - " in rows["cat"]
    assert "0.812" in rows["and@L1/text0"] and "0.123" in rows["and@L1/text0"]
    assert "0.300" in rows["dog"]
    assert not LONG_FLOAT.search(res.stdout)
    assert "not measured" in " ".join(res.stdout.split())
    rows = [json.loads(x) for x in invoke("features", "--dictionary", concept_dir, "--json").stdout.splitlines()]
    assert {r["name"]: r["frequency"] for r in rows} == {"cat": None, "dog": 0.3, "and@L1/text0": 0.123456789}


@pytest.mark.parametrize(("query", "message"), [
    ("zebra", "no concept matches 'zebra'; `steer features` lists them all"),
    ("kat", "no concept matches 'kat'; did you mean 'cat'?"),
    ("dgo", "no concept matches 'dgo'; did you mean 'dog'?"),
])
def test_features_without_a_match_exits_1(concept_dir: Path, query: str, message: str) -> None:
    res = invoke("features", query, "--dictionary", concept_dir)
    assert res.exit_code == 1
    assert res.stderr.strip() == f"error: {message}"
    assert res.stdout == ""


def test_show_rounds_to_3_decimals(concept_dir: Path) -> None:
    # A text-only concept: the card needs no model (no picture of image patches).
    res = invoke("show", "and@L1/text0", "--dictionary", concept_dir)
    assert res.exit_code == 0, res.output
    assert "detection 0.812  frequency 0.123" in res.stdout
    assert "scale 5.520" in res.stdout and "precision 0.975" in res.stdout and "recall -" in res.stdout
    assert not LONG_FLOAT.search(res.stdout)
    card = json.loads(invoke("show", "and@L1/text0", "--dictionary", concept_dir, "--json").stdout)
    assert card["detection"] == 0.8123456  # --json keeps the stored values


@pytest.mark.skipif(not SHIPPED, reason="the shipped concept set is not built")
def test_shipped_kind_concepts_do_not_show_frequency_zero() -> None:
    res = invoke("features", "cat", "--limit", "1")
    assert res.exit_code == 0, res.output
    [row] = [line for line in res.stdout.splitlines() if line.startswith("│ cat ")]
    from steerlang.dictionary.concepts import load_concept_set

    cat = load_concept_set("toyworld").by_name("cat")
    # the caption-built set measures it: the fraction of held-out samples where the cat's group fires
    assert cat.frequency and 0.1 < cat.frequency < 0.6
    assert "0.000" not in row and f"{cat.detection:.3f}" in row and f"{cat.frequency:.3f}" in row
