from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from steerlang.cli import app
from steerlang.dictionary.browse import (
    concept_card,
    find_concept,
    heatmap_overlay,
    list_features,
    render_html,
)
from steerlang.dictionary.concepts import load_concept_set
from steerlang.errors import DictionaryError, InputError
from steerlang.lang import compile_program
from steerlang.world.scenes import blank_image


def test_concept_set_round_trip_and_table_protocol(tiny_concepts) -> None:
    cs = tiny_concepts
    assert cs.names() == ["and@L1/text0", "cat", "dog", "kitty"]
    assert cs.lookup("kitty").name == "cat" and cs.lookup_id("joint", 1).name == "dog"
    assert cs.layers() == [0, 1]
    assert cs.sae(0, "image").cfg.d_sae == 32
    assert cs.background(1).shape == (81, 128)
    prog = compile_program('let k = concept "kitty"\nsteer image { off k }', cs)
    assert prog.steps[0].edits[0].target.terms[0].ref.canonical == "cat"


def test_features_search_and_did_you_mean(tiny_concepts) -> None:
    assert [r["name"] for r in list_features(tiny_concepts, "ca")] == ["cat"]
    assert list_features(tiny_concepts, "joint#1")[0]["name"] == "dog"
    with pytest.raises(InputError, match='did you mean'):
        find_concept(tiny_concepts, "kat")
    card = concept_card(find_concept(tiny_concepts, "cat"))
    assert card["groups"][0]["latents"] == [1, 2]


class _Tags(HTMLParser):
    """Every start tag in document order, as (tag, attributes, ancestors' (tag, attributes))."""

    VOID = {"meta", "img", "input", "br", "link", "hr"}

    def __init__(self, page: str) -> None:
        super().__init__()
        self.stack: list[tuple[str, dict]] = []
        self.tags: list[tuple[str, dict, tuple]] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs) -> None:
        a = {k: (v or "") for k, v in attrs}
        self.tags.append((tag, a, tuple(self.stack)))
        if tag not in self.VOID:
            self.stack.append((tag, a))

    def handle_endtag(self, tag) -> None:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break

    def index(self, tag: str, **attrs: str) -> int:
        return next(i for i, (t, a, _) in enumerate(self.tags) if t == tag and all(a.get(k) == v for k, v in attrs.items()))


def _strip(width: int = 6) -> Image.Image:
    """A heatmap strip as wide as the CLI's (6 tiles of 192 px): wider than a narrow window."""
    tile = heatmap_overlay(blank_image(), np.eye(9))
    strip = Image.new("RGB", (width * (tile.width + 4) - 4, tile.height), "white")
    for n in range(width):
        strip.paste(tile, (n * (tile.width + 4), 0))
    return strip


def test_card_renders(tiny_concepts) -> None:
    page = render_html(tiny_concepts, {"joint#0": _strip()})
    assert page.startswith("<!doctype html>") and "cat" in page and "data:image/png;base64" in page
    tags = _Tags(page)
    # One card per named joint concept (cat with its picture, dog without), not one per concept.
    assert [a["id"] for t, a, _ in tags.tags if "card" in a.get("class", "").split()] == ["joint-0", "joint-1"]
    assert page.count("<img") == 1


def test_card_leads_with_pictures_then_the_table(tiny_concepts) -> None:
    tags = _Tags(render_html(tiny_concepts, {"joint#0": _strip()}))
    img, table = tags.index("img"), tags.index("section", id="concepts")
    assert img < table < tags.index("input", id="q") < next(i for i, (t, a, _) in enumerate(tags.tags) if "data-q" in a)
    assert ("section", {"id": "named"}) in tags.tags[img][2]
    # No picture: the named cards still come first, and the page holds no image at all.
    tags = _Tags(render_html(tiny_concepts))
    assert tags.index("section", id="named") < tags.index("section", id="concepts")
    assert not any(t == "img" for t, _, _ in tags.tags)


