"""VL-SAE with and without its auxiliary aligned space, beside the aligned-separate concepts.

    python benchmarks/vlsae_aux.py --out runs/bench/vlsae_aux     # ~10 min on a loaded 2-core box

The VL-SAE paper trains its distance-based SAE on each sample's image and text representation; for
a model trained without a contrastive objective it first maps each modality's mean hidden state
into an explicitly aligned space (`steerlang/dictionary/aux_align.py`: symmetric InfoNCE, tau 0.07,
plus reconstruction). Per layer, trained on training stream 2 (3,000 scenes), measured on
evaluation stream --seed (default 9303, --count scenes):

- aligned-separate: the shipped image and text SAEs, Hungarian-matched (`crossmodal.aligned_separate_metrics`);
- VL-SAE on token rows (no aux): the VL-SAE-style model of `crossmodal.py` (1,280 latents, k 16)
  trained on image patches and caption tokens, codes max-pooled per scene (as `steer dict align-eval`);
- VL-SAE on mean states (no aux): the same model class on each scene's mean image-patch state and
  mean caption-token state (the paper's input, without the auxiliary step);
- VL-SAE on the aux space: the same on the auxiliary autoencoder's codes of those mean states
  (the paper's recipe for LLaVA-style models);
- references without an SAE: cosine retrieval on the mean states themselves (each modality centred
  on its training mean) and in the aux space.

Metrics (`crossmodal.py`): image->text and text->image R@1/5/10, strict and caption-level (a
caption string equal to the query's counts), and VL-SAE's intra / inter similarity of concepts
(top-10 images and texts per concept), embedded by the model's own mean hidden states (centred;
the project's default) and by the aux space (an aligned embedding, as the paper's CLIP is).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from streams import require_evaluation  # noqa: E402

IMAGE, TEXT = 0, 1


def light_split(acts: Path, layer: int, seed: int):  # noqa: ANN201
    """What the metrics read of `oracle_concepts.load_split` (image patches and caption tokens with
    their scene, the captions), without the renderer's patch truth (slow to draw, not needed here)."""
    from types import SimpleNamespace

    from steerlang.dictionary.source import ActivationSource
    from steerlang.world.scenes import make_scene

    x, lab = ActivationSource.from_shards(acts, layer, "image").load(with_labels=True)
    xt, lt = ActivationSource.from_shards(acts, layer, "caption").load(with_labels=True)
    n = int(lab["scene"].max()) + 1
    return SimpleNamespace(x_img=x, img_scene=lab["scene"].long(), x_txt=xt, txt_scene=lt["scene"].long(), n_scenes=n,
                           captions=[make_scene(seed, i).caption for i in range(n)])


def scene_means(split) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    from steerlang.dictionary.crossmodal import pool_mean

    n = split.n_scenes
    return (torch.from_numpy(pool_mean(split.x_img, split.img_scene, n)),
            torch.from_numpy(pool_mean(split.x_txt, split.txt_scene, n)))


