"""steerlang: name what a multimodal LLM sees, and switch it.

The package root stays light: the language front end (`steerlang.lang`) must import without
torch, so the model-facing API is loaded lazily on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "steerlang.models.bundle",
    "ModelBundle": "steerlang.models.bundle",
    "Session": "steerlang.api",
    "RunResult": "steerlang.api",
    "load_session": "steerlang.api",
    "load_image": "steerlang.api",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'steerlang' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = sorted(_LAZY) + ["__version__"]
