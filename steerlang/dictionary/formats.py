"""Reading SAE files written by other tools (and by steerlang): which format a folder holds, what it
says about itself without reading its weights (`probe`), and the SAE itself (`read`).

| format | files | architectures | layer from |
|---|---|---|---|
| SAELens (and steerlang) | `cfg.json` + `sae_weights.safetensors` | standard (ReLU), topk, jumprelu; v6 nested `metadata` and older flat cfgs (`hook_point`, `activation_fn_str`, `activation_fn_kwargs.k`) | `hook_name` (`hooknames.py`), else steerlang's own `metadata.layer` |
| EleutherAI sparsify | `cfg.json` + `sae.safetensors`, one folder per hookpoint | TopK (`k` in cfg.json) | the folder's name (`layers.12` = block 12's output = layer 13) |
| dictionary_learning | `ae.pt` + `config.json` | AutoEncoder (ReLU), AutoEncoderTopK, BatchTopKSAE, JumpReluAutoEncoder, AutoEncoderNew | `trainer.layer` (`submodule_name` resid_post / resid_pre) |
| Gemma Scope | `params.npz` | JumpReLU | a `layer_L` folder above it (residual SAEs read block L's output: layer L+1) |

Weight layouts, as each library stores them (ours is SAELens's: `W_enc [d_in, d_sae]`, `W_dec [d_sae, d_in]`):
sparsify's encoder is an `nn.Linear` (`encoder.weight [d_sae, d_in]`, `encoder.bias`) and its `W_dec`
is `[d_sae, d_in]` like ours (its decode multiplies by `W_dec.mT`); dictionary_learning's encoder and
decoder are both `nn.Linear` (`encoder.weight [d_sae, d_in]`, `decoder.weight [d_in, d_sae]`) with the
decoder bias in `bias` (AutoEncoder) or `b_dec` (TopK). Gemma Scope's arrays are ours, with no
`b_dec` subtraction before the encoder.

Nothing here runs code from a file: safetensors and JSON are data; `params.npz` is read with
`np.load(allow_pickle=False)`; `ae.pt` only with `torch.load(weights_only=True)`. Any other pickle
(`*.pt`, `*.pth`, `*.bin`, `*.ckpt`, `*.pkl`) is refused, saying how to convert it.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from torch import Tensor

from steerlang.dictionary.hooknames import HookSite, parse_hook_name
from steerlang.dictionary.sae import SAE, SAEConfig, make_sae
from steerlang.errors import DictionaryError

CFG, WEIGHTS, NPZ = "cfg.json", "sae_weights.safetensors", "params.npz"
SPARSIFY_WEIGHTS, DL_WEIGHTS, DL_CONFIG = "sae.safetensors", "ae.pt", "config.json"
_ARCH_FROM_FILE = {"topk": "topk", "standard": "relu", "relu": "relu", "jumprelu": "jumprelu"}
_PICKLES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".joblib")
EXPECTED = (f"{CFG} + {WEIGHTS} (SAELens), {CFG} + {SPARSIFY_WEIGHTS} (EleutherAI sparsify), "
            f"{DL_WEIGHTS} + {DL_CONFIG} (dictionary_learning) or {NPZ} (Gemma Scope)")

__all__ = ["EXPECTED", "SAEInfo", "detect", "probe", "read"]


@dataclass
class SAEInfo:
    """What an SAE file says about itself, read without its weights (`probe`)."""

    path: Path  # the folder, or the .npz file
    format: str  # "saelens" | "sparsify" | "dictionary_learning" | "gemma_scope"
    d_in: int
    d_sae: int
    architecture: str  # ours: topk | relu | jumprelu
    hook_name: str | None = None
    layer: int | None = None  # steerlang's layer number (None: the file does not say)
    layer_from: str = ""  # how `layer` was found, for messages ("hook blocks.1.hook_resid_post")
    modality: str | None = None
    model_name: str | None = None
    k: int | None = None  # TopK
    metadata: dict[str, Any] = field(default_factory=dict)

    def where(self) -> str:
        """"hook 'blocks.1.hook_resid_post' (the output of block 1)" or how else the layer was found."""
        return self.layer_from or "its layer"


# -- detection ------------------------------------------------------------------------------
def detect(path: Path) -> tuple[str, Path] | None:
    """(format, folder or .npz file) of an SAE at `path` (a folder or one of its files), or None
    when `path` holds none of the formats. A folder holding only pickles raises (refused)."""
    p = path
    if p.is_file():
        if p.suffix == ".npz":
            return "gemma_scope", p
        if p.name in (CFG, WEIGHTS, SPARSIFY_WEIGHTS, DL_WEIGHTS, DL_CONFIG, "card.json"):
            p = p.parent
        elif p.suffix in _PICKLES:
            raise _unsafe(p)
        else:
            return None
    if not p.is_dir():
        return None
    if (p / CFG).is_file() and (p / SPARSIFY_WEIGHTS).is_file() and not (p / WEIGHTS).is_file():
        return "sparsify", p
    if (p / CFG).is_file():
        return "saelens", p
    if (p / DL_WEIGHTS).is_file():
        return "dictionary_learning", p
    if (p / NPZ).is_file():
        return "gemma_scope", p / NPZ
    return None


def _unsafe(f: Path) -> DictionaryError:
    return DictionaryError(
        f"{f}: refused: a pickle file can run code when it is loaded, so steerlang never unpickles it. If you trust it, "
        f"load it yourself and save its tensors as a SAELens folder ({CFG} + {WEIGHTS}, see docs/dictionaries.md), "
        "or as safetensors/npz")


def not_a_dictionary(p: Path) -> DictionaryError:
    """The error for a folder with no SAE in it: which files were expected, what was found (pickles refused)."""
    found = sorted(x.name for x in p.iterdir()) if p.is_dir() else []
    pickles = [x for x in found if Path(x).suffix in _PICKLES]
    if pickles:
        return _unsafe(p / pickles[0])
    seen = f"; found {', '.join(found[:5])}{', ...' if len(found) > 5 else ''}" if found else " (it is empty)"
    return DictionaryError(f"{p}: not a dictionary: expected {EXPECTED}{seen}")


# -- probing (no weights) -------------------------------------------------------------------
def probe(path: Path, *, layer: int | None = None) -> SAEInfo:
    """Read what the SAE at `path` says about itself (config files, array headers), no weights.
    `layer` gives steerlang's layer where the file does not say (it must agree where it does)."""
    got = detect(path)
    if got is None:
        raise not_a_dictionary(path if path.is_dir() else path.parent)
    fmt, p = got
    info = {"saelens": _probe_saelens, "sparsify": _probe_sparsify, "dictionary_learning": _probe_dl,
            "gemma_scope": _probe_npz}[fmt](p)
    if layer is not None:
        if info.layer is not None and info.layer != layer:
            raise DictionaryError(f"{info.path}: the file reads layer {info.layer} ({info.where()}), not layer {layer} as given")
        info.layer, info.layer_from = layer, info.layer_from or f"layer {layer} as given"
    return info


