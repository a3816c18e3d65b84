"""Traces: the traced concepts' activations per layer and position, as data, JSON and heatmaps.

A `Trace` holds, for each traced concept (by label) and layer, the activation at every position
the run processed, read on the *edited* hidden state ([B, total] tensors), with what each position
is (image / prompt / output, patch index, grid). Expectations such as `expect cat < 0.1 in image`
read it at the lowest layer where the concept was traced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from steerlang.runtime.masks import IMAGE, KIND_CODES, OUTPUT, PROMPT

__all__ = ["Trace", "heatmap", "write_trace"]

_KIND_NAMES = {IMAGE: "image", PROMPT: "prompt", OUTPUT: "output"}


@dataclass
class Trace:
    """Post-edit activations of traced concepts: `acts[label][layer]` is [B, total]."""

    acts: dict[str, dict[int, Tensor]]
    kind: Tensor  # [B, total] position kinds (masks.PAD / IMAGE / PROMPT / OUTPUT)
    patch: Tensor  # [B, total] patch index of image tokens, -1 elsewhere
    grid: list[tuple[int, int]]
    chains: list[tuple[str, list[tuple[str, list[int]]]]] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return list(self.acts)

    def layers(self, label: str) -> list[int]:
        return sorted(self.acts.get(label, {}))

    def max_activation(self, label: str, modality: str, layer: int | None = None) -> Tensor:
        """[B] max activation of `label` over `modality`'s positions (0 where there are none).

        `layer` None: the lowest traced layer (for expectations)."""
        layers = self.layers(label)
        batch = self.kind.shape[0]
        if not layers:
            return torch.zeros(batch)
        a = self.acts[label][layers[0] if layer is None else layer]
        mask = self.kind[:, : a.shape[1]] == KIND_CODES[modality]
        m = a.masked_fill(~mask, float("-inf")).amax(dim=1)
        return torch.where(torch.isinf(m), 0.0, m)

    def image_map(self, label: str, sample: int, layer: int | None = None) -> np.ndarray | None:
        """[rows, cols] activations over the patch grid (None: no image or not traced)."""
        layers = self.layers(label)
        rows, cols = self.grid[sample]
        if not layers or rows * cols == 0:
            return None
        a = self.acts[label][layers[0] if layer is None else layer][sample]
        img = (self.kind[sample, : a.shape[0]] == IMAGE)
        out = np.zeros(rows * cols, dtype=np.float32)
        p = self.patch[sample, : a.shape[0]][img].numpy()
        ok = p < rows * cols
        out[p[ok]] = a[img].numpy()[ok]
        return out.reshape(rows, cols)

    def chain_summary(self, sample: int) -> list[dict]:
        """Per chain and link: its max activation at each of its layers (did each link fire?)."""
        out = []
        for name, links in self.chains:
            rows = []
            for label, layers in links:
                per = {}
                for layer in layers:
                    if layer in self.acts.get(label, {}):
                        a = self.acts[label][layer][sample]
                        valid = self.kind[sample, : a.shape[0]] != 0
                        per[str(layer)] = round(float(a[valid].max()), 6) if bool(valid.any()) else 0.0
                rows.append({"concept": label, "max_by_layer": per})
            out.append({"chain": name, "links": rows})
        return out

    def to_json(self, sample: int) -> dict:
        """One sample's trace as JSON-ready data."""
        kinds = [_KIND_NAMES.get(int(k), "pad") for k in self.kind[sample]]
        concepts = {}
        for label, per_layer in self.acts.items():
            layers = {}
            for layer, a in sorted(per_layer.items()):
                grid = self.image_map(label, sample, layer)
                layers[str(layer)] = {
                    "positions": [round(float(x), 6) for x in a[sample]],
                    "max": {m: round(float(self.max_activation(label, m, layer)[sample]), 6) for m in ("image", "prompt", "output")},
                    "image_grid": None if grid is None else np.round(grid, 6).tolist(),
                }
            concepts[label] = layers
        return {"kinds": kinds, "grid": list(self.grid[sample]), "concepts": concepts, "chains": self.chain_summary(sample)}


def heatmap(grid: np.ndarray, image: Image.Image | None, size: tuple[int, int] | None = None) -> Image.Image:
    """The grid's activations (clipped to [0, max(1, max)]) in red over the image, upsampled."""
    size = size or (image.size if image is not None else (grid.shape[1] * 16, grid.shape[0] * 16))
    scale = max(1.0, float(grid.max()) if grid.size else 1.0)
    alpha = Image.fromarray((np.clip(grid / scale, 0, 1) * 255).astype(np.uint8), mode="L").resize(size, Image.Resampling.BILINEAR)
    base = image.convert("RGB").resize(size) if image is not None else Image.new("RGB", size, (40, 40, 40))
    dim = Image.blend(base, Image.new("RGB", size, (0, 0, 0)), 0.35)
    return Image.composite(Image.new("RGB", size, (255, 40, 0)), dim, alpha)


def write_trace(trace: Trace, sample: int, out_dir: str | Path, stem: str, image: Image.Image | None = None) -> list[Path]:
    """Write `{stem}.trace.json` and a heatmap PNG per traced concept; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.trace.json"]
    paths[0].write_text(json.dumps(trace.to_json(sample), indent=1))
    for label in trace.labels:
        grid = trace.image_map(label, sample)
        if grid is None:
            continue
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)
        path = out / f"{stem}.{safe}.png"
        heatmap(grid, image, None if image is None else (image.size[0] * 4, image.size[1] * 4)).save(path)
        paths.append(path)
    return paths
