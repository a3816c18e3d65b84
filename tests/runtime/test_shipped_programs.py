"""Every shipped program passes its own expectations: `steer test programs/` is a regression suite."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from steerlang.cli import app

ROOT = Path(__file__).resolve().parents[2]
HAVE = (ROOT / "dictionaries" / "toyworld" / "concepts.json").exists()


@pytest.mark.skipif(not HAVE, reason="the shipped concept set is not built")
def test_steer_test_programs_passes() -> None:
    res = CliRunner().invoke(app, ["test", str(ROOT / "programs")])
    assert res.exit_code == 0, res.output
    assert "0 failed" in res.stdout
