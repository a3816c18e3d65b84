"""A sample, and the streaming machinery every reader shares.

A dataset is a stream of `Sample`s: an image, its caption, an optional prompt, and optional regions
when the source really has them. Readers never hold the corpus in memory: rows are read one at a
time and each image is decoded as its sample is produced (a row whose image does not decode is
reported as a bad row right there, not later by whoever uses the sample).

Order is the order of the source (metadata file, Arrow table, toy stream index), so two passes give
the same samples. ``dataset.iter(shard=(rank, world_size))`` keeps the rows whose 0-based index `i`
has ``i % world_size == rank``: the shards of one world size are disjoint, cover every row, and each
is deterministic.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from steerlang.data.report import UNREADABLE_IMAGE, BadRow, DataReport
from steerlang.errors import InputError


@dataclass(frozen=True)
class Region:
    """An annotated region of the image: a label and a pixel box (x0, y0, x1, y1), x1/y1 exclusive."""

    label: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True, eq=False)
class Sample:
    """One image-text pair of a dataset.

    `row` is the 0-based index of the row in its source and is unique within it; `name` is the image's
    file name as the source gives it (relative to the metadata file for an imagefolder corpus) and
    may repeat when several captions share an image. `line` is the 1-based line of the metadata file
    (line-based sources only). `image` is RGB, decoded when the sample was produced.

    `regions` are set only when the source has them. `truth` is ground truth a generator knows (the
    toy world's kinds, cells and true caption): for measuring results only, never an input to
    building concepts or to a model. `meta` holds the row's other columns as read.
    """

    row: int
    name: str
    text: str
    image: Image.Image = field(repr=False)
    prompt: str | None = None
    regions: tuple[Region, ...] | None = None
    truth: Mapping[str, Any] | None = None
    line: int | None = None
    meta: Mapping[str, Any] = field(default_factory=dict, repr=False)


def check_shard(shard: tuple[int, int] | None) -> tuple[int, int]:
    """(rank, world_size) checked: 0 <= rank < world_size; None means the whole dataset, (0, 1)."""
    if shard is None:
        return 0, 1
    try:
        rank, world = (int(x) for x in shard)
    except (TypeError, ValueError):
        raise InputError(f"shard: give (rank, world_size) as two integers, got {shard!r}") from None
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"shard: need 0 <= rank < world_size, got rank {rank} of world_size {world}")
    return rank, world


def shard_size(n_rows: int, rank: int, world: int) -> int:
    """Rows of shard `rank` among `n_rows` rows split round-robin over `world` shards."""
    return len(range(rank, n_rows, world))


def decode_image(data: bytes | str | os.PathLike) -> Image.Image:
    """An RGB image from bytes or a file; raises whatever PIL raises on a file that is not an image."""
    src = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    with Image.open(src) as img:
        img.load()
        return img.convert("RGB")


def unreadable(file: str, row: int, name: str, exc: BaseException, line: int | None = None) -> BadRow:
    detail = f"not an image PIL can read ({type(exc).__name__}: {str(exc)[:120]})".replace(" ()", "")
    return BadRow(UNREADABLE_IMAGE, file, row, detail, line=line, name=name)


class SampleStream(Iterator[Sample]):
    """One pass over a dataset (or one shard of it); `report` fills in as samples are produced."""

    def __init__(self, items: Iterator[Sample], report: DataReport) -> None:
        self._items = items
        self.report = report

    def __iter__(self) -> SampleStream:
        return self

    def __next__(self) -> Sample:
        return next(self._items)

    def close(self) -> None:
        close = getattr(self._items, "close", None)
        if close is not None:
            close()


class Dataset:
    """Base of the readers: `iter(shard=...)` streams samples, counting and skipping bad rows.

    Subclasses implement `_items(rank, world)`, yielding a `Sample` or a `BadRow` for each row of the
    shard in source order, and `count_rows()`. `report` is the report of the latest pass.
    """

    kind = "dataset"

    def __init__(self, location: str | os.PathLike, *, strict: bool = False, max_examples: int = 5) -> None:
        self.location = str(location)
        self.strict = strict
        self.max_examples = max_examples
        self.report: DataReport | None = None

    # -- to implement ------------------------------------------------------------------------
    def _items(self, rank: int, world: int) -> Iterator[Sample | BadRow]:
        raise NotImplementedError

    def count_rows(self) -> int:
        """Rows in the source, good or bad (reads the metadata, never the images)."""
        raise NotImplementedError

    @property
    def columns(self) -> tuple[str, ...]:
        return ()

    # -- shared ------------------------------------------------------------------------------
    def iter(self, shard: tuple[int, int] | None = None) -> SampleStream:
        """Stream the samples of `shard` (default: all rows) in source order. Bad rows are skipped and
        counted in the stream's `report` (also `self.report`); with `strict` the first one raises
        an InputError naming the file and line."""
        rank, world = check_shard(shard)
        report = self._new_report(rank, world)
        return SampleStream(self._generate(rank, world, report), report)

    def __iter__(self) -> Iterator[Sample]:
        return self.iter()

    def check(self, shard: tuple[int, int] | None = None,
              on_row: Callable[[int], None] | None = None) -> DataReport:
        """Stream every sample of `shard` once (decoding each image) and return the report.
        `on_row(rows_seen)` is called after each row, good or bad (for progress bars)."""
        rank, world = check_shard(shard)
        report = self._new_report(rank, world)
        for _ in self._generate(rank, world, report, on_row):
            pass
        return report

    def _new_report(self, rank: int, world: int) -> DataReport:
        self.report = DataReport(self.location, self.kind, (rank, world), max_examples=self.max_examples)
        return self.report

    def _generate(self, rank: int, world: int, report: DataReport,
                  on_row: Callable[[int], None] | None = None) -> Iterator[Sample]:
        for item in self._items(rank, world):
            if isinstance(item, BadRow):
                report.add_bad(item)
                if on_row is not None:
                    on_row(report.rows)
                if self.strict:
                    raise InputError(f"{item.message()}; fix or remove this row, or read without strict "
                                     "to skip bad rows")
            else:
                report.good += 1
                if on_row is not None:
                    on_row(report.rows)
                yield item
        report.complete = True


class RowSubset(Dataset):
    """The rows `rows` of another dataset, in its order, with their row numbers (so a harvest's rows
    keep naming the same samples). Rows outside the subset are still read by the source (an image
    folder decodes them) but never reach the stream."""

    def __init__(self, inner: Dataset, rows: Iterable[int]) -> None:
        super().__init__(inner.location, strict=inner.strict, max_examples=inner.max_examples)
        self.inner, self.rows = inner, frozenset(int(r) for r in rows)
        self.kind = inner.kind
        for name in ("caption_column", "prompt_column", "split"):
            if hasattr(inner, name):
                setattr(self, name, getattr(inner, name))
        # What a harvest fingerprints: the source's own options and which rows are kept.
        self.options = {"of": getattr(inner, "options", None), "rows": sorted(self.rows)}

    def _items(self, rank: int, world: int) -> Iterator[Sample | BadRow]:
        for item in self.inner._items(rank, world):
            if item.row in self.rows:
                yield item

    def count_rows(self) -> int:
        return len(self.rows)

    @property
    def columns(self) -> tuple[str, ...]:
        return self.inner.columns
