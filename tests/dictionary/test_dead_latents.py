"""Dead-latent handling on a planted dead latent: with `dead_method="none"` it stays dead, AuxK
gives a starved latent gradient from the step it counts as dead and revives it, resampling
re-initialises a dead one and it fires again.

The trainer's initialisation (`train._init`) is wrapped so that, after the usual seeded init,
latent J has encoder column 0 and bias b:

- "dead", b = -1: its pre-activation is -1 on every input. Its code (ReLU, or ReLU after TopK) is 0
  and its gradient through the ReLU is 0, whatever the other latents do: nothing but resampling
  can ever change it. Provably dead.
- "starved", b = +1e-3: a positive pre-activation too small to win the TopK, so the main loss
  never reaches it, but AuxK (the ReLU of the top dead pre-activations, fitted to the residual)
  passes it a gradient once it counts as dead.

Every step's `dead` mask, whether J fired, and J's encoder parameters are recorded by wrapping
`train._loss`; resamplings by wrapping `train._resample`.
"""

from __future__ import annotations

import pytest
import torch

from steerlang.dictionary import train
from steerlang.dictionary.train import TrainConfig, train_sae

J = 5
BATCH, WINDOW = 64, 640
DEAD_FROM = WINDOW // BATCH  # the first step (0-based) whose loss sees a never-firing latent as dead
CFG = dict(d_sae=64, k=4, batch_size=BATCH, steps=40, lr=1e-2, warmup=5, dead_window_tokens=WINDOW, log_every=5,
           l1_coeff=0.05, resample_every=15, resample_until=0.9)
PLANTS = {"dead": -1.0, "starved": 1e-3}


class Record:
    def __init__(self) -> None:
        self.dead: list[bool] = []  # J in the dead mask the step's loss got
        self.fired: list[bool] = []  # J fired in the step
        self.w: list[torch.Tensor] = []  # (W_enc[:, J], b_enc[J]) entering the step
        self.resampled: list[tuple[int, list[int], dict[str, torch.Tensor]]] = []  # (step, dead ids, J's state after)


def planted_run(monkeypatch: pytest.MonkeyPatch, acts: torch.Tensor, arch: str, dead: str, plant: str,
                **over: float) -> tuple[Record, train.TrainResult]:
    rec = Record()
    init, loss, resample = train._init, train._loss, train._resample

    def planted_init(sae, first, gen):  # noqa: ANN001, ANN202
        init(sae, first, gen)
        with torch.no_grad():
            sae.W_enc[:, J] = 0
            sae.b_enc[J] = PLANTS[plant]

    def spy_loss(sae, x, cfg, dead_mask, aux_k):  # noqa: ANN001, ANN202
        rec.dead.append(bool(dead_mask[J]))
        rec.w.append(torch.cat([sae.W_enc[:, J].detach(), sae.b_enc[J].detach()[None]]).clone())
        out = loss(sae, x, cfg, dead_mask, aux_k)
        rec.fired.append(bool(out[1]["fired"][J]))
        return out

    def spy_resample(sae, opt, x, dead_mask, gen, scale):  # noqa: ANN001, ANN202
        if dead_mask[J]:  # give J an optimiser history, as a latent that fired before it died has: resampling must drop it
            for p, sl in ((sae.W_dec, (J,)), (sae.W_enc, (slice(None), J)), (sae.b_enc, (J,))):
                opt.state[p]["exp_avg"][sl] = 1.0
                opt.state[p]["exp_avg_sq"][sl] = 1.0
        n = resample(sae, opt, x, dead_mask, gen, scale)
        adam = [opt.state[p][k][sl] for p, sl in ((sae.W_dec, (J,)), (sae.W_enc, (slice(None), J)), (sae.b_enc, (J,)))
                for k in ("exp_avg", "exp_avg_sq")]
        state = {"W_dec": sae.W_dec[J].detach().clone(), "W_enc": sae.W_enc[:, J].detach().clone(),
                 "b_enc": sae.b_enc[J].detach().clone(), "adam": torch.cat([a.reshape(-1) for a in adam])}
        rec.resampled.append((len(rec.dead) - 1, dead_mask.nonzero().squeeze(1).tolist(), state))
        return n

    monkeypatch.setattr(train, "_init", planted_init)
    monkeypatch.setattr(train, "_loss", spy_loss)
    monkeypatch.setattr(train, "_resample", spy_resample)
    res = train_sae(acts, TrainConfig(arch=arch, dead_method=dead, **{**CFG, **over}), progress=False)  # type: ignore[arg-type]
    assert len(rec.dead) == CFG["steps"]
    return rec, res


