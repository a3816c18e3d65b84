"""`steer check`, `steer compile`, `steer fmt` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lang_support import GOLDEN
from typer.testing import CliRunner

from steerlang.cli import app
from steerlang.lang import ir

runner = CliRunner()
GOOD = 'let cat = concept "cat"\nsteer image where cat > 0.3 {\n    off cat\n}\n'


@pytest.fixture()
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.stl"
    path.write_text(GOOD)
    return path


@pytest.fixture()
def concepts(tmp_path: Path) -> Path:
    path = tmp_path / "concepts.json"
    path.write_text(json.dumps({
        "model": "toyworld", "dictionary": "toyworld", "layers": [0, 1],
        "concepts": [{"name": "cat", "id": 3, "space": "joint", "aliases": ["kitty"]}],
    }))
    return path


def test_check_ok_and_errors(good: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", str(good)])
    assert result.exit_code == 0, result.output
    assert "good.stl: ok" in result.stdout

    bad = tmp_path / "bad.stl"
    bad.write_text('let cat = concept "cat"\nsteer all at layers 2..1 { clamp cat to [1, 0] }\n')
    result = runner.invoke(app, ["check", str(good), str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:2:11: error: empty layer range 2..1" in result.stderr
    assert "clamp bounds are out of order" in result.stderr
    assert "2 errors" in result.stderr
    assert "good.stl: ok" in result.stdout


def test_check_with_a_json_concept_list(good: Path, concepts: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["check", str(good), "--dictionary", str(concepts)]).exit_code == 0
    typo = tmp_path / "typo.stl"
    typo.write_text('let c = concept "kity"\n')
    result = runner.invoke(app, ["check", str(typo), "--dictionary", str(concepts)])
    assert result.exit_code == 1
    assert 'hint: did you mean "kitty"?' in result.stderr


def test_check_bad_dictionary_is_a_one_line_error(good: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = runner.invoke(app, ["check", str(good), "--dictionary", str(broken)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "not valid JSON" in result.stderr


def test_check_missing_program(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", str(tmp_path / "nope.stl")])
    assert result.exit_code == 1
    assert "cannot read program" in result.stderr


def test_compile_json_is_the_ir(good: Path, concepts: Path) -> None:
    result = runner.invoke(app, ["compile", str(good), "--json", "--dictionary", str(concepts), "--image", "x.png"])
    assert result.exit_code == 0, result.output
    prog = ir.Program.model_validate_json(result.stdout)
    assert prog.header.image == "x.png"
    assert prog.steps[0].scope.where.concept.terms[0].ref.key == "joint#3"  # type: ignore[union-attr]

    summary = runner.invoke(app, ["compile", str(good)])
    assert summary.exit_code == 0 and "1 steps" in summary.stdout


def test_compile_error_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.stl"
    bad.write_text("steer image { off }\n")
    result = runner.invoke(app, ["compile", str(bad), "--json"])
    assert result.exit_code == 1
    assert "bad.stl:1:19: error: unexpected" in result.stderr
    assert result.stdout == ""


def test_fmt_prints_checks_and_writes(tmp_path: Path) -> None:
    messy = tmp_path / "messy.stl"
    messy.write_text('let cat=concept "cat"  # c\nsteer image{off cat}\n')
    expected = 'let cat = concept "cat"  # c\nsteer image {\n    off cat\n}\n'

    result = runner.invoke(app, ["fmt", str(messy)])
    assert result.exit_code == 0 and result.stdout == expected

    assert runner.invoke(app, ["fmt", "--check", str(messy)]).exit_code == 1
    assert runner.invoke(app, ["fmt", "--write", str(messy)]).exit_code == 0
    assert messy.read_text() == expected
    assert runner.invoke(app, ["fmt", "--check", str(messy)]).exit_code == 0
    assert [p.name for p in tmp_path.iterdir()] == ["messy.stl"]  # no temp file left behind


def test_fmt_syntax_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.stl"
    bad.write_text("steer {\n")
    result = runner.invoke(app, ["fmt", str(bad)])
    assert result.exit_code == 1
    assert "bad.stl:1:7: error:" in result.stderr


def test_check_every_valid_golden() -> None:
    files = [str(p) for p in sorted((GOLDEN / "valid").glob("*.stl")) if "no-table" not in p.read_text()]
    assert runner.invoke(app, ["check", *files]).exit_code == 0
