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


# ---- honest exit codes, the summary line, the first line, progress, errors that name the fix ----


def test_run_exit_code_and_summary(tmp_path: Path, opts: list[str], images: list[Path]) -> None:
    ok = write(tmp_path, "ok.stl", 'steer image { off cat }\ngenerate 3 tokens\nexpect output lacks "zebra"\n', image=images[0])
    res = invoke("run", ok, *opts)
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[-1] == "1 passed, 0 failed"
    bad = write(tmp_path, "bad.stl", 'steer image { off cat }\ngenerate 3 tokens\nexpect output has "zebra"\n', image=images[0])
    res = invoke("run", bad, "--image", images[0], "--image", images[1], *opts)
    assert res.exit_code == 1
    assert "FAIL: expect output has \"zebra\"" in res.stdout
    assert res.stdout.splitlines()[-1] == "0 passed, 2 failed"
    # --jsonl: stdout stays JSON, the summary goes to stderr, the exit code still tells.
    res = invoke("run", bad, "--jsonl", *opts)
    assert res.exit_code == 1
    assert [json.loads(x)["expectations"][0]["passed"] for x in res.stdout.splitlines()] == [False]
    assert "0 passed, 1 failed" in res.stderr


def test_run_without_expectations_says_so(tmp_path: Path, opts: list[str], images: list[Path]) -> None:
    prog = write(tmp_path, "p.stl", "steer image { off cat }\ngenerate 3 tokens\n", image=images[0])
    res = invoke("run", prog, *opts)
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[-1] == "0 passed, 0 failed (1 run, no expectations)"
    res = invoke("run", prog, "--image", images[0], "--image", images[1], *opts)
    assert res.stdout.splitlines()[-1] == "0 passed, 0 failed (2 runs, no expectations)"


def test_run_first_line_names_the_program_and_its_edit(tmp_path: Path, opts: list[str], images: list[Path]) -> None:
    prog = write(tmp_path, "p.stl", "steer image where cat > 0.3 { off cat }\ngenerate 3 tokens\n", image=images[0])
    res = invoke("run", prog, "--compare", *opts)
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0] == f"{prog}: off cat in image where cat > 0.3 at layers 0..2"
    assert "\x1b[" not in res.stdout  # piped: plain text, no colour codes


