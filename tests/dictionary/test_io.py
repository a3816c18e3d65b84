from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from dictionary_support import D_IN, D_SAE, random_sae
from safetensors.torch import load_file, save_file

from steerlang.dictionary import io
from steerlang.dictionary.io import compute_card_stats, load_card, load_dictionary, save_dictionary
from steerlang.errors import DictionaryError


def _same(a, b, x):
    assert type(a) is type(b) and a.cfg.architecture == b.cfg.architecture
    for name, p in a.state_dict().items():
        assert torch.equal(p, b.state_dict()[name]), name
    assert torch.equal(a(x), b(x))


def test_round_trip(any_sae, acts, tmp_path):
    # the layer number wins: the hook written is its TransformerLens name, whatever name was set
    any_sae.cfg.model_name, any_sae.cfg.hook_name, any_sae.cfg.layer, any_sae.cfg.modality = "toy", "h.3", 3, "image"
    out = save_dictionary(any_sae, tmp_path / "d", {"note": "hi"})
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "cfg.json", "sae_weights.safetensors"]
    back = load_dictionary(out, expected_d_in=D_IN)
    _same(any_sae, back, acts)
    assert (back.cfg.layer, back.cfg.modality, back.cfg.model_name, back.cfg.hook_name) == (3, "image", "toy",
                                                                                           "blocks.3.hook_resid_pre")
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == "blocks.3.hook_resid_pre" and cfg["normalize_activations"] == "none"
    assert cfg["metadata"]["steerlang_layer"] == 3 and cfg["metadata"]["hf_module"] == "model.language_model.layers.3"
    assert cfg["architecture"] == {"topk": "topk", "relu": "standard", "jumprelu": "jumprelu"}[any_sae.cfg.architecture]
    card = load_card(out)
    assert card["note"] == "hi" and card["layer"] == 3 and card["model"] == "toy"
    # overwriting an existing dictionary folder is allowed (and atomic)
    save_dictionary(any_sae, out)
    assert "note" not in load_card(out) and load_dictionary(out).cfg.layer == 3


