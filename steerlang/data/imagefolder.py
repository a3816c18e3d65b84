"""Reader of the Hugging Face *imagefolder* layout with captions.

A corpus folder holds images (in any subfolders) and one metadata file, ``metadata.jsonl``,
``metadata.csv`` or ``metadata.parquet``, with a ``file_name`` column (the image's path relative to
the metadata file's folder) and a caption column (``text`` unless told otherwise). The metadata file
sits in the corpus folder itself, or in split subfolders (``train/metadata.jsonl``,
``test/metadata.jsonl``...), each split's file names relative to its own folder.

The metadata file is read one row at a time (JSON lines and CSV records as they come, Parquet a
row group at a time) and each image is decoded only when its sample is produced.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from steerlang.data.report import (
    BAD_FILE_NAME,
    CAPTION_NOT_TEXT,
    EMPTY_CAPTION,
    MALFORMED_ROW,
    MISSING_COLUMN,
    MISSING_IMAGE,
    BadRow,
)
from steerlang.data.sample import Dataset, Sample, decode_image, unreadable
from steerlang.errors import InputError

METADATA_FILES: tuple[str, ...] = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
FILE_NAME = "file_name"
# Split folders in the order the default split is chosen: "train" first, as `datasets` does.
PREFERRED_SPLITS: tuple[str, ...] = ("train", "validation", "test")

_ABSENT = object()  # a CSV record shorter than its header: the missing fields


def metadata_in(folder: Path) -> Path | None:
    """The metadata file of `folder`, None if it has none; an InputError if it has two kinds."""
    found = [folder / name for name in METADATA_FILES if (folder / name).is_file()]
    if len(found) > 1:
        raise InputError(f"{folder}: holds {' and '.join(p.name for p in found)}; keep one metadata file per folder")
    return found[0] if found else None


def split_folders(root: Path) -> list[str]:
    """Names of the subfolders of `root` that hold a metadata file (the corpus's splits)."""
    if not root.is_dir():
        return []
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and any((p / m).is_file() for m in METADATA_FILES))
    return sorted(names, key=lambda n: (PREFERRED_SPLITS.index(n) if n in PREFERRED_SPLITS else len(PREFERRED_SPLITS), n))


def find_metadata(root: Path, split: str | None = None) -> tuple[Path | None, str | None]:
    """(metadata file, split read) of an imagefolder corpus, or (None, None) when there is none.

    With `split`, the metadata of ``root/split``. Without it, the metadata in `root`; failing that,
    the only split folder, or ``train`` when there are several (`datasets`' default split)."""
    if split is not None:
        folder = root / split
        if not folder.is_dir():
            have = split_folders(root)
            hint = f"splits here: {', '.join(have)}" if have else "this corpus has no split folders"
            raise InputError(f"--split: {root} has no folder {split!r} ({hint})")
        found = metadata_in(folder)
        if found is None:
            raise InputError(f"--split: {folder} holds no {' or '.join(METADATA_FILES)}; put the split's "
                             f"metadata file there, with {FILE_NAME} and caption columns")
        return found, split
    found = metadata_in(root)
    if found is not None:
        return found, None
    splits = split_folders(root)
    if len(splits) == 1 or (splits and splits[0] == "train"):
        return metadata_in(root / splits[0]), splits[0]
    if splits:
        raise InputError(f"{root}: holds the splits {', '.join(splits)}; choose one with --split (split=)")
    return None, None


