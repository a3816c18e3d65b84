"""The steerlang language front end: .stl text -> AST -> checked, resolved IR. No torch here.

    from steerlang.lang import compile_program, FakeConceptTable
    prog = compile_program('let cat = concept "cat"\\nsteer image { off cat }', FakeConceptTable())
    prog.model_dump_json()

The grammar is `grammar/steerlang.lark`; the language reference is `docs/language.md`.
"""

from __future__ import annotations

from steerlang.lang import ast, ir
from steerlang.lang.api import (
    check,
    compile_file,
    compile_program,
    format_program,
    header_end_line,
    parse,
    read_program,
    require_content,
)
from steerlang.lang.concepts import (
    ConceptInfo,
    ConceptTable,
    FakeConceptTable,
    StaticConceptTable,
    load_concept_table,
    load_concept_table_json,
)
from steerlang.lang.describe import describe_program
from steerlang.lang.errors import Diagnostic, LangError

__all__ = [
    "ConceptInfo",
    "ConceptTable",
    "Diagnostic",
    "FakeConceptTable",
    "LangError",
    "StaticConceptTable",
    "ast",
    "check",
    "compile_file",
    "compile_program",
    "describe_program",
    "format_program",
    "header_end_line",
    "ir",
    "load_concept_table",
    "load_concept_table_json",
    "parse",
    "read_program",
    "require_content",
]
