from __future__ import annotations

import json
import shutil

import pytest
import torch
from dictionary_support import D_IN

from steerlang.dictionary.io import load_card, load_dictionary
from steerlang.dictionary.metrics import reconstruction_metrics
from steerlang.dictionary.train import TrainConfig, train_sae
from steerlang.errors import InputError

TINY = dict(d_sae=64, k=4, batch_size=64, steps=40, lr=3e-3, warmup=5, dead_window_tokens=640, log_every=5)


def _params(sae):
    return {k: v.clone() for k, v in sae.state_dict().items()}


@pytest.mark.parametrize("arch,dead", [("topk", "auxk"), ("topk", "resample"), ("relu", "none")])
def test_training_reduces_error(acts, arch, dead):
    cfg = TrainConfig(arch=arch, dead_method=dead, resample_every=10, l1_coeff=0.05, **TINY)
    res = train_sae(acts, cfg, progress=False)
    m = reconstruction_metrics(res.sae, acts)
    assert m["fvu"] < 0.7, m
    assert res.history[0]["fvu"] > res.history[-1]["fvu"]
    assert set(res.history[-1]) >= {"mse", "l0", "dead", "fvu"}
    if arch == "topk":
        assert m["l0"] <= 4
        assert torch.allclose(res.sae.W_dec.norm(dim=-1), torch.ones(64), atol=1e-5)  # unit-norm rows


def test_seeded_and_deterministic(acts):
    a = train_sae(acts, TrainConfig(**TINY, seed=1), progress=False).sae
    b = train_sae(acts, TrainConfig(**TINY, seed=1), progress=False).sae
    c = train_sae(acts, TrainConfig(**TINY, seed=2), progress=False).sae
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not torch.equal(a.W_dec, c.W_dec)


@pytest.mark.parametrize("dead", ["auxk", "resample"])
def test_resume_is_bit_identical(acts, tmp_path, dead):
    cfg = dict(TINY, steps=30, dead_method=dead, resample_every=10, whiten=dead == "auxk", checkpoint_every=10)
    full = train_sae(acts, TrainConfig(**cfg, out_dir=str(tmp_path / "a")), progress=False)
    # simulate a crash after step 20: keep only that checkpoint, no dictionary
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step_00000020", tmp_path / "b" / "checkpoints" / "step_00000020")
    resumed = train_sae(acts, TrainConfig(**cfg, out_dir=str(tmp_path / "b")), resume=True, progress=False)
    assert resumed.start_step == 20
    for k, v in full.sae.state_dict().items():
        assert torch.equal(v, resumed.sae.state_dict()[k]), k
    assert full.history == resumed.history
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == ["step_00000020", "step_00000030"]
    st = json.loads((tmp_path / "a" / "checkpoints" / "step_00000030" / "state.json").read_text())
    assert st["step"] == 30 and all(isinstance(i, int) for i in st["rng_state"])
    with pytest.raises(InputError, match=r"different settings \['lr'\]"):
        train_sae(acts, TrainConfig(**{**cfg, "lr": 1e-3}, out_dir=str(tmp_path / "b")), resume=True, progress=False)


def test_outputs_dictionary_and_card(acts, tmp_path):
    cfg = TrainConfig(**TINY, whiten=True, out_dir=str(tmp_path / "run"), model_name="toy", layer=0, modality="image")
    res = train_sae(acts, cfg, progress=True)
    back = load_dictionary(res.dictionary_dir, expected_d_in=D_IN)
    assert torch.allclose(back(acts), res.sae(acts), atol=1e-6)
    card = load_card(res.dictionary_dir)
    assert card["model"] == "toy" and card["layer"] == 0 and card["modality"] == "image"
    assert card["transform"]["kind"] == "zca" and card["transform"]["folded"]
    assert len(card["stats"]["firing_frequency"]) == 64 and card["stats"]["n_tokens"] == acts.shape[0]
    assert json.loads((tmp_path / "run" / "history.json").read_text()) == res.history


def test_bad_configs():
    with pytest.raises(InputError, match="JumpReLU is inference-only"):
        TrainConfig(arch="jumprelu")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="out_dir"):
        TrainConfig(checkpoint_every=5)
    with pytest.raises(InputError, match="tensor"):
        train_sae([[1.0]], TrainConfig(**TINY), progress=False)  # type: ignore[arg-type]
