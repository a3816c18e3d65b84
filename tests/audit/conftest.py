"""Audit fixtures: the shipped toy model and concept set (loaded once), and tiny toy corpora written
with the toy world's exporter (their truth.jsonl is read by tests only, never by the audit)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def toy():  # noqa: ANN201 - (ModelBundle, ConceptSet)
    import steerlang
    from steerlang.dictionary.concepts import load_concept_set

    return steerlang.load_model("toyworld"), load_concept_set("toyworld")


@pytest.fixture(scope="session")
def toy_corpus(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """toy_corpus(name, seed=, count=, ...) -> an imagefolder corpus (made once per session)."""
    root = tmp_path_factory.mktemp("audit-corpora")
    made: dict[str, Path] = {}

    def make(name: str, **kw) -> Path:  # noqa: ANN003
        from steerlang.world.corpus import export_toy_corpus

        if name not in made:
            export_toy_corpus(root / name, **kw)
            made[name] = root / name
        return made[name]

    return make
