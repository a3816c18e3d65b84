"""`steer world train`: a readable loss from the first step, Ctrl-C as one line, --out checked first."""

from __future__ import annotations

import io

from rich.console import Console
from typer.testing import CliRunner

from steerlang.cli import app
from steerlang.cli import world as world_cli
from steerlang.world import api as world_api
from steerlang.world.model import shipped_model_path

runner = CliRunner()


def _fake_run(on_step):  # noqa: ANN001, ANN202
    on_step(0, 2.5)
    on_step(1, 2.0)
    return {"ok": True}


def test_progress_shows_the_first_real_loss_never_nan(monkeypatch) -> None:
    for terminal in (True, False):
        buf = io.StringIO()
        monkeypatch.setattr(world_cli, "err_console", Console(file=buf, force_terminal=terminal, width=120))
        assert world_cli._train_with_progress(_fake_run, 2) == {"ok": True}
        text = buf.getvalue()
        assert "nan" not in text and ("2.5000" in text or "2.0000" in text), text
        if not terminal:  # a log file: the first step is reported, not only every 50th
            assert text.splitlines()[0].startswith("step 1/2  loss 2.5000")


def test_ctrl_c_says_nothing_was_written_and_exits_130(tmp_path, monkeypatch) -> None:
    def interrupted(out, *, on_step, **_kw):  # noqa: ANN001
        on_step(0, 3.0)
        on_step(1, 2.9)
        raise KeyboardInterrupt

    monkeypatch.setattr(world_api, "train_and_save", interrupted)
    out = tmp_path / "m"
    res = runner.invoke(app, ["world", "train", "--out", str(out), "--steps", "5", "--eval-count", "0"])
    assert res.exit_code == 130, res.output
    assert res.stderr.strip().splitlines()[-1] == (
        f"interrupted: stopped at step 2 of 5; nothing written to {out} (the model is saved only at the end, "
        "and toy training keeps no checkpoints); rerun the same command to start again")
    assert "Traceback" not in res.output and not out.exists()


def test_out_is_checked_before_training(tmp_path, monkeypatch) -> None:
    called = []
    monkeypatch.setattr(world_api, "train_and_save", lambda *a, **k: called.append(1))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("mine")
    for out, needle in ((tmp_path / "home", "holds no model"), (shipped_model_path(), "is the shipped toy model; add --force")):
        res = runner.invoke(app, ["world", "train", "--out", str(out), "--steps", "1"])
        assert res.exit_code == 1 and needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.output
    assert called == []
