from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from steerlang.cli import app
from steerlang.dictionary.browse import (
    concept_card,
    find_concept,
    heatmap_overlay,
    list_features,
    render_html,
)
from steerlang.dictionary.concepts import load_concept_set
from steerlang.errors import DictionaryError, InputError
from steerlang.lang import compile_program
from steerlang.world.scenes import blank_image


def test_concept_set_round_trip_and_table_protocol(tiny_concepts) -> None:
    cs = tiny_concepts
    assert cs.names() == ["and@L1/text0", "cat", "dog", "kitty"]
    assert cs.lookup("kitty").name == "cat" and cs.lookup_id("joint", 1).name == "dog"
    assert cs.layers() == [0, 1]
    assert cs.sae(0, "image").cfg.d_sae == 32
    assert cs.background(1).shape == (81, 128)
    prog = compile_program('let k = concept "kitty"\nsteer image { off k }', cs)
    assert prog.steps[0].edits[0].target.terms[0].ref.canonical == "cat"


def test_features_search_and_did_you_mean(tiny_concepts) -> None:
    assert [r["name"] for r in list_features(tiny_concepts, "ca")] == ["cat"]
    assert list_features(tiny_concepts, "joint#1")[0]["name"] == "dog"
    with pytest.raises(InputError, match='did you mean'):
        find_concept(tiny_concepts, "kat")
    card = concept_card(find_concept(tiny_concepts, "cat"))
    assert card["groups"][0]["latents"] == [1, 2]


def test_card_renders(tiny_concepts) -> None:
    page = render_html(tiny_concepts, {"joint#0": heatmap_overlay(blank_image(), np.eye(9))})
    assert page.startswith("<!doctype html>") and "cat" in page and "data:image/png;base64" in page
    assert page.count("<section") == 3


def test_cli_features_json(tiny_concepts) -> None:
    res = CliRunner().invoke(app, ["features", "--dictionary", str(tiny_concepts.root), "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert {r["id"] for r in rows} == {"joint#0", "joint#1", "text#0"}
    res = CliRunner().invoke(app, ["features", "--dictionary", str(tiny_concepts.root / "nope")])
    assert res.exit_code == 1 and "missing saes.json" in res.stderr


def test_malformed_concept_set_is_rejected(tmp_path, tiny_concepts) -> None:
    (tiny_concepts.root / "concepts.json").write_text("{not json")
    with pytest.raises(DictionaryError, match="malformed"):
        load_concept_set(tiny_concepts.root)
