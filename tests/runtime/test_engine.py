"""The hook engine: exact no-ops, edit arithmetic, image writes, rules, chains, KV cache, safety."""

from __future__ import annotations

import pytest
import torch
from runtime_support import encode, gen_ids, logits

from steerlang.runtime.session import load_image

HEAD = 'let cat = concept "cat"\nlet dog = concept "dog"\nlet word = concept "word"\n'


@pytest.fixture(scope="module")
def pics(images):  # noqa: ANN001, ANN201
    return [load_image(p) for p in images]


@pytest.fixture(scope="module")
def enc(bundle, pics):  # noqa: ANN001, ANN201
    return encode(bundle, pics)


def edited_input(session, prog: str, enc: dict, layer: int = 0, **kw) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    """(state entering `layer` unsteered, the same state after the steering hook)."""
    seen: list[torch.Tensor] = []

    def capture(_m: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        seen.append((args[0] if args else kwargs["hidden_states"]).clone())

    block = session.adapter.decoder_layers()[layer]
    with torch.no_grad():
        h = block.register_forward_pre_hook(capture, with_kwargs=True)
        try:
            session.model(**enc)
        finally:
            h.remove()
        with session.steer(HEAD + prog, **kw):
            h = block.register_forward_pre_hook(capture, with_kwargs=True)  # runs after the steering hook
            try:
                session.model(**enc)
            finally:
                h.remove()
    return seen[0], seen[1]


def sparse_latents(session, layer: int, modality: str, h: torch.Tensor, latents: tuple[int, ...]) -> torch.Tensor:  # noqa: ANN001
    sae = session.concepts.sae(layer, modality)
    with torch.no_grad():
        return sae.encode(h)[..., list(latents)]


@pytest.mark.parametrize("prog", [
    "steer all { scale cat by 1 }",
    "steer image where cat > 99 { off cat }",
    "when cat > 99 in image { off dog\nadd word * 3 }",
    "steer output tokens 500..600 { on dog }",
    "steer prompt { clamp word to [-1000, 1000] }",
    "trace cat, dog",
])
def test_noop_programs_are_bit_identical(session, bundle, enc, prog: str) -> None:  # noqa: ANN001
    ref_logits, ref_ids = logits(bundle, enc), gen_ids(bundle, enc)
    with session.steer(HEAD + prog):
        assert torch.equal(logits(bundle, enc), ref_logits)
        assert torch.equal(gen_ids(bundle, enc), ref_ids)


def test_off_text_is_the_exact_latent_delta(session, enc) -> None:  # noqa: ANN001
    before, after = edited_input(session, "steer prompt at layer 0 { off word }", enc)
    sae = session.concepts.sae(0, "text")
    idx = torch.tensor([30])
    prompt = session.adapter.image_mask(enc["input_ids"]) == 0
    prompt &= enc["attention_mask"].bool() & (enc["input_ids"] != session.adapter.text_config.bos_token_id)
    z = sae.encode_latents(before[prompt], idx)
    expected = before.clone()
    rows = (z != 0).any(-1)
    expected[prompt] = torch.where(rows[:, None], before[prompt] + sae.decode_delta(-z, idx), before[prompt])
    assert rows.any() and torch.equal(after, expected)


def closing_reference(m: torch.Tensor) -> torch.Tensor:
    """3x3 closing of [B, R, C] bool masks, written out by hand (outside the grid counts as inside
    when eroding)."""
    _, rows, cols = m.shape
    near = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]
    inside = lambda r, c: 0 <= r < rows and 0 <= c < cols  # noqa: E731
    out = []
    for g in m:
        dil = [[any(inside(r + a, c + b) and bool(g[r + a, c + b]) for a, b in near) for c in range(cols)] for r in range(rows)]
        out.append([[all(not inside(r + a, c + b) or dil[r + a][c + b] for a, b in near) for c in range(cols)] for r in range(rows)])
    return torch.tensor(out)


def test_image_off_writes_the_background_where_the_concept_is(session, concepts, enc) -> None:  # noqa: ANN001
    img = session.adapter.image_mask(enc["input_ids"])
    g = concepts.by_name("cat").group(0, "image")
    before, _ = edited_input(session, "trace cat", enc)
    act = (sparse_latents(session, 0, "image", before[img], g.latents) @ torch.tensor(g.weights)) / g.scale
    t = float(act.median())
    before, after = edited_input(session, f"steer image where cat > {t} at layer 0 {{ off cat }}", enc)
    where = act > t
    assert 0 < int(where.sum()) < len(where)
    patch = (img.long().cumsum(1) - 1)[img]
    closed = closing_reference(where.view(-1, 9, 9)).flatten()  # 9x9 grids, samples in order
    assert int(closed.sum()) >= int(where.sum())
    expected = before[img].clone()
    expected[closed] = concepts.background(0)[patch[closed]]
    assert torch.equal(after[img], expected)
    assert torch.equal(after[~img], before[~img])


