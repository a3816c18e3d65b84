"""Other tools' SAE files, written by hand in each library's layout, read back: identity SAEs give
FVU ~ 0 on random data, random ones the library's own numbers; bad input is one line each."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from interop_support import (
    D,
    data,
    fvu,
    identity,
    random_weights,
    sparsify_forward,
    write_dictionary_learning,
    write_gemma_scope,
    write_saelens_flat,
    write_saelens_v6,
    write_sparsify,
)
from safetensors.torch import save_file

from steerlang.dictionary.io import load_dictionary
from steerlang.errors import DictionaryError


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# -- SAELens ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("arch", "ours"), [("standard", "relu"), ("topk", "topk"), ("jumprelu", "jumprelu")])
def test_saelens_v6_identity(tmp_path, arch, ours):
    x = data()
    folder = write_saelens_v6(tmp_path / arch, arch, identity(), k=D)
    sae = load_dictionary(folder, expected_d_in=D, n_layers=4)
    assert (sae.cfg.architecture, sae.cfg.layer, sae.cfg.hook_name, sae.cfg.modality) == (ours, 2, "blocks.1.hook_resid_post", None)
    assert fvu(x, sae(x)) < 1e-12


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
def test_written_by_saelens_itself(tmp_path, arch):
    """When sae-lens is installed: a file SAE.save_model wrote (hook blocks.1.hook_resid_post) reads as
    layer 2 with SAELens' numbers; and the hand-written layout above loads in SAELens alike."""
    sl = pytest.importorskip("sae_lens")
    from sae_lens.saes.sae import SAEMetadata

    cls, cfg_cls = {"standard": (sl.StandardSAE, sl.StandardSAEConfig), "topk": (sl.TopKSAE, sl.TopKSAEConfig),
                    "jumprelu": (sl.JumpReLUSAE, sl.JumpReLUSAEConfig)}[arch]
    theirs = cls(cfg_cls(d_in=D, d_sae=3 * D, **({"k": 5} if arch == "topk" else {}),
                         metadata=SAEMetadata(hook_name="blocks.1.hook_resid_post", model_name="gpt2")))
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_(torch.rand_like(p) * 0.2 if name == "threshold" else torch.randn_like(p) * 0.3)
    theirs.save_model(str(tmp_path / "sl"))
    ours, x = load_dictionary(tmp_path / "sl", n_layers=4), data()
    assert (ours.cfg.layer, ours.cfg.hook_name, ours.cfg.model_name) == (2, "blocks.1.hook_resid_post", "gpt2")
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-5)
    mine = write_saelens_v6(tmp_path / "mine", arch, identity(), k=D)
    with torch.no_grad():
        assert fvu(x, sl.SAE.load_from_disk(str(mine))(x)) < 1e-12


def test_saelens_v6_jumprelu_thresholds_and_no_b_dec_on_input(tmp_path):
    w, thr = random_weights(), torch.rand(3 * D) * 0.3
    folder = write_saelens_v6(tmp_path / "j", "jumprelu", w, threshold=thr, apply_b_dec_to_input=False)
    x = data()
    pre = x @ w["W_enc"] + w["b_enc"]
    expected = (pre.relu() * (pre > thr)) @ w["W_dec"] + w["b_dec"]
    assert torch.allclose(load_dictionary(folder)(x), expected, atol=1e-5)


@pytest.mark.parametrize("k", [None, D])
def test_saelens_flat_pre_6_layout(tmp_path, k):
    folder = write_saelens_flat(tmp_path / "old", identity(), hook="blocks.2.hook_resid_pre", k=k)
    sae = load_dictionary(folder)
    assert (sae.cfg.architecture, sae.cfg.k, sae.cfg.layer) == ("topk" if k else "relu", k, 2)
    x = data()
    assert fvu(x, sae(x)) < 1e-12


def test_saelens_hook_z_and_per_head_refused(tmp_path):
    folder = write_saelens_v6(tmp_path / "z", "standard", identity(), hook="blocks.1.attn.hook_z")
    with pytest.raises(DictionaryError, match="a sublayer of block 1"):
        load_dictionary(folder)
    folder = write_saelens_v6(tmp_path / "mid", "standard", identity(), hook="blocks.1.hook_resid_mid")
    with pytest.raises(DictionaryError, match=r"inside block 1 \(between its attention and its MLP\)") as e:
        load_dictionary(folder)
    assert str(folder) in _one_line(e)
    folder = write_saelens_v6(tmp_path / "head", "standard", identity(), metadata={"hook_head_index": 3})
    with pytest.raises(DictionaryError, match="one attention head"):
        load_dictionary(folder)