def test_card_table_is_filterable_and_folded(tiny_concepts) -> None:
    page = render_html(tiny_concepts, {"joint#0": _strip()})
    tags = _Tags(page)
    assert tags.tags[tags.index("input", id="q")][1]["oninput"] == "filt(this.value)" and "function filt(" in page
    rows = {a["data-q"].split()[0]: (a, anc) for t, a, anc in tags.tags if t == "tr" and "data-q" in a}
    assert sorted(rows) == ["and@l1/text0", "cat", "dog"]  # every concept once
    for name, (_, ancestors) in rows.items():
        folds = [a for t, a in ancestors if t == "details"]
        assert len(folds) == 1, name  # every row sits in one foldable section
        assert ("open" in folds[0]) == (name in ("cat", "dog")), name  # named open, the rest folded
    assert "kitty" in rows["cat"][0]["data-q"] and rows["and@l1/text0"][0]["id"] == "text-0"
    assert sum(int(a["data-n"]) for t, a, _ in tags.tags if t == "details" and "data-n" in a) == 3
    # Every in-page link lands on an element of the page.
    ids = {a["id"] for _, a, _ in tags.tags if "id" in a}
    assert {a["href"][1:] for t, a, _ in tags.tags if t == "a"} <= ids


def test_card_fits_the_window_and_fetches_nothing(tiny_concepts) -> None:
    page = render_html(tiny_concepts, {"joint#0": _strip()})
    style = "".join(re.findall(r"<style>(.*?)</style>", page, flags=re.S)) + "".join(re.findall(r"style='([^']*)'", page))
    for value, unit in re.findall(r"(?<![-\w])width:\s*([\d.]+)(px|em|rem)", style):
        assert float(value) * (16 if unit != "px" else 1) <= 1400, f"width:{value}{unit} overflows a 1,400 px window"
    assert "img{max-width:100%;height:auto}" in style and "flex-wrap:wrap" in style
    tags = _Tags(page)
    for t, a, _ in tags.tags:
        assert a.get("src", "data:").startswith("data:") and a.get("href", "#").startswith("#"), (t, a)
    assert not any(t == "link" or (t == "script" and "src" in a) for t, a, _ in tags.tags)
    assert "url(" not in style and "@import" not in style


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
@pytest.mark.parametrize("width", [1400, 700])
def test_card_in_a_browser(tiny_concepts, tmp_path, width: int) -> None:
    # Open every fold, type "dog" in the filter, and report the page's widths and what stays visible.
    probe = (
        "<script>document.querySelectorAll('details').forEach(function(d){d.open=true});"
        "var e=document.documentElement,img=document.images[0].getBoundingClientRect();"
        "filt('dog');document.body.dataset.probe=[e.scrollWidth,e.clientWidth,Math.ceil(img.right),"
        "document.querySelectorAll('tr[data-q]:not([hidden])').length,document.getElementById('shown').textContent].join('/')"
        "</script></body>"
    )
    page = tmp_path / "card.html"
    page.write_text(render_html(tiny_concepts, {"joint#0": _strip()}).replace("</body>", probe), encoding="utf-8")
    out = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},900", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout
    probed = re.search(r'data-probe="([^"]*)"', out)
    assert probed, out[-2000:]
    scroll, client, img_right, visible, shown = probed.group(1).split("/")
    assert int(scroll) <= int(client) and int(img_right) <= int(client)  # nothing overflows, the strip is scaled
    assert (visible, shown) == ("1", "1 shown")


def test_cli_features_json(tiny_concepts) -> None:
    res = CliRunner().invoke(app, ["features", "--dictionary", str(tiny_concepts.root), "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert {r["id"] for r in rows} == {"joint#0", "joint#1", "text#0"}
    res = CliRunner().invoke(app, ["features", "--dictionary", str(tiny_concepts.root / "nope")])
    assert res.exit_code == 1 and "no such folder" in res.stderr


def test_malformed_concept_set_is_rejected(tmp_path, tiny_concepts) -> None:
    (tiny_concepts.root / "concepts.json").write_text("{not json")
    with pytest.raises(DictionaryError, match="malformed"):
        load_concept_set(tiny_concepts.root)
