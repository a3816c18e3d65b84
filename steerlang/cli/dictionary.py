"""`steer dict ...`: harvest activations, train, evaluate and build dictionaries (SAEs)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from steerlang.cli import app, err_console, out_console, user_errors

dict_app = typer.Typer(help="Dictionaries: harvest activations, train and evaluate SAEs.", no_args_is_help=True)
app.add_typer(dict_app, name="dict")


@dict_app.command("harvest")
@user_errors
def harvest_cmd(
    out: Path = typer.Option(..., "--out", help="New folder for the activation shards."),
    model: str = typer.Option("toyworld", "--model"),
    seed: int = typer.Option(2, "--seed", help="Scene stream."),
    count: int = typer.Option(3000, "--count", help="Number of scenes."),
    prompts: str = typer.Option("describe", "--prompts", help="describe (a caption per scene) or questions (a yes/no question per scene)."),
) -> None:
    """Capture the LM input and every decoder layer's output, labelled image / prompt / caption."""
    from rich.progress import Progress

    from steerlang.dictionary.api import harvested

    with Progress(console=err_console) as bar:
        task = bar.add_task("harvesting", total=count)
        harvested(model, seed=seed, count=count, acts_dir=out, on_batch=lambda n: bar.advance(task, n), prompts=prompts)
    err_console.print(f"wrote activations to {out}")


@dict_app.command("train")
@user_errors
def train_cmd(
    out: Path = typer.Option(..., "--out", help="Dictionary folder to write (SAELens format + card.json)."),
    model: str = typer.Option("toyworld", "--model"),
    layer: int = typer.Option(..., "--layer", help="Residual stream entering block L: 0 = the LM input, n_layers = the last block's output."),
    modality: str = typer.Option("image", "--modality", help="image, text or both (one shared dictionary)."),
    arch: str = typer.Option("topk", "--arch", help="topk or relu."),
    latents: int = typer.Option(1024, "--latents", min=1),
    k: int = typer.Option(16, "--k", min=1, help="Active latents per token (topk)."),
    steps: int = typer.Option(3000, "--steps", min=1),
    batch_size: int = typer.Option(2048, "--batch-size", min=1),
    lr: float = typer.Option(1e-3, "--lr"),
    l1_coeff: float = typer.Option(1.0, "--l1-coeff"),
    dead: str = typer.Option("auxk", "--dead", help="Dead-latent handling: auxk, resample or none."),
    whiten: bool = typer.Option(True, "--whiten/--no-whiten", help="Centre and whiten the input (folded into the weights)."),
    seed: int = typer.Option(0, "--seed"),
    count: int = typer.Option(3000, "--count", help="Training scenes to harvest (cached)."),
    acts: Path | None = typer.Option(None, "--acts", help="Use or write activations in this folder."),
    work_dir: Path | None = typer.Option(None, "--work-dir", help="Checkpoints go here (with --checkpoint-every)."),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", min=0),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in --work-dir."),
) -> None:
    """Train one SAE on a layer's activations at image, text or all positions."""
    from steerlang.dictionary.api import train_dictionary

    res = train_dictionary(model=model, layer=layer, modality=modality, out=out, arch=arch, latents=latents, k=k,
                           steps=steps, batch_size=batch_size, lr=lr, dead_method=dead, whiten=whiten, seed=seed,
                           l1_coeff=l1_coeff, count=count, acts_dir=acts, work_dir=work_dir,
                           checkpoint_every=checkpoint_every, resume=resume)
    out_console.print(json.dumps(res), markup=False)


