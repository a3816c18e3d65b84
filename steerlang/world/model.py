"""The toy model and the model bundle every later stage uses.

The toy model is a real `LlavaForConditionalGeneration` (tiny CLIP vision tower + tiny Llama) with
a real tokenizer and `LlavaProcessor`, saved with `save_pretrained` and loaded with
`from_pretrained`: the code path a user's real LLaVA takes. `load_model` loads it, or any model of
a supported family, through `steerlang.models` (see docs/models.md).
"""

from __future__ import annotations

import torch

from steerlang.models.bundle import (  # noqa: F401 - the public names, re-exported
    DEFAULT_PROMPT,
    TEMPLATE_FILE,
    TOY_TEMPLATE,
    TOYWORLD,
    ModelBundle,
    load_model,
    shipped_model_path,
)
from steerlang.world.scenes import IMAGE_SIZE, PATCH_SIZE
from steerlang.world.vocab import build_tokenizer


def build_processor():  # noqa: ANN201 - a LlavaProcessor
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    # The Pil image processor: the default one needs torchvision, which has no CPU wheel here.
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=True,
        do_convert_rgb=True,
    )
    # "default" drops CLS: one additional token makes the count equal the patch count (notes, pitfall 2).
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_tokenizer(),
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token="<image>",
    )


def build_toy_model(vocab_size: int, seed: int = 0, tie_embeddings: bool = False) -> torch.nn.Module:
    """A freshly initialised toy LLaVA: CLIP tower (96 wide, 3 layers) + Llama (128 wide, 4 layers)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from steerlang.world.vocab import BOS, EOS, IMAGE, PAD, SPECIALS

    ids = {t: i for i, t in enumerate(SPECIALS)}
    vision = CLIPVisionConfig(
        hidden_size=96, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, num_channels=3, projection_dim=96,
    )
    text = LlamaConfig(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
        bos_token_id=ids[BOS], eos_token_id=ids[EOS], pad_token_id=ids[PAD], tie_word_embeddings=tie_embeddings,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=ids[IMAGE],
        vision_feature_select_strategy="default", vision_feature_layer=-1,
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2, projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config)
