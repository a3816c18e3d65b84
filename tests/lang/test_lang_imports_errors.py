"""Imports that go wrong, message by message: a path the OS refuses, a file that cannot be read or
decoded, a name used before its definition inside an imported file, the same name from two files.
Written with mutation testing (benchmarks/MUTATION.md): each assertion pins a message or a place
that a changed operator in the checker would lose."""

from __future__ import annotations

from pathlib import Path

import pytest

from steerlang.lang import FakeConceptTable, LangError, compile_program
from steerlang.lang.ast import Span


def diagnostics(text: str, files: dict[str, str] | None = None, loader=None) -> list:  # noqa: ANN001
    with pytest.raises(LangError) as info:
        compile_program(text, FakeConceptTable(), file="m.stl", loader=loader or (files or {}).__getitem__)
    return info.value.diagnostics


def test_a_path_the_os_refuses_is_reported_at_the_string() -> None:
    [d] = diagnostics('import "a\x00b.stl"')
    assert d.message == "bad import path: embedded null byte"
    assert d.span == Span(file="m.stl", line=1, col=8, end_line=1, end_col=17)


def raises(exc: BaseException):  # noqa: ANN201
    def loader(_path: str) -> str:
        raise exc

    return loader


@pytest.mark.parametrize("exc,reason", [
    (FileNotFoundError(2, "No such file or directory"), "No such file or directory"),  # an OSError: its strerror
    (OSError("no strerror"), "no strerror"),  # an OSError without one: the message
    (ValueError("not a path"), "not a path"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
     "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
])
def test_an_unreadable_import_says_why(exc: BaseException, reason: str) -> None:
    [d] = diagnostics('let x = concept "cat"\nimport "lib.stl"', loader=raises(exc))
    assert d.message == f'cannot read imported file "lib.stl": {reason}'
    assert (d.span.file, d.span.line, d.span.col) == ("m.stl", 2, 8)  # the path string


def test_an_import_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "lib.stl").write_bytes(b'# caf\xe9\nlet a = concept "cat"\n')  # latin-1, not UTF-8
    main = tmp_path / "main.stl"
    main.write_text('import "lib.stl"\n', encoding="utf-8")
    with pytest.raises(LangError) as info:
        compile_program(main, FakeConceptTable())
    [d] = info.value.diagnostics
    assert d.message.startswith(f'cannot read imported file "{tmp_path / "lib.stl"}": \'utf-8\' codec can\'t decode byte 0xe9')
    (tmp_path / "lib.stl").write_text('# café\nlet a = concept "cat"\n', encoding="utf-8")
    assert "a" in compile_program(main, FakeConceptTable()).bindings


def test_use_before_definition_inside_an_imported_file() -> None:
    [d] = diagnostics('import "x.stl"', {"x.stl": 'let a = b\nlet b = concept "cat"\n'})
    assert d.message == '"b" is used before it is defined (line 2)'
    assert d.hint == "move the definition above its first use"
    assert (d.span.file, d.span.line, d.span.col) == ("x.stl", 1, 9)


def test_a_name_from_two_files_names_both_places() -> None:
    files = {"a.stl": 'let cat = concept "cat"\n', "b.stl": '\nlet cat = concept "dog"\n'}
    [d] = diagnostics('import "a.stl"\nimport "b.stl"\n', files)
    assert d.message == '"cat" is defined again by b.stl:2'
    assert d.hint == "first defined at a.stl:1; rename one of them"
    assert (d.span.file, d.span.line) == ("m.stl", 2)
