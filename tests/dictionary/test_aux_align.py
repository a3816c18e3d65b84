"""VL-SAE's auxiliary autoencoder (steerlang/dictionary/aux_align.py): the loss by hand, and training aligns."""

import math

import torch

from steerlang.dictionary.aux_align import AuxConfig, fvu, symmetric_infonce, train_aux


def test_symmetric_infonce_by_hand_2x2():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # normalised: e1, e2
    b = torch.tensor([[3.0, 4.0], [1.0, 0.0]])  # normalised: (0.6, 0.8), e1
    tau = 0.5
    # cosines: a0.b0 = 0.6, a0.b1 = 1, a1.b0 = 0.8, a1.b1 = 0
    s = [[0.6, 1.0], [0.8, 0.0]]

    def ce(row, i):
        return -math.log(math.exp(row[i] / tau) / sum(math.exp(v / tau) for v in row))

    a2b = (ce(s[0], 0) + ce(s[1], 1)) / 2
    b2a = (ce([s[0][0], s[1][0]], 0) + ce([s[0][1], s[1][1]], 1)) / 2
    got = float(symmetric_infonce(a, b, tau))
    assert abs(got - (a2b + b2a) / 2) < 1e-6


def test_infonce_identical_pairs_lower_than_swapped():
    x = torch.eye(2)
    assert symmetric_infonce(x, x, 0.07) < 1e-5
    assert symmetric_infonce(x, x.flip(0), 0.07) > 10


def test_fvu_by_hand():
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert abs(float(fvu(x, torch.zeros_like(x))) - 1.0) < 1e-6
    assert float(fvu(x, x)) == 0.0


def test_training_aligns_pairs():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(256, 4, generator=g)  # shared content, seen through a different map per modality
    x_img = z @ torch.randn(4, 16, generator=g) + 5
    x_txt = z @ torch.randn(4, 16, generator=g) - 3
    model, hist = train_aux(x_img, x_txt, AuxConfig(d_in=16, d_aux=8, steps=300, batch=128, lr=1e-2))
    assert hist[-1]["infonce"] < 0.5 * hist[0]["infonce"]
    with torch.no_grad():
        ei = torch.nn.functional.normalize(model.embed(x_img, 0), dim=1)
        et = torch.nn.functional.normalize(model.embed(x_txt, 1), dim=1)
    top1 = float(((ei @ et.T).argmax(1) == torch.arange(256)).float().mean())
    assert top1 > 0.9