# -- EleutherAI sparsify ------------------------------------------------------------------------
def test_sparsify_identity_and_layout(tmp_path):
    x = data()
    sae = load_dictionary(write_sparsify(tmp_path / "layers.1", identity(), k=D), expected_d_in=D)
    assert (sae.cfg.architecture, sae.cfg.k, sae.cfg.layer, sae.cfg.hook_name) == ("topk", D, 2, "blocks.1.hook_resid_post")
    assert fvu(x, sae(x)) < 1e-12
    w = random_weights()
    sae = load_dictionary(write_sparsify(tmp_path / "run" / "layers.3", w, k=5))
    assert sae.cfg.layer == 4
    assert torch.allclose(sae(x), sparsify_forward(w, x, 5), atol=1e-5)
    # a model-level hookpoint name (sparsify on a VLM's base model) and a run config naming the model
    (tmp_path / "run" / "config.json").write_text(json.dumps({"model": "llava-hf/llava-1.5-7b-hf", "hookpoints": ["layers.3"]}))
    assert load_dictionary(tmp_path / "run" / "layers.3").cfg.model_name == "llava-hf/llava-1.5-7b-hf"
    assert load_dictionary(write_sparsify(tmp_path / "language_model.layers.0", w, k=5)).cfg.layer == 1


def test_sparsify_refusals(tmp_path):
    w = random_weights()
    with pytest.raises(DictionaryError, match="before the image features are merged"):
        load_dictionary(write_sparsify(tmp_path / "embed_tokens", w, k=5))
    with pytest.raises(DictionaryError, match="a sublayer of decoder block 2"):
        load_dictionary(write_sparsify(tmp_path / "layers.2.mlp", w, k=5))
    folder = write_sparsify(tmp_path / "layers.0", w, k=5)
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "transcode": True}))
    with pytest.raises(DictionaryError, match="transcoder"):
        load_dictionary(folder)
    unnamed = write_sparsify(tmp_path / "mysae", w, k=5)  # not named after its hookpoint
    assert load_dictionary(unnamed).cfg.layer is None and load_dictionary(unnamed, layer=3).cfg.layer == 3


# -- dictionary_learning ------------------------------------------------------------------------
@pytest.mark.parametrize(("cls", "arch"), [("AutoEncoder", "relu"), ("AutoEncoderTopK", "topk"), ("BatchTopKSAE", "jumprelu"),
                                           ("JumpReluAutoEncoder", "jumprelu")])
def test_dictionary_learning_identity(tmp_path, cls, arch):
    x = data()
    w = identity(b_dec=cls != "JumpReluAutoEncoder")  # its apply_b_dec_to_input is False
    folder = write_dictionary_learning(tmp_path / cls, cls, w, layer=1, k=D, threshold=0.0 if cls == "BatchTopKSAE" else None)
    sae = load_dictionary(folder, expected_d_in=D, n_layers=4)
    assert (sae.cfg.architecture, sae.cfg.layer, sae.cfg.hook_name) == (arch, 2, "blocks.1.hook_resid_post")
    assert fvu(x, sae(x)) < 1e-12


def test_dictionary_learning_math(tmp_path):
    """Random weights against dictionary_learning's own formulas (nn.Linear encoder and decoder)."""
    w, x = random_weights(), data()
    enc, dec = torch.nn.Linear(D, 3 * D), torch.nn.Linear(3 * D, D, bias=False)
    with torch.no_grad():
        enc.weight.copy_(w["W_enc"].T)
        enc.bias.copy_(w["b_enc"])
        dec.weight.copy_(w["W_dec"].T)
    with torch.no_grad():
        # AutoEncoder: relu(encoder(x - bias)); decoder(f) + bias
        got = load_dictionary(write_dictionary_learning(tmp_path / "ae", "AutoEncoder", w))(x)
        assert torch.allclose(got, dec(torch.relu(enc(x - w["b_dec"]))) + w["b_dec"], atol=1e-5)
        # AutoEncoderTopK: relu(encoder(x - b_dec)) -> top k (k from the state dict; no config.json)
        post = torch.relu(enc(x - w["b_dec"]))
        v, i = post.topk(5, dim=-1)
        expected = dec(torch.zeros_like(post).scatter(-1, i, v)) + w["b_dec"]
        got = load_dictionary(write_dictionary_learning(tmp_path / "topk", "AutoEncoderTopK", w, k=5, config=False))(x)
        assert torch.allclose(got, expected, atol=1e-5)
        # BatchTopKSAE at inference: its global threshold
        got = load_dictionary(write_dictionary_learning(tmp_path / "b", "BatchTopKSAE", w, k=5, threshold=0.2))(x)
        assert torch.allclose(got, dec(post * (post > 0.2)) + w["b_dec"], atol=1e-5)


def test_dictionary_learning_submodules(tmp_path):
    w = identity()
    assert load_dictionary(write_dictionary_learning(tmp_path / "pre", "AutoEncoder", w, layer=2,
                                                     submodule="resid_pre_layer_2")).cfg.layer == 2
    with pytest.raises(DictionaryError, match="not the residual stream"):
        load_dictionary(write_dictionary_learning(tmp_path / "mlp", "AutoEncoder", w, layer=2, submodule="mlp_out_layer_2"))


