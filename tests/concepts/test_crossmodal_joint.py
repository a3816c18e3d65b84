"""Joint dictionaries (shared, VL-SAE style) and cross-modal metrics on tiny planted data."""

import numpy as np
import torch

from steerlang.dictionary.crossmodal import (
    JointConfig,
    cross_modal_weight,
    direction_angles,
    evaluate_joint,
    intra_inter_similarity,
    load_joint,
    matching_rate,
    modality_mass,
    ratio_histogram,
    recall_at_k,
    save_joint,
    train_joint,
)


def _data(n=60, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    concepts = torch.randn(4, d, generator=g)
    shift = torch.randn(d, generator=g) * 3  # text lives in a shifted region
    lab = torch.randint(4, (n,), generator=g)
    xi = concepts[lab] + 0.05 * torch.randn(n, d, generator=g)
    xt = concepts[lab] + shift + 0.05 * torch.randn(n, d, generator=g)
    return xi, xt, lab


def test_train_and_roundtrip(tmp_path):
    xi, xt, _ = _data()
    x = torch.cat([xi, xt])
    m = torch.cat([torch.zeros(len(xi)), torch.ones(len(xt))]).long()
    for arch in ("shared", "vlsae"):
        model, hist = train_joint(x, m, JointConfig(arch, 16, 32, 4, seed=1), steps=60, batch=64)
        assert hist[-1] < hist[0]
        save_joint(model, tmp_path / arch)
        back = load_joint(tmp_path / arch)
        with torch.no_grad():
            assert torch.equal(model.encode(x, m), back.encode(x, m))
            assert torch.equal(model.decode(model.encode(x, m), m), back.decode(back.encode(x, m), m))
        res = evaluate_joint(model, xi, torch.arange(len(xi)), xt, torch.arange(len(xt)),
                             [str(i) for i in range(len(xi))])
        assert set(res) >= {"i2t", "t2i", "similarity", "ratio_histogram", "angle_median_deg"}


def test_retrieval_strict_and_caption():
    q = np.eye(4)
    keys = np.eye(4)
    keys[1] = keys[0]  # key 1 ties with key 0
    r = recall_at_k(q, keys, captions=["a", "a", "b", "c"], ks=(1, 2))
    assert r["strict"][1] == 0.5  # query 0 ties with key 1, query 1 ties with all
    assert r["caption"][1] == 0.75  # query 0 ties only with a same-caption key: correct
    assert r["strict"][2] == 0.75  # query 1 is orthogonal to every key: all tie, counted against
    assert r["strict_ceiling"] == 0.75  # queries 0 and 1 share a caption: 1/2 each, then 1 and 1


def test_similarity_mass_angle_matching():
    # Two concepts over 4 samples: concept 0 fires on samples 0-1, concept 1 on 2-3, in both
    # modalities; each sample's image and text embeddings agree, so intra = 1 and inter = -1.
    z = np.array([[1.0, 0], [1, 0], [0, 1], [0, 1]])
    emb = np.array([[1.0, 0], [1, 0], [0, 1], [0, 1]])
    s = intra_inter_similarity(z, z, emb, emb, top=2)
    assert s["concepts"] == 2 and np.isclose(s["intra"], 1.0) and np.isclose(s["inter"], -1.0)
    z_off = z.copy()
    z_off[:, 1] = 0  # concept 1 never fires on text: left out
    assert intra_inter_similarity(z, z_off, emb, emb, top=2)["concepts"] == 1
    ratio = modality_mass(np.array([1.0, 0.0, 1.0, 0.0]), np.array([0.0, 1.0, 1.0, 0.0]))
    assert ratio[0] == 1 and ratio[1] == 0 and ratio[2] == 0.5 and np.isnan(ratio[3])
    assert ratio_histogram(ratio, bins=2) == [1, 2]
    ang = direction_angles(np.array([[1.0, 0], [1, 0]]), np.array([[0.0, 1], [1, 0]]))
    assert np.allclose(ang, [90, 0])
    assert matching_rate(np.array([[3.0, 1, 0], [0, 0, 2]]), ["cat", None, "dog"],
                         ["a cat .", "a bird ."], top=1) == 0.5


def test_vlsae_exports_as_equivalent_topk_saes(tmp_path):
    """The exported SAEs select the VL-SAE's latents, with codes |x| times its cosines, and decode
    them through the modality's decoder; they load back through the ordinary dictionary loader."""
    from steerlang.dictionary.crossmodal import IMAGE, TEXT, vlsae_as_saes
    from steerlang.dictionary.io import load_dictionary, save_dictionary

    xi, xt, _ = _data()
    x = torch.cat([xi, xt])
    m = torch.cat([torch.zeros(len(xi)), torch.ones(len(xt))]).long()
    model, _ = train_joint(x, m, JointConfig("vlsae", 16, 32, 4, seed=1), steps=40, batch=64)
    saes = vlsae_as_saes(model, layer=0)
    for modality, j, rows in (("image", IMAGE, xi), ("text", TEXT, xt)):
        save_dictionary(saes[modality], tmp_path / modality)
        sae = load_dictionary(tmp_path / modality)
        with torch.no_grad():
            z = model.encode(rows, torch.full((len(rows),), j))
            z2 = sae.encode(rows)
            torch.testing.assert_close(z2, z * rows.norm(dim=-1, keepdim=True), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(sae.decode(z2), (z @ model.W_dec[j]) * rows.norm(dim=-1, keepdim=True),
                                       atol=1e-4, rtol=1e-4)


def test_sae_v_cross_modal_weight():
    """Latent 0 fires on 6 image and 6 text rows whose hidden states are identical per modality and
    at 60 degrees across: w = cos 60 = 0.5. Latent 1 fires on images only, latent 2 on 4 text rows
    only among its top rows: both single-modality (0)."""
    import torch

    h_img = torch.tensor([[1.0, 0.0]]).repeat(40, 1)
    h_txt = torch.tensor([[0.5, 3 ** 0.5 / 2]]).repeat(10, 1)
    z_img, z_txt = torch.zeros(40, 3), torch.zeros(10, 3)
    z_img[:6, 0], z_txt[:6, 0] = 2.0, 1.0
    z_img[:, 1] = 1.0
    z_img[:30, 2], z_txt[:4, 2] = 1.0, 5.0
    w = cross_modal_weight(z_img, z_txt, h_img, h_txt)
    assert np.allclose(w, [0.5, 0.0, 0.0], atol=1e-6)
    assert np.allclose(cross_modal_weight(z_img, z_txt, h_img, h_txt, top=40, each=4)[2], 0.5, atol=1e-6)


def test_compare_layer_names_a_folder_without_saes(tmp_path) -> None:  # noqa: ANN001
    import json

    import pytest

    from steerlang.dictionary.crossmodal import compare_layer
    from steerlang.errors import InputError

    with pytest.raises(InputError, match="no saes.json"):
        compare_layer(0, tmp_path, None, None, tmp_path)
    (tmp_path / "saes.json").write_text(json.dumps({"saes": [{"layer": 0, "modality": "image", "path": "x"}]}))
    with pytest.raises(InputError, match="no image and text SAEs at layer 0; it has layers \\[0\\]"):
        compare_layer(0, tmp_path, None, None, tmp_path)
