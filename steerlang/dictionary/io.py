"""Dictionary files: we write SAELens v6 folders (+ our card); we read those and other tools' files
(`formats.py`: SAELens v6 and older cfg layouts, EleutherAI sparsify, dictionary_learning, Gemma Scope).

A dictionary folder we write::

    cfg.json                 SAELens v6 config: architecture ("topk" | "standard" | "jumprelu"),
                             d_in, d_sae, dtype, device, apply_b_dec_to_input,
                             normalize_activations "none", reshape_activations "none", k (topk),
                             metadata {sae_lens_version, model_name, hook_name (TransformerLens form:
                             blocks.L.hook_resid_pre, or blocks.{n-1}.hook_resid_post for the last
                             layer), steerlang_layer and layer, hf_module + hf_module_io, layers_path,
                             n_layers (when known), modality, ...}
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
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from steerlang import __version__
from steerlang.atomic import chmod_default, recover_dir, replace_dir, temp_dir_beside
from steerlang.dictionary.formats import CFG, EXPECTED, NPZ, WEIGHTS, detect, not_a_dictionary, read
from steerlang.dictionary.hooknames import (
    DEFAULT_LAYERS_PATH,
    HookSite,
    hf_module_for_layer,
    layer_range_text,
    parse_hook_name,
    tl_hook_name,
)
from steerlang.dictionary.sae import SAE, SAEConfig
from steerlang.dictionary.source import ActivationSource, as_source
from steerlang.errors import DictionaryError

CARD = "card.json"
SAELENS_LAYOUT_VERSION = "6.0.0"
_ARCH_TO_SAELENS = {"topk": "topk", "relu": "standard", "jumprelu": "jumprelu"}
__all__ = ["CARD", "CFG", "NPZ", "WEIGHTS", "check_fits", "compute_card_stats", "hook_metadata", "load_card",
           "load_dictionary", "sae_lens_cfg", "save_dictionary"]
DENSE_FREQ = 0.05  # a latent firing on more than 5% of tokens is "dense" (the usual cut-off)


# -- saving ---------------------------------------------------------------------------------
def sae_lens_cfg(sae: SAE, *, n_layers: int | None = None, layers_path: str | None = None) -> dict[str, Any]:
    """The SAELens v6 ``cfg.json`` dict for ``sae`` (hook names: `hook_metadata`)."""
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
        **hook_metadata(c, n_layers=n_layers, layers_path=layers_path),
        "layer": c.layer,
        "modality": c.modality,
        "l1_coeff": c.l1_coeff,
        "written_by": f"steerlang {__version__}",
    }
    return cfg


def hook_metadata(c: SAEConfig, *, n_layers: int | None = None, layers_path: str | None = None) -> dict[str, Any]:
    """Where the SAE reads, for ``cfg.json``'s metadata: ``hook_name`` in TransformerLens form (what
    SAELens and other tools understand: `blocks.L.hook_resid_pre` for L < n, `blocks.{n-1}.hook_resid_post`
    for L = n), ``steerlang_layer``, and the Hugging Face module a forward hook reads it from
    (``hf_module`` + ``hf_module_io`` "input"/"output", ``layers_path``, ``n_layers`` when known).

    Without a layer the hook name is written as given. Without ``n_layers`` (nor ``metadata.n_layers``)
    the last layer cannot be told from the others: a given name that reads a block's output (the
    old `...layers.{L-1}.output`) keeps that form, otherwise `blocks.L.hook_resid_pre` is written.
    """
    if c.layer is None:
        return {"hook_name": c.hook_name}
    n = n_layers if n_layers is not None else c.metadata.get("n_layers")
    given: HookSite | None = None
    if c.hook_name:
        try:
            given = parse_hook_name(c.hook_name)
        except DictionaryError:
            given = None
    if given is not None and given.layer != c.layer:
        given = None  # the layer number wins over a name that disagrees with it
    io = "output" if n is None and given is not None and given.io == "output" and c.layer > 0 else None
    path = layers_path or c.metadata.get("layers_path") or (given.layers_path if given is not None else None) or DEFAULT_LAYERS_PATH
    module, side = hf_module_for_layer(c.layer, n, path, io=io)  # type: ignore[arg-type]
    out = {"hook_name": tl_hook_name(c.layer, n, io=io), "steerlang_layer": c.layer,  # type: ignore[arg-type]
           "hf_module": module, "hf_module_io": side, "layers_path": path}
    if n is not None:
        out["n_layers"] = int(n)
    return out


def save_dictionary(sae: SAE, out_dir: str | Path, card: dict[str, Any] | None = None, *, n_layers: int | None = None,
                    layers_path: str | None = None) -> Path:
    """Write ``cfg.json``, ``sae_weights.safetensors`` and ``card.json`` atomically; returns the folder.

    ``n_layers`` (the model's decoder blocks) and ``layers_path`` (where they live, e.g.
    "model.language_model.layers") make the hook names exact (`hook_metadata`).
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
    cfg = sae_lens_cfg(sae, n_layers=n_layers, layers_path=layers_path)
    full_card = {
        "format": "steerlang-dictionary-card",
        "version": 1,
        "model": c.model_name,
        "layer": c.layer,
        "modality": c.modality,
        "hook_name": cfg["metadata"]["hook_name"],
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
        (tmp / CFG).write_text(json.dumps(cfg, indent=1))
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
def load_dictionary(path: str | Path, *, expected_d_in: int | None = None, n_layers: int | None = None,
                    layer: int | None = None, dtype: torch.dtype = torch.float32) -> SAE:
    """Load an SAE written by steerlang or another tool (`formats.py`: SAELens v6 and older cfg
    layouts, EleutherAI sparsify, dictionary_learning, Gemma Scope ``params.npz``); validated.

    ``cfg.layer`` is steerlang's layer, read from the hook name (`hooknames.py`), the folder name
    (sparsify hookpoints, Gemma Scope ``layer_L``) or steerlang's own metadata; ``layer`` gives it
    where the file does not say. ``expected_d_in`` is the model's hidden size: a dictionary of
    another width is refused; ``n_layers`` the model's number of decoder blocks: an SAE whose hook
    maps to no layer of the model is refused. Every failure is a one-line `DictionaryError` naming
    the file and the fix.
    """
    p = Path(path)
    recover_dir(p)
    if not p.exists():
        raise DictionaryError(f"{p}: no such dictionary; give a folder with {EXPECTED}")
    if detect(p) is None:
        raise not_a_dictionary(p if p.is_dir() else p.parent)
    sae = read(p, layer=layer)
    check_fits(sae, path, expected_d_in=expected_d_in, n_layers=n_layers)
    return sae.to(dtype)


def check_fits(sae: SAE, path: str | Path, *, expected_d_in: int | None = None, n_layers: int | None = None,
               model: str | None = None) -> None:
    """Refuse an SAE of another width than the model's hidden size, or whose layer the model lacks."""
    of = f" of {model}" if model else ""
    if expected_d_in is not None and sae.cfg.d_in != expected_d_in:
        raise DictionaryError(
            f"{path}: dictionary width d_in={sae.cfg.d_in} does not match the model{of}'s hidden size {expected_d_in}; "
            "use a dictionary trained on this model and layer"
        )
    layer = sae.cfg.layer
    if n_layers is not None and layer is not None and not 0 <= layer <= n_layers:
        hook = f"hook {sae.cfg.hook_name!r} reads layer {layer}" if sae.cfg.hook_name else f"it reads layer {layer}"
        raise DictionaryError(f"{path}: {hook}, but the model{of} has {layer_range_text(n_layers)}; "
                              "use an SAE trained on this model")


def load_card(path: str | Path) -> dict[str, Any] | None:
    """The ``card.json`` of a dictionary folder, or None when it has none (e.g. a SAELens folder)."""
    f = Path(path) / CARD
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise DictionaryError(f"{f}: not valid JSON ({e}); re-save the dictionary") from None


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
