"""Every supported family, on a tiny random model built from a config, saved with save_pretrained
and loaded back through steerlang's loader:

- the adapter's image positions (the runtime's Layout, on a plain forward and inside generate) are
  exactly the positions whose LM input depends on the pixels (found by perturbing pixel_values);
- an `add` at layer 0 on `image` changes exactly those rows of the LM input;
- a region scope selects the right rows of each view, or refuses a tiled layout with a clear error;
- a program that changes nothing leaves the generated tokens identical;
- generate is seen as one prefill and then decode steps.
"""

from __future__ import annotations

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
    vq: bool = False  # discrete image codes: a perturbation can leave a code unchanged


def _saved(build: Callable) -> Callable:
    return lambda folder: build().save_pretrained(folder)


SPECS = {
    "llava": Spec(tiny.llava, _saved(tiny.llava_processor)),
    "llava_next": Spec(tiny.llava_next, _saved(tiny.llava_next_processor)),
    "qwen2_vl": Spec(tiny.qwen2_vl, tiny.write_qwen_processor),
    "qwen2_5_vl": Spec(tiny.qwen2_5_vl, lambda folder: tiny.write_qwen_processor(folder, "Qwen2_5_VLProcessor")),
    "gemma3": Spec(tiny.gemma3, _saved(tiny.gemma3_processor)),
    "paligemma": Spec(tiny.paligemma, _saved(tiny.paligemma_processor)),
    "idefics3": Spec(tiny.idefics3, _saved(tiny.idefics3_processor), layers_path="model.text_model.layers", tiled=True),
    # SmolVLM's processor needs num2words and torchvision; Mistral3's (Pixtral) needs torchvision.
    "smolvlm": Spec(tiny.smolvlm, inputs=tiny.smolvlm_inputs, layers_path="model.text_model.layers", tiled=True),
    "mistral3": Spec(tiny.mistral3, inputs=tiny.mistral3_inputs),
    "internvl": Spec(tiny.internvl, tiny.write_internvl_processor, tiled=True),
    "aya_vision": Spec(tiny.aya_vision, _saved(tiny.aya_vision_processor), tiled=True),
    "chameleon": Spec(tiny.chameleon, _saved(tiny.chameleon_processor), layers_path="model.layers", vq=True),
}


def _images() -> list[Image.Image]:
    rng = np.random.RandomState(0)
    return [Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")) for h, w in ((24, 40), (40, 24))]


_CACHE: dict[str, tuple[ModelBundle, dict]] = {}


@pytest.fixture(params=sorted(SPECS))
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, concepts):  # noqa: ANN001, ANN201
    name = request.param
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
    bundle, enc = _CACHE[name]
    return name, SPECS[name], bundle, enc, Session(bundle, concepts)


def _lm_input(model: torch.nn.Module, enc: dict, steer=None) -> torch.Tensor:  # noqa: ANN001
    """The state entering decoder block 0 (after any steering pre-hook) on a plain forward."""
    ad = adapter_for(model)
    seen: list[torch.Tensor] = []

    def grab(_m, args, kwargs) -> None:  # noqa: ANN001
        seen.append((args[0] if args else kwargs["hidden_states"]).detach().clone())

    with torch.no_grad():
        if steer is not None:
            with steer:
                h = ad.decoder_layers()[0].register_forward_pre_hook(grab, with_kwargs=True)
                try:
                    model(**enc)
                finally:
                    h.remove()
        else:
            h = ad.decoder_layers()[0].register_forward_pre_hook(grab, with_kwargs=True)
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


def test_regions_select_rows_of_each_view_or_refuse_tiles(family) -> None:  # noqa: ANN001
    name, spec, bundle, enc, session = family
    prog = HEAD + "steer image region [0:0.5, 0:1] at layer 0 { add cat * 5 }"
    with torch.no_grad(), session.steer(HEAD + "trace cat") as st:
        bundle.model(**enc)
    layout = st.layout
    assert layout is not None
    tiles = any(isinstance(g, ImageGrid) and any(v.box is None for v in g.views) for g in layout.grid)
    if tiles:
        assert spec.tiled
        with pytest.raises(InputError, match="not yet supported for .*tiled layout"):
            _lm_input(bundle.model, enc, session.steer(prog))
        return
    before = _lm_input(bundle.model, enc)
    after = _lm_input(bundle.model, enc, session.steer(prog))
    changed = (after != before).any(-1)
    # the top half of every view: rows r < rows / 2
    want = torch.zeros_like(changed)
    for b, g in enumerate(layout.grid):
        views = g.views if isinstance(g, ImageGrid) else None
        for i, rows in enumerate([v.rows for v in views] if views else [g[0]]):
            sel = (layout.kind[b] == IMAGE) & (layout.view[b] == i)
            want[b] |= sel & (layout.rows[b] < rows * 0.5)
    assert bool(want.any()) and torch.equal(changed, want)
