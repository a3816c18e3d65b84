"""Removal and replacement on evaluation scenes, scored against baselines on the same scenes.

    python benchmarks/interventions.py --count 200 --seed 9141 --out runs/bench/interventions.json --md runs/bench/interventions.md

Scenes: stream `seed` and `seed + 1`, which must be evaluation streams of `benchmarks/streams.json`
(never used for training or to choose a setting; `--dev` allows a development stream and marks the
report). Removal: the first `count` scenes of stream `seed` drawn with a cat and 1-2 other objects.
Replacement: the first `count` such scenes with no dog (where a dog is already in the scene, "dog
named" says nothing about the replacement). Controls: `count` scenes without a cat (stream
`seed + 1`). Programs: `programs/remove_cat.stl` as shipped, and the same program with `off cat`
changed to `replace cat with dog`.

- removal success: "cat" absent from the steered caption and every other object still named;
- replacement success (scenes without a dog): "dog" named, "cat" absent, every other object named;
- preservation: fraction of the non-target objects still named;
- controls unchanged: steered caption == unsteered caption on scenes without a cat.

Baselines on the same scenes and prompt (`benchmarks/baselines.py`): a difference-of-means direction
(strength swept; the best strength whose preservation stays >= 0.95 is reported, and the best at
any preservation; the whole sweep is in the JSON) in four variants: at layer 0 or at layers 0-4 (the
layers the program edits), at every image position or only inside the mask the program edited on
that scene at that layer. The strength is chosen on the evaluation scenes themselves, which favours
the baseline. And VISTA's vision-only ablation of the ground-truth patches (zero / mean;
replacement writes the dog's mean patch states), at layer 0. Dictionaries other than the shipped
one (a shared SAE, a VL-SAE) run the same program with `--dictionary NAME=DIR`.
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
        if new is not None:
            assert new not in s.kinds, "replacement is scored on scenes without the new kind only"
        keep = [k in words for k in others]
        kept += keep
        gone = target not in words
        removed.append(gone and all(keep))
        if new is not None:
            replaced.append(gone and new in words and all(keep))
    res = {"removal": float(np.mean(removed)), "preservation": float(np.mean(kept)) if kept else 1.0, "n": len(outputs)}
    if new is not None:
        res["replacement"] = float(np.mean(replaced))
    return res


def scene_sets(seed: int, count: int) -> tuple[list, list, list]:
    """(cat scenes for removal, cat scenes without a dog for replacement, control scenes without a cat)."""
    from steerlang.world.scenes import make_scenes

    pool = [s for s in make_scenes(seed, count * 5, with_kinds=["cat"]) if len(s.objects) >= 2]
    cats = pool[:count]
    nodog = [s for s in pool if "dog" not in s.kinds][:count]
    if len(cats) < count or len(nodog) < count:
        raise SystemExit(f"stream {seed}: only {len(cats)} / {len(nodog)} qualifying scenes among {count * 5}")
    return cats, nodog, make_scenes(seed + 1, count, without_kinds=["cat"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--seed", type=int, default=9141, help="cat scenes from this stream, controls from seed + 1")
    ap.add_argument("--dev", action="store_true", help="allow development streams (the report says so)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None, help="also write the markdown table here")
    ap.add_argument("--dictionary", action="append", default=[], metavar="NAME=DIR",
                    help="run the same programs through another concept set (e.g. a shared SAE)")
    ap.add_argument("--alphas", default="0.25,0.5,1,1.5,2,3", help="difference-of-means strengths")
    ap.add_argument("--no-baselines", action="store_true", help="steerlang's programs only (e.g. to add --dictionary rows)")
    args = ap.parse_args()
    from streams import require_evaluation

    streams = require_evaluation([args.seed, args.seed + 1], dev=args.dev, what="interventions.py")

    import steerlang
    from steerlang.world.scenes import render

    session = steerlang.load_session("toyworld", "toyworld")
    cats, nodog, controls = scene_sets(args.seed, args.count)
    imgs = {"cats": [render(s) for s in cats], "nodog": [render(s) for s in nodog], "controls": [render(s) for s in controls]}
    remove = (ROOT / "programs" / "remove_cat.stl").read_text()
    programs = {"remove": remove, "replace": remove.replace("off cat", "replace cat with dog")}
    prompt = session.compile(remove, file="remove.stl").header.ask
    layers = list(session.concepts.layer_numbers)
    report: dict = {"streams": streams,
                    "scenes": {"seed": args.seed, "with_cat": len(cats), "with_cat_no_dog": len(nodog),
                               "with_cat_and_dog": sum("dog" in s.kinds for s in cats),
                               "controls": len(controls), "controls_seed": args.seed + 1},
                    "prompt": prompt, "layers": layers}
    from baselines import capture_masks

    base = {k: session.generate(v, prompt, max_new_tokens=24) for k, v in imgs.items()}
    masks: dict[tuple[str, str], dict[int, list[np.ndarray]]] = {}
    for name, text in programs.items():
        prog = session.compile(text, file=f"{name}.stl")
        target_key, scenes = ("cats", cats) if name == "remove" else ("nodog", nodog)
        t0 = time.perf_counter()
        outputs, masks[(name, target_key)] = capture_masks(session, prog, imgs[target_key], layers, prompt)
        ctl, masks[(name, "controls")] = capture_masks(session, prog, imgs["controls"], layers, prompt)
        row = score(outputs, scenes, "cat", "dog" if name == "replace" else None)
        row["baseline_exact"] = float(np.mean([b == s.caption for b, s in zip(base[target_key], scenes, strict=True)]))
        row["controls_unchanged"] = float(np.mean([o == b for o, b in zip(ctl, base["controls"], strict=True)]))
        row["mask_patches_per_layer"] = {la: float(np.mean([m.sum() for m in masks[(name, target_key)][la]])) for la in layers}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        row["examples"] = [[s.caption, o] for s, o in zip(scenes[:5], outputs[:5], strict=True)]
        report[name] = row
        print(name, {k: v for k, v in row.items() if k != "examples"}, flush=True)
    for spec in args.dictionary:
        name, _, folder = spec.partition("=")
        if not Path(folder).exists():
            report[f"steerlang[{name}]"] = {"status": "not built", "dictionary": folder}
            continue
        other = steerlang.load_session("toyworld", folder)
        for op, text in programs.items():
            prog = other.compile(text.replace('dictionary "toyworld"', f'dictionary "{other.concepts.name}"'), file=f"{op}.stl")
            target_key, scenes = ("cats", cats) if op == "remove" else ("nodog", nodog)
            res = other.run(prog, images=imgs[target_key], prompt=prompt, trace=False)
            ctl = other.run(prog, images=imgs["controls"], prompt=prompt, trace=False)
            row = score([r.output for r in res], scenes, "cat", "dog" if op == "replace" else None)
            row["controls_unchanged"] = float(np.mean([r.output == b for r, b in zip(ctl, base["controls"], strict=True)]))
            report[f"steerlang[{name}].{op}"] = row
            print(f"steerlang[{name}].{op}", row, flush=True)
    if not args.no_baselines:
        report["baselines"] = run_baselines(session.bundle, {"cats": cats, "nodog": nodog, "controls": controls}, imgs, base,
                                            masks, layers, prompt, [float(a) for a in args.alphas.split(",")])
    from report import save_report

    save_report(report, args.out, args.md, markdown(report))


DOM_VARIANTS = {  # name: (layers, inside the program's mask)
    "dom_L0_all": ("0", False),
    "dom_L0-4_all": ("all", False),
    "dom_L0_mask": ("0", True),
    "dom_L0-4_mask": ("all", True),
}


def run_baselines(bundle, scenes: dict, imgs: dict, base: dict, masks: dict, layers: list[int], prompt: str,  # noqa: ANN001
                  alphas: list[float]) -> dict:
    from baselines import ablation_edit, dom_edit, generate_with_edit, patch_kinds, reference

    from steerlang.world.scenes import KINDS

    t0 = time.perf_counter()
    refs = reference(bundle, layers=layers, prompt=prompt)
    out: dict = {}
    for op, new, key in (("remove", None, "cats"), ("replace", "dog", "nodog")):
        metric = "replacement" if new else "removal"
        for variant, (which, in_mask) in DOM_VARIANTS.items():
            use = [0] if which == "0" else layers
            sweep = []
            for a in alphas:
                edits = {la: dom_edit(refs[la], a, "cat", new, masks[(op, key)][la] if in_mask else None) for la in use}
                row = score(generate_with_edit(bundle, imgs[key], edits, prompt=prompt), scenes[key], "cat", new)
                sweep.append({**row, "alpha": a})
            keep = [r for r in sweep if r["preservation"] >= 0.95]
            best, best_any = (max(keep, key=lambda r: r[metric]) if keep else None), max(sweep, key=lambda r: r[metric])
            for row in {id(r): r for r in (best, best_any) if r is not None}.values():  # controls at the reported strengths only
                a = row["alpha"]
                ctl_edits = {la: dom_edit(refs[la], a, "cat", new, masks[(op, "controls")][la] if in_mask else None) for la in use}
                ctl = generate_with_edit(bundle, imgs["controls"], ctl_edits, prompt=prompt)
                row["controls_unchanged"] = float(np.mean([c == b for c, b in zip(ctl, base["controls"], strict=True)]))
            out[f"{variant}.{op}"] = {"best": best, "best_any": best_any, "sweep": sweep}
            print(variant, op, {k: out[f"{variant}.{op}"][k] for k in ("best", "best_any")}, flush=True)
        cat = KINDS.index("cat")
        oracle = [patch_kinds(s, 1) == cat for s in scenes[key]]  # any cat pixel: the oracle mask
        for how in (("zero", "mean") if new is None else ("prototype",)):
            out[f"ablate_{how}.{op}"] = score(generate_with_edit(bundle, imgs[key], ablation_edit(refs[0], oracle, how, new), prompt=prompt),
                                              scenes[key], "cat", new)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def markdown(report: dict) -> str:
    """One table: removal and replacement with preservation, steerlang and each baseline."""
    rows = ["| method | removal | preservation | replacement (no-dog scenes) | preservation | controls unchanged (remove / replace) |",
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
    b = report.get("baselines")
    labels = {"dom_L0_all": "layer 0, every image position", "dom_L0-4_all": "layers 0-4, every image position",
              "dom_L0_mask": "layer 0, inside steerlang's mask", "dom_L0-4_mask": "layers 0-4, inside steerlang's mask"}
    for variant, label in labels.items() if b else ():
        for which, text in (("best", "best strength with preservation >= 0.95"), ("best_any", "best strength at any preservation")):
            dr, dp = b[f"{variant}.remove"][which], b[f"{variant}.replace"][which]
            rows.append(f"| difference of means, {label}, {text} (alpha {dr['alpha'] if dr else '-'} / {dp['alpha'] if dp else '-'}) | "
                        f"{cell(dr, 'removal')} | {cell(dr, 'preservation')} | {cell(dp, 'replacement')} | {cell(dp, 'preservation')} | "
                        f"{cell(dr, 'controls_unchanged')} / {cell(dp, 'controls_unchanged')} |")
    if b:
        z, m, p = b["ablate_zero.remove"], b["ablate_mean.remove"], b["ablate_prototype.replace"]
        rows.append(f"| ground-truth patches zeroed (VISTA vision-only) / dog prototype written, layer 0 | {cell(z, 'removal')} | "
                    f"{cell(z, 'preservation')} | {cell(p, 'replacement')} | {cell(p, 'preservation')} | - |")
        rows.append(f"| ground-truth patches set to the mean image state, layer 0 | {cell(m, 'removal')} | {cell(m, 'preservation')} | - | - | - |")
    sc = report["scenes"]
    rows.append("")
    rows.append(f"Streams: {sc['seed']} ({sc['with_cat']} cat scenes, {sc['with_cat_and_dog']} of them with a dog; replacement on the first "
                f"{sc['with_cat_no_dog']} without a dog) and {sc['controls_seed']} ({sc['controls']} controls); kind: {report['streams']['kind']}.")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    main()
