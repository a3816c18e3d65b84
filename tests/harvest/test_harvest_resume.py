"""An interrupted harvest continues from its last complete shard and ends with the same files as
an uninterrupted one; other settings, or damaged shards, start it over."""

from __future__ import annotations

import pytest
from harvest_support import files, manifest

from steerlang.dictionary.harvest import harvest_dataset, harvest_status, partial_dir

# ~97 rows per toy sample: a batch of 2 is ~195 rows, so 150-row shards end inside batches.
KW = {"batch_size": 2, "shard_size": 150}


def _stop_at(k: int, seen: list[int]):  # noqa: ANN202
    def on_batch(n: int) -> None:
        seen.append(n)
        if len(seen) == k:
            raise KeyboardInterrupt

    return on_batch


@pytest.fixture(scope="module")
def uninterrupted(toy, toy_corpus, tmp_path_factory):  # noqa: ANN001, ANN201
    return harvest_dataset(toy, toy_corpus, [1, 4], tmp_path_factory.mktemp("full") / "acts", **KW)


def test_resume_gives_the_files_of_an_uninterrupted_run(toy, toy_corpus, uninterrupted, tmp_path) -> None:
    out = tmp_path / "acts"
    seen: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        harvest_dataset(toy, toy_corpus, [1, 4], out, on_batch=_stop_at(2, seen), **KW)
    assert not out.exists()
    st = harvest_status(out)
    assert st is not None and st.shards == 2 and st.rows == 300 and st.samples == 2  # shard 2 ends in batch 2
    # interrupted again, right after resuming
    seen.clear()
    logs: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        harvest_dataset(toy, toy_corpus, [1, 4], out, on_batch=_stop_at(2, seen), log=logs.append, **KW)
    assert seen == [2, 2]  # the samples already done, then one new batch
    assert logs and logs[0].startswith("resuming the unfinished harvest") and "keeping 2 shards" in logs[0]
    seen.clear()
    logs.clear()
    assert harvest_dataset(toy, toy_corpus, [1, 4], out, on_batch=seen.append, log=logs.append, **KW) == out
    assert sum(seen) == 7 and "resuming" in logs[0]
    assert files(out) == files(uninterrupted)
    assert manifest(out) == manifest(uninterrupted)
    assert not partial_dir(out).exists() and harvest_status(out) is None


def test_other_settings_start_over(toy, toy_corpus, uninterrupted, tmp_path) -> None:
    out = tmp_path / "acts"
    with pytest.raises(KeyboardInterrupt):
        harvest_dataset(toy, toy_corpus, [1, 4], out, on_batch=_stop_at(3, []), batch_size=2, shard_size=120)
    logs: list[str] = []
    harvest_dataset(toy, toy_corpus, [1, 4], out, log=logs.append, **KW)
    assert logs == [f"{partial_dir(out)} holds an unfinished harvest with other settings; starting over"]
    assert files(out) == files(uninterrupted)


def test_damaged_shards_start_over(toy, toy_corpus, uninterrupted, tmp_path) -> None:
    out = tmp_path / "acts"
    with pytest.raises(KeyboardInterrupt):
        harvest_dataset(toy, toy_corpus, [1, 4], out, on_batch=_stop_at(3, []), **KW)
    shard = partial_dir(out) / "shard_00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])  # truncated
    logs: list[str] = []
    harvest_dataset(toy, toy_corpus, [1, 4], out, log=logs.append, **KW)
    assert "starting over" in logs[0]
    assert files(out) == files(uninterrupted)


def test_a_changed_corpus_starts_over(toy, toy_corpus, tmp_path) -> None:
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(toy_corpus, corpus)
    out = tmp_path / "acts"
    with pytest.raises(KeyboardInterrupt):
        harvest_dataset(toy, corpus, [1], out, on_batch=_stop_at(3, []), **KW)
    meta = corpus / "metadata.jsonl"
    meta.write_text("".join(meta.read_text().splitlines(keepends=True)[:5]))  # the corpus was edited
    logs: list[str] = []
    harvest_dataset(toy, corpus, [1], out, log=logs.append, **KW)
    assert "other settings; starting over" in logs[0]
    assert manifest(out)["metadata"]["samples"] == 4  # rows 0, 1, 3, 4


def test_the_toy_source_resumes_too(toy, tmp_path) -> None:
    """toyworld:SEED:COUNT as the dataset (its options are tuples in memory, lists on disk)."""
    out = tmp_path / "acts"
    with pytest.raises(KeyboardInterrupt):
        harvest_dataset(toy, "toyworld:5:6", [0], out, on_batch=_stop_at(2, []), **KW)
    logs: list[str] = []
    harvest_dataset(toy, "toyworld:5:6", [0], out, log=logs.append, **KW)
    assert len(logs) == 1 and logs[0].startswith("resuming the unfinished harvest")
    assert files(out) == files(harvest_dataset(toy, "toyworld:5:6", [0], tmp_path / "whole", **KW))


def test_leftovers_of_a_killed_writer_are_ignored(toy, toy_corpus, uninterrupted, tmp_path) -> None:
    """A process killed mid-write leaves a temporary shard file (and maybe a shard not yet recorded):
    the rerun removes them and continues from the recorded shards."""
    out = tmp_path / "acts"
    with pytest.raises(KeyboardInterrupt):
        harvest_dataset(toy, toy_corpus, [1, 4], out, on_batch=_stop_at(2, []), **KW)
    part = partial_dir(out)
    (part / ".shard_00002.safetensors.tmp").write_bytes(b"half")
    (part / "shard_00002.safetensors").write_bytes(b"not recorded")
    harvest_dataset(toy, toy_corpus, [1, 4], out, **KW)
    assert files(out) == files(uninterrupted)
