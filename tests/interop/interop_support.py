"""SAE files written by hand in each library's own layout (none of the libraries is needed).

Identity SAEs: d_sae = 2 d_in, encoder [I, -I], decoder [I; -I], so relu(x - b) - relu(b - x) + b = x
(ReLU, JumpReLU with threshold 0, TopK with k = d_in: at most d_in pre-activations are positive).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

D = 16


def identity(d: int = D, b_dec: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """Our layout: W_enc [d, 2d], W_dec [2d, d], b_enc [2d], b_dec [d] (random b_dec unless b_dec=False)."""
    eye = torch.eye(d)
    g = torch.Generator().manual_seed(seed)
    return {"W_enc": torch.cat([eye, -eye], 1), "W_dec": torch.cat([eye, -eye], 0), "b_enc": torch.zeros(2 * d),
            "b_dec": torch.randn(d, generator=g) if b_dec else torch.zeros(d)}


def random_weights(d: int = D, d_sae: int = 3 * D, seed: int = 1) -> dict[str, torch.Tensor]:
    """Non-symmetric weights (our layout), to catch a transposed or misplaced tensor."""
    g = torch.Generator().manual_seed(seed)
    return {"W_enc": torch.randn(d, d_sae, generator=g) * 0.4, "W_dec": torch.randn(d_sae, d, generator=g) * 0.3,
            "b_enc": torch.randn(d_sae, generator=g) * 0.1, "b_dec": torch.randn(d, generator=g) * 0.2}


def data(n: int = 300, d: int = D, seed: int = 2) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * 2 + 0.5


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    x, x_hat = x.detach().double(), x_hat.detach().double()
    return float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


# -- SAELens ------------------------------------------------------------------------------------
def write_saelens_v6(folder: Path, arch: str, w: dict[str, torch.Tensor], *, hook: str | None = "blocks.1.hook_resid_post",
                     k: int | None = None, threshold: torch.Tensor | None = None, metadata: dict | None = None,
                     apply_b_dec_to_input: bool = True) -> Path:
    """What SAELens 6 `SAE.save_model` writes: cfg.json (metadata nested) + sae_weights.safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    d_in, d_sae = w["W_enc"].shape
    cfg = {"architecture": arch, "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": apply_b_dec_to_input, "normalize_activations": "none", "reshape_activations": "none",
           "metadata": {"sae_lens_version": "6.54.12", "sae_lens_training_version": "6.54.12", "model_name": "toy",
                        "hook_name": hook, "hook_head_index": None, "prepend_bos": True, "dataset_path": "x",
                        "context_size": 128, **(metadata or {})}}
    if arch == "topk":
        cfg.update(k=k, rescale_acts_by_decoder_norm=False)
    tensors = dict(w)
    if arch == "jumprelu":
        tensors["threshold"] = threshold if threshold is not None else torch.zeros(d_sae)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file({n: t.contiguous() for n, t in tensors.items()}, str(folder / "sae_weights.safetensors"))
    return folder


def write_saelens_flat(folder: Path, w: dict[str, torch.Tensor], *, hook: str = "blocks.1.hook_resid_post",
                       k: int | None = None) -> Path:
    """A pre-6.0 SAELens cfg.json: flat keys, hook_point + hook_point_layer, activation_fn_str."""
    folder.mkdir(parents=True, exist_ok=True)
    d_in, d_sae = w["W_enc"].shape
    cfg = {"model_name": "toy", "hook_point": hook, "hook_point_layer": int(hook.split(".")[1]), "hook_point_head_index": None,
           "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
           "normalize_activations": False, "activation_fn_str": "topk" if k else "relu", "context_size": 128,
           "sae_lens_training_version": "3.0.0", **({"activation_fn_kwargs": {"k": k}} if k else {})}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file({n: t.contiguous() for n, t in w.items()}, str(folder / "sae_weights.safetensors"))
    return folder