def code_metrics(zi: np.ndarray, zt: np.ndarray, captions: list[str], embs: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    from steerlang.dictionary.crossmodal import intra_inter_similarity, recall_at_k

    out = {"i2t": recall_at_k(zi, zt, captions), "t2i": recall_at_k(zt, zi, captions),
           "joint_latents": int(((zi > 0).any(0) & (zt > 0).any(0)).sum())}
    for name, (ei, et) in embs.items():
        out[f"similarity_{name}"] = intra_inter_similarity(zi, zt, ei, et)
    return out


def train_vlsae(x_img: torch.Tensor, x_txt: torch.Tensor, latents: int, k: int, steps: int, seed: int):  # noqa: ANN201
    from steerlang.dictionary.crossmodal import JointConfig, train_joint

    x = torch.cat([x_img, x_txt])
    m = torch.cat([torch.zeros(len(x_img)), torch.ones(len(x_txt))]).long()
    model, hist = train_joint(x, m, JointConfig("vlsae", x.shape[1], latents, k, seed), steps=steps)
    return model, hist[-1]


def encode(model, x: torch.Tensor, modality: int) -> np.ndarray:  # noqa: ANN001
    with torch.no_grad():
        return model.encode(x, torch.full((len(x),), modality)).numpy()


def aligned_separate_codes(sae_img, sae_txt, train, held) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """The held-out pooled (max) codes of the matched pairs, image side mapped through the matching
    (as `crossmodal.aligned_separate_metrics` computes them), for the extra similarity column."""
    from steerlang.dictionary.align import align
    from steerlang.dictionary.crossmodal import pool_max

    def pooled(s):  # noqa: ANN001, ANN202
        with torch.no_grad():
            return pool_max(sae_img.encode(s.x_img), s.img_scene, s.n_scenes), pool_max(sae_txt.encode(s.x_txt), s.txt_scene, s.n_scenes)

    al = align(*pooled(train))
    hi, ht = pooled(held)
    return hi[:, al.image], ht[:, al.text]


def layer_report(L: int, train_acts: Path, eval_acts: Path, args, cache: Path) -> dict:  # noqa: ANN001
    from steerlang.dictionary.aux_align import AuxConfig, train_aux
    from steerlang.dictionary.crossmodal import (
        JointConfig,
        aligned_separate_metrics,
        intra_inter_similarity,
        load_joint,
        pool_max,
        recall_at_k,
        save_joint,
        train_joint,
    )
    from steerlang.dictionary.io import load_dictionary
    t0 = time.perf_counter()
    train = light_split(train_acts, L, args.train_seed)
    held = light_split(eval_acts, L, args.seed)
    caps = held.captions
    tr_i, tr_t = scene_means(train)
    ev_i, ev_t = scene_means(held)

    aux, hist = train_aux(tr_i, tr_t, AuxConfig(d_in=tr_i.shape[1], d_aux=args.aux_dim, hidden=args.aux_hidden,
                                                recon_weight=args.recon_weight, steps=args.aux_steps, seed=args.vseed))
    with torch.no_grad():
        atr_i, atr_t = aux.embed(tr_i, IMAGE), aux.embed(tr_t, TEXT)
        aev_i, aev_t = aux.embed(ev_i, IMAGE), aux.embed(ev_t, TEXT)
    embs = {"model_states": (ev_i.numpy(), ev_t.numpy()), "aux_space": (aev_i.numpy(), aev_t.numpy())}
    rep: dict = {"aux_training_end": hist[-1]}

    shipped = Path(__file__).resolve().parent.parent / "dictionaries" / "toyworld" / "saes"
    si, st = load_dictionary(shipped / f"layer{L}-image"), load_dictionary(shipped / f"layer{L}-text")
    r = aligned_separate_metrics(si, st, train, held, pool="max")
    ci, ct = aligned_separate_codes(si, st, train, held)
    r["similarity_model_states"] = r.pop("similarity")
    r["similarity_aux_space"] = intra_inter_similarity(ci, ct, *embs["aux_space"])
    rep["aligned-separate (shipped SAEs)"] = r

    if args.token_steps > 0:  # the crossmodal.py VL-SAE on token rows, cached as compare_layer caches it
        path = cache / f"vlsae-L{L}-s{args.vseed}-n{args.token_steps}"
        if (path / "cfg.json").exists():
            tok = load_joint(path)
        else:
            x = torch.cat([train.x_img, train.x_txt])
            m = torch.cat([torch.zeros(len(train.x_img)), torch.ones(len(train.x_txt))]).long()
            tok, _ = train_joint(x, m, JointConfig("vlsae", x.shape[1], 1280, 16, args.vseed), steps=args.token_steps)
            save_joint(tok, path)
        n = held.n_scenes
        zi = pool_max(torch.from_numpy(encode(tok, held.x_img, IMAGE)), held.img_scene, n)
        zt = pool_max(torch.from_numpy(encode(tok, held.x_txt, TEXT)), held.txt_scene, n)
        rep["VL-SAE on token rows, no aux"] = code_metrics(zi, zt, caps, embs)

    for name, (a_i, a_t, e_i, e_t) in (("VL-SAE on mean states, no aux", (tr_i, tr_t, ev_i, ev_t)),
                                       ("VL-SAE on the aux space", (atr_i, atr_t, aev_i, aev_t))):
        model, end = train_vlsae(a_i, a_t, args.latents, args.k, args.steps, args.vseed)
        rep[name] = code_metrics(encode(model, e_i, IMAGE), encode(model, e_t, TEXT), caps, embs) | {"training_fvu_end": end}

    mi, mt = tr_i.mean(0), tr_t.mean(0)
    rep["reference: mean states, cosine (no SAE)"] = {"i2t": recall_at_k((ev_i - mi).numpy(), (ev_t - mt).numpy(), caps),
                                                      "t2i": recall_at_k((ev_t - mt).numpy(), (ev_i - mi).numpy(), caps)}
    rep["reference: aux space, cosine (no SAE)"] = {"i2t": recall_at_k(aev_i.numpy(), aev_t.numpy(), caps),
                                                    "t2i": recall_at_k(aev_t.numpy(), aev_i.numpy(), caps)}
    rep["seconds"] = round(time.perf_counter() - t0, 1)
    return rep


def markdown(rep: dict) -> str:
    lines = [f"Evaluation stream {rep['seed']} ({rep['count']} scenes; strict R@1 ceiling for a matcher blind to equal captions: "
             f"{rep['strict_ceiling']:.3f}).", "",
             "| layer | method | i2t R@1 caption-level | i2t R@1 strict | t2i R@1 caption-level | intra / inter (model states) | intra / inter (aux space) | concepts on both sides |",
             "|---|---|---|---|---|---|---|---|"]

    def sim(r: dict, key: str) -> str:
        s = r.get(key)
        return "-" if s is None else f"{s['intra']:.2f} / {s['inter']:.2f}"

    for L, methods in rep["layers"].items():
        for name, r in methods.items():
            if not isinstance(r, dict) or "i2t" not in r:
                continue
            i2t, t2i = r["i2t"], r["t2i"]
            both = r.get("joint_latents", "-")
            lines.append(f"| {L} | {name} | {i2t['caption'][1]:.3f} | {i2t['strict'][1]:.3f} | {t2i['caption'][1]:.3f} | "
                         f"{sim(r, 'similarity_model_states')} | {sim(r, 'similarity_aux_space')} | {both} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2, 3, 4])
    ap.add_argument("--seed", type=int, default=9303, help="evaluation stream")
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--train-seed", type=int, default=2)
    ap.add_argument("--train-count", type=int, default=3000)
    ap.add_argument("--latents", type=int, default=256, help="VL-SAE latents on per-scene states")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--aux-dim", type=int, default=128)
    ap.add_argument("--aux-hidden", type=int, default=0, help="0: linear aux encoder/decoder")
    ap.add_argument("--aux-steps", type=int, default=600)
    ap.add_argument("--recon-weight", type=float, default=1.0)
    ap.add_argument("--token-steps", type=int, default=0, help="steps of a VL-SAE on token rows, an extra row (0: left out; 300 as steer dict align-eval)")
    ap.add_argument("--vseed", type=int, default=0, help="training seed of the models")
    ap.add_argument("--dev", action="store_true", help="allow development streams (report marked development)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/vlsae_aux"))
    args = ap.parse_args()

    from steerlang.dictionary.align import strict_ceiling
    from steerlang.dictionary.api import cache_root, harvested
    from steerlang.world.scenes import make_scene

    streams = require_evaluation([args.seed], dev=args.dev, what="vlsae_aux.py")
    torch.manual_seed(0)
    train_acts = harvested("toyworld", seed=args.train_seed, count=args.train_count)
    eval_acts = harvested("toyworld", seed=args.seed, count=args.count)
    rep = {"streams": streams, "seed": args.seed, "count": args.count, "settings": vars(args) | {"out": str(args.out)},
           "strict_ceiling": strict_ceiling([make_scene(args.seed, i).caption for i in range(args.count)]), "layers": {}}
    for L in args.layers:
        rep["layers"][L] = layer_report(L, train_acts, eval_acts, args, cache_root() / "joint")
        print(markdown({**rep, "layers": {L: rep["layers"][L]}}), file=sys.stderr, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vlsae_aux.json").write_text(json.dumps(rep, indent=1, default=float) + "\n")
    md = markdown(rep)
    (args.out / "vlsae_aux.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
