"""Tiny random vision-language models, one per family, built from configs (no download).

Sizes follow the spirit of transformers' own model testers: a few dozen hidden units, two text
blocks, one vision block, images of 16 to 32 pixels. Every builder returns an eval-mode model.
"""

from __future__ import annotations

import torch

VOCAB = 128
H = 32  # text hidden size
# Special ids shared by the hand-made tokenizers (below 10) and the configs.
PAD, BOS, EOS, IMG = 0, 1, 2, 3

TEXT = {"vocab_size": VOCAB, "hidden_size": H, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 512,
        "pad_token_id": PAD, "bos_token_id": BOS, "eos_token_id": EOS, "tie_word_embeddings": False}
CLIP = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "image_size": 16, "patch_size": 4, "projection_dim": 32}
SIGLIP = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
          "image_size": 16, "patch_size": 4}


def _seeded(cls, config, seed: int = 0):  # noqa: ANN001, ANN202
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():  # matrices some families initialise to zero (Gemma3's projector): random
        for p in model.parameters():
            if p.dim() >= 2 and not bool(p.any()):
                p.normal_(0.0, 0.2)
    return model


def llava():  # noqa: ANN201
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    cfg = LlavaConfig(vision_config={"model_type": "clip_vision_model", **CLIP}, text_config={"model_type": "llama", **TEXT},
                      image_token_id=IMG, vision_feature_select_strategy="default", vision_feature_layer=-1,
                      image_seq_length=16)
    return _seeded(LlavaForConditionalGeneration, cfg)


def llava_next():  # noqa: ANN201
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    cfg = LlavaNextConfig(vision_config={"model_type": "clip_vision_model", **CLIP}, text_config={"model_type": "llama", **TEXT},
                          image_token_index=IMG, vision_feature_select_strategy="default", vision_feature_layer=-1,
                          image_grid_pinpoints=[[16, 32], [32, 16], [32, 32]], image_seq_length=16)
    return _seeded(LlavaNextForConditionalGeneration, cfg)


def llava_onevision():  # noqa: ANN201
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    cfg = LlavaOnevisionConfig(vision_config={"model_type": "siglip_vision_model", **SIGLIP},
                               text_config={"model_type": "qwen2", **TEXT}, image_token_index=IMG, video_token_index=4,
                               vision_feature_select_strategy="full", vision_feature_layer=-1,
                               image_grid_pinpoints=[[16, 32], [32, 16], [32, 32]], vision_aspect_ratio="anyres_max_9")
    return _seeded(LlavaOnevisionForConditionalGeneration, cfg)


def write_llava_onevision_processor(folder) -> None:  # noqa: ANN001
    import json

    from transformers import LlavaOnevisionImageProcessorPil

    tokenizer(["<pad>", "<s>", "</s>", "<image>", "<video>"], {"image_token": "<image>", "video_token": "<video>"}).save_pretrained(folder)
    LlavaOnevisionImageProcessorPil(size={"height": 16, "width": 16}, image_grid_pinpoints=[[16, 32], [32, 16], [32, 32]],
                                    do_pad=True).save_pretrained(folder)
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": "LlavaOnevisionProcessor", "num_image_tokens": 16,
                                                              "vision_feature_select_strategy": "full",
                                                              "vision_aspect_ratio": "anyres_max_9"}))


