"""Library calls behind `steer dict ...`: harvest (cached), train, evaluate, build the shipped set."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from steerlang.atomic import write_text
from steerlang.dictionary.harvest import check_layers, harvest
from steerlang.dictionary.source import MANIFEST, ActivationSource, read_manifest
from steerlang.errors import InputError, ModelLoadError

TRAIN_SCENE_SEED = 2  # scenes for dictionary training (the toy model trained on stream 1)
EVAL_SCENE_SEED = 3  # held-out scenes for dictionary evaluation


def cache_root() -> Path:
    return Path(os.environ.get("STEERLANG_CACHE", Path.home() / ".cache" / "steerlang"))


def _model_key(model: str) -> str:
    if model == "toyworld":
        from steerlang.world.model import shipped_model_path

        path = shipped_model_path()
    else:
        path = Path(model)
    weights = path / "model.safetensors"
    # Key the cache on the weights themselves, so a retrained model never reads stale activations.
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12] if weights.exists() else hashlib.sha256(model.encode()).hexdigest()[:12]
    return f"{Path(model).name}-{digest}"


def harvested(
    model: str,
    *,
    seed: int,
    count: int,
    acts_dir: str | os.PathLike | None = None,
    on_batch: Callable[[int], None] | None = None,
    prompts: str = "describe",
) -> Path:
    """A shard folder of all layers for `count` scenes of stream `seed` under `prompts` (describe or
    questions, see `harvest_examples`); harvested once, then reused."""
    from steerlang.world.model import load_model

    suffix = "" if prompts == "describe" else f"-{prompts}"
    root = Path(acts_dir) if acts_dir else cache_root() / "acts" / f"{_model_key(model)}-s{seed}-n{count}{suffix}"
    if (root / MANIFEST).exists():
        return root
    if root.exists() and any(root.iterdir()):
        # An interrupted harvest (no manifest): start it again.
        import shutil

        shutil.rmtree(root)
    bundle = load_model(model)
    harvest(bundle, root, seed=seed, count=count, on_batch=on_batch, prompts=prompts)
    return root


def source_for(acts: Path, layer: int, modality: str) -> ActivationSource:
    manifest = read_manifest(acts)
    if layer not in manifest["layers"]:
        raise InputError(f"--layer: {layer} is out of range; harvested layers are {manifest['layers']}")
    try:
        return ActivationSource.from_shards(acts, layer, modality)
    except InputError as exc:
        raise InputError(f"--modality: {exc}") from exc


def train_dictionary(
    *,
    model: str,
    layer: int,
    modality: str,
    out: str | os.PathLike,
    arch: str = "topk",
    latents: int = 1024,
    k: int = 16,
    steps: int = 3000,
    batch_size: int = 2048,
    lr: float = 1e-3,
    dead_method: str = "auxk",
    whiten: bool = True,
    seed: int = 0,
    l1_coeff: float = 1.0,
    count: int = 3000,
    acts_dir: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train one dictionary on harvested activations and save it (SAELens folder + card) at `out`."""
    from steerlang.dictionary.io import compute_card_stats, save_dictionary
    from steerlang.dictionary.train import TrainConfig, train_sae

    if modality not in ("image", "text", "both"):
        raise InputError(f"--modality: must be image, text or both, got {modality!r}")
    n = n_blocks(model)
    if not 0 <= layer <= n:  # before any harvesting
        raise InputError(f"--layer: {layer} is out of range; this model has layers 0 (LM input) to {n} (last block's output)")
    acts = harvested(model, seed=TRAIN_SCENE_SEED, count=count, acts_dir=acts_dir)
    src = source_for(acts, layer, modality)
    hook = f"model.language_model.layers.{layer}.input" if layer < n_blocks(model) else f"model.language_model.layers.{layer - 1}.output"
    cfg = TrainConfig(
        arch=arch, d_sae=latents, k=k, l1_coeff=l1_coeff, lr=lr, batch_size=batch_size, steps=steps,
        dead_method=dead_method, whiten=whiten, seed=seed, decay_frac=0.2,
        dead_window_tokens=max(20 * batch_size, 50_000),
        checkpoint_every=checkpoint_every, out_dir=str(work_dir) if work_dir else None,
        model_name=model, hook_name=hook, layer=layer, modality=modality,
    )
    t0 = time.perf_counter()
    result = train_sae(src, cfg, resume=resume, progress=progress)
    seconds = time.perf_counter() - t0
    card = {
        "model": model, "layer": layer, "modality": modality,
        "hook": hook,
        "stats": compute_card_stats(result.sae, src, max_rows=200_000),
        "training": {"seconds": round(seconds, 1), "tokens_per_s": round(steps * batch_size / seconds),
                     "scenes": {"seed": TRAIN_SCENE_SEED, "count": count}, "last": result.history[-1] if result.history else None},
    }
    save_dictionary(result.sae, out, card)
    return {"out": str(out), "seconds": round(seconds, 1), "tokens_per_s": card["training"]["tokens_per_s"],
            "last": card["training"]["last"]}


