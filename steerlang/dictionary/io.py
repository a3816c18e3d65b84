"""Dictionary files: SAELens v6 folders (+ our card), SAELens 5 folders, Gemma Scope ``params.npz``.

A dictionary folder we write::

    cfg.json                 SAELens v6 config: architecture ("topk" | "standard" | "jumprelu"),
                             d_in, d_sae, dtype, device, apply_b_dec_to_input,
                             normalize_activations "none", reshape_activations "none", k (topk),
                             metadata {sae_lens_version, model_name, hook_name, layer, modality, ...}
    sae_weights.safetensors  W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc [d_sae], b_dec [d_in]
                             (+ threshold [d_sae] for JumpReLU), float32
    card.json                ours: model, layer, modality, per-latent statistics, transform info

The folder is written into a temporary sibling and swapped into place (`steerlang.atomic.replace_dir`),
so a reader never sees a half-written dictionary, nor a moment with no dictionary at the path. ``metadata.sae_lens_version`` names the cfg layout version (6.0.0), which
is how SAELens decides to read it as a v6 config.
"""

from __future__ import annotations

import json
import math
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from steerlang import __version__
from steerlang.atomic import chmod_default, recover_dir, replace_dir, temp_dir_beside
from steerlang.dictionary.sae import SAE, SAEConfig, make_sae
from steerlang.dictionary.source import ActivationSource, as_source
from steerlang.errors import DictionaryError

CFG, WEIGHTS, CARD, NPZ = "cfg.json", "sae_weights.safetensors", "card.json", "params.npz"
SAELENS_LAYOUT_VERSION = "6.0.0"
_ARCH_TO_SAELENS = {"topk": "topk", "relu": "standard", "jumprelu": "jumprelu"}
_ARCH_FROM_FILE = {"topk": "topk", "standard": "relu", "relu": "relu", "jumprelu": "jumprelu"}
DENSE_FREQ = 0.05  # METRICS.md: a latent firing on more than 5% of tokens is "dense"


# -- saving ---------------------------------------------------------------------------------
def sae_lens_cfg(sae: SAE) -> dict[str, Any]:
    """The SAELens v6 ``cfg.json`` dict for ``sae``."""
    c = sae.cfg
    cfg: dict[str, Any] = {
        "architecture": _ARCH_TO_SAELENS[c.architecture],
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": c.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
    }
    if c.architecture == "topk":
        cfg["k"] = c.k
        cfg["rescale_acts_by_decoder_norm"] = False
    cfg["metadata"] = {
        **c.metadata,
        "sae_lens_version": SAELENS_LAYOUT_VERSION,
        "model_name": c.model_name,
        "hook_name": c.hook_name,
        "layer": c.layer,
        "modality": c.modality,
        "l1_coeff": c.l1_coeff,
        "written_by": f"steerlang {__version__}",
    }
    return cfg


def save_dictionary(sae: SAE, out_dir: str | Path, card: dict[str, Any] | None = None) -> Path:
    """Write ``cfg.json``, ``sae_weights.safetensors`` and ``card.json`` atomically; returns the folder.

    An existing ``out_dir`` is replaced only if it holds nothing but dictionary files.
    """
    out = Path(out_dir)
    recover_dir(out)
    if out.exists():
        extra = sorted(p.name for p in out.iterdir() if p.name not in (CFG, WEIGHTS, CARD))
        if not out.is_dir() or extra:
            raise DictionaryError(f"{out}: exists and is not a dictionary folder ({extra[:3]}); choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    c = sae.cfg
    full_card = {
        "format": "steerlang-dictionary-card",
        "version": 1,
        "model": c.model_name,
        "layer": c.layer,
        "modality": c.modality,
        "hook_name": c.hook_name,
        "architecture": c.architecture,
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "k": c.k,
        "transform": c.metadata.get("whitening"),
        "names": None,
        **(card or {}),
    }
    weights = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in sae.state_dict().items()}
    tmp = temp_dir_beside(out)
    try:
        save_file(weights, str(tmp / WEIGHTS))
        chmod_default(tmp / WEIGHTS)  # safetensors writes 0600
        (tmp / CFG).write_text(json.dumps(sae_lens_cfg(sae), indent=1))
        (tmp / CARD).write_text(json.dumps(_jsonable(full_card)))
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _jsonable(obj: Any) -> Any:
    """Tensors to lists, non-finite floats to None (JSON has no NaN)."""
    if isinstance(obj, Tensor):
        return _jsonable(obj.tolist())
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# -- loading --------------------------------------------------------------------------------
def load_dictionary(path: str | Path, *, expected_d_in: int | None = None, dtype: torch.dtype = torch.float32) -> SAE:
    """Load our folders, SAELens (v6 or v5) folders, or Gemma Scope ``params.npz``; validated.

    ``expected_d_in`` is the model's hidden size: a dictionary of another width is refused.
    Every failure is a one-line `DictionaryError` naming the file and the fix.
    """
    p = Path(path)
    recover_dir(p)
    if p.is_file() and p.name in (CFG, WEIGHTS, CARD):
        p = p.parent
    if p.is_file() and p.suffix == ".npz":
        sae = _load_npz(p)
    elif p.is_dir() and (p / CFG).is_file():
        sae = _load_saelens(p)
    elif p.is_dir() and (p / NPZ).is_file():
        sae = _load_npz(p / NPZ)
    elif not p.exists():
        raise DictionaryError(f"{p}: no such dictionary; give a folder with {CFG} + {WEIGHTS} or a {NPZ}")
    else:
        raise DictionaryError(f"{p}: not a dictionary (no {CFG} or {NPZ}); give a folder written by SAELens or steerlang")
    if expected_d_in is not None and sae.cfg.d_in != expected_d_in:
        raise DictionaryError(
            f"{path}: dictionary width d_in={sae.cfg.d_in} does not match the model's hidden size {expected_d_in}; "
            "use a dictionary trained on this model and layer"
        )
    return sae.to(dtype)


