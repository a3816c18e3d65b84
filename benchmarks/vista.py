"""VISTA on the toy world: a projector fine-tuned towards a *text* SAE, before and after.

    python benchmarks/vista.py --weights 0,0.01,0.1,1,10 --steps 200 --count 200 --eval-count 300 --seed 9401 \
        --out runs/bench/vista.json --md runs/bench/vista.md

(Results and reading: docs/concepts.md, "VISTA on the toy world".)

VISTA ("Interpretability Transfer from Language to Vision via Sparse Autoencoders") fine-tunes a
LLaVA projector with the LM loss plus the reconstruction loss of the LLM's text SAE on the image
tokens (vision tower, LLM and SAE frozen), then reads and edits image tokens through the text SAE's
labelled latents. Here, for each weight w (models in `--models`/w{w}, trained when missing with
`steer world finetune --from toyworld --data toyworld:1:3000 --projector-only --sae-regularize
toyworld --sae-layer 2 --sae-weight w --steps STEPS`; w = 0 is the same fine-tuning without the
regulariser) and for the shipped model ("before"):

- **text-SAE FVU** of the layer-2 text SAE on the image positions (what the regulariser lowers);
- **matching rate** (VISTA's): per image, the top-3 latents of the text SAE by largest activation
  over its image tokens (latents firing on > 5% of the image tokens excluded, and latents without a
  name); a match when one's name is a kind in the scene. Names: the TF-IDF name of each text latent
  from the captions of its top-activating scenes (`build_concepts.name_latents`), computed on the
  shipped model's caption tokens (development streams 2 and 3); the same with our layer-2 *image*
  SAE beside it, and the chance level (names shuffled among the latents, mean of 20 shuffles);
- **cost**: caption exact match and yes/no accuracy on fresh scenes (`steer world eval`'s evaluator);
- **removal and replacement** of the cat on the same scenes as `interventions.py` (stream `seed`:
  `count` cat scenes, the first `count` without a dog for replacement; `count` controls from
  `seed + 1`), scored by its `score`:
  * text-only concepts at image positions: the text SAE (layer 2) loaded as the image dictionary,
    the cat's and dog's text latents there (the text groups of the shipped concept set: the latents
    that fire on the word "cat" / "dog" in captions), `steer image at layer 2 { off image#C }` and
    `{ replace image#C with image#D }` run by steerlang's runtime (edits keep the SAE's error term);
  * ours: `programs/remove_cat.stl` and its `replace cat with dog` twin with the shipped concept set
    (built on the shipped model, not rebuilt for the fine-tuned ones);
  * VISTA's vision-only baseline: the renderer's true cat patches zeroed at the LM input;
    replacement writes the dog's mean patch state there (the evaluated model's own reference states,
    stream 2), as in `baselines.py`.

Controls (scenes without a cat, unchanged captions) are run for ours only: CPU time on the shared
2-core machine was short.
- per kind, the patch precision / recall of the kind's text latent at image positions (>= 8 px truth).

Caption / yes-no evaluation uses stream `seed + 2`; the matching rate, FVU and patch figures the
same scenes. All three streams must be evaluation streams (`streams.json`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SAE_LAYER = 2
KINDS_TEXT_CAT, KINDS_TEXT_DOG = "cat", "dog"


def teacher_forced_states(bundle, scenes: list, layer: int, batch: int = 100) -> tuple[torch.Tensor, torch.Tensor, list[str]]:  # noqa: ANN001
    """(caption-token states [n_tok, d], their scene index [n_tok], captions) at `layer`, from the
    describe prompt + image + caption pass (the answer tokens, end of sequence excluded)."""
    from steerlang.dictionary.harvest import LayerCapture
    from steerlang.world.train import Example, collate
    from steerlang.world.vocab import DEFAULT_PROMPT

    xs, idx = [], []
    eos = bundle.tokenizer.eos_token_id
    for i in range(0, len(scenes), batch):
        chunk = scenes[i : i + batch]
        b = collate(bundle, [Example(s, DEFAULT_PROMPT, s.caption) for s in chunk])
        with LayerCapture(bundle, [layer]) as cap, torch.no_grad():
            bundle.model(**{k: v for k, v in b.items() if k != "labels"})
        keep = (b["labels"] != -100) & (b["input_ids"] != eos)
        h = cap.captured[layer]
        xs.append(h[keep])
        idx.append((torch.arange(len(chunk))[:, None].expand_as(keep)[keep]) + i)
    return torch.cat(xs), torch.cat(idx), [s.caption for s in scenes]


def pooled(sae, x: torch.Tensor, group: torch.Tensor, n: int) -> np.ndarray:  # noqa: ANN001
    from steerlang.dictionary.crossmodal import pool_max

    with torch.no_grad():
        return pool_max(sae.encode(x), group, n)


def latent_names(bundle, sae_txt, sae_img) -> dict[str, dict[int, str]]:  # noqa: ANN001
    """TF-IDF names of the text SAE's latents (from caption tokens) and of the image SAE's (from
    image tokens), on the shipped model: named on stream 2 (1,000 scenes), scored on stream 3 (500)."""
    from baselines import image_states

    from steerlang.dictionary.build_concepts import name_latents
    from steerlang.world.scenes import make_scenes
    from steerlang.world.vocab import DEFAULT_PROMPT

    train, held = make_scenes(2, 1000), make_scenes(3, 500)
    out = {}
    xt, gt, ct = teacher_forced_states(bundle, train, SAE_LAYER)
    xh, gh, ch = teacher_forced_states(bundle, held, SAE_LAYER)
    names = name_latents(pooled(sae_txt, xt, gt, len(train)), ct, pooled(sae_txt, xh, gh, len(held)), ch, "text")
    out["text"] = {j: v["name"] for j, v in names.items()}
    out["text_detection"] = {j: v["detection"] for j, v in names.items()}
    imgs = {}
    for key, sc in (("train", train), ("held", held)):
        x = image_states(bundle, sc, [SAE_LAYER], DEFAULT_PROMPT)[SAE_LAYER]  # [n, P, d]
        imgs[key] = (x.reshape(-1, x.shape[-1]), torch.arange(len(sc)).repeat_interleave(x.shape[1]))
    names = name_latents(pooled(sae_img, *imgs["train"], len(train)), ct, pooled(sae_img, *imgs["held"], len(held)), ch, "image")
    out["image"] = {j: v["name"] for j, v in names.items()}
    return out


def matching_rate(z: torch.Tensor, names: dict[int, str], scenes: list, rng: np.random.Generator | None = None) -> float:
    """z [n_scenes, n_patches, d_sae] codes at image positions. Top-3 latents per image by pooled max,
    among named latents firing on <= 5% of all image tokens; a match when a name is a kind there.
    With `rng`, the names are shuffled among the named latents first (the chance level)."""
    d = z.shape[-1]
    freq = (z > 0).float().mean((0, 1)).numpy()
    label = [names.get(j) for j in range(d)]
    if rng is not None:
        named = [j for j in range(d) if label[j] is not None]
        perm = rng.permutation([label[j] for j in named])
        for j, nm in zip(named, perm, strict=True):
            label[j] = str(nm)
    eligible = np.array([label[j] is not None and freq[j] <= 0.05 for j in range(d)])
    pool = z.clamp(min=0).amax(1).numpy()
    hits = []
    for s, p in zip(scenes, pool, strict=True):
        score = np.where(eligible, p, -1.0)
        top = [j for j in np.argsort(-score, kind="stable")[:3] if score[j] > 0]
        hits.append(any(label[j] in s.kinds for j in top))
    return float(np.mean(hits))


def patch_pr(z: torch.Tensor, latents: list[int], kind: str, scenes: list) -> dict[str, float]:
    """Precision / recall of 'any of `latents` fires' against the kind's patches (>= 8 px)."""
    from baselines import patch_kinds

    from steerlang.world.scenes import KINDS

    truth = torch.from_numpy(np.stack([patch_kinds(s, 8) == KINDS.index(kind) for s in scenes]))
    fire = (z[..., latents] > 0).any(-1)
    tp = float((fire & truth).sum())
    return {"precision": tp / max(float(fire.sum()), 1.0), "recall": tp / max(float(truth.sum()), 1.0),
            "fires_on_patches": float(fire.float().mean())}


