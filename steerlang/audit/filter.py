"""Keep the best fraction of a corpus by an audit score and write it as a corpus again.

An imagefolder corpus keeps its layout: each kept image at the same relative path (hard-linked
where the file system allows, else copied; `copy=True` always copies) and ``metadata.jsonl`` with
the kept rows in corpus order, every column as read. Other sources (a ``save_to_disk`` folder, the
toy world) are written by `steerlang.data.write.write_imagefolder` (PNGs + metadata.jsonl). The
folder is built beside its destination and swapped in whole (its files keep their modes: a
hard link shares its source's).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from steerlang.atomic import recover_dir, replace_dir, temp_dir_beside
from steerlang.audit.report import AuditReport
from steerlang.data import Dataset
from steerlang.data.write import METADATA, check_corpus_out, write_imagefolder
from steerlang.errors import InputError


def kept_rows(report: AuditReport, keep: float, by: str = "mismatch") -> list[int]:
    """The rows of the best `keep` fraction of the audited samples by `by` (round half up, at least
    one), in corpus order. The ranking is the report's: best first, ties broken by row."""
    if not 0 < keep <= 1:
        raise InputError(f"--keep: give a fraction in (0, 1], got {keep}")
    order = report.ranking(by)
    n = max(1, math.floor(keep * report.n + 0.5))
    return sorted(report.samples[i].row for i in order[:n])


def check_out_data(dataset: Dataset, out: str | os.PathLike) -> Path:
    """Refuse an --out-data that writing must not replace: a file, a non-empty folder that holds no
    corpus, or a folder inside (or holding) the corpus being read."""
    out = Path(out)
    src = getattr(dataset, "folder", None) or getattr(dataset, "root", None)
    if src is not None:
        folder, target = Path(src).resolve(), out.resolve()
        if target == folder or folder.is_relative_to(target) or target.is_relative_to(folder):
            raise InputError(f"--out-data: {out} overlaps the corpus being filtered ({folder}); give a folder outside it")
    return check_corpus_out(out)


def write_kept(dataset: Dataset, rows: list[int], out: str | os.PathLike, *, copy: bool = False,
               on_row: Callable[[int], None] | None = None) -> int:
    """Write the samples of `dataset` whose row is in `rows` to `out` (see the module docstring);
    returns how many were written."""
    out = Path(out)
    wanted = set(rows)
    folder = getattr(dataset, "folder", None)
    if getattr(dataset, "kind", "") != "imagefolder" or folder is None:
        return write_imagefolder((s for s in dataset.iter() if s.row in wanted), out, on_row=on_row)
    check_out_data(dataset, out)
    folder = Path(folder)
    recover_dir(out)
    tmp = temp_dir_beside(out)
    caption = getattr(dataset, "caption_column", "text")
    prompt_col = getattr(dataset, "prompt_column", None)
    n = 0
    try:
        with (tmp / METADATA).open("w", encoding="utf-8") as meta:
            for s in dataset.iter():
                if s.row not in wanted:
                    continue
                dest = tmp / s.name
                if not dest.exists():  # several captions may share one image
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    _link_or_copy(folder / s.name, dest, copy)
                rec = {"file_name": s.name, caption: s.text}
                if prompt_col is not None:
                    rec[prompt_col] = s.prompt or ""
                rec.update({k: v for k, v in s.meta.items() if k not in rec})
                meta.write(json.dumps(rec) + "\n")
                n += 1
                if on_row is not None:
                    on_row(n)
        if n == 0:
            raise InputError("nothing to write: no kept row was readable")
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return n


def _link_or_copy(src: Path, dest: Path, copy: bool) -> None:
    if not copy:
        try:
            os.link(src, dest)
            return
        except OSError:
            pass
    shutil.copy2(src, dest)
