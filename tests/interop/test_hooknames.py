"""One mapping between hook names and steerlang's layers (layer L = the stream entering block L),
tested both ways: every scheme parses to the right layer, and write -> read keeps every layer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from steerlang.dictionary.hooknames import hf_module_for_layer, parse_hook_name, tl_hook_name
from steerlang.dictionary.io import load_dictionary, save_dictionary
from steerlang.dictionary.sae import SAEConfig, make_sae
from steerlang.errors import DictionaryError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("name", "layer"), [
    ("blocks.0.hook_resid_pre", 0), ("blocks.3.hook_resid_pre", 3), ("blocks.3.hook_resid_post", 4),
    ("blocks.1.hook_resid_post", 2),
    ("model.language_model.layers.3", 4),  # HF module name = its output (LLaVA, Gemma 3, Qwen2-VL, ... in transformers 5)
    ("model.layers.3", 4),  # Chameleon / text-only causal LMs
    ("model.text_model.layers.3", 4),  # Idefics3 / SmolVLM
    ("language_model.model.layers.3", 4),  # Llama 4, older LLaVA
    ("model.model.layers.3", 4),
    ("layers.3", 4), ("language_model.layers.3", 4),  # sparsify hookpoints (relative to the base model)
    ("model.language_model.layers.3.input", 3), ("model.language_model.layers.3.output", 4),  # steerlang <= 0.1
    ("resid_post_layer_3", 4), ("resid_pre_layer_3", 3),  # dictionary_learning submodule names
    ("transformer.h.3", 4),
])
def test_each_scheme_parses_to_its_layer(name, layer):
    assert parse_hook_name(name).layer == layer


@pytest.mark.parametrize(("name", "why"), [
    ("blocks.3.hook_resid_mid", "inside block 3"),
    ("blocks.3.hook_mlp_out", "a sublayer of block 3"),
    ("blocks.3.attn.hook_z", "a sublayer of block 3"),
    ("blocks.3.hook_attn_out", "a sublayer of block 3"),
    ("model.language_model.layers.3.mlp", "a sublayer of decoder block 3"),
    ("model.language_model.layers.3.self_attn.o_proj", "a sublayer of decoder block 3"),
    ("model.language_model.layers.3.post_attention_layernorm", "a sublayer of decoder block 3"),
    ("model.vision_tower.vision_model.encoder.layers.3", "vision encoder"),
    ("model.multi_modal_projector.layers.0", "vision encoder or projector"),
    ("hook_embed", "before the image features are merged"),
    ("embed_tokens", "before the image features are merged"),
    ("model.language_model.embed_tokens", "before the image features are merged"),
    ("model.language_model.norm", "final norm"),
    ("ln_final.hook_normalized", "final norm"),
    ("something_else", "no naming scheme"),
])
def test_names_that_are_not_a_residual_stream_between_blocks(name, why):
    with pytest.raises(DictionaryError, match=why) as e:
        parse_hook_name(name)
    assert name in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("n", [1, 4, 26, 42])
def test_write_names_read_back_every_layer(n):
    for layer in range(n + 1):
        tl = tl_hook_name(layer, n)
        assert tl == (f"blocks.{layer}.hook_resid_pre" if layer < n else f"blocks.{n - 1}.hook_resid_post")
        assert parse_hook_name(tl).layer == layer
        module, io = hf_module_for_layer(layer, n, "model.language_model.layers")
        assert module == f"model.language_model.layers.{min(layer, n - 1)}" and io == ("input" if layer < n else "output")
        # a forward hook on the module's output reads the bare module name; a pre-hook its input
        assert parse_hook_name(module if io == "output" else f"{module}.input").layer == layer
    with pytest.raises(DictionaryError, match="out of range"):
        tl_hook_name(n + 1, n)


def _sae(layer: int | None, hook: str = "", d: int = 8):
    sae = make_sae(SAEConfig("relu", d_in=d, d_sae=2 * d, layer=layer, hook_name=hook, model_name="toy"))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d, 2 * d))
        sae.W_dec.copy_(torch.randn(2 * d, d))
    return sae


@pytest.mark.parametrize("n", [2, 4])
def test_save_then_load_gives_the_same_layer(tmp_path, n):
    for layer in range(n + 1):
        out = save_dictionary(_sae(layer), tmp_path / f"l{layer}", n_layers=n)
        meta = json.loads((out / "cfg.json").read_text())["metadata"]
        assert meta["hook_name"] == tl_hook_name(layer, n)
        assert (meta["steerlang_layer"], meta["layer"], meta["n_layers"]) == (layer, layer, n)
        assert (meta["hf_module"], meta["hf_module_io"]) == hf_module_for_layer(layer, n)
        back = load_dictionary(out, n_layers=n)
        assert back.cfg.layer == layer and back.cfg.hook_name == meta["hook_name"]
        # the name alone (as another tool would write it, without steerlang's layer) gives the same layer
        del meta["steerlang_layer"], meta["layer"], meta["written_by"]
        cfg = json.loads((out / "cfg.json").read_text())
        (out / "cfg.json").write_text(json.dumps({**cfg, "metadata": meta}))
        assert load_dictionary(out).cfg.layer == layer


def test_old_names_given_in_memory_keep_their_form_without_n_layers(tmp_path):
    """What `steer dict train` sets today (the old names): the last layer keeps the output form."""
    for layer, hook, written in [(2, "model.language_model.layers.2.input", "blocks.2.hook_resid_pre"),
                                 (4, "model.language_model.layers.3.output", "blocks.3.hook_resid_post")]:
        out = save_dictionary(_sae(layer, hook), tmp_path / f"l{layer}")
        assert json.loads((out / "cfg.json").read_text())["metadata"]["hook_name"] == written
        assert load_dictionary(out).cfg.layer == layer
    out = save_dictionary(_sae(None, "blocks.7.attn.hook_z"), tmp_path / "nolayer")  # no layer: written as given
    assert json.loads((out / "cfg.json").read_text())["metadata"]["hook_name"] == "blocks.7.attn.hook_z"


def test_shipped_files_with_the_old_names_keep_loading(tmp_path):
    """dictionaries/toyworld/saes/*/cfg.json say model.language_model.layers.L.input (L < 4) and
    ...layers.3.output (layer 4); they load as before, and are not rewritten."""
    for layer in range(5):
        for modality in ("image", "text"):
            folder = ROOT / "dictionaries" / "toyworld" / "saes" / f"layer{layer}-{modality}"
            before = (folder / "cfg.json").read_bytes()
            sae = load_dictionary(folder, n_layers=4, expected_d_in=128)
            assert (sae.cfg.layer, sae.cfg.modality) == (layer, modality)
            assert (folder / "cfg.json").read_bytes() == before
    # a copy re-saved by this steerlang says blocks.3.hook_resid_post for layer 4, and still loads as layer 4
    copy = tmp_path / "layer4"
    shutil.copytree(ROOT / "dictionaries" / "toyworld" / "saes" / "layer4-image", copy)
    resaved = save_dictionary(load_dictionary(copy), tmp_path / "resaved")
    assert json.loads((resaved / "cfg.json").read_text())["metadata"]["hook_name"] == "blocks.3.hook_resid_post"
    assert load_dictionary(resaved).cfg.layer == 4


def test_hook_and_layer_that_disagree_are_refused(tmp_path):
    out = save_dictionary(_sae(2), tmp_path / "d", n_layers=4)
    cfg = json.loads((out / "cfg.json").read_text())
    cfg["metadata"]["hook_name"] = "blocks.2.hook_resid_post"  # layer 3
    (out / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(DictionaryError, match="reads layer 3 .* but metadata.layer says 2"):
        load_dictionary(out)


def test_hook_outside_the_model(tmp_path):
    out = save_dictionary(_sae(None, "blocks.30.hook_resid_post"), tmp_path / "d")
    assert load_dictionary(out).cfg.layer == 31
    with pytest.raises(DictionaryError, match=r"hook 'blocks.30.hook_resid_post' reads layer 31, but the model has layers 0 "
                                              r"\(LM input\) to 4 \(the output of block 3\)") as e:
        load_dictionary(out, n_layers=4)
    assert str(out) in str(e.value) and "\n" not in str(e.value)