def read(path: Path, *, layer: int | None = None) -> SAE:
    """The SAE at `path`, validated (shapes, dtypes, NaN/Inf), with `cfg.layer` set where known."""
    info = probe(path, layer=layer)
    sae = {"saelens": _read_saelens, "sparsify": _read_sparsify, "dictionary_learning": _read_dl,
           "gemma_scope": _read_npz}[info.format](info)
    meta = {**sae.cfg.metadata, **info.metadata, "source_format": info.format}
    sae.cfg.layer, sae.cfg.modality, sae.cfg.metadata = info.layer, info.modality, meta
    sae.cfg.hook_name = info.hook_name or sae.cfg.hook_name
    sae.cfg.model_name = info.model_name or sae.cfg.model_name
    return sae


def _site(where: Path, hook: str) -> HookSite:
    try:
        return parse_hook_name(hook)
    except DictionaryError as exc:
        raise DictionaryError(f"{where}: {exc}") from None


def _json(f: Path) -> Any:
    try:
        return json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DictionaryError(f"{f}: not valid JSON ({e}); re-save the dictionary") from None


# -- SAELens (and steerlang) ----------------------------------------------------------------
def read_cfg(folder: Path) -> dict[str, Any]:
    """A SAELens cfg.json in the v6 shape (flat pre-6 layouts lifted: `hook_point`, `hook_name`,
    `model_name` into `metadata`; `activation_fn_str`/`activation_fn` topk with
    `activation_fn_kwargs.k`; boolean `normalize_activations`)."""
    f = folder / CFG
    cfg = _json(f)
    if not isinstance(cfg, dict):
        raise DictionaryError(f"{f}: expected a JSON object; re-save the dictionary")
    meta = dict(cfg.get("metadata") or {})
    if "hook_point" in cfg:
        meta.setdefault("hook_name", cfg["hook_point"])
    for key in ("model_name", "hook_name", "sae_lens_training_version"):
        if key in cfg:
            meta.setdefault(key, cfg[key])
    head = cfg.get("hook_head_index", cfg.get("hook_point_head_index", meta.get("hook_head_index")))
    if head is not None:
        raise DictionaryError(f"{f}: an SAE of one attention head (hook_head_index {head}) is not an SAE of the residual "
                              "stream; steerlang cannot steer with it")
    act = cfg.get("activation_fn", cfg.get("activation_fn_str"))
    if act == "topk":
        cfg.setdefault("architecture", "topk")
        cfg.setdefault("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
    cfg.setdefault("architecture", "standard")
    if cfg.get("normalize_activations") in (None, False):
        cfg["normalize_activations"] = "none"
    cfg["metadata"] = meta
    missing = [k for k in ("d_in", "d_sae") if k not in cfg] + (["k"] if cfg["architecture"] == "topk" and cfg.get("k") is None else [])
    if missing:
        raise DictionaryError(f"{f}: missing keys {missing}; add them (d_in, d_sae, and k for topk) or re-save")
    if cfg["architecture"] not in _ARCH_FROM_FILE:
        raise DictionaryError(f"{f}: architecture {cfg['architecture']!r} is not supported; use topk, standard or jumprelu")
    if cfg["normalize_activations"] != "none" or cfg.get("reshape_activations", "none") != "none":
        raise DictionaryError(
            f"{f}: normalize_activations={cfg['normalize_activations']!r} / reshape_activations="
            f"{cfg.get('reshape_activations')!r} not supported; fold the normalisation into the weights first"
        )
    return cfg


def _own_layer(meta: dict[str, Any]) -> int | None:
    """steerlang's layer number as steerlang recorded it (other tools' `layer` keys mean other things)."""
    if meta.get("steerlang_layer") is not None:
        return int(meta["steerlang_layer"])
    if str(meta.get("written_by", "")).startswith("steerlang") and meta.get("layer") is not None:
        return int(meta["layer"])
    return None


def _probe_saelens(folder: Path) -> SAEInfo:
    cfg = read_cfg(folder)
    meta = cfg["metadata"]
    hook = meta.get("hook_name") or None
    own = _own_layer(meta)
    arch = _ARCH_FROM_FILE[cfg["architecture"]]
    info = SAEInfo(folder, "saelens", int(cfg["d_in"]), int(cfg["d_sae"]), arch, hook, modality=meta.get("modality"),
                   model_name=meta.get("model_name"), k=int(cfg["k"]) if arch == "topk" else None)
    if hook:
        try:
            site = parse_hook_name(hook)
        except DictionaryError as exc:
            if own is None:
                raise DictionaryError(f"{folder / CFG}: {exc}") from None
            site = None  # steerlang wrote the layer; an unknown hook name does not matter
        if site is not None:
            if own is not None and own != site.layer:
                raise DictionaryError(f"{folder / CFG}: hook_name {hook!r} reads layer {site.layer} ({site.describe()}) but "
                                      f"metadata.layer says {own}; fix one of them")
            info.layer, info.layer_from = site.layer, f"hook {hook!r} ({site.describe()})"
            return info
    if own is not None:
        info.layer, info.layer_from = own, f"metadata.layer {own}"
    return info


def _tensors(f: Path) -> dict[str, Tensor]:
    try:
        with safe_open(str(f), framework="pt") as h:
            return {k: h.get_tensor(k) for k in h.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors' own error types (truncated header/data, bad JSON)
        raise DictionaryError(f"{f}: truncated or not a safetensors file ({e}); re-save or re-download it") from None


def _read_saelens(info: SAEInfo) -> SAE:
    folder = info.path
    cfg = read_cfg(folder)
    arch = _ARCH_FROM_FILE[cfg["architecture"]]
    wfile = folder / WEIGHTS
    if not wfile.is_file():
        raise DictionaryError(f"{wfile}: missing; the folder needs {WEIGHTS} next to {CFG}")
    tensors = _tensors(wfile)
    if arch == "jumprelu" and "threshold" not in tensors and "log_threshold" in tensors:
        tensors["threshold"] = tensors.pop("log_threshold").exp()
    meta = cfg["metadata"]
    sae = build(
        wfile,
        SAEConfig(
            architecture=arch,  # type: ignore[arg-type]
            d_in=int(cfg["d_in"]),
            d_sae=int(cfg["d_sae"]),
            k=int(cfg["k"]) if arch == "topk" else None,
            l1_coeff=meta.get("l1_coeff"),
            apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
            hook_name=meta.get("hook_name") or "",
            model_name=meta.get("model_name") or "",
            metadata={k: v for k, v in meta.items() if k not in ("model_name", "hook_name", "layer", "modality", "l1_coeff")},
        ),
        tensors,
    )
    if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
        # TopK on pre * ||W_dec||: fold the norms into the encoder so plain TopK is equivalent.
        with torch.no_grad():
            norms = sae.W_dec.norm(dim=-1).clamp(min=1e-8)
            sae.W_enc.mul_(norms)
            sae.b_enc.mul_(norms)
            sae.W_dec.div_(norms[:, None])
    return sae


# -- EleutherAI sparsify --------------------------------------------------------------------
def _probe_sparsify(folder: Path) -> SAEInfo:
    f = folder / CFG
    cfg = _json(f)
    if not isinstance(cfg, dict) or "d_in" not in cfg or "k" not in cfg:
        raise DictionaryError(f"{f}: not a sparsify config (needs d_in and k); re-save it with sparsify")
    for key, why in (("transcode", "a transcoder (it predicts a module's output from its input), not an SAE"),
                     ("skip_connection", "a sparse coder with a skip connection, which steerlang cannot steer through"),
                     ("signed", "a signed TopK sparse coder, which steerlang does not implement")):
        if cfg.get(key):
            raise DictionaryError(f"{f}: {key} is set: this is {why}")
    if cfg.get("activation", "topk") != "topk":
        raise DictionaryError(f"{f}: activation {cfg['activation']!r} is not supported; steerlang reads sparsify's topk SAEs")
    d_in = int(cfg["d_in"])
    d_sae = int(cfg.get("num_latents") or 0) or d_in * int(cfg.get("expansion_factor", 32))
    run = _json(folder.parent / DL_CONFIG) if (folder.parent / DL_CONFIG).is_file() else {}
    info = SAEInfo(folder, "sparsify", d_in, d_sae, "topk", model_name=run.get("model") if isinstance(run, dict) else None,
                   k=int(cfg["k"]), metadata={"hookpoint": folder.name})
    try:
        site = parse_hook_name(folder.name)
    except DictionaryError as exc:
        if "." in folder.name or "embed" in folder.name or re.search(r"\d", folder.name):
            raise DictionaryError(f"{folder}: sparsify hookpoint {exc}") from None
        return info  # a folder not named after its hookpoint: the layer must be given
    info.hook_name = f"blocks.{site.block}.hook_resid_{'pre' if site.io == 'input' else 'post'}"
    info.layer, info.layer_from = site.layer, f"sparsify hookpoint {folder.name!r} ({site.describe()})"
    return info


def _read_sparsify(info: SAEInfo) -> SAE:
    wfile = info.path / SPARSIFY_WEIGHTS
    t = _tensors(wfile)
    if "W_skip" in t:
        raise DictionaryError(f"{wfile}: has a skip connection (W_skip), which steerlang cannot steer through")
    missing = [k for k in ("encoder.weight", "encoder.bias", "W_dec", "b_dec") if k not in t]
    if missing:
        raise DictionaryError(f"{wfile}: missing tensors {missing} for a sparsify SAE (encoder.weight, encoder.bias, W_dec, "
                              "b_dec); was it saved without its decoder?")
    enc = t["encoder.weight"]
    if enc.ndim != 2 or tuple(enc.shape) != (info.d_sae, info.d_in):
        raise DictionaryError(f"{wfile}: encoder.weight has shape {list(enc.shape)}, the config implies "
                              f"[{info.d_sae}, {info.d_in}] (an nn.Linear weight, [d_sae, d_in])")
    tensors = {"W_enc": enc.T, "b_enc": t["encoder.bias"], "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    cfg = SAEConfig(architecture="topk", d_in=info.d_in, d_sae=info.d_sae, k=info.k,
                    apply_b_dec_to_input=True)
    return build(wfile, cfg, tensors)


# -- dictionary_learning --------------------------------------------------------------------
_DL_CLASSES = {"AutoEncoder": "relu", "AutoEncoderNew": "relu", "AutoEncoderTopK": "topk", "BatchTopKSAE": "batchtopk",
               "JumpReluAutoEncoder": "jumprelu"}


def _dl_trainer(folder: Path) -> dict[str, Any]:
    f = folder / DL_CONFIG
    if not f.is_file():
        return {}
    cfg = _json(f)
    trainer = cfg.get("trainer") if isinstance(cfg, dict) else None
    if not isinstance(trainer, dict):
        raise DictionaryError(f"{f}: not a dictionary_learning config (no \"trainer\" object)")
    return trainer


def _dl_state(folder: Path) -> dict[str, Tensor]:
    f = folder / DL_WEIGHTS
    try:
        obj = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DictionaryError(
            f"{f}: refused: it holds pickled Python objects besides tensors ({first[:160]}); steerlang loads it only "
            "with torch.load(weights_only=True), which never runs code. If you trust it, re-save just its state dict "
            "(torch.save(dict(state_dict), 'ae.pt')) or convert it to a SAELens folder") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise DictionaryError(f"{f}: truncated or not a torch state dict ({str(e).splitlines()[0][:160]}); re-download it") from None
    if isinstance(obj, dict) and isinstance(obj.get("ae"), dict):  # a training backup: {"step", "ae", "optimizer", ...}
        if obj.get("norm_factor") not in (None, 1, 1.0):
            raise DictionaryError(f"{f}: an intermediate training checkpoint whose biases are not yet scaled by its "
                                  "norm_factor; use the final ae.pt that training writes at the end")
        obj = obj["ae"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise DictionaryError(f"{f}: not a state dict of tensors; give dictionary_learning's final ae.pt")
    return obj


def _dl_class(trainer: dict[str, Any], keys: set[str], f: Path) -> str:
    name = trainer.get("dict_class")
    if name is None:  # no config.json: tell the class by its parameter names
        if {"W_enc", "threshold"} <= keys:
            name = "JumpReluAutoEncoder"
        elif "bias" in keys:
            name = "AutoEncoder"
        elif "k" in keys and "b_dec" in keys:
            name = "AutoEncoderTopK"
        elif "decoder.bias" in keys:
            name = "AutoEncoderNew"
        else:
            raise DictionaryError(f"{f}: cannot tell which dictionary_learning class wrote it; put its config.json beside it")
    if name not in _DL_CLASSES:
        raise DictionaryError(f"{f}: dictionary class {name!r} is not supported; steerlang reads {', '.join(_DL_CLASSES)}")
    return name


def _probe_dl(folder: Path) -> SAEInfo:
    trainer = _dl_trainer(folder)
    f = folder / DL_WEIGHTS
    if trainer.get("activation_dim") is None or trainer.get("dict_size") is None or trainer.get("dict_class") is None:
        state = _dl_state(folder)
        name = _dl_class(trainer, set(state), f)
        if "W_enc" in state:
            d_in, d_sae = state["W_enc"].shape
        elif "encoder.weight" in state:
            d_sae, d_in = state["encoder.weight"].shape
        else:
            raise DictionaryError(f"{f}: no encoder weights (W_enc or encoder.weight); re-download it")
        k = int(state["k"]) if "k" in state else trainer.get("k")
    else:
        name = _dl_class(trainer, set(), f)
        d_in, d_sae, k = trainer["activation_dim"], trainer["dict_size"], trainer.get("k")
    arch = _DL_CLASSES[name]
    info = SAEInfo(folder, "dictionary_learning", int(d_in), int(d_sae), "topk" if arch == "batchtopk" else arch,
                   model_name=trainer.get("lm_name"), k=int(k) if k is not None else None, metadata={"dict_class": name})
    if trainer.get("layer") is not None:
        sub = str(trainer.get("submodule_name") or "")
        block = int(trainer["layer"])
        if sub and not re.search(r"resid_(pre|post)", sub) and not re.fullmatch(r"[\w.]*layers\.\d+", sub):
            raise DictionaryError(f"{folder / DL_CONFIG}: submodule {sub!r} is not the residual stream between decoder "
                                  "blocks; steerlang steers residual streams only")
        hook = f"blocks.{block}.hook_resid_{'pre' if 'resid_pre' in sub else 'post'}"
        site = parse_hook_name(hook)
        info.hook_name, info.layer = hook, site.layer
        info.layer_from = f"trainer.layer {block}{f' ({sub})' if sub else ''}, {site.describe()}"
    return info


def _read_dl(info: SAEInfo) -> SAE:
    f = info.path / DL_WEIGHTS
    s = _dl_state(info.path)
    name = info.metadata["dict_class"]
    k = int(s["k"]) if "k" in s else info.k
    try:
        if name == "JumpReluAutoEncoder":
            tensors = {n: s[n] for n in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")}
            arch, b_in = "jumprelu", False  # its apply_b_dec_to_input defaults to False and is not saved
        elif name == "AutoEncoderNew":
            tensors = {"W_enc": s["encoder.weight"].T, "b_enc": s["encoder.bias"], "W_dec": s["decoder.weight"].T,
                       "b_dec": s["decoder.bias"]}
            arch, b_in = "relu", False
        else:
            tensors = {"W_enc": s["encoder.weight"].T, "b_enc": s["encoder.bias"], "W_dec": s["decoder.weight"].T,
                       "b_dec": s["bias"] if name == "AutoEncoder" else s["b_dec"]}
            arch, b_in = ("relu", True) if name == "AutoEncoder" else ("topk", True)
    except KeyError as e:
        raise DictionaryError(f"{f}: missing tensor {e.args[0]!r} for a {name}; re-download it") from None
    if name == "BatchTopKSAE":
        # Inference uses its learned global threshold: relu(pre) * (relu(pre) > threshold) = JumpReLU with one
        # threshold for every latent. Before calibration (threshold < 0) it only has batch top-k: per-token TopK k.
        thr = s.get("threshold")
        if thr is not None and thr.numel() == 1 and float(thr) >= 0:
            tensors["threshold"] = thr.reshape(1).expand(info.d_sae).clone()
            arch = "jumprelu"
    if arch == "topk" and k is None:
        raise DictionaryError(f"{f}: a TopK dictionary without k (neither in config.json nor in the state dict)")
    cfg = SAEConfig(architecture=arch, d_in=info.d_in, d_sae=info.d_sae, k=int(k) if arch == "topk" else None,  # type: ignore[arg-type]
                    apply_b_dec_to_input=b_in)
    return build(f, cfg, tensors)


# -- Gemma Scope ----------------------------------------------------------------------------
def _npz_shapes(f: Path) -> dict[str, tuple[int, ...]]:
    """Array shapes of an .npz from its headers, without reading the arrays."""
    out: dict[str, tuple[int, ...]] = {}
    try:
        with zipfile.ZipFile(f) as z:
            for name in z.namelist():
                if not name.endswith(".npy"):
                    continue
                with z.open(name) as h:
                    version = np.lib.format.read_magic(h)
                    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, _order, dtype = reader(h)
                if dtype.hasobject:
                    raise DictionaryError(f"{f}: refused: array {name[:-4]!r} holds pickled Python objects; steerlang reads "
                                          "npz files with allow_pickle=False. Re-save it with plain float arrays")
                out[name[:-4]] = tuple(shape)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise DictionaryError(f"{f}: truncated or not a Gemma Scope params.npz ({e}); re-download it") from None
    return out


def _probe_npz(f: Path) -> SAEInfo:
    shapes = {("W_" + k[2:] if k.startswith("w_") else k): v for k, v in _npz_shapes(f).items()}
    w = shapes.get("W_enc")
    if w is None or len(w) != 2:
        raise DictionaryError(f"{f}: missing a 2-D W_enc; a Gemma Scope file holds W_enc, W_dec, b_enc, b_dec, threshold")
    info = SAEInfo(f, "gemma_scope", int(w[0]), int(w[1]), "jumprelu", metadata={"source": "gemma-scope"})
    parts = f.absolute().parts[:-1]  # not resolve(): in a Hugging Face cache the file is a link to a blob
    for part in parts:
        low = part.lower()
        if "gemma-scope" in low and re.search(r"-(att|mlp|transcoders?)(\b|-|$)", low):
            raise DictionaryError(f"{f}: a Gemma Scope {re.search(r'-(att|mlp|transcoders?)', low).group(1)} SAE "  # type: ignore[union-attr]
                                  "(attention or MLP output), not a residual-stream one (gemma-scope-*-res)")
        if m := re.fullmatch(r"width_(\w+)", part):
            info.metadata["width"] = m.group(1)
        if m := re.fullmatch(r"average_l0_(\d+)", part):
            info.metadata["average_l0"] = int(m.group(1))
    layers = [int(m.group(1)) for part in parts if (m := re.fullmatch(r"layer_(\d+)", part))]
    if layers:
        block = layers[-1]
        info.hook_name = f"blocks.{block}.hook_resid_post"
        info.layer = block + 1
        info.layer_from = f"Gemma Scope folder layer_{block} (residual SAE on the output of block {block})"
    return info


def _read_npz(info: SAEInfo) -> SAE:
    f = info.path
    try:
        with np.load(f, allow_pickle=False) as data:
            tensors = {k: torch.from_numpy(np.array(data[k])) for k in data.files}
    except ValueError as e:
        if "pickle" in str(e):
            raise DictionaryError(f"{f}: refused: it holds pickled Python objects; steerlang reads npz files with "
                                  "allow_pickle=False. Re-save it with plain float arrays") from None
        raise DictionaryError(f"{f}: truncated or not a Gemma Scope params.npz ({e}); re-download it") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
        raise DictionaryError(f"{f}: truncated or not a Gemma Scope params.npz ({e}); re-download it") from None
    tensors = {("W_" + k[2:] if k.startswith("w_") else k): v for k, v in tensors.items()}
    cfg = SAEConfig(architecture="jumprelu", d_in=info.d_in, d_sae=info.d_sae, apply_b_dec_to_input=False)
    return build(f, cfg, tensors)


# -- validation -----------------------------------------------------------------------------
def build(file: Path, cfg: SAEConfig, tensors: dict[str, Tensor]) -> SAE:
    """Check names, shapes, dtypes and finiteness; then fill a fresh SAE."""
    shapes = {
        "W_enc": (cfg.d_in, cfg.d_sae),
        "W_dec": (cfg.d_sae, cfg.d_in),
        "b_enc": (cfg.d_sae,),
        "b_dec": (cfg.d_in,),
    }
    if cfg.architecture == "jumprelu":
        shapes["threshold"] = (cfg.d_sae,)
    missing = [k for k in shapes if k not in tensors]
    if missing:
        raise DictionaryError(f"{file}: missing tensors {missing} for a {cfg.architecture} SAE; re-save the dictionary")
    scale = tensors.get("scaling_factor", tensors.get("finetuning_scaling_factor"))
    if scale is not None and not bool((scale == 1).all()):
        raise DictionaryError(f"{file}: has a non-trivial scaling_factor; fold it into W_dec before loading")
    for name, shape in shapes.items():
        t = tensors[name]
        if tuple(t.shape) != shape:
            raise DictionaryError(f"{file}: {name} has shape {list(t.shape)}, the config implies {list(shape)}; "
                                  "the cfg and weights do not belong together")
        if not t.is_floating_point():
            raise DictionaryError(f"{file}: {name} has dtype {t.dtype}, expected a float type; re-save the dictionary")
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise DictionaryError(f"{file}: {name} has {bad} NaN/Inf values; the dictionary is corrupt, retrain or re-download it")
    sae = make_sae(cfg)
    with torch.no_grad():
        for name in shapes:
            getattr(sae, name).copy_(tensors[name].float())
    return sae
