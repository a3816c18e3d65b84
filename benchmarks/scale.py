"""Harvest + train wall-clock and peak RSS against corpus size, and 2 processes against 1.

    python benchmarks/scale.py [--counts 500,2000,8000] [--procs 1] [--steps 300] [--shard-size 65536] [--out runs/scale]

For each count N: `steer data toy --seed 2 --count N` (stream 2, a development stream: timing only),
then `steer dict harvest --model toyworld --data CORPUS --layers 2` and `steer dict train --acts
HARVEST --layer 2 --modality image --latents 1024 --k 16 --batch-size 2048 --steps S`, each as its
own command under `/usr/bin/time -v` (wall-clock and "Maximum resident set size": for `--procs 2`,
launched by `python -m torch.distributed.run --standalone --nproc-per-node 2`, the largest single
process). Threads: `--threads` per process (default: 2 for one process, 1 each for two, so both use
the machine's 2 cores). The harvest and the SAE of `--procs 2` are compared with those of one
process when both are there (byte-identical harvest; the SAE's largest weight difference).

Prints one JSON object (and one line per command as it finishes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

STEER = str(Path(sys.executable).parent / "steer")


def timed(cmd: list[str], env: dict[str, str]) -> dict:
    t = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-v", *cmd], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{res.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr)
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(int(rss.group(1)) / 1024, 1) if rss else None}


def load() -> float:
    return round(os.getloadavg()[0], 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="500,2000,8000")
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--shard-size", type=int, default=65536, help="harvest rows per shard (the harvest's default 65536)")
    ap.add_argument("--out", default="runs/scale")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = args.threads or max(1, 2 // args.procs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "STEERLANG_CACHE": str(out / "cache")}
    launch = [] if args.procs == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                         str(args.procs)]
    steer = [*launch, STEER]
    results = []
    for n in (int(c) for c in args.counts.split(",")):
        corpus = out / f"toy-s2-n{n}"
        if not (corpus / "metadata.jsonl").is_file():
            subprocess.run([STEER, "data", "toy", "--seed", "2", "--count", str(n), "--out", str(corpus)], check=True, env=env,
                           capture_output=True)
        tag = f"n{n}-p{args.procs}-s{args.shard_size}"
        acts, sae = out / f"acts-{tag}", out / f"sae-{tag}"
        for p in (acts, sae):
            shutil.rmtree(p, ignore_errors=True)
        row: dict = {"samples": n, "procs": args.procs, "threads_per_proc": threads, "shard_size": args.shard_size,
                     "load_before": load()}
        row["harvest"] = timed([*steer, "dict", "harvest", "--model", "toyworld", "--data", str(corpus), "--layers", "2",
                                "--shard-size", str(args.shard_size), "--out", str(acts)], env)
        manifest = json.loads((acts / "manifest.json").read_text())
        row["rows"], row["shards"] = manifest["rows"], len(manifest["shards"])
        row["image_rows"] = sum(s["modality_counts"][0] for s in manifest["shards"])
        row["train"] = timed([*steer, "dict", "train", "--model", "toyworld", "--acts", str(acts), "--layer", "2", "--modality",
                              "image", "--latents", "1024", "--k", "16", "--batch-size", "2048", "--steps", str(args.steps),
                              "--out", str(sae)], env)
        row["load_after"] = load()
        other = out / f"acts-n{n}-p1-s{args.shard_size}"
        if args.procs > 1 and (other / "manifest.json").is_file():
            row["harvest_identical_to_1_process"] = all(
                (acts / f.name).read_bytes() == f.read_bytes() for f in other.iterdir()) and len(list(acts.iterdir())) == len(
                list(other.iterdir()))
            osae = out / f"sae-n{n}-p1-s{args.shard_size}" / "sae_weights.safetensors"
            if osae.is_file():
                from safetensors.torch import load_file

                a, b = load_file(osae), load_file(sae / "sae_weights.safetensors")
                row["sae_max_abs_diff_vs_1_process"] = max(float((a[k] - b[k]).abs().max()) for k in a)
        print(json.dumps(row), flush=True)
        results.append(row)
    print(json.dumps({"steps": args.steps, "results": results}, indent=1))


if __name__ == "__main__":
    main()
