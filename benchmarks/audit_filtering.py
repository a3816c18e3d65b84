"""Does filtering pay off? Train on the audit's filtered half, a random half and the full noisy corpus.

SAE-V's claim for its data filtering: more than 110% of the full-data result with less than 50%
of the data. Here, on the toy world:

1. a noisy corpus: `steer data toy --seed 7101 --count 2000 --mismatch-rate 0.3` (about 30% of
   the captions name one wrong object);
2. the filtered half: `steer audit ... --keep 0.5 --by mismatch` (the audit reads only the images
   and the captions);
3. a random half of the same size, rows drawn with a seeded generator (`--random-seed`);
4. the same training on each arm, with the same steps, batch, learning rate and seeds: by default
   from a *weak* start, the toy recipe (`steer world train`) stopped after `--base-steps` steps
   on clean scenes, then `steer world finetune` on the arm (captions as answers to the describe
   prompt, and yes/no questions derived from the caption's words). `--start scratch` trains a
   fresh model on each arm instead; `--start DIR` starts from a model folder.
5. caption exact match and yes/no accuracy on clean held-out scenes (`--eval-seed`, default 9201;
   the evaluator of `steer world eval`).

The corpus's truth.jsonl is read only to report how many wrong captions each arm holds.
Everything is cached under `--out`: rerunning skips the corpora, the audit, the start model and
every (arm, seed) whose model folder already holds a train_report.json.

    python benchmarks/audit_filtering.py --out runs/filtering --seeds 0 1 2 --md runs/filtering/results.md

Defaults as measured in docs/audit.md ("Does filtering pay off?"): start = the toy recipe stopped after
100 steps, 400 fine-tuning steps of 32, lr 1e-3, half the examples yes/no questions; about 6 minutes
a run with --threads 1 on a shared 2-core box.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ARMS = ("filtered", "random", "full")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def noisy_corpus(out: Path, seed: int, count: int, rate: float) -> Path:
    from steerlang.world.corpus import export_toy_corpus

    path = out / "noisy"
    if not (path / "metadata.jsonl").is_file():
        log(f"writing the noisy corpus ({count} scenes of stream {seed}, mismatch rate {rate})")
        export_toy_corpus(path, seed=seed, count=count, mismatch_rate=rate)
    return path


def filtered_half(out: Path, noisy: Path, keep: float) -> tuple[Path, float | None]:
    """The audit's best `keep` fraction by mismatch (as `steer audit --keep K --by mismatch
    --out-data DIR`); reuses `out/kept` when it exists. Returns the folder and the audit's seconds."""
    from steerlang.audit import audit, kept_rows, write_kept
    from steerlang.data import open_dataset

    path = out / "kept"
    if (path / "metadata.jsonl").is_file():
        return path, None
    log("auditing the noisy corpus")
    ds = open_dataset(noisy)
    t0 = time.perf_counter()
    report = audit(ds, "toyworld", "toyworld")
    seconds = time.perf_counter() - t0
    (out / "audit.json").write_text(json.dumps(report.to_json()) + "\n")
    write_kept(ds, kept_rows(report, keep, "mismatch"), path)
    return path, seconds


def random_half(out: Path, noisy: Path, n: int, seed: int) -> Path:
    """`n` rows of the noisy corpus drawn without replacement by `default_rng(seed)`, written with
    `steerlang.audit.write_kept`."""
    from steerlang.audit import write_kept
    from steerlang.data import open_dataset

    path = out / "random"
    if not (path / "metadata.jsonl").is_file():
        ds = open_dataset(noisy)
        rows = sorted(np.random.default_rng(seed).choice(ds.count_rows(), size=n, replace=False).tolist())
        write_kept(ds, rows, path)
    return path


def count_rows(corpus: Path) -> int:
    return sum(1 for line in (corpus / "metadata.jsonl").read_text().splitlines() if line.strip())


def wrong_captions(corpus: Path, noisy: Path) -> int:
    """How many of the corpus's rows carry a mismatched caption (measured with truth.jsonl)."""
    truth = {json.loads(x)["file_name"]: json.loads(x)["mismatched"] for x in (noisy / "truth.jsonl").read_text().splitlines()}
    names = [json.loads(x)["file_name"] for x in (corpus / "metadata.jsonl").read_text().splitlines() if x.strip()]
    return sum(truth[n] for n in names)


def objects_per_scene(corpus: Path, noisy: Path) -> dict[int, int]:
    truth = {json.loads(x)["file_name"]: len(json.loads(x)["objects"]) for x in (noisy / "truth.jsonl").read_text().splitlines()}
    names = [json.loads(x)["file_name"] for x in (corpus / "metadata.jsonl").read_text().splitlines() if x.strip()]
    counts: dict[int, int] = {}
    for n in names:
        counts[truth[n]] = counts.get(truth[n], 0) + 1
    return dict(sorted(counts.items()))


def start_model(out: Path, args: argparse.Namespace) -> tuple[str, dict | None]:
    """The starting point of every arm: "scratch", a given folder, or the toy recipe stopped early."""
    if args.start != "base":
        return args.start, None
    from steerlang.world.api import train_and_save

    path = out / f"base-{args.base_steps}"
    report_file = path / "train_report.json"
    if not report_file.is_file():
        log(f"training the weak start: the toy recipe for {args.base_steps} steps")
        train_and_save(path, steps=args.base_steps, batch_size=64, seed=0, threads=args.threads, eval_count=0)
    report = json.loads(report_file.read_text())
    eval_file = out / f"base-{args.base_steps}.eval-{args.eval_seed}-{args.eval_count}.json"
    if args.eval_count and not eval_file.is_file():
        from steerlang.world.api import evaluate_model

        eval_file.write_text(json.dumps(evaluate_model(str(path), seed=args.eval_seed, count=args.eval_count)) + "\n")
    if eval_file.is_file():
        report[f"eval_{args.eval_seed}"] = json.loads(eval_file.read_text())
    return str(path), report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/filtering"))
    p.add_argument("--corpus-seed", type=int, default=7101)
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--mismatch-rate", type=float, default=0.3)
    p.add_argument("--keep", type=float, default=0.5)
    p.add_argument("--random-seed", type=int, default=0, help="seed of the random half's row draw")
    p.add_argument("--start", default="base", help='"base" (the toy recipe for --base-steps), "scratch", or a model folder')
    p.add_argument("--base-steps", type=int, default=100)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--describe-fraction", type=float, default=0.5,
                   help="fraction of examples asking for the caption; the rest are yes/no questions from the caption")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--eval-seed", type=int, default=9201)
    p.add_argument("--eval-count", type=int, default=500)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    p.add_argument("--md", type=Path, default=None)
    args = p.parse_args()

    from steerlang.world.train import FinetuneConfig, finetune_and_save

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    noisy = noisy_corpus(out, args.corpus_seed, args.count, args.mismatch_rate)
    kept, audit_seconds = filtered_half(out, noisy, args.keep)
    corpora = {"filtered": kept, "random": random_half(out, noisy, count_rows(kept), args.random_seed), "full": noisy}
    start, start_report = start_model(out, args)

    runs = []
    for seed in args.seeds:
        for arm in args.arms:
            path = out / "models" / f"{arm}-s{seed}"
            report_file = path / "train_report.json"
            if not report_file.is_file():
                log(f"{arm} seed {seed}: {args.steps} steps from {start}")
                cfg = FinetuneConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
                                     seed=seed, threads=args.threads, describe_fraction=args.describe_fraction)
                finetune_and_save(path, start=start, data=corpora[arm], cfg=cfg, eval_seed=args.eval_seed,
                                  eval_count=args.eval_count)
            rep = json.loads(report_file.read_text())
            ev = rep["eval"]
            runs.append({"arm": arm, "seed": seed, "caption_accuracy": ev["caption_accuracy"],
                         "yesno_accuracy": ev["yesno_accuracy"], "train_seconds": rep["train_seconds"],
                         "samples": rep["data"]["samples"]})
            log(f"{arm} seed {seed}: exact match {ev['caption_accuracy']:.3f}, yes/no {ev['yesno_accuracy']:.3f}")

    summary = {}
    for arm in args.arms:
        mine = [r for r in runs if r["arm"] == arm]
        summary[arm] = {
            "samples": count_rows(corpora[arm]),
            "wrong_captions": wrong_captions(corpora[arm], noisy),
            "objects_per_scene": objects_per_scene(corpora[arm], noisy),
            "seeds": [r["seed"] for r in mine],
            "caption_accuracy_mean": statistics.mean(r["caption_accuracy"] for r in mine),
            "yesno_accuracy_mean": statistics.mean(r["yesno_accuracy"] for r in mine),
        }
    if "full" in summary:
        for arm in summary:
            for key in ("caption_accuracy_mean", "yesno_accuracy_mean"):
                full = summary["full"][key]
                summary[arm][key.replace("_mean", "_vs_full")] = summary[arm][key] / full if full else None
    result = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "start": start,
        "start_eval": (start_report or {}).get(f"eval_{args.eval_seed}"),
        "audit_seconds": audit_seconds,
        "runs": runs,
        "summary": summary,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if args.md:
        args.md.write_text(markdown(result) + "\n")


def markdown(result: dict) -> str:
    s = result["summary"]
    lines = ["| arm | samples | wrong captions | seed | caption exact match | yes/no accuracy |", "|---|---|---|---|---|---|"]
    if result.get("start_eval"):
        ev = result["start_eval"]
        lines.append(f"| start (before fine-tuning) | - | - | - | {ev['caption_accuracy']:.3f} | {ev['yesno_accuracy']:.3f} |")
    for arm, summ in s.items():
        for r in (r for r in result["runs"] if r["arm"] == arm):
            lines.append(f"| {arm} | {summ['samples']} | {summ['wrong_captions']} | {r['seed']} | "
                         f"{r['caption_accuracy']:.3f} | {r['yesno_accuracy']:.3f} |")
        rel = ""
        if summ.get("caption_accuracy_vs_full") is not None and arm != "full":
            rel = f" ({summ['caption_accuracy_vs_full']:.1%} of full)"
        rel_yn = ""
        if summ.get("yesno_accuracy_vs_full") is not None and arm != "full":
            rel_yn = f" ({summ['yesno_accuracy_vs_full']:.1%} of full)"
        lines.append(f"| **{arm}, mean** | | | {len(summ['seeds'])} seeds | **{summ['caption_accuracy_mean']:.3f}**{rel} | "
                     f"**{summ['yesno_accuracy_mean']:.3f}**{rel_yn} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
