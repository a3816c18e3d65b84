"""`steer audit DATA`: coverage, co-occurrence bias, image-caption agreement and SAE-V scores of a
corpus, with a JSON / HTML report and filtering (thin over `steerlang.audit`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import typer

from steerlang.cli import app, err_console, out_console, terminal_bar, user_errors
from steerlang.errors import InputError


def _work_dir(outputs: list[Path | None]) -> Path | None:
    """The resumable work folder: hidden, beside the first output (none without an output)."""
    for out in outputs:
        if out is not None:
            return out.parent / f".{out.name}.audit-work"
    return None


@app.command("audit")
@user_errors
def audit_cmd(
    data: str = typer.Argument(..., metavar="DATA", help="Corpus folder (metadata.jsonl/.csv/.parquet), a save_to_disk "
                               "folder, or toyworld:SEED:COUNT."),
    model: str = typer.Option("toyworld", "--model", help='Model: "toyworld", a folder saved with save_pretrained, or a hub id.'),
    dictionary: str = typer.Option("toyworld", "--dictionary", help='Concept-set folder (or "toyworld").'),
    layer: int | None = typer.Option(None, "--layer", help="Layer of the image groups and SAE-V (alone: of the caption "
                                     "groups too). Default: images at 2, captions at 0."),
    text_layer: int | None = typer.Option(None, "--text-layer", help="Layer of the caption groups (default: --layer, else 0)."),
    all_concepts: bool = typer.Option(False, "--all-concepts", help="Every joint concept, not only the named ones."),
    prompt: str | None = typer.Option(None, "--prompt", help='Prompt before the image (default "what is in the picture ?"; '
                                      "a row's own prompt wins)."),
    caption_column: str = typer.Option("text", "--caption-column", help="Column holding the caption."),
    prompt_column: str | None = typer.Option(None, "--prompt-column", help="Column holding a per-row prompt (optional)."),
    split: str | None = typer.Option(None, "--split", help="Split subfolder to read."),
    saev: str = typer.Option("auto", "--saev", help='SAE-V dictionary: a folder trained with --modality both at --layer, '
                             '"pairs" (aligned pairs stand in), "none", or "auto" (the set\'s own, else pairs).'),
    delta: float = typer.Option(1.0, "--delta", help="SAE-V activation bound (code units of the shared SAE)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Samples per forward pass."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the full report (one JSON object) here."),
    html_out: Path | None = typer.Option(None, "--html", help="Write a self-contained HTML report here."),
    keep: float | None = typer.Option(None, "--keep", help="Keep this fraction of the samples (with --out-data)."),
    out_data: Path | None = typer.Option(None, "--out-data", help="Write the kept samples here as an imagefolder corpus."),
    by: str = typer.Option("mismatch", "--by", help="Score to filter by: mismatch (keep the lowest), cosine, co_l0, l0 "
                           "(keep the highest)."),
    copy: bool = typer.Option(False, "--copy", help="Copy kept images instead of hard-linking them."),
    rare: float = typer.Option(0.02, "--rare", help="A concept in at most this fraction of samples is almost never shown."),
    min_count: int = typer.Option(5, "--min-count", min=1, help="Pairs together fewer times rank after all others."),
    worst: int = typer.Option(12, "--worst", min=0, help="Samples shown with their picture in the HTML report."),
) -> None:
    """Audit an image-caption corpus with the model's joint concepts: coverage and gaps, biased co-occurrence,
    per-sample image-caption mismatch, SAE-V scores; write JSON / HTML and filter."""
    from steerlang.atomic import write_text
    from steerlang.audit import SCORES, Settings, audit, kept_rows, render_html, write_kept
    from steerlang.audit.filter import check_out_data
    from steerlang.data import open_dataset

    # Every usage check before the model loads.
    if (keep is None) != (out_data is None):
        raise InputError("--keep and --out-data go together: --keep FRACTION --out-data DIR")
    if keep is not None and not 0 < keep <= 1:
        raise InputError(f"--keep: give a fraction in (0, 1], got {keep}")
    if by not in SCORES:
        raise InputError(f"--by: must be one of {', '.join(SCORES)}, got {by!r}")
    if keep is not None and by != "mismatch" and saev == "none":
        raise InputError(f"--by {by} needs SAE-V scores; drop --saev none")
    if not 0 <= rare < 1:
        raise InputError(f"--rare: give a fraction in [0, 1), got {rare}")
    for flag, path in (("--json", json_out), ("--html", html_out)):
        if path is not None and path.is_dir():
            raise InputError(f"{flag}: {path} is a folder; give a file name")
    ds = open_dataset(data, caption_column, prompt_column=prompt_column, split=split, max_examples=1000)
    if out_data is not None:
        check_out_data(ds, out_data)
    work = _work_dir([json_out, html_out, out_data])
    with terminal_bar("auditing") as on_progress:
        report = audit(ds, model, dictionary, layer=layer, text_layer=text_layer, all_concepts=all_concepts, prompt=prompt,
                       saev=saev, delta=delta, batch_size=batch_size, settings=Settings(rare=rare, min_count=min_count),
                       work_dir=work, thumbnails=worst, on_progress=on_progress)
    for line in report.summary():
        out_console.print(line, markup=False)
    if json_out is not None:
        write_text(json_out, json.dumps(report.to_json(), indent=1) + "\n")
        err_console.print(f"wrote {json_out}", markup=False)
    if html_out is not None:
        write_text(html_out, render_html(report, worst=worst))
        err_console.print(f"wrote {html_out}", markup=False)
    if keep is not None and out_data is not None:
        rows = kept_rows(report, keep, by)
        n = write_kept(ds, rows, out_data, copy=copy)
        err_console.print(f"kept {n} of {report.n} samples by {by} in {out_data}", markup=False)
    if work is not None:
        shutil.rmtree(work, ignore_errors=True)