# -- EleutherAI sparsify ------------------------------------------------------------------------
def write_sparsify(folder: Path, w: dict[str, torch.Tensor], k: int) -> Path:
    """`SparseCoder.save_to_disk`: cfg.json (its SparseCoderConfig + d_in) and sae.safetensors with the
    encoder as an nn.Linear (encoder.weight [d_sae, d_in], encoder.bias) and W_dec [d_sae, d_in], b_dec."""
    folder.mkdir(parents=True, exist_ok=True)
    d_in, d_sae = w["W_enc"].shape
    cfg = {"activation": "topk", "expansion_factor": 32, "normalize_decoder": True, "num_latents": d_sae, "k": k,
           "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": d_in}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file({"encoder.weight": w["W_enc"].T.contiguous(), "encoder.bias": w["b_enc"], "W_dec": w["W_dec"].contiguous(),
               "b_dec": w["b_dec"]}, str(folder / "sae.safetensors"))
    return folder


def sparsify_forward(w: dict[str, torch.Tensor], x: torch.Tensor, k: int) -> torch.Tensor:
    """sparsify's math, from its own tensors: relu(linear(x - b_dec)) -> top k -> acts @ W_dec[idx] + b_dec."""
    enc_w, enc_b = w["W_enc"].T, w["b_enc"]  # as stored: encoder.weight [d_sae, d_in]
    pre = torch.relu(torch.nn.functional.linear(x - w["b_dec"], enc_w, enc_b))
    vals, idx = pre.topk(k, dim=-1)
    return torch.einsum("bk,bkd->bd", vals, w["W_dec"][idx]) + w["b_dec"]


# -- dictionary_learning ------------------------------------------------------------------------
def write_dictionary_learning(folder: Path, dict_class: str, w: dict[str, torch.Tensor], *, layer: int = 1, k: int | None = None,
                              threshold: float | torch.Tensor | None = None, submodule: str | None = None,
                              config: bool = True) -> Path:
    """`ae.pt` (the state dict torch.save writes at the end of training) + `config.json` {"trainer": ...}."""
    folder.mkdir(parents=True, exist_ok=True)
    d_in, d_sae = w["W_enc"].shape
    if dict_class == "AutoEncoder":
        state = {"bias": w["b_dec"], "encoder.weight": w["W_enc"].T.contiguous(), "encoder.bias": w["b_enc"],
                 "decoder.weight": w["W_dec"].T.contiguous()}
    elif dict_class in ("AutoEncoderTopK", "BatchTopKSAE"):
        state = {"k": torch.tensor(k, dtype=torch.int), "threshold": torch.tensor(-1.0 if threshold is None else float(threshold)),
                 "decoder.weight": w["W_dec"].T.contiguous(), "encoder.weight": w["W_enc"].T.contiguous(),
                 "encoder.bias": w["b_enc"], "b_dec": w["b_dec"]}
    elif dict_class == "JumpReluAutoEncoder":
        state = {"W_enc": w["W_enc"], "b_enc": w["b_enc"], "W_dec": w["W_dec"], "b_dec": w["b_dec"],
                 "threshold": threshold if isinstance(threshold, torch.Tensor) else torch.zeros(d_sae)}
    else:
        raise ValueError(dict_class)
    torch.save(state, folder / "ae.pt")
    if config:
        trainer = {"trainer_class": "TopKTrainer" if k else "StandardTrainer", "dict_class": dict_class, "activation_dim": d_in,
                   "dict_size": d_sae, "lr": 1e-4, "steps": 10, "seed": 0, "device": "cpu", "layer": layer, "lm_name": "toy/model",
                   "wandb_name": "x", "submodule_name": submodule if submodule is not None else f"resid_post_layer_{layer}",
                   **({"k": k} if k else {})}
        (folder / "config.json").write_text(json.dumps({"trainer": trainer, "buffer": {"d_submodule": d_in, "ctx_len": 128}}))
    return folder


# -- Gemma Scope --------------------------------------------------------------------------------
def write_gemma_scope(folder: Path, w: dict[str, torch.Tensor], threshold: torch.Tensor | None = None) -> Path:
    """`params.npz` with W_enc, W_dec, b_enc, b_dec, threshold (JumpReLU, no b_dec subtraction)."""
    folder.mkdir(parents=True, exist_ok=True)
    d_sae = w["W_enc"].shape[1]
    arrays = {n: t.numpy() for n, t in w.items()}
    arrays["threshold"] = (threshold if threshold is not None else torch.zeros(d_sae)).numpy()
    np.savez(folder / "params.npz", **arrays)
    return folder / "params.npz"