def evaluate_dictionary(path: str | os.PathLike, *, model: str | None = None, count: int = 500,
                        splice_count: int = 300, max_rows: int | None = None) -> dict[str, Any]:
    """Reconstruction metrics on held-out scenes and the spliced next-token loss."""
    from steerlang.dictionary.io import load_card, load_dictionary
    from steerlang.dictionary.metrics import reconstruction_metrics
    from steerlang.dictionary.splice import spliced_loss
    from steerlang.world.model import load_model

    card = load_card(path) or {}
    model = model or card.get("model")
    if model is None:
        raise InputError(f"{path}: the card names no model; pass --model")
    bundle = load_model(model)
    sae = load_dictionary(path, expected_d_in=int(bundle.model.config.text_config.hidden_size))
    layer = sae.cfg.layer if sae.cfg.layer is not None else card.get("layer")
    modality = sae.cfg.modality or card.get("modality") or "both"
    if layer is None:
        raise InputError(f"{path}: the dictionary does not say which layer it reads; it is not a steerlang dictionary")
    check_layers(bundle, [int(layer)])
    acts = harvested(model, seed=EVAL_SCENE_SEED, count=count)
    rec = reconstruction_metrics(sae, source_for(acts, int(layer), modality), max_rows=max_rows)
    groups = {"image": ("image",), "text": ("text",), "both": ("image", "text", "both")}[modality]
    splice = spliced_loss(bundle, int(layer), {"image": sae, "text": sae}, seed=EVAL_SCENE_SEED, count=splice_count,
                          splices=groups)
    return {"dictionary": str(path), "model": model, "layer": int(layer), "modality": modality,
            "held_out": {"seed": EVAL_SCENE_SEED, "scenes": count}, "reconstruction": rec, "spliced": splice}


def n_blocks(model: str) -> int:
    from transformers import AutoConfig

    from steerlang.world.model import shipped_model_path

    try:
        cfg = AutoConfig.from_pretrained(str(shipped_model_path()) if model == "toyworld" else model)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"--model: cannot read the config of {model!r}: {str(exc).splitlines()[0]}") from None
    return int(cfg.text_config.num_hidden_layers)


def all_layers(model: str) -> list[int]:
    return list(range(0, n_blocks(model) + 1))


def layer_dir_name(layer: int, modality: str) -> str:
    return f"layer{layer}-{modality}"


