"""SAE training throughput (tokens/s) on random activations: ours vs sparsify vs SAELens, warmed and timed alike.

    python benchmarks/sae_train_throughput.py [--steps 5] [--warm 2] [--threads 1,2] [--repeats 1] [--no-saelens] [--no-sparsify]

Setting: d_in 1024, d_sae 16384, TopK k=32, batch 4096, Adam lr 4e-4, AuxK on in both. Every run
(ours with the sparse TopK decode, ours with the dense one, SAELens) trains `warm + steps` steps on
the same tensor, in one process, back to back, and is timed from the end of its `warm`-th step to
the end of its last: set-up and the first `warm` steps are excluded in all three, the same way.

- Ours: `train_sae` (AuxK, the unit-norm decoder step), the step ends timed through its `on_step`
  callback.
- SAELens (when installed): what `SAETrainer._train_step` runs, written out:
  `TopKTrainingSAE.training_forward_pass` + the firing bookkeeping + backward + grad clipping + Adam.
- EleutherAI sparsify (`eai-sparsify`, when installed): what `sparsify.Trainer.fit` runs per step
  for an FVU-trained TopK SAE, written out (its trainer needs a Hugging Face model and dataset):
  decoder rows set to unit norm, `SparseCoder.forward(x, dead_mask=...)` (its fused TopK encoder,
  its sparse decoder: the Triton kernel on GPU, `embedding_bag` on CPU), loss ``fvu + auxk_alpha *
  auxk_loss`` with ``auxk_alpha = 1/32`` (ours), backward, the gradient parallel to the decoder rows
  removed, Adam (its `--optimizer adam`; its default is signum) at our lr, the firing counts. Its
  init is its own (`nn.Linear` encoder, decoder = its transpose, b_dec = the first batch's mean).
  sparsify's AuxK scales its loss by ``min(n_dead / k_aux, 1)`` and passes no gradient to the
  encoder (its fused encoder's backward ignores the pre-activations' gradient); ours and SAELens's do.
- AuxK needs dead latents to do anything: all use the same rule, dead = not fired in the last
  `--dead-window` tokens (default one batch, so AuxK runs from the second step on in all); the
  report gives the dead share at the last step and how many timed steps ran AuxK, per run.
- The loss each reached: FVU on a held-out random batch after the last step (and the last training
  batch's FVU), so a faster step that learns less would show.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from steerlang.dictionary.train import TrainConfig, train_sae

D_IN, D_SAE, K, BATCH, LR = 1024, 16384, 32, 4096, 4e-4



def _timed(step, warm: int, steps: int) -> float:  # noqa: ANN001
    """Seconds for steps warm .. warm + steps - 1, after `warm` untimed steps (every contender alike)."""
    for i in range(warm):
        step(i)
    t = time.perf_counter()
    for i in range(warm, warm + steps):
        step(i)
    return time.perf_counter() - t

def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    return float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def ours(x: torch.Tensor, x_eval: torch.Tensor, steps: int, warm: int, decode: str, window: int) -> dict:
    stamps: list[float] = []
    cfg = TrainConfig(arch="topk", d_sae=D_SAE, k=K, batch_size=BATCH, steps=warm + steps, warmup=1, lr=LR,
                      dead_method="auxk", dead_window_tokens=window, topk_decode=decode, log_every=1)  # type: ignore[arg-type]
    res = train_sae(x, cfg, progress=False, on_step=lambda _done, _last: stamps.append(time.perf_counter()))
    timed = res.history[warm:]
    with torch.no_grad():
        held = fvu(x_eval, res.sae(x_eval))
    return {"tokens_per_s": steps * BATCH / (stamps[-1] - stamps[warm - 1]), "timed_steps_with_auxk": sum(h["aux"] > 0 for h in timed),
            "dead_share_at_end": round(res.history[-1]["dead"], 4), "train_fvu_last": round(res.history[-1]["fvu"], 4),
            "held_out_fvu": round(held, 4)}


def saelens(x: torch.Tensor, x_eval: torch.Tensor, steps: int, warm: int, window: int) -> dict:
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K))
    opt = torch.optim.Adam(sae.parameters(), lr=LR)
    since = torch.zeros(D_SAE, dtype=torch.long)  # tokens since each latent last fired, as ours counts
    n_batches = x.shape[0] // BATCH
    aux_steps = 0
    last: dict = {}

    def step(i: int) -> None:
        nonlocal aux_steps
        sae.train()
        dead = since >= window
        xb = x[(i % n_batches) * BATCH:][:BATCH]
        out = sae.training_forward_pass(TrainStepInput(sae_in=xb, coefficients=sae.get_coefficients(),
                                                       dead_neuron_mask=dead, n_training_steps=i, is_logging_step=False))
        with torch.no_grad():  # SAETrainer's firing bookkeeping
            did_fire = out.feature_acts.bool().float().sum(-2).bool()
            if did_fire.is_sparse:
                did_fire = did_fire.to_dense()
            since.add_(BATCH)
            since[did_fire] = 0
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if i >= warm:
            aux = out.losses.get("auxiliary_reconstruction_loss", 0.0)
            aux_steps += float(aux.detach() if torch.is_tensor(aux) else aux) > 0
        last.update(fvu=fvu(xb, out.sae_out.detach()), dead=float(dead.float().mean()))

    dt = _timed(step, warm, steps)
    sae.eval()
    with torch.no_grad():
        held = fvu(x_eval, sae(x_eval))
    return {"tokens_per_s": steps * BATCH / dt, "timed_steps_with_auxk": int(aux_steps), "dead_share_at_end": round(last["dead"], 4),
            "train_fvu_last": round(last["fvu"], 4), "held_out_fvu": round(held, 4)}


def sparsify(x: torch.Tensor, x_eval: torch.Tensor, steps: int, warm: int, window: int) -> dict:
    from sparsify.config import SparseCoderConfig
    from sparsify.sparse_coder import SparseCoder

    torch.manual_seed(0)
    sae = SparseCoder(D_IN, SparseCoderConfig(num_latents=D_SAE, k=K))
    opt = torch.optim.Adam(sae.parameters(), lr=LR)
    since = torch.zeros(D_SAE, dtype=torch.long)
    n_batches = x.shape[0] // BATCH
    aux_steps = 0
    last: dict = {}

    def step(i: int) -> None:
        nonlocal aux_steps
        xb = x[(i % n_batches) * BATCH:][:BATCH]
        if i == 0:
            sae.b_dec.data = xb.mean(0)
        sae.set_decoder_norm_to_unit_norm()
        dead = since >= window  # sparsify's rule is `> threshold`: the same with threshold = window - 1
        out = sae(xb, dead_mask=dead)
        loss = out.fvu + (1 / 32) * out.auxk_loss
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            fired = torch.zeros(D_SAE, dtype=torch.bool)
            fired[out.latent_indices.flatten()] = True
            since.add_(BATCH)
            since[fired] = 0
        if i >= warm:
            aux_steps += float(out.auxk_loss.detach()) > 0
        last.update(fvu=float(out.fvu.detach()), dead=float(dead.float().mean()))

    dt = _timed(step, warm, steps)
    with torch.no_grad():
        sae.set_decoder_norm_to_unit_norm()
        held = fvu(x_eval, sae(x_eval).sae_out)
    return {"tokens_per_s": steps * BATCH / dt, "timed_steps_with_auxk": int(aux_steps), "dead_share_at_end": round(last["dead"], 4),
            "train_fvu_last": round(last["fvu"], 4), "held_out_fvu": round(held, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="timed steps per run")
    ap.add_argument("--warm", type=int, default=2, help="untimed steps at the start of every run")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each, interleaved; medians reported")
    ap.add_argument("--dead-window", type=int, default=BATCH, help="tokens without firing after which a latent is dead (AuxK)")
    ap.add_argument("--no-saelens", action="store_true")
    ap.add_argument("--no-sparsify", action="store_true")
    ap.add_argument("--no-dense", action="store_true", help="skip the dense-decode comparison")
    args = ap.parse_args()
    assert args.warm >= 1
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH * (args.warm + args.steps), D_IN, generator=g)
    x_eval = torch.randn(BATCH, D_IN, generator=g)
    try:
        import sae_lens

        have_saelens = not args.no_saelens
        sl_version = sae_lens.__version__
    except ImportError:
        have_saelens, sl_version = False, None
    try:
        from importlib.metadata import version

        import sparsify as _sparsify  # noqa: F401

        have_sparsify, sp_version = not args.no_sparsify, version("eai-sparsify")
    except ImportError:
        have_sparsify, sp_version = False, None
    res: dict = {"setting": {"d_in": D_IN, "d_sae": D_SAE, "k": K, "batch": BATCH, "steps": args.steps, "warm": args.warm,
                             "dead_window_tokens": args.dead_window, "repeats": args.repeats, "lr": LR},
                 "torch": torch.__version__, "sae_lens": sl_version, "sparsify": sp_version, "cpu": platform.processor() or platform.machine(),
                 "runs": {}, "tokens_per_s": {}}
    for th in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(th)
        runs: dict[str, list[dict]] = {}
        for _ in range(args.repeats):
            runs.setdefault("ours_sparse_decode", []).append(ours(x, x_eval, args.steps, args.warm, "sparse", args.dead_window))
            if not args.no_dense:
                runs.setdefault("ours_dense_decode", []).append(ours(x, x_eval, args.steps, args.warm, "dense", args.dead_window))
            if have_sparsify:
                runs.setdefault("sparsify", []).append(sparsify(x, x_eval, args.steps, args.warm, args.dead_window))
            if have_saelens:
                runs.setdefault("saelens", []).append(saelens(x, x_eval, args.steps, args.warm, args.dead_window))
            print(json.dumps({th: {k: v[-1] for k, v in runs.items()}}), flush=True)
        row = {k: round(statistics.median(r["tokens_per_s"] for r in v), 1) for k, v in runs.items()}
        if have_sparsify:
            row["speedup_vs_sparsify"] = round(row["ours_sparse_decode"] / row["sparsify"], 2)
        if have_saelens:
            row["speedup_vs_saelens"] = round(row["ours_sparse_decode"] / row["saelens"], 2)
            if "ours_dense_decode" in row:
                row["dense_speedup_vs_saelens"] = round(row["ours_dense_decode"] / row["saelens"], 2)
        res["tokens_per_s"][f"{th}_threads"] = row
        res["runs"][f"{th}_threads"] = runs
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
