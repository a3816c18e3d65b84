"""`steer dict build --data DIR --reuse-saes SET`: a concept set from an imagefolder corpus of the toy
world read as a user's data (images and captions only), on the shipped SAEs of layers 0 and 1; then
`steer run` with it. Measured against the renderer's truth here, in the test, never in the build."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from steerlang.cli import app
from steerlang.resources import data_path

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("captions")
    before = os.environ.get("STEERLANG_CACHE")
    os.environ["STEERLANG_CACHE"] = str(tmp / "cache")
    corpus = tmp / "corpus"
    res = runner.invoke(app, ["data", "toy", "--seed", "21", "--count", "400", "--out", str(corpus)])
    assert res.exit_code == 0, res.output
    # only what a user has: metadata.jsonl and the images (the truth file goes elsewhere)
    shutil.move(corpus / "truth.jsonl", tmp / "truth.jsonl")
    shipped = Path(data_path("dictionaries", "toyworld"))
    saes = tmp / "saes01"
    index = json.loads((shipped / "saes.json").read_text())
    index["layers"] = [0, 1]
    index["saes"] = [e for e in index["saes"] if int(e["layer"]) in (0, 1)]
    for e in index["saes"]:
        shutil.copytree(shipped / e["path"], saes / e["path"])
    (saes / "saes.json").write_text(json.dumps(index))
    out = tmp / "set"
    res = runner.invoke(app, ["dict", "build", "--model", "toyworld", "--data", str(corpus), "--reuse-saes", str(saes),
                              "--out", str(out), "--concept", "cat", "--concept", "dog", "--concept", "tree"])
    assert res.exit_code == 0, res.output
    assert "from the captions of" in res.output
    yield out
    if before is None:
        os.environ.pop("STEERLANG_CACHE", None)
    else:
        os.environ["STEERLANG_CACHE"] = before


def test_the_set_has_the_caption_words_as_concepts_at_every_layer(built: Path) -> None:
    from steerlang.dictionary.concepts import load_concept_set

    cs = load_concept_set(built)
    assert [c.name for c in cs.concepts[:3]] == ["cat", "dog", "tree"]
    cat = cs.by_name("cat")
    assert {(g.layer, g.modality) for g in cat.groups} >= {(0, "image"), (1, "image"), (0, "text")}
    report = json.loads((built / "concepts_report.json").read_text())
    assert report["built_from"] == "captions" and report["question"] == "is there a {word} ?"
    assert not (built / "build.json").exists()


def test_groups_mark_the_kinds_patches_measured_against_the_renderer(built: Path) -> None:
    from steerlang.dictionary.api import harvested
    from steerlang.dictionary.build_concepts import precision_recall
    from steerlang.dictionary.concepts import load_concept_set
    from steerlang.world.oracle_concepts import load_split
    from steerlang.world.scenes import KINDS

    cs = load_concept_set(built)
    split = load_split(harvested("toyworld", seed=11, count=60), 0, 11, images_only=True)
    sae = cs.sae(0, "image")
    for name in ("cat", "dog", "tree"):
        (g,) = [g for g in cs.by_name(name).groups if g.layer == 0 and g.modality == "image"]
        with torch.no_grad():
            fires = g.activation(sae, split.x_img) > g.threshold
        p, r = precision_recall(fires, split.img_label == KINDS.index(name))
        assert p > 0.8 and r > 0.4, (name, p, r)


def test_steer_run_removes_the_cat_with_the_caption_built_set(built: Path) -> None:
    res = runner.invoke(app, ["run", str(ROOT / "programs" / "remove_cat.stl"), "--dictionary", str(built)])
    assert res.exit_code == 0, res.output
    assert "1 passed, 0 failed" in res.output


def test_concept_samples_caps_what_the_fits_read(built: Path) -> None:
    """`--concept-samples 120` on the 400-sample corpus: the fits read 105 training and 15 held-out
    samples spread over it, the question harvest holds those 120 samples only, and the set still
    has its concepts."""
    from steerlang.dictionary.caption_concepts import split_rows, spread_rows
    from steerlang.dictionary.source import ActivationSource

    out = built.parent / "set120"
    res = runner.invoke(app, ["dict", "build", "--model", "toyworld", "--data", str(built.parent / "corpus"), "--reuse-saes",
                              str(built.parent / "saes01"), "--out", str(out), "--concept", "cat", "--concept", "dog",
                              "--concept", "tree", "--concept-samples", "120"])
    assert res.exit_code == 0, res.output
    assert "the concept fits read 120 of the 400 samples" in res.output
    report = json.loads((out / "concepts_report.json").read_text())
    assert (report["samples"], report["train_samples"], report["held_out_samples"], report["max_samples"]) == (400, 105, 15, 120)
    train, held = spread_rows(*split_rows(range(400)), 120)
    questions = list((built.parent / "cache").rglob("*-questions-*"))
    q = [p for p in questions if p.is_dir() and (p / "manifest.json").is_file()]
    scenes = {tuple(sorted({int(s) for s in ActivationSource.from_shards(p, 1, "image").load(with_labels=True)[1]["scene"]}))
              for p in q}
    assert tuple(sorted(train + held)) in scenes  # the capped build's question harvest: those rows only
    from steerlang.dictionary.concepts import load_concept_set

    assert {"cat", "dog", "tree"} <= {c.name for c in load_concept_set(out).concepts}
    res = runner.invoke(app, ["dict", "build", "--data", str(built.parent / "corpus"), "--reuse-saes", str(built.parent / "saes01"),
                              "--out", str(built.parent / "set50"), "--concept-samples", "50"])
    assert res.exit_code != 0 and "--concept-samples: give at least 100 (or 0 for every sample), got 50" in res.output


def test_reuse_saes_needs_data_and_a_set(tmp_path: Path) -> None:
    res = runner.invoke(app, ["dict", "build", "--out", str(tmp_path / "a"), "--reuse-saes", "dictionaries/toyworld"])
    assert res.exit_code != 0 and "--reuse-saes: goes with --data" in res.output
    corpus = tmp_path / "corpus"
    assert runner.invoke(app, ["data", "toy", "--seed", "21", "--count", "3", "--out", str(corpus)]).exit_code == 0
    res = runner.invoke(app, ["dict", "build", "--data", str(corpus), "--out", str(tmp_path / "b"), "--reuse-saes", str(tmp_path)])
    assert res.exit_code != 0 and "holds no saes.json" in res.output
    assert not (tmp_path / "b").exists()


def test_a_corpus_too_small_for_concepts_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = tmp_path / "corpus"
    assert runner.invoke(app, ["data", "toy", "--seed", "21", "--count", "30", "--out", str(corpus)]).exit_code == 0
    monkeypatch.setenv("STEERLANG_CACHE", str(tmp_path / "cache"))
    res = runner.invoke(app, ["dict", "build", "--data", str(corpus), "--out", str(tmp_path / "b"),
                              "--reuse-saes", str(data_path("dictionaries", "toyworld"))])
    assert res.exit_code != 0 and "needs at least 100" in res.output
    assert not (tmp_path / "b").exists()


def test_a_missing_corpus_is_named_by_its_flag(tmp_path: Path) -> None:
    res = runner.invoke(app, ["dict", "build", "--data", str(tmp_path / "nope"), "--reuse-saes", "dictionaries/toyworld",
                              "--out", str(tmp_path / "b")])
    assert res.exit_code != 0 and f"--data: {tmp_path / 'nope'} does not exist" in res.output
