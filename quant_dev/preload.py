"""``python -m quant_dev.preload MODULES -- MODULE ARGS...``: import MODULES (comma-separated),
then wait for one line on standard input, then run ``python -m MODULE ARGS...`` in this
interpreter, exactly as ``-m`` would (as ``__main__``, with ``sys.argv`` set).

``Child(..., preload=...)`` starts a process this way so that a test can pay a command's
import time (several seconds of CPU for ``quant live``: dagster, pyarrow, boto3) while
something else runs, and start the command itself the moment it wants to
(``Child.release``). What runs after the line is the unchanged command, in its own process."""

from __future__ import annotations

import importlib
import runpy
import sys


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        raise SystemExit("usage: python -m quant_dev.preload MODULE[,MODULE...] -- MODULE ARGS...")
    target = argv[2]
    for name in filter(None, argv[0].split(",")):
        importlib.import_module(name)
    # What it imports stays; the module itself runs afresh as __main__ (runpy warns otherwise).
    sys.modules.pop(target, None)
    if not sys.stdin.readline():
        raise SystemExit(f"quant_dev.preload: standard input closed before {target} was released")
    sys.argv = [target, *argv[3:]]
    runpy.run_module(target, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
