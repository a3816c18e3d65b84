from __future__ import annotations

import json

import pytest
import torch

from steerlang.dictionary.source import ActivationSource, ShardWriter, as_source
from steerlang.errors import InputError

D = 8


def _harvest(tmp_path, n=230, shard_rows=64, batch=37):
    """Write a shard folder with layers 0 and 2; rows are labelled so they can be traced."""
    g = torch.Generator().manual_seed(1)
    rows = torch.arange(n, dtype=torch.float32)
    modality = torch.randint(0, 3, (n,), generator=g, dtype=torch.uint8)
    with ShardWriter(tmp_path / "acts", layers=[0, 2], d_in=D, model="toy", shard_rows=shard_rows,
                     dtype=torch.float32) as w:
        for s in range(0, n, batch):
            e = min(s + batch, n)
            a = rows[s:e, None].expand(-1, D).clone()
            w.add({0: a, 2: -a}, modality=modality[s:e], cell=torch.full((e - s,), -1),
                  scene=torch.arange(s, e) // 10, position=torch.arange(s, e) % 10)
    return tmp_path / "acts", modality


def test_writer_manifest_and_shards(tmp_path):
    root, modality = _harvest(tmp_path)
    m = json.loads((root / "manifest.json").read_text())
    assert m["layers"] == [0, 2] and m["d_in"] == D and m["rows"] == 230 and m["model"] == "toy"
    assert [s["rows"] for s in m["shards"]] == [64, 64, 64, 38]
    assert sum(sum(s["modality_counts"]) for s in m["shards"]) == 230


@pytest.mark.parametrize("modality,codes", [("image", (0,)), ("text", (1, 2)), ("caption", (2,)), ("both", (0, 1, 2))])
def test_filter_and_load(tmp_path, modality, codes):
    root, mod = _harvest(tmp_path)
    src = ActivationSource.from_shards(root, layer=2, modality=modality)
    keep = torch.isin(mod.long(), torch.tensor(codes))
    x, lab = src.load(with_labels=True)
    assert src.num_rows == int(keep.sum()) == x.shape[0]
    assert torch.equal(-x[:, 0], torch.arange(230, dtype=torch.float32)[keep])  # order kept, layer 2 = -row
    assert torch.equal(lab["modality"], mod[keep]) and lab["cell"].dtype == torch.int16
    assert torch.equal(torch.cat(list(src.iter_batches(10))), x)


def test_load_keeps_the_rows_a_filter_selects_shard_by_shard(tmp_path):
    root, mod = _harvest(tmp_path)  # scene = row // 10; 4 shards of 64 rows
    src = ActivationSource.from_shards(root, layer=0, modality="image")
    seen = []

    def keep(lab):
        seen.append(len(lab["scene"]))
        return (lab["scene"] % 3 == 1) | (lab["scene"] == 22)

    x, lab = src.load(with_labels=True, keep=keep)
    want = (torch.isin(mod.long(), torch.tensor([0]))) & (((torch.arange(230) // 10) % 3 == 1) | (torch.arange(230) // 10 == 22))
    assert torch.equal(x[:, 0], torch.arange(230, dtype=torch.float32)[want])  # rows in order, the others dropped
    assert torch.equal(lab["scene"].long(), (torch.arange(230) // 10)[want])
    assert len(seen) == 4 and max(seen) <= 64  # called once a shard, with that shard's rows only
    assert torch.equal(src.load(keep=keep), x)  # labels read for the filter even when not returned


def test_shuffled_batches_seeded_streaming_and_resumable(tmp_path):
    root, _ = _harvest(tmp_path)
    src = ActivationSource.from_shards(root, layer=0, buffer_shards=2)
    a = [b[:, 0] for b, _ in zip(src.batches(50, seed=3), range(12), strict=False)]
    b = [b[:, 0] for b, _ in zip(src.batches(50, seed=3), range(12), strict=False)]
    c = [b[:, 0] for b, _ in zip(src.batches(50, seed=4), range(12), strict=False)]
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not all(torch.equal(u, v) for u, v in zip(a, c, strict=True))
    # an epoch (230 rows) is a permutation of all rows
    stream = torch.cat(a)
    assert sorted(stream[:230].tolist()) == list(range(230))
    # skipping ahead equals dropping batches
    skipped = [b[:, 0] for b, _ in zip(src.batches(50, seed=3, start_batch=7), range(5), strict=False)]
    assert all(torch.equal(u, v) for u, v in zip(a[7:], skipped, strict=True))


def test_tensor_source_batches_cover_epoch():
    x = torch.arange(100, dtype=torch.float32)[:, None].expand(-1, 4)
    src = as_source(x)
    got = torch.cat([b for b, _ in zip(src.batches(20, seed=0), range(5), strict=False)])[:, 0]
    assert sorted(got.tolist()) == list(range(100))


def test_incomplete_and_wrong_layer(tmp_path):
    w = ShardWriter(tmp_path / "a", layers=[0], d_in=D, shard_rows=4)
    w.add({0: torch.zeros(5, D)}, modality=torch.zeros(5), cell=torch.zeros(5), scene=torch.zeros(5),
          position=torch.zeros(5))
    with pytest.raises(InputError, match="unfinished harvest"):  # no close(): no manifest
        ActivationSource.from_shards(tmp_path / "a", layer=0)
    w.close()
    with pytest.raises(InputError, match=r"layer 3 was not harvested; available: \[0\]"):
        ActivationSource.from_shards(tmp_path / "a", layer=3)
    with pytest.raises(InputError, match="not empty"):
        ShardWriter(tmp_path / "a", layers=[0], d_in=D)
    with pytest.raises(InputError, match="no activation rows"):
        ActivationSource.from_shards(tmp_path / "a", layer=0, modality="caption")
    with pytest.raises(InputError, match=r"expected \[5, 8\]"):
        ShardWriter(tmp_path / "b", layers=[0], d_in=D).add(
            {0: torch.zeros(5, 3)}, modality=torch.zeros(5), cell=torch.zeros(5), scene=torch.zeros(5),
            position=torch.zeros(5))


def test_truncated_shard(tmp_path):
    root, _ = _harvest(tmp_path)
    f = root / "shard_00001.safetensors"
    f.write_bytes(f.read_bytes()[:300])
    with pytest.raises(InputError, match="shard_00001.safetensors: unreadable activation shard"):
        ActivationSource.from_shards(root, layer=2).load()
