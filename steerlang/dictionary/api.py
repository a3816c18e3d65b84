"""Library calls behind `steer dict ...`: harvest (cached), train, evaluate, build the shipped set."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from steerlang.atomic import remove_stale_temps, replace_dir, write_text
from steerlang.dictionary.harvest import check_layers, harvest
from steerlang.dictionary.source import MANIFEST, ActivationSource, read_manifest
from steerlang.errors import InputError, ModelLoadError, SteerError

TRAIN_SCENE_SEED = 2  # scenes for dictionary training (the toy model trained on stream 1)
EVAL_SCENE_SEED = 3  # held-out scenes for dictionary evaluation


def cache_root() -> Path:
    return Path(os.environ.get("STEERLANG_CACHE", Path.home() / ".cache" / "steerlang"))


def _model_key(model: str) -> str:
    if model == "toyworld":
        from steerlang.models.bundle import shipped_model_path

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
    log: Callable[[str], None] | None = None,
) -> Path:
    """A shard folder of all layers for `count` scenes of stream `seed` under `prompts` (describe or
    questions, see `steerlang.world.toy_harvest`); harvested once, then reused.

    The toy world is read as the dataset ``toyworld:SEED:COUNT`` through `harvest_dataset`, which
    writes the shards in a hidden sibling (``.<name>.partial``) renamed into place once complete:
    an interrupted harvest never leaves a half folder at the path, a rerun continues it from its
    last complete shard, and a second process filling the same cache entry waits for the first."""
    from steerlang.models.bundle import load_model

    root = Path(acts_dir) if acts_dir else _acts_root(model, seed, count, prompts)
    if (root / MANIFEST).exists():
        return root
    if root.exists() and not root.is_dir():
        raise InputError(f"--out: {root} is a file; give a new folder for the activations")
    if root.exists() and any(root.iterdir()):
        if acts_dir is not None and not _only_shards(root):
            raise InputError(f"--out: {root} is not empty and holds no finished harvest; give a new folder for the activations")
        shutil.rmtree(root)  # an interrupted harvest of an older steerlang (shards, no manifest)
    remove_stale_temps(root, "partial")  # the per-process temporary folders of an older steerlang
    bundle = load_model(model, device=_device())
    return harvest(bundle, root, seed=seed, count=count, on_batch=on_batch, prompts=prompts, log=log)


DATA_BATCH = 16  # samples per forward when harvesting a dataset
# Samples a concept build from captions fits its groups on (evenly spread over a larger corpus): the
# fits hold every patch of them with each latent's pre-activation, about 8 x samples x patches x
# d_sae x 4 bytes at peak (5 GB for 2,000 toy-world images at 1,024 latents). 3,000 is what the
# shipped concept set was built from.
CONCEPT_SAMPLES = 3000


def check_concept_samples(n: int) -> int:
    """`--concept-samples`: 0 (every sample) or at least 100."""
    if n != 0 and n < 100:
        raise InputError(f"--concept-samples: give at least 100 (or 0 for every sample), got {n}")
    return n


def harvested_dataset(
    model: str,
    data: str | os.PathLike,
    *,
    layers: Sequence[int] | None = None,
    caption_column: str = "text",
    prompt_column: str | None = None,
    split: str | None = None,
    prompt: str | None = None,
    max_samples: int | None = None,
    batch_size: int = DATA_BATCH,
    shard_size: int = 65536,
    dtype: str = "float32",
    acts_dir: str | os.PathLike | None = None,
    on_batch: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """A shard folder of `layers` (None: all) of `model` over the dataset `data` (a corpus folder, a
    save_to_disk folder, or ``toyworld:SEED:COUNT``): `acts_dir` when given, else an entry of the
    harvest cache (``$STEERLANG_CACHE/acts``) keyed on the model's weights, the dataset, the prompt
    and the settings. A cached harvest of the same data whose layers include `layers` is reused.
    Resumable like every harvest (`harvest_dataset`)."""
    from steerlang.data.api import open_dataset
    from steerlang.dictionary.harvest import harvest_dataset
    from steerlang.models.bundle import load_model

    torch_dtype = _activation_dtype(dtype)
    layers = all_layers(model) if layers is None else sorted(set(layers))
    ds = open_dataset(data, caption_column, prompt_column=prompt_column, split=split, arg="--data")
    if acts_dir is not None:
        root = Path(acts_dir)
        if (root / MANIFEST).exists() and _has_layers(root, layers):
            return root
    else:
        key = {"data": _data_key(ds), "model_files": _model_files(model), "prompt": prompt, "max_samples": max_samples,
               "batch_size": batch_size, "shard_size": shard_size, "dtype": dtype}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        base = f"{_model_key(model)}-data-{digest}"
        for found in sorted((cache_root() / "acts").glob(f"{base}-L*")):
            if (found / MANIFEST).exists() and _has_layers(found, layers):
                return found
        root = cache_root() / "acts" / f"{base}-L{'_'.join(str(la) for la in layers)}"
    bundle = load_model(model, device=_device())
    return harvest_dataset(bundle, ds, layers, root, prompt=prompt, batch_size=batch_size, shard_size=shard_size,
                           max_samples=max_samples, on_batch=on_batch, dtype=torch_dtype, log=log)


def _device() -> str:
    """Where a harvest puts the model: cuda:LOCAL_RANK for a process of a distributed run on GPUs, else cpu."""
    from steerlang.dictionary.distributed import device

    return device()


def _activation_dtype(name: str) -> Any:
    import torch

    dtypes = {"float32": torch.float32, "float16": torch.float16}
    if name not in dtypes:
        raise InputError(f"--dtype: activations are stored as float32 or float16, got {name!r}")
    return dtypes[name]


def _has_layers(root: Path, layers: Sequence[int]) -> bool:
    try:
        return set(layers) <= set(read_manifest(root)["layers"])
    except InputError:
        return False


def _model_files(model: str) -> list[Any]:
    """Names, sizes and times of a model folder's files (its weights may be sharded, which
    `_model_key` does not hash), so a model saved again in the same folder gets new cache entries."""
    from steerlang.models.bundle import shipped_model_path

    path = shipped_model_path() if model == "toyworld" else Path(model)
    if not path.is_dir():
        return []
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(path.iterdir()) if f.is_file()]


def _data_key(ds: Any) -> dict[str, Any]:
    """What identifies a dataset's content for the cache: where it is, its columns, and its files'
    sizes and times (a corpus edited since gets a new entry)."""
    from steerlang.dictionary.harvest import _dataset_fingerprint

    return {"kind": ds.kind, "location": ds.location, "caption_column": getattr(ds, "caption_column", None),
            "prompt_column": getattr(ds, "prompt_column", None), "split": getattr(ds, "split", None),
            "fingerprint": _dataset_fingerprint(ds)}


def _acts_root(model: str, seed: int, count: int, prompts: str = "describe") -> Path:
    """The cache folder of a harvest (see `harvested`)."""
    suffix = "" if prompts == "describe" else f"-{prompts}"
    return cache_root() / "acts" / f"{_model_key(model)}-s{seed}-n{count}{suffix}"


def _only_shards(root: Path) -> bool:
    """Does `root` hold nothing but activation shards (an unfinished harvest)?"""
    return all(p.is_file() and p.name.lstrip(".").startswith("shard_") for p in root.iterdir())


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
    on_step: Callable[[int, dict[str, float] | None], None] | None = None,
    on_harvest: Callable[[int], None] | None = None,
    data: str | os.PathLike | None = None,
    caption_column: str = "text",
    prompt_column: str | None = None,
    split: str | None = None,
    prompt: str | None = None,
    max_samples: int | None = None,
    on_log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train one dictionary on harvested activations and save it (SAELens folder + card) at `out`.

    The activations are the toy world's `count` training scenes (stream 2), or, with `data`, the
    dataset `data` (a corpus folder, a save_to_disk folder, or ``toyworld:SEED:COUNT``; read with
    `caption_column`, `prompt_column`, `split`, under `prompt`, at most `max_samples` samples),
    harvested at `layer` through the harvest cache (`harvested_dataset`), or read from `acts_dir`.
    ``on_harvest(n)`` is called per batch of harvested samples (only when they are not cached yet),
    ``on_step(done, last_logged)`` per training step; see `train_sae`."""
    from steerlang.dictionary.hooknames import tl_hook_name
    from steerlang.dictionary.io import compute_card_stats, save_dictionary
    from steerlang.dictionary.train import TrainConfig, train_sae

    check_train_args(model, layer, modality)  # before any harvesting
    if data is not None:
        acts = harvested_dataset(model, data, layers=[layer], caption_column=caption_column, prompt_column=prompt_column,
                                 split=split, prompt=prompt, max_samples=max_samples, acts_dir=acts_dir,
                                 on_batch=on_harvest, log=on_log)
        trained_on: dict[str, Any] = {"data": {"dataset": str(data), "samples": read_manifest(acts).get("metadata", {}).get("samples")}}
    else:
        acts = harvested(model, seed=TRAIN_SCENE_SEED, count=count, acts_dir=acts_dir, on_batch=on_harvest, log=on_log)
        trained_on = {"scenes": {"seed": TRAIN_SCENE_SEED, "count": count}}
    src = source_for(acts, layer, modality)
    n = n_blocks(model)
    hook = tl_hook_name(layer, n)  # blocks.L.hook_resid_pre, or blocks.{n-1}.hook_resid_post for L = n
    cfg = TrainConfig(
        arch=arch, d_sae=latents, k=k, l1_coeff=l1_coeff, lr=lr, batch_size=batch_size, steps=steps,
        dead_method=dead_method, whiten=whiten, seed=seed, decay_frac=0.2,
        dead_window_tokens=max(20 * batch_size, 50_000),
        checkpoint_every=checkpoint_every, out_dir=str(work_dir) if work_dir else None,
        model_name=model, hook_name=hook, layer=layer, modality=modality,
    )
    t0 = time.perf_counter()
    result = train_sae(src, cfg, resume=resume, progress=progress, on_step=on_step)
    seconds = time.perf_counter() - t0
    from steerlang.dictionary import distributed

    if not distributed.is_main():  # rank 0 writes the dictionary (train_sae trained it on every process)
        distributed.barrier()
        return {"out": str(out), "layer": layer, "modality": modality, "seconds": round(seconds, 1)}
    card = {
        "model": model, "layer": layer, "modality": modality,
        "hook": hook,
        "stats": compute_card_stats(result.sae, src, max_rows=200_000),
        "training": {"seconds": round(seconds, 1), "tokens_per_s": round(steps * batch_size / seconds),
                     **trained_on, "last": result.history[-1] if result.history else None},
    }
    save_dictionary(result.sae, out, card, n_layers=n)
    distributed.barrier()
    stats = card["stats"]
    return {"out": str(out), "layer": layer, "modality": modality, "latents": latents, "k": k if arch == "topk" else None,
            "steps": steps, "seconds": round(seconds, 1), "tokens_per_s": card["training"]["tokens_per_s"],
            "last": card["training"]["last"],
            "card": {key: stats[key] for key in ("n_tokens", "l0", "dead_fraction", "dense_fraction")}}


