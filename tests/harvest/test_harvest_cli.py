"""`steer dict harvest --data` and `steer dict train --data`: options, summaries, one-line errors,
Ctrl-C keeping complete shards and a rerun resuming them, the harvest cache shared with train."""

from __future__ import annotations

import json

from conftest import saved_family
from harvest_support import files, manifest
from typer.testing import CliRunner

from steerlang.cli import app
from steerlang.dictionary import harvest as harvest_mod

runner = CliRunner()


def test_harvest_a_corpus_with_the_toy_model(toy_corpus, tmp_path) -> None:
    out = tmp_path / "acts"
    res = runner.invoke(app, ["dict", "harvest", "--model", "toyworld", "--data", str(toy_corpus), "--layers", "0,2",
                              "--batch-size", "4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    lines = res.stderr.strip().splitlines()
    assert lines[-5].startswith(f"wrote {out}: 7 samples (2 bad rows skipped), ") and "at layers 0, 2 (image 567," in lines[-5]
    assert lines[-4] == "  empty_caption: 1" and lines[-2] == "  missing_image: 1"  # in the order of REASONS
    assert "metadata.jsonl:6: empty caption [0001.png]" in lines[-3] and "metadata.jsonl:3: missing image [missing.png]" in lines[-1]
    assert manifest(out)["layers"] == [0, 2]


def test_options_that_do_not_go_together_are_one_line_errors(toy_corpus, tmp_path, tmp_path_factory) -> None:
    cases = [
        (["--data", str(toy_corpus), "--seed", "3"], "error: --seed: an option of the toy world's own harvest"),
        (["--prompt", "hi"], "error: --prompt: only with --data DIR"),
        (["--layers", "0,2"], "error: --layers: only with --data DIR"),
        (["--data", str(toy_corpus), "--layers", "0,x"], "error: --layers: give layer numbers separated by commas"),
        (["--data", str(toy_corpus), "--layers", "9"], "error: --layer: 9 is out of range"),
        (["--data", str(tmp_path / "none")], "error: --data: "),  # named by the flag the user gave
        (["--data", str(toy_corpus), "--model", str(saved_family(tmp_path_factory, "llava_next", chat=False))],
         "error: --prompt: "),
    ]
    for args, start in cases:
        res = runner.invoke(app, ["dict", "harvest", "--out", str(tmp_path / "x"), *args])
        assert res.exit_code == 1, (args, res.output)
        assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith(start), (args, res.stderr)
    assert not (tmp_path / "x").exists()


def test_ctrl_c_keeps_complete_shards_and_a_rerun_resumes(toy, toy_corpus, tmp_path, monkeypatch) -> None:
    real = harvest_mod._run_batch
    calls = []

    def interrupted(*a, **k):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(harvest_mod, "_run_batch", interrupted)
    out = tmp_path / "acts"
    args = ["dict", "harvest", "--data", str(toy_corpus), "--layers", "1", "--batch-size", "2", "--shard-size", "150",
            "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 130
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"interrupted: {out} not written; kept 2 complete shards (300 rows, the first 2 samples) in ")
    assert last.endswith("rerun the same command to resume from there")
    monkeypatch.setattr(harvest_mod, "_run_batch", real)
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "resuming the unfinished harvest" in res.stderr
    whole = harvest_mod.harvest_dataset(toy, toy_corpus, [1], tmp_path / "whole", batch_size=2, shard_size=150)
    assert files(out) == files(whole)


def test_train_on_a_corpus_through_the_cache(toy_corpus, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("STEERLANG_CACHE", str(tmp_path / "cache"))
    args = ["dict", "train", "--data", str(toy_corpus), "--layer", "1", "--modality", "image", "--steps", "3",
            "--batch-size", "64", "--latents", "16", "--k", "2", "--json"]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "d1")])
    assert res.exit_code == 0, res.output
    card = json.loads((tmp_path / "d1" / "card.json").read_text())
    assert card["training"]["data"] == {"dataset": str(toy_corpus), "samples": 7} and "scenes" not in card["training"]
    entries = sorted((tmp_path / "cache" / "acts").iterdir())
    assert len(entries) == 1 and entries[0].name.endswith("-L1") and "-data-" in entries[0].name
    # the same data again: read from the cache, nothing harvested
    monkeypatch.setattr(harvest_mod, "_run_batch", lambda *a, **k: (_ for _ in ()).throw(AssertionError("harvested")))
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "d2")])
    assert res.exit_code == 0, res.output
    assert sorted((tmp_path / "cache" / "acts").iterdir()) == entries
    res = runner.invoke(app, ["dict", "train", "--data", str(toy_corpus), "--count", "5", "--layer", "1", "--out", str(tmp_path / "d3")])
    assert res.exit_code == 1 and res.stderr.startswith("error: --count: an option of the toy world's own harvest")


def test_train_says_a_prompt_is_needed_before_any_work(toy_corpus, tmp_path, tmp_path_factory) -> None:
    folder = saved_family(tmp_path_factory, "llava_next", chat=False)
    res = runner.invoke(app, ["dict", "train", "--model", str(folder), "--data", str(toy_corpus), "--layer", "1",
                              "--out", str(tmp_path / "d")])
    assert res.exit_code == 1 and res.stderr.startswith(f"error: --prompt: {folder.name} has no chat template")
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "d").exists()
