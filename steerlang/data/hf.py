"""Reader of a folder written by Hugging Face `datasets`' ``save_to_disk``.

Such a folder holds ``dataset_info.json``, ``state.json`` and Arrow files (one `Dataset`), or
``dataset_dict.json`` and one such folder per split (a `DatasetDict`). It is opened with
``datasets.load_from_disk``, which memory-maps the Arrow files; rows are then read a small batch at
a time as Arrow (no decoding by `datasets`), and each image cell, stored as ``{"bytes", "path"}``, is
decoded with PIL when its sample is produced, so that an undecodable image is a counted bad row.

Needs the optional `datasets` package: ``pip install 'steerlang[data]'``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from steerlang.data.report import CAPTION_NOT_TEXT, EMPTY_CAPTION, MISSING_IMAGE, BadRow
from steerlang.data.sample import Dataset, Sample, decode_image, unreadable
from steerlang.errors import InputError

SAVED_DATASET_FILES: tuple[str, ...] = ("dataset_info.json", "state.json")
SAVED_DICT_FILE = "dataset_dict.json"
_BATCH = 64


def is_saved_dataset(folder: Path) -> bool:
    """Whether `folder` looks like the output of ``save_to_disk`` (a Dataset or a DatasetDict)."""
    return (folder / SAVED_DICT_FILE).is_file() or any((folder / f).is_file() for f in SAVED_DATASET_FILES)


def _load_from_disk(folder: Path) -> Any:
    try:
        import datasets
    except ImportError:
        raise InputError(f"DIR: {folder} was written by datasets' save_to_disk; reading it needs the datasets "
                         "package: pip install 'steerlang[data]'") from None
    try:
        return datasets.load_from_disk(str(folder))
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds on a damaged folder
        raise InputError(f"DIR: {folder} looks like a save_to_disk folder but cannot be read "
                         f"({type(exc).__name__}: {str(exc)[:160]}); save it again with save_to_disk") from None


def _data_files(folder: Path) -> list | None:
    """The Arrow files that state.json lists, None when it cannot be read."""
    try:
        files = json.loads((folder / "state.json").read_text())["_data_files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return files if isinstance(files, list) else None


def _splits_of(folder: Path) -> list[str]:
    try:
        return [str(s) for s in json.loads((folder / SAVED_DICT_FILE).read_text())["splits"]]
    except (OSError, ValueError, KeyError, TypeError):
        return sorted(p.name for p in folder.iterdir() if p.is_dir())


class SavedDataset(Dataset):
    """Samples of a ``save_to_disk`` folder, in table order.

    `image_column` defaults to the one column of type Image (``image`` if there are several);
    `caption_column` must be a text column. For a DatasetDict, `split` picks the split (default:
    ``train``, or the only split)."""

    kind = "save_to_disk"

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        caption_column: str = "text",
        prompt_column: str | None = None,
        image_column: str | None = None,
        split: str | None = None,
        strict: bool = False,
        max_examples: int = 5,
    ) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"DIR: {folder} does not exist" if not folder.exists() else f"DIR: {folder} is not a folder")
        if (folder / SAVED_DICT_FILE).is_file():
            splits = _splits_of(folder)
            if split is None:
                if len(splits) != 1 and "train" not in splits:
                    raise InputError(f"{folder}: holds the splits {', '.join(splits)}; choose one with --split (split=)")
                split = splits[0] if len(splits) == 1 else "train"
            if split not in splits:
                raise InputError(f"--split: {folder} has no split {split!r} (splits: {', '.join(splits)})")
            folder = folder / split
        elif split is not None:
            raise InputError(f"--split: {folder} holds a single dataset, not splits; drop --split")
        super().__init__(folder, strict=strict, max_examples=max_examples)
        self.folder = folder
        self.split = split
        if _data_files(folder) == []:  # `datasets` itself cannot load a dataset saved with no rows
            raise InputError(f"DIR: {folder} holds no rows; the dataset is empty")
        self._ds = _load_from_disk(folder)
        if not hasattr(self._ds, "features"):  # a DatasetDict saved without its dataset_dict.json
            raise InputError(f"DIR: {folder} holds several datasets; give one of its split folders")
        self.caption_column = caption_column
        self.prompt_column = prompt_column
        self.image_column = self._pick_image_column(image_column)
        self._check_text_column("--caption-column", caption_column)
        if prompt_column is not None:
            self._check_text_column("--prompt-column", prompt_column)
        if self._ds.num_rows == 0:
            raise InputError(f"DIR: {folder} holds no rows; the dataset is empty")

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self._ds.column_names)

    def count_rows(self) -> int:
        return int(self._ds.num_rows)

    def _pick_image_column(self, image_column: str | None) -> str:
        import datasets

        feats = self._ds.features
        images = [c for c, f in feats.items() if isinstance(f, datasets.Image)]
        have = ", ".join(feats) or "none"
        if image_column is not None:
            if image_column not in images:
                what = "no column" if image_column not in feats else "not an Image column:"
                raise InputError(f"--image-column: {what} {image_column!r} in {self.folder} (Image columns: "
                                 f"{', '.join(images) or 'none'}; columns: {have})")
            return image_column
        if not images:
            raise InputError(f"DIR: {self.folder} has no column of type Image (columns: {have}); cast the image "
                             "column with cast_column(name, datasets.Image()) before save_to_disk")
        if len(images) > 1 and "image" not in images:
            raise InputError(f"DIR: {self.folder} has several Image columns ({', '.join(images)}); pick one with "
                             "--image-column (image_column=)")
        return images[0] if len(images) == 1 else "image"

    def _check_text_column(self, flag: str, column: str) -> None:
        import datasets

        feats = self._ds.features
        if column not in feats:
            raise InputError(f"{flag}: no column {column!r} in {self.folder} (columns: {', '.join(feats)}); "
                             f"pick one of them with {flag}")
        f = feats[column]
        if not (isinstance(f, datasets.Value) and f.dtype in ("string", "large_string")):
            texts = [c for c, g in feats.items() if isinstance(g, datasets.Value) and g.dtype in ("string", "large_string")]
            raise InputError(f"{flag}: column {column!r} of {self.folder} holds {f!r}, not text; text columns: "
                             f"{', '.join(texts) or 'none'}")

    def _items(self, rank: int, world: int) -> Iterator[Sample | BadRow]:
        n = self._ds.num_rows
        ds = self._ds if world == 1 else self._ds.select(range(rank, n, world), keep_in_memory=True)
        cols = [self.image_column, self.caption_column] + ([self.prompt_column] if self.prompt_column else [])
        import datasets

        # Other columns go to Sample.meta, except other images (bytes nobody asked for).
        others = [c for c, f in self._ds.features.items() if c not in cols and not isinstance(f, datasets.Image)]
        j = 0
        for table in ds.with_format("arrow").iter(batch_size=_BATCH):
            data = {c: table.column(c).to_pylist() for c in cols + others}
            for k in range(table.num_rows):
                row = rank + (j + k) * world
                yield self._sample(row, {c: data[c][k] for c in data}, others)
            j += table.num_rows

    def _sample(self, row: int, rec: dict, others: list[str]) -> Sample | BadRow:
        file = str(self.folder)
        cell = rec[self.image_column] or {}
        path = cell.get("path")
        name = path or f"row {row}"

        def bad(reason: str, detail: str) -> BadRow:
            return BadRow(reason, file, row, detail, name=name)

        text = rec[self.caption_column]
        if text is None or not str(text).strip():
            return bad(EMPTY_CAPTION, f"{self.caption_column} is empty")
        if not isinstance(text, str):  # the column is checked at opening; kept for safety
            return bad(CAPTION_NOT_TEXT, f"{self.caption_column} is a {type(text).__name__}, not text")
        prompt = rec.get(self.prompt_column) if self.prompt_column else None
        prompt = prompt if isinstance(prompt, str) and prompt.strip() else None
        data = cell.get("bytes")
        if data is None:
            found = self._find(path)
            if found is None:
                return bad(MISSING_IMAGE, "the row holds no image" if not path else
                           f"no image bytes stored and {path} does not exist")
            data = found
        try:
            image = decode_image(data)
        except Exception as exc:  # noqa: BLE001 - any decoder failure on stored bytes is a bad row
            return unreadable(file, row, name, exc)
        meta = {c: rec[c] for c in others}
        return Sample(row=row, name=name, text=text, image=image, prompt=prompt, meta=meta)

    def _find(self, path: str | None) -> Path | None:
        """An image stored by path only: the path as is, else relative to the dataset folder."""
        if not path:
            return None
        for p in (Path(path), self.folder / path):
            if p.is_file():
                return p
        return None
