"""Joint concept sets: named variables over the image and text dictionaries of every layer.

A concept set folder (the shipped one is `dictionaries/toyworld/`)::

    saes.json               {"model", "layers", "modalities", "saes": [{"layer", "modality", "path"}]}
    saes/layer{L}-{image|text}/   one SAELens-format dictionary per layer and modality
    concepts.json           this module's ConceptSetSpec (names, latent groups, statistics)
    prototypes.safetensors  per-position reference states (see below)

A concept is one variable across layers. At each layer it may own a *latent group* in the image
dictionary and/or in the text dictionary: a few latents with signed weights. Its **activation** at a
position is `sum_i w_i * z_i(h) / scale`, computed with the SAE of that position's modality at that
layer, so that 1.0 means "fires at its typical strength" (`where cat > 0.3` reads in those units).

Reference states (`prototypes.safetensors`), all [n_patches, d_model] float32 at one layer:

- `background.L{layer}`: the hidden state of a blank image at each patch position. Removing an
  object from image positions moves them here ("what an empty patch looks like"), instead of
  subtracting a direction that every object shares.
- `prototype.{concept_index}.L{layer}`: the mean hidden state of the concept's patches at each patch
  position (with `prototype.{concept_index}.L{layer}.count` [n_patches] — how many training patches
  made each row; 0 means unseen there). Replacement writes these where the replaced object was.

Ids in programs: `joint#i` is the i-th joint concept (an image side and a text side), `image#i` /
`text#i` the i-th modality-specific concept (a latent with no partner in the other modality).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from steerlang.atomic import chmod_default
from steerlang.errors import DictionaryError, InputError
from steerlang.lang.concepts import ConceptInfo

Modality = Literal["image", "text"]
Space = Literal["joint", "image", "text"]
CONCEPTS, SAES, PROTOTYPES = "concepts.json", "saes.json", "prototypes.safetensors"


@dataclass(frozen=True)
class LatentGroup:
    """Where a concept lives in one SAE: latents with signed weights, and its activation scale."""

    layer: int
    modality: Modality
    latents: tuple[int, ...]
    weights: tuple[float, ...]
    scale: float = 1.0  # typical raw group activation when firing; activation = raw / scale
    threshold: float = 0.3  # default "present" threshold (activation units) for masks and `off`
    precision: float | None = None  # patch-level, held-out (image groups)
    recall: float | None = None
    # Image groups: latents that mark the rest of the object next to the group's patches (its
    # outline, the parts other kinds share); they extend `off`/`replace` masks, never fire alone.
    extent: tuple[int, ...] = ()
    # "code": the activation reads the latents' codes (after the SAE's nonlinearity / TopK):
    # sum_i w_i z_i / scale. "pre": it reads their encoder pre-activations p_i = (x - b_dec) . e_i + b_i,
    # which every latent has at every position whether or not it won the TopK, as
    # max_i (w_i p_i + offsets_i) (scale 1): each latent is mapped so that its own precise threshold
    # lands on `threshold` and its typical strength on the kind's patches on 1.0. "linear": a signed
    # weighted sum of the same pre-activations, sum_i w_i p_i + offsets[0] (scale 1), mapped alike:
    # `threshold` where it becomes precise, 1.0 its typical strength on the kind's patches.
    read: Literal["code", "pre", "linear"] = "code"
    offsets: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        where = f"latent group at layer {self.layer} ({self.modality})"
        if len(self.latents) != len(self.weights) or not self.latents:
            raise DictionaryError(f"{where}: latents and weights must be non-empty and of equal length")
        if self.read not in ("code", "pre", "linear"):
            raise DictionaryError(f"{where}: read must be 'code', 'pre' or 'linear', got {self.read!r}")
        if self.read == "pre" and len(self.offsets) != len(self.latents):
            raise DictionaryError(f"{where}: a 'pre' group needs one offset per latent")
        if self.read == "linear" and len(self.offsets) != 1:
            raise DictionaryError(f"{where}: a 'linear' group needs exactly one offset (its bias)")

    def activation(self, sae: Any, h: Tensor) -> Tensor:
        """[N] the group's activation on hidden states h [N, d_in] of its layer and modality, read
        from `sae` as `read` says (the runtime computes the same inside its hooks)."""
        import torch

        idx = torch.tensor(self.latents)
        w = torch.tensor(self.weights, dtype=torch.float32)
        h = h.to(sae.W_enc.dtype)
        if self.read == "pre":
            return (sae.pre_acts_at(h, idx) * w + torch.tensor(self.offsets)).amax(-1)
        if self.read == "linear":
            return sae.pre_acts_at(h, idx) @ w + self.offsets[0]
        return (sae.encode_latents(h, idx) * w).sum(-1) / self.scale  # exact for every architecture


@dataclass(frozen=True)
class Concept:
    """A named variable: its id, names, and latent groups per layer and modality."""

    space: Space
    index: int
    name: str
    aliases: tuple[str, ...] = ()
    groups: tuple[LatentGroup, ...] = ()
    detection: float | None = None  # balanced accuracy of the name on held-out scenes
    frequency: float = 0.0  # fraction of held-out scenes where it fires
    evidence: dict[str, Any] = field(default_factory=dict)  # naming evidence (top words, logit lens, ...)

    @property
    def key(self) -> str:
        return f"{self.space}#{self.index}"

    def group(self, layer: int, modality: Modality) -> LatentGroup | None:
        for g in self.groups:
            if g.layer == layer and g.modality == modality:
                return g
        return None

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted({g.layer for g in self.groups}))


@dataclass
class ConceptSet:
    """A loaded concept set: the concepts, their dictionaries (loaded lazily) and reference states."""

    root: Path
    name: str
    model: str
    layer_numbers: list[int]
    concepts: list[Concept]
    sae_paths: dict[tuple[int, str], Path]
    is_raw = False  # True for `rawset.RawConceptSet`: SAE files with no named concepts

    # -- ConceptTable protocol (what the language checker needs) -------------------------------
    @property
    def model_name(self) -> str | None:
        return self.model

    @property
    def dictionary_name(self) -> str | None:
        return self.name

    def names(self) -> list[str]:
        return sorted({n for c in self.concepts for n in (c.name, *c.aliases)})

    def lookup(self, name: str) -> ConceptInfo | None:
        c = self.by_name(name)
        return None if c is None else ConceptInfo(c.name, c.space, c.index, c.layers)

    def lookup_id(self, space: str, index: int) -> ConceptInfo | None:
        c = self.by_key(f"{space}#{index}")
        return None if c is None else ConceptInfo(c.name, c.space, c.index, c.layers)

    def layers(self) -> list[int]:
        return list(self.layer_numbers)

    # -- access -----------------------------------------------------------------------------
    def by_name(self, name: str) -> Concept | None:
        for c in self.concepts:
            if name == c.name or name in c.aliases:
                return c
        return None

    def by_key(self, key: str) -> Concept | None:
        for c in self.concepts:
            if c.key == key:
                return c
        return None

    def sae(self, layer: int, modality: str):  # noqa: ANN201 - steerlang.dictionary.sae.SAE
        """The SAE of (layer, modality), loaded once."""
        from steerlang.dictionary.io import load_dictionary

        key = (layer, modality)
        if key not in self._saes:
            if key not in self.sae_paths:
                raise DictionaryError(f"{self.root}: no {modality} dictionary at layer {layer}; layers with dictionaries: {self.layer_numbers}")
            from steerlang.dictionary.io import WEIGHTS

            verify_recorded(self.root, self.sae_paths[key] / WEIGHTS, self._recorded_files)
            self._saes[key] = load_dictionary(self.sae_paths[key])
        return self._saes[key]

    @cached_property
    def _saes(self) -> dict[tuple[int, str], Any]:
        return {}

    @cached_property
    def _recorded_files(self) -> dict[str, Any]:
        """The "files" record of concepts.json (`save_concept_set`); empty for older sets."""
        try:
            files = json.loads((self.root / CONCEPTS).read_text()).get("files")
        except (OSError, json.JSONDecodeError, AttributeError):
            return {}
        return files if isinstance(files, dict) else {}

    @cached_property
    def _prototypes(self) -> dict[str, Tensor]:
        path = self.root / PROTOTYPES
        if not path.exists():
            return {}
        verify_recorded(self.root, path, self._recorded_files)
        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # safetensors raises its own error types
            raise DictionaryError(f"{path}: unreadable ({exc}); rebuild the concept set") from None

    def check_model(self, n_layers: int, hidden_size: int, model: str) -> None:
        """Refuse a model this set was not built for (its layers out of the model's range); the
        runtime calls it when a session starts. SAE widths are checked when an SAE is first used."""
        bad = [la for la in self.layer_numbers if not 0 <= la <= n_layers]
        if bad:
            raise InputError(f"dictionary {self.name!r} has layer {bad[0]} but model {model!r} has layers 0 to "
                             f"{n_layers}: it was built for another model")

    def background(self, layer: int) -> Tensor | None:
        """[n_patches, d] blank-image hidden states at `layer`, or None if not recorded."""
        return self._prototypes.get(f"background.L{layer}")

    def prototype(self, concept: Concept, layer: int) -> tuple[Tensor, Tensor] | None:
        """([n_patches, d] mean state of the concept's patches, [n_patches] counts) or None."""
        key = f"prototype.{concept.index}.L{layer}" if concept.space == "joint" else f"prototype.{concept.key}.L{layer}"
        if key not in self._prototypes:
            return None
        return self._prototypes[key], self._prototypes[f"{key}.count"]


def save_concept_set(root: str | os.PathLike, *, name: str, model: str, layers: list[int], concepts: list[Concept],
                     tensors: dict[str, Tensor] | None = None) -> None:
    """Write concepts.json (and prototypes.safetensors) next to an existing saes.json.

    Both are written to temporary files first, then renamed into place, concepts.json last; on any
    failure the temporary files are removed and the old pair is left as it was. concepts.json
    records the size and SHA-256 of prototypes.safetensors and of every SAE weights file named in
    saes.json ("files"), so a folder that mixes two builds (a crash between the two renames, SAEs
    retrained behind its back) is refused when those files are read instead of used in silence.
    `steer dict build` writes all of it in a build folder that is swapped in whole.
    """
    root = Path(root)
    pid = os.getpid()
    tmp, ttmp = root / f".{CONCEPTS}.tmp-{pid}", root / f".{PROTOTYPES}.tmp-{pid}"
    try:
        files: dict[str, dict[str, Any]] = {}
        if tensors is not None:
            save_file({k: v.contiguous().float() for k, v in tensors.items()}, str(ttmp))
            chmod_default(ttmp)  # safetensors writes 0600
            files[PROTOTYPES] = file_record(ttmp)
        elif (root / PROTOTYPES).is_file():
            files[PROTOTYPES] = file_record(root / PROTOTYPES)
        files.update(_sae_records(root))
        spec = {"format": "steerlang-concepts", "version": 1, "name": name, "model": model, "layers": layers,
                "concepts": [asdict(c) for c in concepts], "files": files}
        tmp.write_text(json.dumps(spec, indent=1) + "\n")
        if tensors is not None:
            os.replace(ttmp, root / PROTOTYPES)
        os.replace(tmp, root / CONCEPTS)
    finally:
        tmp.unlink(missing_ok=True)
        ttmp.unlink(missing_ok=True)


def file_record(path: Path) -> dict[str, Any]:
    """{"bytes", "sha256"} of a file, as concepts.json records it."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}


def _sae_records(root: Path) -> dict[str, dict[str, Any]]:
    """`file_record` of each SAE weights file that saes.json names inside `root`."""
    from steerlang.dictionary.io import WEIGHTS

    if not (root / SAES).is_file():
        return {}
    out = {}
    for e in json.loads((root / SAES).read_text()).get("saes", []):
        f = root / e["path"] / WEIGHTS
        if f.is_file() and not Path(e["path"]).is_absolute():
            out[f.relative_to(root).as_posix()] = file_record(f)
    return out


def verify_recorded(root: Path, path: Path, files: dict[str, Any]) -> None:
    """Refuse `path` if concepts.json's `files` record another size or digest for it (older sets
    record nothing and pass)."""
    try:
        rec = files.get(path.relative_to(root).as_posix())
    except ValueError:  # a dictionary outside the folder: not recorded
        return
    if not isinstance(rec, dict) or not path.is_file():
        return
    now = file_record(path)
    if now != rec:
        what = f"{now['bytes']} bytes, recorded {rec['bytes']}" if now["bytes"] != rec["bytes"] else "its SHA-256 differs from the one recorded"
        raise DictionaryError(f"{path}: does not belong with {root / CONCEPTS} ({what}): the folder mixes files of two builds; "
                              f"rebuild it with `steer dict build --out {root} --force` (or restore it from git if it ships)")


def load_concept_set(path: str | os.PathLike) -> ConceptSet:
    """Load a concept set folder (see the module docstring), validating its index files; a folder
    (or file) holding SAE files instead is loaded as raw SAEs (`rawset.load_raw_set`: no named
    concepts, latents addressed as image#N / text#N)."""
    from steerlang.resources import data_path

    root = Path(path)
    if str(path) == "toyworld" and not root.exists():
        root = data_path("dictionaries", "toyworld")
    if not root.exists():
        raise DictionaryError(f'no such folder: {path} (give a concept-set folder, an SAE folder, or the name "toyworld")')
    if not (root.is_dir() and (root / CONCEPTS).exists()):
        from steerlang.dictionary.rawset import load_raw_set

        return load_raw_set(root)  # SAE files (or saes.json alone), or an error naming the files expected
    for f in (SAES, CONCEPTS):
        if not (root / f).exists():
            raise DictionaryError(f"{root}: missing {f}; is this a steerlang concept set folder?")
    try:
        saes = json.loads((root / SAES).read_text())
        spec = json.loads((root / CONCEPTS).read_text())
        concepts = [
            Concept(**{**c, "aliases": tuple(c.get("aliases", ())),
                       "groups": tuple(LatentGroup(**{**g, "latents": tuple(g["latents"]), "weights": tuple(g["weights"]),
                                                    "extent": tuple(g.get("extent", ())),
                                                    "offsets": tuple(g.get("offsets", ()))})
                                       for g in c.get("groups", ()))})
            for c in spec["concepts"]
        ]
        sae_paths = {(int(e["layer"]), str(e["modality"])): root / e["path"] for e in saes["saes"]}
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DictionaryError(f"{root}: malformed {CONCEPTS} or {SAES} ({type(exc).__name__}: {exc})") from None
    return ConceptSet(root=root, name=spec.get("name", root.name), model=spec.get("model", saes.get("model", "")),
                      layer_numbers=[int(x) for x in spec.get("layers", saes.get("layers", []))], concepts=concepts, sae_paths=sae_paths)