def build_dictionary_set(
    out: str | os.PathLike,
    *,
    model: str = "toyworld",
    layers: Sequence[int] | None = None,
    modalities: Sequence[str] = ("image", "text"),
    settings: dict[str, dict[str, Any]] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Train one dictionary per (layer, modality) into `out/saes/...` and write `out/saes.json`."""
    layers = list(layers) if layers is not None else all_layers(model)
    settings = settings or {}
    out = Path(out)
    entries = []
    for layer in layers:
        for modality in modalities:
            name = layer_dir_name(layer, modality)
            kw = settings.get(f"{modality}@{layer}", settings.get(modality, {}))
            log(f"training {name} {kw}")
            res = train_dictionary(model=model, layer=layer, modality=modality, out=out / "saes" / name, progress=progress, **kw)
            entries.append({"layer": layer, "modality": modality, "path": f"saes/{name}", **{k: res[k] for k in ("seconds", "tokens_per_s")}})
    index = {"model": model, "layers": layers, "modalities": list(modalities), "saes": entries}
    write_text(out / "saes.json", json.dumps(index, indent=2) + "\n")
    return index


def build_concepts(
    out: str | os.PathLike,
    *,
    model: str = "toyworld",
    count: int = 3000,
    held_out: int = 500,
    min_precision: float = 0.9,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Align, name and group the dictionaries in `out/saes.json` into `out/concepts.json` (+ states)."""
    from dataclasses import asdict

    from steerlang.dictionary.build_concepts import (
        assemble_concepts,
        build_layer,
        load_split,
        reference_states,
    )
    from steerlang.dictionary.concepts import save_concept_set
    from steerlang.dictionary.io import load_dictionary
    from steerlang.world.model import load_model

    out = Path(out)
    index = json.loads((out / "saes.json").read_text())
    layers = [int(x) for x in index["layers"]]
    train_acts = harvested(model, seed=TRAIN_SCENE_SEED, count=count)
    held_acts = harvested(model, seed=EVAL_SCENE_SEED, count=held_out)
    paths = {(int(e["layer"]), e["modality"]): out / e["path"] for e in index["saes"]}
    bundle = load_model(model)
    # Image groups read each latent before TopK with its own threshold where image states cannot see
    # the prompt: at the LM input, or everywhere when the image comes first. The toy model reads the
    # question first; at its later layers such thresholds, calibrated under the describe prompt, do
    # not transfer (under "is there a cat ?" the layer-4 cat group passed on 92% of image patches),
    # so there groups are signed sums fitted under describe prompts and questions together.
    image_first = bundle.template.lstrip().startswith("{image}")
    q_train_acts = q_held_acts = None
    if not image_first and any(layer > 0 for layer in layers):
        q_train_acts = harvested(model, seed=TRAIN_SCENE_SEED, count=count // 2, prompts="questions")
        q_held_acts = harvested(model, seed=EVAL_SCENE_SEED, count=held_out, prompts="questions")
    reports, layer_groups = {}, {}
    for layer in layers:
        train = load_split(train_acts, layer, TRAIN_SCENE_SEED)
        held = load_split(held_acts, layer, EVAL_SCENE_SEED)
        questions = (load_split(q_train_acts, layer, TRAIN_SCENE_SEED, images_only=True),
                     load_split(q_held_acts, layer, EVAL_SCENE_SEED, images_only=True)) if q_train_acts and q_held_acts else None
        rep, groups = build_layer(layer, load_dictionary(paths[(layer, "image")]), load_dictionary(paths[(layer, "text")]),
                                  train, held, min_precision=min_precision,
                                  image_read="pre" if image_first or layer == 0 else "linear", questions=questions, log=log)
        reports[layer], layer_groups[layer] = asdict(rep), groups
    concepts = assemble_concepts(layer_groups)
    states = reference_states(bundle, layers, train_acts, TRAIN_SCENE_SEED)
    save_concept_set(out, name=out.name, model=model, layers=layers, concepts=concepts, tensors=states)
    report = {"model": model, "train_scenes": {"seed": TRAIN_SCENE_SEED, "count": count},
              "held_out_scenes": {"seed": EVAL_SCENE_SEED, "count": held_out}, "layers": reports,
              "n_concepts": {s: sum(c.space == s for c in concepts) for s in ("joint", "image", "text")}}
    write_text(out / "concepts_report.json", json.dumps(report, indent=1) + "\n")
    return report


# The shipped toy-world set: what `steer dict build` trains (measured choices, see docs/dictionaries.md).
TOYWORLD_SETTINGS: dict[str, dict[str, Any]] = {
    "image": {"latents": 1024, "k": 16, "steps": 1000, "batch_size": 2048, "lr": 1e-3, "whiten": True},
    "text": {"latents": 256, "k": 8, "steps": 800, "batch_size": 1024, "lr": 1e-3, "whiten": True},
    # At the LM input a text position is one of ~22 token embeddings: 256 latents left half dead.
    "text@0": {"latents": 32, "k": 4, "steps": 800, "batch_size": 1024, "lr": 1e-3, "whiten": True},
}


def evaluate_set(out: str | os.PathLike, *, model: str = "toyworld", log: Callable[[str], None] = lambda _m: None) -> list[dict[str, Any]]:
    """`evaluate_dictionary` for every SAE of a set; written to `out/eval.json`."""
    out = Path(out)
    index = json.loads((out / "saes.json").read_text())
    rows = []
    for e in index["saes"]:
        res = evaluate_dictionary(out / e["path"], model=model)
        r, sp = res["reconstruction"], res["spliced"][e["modality"]]
        rows.append({"dictionary": e["path"], "layer": e["layer"], "modality": e["modality"], "fvu": r["fvu"], "mse": r["mse"],
                     "l0": r["l0"], "dead_fraction": r["dead_fraction"], "dense_fraction": r["dense_fraction"],
                     "delta_ce": sp["delta_ce"], "loss_recovered": sp["loss_recovered"], "n_tokens": r["n_tokens"]})
        log(f"{e['path']}: FVU {r['fvu']:.4f} L0 {r['l0']:.1f} dead {r['dead_fraction']:.3f} dCE {sp['delta_ce']:+.4f}")
    write_text(out / "eval.json", json.dumps(rows, indent=1) + "\n")
    return rows
