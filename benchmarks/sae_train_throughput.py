"""SAE training throughput (tokens/s) on random activations: ours vs SAELens, back to back.

    python benchmarks/sae_train_throughput.py [--steps 3] [--threads 1,2] [--no-saelens]

Setting: d_in 1024, d_sae 16384, TopK k=32, batch 4096, Adam. Ours: `train_sae` with AuxK and the
unit-norm decoder step, timed as (time of 1 + steps) - (time of 1 step), so set-up and the first
(warm-up) step are excluded; both TopK decodes (sparse gather, dense matmul). SAELens (when
installed): `TopKTrainingSAE.training_forward_pass` + backward + grad clipping + Adam step, which is
what `SAETrainer._train_step` runs, on the same tensors, batch size and step count, after one
warm-up step. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from steerlang.dictionary.train import TrainConfig, train_sae

D_IN, D_SAE, K, BATCH = 1024, 16384, 32, 4096


def ours(x: torch.Tensor, steps: int, decode: str) -> float:
    def run(n: int) -> float:
        cfg = TrainConfig(arch="topk", d_sae=D_SAE, k=K, batch_size=BATCH, steps=n, warmup=1,
                          dead_method="auxk", dead_window_tokens=10**9, topk_decode=decode)  # type: ignore[arg-type]
        t = time.perf_counter()
        train_sae(x, cfg, progress=False)
        return time.perf_counter() - t

    t1 = run(1)
    tn = run(1 + steps)
    return steps * BATCH / (tn - t1)


def saelens(x: torch.Tensor, steps: int) -> float:
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K))
    opt = torch.optim.Adam(sae.parameters(), lr=4e-4)
    dead = torch.zeros(D_SAE, dtype=torch.bool)

    def step(i: int) -> None:
        sae.train()
        out = sae.training_forward_pass(TrainStepInput(
            sae_in=x[(i % (x.shape[0] // BATCH)) * BATCH:][:BATCH], coefficients=sae.get_coefficients(),
            dead_neuron_mask=dead, n_training_steps=i, is_logging_step=False))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    step(0)
    t = time.perf_counter()
    for i in range(1, steps + 1):
        step(i)
    return steps * BATCH / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--no-saelens", action="store_true")
    ap.add_argument("--no-dense", action="store_true", help="skip the dense-decode comparison")
    args = ap.parse_args()
    x = torch.randn(BATCH * (args.steps + 1), D_IN, generator=torch.Generator().manual_seed(0))
    try:
        import sae_lens

        have_saelens = not args.no_saelens
        sl_version = sae_lens.__version__
    except ImportError:
        have_saelens, sl_version = False, None
    res: dict = {"setting": {"d_in": D_IN, "d_sae": D_SAE, "k": K, "batch": BATCH, "steps": args.steps},
                 "torch": torch.__version__, "sae_lens": sl_version, "cpu": platform.processor() or platform.machine(),
                 "tokens_per_s": {}}
    for th in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(th)
        row = {"ours_sparse_decode": round(ours(x, args.steps, "sparse"), 1)}
        if not args.no_dense:
            row["ours_dense_decode"] = round(ours(x, args.steps, "dense"), 1)
        if have_saelens:
            row["saelens"] = round(saelens(x, args.steps), 1)
            row["speedup_vs_saelens"] = round(row["ours_sparse_decode"] / row["saelens"], 2)
        res["tokens_per_s"][f"{th}_threads"] = row
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
