"""`open_dataset`: pick the reader from what a path holds."""

from __future__ import annotations

import os
from pathlib import Path

from steerlang.data.sample import Dataset
from steerlang.errors import InputError


def open_dataset(
    path_or_name: str | os.PathLike,
    caption_column: str = "text",
    strict: bool = False,
    *,
    prompt_column: str | None = None,
    split: str | None = None,
    image_column: str | None = None,
    max_examples: int = 5,
    arg: str = "DIR",
) -> Dataset:
    """A dataset ready to stream, from what `path_or_name` is:

    - ``toyworld:SEED:COUNT``: the toy world's scenes (`ToyWorldSource`);
    - a folder holding ``dataset_info.json``/``state.json`` or ``dataset_dict.json``: a folder written
      by `datasets`' ``save_to_disk`` (`SavedDataset`, needs the `data` extra);
    - a folder holding ``metadata.jsonl``, ``metadata.csv`` or ``metadata.parquet`` (itself or in
      split subfolders), or such a file: an imagefolder corpus (`ImageFolderDataset`).

    Raises an InputError for a path that does not exist, a folder with no metadata, a column that
    does not exist (listing those that do), or an empty corpus; `arg` names the argument that gave
    the path in those messages (``--data`` where a command takes it so). Bad rows are found while
    streaming: counted in the report, or raised at the first one with `strict`."""
    try:
        return _open(path_or_name, caption_column, strict, prompt_column=prompt_column, split=split,
                     image_column=image_column, max_examples=max_examples)
    except InputError as exc:
        if arg == "DIR" or not str(exc).startswith("DIR: "):
            raise
        raise InputError(f"{arg}: {str(exc)[5:]}") from None


def _open(path_or_name: str | os.PathLike, caption_column: str, strict: bool, *, prompt_column: str | None,
          split: str | None, image_column: str | None, max_examples: int) -> Dataset:
    from steerlang.data.hf import SavedDataset, is_saved_dataset
    from steerlang.data.imagefolder import ImageFolderDataset

    spec = os.fspath(path_or_name)
    if isinstance(spec, str) and spec.startswith("toyworld:"):
        from steerlang.data.toy import ToyWorldSource, parse_toy_spec

        seed, count = parse_toy_spec(spec)  # type: ignore[misc]
        return ToyWorldSource(seed, count, max_examples=max_examples)
    path = Path(spec)
    if not path.exists():
        hint = " (the toy world is toyworld:SEED:COUNT)" if spec.startswith("toyworld") else ""
        raise InputError(f"DIR: {path} does not exist{hint}; give a corpus folder")
    if path.is_dir() and is_saved_dataset(path):
        return SavedDataset(path, caption_column=caption_column, prompt_column=prompt_column, image_column=image_column,
                            split=split, strict=strict, max_examples=max_examples)
    if image_column is not None:
        raise InputError("--image-column: only for folders written by save_to_disk; an imagefolder corpus names "
                         "its images in the file_name column")
    return ImageFolderDataset(path, caption_column=caption_column, prompt_column=prompt_column, split=split,
                              strict=strict, max_examples=max_examples)
