"""The toy world's words, prompts, and its real `tokenizers` tokenizer."""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from steerlang.world.scenes import KINDS

PAD, BOS, EOS, UNK, IMAGE = "<pad>", "<s>", "</s>", "<unk>", "<image>"
SPECIALS = (PAD, BOS, EOS, UNK, IMAGE)

DESCRIBE_PROMPTS: tuple[str, ...] = (
    "what is in the picture ?",
    "describe the picture .",
    "what do you see ?",
)
DEFAULT_PROMPT = DESCRIBE_PROMPTS[0]
WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        ["a", "and", ".", "?", "yes", "no", "is", "there", "what", "in", "the", "picture", "describe",
         "do", "you", "see", "image", "an", "of", "this"]
        + list(KINDS)
    )
)


def question_for(kind: str) -> str:
    """The yes/no probe: "is there a cat ?"."""
    return f"is there a {kind} ?"


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer; `<image>` is a special token so the processor can expand it."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # Lower-case words and punctuation split apart: "picture?" -> "picture", "?".
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    tok.add_special_tokens([PAD, BOS, EOS, UNK, IMAGE])
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        extra_special_tokens={"image_token": IMAGE},
        padding_side="left",
    )
