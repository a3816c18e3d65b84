"""Train the toy model from scratch on freshly generated scenes (CPU, minutes) and evaluate it;
fine-tune a model on an image–caption corpus (`finetune_model`, below).

Two tasks share every batch: describing the picture (the caption) and the yes/no probe
"is there a X ?". The loss covers answer tokens only.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from steerlang.world.model import ModelBundle, build_processor, build_toy_model
from steerlang.world.scenes import KINDS, Scene, make_scene, patch_pixel_counts, render
from steerlang.world.vocab import DESCRIBE_PROMPTS, EOS, question_for

TRAIN_SEED = 1  # the scene stream used for training; evaluation uses other seeds
AUX_WEIGHT = 0.5
ORDER_LAYER = 2  # residual stream (entering block 2) where the training-only order head reads
N_ORDER = 3  # an object's rank in reading order: 0, 1 or 2


@dataclass(frozen=True)
class ToyTrainConfig:
    steps: int = 880
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.01
    seed: int = 0
    threads: int = 2
    template: str = "{prompt} {image}"
    tie_embeddings: bool = False
    grounding: bool = True
    order_head: bool = True  # training-only head: each object's patches learn their rank in reading order
    describe_fraction: float = 0.6
    eval_every: int = 0  # steps; report a quick yes/no and caption check through on_eval


@dataclass(frozen=True)
class Example:
    scene: Scene
    prompt: str
    answer: str


@dataclass(frozen=True)
class CorpusExample:
    """A training example read from an image–caption corpus: the processed image, a prompt, the answer."""

    pixels: torch.Tensor  # (channels, height, width), as the bundle's image processor gives it
    prompt: str
    answer: str


def training_example(scene: Scene, rng: np.random.Generator, describe_fraction: float = 0.5) -> Example:
    """A description, or a balanced yes/no question about a present or an absent kind."""
    if rng.random() < describe_fraction:
        return Example(scene, str(rng.choice(DESCRIBE_PROMPTS)), scene.caption)
    return question_example(scene, rng)


def question_example(scene: Scene, rng: np.random.Generator) -> Example:
    """"is there a X ?" about a present kind ("yes") or an absent one ("no"), half each."""
    if rng.random() < 0.5:
        return Example(scene, question_for(str(rng.choice(scene.kinds))), "yes")
    absent = [k for k in KINDS if k not in scene.kinds]
    return Example(scene, question_for(str(rng.choice(absent))), "no")


def grounding_labels(tok, ex: Example) -> list[int]:  # noqa: ANN001 - a transformers tokenizer
    """Auxiliary per-patch targets read at image positions (training only; never generated).

    Describing: a patch covered by an object (>= 8 of its pixels) is labelled with the kind's word.
    A question "is there a X ?": each patch is labelled "yes" where X covers it, else "no" — the
    patch-level half of the probe, which the prompt-first template lets patches compute (they
    attend to the question); the final answer then only has to gather it.
    """
    counts = patch_pixel_counts(ex.scene)
    covered = counts >= 8
    words = ex.prompt.split()
    if words[:3] == ["is", "there", "a"]:
        asked = words[3]
        hit = np.zeros(counts.shape[1], dtype=bool)
        for obj, cov in zip(ex.scene.objects, covered, strict=True):
            if obj.kind == asked:
                hit |= cov
        yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
        return [yes if h else no for h in hit]
    out = [-100] * counts.shape[1]
    for obj, cov in zip(ex.scene.objects, covered, strict=True):
        kid = tok.convert_tokens_to_ids(obj.kind)
        for p in np.nonzero(cov)[0]:
            out[p] = kid
    return out


def order_labels(scene: Scene) -> list[int]:
    """Per-patch targets for the training-only order head: the object's rank in reading order
    (how many objects come before it); -100 off objects.

    Captions name objects in reading order, and the errors a plain model makes are swapped orders.
    The rank says nothing about *which* kinds surround an object: a target such as "the next
    object's kind" taught the vision tower to write each neighbour's kind into an object's patches,
    and removing the cat's patches then left "cat" readable next door (oracle removal fell from
    100% to 95%).
    """
    covered = patch_pixel_counts(scene) >= 8
    rank = [-100] * covered.shape[1]
    for i, cov in enumerate(covered):
        for p in np.nonzero(cov)[0]:
            rank[p] = i
    return rank


def collate(bundle: ModelBundle, examples: Sequence[Example | CorpusExample], *, grounding: bool = False) -> dict[str, torch.Tensor]:
    """Right-padded teacher-forced batch: <s> prompt <image>*N answer </s> (or the image first, as
    the bundle's template says); labels on the answer only; with `grounding`, also the
    auxiliary per-patch targets (`grounding_labels`) as "aux_labels"."""
    if grounding and any(isinstance(ex, CorpusExample) for ex in examples):
        raise ValueError("grounding targets need the scene's truth; a corpus example has only an image and a caption")
    tok = bundle.tokenizer
    n_img = bundle.patch_grid[0] * bundle.patch_grid[1]
    rows, labels, aux = [], [], []
    for ex in examples:
        prompt = tok(ex.prompt, add_special_tokens=False).input_ids
        answer = tok(ex.answer, add_special_tokens=False).input_ids + [tok.convert_tokens_to_ids(EOS)]
        image = [bundle.image_token_id] * n_img
        first, second = (prompt, image) if bundle.template.index("{prompt}") < bundle.template.index("{image}") else (image, prompt)
        head = [tok.bos_token_id] + first + second
        rows.append(head + answer)
        labels.append([-100] * len(head) + answer)
        if grounding:
            start = 1 + len(first) if first is prompt else 1
            row_aux = [-100] * len(head)
            row_aux[start : start + n_img] = grounding_labels(tok, ex)
            row_rank = [-100] * len(head)
            row_rank[start : start + n_img] = order_labels(ex.scene)
            aux.append((row_aux, row_rank))
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_token_id)
    lab = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, lb) in enumerate(zip(rows, labels, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        lab[i, : len(lb)] = torch.tensor(lb)
        mask[i, : len(r)] = 1
    if all(isinstance(ex, CorpusExample) for ex in examples):  # a corpus's images, processed once when read
        pixels = torch.stack([ex.pixels for ex in examples])
    else:
        pixels = bundle.processor.image_processor([render(ex.scene) for ex in examples], return_tensors="pt")["pixel_values"]  # type: ignore[attr-defined]
    batch = {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels, "labels": lab}
    if grounding:
        for j, key in enumerate(("aux_labels", "rank_labels")):
            t = torch.full((len(rows), width), -100)
            for i, a in enumerate(aux):
                t[i, : len(a[j])] = torch.tensor(a[j])
            batch[key] = t
    return batch


def _masked_mean_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over examples of the mean cross-entropy over each example's labelled positions."""
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    m = (labels != -100).float()
    return ((ce * m).sum(1) / m.sum(1).clamp(min=1)).mean()


AUX_KEYS = ("labels", "aux_labels", "rank_labels")


def example_balanced_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], order_head: torch.nn.Module | None = None
) -> torch.Tensor:
    """Mean over examples of each example's mean answer-token loss.

    A plain token mean lets a 10-token caption outweigh a 2-token "yes </s>" five times, and the
    yes/no probe then never gets learned; weighting examples equally fixes that.
    """
    out = model(**{k: v for k, v in batch.items() if k not in AUX_KEYS}, output_hidden_states=order_head is not None)
    full = out.logits
    loss = _masked_mean_ce(full[:, :-1], batch["labels"][:, 1:])
    if "aux_labels" in batch:  # read at the position itself, not shifted
        loss = loss + AUX_WEIGHT * _masked_mean_ce(full, batch["aux_labels"])
    if order_head is not None and "rank_labels" in batch:
        loss = loss + AUX_WEIGHT * _masked_mean_ce(order_head(out.hidden_states[ORDER_LAYER]), batch["rank_labels"])
    return loss