def text_only_set(out: Path) -> Path:
    """The shipped layer-2 text SAE as a raw dictionary whose `image#N` is text latent N at image positions."""
    src = ROOT / "dictionaries" / "toyworld" / "saes" / f"layer{SAE_LAYER}-text"
    dst = out / "text_sae_at_image" / f"layer{SAE_LAYER}"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "cfg.json").read_text())
    cfg["metadata"]["modality"] = "image"  # read and written at image positions
    (dst / "cfg.json").write_text(json.dumps(cfg, indent=1))
    return dst.parent


def text_group(kind: str, with_scale: bool = False) -> list[int] | tuple[list[int], float]:
    """The kind's text latents at the SAE layer in the shipped concept set (positive weights), and
    with `with_scale` the group's typical activation on the word's caption tokens."""
    c = json.loads((ROOT / "dictionaries" / "toyworld" / "concepts.json").read_text())
    for con in c["concepts"]:
        if con["space"] == "joint" and con["name"] == kind:
            for g in con["groups"]:
                if g["layer"] == SAE_LAYER and g["modality"] == "text":
                    latents = [j for j, w in zip(g["latents"], g["weights"], strict=True) if w > 0]
                    return (latents, float(g["scale"])) if with_scale else latents
    raise SystemExit(f"no text group for {kind} at layer {SAE_LAYER}")