def unchanged(rec: Record, upto: int) -> bool:
    """J's encoder entering steps 0..upto is what the init planted."""
    return all(torch.equal(w, rec.w[0]) for w in rec.w[: upto + 1])


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_without_handling_a_dead_latent_stays_dead(monkeypatch, acts, arch) -> None:  # noqa: ANN001
    rec, res = planted_run(monkeypatch, acts, arch, "none", "dead")
    assert not any(rec.fired)
    assert not any(rec.dead[:DEAD_FROM]) and all(rec.dead[DEAD_FROM:])  # counted dead once the window has passed
    assert unchanged(rec, CFG["steps"] - 1) and torch.equal(res.sae.W_enc[:, J], torch.zeros(res.sae.cfg.d_in))
    assert not rec.resampled and res.history[-1]["dead"] >= 1 / 64
    assert (res.sae.encode(acts)[:, J] == 0).all()


def test_auxk_gives_a_starved_latent_gradient_and_revives_it(monkeypatch, acts) -> None:  # noqa: ANN001
    aux, res = planted_run(monkeypatch, acts, "topk", "auxk", "starved")
    none, _ = planted_run(monkeypatch, acts, "topk", "none", "starved")
    # The two runs are the same until J counts as dead (AuxK has nothing to fit before that) ...
    assert aux.fired[:DEAD_FROM] == none.fired[:DEAD_FROM] and not any(aux.fired[: DEAD_FROM + 1])
    assert not any(aux.dead[:DEAD_FROM]) and aux.dead[DEAD_FROM]
    assert unchanged(aux, DEAD_FROM) and unchanged(none, DEAD_FROM)
    # ... then AuxK's step moves J's encoder, while without it the same step leaves it as planted.
    assert not torch.equal(aux.w[DEAD_FROM + 1], aux.w[DEAD_FROM])
    assert torch.equal(none.w[DEAD_FROM + 1], none.w[DEAD_FROM])
    # Revived: it wins the TopK again (which clears its dead flag), at most later steps, and fires on the data.
    back = aux.fired.index(True)
    assert not aux.dead[back + 1]
    assert sum(aux.fired[back:]) >= (CFG["steps"] - back) // 2
    assert float((res.sae.encode(acts)[:, J] > 0).float().mean()) > 0.02
    assert not aux.resampled


@pytest.mark.parametrize("arch,scale", [("relu", 0.2), ("topk", 0.5)])
def test_resampling_reinitialises_a_dead_latent(monkeypatch, acts, arch, scale) -> None:  # noqa: ANN001
    """(A TopK latent resampled at the default encoder scale 0.2 rarely wins the TopK against unit
    encoder columns; 0.5 makes it fire again within this short run.)"""
    rec, res = planted_run(monkeypatch, acts, arch, "resample", "dead", resample_enc_scale=scale)
    # The first resampling (after step resample_every) finds J dead and points it at an input.
    step, ids, state = rec.resampled[0]
    assert step + 1 == CFG["resample_every"] and J in ids
    assert torch.allclose(state["W_dec"].norm(), torch.tensor(1.0), atol=1e-5)
    enc = state["W_enc"]
    assert float(enc.norm()) > 0 and torch.allclose(enc / enc.norm(), state["W_dec"], atol=1e-5)  # encoder ∥ decoder row
    assert float(state["b_enc"]) == 0.0
    assert torch.equal(state["adam"], torch.zeros_like(state["adam"]))  # a fresh Adam state for its rows
    # Untouched before it (nothing else can reach a dead latent), firing after it.
    assert unchanged(rec, step) and not any(rec.fired[: step + 1])
    assert any(rec.fired[step + 1 :]) and not rec.dead[step + 1]
    assert (res.sae.encode(acts)[:, J] > 0).any()
