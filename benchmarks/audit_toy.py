"""`steer audit` on planted toy corpora: does it find what was planted?

Three corpora, written with the toy world's exporter (ground truth in truth.jsonl, read here only
to measure, never by the audit):

1. mismatch: `--seed 7001 --count 500 --mismatch-rate 0.15`. AUROC of the audit's `mismatch` score
   for the mismatched pairs, and of each SAE-V score (cosine, co-occurring L0, L0) beside it.
2. gap: `--seed 7003 --count 300 --without KIND`. Is KIND reported as a gap?
3. bias: every cat scene also has a tree and no tree comes without a cat: stream 7004 `--with cat
   --with tree` (150 scenes) and stream 7005 `--without cat --without tree` (350) merged into one
   imagefolder, interleaved in a seeded order. Rank of cat + tree among image pairs and text pairs
   (by the lift interval's lower bound), and the pairs ranked above it.

Also: samples/s of the audit (forward pass, concept reads and SAE-V, batch 32, on the CPU).

    python benchmarks/audit_toy.py --out runs/audit-bench --seed-base 9700 [--saev runs/saev-L2] [--kind fish]
    python benchmarks/audit_toy.py --out runs/audit-bench7000             # the streams of the first reports, 7001-7005
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def auroc(labels: list[bool], scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    from scipy.stats import rankdata

    y = np.asarray(labels, dtype=bool)
    r = rankdata(scores)
    n1, n0 = int(y.sum()), int((~y).sum())
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def export(out: Path, **kw) -> Path:  # noqa: ANN003
    from steerlang.world.corpus import export_toy_corpus

    if not (out / "metadata.jsonl").is_file():
        export_toy_corpus(out, **kw)
    return out


def merged(out: Path, parts: list[tuple[str, Path]], seed: int = 0) -> Path:
    """One imagefolder from several: images under `prefix/`, rows interleaved in a seeded order."""
    if (out / "metadata.jsonl").is_file():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for prefix, src in parts:
        (tmp / prefix).mkdir(parents=True)
        meta = [json.loads(x) for x in (src / "metadata.jsonl").read_text().splitlines()]
        truth = [json.loads(x) for x in (src / "truth.jsonl").read_text().splitlines()]
        for m, t in zip(meta, truth, strict=True):
            shutil.copy2(src / m["file_name"], tmp / prefix / m["file_name"])
            name = f"{prefix}/{m['file_name']}"
            rows.append(({**m, "file_name": name}, {**t, "file_name": name}))
    random.Random(seed).shuffle(rows)
    (tmp / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m, _ in rows))
    (tmp / "truth.jsonl").write_text("".join(json.dumps(t) + "\n" for _, t in rows))
    tmp.rename(out)
    return out


def truth_of(corpus: Path) -> dict[str, dict]:
    return {t["file_name"]: t for t in map(json.loads, (corpus / "truth.jsonl").read_text().splitlines())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/audit-bench"))
    ap.add_argument("--saev", default="auto", help="SAE-V dictionary for the mismatch corpus (a shared SAE folder, pairs, auto).")
    ap.add_argument("--kind", default="fish", help="The kind the gap corpus never shows.")
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--seed-base", type=int, default=7000,
                    help="streams: mismatch base+1, gap base+3, bias base+4 and base+5 (7000: the streams of the "
                         "first reports; 9700: streams first used on 2026-12-02 16:00, after every audit setting was fixed)")
    ap.add_argument("--dev", action="store_true", help="allow development streams")
    args = ap.parse_args()
    sb = args.seed_base
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from streams import require_evaluation

    streams = require_evaluation([sb + 1, sb + 3, sb + 4, sb + 5], dev=args.dev, what="audit_toy")

    import steerlang
    from steerlang.audit import audit
    from steerlang.dictionary.concepts import load_concept_set

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    bundle, concepts = steerlang.load_model("toyworld"), load_concept_set("toyworld")
    result: dict = {"streams": streams}

    # 1. planted mismatches
    mis = export(out / f"mismatch{sb + 1}", seed=sb + 1, count=args.count, mismatch_rate=0.15)
    t0 = time.perf_counter()
    rep = audit(mis, bundle, concepts, saev=args.saev)
    wall = time.perf_counter() - t0
    truth = truth_of(mis)
    y = [bool(truth[s.file_name]["mismatched"]) for s in rep.samples]
    row = {"corpus": str(mis), "n": rep.n, "mismatched": int(sum(y)), "saev": rep.to_json()["saev"],
           "auroc": {"mismatch": auroc(y, rep.mismatch)}, "samples_per_s": rep.n / rep.seconds,
           "wall_s_with_setup": wall}
    if rep.cosine is not None:
        for k in ("cosine", "co_l0", "l0"):
            # SAE-V keeps the highest scores: a low score should flag a bad pair, so AUROC of -score.
            row["auroc"][f"-{k}"] = auroc(y, -getattr(rep, k))
    # How well the per-sample lists match the truth: a mismatched caption names exactly one absent kind.
    names = rep.names
    flagged = hits = 0
    for i, s in enumerate(rep.samples):
        t = truth[s.file_name]
        if t["mismatched"]:
            true_kinds = {o["kind"] for o in t["objects"]}
            wrong = set(s.text.replace(".", " ").split()) & set(names) - true_kinds
            got = {names[k] for k in np.flatnonzero(rep.named[i] & ~rep.seen[i])}
            flagged += 1
            hits += bool(wrong) and wrong <= got
    row["named_not_seen_recall"] = hits / max(flagged, 1)
    result["mismatch"] = row
    print(json.dumps(row, indent=1), flush=True)

    # 2. a kind never shown
    gap = export(out / f"gap{sb + 3}-without-{args.kind}", seed=sb + 3, count=300, without_kinds=[args.kind])
    rep = audit(gap, bundle, concepts, saev="none")
    result["gap"] = {"corpus": str(gap), "kind": args.kind, "gaps": rep.gaps,
                     "found": any(g["concept"] == args.kind and g["gap"] == "absent" for g in rep.gaps),
                     "other_gaps": [g["concept"] for g in rep.gaps if g["concept"] != args.kind]}
    print(json.dumps({k: v for k, v in result["gap"].items() if k != "gaps"}, indent=1), flush=True)

    # 3. a planted co-occurrence bias
    a = export(out / f"bias{sb + 4}-with-cat-tree", seed=sb + 4, count=150, with_kinds=["cat", "tree"])
    b = export(out / f"bias{sb + 5}-without-cat-tree", seed=sb + 5, count=350, without_kinds=["cat", "tree"])
    bias = merged(out / "bias-cat-tree", [("a", a), ("b", b)])
    rep = audit(bias, bundle, concepts, saev="none")
    bias_row: dict = {"corpus": str(bias), "n": rep.n}
    for m in ("image", "text"):
        pairs = [p for p in rep.cooccurrence if p["modality"] == m]
        rank = next(p["rank"] for p in pairs if {p["a"], p["b"]} == {"cat", "tree"})
        bias_row[m] = {"rank": rank, "above": [f"{p['a']}+{p['b']}" for p in pairs[: rank - 1]],
                       "top3": [{k: p[k] for k in ("a", "b", "n_ab", "expected", "lift", "lift_low", "lift_high", "direction")}
                                for p in pairs[:3]]}
    result["bias"] = bias_row
    print(json.dumps(bias_row, indent=1), flush=True)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out / 'results.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
