"""The yes/no probe "is there a X ?": hallucination (POPE-style) and what steering does to it.

    python benchmarks/hallucination.py --count 200 --seed 9111 --out runs/bench/hallucination.json --md runs/bench/hallucination.md

Streams `seed`, `seed + 1`, `seed + 2` must be evaluation streams of `benchmarks/streams.json`
(`--dev` allows development streams and marks the report).

1. Hallucination, POPE-style (stream `seed`): every scene is asked "is there a X ?" for every kind
   X; answering "yes" for an absent kind is a hallucination. Reported: the "yes" rate on absent
   kinds (the hallucination rate), the "yes" rate on present kinds (recall), accuracy, precision,
   F1 and the share of "yes" answers, for the unsteered model (the baseline) and with a program
   that targets it: when the asked kind's concept never passes 0.5 anywhere in the image, switch
   it off where it passes 0.15 (`UNSEEN_OFF`; thresholds copied from the shipped programs, not
   tuned here). Toy-world kinds are drawn independently and uniformly, so POPE's random, popular
   and adversarial (co-occurrence) negatives coincide: asking every absent kind covers them all.
   Also the balanced accuracy of the unsteered model (one present and one absent kind per scene).
2. Removal seen through the probe (streams `seed + 1`, scenes with a cat and 1-2 other objects,
   and `seed + 2`, scenes without a cat): with `off cat` (the remove_cat program's edit), alone and
   under a `when` rule, the share answering "no" to "is there a cat ?" (the cat is gone for the
   model: induced "no" answers, not hallucination), "yes" to another object in the scene, and
   "yes" to absent kinds (does the edit make the model see something that is not there?, against
   the unsteered model on the same questions); on scenes without a cat, the share whose answer
   about the cat is unchanged.
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
UNSEEN_OFF = 'let k = concept "{kind}"\nwhen not k > 0.5 in image {{ steer image where k > 0.15 {{ off k }} }}\ngenerate 2 tokens'


def pope(answers: list[str], truth: list[bool]) -> dict[str, float]:
    """POPE's metrics for yes/no answers against presence; an answer other than "yes" counts as no."""
    yes = np.array([a == "yes" for a in answers])
    t = np.array(truth)
    tp, fp = int((yes & t).sum()), int((yes & ~t).sum())
    recall = tp / max(int(t.sum()), 1)
    precision = tp / max(tp + fp, 1)
    return {"hallucination_rate": fp / max(int((~t).sum()), 1), "recall": recall,
            "accuracy": float((yes == t).mean()), "precision": precision,
            "f1": 2 * precision * recall / max(precision + recall, 1e-12), "yes_ratio": float(yes.mean()),
            "n_present": int(t.sum()), "n_absent": int((~t).sum()), "other_answers": int(sum(a not in ("yes", "no") for a in answers))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--seed", type=int, default=9111)
    ap.add_argument("--dev", action="store_true", help="allow development streams (the report says so)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None)
    args = ap.parse_args()
    from streams import require_evaluation

    streams = require_evaluation([args.seed, args.seed + 1, args.seed + 2], dev=args.dev, what="hallucination.py")

    import steerlang
    from steerlang.world.scenes import KINDS, make_scenes, render
    from steerlang.world.vocab import question_for

    session = steerlang.load_session("toyworld", "toyworld")
    report: dict = {"streams": streams, "seed": args.seed}

    # 1. POPE-style: every kind on every scene, unsteered and with the program that targets it.
    scenes = make_scenes(args.seed, args.count)
    images = [render(s) for s in scenes]
    base: dict[str, list[str]] = {}
    steered: dict[str, list[str]] = {}
    for kind in KINDS:
        res = session.run(UNSEEN_OFF.format(kind=kind), images=images, prompt=question_for(kind), compare=True, trace=False)
        base[kind] = [r.baseline for r in res]
        steered[kind] = [r.output for r in res]
    truth = {k: [k in s.kinds for s in scenes] for k in KINDS}

    def flat(d: dict[str, list[str]]) -> tuple[list[str], list[bool]]:
        return [a for k in KINDS for a in d[k]], [t for k in KINDS for t in truth[k]]

    report["pope"] = {"unsteered": pope(*flat(base)), "unseen_off": pope(*flat(steered)),
                      "per_kind_hallucination": {
                          k: {"unsteered": pope(base[k], truth[k])["hallucination_rate"],
                              "unseen_off": pope(steered[k], truth[k])["hallucination_rate"]} for k in KINDS},
                      "program": UNSEEN_OFF}
    rng = np.random.default_rng(args.seed)
    right = []
    for i, s in enumerate(scenes):  # balanced: one present and one absent kind per scene
        absent = [k for k in KINDS if k not in s.kinds]
        right += [base[str(rng.choice(s.kinds))][i] == "yes", base[str(rng.choice(absent))][i] == "no"]
    report["balanced_accuracy"] = {"questions": len(right), "accuracy": float(np.mean(right))}
    print({k: v for k, v in report["pope"].items() if k != "per_kind_hallucination"}, flush=True)

    # 2. The off-cat programs seen through the probe.
    cats = [s for s in make_scenes(args.seed + 1, args.count * 2, with_kinds=["cat"]) if len(s.objects) >= 2][: args.count]
    others = make_scenes(args.seed + 2, args.count, without_kinds=["cat"])
    cat_imgs, other_imgs = [render(s) for s in cats], [render(s) for s in others]
    other_kind = [next(k for k in s.kinds if k != "cat") for s in cats]
    for name, prog in PROGRAMS.items():
        row: dict = {}
        res = session.run(prog, images=cat_imgs, prompt=question_for("cat"), compare=True, trace=False)
        row["cat scenes: unsteered says yes to cat"] = float(np.mean([r.baseline == "yes" for r in res]))
        row["cat scenes: says no to cat"] = float(np.mean([r.output == "no" for r in res]))
        kept = []
        for kind in sorted(set(other_kind)):
            idx = [i for i, k in enumerate(other_kind) if k == kind]
            rk = session.run(prog, images=[cat_imgs[i] for i in idx], prompt=question_for(kind), trace=False)
            kept += [r.output == "yes" for r in rk]
        row["cat scenes: still says yes to another object"] = float(np.mean(kept))
        fp_base, fp_prog = [], []
        for kind in KINDS:
            if kind == "cat":
                continue
            idx = [i for i, s in enumerate(cats) if kind not in s.kinds]
            rk = session.run(prog, images=[cat_imgs[i] for i in idx], prompt=question_for(kind), compare=True, trace=False)
            fp_base += [r.baseline == "yes" for r in rk]
            fp_prog += [r.output == "yes" for r in rk]
        row["cat scenes: yes to an absent kind, unsteered"] = float(np.mean(fp_base))
        row["cat scenes: yes to an absent kind, steered"] = float(np.mean(fp_prog))
        rn = session.run(prog, images=other_imgs, prompt=question_for("cat"), compare=True, trace=False)
        row["scenes without a cat: answer to cat unchanged"] = float(np.mean([r.output == r.baseline for r in rn]))
        row["n_absent_questions"] = len(fp_base)
        report[name] = row
        print(name, row, flush=True)

    p = report["pope"]
    cols = ("hallucination_rate", "recall", "accuracy", "precision", "f1", "yes_ratio")
    lines = [f"POPE-style, stream {args.seed}: {args.count} scenes x {len(KINDS)} kinds = {p['unsteered']['n_present']} questions "
             f"about present kinds, {p['unsteered']['n_absent']} about absent ones (streams: {streams['kind']}).", "",
             "| | " + " | ".join(c.replace("_", " ") for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for key, label in (("unsteered", "unsteered model (baseline)"), ("unseen_off", "`when not X > 0.5 in image { steer image where X > 0.15 { off X } }`")):
        lines.append(f"| {label} | " + " | ".join(f"{p[key][c]:.3f}" for c in cols) + " |")
    lines += ["", "Hallucination rate per asked kind (unsteered / program): "
              + ", ".join(f"{k} {v['unsteered']:.3f} / {v['unseen_off']:.3f}" for k, v in p["per_kind_hallucination"].items()), "",
              f"Unsteered balanced yes/no accuracy: {report['balanced_accuracy']['accuracy']:.3f} on "
              f"{report['balanced_accuracy']['questions']} questions (stream {args.seed}).", "",
              f"Removal seen through the probe (streams {args.seed + 1} / {args.seed + 2}):", ""]
    keys = [k for k in report[next(iter(PROGRAMS))] if k != "n_absent_questions"]
    lines += ["| program | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for n in PROGRAMS:
        lines.append(f"| `{n}` | " + " | ".join(f"{report[n][k]:.3f}" for k in keys) + " |")
    from report import save_report

    save_report(report, args.out, args.md, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
