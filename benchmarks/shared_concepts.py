"""A concept set on ONE shared SAE over image and text positions (SAE-V style), for comparison.

    python benchmarks/shared_concepts.py --out runs/dict_shared     # ~5 min on 2 CPU cores

Trains a 1,280-latent TopK SAE (k 16, 1,000 steps, whitened) on image patches and caption tokens
together at the LM input (layer 0), points both modalities of a concept set at it, and builds the
concepts with the same code as the shipped set (`steer dict build`: alignment, names, groups,
extents, prototypes). `benchmarks/interventions.py --dictionary shared=runs/dict_shared` then runs
the same programs through it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/dict_shared"))
    ap.add_argument("--latents", type=int, default=1280)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1000)
    args = ap.parse_args()

    from steerlang.dictionary.api import build_concepts, train_dictionary

    rel = "saes/layer0-both"
    train_dictionary(model="toyworld", layer=0, modality="both", out=args.out / rel, latents=args.latents, k=args.k,
                     steps=args.steps, whiten=True)
    saes = [{"layer": 0, "modality": m, "path": rel} for m in ("image", "text")]
    (args.out / "saes.json").write_text(json.dumps({"model": "toyworld", "layers": [0], "modalities": ["image", "text"],
                                                    "saes": saes}, indent=1) + "\n")
    report = build_concepts(args.out, log=print)
    print(json.dumps(report["n_concepts"]))


if __name__ == "__main__":
    main()