class ImageFolderDataset(Dataset):
    """Samples of an imagefolder corpus, in the order of its metadata file.

    `caption_column` names the caption (default ``text``); `prompt_column`, when given, a per-row
    prompt. Other columns are kept in `Sample.meta`. Opening checks the folder, the columns (from the
    CSV header, the Parquet schema, or the first JSON line) and that there is at least one row; the
    rows themselves are checked as they are streamed."""

    kind = "imagefolder"

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        caption_column: str = "text",
        prompt_column: str | None = None,
        split: str | None = None,
        strict: bool = False,
        max_examples: int = 5,
    ) -> None:
        root = Path(root)
        if not root.exists():
            raise InputError(f"DIR: {root} does not exist; give a corpus folder holding metadata.jsonl or metadata.csv")
        if root.is_file():
            if root.name not in METADATA_FILES:
                raise InputError(f"DIR: {root} is a file; give the corpus folder (the one holding metadata.jsonl)")
            metadata, split = root, None
        else:
            metadata, split = find_metadata(root, split)
            if metadata is None:
                raise InputError(no_metadata_message(root))
        super().__init__(metadata, strict=strict, max_examples=max_examples)
        self.root = root
        self.metadata = metadata
        self.folder = metadata.parent
        self.split = split
        self.format = metadata.suffix.lstrip(".")
        self.caption_column = caption_column
        self.prompt_column = prompt_column
        self._columns = self._read_columns()
        self._check_columns()

    @property
    def columns(self) -> tuple[str, ...]:
        return self._columns

    # -- opening -----------------------------------------------------------------------------
    def _read_columns(self) -> tuple[str, ...]:
        path = self.metadata
        if self.format == "csv":
            with _open_csv_lines(path) as (lines, _bad):
                reader = csv.reader(lines)
                try:
                    header = next(reader, None)
                    has_row = any(r for r in reader)
                except csv.Error as exc:
                    raise InputError(f"{path}:{reader.line_num}: not a CSV file ({exc}); write it with a "
                                     "CSV writer, or use metadata.jsonl") from None
            if not header or not any(h.strip() for h in header):
                raise InputError(f"{path}: is empty; the corpus has no rows (the first line names the columns: "
                                 f"{FILE_NAME},{self.caption_column})")
            if not has_row:
                raise InputError(f"{path}: has a header but no rows; the corpus is empty")
            return tuple(header)
        if self.format == "parquet":
            pf = _parquet_file(path)
            if pf.metadata.num_rows == 0:
                raise InputError(f"{path}: holds no rows; the corpus is empty")
            return tuple(pf.schema_arrow.names)
        first_bad: int | None = None
        any_row = False
        with path.open("rb") as f:
            for line_no, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                any_row = True
                rec = _parse_json_line(raw)
                if isinstance(rec, dict):
                    return tuple(rec)
                first_bad = first_bad or line_no
        if not any_row:
            raise InputError(f"{path}: holds no rows; the corpus is empty (each line should be a JSON object "
                             f"with {FILE_NAME} and {self.caption_column})")
        raise InputError(f"{path}: no line is a JSON object (line {first_bad} is not); each line should be "
                         f'one object like {{"{FILE_NAME}": "a.png", "{self.caption_column}": "..."}}')

    def _check_columns(self) -> None:
        have = ", ".join(self._columns) or "none"
        if FILE_NAME not in self._columns:
            raise InputError(f"{self.metadata}: has no {FILE_NAME} column (columns: {have}); an imagefolder "
                             f"metadata file names each image, relative to its folder, in {FILE_NAME}")
        for flag, col in (("--caption-column", self.caption_column), ("--prompt-column", self.prompt_column)):
            if col is not None and col not in self._columns:
                raise InputError(f"{flag}: no column {col!r} in {self.metadata} (columns: {have}); "
                                 f"pick one of them with {flag}")

    def count_rows(self) -> int:
        if self.format == "parquet":
            return int(_parquet_file(self.metadata).metadata.num_rows)
        return sum(1 for _ in self._records(0, 1, parse=False))

    # -- streaming ---------------------------------------------------------------------------
    def _records(self, rank: int, world: int, *, parse: bool = True) -> Iterator[tuple[int, int | None, Any]]:
        """(row, line, record) for each row of the shard: a dict, or a str saying why it is malformed."""
        if self.format == "jsonl":
            yield from self._jsonl_records(rank, world, parse)
        elif self.format == "csv":
            yield from self._csv_records(rank, world)
        else:
            yield from self._parquet_records(rank, world)

    def _jsonl_records(self, rank: int, world: int, parse: bool) -> Iterator[tuple[int, int | None, Any]]:
        row = -1
        with self.metadata.open("rb") as f:
            for line_no, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue  # blank lines are not rows
                row += 1
                if row % world != rank:
                    continue
                if not parse:
                    yield row, line_no, None
                    continue
                rec = _parse_json_line(raw)
                if not isinstance(rec, dict):
                    rec = rec if isinstance(rec, str) else f"the line is JSON but not an object ({type(rec).__name__})"
                yield row, line_no, rec

    def _csv_records(self, rank: int, world: int) -> Iterator[tuple[int, int | None, Any]]:
        with _open_csv_lines(self.metadata) as (lines, bad_lines):
            reader = csv.DictReader(lines, restval=_ABSENT)
            row = -1
            end = 1  # last physical line of the previous record (the header is line 1)
            while True:
                try:
                    rec = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    rec = f"not a CSV record ({exc})"
                row += 1
                start, end = end + 1, reader.line_num
                if row % world != rank:
                    continue
                if isinstance(rec, dict) and any(n in bad_lines for n in range(start, end + 1)):
                    rec = "not UTF-8 text"
                if isinstance(rec, dict):
                    rec.pop(None, None)  # fields beyond the header
                yield row, end, rec

    def _parquet_records(self, rank: int, world: int) -> Iterator[tuple[int, int | None, Any]]:
        pf = _parquet_file(self.metadata)
        row = -1
        for batch in pf.iter_batches(batch_size=256):
            for rec in batch.to_pylist():
                row += 1
                if row % world == rank:
                    yield row, None, rec

    def _items(self, rank: int, world: int) -> Iterator[Sample | BadRow]:
        for row, line, rec in self._records(rank, world):
            yield self._sample(row, line, rec)

    def _sample(self, row: int, line: int | None, rec: Any) -> Sample | BadRow:
        file = str(self.metadata)

        def bad(reason: str, detail: str, name: str | None = None) -> BadRow:
            return BadRow(reason, file, row, detail, line=line, name=name)

        if isinstance(rec, str):
            return bad(MALFORMED_ROW, rec)
        fn = rec.get(FILE_NAME, _ABSENT)
        if fn is _ABSENT or fn is None:
            return bad(MISSING_COLUMN, f"no {FILE_NAME} in this row")
        if not isinstance(fn, str) or not fn.strip():
            return bad(BAD_FILE_NAME, f"{FILE_NAME} must be a relative path, got {fn!r}")
        text = rec.get(self.caption_column, _ABSENT)
        if text is _ABSENT:
            return bad(MISSING_COLUMN, f"no {self.caption_column} in this row", fn)
        if text is None or (isinstance(text, str) and not text.strip()):
            return bad(EMPTY_CAPTION, f"{self.caption_column} is empty", fn)
        if not isinstance(text, str):
            return bad(CAPTION_NOT_TEXT, f"{self.caption_column} is a {type(text).__name__}, not text", fn)
        prompt = None
        if self.prompt_column is not None:
            prompt = rec.get(self.prompt_column, _ABSENT)
            if prompt is _ABSENT:
                return bad(MISSING_COLUMN, f"no {self.prompt_column} in this row", fn)
            if prompt is not None and not isinstance(prompt, str):
                return bad(CAPTION_NOT_TEXT, f"{self.prompt_column} is a {type(prompt).__name__}, not text", fn)
            prompt = prompt if prompt and prompt.strip() else None
        rel = os.path.normpath(fn)
        if os.path.isabs(fn) or rel == ".." or rel.startswith(".." + os.sep) or "://" in fn:
            return bad(BAD_FILE_NAME, f"{FILE_NAME} must be a path inside {self.folder}, got {fn!r}", fn)
        path = self.folder / rel
        if not path.is_file():
            return bad(MISSING_IMAGE, f"{path} does not exist" if not path.exists() else f"{path} is not a file", fn)
        try:
            image = decode_image(path)
        except Exception as exc:  # noqa: BLE001 - any decoder failure on a user file is a bad row
            return unreadable(file, row, fn, exc, line)
        used = {FILE_NAME, self.caption_column, self.prompt_column}
        meta = {k: v for k, v in rec.items() if k not in used and v is not _ABSENT}
        return Sample(row=row, name=fn, text=text, image=image, prompt=prompt, line=line, meta=meta)


