"""Subprocess micro benchmark for one event loop, run in its own process.

    python bench/net/spawn_bench.py --loop asyncio|uvloop|ferroloop|MODULE:FACTORY \\
        [--spawns 300] [--pipes 30] [--pipe-size 4MiB] [--timeout 120]

Two phases, each after a short unmeasured warm-up:

* ``spawn``: ``await asyncio.create_subprocess_exec("true")`` then ``await proc.wait()``,
  one after the other, ``--spawns`` times; every exit status must be 0.
* ``cat``: ``create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE)`` and
  ``communicate(DATA)`` with ``--pipe-size`` random bytes, ``--pipes`` times; the output
  must equal the input and the exit status be 0.

Prints one JSON object: ``ok``, ``loop`` (the loop's class), ``spawns_per_s``,
``cat_mib_s`` (input MiB per second through ``cat``), ``cat_per_s``, the seconds of each
phase and, when something failed, ``error``. Exit status 0 when both phases passed, 2 when
one failed or timed out, 3 when the loop could not be made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

from servers import load_loop_factory

WARMUP = 3


def parse_size(text: str) -> int:
    lower = text.strip().lower()
    digits = len(lower) - len(lower.lstrip("0123456789"))
    units = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1 << 20, "mib": 1 << 20}
    if not lower[:digits] or lower[digits:] not in units:
        raise argparse.ArgumentTypeError(f"bad size {text!r}")
    return int(lower[:digits]) * units[lower[digits:]]


async def spawn_true() -> None:
    proc = await asyncio.create_subprocess_exec("true")
    status = await proc.wait()
    if status != 0:
        raise RuntimeError(f"true exited with status {status}")


async def cat_through(data: bytes) -> None:
    proc = await asyncio.create_subprocess_exec(
        "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate(data)
    if proc.returncode != 0:
        raise RuntimeError(f"cat exited with status {proc.returncode}")
    if out != data:
        raise RuntimeError(f"cat returned {len(out)} bytes that differ from the {len(data)} sent")


async def bench(args: argparse.Namespace, result: dict) -> None:
    for _ in range(WARMUP):
        await spawn_true()
    t0 = time.perf_counter()
    for _ in range(args.spawns):
        await spawn_true()
    result["spawn_s"] = time.perf_counter() - t0
    result["spawns_per_s"] = args.spawns / result["spawn_s"]

    data = os.urandom(args.pipe_size)
    await cat_through(data)
    t0 = time.perf_counter()
    for _ in range(args.pipes):
        await cat_through(data)
    result["cat_s"] = time.perf_counter() - t0
    result["cat_per_s"] = args.pipes / result["cat_s"]
    result["cat_mib_s"] = args.pipes * args.pipe_size / (1 << 20) / result["cat_s"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loop", default="asyncio")
    p.add_argument("--spawns", type=int, default=300)
    p.add_argument("--pipes", type=int, default=30)
    p.add_argument("--pipe-size", type=parse_size, default=4 << 20)
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args()
    if args.spawns < 1 or args.pipes < 1 or args.pipe_size < 1:
        p.error("--spawns, --pipes and --pipe-size must be at least 1")
    result: dict = {"ok": False, "spawns": args.spawns, "pipes": args.pipes}
    result["pipe_size"] = args.pipe_size
    try:
        loop = load_loop_factory(args.loop)()
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(result), flush=True)
        return 3
    result["loop"] = f"{type(loop).__module__}.{type(loop).__name__}"
    asyncio.set_event_loop(loop)
    status = 0
    try:
        loop.run_until_complete(asyncio.wait_for(bench(args, result), args.timeout))
        result["ok"] = True
    except TimeoutError:
        result["error"] = f"timed out after {args.timeout:.0f} s"
        status = 2
    except Exception as exc:
        frames = exc.__traceback__
        while frames is not None and frames.tb_next is not None:
            frames = frames.tb_next
        where = f" (raised in {frames.tb_frame.f_code.co_name})" if frames else ""
        result["error"] = f"{type(exc).__name__}: {exc}{where}"
        status = 2
    finally:
        try:
            loop.close()
        except Exception:  # noqa: BLE001 - the result is already known
            pass
    print(json.dumps(result), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
