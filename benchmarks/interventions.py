"""Removal and replacement on fresh toy-world scenes (METRICS.md, "Interventions").

    python benchmarks/interventions.py --count 200 --seed 4242 --out runs/interventions.json

Scenes: `count` scenes of stream `seed` (never used in training or development) that contain a cat
and 1-2 other objects, plus `count` control scenes without a cat. Programs: `programs/remove_cat.stl`
as shipped, and the same program with `off cat` changed to `replace cat with dog`.

- removal success: "cat" absent from the steered caption and every other object still named;
- replacement success: "dog" named, "cat" absent, every other object still named;
- preservation: fraction of the non-target objects still named;
- controls unchanged: steered caption == unsteered caption on scenes without a cat.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def score(outputs: list[str], scenes: list, target: str, new: str | None) -> dict[str, float]:
    removed, replaced, kept = [], [], []
    for out, s in zip(outputs, scenes, strict=True):
        words = out.split()
        others = [k for k in s.kinds if k != target]
        keep = [k in words for k in others]
        kept += keep
        gone = target not in words
        removed.append(gone and all(keep))
        if new is not None:
            replaced.append(gone and new in words and all(keep))
    res = {"removal": float(np.mean(removed)), "preservation": float(np.mean(kept)) if kept else 1.0}
    if new is not None:
        res["replacement"] = float(np.mean(replaced))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import steerlang
    from steerlang.world.scenes import make_scenes, render

    session = steerlang.load_session("toyworld", "toyworld")
    cats = [s for s in make_scenes(args.seed, args.count * 2, with_kinds=["cat"]) if len(s.objects) >= 2][: args.count]
    controls = make_scenes(args.seed + 1, args.count, without_kinds=["cat"])
    remove = (ROOT / "programs" / "remove_cat.stl").read_text()
    programs = {"remove": remove, "replace": remove.replace("off cat", "replace cat with dog")}
    report: dict = {"scenes": {"seed": args.seed, "with_cat": len(cats), "controls": len(controls)}}
    for name, text in programs.items():
        prog = session.compile(text, file=f"{name}.stl")
        t0 = time.perf_counter()
        res = session.run(prog, images=[render(s) for s in cats], compare=True, trace=False)
        ctl = session.run(prog, images=[render(s) for s in controls], compare=True, trace=False)
        outputs = [r.output for r in res]
        row = score(outputs, cats, "cat", "dog" if name == "replace" else None)
        row["baseline_exact"] = float(np.mean([r.baseline == s.caption for r, s in zip(res, cats, strict=True)]))
        row["controls_unchanged"] = float(np.mean([r.output == r.baseline for r in ctl]))
        row["seconds"] = round(time.perf_counter() - t0, 1)
        row["examples"] = [[s.caption, o] for s, o in zip(cats[:5], outputs[:5], strict=True)]
        report[name] = row
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