def train_toy_model(
    cfg: ToyTrainConfig = ToyTrainConfig(),
    *,
    on_step: Callable[[int, float], None] | None = None,
) -> ModelBundle:
    """Train a fresh toy model; `on_step(step, loss)` reports progress (the CLI draws a bar)."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    processor = build_processor()
    model = build_toy_model(len(processor.tokenizer), seed=cfg.seed, tie_embeddings=cfg.tie_embeddings)
    bundle = ModelBundle("toyworld", model, processor, template=cfg.template)
    # Discarded after training: it only shapes what the image positions carry.
    order_head = torch.nn.Linear(model.config.text_config.hidden_size, N_ORDER) if cfg.order_head and cfg.grounding else None
    params = list(model.parameters()) + (list(order_head.parameters()) if order_head is not None else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    rng = np.random.default_rng([cfg.seed, 12345])
    model.train()
    for step in range(cfg.steps):
        scenes = [make_scene(TRAIN_SEED, step * cfg.batch_size + i) for i in range(cfg.batch_size)]
        batch = collate(bundle, [training_example(s, rng, cfg.describe_fraction) for s in scenes], grounding=cfg.grounding)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = example_balanced_loss(model, batch, order_head)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if on_step is not None:
            on_step(step, loss.item())
    model.eval()
    return bundle


@dataclass(frozen=True)
class ToyEval:
    caption_accuracy: float
    yesno_accuracy: float
    n_scenes: int
    n_questions: int
    seconds: float
    caption_errors: list[tuple[str, str]]


def evaluate(bundle: ModelBundle, *, seed: int = 99, count: int = 500) -> ToyEval:
    """Exact-match captions on `count` held-out scenes, and yes/no accuracy on a balanced set.

    The yes/no set asks, for every scene, about one present kind and one absent kind.
    """
    t0 = time.perf_counter()
    scenes = [make_scene(seed, i) for i in range(count)]
    images = [render(s) for s in scenes]
    captions = bundle.generate(images, DESCRIBE_PROMPTS[0], max_new_tokens=16)
    errors = [(s.caption, c) for s, c in zip(scenes, captions, strict=True) if c != s.caption]
    rng = np.random.default_rng([seed, 777])
    q_images, prompts, truths = [], [], []
    for s, img in zip(scenes, images, strict=True):
        absent = [k for k in KINDS if k not in s.kinds]
        for kind, truth in ((str(rng.choice(s.kinds)), "yes"), (str(rng.choice(absent)), "no")):
            q_images.append(img)
            prompts.append(question_for(kind))
            truths.append(truth)
    answers = bundle.generate(q_images, prompts, max_new_tokens=2)
    yes_no = float(np.mean([a == t for a, t in zip(answers, truths, strict=True)]))
    return ToyEval(
        caption_accuracy=1 - len(errors) / count,
        yesno_accuracy=yes_no,
        n_scenes=count,
        n_questions=len(truths),
        seconds=time.perf_counter() - t0,
        caption_errors=errors[:10],
    )


# --- Fine-tuning on an image–caption corpus ---------------------------------------------------
#
# `train_toy_model` above draws scenes from the renderer and knows each scene's truth (which
# patches hold which kind, the objects' order). A corpus gives only images and captions, so
# fine-tuning supervises what a caption can supply: the caption itself as the answer to a describe
# prompt, and yes/no questions derived from the caption's words ("is there a cat ?" is "yes" when
# the caption names a cat, "no" for a kind it does not name). A wrong caption therefore teaches a
# wrong caption *and* wrong answers, as it would in a user's corpus. No grounding or order targets.

FINETUNE_STREAM = 54321  # mixed into the seed of the fine-tuning rng (data order, prompts, questions)


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 30
    weight_decay: float = 0.01
    seed: int = 0
    threads: int = 2
    describe_fraction: float = 0.6  # the rest are yes/no questions derived from the caption
    questions: bool = True  # False: every example is a description
    projector_only: bool = False  # train the projector alone (vision tower and language model frozen)
    sae_weight: float = 1.0  # weight of the SAE regulariser (`finetune_model(..., sae=...)`, VISTA)


@dataclass
class CaptionCorpus:
    """An image–caption corpus read into memory for training: processed images and their captions."""

    pixels: torch.Tensor  # (n, channels, height, width)
    captions: list[str]
    prompts: list[str | None]  # a row's own prompt (`prompt_column`), else None
    rows: list[int]  # each sample's row in its source
    source: str
    bad_rows: dict[str, int]
    unknown_words: int  # captions holding a word outside the model's vocabulary

    def __len__(self) -> int:
        return len(self.captions)


def read_caption_corpus(
    data: str | os.PathLike,
    bundle: ModelBundle,
    *,
    caption_column: str = "text",
    prompt_column: str | None = None,
    split: str | None = None,
    chunk: int = 256,
) -> CaptionCorpus:
    """Read every usable sample of `data` (any corpus `steerlang.data.open_dataset` reads) and
    process its image with the bundle's image processor. Bad rows are skipped and counted; only the
    image, the caption and the optional prompt are read (never `Sample.truth`)."""
    from steerlang.data import open_dataset
    from steerlang.errors import InputError

    ds = open_dataset(data, caption_column=caption_column, prompt_column=prompt_column, split=split, arg="--data")
    image_processor = bundle.processor.image_processor  # type: ignore[attr-defined]
    chunks: list[torch.Tensor] = []
    captions: list[str] = []
    prompts: list[str | None] = []
    rows: list[int] = []
    pending: list = []
    stream = ds.iter()
    for sample in stream:
        pending.append(sample.image)
        captions.append(sample.text)
        prompts.append(sample.prompt or None)
        rows.append(sample.row)
        if len(pending) == chunk:
            chunks.append(image_processor(pending, return_tensors="pt")["pixel_values"])
            pending = []
    if pending:
        chunks.append(image_processor(pending, return_tensors="pt")["pixel_values"])
    if not captions:
        raise InputError(f"--data: {data} has no usable sample ({stream.report.n_bad} bad rows)")
    tok = bundle.tokenizer
    unknown = sum(tok.unk_token_id in tok(c, add_special_tokens=False).input_ids for c in captions)
    return CaptionCorpus(
        pixels=torch.cat(chunks), captions=captions, prompts=prompts, rows=rows, source=os.fspath(data),
        bad_rows=dict(stream.report.bad_by_reason()), unknown_words=unknown,
    )


def caption_question(caption: str, rng: np.random.Generator) -> tuple[str, str]:
    """A yes/no question and its answer from a caption's words alone: about a kind the caption
    names ("yes") or one it does not name ("no"), half each when both exist."""
    named = [k for k in KINDS if k in caption.split()]
    absent = [k for k in KINDS if k not in named]
    if named and (not absent or rng.random() < 0.5):
        return question_for(str(rng.choice(named))), "yes"
    return question_for(str(rng.choice(absent))), "no"


def corpus_example(corpus: CaptionCorpus, i: int, rng: np.random.Generator, cfg: FinetuneConfig) -> CorpusExample:
    """Sample i as a description (its own prompt if the row has one, else a describe prompt) or,
    with `cfg.questions`, a yes/no question derived from its caption."""
    if not cfg.questions or rng.random() < cfg.describe_fraction:
        prompt = corpus.prompts[i] or str(rng.choice(DESCRIBE_PROMPTS))
        return CorpusExample(corpus.pixels[i], prompt, corpus.captions[i])
    prompt, answer = caption_question(corpus.captions[i], rng)
    return CorpusExample(corpus.pixels[i], prompt, answer)


def fresh_toy_bundle(seed: int = 0) -> ModelBundle:
    """A freshly initialised toy model with the toy world's processor and template."""
    processor = build_processor()
    model = build_toy_model(len(processor.tokenizer), seed=seed)
    return ModelBundle("toyworld", model, processor, template=ToyTrainConfig.template)


