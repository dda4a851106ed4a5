"""What the compat tests share: the two loops and running a coroutine on one of them."""

from __future__ import annotations

import asyncio
import socket

import ferroloop

LOOPS = {"asyncio": asyncio.new_event_loop, "ferroloop": ferroloop.new_event_loop}
TIMEOUT = 30


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (for servers that take a port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_on(loop_name: str, coro):
    """Runs `coro` to completion on a new loop of that kind, with a timeout."""
    loop = LOOPS[loop_name]()
    try:
        if loop_name == "ferroloop":
            assert isinstance(loop, ferroloop.Loop)
        return loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
