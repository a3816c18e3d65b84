from __future__ import annotations

import pytest
import torch
from dictionary_support import D_IN, D_SAE, random_sae

from steerlang.dictionary.sae import SAEConfig, TopKSAE, make_sae
from steerlang.errors import DictionaryError


def test_shapes(any_sae, acts):
    x = acts.reshape(8, -1, D_IN)  # leading dims are kept
    z = any_sae.encode(x)
    assert z.shape == (*x.shape[:-1], D_SAE)
    assert any_sae.decode(z).shape == x.shape
    assert any_sae(x).shape == x.shape
    assert any_sae.pre_acts(x).shape == z.shape
    assert any_sae.W_enc.shape == (D_IN, D_SAE) and any_sae.W_dec.shape == (D_SAE, D_IN)
    assert (z >= 0).all()


def test_topk_keeps_at_most_k(acts):
    sae = random_sae("topk", k=5)
    assert ((sae.encode(acts) > 0).sum(-1) <= 5).all()


def test_jumprelu_threshold(acts):
    sae = random_sae("jumprelu")
    pre, z = sae.pre_acts(acts), sae.encode(acts)
    assert torch.equal(z > 0, (pre > sae.threshold) & (pre > 0))


def test_encode_latents_matches_encode(any_sae, acts):
    idx = torch.tensor([3, 0, 17, 63])
    assert torch.allclose(any_sae.encode_latents(acts, idx), any_sae.encode(acts)[:, idx], atol=1e-6)


def test_topk_sparse_decode_equals_dense(acts):
    sae = random_sae("topk", k=6)
    vals, idx = sae.topk(acts)
    assert torch.allclose(sae.decode_sparse(vals, idx), sae.decode(sae.encode(acts)), atol=1e-5)


def test_unedited_delta_is_bit_exact(any_sae, acts):
    """The runtime's edit h' = h + decode_delta(z' - z) with z' == z returns h bit for bit."""
    idx = torch.tensor([1, 5, 9])
    z = any_sae.encode_latents(acts, idx)
    h2 = acts + any_sae.decode_delta(z - z, idx)
    assert torch.equal(h2, acts)


def test_edit_delta_equals_dense_decode_difference(any_sae, acts):
    idx = torch.tensor([2, 7])
    z = any_sae.encode(acts)
    z2 = z.clone()
    z2[:, idx] = 0.0
    delta = any_sae.decode_delta(z2[:, idx] - z[:, idx], idx)
    assert torch.allclose(delta, any_sae.decode(z2) - any_sae.decode(z), atol=1e-5)


def test_error_term_identity(any_sae, acts):
    """x = decode(encode(x)) + err: exact in float64 accumulation, and within 1 ulp-scale in float32.

    (In IEEE float, x̂ + (x - x̂) can round when |x̂| and |x| differ a lot; the runtime therefore
    uses the delta form tested above, which is exact.)"""
    x_hat = any_sae.decode(any_sae.encode(acts))
    err = acts - x_hat
    assert torch.allclose(x_hat + err, acts, rtol=0, atol=4 * torch.finfo(torch.float32).eps * float(x_hat.abs().max()))
    err64 = acts.double() - x_hat.double()  # exact: both are float32
    assert torch.equal((x_hat.double() + err64).float(), acts)


def test_bad_config_is_one_line_error():
    with pytest.raises(DictionaryError, match="k"):
        SAEConfig(architecture="topk", d_in=4, d_sae=8, k=0)
    with pytest.raises(DictionaryError, match="architecture"):
        SAEConfig(architecture="gated", d_in=4, d_sae=8)  # type: ignore[arg-type]


def test_make_sae_classes():
    assert isinstance(make_sae(SAEConfig(architecture="topk", d_in=4, d_sae=8, k=2)), TopKSAE)
