"""What the checker needs to know about a dictionary's concepts: the `ConceptTable` protocol.

The dictionary code (`steerlang.dictionary`) implements the protocol for real dictionaries; the
language ships a `StaticConceptTable` (a list in memory, also loaded from a JSON concept list)
and a `FakeConceptTable` with a few toy-world concepts for tests.

JSON concept list (`steer check --dictionary concepts.json`)::

    {"model": "toyworld", "dictionary": "toyworld", "layers": [0, 1, 2, 3],
     "concepts": [{"name": "cat", "id": 12, "space": "joint", "aliases": ["kitty"], "layers": [1, 2]}]}

(`layers` of a concept is optional: absent means every layer of the dictionary.)
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from steerlang.errors import InputError

Space = Literal["image", "text", "joint"]
SPACES: tuple[Space, ...] = ("image", "text", "joint")

__all__ = [
    "SPACES",
    "ConceptInfo",
    "ConceptTable",
    "FakeConceptTable",
    "Space",
    "StaticConceptTable",
    "load_concept_table",
    "load_concept_table_json",
]


@dataclass(frozen=True)
class ConceptInfo:
    """One concept of a dictionary: its canonical name, its space and index there, its layers.

    `layers` empty means the concept exists at every layer of the table.
    """

    name: str
    space: Space
    index: int
    layers: tuple[int, ...] = ()

    @property
    def key(self) -> str:
        """`space#index`, the same spelling a program uses for ids (e.g. `joint#12`)."""
        return f"{self.space}#{self.index}"


@runtime_checkable
class ConceptTable(Protocol):
    """The concepts a program may name. The dictionary code fulfils this for real dictionaries."""

    @property
    def model_name(self) -> str | None:
        """The model the dictionary was trained on (checked against `model "..."`), if known."""
        ...

    @property
    def dictionary_name(self) -> str | None:
        """The dictionary's name (checked against `dictionary "..."`), if known."""
        ...

    def names(self) -> list[str]:
        """Every name usable in `concept "..."`: canonical names and aliases (for did-you-mean)."""
        ...

    def lookup(self, name: str) -> ConceptInfo | None:
        """The concept called `name` (or with that alias), or None."""
        ...

    def lookup_id(self, space: Space, index: int) -> ConceptInfo | None:
        """The concept at `index` in `space` (`image#12` -> ("image", 12)), or None."""
        ...

    def layers(self) -> list[int]:
        """The layers that have a dictionary, ascending."""
        ...


@dataclass
class StaticConceptTable:
    """A `ConceptTable` held in memory: concepts, aliases, layers, model and dictionary names."""

    concepts: list[ConceptInfo]
    layer_list: list[int] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> canonical name
    model: str | None = None
    dictionary: str | None = None

    def __post_init__(self) -> None:
        self._by_name = {c.name: c for c in self.concepts}
        self._by_id = {(c.space, c.index): c for c in self.concepts}

    @property
    def model_name(self) -> str | None:
        return self.model

    @property
    def dictionary_name(self) -> str | None:
        return self.dictionary

    def names(self) -> list[str]:
        return sorted({*self._by_name, *self.aliases})

    def lookup(self, name: str) -> ConceptInfo | None:
        return self._by_name.get(self.aliases.get(name, name))

    def lookup_id(self, space: Space, index: int) -> ConceptInfo | None:
        return self._by_id.get((space, index))

    def layers(self) -> list[int]:
        return sorted(self.layer_list)


_TOY_CONCEPTS = ("cat", "dog", "bird", "car", "tree", "house", "sun", "fish", "animal", "pet", "red", "blue")


def FakeConceptTable(  # noqa: N802 - reads as a class at call sites, like a dataclass would
    names: Iterable[str] = _TOY_CONCEPTS,
    *,
    layers: Iterable[int] = (0, 1, 2, 3),
    aliases: dict[str, str] | None = None,
    model: str | None = "toyworld",
    dictionary: str | None = "toyworld",
    image_size: int = 64,
    text_size: int = 64,
    layers_of: dict[str, Iterable[int]] | None = None,
) -> StaticConceptTable:
    """A small table for tests: the named concepts as `joint#0..`, plus bare image/text latents.

    `image#i` for i < image_size and `text#i` for i < text_size exist (named `image_i`, `text_i`);
    `layers_of` limits named concepts to some layers (others exist at every layer).
    """
    only = {name: tuple(sorted(ls)) for name, ls in (layers_of or {}).items()}
    concepts = [ConceptInfo(n, "joint", i, only.get(n, ())) for i, n in enumerate(names)]
    concepts += [ConceptInfo(f"image_{i}", "image", i) for i in range(image_size)]
    concepts += [ConceptInfo(f"text_{i}", "text", i) for i in range(text_size)]
    return StaticConceptTable(concepts, list(layers), dict(aliases or {"kitty": "cat", "puppy": "dog"}), model, dictionary)


def load_concept_table_json(path: str | Path) -> StaticConceptTable:
    """Read a JSON concept list (format in this module's docstring); InputError if it is malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read concept list {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    try:
        return _table_from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: not a concept list ({exc!s})") from None


def _table_from_json(data: Any) -> StaticConceptTable:
    if not isinstance(data, dict):
        raise TypeError("expected a JSON object")
    concepts: list[ConceptInfo] = []
    aliases: dict[str, str] = {}
    for entry in data["concepts"]:
        space = entry.get("space", "joint")
        if space not in SPACES:
            raise ValueError(f"space {space!r} is not one of {', '.join(SPACES)}")
        info = ConceptInfo(str(entry["name"]), space, int(entry["id"]), tuple(int(x) for x in entry.get("layers", ())))
        concepts.append(info)
        for alias in entry.get("aliases", ()):
            aliases[str(alias)] = info.name
    return StaticConceptTable(
        concepts, [int(x) for x in data.get("layers", [])], aliases, data.get("model"), data.get("dictionary")
    )


class HeaderOverride:
    """A concept table given explicitly (`--dictionary`), used instead of the one a program's
    `dictionary` header names: everything is the table's, except that it names no dictionary, so
    the header is not checked against it."""

    def __init__(self, table: ConceptTable) -> None:
        self._table = table

    @property
    def dictionary_name(self) -> str | None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)


def load_concept_table(spec: str | Path) -> ConceptTable:
    """The concept table named by `--dictionary`: a JSON concept list (`*.json`), or a concept set
    named as `steer run` names it (a concept-set folder, or "toyworld" for the shipped one).

    Concept sets are the dictionary team's: `steerlang.dictionary.open_concept_table(spec)` loads
    them (imported lazily, so the language front end itself never loads torch).
    """
    path = Path(spec)
    if path.suffix == ".json":
        return load_concept_table_json(path)
    if str(spec) != "toyworld" and not path.exists():
        raise InputError(f'no such folder: {spec} (give a concept-set folder, the name "toyworld", or a JSON concept list)')
    opener = getattr(importlib.import_module("steerlang.dictionary"), "open_concept_table", None)
    if opener is None:
        raise InputError(f"{spec}: loading concept sets is not available; give a JSON concept list")
    return opener(str(spec))