def finetune_model(
    bundle: ModelBundle,
    corpus: CaptionCorpus,
    cfg: FinetuneConfig = FinetuneConfig(),
    *,
    sae: torch.nn.Module | None = None,
    on_step: Callable[[int, float], None] | None = None,
    log: list[dict] | None = None,
) -> ModelBundle:
    """Train `bundle`'s model in place on `corpus` for `cfg.steps` steps of `cfg.batch_size`
    examples (AdamW, linear warmup, cosine decay to 10%, as `train_toy_model`); the corpus is
    walked in a fresh seeded permutation every epoch. Returns the bundle, in eval mode.

    `cfg.projector_only` trains the projector alone. With `sae` (a text SAE; its layer is
    `sae.cfg.layer`), the loss adds `cfg.sae_weight` times the SAE's FVU on the image positions'
    hidden states at that layer (`sae_image_fvu`; VISTA's regulariser; the SAE stays frozen).
    `log` receives {"step", "lm", "sae_fvu"} per step (`sae_fvu` only with an SAE)."""
    from steerlang.errors import InputError

    if bundle.chat:
        raise InputError("--from: fine-tuning supports models prompted with a plain template (like the toy "
                         "model), not a chat template")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = bundle.model
    params = freeze_all_but_projector(model) if cfg.projector_only else [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    if sae is not None:
        sae.requires_grad_(False)

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    rng = np.random.default_rng([cfg.seed, FINETUNE_STREAM])
    order: list[int] = []
    model.train()
    for step in range(cfg.steps):
        picks = []
        while len(picks) < cfg.batch_size:
            if not order:
                order = rng.permutation(len(corpus)).tolist()
            picks.append(order.pop())
        batch = collate(bundle, [corpus_example(corpus, i, rng, cfg) for i in picks])
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        if sae is None:
            lm = loss = example_balanced_loss(model, batch)
            fvu = None
        else:
            with ImageStates(bundle, sae.cfg.layer, batch["input_ids"]) as states:
                lm = example_balanced_loss(model, batch)
            fvu = sae_image_fvu(sae, states.value)
            loss = lm + cfg.sae_weight * fvu
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if log is not None:
            log.append({"step": step, "lm": lm.item(), **({"sae_fvu": fvu.item()} if fvu is not None else {})})
        if on_step is not None:
            on_step(step, loss.item())
    model.eval()
    return bundle


# --- VISTA: a text SAE's reconstruction at image positions as a regulariser ---------------------
#
# VISTA ("Interpretability Transfer from Language to Vision via Sparse Autoencoders") trains a
# LLaVA projector with the language model's cross-entropy plus the reconstruction loss of the LLM's
# pre-trained *text* SAE on the image tokens' hidden states, vision tower, LLM and SAE frozen, so that
# image tokens land where the text SAE's labelled latents can read them. Here: the FVU of one text
# SAE at its layer, over the image positions of the batch.


def projector_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) of the multimodal projector (LLaVA: `multi_modal_projector`)."""
    out = [(n, p) for n, p in model.named_parameters() if "multi_modal_projector" in n]
    if not out:
        from steerlang.errors import InputError

        raise InputError("--projector-only: this model has no `multi_modal_projector` (a LLaVA-style projector)")
    return out


def freeze_all_but_projector(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Freeze every parameter except the projector's; returns the projector's parameters."""
    model.requires_grad_(False)
    params = [p for _n, p in projector_parameters(model)]
    for p in params:
        p.requires_grad_(True)
    return params


