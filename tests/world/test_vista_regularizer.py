"""VISTA's regulariser for `steer world finetune`: a text SAE's FVU at image positions, projector only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from steerlang.cli import app
from steerlang.dictionary.sae import SAEConfig, TopKSAE
from steerlang.errors import InputError
from steerlang.world.corpus import export_toy_corpus
from steerlang.world.scenes import make_scene
from steerlang.world.train import (
    Example,
    FinetuneConfig,
    ImageStates,
    collate,
    finetune_model,
    fresh_toy_bundle,
    load_regularizer_sae,
    projector_parameters,
    read_caption_corpus,
    sae_image_fvu,
)

runner = CliRunner()


def tiny_sae(layer: int, d_in: int = 128, d_sae: int = 16, seed: int = 0) -> TopKSAE:
    g = torch.Generator().manual_seed(seed)
    sae = TopKSAE(SAEConfig("topk", d_in, d_sae, k=4, layer=layer, modality="text"))
    with torch.no_grad():
        for p in (sae.W_enc, sae.W_dec, sae.b_enc, sae.b_dec):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return sae


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):  # noqa: ANN001, ANN201
    out = tmp_path_factory.mktemp("vista") / "corpus"
    export_toy_corpus(out, seed=8, count=6)
    return out


def test_the_fvu_is_the_definition_computed_by_hand() -> None:
    sae = tiny_sae(1, d_in=5, d_sae=7)
    x = torch.randn(9, 5, generator=torch.Generator().manual_seed(1))
    xn, w_enc, b_enc, w_dec, b_dec = (t.detach().numpy().astype(np.float64) for t in (x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec))
    pre = (xn - b_dec) @ w_enc + b_enc
    z = np.zeros_like(pre)
    for i, row in enumerate(pre):  # TopK (k = 4), then ReLU
        top = np.argsort(-row)[:4]
        z[i, top] = np.maximum(row[top], 0)
    x_hat = z @ w_dec + b_dec
    by_hand = ((xn - x_hat) ** 2).sum() / ((xn - xn.mean(0)) ** 2).sum()
    with torch.no_grad():
        assert float(sae_image_fvu(sae, x)) == pytest.approx(by_hand, rel=1e-5)


def test_image_states_are_the_layer_input_at_image_positions() -> None:
    bundle = fresh_toy_bundle(0)
    scenes = [make_scene(8, i) for i in range(2)]
    batch = collate(bundle, [Example(s, "what is in the picture ?", s.caption) for s in scenes])
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with ImageStates(bundle, 2, batch["input_ids"]) as states, torch.no_grad():
        out = bundle.model(**inputs, output_hidden_states=True)
    img = batch["input_ids"] == bundle.image_token_id
    assert states.value.shape == (2 * 81, 128)
    assert torch.equal(states.value, out.hidden_states[2][img])  # HF hidden_states[L] = input of block L (L < n)


def test_only_the_projector_learns_and_the_loss_is_lm_plus_w_fvu(corpus_dir) -> None:  # noqa: ANN001
    bundle = fresh_toy_bundle(0)
    corpus = read_caption_corpus(corpus_dir, bundle)
    sae = tiny_sae(2)
    sae_start = {k: v.clone() for k, v in sae.state_dict().items()}
    start = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    losses: list[float] = []
    log: list[dict] = []
    cfg = FinetuneConfig(steps=2, batch_size=4, warmup=1, threads=1, projector_only=True, sae_weight=0.5)
    finetune_model(bundle, corpus, cfg, sae=sae, on_step=lambda s, loss: losses.append(loss), log=log)
    proj = {n for n, _ in projector_parameters(bundle.model)}
    assert proj == {f"model.multi_modal_projector.linear_{i}.{p}" for i in (1, 2) for p in ("weight", "bias")}
    for name, p in bundle.model.named_parameters():
        if name in proj:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
            assert not torch.equal(p.detach(), start[name]), name
        else:
            assert p.grad is None and torch.equal(p.detach(), start[name]), name
    assert all(torch.equal(sae.state_dict()[k], v) for k, v in sae_start.items())
    assert [r["step"] for r in log] == [0, 1] and all(r["sae_fvu"] > 0 for r in log)
    for total, r in zip(losses, log, strict=True):
        assert total == pytest.approx(r["lm"] + 0.5 * r["sae_fvu"], rel=1e-5)


def test_the_regulariser_moves_the_image_states_towards_the_sae(corpus_dir) -> None:  # noqa: ANN001
    def fvu_after(weight: float) -> float:
        bundle = fresh_toy_bundle(0)
        corpus = read_caption_corpus(corpus_dir, bundle)
        sae = tiny_sae(2)
        log: list[dict] = []
        cfg = FinetuneConfig(steps=6, batch_size=6, warmup=1, lr=1e-2, threads=1, projector_only=True, sae_weight=weight)
        finetune_model(bundle, corpus, cfg, sae=sae, log=log)
        return log[-1]["sae_fvu"]

    assert fvu_after(10.0) < fvu_after(0.0)


def test_the_regularising_sae_is_the_text_sae_of_the_middle_layer() -> None:
    sae = load_regularizer_sae("toyworld", None, n_layers=4, hidden_size=128)
    assert sae.cfg.layer == 2 and sae.cfg.modality == "text" and sae.cfg.d_sae == 256
    assert load_regularizer_sae("toyworld", 0, n_layers=4, hidden_size=128).cfg.layer == 0
    with pytest.raises(InputError, match="hidden size 64"):
        load_regularizer_sae("toyworld", 2, n_layers=4, hidden_size=64)
    with pytest.raises(InputError, match="out of range"):
        load_regularizer_sae("toyworld", 7, n_layers=4, hidden_size=128)


def test_cli_projector_only_with_the_regulariser(corpus_dir, tmp_path) -> None:  # noqa: ANN001
    out = tmp_path / "m"
    res = runner.invoke(app, ["world", "finetune", "--from", "toyworld", "--data", str(corpus_dir), "--out", str(out),
                              "--steps", "2", "--batch-size", "4", "--warmup", "1", "--threads", "1", "--eval-count", "0",
                              "--projector-only", "--sae-regularize", "toyworld", "--sae-weight", "0.1"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "train_report.json").read_text())
    assert report["finetune"]["projector_only"] is True and report["finetune"]["sae_weight"] == 0.1
    reg = report["sae_regularizer"]
    assert reg["layer"] == 2 and reg["weight"] == 0.1 and reg["dictionary"] == "toyworld" and reg["image_fvu_first_10_steps"] > 0
    from steerlang.world.model import load_model

    shipped, tuned = load_model("toyworld").model.state_dict(), load_model(out).model.state_dict()
    changed = {k for k in shipped if not torch.equal(shipped[k], tuned[k])}
    assert changed and all("multi_modal_projector" in k for k in changed)
