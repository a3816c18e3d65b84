"""AST -> IR: resolve names, follow imports, check types, ranges, layers and scopes.

`check` walks the program once, collecting every problem as a `Diagnostic`; if there is any, it
raises one `LangError` holding them all, otherwise it returns the fully resolved `ir.Program`.
Without a concept table, `concept "x"` is accepted as written (left unresolved in the IR) and
ids are not range-checked; everything else is checked the same.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from steerlang.lang import ast, ir
from steerlang.lang.concepts import ConceptTable
from steerlang.lang.errors import LangError
from steerlang.lang.parser import parse
from steerlang.lang.resolve import Binding, Env, Resolver, as_int, same_concept

__all__ = ["check", "Loader", "MAX_GENERATE"]

Loader = Callable[[str], str]
"""Reads an imported file by path (as joined from the importing file's path) and returns its text."""

MAX_GENERATE = 4096
_EDITS = (ast.Off, ast.On, ast.Set, ast.Scale, ast.Clamp, ast.Add, ast.Replace)
_STMT_WORD = {
    ast.Generate: "generate", ast.Let: "let", ast.Chain: "chain", ast.Steer: "steer", ast.When: "when",
    ast.Trace: "trace", ast.ExpectText: "expect", ast.ExpectConcept: "expect", ast.Off: "off", ast.On: "on",
    ast.Set: "set", ast.Scale: "scale", ast.Clamp: "clamp", ast.Add: "add", ast.Replace: "replace",
}


def check(program: ast.Program, table: ConceptTable | None = None, *, loader: Loader | None = None) -> ir.Program:
    """Check a parsed program against a concept table (or none) and lower it to the IR.

    Raises `LangError` with every diagnostic found (syntax errors of imported files included).
    """
    checker = _Checker(table, loader or _read_file)
    result = checker.main(program)
    if checker.diags:
        raise LangError(checker.diags, checker.sources)
    return result


def _read_file(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def _word(stmt: ast.Stmt) -> str:
    return stmt.key if isinstance(stmt, ast.Header) else _STMT_WORD[type(stmt)]



class _Checker(Resolver):
    """State of one `check` call: diagnostics, sources, imported files, the concept table."""

    def __init__(self, table: ConceptTable | None, loader: Loader) -> None:
        super().__init__(table)
        self.loader = loader
        self.sources: dict[str, str] = {}
        self.stack: list[tuple[str, str]] = []  # (resolved, as shown) of files being imported, for cycles
        self.exports: dict[str, Env] = {}  # resolved path -> its definitions
        self.imports: list[str] = []
        self.chains: list[ir.Chain] = []

    # ---- files -------------------------------------------------------------------------------

    def main(self, program: ast.Program) -> ir.Program:
        self.sources[program.file] = program.source
        self.stack.append((_key(program.file), program.file))
        env: Env = {}
        later = _definitions(program)
        header: dict[str, ast.Header | ast.Generate] = {}
        out = ir.Program(source=program.file)
        for stmt in program.statements:
            if isinstance(stmt, ast.Header | ast.Generate):
                self._header(stmt, header, env, program.file)
            elif isinstance(stmt, ast.Let | ast.Chain):
                self._define(stmt, env, later)
            elif isinstance(stmt, ast.Steer):
                step = self._steer(stmt, env, later)
                if step is not None:
                    out.steps.append(step)
            elif isinstance(stmt, ast.When):
                rule = self._when(stmt, env, later)
                if rule is not None:
                    out.steps.append(rule)
            elif isinstance(stmt, ast.Trace):
                out.traces.extend(self._trace(stmt, env, later))
            elif isinstance(stmt, ast.ExpectText):
                if not stmt.text.value:
                    self.error(stmt.text.span, "empty text: every output has it")
                out.expectations.append(ir.ExpectText(has=stmt.has, text=stmt.text.value))
            elif isinstance(stmt, ast.ExpectConcept):
                cond = self._compare(stmt.cond, env, later, need_modality=True)
                if cond is not None:
                    out.expectations.append(ir.ExpectConcept(condition=cond))
            else:  # an edit outside any block
                self.error(stmt.span, f"`{_word(stmt)}` must be inside a `steer` or `when` block",
                           f"wrap it: steer all {{ {_word(stmt)} ... }}")
        out.header = self._lower_header(header)
        out.imports = list(self.imports)
        out.bindings = {name: b.concept for name, b in env.items() if b.kind == "let" and b.concept is not None}
        out.chains = list(self.chains)
        return out

    def _import(self, stmt: ast.Header, env: Env, importer: str) -> None:
        path = os.path.normpath(os.path.join(os.path.dirname(importer), stmt.value.value))
        try:
            key = _key(path)
        except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a symlink loop
            self.error(stmt.value.span, f"bad import path: {exc}")
            return
        keys = [k for k, _ in self.stack]
        if key in keys:
            cycle = [shown for _, shown in self.stack[keys.index(key):]] + [path]
            names = " -> ".join(cycle)
            self.error(stmt.value.span, f"import cycle: {names}", "an imported file cannot import, directly or not, "
                       "the file that imports it")
            return
        if key not in self.exports:
            self.imports.append(path)
            self.exports[key] = {}  # a placeholder while loading; cycles are caught above
            self.exports[key] = self._load(path, stmt.value.span)
        for name, binding in self.exports[key].items():
            self._bind(name, binding, env, stmt.span)

    def _load(self, path: str, span: ast.Span) -> Env:
        try:
            text = self.loader(path)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.error(span, f'cannot read imported file "{path}": {reason}')
            return {}
        self.sources[path] = text
        try:
            program = parse(text, path)
        except LangError as exc:
            self.diags.extend(exc.diagnostics)
            return {}
        self.stack.append((_key(path), path))
        env: Env = {}
        later = _definitions(program)
        for stmt in program.statements:
            if isinstance(stmt, ast.Header) and stmt.key == "import":
                self._import(stmt, env, path)
            elif isinstance(stmt, ast.Let | ast.Chain):
                self._define(stmt, env, later)
            else:
                self.error(stmt.span, f"`{_word(stmt)}` is not allowed in an imported file",
                           "an imported file may only define names (let, chain) and import others")
        self.stack.pop()
        return env

    # ---- header ------------------------------------------------------------------------------

    def _header(self, stmt: ast.Header | ast.Generate, seen: dict[str, ast.Header | ast.Generate],
                env: Env, file: str) -> None:
        if isinstance(stmt, ast.Header) and stmt.key == "import":
            self._import(stmt, env, file)
            return
        key = "generate" if isinstance(stmt, ast.Generate) else stmt.key
        if key in seen:
            self.error(stmt.span, f"`{key}` is given twice", f"first given at line {seen[key].span.line}")
            return
        seen[key] = stmt
        if isinstance(stmt, ast.Generate):
            n = self._whole(stmt.count, "the number of tokens to generate")
            if n is not None and not 1 <= n <= MAX_GENERATE:
                self.error(stmt.count.span, f"cannot generate {n} tokens", f"generate between 1 and {MAX_GENERATE}")
            return
        value = stmt.value.value
        if not value.strip():
            self.error(stmt.value.span, f"`{key}` needs a non-empty string")
        elif self.table is not None and key in ("model", "dictionary"):
            known = self.table.model_name if key == "model" else self.table.dictionary_name
            if known is not None and known != value:
                hint = ("check it with a dictionary trained on this model" if key == "model"
                        else "check it with the dictionary it names")
                self.error(stmt.value.span, f'program is written for {key} "{value}", but the concept table is '
                           f'for {key} "{known}"', hint)

    def _lower_header(self, seen: dict[str, ast.Header | ast.Generate]) -> ir.Header:
        values: dict[str, object] = {}
        for key, stmt in seen.items():
            if isinstance(stmt, ast.Generate):
                n = as_int(stmt.count)
                if n is not None and 1 <= n <= MAX_GENERATE:
                    values["generate"] = n
            else:
                values[key] = stmt.value.value
        return ir.Header(**values)  # type: ignore[arg-type]

    # ---- definitions -------------------------------------------------------------------------

    def _bind(self, name: str, binding: Binding, env: Env, where: ast.Span) -> None:
        old = env.get(name)
        if old is not None:
            if old is binding:
                return  # the same definition reached twice (a file imported along two paths)
            if binding.span.file != where.file:
                self.error(where, f'"{name}" is defined again by {binding.span.file}:{binding.span.line}',
                           f"first defined at {_at(old.span, where)}; rename one of them")
            else:
                self.error(where, f'"{name}" is already defined', f"first defined at {_at(old.span, where)}")
            return
        env[name] = binding

    def _define(self, stmt: ast.Let | ast.Chain, env: Env, later: dict[str, ast.Span]) -> None:
        if isinstance(stmt, ast.Let):
            concept = self._expr(stmt.expr, env, later, defining=stmt.name)
            if concept is not None:
                concept = concept.model_copy(update={"label": stmt.name})
            self._bind(stmt.name, Binding("let", stmt.name_span, concept), env, stmt.name_span)
            return
        links: list[ir.Link] = []
        for link in stmt.links:
            concept = self._expr(link.expr, env, later)
            layers = self._layers(link.layers)
            if concept is not None:
                self._concept_at(concept, layers, link.span)
                links.append(ir.Link(concept=concept, layers=layers))
        before = len(env)
        self._bind(stmt.name, Binding("chain", stmt.name_span, None), env, stmt.name_span)
        if len(env) > before and len(links) == len(stmt.links):
            self.chains.append(ir.Chain(name=stmt.name, links=links, force=stmt.force))

    # ---- scopes ----------------------------------------------------------------------------------

    def _scope(self, scope: ast.Scope, env: Env, later: dict[str, ast.Span]) -> ir.Scope | None:
        fields: dict[str, object] = {"kind": scope.kind}
        ok = True
        if len(scope.qualifiers) > 1:
            self.error(scope.qualifiers[1].span, "a scope takes at most one of region, where, tokens",
                       "nest the edits in separate steer blocks")
            ok = False
        for q in scope.qualifiers[:1]:
            if isinstance(q, ast.Region):
                if scope.kind != "image":
                    self.error(q.span, "`region` only applies to the image", "write: steer image region [...]")
                    ok = False
                region = self._region(q)
                ok = ok and region is not None
                fields.update(kind="image_region", region=region)
            elif isinstance(q, ast.Where):
                if scope.kind != "image":
                    self.error(q.span, "`where` only applies to the image", "write: steer image where F > t")
                    ok = False
                if q.cond.modality is not None:
                    self.error(q.cond.modality_span or q.cond.span, "`in` is not used after `where`",
                               "`where` always reads the image; drop `in ...`")
                    ok = False
                cond = self._compare(q.cond, env, later, need_modality=False)
                ok = ok and cond is not None
                fields.update(kind="image_where", where=cond)
            else:
                if scope.kind != "output":
                    self.error(q.span, "`tokens` only applies to the output", "write: steer output tokens a..b")
                    ok = False
                tokens = self._tokens(q)
                ok = ok and tokens is not None
                fields.update(kind="output_tokens", tokens=tokens)
        layers = self._layers(scope.layers)
        if scope.layers is not None and layers is None:
            ok = False
        fields["layers"] = layers
        return ir.Scope(**fields) if ok else None  # type: ignore[arg-type]

    # ---- conditions ----------------------------------------------------------------------------

    def _compare(self, c: ast.Compare, env: Env, later: dict[str, ast.Span],
                 need_modality: bool) -> ir.Compare | None:
        concept = self._expr(c.target, env, later)
        if need_modality and c.modality is None:
            self.error(c.span, "say where to read the concept: add `in image`, `in prompt` or `in output`")
            return None
        if concept is None:
            return None
        return ir.Compare(concept=concept, op=c.op, threshold=c.threshold.value, modality=c.modality)

    def _cond(self, c: ast.Cond, env: Env, later: dict[str, ast.Span]) -> ir.Condition | None:
        if isinstance(c, ast.Compare):
            return self._compare(c, env, later, need_modality=True)
        if isinstance(c, ast.Not):
            item = self._cond(c.item, env, later)
            return None if item is None else ir.Not(item=item)
        items = [self._cond(i, env, later) for i in c.items]
        if any(i is None for i in items):
            return None
        return (ir.And if isinstance(c, ast.And) else ir.Or)(items=items)

    # ---- blocks, edits -------------------------------------------------------------------------

    def _steer(self, stmt: ast.Steer, env: Env, later: dict[str, ast.Span]) -> ir.Steer | None:
        scope = self._scope(stmt.scope, env, later)
        edits: list[ir.Edit] = []
        ok = scope is not None
        for inner in stmt.body:
            if isinstance(inner, _EDITS):
                edit = self._edit(inner, env, later, scope.layers if scope is not None else None)
                ok = ok and edit is not None
                if edit is not None:
                    edits.append(edit)
            elif isinstance(inner, ast.Steer):
                self.error(inner.span, "`steer` blocks cannot be nested", "give the inner block its own top-level steer")
                ok = False
            else:
                self.error(inner.span, f"`{_word(inner)}` is not allowed inside `steer`", "a steer block holds edits")
                ok = False
        return ir.Steer(scope=scope, edits=edits) if ok and scope is not None else None

    def _when(self, stmt: ast.When, env: Env, later: dict[str, ast.Span]) -> ir.When | None:
        cond = self._cond(stmt.cond, env, later)
        steps: list[ir.Steer] = []
        bare: ir.Steer | None = None
        ok = cond is not None
        for inner in stmt.body:
            if isinstance(inner, _EDITS):
                edit = self._edit(inner, env, later, None)
                ok = ok and edit is not None
                if edit is None:
                    continue
                # Bare edits in a rule apply everywhere: consecutive ones share one `steer all`.
                if bare is None:
                    bare = ir.Steer(scope=ir.Scope(kind="all"))
                    steps.append(bare)
                bare.edits.append(edit)
            elif isinstance(inner, ast.Steer):
                step = self._steer(inner, env, later)
                ok = ok and step is not None
                bare = None
                if step is not None:
                    steps.append(step)
            elif isinstance(inner, ast.When):
                self.error(inner.span, "`when` rules cannot be nested", "join the conditions with `and`")
                ok = False
            else:
                self.error(inner.span, f"`{_word(inner)}` is not allowed inside `when`",
                           "a when rule holds edits and steer blocks")
                ok = False
        return ir.When(condition=cond, steps=steps) if ok and cond is not None else None

    def _edit(self, e: ast.Edit, env: Env, later: dict[str, ast.Span],
              layers: list[int] | None) -> ir.Edit | None:
        target = self._expr(e.target, env, later)
        if target is not None:
            self._concept_at(target, layers, e.target.span)
        fields: dict[str, object] = {}
        ok = target is not None
        match e:
            case ast.Off():
                op = "off"
            case ast.On():
                op = "on"
            case ast.Set(value=v):
                op, fields["value"] = "set", v.value
            case ast.Scale(factor=k):
                op, fields["value"] = "scale", k.value
            case ast.Add(strength=k):
                op, fields["value"] = "add", 1.0 if k is None else k.value
            case ast.Clamp(low=lo, high=hi):
                op, fields["low"], fields["high"] = "clamp", lo.value, hi.value
                if lo.value > hi.value:
                    self.error(e.span, f"clamp bounds are out of order: {lo.text} > {hi.text}",
                               f"write clamp ... to [{hi.text}, {lo.text}]")
                    ok = False
            case ast.Replace(replacement=r):
                op = "replace"
                other = self._expr(r, env, later)
                if other is not None:
                    self._concept_at(other, layers, r.span)
                ok = ok and other is not None
                if target is not None and other is not None and same_concept(target, other):
                    self.error(e.span, "`replace` needs two different concepts", "to remove a concept, use off")
                    ok = False
                fields["replacement"] = other
            case _:
                raise TypeError(f"not an edit: {e!r}")
        return ir.Edit(op=op, target=target, **fields) if ok else None  # type: ignore[arg-type]

    def _trace(self, stmt: ast.Trace, env: Env, later: dict[str, ast.Span]) -> list[ir.Concept]:
        out: list[ir.Concept] = []
        for target in stmt.targets:
            if isinstance(target, ast.Ref) and (b := env.get(target.name)) is not None and b.kind == "chain":
                self.error(target.span, f'"{target.name}" is a chain: chains are always traced',
                           "trace takes concepts")
                continue
            c = self._expr(target, env, later)
            if c is not None:
                out.append(c)
        return out


# ---- helpers -----------------------------------------------------------------------------------


def _definitions(program: ast.Program) -> dict[str, ast.Span]:
    """Names a file defines (first definition), to tell "used before defined" from "unknown"."""
    out: dict[str, ast.Span] = {}
    for stmt in program.statements:
        if isinstance(stmt, ast.Let | ast.Chain):
            out.setdefault(stmt.name, stmt.name_span)
    return out


def _key(path: str) -> str:
    return str(Path(path).resolve()) if not path.startswith("<") else path


def _at(span: ast.Span, here: ast.Span) -> str:
    return f"line {span.line}" if span.file == here.file else f"{span.file}:{span.line}"