def test_save_refuses_foreign_folder(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    with pytest.raises(DictionaryError, match="not a dictionary folder"):
        save_dictionary(random_sae("relu"), tmp_path / "d")
    assert (tmp_path / "d" / "notes.txt").exists()


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(io, "save_file", boom)
    with pytest.raises(OSError):
        save_dictionary(random_sae("relu"), tmp_path / "d")
    assert list(tmp_path.iterdir()) == []


def test_width_mismatch(tmp_path):
    out = save_dictionary(random_sae("topk"), tmp_path / "d")
    with pytest.raises(DictionaryError, match=r"d_in=16 does not match the model's hidden size 32"):
        load_dictionary(out, expected_d_in=32)


def test_truncated_safetensors(tmp_path):
    out = save_dictionary(random_sae("topk"), tmp_path / "d")
    f = out / "sae_weights.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(DictionaryError, match="truncated or not a safetensors file") as e:
        load_dictionary(out)
    assert "\n" not in str(e.value) and "sae_weights.safetensors" in str(e.value)


def test_garbage_safetensors(tmp_path):
    out = save_dictionary(random_sae("relu"), tmp_path / "d")
    (out / "sae_weights.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(DictionaryError, match="truncated"):
        load_dictionary(out)


def test_nan_weights(tmp_path):
    out = save_dictionary(random_sae("relu"), tmp_path / "d")
    w = load_file(str(out / "sae_weights.safetensors"))
    w["W_dec"][3, 2] = float("nan")
    w["b_enc"][0] = float("inf")
    save_file(w, str(out / "sae_weights.safetensors"))
    with pytest.raises(DictionaryError, match=r"has 1 NaN/Inf values"):
        load_dictionary(out)


def test_shape_and_dtype_mismatch(tmp_path):
    out = save_dictionary(random_sae("relu"), tmp_path / "d")
    w = load_file(str(out / "sae_weights.safetensors"))
    save_file({**w, "W_dec": w["W_dec"].T.contiguous()}, str(out / "sae_weights.safetensors"))
    with pytest.raises(DictionaryError, match=r"W_dec has shape \[16, 64\], the config implies \[64, 16\]"):
        load_dictionary(out)
    save_file({**w, "b_dec": torch.zeros(D_IN, dtype=torch.int32)}, str(out / "sae_weights.safetensors"))
    with pytest.raises(DictionaryError, match="dtype torch.int32"):
        load_dictionary(out)
    save_file({k: v for k, v in w.items() if k != "b_enc"}, str(out / "sae_weights.safetensors"))
    with pytest.raises(DictionaryError, match=r"missing tensors \['b_enc'\]"):
        load_dictionary(out)


@pytest.mark.parametrize("drop", ["d_in", "d_sae", "k"])
def test_missing_cfg_keys(tmp_path, drop):
    out = save_dictionary(random_sae("topk"), tmp_path / "d")
    cfg = json.loads((out / "cfg.json").read_text())
    del cfg[drop]
    (out / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(DictionaryError, match=rf"missing keys \['{drop}'\]"):
        load_dictionary(out)


def test_bad_json_and_missing_files(tmp_path):
    out = save_dictionary(random_sae("relu"), tmp_path / "d")
    (out / "cfg.json").write_text("{not json")
    with pytest.raises(DictionaryError, match="not valid JSON"):
        load_dictionary(out)
    with pytest.raises(DictionaryError, match="no such dictionary"):
        load_dictionary(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DictionaryError, match="not a dictionary"):
        load_dictionary(tmp_path / "empty")
    out2 = save_dictionary(random_sae("relu"), tmp_path / "e")
    (out2 / "sae_weights.safetensors").unlink()
    with pytest.raises(DictionaryError, match="missing"):
        load_dictionary(out2)


def test_unsupported_normalisation(tmp_path):
    out = save_dictionary(random_sae("relu"), tmp_path / "d")
    cfg = json.loads((out / "cfg.json").read_text())
    cfg["normalize_activations"] = "expected_average_only_in"
    (out / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(DictionaryError, match="fold the normalisation"):
        load_dictionary(out)


def test_saelens5_cfg_layout(tmp_path, acts):
    """Pre-6.0 SAELens: flat keys, hook_point, activation_fn_kwargs.k, no architecture key."""
    sae = random_sae("topk", k=3)
    out = save_dictionary(sae, tmp_path / "d")
    old = {"d_in": D_IN, "d_sae": D_SAE, "hook_point": "blocks.2.hook_resid_post", "model_name": "gpt2",
           "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 3}, "apply_b_dec_to_input": True,
           "normalize_activations": False, "dtype": "float32"}
    (out / "cfg.json").write_text(json.dumps(old))
    back = load_dictionary(out)
    assert back.cfg.architecture == "topk" and back.cfg.k == 3 and back.cfg.hook_name == "blocks.2.hook_resid_post"
    assert torch.equal(back(acts), sae(acts))


def test_topk_rescale_by_decoder_norm_folded(tmp_path, acts):
    sae = random_sae("topk", k=3)
    out = save_dictionary(sae, tmp_path / "d")
    cfg = json.loads((out / "cfg.json").read_text())
    cfg["rescale_acts_by_decoder_norm"] = True
    (out / "cfg.json").write_text(json.dumps(cfg))
    back = load_dictionary(out)
    norms = sae.W_dec.norm(dim=-1)
    pre = sae.pre_acts(acts) * norms
    v, i = pre.topk(3, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, i, v.relu())
    expected = (z / norms) @ sae.W_dec + sae.b_dec  # SAELens: acts / ||W_dec|| before the decode
    assert torch.allclose(back(acts), expected, atol=1e-5)


def test_gemma_scope_npz(tmp_path, acts):
    ref = random_sae("jumprelu", apply_b_dec_to_input=False)
    f = tmp_path / "params.npz"
    np.savez(f, **{k: v.numpy() for k, v in ref.state_dict().items()})
    for path in (f, tmp_path):
        sae = load_dictionary(path, expected_d_in=D_IN)
        assert sae.cfg.architecture == "jumprelu" and not sae.cfg.apply_b_dec_to_input
        pre = acts @ ref.W_enc + ref.b_enc  # Gemma Scope: no b_dec subtraction
        assert torch.allclose(sae(acts), (pre.relu() * (pre > ref.threshold)) @ ref.W_dec + ref.b_dec, atol=1e-6)
    f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(DictionaryError, match="truncated or not a Gemma Scope"):
        load_dictionary(f)
    np.savez(f, W_enc=np.zeros((4, 8), np.float32))
    with pytest.raises(DictionaryError, match="missing tensors"):
        load_dictionary(f)


def test_card_stats(acts):
    sae = random_sae("relu")
    st = compute_card_stats(sae, acts)
    z = sae.encode(acts)
    freq = (z > 0).float().mean(0)
    assert np.allclose(st["firing_frequency"], freq.numpy(), atol=1e-6)
    j = int(freq.argmax())
    vals = z[:, j][z[:, j] > 0].double()
    assert st["mean_activation"][j] == pytest.approx(float(vals.mean()), rel=1e-5)
    assert st["p90_activation"][j] == pytest.approx(float(torch.quantile(vals, 0.9)), rel=1e-5)
    assert st["dead_fraction"] == pytest.approx(float((freq == 0).float().mean()))
    assert st["l0"] == pytest.approx(float((z > 0).sum(-1).float().mean()))
    assert len(st["decoder_norm"]) == D_SAE


def test_path_is_a_cfg_file(tmp_path):
    out = save_dictionary(random_sae("relu"), tmp_path / "d")
    assert load_dictionary(Path(out) / "cfg.json").cfg.d_sae == D_SAE
