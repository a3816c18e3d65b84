"""`steer run` over many images: images/s steered vs the plain batched `generate` of the same images.

Renders --count toy-world scenes of stream --seed to PNG files, then times, interleaved --repeats
times after one untimed warm-up of each:

- plain.bB: the images loaded from disk and generated unsteered in batches of B (`Session.generate`,
  the same processor, prompt, token count and greedy decoding);
- steer.bB: `Session.run(program, images=paths, batch_size=B)` (what `steer run PROGRAM --image ...
  --batch-size B` calls): loading, steering every batch in one `generate`, expectations;

and, once, the CLI itself in a subprocess (`steer run PROGRAM --image ... --batch-size B --jsonl`),
whose wall time includes starting Python and loading the model. Every steered run's outputs are
checked against the one-image-at-a-time run of the same program (batching must not change them).
Prints one JSON object.

    python benchmarks/steer_run_throughput.py --count 200 --batch-sizes 1,8,64 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from streams import require_evaluation  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--program", type=Path, default=ROOT / "programs" / "remove_cat.stl")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--seed", type=int, default=9601, help="scene stream of the images")
    ap.add_argument("--batch-sizes", default="1,8,64")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI subprocess row")
    ap.add_argument("--dev", action="store_true", help="allow a development stream")
    a = ap.parse_args()
    streams = require_evaluation([a.seed], dev=a.dev, what="steer run throughput")
    torch.set_num_threads(a.threads)

    from steerlang.api import load_session
    from steerlang.runtime.session import has_word
    from steerlang.world.scenes import make_scene, render

    sizes = [int(x) for x in a.batch_sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(a.count):
            p = Path(tmp) / f"scene{i:04d}.png"
            render(make_scene(a.seed, i)).save(p)
            paths.append(str(p))
        session = load_session("toyworld", "toyworld")
        prog = session.compile(a.program)
        text = prog.header.ask
        tokens = prog.header.generate or 24

        def plain(b: int):  # noqa: ANN202
            def run() -> list[str]:
                out: list[str] = []
                for s in range(0, len(paths), b):
                    out += session.generate(paths[s : s + b], text, max_new_tokens=tokens)
                return out
            return run

        def steer(b: int):  # noqa: ANN202
            return lambda: session.run(prog, images=paths, batch_size=b)

        runners = {}
        for b in sizes:
            runners[f"plain.b{b}"], runners[f"steer.b{b}"] = plain(b), steer(b)
        times: dict[str, list[float]] = {k: [] for k in runners}
        outs: dict[str, object] = {}
        with torch.no_grad():
            for k, fn in runners.items():  # warm-up, and the outputs to compare
                outs[k] = fn()
            for _ in range(a.repeats):
                for k, fn in runners.items():
                    t0 = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t0)
        one = [r.output for r in outs[f"steer.b{sizes[0]}"]]  # type: ignore[attr-defined]
        same = {f"steer.b{b}": [r.output for r in outs[f"steer.b{b}"]] == one for b in sizes}  # type: ignore[attr-defined]
        passed = sum(all(e.passed for e in r.expectations) for r in outs[f"steer.b{sizes[-1]}"])  # type: ignore[attr-defined]
        cats = {k: sum(has_word(x if isinstance(x, str) else x.output, "cat") for x in outs[f"{k}.b{sizes[-1]}"])  # type: ignore[attr-defined]
                for k in ("plain", "steer")}
        changed = sum(r.output != p for r, p in zip(outs[f"steer.b{sizes[-1]}"], outs[f"plain.b{sizes[-1]}"], strict=True))  # type: ignore[arg-type]
        cli = None
        if not a.no_cli:
            steer_bin = Path(sys.executable).with_name("steer")
            cmd = [str(steer_bin), "run", str(a.program), "--batch-size", str(sizes[-1]), "--jsonl", "--no-progress"]
            for p in paths:
                cmd += ["--image", p]
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - t0
            lines = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
            cli = {"batch_size": sizes[-1], "seconds": round(wall, 2), "images_per_s": round(len(paths) / wall, 2),
                   "exit": r.returncode, "outputs_equal_api": [x["output"] for x in lines] == one}
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({
        "config": {"count": a.count, "seed": a.seed, "program": str(a.program.relative_to(ROOT) if a.program.is_relative_to(ROOT) else a.program),
                   "tokens": tokens, "batch_sizes": sizes, "repeats": a.repeats, "threads": a.threads},
        "streams": streams,
        "images_per_s": {k: round(a.count / v, 2) for k, v in med.items()},
        "images_per_s_best": {k: round(a.count / min(v), 2) for k, v in times.items()},
        "steered_over_plain_time": {f"b{b}": round(med[f"steer.b{b}"] / med[f"plain.b{b}"], 3) for b in sizes},
        "outputs_equal_across_batch_sizes": same,
        "images_all_expectations_pass": passed,
        "images_naming_a_cat": cats,
        "images_steered_output_differs_from_plain": changed,
        "cli": cli,
        "versions": {"torch": torch.__version__},
        "times_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
