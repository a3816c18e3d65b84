"""Write any stream of samples as an imagefolder corpus (PNG files + metadata.jsonl).

The folder is written beside its destination and swapped into place when complete
(`steerlang.atomic.replace_dir`): an interrupted export leaves no half-written corpus. Samples that
carry generator ground truth (`Sample.truth`) also get a ``truth.jsonl`` with one line per image,
in the same order; it is for measuring and is not read back as captions.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from steerlang.atomic import chmod_tree_default, recover_dir, replace_dir, temp_dir_beside
from steerlang.data.sample import Sample
from steerlang.errors import InputError

METADATA = "metadata.jsonl"
TRUTH = "truth.jsonl"


def check_corpus_out(out: str | os.PathLike) -> Path:
    """Refuse an --out that writing a corpus must not replace: a file, or a non-empty folder that holds
    no corpus (a corpus folder, with a metadata.jsonl, is replaced whole)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} is a file; give a folder for the corpus")
    if out.is_dir() and any(out.iterdir()) and not (out / METADATA).is_file():
        raise InputError(f"--out: {out} is not empty and holds no corpus (no {METADATA}); the corpus replaces "
                         "--out whole: give a new folder")
    return out


def _file_name(sample: Sample, taken: set[str]) -> str:
    # Keep the sample's own name when it is a safe relative .png path not yet used; else number it.
    name = sample.name.replace("\\", "/")
    norm = os.path.normpath(name)
    if (name.lower().endswith(".png") and not os.path.isabs(name) and not norm.startswith("..")
            and norm not in taken):
        return norm.replace(os.sep, "/")
    return f"{sample.row:06d}.png" if f"{sample.row:06d}.png" not in taken else f"row-{sample.row}.png"


def write_imagefolder(
    samples: Iterable[Sample],
    out: str | os.PathLike,
    *,
    on_row: Callable[[int], None] | None = None,
) -> int:
    """Write `samples` to `out` as an imagefolder corpus: each image as PNG under its sample's name
    (numbered by row when that name is not a usable, unique .png path) and ``metadata.jsonl`` with
    ``file_name``, ``text`` (and ``prompt`` when a sample has one). Returns how many were written."""
    out = check_corpus_out(out)
    recover_dir(out)
    tmp = temp_dir_beside(out)
    n = 0
    taken: set[str] = set()
    try:
        with (tmp / METADATA).open("w", encoding="utf-8") as meta, (tmp / TRUTH).open("w", encoding="utf-8") as truth:
            for sample in samples:
                name = _file_name(sample, taken)
                taken.add(name)
                dest = tmp / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                sample.image.save(dest, format="PNG")
                rec = {"file_name": name, "text": sample.text}
                if sample.prompt is not None:
                    rec["prompt"] = sample.prompt
                meta.write(json.dumps(rec) + "\n")
                if sample.truth is not None:
                    truth.write(json.dumps({"file_name": name, **dict(sample.truth)}) + "\n")
                n += 1
                if on_row is not None:
                    on_row(n)
        if (tmp / TRUTH).stat().st_size == 0:
            (tmp / TRUTH).unlink()
        if n == 0:
            raise InputError("nothing to write: the stream produced no samples")
        chmod_tree_default(tmp)
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return n
