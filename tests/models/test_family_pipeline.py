"""Every family with a processor, end to end as a user would run it on their own model and data:
harvest an image-caption corpus and train an SAE (`steer dict train --data`), then run a program
that names the raw SAE's latents (`steer run --dictionary SAE_FOLDER`).

- the harvest holds each sample's image positions once each, with patch indices 0..n-1, n being
  what the runtime's layout finds for that image;
- `set image#3 = 2` at layer 1 moves exactly the image rows entering block 1, each by
  (2 - z_3) W_dec[3] with z_3 read by the trained SAE from the unsteered state.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from test_families import SPECS, _lm_input, _load

from steerlang.dictionary.api import train_dictionary
from steerlang.dictionary.rawset import load_raw_set
from steerlang.runtime.masks import IMAGE
from steerlang.runtime.session import Session

PROMPT = "what is in the picture ?"
SIZES = ((16, 16), (24, 40), (40, 24), (32, 32))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.RandomState(1)
    rows = []
    for i in range(6):
        h, w = SIZES[i % len(SIZES)]
        Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")).save(root / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": "a red thing"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _image_kinds(session: Session, enc: dict) -> torch.Tensor:
    """[B, T] bool: the image positions of the runtime's layout for these inputs."""
    with torch.no_grad(), session.steer("trace image#0") as st:  # no edit: only the layout
        session.model(**enc)
    assert st.layout is not None
    return st.layout.kind == IMAGE


@pytest.mark.parametrize("name", sorted(n for n, s in SPECS.items() if s.processor is not None))
def test_harvest_train_and_steer_with_the_raw_sae(name: str, corpus: Path, tmp_path: Path,
                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    bundle, _enc = _load(name, tmp_path_factory)
    acts, out = tmp_path / "acts", tmp_path / "sae"
    res = train_dictionary(model=str(bundle.path), layer=1, modality="image", out=out, latents=32, k=4, steps=10,
                           batch_size=64, data=str(corpus), prompt=PROMPT, acts_dir=acts, progress=False)
    assert res["out"] == str(out) and (out / "cfg.json").is_file()

    raw = load_raw_set(out)
    session = Session(bundle, raw)
    images = [Image.open(corpus / f"{i}.png").convert("RGB") for i in range(6)]

    # The harvest: per sample, the image rows' patch indices are 0..n-1 once each, n = the layout's count.
    cells: dict[int, list[int]] = {}
    for shard in sorted(acts.glob("shard_*.safetensors")):
        t = load_file(shard)
        img = t["modality"] == 0
        for s, c in zip(t["scene"][img].tolist(), t["cell"][img].tolist(), strict=True):
            cells.setdefault(s, []).append(c)
    assert sorted(cells) == list(range(6))
    for i, im in enumerate(images):
        n = int(_image_kinds(session, bundle.encode([im], [PROMPT])).sum())
        assert sorted(cells[i]) == list(range(n)), (i, n)

    # The raw SAE's latent 3, set at the image positions of layer 1.
    enc = bundle.encode(images[1:3], [PROMPT] * 2)
    image = _image_kinds(session, enc)
    before = _lm_input(session.model, enc, block=1)
    after = _lm_input(session.model, enc, session.steer("steer image at layer 1 { set image#3 = 2 }"), block=1)
    assert torch.equal((after != before).any(-1), image)
    sae = raw.sae(1, "image")
    z3 = sae.encode(before[image])[:, 3]
    want = (2.0 - z3)[:, None] * sae.W_dec[3]
    torch.testing.assert_close(after[image] - before[image], want, rtol=1e-4, atol=1e-5)
    assert session.run("steer image at layer 1 { set image#3 = 2 }", images=images[:1], prompt=PROMPT, max_new_tokens=2)
