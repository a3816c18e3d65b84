"""`steer repl`: write a program a statement at a time and see its effect at once.

The model and dictionaries are loaded once (a `Session`). Each statement is appended to the
program and the whole program is re-checked: an error prints with its caret and the statement is
dropped (the loop goes on). Statements that change what runs (`steer`, `when`, `force chain`,
`ask`, `generate`) run the program on the current image and print the steered output beside the
baseline. Ctrl-C stops a generation (or clears the line), never the REPL; Ctrl-D or `:quit` leaves.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import Completer, Completion
from rich.console import Console

from steerlang.errors import SteerError
from steerlang.lang import LangError
from steerlang.runtime.session import RunResult, Session

KEYWORDS = ("model", "dictionary", "import", "ask", "image", "generate", "tokens", "let", "concept", "chain", "force",
            "steer", "region", "where", "prompt", "output", "all", "at", "layer", "layers", "when", "in", "and", "or",
            "not", "trace", "expect", "has", "lacks", "off", "on", "set", "scale", "by", "clamp", "to", "add", "replace", "with")
COMMANDS = {
    ":help": "this list",
    ":features [TEXT]": "the dictionary's concepts (those containing TEXT), with their layers",
    ":show": "the program so far",
    ":image PATH": "run on this image from now on",
    ":trace NAME": "the concept's activation over the image's patch grid in the last run",
    ":run": "run the program now",
    ":reset": "forget the program",
    ":save FILE": "write the program to FILE",
    ":quit": "leave (or Ctrl-D)",
}
_RUNS = ("steer", "when", "force", "ask", "generate")

__all__ = ["COMMANDS", "KEYWORDS", "Repl", "completions"]


def completions(text: str, names: Iterable[str], bound: Iterable[str] = ()) -> list[str]:
    """What may complete the last word of `text`: commands, concept names in quotes, keywords, names."""
    if text.lstrip().startswith(":") and " " not in text.lstrip():
        word = text.lstrip()
        return [c.split()[0] for c in COMMANDS if c.startswith(word)]
    quoted = re.search(r'concept\s+"([^"]*)$', text)
    if quoted:
        return sorted(n for n in names if n.startswith(quoted.group(1)))
    m = re.search(r"([A-Za-z_][\w]*)$", text)
    word = m.group(1) if m else ""
    if not word and text and not text[-1].isspace():
        return []
    pool = sorted(set(KEYWORDS) | set(bound))
    return [w for w in pool if w.startswith(word) and w != word]


class _Completer(Completer):
    def __init__(self, repl: Repl) -> None:
        self.repl = repl

    def get_completions(self, document: Any, _event: Any) -> Iterable[Completion]:
        text = document.text_before_cursor
        quoted = re.search(r'concept\s+"([^"]*)$', text)
        m = re.search(r"([A-Za-z_:][\w]*)$", text)
        prefix = quoted.group(1) if quoted else (m.group(1) if m else "")
        for c in completions(text, self.repl.session.concepts.names(), self.repl.bound()):
            yield Completion(c, start_position=-len(prefix))


class Repl:
    """The loop. `input`/`output` (prompt_toolkit) and `console` (rich) are injectable for tests."""

    def __init__(self, session: Session, *, image: str | Path | None = None, input: Any = None, output: Any = None,  # noqa: A002
                 console: Console | None = None) -> None:
        self.session = session
        self.image = None if image is None else Path(image)
        self.lines: list[str] = []
        self.last: RunResult | None = None
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.prompt = PromptSession(completer=_Completer(self), input=input, output=output)

    # -- state ------------------------------------------------------------------------------
    def text(self, extra: str | None = None) -> str:
        return "\n".join(self.lines + ([extra] if extra is not None else []))

    def bound(self) -> list[str]:
        return re.findall(r"\blet\s+([A-Za-z_]\w*)", self.text())

    def say(self, text: str, style: str | None = None) -> None:
        self.console.print(text, style=style, markup=False, highlight=False)

    # -- loop -------------------------------------------------------------------------------
    def loop(self) -> None:
        self.say("steerlang REPL: statements run as you type them; :help for commands, Ctrl-D to leave.")
        while True:
            try:
                text = self.read()
            except KeyboardInterrupt:
                continue
            except EOFError:
                break
            if not self.handle(text):
                break

    def read(self) -> str:
        text = self.prompt.prompt("stl> ")
        while text.count("{") > text.count("}"):
            text += "\n" + self.prompt.prompt("...> ")
        return text

    def handle(self, text: str) -> bool:
        """One entry: a command or a statement. False means quit."""
        text = text.strip()
        if not text or text.startswith("#"):
            return True
        if text.startswith(":"):
            return self.command(text)
        try:
            self.session.compile(self.text(text), file="<repl>")
        except LangError as exc:
            self.say(exc.render(), style="red")
            return True
        self.lines.append(text)
        if text.split(maxsplit=1)[0] in _RUNS:
            self.run()
        return True

    def run(self, extra: str | None = None) -> RunResult | None:
        if self.image is None:
            self.say("(no image yet: :image PATH)")
            return None
        try:
            prog = self.session.compile(self.text(extra), file="<repl>")
            [self.last] = self.session.run(prog, images=[self.image], compare=True)
        except KeyboardInterrupt:
            self.say("interrupted")
            return None
        except SteerError as exc:
            self.say(f"error: {exc}", style="red")
            return None
        self.say(f"steered : {self.last.output}")
        self.say(f"baseline: {self.last.baseline}")
        for e in self.last.expectations:
            self.say(f"{'pass' if e.passed else 'FAIL'}: expect {e.text}")
        return self.last

    def command(self, text: str) -> bool:
        name, _, arg = text.partition(" ")
        arg = arg.strip()
        if name in (":quit", ":q", ":exit"):
            return False
        if name == ":help":
            for cmd, what in COMMANDS.items():
                self.say(f"{cmd:<18} {what}")
        elif name == ":features":
            for c in self.session.concepts.concepts:
                if arg.lower() in c.name.lower():
                    self.say(f"{c.name:<16} {c.key:<10} layers {', '.join(map(str, c.layers)) or '-'}")
        elif name == ":show":
            self.say(self.text() or "(empty program)")
        elif name == ":image":
            from steerlang.runtime.session import load_image

            try:
                load_image(arg)
            except SteerError as exc:
                self.say(f"error: {exc}", style="red")
            else:
                self.image = Path(arg)
                self.say(f"image: {arg}")
        elif name == ":trace":
            self._trace(arg)
        elif name == ":run":
            self.run()
        elif name == ":reset":
            self.lines.clear()
            self.last = None
            self.say("program cleared")
        elif name == ":save":
            if not arg:
                self.say("usage: :save FILE", style="red")
            else:
                Path(arg).write_text(self.text() + "\n", encoding="utf-8")
                self.say(f"saved {arg}")
        else:
            self.say(f"unknown command {name}; :help lists them", style="red")
        return True

    def _trace(self, concept: str) -> None:
        if not concept:
            self.say("usage: :trace NAME", style="red")
            return
        ref = concept if re.fullmatch(r"[A-Za-z_]\w*", concept) and concept in self.bound() else f'concept "{concept}"'
        result = self.run(f"trace {ref}")
        if result is None or result.trace is None:
            return
        label = concept if ref == concept else concept
        grid = None
        for lab in result.trace.labels:
            if lab in (label, ref):
                grid = result.trace.image_map(lab, 0)
        if grid is None:
            self.say(f"{concept}: no image activations (no image group at any layer?)")
            return
        self.say(f"{concept} over the image (lowest traced layer), rows x cols {grid.shape[0]}x{grid.shape[1]}:")
        for row in grid:
            self.say(" ".join(f"{v:5.2f}" for v in row))