@dict_app.command("eval")
@user_errors
def eval_cmd(
    path: Path = typer.Argument(..., help="A dictionary folder."),
    model: str | None = typer.Option(None, "--model", help="Default: the model named in the card."),
    count: int = typer.Option(500, "--count", min=1, help="Held-out scenes for reconstruction metrics."),
    splice_count: int = typer.Option(300, "--splice-count", min=1, help="Held-out scenes for the spliced loss."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """MSE, FVU, L0, dead/dense fractions and spliced ΔCE on held-out scenes."""
    from steerlang.dictionary.api import evaluate_dictionary

    res = evaluate_dictionary(path, model=model, count=count, splice_count=splice_count)
    if as_json:
        out_console.print(json.dumps(res), markup=False)
        return
    r = res["reconstruction"]
    out_console.print(f"{path}  layer {res['layer']}  {res['modality']}  ({r['n_tokens']} held-out tokens)", markup=False)
    out_console.print(f"  MSE {r['mse']:.5g}  FVU {r['fvu']:.4f}  L0 {r['l0']:.1f}  dead {r['dead_fraction']:.3f}  dense {r['dense_fraction']:.3f}")
    for name, s in res["spliced"].items():
        out_console.print(f"  spliced at {name:5s}: ΔCE {s['delta_ce']:+.4f} nats  recovered {s['loss_recovered']:.3f}")


@dict_app.command("build")
@user_errors
def build_cmd(
    out: Path = typer.Option(Path("dictionaries/toyworld"), "--out", help="Concept set folder to (re)build."),
    model: str = typer.Option("toyworld", "--model"),
    count: int = typer.Option(3000, "--count", help="Training scenes (stream 2)."),
    skip_saes: bool = typer.Option(False, "--skip-saes", help="Keep the trained SAEs; redo concepts only."),
    evaluate: bool = typer.Option(True, "--eval/--no-eval", help="Evaluate every SAE on held-out scenes (eval.json)."),
) -> None:
    """Train every layer's image and text dictionary, then align, name and group them into concepts."""
    from steerlang.dictionary.api import TOYWORLD_SETTINGS, build_concepts, build_dictionary_set, evaluate_set

    def log(msg: str) -> None:
        err_console.print(msg, markup=False)

    if not skip_saes:
        settings = {key: {**s, "count": count} for key, s in TOYWORLD_SETTINGS.items()}
        build_dictionary_set(out, model=model, settings=settings, log=log)
        if evaluate:
            evaluate_set(out, model=model, log=log)
    report = build_concepts(out, model=model, count=count, log=log)
    out_console.print(json.dumps({k: v for k, v in report.items() if k != "layers"}), markup=False)


@dict_app.command("card")
@user_errors
def card_cmd(
    dictionary: str = typer.Argument("toyworld", help="Concept set folder (or \"toyworld\")."),
    html_out: Path = typer.Option(..., "--html", help="HTML file to write."),
    pictures: bool = typer.Option(True, "--pictures/--no-pictures", help="Embed top-patch heatmaps of joint concepts."),
    model: str | None = typer.Option(None, "--model"),
) -> None:
    """Write a static HTML page of every concept (with heatmaps of the named joint concepts)."""
    from steerlang.atomic import write_text
    from steerlang.dictionary.browse import render_html, top_patch_grid
    from steerlang.dictionary.concepts import load_concept_set

    cs = load_concept_set(dictionary)
    pics = {}
    if pictures:
        from steerlang.world.model import load_model

        bundle = load_model(model or cs.model)
        named = [c for c in cs.concepts if c.space == "joint" and "@" not in c.name and any(g.modality == "image" for g in c.groups)]
        pics = {c.key: top_patch_grid(bundle, cs, c, count=120, top=6) for c in named}
    write_text(html_out, render_html(cs, pics))
    err_console.print(f"wrote {html_out}")


@dict_app.command("align-eval")
@user_errors
def align_eval_cmd(
    dict_dir: Path = typer.Option(Path("dictionaries/toyworld"), "--dict", help="Concept set with saes.json."),
    layer: list[int] = typer.Option([0], "--layer", help="Layers to compare (repeatable)."),
    model: str = typer.Option("toyworld", "--model"),
    steps: int = typer.Option(400, "--steps", help="Training steps of the shared and VL-SAE models."),
    pool: str = typer.Option("max", "--pool", help="Scene pooling of codes: max or mean."),
    cache: Path = typer.Option(None, "--cache", help="Where trained joint models are kept (default: $STEERLANG_CACHE/joint)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Compare aligned-separate, shared (SAE-V style) and VL-SAE style joint dictionaries on held-out scenes."""
    from steerlang.dictionary.api import EVAL_SCENE_SEED, TRAIN_SCENE_SEED, cache_root, harvested
    from steerlang.dictionary.build_concepts import GRID, load_split
    from steerlang.dictionary.concept_codes import concept_set_recall, measured_concepts
    from steerlang.dictionary.concepts import load_concept_set
    from steerlang.dictionary.crossmodal import compare_layer

    cache = cache or cache_root() / "joint"
    train_acts = harvested(model, seed=TRAIN_SCENE_SEED, count=3000)
    held_acts = harvested(model, seed=EVAL_SCENE_SEED, count=500)
    res, concepts = {}, {}
    cs = load_concept_set(dict_dir) if (dict_dir / "concepts.json").exists() else None
    for L in layer:
        train = load_split(train_acts, L, TRAIN_SCENE_SEED)
        held = load_split(held_acts, L, EVAL_SCENE_SEED)
        res[L] = compare_layer(L, dict_dir, train, held, cache, steps=steps, pool=pool, progress=not as_json)
        if cs is not None and measured_concepts(cs, L):
            concepts[L] = concept_set_recall(cs, L, held, grid_cols=GRID)
    if as_json:
        out_console.print_json(json.dumps({"methods": res, "concepts": concepts}))
        return
    out_console.print("| layer | method | i2t R@1/5/10 strict | i2t R@1/5/10 caption | t2i R@1 strict / caption | intra / inter (VL-SAE) | joint latents | "
                      "SAE-V cross-modal latents (mean w) | median angle |")
    out_console.print("|---|---|---|---|---|---|---|---|---|")
    for L, methods in res.items():
        for name, r in methods.items():
            s, c = r["i2t"]["strict"], r["i2t"]["caption"]
            out_console.print(f"| {L} | {name} | {s[1]:.2f} / {s[5]:.2f} / {s[10]:.2f} | {c[1]:.2f} / {c[5]:.2f} / {c[10]:.2f} | "
                              f"{r['t2i']['strict'][1]:.2f} / {r['t2i']['caption'][1]:.2f} | {r['similarity']['intra']:.2f} / {r['similarity']['inter']:.2f} | "
                              f"{r['joint_latents']} | {r['cross_modal_latents']} ({r['cross_modal_weight_mean']:.2f}) | "
                              f"{r['angle_median_deg']:.0f} |")
    if concepts:
        out_console.print("\nThe concept set's joint concepts (the kinds), bag of strengths and with reading order:\n")
        out_console.print("| layer | code | i2t R@1/5/10 strict | i2t R@1/5/10 caption | t2i R@1 strict / caption |")
        out_console.print("|---|---|---|---|---|")
        for L, r in concepts.items():
            for name in ("bag", "ordered"):
                s, c, t = r[name]["i2t"]["strict"], r[name]["i2t"]["caption"], r[name]["t2i"]
                out_console.print(f"| {L} | {name} | {s[1]:.2f} / {s[5]:.2f} / {s[10]:.2f} | {c[1]:.2f} / {c[5]:.2f} / {c[10]:.2f} | "
                                  f"{t['strict'][1]:.2f} / {t['caption'][1]:.2f} |")
