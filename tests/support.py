"""Small helpers for driving a loop in tests (no fixtures here)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# Upper bound for waiting on something that should happen almost at once.  Only a
# broken loop ever waits this long; a passing test never does.
PATIENCE = 2.0


def run_once(loop: asyncio.AbstractEventLoop) -> None:
    """Run exactly one iteration: stop() before run_forever() runs one iteration."""
    loop.stop()
    loop.run_forever()


def run_until(
    loop: asyncio.AbstractEventLoop, predicate: Callable[[], bool], timeout: float = PATIENCE
) -> None:
    """Run the loop until ``predicate()`` is true; fail if that takes longer than ``timeout``."""

    async def wait() -> None:
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError(f"condition not reached within {timeout} s")
            await asyncio.sleep(0.001)

    loop.run_until_complete(wait())


def run_with_guard(loop: asyncio.AbstractEventLoop, timeout: float = PATIENCE) -> bool:
    """Run forever until something stops the loop; return True if the guard timer had to."""
    fired = []

    def guard() -> None:
        fired.append(True)
        loop.stop()

    timer = loop.call_later(timeout, guard)
    try:
        loop.run_forever()
    finally:
        timer.cancel()
    return bool(fired)


def handle_classes(loop):
    """The (Handle, TimerHandle) classes `loop` returns from call_soon/call_at.

    ferroloop's handles are native classes that cannot derive from asyncio's Python
    classes (a known, documented divergence — docs/design.md; uvloop is the same), so
    each loop is checked against its own pair, with the same public API.
    """
    import ferroloop

    if isinstance(loop, ferroloop.Loop):
        return ferroloop.Handle, ferroloop.TimerHandle
    return asyncio.Handle, asyncio.TimerHandle
