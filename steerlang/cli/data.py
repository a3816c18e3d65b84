"""`steer data ...`: check a corpus, write the toy world as one (thin over `steerlang.data`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from steerlang.cli import app, err_console, out_console, terminal_bar, user_errors
from steerlang.errors import InputError

data_app = typer.Typer(help="Datasets: check an image-caption corpus, export the toy world as one.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("check")
@user_errors
def check_cmd(
    source: str = typer.Argument(..., metavar="DIR", help="Corpus folder (metadata.jsonl/.csv/.parquet), a "
                                 "save_to_disk folder, or toyworld:SEED:COUNT."),
    caption_column: str = typer.Option("text", "--caption-column", help="Column holding the caption."),
    prompt_column: str | None = typer.Option(None, "--prompt-column", help="Column holding a per-row prompt (optional)."),
    split: str | None = typer.Option(None, "--split", help="Split subfolder to read (default: the corpus folder, or train/)."),
    image_column: str | None = typer.Option(None, "--image-column", help="Image column of a save_to_disk folder "
                                            "(default: its only Image column)."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 if any row is bad (every row is still checked and reported)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object on stdout."),
    examples: int = typer.Option(5, "--examples", min=0, help="Bad rows to show per reason."),
) -> None:
    """Read every row and decode every image; print samples and bad rows by reason (exit 1 if none is usable, or --strict and any is bad)."""
    from steerlang.data import open_dataset

    ds = open_dataset(source, caption_column, prompt_column=prompt_column, split=split, image_column=image_column,
                      max_examples=examples)
    with terminal_bar("checking", ds.count_rows()) as on_row:
        report = ds.check(on_row=on_row)
    if as_json:
        out_console.print(json.dumps(report.to_json()), markup=False)
    else:
        for line in report.summary():
            out_console.print(line, markup=False)
    if report.good == 0:
        raise InputError(f"{report.source}: no usable sample ({report.n_bad} bad rows); fix the rows listed above")
    if strict and report.n_bad:
        first = next(iter(report.examples.values()))[0] if report.examples else None
        where = f"; first: {first.message()}" if first else ""
        raise InputError(f"--strict: {report.n_bad} bad rows in {report.source}{where}")


@data_app.command("toy")
@user_errors
def toy_cmd(
    seed: int = typer.Option(..., "--seed", help="Scene stream; scene i of a seed never changes."),
    count: int = typer.Option(..., "--count", help="How many scenes to write."),
    out: Path = typer.Option(..., "--out", help="Corpus folder to write (replaced whole if it holds an earlier corpus)."),
    mismatch_rate: float = typer.Option(0.0, "--mismatch-rate", help="Fraction of pairs whose text names a wrong object."),
    with_kinds: list[str] = typer.Option([], "--with", help="A kind every scene contains (repeatable)."),
    without_kinds: list[str] = typer.Option([], "--without", help="A kind no scene contains (repeatable)."),
    objects: int | None = typer.Option(None, "--objects", help="Exact number of objects per scene (1-3)."),
) -> None:
    """Write toy-world scenes as an imagefolder corpus: PNGs, metadata.jsonl (file_name, text), truth.jsonl (for measuring)."""
    from steerlang.world.corpus import export_toy_corpus

    with terminal_bar("writing", count if count > 0 else None) as on_row:
        n = export_toy_corpus(out, seed=seed, count=count, mismatch_rate=mismatch_rate, with_kinds=with_kinds,
                              without_kinds=without_kinds, objects=objects, on_row=on_row)
    err_console.print(f"wrote {n} samples to {out} (metadata.jsonl, truth.jsonl)", markup=False)
