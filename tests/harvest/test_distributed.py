"""Two processes (torch.distributed, gloo on CPU, launched by `torch.distributed.run` as `torchrun`
would) harvest and train as one: the harvest's files are the one-process harvest's bit for bit, the
SAE trained with DDP at the same global batch equals the one-process SAE within float rounding."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from harvest_support import files, manifest, rows_of
from safetensors.torch import load_file
from typer.testing import CliRunner

from steerlang.cli import app

HERE = Path(__file__).parent
runner = CliRunner()
TRAIN = ["--model", "toyworld", "--layer", "2", "--modality", "image", "--latents", "64", "--k", "4", "--steps", "20",
         "--batch-size", "64", "--lr", "3e-3"]


def _harvest(corpus: Path, out: Path) -> list[str]:
    return ["dict", "harvest", "--model", "toyworld", "--data", str(corpus), "--layers", "0,2", "--batch-size", "2",
            "--shard-size", "150", "--out", str(out)]


def _two_processes(tmp_path: Path, *commands: list[str]) -> None:
    args = [a for cmd in commands for a in ("--", *cmd)][1:]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "STEERLANG_CACHE": str(tmp_path / "cache")}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          str(HERE / "distributed_steer.py"), *args], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def test_two_processes_harvest_and_train_as_one(toy_corpus, tmp_path) -> None:
    from steerlang.world.corpus import export_toy_corpus

    clean = tmp_path / "clean"
    export_toy_corpus(clean, seed=12, count=9)  # no bad rows: every batch is the one-process batch
    two = tmp_path / "two"
    _two_processes(tmp_path, _harvest(clean, two / "acts"), _harvest(toy_corpus, two / "acts-bad"),
                   ["dict", "train", *TRAIN, "--acts", str(two / "acts"), "--out", str(two / "sae")])
    one = tmp_path / "one"
    for cmd in (_harvest(clean, one / "acts"), _harvest(toy_corpus, one / "acts-bad"),
                ["dict", "train", *TRAIN, "--acts", str(one / "acts"), "--out", str(one / "sae")]):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 0, res.output

    # the harvest: the same files, byte for byte; nothing else left beside it
    assert len(manifest(one / "acts")["shards"]) > 2
    assert files(two / "acts") == files(one / "acts")
    assert sorted(p.name for p in two.iterdir()) == ["acts", "acts-bad", "sae"]
    # with bad rows: the same samples, labels, manifest and data report; activations equal within rounding
    m1, m2 = manifest(one / "acts-bad"), manifest(two / "acts-bad")
    assert m2["metadata"] == m1["metadata"] and m2["rows"] == m1["rows"]
    assert m1["metadata"]["data"]["bad_rows"] == 2
    (x1, lab1), (x2, lab2) = rows_of(one / "acts-bad", 2), rows_of(two / "acts-bad", 2)
    assert all(torch.equal(lab1[k], lab2[k]) for k in lab1)
    torch.testing.assert_close(x2, x1, rtol=1e-5, atol=1e-5)

    # the SAE: DDP at global batch 64 (32 per process) = one process at batch 64
    w1, w2 = load_file(one / "sae" / "sae_weights.safetensors"), load_file(two / "sae" / "sae_weights.safetensors")
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5)
