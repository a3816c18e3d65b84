"""Two measured choices behind the shipped dictionaries, on the toy model's real activations.

    python benchmarks/dictionary_choices.py --layer 0 --out runs/dictionary_choices.json

1. Dead-latent handling: AuxK vs resampling vs nothing, same data, steps and seed (image SAE).
2. Separate image and text dictionaries vs one shared dictionary over both (the SAE-V baseline),
   same total latents: FVU and spliced ΔCE at image and at text positions, held-out scenes.
Uses the cached harvests of `steer dict build` (training stream 2, held-out stream 3).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layer", type=int, default=0)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from steerlang.dictionary.api import EVAL_SCENE_SEED, TRAIN_SCENE_SEED, harvested, source_for
    from steerlang.dictionary.metrics import reconstruction_metrics
    from steerlang.dictionary.splice import spliced_loss
    from steerlang.dictionary.train import TrainConfig, train_sae
    from steerlang.world.model import load_model

    train = harvested("toyworld", seed=TRAIN_SCENE_SEED, count=3000)
    held = harvested("toyworld", seed=EVAL_SCENE_SEED, count=500)
    bundle = load_model("toyworld")
    L = args.layer
    report: dict = {"layer": L, "steps": args.steps, "dead_latents": {}, "separate_vs_shared": {}}

    def fit(modality: str, latents: int, k: int, dead: str, batch: int = 2048):
        cfg = TrainConfig(d_sae=latents, k=k, steps=args.steps, batch_size=batch, lr=1e-3, whiten=True, seed=0,
                          dead_method=dead, dead_window_tokens=max(20 * batch, 50_000), decay_frac=0.2)
        t0 = time.perf_counter()
        sae = train_sae(source_for(train, L, modality), cfg, progress=False).sae
        return sae, time.perf_counter() - t0

    for dead in ("auxk", "resample", "none"):
        sae, secs = fit("image", 1024, 16, dead)
        m = reconstruction_metrics(sae, source_for(held, L, "image"))
        report["dead_latents"][dead] = {k: m[k] for k in ("fvu", "l0", "dead_fraction", "dense_fraction")} | {"seconds": round(secs, 1)}
        print(dead, report["dead_latents"][dead], flush=True)

    image_sae, _ = fit("image", 1024, 16, "auxk")
    text_sae, _ = fit("text", 256, 8, "auxk", batch=1024)
    shared_sae, _ = fit("both", 1280, 16, "auxk")
    for name, saes in (("separate", {"image": image_sae, "text": text_sae}), ("shared", {"image": shared_sae, "text": shared_sae})):
        row = {}
        for modality in ("image", "text"):
            m = reconstruction_metrics(saes[modality], source_for(held, L, modality))
            row[modality] = {k: m[k] for k in ("fvu", "l0", "dead_fraction")}
        splice = spliced_loss(bundle, L, saes, seed=EVAL_SCENE_SEED, count=300)
        for g in ("image", "text", "both"):
            row.setdefault(g, {})["delta_ce"] = splice[g]["delta_ce"]
        report["separate_vs_shared"][name] = row
        print(name, row, flush=True)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
