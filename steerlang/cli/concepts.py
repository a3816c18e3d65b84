"""`steer features` and `steer show`: browse the named concepts of a concept set."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from steerlang.cli import app, out_console, user_errors


@app.command("features")
@user_errors
def features_cmd(
    query: str | None = typer.Argument(None, help="Substring of a name or alias, or an id like joint#3."),
    dictionary: str = typer.Option("toyworld", "--dictionary", "-d", help="Concept set folder (or \"toyworld\")."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    limit: int = typer.Option(50, "--limit", min=1, help="Rows to show in the table (--json prints all)."),
) -> None:
    """List concepts: name, id, modality, detection score, frequency, layers."""
    from steerlang.dictionary.browse import list_features
    from steerlang.dictionary.concepts import load_concept_set

    rows = list_features(load_concept_set(dictionary), query)
    if as_json:
        for r in rows:
            out_console.print(json.dumps(r), markup=False)
        return
    table = Table("name", "id", "modality", "detection", "frequency", "layers")
    for r in rows[:limit]:
        det = "" if r["detection"] is None else f"{r['detection']:.3f}"
        table.add_row(r["name"], r["id"], r["modality"], det, f"{r['frequency']:.3f}", ",".join(map(str, r["layers"])))
    out_console.print(table)
    if len(rows) > limit:
        out_console.print(f"... {len(rows) - limit} more (use --limit or --json)")


@app.command("show")
@user_errors
def show_cmd(
    concept: str = typer.Argument(..., help="Concept name, alias or id."),
    dictionary: str = typer.Option("toyworld", "--dictionary", "-d"),
    out: Path | None = typer.Option(None, "--out", help="PNG of top-activating patches (default: CONCEPT.png)."),
    model: str | None = typer.Option(None, "--model", help="Default: the model the concept set was built on."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Print a concept's card and write a PNG grid of its top-activating image patches."""
    from steerlang.dictionary.browse import concept_card, find_concept, save_png, top_patch_grid
    from steerlang.dictionary.concepts import load_concept_set
    from steerlang.world.model import load_model

    cs = load_concept_set(dictionary)
    c = find_concept(cs, concept)
    card = concept_card(c)
    if any(g.modality == "image" for g in c.groups):
        path = out or Path(f"{c.name.replace('/', '_')}.png")
        save_png(top_patch_grid(load_model(model or cs.model), cs, c), path)
        card["picture"] = str(path)
    if as_json:
        out_console.print(json.dumps(card), markup=False)
        return
    out_console.print(f"[bold]{c.name}[/bold]  {c.key}  detection {card['detection']}  frequency {card['frequency']:.3f}")
    for g in card["groups"]:
        read = "" if g["read"] == "code" else f"  read {g['read']} (before TopK)"
        out_console.print(f"  layer {g['layer']} {g['modality']:5s} latents {g['latents']}{read}  scale {g['scale']:.3g}  "
                          f"threshold {g['threshold']}  precision {g['precision']}  recall {g['recall']}", markup=False)
    if "picture" in card:
        out_console.print(f"wrote {card['picture']}", markup=False)
