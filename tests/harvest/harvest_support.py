"""Helpers for the harvest tests."""

from __future__ import annotations

import json
from pathlib import Path

from steerlang.dictionary.source import ActivationSource


def files(folder: Path) -> dict[str, bytes]:
    """Every file of a folder, by name, as bytes (to compare harvests bit for bit)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def rows_of(folder: Path, layer: int = 0):  # noqa: ANN201
    """(activations [N, d], labels) of every row, in shard order."""
    return ActivationSource.from_shards(folder, layer, "both").load(with_labels=True)