def test_image_replace_writes_prototypes_where_seen(session, concepts, enc) -> None:  # noqa: ANN001
    before, after = edited_input(session, "steer image at layer 0 { replace cat with dog }", enc)
    img = session.adapter.image_mask(enc["input_ids"])
    g = concepts.by_name("cat").group(0, "image")
    act = (sparse_latents(session, 0, "image", before[img], g.latents) @ torch.tensor(g.weights)) / g.scale
    present = act > g.threshold
    patch = (img.long().cumsum(1) - 1)[img]
    proto, count = concepts.prototype(concepts.by_name("dog"), 0)
    expected = before[img].clone()
    seen = count[patch] > 0
    expected[present & seen] = proto[patch[present & seen]]
    expected[present & ~seen] = concepts.background(0)[patch[present & ~seen]]
    assert present.any() and (present & seen).any() and (present & ~seen).any()
    assert torch.equal(after[img], expected)


def test_set_writes_the_target_activation(session, enc) -> None:  # noqa: ANN001
    before, after = edited_input(session, "steer prompt at layer 0 { set dog = 2.5 }", enc)
    sae = session.concepts.sae(0, "text")
    idx = torch.tensor([12, 13])  # dog's text group: weights (1, 1), scale 1 -> 1.25 on each latent
    prompt = (session.adapter.image_mask(enc["input_ids"]) == 0) & enc["attention_mask"].bool()
    prompt &= enc["input_ids"] != session.adapter.text_config.bos_token_id
    with torch.no_grad():
        z = sae.encode_latents(before[prompt], idx)
        expected = before[prompt] + sae.decode_delta(torch.full_like(z, 1.25) - z, idx)
    assert torch.equal(after[prompt], expected) and torch.equal(after[~prompt], before[~prompt])


def test_sparse_and_dense_paths_agree(session, enc) -> None:  # noqa: ANN001
    prog = "steer all { set dog = 2\nscale cat by 0.5 }"
    b1, a_sparse = edited_input(session, prog, enc, layer=1)
    b2, a_dense = edited_input(session, prog, enc, layer=1, dense=True)
    assert torch.equal(b1, b2)
    assert torch.allclose(a_sparse, a_dense, atol=1e-5) and not torch.equal(a_sparse, b1)


def test_kv_cache_gives_the_same_tokens(session, bundle, enc) -> None:  # noqa: ANN001
    base = gen_ids(bundle, enc, n=8)
    for prog in ("steer output tokens 2..20 { set dog = 3\nadd word * 4 }", "steer image { add cat * 6 }",
                 "when word > 0.1 in output { steer output { scale dog by 3 } }"):
        with session.steer(HEAD + prog):
            cached = gen_ids(bundle, enc, n=8)
            uncached = gen_ids(bundle, enc, n=8, use_cache=False)
        assert torch.equal(cached, uncached), prog
    with session.steer(HEAD + "steer output tokens 2..20 { set dog = 3\nadd word * 4 }"):
        steered = gen_ids(bundle, enc, n=8)
    assert torch.equal(steered[:, :3], base[:, :3])  # tokens 0..2 are predicted before position 2 exists
    assert not torch.equal(steered, base)


def hooks_left(model: torch.nn.Module, enc: dict | None = None) -> int:
    """Forward hooks on the model. transformers adds two output-capturing hooks of its own to the
    vision tower at a model's first forward: with `enc`, one plain forward runs first so that a
    count taken before any steering already includes them (the test then passes in any order)."""
    if enc is not None:
        with torch.no_grad():
            model(**enc)
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


@pytest.fixture(scope="module")
def fresh(model_dir):  # noqa: ANN001, ANN201
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(model_dir).eval()
    model.generation_config.eos_token_id = None
    return model


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_exception_mid_generation_leaves_no_hook(session, bundle, enc, fresh, exc) -> None:  # noqa: ANN001
    def boom(step: int) -> None:
        if step == 3:
            raise exc("stop at step 3")

    before = hooks_left(bundle.model, enc)
    with pytest.raises(exc), session.steer(HEAD + "steer all { set dog = 3 }", on_forward=boom):
        gen_ids(bundle, enc, n=8)
    assert hooks_left(bundle.model) == before
    with torch.no_grad():
        assert torch.equal(fresh(**enc).logits, logits(bundle, enc))
        ids = fresh.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=bundle.tokenizer.pad_token_id)
    assert torch.equal(ids[:, enc["input_ids"].shape[1]:], gen_ids(bundle, enc, n=8))


