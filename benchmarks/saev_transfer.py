"""SAE-V on the toy world: a text-only SAE at image positions, and patch filtering by SAE-V scores.

    python benchmarks/saev_transfer.py --out runs/bench/saev     # ~25 min on a loaded 2-core box

1. Transfer. Per layer (default 0 and 4), three TopK SAEs of one configuration (1,024 latents,
   k 16, 500 steps, batch 2,048, lr 1e-3, AuxK, no whitening, seed 0) trained on training stream
   2 (3,000 scenes): on text positions only (prompt + caption: the "SAE" of the SAE-V paper), on
   image positions only, and on both (the paper's SAE-V). Each is measured at the image positions
   (and the text positions) of held-out evaluation stream --seed (default 9301): FVU, MSE, and the
   spliced caption loss with the SAE's reconstruction written at those positions (ΔCE over the
   unspliced model; zero-ablation for scale). The SAE-V paper reports its SAE-V's reconstruction
   loss at 38.3% of the text-trained SAE's on the multimodal model; `ratio_*` are ours.
   Whitening is off here because a whitening fitted on the ~22 distinct token embeddings of layer 0
   would blow image states up along directions text never spans (that would measure the whitening,
   not the SAE); the shipped (whitened) SAEs are reported beside them for reference.
2. Patch filtering. --filter-count scenes of evaluation stream --filter-seed (default 9302), each
   asked "is there a X ?" for one present and one absent kind (balanced, as `steer world eval`).
   Scoring pass, as SAE-V's algorithms 4-7 do with a fixed prompt: the describe prompt, the image
   and the model's own greedy caption (teacher-forced; the toy model reads the prompt before the
   image, so the caption is the text that has seen it), encoded by the shared SAE (the SAE-V) of
   part 1 at each scoring layer. Scores per patch (`steerlang.audit.patches`): L0, L1,
   co-occurring L0, cosine score (cross-modal weights from training stream 2 by
   `steerlang.audit.readers.TopTokens`, top 30 tokens, 5 of each modality); the activation bound
   delta is the median positive code of that SAE on training rows (fixed before any evaluation).
   Keep the top floor(gamma * 81) patches (ties broken by a seeded random order), replace every
   other patch's image token at the projector output (the LM input) by the mean image-token state
   of training stream 2 (`--fill mean`, or `zero`), and read the model's greedy answer (first
   token) to the question. Random: a seeded random subset (mean of --random-draws draws). Oracle:
   patches ranked by their object pixels (the renderer's truth), an upper reference.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from streams import require_evaluation  # noqa: E402

GAMMAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SETTINGS = {"latents": 1024, "k": 16, "steps": 500, "batch": 2048, "lr": 1e-3, "whiten": False, "seed": 0}
MODALITIES = ("text", "image", "both")  # "both": the SAE-V


def train_three(train_acts: Path, layer: int, work: Path) -> dict:
    from steerlang.dictionary.api import source_for
    from steerlang.dictionary.io import load_dictionary, save_dictionary
    from steerlang.dictionary.train import TrainConfig, train_sae

    s = SETTINGS
    out = {}
    for modality in MODALITIES:
        path = work / f"layer{layer}-{modality}-n{s['steps']}"
        if (path / "cfg.json").exists():
            out[modality] = load_dictionary(path)
            continue
        cfg = TrainConfig(d_sae=s["latents"], k=s["k"], steps=s["steps"], batch_size=s["batch"], lr=s["lr"],
                          whiten=s["whiten"], seed=s["seed"], dead_window_tokens=max(20 * s["batch"], 50_000),
                          decay_frac=0.2, layer=layer, modality=modality, model_name="toyworld")
        t0 = time.perf_counter()
        sae = train_sae(source_for(train_acts, layer, modality), cfg, progress=False).sae
        save_dictionary(sae, path)
        print(f"trained layer {layer} {modality} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        out[modality] = sae
    return out


def reconstruction(bundle, saes: dict, eval_acts: Path, layer: int, seed: int, splice_count: int) -> dict:  # noqa: ANN001
    from steerlang.dictionary.api import source_for
    from steerlang.dictionary.metrics import reconstruction_metrics
    from steerlang.dictionary.splice import spliced_loss

    rows = {}
    for name, sae in saes.items():
        row = {}
        for where in ("image", "text"):
            m = reconstruction_metrics(sae, source_for(eval_acts, layer, where))
            row[where] = {k: m[k] for k in ("fvu", "mse", "l0", "dead_fraction")}
        sp = spliced_loss(bundle, layer, {"image": sae, "text": sae}, seed=seed, count=splice_count, splices=("image", "text"))
        for where in ("image", "text"):
            row[where] |= {k: sp[where][k] for k in ("delta_ce", "ce_orig", "ce_sae", "ce_zero", "loss_recovered")}
        rows[name] = row
    t, b = rows["text-only"]["image"], rows["shared (SAE-V)"]["image"]
    ratios = {"mse_shared_over_text": b["mse"] / t["mse"], "fvu_shared_over_text": b["fvu"] / t["fvu"],
              "ce_sae_shared_over_text": b["ce_sae"] / t["ce_sae"],
              "delta_ce_shared_over_text": b["delta_ce"] / t["delta_ce"] if t["delta_ce"] else float("nan")}
    return {"saes": rows, "ratios_at_image_positions": ratios}


# ------------------------------------------------------------------------------------ patch filtering
def layer0_mean(train_acts: Path) -> torch.Tensor:
    from steerlang.dictionary.source import ActivationSource

    x = ActivationSource.from_shards(train_acts, 0, "image").load()
    return x.mean(0)


@torch.no_grad()
def saev_weights_and_delta(sae, train_acts: Path, layer: int) -> tuple[torch.Tensor, float, int]:  # noqa: ANN001
    """Cross-modal weights (TopTokens over training image patches and caption tokens) and delta
    (median positive code over the same rows, image and caption rows weighed equally)."""
    from steerlang.audit.readers import TopTokens
    from steerlang.dictionary.source import ActivationSource

    xi = ActivationSource.from_shards(train_acts, layer, "image").load()
    xt = ActivationSource.from_shards(train_acts, layer, "caption").load()
    g = torch.Generator().manual_seed(0)
    sample = [x[torch.randperm(len(x), generator=g)[:20_000]] for x in (xi, xt)]
    codes = [sae.encode(s) for s in sample]
    delta = float(torch.cat([c[c > 0] for c in codes]).median())
    tracker = TopTokens(sae.cfg.d_sae, xi.shape[1], top=30, delta=delta)
    for x, text in ((xi, False), (xt, True)):
        for i in range(0, len(x), 8192):
            h = x[i:i + 8192]
            tracker.add(sae.encode(h), h, torch.full((len(h),), text))
    w = torch.from_numpy(tracker.weights()).float()
    return w, delta, int((w != 0).sum())


def questions(scenes: list, seed: int) -> tuple[list[int], list[str], list[str]]:
    from steerlang.world.scenes import KINDS
    from steerlang.world.vocab import question_for

    rng = np.random.default_rng([seed, 777])
    owner, prompts, truth = [], [], []
    for i, s in enumerate(scenes):
        absent = [k for k in KINDS if k not in s.kinds]
        for kind, t in ((str(rng.choice(s.kinds)), "yes"), (str(rng.choice(absent)), "no")):
            owner.append(i)
            prompts.append(question_for(kind))
            truth.append(t)
    return owner, prompts, truth


class Filtered:
    """Answers to the encoded questions with some image tokens replaced at the projector output."""

    def __init__(self, bundle, enc: dict, fill: torch.Tensor, batch: int = 200) -> None:  # noqa: ANN001
        self.bundle, self.enc, self.fill, self.batch = bundle, enc, fill, batch
        tok = bundle.tokenizer
        self.yes, self.no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
        self.proj = bundle.model.model.multi_modal_projector

    @torch.no_grad()
    def answers(self, keep: torch.Tensor | None) -> list[str]:
        """keep [N, P] bool per question (None: nothing filtered); 'yes' / 'no' / 'other'."""
        out: list[str] = []
        n = self.enc["input_ids"].shape[0]
        for i in range(0, n, self.batch):
            cur = None if keep is None else keep[i:i + self.batch]

            def hook(_m, _a, o, cur=cur):  # noqa: ANN001, ANN202
                if cur is None:
                    return o
                o = o.clone()
                o[~cur] = self.fill.to(o.dtype)
                return o

            h = self.proj.register_forward_hook(hook)
            try:
                logits = self.bundle.model(**{k: v[i:i + self.batch] for k, v in self.enc.items()}).logits[:, -1]
            finally:
                h.remove()
            t = logits.argmax(-1)
            out += ["yes" if int(x) == self.yes else "no" if int(x) == self.no else "other" for x in t]
        return out


def accuracy(ans: list[str], truth: list[str]) -> dict:
    a, t = np.array(ans), np.array(truth)
    return {"accuracy": float((a == t).mean()), "yes_recall": float((a[t == "yes"] == "yes").mean()),
            "no_recall": float((a[t == "no"] == "no").mean()), "other": int((a == "other").sum())}


@torch.no_grad()
def patch_filtering(bundle, shared: dict, train_acts: Path, args) -> dict:  # noqa: ANN001
    from steerlang.audit.forward import hidden_states, pair_batch
    from steerlang.audit.patches import SCORES, keep_top, patch_scores
    from steerlang.runtime.adapters import adapter_for
    from steerlang.world.scenes import make_scene, patch_pixel_counts, render
    from steerlang.world.vocab import DEFAULT_PROMPT

    t0 = time.perf_counter()
    scenes = [make_scene(args.filter_seed, i) for i in range(args.filter_count)]
    images = [render(s) for s in scenes]
    owner, prompts, truth = questions(scenes, args.filter_seed)
    enc = dict(bundle.encode([images[o] for o in owner], prompts))
    fill = layer0_mean(train_acts) if args.fill == "mean" else torch.zeros(bundle.model.config.text_config.hidden_size)
    f = Filtered(bundle, enc, fill)
    own = torch.tensor(owner)
    res: dict = {"questions": len(truth), "scenes": len(scenes), "fill": args.fill, "gammas": list(args.gammas)}
    base = f.answers(None)
    gen = bundle.generate([images[o] for o in owner], prompts, max_new_tokens=2)
    res["unfiltered"] = accuracy(base, truth) | {"first_token_agrees_with_generate": float(np.mean([a == g for a, g in zip(base, gen, strict=True)])),
                                                 "generate_accuracy": float(np.mean([g == t for g, t in zip(gen, truth, strict=True)]))}
    print(f"unfiltered {res['unfiltered']}", file=sys.stderr, flush=True)

    n_patch = 81
    g = torch.Generator().manual_seed(args.filter_seed)
    tiebreak = [torch.randperm(n_patch, generator=g) for _ in scenes]
    curves: dict[str, dict] = {}

    def run(name: str, keep_of_scene) -> None:  # noqa: ANN001
        row = {}
        for gamma in args.gammas:
            keep_s = torch.stack([keep_of_scene(i, gamma) for i in range(len(scenes))])  # [S, P]
            row[f"{gamma:.1f}"] = accuracy(f.answers(keep_s[own]), truth) | {"kept": int(keep_s[0].sum())}
        curves[name] = row
        print(name, " ".join(f"{v['accuracy']:.3f}" for v in row.values()), file=sys.stderr, flush=True)

    # random: nested subsets of a seeded permutation per scene, mean over draws
    draws = []
    for d in range(0 if args.skip_baselines else args.random_draws):
        gd = torch.Generator().manual_seed(10_000 + d)
        perms = [torch.randperm(n_patch, generator=gd) for _ in scenes]
        run(f"random#{d}", lambda i, gamma, perms=perms: torch.zeros(n_patch, dtype=torch.bool).index_fill_(0, perms[i][:math.floor(gamma * n_patch + 1e-9)], True))
        draws.append(curves.pop(f"random#{d}"))
    if draws:
        curves["random"] = {k: {"accuracy": float(np.mean([dr[k]["accuracy"] for dr in draws])),
                                "accuracy_draws": [dr[k]["accuracy"] for dr in draws],
                                "yes_recall": float(np.mean([dr[k]["yes_recall"] for dr in draws])),
                                "no_recall": float(np.mean([dr[k]["no_recall"] for dr in draws]))} for k in draws[0]}
        oracle = [torch.from_numpy(patch_pixel_counts(s).sum(0).reshape(-1).astype(np.float32)) for s in scenes]
        run("oracle (object pixels)", lambda i, gamma: keep_top(oracle[i], gamma, tiebreak[i]))

    # scoring pass: describe prompt + image + the model's own caption, teacher-forced
    caps = bundle.generate(images, DEFAULT_PROMPT, max_new_tokens=16)
    res["scoring_captions_exact"] = float(np.mean([c == s.caption for c, s in zip(caps, scenes, strict=True)]))
    adapter = adapter_for(bundle.model)
    layers = sorted(shared)
    hs_img: dict[int, list] = {L: [] for L in layers}
    hs_txt: dict[int, list] = {L: [] for L in layers}
    for i in range(0, len(scenes), 100):
        pb = pair_batch(bundle, adapter, images[i:i + 100], [DEFAULT_PROMPT] * len(images[i:i + 100]), caps[i:i + 100])
        hs = hidden_states(adapter, bundle.model, pb.inputs, layers)
        for L in layers:
            for b in range(pb.image.shape[0]):
                hs_img[L].append(hs[L][b][pb.image[b]])
                hs_txt[L].append(hs[L][b][pb.caption[b]])
    res["saev"] = {}
    for L in layers:
        sae = shared[L]
        w, delta, n_cross = saev_weights_and_delta(sae, train_acts, L)
        scores = [patch_scores(sae.encode(hi), sae.encode(ht), w, delta) for hi, ht in zip(hs_img[L], hs_txt[L], strict=True)]
        co = [int((sc["co_l0"] > 0).sum()) for sc in scores]
        res["saev"][L] = {"delta": delta, "cross_modal_latents": n_cross, "latents": int(sae.cfg.d_sae),
                          "patches_with_a_cooccurring_latent_mean": float(np.mean(co)),
                          "patches_with_positive_cosine_mean": float(np.mean([int((sc["cosine"] > 0).sum()) for sc in scores]))}
        for name in SCORES:
            run(f"{name} (layer {L})", lambda i, gamma, name=name, scores=scores: keep_top(scores[i][name], gamma, tiebreak[i]))
    res["curves"] = curves
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def markdown(rep: dict) -> str:
    lines = [f"## Transfer: reconstruction at image positions (evaluation stream {rep['seed']}, {rep['count']} scenes; "
             f"spliced CE on {rep['splice_count']})", "",
             "| layer | SAE (trained on) | FVU image | MSE image | spliced ΔCE image (zero-ablation ΔCE) | FVU text | ΔCE text |",
             "|---|---|---|---|---|---|---|"]
    for L, r in rep["transfer"].items():
        for name, row in r["saes"].items():
            i, t = row["image"], row["text"]
            lines.append(f"| {L} | {name} | {i['fvu']:.4f} | {i['mse']:.4f} | {i['delta_ce']:+.4f} ({i['ce_zero'] - i['ce_orig']:+.3f}) | "
                         f"{t['fvu']:.4f} | {t['delta_ce']:+.4f} |")
        q = r["ratios_at_image_positions"]
        lines.append(f"| {L} | shared / text-only at image positions | {q['fvu_shared_over_text']:.1%} | {q['mse_shared_over_text']:.1%} | "
                     f"ΔCE {q['delta_ce_shared_over_text']:.1%}, CE {q['ce_sae_shared_over_text']:.1%} | | |")
    pf = rep.get("filtering")
    if pf:
        gs = pf["gammas"]
        lines += ["", f"## Patch filtering: balanced yes/no accuracy vs the share of patches kept (evaluation stream "
                  f"{rep['filter_seed']}, {pf['questions']} questions)", "",
                  f"Unfiltered: {pf['unfiltered']['accuracy']:.3f}. Filtered patches set to the {pf['fill']} image-token state at the LM input.", "",
                  "| score | " + " | ".join(f"{g:.1f}" for g in gs) + " |", "|---|" + "---|" * len(gs)]
        for name, row in pf["curves"].items():
            lines.append(f"| {name} | " + " | ".join(f"{row[f'{g:.1f}']['accuracy']:.3f}" for g in gs) + " |")
        lines += ["", "| SAE-V layer | delta | cross-modal latents | patches per image with a co-occurring latent (mean) |", "|---|---|---|---|"]
        for L, s in pf["saev"].items():
            lines.append(f"| {L} | {s['delta']:.3f} | {s['cross_modal_latents']} of {s['latents']} | {s['patches_with_a_cooccurring_latent_mean']:.1f} of 81 |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=lambda s: [int(x) for x in s.split(",")], default=[0, 4])
    ap.add_argument("--seed", type=int, default=9301, help="evaluation stream for reconstruction")
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--splice-count", type=int, default=300)
    ap.add_argument("--filter-seed", type=int, default=9302, help="evaluation stream for patch filtering")
    ap.add_argument("--filter-count", type=int, default=300, help="scenes (two questions each)")
    ap.add_argument("--gammas", type=lambda s: [float(x) for x in s.split(",")], default=list(GAMMAS))
    ap.add_argument("--fill", choices=["mean", "zero"], default="mean")
    ap.add_argument("--random-draws", type=int, default=3)
    ap.add_argument("--skip-filter", action="store_true")
    ap.add_argument("--skip-baselines", action="store_true", help="patch filtering without the random and oracle curves")
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--work", type=Path, default=Path("runs/saev_transfer"), help="trained SAEs are kept here")
    ap.add_argument("--dev", action="store_true", help="allow development streams (report marked development)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/saev"))
    args = ap.parse_args()

    from steerlang.dictionary.api import TRAIN_SCENE_SEED, harvested
    from steerlang.dictionary.io import load_dictionary
    from steerlang.world.model import load_model

    torch.manual_seed(0)
    train_acts = harvested("toyworld", seed=TRAIN_SCENE_SEED, count=3000)
    trained = {L: train_three(train_acts, L, args.work) for L in args.layers}
    if args.train_only:
        return
    streams = require_evaluation([args.seed] + ([] if args.skip_filter else [args.filter_seed]), dev=args.dev, what="saev_transfer.py")
    eval_acts = harvested("toyworld", seed=args.seed, count=args.count)
    bundle = load_model("toyworld")
    rep: dict = {"streams": streams, "seed": args.seed, "count": args.count, "splice_count": args.splice_count,
                 "filter_seed": args.filter_seed, "settings": SETTINGS, "transfer": {}}
    shipped = Path(__file__).resolve().parent.parent / "dictionaries" / "toyworld" / "saes"
    for L in args.layers:
        saes = {"text-only": trained[L]["text"], "image-only": trained[L]["image"], "shared (SAE-V)": trained[L]["both"],
                "shipped text SAE (whitened)": load_dictionary(shipped / f"layer{L}-text"),
                "shipped image SAE (whitened)": load_dictionary(shipped / f"layer{L}-image")}
        rep["transfer"][L] = reconstruction(bundle, saes, eval_acts, L, args.seed, args.splice_count)
        print(f"layer {L}: {json.dumps(rep['transfer'][L]['ratios_at_image_positions'])}", file=sys.stderr, flush=True)
    if not args.skip_filter:
        rep["filtering"] = patch_filtering(bundle, {L: trained[L]["both"] for L in args.layers}, train_acts, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "saev_transfer.json").write_text(json.dumps(rep, indent=1) + "\n")
    md = markdown(rep)
    (args.out / "saev_transfer.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
