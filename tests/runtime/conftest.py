"""Runtime fixtures: a tiny random LLaVA (hidden 32, 2 blocks) and a hand-made concept set.

Layers 0, 1, 2 have an image SAE (ReLU at 0 and 2, TopK at 1) and a text SAE (ReLU), d_sae 64.
Concepts: cat (image + text groups at every layer), dog (likewise, with prototypes), sun (image
only, layer 1), and a text-only word "word". Backgrounds at every layer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from steerlang.dictionary.concepts import Concept, LatentGroup, load_concept_set, save_concept_set
from steerlang.dictionary.io import save_dictionary
from steerlang.dictionary.sae import SAEConfig, make_sae
from steerlang.world.model import ModelBundle, build_processor

HIDDEN, N_BLOCKS, D_SAE = 32, 2, 64
LAYERS = [0, 1, 2]


def tiny_llava(seed: int = 0) -> torch.nn.Module:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from steerlang.world.scenes import IMAGE_SIZE, PATCH_SIZE
    from steerlang.world.vocab import BOS, EOS, IMAGE, PAD, SPECIALS, build_tokenizer

    ids = {t: i for i, t in enumerate(SPECIALS)}
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32)
    text = LlamaConfig(vocab_size=len(build_tokenizer()), hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=N_BLOCKS,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256, bos_token_id=ids[BOS],
                       eos_token_id=ids[EOS], pad_token_id=ids[PAD], tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=ids[IMAGE],
                         vision_feature_select_strategy="default", vision_feature_layer=-1,
                         image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2, projector_hidden_act="gelu")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():  # a larger output layer: greedy tokens vary with the input, not just one id
        model.lm_head.weight.mul_(20)
        model.generation_config.eos_token_id = None  # always generate the full length
    return model


def random_sae(arch: str, seed: int, layer: int, modality: str):
    g = torch.Generator().manual_seed(seed)
    sae = make_sae(SAEConfig(architecture=arch, d_in=HIDDEN, d_sae=D_SAE, k=16 if arch == "topk" else None,
                             layer=layer, modality=modality, model_name="tiny"))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(HIDDEN, D_SAE, generator=g) * 0.4)
        sae.W_dec.copy_(torch.randn(D_SAE, HIDDEN, generator=g) * 0.3)
        sae.b_enc.copy_(torch.randn(D_SAE, generator=g) * 0.1)
        sae.b_dec.zero_()
    return sae.requires_grad_(False)


def group(layer: int, modality: str, latents: tuple[int, ...], weights: tuple[float, ...], scale: float = 1.0,
          threshold: float = 0.3) -> LatentGroup:
    return LatentGroup(layer, modality, latents, weights, scale, threshold)  # type: ignore[arg-type]


def build_concept_set(root: Path, n_patches: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for layer in LAYERS:
        for modality in ("image", "text"):
            arch = "topk" if (layer, modality) == (1, "image") else "relu"
            rel = f"saes/layer{layer}-{modality}"
            save_dictionary(random_sae(arch, 100 + 10 * layer + (modality == "text"), layer, modality), root / rel)
            entries.append({"layer": layer, "modality": modality, "path": rel})
    (root / "saes.json").write_text(json.dumps({"model": "tiny", "layers": LAYERS, "modalities": ["image", "text"], "saes": entries}))
    concepts = [
        Concept("joint", 0, "cat", ("kitty",), tuple(
            [group(la, "image", (3, 5), (1.0, 0.5), 0.25) for la in LAYERS] + [group(la, "text", (7,), (1.0,), 0.5) for la in LAYERS])),
        Concept("joint", 1, "dog", (), tuple(
            [group(la, "image", (10, 11), (1.0, -0.5), 0.7) for la in LAYERS] + [group(la, "text", (12, 13), (1.0, 1.0)) for la in LAYERS])),
        Concept("image", 0, "sun", (), (group(1, "image", (20,), (1.0,)),)),
        Concept("text", 0, "word", (), tuple(group(la, "text", (30,), (1.0,)) for la in LAYERS)),
    ]
    g = torch.Generator().manual_seed(7)
    tensors = {}
    for layer in LAYERS:
        tensors[f"background.L{layer}"] = torch.randn(n_patches, HIDDEN, generator=g)
        tensors[f"prototype.1.L{layer}"] = torch.randn(n_patches, HIDDEN, generator=g) + 3.0
        count = torch.ones(n_patches)
        count[::2] = 0  # unseen at even patches: replacement falls back to the background there
        tensors[f"prototype.1.L{layer}.count"] = count
    save_concept_set(root, name="tinydict", model="tiny", layers=LAYERS, concepts=concepts, tensors=tensors)
    return root


@pytest.fixture(scope="session")
def bundle() -> ModelBundle:
    return ModelBundle("tiny", tiny_llava(), build_processor())


@pytest.fixture(scope="session")
def concept_dir(tmp_path_factory: pytest.TempPathFactory, bundle: ModelBundle) -> Path:
    rows, cols = bundle.patch_grid
    return build_concept_set(tmp_path_factory.mktemp("cs") / "tinydict", rows * cols)


@pytest.fixture(scope="session")
def concepts(concept_dir: Path):  # noqa: ANN201
    return load_concept_set(concept_dir)


@pytest.fixture(scope="session")
def session(bundle: ModelBundle, concepts):  # noqa: ANN201
    from steerlang.runtime.session import Session

    return Session(bundle, concepts)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, bundle: ModelBundle) -> Path:
    out = tmp_path_factory.mktemp("model") / "tiny"
    bundle.model.save_pretrained(out)
    bundle.processor.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from steerlang.world.scenes import make_scenes, render

    out = tmp_path_factory.mktemp("images")
    paths = []
    for i, scene in enumerate(make_scenes(3, 3)):
        p = out / f"scene{i}.png"
        render(scene).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="session")
def exact_concepts(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """The identity-like concept set of runtime_support.build_exact_concept_set."""
    from runtime_support import build_exact_concept_set

    root = tmp_path_factory.mktemp("exact") / "exactdict"
    build_exact_concept_set(root)
    return load_concept_set(root)


@pytest.fixture(scope="session")
def exact_session(bundle: ModelBundle, exact_concepts):  # noqa: ANN201
    from steerlang.runtime.session import Session

    return Session(bundle, exact_concepts)
