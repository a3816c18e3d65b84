"""Find shipped data (grammar, model, dictionaries) from a checkout or an installed wheel."""

from __future__ import annotations

from pathlib import Path

from steerlang.errors import SteerError

_PKG = Path(__file__).resolve().parent
# A wheel carries the data under steerlang/_data/ (setup.py copies it there); a checkout or an
# editable install keeps it at the repository root, next to the package.
_BASES = (_PKG / "_data", _PKG.parent)


def data_path(*parts: str) -> Path:
    """Path of a shipped file or folder, e.g. ``data_path("grammar", "steerlang.lark")``."""
    for base in _BASES:
        candidate = base.joinpath(*parts)
        if candidate.exists():
            return candidate
    raise SteerError(f"shipped data {'/'.join(parts)!r} not found (looked in {', '.join(map(str, _BASES))})")
