"""The audit as one self-contained HTML page: inline SVG charts and base64 PNG images, no script,
nothing fetched."""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

from steerlang.audit.report import AuditReport

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1280px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555} table{border-collapse:collapse;margin:6px 0} td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
th{background:#f6f6f6;font-weight:600} td.n{text-align:right;font-variant-numeric:tabular-nums}
.row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start} .card{border:1px solid #ddd;border-radius:6px;padding:10px}
.sample{display:flex;gap:12px;border:1px solid #ddd;border-radius:6px;padding:8px;width:400px}
.sample img{width:144px;height:144px;image-rendering:pixelated;border:1px solid #ccc;flex:none}
.bad{color:#b00020} .miss{color:#1a5fb4} .tag{display:inline-block;background:#eee;border-radius:3px;padding:0 5px;margin:1px}
.card table{font-size:12px} .card td,.card th{padding:2px 5px}
.gap-absent,.gap-not_in_image,.gap-not_in_text{color:#b00020;font-weight:600} .small{color:#888}
"""
IMG_COLOR, TXT_COLOR = "#e08a1e", "#3a7bd5"


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _bars(report: AuditReport) -> str:
    """Coverage: per concept, the share of samples whose image shows it and whose caption names it."""
    n, rows = report.n, report.coverage
    gap = {g["concept"]: g["gap"] for g in report.gaps}
    label_w, bar_w, row_h = 150, 420, 30
    h = row_h * len(rows) + 30
    out = [f'<svg width="{label_w + bar_w + 120}" height="{h}" role="img" aria-label="coverage">',
           f'<rect x="{label_w}" y="4" width="10" height="10" fill="{IMG_COLOR}"/><text x="{label_w + 14}" y="13" font-size="12">image shows it</text>',
           f'<rect x="{label_w + 130}" y="4" width="10" height="10" fill="{TXT_COLOR}"/><text x="{label_w + 144}" y="13" font-size="12">caption names it</text>']
    for i, c in enumerate(rows):
        y = 24 + i * row_h
        colour = "#b00020" if c["concept"] in gap else "#222"
        out.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" font-size="13" fill="{colour}">{_e(c["concept"])}</text>')
        for j, (key, col) in enumerate((("image", IMG_COLOR), ("text", TXT_COLOR))):
            w = bar_w * c[key] / n if n else 0
            out.append(f'<rect x="{label_w}" y="{y + j * 12}" width="{w:.1f}" height="11" fill="{col}"><title>{_e(c["concept"])} '
                       f'{key}: {c[key]} of {n}</title></rect>'
                       f'<text x="{label_w + w + 4:.1f}" y="{y + j * 12 + 10}" font-size="11">{c[key]}</text>')
    out.append("</svg>")
    return "".join(out)


def _heatmap(report: AuditReport, modality: str) -> str:
    """Lift of every concept pair as a colour (log2 scale: red together, blue apart), the pair's
    count in the cell; the interval in each cell's tooltip."""
    names = report.names
    k = len(names)
    idx = {c: i for i, c in enumerate(names)}
    cells: dict[tuple[int, int], dict[str, Any]] = {}
    for p in report.cooccurrence:
        if p["modality"] == modality:
            a, b = idx[p["a"]], idx[p["b"]]
            cells[a, b] = cells[b, a] = p
    cell, pad = (34 if k <= 16 else max(8, 540 // k)), 110
    size = pad + cell * k
    out = [f'<svg width="{size + 10}" height="{size + 10}" role="img" aria-label="{modality} co-occurrence">']
    for i, c in enumerate(names):
        out.append(f'<text x="{pad - 6}" y="{pad + i * cell + cell * 0.65:.1f}" text-anchor="end" font-size="12">{_e(c)}</text>')
        out.append(f'<text transform="translate({pad + i * cell + cell * 0.65:.1f},{pad - 6}) rotate(-55)" font-size="12">{_e(c)}</text>')
    for (a, b), p in cells.items():
        lift = p["lift"]
        v = 0.0 if not lift or lift <= 0 else max(-2.0, min(2.0, math.log2(lift))) / 2.0
        colour = f"rgb(255,{int(255 * (1 - v))},{int(255 * (1 - v))})" if v >= 0 else f"rgb({int(255 * (1 + v))},{int(255 * (1 + v))},255)"
        if p["small"]:
            colour = "#f2f2f2"
        x, y = pad + b * cell, pad + a * cell
        tip = (f'{p["a"]} + {p["b"]} ({modality}): together {p["n_ab"]}, expected {p["expected"]:.1f}, lift {lift:.2f} '
               f'[{p["lift_low"]:.2f}, {p["lift_high"]:.2f}]')
        out.append(f'<rect x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}" fill="{colour}"><title>{_e(tip)}</title></rect>')
        if cell >= 26:
            out.append(f'<text x="{x + cell / 2:.1f}" y="{y + cell * 0.62:.1f}" text-anchor="middle" font-size="10">{p["n_ab"]}</text>')
    for i in range(k):
        out.append(f'<rect x="{pad + i * cell}" y="{pad + i * cell}" width="{cell - 1}" height="{cell - 1}" fill="#ddd"/>')
    out.append("</svg>")
    return "".join(out)


def _histogram(values: np.ndarray, title: str, colour: str = "#555") -> str:
    w, h, bins = 300, 130, 20
    v = np.asarray(values, dtype=np.float64)
    lo, hi = (float(v.min()), float(v.max())) if len(v) else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    top = max(int(counts.max()), 1)
    out = [f'<svg width="{w}" height="{h + 36}" role="img" aria-label="{_e(title)}"><text x="0" y="13" font-size="13" font-weight="600">{_e(title)}</text>']
    bw = w / bins
    for i, c in enumerate(counts):
        bh = (h - 20) * c / top
        out.append(f'<rect x="{i * bw:.1f}" y="{20 + (h - 20) - bh:.1f}" width="{bw - 1:.1f}" height="{bh:.1f}" fill="{colour}">'
                   f'<title>{edges[i]:.3g} to {edges[i + 1]:.3g}: {c}</title></rect>')
    out.append(f'<line x1="0" y1="{h}" x2="{w}" y2="{h}" stroke="#999"/>'
               f'<text x="0" y="{h + 14}" font-size="11">{lo:.3g}</text><text x="{w}" y="{h + 14}" font-size="11" text-anchor="end">{hi:.3g}</text>'
               f'<text x="{w / 2}" y="{h + 28}" font-size="11" text-anchor="middle">{len(v)} samples, max count {top}</text></svg>')
    return "".join(out)


def _pmi(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _pairs_table(report: AuditReport, modality: str, top: int = 8) -> str:
    rows = [p for p in report.cooccurrence if p["modality"] == modality][:top]
    body = "".join(
        f'<tr class="{"small" if p["small"] else ""}"><td>{p["rank"]}</td><td>{_e(p["a"])} + {_e(p["b"])}</td><td class="n">{p["n_ab"]}</td>'
        f'<td class="n">{p["expected"]:.1f}</td><td class="n">{p["lift"]:.2f}</td><td class="n">{p["lift_low"]:.2f} - {p["lift_high"]:.2f}</td>'
        f'<td class="n">{_pmi(p["pmi"])}</td><td>{p["direction"]}</td></tr>' for p in rows)
    return ("<table><tr><th>#</th><th>pair</th><th>together</th><th>expected</th><th>lift</th><th>95% interval</th>"
            f"<th>PMI (bits)</th><th>bias</th></tr>{body}</table>")


def _gaps_table(report: AuditReport) -> str:
    if not report.gaps:
        return f'<p>No gaps: every concept is shown in more than {report.settings.rare:.0%} of images and named in more than that of captions, and neither modality shows it {report.settings.ratio:g} times as often as the other.</p>'
    body = "".join(
        f'<tr><td>{_e(g["concept"])}</td><td class="gap-{g["gap"]}">{g["gap"].replace("_", " ")}</td><td class="n">{g["image"]}</td>'
        f'<td class="n">{g["text"]}</td><td class="n">{g["image_only"]}</td><td class="n">{g["text_only"]}</td><td class="n">{g["p_value"]:.2g}</td></tr>'
        for g in report.gaps)
    return ("<table><tr><th>concept</th><th>gap</th><th>images</th><th>captions</th><th>image only</th><th>caption only</th>"
            f"<th>sign test p</th></tr>{body}</table>")


def _worst(report: AuditReport, k: int) -> str:
    cards = []
    for i in report.worst(k):
        d = report.sample_json(i)
        b64 = report.thumbnails.get(d["row"])
        img = f'<img alt="{_e(d["file_name"])}" src="data:image/png;base64,{b64}">' if b64 else '<div class="small">(no picture kept)</div>'
        seen_nn = "".join(f'<span class="tag bad">{_e(c)}</span>' for c in d["seen_not_named"]) or "-"
        named_ns = "".join(f'<span class="tag miss">{_e(c)}</span>' for c in d["named_not_seen"]) or "-"
        extra = f'<br>SAE-V cosine {d["cosine"]:.3f}, co-occurring L0 {d["co_l0"]}' if "cosine" in d else ""
        cards.append(f'<div class="sample">{img}<div><b>{_e(d["file_name"])}</b> (row {d["row"]})<br>'
                     f'&ldquo;{_e(d["text"])}&rdquo;<br>mismatch <b>{d["mismatch"]:.2f}</b>{extra}<br>'
                     f'seen, not named: {seen_nn}<br>named, not seen: {named_ns}</div></div>')
    return f'<div class="row">{"".join(cards)}</div>'


def _bad_rows(report: AuditReport) -> str:
    """The rows that could not be audited (missing or unreadable images, empty captions...)."""
    examples = report.data.get("examples", {}) if isinstance(report.data, dict) else {}
    rows = [(reason, b) for reason, bs in examples.items() for b in bs]
    if not rows:
        return ""
    more = int(report.data.get("bad_rows", 0)) - len(rows)
    body = "".join(f'<tr><td>{_e(r.replace("_", " "))}</td><td>{_e(b.get("file"))}{":" + str(b["line"]) if b.get("line") else ""}</td>'
                   f'<td>{_e(b.get("name") or "")}</td><td>{_e(b.get("detail") or "")}</td></tr>' for r, b in rows)
    tail = f'<p class="small">... and {more} more</p>' if more > 0 else ""
    return (f'<h2>Rows skipped ({report.data.get("bad_rows", 0)})</h2><table><tr><th>reason</th><th>where</th><th>image</th>'
            f"<th>detail</th></tr>{body}</table>{tail}")


def render_html(report: AuditReport, *, worst: int = 12) -> str:
    """The report as one self-contained HTML page."""
    j = report.to_json()
    bad = report.data.get("bad", {}) if isinstance(report.data, dict) else {}
    bad_text = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in bad.items()) or "none"
    hist = [_histogram(report.mismatch, "mismatch (image vs caption)", "#b00020")]
    if report.cosine is not None:
        hist += [_histogram(report.cosine, "SAE-V cosine score", "#2e7d32"), _histogram(report.co_l0, "SAE-V co-occurring L0", "#2e7d32"),
                 _histogram(report.l0, "SAE-V L0 (mean per token)", "#2e7d32")]
    saev = j["saev"]
    saev_line = (f'SAE-V: {_e(saev["kind"])} ({_e(saev["dictionary"])}), {saev["cross_modal_latents"]} of {saev["latents"]} latents cross-modal'
                 if saev else "SAE-V: not scored")
    parts = [
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>steer audit: ", _e(report.dataset),
        f"</title><style>{CSS}</style></head><body>",
        f"<h1>Audit of {_e(report.dataset)}</h1>",
        f'<p class="meta">{report.n} samples; bad rows: {_e(bad_text)}. Model {_e(report.model)}, dictionary {_e(report.dictionary)}, '
        f"images read at layer {report.layer}, captions at layer {report.text_layer}, prompt &ldquo;{_e(report.prompt)}&rdquo;. "
        f"{saev_line}.</p>",
        _bad_rows(report),
        "<h2>Coverage</h2>", '<div class="row"><div>', _bars(report), "</div><div>", _gaps_table(report), "</div></div>",
        "<h2>Co-occurrence</h2><p class=\"meta\">Lift = observed / expected under independence (log colour scale, red: "
        "together more often, blue: less; grey: fewer than "
        f"{report.settings.min_count} together). Pairs ranked by the lower end of the lift's 95% interval.</p>",
        '<div class="row">',
        *(f'<div class="card"><b>{m}s</b><br>{_heatmap(report, m)}{_pairs_table(report, m)}</div>' for m in ("image", "text")),
        "</div>",
        "<h2>Scores</h2>", f'<div class="row">{"".join(hist)}</div>',
        f"<h2>Samples whose image and caption disagree most</h2>{_worst(report, worst)}",
        "</body></html>",
    ]
    return "".join(parts)
