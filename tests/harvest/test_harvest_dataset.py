"""harvest_dataset with the shipped toy model over an imagefolder corpus: labels, bad rows, prompts,
determinism, options."""

from __future__ import annotations

import json

import pytest
import torch
from harvest_support import files, manifest, rows_of

from steerlang.dictionary.harvest import LayerCapture, harvest_dataset, model_prompt, partial_dir
from steerlang.errors import InputError
from steerlang.world.vocab import DEFAULT_PROMPT

GOOD_ROWS = [0, 1, 3, 4, 6, 7, 8]  # metadata rows; rows 2 and 5 are bad (missing image, empty caption)


def _captions(corpus) -> dict[int, str]:
    lines = (corpus / "metadata.jsonl").read_text().splitlines()
    return {i: json.loads(line)["text"] for i, line in enumerate(lines)}


def test_toy_model_over_a_corpus_labels_every_position(toy, toy_corpus, tmp_path) -> None:
    assert model_prompt(toy) == DEFAULT_PROMPT  # the toy model carries its own prompt: no --prompt needed
    out = harvest_dataset(toy, toy_corpus, [0, 2], tmp_path / "acts", batch_size=3, shard_size=100)
    m = manifest(out)
    assert m["layers"] == [0, 2] and len(m["shards"]) > 2 and all(s["rows"] == 100 for s in m["shards"][:-1])
    data = m["metadata"]["data"]
    assert m["metadata"]["samples"] == 7 and data["samples"] == 7 and data["bad_rows"] == 2
    assert data["bad"] == {"empty_caption": 1, "missing_image": 1} and data["complete"]
    assert m["metadata"]["patch_grid"] == [9, 9]
    _, lab = rows_of(out)
    assert sorted(set(lab["scene"].tolist())) == GOOD_ROWS
    n_prompt = len(DEFAULT_PROMPT.split())
    for row, caption in _captions(toy_corpus).items():
        if row not in GOOD_ROWS:
            continue
        sel = lab["scene"] == row
        mod, cell, pos = lab["modality"][sel], lab["cell"][sel], lab["position"][sel]
        # the toy template: <s> prompt <image>*81 caption </s>; <s> dropped
        assert pos[mod == 1].tolist() == list(range(1, 1 + n_prompt))
        assert pos[mod == 0].tolist() == list(range(1 + n_prompt, 1 + n_prompt + 81))
        assert cell[mod == 0].tolist() == list(range(81)) and (cell[mod != 0] == -1).all()
        assert int((mod == 2).sum()) == len(caption.split()) + 1  # the caption's words, then </s>


def test_prefix_states_are_those_of_the_model_reading_the_image(toy, toy_corpus, tmp_path) -> None:
    """Image and prompt rows hold what the model computes when it reads the image to answer (the
    caption comes after them, so teacher forcing does not change them)."""
    from PIL import Image

    out = harvest_dataset(toy, toy_corpus, [2], tmp_path / "acts", batch_size=4)
    x, lab = rows_of(out, 2)
    image = Image.open(toy_corpus / "0003.png").convert("RGB")  # metadata row 4
    enc = toy.encode([image], [DEFAULT_PROMPT])
    with LayerCapture(toy, [2]) as cap, torch.no_grad():
        toy.model(**enc)
    ref = cap.captured[2][0]
    sel = (lab["scene"] == 4) & (lab["modality"] != 2)
    assert torch.allclose(x[sel], ref[lab["position"][sel].long()], atol=1e-5)


def test_a_harvest_is_deterministic(toy, toy_corpus, tmp_path) -> None:
    a = harvest_dataset(toy, toy_corpus, [1], tmp_path / "a", batch_size=3, shard_size=128)
    b = harvest_dataset(toy, toy_corpus, [1], tmp_path / "b", batch_size=3, shard_size=128)
    assert files(a) == files(b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no partial folder left
    # the same call again finds its finished harvest and does nothing
    calls: list[int] = []
    assert harvest_dataset(toy, toy_corpus, [1], tmp_path / "a", batch_size=3, shard_size=128, on_batch=calls.append) == a
    assert calls == []
    with pytest.raises(InputError, match="already holds a harvest with other settings"):
        harvest_dataset(toy, toy_corpus, [1], tmp_path / "a", batch_size=2, shard_size=128)


def test_prompt_max_samples_and_shards(toy, toy_corpus, tmp_path) -> None:
    out = harvest_dataset(toy, toy_corpus, [0], tmp_path / "p", prompt="describe the picture .", max_samples=3, batch_size=2)
    _, lab = rows_of(out)
    assert sorted(set(lab["scene"].tolist())) == GOOD_ROWS[:3]
    assert int((lab["modality"] == 1).sum()) == 3 * 4  # "describe the picture ." per sample
    assert manifest(out)["metadata"]["harvest"]["prompt"]["prompt"] == "describe the picture ."
    half = harvest_dataset(toy, toy_corpus, [0], tmp_path / "s", shard=(1, 2), batch_size=2)
    _, lab = rows_of(half)
    assert sorted(set(lab["scene"].tolist())) == [r for r in GOOD_ROWS if r % 2 == 1]


def test_a_model_without_chat_template_or_prompt_needs_one(toy_corpus, tmp_path) -> None:
    from steerlang.world.model import ModelBundle, build_processor, build_toy_model

    proc = build_processor()
    bundle = ModelBundle("plain", build_toy_model(len(proc.tokenizer), seed=1).eval(), proc)
    assert model_prompt(bundle) is None
    with pytest.raises(InputError) as err:
        harvest_dataset(bundle, toy_corpus, [0], tmp_path / "x")
    msg = str(err.value)
    assert msg.startswith("--prompt: plain has no chat template") and "\n" not in msg
    assert not (tmp_path / "x").exists() and not partial_dir(tmp_path / "x").exists()
    out = harvest_dataset(bundle, toy_corpus, [0], tmp_path / "x", prompt="what do you see ?", max_samples=2)
    _, lab = rows_of(out)
    assert int((lab["modality"] == 1).sum()) == 2 * 5  # "what do you see ?"


def test_an_all_bad_corpus_is_an_error(toy, tmp_path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "metadata.jsonl").write_text('{"file_name": "nope.png", "text": "a cat ."}\n')
    with pytest.raises(InputError, match="no usable sample"):
        harvest_dataset(toy, tmp_path / "c", [0], tmp_path / "acts")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
