"""`steer check`, `steer compile`, `steer fmt` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lang_support import GOLDEN, golden_table
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


def _golden_table_json(tmp_path: Path) -> Path:
    """The goldens' concept table as a JSON concept list (what `--dictionary` takes)."""
    table = golden_table()
    path = tmp_path / "golden_table.json"
    path.write_text(json.dumps({
        "model": table.model, "dictionary": table.dictionary, "layers": table.layers(),
        "concepts": [{"name": c.name, "id": c.index, "space": c.space, "layers": list(c.layers),
                      "aliases": [a for a, n in table.aliases.items() if n == c.name]} for c in table.concepts],
    }))
    return path


def test_check_every_valid_golden(tmp_path: Path) -> None:
    # Every valid golden checks against the goldens' table, except the comments-only one: `steer check`
    # calls an empty program an error (the language itself still compiles it to an empty IR).
    files = [str(p) for p in sorted((GOLDEN / "valid").glob("*.stl")) if "no-table" not in p.read_text()]
    empty = [f for f in files if f.endswith("empty.stl")]
    assert len(empty) == 1
    table = str(_golden_table_json(tmp_path))
    result = runner.invoke(app, ["check", *[f for f in files if f not in empty], "--dictionary", table])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["check", *empty, "--dictionary", table])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{empty[0]}:1:1: error: empty program")


# ---- check resolves like run; empty programs; fmt of several files; help texts -----------------

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = (ROOT / "dictionaries" / "toyworld" / "concepts.json").exists()
needs_shipped = pytest.mark.skipif(not SHIPPED, reason="the shipped concept set is not built")


@needs_shipped
@pytest.mark.parametrize("dictionary", [[], ["--dictionary", "toyworld"], ["--dictionary", str(ROOT / "dictionaries" / "toyworld")]])
def test_check_resolves_names_and_layers_like_run(tmp_path: Path, dictionary: list[str]) -> None:
    # No --dictionary: the program's own `dictionary` header (here none: toyworld), as `steer run`.
    bad = tmp_path / "bad.stl"
    bad.write_text('let c = concept "kat"\nsteer image at layer 99 { off c }\n')
    result = runner.invoke(app, ["check", str(bad), *dictionary])
    assert result.exit_code == 1, result.output
    err = result.stderr
    assert f'{bad}:1:9: error: unknown concept "kat"\n    1 | let c = concept "kat"\n      |         ^^^^^^^^^^^^^\nhint: did you mean "cat"?' in err
    assert f"{bad}:2:13: error: no dictionary at layer 99" in err and "hint: layers with a dictionary: 0, 1, 2, 3, 4" in err
    assert "ok" not in result.stdout
    assert runner.invoke(app, ["check", str(ROOT / "programs" / "remove_cat.stl"), *dictionary]).exit_code == 0


@needs_shipped
def test_check_points_at_a_dictionary_header_that_cannot_load(tmp_path: Path) -> None:
    prog = tmp_path / "p.stl"
    prog.write_text('dictionary "no_such_set"\nlet cat = concept "cat"\n')
    result = runner.invoke(app, ["check", str(prog)])
    assert result.exit_code == 1
    assert f"{prog}:1:12: error: cannot load the dictionary: no such folder: no_such_set" in result.stderr
    assert 'dictionary "no_such_set"' in result.stderr and "hint:" in result.stderr


def test_check_a_missing_dictionary_folder(good: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", str(good), "--dictionary", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: no such folder: {tmp_path / 'nope'} (give a concept-set folder")


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty program: it has no statements (the file is blank or only comments)"),
    ("# just a comment\n", "empty program: it has no statements (the file is blank or only comments)"),
    ('model "toyworld"\ndictionary "toyworld"\n', "empty program: it has only header lines"),
])
def test_check_empty_program_is_an_error(tmp_path: Path, concepts: Path, text: str, message: str) -> None:
    prog = tmp_path / "empty.stl"
    prog.write_text(text)
    result = runner.invoke(app, ["check", str(prog), "--dictionary", str(concepts)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{prog}:1:1: error: {message}")
    assert "ok" not in result.stdout


def test_check_a_library_is_ok(tmp_path: Path, concepts: Path) -> None:
    lib = tmp_path / "lib.stl"
    lib.write_text('let cat = concept "cat"\n')
    result = runner.invoke(app, ["check", str(lib), "--dictionary", str(concepts)])
    assert result.exit_code == 0 and f"{lib}: ok" in result.stdout


def test_fmt_several_files_are_separated(tmp_path: Path) -> None:
    a, b = tmp_path / "a.stl", tmp_path / "b.stl"
    a.write_text('let cat=concept "cat"\n')
    b.write_text("steer image{off cat}\n")
    result = runner.invoke(app, ["fmt", str(a), str(b)])
    assert result.exit_code == 0
    assert result.stdout == (f'# == {a} ==\nlet cat = concept "cat"\n\n# == {b} ==\nsteer image {{\n    off cat\n}}\n')
    assert "`# == PATH ==`" in " ".join(runner.invoke(app, ["fmt", "--help"]).stdout.split())
    # One file: exactly the formatted text (it can be redirected into a file).
    assert runner.invoke(app, ["fmt", str(a)]).stdout == 'let cat = concept "cat"\n'


MY_COMMANDS = ("run", "test", "repl", "check", "compile", "fmt", "features", "show")


@pytest.mark.parametrize("name", MY_COMMANDS)
def test_every_option_has_a_description(name: str) -> None:
    import typer

    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    assert command.help, name
    for param in command.params:
        assert getattr(param, "help", None), f"steer {name}: {param.name} has no description"


def test_repl_help_does_not_mention_a_program() -> None:
    text = " ".join(runner.invoke(app, ["repl", "--help"]).stdout.split())
    assert "program" not in text.lower()
    assert "--model" in text and "--dictionary" in text
