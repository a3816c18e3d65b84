"""Every option and argument of `steer dict ...` and `steer world ...` says what it is for."""

from __future__ import annotations

import click
import pytest
import typer

from steerlang.cli import app


@pytest.mark.parametrize("group", ["dict", "world"])
def test_every_option_has_a_description(group: str) -> None:
    commands = typer.main.get_command(app).commands[group].commands  # type: ignore[attr-defined]
    assert commands
    missing = [f"steer {group} {name} {p.opts[0] if isinstance(p, click.Option) else p.name}"
               for name, cmd in commands.items() for p in cmd.params if not (getattr(p, "help", None) or "").strip()]
    assert missing == []
