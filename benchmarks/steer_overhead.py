"""Steered / unsteered generation time for a one-concept edit: sparse and dense SAE paths.

A random LLaVA-style model (Llama of --hidden, --layers blocks; a small CLIP tower), a prompt of
--prompt-tokens tokens (81 image tokens + text), --tokens greedy new tokens, and a concept set with
one SAE of --d-sae latents at --layer, a one-latent concept edited (`set c = 4`) at every
position of every forward step. Unsteered, sparse-steered and dense-steered generations are
interleaved --repeats times in one process (timings on shared CPUs are noisy: compare ratios of
medians, and of minima, taken together). Prints one JSON object.

    python benchmarks/steer_overhead.py                 # hidden 1024, 8 layers, 16,384 latents
    python benchmarks/steer_overhead.py --quick         # a smaller model, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def build_model(hidden: int, layers: int, vocab: int = 64):  # noqa: ANN201
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                              image_size=72, patch_size=8, projection_dim=64)
    text = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 3, num_hidden_layers=layers,
                       num_attention_heads=max(1, hidden // 64), num_key_value_heads=max(1, hidden // 64),
                       max_position_embeddings=1024, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=3, vision_feature_select_strategy="default",
                         vision_feature_layer=-1, image_seq_length=81, projector_hidden_act="gelu")
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = None
    return model


def build_concepts(root: Path, hidden: int, d_sae: int, layer: int, arch: str):  # noqa: ANN201
    from steerlang.dictionary.concepts import Concept, LatentGroup, load_concept_set, save_concept_set
    from steerlang.dictionary.io import save_dictionary
    from steerlang.dictionary.sae import SAEConfig, make_sae

    sae = make_sae(SAEConfig(architecture=arch, d_in=hidden, d_sae=d_sae, k=32 if arch == "topk" else None, layer=layer))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(hidden, d_sae, generator=g) / hidden**0.5)
        sae.W_dec.copy_(torch.randn(d_sae, hidden, generator=g) / hidden**0.5)
        sae.b_enc.fill_(-0.05)
    save_dictionary(sae, root / "sae")
    saes = [{"layer": layer, "modality": m, "path": "sae"} for m in ("image", "text")]
    (root / "saes.json").write_text(json.dumps({"model": "bench", "layers": [layer], "saes": saes}))
    groups = tuple(LatentGroup(layer, m, (7,), (1.0,)) for m in ("image", "text"))  # type: ignore[arg-type]
    save_concept_set(root, name="bench", model="bench", layers=[layer], concepts=[Concept("joint", 0, "c", (), groups)])
    return load_concept_set(root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--d-sae", type=int, default=16384)
    ap.add_argument("--layer", type=int, default=4, help="the edited layer (0 = LM input)")
    ap.add_argument("--arch", choices=["relu", "jumprelu", "topk"], default="relu")
    ap.add_argument("--prompt-tokens", type=int, default=220)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="hidden 256, 4 layers, 4,096 latents, 3 repeats")
    a = ap.parse_args()
    if a.quick:
        a.hidden, a.layers, a.d_sae, a.layer, a.repeats = 256, 4, 4096, 2, 3
    torch.set_num_threads(a.threads)

    from steerlang.lang import compile_program
    from steerlang.runtime.adapters import adapter_for
    from steerlang.runtime.hooks import Steerer
    from steerlang.runtime.plan import compile_plan

    model = build_model(a.hidden, a.layers)
    adapter = adapter_for(model)
    g = torch.Generator().manual_seed(2)
    text = torch.randint(4, 64, (a.batch, a.prompt_tokens - 82), generator=g)
    ids = torch.cat([torch.ones(a.batch, 1, dtype=torch.long), torch.full((a.batch, 81), 3), text], dim=1)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
              "pixel_values": torch.randn(a.batch, 3, 72, 72, generator=g)}
    with tempfile.TemporaryDirectory() as tmp:
        cs = build_concepts(Path(tmp), a.hidden, a.d_sae, a.layer, a.arch)
        prog = compile_program(f"let c = concept \"c\"\nsteer all at layer {a.layer} {{ set c = 4 }}", cs)
        plans = {mode: compile_plan(prog, cs, n_layers=adapter.n_layers, hidden_size=adapter.hidden_size,
                                    dense=mode == "dense", trace=False) for mode in ("sparse", "dense")}

        def gen(mode: str | None) -> tuple[float, torch.Tensor]:
            t0 = time.perf_counter()
            with torch.no_grad():
                if mode is None:
                    out = model.generate(**inputs, max_new_tokens=a.tokens, do_sample=False, pad_token_id=0)
                else:
                    with Steerer(adapter, plans[mode], trace=False):
                        out = model.generate(**inputs, max_new_tokens=a.tokens, do_sample=False, pad_token_id=0)
            return time.perf_counter() - t0, out

        modes = [None, "sparse", "dense"]
        for m in modes:  # warm-up
            gen(m)
        times: dict[str, list[float]] = {"unsteered": [], "sparse": [], "dense": []}
        outs: dict[str, torch.Tensor] = {}
        for _ in range(a.repeats):
            for m in modes:
                t, out = gen(m)
                times[m or "unsteered"].append(t)
                outs[m or "unsteered"] = out
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({
        "config": {k: getattr(a, k) for k in ("hidden", "layers", "d_sae", "layer", "arch", "prompt_tokens", "tokens", "batch",
                                             "repeats", "threads")},
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "ratio_sparse": round(med["sparse"] / med["unsteered"], 3),
        "ratio_dense": round(med["dense"] / med["unsteered"], 3),
        "ratio_sparse_min": round(min(times["sparse"]) / min(times["unsteered"]), 3),
        "ratio_dense_min": round(min(times["dense"]) / min(times["unsteered"]), 3),
        "sparse_equals_dense_tokens": bool(torch.equal(outs["sparse"], outs["dense"])),
        "steered_differs_from_unsteered": not bool(torch.equal(outs["sparse"], outs["unsteered"])),
        "times_s": {k: [round(x, 4) for x in v] for k, v in times.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
