"""Patch precision / recall of each kind's image group against the renderer's truth, per layer (oracle
measurement only: nothing here feeds a builder).

    python benchmarks/caption_groups.py --dictionary captions=runs/capset --count 300 --seed 9121 \
        --out runs/bench/caption_groups.json --md runs/bench/caption_groups.md

For every concept set given (`--dictionary NAME=DIR`; the shipped set is always measured, as
"shipped"), every object kind that names a joint concept, and every layer where the concept has
an image group: where the group fires (its activation above its own threshold, exactly as `off`
reads it before closing) against the patches holding >= 8 of the object's pixels, on `count` scenes
of stream `seed` (an evaluation stream of `benchmarks/streams.json`), under the toy model's describe
prompts and under yes/no questions (the same images). Mean over kinds, and every kind.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(path: str, seed: int, count: int) -> dict:
    from steerlang.dictionary.api import harvested
    from steerlang.dictionary.build_concepts import precision_recall
    from steerlang.dictionary.concepts import load_concept_set
    from steerlang.world.oracle_concepts import load_split
    from steerlang.world.scenes import KINDS

    cs = load_concept_set(path)
    out: dict = {}
    for prompts in ("describe", "questions"):
        acts = harvested("toyworld", seed=seed, count=count, prompts=prompts)
        for layer in cs.layer_numbers:
            split = load_split(acts, layer, seed, images_only=True)
            sae = cs.sae(layer, "image")
            rows = {}
            for c in cs.concepts:
                if c.space != "joint" or c.name not in KINDS:
                    continue
                gs = [g for g in c.groups if g.layer == layer and g.modality == "image"]
                if not gs:
                    continue
                with torch.no_grad():
                    fires = torch.zeros(len(split.img_label), dtype=torch.bool)
                    for g in gs:
                        fires |= g.activation(sae, split.x_img) > g.threshold
                p, r = precision_recall(fires, split.img_label == KINDS.index(c.name))
                rows[c.name] = {"precision": round(p, 4), "recall": round(r, 4)}
            if rows:
                mean = {k: round(float(np.mean([v[k] for v in rows.values()])), 4) for k in ("precision", "recall")}
                out.setdefault(prompts, {})[str(layer)] = {"mean": mean, "kinds": rows}
    return out


def markdown(report: dict) -> str:
    names = list(report["sets"])
    layers = sorted({int(la) for s in report["sets"].values() for la in s.get("describe", {})})
    lines = [f"Patch precision / recall against the renderer's truth (>= 8 object pixels), {report['count']} scenes of "
             f"stream {report['seed']} ({report['streams']['kind']}); mean over kinds.", "",
             "| prompts | layer | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for prompts in ("describe", "questions"):
        for la in layers:
            cells = []
            for n in names:
                m = report["sets"][n].get(prompts, {}).get(str(la), {}).get("mean")
                cells.append(f"{m['precision']:.2f} / {m['recall']:.2f}" if m else "-")
            lines.append(f"| {prompts} | {la} | " + " | ".join(cells) + " |")
    for n in names:
        worst = []
        for la, row in report["sets"][n].get("describe", {}).items():
            for k, v in row["kinds"].items():
                worst.append((v["recall"], v["precision"], k, la))
        worst.sort()
        lines.append(f"\n{n}: lowest recall (describe): " + ", ".join(f"{k}@L{la} {p:.2f} / {r:.2f}" for r, p, k, la in worst[:4]))
    return "\n".join(lines) + "\n"


def main() -> None:
    from benchmarks.streams import require_evaluation

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dictionary", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--seed", type=int, default=9121)
    ap.add_argument("--dev", action="store_true", help="allow a development stream (the report says so)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--md", type=Path)
    a = ap.parse_args()
    streams = require_evaluation([a.seed], dev=a.dev, what="caption_groups.py")
    sets = {"shipped": "toyworld", **dict(d.split("=", 1) for d in a.dictionary)}
    report = {"seed": a.seed, "count": a.count, "streams": streams, "sets": {n: measure(p, a.seed, a.count) for n, p in sets.items()}}
    md = markdown(report)
    print(md)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=1) + "\n")
    if a.md:
        a.md.parent.mkdir(parents=True, exist_ok=True)
        a.md.write_text(md)


if __name__ == "__main__":
    main()