_TRAIN_DEFAULTS = {k: p.default for k, p in inspect.signature(train_dictionary).parameters.items()}


def check_train_args(model: str, layer: int, modality: str) -> None:
    """The checks `train_dictionary` makes before any harvesting (the CLI makes them before it
    draws progress bars)."""
    if modality not in ("image", "text", "both"):
        raise InputError(f"--modality: must be image, text or both, got {modality!r}")
    n = n_blocks(model)
    if not 0 <= layer <= n:
        raise InputError(f"--layer: {layer} is out of range; this model has layers 0 (LM input) to {n} (last block's output)")


def check_data_prompt(model: str, prompt: str | None = None, prompt_column: str | None = None) -> None:
    """A dataset harvest of a model with no chat template and no prompt of its own needs `prompt`
    (or per-row prompts): the one-line error `harvest_dataset` would give, from the model's folder
    and processor alone (no weights read), so the CLI can say it before drawing progress bars."""
    if prompt or prompt_column:
        return
    from steerlang.dictionary.harvest import MODEL_PROMPT_FILE
    from steerlang.models.bundle import shipped_model_path

    path = shipped_model_path() if model == "toyworld" else Path(model)
    if (path / MODEL_PROMPT_FILE).is_file():  # a steerlang model folder: its own prompt (`model_prompt`)
        return
    from steerlang.models.loader import load_processor

    if getattr(load_processor(path if path.exists() else model), "chat_template", None):
        return
    raise InputError(f"--prompt: {Path(model).name or model} has no chat template and no prompt of its own; give the "
                     "prompt to ask with each image, e.g. --prompt \"Describe the image.\"")


