"""Smoke test of an installed ferroloop wheel: a small asyncio program that does real work.

`tools/wheels.py` runs it with the interpreter of a fresh venv into which only the wheel was
installed, isolated (`python -I`) and from outside the source tree, so that what it imports
is the wheel. It needs nothing but the standard library and ferroloop. Any failed check
raises, and the process exits non-zero; on success it prints one line.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import subprocess
import sys
from pathlib import Path

import ferroloop
import ferroloop._core

# Enough data that the echo takes many reads and writes, and so crosses the transport's
# buffering, not one segment.
PAYLOAD = hashlib.sha256(b"ferroloop").digest() * 8192  # 256 KiB
TIMER_DELAY = 0.05

request = contextvars.ContextVar("request", default=None)


def check(condition: bool, what: str) -> None:
    """Unlike `assert`, not removed by `python -O`."""
    if not condition:
        raise SystemExit(f"wheel smoke test FAILED: {what}")


def check_installed_copy() -> None:
    """ferroloop and its extension must come from this environment, not a source tree."""
    prefix = Path(sys.prefix).resolve()
    for module in (ferroloop, ferroloop._core):
        location = Path(module.__file__).resolve()
        check(prefix in location.parents, f"{module.__name__} imported from {location}")


async def echo_over_tcp() -> int:
    """A TCP echo server and client over asyncio streams; returns the bytes echoed."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        for start in range(0, len(PAYLOAD), 10000):
            writer.write(PAYLOAD[start : start + 10000])
            await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    reply = await asyncio.wait_for(reader.read(), timeout=30)
    await sender
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    check(reply == PAYLOAD, f"echo returned {len(reply)} bytes, not the {len(PAYLOAD)} sent")
    return len(reply)


async def timer() -> float:
    """A call_later timer fires once, after its delay; returns the delay observed."""
    loop = asyncio.get_running_loop()
    fired = loop.create_future()
    started = loop.time()
    handle = loop.call_later(TIMER_DELAY, fired.set_result, "fired")
    cancelled = loop.create_future()
    loop.call_later(TIMER_DELAY / 2, cancelled.set_result, "should not fire").cancel()
    check(await asyncio.wait_for(fired, timeout=10) == "fired", "the timer's result")
    waited = loop.time() - started
    check(waited >= TIMER_DELAY * 0.99, f"the timer fired after {waited:.4f} s")
    check(not cancelled.done(), "a cancelled timer fired")
    check(isinstance(handle, ferroloop.TimerHandle), f"call_later returned {handle!r}")
    return waited


async def square(n: int) -> int:
    request.set(n)
    await asyncio.sleep(0.001)
    check(request.get() == n, "a task saw another task's context variable")
    return n * n


async def tasks() -> int:
    """Tasks run concurrently, each in its own context; one runs a thread-pool job."""
    loop = asyncio.get_running_loop()
    results = await asyncio.gather(*(asyncio.create_task(square(n)) for n in range(20)))
    check(results == [n * n for n in range(20)], f"gather returned {results}")
    total = await loop.run_in_executor(None, sum, results)
    check(total == sum(n * n for n in range(20)), f"run_in_executor returned {total}")
    check(request.get() is None, "a task's context variable leaked into the caller")
    return total


async def main() -> str:
    loop = asyncio.get_running_loop()
    check(isinstance(loop, ferroloop.Loop), f"the running loop is {type(loop)}")
    echoed = await echo_over_tcp()
    waited = await timer()
    total = await tasks()
    return f"echoed {echoed} bytes over TCP, timer after {waited * 1000:.0f} ms, tasks {total}"


PANIC = """
import ferroloop._core
try:
    ferroloop._core._panic_for_tests("smoke")
except BaseException as exc:  # PanicException derives from BaseException
    print(type(exc).__name__, exc)
print("still alive")
"""


def panic_becomes_exception() -> None:
    """A Rust panic must unwind into a Python exception: the unwinder linked into the
    wheel's extension has to work, or the interpreter aborts. Checked in a child process,
    which also keeps the panic's message out of the output."""
    child = subprocess.run(
        [sys.executable, "-I", "-c", PANIC], capture_output=True, text=True, timeout=60
    )
    out = child.stdout.split()
    check(
        child.returncode == 0 and out == ["PanicException", "smoke", "still", "alive"],
        f"a Rust panic: exit status {child.returncode}, output {child.stdout!r}, "
        f"errors {child.stderr[-2000:]!r}",
    )


if __name__ == "__main__":
    check_installed_copy()
    summary = ferroloop.run(main())
    panic_becomes_exception()
    version = ".".join(map(str, sys.version_info[:3]))
    print(f"smoke OK on Python {version}: {summary}, a Rust panic became an exception")