def test_dictionary_learning_loads_only_with_weights_only(tmp_path, monkeypatch):
    folder = write_dictionary_learning(tmp_path / "ae", "AutoEncoder", identity())
    real = torch.load
    calls = []

    def spy(*a, **kw):
        calls.append(kw.get("weights_only"))
        return real(*a, **kw)

    monkeypatch.setattr(torch, "load", spy)
    load_dictionary(folder)
    assert calls and all(c is True for c in calls)


class Payload:
    """Something a pickle would rebuild (and could run code while doing so)."""

    def __reduce__(self):
        return (print, ("this would have run",))


def test_unsafe_files_refused(tmp_path):
    # an ae.pt holding more than tensors: torch.load(weights_only=True) refuses it
    folder = write_dictionary_learning(tmp_path / "ae", "AutoEncoder", identity())
    torch.save({**torch.load(folder / "ae.pt", weights_only=True), "extra": Payload()}, folder / "ae.pt")
    with pytest.raises(DictionaryError, match=r"refused: it holds pickled Python objects .*weights_only=True") as e:
        load_dictionary(folder)
    _one_line(e)
    # a plain pickle, alone in a folder or named directly
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "sae.pkl").write_bytes(pickle.dumps({"W_enc": [1.0]}))
    for path in (tmp_path / "p", tmp_path / "p" / "sae.pkl"):
        with pytest.raises(DictionaryError, match=r"sae.pkl: refused: a pickle file can run code .* SAELens folder") as e:
            load_dictionary(path)
        _one_line(e)
    # an npz with object arrays (np.load(allow_pickle=False) would have to unpickle them)
    (tmp_path / "g").mkdir()
    np.savez(tmp_path / "g" / "params.npz", W_enc=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DictionaryError, match="refused: array 'W_enc' holds pickled Python objects"):
        load_dictionary(tmp_path / "g")


# -- Gemma Scope --------------------------------------------------------------------------------
def test_gemma_scope_identity_and_folder_layer(tmp_path):
    x = data()
    f = write_gemma_scope(tmp_path / "gemma-scope-2b-pt-res" / "layer_1" / "width_16k" / "average_l0_71", identity(b_dec=False))
    sae = load_dictionary(f.parent, expected_d_in=D, n_layers=4)
    assert (sae.cfg.architecture, sae.cfg.layer, sae.cfg.hook_name) == ("jumprelu", 2, "blocks.1.hook_resid_post")
    assert not sae.cfg.apply_b_dec_to_input and sae.cfg.metadata["average_l0"] == 71
    assert fvu(x, sae(x)) < 1e-12
    w, thr = random_weights(), torch.rand(3 * D) * 0.3
    sae = load_dictionary(write_gemma_scope(tmp_path / "elsewhere", w, thr))
    assert sae.cfg.layer is None and load_dictionary(tmp_path / "elsewhere", layer=5).cfg.layer == 5
    pre = x @ w["W_enc"] + w["b_enc"]  # Gemma Scope: no b_dec subtraction
    assert torch.allclose(sae(x), (pre.relu() * (pre > thr)) @ w["W_dec"] + w["b_dec"], atol=1e-5)
    with pytest.raises(DictionaryError, match="reads layer 2 .* not layer 5 as given"):
        load_dictionary(f, layer=5)
    # a Hugging Face cache: snapshots/<rev>/layer_3/.../params.npz is a link to blobs/<sha>
    blob = tmp_path / "hub" / "blobs" / "0123abcd"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(f.read_bytes())
    link = tmp_path / "hub" / "snapshots" / "rev" / "layer_3" / "width_16k" / "average_l0_9" / "params.npz"
    link.parent.mkdir(parents=True)
    link.symlink_to(blob)
    assert load_dictionary(link.parent).cfg.layer == 4
    with pytest.raises(DictionaryError, match="att SAE .* not a residual-stream one"):
        load_dictionary(write_gemma_scope(tmp_path / "gemma-scope-2b-pt-att" / "layer_3" / "width_16k" / "canonical", w))


# -- bad input ------------------------------------------------------------------------------------
def test_unknown_format_says_what_was_expected(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "weights.h5").write_bytes(b"\x00")
    with pytest.raises(DictionaryError) as e:
        load_dictionary(tmp_path / "x")
    msg = _one_line(e)
    for expected in ("cfg.json + sae_weights.safetensors (SAELens)", "cfg.json + sae.safetensors (EleutherAI sparsify)",
                     "ae.pt + config.json (dictionary_learning)", "params.npz (Gemma Scope)", "found weights.h5"):
        assert expected in msg


def test_width_of_another_model(tmp_path):
    folder = write_saelens_v6(tmp_path / "w", "standard", identity())
    with pytest.raises(DictionaryError, match=r"d_in=16 does not match the model's hidden size 128") as e:
        load_dictionary(folder, expected_d_in=128)
    _one_line(e)


def test_bf16_weights_read_as_float32(tmp_path):
    folder = write_saelens_v6(tmp_path / "b", "standard", identity())
    w = {k: v.to(torch.bfloat16) for k, v in identity().items()}
    save_file(w, str(folder / "sae_weights.safetensors"))
    sae = load_dictionary(folder)
    assert sae.W_enc.dtype == torch.float32
