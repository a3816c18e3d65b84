"""Compile time of a generated 100-line steerlang program (parse + check + lower to IR).

    python benchmarks/compile_time.py [--runs 200] [--lines 100]

Prints JSON: the median and p90 of warm compiles (the parser already built, as in a session or
the REPL), and the cold first call (which also builds the LALR parser from the grammar).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def generate_program(lines: int = 100) -> str:
    """A program of exactly `lines` lines using every kind of statement, names from the fake table."""
    names = ["cat", "dog", "bird", "car", "tree", "house", "sun", "fish"]
    out = ['model "toyworld"', 'dictionary "toyworld"', 'ask "what is in the picture?"', 'image "scene.png"']
    out += [f'let {n} = concept "{n}"' for n in names]
    out += ["let pet = cat | dog", "let mix = 0.5*cat + 0.5*dog", "let i12 = image#12", "let t7 = text#7"]
    out += ["force chain path: cat at layer 1 -> pet at layer 2 -> mix at layer 3"]
    blocks = [
        ["steer image where {a} > 0.3 at layers 0..2 {{", "    off {a}", "}}"],
        ["steer image region [0:0.5, 0.25:1] {{", "    replace {a} with {b}", "    clamp {b} to [0, 2]", "}}"],
        ["steer output tokens 0..5 at layer 1 {{", "    add {a} * 4", "}}"],
        ["when {a} > 0.2 in image and not {b} < 0.1 in prompt {{", "    scale {a} by 0.5",
         "    steer prompt {{", "        set {b} = 1.5", "    }}", "}}"],
        ["steer all at layers 1, 3 {{", "    on {a}", "}}"],
    ]
    i = 0
    while len(out) < lines - 4:
        block = blocks[i % len(blocks)]
        a, b = names[i % len(names)], names[(i + 3) % len(names)]
        if len(out) + len(block) > lines - 4:
            out.append(f"trace {a}, {b}")
        else:
            out += [line.format(a=a, b=b) for line in block]
        i += 1
    out += ["generate 24 tokens", 'expect output lacks "cat"', 'expect output has "dog"', "expect cat < 0.1 in image"]
    return "\n".join(out[:lines]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--lines", type=int, default=100)
    args = parser.parse_args()

    source = generate_program(args.lines)
    t0 = time.perf_counter()
    from steerlang.lang import FakeConceptTable, compile_program

    table = FakeConceptTable()
    compile_program(source, table)
    cold_ms = (time.perf_counter() - t0) * 1000

    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        compile_program(source, table)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    print(json.dumps({
        "benchmark": "compile_time",
        "lines": source.count("\n"),
        "runs": args.runs,
        "median_ms": round(statistics.median(times), 3),
        "p90_ms": round(times[int(0.9 * (len(times) - 1))], 3),
        "min_ms": round(times[0], 3),
        "cold_first_call_ms": round(cold_ms, 1),
        "goal_ms": 50,
    }))


if __name__ == "__main__":
    main()
