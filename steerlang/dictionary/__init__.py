"""steerlang.dictionary: SAEs on a model's hidden states, harvested by modality, aligned and named."""

from __future__ import annotations

from typing import Any


def open_concept_table(path: str) -> Any:
    """The concept set at `path` ("toyworld" for the shipped one) as the language's ConceptTable."""
    from steerlang.dictionary.concepts import load_concept_set

    return load_concept_set(path)
