"""Export toy-world scenes as an imagefolder corpus, so the toy world is one dataset among others."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence


def export_toy_corpus(
    out: str | os.PathLike,
    *,
    seed: int,
    count: int,
    mismatch_rate: float = 0.0,
    with_kinds: Sequence[str] = (),
    without_kinds: Sequence[str] = (),
    objects: int | None = None,
    on_row: Callable[[int], None] | None = None,
) -> int:
    """Write scenes 0..count-1 of stream `seed` to `out`: ``0000.png ...``, ``metadata.jsonl``
    (``file_name``, ``text``: the caption shown with the image, wrong for a mismatched pair) and
    ``truth.jsonl`` (true caption, objects and cells, whether mismatched; for measuring only).
    `out` is replaced whole if it is an earlier corpus; returns how many scenes were written."""
    from steerlang.data.toy import ToyWorldSource
    from steerlang.data.write import check_corpus_out, write_imagefolder

    check_corpus_out(out)
    source = ToyWorldSource(seed, count, mismatch_rate=mismatch_rate, with_kinds=with_kinds,
                            without_kinds=without_kinds, objects=objects)
    return write_imagefolder(source.iter(), out, on_row=on_row)
