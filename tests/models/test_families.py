"""Every supported family, on a tiny random model built from a config, saved with save_pretrained
and loaded back through steerlang's loader:

- the adapter's image positions (the runtime's Layout, on a plain forward and inside generate) are
  exactly the positions whose LM input depends on the pixels (found by perturbing pixel_values);
- an `add` at layer 0 on `image` changes exactly those rows of the LM input;
- a region scope selects the right rows of each view, or refuses a tiled layout with a clear error;
- a program that changes nothing leaves the generated tokens identical, and a steered generation
  gives the same tokens with the KV cache on and off;
- generate is seen as one prefill and then decode steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import tiny
import torch
from PIL import Image

from steerlang.errors import InputError
from steerlang.runtime.adapters import adapter_for
from steerlang.runtime.masks import IMAGE, PAD, ImageGrid
from steerlang.runtime.session import Session
from steerlang.world.model import ModelBundle

HEAD = 'let cat = concept "cat"\n'
N_NEW = 4


@dataclass
class Spec:
    model: Callable
    processor: Callable | None = None  # writes the processor into a folder; None: hand-made inputs
    inputs: Callable | None = None
    layers_path: str = "model.language_model.layers"
    tiled: bool = False  # tiles whose place in the image is unknown: regions refuse
    placed: bool = False  # tiles placed by the ids (Idefics3's <row_i_col_j>) or the image sizes: regions per tile
    vq: bool = False  # discrete image codes: a perturbation can leave a code unchanged


def _saved(build: Callable) -> Callable:
    return lambda folder: build().save_pretrained(folder)


SPECS = {
    "llava": Spec(tiny.llava, _saved(tiny.llava_processor)),
    "llava_next": Spec(tiny.llava_next, _saved(tiny.llava_next_processor)),
    "llava_onevision": Spec(tiny.llava_onevision, tiny.write_llava_onevision_processor),
    "qwen2_vl": Spec(tiny.qwen2_vl, tiny.write_qwen_processor),
    "qwen2_5_vl": Spec(tiny.qwen2_5_vl, lambda folder: tiny.write_qwen_processor(folder, "Qwen2_5_VLProcessor")),
    "qwen3_vl": Spec(tiny.qwen3_vl, lambda folder: tiny.write_qwen_processor(folder, "Qwen3VLProcessor")),
    "gemma3": Spec(tiny.gemma3, _saved(tiny.gemma3_processor)),
    "paligemma": Spec(tiny.paligemma, _saved(tiny.paligemma_processor)),
    "idefics3": Spec(tiny.idefics3, _saved(tiny.idefics3_processor), layers_path="model.text_model.layers", placed=True),
    # SmolVLM's processor needs num2words and torchvision. Mistral3's (Pixtral) needs torchvision: steerlang's own.
    "smolvlm": Spec(tiny.smolvlm, inputs=tiny.smolvlm_inputs, layers_path="model.text_model.layers", tiled=True),
    "mistral3": Spec(tiny.mistral3, tiny.write_pixtral_processor),
    "internvl": Spec(tiny.internvl, tiny.write_internvl_processor, placed=True),
    "aya_vision": Spec(tiny.aya_vision, _saved(tiny.aya_vision_processor), placed=True),
    "chameleon": Spec(tiny.chameleon, _saved(tiny.chameleon_processor), layers_path="model.layers", vq=True),
}


def _images() -> list[Image.Image]:
    rng = np.random.RandomState(0)
    return [Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")) for h, w in ((24, 40), (40, 24))]


_CACHE: dict[str, tuple[ModelBundle, dict]] = {}


def _load(name: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelBundle, dict]:
    if name not in _CACHE:
        spec = SPECS[name]
        folder = tmp_path_factory.mktemp(name)
        model = spec.model()
        with torch.no_grad():  # a larger output layer: greedy tokens vary with the input
            model.get_output_embeddings().weight.mul_(20)
        model.generation_config.eos_token_id = None  # always the full length
        model.save_pretrained(folder)
        if spec.processor is not None:
            spec.processor(folder)
            import steerlang

            bundle = steerlang.load_model(folder)
            enc = bundle.encode(_images(), ["what is in the picture ?"] * 2)
        else:
            from steerlang.models import load_pretrained

            loaded, _plan = load_pretrained(folder)
            bundle = ModelBundle(name, loaded, None, path=folder)
            enc = spec.inputs()
        assert type(bundle.model).__name__ == type(model).__name__
        _CACHE[name] = (bundle, enc)
    return _CACHE[name]


@pytest.fixture(params=sorted(SPECS))
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, concepts):  # noqa: ANN001, ANN201
    name = request.param
    bundle, enc = _load(name, tmp_path_factory)
    return name, SPECS[name], bundle, enc, Session(bundle, concepts)


def _lm_input(model: torch.nn.Module, enc: dict, steer=None, block: int = 0) -> torch.Tensor:  # noqa: ANN001
    """The state entering decoder block `block` (after any steering pre-hook) on a plain forward."""
    layer = adapter_for(model).decoder_layers()[block]
    seen: list[torch.Tensor] = []

    def grab(_m, args, kwargs) -> None:  # noqa: ANN001
        seen.append((args[0] if args else kwargs["hidden_states"]).detach().clone())

    with torch.no_grad(), (steer if steer is not None else contextlib.nullcontext()):
        h = layer.register_forward_pre_hook(grab, with_kwargs=True)  # after the steering hook: sees the edit
        try:
            model(**enc)
        finally:
            h.remove()
    return seen[0]


def _pixel_dependent(model: torch.nn.Module, enc: dict, vq: bool = False) -> torch.Tensor:
    """[B, T] bool: the positions whose LM input changes when the pixels change (for discrete
    image codes, also those that change when there are no pixels: the code replaced a placeholder)."""
    base = _lm_input(model, enc)
    changed = torch.zeros(base.shape[:2], dtype=torch.bool)
    if vq:
        no_pixels = {k: v for k, v in enc.items() if k != "pixel_values"}
        changed |= (_lm_input(model, no_pixels) != base).any(-1)
    pix = enc["pixel_values"]
    for seed in range(3):
        other = torch.randn(pix.shape, generator=torch.Generator().manual_seed(100 + seed)).to(pix.dtype) * 2
        other = torch.where(pix == 0, 0, other)  # padding images stay padding
        changed |= (_lm_input(model, {**enc, "pixel_values": other}) != base).any(-1)
    return changed


def test_loads_as_its_own_class_with_its_layers(family) -> None:  # noqa: ANN001
    name, spec, bundle, _enc, session = family
    ad = session.adapter
    assert ad.layers_path == spec.layers_path
    assert ad.n_layers == 2 and ad.hidden_size == tiny.H and ad.image_token_id == tiny.IMG


def test_image_positions_are_the_pixel_dependent_ones(family) -> None:  # noqa: ANN001
    name, spec, bundle, enc, session = family
    expected = _pixel_dependent(bundle.model, enc, spec.vq)
    assert bool(expected.any(dim=1).all()), "every sample has an image"
    with torch.no_grad(), session.steer(HEAD + "trace cat") as st:
        bundle.model(**enc)
    assert st.layout is not None
    assert torch.equal(st.layout.kind == IMAGE, expected)
    # Image-id positions that are not image positions (LLaVA-NeXT's newlines) are PAD, never steered.
    ids = enc["input_ids"]
    assert bool((st.layout.kind[(ids == tiny.IMG) & ~expected] == PAD).all())
    # Patch indices: each sample's patches are 0..n-1, once each.
    for b in range(ids.shape[0]):
        p = st.layout.patch[b][expected[b]]
        assert sorted(p.tolist()) == list(range(len(p)))
        g = st.layout.grid[b]
        views = g.views if isinstance(g, ImageGrid) else None
        total = sum(v.size for v in views) if views else g[0] * g[1]
        assert total == len(p), (g, len(p))


def test_generate_sees_the_same_positions_then_decode_steps(family) -> None:  # noqa: ANN001
    name, spec, bundle, enc, session = family
    expected = _pixel_dependent(bundle.model, enc, spec.vq)
    steps: list[int] = []
    with torch.no_grad(), session.steer(HEAD + "trace cat", on_forward=steps.append) as st:
        bundle.model.generate(**enc, max_new_tokens=N_NEW, do_sample=False, pad_token_id=tiny.PAD)
    assert steps == list(range(N_NEW))
    assert st.layout is not None and torch.equal(st.layout.kind == IMAGE, expected)
    prompt_len = enc["input_ids"].shape[1]
    assert st.pos is not None and st.pos.start == prompt_len + N_NEW - 2


def test_an_image_edit_touches_exactly_the_image_positions(family) -> None:  # noqa: ANN001
    name, spec, bundle, enc, session = family
    expected = _pixel_dependent(bundle.model, enc, spec.vq)
    before = _lm_input(bundle.model, enc)
    after = _lm_input(bundle.model, enc, session.steer(HEAD + "steer image at layer 0 { add cat * 5 }"))
    assert torch.equal((after != before).any(-1), expected)


def test_a_program_that_changes_nothing_leaves_the_tokens_identical(family) -> None:  # noqa: ANN001
    name, spec, bundle, enc, session = family
    kw = {"max_new_tokens": N_NEW, "do_sample": False, "pad_token_id": tiny.PAD}
    with torch.no_grad():
        base = bundle.model.generate(**enc, **kw)
        with session.steer(HEAD + "trace cat\nsteer all { scale cat by 1 }"):
            same = bundle.model.generate(**enc, **kw)
        with session.steer(HEAD + "steer all { add cat * 100 }"):
            other = bundle.model.generate(**enc, **kw)
    assert torch.equal(base, same)
    assert not torch.equal(base, other)  # the check can fail: steering does reach the tokens


def test_the_kv_cache_does_not_change_steered_tokens(family) -> None:  # noqa: ANN001
    name, spec, bundle, enc, session = family
    # Special ids are never generated: a random model that emits the image token would make the
    # uncached run (which re-reads the whole sequence) see more image tokens than images.
    kw = {"max_new_tokens": N_NEW, "do_sample": False, "pad_token_id": tiny.PAD, "suppress_tokens": list(range(10))}
    prog = HEAD + "steer image at layer 1 { add cat * 100 }\nsteer output { add cat * 20 }"
    with torch.no_grad():
        with session.steer(prog):
            cached = bundle.model.generate(**enc, **kw, use_cache=True)
        with session.steer(prog):
            uncached = bundle.model.generate(**enc, **kw, use_cache=False)
        plain = bundle.model.generate(**enc, **kw)
    assert torch.equal(cached, uncached)
    assert not torch.equal(cached, plain)


def test_regions_select_rows_of_each_view_or_refuse_tiles(family) -> None:  # noqa: ANN001
    name, spec, bundle, enc, session = family
    prog = HEAD + "steer image region [0:0.5, 0:1] at layer 0 { add cat * 5 }"
    sizes = [(im.height, im.width) for im in _images()]  # InternVL and AyaVision place their tiles by them
    with torch.no_grad(), session.steer(HEAD + "trace cat", image_sizes=sizes) as st:
        bundle.model(**enc)
    layout = st.layout
    assert layout is not None
    tiles = any(isinstance(g, ImageGrid) and any(v.box is None for v in g.views) for g in layout.grid)
    if spec.placed:  # the tiles are placed in the image: some view covers only part of it
        assert any(isinstance(g, ImageGrid) and any(v.box not in (None, (0.0, 0.0, 1.0, 1.0)) for v in g.views)
                   for g in layout.grid)
    if tiles:
        assert spec.tiled
        with pytest.raises(InputError, match="not yet supported for .*tiled layout"):
            _lm_input(bundle.model, enc, session.steer(prog))
        return
    before = _lm_input(bundle.model, enc)
    after = _lm_input(bundle.model, enc, session.steer(prog, image_sizes=sizes))
    changed = (after != before).any(-1)
    # the top half of the image: in a view covering rows top..bottom of it, the rows
    # r < (0.5 - top) / (bottom - top) * rows (r < rows / 2 for a view of the whole image)
    want = torch.zeros_like(changed)
    for b, g in enumerate(layout.grid):
        views = g.views if isinstance(g, ImageGrid) else None
        for i, (rows, box) in enumerate([(v.rows, v.box) for v in views] if views else [(g[0], (0.0, 0.0, 1.0, 1.0))]):
            top, bottom = box[0], box[2]
            sel = (layout.kind[b] == IMAGE) & (layout.view[b] == i)
            want[b] |= sel & (layout.rows[b] < (0.5 - top) / (bottom - top) * rows)
    assert bool(want.any()) and torch.equal(changed, want)


def test_qwen3_vl_says_which_image_edits_deepstack_partly_undoes(tmp_path_factory, concepts) -> None:  # noqa: ANN001
    import warnings

    from steerlang.errors import SteerWarning

    bundle, enc = _load("qwen3_vl", tmp_path_factory)
    session = Session(bundle, concepts)
    ad = session.adapter
    assert ad.deepstack_layers == 1 and ad.reinjected_after(0) == [0] and ad.reinjected_after(1) == []
    with pytest.warns(SteerWarning, match=r"after block 0 \(DeepStack\): an image edit at layer 0 .* layer 1 or later"):
        session.plan(session.compile(HEAD + "steer image at layer 0 { add cat * 5 }"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SteerWarning)
        session.plan(session.compile(HEAD + "steer image at layer 1 { add cat * 5 }"))
        session.plan(session.compile(HEAD + "steer prompt at layer 0 { add cat * 5 }"))
    # At layer 1 (after the last re-injection) the edit is exactly what reaches block 1, at the image rows only.
    expected = _pixel_dependent(bundle.model, enc)
    before = _lm_input(bundle.model, enc, block=1)
    after = _lm_input(bundle.model, enc, session.steer(HEAD + "steer image at layer 1 { add cat * 5 }"), block=1)
    assert torch.equal((after != before).any(-1), expected)
