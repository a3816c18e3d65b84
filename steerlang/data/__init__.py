"""steerlang.data: datasets as streams of image-text samples.

Readers: the Hugging Face imagefolder layout (`ImageFolderDataset`), folders written by `datasets`'
``save_to_disk`` (`SavedDataset`), and the toy world as a generator (`ToyWorldSource`);
`open_dataset` picks one from what a path holds. Every reader streams (one row and one image at a
time), in a fixed order, shards with ``iter(shard=(rank, world_size))``, and counts bad rows in a
`DataReport` instead of failing (unless opened with ``strict=True``). See docs/data.md.

Nothing here imports `steerlang.world` except `steerlang.data.toy`, and that only when a toy
source is made.
"""

from __future__ import annotations

from typing import Any

from steerlang.data.api import open_dataset
from steerlang.data.report import REASONS, BadRow, DataReport
from steerlang.data.sample import Dataset, Region, RowSubset, Sample, SampleStream

_LAZY = {
    "ImageFolderDataset": "steerlang.data.imagefolder",
    "SavedDataset": "steerlang.data.hf",
    "ToyWorldSource": "steerlang.data.toy",
    "write_imagefolder": "steerlang.data.write",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'steerlang.data' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "REASONS",
    "BadRow",
    "DataReport",
    "Dataset",
    "ImageFolderDataset",
    "Region",
    "RowSubset",
    "Sample",
    "SampleStream",
    "SavedDataset",
    "ToyWorldSource",
    "open_dataset",
    "write_imagefolder",
]