def qwen2_vl():  # noqa: ANN201
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    cfg = Qwen2VLConfig(
        text_config={**TEXT, "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}},
        vision_config={"depth": 1, "embed_dim": 32, "hidden_size": H, "num_heads": 2, "mlp_ratio": 2, "patch_size": 4,
                       "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3},
        image_token_id=IMG, video_token_id=4, vision_start_token_id=5, vision_end_token_id=6)
    return _seeded(Qwen2VLForConditionalGeneration, cfg)


def qwen2_5_vl():  # noqa: ANN201
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    cfg = Qwen2_5_VLConfig(
        text_config={**TEXT, "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}},
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 4,
                       "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3, "out_hidden_size": H,
                       "window_size": 16, "fullatt_block_indexes": [1]},
        image_token_id=IMG, video_token_id=4, vision_start_token_id=5, vision_end_token_id=6)
    return _seeded(Qwen2_5_VLForConditionalGeneration, cfg)


def qwen3_vl():  # noqa: ANN201
    """Qwen3-VL with DeepStack: the features of vision block 0 are added again to the image positions
    after text block 0."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    text = {**TEXT, "head_dim": 16, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                        "mrope_section": [2, 3, 3], "mrope_interleaved": True}}
    cfg = Qwen3VLConfig(
        text_config=text,
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 4,
                       "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3, "out_hidden_size": H,
                       "num_position_embeddings": 16, "deepstack_visual_indexes": [0]},
        image_token_id=IMG, video_token_id=4, vision_start_token_id=5, vision_end_token_id=6)
    return _seeded(Qwen3VLForConditionalGeneration, cfg)


def gemma3():  # noqa: ANN201
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    text = {**TEXT, "head_dim": 16, "sliding_window": 64, "query_pre_attn_scalar": 16}
    cfg = Gemma3Config(text_config=text, vision_config={"model_type": "siglip_vision_model", **SIGLIP},
                       mm_tokens_per_image=4, image_token_index=IMG, boi_token_index=4, eoi_token_index=5,
                       tie_word_embeddings=False)
    return _seeded(Gemma3ForConditionalGeneration, cfg)


def paligemma():  # noqa: ANN201
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    text = {"model_type": "gemma", **TEXT, "head_dim": 16}
    cfg = PaliGemmaConfig(text_config=text, vision_config={"model_type": "siglip_vision_model", **SIGLIP, "projection_dim": H},
                          image_token_index=IMG, projection_dim=H, hidden_size=H, vocab_size=VOCAB,
                          tie_word_embeddings=False)
    return _seeded(PaliGemmaForConditionalGeneration, cfg)


def idefics3():  # noqa: ANN201
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    cfg = Idefics3Config(vision_config={k: v for k, v in SIGLIP.items()}, text_config={"model_type": "llama", **TEXT},
                         image_token_id=IMG, scale_factor=2)
    return _seeded(Idefics3ForConditionalGeneration, cfg)


def smolvlm():  # noqa: ANN201
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

    cfg = SmolVLMConfig(vision_config={k: v for k, v in SIGLIP.items()}, text_config={"model_type": "llama", **TEXT},
                        image_token_id=IMG, scale_factor=2)
    return _seeded(SmolVLMForConditionalGeneration, cfg)


def mistral3():  # noqa: ANN201
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    vision = {"model_type": "pixtral", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 2, "image_size": 32, "patch_size": 4, "head_dim": 16}
    cfg = Mistral3Config(vision_config=vision, text_config={"model_type": "mistral", **TEXT, "head_dim": 16},
                         image_token_index=IMG, spatial_merge_size=2, vision_feature_layer=-1)
    return _seeded(Mistral3ForConditionalGeneration, cfg)


def write_pixtral_processor(folder) -> None:  # noqa: ANN001
    """Pixtral's processor settings (its transformers class needs torchvision; steerlang rebuilds it):
    [IMG] 3, [IMG_BREAK] 5, [IMG_END] 6, images resized to at most 24 px, 8-px steps (4-px patches merged 2x2)."""
    import json

    from transformers import PixtralImageProcessorPil

    tokenizer(["<pad>", "<s>", "</s>", "[IMG]", "[UNUSED]", "[IMG_BREAK]", "[IMG_END]"]).save_pretrained(folder)
    PixtralImageProcessorPil(size={"longest_edge": 24}, patch_size={"height": 4, "width": 4}).save_pretrained(folder)
    (folder / "processor_config.json").write_text(json.dumps({
        "processor_class": "PixtralProcessor", "patch_size": 4, "spatial_merge_size": 2, "image_token": "[IMG]",
        "image_break_token": "[IMG_BREAK]", "image_end_token": "[IMG_END]"}))


def internvl():  # noqa: ANN201
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": [16, 16], "patch_size": [4, 4]}
    cfg = InternVLConfig(vision_config=vision, text_config={"model_type": "qwen2", **TEXT}, image_token_id=IMG,
                         image_seq_length=4, downsample_ratio=0.5, tie_word_embeddings=False)
    return _seeded(InternVLForConditionalGeneration, cfg)


def aya_vision():  # noqa: ANN201
    from transformers import AyaVisionConfig, AyaVisionForConditionalGeneration

    cfg = AyaVisionConfig(vision_config={"model_type": "siglip_vision_model", **SIGLIP},
                          text_config={"model_type": "cohere2", **TEXT, "sliding_window": 64},
                          image_token_index=IMG, downsample_factor=2, tie_word_embeddings=False)
    return _seeded(AyaVisionForConditionalGeneration, cfg)


def chameleon():  # noqa: ANN201
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration

    # 32 VQ codes map to BPE ids 96..127 through tokens "IMGIMG<code's digits as letters A-J>Z";
    # "<image>" is IMG.
    def name(code: int) -> str:
        return "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"

    vocab = {"<image>": IMG, **{name(i): 96 + i for i in range(32)}}
    vq = {"embed_dim": 8, "num_embeddings": 32, "latent_channels": 8, "resolution": 16, "in_channels": 3,
          "base_channels": 32, "channel_multiplier": [1, 1, 1], "num_res_blocks": 1, "attn_resolutions": []}
    cfg = ChameleonConfig(**{k: v for k, v in TEXT.items()}, vq_config=vq, vocabulary_map=vocab)
    return _seeded(ChameleonForConditionalGeneration, cfg)


# -- tokenizers and processors ----------------------------------------------------------------

WORDS = ("a", "cat", "dog", "what", "is", "in", "the", "picture", "?", "describe", ".", "user", "assistant", "_1", "_2",
         "_3", "_4", "_5", "_6")


def tokenizer(specials: list[str], attrs: dict[str, str] | None = None):  # noqa: ANN201
    """A word-level tokenizer: `specials` first (pad, bos, eos, image, ...), then words, VOCAB ids in all."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate([*specials, "<unk>"])}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    for i in range(len(vocab), VOCAB):
        vocab[f"w{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([*specials, "<unk>"])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=specials[PAD], bos_token=specials[BOS],
                                   eos_token=specials[EOS], unk_token="<unk>", extra_special_tokens=attrs or {},
                                   padding_side="left")


def llava_processor():  # noqa: ANN201
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    ip = CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    return LlavaProcessor(image_processor=ip, tokenizer=tokenizer(["<pad>", "<s>", "</s>", "<image>"], {"image_token": "<image>"}),
                          patch_size=4, vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          image_token="<image>")


def llava_next_processor():  # noqa: ANN201
    from transformers import LlavaNextImageProcessorPil, LlavaNextProcessor

    ip = LlavaNextImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16},
                                    image_grid_pinpoints=[[16, 32], [32, 16], [32, 32]])
    return LlavaNextProcessor(image_processor=ip, tokenizer=tokenizer(["<pad>", "<s>", "</s>", "<image>"], {"image_token": "<image>"}),
                              patch_size=4, vision_feature_select_strategy="default", num_additional_image_tokens=1,
                              image_token="<image>")


