"""The yes/no probe "is there a X ?": accuracy, and how `off` and `when` programs change the answers.

Fresh scenes (stream --seed, never used in training or development). Measured:
- accuracy of the unsteered model on a balanced set: every scene asked about one present kind and
  one absent kind;
- with `off cat` (the remove_cat program's edit) and with the same edit under a `when` rule: on
  scenes with a cat, the share answering "no" to "is there a cat ?" (the cat is gone for the model)
  and "yes" to a question about another object in the scene (the rest is kept); on scenes without
  a cat, the share whose answers are unchanged.

    python benchmarks/hallucination.py --count 200 --seed 5151 --out runs/hallucination.json --md runs/hallucination.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

EDIT = "steer image where cat > 0.15 { off cat }"
PROGRAMS = {
    "off cat": f'let cat = concept "cat"\n{EDIT}\ngenerate 2 tokens',
    "when cat in image: off cat": f'let cat = concept "cat"\nwhen cat > 0.5 in image {{ {EDIT} }}\ngenerate 2 tokens',
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--seed", type=int, default=5151)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None)
    args = ap.parse_args()

    import steerlang
    from steerlang.world.scenes import KINDS, make_scenes, render
    from steerlang.world.vocab import question_for

    session = steerlang.load_session("toyworld", "toyworld")
    rng = np.random.default_rng(args.seed)
    scenes = make_scenes(args.seed, args.count)
    images = [render(s) for s in scenes]
    # Balanced accuracy set, grouped by the asked kind (one prompt per run).
    asks: dict[str, list[tuple[int, str]]] = {}
    for i, s in enumerate(scenes):
        absent = [k for k in KINDS if k not in s.kinds]
        asks.setdefault(str(rng.choice(s.kinds)), []).append((i, "yes"))
        asks.setdefault(str(rng.choice(absent)), []).append((i, "no"))
    right = []
    for kind, items in asks.items():
        out = session.bundle.generate([images[i] for i, _ in items], question_for(kind), max_new_tokens=2)
        right += [o == t for o, (_i, t) in zip(out, items, strict=True)]
    report: dict = {"seed": args.seed, "questions": len(right), "accuracy": float(np.mean(right))}

    cats = [s for s in make_scenes(args.seed + 1, args.count * 2, with_kinds=["cat"]) if len(s.objects) >= 2][: args.count]
    others = make_scenes(args.seed + 2, args.count, without_kinds=["cat"])
    cat_imgs, other_imgs = [render(s) for s in cats], [render(s) for s in others]
    other_kind = [next(k for k in s.kinds if k != "cat") for s in cats]
    for name, prog in PROGRAMS.items():
        row: dict = {}
        res = session.run(prog, images=cat_imgs, prompt=question_for("cat"), compare=True, trace=False)
        row["cat scenes: baseline says yes to cat"] = float(np.mean([r.baseline == "yes" for r in res]))
        row["cat scenes: says no to cat"] = float(np.mean([r.output == "no" for r in res]))
        kept = []
        for kind in sorted(set(other_kind)):
            idx = [i for i, k in enumerate(other_kind) if k == kind]
            rk = session.run(prog, images=[cat_imgs[i] for i in idx], prompt=question_for(kind), trace=False)
            kept += [r.output == "yes" for r in rk]
        row["cat scenes: still says yes to another object"] = float(np.mean(kept))
        rn = session.run(prog, images=other_imgs, prompt=question_for("cat"), compare=True, trace=False)
        row["scenes without a cat: answer to cat unchanged"] = float(np.mean([r.output == r.baseline for r in rn]))
        report[name] = row
    lines = [f"Unsteered yes/no accuracy: {report['accuracy']:.3f} on {report['questions']} balanced questions (seed {args.seed}).", "",
             "| program | " + " | ".join(next(iter(report[n] for n in PROGRAMS)).keys()) + " |",
             "|---|" + "---|" * len(next(iter(report[n] for n in PROGRAMS)))]
    for n in PROGRAMS:
        lines.append(f"| `{n}` | " + " | ".join(f"{v:.3f}" for v in report[n].values()) + " |")
    from report import save_report

    save_report(report, args.out, args.md, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
