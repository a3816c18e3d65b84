"""Removal of every kind and replacement for every ordered pair of kinds, on fresh scenes.

    python benchmarks/all_kinds.py --dictionary captions=runs/capset --count 40 --seed 9151 \
        --out runs/bench/all_kinds.json --md runs/bench/all_kinds.md

For each concept set (`--dictionary NAME=DIR`; the shipped set is always measured, as "shipped") and
each kind K: the program of `programs/remove_cat.stl` with K for cat (`steer image where K > 0.15
{ off K }`) on the first `count` scenes of stream `seed` that hold K and 1-2 other objects; and for
each other kind J, `replace K with J` on the first `count` such scenes without J. Scenes of stream
`seed + k` for kind k (one stream per kind, so no scene is chosen by looking at another kind's).
Scored as in `interventions.py`: removal = K not named and every other object named; replacement =
J named, K not named, every other object named. Scenes with K alone are left out: the toy model never
saw an empty scene, so removing the only object has no defined answer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

PROGRAM = '''model "toyworld"
dictionary "{dictionary}"
let k = concept "{kind}"
{let_new}ask "what is in the picture?"
steer image where k > 0.15 {{
    {edit}
}}
generate 24 tokens
'''


def scenes_for(seed: int, kind: str, count: int, without: str | None = None) -> list:
    from steerlang.world.scenes import make_scenes

    pool = [s for s in make_scenes(seed, count * 12, with_kinds=[kind]) if len(s.objects) >= 2]
    out = [s for s in pool if without is None or without not in s.kinds][:count]
    if len(out) < count:
        raise SystemExit(f"stream {seed}: only {len(out)} scenes with {kind}{' and no ' + without if without else ''}")
    return out


def score(outputs: list[str], scenes: list, target: str, new: str | None) -> float:
    ok = []
    for out, s in zip(outputs, scenes, strict=True):
        words = out.split()
        keep = all(k in words for k in s.kinds if k != target)
        ok.append(target not in words and keep and (new is None or new in words))
    return float(np.mean(ok))


def measure(session, seed: int, count: int, log) -> dict:  # noqa: ANN001 - steerlang.Session
    from steerlang.world.scenes import KINDS, render

    name = session.concepts.name
    out: dict = {"removal": {}, "replacement": {}}
    for i, kind in enumerate(KINDS):
        scenes = scenes_for(seed + i, kind, count)
        prog = session.compile(PROGRAM.format(dictionary=name, kind=kind, let_new="", edit="off k"), file=f"remove_{kind}.stl")
        res = session.run(prog, images=[render(s) for s in scenes], trace=False)
        out["removal"][kind] = score([r.output for r in res], scenes, kind, None)
        for new in KINDS:
            if new == kind:
                continue
            scenes = scenes_for(seed + i, kind, count, without=new)
            text = PROGRAM.format(dictionary=name, kind=kind, let_new=f'let j = concept "{new}"\n', edit="replace k with j")
            res = session.run(session.compile(text, file=f"replace_{kind}_{new}.stl"), images=[render(s) for s in scenes], trace=False)
            out["replacement"][f"{kind}->{new}"] = score([r.output for r in res], scenes, kind, new)
        log(f"{name} {kind}: removal {out['removal'][kind]:.3f}, replacement "
            f"{np.mean([v for k, v in out['replacement'].items() if k.startswith(kind + '->')]):.3f}")
    rep = out["replacement"]
    worst = sorted(rep.items(), key=lambda kv: kv[1])[:3]
    out["summary"] = {"removal_mean": float(np.mean(list(out["removal"].values()))),
                      "removal_worst": min(out["removal"].items(), key=lambda kv: kv[1]),
                      "replacement_mean": float(np.mean(list(rep.values()))), "replacement_worst": worst}
    return out


def markdown(report: dict) -> str:
    from steerlang.world.scenes import KINDS

    lines = [f"{report['count']} scenes per kind (2-3 objects), streams {report['seed']}..{report['seed'] + 7} "
             f"({report['streams']['kind']})", ""]
    for name, r in report["sets"].items():
        s = r["summary"]
        lines += [f"### {name}", "", f"removal mean {s['removal_mean']:.3f} (worst {s['removal_worst'][0]} "
                  f"{s['removal_worst'][1]:.3f}); replacement mean {s['replacement_mean']:.3f} (worst "
                  + ", ".join(f"{k} {v:.3f}" for k, v in s["replacement_worst"]) + ")", "",
                  "| K \\ new | removal | " + " | ".join(KINDS) + " |", "|---|---|" + "---|" * len(KINDS)]
        for k in KINDS:
            cells = ["-" if j == k else f"{r['replacement'][f'{k}->{j}']:.2f}" for j in KINDS]
            lines.append(f"| {k} | {r['removal'][k]:.2f} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    from streams import require_evaluation

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dictionary", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--seed", type=int, default=9151, help="kind k's scenes from stream seed + k (k = 0..7)")
    ap.add_argument("--dev", action="store_true", help="allow development streams (the report says so)")
    ap.add_argument("--no-shipped", action="store_true", help="leave the shipped set out")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--md", type=Path)
    a = ap.parse_args()
    streams = require_evaluation(list(range(a.seed, a.seed + 8)), dev=a.dev, what="all_kinds.py")
    import steerlang

    sets = ({} if a.no_shipped else {"shipped": "toyworld"}) | dict(d.split("=", 1) for d in a.dictionary)
    report = {"seed": a.seed, "count": a.count, "streams": streams, "sets": {}}
    for name, path in sets.items():
        report["sets"][name] = measure(steerlang.load_session("toyworld", path), a.seed, a.count, print)
    md = markdown(report)
    print(md)
    for path, text in ((a.out, json.dumps(report, indent=1) + "\n"), (a.md, md)):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


if __name__ == "__main__":
    main()
