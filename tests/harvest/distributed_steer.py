"""Run `steer` commands one after the other in this process (the test launches it under
`torch.distributed.run`): ``python distributed_steer.py ARGS... -- ARGS... -- ...``."""

from __future__ import annotations

import sys

from steerlang.cli import app

if __name__ == "__main__":
    argv, commands = sys.argv[1:], [[]]
    for a in argv:
        if a == "--":
            commands.append([])
        else:
            commands[-1].append(a)
    for cmd in commands:
        try:
            app(cmd, standalone_mode=False)
        except SystemExit as exc:
            if exc.code:
                raise
