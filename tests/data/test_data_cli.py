"""`steer data check` and `steer data toy` through typer's CliRunner."""

from __future__ import annotations

import json

import click
import typer
from data_support import png, write_jsonl
from typer.testing import CliRunner

from steerlang.cli import app

runner = CliRunner()


def _corpus(tmp_path, bad: int = 0):
    png(tmp_path / "c" / "img/a.png", 0)
    rows = [{"file_name": "img/a.png", "text": "a cat ."}] + [{"file_name": f"gone{i}.png", "text": "t"} for i in range(bad)]
    write_jsonl(tmp_path / "c" / "metadata.jsonl", rows)
    return tmp_path / "c"


def test_check_prints_counts_and_bad_rows(tmp_path) -> None:
    root = _corpus(tmp_path, bad=2)
    res = runner.invoke(app, ["data", "check", str(root)])
    assert res.exit_code == 0, res.output
    assert f"{root / 'metadata.jsonl'}: 1 samples, 2 bad rows" in res.stdout
    assert "missing_image: 2" in res.stdout and "[gone1.png]" in res.stdout


def test_check_json(tmp_path) -> None:
    res = runner.invoke(app, ["data", "check", str(_corpus(tmp_path, bad=1)), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["samples"] == 1 and rep["bad"] == {"missing_image": 1} and rep["complete"]
    assert rep["examples"]["missing_image"][0]["line"] == 2


def test_check_strict_reports_all_then_exits_1(tmp_path) -> None:
    res = runner.invoke(app, ["data", "check", str(_corpus(tmp_path, bad=2)), "--strict"])
    assert res.exit_code == 1
    assert "missing_image: 2" in res.stdout
    assert "error: --strict: 2 bad rows in" in res.stderr and ":2: missing image [gone0.png]" in res.stderr
    assert runner.invoke(app, ["data", "check", str(_corpus(tmp_path / "ok")), "--strict"]).exit_code == 0


def test_check_with_no_usable_sample_exits_1(tmp_path) -> None:
    write_jsonl(tmp_path / "metadata.jsonl", [{"file_name": "gone.png", "text": "t"}])
    res = runner.invoke(app, ["data", "check", str(tmp_path)])
    assert res.exit_code == 1 and "no usable sample (1 bad rows)" in res.stderr


def test_bad_input_is_one_line_and_exit_1(tmp_path) -> None:
    png(tmp_path / "noindex" / "a.png", 0)
    cases = [
        ([str(tmp_path / "noindex")], "no metadata.jsonl"),
        ([str(_corpus(tmp_path)), "--caption-column", "caption"], "columns: file_name, text"),
        ([str(tmp_path / "missing")], "does not exist"),
    ]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metadata.jsonl").write_text("")
    cases.append(([str(tmp_path / "empty")], "empty"))
    for args, needle in cases:
        res = runner.invoke(app, ["data", "check", *args])
        assert res.exit_code == 1, (args, res.output)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], (args, res.stderr)


def test_toy_writes_a_corpus_that_checks_clean(tmp_path) -> None:
    out = tmp_path / "toy"
    res = runner.invoke(app, ["data", "toy", "--seed", "4", "--count", "6", "--out", str(out), "--mismatch-rate", "0.5"])
    assert res.exit_code == 0, res.output
    assert "wrote 6 samples" in res.stderr
    res = runner.invoke(app, ["data", "check", str(out), "--json", "--strict"])
    assert res.exit_code == 0 and json.loads(res.stdout)["samples"] == 6
    res = runner.invoke(app, ["data", "toy", "--seed", "4", "--count", "2", "--out", str(out), "--mismatch-rate", "2"])
    assert res.exit_code == 1 and "--mismatch-rate" in res.stderr


def test_every_option_has_a_description() -> None:
    commands = typer.main.get_command(app).commands["data"].commands  # type: ignore[attr-defined]
    assert set(commands) == {"check", "toy"}
    missing = [f"steer data {name} {p.opts[0] if isinstance(p, click.Option) else p.name}"
               for name, cmd in commands.items() for p in cmd.params if not (getattr(p, "help", None) or "").strip()]
    assert missing == []
