"""Browsing a concept set: list and search concepts, a concept's card, heatmap grids, an HTML page."""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from steerlang.dictionary.concepts import Concept, ConceptSet
from steerlang.errors import InputError


def list_features(cs: ConceptSet, query: str | None = None) -> list[dict[str, Any]]:
    """One row per concept (name, id, modality, detection, frequency, layers), filtered by `query`."""
    rows = []
    for c in cs.concepts:
        names = (c.name, *c.aliases)
        if query and not any(query.lower() in n.lower() for n in names) and query != c.key:
            continue
        mods = sorted({g.modality for g in c.groups})
        rows.append({"name": c.name, "id": c.key, "modality": "+".join(mods) if c.space == "joint" else c.space,
                     "detection": c.detection, "frequency": c.frequency, "layers": list(c.layers),
                     "aliases": list(c.aliases)})
    return rows


def find_concept(cs: ConceptSet, spec: str) -> Concept:
    """A concept by name, alias or id (`joint#3`), or an InputError that suggests close names."""
    c = cs.by_key(spec) or cs.by_name(spec)
    if c is None:
        import difflib

        close = difflib.get_close_matches(spec, cs.names(), n=3)
        hint = f"; did you mean {', '.join(repr(x) for x in close)}?" if close else "; `steer features` lists them"
        raise InputError(f"CONCEPT: unknown concept {spec!r}{hint}")
    return c


def concept_card(c: Concept) -> dict[str, Any]:
    """Everything known about a concept, as plain data."""
    return {
        "name": c.name, "id": c.key, "aliases": list(c.aliases), "detection": c.detection, "frequency": c.frequency,
        "groups": [{"layer": g.layer, "modality": g.modality, "latents": list(g.latents), "weights": list(g.weights),
                    "scale": g.scale, "threshold": g.threshold, "precision": g.precision, "recall": g.recall,
                    "read": g.read}
                   for g in c.groups],
        "evidence": c.evidence,
    }


@torch.no_grad()
def patch_activations(bundle: Any, cs: ConceptSet, c: Concept, images: Sequence[Image.Image], layer: int | None = None) -> np.ndarray:
    """The concept's activation on every image patch: [n_images, rows, cols] (activation units)."""
    from steerlang.dictionary.harvest import LayerCapture
    from steerlang.world.vocab import DEFAULT_PROMPT

    image_layers = [g.layer for g in c.groups if g.modality == "image"]
    if not image_layers:
        raise InputError(f"concept {c.name!r} has no image side to show")
    layer = min(image_layers) if layer is None else layer
    g = c.group(layer, "image")
    if g is None:
        raise InputError(f"concept {c.name!r} has no image latents at layer {layer}; it has them at {sorted(image_layers)}")
    sae = cs.sae(layer, "image")
    rows, cols = bundle.patch_grid
    out = []
    for i in range(0, len(images), 64):
        enc = bundle.encode(images[i : i + 64], [DEFAULT_PROMPT] * len(images[i : i + 64]))
        with LayerCapture(bundle, [layer]) as cap:
            bundle.model(**enc)
        h = cap.captured[layer][enc["input_ids"] == bundle.image_token_id].float()
        out.append(g.activation(sae, h).reshape(-1, rows, cols).numpy())
    return np.concatenate(out)


def heatmap_overlay(image: Image.Image, act: np.ndarray, *, scale: int = 3, vmax: float = 1.0) -> Image.Image:
    """The image enlarged, with patches tinted red by activation (0 .. vmax)."""
    img = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.NEAREST)
    rows, cols = act.shape
    ph, pw = img.height / rows, img.width / cols
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for r in range(rows):
        for q in range(cols):
            a = float(np.clip(act[r, q] / vmax, 0, 1))
            if a > 0:
                draw.rectangle([q * pw, r * ph, (q + 1) * pw - 1, (r + 1) * ph - 1], fill=(255, 0, 0, int(150 * a)))
    return Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB")


def top_patch_grid(bundle: Any, cs: ConceptSet, c: Concept, *, seed: int = 3, count: int = 200, top: int = 8) -> Image.Image:
    """A row of the held-out scenes where the concept fires most, each with its heatmap."""
    from steerlang.world.scenes import make_scene, render

    images = [render(make_scene(seed, i)) for i in range(count)]
    acts = patch_activations(bundle, cs, c, images)
    best = np.argsort(-acts.reshape(len(images), -1).max(1))[:top]
    tiles = [heatmap_overlay(images[i], acts[i]) for i in best]
    w, h = tiles[0].size
    grid = Image.new("RGB", (w * len(tiles) + 4 * (len(tiles) - 1), h), (255, 255, 255))
    for n, t in enumerate(tiles):
        grid.paste(t, (n * (w + 4), 0))
    return grid


def save_png(img: Image.Image, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    img.save(tmp, format="PNG")
    tmp.replace(path)
    return path


def render_html(cs: ConceptSet, pictures: dict[str, Image.Image] | None = None) -> str:
    """A static page: a table of every concept, then a card per concept (with its picture if given)."""
    pictures = pictures or {}
    esc = html.escape

    def fmt(v: Any) -> str:
        return "" if v is None else (f"{v:.3f}" if isinstance(v, float) else esc(str(v)))

    rows = "".join(
        f"<tr><td><a href='#{esc(r['id'])}'>{esc(r['name'])}</a></td><td>{esc(r['id'])}</td><td>{esc(r['modality'])}</td>"
        f"<td>{fmt(r['detection'])}</td><td>{fmt(r['frequency'])}</td><td>{esc(','.join(map(str, r['layers'])))}</td></tr>"
        for r in list_features(cs)
    )
    cards = []
    for c in cs.concepts:
        groups = "".join(
            f"<tr><td>{g.layer}</td><td>{g.modality}</td><td>{esc(', '.join(map(str, g.latents)))}</td><td>{fmt(g.scale)}</td>"
            f"<td>{fmt(g.threshold)}</td><td>{fmt(g.precision)}</td><td>{fmt(g.recall)}</td></tr>" for g in c.groups)
        pic = ""
        if c.key in pictures:
            buf = io.BytesIO()
            pictures[c.key].save(buf, format="PNG")
            pic = f"<img alt='top patches of {esc(c.name)}' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"
        cards.append(
            f"<section id='{esc(c.key)}'><h2>{esc(c.name)} <small>{esc(c.key)}</small></h2>"
            f"<p>detection {fmt(c.detection)} · frequency {fmt(c.frequency)} · aliases {esc(', '.join(c.aliases)) or '—'}</p>{pic}"
            f"<table><tr><th>layer</th><th>modality</th><th>latents</th><th>scale</th><th>threshold</th><th>precision</th><th>recall</th></tr>{groups}</table></section>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:70em} table{border-collapse:collapse;margin:.5em 0}"
             "td,th{border:1px solid #ccc;padding:2px 8px;font-size:90%} section{margin-top:2em} small{color:#777}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(cs.name)} concepts</title><style>{style}</style></head>"
            f"<body><h1>{esc(cs.name)}: {len(cs.concepts)} concepts</h1><p>model {esc(cs.model)} · layers {esc(str(cs.layers()))}</p>"
            f"<table><tr><th>name</th><th>id</th><th>modality</th><th>detection</th><th>frequency</th><th>layers</th></tr>{rows}</table>"
            f"{''.join(cards)}</body></html>")
