"""Dataset audits with a model's joint concepts: coverage and gaps, co-occurrence bias, per-sample
image-caption agreement, SAE-V data scores, and filtering (`steer audit`, docs/audit.md).

    from steerlang.audit import audit
    report = audit("corpus", "toyworld", "toyworld")      # or a Session, a bundle, a Dataset
    report.gaps, report.cooccurrence, report.mismatch, report.cosine
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_LAYER", "DEFAULT_TEXT_LAYER", "DEFAULT_PROMPT", "SCORES", "AuditReport", "SampleResult", "Settings", "audit",
           "kept_rows", "render_html", "write_kept"]

_LAZY = {
    "audit": "steerlang.audit.run",
    "DEFAULT_LAYER": "steerlang.audit.run",
    "DEFAULT_TEXT_LAYER": "steerlang.audit.run",
    "DEFAULT_PROMPT": "steerlang.audit.forward",
    "AuditReport": "steerlang.audit.report",
    "SampleResult": "steerlang.audit.report",
    "Settings": "steerlang.audit.report",
    "SCORES": "steerlang.audit.report",
    "kept_rows": "steerlang.audit.filter",
    "write_kept": "steerlang.audit.filter",
    "render_html": "steerlang.audit.html",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'steerlang.audit' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
