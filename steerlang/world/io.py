"""Reading user images and writing model folders safely."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from steerlang.atomic import chmod_tree_default, recover_dir, replace_dir, temp_dir_beside
from steerlang.errors import InputError, SteerError


def open_image(path: str | os.PathLike, argument: str = "IMAGE") -> Image.Image:
    """An RGB image from disk, or an InputError naming the argument and the file."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{argument}: {p} does not exist")
    if p.is_dir():
        raise InputError(f"{argument}: {p} is a folder, not an image file")
    try:
        with Image.open(p) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{argument}: {p} is not a readable image ({type(exc).__name__}); give a PNG or JPEG file") from exc


@contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Write a folder in a temporary sibling, then swap it into place (`steerlang.atomic.replace_dir`):
    never a half-written folder, never a moment with no folder at `final`; on any error or Ctrl-C
    the temporary folder is removed and `final` is left as it was."""
    final = Path(final)
    recover_dir(final)
    tmp = temp_dir_beside(final)
    try:
        yield tmp
        # Some writers (safetensors) make owner-only files; written folders read like any other.
        chmod_tree_default(tmp)
        replace_dir(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_model_out(out: str | os.PathLike, *, force: bool = False) -> None:
    """Refuse, before minutes of training, an --out that `atomic_dir` must not replace: a file, a
    folder that holds no model (it would be replaced whole), or, without `force`, the shipped model."""
    from steerlang.world.model import shipped_model_path

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} is a file; give a folder for the model")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if entries and "config.json" not in entries:
        raise InputError(f"--out: {out} is not empty and holds no model ({', '.join(entries[:3])}); "
                         "the trained model replaces --out whole: give a new folder")
    try:
        shipped = shipped_model_path().resolve()
    except SteerError:  # no shipped model (a bare install): nothing to protect
        return
    if entries and out.resolve() == shipped and not force:
        raise InputError(f"--out: {out} is the shipped toy model; add --force to replace it, "
                         f"or train into a new folder (e.g. --out runs/{out.name})")