class ImageStates:
    """Context manager: the hidden states of the image positions at steerlang layer `layer` during
    one forward pass (gradients kept), as `value` [n_image_tokens, d]."""

    def __init__(self, bundle: ModelBundle, layer: int, input_ids: torch.Tensor) -> None:
        self.bundle, self.layer = bundle, layer
        self.mask = input_ids == bundle.image_token_id
        self.value: torch.Tensor | None = None

    def __enter__(self) -> ImageStates:
        from steerlang.dictionary.harvest import hook_point

        module, is_pre = hook_point(self.bundle, self.layer)

        def keep(h: torch.Tensor) -> None:
            self.value = h[self.mask.to(h.device)]

        if is_pre:
            self.handle = module.register_forward_pre_hook(
                lambda _m, args, kwargs: keep(args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
        else:
            self.handle = module.register_forward_hook(lambda _m, _a, out: keep(out[0] if isinstance(out, tuple) else out))
        return self

    def __exit__(self, *_exc: object) -> None:
        self.handle.remove()


def sae_image_fvu(sae: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """FVU of `sae` on the rows of x [n, d]: sum ||x - x_hat||^2 / sum ||x - mean(x)||^2."""
    resid = (x - sae(x)).pow(2).sum()
    return resid / (x - x.mean(0, keepdim=True)).pow(2).sum().clamp(min=1e-12)


def load_regularizer_sae(dictionary: str | os.PathLike, layer: int | None, n_layers: int, hidden_size: int) -> torch.nn.Module:
    """The text SAE of `dictionary` (a concept set, a folder of SAEs, one SAE, or "toyworld") at
    `layer` (default: the middle layer, `n_layers // 2`), checked against the model's width."""
    from steerlang.dictionary.concepts import load_concept_set
    from steerlang.errors import InputError

    layer = n_layers // 2 if layer is None else layer
    if not 0 <= layer <= n_layers:
        raise InputError(f"--sae-layer: {layer} is out of range; this model has layers 0 (LM input) to {n_layers}")
    sae = load_concept_set(dictionary).sae(layer, "text")
    if sae.cfg.d_in != hidden_size:
        raise InputError(f"--sae-regularize: the SAE's width {sae.cfg.d_in} does not match the model's hidden size {hidden_size}")
    sae.cfg.layer = layer  # where the regulariser reads (the file may not say, for a single SAE)
    return sae


def finetune_and_save(
    out: str | os.PathLike,
    *,
    start: str,
    data: str | os.PathLike,
    cfg: FinetuneConfig = FinetuneConfig(),
    caption_column: str = "text",
    prompt_column: str | None = None,
    split: str | None = None,
    eval_seed: int = 99,
    eval_count: int = 500,
    sae_regularize: str | os.PathLike | None = None,
    sae_layer: int | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> dict:
    """Fine-tune `start` ("toyworld", a model folder, or "scratch": a fresh toy model initialised
    with `cfg.seed`) on the corpus `data`, evaluate it on held-out toy scenes (stream `eval_seed`,
    `eval_count` scenes; 0 skips), and save model, processor and `train_report.json` to `out`
    (atomically). With `sae_regularize` (a dictionary), its text SAE at `sae_layer` (default: the
    middle layer) regularises the image positions (`finetune_model`'s `sae`). Returns the report."""
    import json
    from dataclasses import asdict

    from steerlang.world.io import atomic_dir
    from steerlang.world.model import TEMPLATE_FILE, load_model

    bundle = fresh_toy_bundle(cfg.seed) if start == "scratch" else load_model(start)
    sae = None
    if sae_regularize is not None:
        text = bundle.model.config.text_config
        sae = load_regularizer_sae(sae_regularize, sae_layer, text.num_hidden_layers, text.hidden_size)
    corpus = read_caption_corpus(data, bundle, caption_column=caption_column, prompt_column=prompt_column, split=split)
    t0 = time.perf_counter()
    log: list[dict] = []
    finetune_model(bundle, corpus, cfg, sae=sae, on_step=on_step, log=log)
    report: dict = {
        "finetune": asdict(cfg),
        "from": start,
        "data": {"source": corpus.source, "samples": len(corpus), "bad_rows": corpus.bad_rows,
                 "captions_with_unknown_words": corpus.unknown_words},
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    if sae is not None:
        first, last = log[: min(10, len(log))], log[-min(10, len(log)) :]
        report["sae_regularizer"] = {
            "dictionary": os.fspath(sae_regularize), "layer": sae.cfg.layer, "weight": cfg.sae_weight,
            "image_fvu_first_10_steps": round(float(np.mean([r["sae_fvu"] for r in first])), 4),
            "image_fvu_last_10_steps": round(float(np.mean([r["sae_fvu"] for r in last])), 4),
            "lm_loss_first_10_steps": round(float(np.mean([r["lm"] for r in first])), 4),
            "lm_loss_last_10_steps": round(float(np.mean([r["lm"] for r in last])), 4),
        }
    if eval_count:
        report["eval"] = {"seed": eval_seed, **asdict(evaluate(bundle, seed=eval_seed, count=eval_count))}
    with atomic_dir(out) as tmp:
        bundle.model.save_pretrained(tmp)
        bundle.processor.save_pretrained(tmp)  # type: ignore[attr-defined]
        (tmp / "train_report.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / TEMPLATE_FILE).write_text(json.dumps({"template": bundle.template}) + "\n")
    return report
