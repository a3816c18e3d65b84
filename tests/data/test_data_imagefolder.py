"""The imagefolder reader: layouts, columns, bad rows, strictness, errors, sharding, streaming."""

from __future__ import annotations

import numpy as np
import pytest
from data_support import png, write_csv, write_jsonl

import steerlang.data.imagefolder as imagefolder
from steerlang.data import ImageFolderDataset, open_dataset
from steerlang.errors import InputError


def test_jsonl_reads_rows_in_order_with_subfolder_file_names(corpus) -> None:
    root, pixels = corpus
    ds = open_dataset(root)
    assert isinstance(ds, ImageFolderDataset) and ds.count_rows() == 4
    samples = list(ds)
    assert [s.name for s in samples] == ["a.png", "sub/b.png", "sub/deeper/c.png", "d.png"]
    assert [s.text for s in samples] == [f"caption {i}" for i in range(4)]
    assert [s.row for s in samples] == [0, 1, 2, 3] and [s.line for s in samples] == [1, 2, 3, 4]
    for s in samples:
        assert s.image.mode == "RGB" and np.array_equal(np.asarray(s.image), pixels[s.name])
        assert s.prompt is None and s.regions is None and s.truth is None
        assert s.meta == {"caption": s.text.replace("caption", "other"), "source": "x"}
    assert ds.report.complete and ds.report.good == 4 and ds.report.n_bad == 0


def test_two_passes_give_the_same_samples(corpus) -> None:
    ds = open_dataset(corpus[0])
    first = [(s.row, s.name, s.text, s.image.tobytes()) for s in ds]
    assert first == [(s.row, s.name, s.text, s.image.tobytes()) for s in ds]


def test_a_row_subset_streams_those_rows_with_their_numbers_and_shards(corpus) -> None:
    from steerlang.data import RowSubset

    ds = RowSubset(open_dataset(corpus[0], prompt_column=None), [3, 1])
    assert ds.count_rows() == 2 and ds.location == open_dataset(corpus[0]).location
    assert [(s.row, s.name, s.text) for s in ds] == [(1, "sub/b.png", "caption 1"), (3, "d.png", "caption 3")]
    assert [s.row for s in ds.iter(shard=(1, 2))] == [1, 3] and list(ds.iter(shard=(0, 2))) == []
    assert ds.report.good == 0 and ds.report.complete
    assert ds.options["rows"] == [1, 3] and ds.caption_column == "text"


def test_csv_reads_like_jsonl_with_quoting_and_bom(tmp_path) -> None:
    root = tmp_path / "c"
    png(root / "x/1.png", 1)
    png(root / "2.png", 2)
    write_csv(root / "metadata.csv", ["file_name", "text", "prompt"],
              [["x/1.png", 'a cat, "quoted", and a tree .', "what is in the picture ?"], ["2.png", "a dog .", ""]])
    raw = (root / "metadata.csv").read_bytes()
    (root / "metadata.csv").write_bytes(b"\xef\xbb\xbf" + raw)  # as spreadsheet programs save it
    ds = open_dataset(root, prompt_column="prompt")
    assert ds.columns == ("file_name", "text", "prompt")
    samples = list(ds)
    assert [(s.name, s.text, s.prompt, s.line) for s in samples] == [
        ("x/1.png", 'a cat, "quoted", and a tree .', "what is in the picture ?", 2), ("2.png", "a dog .", None, 3)]


def test_caption_column_is_chosen(corpus) -> None:
    ds = open_dataset(corpus[0], caption_column="caption")
    assert [s.text for s in ds] == [f"other {i}" for i in range(4)]
    assert "text" in next(iter(ds)).meta


def test_split_subfolders_default_to_train_and_split_picks_one(tmp_path) -> None:
    for split, n in (("train", 3), ("test", 2)):
        for i in range(n):
            png(tmp_path / split / f"{i}.png", i)
        write_jsonl(tmp_path / split / "metadata.jsonl", [{"file_name": f"{i}.png", "text": f"{split} {i}"} for i in range(n)])
    ds = open_dataset(tmp_path)
    assert ds.split == "train" and [s.text for s in ds] == ["train 0", "train 1", "train 2"]
    assert [s.text for s in open_dataset(tmp_path, split="test")] == ["test 0", "test 1"]
    with pytest.raises(InputError, match=r"--split: .* no folder 'dev' \(splits here: train, test\)"):
        open_dataset(tmp_path, split="dev")


def test_several_splits_without_train_ask_for_split(tmp_path) -> None:
    for split in ("a", "b"):
        png(tmp_path / split / "0.png", 0)
        write_jsonl(tmp_path / split / "metadata.jsonl", [{"file_name": "0.png", "text": "t"}])
    with pytest.raises(InputError, match="holds the splits a, b; choose one with --split"):
        open_dataset(tmp_path)


