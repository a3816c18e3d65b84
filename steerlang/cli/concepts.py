"""`steer features` and `steer show`: browse the named concepts of a concept set.

Human output rounds every number to 3 decimals; --json prints the stored values. A frequency that
was never measured (stored as 0 for a concept that does fire: the toy world's eight kind concepts,
which span every layer) shows as "-" in the table and `null` in --json.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from steerlang.cli import app, out_console, user_errors
from steerlang.errors import InputError

_DICT_HELP = "Concept set: \"toyworld\", a concept-set folder, or raw SAEs (an SAE folder or file, or a folder of them)."
_NOT_MEASURED = "-"


def _frequency(frequency: float | None, detection: float | None) -> float | None:
    """The stored frequency, or None where it was never measured: a concept whose name detects it
    (balanced accuracy above chance) fires on some scenes, so a stored 0 there means "unknown"."""
    if frequency is None or (frequency == 0 and detection is not None and detection > 0.5):
        return None
    return frequency


def _num(value: Any) -> str:
    """A number for people: 3 decimals (floats), as is (ints), "-" (unknown)."""
    if value is None:
        return _NOT_MEASURED
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _no_match(query: str, names: list[str]) -> InputError:
    # Names of automatic concepts look like "cat@L0/image8": match on what comes before the "@" too.
    pool = sorted(set(names) | {n.split("@", 1)[0] for n in names})
    close = difflib.get_close_matches(query, pool, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "; `steer features` lists them all"
    return InputError(f"no concept matches {query!r}{hint}")


@app.command("features")
@user_errors
def features_cmd(
    query: str | None = typer.Argument(None, help="Substring of a name or alias, or an id like joint#3."),
    dictionary: str = typer.Option("toyworld", "--dictionary", "-d", help=_DICT_HELP),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line (all rows, stored values)."),
    limit: int = typer.Option(50, "--limit", min=1, help="Rows to show in the table (--json prints all)."),
) -> None:
    """List concepts: name, id, modality, detection score, frequency, layers. Exit 1 if none matches QUERY."""
    from steerlang.dictionary.browse import list_features
    from steerlang.dictionary.concepts import load_concept_set

    cs = load_concept_set(dictionary)
    if cs.is_raw:
        _raw_features(cs, query, as_json)
        return
    rows = list_features(cs, query)
    if query and not rows:
        raise _no_match(query, cs.names())
    for r in rows:
        r["frequency"] = _frequency(r["frequency"], r["detection"])
    if as_json:
        for r in rows:
            out_console.print(json.dumps(r), markup=False)
        return
    table = Table("name", "id", "modality", "detection", "frequency (scenes)", "layers",
                  caption="detection: balanced accuracy of the name on held-out scenes; frequency: fraction of "
                          f"held-out scenes where it fires ({_NOT_MEASURED}: not measured)")
    for r in rows[:limit]:
        table.add_row(r["name"], r["id"], r["modality"], _num(r["detection"]), _num(r["frequency"]),
                      ",".join(map(str, r["layers"])))
    out_console.print(table)
    if len(rows) > limit:
        out_console.print(f"... {len(rows) - limit} more (use --limit or --json)")


@app.command("show")
@user_errors
def show_cmd(
    concept: str = typer.Argument(..., help="Concept name, alias or id."),
    dictionary: str = typer.Option("toyworld", "--dictionary", "-d", help=_DICT_HELP),
    out: Path | None = typer.Option(None, "--out", help="PNG of top-activating patches (default: CONCEPT.png)."),
    model: str | None = typer.Option(None, "--model", help="Model for the picture (default: the model the concept set was built on)."),
    as_json: bool = typer.Option(False, "--json", help="Print the card as one JSON object (stored values)."),
) -> None:
    """Print a concept's card and write a PNG grid of its top-activating image patches."""
    from steerlang.dictionary.browse import concept_card, find_concept, save_png, top_patch_grid
    from steerlang.dictionary.concepts import load_concept_set
    from steerlang.world.model import load_model

    cs = load_concept_set(dictionary)
    if cs.is_raw and cs.by_key(concept) is None:
        hint = cs.id_hint(*concept.split("#", 1)) if concept.split("#", 1)[-1].isdigit() else None  # type: ignore[attr-defined]
        raise InputError(f"CONCEPT: no latent {concept!r} in {cs.name}: {hint or cs.how_to_address()}")  # type: ignore[attr-defined]
    c = find_concept(cs, concept)
    card = concept_card(c)
    card["frequency"] = None if cs.is_raw else _frequency(card["frequency"], card["detection"])
    if any(g.modality == "image" for g in c.groups):
        if not (model or cs.model):
            raise InputError(f"--model: {cs.name} does not name the model its SAEs were trained on; pass --model")
        path = out or Path(f"{c.name.replace('/', '_')}.png")
        from steerlang.world.scenes import make_scene, render

        images = [render(make_scene(3, i)) for i in range(200)]  # held-out toy scenes (stream 3)
        save_png(top_patch_grid(load_model(model or cs.model), cs, c, images), path)
        card["picture"] = str(path)
    if as_json:
        out_console.print(json.dumps(card), markup=False)
        return
    out_console.print(Text.assemble((c.name, "bold"), f"  {c.key}  detection {_num(card['detection'])}  "
                                    f"frequency {_num(card['frequency']) if card['frequency'] is not None else 'not measured'}"))
    for g in card["groups"]:
        read = "" if g["read"] == "code" else f"  read {g['read']} (before TopK)"
        out_console.print(f"  layer {g['layer']} {g['modality']:5s} latents {g['latents']}{read}  scale {_num(g['scale'])}  "
                          f"threshold {_num(g['threshold'])}  precision {_num(g['precision'])}  recall {_num(g['recall'])}",
                          markup=False)
    if "picture" in card:
        out_console.print(f"wrote {card['picture']}", markup=False)


