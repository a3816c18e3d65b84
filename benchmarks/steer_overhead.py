"""Steered / unsteered generation time: sparse and dense SAE paths, one concept and many.

A random LLaVA-style model (Llama of --hidden, --layers blocks; a small CLIP tower), a prompt of
--prompt-tokens tokens (81 image tokens + text), --tokens greedy new tokens, and concept sets on an
SAE of --d-sae latents: "one" = a one-latent concept edited (`set c = 4`) at --layer, "many" =
--many concepts edited at --layer and --layer + 1; each on the sparse path (only the edited latents
are encoded) and the dense one (the whole SAE). All modes are interleaved --repeats times
(timings on shared CPUs are noisy: compare ratios of medians, of minima, and of the median CPU time
of this process, which other jobs on the machine disturb less than wall time).
Prints one JSON object.

    python benchmarks/steer_overhead.py                  # hidden 1024, 8 layers, 16,384 latents
    python benchmarks/steer_overhead.py --quick          # a smaller model, for a smoke run
    python benchmarks/steer_overhead.py --toy            # the shipped toy-world model (hidden 128)

--toy times the shipped toy model on a rendered scene with its describe prompt (image + prompt,
about 90 tokens; end-of-sequence disabled so every run makes --tokens tokens), with a random SAE of
--d-sae latents (default 1,024 there, the size of the shipped image SAEs) edited at --layer 2.

"nnsight.one" does the same one-latent edit as "one.sparse" (encode that latent, set it to 4, add
the decoder-row delta, at every position but <s> of every step) written as an nnsight trace around
`generate`; nnsight is optional: the script pip-installs it into the running interpreter's
environment when it is missing (--no-nnsight skips it).

Before anything is timed, every steered mode runs once more, untimed, under a counter
(`check_edits`): at each edited layer, a hook in front of every other hook copies the block's
input and a hook on the block's first sub-module reads it after the edits, at every forward call.
The report says, per mode, how many of the decode steps had their new position edited (it must be
all of them: the prefill makes the first token, each decode step one more) and, for the one-latent
modes, whether every edit equals `(4 - z) * W_dec[latent]` at every edited position. A runtime that
skipped the decode steps would still change the tokens (the prefill is edited) and would time as
cheap; the script stops with status 1, before timing, when any mode misses a step. The unsteered mode is counted
too (0 edits: the counter itself works).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
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


def toy_model_inputs(batch: int):  # noqa: ANN201
    """The shipped toy model (end-of-sequence off: every run makes the same number of tokens) and
    processor inputs for `batch` copies of one rendered fresh scene with the describe prompt."""
    from steerlang.world.model import load_model
    from steerlang.world.scenes import make_scene, render
    from steerlang.world.vocab import DEFAULT_PROMPT

    bundle = load_model("toyworld")
    bundle.model.generation_config.eos_token_id = None
    image = render(make_scene(4242, 0))
    return bundle.model.eval(), bundle.encode([image] * batch, [DEFAULT_PROMPT] * batch)


def build_concepts(root: Path, hidden: int, d_sae: int, layers: list[int], arch: str, n_concepts: int):  # noqa: ANN201
    """One random SAE (used at each of `layers`) and `n_concepts` one-latent concepts c0, c1, ..."""
    from steerlang.dictionary.concepts import Concept, LatentGroup, load_concept_set, save_concept_set
    from steerlang.dictionary.io import save_dictionary
    from steerlang.dictionary.sae import SAEConfig, make_sae

    sae = make_sae(SAEConfig(architecture=arch, d_in=hidden, d_sae=d_sae, k=32 if arch == "topk" else None, layer=layers[0]))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(hidden, d_sae, generator=g) / hidden**0.5)
        sae.W_dec.copy_(torch.randn(d_sae, hidden, generator=g) / hidden**0.5)
        sae.b_enc.fill_(-0.05)
    save_dictionary(sae, root / "sae")
    saes = [{"layer": layer, "modality": m, "path": "sae"} for layer in layers for m in ("image", "text")]
    (root / "saes.json").write_text(json.dumps({"model": "bench", "layers": layers, "saes": saes}))
    concepts = [Concept("joint", i, f"c{i}", (), tuple(LatentGroup(layer, m, ((7 + 37 * i) % d_sae,), (1.0,))  # type: ignore[arg-type]
                                                    for layer in layers for m in ("image", "text")))
                for i in range(n_concepts)]
    save_concept_set(root, name="bench", model="bench", layers=layers, concepts=concepts)
    return load_concept_set(root), sae


def program_text(n_concepts: int, layers: list[int]) -> str:
    lets = [f'let c{i} = concept "c{i}"' for i in range(n_concepts)]
    edits = [f"steer all at layer {layer} {{ set c{i} = 4 }}" for i in range(n_concepts) for layer in layers]
    return "\n".join(lets + edits)


def ensure_nnsight() -> str | None:
    """Import nnsight, pip-installing it into this interpreter's environment if missing; its version or None."""
    if importlib.util.find_spec("nnsight") is None:
        r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "nnsight"], check=False)
        if r.returncode != 0:
            return None
    import nnsight

    return str(getattr(nnsight, "__version__", "?"))


