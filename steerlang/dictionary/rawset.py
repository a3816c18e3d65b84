"""A raw SAE is a dictionary: a `ConceptSet` view of SAE files with no named concepts.

`load_raw_set(path)` takes one SAE (a SAELens, sparsify or dictionary_learning folder, a Gemma Scope
`params.npz`, see `formats.py`), a folder of them (one per layer and/or modality, searched up to
six levels down; `checkpoints/` and hidden folders are skipped), or a folder whose `saes.json`
lists them (a concept set before its concepts were built). `load_concept_set` returns one for any
folder that is not a concept set, so `steer run PROG --dictionary SAE_FOLDER` and
`steerlang.load_session(model, SAE_FOLDER)` work.

Every latent is addressable, in the program's id syntax:

- `image#N`: latent N of the image SAE, read and written at image positions only;
- `text#N`: latent N of the text SAE, at text positions (prompt and output);
- `joint#N`: latent N of an SAE trained on all positions ("both"), at every position.

An SAE's **modality** is its metadata's `modality` (`image`, `text`; `caption`/`prompt` count as
text; `both`), else the folder naming convention: a path part below the given folder with the word
`image`/`img` (e.g. `layer2-image/`, `image/blocks.1.hook_resid_post/`) or `text`/`txt`. An SAE with
neither (every SAE written by another tool, usually: trained on all positions) serves **both**
modalities: `image#N` and `text#N` both name its latent N, at image or at text positions, and
`joint#N` names it at every position. Two SAEs for one layer and modality are refused.

Its **layer** comes from the file (`formats.probe`: hook name, folder name, steerlang's metadata)
or from `layer=` for a single SAE that does not say. With SAEs at several layers, latent N of one
layer has nothing to do with latent N of another: a program must say which layer it edits
(`steer image at layer 2 { ... }`); the runtime refuses an edit of `image#N` without `at layer`
when the modality has SAEs at more than one layer.

A "present" threshold of a raw latent is 0 (it fires) and its activation unit is the latent's own
value (scale 1): `set image#3 = 2` writes 2 into latent 3, `where image#3 > 0.5` reads it raw.
Raw sets have no reference states: `off` / `replace` on image positions zero the latent (or move
it) instead of writing a blank patch.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from steerlang.dictionary.concepts import SAES, Concept, ConceptSet, LatentGroup
from steerlang.dictionary.formats import EXPECTED, SAEInfo, detect, not_a_dictionary, probe
from steerlang.dictionary.hooknames import layer_range_text
from steerlang.errors import DictionaryError
from steerlang.lang.concepts import ConceptInfo

__all__ = ["RawConceptSet", "find_saes", "load_raw_set", "modality_from_names"]

_ID = re.compile(r"^(image|text|joint)#(\d+)$")
_IMAGE_WORDS, _TEXT_WORDS = {"image", "images", "img"}, {"text", "txt"}
_MODALITY = {"image": "image", "text": "text", "caption": "text", "prompt": "text", "both": "both", "all": "both"}
MAX_DEPTH = 6


def modality_from_names(parts: list[str]) -> str | None:
    """"image" / "text" from the last path part naming one (`layer2-image`, `text/`), else None."""
    for part in reversed(parts):
        words = set(re.split(r"[^a-z0-9]+", part.lower()))
        img, txt = bool(words & _IMAGE_WORDS), bool(words & _TEXT_WORDS)
        if img != txt:
            return "image" if img else "text"
    return None


def find_saes(root: Path) -> list[Path]:
    """SAE folders (or .npz files) at `root` or below it (sorted; an SAE folder is not searched further)."""
    found: list[Path] = []

    def walk(p: Path, depth: int) -> None:
        got = detect(p)
        if got is not None:
            found.append(got[1])
            return
        if depth >= MAX_DEPTH:
            return
        for child in sorted(p.iterdir()):
            if child.is_dir() and not child.name.startswith(".") and child.name != "checkpoints":
                walk(child, depth + 1)

    walk(root, 0)
    return found


def _no_layer(info: SAEInfo) -> DictionaryError:
    how = {"gemma_scope": "put it under a folder named layer_L, as Gemma Scope ships it (L = the block whose output it reads)",
           "sparsify": "name its folder after its hookpoint (layers.L)"}.get(
        info.format, "write metadata.hook_name (e.g. blocks.L.hook_resid_post) into its cfg.json")
    return DictionaryError(f"{info.path}: the file does not say which layer it reads: {how}, or load it in Python with "
                           "steerlang.dictionary.rawset.load_raw_set(path, layer=L) (steerlang's layer: L = the stream "
                           "entering block L)")


@dataclass
class RawConceptSet(ConceptSet):
    """SAE files as a concept set without named concepts; ids address latents (module docstring)."""

    saes: list[SAEInfo] = field(default_factory=list)
    slots: dict[tuple[int, str], SAEInfo] = field(default_factory=dict)
    is_raw = True

    # -- what the language and the runtime ask ------------------------------------------------
    def names(self) -> list[str]:
        return []

    def lookup(self, name: str) -> ConceptInfo | None:
        c = self.by_name(name)
        return None if c is None else ConceptInfo(c.name, c.space, c.index, c.layers)

    def lookup_id(self, space: str, index: int) -> ConceptInfo | None:
        c = self.by_key(f"{space}#{index}")
        return None if c is None else ConceptInfo(c.name, c.space, c.index, c.layers)

    def by_name(self, name: str) -> Concept | None:
        return self.by_key(name) if _ID.match(name) else None

    def by_key(self, key: str) -> Concept | None:
        m = _ID.match(key)
        if m is None:
            return None
        if key not in self._concepts:
            self._concepts[key] = self._latent(m.group(1), int(m.group(2)))
        return self._concepts[key]

    def _latent(self, space: str, index: int) -> Concept | None:
        groups = []
        for (layer, modality), info in sorted(self.slots.items()):
            if index >= info.d_sae:
                continue
            if space == modality or (space == "joint" and info.modality == "both"):
                groups.append(LatentGroup(layer, modality, (index,), (1.0,), scale=1.0, threshold=0.0))  # type: ignore[arg-type]
        if not groups:
            return None
        return Concept(space, index, f"{space}#{index}", groups=tuple(groups),  # type: ignore[arg-type]
                       evidence={"raw": True, "latent": index})

    @cached_property
    def _concepts(self) -> dict[str, Concept | None]:
        return {}

    @cached_property
    def _loaded(self) -> dict[Path, Any]:
        return {}

    def sae(self, layer: int, modality: str):  # noqa: ANN201 - steerlang.dictionary.sae.SAE
        """The SAE serving (layer, modality), loaded once (one SAE serving both is loaded once)."""
        from steerlang.dictionary.io import load_dictionary

        info = self.slots.get((layer, modality))
        if info is None:
            have = ", ".join(f"{m} at layer {la}" for la, m in sorted(self.slots)) or "none"
            raise DictionaryError(f"{self.root}: no {modality} SAE at layer {layer}; it has: {have}")
        if info.path not in self._loaded:
            self._loaded[info.path] = load_dictionary(info.path, layer=info.layer)
        return self._loaded[info.path]

    def background(self, layer: int) -> None:
        return None

    def prototype(self, concept: Concept, layer: int) -> None:
        return None

    def check_model(self, n_layers: int, hidden_size: int, model: str) -> None:
        """Refuse, before anything runs, an SAE whose layer the model lacks or of another width."""
        for info in self.saes:
            assert info.layer is not None
            if not 0 <= info.layer <= n_layers:
                raise DictionaryError(f"{info.path}: {info.where()} is steerlang layer {info.layer}, but model {model!r} has "
                                      f"{layer_range_text(n_layers)}: the SAE was trained on another model")
            if info.d_in != hidden_size:
                raise DictionaryError(f"{info.path}: SAE width d_in={info.d_in} does not match model {model!r}'s hidden size "
                                      f"{hidden_size}: it was trained on another model")

    def id_hint(self, space: str, index: int) -> str | None:
        """Why `space#index` names no latent here (for the checker's hint)."""
        if space == "joint":
            if not any(i.modality == "both" for i in self.saes):
                return "joint#N names a latent of an SAE trained on all positions; these SAEs are per modality: use image#N or text#N"
        sizes = sorted({(la, i.d_sae) for (la, m), i in self.slots.items() if m == space or space == "joint"})
        if not sizes:
            mods = sorted({m for _la, m in self.slots})
            return f"there is no {space} SAE here (modalities: {', '.join(mods)})"
        return "latents: " + "; ".join(f"{space}#0..{space}#{d - 1} at layer {la}" for la, d in sizes)

    # -- browsing ---------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """One row per SAE: layer, modality, ids, architecture, width, format, hook, path."""
        out = []
        for info in self.saes:
            mods = ["image", "text"] if info.modality == "both" else [info.modality]
            ids = ", ".join(f"{m}#0..{info.d_sae - 1}" for m in mods) + (f", joint#0..{info.d_sae - 1}" if info.modality == "both" else "")
            out.append({"layer": info.layer, "modality": info.modality, "ids": ids, "latents": info.d_sae, "d_in": info.d_in,
                        "architecture": info.architecture, "k": info.k, "format": info.format, "hook_name": info.hook_name,
                        "path": str(info.path)})
        return out

    def how_to_address(self) -> str:
        """One paragraph for `steer features`: no named concepts, and how to name latents."""
        mods = {m for _la, m in self.slots}
        multi = any(sum(1 for _la, mm in self.slots if mm == m) > 1 for m in mods)
        both = any(i.modality == "both" for i in self.saes)
        ids = [f"{m}#N (latent N at {m} positions)" for m in ("image", "text") if m in mods]
        text = f"{self.name}: raw SAEs, no named concepts. Address latents by id: {', '.join(ids)}"
        if both:
            text += "; an SAE trained on all positions serves both, and joint#N names its latent N at every position"
        if multi:
            text += "; with SAEs at several layers, say which one an edit uses: steer image at layer L { set image#N = 2 }"
        return text + "."


def _slot_modality(info: SAEInfo, root: Path) -> str:
    meta = _MODALITY.get(str(info.modality).lower()) if info.modality else None
    if meta is not None:
        return meta
    try:
        rel = list(info.path.relative_to(root).parts) if info.path != root else []
    except ValueError:
        rel = []
    if info.path == root or (info.path.suffix == ".npz" and info.path.parent == root):
        rel = [root.name, *rel]
    return modality_from_names(rel) or "both"


def load_raw_set(path: str | os.PathLike, *, layer: int | None = None, name: str | None = None) -> RawConceptSet:
    """The SAE(s) at `path` as a concept set (module docstring). `layer` gives the layer of a single
    SAE whose file does not say it (e.g. a Gemma Scope params.npz outside its layer_L folder)."""
    root = Path(path)
    if not root.exists():
        raise DictionaryError(f"no such folder: {path}")
    infos: list[SAEInfo] = []
    if root.is_dir() and (root / SAES).is_file():
        try:
            entries = json.loads((root / SAES).read_text())["saes"]
            for e in entries:
                info = probe(root / e["path"], layer=int(e["layer"]))
                info.modality = str(e["modality"])
                infos.append(info)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DictionaryError(f"{root / SAES}: malformed ({type(exc).__name__}: {exc})") from None
    else:
        found = [root] if detect(root) is not None else (find_saes(root) if root.is_dir() else [])
        if not found:
            if root.is_dir():
                err = not_a_dictionary(root)
                if "refused" in str(err):
                    raise err
            raise DictionaryError(f"{root}: neither a concept set (saes.json + concepts.json) nor an SAE: expected {EXPECTED}, "
                                  "or a folder of such SAEs (one per layer and/or modality)")
        if layer is not None and len(found) > 1:
            raise DictionaryError(f"{root}: holds {len(found)} SAEs; layer= applies to one SAE only (each of these must say its own)")
        infos = [probe(p, layer=layer) for p in found]
    slots: dict[tuple[int, str], SAEInfo] = {}
    for info in infos:
        if info.layer is None:
            raise _no_layer(info)
        info.modality = _slot_modality(info, root)
        for m in (("image", "text") if info.modality == "both" else (info.modality,)):
            other = slots.get((info.layer, m))
            if other is not None:
                raise DictionaryError(f"{root}: two {m} SAEs at layer {info.layer}: {other.path} and {info.path}; keep one "
                                      "(or name their folders ...-image / ...-text if they are per modality)")
            slots[(info.layer, m)] = info
    base = root if root.is_dir() else root.parent
    model = next((i.model_name for i in infos if i.model_name), "")
    return RawConceptSet(root=base, name=name or (root.name if root.is_dir() else root.parent.name), model=model,
                         layer_numbers=sorted({la for la, _m in slots}), concepts=[],
                         sae_paths={k: v.path for k, v in slots.items()}, saes=infos, slots=slots)