def _raw_features(cs: Any, query: str | None, as_json: bool) -> None:
    """`steer features` on raw SAEs: no named concepts; how to address latents, and the SAEs (or one latent)."""
    if query and "#" in query:
        c = cs.by_key(query)
        if c is None:
            space, _, index = query.partition("#")
            raise InputError(f"no latent {query!r} in {cs.name}: {cs.id_hint(space, int(index)) if index.isdigit() else cs.how_to_address()}")
        rows = [{"id": c.key, "layer": g.layer, "modality": g.modality, "latent": c.index, "sae": str(cs.slots[(g.layer, g.modality)].path),
                 **_latent_stats(cs.slots[(g.layer, g.modality)].path, c.index)} for g in c.groups]
    elif query:
        raise InputError(f"no concept matches {query!r}: {cs.how_to_address()}")
    else:
        rows = cs.rows()
    if as_json:
        for r in rows:
            out_console.print(json.dumps(r), markup=False)
        return
    out_console.print(cs.how_to_address(), markup=False, soft_wrap=True)
    if not (query and "#" in query):  # per SAE: what a person needs to write a program
        rows = [{"layer": r["layer"], "modality": r["modality"], "ids": r["ids"],
                 "architecture": r["architecture"] + (f" k={r['k']}" if r["k"] else ""), "format": r["format"],
                 "hook": r["hook_name"] or "-", "path": r["path"]} for r in rows]
    table = Table()
    for key in rows[0] if rows else ("layer",):
        table.add_column(key, overflow="fold")
    for r in rows:
        table.add_row(*(_num(v) for v in r.values()))
    out_console.print(table)


def _latent_stats(sae: Path, index: int) -> dict[str, Any]:
    """A latent's firing frequency and mean activation from its SAE's card.json (steerlang's), if any."""
    from steerlang.dictionary.io import load_card

    stats = ((load_card(sae) if sae.is_dir() else None) or {}).get("stats") or {}
    out = {}
    for key in ("firing_frequency", "mean_activation"):
        values = stats.get(key)
        if isinstance(values, list) and index < len(values):
            out[key] = values[index]
    return out
