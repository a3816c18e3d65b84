from __future__ import annotations

import numpy as np

from steerlang.dictionary.align import align, correlation, map_image_to_text, retrieval_recall


def _planted(n: int = 400, p: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    concepts = (rng.random((n, p)) < 0.2) * rng.uniform(0.5, 2.0, (n, p))
    perm = rng.permutation(p)
    z_img = concepts + 0.05 * rng.random((n, p))
    z_txt = np.zeros_like(concepts)
    z_txt[:, perm] = concepts * rng.uniform(0.8, 1.2, (n, p))
    return z_img, z_txt, perm


def test_alignment_recovers_a_planted_permutation() -> None:
    z_img, z_txt, perm = _planted()
    al = align(z_img, z_txt, min_corr=0.5)
    assert len(al.image) == len(perm)
    assert all(perm[i] == j for i, j in al.as_map().items())
    assert (al.corr > 0.9).all()


def test_unmatched_latents_stay_modality_specific() -> None:
    z_img, z_txt, perm = _planted()
    rng = np.random.default_rng(1)
    z_img = np.concatenate([z_img, rng.random((z_img.shape[0], 3))], axis=1)  # three image-only latents
    al = align(z_img, z_txt, min_corr=0.5)
    assert not set(al.image.tolist()) & {24, 25, 26}


def test_decoder_cosine_breaks_ties() -> None:
    rng = np.random.default_rng(2)
    z = (rng.random((300, 2)) < 0.3).astype(float)
    z_img = np.concatenate([z, z], axis=1)  # latents 0,2 identical in activation, 1,3 too
    z_txt = z.copy()
    dec_img = np.eye(4, 8)
    dec_txt = np.stack([dec_img[2], dec_img[3]])
    al = align(z_img, z_txt, dec_image=dec_img, dec_text=dec_txt, lam=0.5)
    assert al.as_map() == {2: 0, 3: 1}


def test_retrieval_through_the_alignment() -> None:
    z_img, z_txt, _ = _planted(n=200)
    al = align(z_img, z_txt)
    r = retrieval_recall(map_image_to_text(z_img, al, z_txt.shape[1]), z_txt)
    assert r[1] > 0.8 and r[10] >= r[5] >= r[1]
    assert correlation(np.ones((5, 1)), np.arange(5.0)[:, None])[0, 0] == 0
