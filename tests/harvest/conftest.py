"""Fixtures for the harvest tests: the shipped toy model, a toy corpus exported as an imagefolder
(with a few bad rows), and tiny random models of other families (tests/models/tiny.py) saved with a
chat template and loaded back through steerlang's loader."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "models"))

import tiny  # noqa: E402

# A chat template in the spirit of the real ones: turns of content parts; the image part becomes the
# processor's <image> placeholder, which the processor expands.
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} {% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
                 "{% else %}{{ c['text'] }} {% endif %}{% endfor %}. {% endfor %}{% if add_generation_prompt %}assistant {% endif %}")
# Captions in the tiny tokenizers' words; images of different sizes (LLaVA-NeXT: different grids).
CAPTIONS = ["a cat", "a dog in the picture", "the cat .", "what is a dog ?"]
SIZES = [(24, 40), (40, 24), (16, 16), (32, 32)]


@pytest.fixture(scope="session")
def toy():  # noqa: ANN201
    import steerlang

    return steerlang.load_model("toyworld")


@pytest.fixture(scope="session")
def toy_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scenes 0..6 of toy stream 4 as an imagefolder corpus, plus two bad rows (a missing image and
    an empty caption) between them."""
    from steerlang.world.corpus import export_toy_corpus

    root = tmp_path_factory.mktemp("toycorpus") / "corpus"
    export_toy_corpus(root, seed=4, count=7)
    lines = (root / "metadata.jsonl").read_text().splitlines()
    lines.insert(2, json.dumps({"file_name": "missing.png", "text": "a cat ."}))
    lines.insert(5, json.dumps({"file_name": "0001.png", "text": "  "}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def family_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("famcorpus") / "corpus"
    root.mkdir()
    rng = np.random.RandomState(0)
    rows = []
    for i, ((h, w), text) in enumerate(zip(SIZES, CAPTIONS, strict=True)):
        Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")).save(root / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": text})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


_SAVED: dict[tuple[str, bool], Path] = {}


def saved_family(tmp_path_factory: pytest.TempPathFactory, name: str, chat: bool = True) -> Path:
    """A folder with tiny `name`'s model and processor (with CHAT_TEMPLATE when `chat`), cached."""
    key = (name, chat)
    if key not in _SAVED:
        folder = tmp_path_factory.mktemp(f"{name}{'-chat' if chat else ''}")
        getattr(tiny, name)().save_pretrained(folder)
        proc = getattr(tiny, f"{name}_processor")()
        if chat:
            proc.chat_template = CHAT_TEMPLATE
        proc.save_pretrained(folder)
        _SAVED[key] = folder
    return _SAVED[key]
