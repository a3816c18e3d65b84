"""A concept set on ONE joint dictionary over image and text (SAE-V or VL-SAE style), for comparison.

    python benchmarks/joint_concepts.py --arch shared --out runs/dict_shared   # ~5 min on 2 CPU cores
    python benchmarks/joint_concepts.py --arch vlsae --out runs/dict_vlsae     # ~5 min

Both train at the LM input (layer 0) on the toy world's training scenes and point the image and the
text side of a concept set at the joint model; the concepts are then built by the same code as the
shipped set (`steer dict build`: alignment, names, groups, extents, prototypes), and
`benchmarks/interventions.py --dictionary shared=runs/dict_shared --dictionary vlsae=runs/dict_vlsae`
runs the same programs through them.

- shared (SAE-V style): one 1,280-latent TopK SAE (k 16, whitened) trained on image patches and
  prompt + caption tokens together; the same file serves both modalities.
- vlsae (VL-SAE style, `steerlang/dictionary/crossmodal.py`): cosine encoder over L2-normalised
  inputs, TopK, one decoder per modality, trained on image patches and caption tokens. It is
  exported exactly as two SAELens TopK files that share the encoder: TopK of cos(x, e_j) selects
  the same latents as TopK of x . e_j / |e_j| (the norm |x| is common to a row), and
  z'_j = |x| cos(x, e_j) decodes in the model's units through the modality's unit decoder rows
  (the VL-SAE reconstructs x / |x|). Edits keep the SAE error, so the decoder bias plays no part.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def export_vlsae(model, layer: int, out: Path) -> list[dict]:  # noqa: ANN001
    """Two SAELens TopK folders (image, text) equivalent to a trained VLSAE; their saes.json rows."""
    from steerlang.dictionary.crossmodal import vlsae_as_saes
    from steerlang.dictionary.io import save_dictionary

    rows = []
    for modality, sae in vlsae_as_saes(model, layer=layer, model_name="toyworld").items():
        rel = f"saes/layer{layer}-{modality}"
        save_dictionary(sae, out / rel)
        rows.append({"layer": layer, "modality": modality, "path": rel})
    return rows


def train_vlsae(layer: int, latents: int, k: int, steps: int, seed: int):  # noqa: ANN201
    import torch

    from steerlang.dictionary.api import TRAIN_SCENE_SEED, harvested
    from steerlang.dictionary.crossmodal import JointConfig, train_joint
    from steerlang.world.oracle_concepts import load_split

    split = load_split(harvested("toyworld", seed=TRAIN_SCENE_SEED, count=3000), layer, TRAIN_SCENE_SEED)
    x = torch.cat([split.x_img, split.x_txt])
    m = torch.cat([torch.zeros(len(split.x_img)), torch.ones(len(split.x_txt))]).long()
    model, hist = train_joint(x, m, JointConfig("vlsae", x.shape[1], latents, k, seed), steps=steps, progress=True)
    print(f"vlsae: final training FVU {hist[-1]:.4f}")
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", choices=["shared", "vlsae"], default="shared")
    ap.add_argument("--out", type=Path, default=None, help="default runs/dict_{arch}")
    ap.add_argument("--latents", type=int, default=1280)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = args.out or Path(f"runs/dict_{args.arch}")

    from steerlang.dictionary.api import build_concepts, train_dictionary

    if args.arch == "shared":
        rel = "saes/layer0-both"
        train_dictionary(model="toyworld", layer=0, modality="both", out=out / rel, latents=args.latents, k=args.k,
                         steps=args.steps, whiten=True)
        saes = [{"layer": 0, "modality": m, "path": rel} for m in ("image", "text")]
    else:
        saes = export_vlsae(train_vlsae(0, args.latents, args.k, args.steps, args.seed), 0, out)
    (out / "saes.json").write_text(json.dumps({"model": "toyworld", "layers": [0], "modalities": ["image", "text"],
                                               "saes": saes}, indent=1) + "\n")
    report = build_concepts(out, log=print)
    print(json.dumps(report["n_concepts"]))


if __name__ == "__main__":
    main()
