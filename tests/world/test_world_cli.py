"""The `steer world` contracts other work relies on, through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from steerlang.cli import app

runner = CliRunner()


def test_scenes_writes_pngs_and_jsonl(tmp_path) -> None:
    out = tmp_path / "s"
    res = runner.invoke(app, ["world", "scenes", "--seed", "3", "--count", "12", "--out", str(out), "--with", "cat",
                              "--without", "dog", "--objects", "2", "--mismatch-rate", "0.5"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in (out / "scenes.jsonl").read_text().splitlines()]
    assert len(lines) == 12
    assert lines[0]["image"] == "0000.png" and (out / "0011.png").exists()
    for rec in lines:
        kinds = [o["kind"] for o in rec["objects"]]
        assert "cat" in kinds and "dog" not in kinds and len(kinds) == 2
        assert set(rec) <= {"image", "objects", "caption", "shown_caption"}
        assert all(set(o) == {"kind", "cell"} for o in rec["objects"])
    assert any("shown_caption" in r for r in lines)


def test_caption_jsonl_on_the_shipped_model(tmp_path) -> None:
    runner.invoke(app, ["world", "scenes", "--seed", "77", "--count", "5", "--out", str(tmp_path)])
    recs = [json.loads(x) for x in (tmp_path / "scenes.jsonl").read_text().splitlines()]
    images = [str(tmp_path / r["image"]) for r in recs]
    res = runner.invoke(app, ["world", "caption", *images, "--jsonl"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert [r["image"] for r in rows] == images
    assert sum(r["output"] == rec["caption"] for r, rec in zip(rows, recs, strict=True)) >= 4
    res = runner.invoke(app, ["world", "caption", images[0], "--prompt", "is there a cat ?"])
    assert res.exit_code == 0 and res.stdout.strip().split(": ")[1] in {"yes", "no"}


@pytest.mark.parametrize(
    "args, needle",
    [
        (["world", "scenes", "--seed", "1", "--count", "3", "--out", "OUT", "--with", "kat"], "--with: unknown kind 'kat'"),
        (["world", "scenes", "--seed", "1", "--count", "0", "--out", "OUT"], "--count"),
        (["world", "caption", "MISSING.png"], "does not exist"),
        (["world", "caption", "NOTIMG"], "is not a readable image"),
        (["world", "caption", "IMG", "--model", "NOMODEL"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(tmp_path, args: list[str], needle: str) -> None:
    (tmp_path / "bad.png").write_text("not an image")
    runner.invoke(app, ["world", "scenes", "--seed", "1", "--count", "1", "--out", str(tmp_path / "ok")])
    subst = {"OUT": str(tmp_path / "o"), "MISSING.png": str(tmp_path / "missing.png"), "NOTIMG": str(tmp_path / "bad.png"),
             "IMG": str(tmp_path / "ok" / "0000.png"), "NOMODEL": str(tmp_path / "no_model_here")}
    res = runner.invoke(app, [subst.get(a, a) for a in args])
    assert res.exit_code == 1, res.output
    err = res.stderr.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
