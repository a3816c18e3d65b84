"""Reading user images and writing model folders safely."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from steerlang.errors import InputError


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
    """Write a folder in a temporary sibling, then swap it into place: never a half-written folder."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        # mkdtemp and some writers make owner-only files; shipped folders should read like any other.
        tmp.chmod(0o755)
        for f in tmp.rglob("*"):
            f.chmod(0o755 if f.is_dir() else 0o644)
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