def train_missing(models: Path, weights: list[str], steps: int) -> dict[str, dict]:
    from steerlang.world.train import FinetuneConfig, finetune_and_save

    reports = {}
    for w in weights:
        out = models / f"w{w}"
        if not out.exists():
            print(f"training {out} ({steps} steps)", file=sys.stderr, flush=True)
            cfg = FinetuneConfig(steps=steps, seed=0, threads=1, projector_only=True, sae_weight=float(w))
            finetune_and_save(out, start="toyworld", data="toyworld:1:3000", cfg=cfg, eval_count=0,
                              sae_regularize="toyworld", sae_layer=SAE_LAYER)
        reports[w] = json.loads((out / "train_report.json").read_text())
    return reports


def evaluate_model(name: str, bundle, sets: dict, names: dict, programs: dict, text_dir: Path, sae_txt, sae_img,  # noqa: ANN001, PLR0913
                   eval_seed: int, eval_count: int) -> dict:
    from baselines import ablation_edit, generate_with_edit, image_states, patch_kinds, reference
    from interventions import score

    import steerlang
    from steerlang.world.scenes import KINDS, make_scenes, render
    from steerlang.world.train import evaluate
    from steerlang.world.vocab import DEFAULT_PROMPT

    t0 = time.perf_counter()
    row: dict = {"model": name}
    ev = evaluate(bundle, seed=eval_seed, count=eval_count)
    row["caption_exact"], row["yesno"] = ev.caption_accuracy, ev.yesno_accuracy
    scenes = make_scenes(eval_seed, eval_count)
    x = image_states(bundle, scenes, [SAE_LAYER], DEFAULT_PROMPT)[SAE_LAYER]  # [n, P, d]
    flat = x.reshape(-1, x.shape[-1])
    with torch.no_grad():
        from steerlang.world.train import sae_image_fvu

        row["text_sae_fvu_image"] = float(sae_image_fvu(sae_txt, flat))
        row["image_sae_fvu_image"] = float(sae_image_fvu(sae_img, flat))
        zt, zi = sae_txt.encode(x), sae_img.encode(x)
    row["matching_text_sae"] = matching_rate(zt, names["text"], scenes)
    rng = np.random.default_rng(0)
    row["matching_text_sae_chance"] = float(np.mean([matching_rate(zt, names["text"], scenes, rng) for _ in range(20)]))
    row["matching_image_sae"] = matching_rate(zi, names["image"], scenes)
    row["matching_image_sae_chance"] = float(np.mean([matching_rate(zi, names["image"], scenes, rng) for _ in range(20)]))
    row["text_latents_at_image"] = {k: {"latents": text_group(k), **patch_pr(zt, text_group(k), k, scenes)}
                                    for k in KINDS if len(text_group(k)) <= 2}
    print(name, {k: v for k, v in row.items() if k != "text_latents_at_image"}, flush=True)

    cats, nodog = sets["cats"], sets["nodog"]
    imgs = {k: [render(s) for s in v] for k, v in sets.items()}
    base_ctl = bundle.generate(imgs["controls"], DEFAULT_PROMPT, max_new_tokens=24)
    res: dict = {}
    for method, concepts in (("text_only", text_dir), ("text_only_strong", text_dir), ("ours", "toyworld")):
        session = steerlang.load_session(bundle, concepts)
        for op, (key, scs) in (("remove", ("cats", cats)), ("replace", ("nodog", nodog))):
            prog = session.compile(programs[method][op], file=f"{method}_{op}.stl")
            out = [r.output for r in session.run(prog, images=imgs[key], prompt=DEFAULT_PROMPT, trace=False)]
            r = score(out, scs, "cat", "dog" if op == "replace" else None)
            if method == "ours":  # controls for ours only: CPU time is short on the shared machine
                ctl = [r.output for r in session.run(prog, images=imgs["controls"], prompt=DEFAULT_PROMPT, trace=False)]
                r["controls_unchanged"] = float(np.mean([a == b for a, b in zip(ctl, base_ctl, strict=True)]))
            r["examples"] = [[s.caption, o] for s, o in zip(scs[:4], out[:4], strict=True)]
            res[f"{method}.{op}"] = r
            print(name, method, op, {k: v for k, v in r.items() if k != "examples"}, flush=True)
    refs = reference(bundle, layers=[0], prompt=DEFAULT_PROMPT)[0]
    cat = KINDS.index("cat")
    for how, key, scs, new in (("zero", "cats", cats, None), ("prototype", "nodog", nodog, "dog")):
        oracle = [patch_kinds(s, 1) == cat for s in scs]
        out = generate_with_edit(bundle, imgs[key], ablation_edit(refs, oracle, how, new), prompt=DEFAULT_PROMPT)
        res[f"ablate_{how}"] = score(out, scs, "cat", new)
    row["interventions"] = res
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default="0,0.01,0.1,1,10", help="regulariser weights w (0 = the same fine-tuning without it)")
    ap.add_argument("--steps", type=int, default=200, help="fine-tuning steps for models that are not trained yet")
    ap.add_argument("--models", type=Path, default=ROOT / "runs" / "vista", help="fine-tuned models: DIR/w{w}")
    ap.add_argument("--count", type=int, default=200, help="cat scenes (and controls) for removal / replacement")
    ap.add_argument("--seed", type=int, default=9401, help="cat scenes from this stream, controls from seed + 1, "
                    "caption / yes-no / matching-rate scenes from seed + 2")
    ap.add_argument("--eval-count", type=int, default=300, help="scenes for caption / yes-no / matching rate")
    ap.add_argument("--ours-dict", action="append", default=[], metavar="W=DIR",
                    help="also run ours with the concept set DIR built on the w = W model (steer dict build --model "
                    "MODELS/wW --data CORPUS --out DIR): our concepts rebuilt for the fine-tuned projector")
    ap.add_argument("--only", default=None, help="evaluate only these rows (comma-separated: before and/or weights), "
                    "to run rows in parallel processes; every row is cached in MODELS/rows/ and a last run without "
                    "--only assembles the report from the cache")
    ap.add_argument("--dev", action="store_true", help="allow development streams (the report says so)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from interventions import scene_sets
    from report import save_report
    from streams import require_evaluation

    streams = require_evaluation([args.seed, args.seed + 1, args.seed + 2], dev=args.dev, what="vista.py")
    torch.set_num_threads(1)
    weights = [w.strip() for w in args.weights.split(",") if w.strip()]
    args.models.mkdir(parents=True, exist_ok=True)
    train_reports = train_missing(args.models, weights, args.steps)

    import steerlang
    from steerlang.dictionary.concepts import load_concept_set

    shipped = load_concept_set("toyworld")
    sae_txt, sae_img = shipped.sae(SAE_LAYER, "text"), shipped.sae(SAE_LAYER, "image")
    original = steerlang.load_model("toyworld")
    names_file = args.models / "latent_names.json"  # from development streams 2 and 3 only
    if names_file.exists():
        names = {k: {int(j): v for j, v in d.items()} for k, d in json.loads(names_file.read_text()).items()}
    else:
        names = latent_names(original, sae_txt, sae_img)
        names_file.write_text(json.dumps(names))
    text_dir = text_only_set(args.models)
    (c, c_scale), (d, d_scale) = text_group(KINDS_TEXT_CAT, True), text_group(KINDS_TEXT_DOG, True)
    ask = 'ask "what is in the picture ?"\n'
    where = f"steer image where image#{c[0]} > 0 at layer {SAE_LAYER} {{ "
    remove = (ROOT / "programs" / "remove_cat.stl").read_text()
    programs = {
        "text_only": {"remove": ask + f"steer image at layer {SAE_LAYER} {{ " + " ".join(f"off image#{j}" for j in c) + " }\n",
                      "replace": ask + f"steer image at layer {SAE_LAYER} {{ replace image#{c[0]} with image#{d[0]} }}\n"},
        # VISTA-style, stronger: where the cat's text latent fires, push it to minus its typical strength on
        # the word (removal), or zero it and write the dog's latent at the dog word's typical strength.
        "text_only_strong": {"remove": ask + where + f"set image#{c[0]} = {-c_scale:.3f} }}\n",
                             "replace": ask + where + f"set image#{c[0]} = 0 set image#{d[0]} = {d_scale:.3f} }}\n"},
        "ours": {"remove": remove, "replace": remove.replace("off cat", "replace cat with dog")},
    }
    cats, nodog, controls = scene_sets(args.seed, args.count)
    sets = {"cats": cats, "nodog": nodog, "controls": controls}
    report: dict = {"streams": streams, "sae_layer": SAE_LAYER, "weights": weights, "steps": args.steps,
                    "text_group": {"cat": c, "dog": d}, "programs": {k: programs[k] for k in ("text_only", "text_only_strong")},
                    "named_text_latents": len(names["text"]), "named_image_latents": len(names["image"]),
                    "scenes": {"seed": args.seed, "with_cat": len(cats), "with_cat_no_dog": len(nodog),
                               "controls": len(controls), "eval_seed": args.seed + 2, "eval_count": args.eval_count},
                    "rows": []}
    rows = [("before (shipped model)", "before", None)] + [(f"w = {w}", w, w) for w in weights]
    only = None if args.only is None else {x.strip() for x in args.only.split(",")}
    cache = args.models / "rows"
    cache.mkdir(exist_ok=True)
    for name, key, w in rows:
        path = cache / f"{key}-s{args.seed}-n{args.count}-e{args.eval_count}.json"
        if only is not None and key not in only:
            continue
        if path.exists():
            report["rows"].append(json.loads(path.read_text()))
            continue
        bundle = original if w is None else steerlang.load_model(str(args.models / f"w{w}"))
        row = evaluate_model(name, bundle, sets, names, programs, text_dir, sae_txt, sae_img, args.seed + 2, args.eval_count)
        if w is not None:
            row["weight"] = float(w)
            row["train"] = {k: train_reports[w].get(k) for k in ("finetune", "train_seconds", "sae_regularizer")}
        path.write_text(json.dumps(row))
        report["rows"].append(row)
    report["ours_rebuilt"] = {}
    for spec in args.ours_dict:
        w, _, folder = spec.partition("=")
        path = cache / f"ours_rebuilt-{w}-s{args.seed}-n{args.count}.json"
        if not path.exists():
            res = ours_with(steerlang.load_model(str(args.models / f"w{w}")), folder, sets, remove)
            path.write_text(json.dumps({"weight": w, "dictionary": folder, **res}))
        report["ours_rebuilt"][w] = json.loads(path.read_text())
    if only is None:
        save_report(report, args.out, args.md, markdown(report))


def ours_with(bundle, folder: str, sets: dict, remove: str) -> dict:  # noqa: ANN001
    """`remove_cat.stl` and its replace twin with the concept set `folder`, on the given model."""
    from interventions import score

    import steerlang
    from steerlang.world.scenes import render
    from steerlang.world.vocab import DEFAULT_PROMPT

    session = steerlang.load_session(bundle, folder)
    imgs = {k: [render(s) for s in v] for k, v in sets.items()}
    base_ctl = bundle.generate(imgs["controls"], DEFAULT_PROMPT, max_new_tokens=24)
    text = remove.replace('dictionary "toyworld"', f'dictionary "{session.concepts.name}"').replace(
        'model "toyworld"', f'model "{session.concepts.model}"')
    out: dict = {}
    for op, prog_text, key in (("remove", text, "cats"), ("replace", text.replace("off cat", "replace cat with dog"), "nodog")):
        prog = session.compile(prog_text, file=f"{op}.stl")
        res = [r.output for r in session.run(prog, images=imgs[key], prompt=DEFAULT_PROMPT, trace=False)]
        ctl = [r.output for r in session.run(prog, images=imgs["controls"], prompt=DEFAULT_PROMPT, trace=False)]
        r = score(res, sets[key], "cat", "dog" if op == "replace" else None)
        r["controls_unchanged"] = float(np.mean([a == b for a, b in zip(ctl, base_ctl, strict=True)]))
        r["examples"] = [[s.caption, o] for s, o in zip(sets[key][:4], res[:4], strict=True)]
        out[op] = r
        print("ours rebuilt", folder, op, {k: v for k, v in r.items() if k != "examples"}, flush=True)
    return out


def markdown(report: dict) -> str:
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    out = ["| model | text-SAE FVU at image positions (layer 2) | matching rate, text SAE (chance) | matching rate, our image SAE (chance) "
           "| caption exact match | yes/no accuracy |", "|---|---|---|---|---|---|"]
    for r in report["rows"]:
        out.append(f"| {r['model']} | {r['text_sae_fvu_image']:.2f} | {f(r['matching_text_sae'])} ({f(r['matching_text_sae_chance'])}) | "
                   f"{f(r['matching_image_sae'])} ({f(r['matching_image_sae_chance'])}) | {f(r['caption_exact'])} | {f(r['yesno'])} |")
    out += ["", "| model | method | removal | preservation | replacement (no-dog scenes) | preservation | controls unchanged (remove / replace) |",
            "|---|---|---|---|---|---|---|"]
    labels = {"text_only": "text-only concepts at image positions (text SAE, layer 2): `off` / `replace`",
              "text_only_strong": "text-only concepts, stronger: set to minus its word strength / dog at its word strength",
              "ours": "ours: shipped concepts, `remove_cat.stl`"}
    for r in report["rows"]:
        iv = r["interventions"]
        for m, label in labels.items():
            a, b = iv[f"{m}.remove"], iv[f"{m}.replace"]
            out.append(f"| {r['model']} | {label} | {f(a['removal'])} | {f(a['preservation'])} | {f(b['replacement'])} | {f(b['preservation'])} | "
                       f"{f(a.get('controls_unchanged'))} / {f(b.get('controls_unchanged'))} |")
        rb = next((v for k, v in report.get("ours_rebuilt", {}).items() if "weight" in r and float(k) == r["weight"]), None)
        if rb is not None:
            a, b = rb["remove"], rb["replace"]
            out.append(f"| {r['model']} | ours: concepts rebuilt on this model (`steer dict build --data`) | {f(a['removal'])} | {f(a['preservation'])} | "
                       f"{f(b['replacement'])} | {f(b['preservation'])} | {f(a['controls_unchanged'])} / {f(b['controls_unchanged'])} |")
        z, p = iv["ablate_zero"], iv["ablate_prototype"]
        out.append(f"| {r['model']} | true cat patches zeroed (VISTA vision-only) / dog prototype written, LM input | {f(z['removal'])} | "
                   f"{f(z['preservation'])} | {f(p['replacement'])} | {f(p['preservation'])} | - |")
    out += ["", "| model | " + " | ".join(f"{k} text latent(s) at image patches: P / R" for k in report["rows"][0]["text_latents_at_image"]) + " |",
            "|---|" + "---|" * len(report["rows"][0]["text_latents_at_image"])]
    for r in report["rows"]:
        out.append(f"| {r['model']} | " + " | ".join(f"{v['precision']:.2f} / {v['recall']:.2f}" for v in r["text_latents_at_image"].values()) + " |")
    sc = report["scenes"]
    out += ["", f"Streams: {sc['seed']} ({sc['with_cat']} cat scenes; replacement on {sc['with_cat_no_dog']} without a dog), "
            f"{sc['seed'] + 1} (controls), {sc['eval_seed']} ({sc['eval_count']} scenes: captions, yes/no, matching rate, FVU); "
            f"kind: {report['streams']['kind']}."]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
