#!/usr/bin/env python3
"""Loop-core micro benchmarks for ONE event loop per process.

Usage:
    python bench/core_bench.py --loop NAME [--scale F] [--only a,b] [--json] [--no-gc] [--cpu N]

NAME is ``asyncio`` (asyncio.SelectorEventLoop), ``uvloop`` (uvloop.new_event_loop),
``ferroloop`` (ferroloop.new_event_loop) or any ``module:factory`` (a zero-argument
callable that returns a new event loop, e.g. ``mypkg.loops:make_loop``).

Every benchmark creates its own loop with the factory, runs a warm-up pass (a tenth of
the work) on that loop, then times the full pass with time.perf_counter and closes the
loop. Loop creation and teardown are not timed. Results are operations per second; what
one "operation" is for each benchmark is written in its docstring and in bench/README.md.

Only the standard library and the loop under test are used. bench/run_core.py runs this
script in fresh subprocesses, alternating between loops; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import os
import platform
import random
import sys
import time
import traceback
from collections.abc import Callable

SEED = 20261122
WARMUP_FRACTION = 0.1

LOOPS = {
    "asyncio": "asyncio:SelectorEventLoop",
    "uvloop": "uvloop:new_event_loop",
    "ferroloop": "ferroloop:new_event_loop",
}


def resolve_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """Turn a loop name or ``module:attr.path`` into a zero-argument loop factory."""
    spec = LOOPS.get(name, name)
    if ":" not in spec:
        raise ValueError(f"unknown loop {name!r}: use one of {sorted(LOOPS)} or module:factory")
    module_name, _, attr_path = spec.partition(":")
    obj = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        obj = getattr(obj, attr)
    if not callable(obj):
        raise TypeError(f"{spec} is not callable")
    return obj


def describe_build(factory: Callable) -> dict:
    """Version and newest file mtime of the package that provides the loop, so the runner
    can tell when the code under test changed (was rebuilt) in the middle of a run."""
    top = (getattr(factory, "__module__", None) or "").partition(".")[0]
    module = sys.modules.get(top)
    info: dict = {"version": getattr(module, "__version__", None)}
    files = [getattr(module, "__file__", None)]
    for base in getattr(module, "__path__", []):
        files += [e.path for e in os.scandir(base) if e.name.endswith((".py", ".so", ".pyd"))]
    newest = max((os.stat(f).st_mtime for f in files if f and os.path.isfile(f)), default=0.0)
    info["mtime"] = newest or None
    return info


# --------------------------------------------------------------------------------------
# Benchmark bodies. Each one takes (loop, n, rng), does n operations on a loop that is not
# running, and returns (operations, seconds). Only the measured part is inside the timer.
# --------------------------------------------------------------------------------------


def bench_call_soon(loop: asyncio.AbstractEventLoop, n: int, rng: random.Random):
    """n x loop.call_soon(cb), then run_forever until the last callback stops the loop.

    One operation = one callback scheduled and run.
    """
    remaining = [n]

    def cb() -> None:
        remaining[0] -= 1
        if not remaining[0]:
            loop.stop()

    call_soon = loop.call_soon
    t0 = time.perf_counter()
    for _ in range(n):
        call_soon(cb)
    loop.run_forever()
    elapsed = time.perf_counter() - t0
    assert remaining[0] == 0, remaining[0]
    return n, elapsed


def bench_call_later(loop: asyncio.AbstractEventLoop, n: int, rng: random.Random):
    """n x loop.call_later(uniform(0, 1 ms), cb); a random half is cancelled straight away;
    run_forever until every live callback has fired.

    One operation = one timer scheduled (and either cancelled or fired).
    """
    delays = [rng.uniform(0.0, 0.001) for _ in range(n)]
    cancel_idx = rng.sample(range(n), n // 2)
    live = n - len(cancel_idx)
    remaining = [live]

    def cb() -> None:
        remaining[0] -= 1
        if not remaining[0]:
            loop.stop()

    call_later = loop.call_later
    t0 = time.perf_counter()
    handles = [call_later(d, cb) for d in delays]
    for i in cancel_idx:
        handles[i].cancel()
    if live:
        loop.run_forever()
    elapsed = time.perf_counter() - t0
    assert remaining[0] == 0, remaining[0]
    return n, elapsed


def bench_sleep0_pingpong(loop: asyncio.AbstractEventLoop, n: int, rng: random.Random):
    """Two tasks that each do ``await asyncio.sleep(0)`` n times, so they alternate.

    One operation = one ``await asyncio.sleep(0)`` (2n in total).
    """
    sleep = asyncio.sleep

    async def player() -> None:
        for _ in range(n):
            await sleep(0)

    async def main() -> float:
        t0 = time.perf_counter()
        a = loop.create_task(player())
        b = loop.create_task(player())
        await a
        await b
        return time.perf_counter() - t0

    return 2 * n, loop.run_until_complete(main())


def bench_gather_tasks(loop: asyncio.AbstractEventLoop, n: int, rng: random.Random):
    """``await asyncio.gather(*[trivial() for _ in range(n)])`` (gather wraps every
    coroutine in a task with loop.create_task).

    One operation = one task created, run and collected.
    """

    async def trivial() -> int:
        return 1

    async def main() -> float:
        t0 = time.perf_counter()
        results = await asyncio.gather(*[trivial() for _ in range(n)])
        elapsed = time.perf_counter() - t0
        assert len(results) == n
        return elapsed

    return n, loop.run_until_complete(main())


def bench_future_chain(loop: asyncio.AbstractEventLoop, n: int, rng: random.Random):
    """In one task, n times: fut = loop.create_future(); loop.call_soon(fut.set_result, i);
    await fut (so the task really suspends and is woken by the future's done callback).

    One operation = one create_future / set_result / await round trip.
    """

    async def main() -> float:
        create_future = loop.create_future
        call_soon = loop.call_soon
        total = 0
        t0 = time.perf_counter()
        for i in range(n):
            fut = create_future()
            call_soon(fut.set_result, i)
            total += await fut
        elapsed = time.perf_counter() - t0
        assert total == n * (n - 1) // 2
        return elapsed

    return n, loop.run_until_complete(main())


QUEUE_MAXSIZE = 1


def bench_queue(loop: asyncio.AbstractEventLoop, n: int, rng: random.Random):
    """asyncio.Queue(maxsize=1): one producer task puts n ints, one consumer task gets
    them. With room for a single item, every item is handed from one task to the other,
    so the benchmark measures task wake-ups through the loop rather than the deque.

    One operation = one item put and got.
    """

    async def producer(q: asyncio.Queue) -> None:
        put = q.put
        for i in range(n):
            await put(i)

    async def consumer(q: asyncio.Queue) -> int:
        get = q.get
        total = 0
        for _ in range(n):
            total += await get()
        return total

    async def main() -> float:
        q: asyncio.Queue = asyncio.Queue(QUEUE_MAXSIZE)
        t0 = time.perf_counter()
        p = loop.create_task(producer(q))
        total = await consumer(q)
        await p
        elapsed = time.perf_counter() - t0
        assert total == n * (n - 1) // 2
        return elapsed

    return n, loop.run_until_complete(main())


def _nothing() -> int:
    return 1


def bench_executor(loop: asyncio.AbstractEventLoop, n: int, rng: random.Random):
    """n sequential ``await loop.run_in_executor(None, f)`` round trips (default
    ThreadPoolExecutor; f returns at once). The executor already exists from the warm-up.

    One operation = one submit + cross-thread wake-up + await.
    """

    async def main() -> float:
        run_in_executor = loop.run_in_executor
        total = 0
        t0 = time.perf_counter()
        for _ in range(n):
            total += await run_in_executor(None, _nothing)
        elapsed = time.perf_counter() - t0
        assert total == n
        return elapsed

    return n, loop.run_until_complete(main())


def bench_timeout(loop: asyncio.AbstractEventLoop, n: int, rng: random.Random):
    """n x ``async with asyncio.timeout(10): await asyncio.sleep(0)`` in one task (needs
    Python 3.11+). Each entry arms a timer with loop.call_at and each exit cancels it; the
    sleep(0) makes the loop turn once per iteration, so cancelled timers are also purged
    the way they are in real programs.

    One operation = one timeout block entered, suspended once and exited.
    """
    timeout = asyncio.timeout  # AttributeError on 3.10 -> reported as unsupported
    sleep = asyncio.sleep

    async def main() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            async with timeout(10):
                await sleep(0)
        return time.perf_counter() - t0

    return n, loop.run_until_complete(main())


# name -> (body, base count). Counts are multiplied by --scale.
BENCHMARKS: dict[str, tuple[Callable, int]] = {
    "call_soon": (bench_call_soon, 1_000_000),
    "call_later": (bench_call_later, 100_000),
    "sleep0_pingpong": (bench_sleep0_pingpong, 100_000),
    "gather_tasks": (bench_gather_tasks, 100_000),
    "future_chain": (bench_future_chain, 100_000),
    "queue": (bench_queue, 100_000),
    "executor": (bench_executor, 5_000),
    "timeout": (bench_timeout, 100_000),
}


def run_one(factory: Callable, name: str, scale: float, no_gc: bool = False) -> dict:
    """Build a loop, warm it up, time one full pass, close it. Returns a result dict."""
    body, base = BENCHMARKS[name]
    n = max(10, int(base * scale))
    warm_n = max(10, int(n * WARMUP_FRACTION))
    if name == "timeout" and not hasattr(asyncio, "timeout"):
        version = platform.python_version()
        return {"error": f"asyncio.timeout needs Python 3.11+ (this is {version})"}
    loop = factory()
    try:
        # Without the GC means in the warm-up too: a collection there scans the whole heap,
        # whose size differs between builds that import different modules.
        if no_gc:
            gc.collect()
            gc.disable()
        try:
            body(loop, warm_n, random.Random(SEED + 1))
            gc.collect()
            ops, seconds = body(loop, n, random.Random(SEED))
        finally:
            gc.enable()
        if name == "executor":
            loop.run_until_complete(loop.shutdown_default_executor())
    except BaseException:
        try:
            loop.close()
        except Exception:
            pass  # keep the benchmark's own error, not the follow-up one
        raise
    loop.close()
    return {"n": n, "ops": ops, "seconds": seconds, "ops_per_sec": ops / seconds}


def describe_exception(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "<frozen" not in f.filename]
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    text = f"{type(exc).__name__}: {exc}".strip()
    if len(text) > 300:
        text = text[:300] + "..."
    return text + where


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", required=True, help="asyncio, uvloop, ferroloop or mod:factory")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply all counts by F")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--no-gc",
        action="store_true",
        help="disable the cyclic GC during the warm-up and the timed pass",
    )
    parser.add_argument("--cpu", type=int, help="pin this process (and its threads) to one CPU")
    parser.add_argument(
        "--check", action="store_true", help="only import the loop, create and close one"
    )
    parser.add_argument("--list", action="store_true", help="print the benchmark names")
    args = parser.parse_args()

    if args.list:
        print("\n".join(BENCHMARKS))
        return 0
    names = [s.strip() for s in args.only.split(",") if s.strip()] or list(BENCHMARKS)
    unknown = [s for s in names if s not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    if args.scale <= 0:
        parser.error("--scale must be > 0")

    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})  # before any thread (executor) exists

    report: dict = {
        "loop": args.loop,
        "python": platform.python_version(),
        "scale": args.scale,
        "gc": not args.no_gc,
        "cpu": args.cpu,
        "results": {},
    }
    try:
        factory = resolve_factory(args.loop)
        probe = factory()
        report["loop_class"] = f"{type(probe).__module__}.{type(probe).__qualname__}"
        report["build"] = describe_build(factory)
        probe.close()
    except Exception as exc:  # import or construction failure: report it, do not crash
        report["error"] = describe_exception(exc)
        emit(report, args.json)
        return 2

    if not args.check:
        for name in names:
            try:
                report["results"][name] = run_one(factory, name, args.scale, args.no_gc)
            except Exception as exc:
                report["results"][name] = {"error": describe_exception(exc)}
            if not args.json:
                print_result(name, report["results"][name])
    if args.json or args.check:
        emit(report, args.json)
    failed = any("error" in r for r in report["results"].values())
    return 1 if failed else 0


def emit(report: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report), flush=True)
    elif "error" in report:
        print(f"{report['loop']}: FAILED: {report['error']}", flush=True)
    else:
        print(f"{report['loop']}: ok ({report.get('loop_class')})", flush=True)


def print_result(name: str, result: dict) -> None:
    if "error" in result:
        print(f"{name:16} FAILED: {result['error']}", flush=True)
    else:
        print(
            f"{name:16} {result['ops_per_sec']:>14,.0f} ops/s"
            f"  ({result['ops']:,} ops in {result['seconds']:.3f} s)",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