def load_card(path: str | Path) -> dict[str, Any] | None:
    """The ``card.json`` of a dictionary folder, or None when it has none (e.g. a SAELens folder)."""
    f = Path(path) / CARD
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise DictionaryError(f"{f}: not valid JSON ({e}); re-save the dictionary") from None


def _read_cfg(folder: Path) -> dict[str, Any]:
    f = folder / CFG
    try:
        cfg = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DictionaryError(f"{f}: not valid JSON ({e}); re-save the dictionary") from None
    if not isinstance(cfg, dict):
        raise DictionaryError(f"{f}: expected a JSON object; re-save the dictionary")
    # SAELens 5 and older: hook_point, activation_fn_kwargs.k, boolean normalize_activations.
    meta = dict(cfg.get("metadata") or {})
    if "hook_point" in cfg:
        meta.setdefault("hook_name", cfg["hook_point"])
    for key in ("model_name", "hook_name"):
        if key in cfg:
            meta.setdefault(key, cfg[key])
    if cfg.get("activation_fn") == "topk" or cfg.get("activation_fn_str") == "topk":
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


def _load_saelens(folder: Path) -> SAE:
    cfg = _read_cfg(folder)
    arch = _ARCH_FROM_FILE[cfg["architecture"]]
    wfile = folder / WEIGHTS
    if not wfile.is_file():
        raise DictionaryError(f"{wfile}: missing; the folder needs {WEIGHTS} next to {CFG}")
    try:
        with safe_open(str(wfile), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors' own error types (truncated header/data, bad JSON)
        raise DictionaryError(f"{wfile}: truncated or not a safetensors file ({e}); re-save or re-download it") from None
    if arch == "jumprelu" and "threshold" not in tensors and "log_threshold" in tensors:
        tensors["threshold"] = tensors.pop("log_threshold").exp()
    meta = cfg["metadata"]
    sae = _build(
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
            layer=meta.get("layer"),
            modality=meta.get("modality"),
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


def _load_npz(f: Path) -> SAE:
    try:
        with np.load(f, allow_pickle=False) as data:
            tensors = {k: torch.from_numpy(np.array(data[k])) for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise DictionaryError(f"{f}: truncated or not a Gemma Scope params.npz ({e}); re-download it") from None
    tensors = {("W_" + k[2:] if k.startswith("w_") else k): v for k, v in tensors.items()}
    if "W_enc" not in tensors or tensors["W_enc"].ndim != 2:
        raise DictionaryError(f"{f}: missing a 2-D W_enc; a Gemma Scope file holds W_enc, W_dec, b_enc, b_dec, threshold")
    d_in, d_sae = tensors["W_enc"].shape
    cfg = SAEConfig(architecture="jumprelu", d_in=int(d_in), d_sae=int(d_sae), apply_b_dec_to_input=False,
                    metadata={"source": "gemma-scope"})
    return _build(f, cfg, tensors)


def _build(file: Path, cfg: SAEConfig, tensors: dict[str, Tensor]) -> SAE:
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


# -- card statistics ------------------------------------------------------------------------
@torch.no_grad()
def compute_card_stats(
    sae: SAE, source: ActivationSource | Tensor, *, batch_size: int = 4096, max_rows: int | None = None
) -> dict[str, Any]:
    """Per-latent firing frequency, mean activation when firing, 90th percentile when firing
    (linear interpolation), decoder norms, dead (never fired) and dense (> 5%) fractions."""
    src = as_source(source)
    lat, val, n = [], [], 0
    for x in src.iter_batches(batch_size, max_rows=max_rows):
        z = sae.encode(x)
        t, j = (z > 0).nonzero(as_tuple=True)
        lat.append(j)
        val.append(z[t, j])
        n += x.shape[0]
    d = sae.cfg.d_sae
    j, v = torch.cat(lat), torch.cat(val).double()
    order = torch.argsort(v, stable=True)
    j, v = j[order], v[order]
    order = torch.argsort(j, stable=True)  # by latent, values ascending within each latent
    j, v = j[order], v[order]
    count = torch.bincount(j, minlength=d)
    start = torch.cumsum(count, 0) - count
    mean = torch.zeros(d, dtype=torch.float64).index_add_(0, j, v) / count.clamp(min=1)
    pos = 0.9 * (count - 1).clamp(min=0).double()
    lo, frac = pos.floor().long(), pos - pos.floor()
    hi = torch.minimum(lo + 1, (count - 1).clamp(min=0))
    vv = torch.cat([v, v.new_zeros(1)])  # index -> 0 for latents that never fire
    safe = lambda i: torch.where(count > 0, start + i, torch.full_like(i, len(v)))  # noqa: E731
    p90 = vv[safe(lo)] * (1 - frac) + vv[safe(hi)] * frac
    freq = count.double() / max(n, 1)
    return {
        "n_tokens": n,
        "dead_fraction": float((count == 0).double().mean()),
        "dense_fraction": float((freq > DENSE_FREQ).double().mean()),
        "l0": float(count.sum()) / max(n, 1),
        "firing_frequency": [round(x, 7) for x in freq.tolist()],
        "mean_activation": [round(x, 6) for x in mean.tolist()],
        "p90_activation": [round(x, 6) for x in p90.tolist()],
        "decoder_norm": [round(x, 6) for x in sae.decoder_norms().tolist()],
    }
