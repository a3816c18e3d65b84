"""Removal and replacement on fresh toy-world scenes, scored against baselines on the same scenes.

    python benchmarks/interventions.py --count 200 --seed 4242 --out runs/interventions.json

Scenes: `count` scenes of stream `seed` (never used in training or development) that contain a cat
and 1-2 other objects, plus `count` control scenes without a cat. Programs: `programs/remove_cat.stl`
as shipped, and the same program with `off cat` changed to `replace cat with dog`.

- removal success: "cat" absent from the steered caption and every other object still named;
- replacement success: "dog" named, "cat" absent, every other object still named;
- preservation: fraction of the non-target objects still named;
- controls unchanged: steered caption == unsteered caption on scenes without a cat.

Baselines on the same scenes (`benchmarks/baselines.py`): a difference-of-means direction (strength
swept; the best strength whose preservation stays >= 0.95 is reported, the whole sweep is in the
JSON), and VISTA's vision-only ablation of the ground-truth patches (zero / mean; replacement
writes the dog's mean patch states). Dictionaries other than the shipped one (a shared SAE, a
VL-SAE) run the same program with `--dictionary NAME=DIR`.

    python benchmarks/interventions.py --count 200 --seed 4242 --out runs/interventions.json --md runs/interventions.md
"""

from __future__ import annotations

import argparse
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
    ap.add_argument("--md", type=Path, default=None, help="also write the markdown table here")
    ap.add_argument("--dictionary", action="append", default=[], metavar="NAME=DIR",
                    help="run the same programs through another concept set (e.g. a shared SAE)")
    ap.add_argument("--alphas", default="0.25,0.5,1,1.5,2,3", help="difference-of-means strengths")
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
    for spec in args.dictionary:
        name, _, folder = spec.partition("=")
        if not Path(folder).exists():
            report[f"steerlang[{name}]"] = {"status": "not built", "dictionary": folder}
            continue
        other = steerlang.load_session("toyworld", folder)
        for op, text in programs.items():
            prog = other.compile(text.replace('dictionary "toyworld"', f'dictionary "{other.concepts.name}"'), file=f"{op}.stl")
            res = other.run(prog, images=[render(s) for s in cats], trace=False)
            ctl = other.run(prog, images=[render(s) for s in controls], compare=True, trace=False)
            row = score([r.output for r in res], cats, "cat", "dog" if op == "replace" else None)
            row["controls_unchanged"] = float(np.mean([r.output == r.baseline for r in ctl]))
            report[f"steerlang[{name}].{op}"] = row
    report["baselines"] = run_baselines(session.bundle, cats, controls, [float(a) for a in args.alphas.split(",")])
    from report import save_report

    save_report(report, args.out, args.md, markdown(report))


def run_baselines(bundle, cats: list, controls: list, alphas: list[float]) -> dict:  # noqa: ANN001
    from baselines import ablation_edit, dom_edit, generate_with_edit, patch_kinds, reference

    from steerlang.world.scenes import KINDS, render

    ref = reference(bundle)
    images, ctl_images = [render(s) for s in cats], [render(s) for s in controls]
    ctl_base = generate_with_edit(bundle, ctl_images, lambda _i, h: h)
    out: dict = {}
    for op, new in (("remove", None), ("replace", "dog")):
        sweep = []
        for a in alphas:
            row = score(generate_with_edit(bundle, images, dom_edit(ref, a, "cat", new)), cats, "cat", new)
            ctl = generate_with_edit(bundle, ctl_images, dom_edit(ref, a, "cat", new))
            row.update(alpha=a, controls_unchanged=float(np.mean([c == b for c, b in zip(ctl, ctl_base, strict=True)])))
            sweep.append(row)
        key = "replacement" if new else "removal"
        keep = [r for r in sweep if r["preservation"] >= 0.95]
        out[f"dom.{op}"] = {"best": max(keep, key=lambda r: r[key]) if keep else None,
                            "best_any": max(sweep, key=lambda r: r[key]), "sweep": sweep}
        cat = KINDS.index("cat")
        masks = [patch_kinds(s, 1) == cat for s in cats]  # any cat pixel: the oracle mask
        for how in (("zero", "mean") if new is None else ("prototype",)):
            out[f"ablate_{how}.{op}"] = score(generate_with_edit(bundle, images, ablation_edit(ref, masks, how, new)), cats, "cat", new)
    return out


def markdown(report: dict) -> str:
    """One table: removal and replacement with preservation, steerlang and each baseline."""
    rows = ["| method | removal | preservation | replacement | preservation | controls unchanged (remove / replace) |",
            "|---|---|---|---|---|---|"]

    def cell(r: dict | None, key: str) -> str:
        return "-" if not r or key not in r else f"{r[key]:.3f}"

    rem, rep = report["remove"], report["replace"]
    rows.append(f"| steerlang `off cat` / `replace cat with dog` (shipped concepts) | {cell(rem, 'removal')} | {cell(rem, 'preservation')} | "
                f"{cell(rep, 'replacement')} | {cell(rep, 'preservation')} | {cell(rem, 'controls_unchanged')} / {cell(rep, 'controls_unchanged')} |")
    for key, val in report.items():
        if key.startswith("steerlang[") and key.endswith(".remove"):
            r2 = report.get(key[:-7] + ".replace", {})
            rows.append(f"| the same programs through the {key[10:-8]} concept set | {cell(val, 'removal')} | {cell(val, 'preservation')} | {cell(r2, 'replacement')} | "
                        f"{cell(r2, 'preservation')} | {cell(val, 'controls_unchanged')} / {cell(r2, 'controls_unchanged')} |")
        elif key.startswith("steerlang[") and val.get("status") == "not built":
            rows.append(f"| the same programs through the {key[10:-1]} concept set | not built | | | | |")
    b = report["baselines"]
    dr, dp = b["dom.remove"]["best"], b["dom.replace"]["best"]
    rows.append(f"| difference of means, best strength with preservation >= 0.95 (alpha {dr['alpha'] if dr else '-'} / "
                f"{dp['alpha'] if dp else '-'}) | {cell(dr, 'removal')} | {cell(dr, 'preservation')} | {cell(dp, 'replacement')} | "
                f"{cell(dp, 'preservation')} | {cell(dr, 'controls_unchanged')} / {cell(dp, 'controls_unchanged')} |")
    dr, dp = b["dom.remove"]["best_any"], b["dom.replace"]["best_any"]
    rows.append(f"| difference of means, best strength at any preservation (alpha {dr['alpha']} / {dp['alpha']}) | {cell(dr, 'removal')} | "
                f"{cell(dr, 'preservation')} | {cell(dp, 'replacement')} | {cell(dp, 'preservation')} | "
                f"{cell(dr, 'controls_unchanged')} / {cell(dp, 'controls_unchanged')} |")
    z, m, p = b["ablate_zero.remove"], b["ablate_mean.remove"], b["ablate_prototype.replace"]
    rows.append(f"| ground-truth patches zeroed (VISTA vision-only) / dog prototype written | {cell(z, 'removal')} | {cell(z, 'preservation')} | "
                f"{cell(p, 'replacement')} | {cell(p, 'preservation')} | - |")
    rows.append(f"| ground-truth patches set to the mean image state | {cell(m, 'removal')} | {cell(m, 'preservation')} | - | - | - |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    main()
