"""The REPL through prompt_toolkit's pipe input, and its completion function."""

from __future__ import annotations

import io
from pathlib import Path

from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from rich.console import Console

from steerlang.repl import Repl, completions


def test_completions() -> None:
    names = ["cat", "car", "dog"]
    assert completions('let c = concept "ca', names) == ["car", "cat"]
    assert completions("steer ima", names) == ["image"]
    assert completions("off pe", names, ["pet"]) == ["pet"]
    assert ":help" in completions(":h", names) and ":image" not in completions(":h", names)


def test_repl_session(session, images: list[Path], tmp_path: Path) -> None:  # noqa: ANN001
    buf = io.StringIO()
    saved = tmp_path / "saved.stl"
    script = "\n".join([
        ":help",
        f":image {images[0]}",
        'let cat = concept "kat"',  # an error: caret, and the loop goes on
        'let cat = concept "cat"',
        "generate 3 tokens",
        "steer image {",
        "  off cat",
        "}",
        ":features do",
        ":trace cat",
        ":show",
        f":save {saved}",
        ":reset",
        ":show",
        ":nonsense",
    ]) + "\n"
    with create_pipe_input() as inp:
        inp.send_text(script)
        inp.send_text("\x04")  # Ctrl-D leaves
        Repl(session, input=inp, output=DummyOutput(), console=Console(file=buf, width=200)).loop()
    out = buf.getvalue()
    assert ":features" in out and f"image: {images[0]}" in out
    assert 'unknown concept "kat"' in out and "^" in out and 'did you mean "cat"' in out
    assert out.count("steered :") >= 2 and "baseline:" in out
    assert "dog" in out and "joint#1" in out
    assert "rows x cols 9x9" in out
    assert saved.read_text() == 'let cat = concept "cat"\ngenerate 3 tokens\nsteer image {\n  off cat\n}\n'
    assert "(empty program)" in out and "unknown command :nonsense" in out


def test_ctrl_c_stops_a_generation_not_the_repl(session, images: list[Path], monkeypatch) -> None:  # noqa: ANN001
    def interrupted(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt

    buf = io.StringIO()
    repl = Repl(session, image=images[0], output=DummyOutput(), console=Console(file=buf), input=None)
    monkeypatch.setattr(repl.session, "run", interrupted)
    assert repl.handle("generate 2 tokens") is True
    assert "interrupted" in buf.getvalue() and repl.lines == ["generate 2 tokens"]
