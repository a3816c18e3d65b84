"""SAE-V patch scores (steerlang/audit/patches.py), checked by hand on a 3-patch, 3-latent sample."""

import torch

from steerlang.audit.patches import keep_top, patch_scores


def test_patch_scores_by_hand():
    # latents: 0 active on patches and on text (co-occurring), 1 active on patches only, 2 on text only
    z_img = torch.tensor([[2.0, 0.5, 0.0],
                          [1.5, 3.0, 0.0],
                          [0.0, 0.0, 0.2]])
    z_txt = torch.tensor([[1.2, 0.0, 4.0],
                          [0.0, 0.9, 0.0]])
    w = torch.tensor([0.4, 0.7, 0.9])
    s = patch_scores(z_img, z_txt, w, delta=1.0)
    assert s["l0"].tolist() == [1.0, 2.0, 0.0]
    assert torch.allclose(s["l1"], torch.tensor([2.5, 4.5, 0.2]))
    assert s["co_l0"].tolist() == [1.0, 1.0, 0.0]  # latent 1 never exceeds delta on text; latent 2 never on a patch
    assert torch.allclose(s["cosine"], torch.tensor([0.4, 0.4, 0.0]))


def test_patch_scores_without_text():
    s = patch_scores(torch.ones(2, 3) * 2, torch.zeros(0, 3), torch.ones(3), delta=1.0)
    assert s["co_l0"].tolist() == [0.0, 0.0] and s["cosine"].tolist() == [0.0, 0.0]


def test_keep_top_floor_and_ties():
    score = torch.tensor([0.0, 5.0, 1.0, 1.0, 1.0])
    assert keep_top(score, 0.2, torch.arange(5)).tolist() == [False, True, False, False, False]
    # floor(0.5 * 5) = 2: patch 1, then one of the tied patches 2-4, the first in the tie-break order
    assert keep_top(score, 0.5, torch.tensor([4, 3, 2, 1, 0])).nonzero().flatten().tolist() == [1, 4]
    assert keep_top(score, 0.5, torch.tensor([0, 1, 2, 3, 4])).nonzero().flatten().tolist() == [1, 2]
    assert int(keep_top(score, 0.9, torch.arange(5)).sum()) == 4
    assert int(keep_top(score, 1.0, torch.arange(5)).sum()) == 5
