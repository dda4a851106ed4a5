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


async def serve_aiohttp(app, ssl_context=None):
    """Serves the aiohttp `app` on a free loopback port; returns (runner, port). The
    caller ends it with `await runner.cleanup()`."""
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context).start()
    return runner, port


async def serve_uvicorn(app, **options):
    """Serves the ASGI `app` with uvicorn on the running loop and a free loopback port;
    returns (server, its serve() task, port) once it listens. `options` go to
    `uvicorn.Config` (certificate files, for instance)."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="error", loop="none", **options
    )
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    while not server.started:
        assert not serving.done(), serving.exception()
        await asyncio.sleep(0.01)
    return server, serving, port


async def stop_uvicorn(server, serving) -> None:
    """Asks the uvicorn `server` to exit and waits until it has."""
    server.should_exit = True
    await serving
