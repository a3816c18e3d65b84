"""Hook names <-> steerlang layer numbers: the one mapping every dictionary file goes through.

steerlang numbers the residual stream *between* the language model's decoder blocks: **layer L is
the stream entering block L**; layer 0 is the language model's input (the token embeddings with the
image features merged in) and layer n (n = number of blocks) is the last block's output, before the
final norm. Other tools name the same streams by hook or module:

| steerlang layer | TransformerLens (SAELens) | Hugging Face module (forward hook) | steerlang <= 0.1 |
|---|---|---|---|
| 0 | `blocks.0.hook_resid_pre` | input of `model.language_model.layers.0` | `model.language_model.layers.0.input` |
| L, 0 < L < n | `blocks.L.hook_resid_pre` = `blocks.{L-1}.hook_resid_post` | input of `...layers.L` = output of `...layers.{L-1}` (the module name `...layers.{L-1}`) | `...layers.L.input` |
| n | `blocks.{n-1}.hook_resid_post` | output of `...layers.{n-1}` | `...layers.{n-1}.output` |

A bare module name (`model.language_model.layers.12`, sparsify's `layers.12`) means the module's
*output*, as SAELens, sparsify and dictionary_learning use it: layer 13. The prefix before
`layers.N` differs per family (`model.language_model.layers` LLaVA/Gemma 3/..., `model.text_model.layers`
Idefics3, `language_model.model.layers` Llama 4 and older transformers, `model.layers` Chameleon and
text-only models, `layers` relative to the base model in sparsify); any prefix naming the language
model is accepted, one naming the vision tower or projector is refused. `resid_post_layer_L` /
`resid_pre_layer_L` (dictionary_learning's submodule names) read as `blocks.L.hook_resid_post/pre`.

Names that are not a residual stream between blocks are refused with a one-line reason:
`blocks.L.hook_resid_mid` (inside block L, between attention and MLP), attention/MLP outputs and
sublayers (`hook_attn_out`, `hook_mlp_out`, `attn.hook_z`, `layers.L.mlp`, `layers.L.self_attn`,
layer norms), `hook_embed` / `embed_tokens` (the token embeddings *before* the image features are
merged in), the final norm (`ln_final`, `model.norm`).

Writing (`save_dictionary`) uses `tl_hook_name`: `blocks.L.hook_resid_pre` for L < n and
`blocks.{n-1}.hook_resid_post` for L = n, plus steerlang's own layer number and the HF module path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from steerlang.errors import DictionaryError

DEFAULT_LAYERS_PATH = "model.language_model.layers"

__all__ = ["DEFAULT_LAYERS_PATH", "HookSite", "hf_module_for_layer", "layer_range_text", "parse_hook_name",
           "tl_hook_name"]


@dataclass(frozen=True)
class HookSite:
    """Where a hook name reads: steerlang `layer`, as the `block` whose input or output it is."""

    layer: int
    block: int
    io: Literal["input", "output"]
    scheme: Literal["transformer_lens", "hf_module", "steerlang_legacy", "dictionary_learning"]
    layers_path: str | None = None  # HF names: the dotted path of the blocks ("model.language_model.layers")

    def describe(self) -> str:
        """"the output of block 11" / "the input of block 0"."""
        return f"the {self.io} of block {self.block}"


def _not_residual(name: str, why: str) -> DictionaryError:
    return DictionaryError(f"hook {name!r} is {why}, not the residual stream between decoder blocks that steerlang "
                           "steers; use an SAE trained on blocks.L.hook_resid_pre / blocks.L.hook_resid_post "
                           "(or a decoder layer's output)")


_TL = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post|mid)$")
_TL_OTHER = re.compile(r"^blocks\.(\d+)\.(.+)$")
_DL = re.compile(r"^resid_(pre|post)_layer_(\d+)$")
_HF = re.compile(r"^(?:(?P<prefix>[A-Za-z_][\w.]*?)\.)?(?P<container>layers|h|blocks)\.(?P<block>\d+)(?:\.(?P<rest>.+))?$")
_VISION = ("vision", "visual", "image_encoder", "multi_modal_projector", "mm_projector", "projector", "vqmodel",
           "img_processor", "perceiver", "connector")
_SUBLAYERS = ("mlp", "self_attn", "attn", "attention", "cross_attn", "input_layernorm", "post_attention_layernorm",
              "pre_feedforward_layernorm", "post_feedforward_layernorm", "ln_1", "ln_2", "feed_forward", "block_sparse_moe")


def parse_hook_name(name: str) -> HookSite:
    """The steerlang layer a hook or module name reads (see the module docstring); `DictionaryError`
    (one line, naming the hook) for a name that is not a residual stream between blocks or that
    no scheme knows."""
    n = name.strip()
    if m := _TL.match(n):
        block, kind = int(m.group(1)), m.group(2)
        if kind == "mid":
            raise _not_residual(n, f"the residual stream inside block {block} (between its attention and its MLP)")
        return HookSite(block if kind == "pre" else block + 1, block, "input" if kind == "pre" else "output",
                        "transformer_lens")
    if m := _TL_OTHER.match(n):
        raise _not_residual(n, f"a sublayer of block {m.group(1)} ({m.group(2)})")
    if n in ("hook_embed", "hook_pos_embed", "embed_tokens") or n.endswith(".embed_tokens") or n.endswith("wte"):
        raise _not_residual(n, "the token embedding before the image features are merged in (layer 0 is "
                               "blocks.0.hook_resid_pre)")
    if n.startswith("ln_final") or re.search(r"(^|\.)(norm|final_layernorm|ln_f)$", n):
        raise _not_residual(n, "the final norm's output")
    if m := _DL.match(n):
        kind, block = m.group(1), int(m.group(2))
        return HookSite(block if kind == "pre" else block + 1, block, "input" if kind == "pre" else "output",
                        "dictionary_learning")
    if m := _HF.match(n):
        prefix, block, rest = m.group("prefix") or "", int(m.group("block")), m.group("rest")
        parts = prefix.lower().split(".") if prefix else []
        if any(v in p for p in parts for v in _VISION):
            raise _not_residual(n, "a layer of the vision encoder or projector")
        layers_path = f"{prefix}.{m.group('container')}" if prefix else m.group("container")
        if rest in (None, "output"):
            return HookSite(block + 1, block, "output", "hf_module" if rest is None else "steerlang_legacy", layers_path)
        if rest == "input":
            return HookSite(block, block, "input", "steerlang_legacy", layers_path)
        first = rest.split(".")[0]
        what = "a sublayer" if first in _SUBLAYERS or "norm" in first else "a module inside"
        raise _not_residual(n, f"{what} of decoder block {block} ({rest})")
    raise DictionaryError(f"hook {name!r}: no naming scheme steerlang knows (TransformerLens blocks.L.hook_resid_pre/post, "
                          "a Hugging Face decoder layer such as model.language_model.layers.L, or sparsify's layers.L); "
                          "give the layer explicitly")


def tl_hook_name(layer: int, n_layers: int | None = None, *, io: Literal["input", "output"] | None = None) -> str:
    """The TransformerLens name of steerlang `layer`: `blocks.L.hook_resid_pre` for L < n, and
    `blocks.{n-1}.hook_resid_post` for L = n (or whenever `io="output"` asks for the output form)."""
    if layer < 0 or (n_layers is not None and layer > n_layers):
        raise DictionaryError(f"layer {layer} is out of range: the model has layers 0 to {n_layers}")
    if io == "output" or (io is None and n_layers is not None and layer == n_layers):
        if layer == 0:
            raise DictionaryError("layer 0 (the language model's input) is no block's output; write blocks.0.hook_resid_pre")
        return f"blocks.{layer - 1}.hook_resid_post"
    return f"blocks.{layer}.hook_resid_pre"


def hf_module_for_layer(layer: int, n_layers: int | None = None, layers_path: str = DEFAULT_LAYERS_PATH,
                        *, io: Literal["input", "output"] | None = None) -> tuple[str, Literal["input", "output"]]:
    """(module path, "input" | "output"): where a forward (pre-)hook reads steerlang `layer` —
    the input of block L for L < n, the output of block n-1 for L = n."""
    name = tl_hook_name(layer, n_layers, io=io)
    site = parse_hook_name(name)
    return f"{layers_path}.{site.block}", site.io


def layer_range_text(n_layers: int) -> str:
    """"layers 0 (LM input) to 4 (the output of block 3)"."""
    return f"layers 0 (LM input) to {n_layers} (the output of block {n_layers - 1})"