def gemma3_processor():  # noqa: ANN201
    from transformers import Gemma3ImageProcessorPil, Gemma3Processor

    tok = tokenizer(["<pad>", "<bos>", "<eos>", "<image_soft_token>", "<start_of_image>", "<end_of_image>"],
                    {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"})
    return Gemma3Processor(image_processor=Gemma3ImageProcessorPil(size={"height": 16, "width": 16}), tokenizer=tok,
                           image_seq_length=4)


def paligemma_processor():  # noqa: ANN201
    from transformers import PaliGemmaProcessor, SiglipImageProcessorPil

    ip = SiglipImageProcessorPil(size={"height": 16, "width": 16})
    ip.image_seq_length = 16
    return PaliGemmaProcessor(image_processor=ip, tokenizer=tokenizer(["<pad>", "<bos>", "<eos>", "<image>"], {"image_token": "<image>"}))


def idefics3_processor():  # noqa: ANN201
    from transformers import Idefics3ImageProcessorPil, Idefics3Processor

    rc = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    tok = tokenizer(["<pad>", "<s>", "</s>", "<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>", *rc],
                    {"image_token": "<image>"})
    ip = Idefics3ImageProcessorPil(size={"longest_edge": 32}, max_image_size={"longest_edge": 16}, do_image_splitting=True)
    return Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4)


def aya_vision_processor():  # noqa: ANN201
    from transformers import AyaVisionProcessor, GotOcr2ImageProcessorPil

    tok = tokenizer(["<pad>", "<s>", "</s>", "<|IMG_PATCH|>", "<|START_OF_IMG|>", "<|END_OF_IMG|>", "<|IMG_LINE_BREAK|>",
                     "TILE", "TILE_GLOBAL", "<image>"])
    ip = GotOcr2ImageProcessorPil(size={"height": 16, "width": 16}, crop_to_patches=True, min_patches=1, max_patches=4)
    return AyaVisionProcessor(image_processor=ip, tokenizer=tok, patch_size=4, img_size=16, downsample_factor=2)


def chameleon_processor():  # noqa: ANN201
    from transformers import ChameleonImageProcessorPil, ChameleonProcessor

    ip = ChameleonImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    return ChameleonProcessor(image_processor=ip, tokenizer=tokenizer(["<pad>", "<s>", "</s>", "<image>", "<racm3:break>", "<eoss>"]),
                              image_seq_length=16)


# -- hand-made inputs where the processor needs torchvision -----------------------------------
# Two samples, left-padded, images of different sizes (so different grids or tile counts).


def _batch(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(len(r) for r in rows)
    ids = torch.tensor([[PAD] * (t - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (t - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def smolvlm_inputs(seed: int = 0) -> dict:
    """Idefics3's layout: `<fake>` (5) `<row_1_col_j>` (8, 9) + 4 `<image>` per tile, `<fake>` `<global-img>` (6)
    + 4 `<image>`, `<fake>`: a 1x2-tile image, then an unsplit one."""
    g = torch.Generator().manual_seed(seed)
    a = [5, 8, *[IMG] * 4, 5, 9, *[IMG] * 4, 5, 6, *[IMG] * 4, 5]
    b = [5, 6, *[IMG] * 4, 5]
    ids, mask = _batch([[BOS, 10, *a, 11], [BOS, 10, *b, 11]])
    pix = torch.randn(2, 3, 3, 16, 16, generator=g)
    pix[1, 1:] = 0  # padding images (all zero) are dropped by the model
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pix}


# -- processor folders written by hand: these processors cannot be built without torchvision (their
#    video processor), but steerlang's loader rebuilds them with the PIL image processor ------------


def write_qwen_processor(folder, processor_class: str = "Qwen2VLProcessor") -> None:  # noqa: ANN001
    import json

    from transformers import Qwen2VLImageProcessorPil

    tok = tokenizer(["<pad>", "<s>", "</s>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"],
                    {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"})
    tok.save_pretrained(folder)
    Qwen2VLImageProcessorPil(patch_size=4, merge_size=2, temporal_patch_size=2, min_pixels=16 * 16,
                             max_pixels=48 * 48).save_pretrained(folder)
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": processor_class}))


def write_internvl_processor(folder) -> None:  # noqa: ANN001
    import json

    from transformers import GotOcr2ImageProcessorPil

    tok = tokenizer(["<pad>", "<s>", "</s>", "<IMG_CONTEXT>", "<img>", "</img>", "<video>"],
                    {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                     "video_token": "<video>"})
    tok.save_pretrained(folder)
    GotOcr2ImageProcessorPil(size={"height": 16, "width": 16}, crop_to_patches=True, min_patches=1,
                             max_patches=4).save_pretrained(folder)
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": "InternVLProcessor", "image_seq_length": 4}))
