#!/usr/bin/env python3
"""Instructions per operation of loop-core benchmarks, under valgrind's callgrind.

Wall-clock time on a shared machine moves by tens of percent between runs; instruction
counts do not. For each benchmark and loop this runs `core_bench.py` twice under callgrind
(scales 0.02 and 0.1) and divides the difference in instructions by the difference in
operations, so interpreter start-up and imports cancel out.

Usage: bench/instructions.py --loops A,B[,C] [--only x,y] [--no-gc]
(loops as core_bench.py takes them; e.g. `mymod:factory` with PYTHONPATH set).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCALES = (0.02, 0.1)


def count(loop: str, bench: str, scale: float, extra: list[str]) -> tuple[int, int]:
    """(operations, instructions) of one callgrind run."""
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
    cmd += [str(HERE / "core_bench.py"), "--loop", loop, "--only", bench, "--json"]
    cmd += ["--scale", str(scale), *extra]
    env = dict(os.environ, PYTHONHASHSEED="0")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    instructions = int(re.search(r"Collected : (\d+)", done.stderr).group(1))
    ops = json.loads(done.stdout.strip().splitlines()[-1])["results"][bench]["ops"]
    return ops, instructions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loops", required=True)
    ap.add_argument("--only", default="call_soon,call_later,sleep0_pingpong,future_chain,queue")
    ap.add_argument("--no-gc", action="store_true")
    args = ap.parse_args()
    extra = ["--no-gc"] if args.no_gc else []
    for bench in args.only.split(","):
        for loop in args.loops.split(","):
            (o1, i1), (o2, i2) = (count(loop, bench, s, extra) for s in SCALES)
            print(f"{bench:16} {loop:30} {(i2 - i1) / (o2 - o1):10.1f} instructions/op", flush=True)


if __name__ == "__main__":
    main()
