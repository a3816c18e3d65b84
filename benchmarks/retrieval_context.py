"""How much of image -> text retrieval comes from the caption tokens having seen their own image? (issue 4)

    python benchmarks/retrieval_context.py --out runs/retrieval_context.json --md runs/retrieval_context.md

The concept set's retrieval (`concepts_report.json`, `steer dict align-eval`) reads caption tokens
from the paired forward pass, `<s> prompt <image>*N caption`, as the dictionaries were trained: at
layers >= 1 those states have attended to the very image they are matched against. Here the same
held-out captions (stream 3, 500 scenes) are read again in two other contexts, and image -> text
R@1 is recomputed with the same image codes and the same matching (the builder's: Hungarian on
training-scene correlations, `align`):

- `paired`: as harvested (the concept set's figure);
- `blank image`: the caption after a blank image, same prompt (nothing to leak; out of
  distribution for a caption that names objects);
- `no image`: the prompt and caption alone, image tokens removed (the toy model never saw this).

- `query image` (cross-encoder): every *distinct* held-out caption is read after the query's own
  image, so all candidates have seen the same image and none gains from it; a hit when the query's
  caption matches the query image's aligned code strictly better than every other distinct
  caption (R@1 over the distinct captions, ties against; the first --queries held-out scenes), and
  the share of misses whose best rival is the same words in another order.

Each context is also read through the concept set's joint concepts (the object kinds), as a bag
of their strengths and as the ordered code of `steerlang/dictionary/concept_codes.py` (which
concepts fire, in reading order): if that code of a caption were the caption's own image speaking,
it would fail after a blank image or beside every rival caption after the same image.

Both relevance criteria: strict (own scene only) and caption-level (any scene with the same
caption), with the strict ceiling (what a perfect matcher that cannot tell equal captions apart
reaches). Layer 0 is context-free (token embeddings), so all contexts agree there. ~2 min, plus
~3 s per query for `query image`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CONTEXTS = ("paired", "blank image", "no image")


@torch.no_grad()
def caption_states(bundle, layers: list[int], seed: int, count: int, context: str) -> tuple[dict[int, torch.Tensor], torch.Tensor]:  # noqa: ANN001
    """Caption-token states per layer and their scene ids, read in `context`."""
    from steerlang.dictionary.harvest import LayerCapture, position_labels, scene_batch
    from steerlang.world.scenes import blank_image

    blank = bundle.processor.image_processor([blank_image()], return_tensors="pt")["pixel_values"]
    states: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    scenes = []
    for start in range(0, count, 100):
        ids = range(start, min(count, start + 100))
        batch = scene_batch(bundle, seed, ids)
        keep, modality, _cell = position_labels(bundle, batch)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if context == "blank image":
            inputs["pixel_values"] = blank.expand_as(batch["pixel_values"]).clone()
        elif context == "no image":
            text = batch["input_ids"] != bundle.image_token_id  # every row has the same number of image tokens
            n = len(ids)
            inputs = {"input_ids": batch["input_ids"][text].view(n, -1), "attention_mask": batch["attention_mask"][text].view(n, -1)}
            keep, modality = keep[text].view(n, -1), modality[text].view(n, -1)
        with LayerCapture(bundle, layers) as cap:
            bundle.model(**inputs)
        sel = keep & (modality == 2)  # caption tokens (and </s>)
        scenes.append(torch.tensor(list(ids))[:, None].expand_as(sel)[sel])
        for layer in layers:
            states[layer].append(cap.captured[layer][sel].float())
    return {layer: torch.cat(v) for layer, v in states.items()}, torch.cat(scenes)


@torch.no_grad()
def query_image_codes(bundle, layers: list[int], scene, captions: list[str], saes: dict, cs) -> dict[int, tuple[np.ndarray, np.ndarray]]:  # noqa: ANN001
    """Per layer, for every caption read after `scene`'s image: pooled text-SAE codes [len(captions), d]
    and the concept set's ordered codes [len(captions), K + K*K]."""
    from steerlang.dictionary.build_concepts import Codes
    from steerlang.dictionary.concept_codes import ordered_code, text_codes
    from steerlang.dictionary.harvest import LayerCapture, position_labels
    from steerlang.world.train import Example, collate
    from steerlang.world.vocab import DEFAULT_PROMPT

    batch = collate(bundle, [Example(scene, DEFAULT_PROMPT, c) for c in captions])
    keep, modality, _cell = position_labels(bundle, batch)
    with LayerCapture(bundle, layers) as cap:
        bundle.model(**{k: v for k, v in batch.items() if k != "labels"})
    sel = keep & (modality == 2)
    rows = torch.arange(len(captions))[:, None].expand_as(sel)[sel]
    out = {}
    for layer in layers:
        x = cap.captured[layer][sel].float()
        out[layer] = (Codes.encode(saes[layer], x).pooled(rows, len(captions), saes[layer].cfg.d_sae),
                      ordered_code(text_codes(cs, layer, x, rows, len(captions))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layer", type=int, action="append", default=[])
    ap.add_argument("--dict", type=Path, default=ROOT / "dictionaries" / "toyworld")
    ap.add_argument("--queries", type=int, default=100, help="held-out scenes used as queries in the `query image` context (0: skip)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)

    from steerlang.dictionary.align import (
        align,
        caption_recall,
        cosine_matrix,
        map_image_to_text,
        retrieval_recall,
        strict_ceiling,
    )
    from steerlang.dictionary.api import EVAL_SCENE_SEED, TRAIN_SCENE_SEED, harvested
    from steerlang.dictionary.build_concepts import Codes
    from steerlang.dictionary.concept_codes import concept_set_recall, image_codes, ordered_code
    from steerlang.dictionary.concepts import load_concept_set
    from steerlang.dictionary.io import load_dictionary
    from steerlang.world.model import load_model
    from steerlang.world.oracle_concepts import GRID, load_split

    layers = args.layer or [0, 1, 2, 3, 4]
    bundle = load_model("toyworld")
    train_acts = harvested("toyworld", seed=TRAIN_SCENE_SEED, count=3000)
    held_acts = harvested("toyworld", seed=EVAL_SCENE_SEED, count=500)
    read = {c: caption_states(bundle, layers, EVAL_SCENE_SEED, 500, c) for c in CONTEXTS if c != "paired"}
    report: dict = {"held_out": {"seed": EVAL_SCENE_SEED, "count": 500}, "queries": args.queries, "layers": {}}
    mapped_by_layer: dict[int, np.ndarray] = {}
    ordered_by_layer: dict[int, np.ndarray] = {}
    cs = load_concept_set(args.dict)
    for layer in layers:
        train, held = load_split(train_acts, layer, TRAIN_SCENE_SEED), load_split(held_acts, layer, EVAL_SCENE_SEED)
        sae_i, sae_t = load_dictionary(args.dict / f"saes/layer{layer}-image"), load_dictionary(args.dict / f"saes/layer{layer}-text")
        di, dt = sae_i.cfg.d_sae, sae_t.cfg.d_sae
        pi = Codes.encode(sae_i, train.x_img).pooled(train.img_scene, train.n_scenes, di)
        pt = Codes.encode(sae_t, train.x_txt).pooled(train.txt_scene, train.n_scenes, dt)
        mapped = map_image_to_text(Codes.encode(sae_i, held.x_img).pooled(held.img_scene, held.n_scenes, di), align(pi, pt, min_corr=0.5), dt)
        keys = {"paired": Codes.encode(sae_t, held.x_txt).pooled(held.txt_scene, held.n_scenes, dt)}
        for c, (states, scenes) in read.items():
            keys[c] = Codes.encode(sae_t, states[layer]).pooled(scenes, held.n_scenes, dt)
        report["layers"][str(layer)] = {
            c: {"strict": retrieval_recall(mapped, k), "caption": caption_recall(mapped, k, held.captions)} for c, k in keys.items()}
        report["strict_ceiling"] = strict_ceiling(held.captions)
        mapped_by_layer[layer] = mapped
        # The same contexts through the concept set's joint concepts, in reading order (concept_codes.py).
        concepts = {"paired": concept_set_recall(cs, layer, held, grid_cols=GRID)}
        for c, (states, scenes) in read.items():
            concepts[c] = concept_set_recall(cs, layer, held, grid_cols=GRID, txt=(states[layer], scenes))
        report["layers"][str(layer)]["concepts"] = {c: {"ordered": r["ordered"], "bag": r["bag"]} for c, r in concepts.items()}
        ordered_by_layer[layer] = ordered_code(image_codes(cs, layer, held.x_img, held.img_scene, held.img_cell, held.n_scenes, grid_cols=GRID))
        print(f"layer {layer}: " + "  ".join(f"{c} {v['caption'][1]:.2f}" for c, v in report["layers"][str(layer)].items() if c != "concepts")
              + " | concepts, ordered: " + "  ".join(f"{c} {r['ordered']['i2t']['caption'][1]:.2f}" for c, r in concepts.items()), flush=True)
    if args.queries > 0:
        from tqdm import tqdm

        from steerlang.world.scenes import make_scene

        held_captions = load_split(held_acts, layers[0], EVAL_SCENE_SEED).captions
        distinct = sorted(set(held_captions))
        saes = {layer: load_dictionary(args.dict / f"saes/layer{layer}-text") for layer in layers}
        hits: dict[str, dict[int, list[bool]]] = {code: {layer: [] for layer in layers} for code in ("latents", "concepts")}
        # a miss by a permutation of the kinds
        order_misses: dict[str, dict[int, list[bool]]] = {code: {layer: [] for layer in layers} for code in ("latents", "concepts")}
        for i in tqdm(range(min(args.queries, len(held_captions))), desc="query image", disable=None):
            codes = query_image_codes(bundle, layers, make_scene(EVAL_SCENE_SEED, i), distinct, saes, cs)
            own = distinct.index(held_captions[i])
            for layer in layers:
                for j, (code, query) in enumerate((("latents", mapped_by_layer[layer]), ("concepts", ordered_by_layer[layer]))):
                    sim = cosine_matrix(query[i : i + 1], codes[layer][j])[0]
                    rival = int(np.argmax(np.where(np.arange(len(sim)) == own, -np.inf, sim)))
                    hit = bool(sim[own] > sim[rival])  # ties count against
                    hits[code][layer].append(hit)
                    if not hit:
                        order_misses[code][layer].append(sorted(distinct[rival].split()) == sorted(held_captions[i].split()))
        for layer in layers:
            for code, key in (("latents", "query image"), ("concepts", "query image, concepts ordered")):
                report["layers"][str(layer)][key] = {
                    "caption": {1: float(np.mean(hits[code][layer]))}, "candidates": len(distinct),
                    "misses_by_word_order": float(np.mean(order_misses[code][layer])) if order_misses[code][layer] else 0.0}
    shown = [c for c in (*CONTEXTS, "query image") if c in report["layers"][str(layers[0])]]
    lines = ["| layer | " + " | ".join(f"i2t R@1 {c} (strict / caption)" for c in shown) + " |", "|---|" + "---|" * len(shown)]
    for layer, r in report["layers"].items():
        lines.append(f"| {layer} | " + " | ".join(f"{r[c]['strict'][1]:.2f} / {r[c]['caption'][1]:.2f}" if "strict" in r[c]
                                                  else f"- / {r[c]['caption'][1]:.2f}" for c in shown) + " |")
    lines.append(f"\nStrict ceiling (equal captions indistinguishable, random ties): {report['strict_ceiling']:.3f}")
    if args.queries > 0:
        lines.append("Query-image misses whose best rival has the same words in another order (or ties it): "
                     + ", ".join(f"layer {layer} {r['query image']['misses_by_word_order']:.2f}" for layer, r in report["layers"].items()))
    lines += ["", "The concept set's joint concepts (the kinds) with reading order, caption-level i2t R@1 (bag of strengths alone in brackets):", ""]
    shown = [c for c in (*CONTEXTS, "query image, concepts ordered") if c in report["layers"][str(layers[0])]["concepts"] or c in report["layers"][str(layers[0])]]
    lines += ["| layer | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
    for layer, r in report["layers"].items():
        cells = []
        for c in shown:
            if c in r["concepts"]:
                o, b = r["concepts"][c]["ordered"]["i2t"]["caption"][1], r["concepts"][c]["bag"]["i2t"]["caption"][1]
                cells.append(f"{o:.3f} ({b:.2f})")
            else:
                cells.append(f"{r[c]['caption'][1]:.3f}")
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    from report import save_report

    save_report(report, args.out, args.md, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
