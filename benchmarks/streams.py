"""Development and evaluation scene streams (`benchmarks/streams.json`), kept disjoint.

A benchmark that reports a figure on toy-world scenes calls `require_evaluation(seeds, dev=args.dev)`
before it runs: a development stream (one used for training, calibration, tests, or looked at while
choosing a setting) stops it with an error unless `--dev` is given; a stream recorded nowhere gets a
loud warning (record it before quoting the figure).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REGISTRY = Path(__file__).resolve().with_name("streams.json")


def load(path: Path = REGISTRY) -> tuple[dict[int, str], dict[int, str]]:
    """({seed: use} of development streams, {seed: use} of evaluation streams); raises if they overlap."""
    data = json.loads(path.read_text())
    dev: dict[int, str] = {}
    ev: dict[int, str] = {}
    for row in data["development"]:
        for s in row["seeds"]:
            dev[int(s)] = (dev[int(s)] + "; " if int(s) in dev else "") + row["use"]
    for row in data["evaluation"]:
        for s in row["seeds"]:
            ev[int(s)] = f"{row.get('benchmark', '?')}: {row['use']}"
    both = sorted(set(dev) & set(ev))
    if both:
        raise SystemExit(f"{path}: streams {both} are listed as both development and evaluation streams")
    return dev, ev


def require_evaluation(seeds: list[int], *, dev: bool = False, what: str = "") -> dict:
    """Check that `seeds` are evaluation streams; returns {"seeds", "kind"} for the report.

    A development stream exits (status 2) unless `dev`; an unrecorded stream warns on stderr."""
    dev_streams, eval_streams = load()
    used = sorted(s for s in seeds if s in dev_streams)
    if used and not dev:
        lines = "\n".join(f"  {s}: {dev_streams[s]}" for s in used)
        print(f"{what or 'this benchmark'}: refusing to evaluate on development stream(s):\n{lines}\n"
              f"Settings were chosen (or models trained) on them, so a figure there flatters. Use the "
              f"evaluation streams of {REGISTRY.name}, or pass --dev to run anyway (the report is then "
              f"marked \"development\").", file=sys.stderr)
        raise SystemExit(2)
    unknown = sorted(s for s in seeds if s not in dev_streams and s not in eval_streams)
    if unknown:
        bar = "!" * 78
        print(f"{bar}\nWARNING: stream(s) {unknown} are not recorded in {REGISTRY}. Add them to \"evaluation\" "
              f"(never used to choose anything) before quoting these figures, or to \"development\".\n{bar}",
              file=sys.stderr, flush=True)
    kind = "development" if used else ("unrecorded" if unknown else "evaluation")
    return {"seeds": list(seeds), "kind": kind}
