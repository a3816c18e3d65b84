"""Long `steer dict` commands show progress on stderr (rich), results on stdout."""

from __future__ import annotations

import io
import time

from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from steerlang.cli import app
from steerlang.cli import dictionary as dict_cli
from steerlang.dictionary import api, browse
from steerlang.world import model as world_model

runner = CliRunner()


def _terminal(monkeypatch) -> io.StringIO:
    buf = io.StringIO()
    monkeypatch.setattr(dict_cli, "err_console", Console(file=buf, force_terminal=True, width=120))
    return buf


def test_eval_shows_what_it_is_doing(monkeypatch) -> None:
    buf = _terminal(monkeypatch)
    seen = []

    def evaluate(path, *, on_phase, **_kw):  # noqa: ANN001
        on_phase("spliced loss (300 scenes)")
        time.sleep(0.3)  # the spinner redraws a few times a second
        seen.append(buf.getvalue())
        return {"layer": 0, "modality": "image", "reconstruction": {"n_tokens": 5, "mse": 0.1, "fvu": 0.2, "l0": 4.0,
                "dead_fraction": 0.0, "dense_fraction": 0.0}, "spliced": {}}

    monkeypatch.setattr(api, "evaluate_dictionary", evaluate)
    res = runner.invoke(app, ["dict", "eval", "some/dictionary"])
    assert res.exit_code == 0, res.output
    assert "evaluating some/dictionary: spliced loss (300 scenes)" in seen[0] and "FVU 0.2000" in res.stdout


def test_card_draws_a_bar_over_the_heatmaps(tmp_path, monkeypatch) -> None:
    buf = _terminal(monkeypatch)
    monkeypatch.setattr(world_model, "load_model", lambda *_a, **_k: None)
    monkeypatch.setattr(browse, "top_patch_grid", lambda *_a, **_k: Image.new("RGB", (2, 2)))
    monkeypatch.setattr(browse, "render_html", lambda cs, pics: f"<html>{len(pics)}</html>")
    res = runner.invoke(app, ["dict", "card", "toyworld", "--html", str(tmp_path / "c.html")])
    assert res.exit_code == 0, res.output
    n = int((tmp_path / "c.html").read_text()[6:-7])
    assert n > 0 and "heatmaps" in buf.getvalue() and f"{n}/{n}" in buf.getvalue()


def test_build_lines_are_readable(tmp_path, monkeypatch) -> None:
    from test_build import Fakes

    Fakes(monkeypatch)
    res = runner.invoke(app, ["dict", "build", "--out", str(tmp_path / "set"), "--count", "7", "--no-eval"])
    assert res.exit_code == 0, res.output
    assert "training layer0-image (1/10): 1024 latents, k 16, 1000 steps x 2048 tokens" in res.stderr
    assert "{'" not in res.stderr and "{" not in res.stdout
