"""Activations for SAE training and evaluation: an in-memory tensor or a harvested shard folder.

Shard folder format (version 1; the harvester writes exactly this through `ShardWriter`)
---------------------------------------------------------------------------------------
::

    acts_dir/
      manifest.json            written last, atomically: its presence means "complete"
      shard_00000.safetensors
      shard_00001.safetensors
      ...

``manifest.json``::

    {"format": "steerlang-activations", "version": 1,
     "model": "<model name or path>", "layers": [0, 2, 5], "d_in": 1024,
     "dtype": "float16", "rows": 123456, "created_by": "...",
     "modality_codes": {"image": 0, "prompt": 1, "caption": 2},
     "shards": [{"file": "shard_00000.safetensors", "rows": 32768,
                 "modality_counts": [n_image, n_prompt, n_caption]}, ...],
     "metadata": {...free...}}

(`harvest_dataset` puts the harvest's settings under ``metadata.harvest``, the number of samples
under ``metadata.samples`` and the dataset's report of good samples and bad rows under
``metadata.data``.)

Each shard holds, for its ``N`` rows (token positions):

- ``acts.L{layer}`` [N, d_in] float16 or float32, one tensor per harvested layer. Layer L is the
  residual stream entering decoder block L (HF ``hidden_states[L]``): ``L = 0`` is the language
  model's input (the embeddings after image features are merged in), ``L = n_layers`` the last
  block's output. Key examples: ``acts.L0``, ``acts.L5``.
- ``modality`` [N] uint8: 0 = image token, 1 = prompt text, 2 = caption text.
- ``cell`` [N] int16: image patch index for image tokens, -1 for text.
- ``scene`` [N] int32: the sample's row in its dataset (the scene index for the toy world).
- ``position`` [N] int32: the token position in the sequence.

Reading streams shard by shard (``safe_open``), so a corpus larger than RAM works: the shuffled
stream of an epoch visits shards in a seeded random order, ``buffer_shards`` at a time, and
shuffles rows within that buffer. The stream is a pure function of (seed, batch index), which is
what makes training resumable bit-identically without saving reader state.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from steerlang.atomic import chmod_default, write_text
from steerlang.errors import InputError

FORMAT = "steerlang-activations"
MANIFEST = "manifest.json"
MODALITY_CODES: dict[str, int] = {"image": 0, "prompt": 1, "caption": 2}
MODALITY_FILTERS: dict[str, tuple[int, ...]] = {
    "image": (0,),
    "prompt": (1,),
    "caption": (2,),
    "text": (1, 2),
    "both": (0, 1, 2),
}
LABELS: dict[str, torch.dtype] = {
    "modality": torch.uint8,
    "cell": torch.int16,
    "scene": torch.int32,
    "position": torch.int32,
}


def acts_key(layer: int) -> str:
    """Safetensors key of a layer's activations: 0 -> ``acts.L0`` (LM input), 5 -> ``acts.L5``."""
    return f"acts.L{layer}"


