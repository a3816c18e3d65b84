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
    from steerlang.models.bundle import DEFAULT_PROMPT

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


def top_patch_grid(bundle: Any, cs: ConceptSet, c: Concept, images: Sequence[Image.Image], *, top: int = 8) -> Image.Image:
    """A row of the `images` where the concept fires most, each with its heatmap."""
    images = list(images)
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


_PAGE_STYLE = (
    "body{font-family:sans-serif;margin:1em auto;padding:0 1em;max-width:80em;line-height:1.35}"
    "img{max-width:100%;height:auto}"
    ".pics{display:flex;flex-wrap:wrap;gap:1em}"
    ".card{flex:1 1 34em;min-width:0;max-width:100%;box-sizing:border-box;border:1px solid #ddd;border-radius:4px;padding:.4em .8em}"
    ".card h3{margin:.2em 0}.card img{display:block;margin:.4em 0}"
    ".wrap{max-width:100%;overflow-x:auto}"
    "table{border-collapse:collapse;margin:.3em 0}"
    "td,th{border:1px solid #ccc;padding:2px 8px;font-size:90%;text-align:left;vertical-align:top}"
    "summary{cursor:pointer;margin:.4em 0;font-weight:bold}"
    "small,.muted{color:#666}.card:target,tr:target{background:#ffc}"
    "input[type=search]{font-size:100%;padding:2px 6px;width:22em;max-width:100%;box-sizing:border-box}"
)

# Filter the concept rows as the user types (each <details> opens when it has a match and shows
# its count), and open the <details> around a row that a link (#image-12) points to.
_PAGE_SCRIPT = (
    "function filt(v){var q=v.trim().toLowerCase(),n=0;"
    "document.querySelectorAll('#concepts details').forEach(function(d){var k=0;"
    "d.querySelectorAll('tbody tr').forEach(function(r){var m=r.dataset.q.indexOf(q)>=0;r.hidden=!m;if(m)k++;});"
    "n+=k;d.querySelector('.n').textContent=q?k+' of '+d.dataset.n:d.dataset.n;if(q)d.open=k>0;});"
    "document.getElementById('shown').textContent=q?n+' shown':'';}"
    "function reveal(){var h=decodeURIComponent(location.hash.slice(1)),t=h&&document.getElementById(h);"
    "for(var e=t;e;e=e.parentElement)if(e.tagName==='DETAILS')e.open=true;if(t)t.scrollIntoView();}"
    "addEventListener('hashchange',reveal);reveal();"
)


def _anchor(key: str) -> str:
    """An HTML id for a concept id (`joint#3` -> `joint-3`: a `#` inside a fragment is asking for trouble)."""
    return key.replace("#", "-")


