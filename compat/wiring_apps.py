"""Programs that test_wiring.py starts as child processes, each answering GET / with the
class of the loop that runs its handler ("ferroloop._loop.Loop", for instance).

* `asgi_app`: a bare ASGI application for the `uvicorn` command line
  (`uvicorn --app-dir compat wiring_apps:asgi_app --loop ferroloop:new_event_loop`).
* `python wiring_apps.py aiohttp {asyncio,ferroloop} PORT`: aiohttp's
  `web.run_app(app, loop=<a new loop of that kind>)`. It prints "ready" once it listens;
  on SIGINT or SIGTERM run_app stops, and the program prints "stopped" and whether the
  loop it handed over is closed.
"""

from __future__ import annotations

import asyncio
import sys


def running_loop_class() -> str:
    loop = asyncio.get_running_loop()
    return f"{type(loop).__module__}.{type(loop).__qualname__}"


async def asgi_app(scope, receive, send):
    """GET anything: the running loop's class as text/plain; lifespan events are accepted."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        body = running_loop_class().encode()
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "ferroloop":
        import ferroloop

        return ferroloop.new_event_loop()
    return asyncio.new_event_loop()


def run_aiohttp(kind: str, port: int) -> None:
    from aiohttp import web

    async def handler(request):
        return web.Response(text=running_loop_class())

    app = web.Application()
    app.router.add_get("/", handler)
    loop = new_loop(kind)
    # run_app calls `print` with its banner once the site listens.
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        loop=loop,
        print=lambda banner: print("ready", flush=True),
        access_log=None,
    )
    print(f"stopped closed={loop.is_closed()}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "aiohttp":
        run_aiohttp(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(f"unknown program {sys.argv[1]!r}")
