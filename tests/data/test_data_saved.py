"""The reader of folders written by `datasets`' save_to_disk (skipped without the `datasets` package)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from data_support import png
from PIL import Image as PILImage

from steerlang.data import SavedDataset, open_dataset
from steerlang.errors import InputError

datasets = pytest.importorskip("datasets")


def _png_bytes(seed: int) -> tuple[bytes, np.ndarray]:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(pixels, "RGB").save(buf, format="PNG")
    return buf.getvalue(), pixels


def _saved(tmp_path, *, captions=None, images=None, name="saved"):
    files = [tmp_path / "src" / f"{i}.png" for i in range(4)]
    pixels = [png(f, i) for i, f in enumerate(files)]
    ds = datasets.Dataset.from_dict({
        "image": images if images is not None else [str(f) for f in files],
        "text": captions if captions is not None else [f"caption {i}" for i in range(4)],
        "label": [10, 11, 12, 13],
    }).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / name))
    return tmp_path / name, pixels


def test_save_to_disk_folder_streams_pixels_and_captions(tmp_path) -> None:
    folder, pixels = _saved(tmp_path)
    ds = open_dataset(folder)
    assert isinstance(ds, SavedDataset) and ds.image_column == "image" and ds.count_rows() == 4
    samples = list(ds)
    assert [s.text for s in samples] == [f"caption {i}" for i in range(4)] and [s.row for s in samples] == [0, 1, 2, 3]
    for s, px in zip(samples, pixels, strict=True):
        assert s.image.mode == "RGB" and np.array_equal(np.asarray(s.image), px)
        assert s.meta == {"label": 10 + s.row} and s.line is None
    assert ds.report.complete and ds.report.good == 4


def test_save_to_disk_bad_rows_are_counted(tmp_path) -> None:
    good, _ = _png_bytes(0)
    images = [{"bytes": good, "path": "g.png"}, {"bytes": b"not an image", "path": "junk.png"}, None,
              {"bytes": good, "path": "g2.png"}]
    folder, _ = _saved(tmp_path, images=images, captions=["ok", "t", "t", None])
    ds = open_dataset(folder)
    assert [s.text for s in ds] == ["ok"]
    got = {(b.reason, b.row, b.name) for bs in ds.report.examples.values() for b in bs}
    assert got == {("unreadable_image", 1, "junk.png"), ("missing_image", 2, "row 2"), ("empty_caption", 3, "g2.png")}
    assert all(b.file == str(folder) and b.line is None for bs in ds.report.examples.values() for b in bs)
    with pytest.raises(InputError, match=r"saved \(row 1\): unreadable image \[junk.png\]"):
        list(open_dataset(folder, strict=True))


def test_save_to_disk_shards_are_disjoint_and_cover(tmp_path) -> None:
    folder, _ = _saved(tmp_path)
    ds = open_dataset(folder)
    shards = [[s.row for s in ds.iter(shard=(r, 3))] for r in range(3)]
    assert shards == [[0, 3], [1], [2]]
    texts = {s.row: s.text for r in range(3) for s in ds.iter(shard=(r, 3))}
    assert texts == {i: f"caption {i}" for i in range(4)}


def test_dataset_dict_splits(tmp_path) -> None:
    folder, _ = _saved(tmp_path)
    one = datasets.load_from_disk(str(folder))
    datasets.DatasetDict({"train": one, "test": one.select([1])}).save_to_disk(str(tmp_path / "dd"))
    assert len(list(open_dataset(tmp_path / "dd"))) == 4
    assert [s.text for s in open_dataset(tmp_path / "dd", split="test")] == ["caption 1"]
    with pytest.raises(InputError, match=r"no split 'dev' \(splits: train, test\)"):
        open_dataset(tmp_path / "dd", split="dev")


def test_save_to_disk_column_errors_list_the_columns(tmp_path) -> None:
    folder, _ = _saved(tmp_path)
    with pytest.raises(InputError, match=r"--caption-column: no column 'caption' in .* \(columns: image, text, label\)"):
        open_dataset(folder, caption_column="caption")
    with pytest.raises(InputError, match=r"column 'label' .* not text; text columns: text"):
        open_dataset(folder, caption_column="label")
    plain = datasets.Dataset.from_dict({"path": ["a.png"], "text": ["t"]})
    plain.save_to_disk(str(tmp_path / "noimg"))
    with pytest.raises(InputError, match=r"has no column of type Image \(columns: path, text\)"):
        open_dataset(tmp_path / "noimg")


def test_empty_saved_dataset_is_an_error(tmp_path) -> None:
    empty = datasets.Dataset.from_dict({"image": [], "text": []}).cast_column("image", datasets.Image())
    empty.save_to_disk(str(tmp_path / "empty"))
    with pytest.raises(InputError, match="holds no rows; the dataset is empty"):
        open_dataset(tmp_path / "empty")


def test_reading_writes_nothing_into_the_dataset_folder(tmp_path) -> None:
    folder, _ = _saved(tmp_path)
    before = sorted(p.name for p in folder.iterdir())
    ds = open_dataset(folder)
    for r in range(2):
        list(ds.iter(shard=(r, 2)))
    assert sorted(p.name for p in folder.iterdir()) == before
