"""Loading vision-language models of every supported family (see docs/models.md).

`steerlang.load_model` (steerlang.models.bundle) is the user-facing entry; this package holds the
family-independent loader it delegates to, and the per-family facts beyond the runtime adapters.
"""

from __future__ import annotations

from steerlang.models.families import FAMILIES, Family, family_of
from steerlang.models.loader import LoadPlan, available_memory, load_pretrained, load_processor, plan_load

__all__ = ["FAMILIES", "Family", "LoadPlan", "available_memory", "family_of", "load_pretrained", "load_processor", "plan_load"]