def _seeded(*parts: int) -> torch.Generator:
    """A torch generator seeded from several integers (mixed, so (1, 2) and (2, 1) differ)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def _atomic_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1))


class ShardWriter:
    """Writes a shard folder; the harvester calls ``add`` per batch and ``close`` once.

    Shards are written whole (temp file then rename); ``manifest.json`` is written by ``close``
    only, so an interrupted harvest leaves a folder that readers refuse rather than half-read.
    ``on_shard(entry)`` is called after each shard file is in place (the harvester records its
    progress there); ``resume`` lists the manifest entries of shards already in the folder (from an
    interrupted harvest), which the writer keeps and numbers on from.
    """

    def __init__(
        self,
        out_dir: str | Path,
        layers: Sequence[int],
        d_in: int,
        *,
        model: str = "",
        shard_rows: int = 32768,
        dtype: torch.dtype = torch.float16,
        created_by: str = "steerlang",
        metadata: Mapping[str, Any] | None = None,
        resume: Sequence[Mapping[str, Any]] | None = None,
        on_shard: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.dir = Path(out_dir)
        if resume is None and self.dir.exists() and any(self.dir.iterdir()):
            raise InputError(f"{self.dir}: folder is not empty; give a new folder for the activations")
        if dtype not in (torch.float16, torch.float32):
            raise InputError(f"activations dtype must be float16 or float32, got {dtype}")
        if shard_rows < 1:
            raise InputError(f"shard size must be at least 1 row, got {shard_rows}")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.layers, self.d_in, self.shard_rows, self.dtype = list(layers), d_in, shard_rows, dtype
        self.model, self.created_by, self.metadata = model, created_by, dict(metadata or {})
        self.on_shard = on_shard
        self._pending: list[dict[str, Tensor]] = []
        self._pending_rows = 0
        self._shards: list[dict[str, Any]] = [dict(s) for s in resume or ()]
        for s in self._shards:
            if not (self.dir / s["file"]).is_file():
                raise InputError(f"{self.dir / s['file']}: missing; cannot resume this harvest")
        self._closed = False

    @property
    def shards(self) -> list[dict[str, Any]]:
        """The manifest entries of the shards written so far (resumed ones included)."""
        return [dict(s) for s in self._shards]

    @property
    def rows_written(self) -> int:
        """Rows in the shards written so far (rows still pending are not counted)."""
        return sum(int(s["rows"]) for s in self._shards)

    def add(
        self,
        acts: Mapping[int, Tensor],
        *,
        modality: Tensor,
        cell: Tensor,
        scene: Tensor,
        position: Tensor,
    ) -> None:
        """Append N rows: ``acts[layer]`` [N, d_in] for every layer, and the four labels [N]."""
        if self._closed:
            raise InputError("ShardWriter.add after close")
        if set(acts) != set(self.layers):
            raise InputError(f"acts has layers {sorted(acts)}, the writer was opened for {self.layers}")
        n = int(modality.shape[0])
        rows: dict[str, Tensor] = {}
        for layer, a in acts.items():
            if a.shape != (n, self.d_in):
                raise InputError(f"acts[{layer}] has shape {list(a.shape)}, expected [{n}, {self.d_in}]")
            rows[acts_key(layer)] = a.detach().to("cpu", self.dtype)
        for name, value in (("modality", modality), ("cell", cell), ("scene", scene), ("position", position)):
            if value.shape != (n,):
                raise InputError(f"label {name} has shape {list(value.shape)}, expected [{n}]")
            rows[name] = value.detach().to("cpu", LABELS[name])
        self._pending.append(rows)
        self._pending_rows += n
        while self._pending_rows >= self.shard_rows:
            self._flush(self.shard_rows)

    def _flush(self, n: int) -> None:
        merged = {k: torch.cat([p[k] for p in self._pending]) for k in self._pending[0]}
        shard = {k: v[:n].contiguous() for k, v in merged.items()}
        rest = {k: v[n:] for k, v in merged.items()}
        self._pending = [rest] if rest["modality"].shape[0] else []
        self._pending_rows -= n
        name = f"shard_{len(self._shards):05d}.safetensors"
        tmp = self.dir / f".{name}.tmp"
        try:
            save_file(shard, str(tmp))
            chmod_default(tmp)  # safetensors writes 0600; shards read like any other file
            os.replace(tmp, self.dir / name)
        finally:
            tmp.unlink(missing_ok=True)
        counts = torch.bincount(shard["modality"].long(), minlength=3)[:3].tolist()
        self._shards.append({"file": name, "rows": n, "modality_counts": counts})
        if self.on_shard is not None:
            self.on_shard(dict(self._shards[-1]))

    def close(self) -> Path:
        """Write the last partial shard and the manifest; returns the folder."""
        if not self._closed:
            if self._pending_rows:
                self._flush(self._pending_rows)
            manifest = {
                "format": FORMAT,
                "version": 1,
                "model": self.model,
                "layers": self.layers,
                "d_in": self.d_in,
                "dtype": str(self.dtype).removeprefix("torch."),
                "rows": sum(s["rows"] for s in self._shards),
                "created_by": self.created_by,
                "modality_codes": MODALITY_CODES,
                "shards": self._shards,
                "metadata": self.metadata,
            }
            _atomic_json(self.dir / MANIFEST, manifest)
            self._closed = True
        return self.dir

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:  # on error leave no manifest: the folder reads as incomplete
            self.close()


@dataclass
class _Unit:
    """One shard (or the whole in-memory tensor) and its row count after the modality filter."""

    rows: int
    path: Path | None = None


class ActivationSource:
    """Activations of one layer and modality filter, as shuffled minibatches or one ordered pass."""

    def __init__(
        self,
        units: list[_Unit],
        d_in: int,
        *,
        tensor: Tensor | None = None,
        labels: Mapping[str, Tensor] | None = None,
        layer: int | None = None,
        modality: str = "both",
        model: str = "",
        buffer_shards: int = 4,
    ) -> None:
        self._units, self.d_in, self._tensor, self._labels = units, d_in, tensor, labels
        self.layer, self.modality, self.model = layer, modality, model
        self.buffer_shards = max(1, buffer_shards)
        self.num_rows = sum(u.rows for u in units)
        if self.num_rows == 0:
            raise InputError(f"no activation rows for modality {modality!r} (layer {layer})")

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_tensor(cls, x: Tensor, *, labels: Mapping[str, Tensor] | None = None) -> ActivationSource:
        """x [N, d_in] kept in memory (float32); ``labels`` are optional per-row tensors [N]."""
        if x.ndim != 2 or not x.is_floating_point():
            raise InputError(f"activations must be a float tensor [N, d_in], got {x.dtype} {list(x.shape)}")
        x = x.detach().to("cpu", torch.float32)
        return cls([_Unit(rows=x.shape[0])], x.shape[1], tensor=x, labels=labels)

    @classmethod
    def from_shards(
        cls, path: str | Path, layer: int, modality: str = "both", *, buffer_shards: int = 4
    ) -> ActivationSource:
        """A harvested shard folder (see the module docstring), one layer, filtered by modality."""
        root = Path(path)
        manifest = read_manifest(root)
        if modality not in MODALITY_FILTERS:
            raise InputError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITY_FILTERS)}")
        if layer not in manifest["layers"]:
            raise InputError(f"{root}: layer {layer} was not harvested; available: {manifest['layers']}")
        codes = MODALITY_FILTERS[modality]
        units = []
        for s in manifest["shards"]:
            counts = s.get("modality_counts")
            n = sum(counts[c] for c in codes) if counts else int(s["rows"])
            units.append(_Unit(rows=n, path=root / s["file"]))
        src = cls(units, int(manifest["d_in"]), layer=layer, modality=modality, model=manifest.get("model", ""),
                  buffer_shards=buffer_shards)
        return src

    # -- reading ----------------------------------------------------------------------------
    def _read(self, unit: _Unit, labels: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        """Rows of one unit after filtering: acts [n, d_in] float32 and (optionally) labels [n]."""
        if unit.path is None:
            assert self._tensor is not None
            return self._tensor, dict(self._labels or {}) if labels else {}
        key = acts_key(self.layer if self.layer is not None else 0)
        try:
            with safe_open(str(unit.path), framework="pt") as f:
                names = set(f.keys())
                if key not in names or "modality" not in names:
                    raise InputError(f"{unit.path}: missing {key!r} or 'modality'; re-run the harvest")
                keep = torch.isin(f.get_tensor("modality").long(), torch.tensor(MODALITY_FILTERS[self.modality]))
                x = f.get_tensor(key)[keep].float()
                lab = {k: f.get_tensor(k)[keep] for k in LABELS if k in names} if labels else {}
        except InputError:
            raise
        except Exception as e:  # safetensors raises its own error types for truncated files
            raise InputError(f"{unit.path}: unreadable activation shard ({e}); re-run the harvest") from None
        if x.shape != (unit.rows, self.d_in):
            raise InputError(f"{unit.path}: {key} has {list(x.shape)} rows after filtering, manifest says "
                             f"[{unit.rows}, {self.d_in}]; re-run the harvest")
        return x, lab

    def iter_batches(self, batch_size: int, *, max_rows: int | None = None) -> Iterator[Tensor]:
        """One ordered pass (shard order, no shuffle), batches [<= batch_size, d_in] float32."""
        left = self.num_rows if max_rows is None else min(max_rows, self.num_rows)
        for unit in self._units:
            if left <= 0:
                return
            if unit.rows == 0:
                continue
            x, _ = self._read(unit)
            x = x[:left]
            left -= x.shape[0]
            yield from x.split(batch_size)

    def load(self, *, max_rows: int | None = None, with_labels: bool = False,
             keep: Callable[[dict[str, Tensor]], Tensor] | None = None) -> Any:
        """All rows in order as one tensor [N, d_in] (and the labels dict when ``with_labels``).
        `keep(labels) -> bool [n]` selects rows shard by shard as they are read, so that memory holds
        the kept rows and one shard, not the whole layer."""
        xs, labs = [], []
        left = self.num_rows if max_rows is None else min(max_rows, self.num_rows)
        for unit in self._units:
            if left <= 0:
                break
            x, lab = self._read(unit, labels=with_labels or keep is not None)
            if keep is not None:
                sel = keep(lab)
                x, lab = x[sel], {k: v[sel] for k, v in lab.items()} if with_labels else {}
            xs.append(x[:left])
            labs.append({k: v[:left] for k, v in lab.items()})
            left -= xs[-1].shape[0]
        x = torch.cat(xs)
        if not with_labels:
            return x
        keys = set.intersection(*(set(d) for d in labs)) if labs else set()
        return x, {k: torch.cat([d[k] for d in labs]) for k in sorted(keys)}

    def batches(self, batch_size: int, *, seed: int, start_batch: int = 0) -> Iterator[Tensor]:
        """Endless shuffled batches [batch_size, d_in] float32, a pure function of (seed, index).

        Epoch e visits the units in a seeded order, ``buffer_shards`` at a time, each buffer
        shuffled by its own seeded generator; the stream is the concatenation, cut into batches.
        ``start_batch`` skips ahead without loading the skipped buffers (resume).
        """
        skip = start_batch * batch_size
        pieces: list[Tensor] = []
        have = 0
        epoch = 0
        while True:
            order = torch.randperm(len(self._units), generator=_seeded(seed, epoch, -1)).tolist()
            for g in range(0, len(order), self.buffer_shards):
                group = [self._units[i] for i in order[g : g + self.buffer_shards]]
                n = sum(u.rows for u in group)
                if n == 0:
                    continue
                if skip >= n:
                    skip -= n
                    continue
                x = torch.cat([self._read(u)[0] for u in group if u.rows])
                x = x[torch.randperm(n, generator=_seeded(seed, epoch, g))]
                x = x[skip:]
                skip = 0
                pieces.append(x)
                have += x.shape[0]
                while have >= batch_size:
                    buf = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
                    yield buf[:batch_size]
                    pieces, have = [buf[batch_size:]], have - batch_size
            epoch += 1


def read_manifest(root: Path) -> dict[str, Any]:
    """Parse and check ``manifest.json`` of a shard folder; InputError with a fix otherwise."""
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise InputError(f"{root}: no {MANIFEST} (missing folder or an unfinished harvest); re-run the harvest")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{mpath}: not valid JSON ({e}); re-run the harvest") from None
    missing = [k for k in ("layers", "d_in", "shards") if k not in manifest]
    if missing:
        raise InputError(f"{mpath}: missing keys {missing}; re-run the harvest")
    return manifest


def as_source(data: ActivationSource | Tensor) -> ActivationSource:
    """Accept either a source or a tensor [N, d_in]."""
    if isinstance(data, ActivationSource):
        return data
    if isinstance(data, Tensor):
        return ActivationSource.from_tensor(data)
    raise InputError(f"expected activations as a tensor [N, d_in] or an ActivationSource, got {type(data).__name__}")
