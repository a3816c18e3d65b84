"""The one-line program summary (`steer run`'s first line), empty programs, the header's end."""

from __future__ import annotations

import pytest

from steerlang.lang import (
    FakeConceptTable,
    LangError,
    compile_program,
    describe_program,
    header_end_line,
    require_content,
)

HEAD = 'model "toyworld"\ndictionary "toyworld"\nlet cat = concept "cat"\nlet dog = concept "dog"\nlet sun = concept "sun"\n'


def _describe(body: str) -> str:
    table = FakeConceptTable(layers_of={"cat": range(5), "dog": range(5), "sun": (0, 1)}, layers=range(5))
    return describe_program(compile_program(HEAD + body, table))


@pytest.mark.parametrize(("body", "summary"), [
    ("steer image where cat > 0.15 { off cat }", "off cat in image where cat > 0.15 at layers 0..4"),
    ("steer image region [0:0.34, 0.66:1] { off cat }", "off cat in image region [0:0.34, 0.66:1] at layers 0..4"),
    ("steer image where cat > 0.15 { replace cat with dog }", "replace cat with dog in image where cat > 0.15 at layers 0..4"),
    ("steer all at layers 1, 3 { scale dog by 2\nclamp cat to [0, 0.5] }",
     "scale dog by 2, clamp cat to [0, 0.5] everywhere at layers 1, 3"),
    ("steer output tokens 0..3 at layer 2 { set cat = 0 }", "set cat = 0 in output tokens 0..3 at layer 2"),
    ("steer prompt { on dog\noff sun }", "on dog at layers 0..4, off sun at layers 0, 1 in prompt"),
    ("when cat > 0.5 in image and not sun > 0.5 in image {\n steer image where cat > 0.15 { replace cat with dog }\n}",
     "when cat > 0.5 in image and not sun > 0.5 in image: replace cat with dog in image where cat > 0.15 at layers 0..4"),
    ("chain see: cat at layer 0 -> cat at layer 2\nexpect output has \"cat\"",
     "chain see: cat at layer 0 -> cat at layer 2; no edits (1 expectation)"),
    ("trace cat, dog\nexpect cat > 0.5 in image\nexpect output has \"cat\"", "no edits (trace cat, dog; 2 expectations)"),
])
def test_describe_program(body: str, summary: str) -> None:
    assert _describe(body) == summary


def test_describe_without_a_table_says_every_layer() -> None:
    prog = compile_program('let cat = concept "cat"\nsteer image { off cat }')
    assert describe_program(prog) == "off cat in image at every layer"


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty program: it has no statements"),
    ("# only a comment\n\n   # and another\n", "empty program: it has no statements"),
    ('model "toyworld"\nimage "x.png"\ngenerate 3 tokens\n', "empty program: it has only header lines"),
])
def test_empty_programs_are_errors_naming_the_file(text: str, message: str) -> None:
    prog = compile_program(text, FakeConceptTable(), file="prog.stl")
    for run in (False, True):
        with pytest.raises(LangError) as info:
            require_content(prog, run=run)
        assert info.value.render().startswith(f"prog.stl:1:1: error: {message}")
        assert "hint: " in info.value.render()


def test_a_library_checks_but_does_not_run() -> None:
    prog = compile_program('let cat = concept "cat"\n', FakeConceptTable(), file="lib.stl")
    require_content(prog)
    with pytest.raises(LangError, match="nothing to run"):
        require_content(prog, run=True)
    for body in ("steer image { off cat }", "trace cat", 'expect output lacks "cat"', "chain c: cat -> cat"):
        require_content(compile_program(f'let cat = concept "cat"\n{body}\n', FakeConceptTable()), run=True)


@pytest.mark.parametrize(("text", "line"), [
    ("", 1),
    ("steer image { off cat }", 1),
    ('# a comment\nmodel "toyworld"\ndictionary "toyworld"\nlet cat = concept "cat"\n', 4),
    ('model "toyworld"\nask "what?"\ngenerate 3 tokens\n\nsteer all { off cat }', 4),
    ("steer {", 1),  # a syntax error: line 1
])
def test_header_end_line(text: str, line: int) -> None:
    assert header_end_line(text) == line
