"""SAE-V scores as the SAE-V paper defines them: cross-modal weight per latent, co-occurring set, L0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from steerlang.audit import audit
from steerlang.audit.forward import DEFAULT_PROMPT, hidden_states, pair_batch
from steerlang.audit.readers import TopTokens
from steerlang.errors import InputError


def test_running_top_tokens_give_the_cross_modal_weight() -> None:
    from steerlang.dictionary.crossmodal import cross_modal_weight

    g = torch.Generator().manual_seed(0)
    n_img, n_txt, f, d = 300, 120, 40, 16
    z_img = torch.relu(torch.randn(n_img, f, generator=g) - 0.5)
    z_txt = torch.relu(torch.randn(n_txt, f, generator=g) - 0.5) * 1.3
    h_img, h_txt = torch.randn(n_img, d, generator=g), torch.randn(n_txt, d, generator=g)
    want = cross_modal_weight(z_img, z_txt, h_img, h_txt)
    top = TopTokens(f, d, delta=0.0)
    for i in range(5):  # batches mixing both modalities, text rows first
        img, txt = slice(60 * i, 60 * i + 60), slice(24 * i, 24 * i + 24)
        top.add(torch.cat([z_txt[txt], z_img[img]]), torch.cat([h_txt[txt], h_img[img]]),
                torch.cat([torch.ones(24, dtype=torch.bool), torch.zeros(60, dtype=torch.bool)]))
    got = top.weights()
    assert (want != 0).sum() > 5
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_a_latent_needs_five_tokens_of_each_modality() -> None:
    top = TopTokens(2, 4, delta=1.0)
    z = torch.tensor([[5.0, 5.0]] * 6 + [[4.0, 0.5]] * 6)  # latent 1 never passes delta on the text rows
    h = torch.eye(4)[torch.arange(12) % 4]
    is_text = torch.tensor([False] * 6 + [True] * 6)
    top.add(z, h, is_text)
    w = top.weights()
    assert w[1] == 0.0 and w[0] != 0.0
    hi = torch.nn.functional.normalize(h, dim=1)
    assert w[0] == pytest.approx(float((hi[6:11] @ hi[:5].T).mean()))


def _shared_sae(tmp_path: Path, layer: int) -> Path:
    from steerlang.dictionary.io import save_dictionary
    from steerlang.dictionary.sae import SAEConfig, make_sae

    g = torch.Generator().manual_seed(3)
    sae = make_sae(SAEConfig(architecture="topk", d_in=128, d_sae=64, k=8, layer=layer, modality="both", model_name="toyworld"))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(128, 64, generator=g) * 0.3)
        sae.W_dec.copy_(torch.randn(64, 128, generator=g) * 0.1)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return save_dictionary(sae, tmp_path / f"shared-L{layer}")


def test_scores_with_a_shared_sae_match_the_definitions(toy, toy_corpus, tmp_path: Path) -> None:  # noqa: ANN001
    from steerlang.data import open_dataset
    from steerlang.dictionary.io import load_dictionary
    from steerlang.runtime.adapters import adapter_for

    bundle, concepts = toy
    corpus = toy_corpus("saev-small", seed=8105, count=10, mismatch_rate=0.3)
    path = tmp_path / "shared-L2"
    _shared_sae(tmp_path, 2)
    delta = 0.5
    report = audit(corpus, bundle, concepts, saev=path, delta=delta, batch_size=4)
    sae = load_dictionary(path)
    samples = list(open_dataset(corpus))
    adapter = adapter_for(bundle.model)
    pb = pair_batch(bundle, adapter, [s.image for s in samples], [DEFAULT_PROMPT] * len(samples), [s.text for s in samples])
    h = hidden_states(adapter, bundle.model, pb.inputs, [2])[2]
    for i in range(len(samples)):
        zi, zt = sae.encode(h[i][pb.image[i]]), sae.encode(h[i][pb.caption[i]])
        co = ((zi.amax(0) > delta) & (zt.amax(0) > delta)).nonzero().flatten().tolist()
        r = report.samples[i]
        assert r.co_latents == co
        assert r.l0 == pytest.approx(float(torch.cat([zi, zt]).gt(0).sum(1).float().mean()))
        assert report.cosine[i] == pytest.approx(float(report.saev_weights[co].sum()))
    j = report.to_json()
    assert j["saev"]["kind"] == "shared" and j["saev"]["delta"] == delta
    assert {"l0", "co_l0", "cosine"} <= set(j["samples"][0])


def test_a_shared_sae_must_fit(toy, toy_corpus, tmp_path: Path) -> None:  # noqa: ANN001
    corpus = toy_corpus("saev-small", seed=8105, count=10, mismatch_rate=0.3)
    bundle, concepts = toy
    _shared_sae(tmp_path, 1)
    with pytest.raises(InputError, match="layer 1.*layer 2"):
        audit(corpus, bundle, concepts, saev=tmp_path / "shared-L1")
    with pytest.raises(InputError, match="image positions only"):
        audit(corpus, bundle, concepts, saev=concepts.sae_paths[(2, "image")])
