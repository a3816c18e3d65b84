"""The toy world's supervised concept builder: groups chosen with the renderer's patch truth.

An oracle, kept as a benchmark row: a user has no patch truth, and `steer dict build --data` builds
concepts from captions alone (`steerlang.dictionary.caption_concepts`). This builder made the
concept sets shipped before that; it reads the toy world's scenes to label every patch.

Inputs: a model, its image and text SAEs at every layer (`saes.json`), and harvested activations of
training scenes and held-out scenes (toy world: the rendered ground truth is known exactly).

Per layer:
1. Encode every image patch and every caption token with its modality's SAE (sparse codes).
2. Name every live latent from its top-activating scenes (TF-IDF of their captions) and score the
   name by detection on held-out scenes.
3. Align image latents with text latents (Hungarian on scene-pooled activation correlation):
   matched pairs are joint; the rest stay modality-specific.
4. For each name that names an object kind, form a *latent group* per modality: image latents that
   carry the name, chosen greedily (at most `max_group` latents) to keep patch precision high while
   adding recall; text latents that fire on the word. The group's scale is its typical activation
   and its threshold the lowest that keeps training precision above `min_precision`.
   Image groups read their latents *before* TopK (encoder pre-activations, `choose_pre_group`):
   each latent gets its own precise threshold, and the group fires where any latent passes its
   own. A latent that marks a cat's patch can lose the TopK there to latents other kinds share;
   its pre-activation still says "cat". This is done where image states cannot see the prompt
   (`image_read="pre"`: the LM input, or every layer when the image precedes the text). Where they
   can (the toy model reads the question first, so layers >= 1), per-latent thresholds set under
   the describe prompt do not transfer to questions; there the group is a signed weighted sum of
   up to 32 latents' pre-activations (`choose_linear_group`, `image_read="linear"`) fitted on
   states harvested under describe prompts and yes/no questions together. The fallback, when no
   such group is precise enough, reads TopK codes (`choose_image_group`).
   Text groups are latents that fire on the word, or, where that is less accurate on training
   tokens, a signed sum of pre-activations (`choose_text_group`).
5. Retrieval over the kinds' joint concepts, with and without reading order (`concept_codes`).
A concept is then one variable across layers: same name, one group per (layer, modality).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from steerlang.dictionary.align import (
    align,
    caption_recall,
    map_image_to_text,
    retrieval_recall,
    strict_ceiling,
)
from steerlang.dictionary.build_concepts import (
    Codes,
    choose_extent,
    choose_image_group,
    choose_linear_group,
    choose_pre_group,
    choose_text_group,
    concept_retrieval,
    name_latents,
    object_mask,
    precision_recall,
    scene_grid,
    text_entry,
)
from steerlang.dictionary.name import balanced_accuracy
from steerlang.dictionary.sae import SAE
from steerlang.dictionary.source import ActivationSource
from steerlang.world.scenes import IMAGE_SIZE, KINDS, PATCH_SIZE, make_scene, patch_pixel_counts

GRID = IMAGE_SIZE // PATCH_SIZE  # patches per image row

BACKGROUND = len(KINDS)  # label of a patch with no object pixel
STRICT_PIXELS = 8  # ground truth: a patch belongs to an object when >= 8 of its pixels do

@dataclass
class Split:
    """Rows of one layer for one set of scenes, with their ground truth."""

    x_img: Tensor  # [Ni, d] raw hidden states of image patches
    img_scene: Tensor  # [Ni]
    img_cell: Tensor  # [Ni] patch index
    img_label: Tensor  # [Ni] kind index under the strict ground truth (BACKGROUND otherwise)
    img_any: Tensor  # [Ni] kind index of any object pixel in the patch (BACKGROUND if none)
    x_txt: Tensor  # [Nt, d] caption tokens
    txt_scene: Tensor  # [Nt]
    txt_token: list[str]  # [Nt]
    captions: list[str]  # [n_scenes]
    n_scenes: int
    kinds_present: np.ndarray  # [n_scenes, n_kinds] bool
    grid: tuple[int, int] = (GRID, GRID)


def load_split(acts_dir: Any, layer: int, seed: int, *, images_only: bool = False) -> Split:
    """Image patches and caption tokens of one layer from a harvest, with toy-world ground truth.
    images_only: leave the answer tokens out (a question harvest's answers are yes/no, not captions)."""
    x, lab = ActivationSource.from_shards(acts_dir, layer, "image").load(with_labels=True)
    scene_ids = lab["scene"].long()
    n_scenes = int(scene_ids.max()) + 1
    scenes = [make_scene(seed, i) for i in range(n_scenes)]
    strict = torch.full((n_scenes, 81), BACKGROUND, dtype=torch.long)
    anyp = torch.full((n_scenes, 81), BACKGROUND, dtype=torch.long)
    for i, s in enumerate(scenes):
        counts = torch.from_numpy(patch_pixel_counts(s))
        for obj, c in zip(s.objects, counts, strict=True):
            k = KINDS.index(obj.kind)
            strict[i][c >= STRICT_PIXELS] = k
            anyp[i][c > 0] = k
    cell = lab["cell"].long()
    present = np.array([[k in s.kinds for k in KINDS] for s in scenes])
    if images_only:
        return Split(x, scene_ids, cell, strict[scene_ids, cell], anyp[scene_ids, cell], x[:0], scene_ids[:0], [],
                     [s.caption for s in scenes], n_scenes, present)
    xt, lt = ActivationSource.from_shards(acts_dir, layer, "caption").load(with_labels=True)
    t_scene = lt["scene"].long()
    tokens: list[str] = []
    # Caption rows of a scene come in position order: the caption's words, then </s>.
    order = torch.argsort(t_scene * 10_000 + lt["position"].long())
    xt, t_scene = xt[order], t_scene[order]
    for i in range(n_scenes):
        words = scenes[i].caption.split() + ["</s>"]
        tokens += words[: int((t_scene == i).sum())]
    return Split(x, scene_ids, cell, strict[scene_ids, cell], anyp[scene_ids, cell], xt, t_scene, tokens,
                 [s.caption for s in scenes], n_scenes, present)


@dataclass
class LayerReport:
    layer: int
    retrieval_i2t: dict[int, float] = field(default_factory=dict)
    retrieval_t2i: dict[int, float] = field(default_factory=dict)
    # Relevance by caption: a retrieved text (image) counts when its scene's caption is the query's.
    retrieval_i2t_caption: dict[int, float] = field(default_factory=dict)
    retrieval_t2i_caption: dict[int, float] = field(default_factory=dict)
    strict_ceiling: float = 0.0  # strict R@1 of a perfect matcher that cannot tell equal captions apart
    # R@k over the kinds' joint concepts: a bag of their strengths, and with reading order (concept_codes)
    concept_retrieval: dict[str, Any] = field(default_factory=dict)
    matched: int = 0
    matching_rate: float = 0.0
    kinds: dict[str, dict[str, Any]] = field(default_factory=dict)


def build_layer(
    layer: int, sae_img: SAE, sae_txt: SAE, train: Split, held: Split, *, min_precision: float = 0.95,
    pre_precision: float = 0.93, max_group: int = 8, image_read: str = "pre", linear_group: int = 32,
    questions: tuple[Split, Split] | None = None, log: Callable[[str], None] = lambda _m: None,
) -> tuple[LayerReport, dict[str, Any]]:
    """Everything the concept set needs from one layer (see the module docstring).

    `questions`: (training, held-out) image states of the same kind of scenes harvested under
    yes/no questions; "linear" groups are fitted on both prompt sets, and every image group's
    held-out precision / recall under questions is reported beside the describe-prompt figures.
    """
    if image_read not in ("code", "pre", "linear"):
        raise ValueError(f"image_read: 'code', 'pre' or 'linear', got {image_read!r}")
    ci, ct = Codes.encode(sae_img, train.x_img), Codes.encode(sae_txt, train.x_txt)
    with torch.no_grad():
        pre, held_pre = sae_img.pre_acts(train.x_img), sae_img.pre_acts(held.x_img)
        q_pre = tuple(sae_img.pre_acts(s.x_img) for s in questions) if questions else None
        txt_pre, held_txt_pre = sae_txt.pre_acts(train.x_txt), sae_txt.pre_acts(held.x_txt)
    q_codes = Codes.encode(sae_img, questions[1].x_img) if questions else None
    # "linear" groups fit on both prompt sets; concatenated once for all kinds (~1.5 GB at 1,024 latents).
    fit_pre, fit_labels = pre, train.img_label
    if image_read == "linear" and questions and q_pre:
        fit_pre, fit_labels = torch.cat([pre, q_pre[0]]), torch.cat([train.img_label, questions[0].img_label])
    hi, ht = Codes.encode(sae_img, held.x_img), Codes.encode(sae_txt, held.x_txt)
    di, dt = sae_img.cfg.d_sae, sae_txt.cfg.d_sae
    pi, pt = ci.pooled(train.img_scene, train.n_scenes, di), ct.pooled(train.txt_scene, train.n_scenes, dt)
    hpi, hpt = hi.pooled(held.img_scene, held.n_scenes, di), ht.pooled(held.txt_scene, held.n_scenes, dt)
    img_names = name_latents(pi, train.captions, hpi, held.captions, "image")
    txt_names = name_latents(pt, train.captions, hpt, held.captions, "text")
    al = align(pi, pt, min_corr=0.5)
    report = LayerReport(layer, matched=len(al.image))
    mapped = map_image_to_text(hpi, al, dt)
    report.retrieval_i2t = retrieval_recall(mapped, hpt)
    report.retrieval_t2i = retrieval_recall(hpt, mapped)
    report.retrieval_i2t_caption = caption_recall(mapped, hpt, held.captions)
    report.retrieval_t2i_caption = caption_recall(hpt, mapped, held.captions)
    report.strict_ceiling = strict_ceiling(held.captions)
    # Matching rate: top-3 image latents of each held-out image (no latent firing on > 5% of patches).
    patch_freq = ci.fire_counts(torch.zeros_like(train.img_label), 1, di)[:, 0] / len(train.img_label)
    eligible = np.array([j in img_names and patch_freq[j] <= 0.05 for j in range(di)])
    matches = []
    for s in range(held.n_scenes):
        scores = np.where(eligible, hpi[s], -1)
        top3 = [j for j in np.argsort(-scores)[:3] if scores[j] > 0]
        matches.append(any(img_names[j]["name"] in held.captions[s].split() for j in top3))
    report.matching_rate = float(np.mean(matches))
    # Monosemanticity per kind: of the latents that fire on >= 10% of a kind's patches, the best
    # purity (the fraction of the latent's firings that land on that kind's patches).
    fc = hi.fire_counts(held.img_label, BACKGROUND + 1, di)  # [d_sae, kinds + background]
    fired = fc.sum(1)
    for k, kind in enumerate(KINDS):
        n_k = max(int((held.img_label == k).sum()), 1)
        ok = fc[:, k] / n_k >= 0.1
        purity = np.where(ok, fc[:, k] / np.maximum(fired, 1), 0)
        j = int(np.argmax(purity))
        report.kinds.setdefault(kind, {})["best_latent"] = {"latent": j, "purity": float(purity[j]), "recall": float(fc[j, k] / n_k)}
    groups: dict[str, Any] = {"image": {}, "text": {}, "names": {"image": img_names, "text": txt_names},
                              "alignment": {"image": al.image.tolist(), "text": al.text.tolist(), "corr": al.corr.tolist()}}
    # Candidates for a kind's group: latents named after it, and latents whose training firings
    # land mostly (>= 80%) on its patches (a latent for a house's roof may be named by a co-occurring
    # word, yet mark house patches precisely).
    train_fc = ci.fire_counts(train.img_label, BACKGROUND + 1, di)
    train_purity = train_fc / np.maximum(train_fc.sum(1, keepdims=True), 1)
    both_sides: dict[str, dict[str, tuple[Tensor, float]]] = {}  # held-out activations for concept retrieval
    for k, kind in enumerate(KINDS):
        cands = sorted({j for j, n in img_names.items() if n["name"] == kind}
                       | {int(j) for j in np.nonzero((train_purity[:, k] >= 0.8) & (train_fc[:, k] >= 20))[0]})
        # Read before TopK, candidates are latents with >= 30% of their training firings on the kind.
        pre_cands = sorted(set(cands) | {int(j) for j in np.nonzero((train_purity[:, k] >= 0.3) & (train_fc[:, k] >= 20))[0]})
        g = None
        if image_read == "pre":
            g = choose_pre_group(pre, train.img_label, k, pre_cands, max_group=max_group, min_precision=pre_precision)
        elif image_read == "linear":
            g = choose_linear_group(fit_pre, fit_labels, k, pre_cands, max_group=linear_group, min_precision=pre_precision)
        if g is None:
            g = choose_image_group(ci, train.img_label, k, cands, min_precision=min_precision, max_group=max_group)
        tg = choose_text_group(ct, train.txt_token, kind, dt, pre=txt_pre)
        entry: dict[str, Any] = {}
        if g is not None:
            extent = choose_extent(ci, train, k, g.activation(ci, pre) > g.threshold)
            held_act = g.activation(hi, held_pre)
            fires = held_act > g.threshold
            both_sides.setdefault(kind, {})["image"] = (held_act, g.threshold)
            mask = object_mask(held, hi, fires, extent).view(-1)
            truth8, truth_any = scene_grid(held, held.img_label == k, False).view(-1), scene_grid(held, held.img_any == k, False).view(-1)
            mp8, mr8 = precision_recall(mask, truth8)
            mpa, mra = precision_recall(mask, truth_any)
            p8, r8 = precision_recall(fires, held.img_label == k)
            pa, ra = precision_recall(fires, held.img_any == k)
            scene_fires = np.zeros(held.n_scenes, dtype=bool)
            scene_fires[held.img_scene[fires].numpy()] = True
            det = balanced_accuracy(scene_fires, held.kinds_present[:, k])
            entry = {"latents": g.latents, "read": g.read, "weights": g.weights or [1.0] * len(g.latents), "offsets": g.offsets,
                     "scale": g.scale, "threshold": g.threshold, "precision": p8, "recall": r8,
                     "precision_any_pixel": pa, "recall_any_pixel": ra, "detection": det,
                     "train_precision": g.train_precision, "train_recall": g.train_recall, "extent": extent,
                     "mask": {"precision": mp8, "recall": mr8, "precision_any_pixel": mpa, "recall_any_pixel": mra}}
            if questions and q_pre and q_codes is not None:
                qp, qr = precision_recall(g.activation(q_codes, q_pre[1]) > g.threshold, questions[1].img_label == k)
                entry["under_questions"] = {"precision": qp, "recall": qr}
            groups["image"][kind] = entry
        if tg is not None:
            t_act, groups["text"][kind] = text_entry(tg, ht, held_txt_pre, held.txt_token, kind)
            both_sides.setdefault(kind, {})["text"] = (t_act, tg.threshold)
        report.kinds[kind].update({"image": {k2: v for k2, v in entry.items() if k2 != "latents"},
                                   "text": groups["text"].get(kind, {})})
        mk = entry.get("mask", {})
        log(f"layer {layer} {kind}: image {entry.get('latents')} P {entry.get('precision', 0):.3f} R {entry.get('recall', 0):.3f} "
            f"det {entry.get('detection', 0):.3f}; mask (+{len(entry.get('extent', []))} extent) P {mk.get('precision', 0):.3f} "
            f"R {mk.get('recall', 0):.3f}; text {groups['text'].get(kind, {}).get('latents')}")
    report.concept_retrieval = kind_recall(held, both_sides)
    return report, groups


def kind_recall(held: Split, both_sides: dict[str, dict[str, tuple[Tensor, float]]]) -> dict[str, Any]:
    """`concept_recall` over the kinds that have an image and a text group (held-out activations)."""
    return concept_retrieval(held, both_sides, KINDS)


@torch.no_grad()
def reference_states(bundle: Any, layers: Sequence[int], acts_dir: Any, seed: int) -> dict[str, Tensor]:
    """Blank-image states per layer, and per-kind prototypes per layer (mean state of each patch
    position over training scenes where the kind sits in that patch's cell)."""
    from steerlang.dictionary.harvest import LayerCapture
    from steerlang.world.scenes import blank_image
    from steerlang.world.vocab import DEFAULT_PROMPT

    out: dict[str, Tensor] = {}
    enc = bundle.encode([blank_image()], [DEFAULT_PROMPT])
    with LayerCapture(bundle, layers) as cap:
        bundle.model(**enc)
    is_img = enc["input_ids"][0] == bundle.image_token_id
    for layer in layers:
        out[f"background.L{layer}"] = cap.captured[layer][0][is_img].float().clone()
    rows, cols = bundle.patch_grid
    cell_of_patch = torch.tensor([(p // cols) // (rows // 3) * 3 + (p % cols) // (cols // 3) for p in range(rows * cols)])
    for layer in layers:
        x, lab = ActivationSource.from_shards(acts_dir, layer, "image").load(with_labels=True)
        scene, patch = lab["scene"].long(), lab["cell"].long()
        n_scenes = int(scene.max()) + 1
        kind_at_cell = torch.full((n_scenes, 9), -1, dtype=torch.long)
        for i in range(n_scenes):
            for o in make_scene(seed, i).objects:
                kind_at_cell[i, o.cell] = KINDS.index(o.kind)
        row_kind = kind_at_cell[scene, cell_of_patch[patch]]
        for k in range(len(KINDS)):
            sel = row_kind == k
            sums = torch.zeros(rows * cols, x.shape[1]).index_add_(0, patch[sel], x[sel])
            count = torch.bincount(patch[sel], minlength=rows * cols).float()
            out[f"prototype.{k}.L{layer}"] = sums / count.clamp(min=1)[:, None]
            out[f"prototype.{k}.L{layer}.count"] = count
    return out


def assemble_kind_concepts(layer_groups: dict[int, dict[str, Any]], *, min_detection: float = 0.75) -> list[Any]:
    """`assemble_concepts` with the toy world's kinds as the concept words."""
    from steerlang.dictionary.build_concepts import assemble_concepts

    return assemble_concepts(layer_groups, words=KINDS, min_detection=min_detection)