def no_metadata_message(root: Path) -> str:
    images = sum(1 for p in root.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"})
    held = f"it holds {images} image files but " if images else ""
    return (f"DIR: {root}: {held}no metadata.jsonl or metadata.csv (nor a dataset saved with save_to_disk); "
            f"add a metadata.jsonl with one line per image, e.g. "
            f'{{"{FILE_NAME}": "img/0001.png", "text": "a cat and a tree ."}} (see docs/data.md)')


def _parse_json_line(raw: bytes) -> Any:
    """The JSON value of a line, or a str saying why it is not one."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except json.JSONDecodeError as exc:
        return f"not valid JSON ({exc.msg} at column {exc.colno})"


class _open_csv_lines:  # noqa: N801 - used like open()
    """Text lines of a CSV file decoded one by one (a BOM dropped); lines that are not UTF-8 are
    decoded with replacement characters and their numbers collected, so only their records are bad."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bad: set[int] = set()

    def __enter__(self) -> tuple[Iterator[str], set[int]]:
        self._f = self.path.open("rb")
        return self._lines(), self.bad

    def _lines(self) -> Iterator[str]:
        for n, raw in enumerate(self._f, start=1):
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                self.bad.add(n)
                yield raw.decode("utf-8", errors="replace")

    def __exit__(self, *exc: object) -> None:
        self._f.close()


def _parquet_file(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"{path}: reading metadata.parquet needs pyarrow: pip install 'steerlang[data]' "
                         "(or save the metadata as metadata.jsonl)") from None
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds on a bad file
        raise InputError(f"{path}: not a readable Parquet file ({type(exc).__name__}); rewrite it, or use "
                         "metadata.jsonl") from None