def _bad_corpus(tmp_path):
    root = tmp_path / "bad"
    png(root / "ok.png", 0)
    png(root / "ok2.png", 1)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    png(root / "trunc_src.png", 3, size=32)
    data = (root / "trunc_src.png").read_bytes()
    (root / "trunc.png").write_bytes(data[: len(data) // 2])
    rows = [
        {"file_name": "ok.png", "text": "good one"},          # line 1, row 0
        '{"file_name": "ok.png", "text": ',                   # line 2, row 1: malformed
        {"file_name": "ok.png"},                               # line 3, row 2: missing caption column
        {"text": "no file"},                                   # line 4, row 3: missing file_name
        "",                                                    # line 5: blank, not a row
        {"file_name": "ok.png", "text": "   "},                # line 6, row 4: empty caption
        {"file_name": "ok.png", "text": None},                 # line 7, row 5: empty caption (null)
        {"file_name": "ok.png", "text": 3},                    # line 8, row 6: caption not text
        {"file_name": "../outside.png", "text": "t"},          # line 9, row 7: leaves the folder
        {"file_name": "gone.png", "text": "t"},                # line 10, row 8: missing image
        {"file_name": "broken.png", "text": "t"},              # line 11, row 9: unreadable
        {"file_name": "trunc.png", "text": "t"},               # line 12, row 10: unreadable (truncated)
        "[1, 2]",                                              # line 13, row 11: JSON, not an object
        {"file_name": "ok2.png", "text": "good two"},          # line 14, row 12
    ]
    write_jsonl(root / "metadata.jsonl", rows)
    return root


def test_each_bad_row_kind_is_counted_with_its_file_and_line(tmp_path) -> None:
    root = _bad_corpus(tmp_path)
    ds = open_dataset(root)
    samples = list(ds)
    assert [s.text for s in samples] == ["good one", "good two"] and [s.row for s in samples] == [0, 12]
    rep = ds.report
    assert rep.complete and rep.good == 2 and rep.n_bad == 11 and rep.rows == 13
    assert dict(rep.bad_by_reason()) == {"malformed_row": 2, "missing_column": 2, "empty_caption": 2,
                                         "caption_not_text": 1, "bad_file_name": 1, "missing_image": 1,
                                         "unreadable_image": 2}
    where = {(b.reason, b.line, b.row, b.name) for bs in rep.examples.values() for b in bs}
    assert where == {
        ("malformed_row", 2, 1, None), ("malformed_row", 13, 11, None),
        ("missing_column", 3, 2, "ok.png"), ("missing_column", 4, 3, None),
        ("empty_caption", 6, 4, "ok.png"), ("empty_caption", 7, 5, "ok.png"),
        ("caption_not_text", 8, 6, "ok.png"), ("bad_file_name", 9, 7, "../outside.png"),
        ("missing_image", 10, 8, "gone.png"), ("unreadable_image", 11, 9, "broken.png"),
        ("unreadable_image", 12, 10, "trunc.png"),
    }
    assert all(b.file == str(root / "metadata.jsonl") for bs in rep.examples.values() for b in bs)
    text = "\n".join(rep.summary())
    assert f"{root / 'metadata.jsonl'}:10: missing image [gone.png]" in text
    assert rep.to_json()["bad"]["unreadable_image"] == 2


def test_examples_are_capped_but_counts_are_not(tmp_path) -> None:
    png(tmp_path / "ok.png", 0)
    write_jsonl(tmp_path / "metadata.jsonl", [{"file_name": "ok.png", "text": "t"}]
                + [{"file_name": f"gone{i}.png", "text": "t"} for i in range(9)])
    ds = open_dataset(tmp_path, max_examples=3)
    rep = ds.check()
    assert rep.bad["missing_image"] == 9 and [b.name for b in rep.examples["missing_image"]] == [
        "gone0.png", "gone1.png", "gone2.png"]
    assert "... and 6 more" in "\n".join(rep.summary())


def test_csv_bad_rows_name_their_line(tmp_path) -> None:
    png(tmp_path / "ok.png", 0)
    path = tmp_path / "metadata.csv"
    path.write_bytes(b"file_name,text\nok.png,fine\nok.png\nok.png,\ngone.png,t\nok.png,caf\xe9\n")
    ds = open_dataset(tmp_path)
    assert [s.text for s in ds] == ["fine"]
    got = {(b.reason, b.line, b.name) for bs in ds.report.examples.values() for b in bs}
    assert got == {("missing_column", 3, "ok.png"), ("empty_caption", 4, "ok.png"), ("missing_image", 5, "gone.png"),
                   ("malformed_row", 6, None)}


def test_strict_raises_at_the_first_bad_row_naming_file_and_line(tmp_path) -> None:
    root = _bad_corpus(tmp_path)
    ds = open_dataset(root, strict=True)
    it = ds.iter()
    assert next(it).text == "good one"
    with pytest.raises(InputError) as err:
        next(it)
    msg = str(err.value)
    assert msg.startswith(f"{root / 'metadata.jsonl'}:2: malformed row") and "\n" not in msg


def test_missing_metadata_is_one_line_saying_what_to_add(tmp_path) -> None:
    png(tmp_path / "a.png", 0)
    with pytest.raises(InputError, match=r"holds 1 image files but no metadata.jsonl or metadata.csv.*add a metadata.jsonl"):
        open_dataset(tmp_path)


def test_unknown_caption_column_lists_the_columns(corpus) -> None:
    with pytest.raises(InputError, match=r"--caption-column: no column 'caption_en' in .*metadata.jsonl "
                                         r"\(columns: file_name, text, caption, source\)"):
        open_dataset(corpus[0], caption_column="caption_en")
    with pytest.raises(InputError, match="--prompt-column: no column 'question'"):
        open_dataset(corpus[0], prompt_column="question")


def test_metadata_without_file_name_column(tmp_path) -> None:
    write_csv(tmp_path / "metadata.csv", ["image", "text"], [["a.png", "t"]])
    with pytest.raises(InputError, match=r"has no file_name column \(columns: image, text\)"):
        open_dataset(tmp_path)


@pytest.mark.parametrize("name, content", [
    ("metadata.jsonl", b""), ("metadata.jsonl", b"\n\n"), ("metadata.csv", b""), ("metadata.csv", b"file_name,text\n"),
])
def test_empty_corpus_is_an_error(tmp_path, name: str, content: bytes) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match="empty"):
        open_dataset(tmp_path)


def test_path_that_does_not_exist(tmp_path) -> None:
    with pytest.raises(InputError, match=r"DIR: .*nowhere does not exist"):
        open_dataset(tmp_path / "nowhere")


def test_two_metadata_files_in_one_folder(corpus) -> None:
    write_csv(corpus[0] / "metadata.csv", ["file_name", "text"], [["a.png", "t"]])
    with pytest.raises(InputError, match="holds metadata.jsonl and metadata.csv; keep one"):
        open_dataset(corpus[0])


def test_metadata_file_itself_can_be_given(corpus) -> None:
    assert len(list(open_dataset(corpus[0] / "metadata.jsonl"))) == 4


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_shards_are_disjoint_deterministic_and_cover_every_row(tmp_path, world: int) -> None:
    root = _bad_corpus(tmp_path)
    ds = open_dataset(root)
    rows_good, rows_bad, reports = [], [], []
    for rank in range(world):
        got = [s.row for s in ds.iter(shard=(rank, world))]
        assert got == [s.row for s in ds.iter(shard=(rank, world))]
        assert all(r % world == rank for r in got)
        rows_good += got
        reports.append(ds.report)
        rows_bad += [b.row for bs in ds.report.examples.values() for b in bs]
    assert sorted(rows_good) == [0, 12]
    assert sorted(rows_good + rows_bad) == list(range(13))
    assert sum(r.rows for r in reports) == 13 and all(r.shard[1] == world for r in reports)


def test_bad_shard_arguments(corpus) -> None:
    ds = open_dataset(corpus[0])
    for shard in [(2, 2), (-1, 2), (0, 0)]:
        with pytest.raises(InputError, match="shard"):
            ds.iter(shard=shard)


def test_images_are_decoded_one_at_a_time_as_samples_are_taken(corpus, monkeypatch) -> None:
    calls: list[str] = []
    real = imagefolder.decode_image
    monkeypatch.setattr(imagefolder, "decode_image", lambda p: calls.append(str(p)) or real(p))
    it = open_dataset(corpus[0]).iter()
    assert calls == []
    next(it)
    assert len(calls) == 1
    next(it)
    assert len(calls) == 2


def test_parquet_metadata(tmp_path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    png(tmp_path / "a.png", 0)
    png(tmp_path / "b.png", 1)
    pq.write_table(pa.table({"file_name": ["a.png", "b.png", "c.png"], "text": ["one", "two", "three"]}),
                   tmp_path / "metadata.parquet")
    ds = open_dataset(tmp_path)
    assert ds.count_rows() == 3 and [s.text for s in ds] == ["one", "two"]
    assert ds.report.bad["missing_image"] == 1
