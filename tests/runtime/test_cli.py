"""`steer run` and `steer test` through typer's CliRunner, on the tiny model and concept set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from steerlang.cli import app

HEAD = 'model "tiny"\ndictionary "tinydict"\nlet cat = concept "cat"\nlet dog = concept "dog"\n'


@pytest.fixture
def opts(model_dir: Path, concept_dir: Path) -> list[str]:
    return ["--model", str(model_dir), "--dictionary", str(concept_dir)]


def write(tmp_path: Path, name: str, body: str, image: Path | None = None) -> Path:
    p = tmp_path / name
    header = f'image "{image}"\n' if image is not None else ""
    p.write_text(HEAD + header + body)
    return p


def invoke(*args: str):  # noqa: ANN201
    return CliRunner().invoke(app, [str(a) for a in args])


def test_run_compare_jsonl_and_trace(tmp_path: Path, opts: list[str], images: list[Path]) -> None:
    prog = write(tmp_path, "p.stl", 'steer image { off cat }\ntrace cat\ngenerate 4 tokens\nexpect output lacks "zebra"\n')
    res = invoke("run", prog, "--image", images[0], "--image", images[1], "--jsonl", "--trace-dir", tmp_path / "tr", *opts)
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert [x["image"] for x in lines] == [str(images[0]), str(images[1])]
    assert all(set(x) == {"image", "output", "baseline", "expectations"} for x in lines)
    assert lines[0]["expectations"] == [{"text": 'output lacks "zebra"', "passed": True}]
    names = sorted(p.name for p in (tmp_path / "tr").iterdir())
    assert names == ["000-scene0.cat.png", "000-scene0.trace.json", "001-scene1.cat.png", "001-scene1.trace.json"]
    data = json.loads((tmp_path / "tr" / "000-scene0.trace.json").read_text())
    assert len(data["concepts"]["cat"]["0"]["image_grid"]) == 9
    res = invoke("run", prog, "--image", images[0], "--compare", *opts)
    assert res.exit_code == 0 and "steered :" in res.stdout and "baseline:" in res.stdout and "pass: expect" in res.stdout


def test_run_uses_the_program_image(tmp_path: Path, opts: list[str], images: list[Path]) -> None:
    prog = write(tmp_path, "p.stl", "steer prompt { on dog }\ngenerate 3 tokens\n", image=images[2])
    res = invoke("run", prog, *opts)
    assert res.exit_code == 0, res.output
    assert str(images[2]) in res.stdout


@pytest.mark.parametrize(("body", "image", "message"), [
    ("steer image { off cat }", "missing.png", "not found"),
    ("steer image { off cat }", "corrupt.png", "cannot be read"),
    ('let x = concept "zebra"\nsteer image { off x }', None, 'unknown concept "zebra"'),
    ("steer image at layer 7 { off cat }", None, "no dictionary at layer"),
])
def test_run_bad_input_exits_1(tmp_path: Path, opts: list[str], images: list[Path], body: str, image: str | None, message: str) -> None:
    (tmp_path / "corrupt.png").write_bytes(b"not a png")
    prog = write(tmp_path, "p.stl", body)
    res = invoke("run", prog, "--image", tmp_path / image if image else images[0], *opts)
    assert res.exit_code == 1
    assert message in res.stderr and "Traceback" not in res.output


def test_program_for_another_model_exits_1(tmp_path: Path, opts: list[str], images: list[Path]) -> None:
    prog = tmp_path / "p.stl"
    prog.write_text('model "llava-7b"\nlet cat = concept "cat"\nsteer image { off cat }\n')
    res = invoke("run", prog, "--image", images[0], *opts)
    assert res.exit_code == 1 and "llava-7b" in res.stderr


def test_steer_test(tmp_path: Path, opts: list[str], images: list[Path]) -> None:
    progs = tmp_path / "progs"
    progs.mkdir()
    write(progs, "a_ok.stl", 'steer image { off cat }\ngenerate 3 tokens\nexpect output lacks "zebra"\n', image=images[0])
    write(progs, "b_bad.stl", 'generate 3 tokens\nexpect output has "zebra"\n', image=images[0])
    (progs / "lib.stl").write_text('let pet = concept "cat"\n')
    res = invoke("test", progs, *opts)
    assert res.exit_code == 1
    out = res.stdout
    assert "pass " in out and "FAIL " in out and "skip " in out and out.strip().endswith("1 passed, 1 failed")
    res = invoke("test", progs / "a_ok.stl", *opts)
    assert res.exit_code == 0 and "1 passed, 0 failed" in res.stdout