def nnsight_runner(model, inputs: dict, sae, latent: int, layer: int, value: float, tokens: int):  # noqa: ANN001, ANN201
    """Generation with `set latent = value` at the input of LM block `layer`, as an nnsight trace."""
    import nnsight

    nm = nnsight.NNsight(model)
    w_enc, b_enc = sae.W_enc[:, latent].detach().clone(), sae.b_enc[latent].detach().clone()
    w_dec, b_dec = sae.W_dec[latent].detach().clone(), sae.b_dec.detach().clone()
    apply_b_dec = bool(sae.cfg.apply_b_dec_to_input)

    def run():  # noqa: ANN202
        block = nm.model.language_model.layers[layer]
        with nm.trace(**inputs, fn=model.generate, max_new_tokens=tokens, do_sample=False, pad_token_id=0) as tr:
            for step in tr.iter[:tokens]:
                h = block.inputs[0][0]
                x = h - b_dec if apply_b_dec else h
                z = torch.relu(x @ w_enc + b_enc)  # the one latent: [B, T]
                delta = (value - z).unsqueeze(-1) * w_dec
                if step == 0:
                    delta[:, 0] = 0  # <s> is outside every scope
                h[:] = h + delta
            out = tr.result.save()
        return out
    return run


def check_edits(model, adapter, run, layers: list[int], one: tuple | None = None) -> dict:  # noqa: ANN001
    """Run `run()` once under a counter at each of `layers`: per forward call, which positions the
    edits changed. `one` = (sae, latent, value): also check that each change is (value - z) * W_dec[latent]."""
    blocks = adapter.decoder_layers()
    calls: list[dict] = []
    before: dict[int, torch.Tensor] = {}
    worst = 0.0

    def early(layer: int):  # noqa: ANN202
        def hook(_m, args, kwargs):  # noqa: ANN001, ANN202
            before[layer] = (args[0] if args else kwargs["hidden_states"]).detach().clone()
        return hook

    def late(layer: int):  # noqa: ANN202
        def hook(_m, args, kwargs):  # noqa: ANN001, ANN202
            nonlocal worst
            h, h0 = (args[0] if args else kwargs["hidden_states"]).detach(), before.pop(layer)
            diff = h - h0
            changed = diff.abs().amax(-1) > 0  # [B, T]
            calls.append({"layer": layer, "T": int(h.shape[1]), "changed": int(changed.sum()),
                          "last_changed": bool(changed[:, -1].all())})
            if one is not None:
                sae, latent, value = one
                x = h0 - sae.b_dec if sae.cfg.apply_b_dec_to_input else h0
                z = torch.relu(x @ sae.W_enc[:, latent] + sae.b_enc[latent])
                want = (value - z).unsqueeze(-1) * sae.W_dec[latent]
                err = (diff - want)[changed].abs().max() / want[changed].abs().max() if bool(changed.any()) else torch.tensor(0.0)
                worst = max(worst, float(err))
        return hook

    handles = []
    try:
        for layer in layers:
            assert layer < len(blocks), "the counter reads the input of a block"
            handles.append(blocks[layer].register_forward_pre_hook(early(layer), with_kwargs=True, prepend=True))
            handles.append(blocks[layer].input_layernorm.register_forward_pre_hook(late(layer), with_kwargs=True))
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    decode = [c for c in calls if c["T"] == 1]
    out = {"forward_calls_per_layer": len(calls) // max(len(layers), 1), "decode_steps_per_layer": len(decode) // max(len(layers), 1),
           "decode_steps_edited": sum(c["last_changed"] for c in decode) // max(len(layers), 1),
           "prefill_positions_edited": [c["changed"] for c in calls if c["T"] > 1]}
    if one is not None:
        out["max_relative_error_vs_expected_edit"] = round(worst, 6)
    return out


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
    ap.add_argument("--many", type=int, default=16, help="concepts in the 'many' setting (over --layer and --layer + 1)")
    ap.add_argument("--sweep", default="", help="more concept counts edited over --layer and --layer + 1, sparse path "
                    "only, as modes many<N>.sparse (e.g. 1,4,64: how cost grows with the number of edits)")
    ap.add_argument("--general", action="store_true",
                    help="also time one.sparse and many.sparse with every decode step on the general path (Steerer(fuse=False)), as *.general")
    ap.add_argument("--no-nnsight", action="store_true", help="skip the nnsight row")
    ap.add_argument("--quick", action="store_true", help="hidden 256, 4 layers, 4,096 latents, 3 repeats")
    ap.add_argument("--toy", action="store_true", help="the shipped toy-world model instead of a random one")
    a = ap.parse_args()
    if a.quick:
        a.hidden, a.layers, a.d_sae, a.layer, a.repeats = 256, 4, 4096, 2, 3
    if a.toy and a.d_sae == 16384:
        a.d_sae, a.layer = 1024, 2
    torch.set_num_threads(a.threads)

    import transformers

    from steerlang.lang import compile_program
    from steerlang.runtime.adapters import adapter_for
    from steerlang.runtime.hooks import Steerer
    from steerlang.runtime.plan import compile_plan

    if a.toy:
        model, inputs = toy_model_inputs(a.batch)
        a.hidden, a.layers = model.config.text_config.hidden_size, model.config.text_config.num_hidden_layers
        a.prompt_tokens = int(inputs["input_ids"].shape[1])
    else:
        model = build_model(a.hidden, a.layers)
        g = torch.Generator().manual_seed(2)
        text = torch.randint(4, 64, (a.batch, a.prompt_tokens - 82), generator=g)
        ids = torch.cat([torch.ones(a.batch, 1, dtype=torch.long), torch.full((a.batch, 81), 3), text], dim=1)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                  "pixel_values": torch.randn(a.batch, 3, 72, 72, generator=g)}
    adapter = adapter_for(model)
    with tempfile.TemporaryDirectory() as tmp:
        settings = {"one": (1, [a.layer]), "many": (a.many, [a.layer, a.layer + 1])}
        sweep = [int(x) for x in a.sweep.split(",") if x.strip()]
        settings.update({f"many{n}": (n, [a.layer, a.layer + 1]) for n in sweep})
        plans, saes = {}, {}
        for name, (n, layers) in settings.items():
            cs, saes[name] = build_concepts(Path(tmp) / name, a.hidden, a.d_sae, layers, a.arch, n)
            prog = compile_program(program_text(n, layers), cs)
            for mode in ("sparse",) if name.startswith("many") and name != "many" else ("sparse", "dense"):
                plans[f"{name}.{mode}"] = compile_plan(prog, cs, n_layers=adapter.n_layers, hidden_size=adapter.hidden_size,
                                                       dense=mode == "dense", trace=False)
        runners = {"unsteered": lambda: model.generate(**inputs, max_new_tokens=a.tokens, do_sample=False, pad_token_id=0)}
        fuse = {key: True for key in plans}
        if a.general:
            for name in ("one", "many"):
                plans[f"{name}.general"], fuse[f"{name}.general"] = plans[f"{name}.sparse"], False
        for key, plan in plans.items():
            def steered(plan=plan, fuse=fuse[key]):  # noqa: ANN001, ANN202
                with Steerer(adapter, plan, trace=False, fuse=fuse):
                    return model.generate(**inputs, max_new_tokens=a.tokens, do_sample=False, pad_token_id=0)
            runners[key] = steered
        nnsight_version = None if a.no_nnsight else ensure_nnsight()
        if nnsight_version is not None:
            runners["nnsight.one"] = nnsight_runner(model, inputs, saes["one"], 7, a.layer, 4.0, a.tokens)
        checks = {}
        for k, fn in runners.items():
            one = (saes["one"], 7, 4.0) if k.startswith(("one.", "nnsight.")) else None
            layers = [a.layer, a.layer + 1] if k.startswith("many") else [a.layer]
            checks[k] = check_edits(model, adapter, fn, layers, one)
        expected = a.tokens - 1  # the prefill makes the first token, each decode step one more
        verified = all(c["decode_steps_per_layer"] == expected and (c["decode_steps_edited"] == (0 if k == "unsteered" else expected))
                       and c.get("max_relative_error_vs_expected_edit", 0.0) < 1e-3 for k, c in checks.items())
        if not verified:  # timing a runtime that skips steps would flatter it: stop before timing
            print(json.dumps({"edits_verified": False, "expected_decode_steps": expected, "edit_counter": checks}, indent=1))
            print("steer_overhead: some steered mode did not edit every decode step (edit_counter above); not timing "
                  "a broken runtime", file=sys.stderr)
            raise SystemExit(1)
        times: dict[str, list[float]] = {k: [] for k in runners}
        cpu: dict[str, list[float]] = {k: [] for k in runners}  # CPU time of this process: less hit by other jobs
        outs: dict[str, object] = {}
        with torch.no_grad():
            for fn in runners.values():  # warm-up
                fn()
            for _ in range(a.repeats):
                for k, fn in runners.items():  # interleaved: drifts of a shared machine hit every mode alike
                    t0, c0 = time.perf_counter(), time.process_time()
                    outs[k] = fn()
                    times[k].append(time.perf_counter() - t0)
                    cpu[k].append(time.process_time() - c0)
    med = {k: statistics.median(v) for k, v in times.items()}
    base, base_min = med["unsteered"], min(times["unsteered"])
    print(json.dumps({
        "config": {k: getattr(a, k) for k in ("hidden", "layers", "d_sae", "layer", "arch", "prompt_tokens", "tokens", "batch",
                                             "repeats", "threads", "many")},
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "ratio": {k: round(v / base, 3) for k, v in med.items() if k != "unsteered"},
        "ratio_min": {k: round(min(times[k]) / base_min, 3) for k in times if k != "unsteered"},
        "ratio_cpu": {k: round(statistics.median(cpu[k]) / statistics.median(cpu["unsteered"]), 3) for k in cpu if k != "unsteered"},
        "median_cpu_s": {k: round(statistics.median(v), 4) for k, v in cpu.items()},
        "sparse_equals_dense_tokens": bool(torch.equal(outs["one.sparse"], outs["one.dense"])),  # type: ignore[arg-type]
        "fused_equals_general_tokens": (all(torch.equal(outs[f"{n}.sparse"], outs[f"{n}.general"]) for n in ("one", "many"))  # type: ignore[arg-type]
                                        if a.general else None),
        "nnsight": nnsight_version,
        "nnsight_equals_sparse_tokens": (bool(torch.equal(outs["nnsight.one"], outs["one.sparse"]))  # type: ignore[arg-type]
                                         if "nnsight.one" in outs else None),
        "steered_differs_from_unsteered": not bool(torch.equal(outs["one.sparse"], outs["unsteered"])),  # type: ignore[arg-type]
        "edits_verified": verified,
        "edit_counter": checks,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "times_s": {k: [round(x, 4) for x in v] for k, v in times.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
