"""harvest_dataset on tiny random models of other families (LLaVA-NeXT: base and high-resolution
views whose row newlines share the image id; Idefics3: tiles, a global view, the text model at
model.text_model), each with a chat template: image rows are exactly the positions whose LM input
depends on the pixels, caption rows exactly the caption's tokens, the rest before the caption is
prompt; batching does not change a sample's states."""

from __future__ import annotations

import pytest
import torch
from conftest import CAPTIONS, saved_family
from harvest_support import files, rows_of
from PIL import Image

import steerlang
from steerlang.dictionary.harvest import harvest_dataset
from steerlang.errors import InputError
from steerlang.models.families import family_of
from steerlang.runtime.adapters import adapter_for

FAMILIES = ["llava_next", "idefics3"]


def _alone(bundle, image, caption):  # noqa: ANN001, ANN202
    """The sample's inputs as its chat template writes them (user: the image; assistant: the caption)."""
    messages = [{"role": "user", "content": [{"type": "image"}]},
                {"role": "assistant", "content": [{"type": "text", "text": caption}]}]
    text = bundle.processor.apply_chat_template(messages, tokenize=False)
    nest = family_of(type(bundle.model).__name__).nest_images
    return dict(bundle.processor(images=[[image]] if nest else [image], text=[text], return_tensors="pt"))


def _lm_input(model, enc) -> torch.Tensor:  # noqa: ANN001
    seen = []
    h = adapter_for(model).decoder_layers()[0].register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append((args[0] if args else kwargs["hidden_states"]).detach()), with_kwargs=True)
    try:
        with torch.no_grad():
            model(**enc)
    finally:
        h.remove()
    return seen[0][0]


def _pixel_dependent(model, enc) -> list[int]:  # noqa: ANN001
    base = _lm_input(model, enc)
    changed = torch.zeros(base.shape[0], dtype=torch.bool)
    pix = enc["pixel_values"]
    for seed in range(3):
        other = torch.randn(pix.shape, generator=torch.Generator().manual_seed(100 + seed)) * 2
        other = torch.where(pix == 0, 0, other)  # padding images stay padding
        changed |= (_lm_input(model, {**enc, "pixel_values": other}) != base).any(-1)
    return changed.nonzero().flatten().tolist()


@pytest.mark.parametrize("name", FAMILIES)
def test_positions_follow_the_adapter(name, family_corpus, tmp_path, tmp_path_factory) -> None:
    bundle = steerlang.load_model(saved_family(tmp_path_factory, name))
    assert bundle.chat
    out = harvest_dataset(bundle, family_corpus, None, tmp_path / "a", batch_size=3, shard_size=64)
    assert files(out) == files(harvest_dataset(bundle, family_corpus, None, tmp_path / "b", batch_size=3, shard_size=64))
    x0, lab = rows_of(out, 0)
    tok = bundle.tokenizer
    img_id = adapter_for(bundle.model).image_token_id
    newlines = 0
    for i, caption in enumerate(CAPTIONS):
        enc = _alone(bundle, Image.open(family_corpus / f"{i}.png").convert("RGB"), caption)
        ids = enc["input_ids"][0].tolist()
        sel = lab["scene"] == i
        img, cap, prm = (sel & (lab["modality"] == m) for m in (0, 2, 1))
        pixel = _pixel_dependent(bundle.model, enc)
        assert lab["position"][img].tolist() == pixel
        assert sorted(lab["cell"][img].tolist()) == list(range(len(pixel)))
        assert torch.allclose(x0[img], _lm_input(bundle.model, enc)[pixel], atol=1e-6)
        want = tok(caption, add_special_tokens=False).input_ids
        cap_pos = lab["position"][cap].tolist()
        assert [ids[p] for p in cap_pos] == want and cap_pos == list(range(cap_pos[0], cap_pos[0] + len(want)))
        expect = [p for p in range(cap_pos[0]) if p not in pixel and ids[p] not in (img_id, tok.bos_token_id)]
        assert lab["position"][prm].tolist() == expect
        newlines += sum(ids[p] == img_id for p in range(len(ids))) - len(pixel)
    if name == "llava_next":
        assert newlines > 0  # row newlines carry the image id and were dropped
    # a sample's states do not depend on the batch it was run in (right padding keeps positions)
    one = harvest_dataset(bundle, family_corpus, [2], tmp_path / "c", batch_size=1)
    three = harvest_dataset(bundle, family_corpus, [2], tmp_path / "d", batch_size=3)
    (xa, la), (xb, lb) = rows_of(one, 2), rows_of(three, 2)
    assert all(torch.equal(la[k], lb[k]) for k in la)
    assert torch.allclose(xa, xb, atol=1e-5)


def test_no_chat_template_needs_a_prompt(family_corpus, tmp_path, tmp_path_factory) -> None:
    bundle = steerlang.load_model(saved_family(tmp_path_factory, "llava_next", chat=False))
    assert not bundle.chat
    with pytest.raises(InputError, match=r"^--prompt: \S+ has no chat template"):
        harvest_dataset(bundle, family_corpus, [0], tmp_path / "x")
    out = harvest_dataset(bundle, family_corpus, [0], tmp_path / "x", prompt="describe the picture")
    _, lab = rows_of(out)
    for i, caption in enumerate(CAPTIONS):
        sel = lab["scene"] == i
        assert int((lab["modality"][sel] == 2).sum()) == len(caption.split()) + 1  # then </s>
        assert int((lab["modality"][sel] == 1).sum()) == 3  # "describe the picture"