def render_html(cs: ConceptSet, pictures: dict[str, Image.Image] | None = None) -> str:
    """A static single-file page (no external resources): the named joint concepts first, as cards with
    their heatmap pictures (scaled to the window, wrapped), then a filterable table of every concept:
    the named ones open, the rest collapsed in one `<details>` per space and layer."""
    pictures = pictures or {}
    esc = html.escape

    def fmt(v: Any) -> str:
        return "" if v is None else (f"{v:.3f}" if isinstance(v, float) else esc(str(v)))

    def layers_text(c: Concept) -> str:
        return ",".join(map(str, c.layers))

    def group_line(g: Any) -> str:
        parts = [f"L{g.layer} {g.modality}: {esc(', '.join(map(str, g.latents)))}", f"scale {fmt(g.scale)}",
                 f"threshold {fmt(g.threshold)}"]
        if g.precision is not None or g.recall is not None:
            parts.append(f"P {fmt(g.precision)} R {fmt(g.recall)}")
        return " · ".join(parts)

    named = [c for c in cs.concepts if (c.space == "joint" and "@" not in c.name) or c.key in pictures]
    named_keys = {c.key for c in named}

    cards = []
    for c in named:
        pic = ""
        if c.key in pictures:
            buf = io.BytesIO()
            pictures[c.key].save(buf, format="PNG")
            pic = (f"<img alt='scenes where {esc(c.name)} fires most, with its heatmap' "
                   f"src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>")
        groups = "".join(
            f"<tr><td>{g.layer}</td><td>{g.modality}</td><td>{esc(', '.join(map(str, g.latents)))}</td><td>{fmt(g.scale)}</td>"
            f"<td>{fmt(g.threshold)}</td><td>{fmt(g.precision)}</td><td>{fmt(g.recall)}</td></tr>" for g in c.groups)
        cards.append(
            f"<section class='card' id='{esc(_anchor(c.key))}'><h3>{esc(c.name)} <small>{esc(c.key)}</small></h3>"
            f"<p class='muted'>detection {fmt(c.detection)} · frequency {fmt(c.frequency)} · layers {layers_text(c)}"
            f" · aliases {esc(', '.join(c.aliases)) or '—'}</p>{pic}"
            f"<details><summary>latent groups ({len(c.groups)})</summary><div class='wrap'><table><thead><tr><th>layer</th>"
            f"<th>modality</th><th>latents</th><th>scale</th><th>threshold</th><th>precision</th><th>recall</th></tr></thead>"
            f"<tbody>{groups}</tbody></table></div></details></section>")

    def row(c: Concept) -> str:
        mods = "+".join(sorted({g.modality for g in c.groups})) if c.space == "joint" else c.space
        q = " ".join((c.name, *c.aliases, c.key, mods)).lower()
        if c.key in named_keys:
            name = f"<a href='#{esc(_anchor(c.key))}'>{esc(c.name)}</a>"
            rid, groups = "", f"{len(c.groups)} groups, on its <a href='#{esc(_anchor(c.key))}'>card</a>"
        else:
            name, rid, groups = esc(c.name), f" id='{esc(_anchor(c.key))}'", "<br>".join(group_line(g) for g in c.groups)
        return (f"<tr{rid} data-q='{esc(q)}'><td>{name}</td><td>{esc(c.key)}</td><td>{esc(mods)}</td><td>{layers_text(c)}</td>"
                f"<td>{fmt(c.detection)}</td><td>{fmt(c.frequency)}</td><td>{groups}</td></tr>")

    sections: list[tuple[str, list[Concept]]] = [("named joint concepts", named)] if named else []
    rest: dict[tuple[int, str, tuple[int, ...]], list[Concept]] = {}
    order = {"joint": 0, "image": 1, "text": 2}
    for c in cs.concepts:
        if c.key not in named_keys:
            rest.setdefault((order.get(c.space, 3), c.space, tuple(c.layers)), []).append(c)
    for (_, space, layers), members in sorted(rest.items()):
        where = f"layer {layers[0]}" if len(layers) == 1 else f"layers {','.join(map(str, layers))}"
        sections.append((f"{space} concepts at {where}", members))
    head = ("<thead><tr><th>name</th><th>id</th><th>modality</th><th>layers</th><th>detection</th><th>frequency</th>"
            "<th>latent groups</th></tr></thead>")
    tables = "".join(
        f"<details data-n='{len(members)}'{' open' if n == 0 and named else ''}><summary>{esc(title)} "
        f"(<span class='n'>{len(members)}</span>)</summary><div class='wrap'><table>{head}"
        f"<tbody>{''.join(row(c) for c in members)}</tbody></table></div></details>"
        for n, (title, members) in enumerate(sections))

    lead = ""
    if cards:
        what = (" Each picture: the scenes where the concept fires most, patches tinted red by its activation at its"
                " first image layer." if pictures else "")
        lead = (f"<section id='named'><h2>Named joint concepts</h2><p class='muted'>The {len(named)} concepts with a"
                f" name, each with an image side and a text side.{what}</p><div class='pics'>{''.join(cards)}</div></section>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<title>{esc(cs.name)} concepts</title><style>{_PAGE_STYLE}</style></head>"
            f"<body><h1>{esc(cs.name)}: {len(cs.concepts)} concepts</h1>"
            f"<p class='muted'>model {esc(cs.model)} · layers {esc(', '.join(map(str, cs.layers())))}</p>{lead}"
            f"<section id='concepts'><h2>All concepts</h2><p><label>Filter <input id='q' type='search' "
            f"placeholder='name, alias, id or modality' oninput='filt(this.value)'></label> <span id='shown' class='muted'></span></p>"
            f"{tables}</section><script>{_PAGE_SCRIPT}</script></body></html>")