def evaluate_dictionary(path: str | os.PathLike, *, model: str | None = None, count: int = 500,
                        splice_count: int = 300, max_rows: int | None = None, layer: int | None = None,
                        on_phase: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Reconstruction metrics on held-out scenes and the spliced next-token loss; ``on_phase(what)``
    names each stage as it starts (the CLI shows it in a spinner). ``layer`` (steerlang's) is for a
    file that does not say which layer it reads (e.g. a Gemma Scope params.npz outside its layer_L folder)."""
    from steerlang.dictionary.io import load_card, load_dictionary
    from steerlang.dictionary.metrics import reconstruction_metrics
    from steerlang.dictionary.splice import spliced_loss
    from steerlang.models.bundle import load_model

    card = load_card(path) or {}
    model = model or card.get("model")
    if model is None:
        raise InputError(f"{path}: the card names no model; pass --model")
    on_phase(f"loading {model}")
    bundle = load_model(model)
    sae = load_dictionary(path, expected_d_in=int(bundle.model.config.text_config.hidden_size),
                          n_layers=int(bundle.model.config.text_config.num_hidden_layers), layer=layer)
    layer = sae.cfg.layer if sae.cfg.layer is not None else card.get("layer")
    modality = sae.cfg.modality or card.get("modality") or "both"
    if layer is None:
        raise InputError(f"{path}: the dictionary does not say which layer it reads (no hook name); pass --layer L "
                         "(steerlang's layer: the residual stream entering block L)")
    check_layers(bundle, [int(layer)])
    on_phase(f"held-out activations ({count} scenes)")
    acts = harvested(model, seed=EVAL_SCENE_SEED, count=count)
    on_phase("reconstruction metrics")
    rec = reconstruction_metrics(sae, source_for(acts, int(layer), modality), max_rows=max_rows)
    groups = {"image": ("image",), "text": ("text",), "both": ("image", "text", "both")}[modality]
    on_phase(f"spliced loss ({splice_count} scenes)")
    splice = spliced_loss(bundle, int(layer), {"image": sae, "text": sae}, seed=EVAL_SCENE_SEED, count=splice_count,
                          splices=groups)
    return {"dictionary": str(path), "model": model, "layer": int(layer), "modality": modality,
            "held_out": {"seed": EVAL_SCENE_SEED, "scenes": count}, "reconstruction": rec, "spliced": splice}


def n_blocks(model: str) -> int:
    from transformers import AutoConfig

    from steerlang.models.bundle import shipped_model_path

    try:
        cfg = AutoConfig.from_pretrained(str(shipped_model_path()) if model == "toyworld" else model)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"--model: cannot read the config of {model!r}: {str(exc).splitlines()[0]}") from None
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else getattr(cfg, "text_config", cfg)
    return int(text.num_hidden_layers)


def all_layers(model: str) -> list[int]:
    return list(range(0, n_blocks(model) + 1))


def layer_dir_name(layer: int, modality: str) -> str:
    return f"layer{layer}-{modality}"


class BuildEvents:
    """What a build reports as it goes; the CLI draws it with rich, tests record it. The base
    class ignores everything."""

    def log(self, msg: str) -> None:
        """A line for the user: what is reused, trained, evaluated."""

    def phase(self, name: str, total: float | None = None, done: float = 0) -> None:
        """A stage begins: "harvesting" (scenes), "training" (steps over all SAEs), "evaluating"
        (SAEs) or "concepts" (no total; with --data: patch labels, then one step per layer and concept word); `done` of `total` are already done (resumed)."""

    def advance(self, n: float = 1, note: str | None = None) -> None:
        """Progress within the current stage; `note` names what is being worked on."""


class _LogEvents(BuildEvents):
    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log  # type: ignore[method-assign]


def _plan(layers: Sequence[int], modalities: Sequence[str], settings: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{SAE name: its layer, modality and `train_dictionary` settings}, in build order."""
    plan = {}
    for layer in layers:
        for modality in modalities:
            kw = settings.get(f"{modality}@{layer}", settings.get(modality, {}))
            plan[layer_dir_name(layer, modality)] = {"layer": int(layer), "modality": modality, **kw}
    return plan


def _default(name: str) -> Any:
    """`train_dictionary`'s default for setting `name`."""
    return _TRAIN_DEFAULTS[name]


def finished_saes(folder: str | os.PathLike, names: Sequence[str]) -> list[str]:
    """Which of the SAEs `names` are complete in `folder/saes/` (`save_dictionary` writes a
    dictionary folder whole, so a complete folder there is a finished SAE)."""
    from steerlang.dictionary.io import CARD, CFG, WEIGHTS

    return [n for n in names if all((Path(folder) / "saes" / n / f).is_file() for f in (CFG, WEIGHTS, CARD))]


def build_dictionary_set(
    out: str | os.PathLike,
    *,
    model: str = "toyworld",
    layers: Sequence[int] | None = None,
    modalities: Sequence[str] = ("image", "text"),
    settings: dict[str, dict[str, Any]] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda _m: None,
    events: BuildEvents | None = None,
) -> dict[str, Any]:
    """Train one dictionary per (layer, modality) into `out/saes/...` and write `out/saes.json`.

    SAEs already complete in `out/saes/` are kept, not retrained: that is how an interrupted
    `build_concept_set` resumes (it checks first that they were made with the same settings).
    Progress goes to `events` (a "training" stage counting steps over all SAEs), else to `log`."""
    draw = progress and events is None  # per-SAE bars only when nobody draws an overall one
    events = events or _LogEvents(log)
    layers = list(layers) if layers is not None else all_layers(model)
    out = Path(out)
    plan = _plan(layers, modalities, settings or {})
    steps = {name: int(kw.get("steps", _default("steps"))) for name, kw in plan.items()}
    done = set(finished_saes(out, list(plan)))
    events.phase("training", total=sum(steps.values()), done=sum(steps[n] for n in done))
    entries = []
    for i, (name, kw) in enumerate(plan.items(), 1):
        path = out / "saes" / name
        if name not in done:
            kw = dict(kw)
            layer, modality = kw.pop("layer"), kw.pop("modality")
            events.advance(0, note=f"{name} ({i}/{len(plan)})")
            events.log(f"training {name} ({i}/{len(plan)}): {_describe(kw)}")
            res = train_dictionary(model=model, layer=layer, modality=modality, out=path, progress=draw,
                                   on_step=lambda _done, _last: events.advance(1), **kw)
            events.log(f"trained {name} in {_duration(res['seconds'])}: {_quality(res['card'])}")
        entries.append(_index_entry(path, name, plan[name]))
    index = {"model": model, "layers": layers, "modalities": list(modalities), "saes": entries}
    write_text(out / "saes.json", json.dumps(index, indent=2) + "\n")
    return index


def _index_entry(path: Path, name: str, planned: dict[str, Any]) -> dict[str, Any]:
    """The saes.json entry of a finished SAE (its timing read back from its card)."""
    from steerlang.dictionary.io import load_card

    training = (load_card(path) or {}).get("training", {})
    return {"layer": planned["layer"], "modality": planned["modality"], "path": f"saes/{name}",
            "seconds": training.get("seconds"), "tokens_per_s": training.get("tokens_per_s")}


def _describe(kw: dict[str, Any]) -> str:
    """"1024 latents, k 16, 1000 steps x 2048 tokens" from `train_dictionary` settings."""
    k = f", k {kw.get('k', _default('k'))}" if kw.get("arch", "topk") == "topk" else ""
    return (f"{kw.get('latents', _default('latents'))} latents{k}, {kw.get('steps', _default('steps'))} steps "
            f"x {kw.get('batch_size', _default('batch_size'))} tokens")


def _quality(card: dict[str, Any]) -> str:
    return (f"L0 {card['l0']:.1f}, dead {100 * card['dead_fraction']:.1f}%, dense {100 * card['dense_fraction']:.1f}% "
            f"on {card['n_tokens']} training tokens")


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def build_concepts(
    out: str | os.PathLike,
    *,
    model: str = "toyworld",
    count: int = 3000,
    held_out: int = 500,
    min_precision: float = 0.9,
    log: Callable[[str], None] = lambda _m: None,
    name: str | None = None,
) -> dict[str, Any]:
    """Align, name and group the dictionaries in `out/saes.json` into `out/concepts.json` (+ states);
    the set is called `name` (default: the folder's name)."""
    from dataclasses import asdict

    from steerlang.dictionary.concepts import save_concept_set
    from steerlang.dictionary.io import load_dictionary
    from steerlang.models.bundle import load_model
    from steerlang.world.oracle_concepts import (
        assemble_kind_concepts,
        build_layer,
        load_split,
        reference_states,
    )

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
    concepts = assemble_kind_concepts(layer_groups)
    states = reference_states(bundle, layers, train_acts, TRAIN_SCENE_SEED)
    save_concept_set(out, name=name or out.name, model=model, layers=layers, concepts=concepts, tensors=states)
    report = {"model": model, "train_scenes": {"seed": TRAIN_SCENE_SEED, "count": count},
              "held_out_scenes": {"seed": EVAL_SCENE_SEED, "count": held_out}, "layers": reports,
              "n_concepts": {s: sum(c.space == s for c in concepts) for s in ("joint", "image", "text")}}
    write_text(out / "concepts_report.json", json.dumps(report, indent=1) + "\n")
    return report


def build_concepts_from_captions(
    out: str | os.PathLike,
    *,
    model: str,
    data: str | os.PathLike,
    acts: str | os.PathLike,
    caption_column: str = "text",
    prompt_column: str | None = None,
    split: str | None = None,
    prompt: str | None = None,
    words: Sequence[str] | None = None,
    question: str | None = None,
    log: Callable[[str], None] = lambda _m: None,
    name: str | None = None,
    events: BuildEvents | None = None,
    max_samples: int | None = None,
) -> dict[str, Any]:
    """Align, name and group the dictionaries in `out/saes.json` into `out/concepts.json` (+ states)
    reading nothing but the dataset's images and captions (`steerlang.dictionary.caption_concepts`):
    the harvest `acts` of `data` and each sample's caption text. `words`: the concept words (default:
    the captions' content words that name enough samples). `question`: a yes/no question template
    with ``{word}`` (default: the model's own, `model_question`); where image states can see the
    prompt, the same images are harvested again under such questions about caption words and the
    groups there are fitted under both prompt sets. `max_samples` (default `CONCEPT_SAMPLES`; None:
    all): the fits read at most that many samples, evenly spread over the corpus
    (`caption_concepts.spread_rows`): they hold every patch of what they read, so this, not the
    corpus, sets their memory."""
    from dataclasses import asdict

    from steerlang.data.api import open_dataset
    from steerlang.data.sample import RowSubset
    from steerlang.dictionary import caption_concepts as cc
    from steerlang.dictionary.build_concepts import assemble_concepts
    from steerlang.dictionary.concepts import save_concept_set
    from steerlang.dictionary.harvest import caption_tokens
    from steerlang.dictionary.io import load_dictionary
    from steerlang.models.bundle import load_model

    out = Path(out)
    index = json.loads((out / "saes.json").read_text())
    layers = sorted(int(x) for x in index["layers"])
    paths = {(int(e["layer"]), e["modality"]): out / e["path"] for e in index["saes"]}
    missing = [f"layer {la} {m}" for la in layers for m in ("image", "text") if (la, m) not in paths]
    if missing:
        raise InputError(f"{out / 'saes.json'}: concepts need an image and a text SAE at every layer; missing {', '.join(missing)}")
    acts = Path(acts)
    manifest = read_manifest(acts)
    grid = cc.check_grid(manifest.get("metadata", {}).get("patch_grid"), f"--model {model}")
    have = [int(x) for x in manifest["layers"]]
    if not set(layers) <= set(have):
        raise InputError(f"{acts}: the harvest has layers {have}; the dictionaries need {layers}")
    bundle = load_model(model)
    ds = open_dataset(data, caption_column, prompt_column=prompt_column, split=split, arg="--data")
    log(f"reading the captions of {ds.location}")
    text = caption_tokens(bundle, ds, prompt)
    max_samples = check_concept_samples(CONCEPT_SAMPLES if max_samples is None else max_samples)
    train_rows, held_rows = cc.split_rows(list(text))
    if len(held_rows) < 10 or len(train_rows) < 50:
        raise InputError(f"--data {data}: {len(text)} usable samples; building concepts needs at least 100 "
                         f"(1 in {cc.HELD_EVERY} is held out to score names)")
    train_rows, held_rows = cc.spread_rows(train_rows, held_rows, max_samples or None)
    if len(train_rows) + len(held_rows) < len(text):
        log(f"the concept fits read {len(train_rows) + len(held_rows):,} of the {len(text):,} samples, evenly spread "
            "(--concept-samples to change)")
    first = (cc.load_corpus_layer(acts, layers[0], train_rows, text, grid),
             cc.load_corpus_layer(acts, layers[0], held_rows, text, grid))
    words = list(words) if words else cc.concept_words(first[0].captions)
    if not words:
        raise InputError(f"--data {data}: no caption word names at least 20 training samples (and at most half); "
                         "give more samples, or the concept words with --concept")
    log(f"concept words ({len(words)}): {', '.join(words[:20])}{' ...' if len(words) > 20 else ''}")
    if events is not None:  # one step for the patch labels, then one per (layer, word)
        events.phase("concepts", total=1 + len(layers) * len(words))
        events.advance(0, note="patch labels")
    labels = cc.label_patches(first, load_dictionary(paths[(layers[0], "image")]), words, log=log)
    if events is not None:
        events.advance(1)
    image_first = bundle.template.lstrip().startswith("{image}")
    q_acts = None
    question = question or model_question(bundle)
    if question and not image_first and len(layers) > 1:
        from steerlang.dictionary.harvest import harvest_dataset

        example = cc.CaptionQuestions(words, question)
        q_layers = layers[1:]
        subset = "" if len(train_rows) + len(held_rows) == len(text) else f"|{train_rows + held_rows}"
        digest = hashlib.sha256(f"{example.key}|{q_layers}{subset}".encode()).hexdigest()[:12]
        q_root = acts.parent / f"{acts.name}-questions-{digest}"
        log(f"harvesting the same images under yes/no questions ({question!r}) into {q_root}")
        # Only the samples the fits read: the digest names the rows, so another subset is another harvest.
        q_ds = RowSubset(ds, train_rows + held_rows) if len(train_rows) + len(held_rows) < len(text) else ds
        q_acts = harvest_dataset(bundle, q_ds, q_layers, q_root, prompt=prompt, example=example)
    reports, layer_groups, states = {}, {}, {}
    for layer in layers:
        train, held = first if layer == layers[0] else (cc.load_corpus_layer(acts, layer, train_rows, text, grid),
                                                         cc.load_corpus_layer(acts, layer, held_rows, text, grid))
        read = "pre" if image_first or layer == layers[0] else "linear"
        qs = None
        if q_acts is not None and read == "linear":
            qs = (cc.load_question_images(q_acts, layer, train), cc.load_question_images(q_acts, layer, held))
        rep, groups = cc.build_caption_layer(layer, load_dictionary(paths[(layer, "image")]), load_dictionary(paths[(layer, "text")]),
                                             train, held, labels, image_read=read, questions=qs, log=log,
                                             on_word=(lambda w, la=layer: events.advance(1, note=f"layer {la}: {w}"))
                                             if events is not None else None)
        reports[layer], layer_groups[layer] = asdict(rep), groups
        states.update(cc.reference_states(train, labels, layer))
    concepts = assemble_concepts(layer_groups, words=words)
    save_concept_set(out, name=name or out.name, model=model, layers=layers, concepts=concepts, tensors=states)
    report = {"model": model, "built_from": "captions", "data": str(data), "samples": len(text), "question": question if q_acts else None,
              "train_samples": len(train_rows), "held_out_samples": len(held_rows), "max_samples": max_samples or None,
              "words": words,
              "seeds": {w: asdict(p) for w, p in labels.plans.items()}, "layers": reports,
              "n_concepts": {s: sum(c.space == s for c in concepts) for s in ("joint", "image", "text")}}
    write_text(out / "concepts_report.json", json.dumps(report, indent=1) + "\n")
    return report


def model_question(bundle: Any) -> str | None:
    """A model's own yes/no question template: ``"question"`` of a ``steerlang.json`` beside its
    weights, or the toy world's "is there a {word} ?" for the toy models; None otherwise."""
    from steerlang.dictionary.harvest import MODEL_PROMPT_FILE

    path = getattr(bundle, "path", None)
    own = Path(path) / MODEL_PROMPT_FILE if path is not None else None
    cfg: Any = {}
    if own is not None and own.is_file():
        try:
            cfg = json.loads(own.read_text())
        except (OSError, ValueError):
            cfg = {}
    q = cfg.get("question") if isinstance(cfg, dict) else None
    if isinstance(q, str) and "{word}" in q:
        return q
    toy = getattr(bundle, "name", None) == "toyworld" or (isinstance(cfg, dict) and cfg.get("template") == "{prompt} {image}")
    return "is there a {word} ?" if toy else None


# The shipped toy-world set: what `steer dict build` trains (measured choices, see docs/dictionaries.md).
TOYWORLD_SETTINGS: dict[str, dict[str, Any]] = {
    "image": {"latents": 1024, "k": 16, "steps": 1000, "batch_size": 2048, "lr": 1e-3, "whiten": True},
    "text": {"latents": 256, "k": 8, "steps": 800, "batch_size": 1024, "lr": 1e-3, "whiten": True},
    # At the LM input a text position is one of ~22 token embeddings: 256 latents left half dead.
    "text@0": {"latents": 32, "k": 4, "steps": 800, "batch_size": 1024, "lr": 1e-3, "whiten": True},
}


def evaluate_set(out: str | os.PathLike, *, model: str = "toyworld", log: Callable[[str], None] = lambda _m: None,
                 resume: bool = False, events: BuildEvents | None = None) -> list[dict[str, Any]]:
    """`evaluate_dictionary` for every SAE of a set; written to `out/eval.json`.

    With `resume`, rows already in `out/eval.json` are kept and the file is rewritten after each
    SAE, so an interrupted evaluation (in a build folder) picks up where it stopped."""
    events = events or _LogEvents(log)
    out = Path(out)
    index = json.loads((out / "saes.json").read_text())
    done = _eval_rows(out / "eval.json") if resume else {}
    saes = index["saes"]
    events.phase("evaluating", total=len(saes), done=sum(e["path"] in done for e in saes))
    if done:
        events.log(f"reusing the evaluation of {sum(e['path'] in done for e in saes)} SAEs")
    rows = []
    for i, e in enumerate(saes, 1):
        if e["path"] in done:
            rows.append(done[e["path"]])
            continue
        events.advance(0, note=f"{e['path']} ({i}/{len(saes)})")
        res = evaluate_dictionary(out / e["path"], model=model)
        r, sp = res["reconstruction"], res["spliced"][e["modality"]]
        rows.append({"dictionary": e["path"], "layer": e["layer"], "modality": e["modality"], "fvu": r["fvu"], "mse": r["mse"],
                     "l0": r["l0"], "dead_fraction": r["dead_fraction"], "dense_fraction": r["dense_fraction"],
                     "delta_ce": sp["delta_ce"], "loss_recovered": sp["loss_recovered"], "n_tokens": r["n_tokens"]})
        events.log(f"{e['path']}: FVU {r['fvu']:.4f} L0 {r['l0']:.1f} dead {r['dead_fraction']:.3f} dCE {sp['delta_ce']:+.4f}")
        if resume:
            write_text(out / "eval.json", json.dumps(rows, indent=1) + "\n")
        events.advance(1)
    write_text(out / "eval.json", json.dumps(rows, indent=1) + "\n")
    return rows


def _eval_rows(path: Path) -> dict[str, dict[str, Any]]:
    """{dictionary path: row} of an eval.json; empty if there is none or it is unreadable."""
    try:
        rows = json.loads(path.read_text())
        return {r["dictionary"]: r for r in rows}
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return {}


def toyworld_settings(count: int) -> dict[str, dict[str, Any]]:
    """`TOYWORLD_SETTINGS` with `count` training scenes."""
    return {key: {**s, "count": count} for key, s in TOYWORLD_SETTINGS.items()}


# -- steer dict build: a concept set built beside its target and swapped in whole ------------------
BUILD_RECORD = "build.json"


def build_dir(out: str | os.PathLike) -> Path:
    """Where `build_concept_set` builds `out`: a hidden sibling (same file system, so it can be
    swapped in by a rename), ``.<name>.build``; git-ignored."""
    out = _target(out)
    return out.parent / f".{out.name}.build"


def _target(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.resolve() if out.name in ("", ".", "..") else out


def shipped_concept_set() -> Path | None:
    """The concept set that ships with steerlang (in the checkout or the installed package)."""
    from steerlang.resources import data_path

    try:
        return data_path("dictionaries", "toyworld").resolve()
    except SteerError:
        return None


def check_build_target(out: str | os.PathLike, *, force: bool = False, skip_saes: bool = False) -> None:
    """Refuse, before any work, a target that a build must not replace: a file, a folder that is not
    a concept set (the build replaces the folder whole), or, without `force`, an existing concept
    set (the shipped one above all)."""
    out = _target(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} is a file; give a folder for the concept set")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    is_set = any(n in entries for n in ("saes.json", "concepts.json"))
    if entries and not is_set:
        raise InputError(f"--out: {out} is not empty and holds no concept set ({', '.join(entries[:3])}); "
                         "the build replaces --out whole: give a new folder")
    if skip_saes and not (out / "saes.json").is_file():
        raise InputError(f"--skip-saes: {out} has no trained SAEs (no saes.json) to reuse; run without --skip-saes")
    if is_set and not force:
        shipped = shipped_concept_set()
        what = "the shipped concept set" if shipped is not None and out.resolve() == shipped else "a concept set"
        raise InputError(f"--out: {out} already holds {what}, which this build would replace; add --force to replace it, "
                         f"or build into a new folder (e.g. --out runs/{out.name})")


def build_concept_set(
    out: str | os.PathLike,
    *,
    model: str = "toyworld",
    count: int = 3000,
    layers: Sequence[int] | None = None,
    modalities: Sequence[str] = ("image", "text"),
    settings: dict[str, dict[str, Any]] | None = None,
    skip_saes: bool = False,
    evaluate: bool = True,
    force: bool = False,
    events: BuildEvents | None = None,
    data: str | os.PathLike | None = None,
    reuse_saes: str | os.PathLike | None = None,
    caption_column: str = "text",
    prompt_column: str | None = None,
    split: str | None = None,
    prompt: str | None = None,
    words: Sequence[str] | None = None,
    question: str | None = None,
    concept_samples: int | None = None,
) -> dict[str, Any]:
    """`steer dict build`: train every layer's image and text SAE, evaluate them, and align, name and
    group them into a concept set at `out`, never leaving `out` half-written.

    With `data` (an image-caption dataset: a corpus folder, a save_to_disk folder, or
    ``toyworld:SEED:COUNT``), everything comes from that dataset's images and captions alone: the
    SAEs are trained on its harvest (or, with `reuse_saes`, taken from that concept set or SAE set)
    and the concepts are built by `build_concepts_from_captions` (`words`, `question` as there;
    `concept_samples` is its `max_samples`: default `CONCEPT_SAMPLES`, 0 for every sample).
    Without it, the toy world's supervised build (scenes of stream 2, the renderer's patch truth).

    Everything is built in `build_dir(out)` (``.<name>.build`` beside `out`) and swapped in whole at
    the end by `steerlang.atomic.replace_dir` (one atomic exchange on Linux): `out` holds the old set
    or the new one, never a mix, whatever interrupts the build. The build folder records its settings
    (`build.json`); a rerun with the same settings reuses the SAEs finished there (and the rows of an
    unfinished evaluation), with other settings it starts over, saying why. With `skip_saes` the
    existing set's SAEs are hard-linked (or copied) into the build folder and only the concepts are
    rebuilt. Returns a summary (the CLI prints it, or its JSON)."""
    t0 = time.perf_counter()
    out = _target(out)
    events = events or BuildEvents()
    check_build_target(out, force=force, skip_saes=skip_saes)
    if count < 1:
        raise InputError(f"--count: must be at least 1, got {count}")
    if data is None and reuse_saes is not None:
        raise InputError("--reuse-saes: goes with --data (a concept build from captions); to rebuild the concepts of "
                         "--out on its own SAEs, use --skip-saes")
    if data is not None:
        return _build_from_data(out, model=model, data=data, reuse_saes=reuse_saes, layers=layers, modalities=modalities,
                                settings=settings, skip_saes=skip_saes, evaluate=evaluate, events=events, t0=t0,
                                caption_column=caption_column, prompt_column=prompt_column, split=split, prompt=prompt,
                                words=words, question=question, concept_samples=check_concept_samples(
                                    CONCEPT_SAMPLES if concept_samples is None else concept_samples))
    settings = settings if settings is not None else toyworld_settings(count)
    layers = list(layers) if layers is not None else all_layers(model)
    plan = _plan(layers, modalities, settings)
    record = {"format": "steerlang-build", "version": 1, "mode": "concepts" if skip_saes else "full", "model": model,
              "model_key": _model_key(model), "count": count, "layers": layers, "modalities": list(modalities), "saes": plan}
    work = build_dir(out)
    with _build_lock(work, out):
        _start_build(work, json.loads(json.dumps(record)), events, fresh=skip_saes)
        reused = [] if skip_saes else finished_saes(work, list(plan))
        if reused:
            events.log(f"resuming the unfinished build in {work}: reusing {len(reused)} of {len(plan)} trained SAEs "
                       f"({', '.join(reused)})")
        if skip_saes:
            _link_set(out, work)
        else:
            if not (_acts_root(model, TRAIN_SCENE_SEED, count) / MANIFEST).exists():
                events.phase("harvesting", total=count)
                harvested(model, seed=TRAIN_SCENE_SEED, count=count, on_batch=events.advance)
            build_dictionary_set(work, model=model, layers=layers, modalities=modalities, settings=settings, events=events)
            if evaluate:
                evaluate_set(work, model=model, resume=True, events=events)
        events.phase("concepts")
        events.log("building concepts: aligning, naming and grouping the latents of every layer")
        report = build_concepts(work, model=model, count=count, log=events.log, name=out.name)
        replace_dir(work, out)
        (out / BUILD_RECORD).unlink()  # after the swap: until then, a rerun can resume
    rows = _eval_rows(out / "eval.json")
    return {"out": str(out), "model": model, "seconds": round(time.perf_counter() - t0, 1), "skip_saes": skip_saes,
            "saes": len(plan), "trained": [] if skip_saes else [n for n in plan if n not in reused], "reused": reused,
            "train_scenes": report["train_scenes"], "held_out_scenes": report["held_out_scenes"],
            "n_concepts": report["n_concepts"], "eval": list(rows.values()) if rows else None}


def _reused_set(path: str | os.PathLike) -> Path:
    """The folder of --reuse-saes: a concept set or SAE set folder with saes.json ("toyworld": the shipped one)."""
    p = Path(path)
    if str(path) == "toyworld" and not p.exists():
        p = shipped_concept_set() or p
    if not (p / "saes.json").is_file():
        raise InputError(f"--reuse-saes: {path} holds no saes.json; give a concept set folder (e.g. dictionaries/toyworld) "
                         "whose SAEs should be reused")
    return p


def _build_from_data(out: Path, *, model: str, data: str | os.PathLike, reuse_saes: str | os.PathLike | None,
                     layers: Sequence[int] | None, modalities: Sequence[str], settings: dict[str, dict[str, Any]] | None,
                     skip_saes: bool, evaluate: bool, events: BuildEvents, t0: float, caption_column: str,
                     prompt_column: str | None, split: str | None, prompt: str | None, words: Sequence[str] | None,
                     question: str | None, concept_samples: int = CONCEPT_SAMPLES) -> dict[str, Any]:
    """`build_concept_set` with `data`: SAEs and concepts from an image-caption dataset alone."""
    from steerlang.data.api import open_dataset
    from steerlang.dictionary.harvest import check_harvest
    from steerlang.models.bundle import load_model

    if tuple(modalities) != ("image", "text"):
        raise InputError("--data: a concept build needs image and text SAEs at every layer")
    source = _reused_set(reuse_saes) if reuse_saes is not None else None
    if source is not None:
        layers = [int(x) for x in json.loads((source / "saes.json").read_text())["layers"]]
    layers = list(layers) if layers is not None else all_layers(model)
    ds = open_dataset(data, caption_column, prompt_column=prompt_column, split=split, arg="--data")
    check_harvest(load_model(model), ds, layers, prompt)  # a missing --prompt, bad layers: before any work
    data_kw = {"data": str(data), "caption_column": caption_column, "prompt_column": prompt_column, "split": split,
               "prompt": prompt}
    plan = {} if source is not None or skip_saes else \
        _plan(layers, modalities, {k: {**v, **data_kw} for k, v in (settings or TOYWORLD_SETTINGS).items()})
    mode = "concepts" if skip_saes else ("reuse" if source is not None else "full")
    record = {"format": "steerlang-build", "version": 1, "mode": mode, "model": model, "model_key": _model_key(model),
              "data": _data_key(ds), "data_options": data_kw, "reuse_saes": str(source) if source else None,
              "layers": layers, "words": list(words) if words else None, "question": question,
              "concept_samples": concept_samples, "saes": plan}
    work = build_dir(out)
    with _build_lock(work, out):
        _start_build(work, json.loads(json.dumps(record)), events, fresh=source is not None or skip_saes)
        reused = finished_saes(work, list(plan)) if plan else []
        events.phase("harvesting", total=ds.count_rows())
        acts = harvested_dataset(model, data, layers=layers, caption_column=caption_column, prompt_column=prompt_column,
                                 split=split, prompt=prompt, on_batch=events.advance, log=events.log)
        if skip_saes:
            _link_set(out, work)
        elif source is not None:
            _link_set(source, work)
        else:
            build_dictionary_set(work, model=model, layers=layers, modalities=modalities, settings={
                k: {**v, **data_kw} for k, v in (settings or TOYWORLD_SETTINGS).items()}, events=events)
            if evaluate and model == "toyworld":
                evaluate_set(work, model=model, resume=True, events=events)
        events.log("building concepts from the captions: seed latents, patch labels, groups, names, alignment")
        report = build_concepts_from_captions(work, model=model, data=data, acts=acts, caption_column=caption_column,
                                              prompt_column=prompt_column, split=split, prompt=prompt, words=words,
                                              question=question, log=events.log, name=out.name, events=events,
                                              max_samples=concept_samples)
        replace_dir(work, out)
        (out / BUILD_RECORD).unlink()
    rows = _eval_rows(out / "eval.json")
    return {"out": str(out), "model": model, "seconds": round(time.perf_counter() - t0, 1), "skip_saes": skip_saes,
            "saes": len(layers) * 2, "trained": [n for n in plan if n not in reused], "reused": reused,
            "reused_from": str(source) if source else None, "data": str(data), "samples": report["samples"],
            "train_scenes": None, "held_out_scenes": None, "words": report["words"],
            "n_concepts": report["n_concepts"], "eval": list(rows.values()) if rows else None}


def build_status(out: str | os.PathLike) -> dict[str, Any] | None:
    """What an unfinished build of `out` has kept: {"dir", "finished", "total", "mode"}, or None
    when there is none (the CLI says it when a build is interrupted)."""
    work = build_dir(out)
    try:
        record = json.loads((work / BUILD_RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    names = list(record.get("saes", {}))
    return {"dir": work, "finished": len(finished_saes(work, names)), "total": len(names), "mode": record.get("mode")}


def _start_build(work: Path, record: dict[str, Any], events: BuildEvents, *, fresh: bool) -> None:
    """Make `work` ready for a build with `record`'s settings: keep what an unfinished build with the
    same settings left there, else empty it (saying why); then write the record."""
    try:
        old = json.loads((work / BUILD_RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        old = None
    leftovers = [p for p in work.iterdir() if p.name != BUILD_RECORD]
    if old is not None and old != record:
        events.log(f"{work} holds an unfinished build with other settings ({_record_diff(old, record)}); starting over")
        _empty(work)
    elif old is None and leftovers:
        events.log(f"{work} holds an unfinished build with no record of its settings; starting over")
        _empty(work)
    elif fresh:
        _empty(work)
    for tmp in work.glob("saes/.*"):  # a dictionary being written when the process was killed
        shutil.rmtree(tmp, ignore_errors=True)
    write_text(work / BUILD_RECORD, json.dumps(record, indent=1) + "\n")


def _record_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    """"count 200 -> 300; layer0-image steps 1000 -> 10": what differs between two build records."""
    parts = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key == "saes" and isinstance(a, dict) and isinstance(b, dict):
            for name in list(b) + [n for n in a if n not in b]:
                x, y = a.get(name) or {}, b.get(name) or {}
                diff = [f"{k} {x.get(k)} -> {y.get(k)}" for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]
                if diff:
                    parts.append(f"{name} {', '.join(diff)}")
        else:
            parts.append(f"{key} {a} -> {b}")
    return "; ".join(parts[:4]) + ("; ..." if len(parts) > 4 else "")


def _empty(folder: Path) -> None:
    for p in folder.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


_REBUILT = ("concepts.json", "prototypes.safetensors", "concepts_report.json", BUILD_RECORD)


def _link_set(src: Path, dst: Path) -> None:
    """Hard-link (or copy, where links are not possible) every file of the set `src` into `dst`,
    except those a concept build rewrites; nothing writes into these files in place."""
    for f in sorted(src.rglob("*")):
        rel = f.relative_to(src)
        if f.is_dir() or rel.as_posix() in _REBUILT or any(part.startswith(".") for part in rel.parts):
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, dst / rel)
        except OSError:
            shutil.copy2(f, dst / rel)


@contextlib.contextmanager
def _build_lock(work: Path, out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the build folder (made if needed), so two builds of one target
    cannot write into it at once; the lock goes with the process."""
    work.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    fd = os.open(work, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"--out: another `steer dict build` is building {out} in {work} right now; "
                             "wait for it, or give another --out") from None
        yield
    finally:
        os.close(fd)
