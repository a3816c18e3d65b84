"""The toy world as a dataset, and its export as an imagefolder corpus (round trip)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from steerlang.data import ImageFolderDataset, ToyWorldSource, open_dataset
from steerlang.errors import InputError
from steerlang.world.corpus import export_toy_corpus
from steerlang.world.scenes import CELL_PX, make_scene, render


def test_toy_source_is_deterministic_and_matches_the_world() -> None:
    a = [(s.row, s.name, s.text, s.image.tobytes()) for s in ToyWorldSource(5, 6)]
    b = [(s.row, s.name, s.text, s.image.tobytes()) for s in open_dataset("toyworld:5:6")]
    assert a == b and [r[1] for r in a] == [f"{i:04d}.png" for i in range(6)]
    for row, _, text, pixels in a:
        scene = make_scene(5, row)
        assert text == scene.caption and pixels == render(scene).tobytes()


def test_toy_truth_and_regions_describe_the_scene() -> None:
    samples = list(ToyWorldSource(3, 40, mismatch_rate=0.5))
    mismatched = [s for s in samples if s.truth["mismatched"]]
    assert mismatched and len(mismatched) < len(samples)
    for s in samples:
        scene = make_scene(3, s.row, mismatch_rate=0.5)
        assert s.truth["caption"] == scene.caption
        assert s.truth["objects"] == [{"kind": o.kind, "cell": o.cell} for o in scene.objects]
        assert (s.text != scene.caption) == s.truth["mismatched"]
        assert [r.label for r in s.regions] == list(scene.kinds)
        for r, o in zip(s.regions, scene.objects, strict=True):
            x0, y0, x1, y1 = r.box
            assert x1 - x0 == y1 - y0 == CELL_PX and x0 <= o.cx < x1 and y0 <= o.cy < y1


def test_toy_shards_are_disjoint_and_cover() -> None:
    src = ToyWorldSource(2, 7)
    shards = [[s.row for s in src.iter(shard=(r, 3))] for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]


def test_toy_options_are_checked() -> None:
    with pytest.raises(InputError, match="--count"):
        ToyWorldSource(1, 0)
    with pytest.raises(InputError, match="--with: unknown kind 'kat'"):
        ToyWorldSource(1, 3, with_kinds=["kat"])
    with pytest.raises(InputError, match="toyworld:SEED:COUNT"):
        open_dataset("toyworld:1")


def test_export_then_read_back_gives_the_same_captions_and_pixels(tmp_path) -> None:
    out = tmp_path / "toy"
    assert export_toy_corpus(out, seed=9, count=12, mismatch_rate=0.3) == 12
    back = open_dataset(out)
    assert isinstance(back, ImageFolderDataset)
    src = list(ToyWorldSource(9, 12, mismatch_rate=0.3))
    got = list(back)
    assert back.report.n_bad == 0
    assert [(s.name, s.text) for s in got] == [(s.name, s.text) for s in src]
    for g, s in zip(got, src, strict=True):
        assert np.array_equal(np.asarray(g.image), np.asarray(s.image))
    assert [json.loads(x) for x in (out / "metadata.jsonl").read_text().splitlines()][0].keys() == {"file_name", "text"}
    truth = [json.loads(x) for x in (out / "truth.jsonl").read_text().splitlines()]
    assert [t["file_name"] for t in truth] == [s.name for s in src]
    assert [t["caption"] for t in truth] == [s.truth["caption"] for s in src]
    assert any(t["mismatched"] for t in truth)


def test_export_replaces_an_earlier_corpus_but_not_other_folders(tmp_path) -> None:
    out = tmp_path / "toy"
    export_toy_corpus(out, seed=1, count=5)
    export_toy_corpus(out, seed=1, count=2)
    assert sorted(p.name for p in out.iterdir()) == ["0000.png", "0001.png", "metadata.jsonl", "truth.jsonl"]
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="--out: .* not empty and holds no corpus"):
        export_toy_corpus(other, seed=1, count=2)
    assert (other / "notes.txt").read_text() == "keep me"
