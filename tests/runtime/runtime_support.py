"""Helpers for the runtime tests."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from steerlang.dictionary.harvest import LayerCapture
from steerlang.world.model import ModelBundle


def encode(bundle: ModelBundle, images: Sequence[Image.Image], prompt: str = "what is in the picture?") -> dict:
    return bundle.encode(list(images), [prompt] * len(images))


@torch.no_grad()
def gen_ids(bundle: ModelBundle, enc: dict, n: int = 6, **kw) -> torch.Tensor:
    out = bundle.model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=bundle.tokenizer.pad_token_id, **kw)
    return out[:, enc["input_ids"].shape[1]:]


@torch.no_grad()
def logits(bundle: ModelBundle, enc: dict) -> torch.Tensor:
    return bundle.model(**enc).logits


@torch.no_grad()
def states(bundle: ModelBundle, enc: dict, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """Hidden states entering each layer (captured after any steering pre-hook ran)."""
    with LayerCapture(bundle, layers) as cap:
        bundle.model(**enc)
    return {k: v.clone() for k, v in cap.captured.items()}


# -- an identity-like concept set: every latent reads one coordinate of the hidden state ---------
#
# At every layer and modality, latent j < 32 has encoder column e_j and decoder row e_j, latent
# 32 + j has -e_j and -e_j, b_dec = 0, and b_enc is EXACT_BIAS (1.0 elsewhere). The tiny model's
# hidden states stay within 0.1 of 0, so pre-activations are p_j = h_j + b_j (p_{32+j} = b - h_j),
# every latent with a positive bias is in the linear part of its ReLU, and an edit z_j -> z'_j moves
# exactly one coordinate: h'_j = h_j + (z'_j - z_j). Tests compute what every edit must give by hand.
EXACT_BIAS = {3: 2.0, 5: 2.0, 10: 2.0, 11: 2.0, 22: 2.0, 23: 2.0, 25: 2.0, 30: 2.0, 20: -5.0, 21: -5.0, 24: -5.0}
EXACT_LAYERS = (0, 1)
EXACT_GROUPS = {  # name -> (latents, weights, scale, threshold, read, offsets)
    "cat": ((3, 5), (1.0, 0.5), 0.25, 0.3, "code", ()),
    "dog": ((10, 11), (1.0, -0.5), 0.7, 0.3, "code", ()),
    "word": ((30,), (1.0,), 1.0, 0.3, "code", ()),
    "fish": ((25,), (1.0,), 1.0, 2.0, "code", ()),  # present (> 2.0) where h_25 > 0
    "moon": ((20, 21), (0.5, 0.8), 1.0, 0.3, "pre", (-0.1, 0.05)),  # codes 0 (bias -5), read before the ReLU
    "star": ((22, 23), (2.0, -1.0), 1.0, 0.3, "linear", (0.05,)),
    "ghost": ((24,), (1.0,), 1.0, 0.3, "code", ()),  # bias -5: its code is always 0
}


def exact_sae(arch: str, layer: int, modality: str, hidden: int = 32, d_sae: int = 64):  # noqa: ANN201
    from steerlang.dictionary.sae import SAEConfig, make_sae

    sae = make_sae(SAEConfig(architecture=arch, d_in=hidden, d_sae=d_sae, k=16 if arch == "topk" else None, layer=layer,
                             modality=modality, model_name="tiny"))
    eye = torch.eye(hidden)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.copy_(torch.tensor([EXACT_BIAS.get(j, 1.0) for j in range(d_sae)]))
        sae.b_dec.zero_()
    return sae.requires_grad_(False)


def build_exact_concept_set(root) -> None:  # noqa: ANN001 - a Path
    """Text SAEs: ReLU at layers 0 and 1; image SAEs: ReLU at 0, TopK (k 16) at 1. Concepts:
    EXACT_GROUPS at both layers and modalities, and x0..x31 (text, layer 0 only: coordinate i).
    No background or prototypes: `off` on image positions takes its latent fallback."""
    import json

    from steerlang.dictionary.concepts import Concept, LatentGroup, save_concept_set
    from steerlang.dictionary.io import save_dictionary

    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for layer in EXACT_LAYERS:
        for modality in ("image", "text"):
            arch = "topk" if (layer, modality) == (1, "image") else "relu"
            rel = f"saes/layer{layer}-{modality}"
            save_dictionary(exact_sae(arch, layer, modality), root / rel)
            entries.append({"layer": layer, "modality": modality, "path": rel})
    (root / "saes.json").write_text(json.dumps({"model": "tiny", "layers": list(EXACT_LAYERS), "modalities": ["image", "text"],
                                                "saes": entries}))
    concepts = []
    for i, (name, (lat, w, scale, thr, read, off)) in enumerate(EXACT_GROUPS.items()):
        groups = tuple(LatentGroup(la, m, lat, w, scale, thr, read=read, offsets=off)  # type: ignore[arg-type]
                       for la in EXACT_LAYERS for m in ("image", "text"))
        concepts.append(Concept("joint", i, name, (), groups))
    concepts += [Concept("text", i, f"x{i}", (), (LatentGroup(0, "text", (i,), (1.0,)),)) for i in range(32)]
    save_concept_set(root, name="exactdict", model="tiny", layers=list(EXACT_LAYERS), concepts=concepts)


@torch.no_grad()
def captured(session, enc: dict, prog: str | None, layer: int, *, output: bool = False, **kw) -> torch.Tensor:  # noqa: ANN001
    """The state entering block `layer` (`output`: leaving the last block) in one forward steered by
    `prog` (None: unsteered). The capture hook is added after the steering hook, so it sees the edit."""
    seen: list[torch.Tensor] = []
    blocks = session.adapter.decoder_layers()
    st = session.steer(prog, **kw) if prog is not None else None
    if st is not None:
        st.__enter__()
    if output:
        h = blocks[-1].register_forward_hook(lambda _m, _a, out: seen.append((out[0] if isinstance(out, tuple) else out).clone()))
    else:
        h = blocks[layer].register_forward_pre_hook(
            lambda _m, args, kwargs: seen.append((args[0] if args else kwargs["hidden_states"]).clone()), with_kwargs=True)
    try:
        session.model(**enc)
    finally:
        h.remove()
        if st is not None:
            st.__exit__(None, None, None)
    return seen[0]


def steered_input(session, prog: str, enc: dict, layer: int, **kw) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    """(the state entering `layer` unsteered, the same state after the steering hook)."""
    return captured(session, enc, None, layer), captured(session, enc, prog, layer, **kw)


def kinds(session, enc: dict) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    """([B, T] image positions, [B, T] prompt positions: text, not <s>, not padding) of a prefill."""
    img = session.adapter.image_mask(enc["input_ids"])
    prompt = ~img & enc["attention_mask"].bool() & (enc["input_ids"] != session.adapter.text_config.bos_token_id)
    return img, prompt
