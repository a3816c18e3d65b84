"""Tiny corpora built in tmp_path: a few PNGs written with PIL and a metadata file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_support import png, write_jsonl


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """An imagefolder corpus of 4 good rows, images in the root and in a subfolder."""
    root = tmp_path / "corpus"
    names = ["a.png", "sub/b.png", "sub/deeper/c.png", "d.png"]
    pixels = {n: png(root / n, i) for i, n in enumerate(names)}
    write_jsonl(root / "metadata.jsonl", [
        {"file_name": n, "text": f"caption {i}", "caption": f"other {i}", "source": "x"} for i, n in enumerate(names)
    ])
    return root, pixels