def test_run_colours_pass_and_fail_on_a_terminal(tmp_path: Path, opts: list[str], images: list[Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    import steerlang.cli.run as run_module

    buf = io.StringIO()
    monkeypatch.setattr(run_module, "out_console", Console(file=buf, force_terminal=True, color_system="standard", width=200))
    prog = write(tmp_path, "p.stl", 'generate 3 tokens\nexpect output lacks "zebra"\nexpect output has "zebra"\n', image=images[0])
    res = invoke("run", prog, *opts)
    assert res.exit_code == 1
    out = buf.getvalue()
    assert "\x1b[32mpass\x1b[0m" in out and "\x1b[1;31mFAIL\x1b[0m" in out


@pytest.mark.parametrize(("body", "message"), [
    ("", "empty program: it has no statements"),
    ("# nothing here\n", "empty program: it has no statements"),
    ('model "tiny"\nask "what?"\n', "empty program: it has only header lines"),
    ('let cat = concept "cat"\n', "nothing to run: the program only defines names"),
])
def test_run_empty_program_is_an_error(tmp_path: Path, opts: list[str], images: list[Path], body: str, message: str) -> None:
    prog = tmp_path / "p.stl"
    prog.write_text(body)
    res = invoke("run", prog, "--image", images[0], *opts)
    assert res.exit_code == 1
    assert res.stderr.startswith(f"{prog}:1:1: error: {message}")
    assert "passed" not in res.stdout


def test_run_image_folder_and_no_image_say_what_to_give(tmp_path: Path, opts: list[str], images: list[Path]) -> None:
    prog = write(tmp_path, "p.stl", "steer image { off cat }\n")
    res = invoke("run", prog, "--image", images[0].parent, *opts)
    assert res.exit_code == 1
    assert f"image {images[0].parent} is a folder holding 3 images, not an image file" in res.stderr
    assert f"--image {images[0]}" in res.stderr and "not found" not in res.stderr
    res = invoke("run", prog, *opts)  # HEAD: model, dictionary, two lets; no image
    assert res.exit_code == 1
    assert f'{prog}:3:1: no image: write `image "PATH"`' in res.stderr and "--image PATH" in res.stderr


def test_run_progress_on_stderr_never_in_jsonl(tmp_path: Path, opts: list[str], images: list[Path]) -> None:
    from steerlang.cli.run import FEW_IMAGES

    many = [images[i % len(images)] for i in range(FEW_IMAGES + 2)]
    prog = write(tmp_path, "p.stl", "steer image { off cat }\ngenerate 2 tokens\n")
    args = [a for img in many for a in ("--image", img)]
    res = invoke("run", prog, *args, "--jsonl", *opts)
    assert res.exit_code == 0, res.output
    assert len([json.loads(x) for x in res.stdout.splitlines()]) == len(many)  # every stdout line is JSON
    assert f"p.stl: {len(many)}/{len(many)} images" in res.stderr
    res = invoke("run", prog, *args, "--jsonl", "--no-progress", *opts)
    assert "images" not in res.stderr
    res = invoke("run", prog, "--image", images[0], *opts)  # a few images, piped: no progress
    assert "images" not in res.stderr


def test_steer_test_counts_images_and_fails_empty_programs(tmp_path: Path, opts: list[str], images: list[Path]) -> None:
    progs = tmp_path / "progs"
    progs.mkdir()
    write(progs, "a_ok.stl", 'generate 3 tokens\nexpect output lacks "zebra"\n', image=images[0])
    write(progs, "c_none.stl", "steer image { off cat }\ngenerate 3 tokens\n", image=images[0])
    (progs / "d_empty.stl").write_text("# nothing yet\n")
    res = invoke("test", progs, *opts)
    assert res.exit_code == 1
    assert f"FAIL {progs / 'd_empty.stl'}: empty program" in res.stdout
    assert f"ran {progs / 'c_none.stl'} on 1 image (no expectations)" in res.stdout
    assert res.stdout.splitlines()[-1] == "1 passed, 1 failed (1 run without expectations)"
    res = invoke("test", progs / "a_ok.stl", "--image", images[0], "--image", images[1], *opts)
    assert res.exit_code == 0 and res.stdout.splitlines()[-1] == "2 passed, 0 failed"


def test_check_agrees_with_run(tmp_path: Path, model_dir: Path, concept_dir: Path, images: list[Path],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    # No --dictionary anywhere: both resolve against the program's `dictionary "tinydict"` header
    # (a folder of that name in the working directory), which has layers 0, 1, 2 only.
    monkeypatch.chdir(concept_dir.parent)
    prog = write(tmp_path, "p.stl", 'let k = concept "kitt"\nsteer image at layer 7 { off k }\n', image=images[0])
    for res in (invoke("check", prog), invoke("run", prog, "--model", model_dir)):
        assert res.exit_code == 1
        assert f'{prog}:6:9: error: unknown concept "kitt"' in res.stderr and 'did you mean "kitty"?' in res.stderr
        assert "no dictionary at layer 7" in res.stderr and "layers with a dictionary: 0, 1, 2" in res.stderr
    good = write(tmp_path, "good.stl", "steer image { off cat }\n", image=images[0])
    assert invoke("check", good).exit_code == 0


def test_run_batch_size_gives_the_same_outputs(tmp_path: Path, opts: list[str], images: list[Path]) -> None:
    """Steering images one at a time or together in one generate (left padding, per-sample masks and
    rules) gives the same outputs."""
    prog = write(tmp_path, "b.stl", "steer image where cat > 0.1 { off cat }\nwhen dog > 0.2 in image { steer output { add cat * 3 } }\n"
                                    "generate 6 tokens\n")
    pics = [a for p in images for a in ("--image", p)]
    outs = {}
    for b in ("1", str(len(images))):
        res = invoke("run", prog, *pics, "--jsonl", "--batch-size", b, *opts)
        assert res.exit_code == 0, res.output
        outs[b] = [json.loads(x)["output"] for x in res.stdout.splitlines()]
    assert len(outs["1"]) == len(images) >= 2 and outs["1"] == outs[str(len(images))]