def test_rules_apply_per_sample(session, enc) -> None:  # noqa: ANN001
    with session.steer(HEAD + "trace cat") as st, torch.no_grad():
        session.model(**enc)
    maxes = st.trace.max_activation("cat", "image", 0)
    lo, hi = float(maxes.min()), float(maxes.max())
    assert hi > lo
    t = (lo + hi) / 2
    before, after = edited_input(session, f"when cat > {t} in image {{ steer prompt at layer 0 {{ add word * 3 }} }}", enc)
    changed = (after != before).any(-1).any(-1)
    assert changed.tolist() == (maxes > t).tolist()
    before, after = edited_input(session, f"when not cat > {t} in image {{ steer prompt at layer 0 {{ add word * 3 }} }}", enc)
    assert (after != before).any(-1).any(-1).tolist() == (maxes <= t).tolist()


def test_chains_are_traced_and_forced(session, enc) -> None:  # noqa: ANN001
    with session.steer(HEAD + "chain c: cat -> dog at layers 1..2") as st, torch.no_grad():
        session.model(**enc)
    [summary] = st.trace.chain_summary(0)
    assert summary["chain"] == "c" and [x["concept"] for x in summary["links"]] == ["cat", "dog"]
    assert set(summary["links"][0]["max_by_layer"]) == {"0", "1", "2"} and set(summary["links"][1]["max_by_layer"]) == {"1", "2"}
    before, after = edited_input(session, "force chain c: cat at layer 0 -> dog at layer 0", enc)
    assert (after != before).any()
    before2, after2 = edited_input(session, "steer all at layer 0 { on dog }", enc)
    changed_force, changed_all = (after != before).any(-1), (after2 != before2).any(-1)
    assert (changed_force & ~changed_all).sum() == 0 and changed_force.sum() < changed_all.sum()


def test_hooks_removed_after_run(session, bundle, pics, enc) -> None:  # noqa: ANN001
    before = hooks_left(bundle.model, enc)
    session.run(HEAD + "steer image { off cat }\ntrace cat", images=pics[:1], max_new_tokens=3)
    assert hooks_left(bundle.model) == before


@pytest.mark.parametrize("read", ["pre", "linear"])
def test_pre_group_reads_encoder_preactivations(bundle, concept_dir, tmp_path, enc, read) -> None:  # noqa: ANN001
    """An image group read before TopK fires where its score > threshold, from p = the encoder's
    pre-activations of its latents (whether or not they won the TopK): "pre" max_i (w_i p_i +
    offset_i), "linear" sum_i w_i p_i + offset_0 (signed); `off` blanks its closing."""
    import json
    import shutil

    from steerlang.dictionary.concepts import load_concept_set
    from steerlang.runtime.session import Session

    weights, offsets = ([0.5, 0.8], [-0.1, 0.05]) if read == "pre" else ([10.0, -1.0], [0.05])
    # The threshold sits at the median score on these images, so that the group fires on some patches and
    # not others whatever random weights this transformers version's initialisation gives the model.
    plain = Session(bundle, load_concept_set(concept_dir))
    img = plain.adapter.image_mask(enc["input_ids"])
    before, _ = edited_input(plain, "trace cat", enc)
    with torch.no_grad():
        pre = plain.concepts.sae(0, "image").pre_acts(before[img])[:, [40, 41]]
    if read == "pre":
        act = (pre * torch.tensor(weights) + torch.tensor(offsets)).amax(1)
    else:
        act = pre @ torch.tensor(weights) + offsets[0]
    s = act.sort().values
    threshold = float(s[len(s) // 2 - 1] + s[len(s) // 2]) / 2  # halfway between two scores: no tie at the boundary
    present = act > threshold
    assert 0 < int(present.sum()) < len(present)
    root = tmp_path / "withpre"
    shutil.copytree(concept_dir, root)
    spec = json.loads((root / "concepts.json").read_text())
    sun = next(c for c in spec["concepts"] if c["name"] == "sun")
    moon = {**sun, "index": 1, "name": "moon", "aliases": [], "groups": [{
        **sun["groups"][0], "layer": 0, "latents": [40, 41], "weights": weights, "offsets": offsets,
        "read": read, "threshold": threshold}]}
    spec["concepts"].append(moon)
    (root / "concepts.json").write_text(json.dumps(spec))
    cs = load_concept_set(root)
    g = cs.by_name("moon").group(0, "image")
    assert g.read == read and g.offsets == tuple(offsets)
    session = Session(bundle, cs)
    again, after = edited_input(session, 'let moon = concept "moon"\nsteer image at layer 0 { off moon }', enc)
    assert torch.equal(again, before)
    patch = (img.long().cumsum(1) - 1)[img]
    closed = closing_reference(present.view(-1, 9, 9)).flatten()
    expected = before[img].clone()
    expected[closed] = cs.background(0)[patch[closed]]
    assert torch.equal(after[img], expected)
