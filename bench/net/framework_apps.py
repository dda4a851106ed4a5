"""Real-framework servers for the `frameworks` suite of run_net.py, one per process.

    python bench/net/framework_apps.py --app APP --loop asyncio|uvloop|ferroloop|MODULE:FACTORY
        [--addr 127.0.0.1:0]

Prints ``ready HOST:PORT LOOPCLASS`` on stdout once it listens, then serves until killed;
a failure to start is printed to stderr as ``error: ...`` and the process exits with
status 3 (the same contract as servers.py). Every app runs on a loop made by the loop's
factory and driven with ``run_until_complete``, the way the frameworks run on uvloop.

Apps (the HTTP ones answer ``GET /N`` with N bytes, a body made once per size):

* ``starlette``: a Starlette app (one ``Route``, a ``Response``) served by ``uvicorn.Server``
  with ``http="httptools"`` (uvicorn's fast parser; h11 is not measured), no access log,
  no lifespan.
* ``fastapi``: the same under FastAPI: a path operation with an ``int`` path parameter
  (validated by pydantic) returning a ``Response``, served the same way.
* ``aiohttp``: an ``aiohttp.web.Application`` with one route, ``web.AppRunner`` and a
  ``SockSite``; no access log.
* ``websockets``: ``websockets.asyncio.server.serve`` echoing every message with
  ``await ws.send(message)``; no compression, no keep-alive pings.
* ``lines``: ``asyncio.start_server``; per client ``await reader.readline()``,
  ``writer.write(line)``, ``await writer.drain()``.

Needs the frameworks (the bench venv of framework_venv.py); ferroloop is imported from
wherever Python finds it (run_net.py sets PYTHONPATH to the source tree).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import socket
import sys
import traceback

from servers import load_loop_factory

APPS = ("starlette", "fastapi", "aiohttp", "websockets", "lines")
MAX_BODY = 16 * 1024 * 1024
_bodies: dict[int, bytes] = {}


def body(size: int) -> bytes:
    """N bytes of response body, made once per size."""
    size = max(0, min(size, MAX_BODY))
    if size not in _bodies:
        _bodies[size] = b"x" * size
    return _bodies[size]


def listening_socket(addr: str) -> socket.socket:
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    ip = ipaddress.ip_address(host)
    if not ip.is_loopback:
        raise ValueError(f"--addr {addr}: only loopback addresses")
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    # proto IPPROTO_TCP, as getaddrinfo gives create_server(host, port): asyncio's
    # transports set TCP_NODELAY only on sockets that say they are TCP, and without it
    # uvicorn's separate head and body writes wait for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def starlette_app():
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def sized(request):
        return Response(body(request.path_params["size"]), media_type="text/plain")

    return Starlette(routes=[Route("/{size:int}", sized)])


def fastapi_app():
    from fastapi import FastAPI
    from fastapi.responses import Response

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/{size}")
    async def sized(size: int) -> Response:
        return Response(body(size), media_type="text/plain")

    return app


async def serve_uvicorn(app, sock: socket.socket, ready) -> None:
    import uvicorn

    config = uvicorn.Config(
        app, http="httptools", lifespan="off", access_log=False, log_level="warning"
    )
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            serving.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    ready()
    await serving


async def serve_aiohttp(sock: socket.socket, ready) -> None:
    from aiohttp import web

    async def sized(request):
        return web.Response(body=body(int(request.match_info["size"])))

    app = web.Application()
    app.router.add_get("/{size:[0-9]+}", sized)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    ready()
    await asyncio.Event().wait()


async def serve_websockets(sock: socket.socket, ready) -> None:
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed

    async def echo(ws) -> None:
        try:
            async for message in ws:
                await ws.send(message)
        except ConnectionClosed:  # the load generator closes without a close frame
            pass

    async with serve(echo, sock=sock, compression=None, ping_interval=None, max_size=MAX_BODY):
        ready()
        await asyncio.Event().wait()


async def serve_lines(sock: socket.socket, ready) -> None:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(client, sock=sock, limit=MAX_BODY)
    ready()
    async with server:
        await server.serve_forever()


async def serve(app: str, sock: socket.socket) -> None:
    host, port = sock.getsockname()[:2]

    def ready() -> None:
        loop = type(asyncio.get_running_loop())
        print(f"ready {host}:{port} {loop.__module__}.{loop.__qualname__}", flush=True)

    if app == "starlette":
        await serve_uvicorn(starlette_app(), sock, ready)
    elif app == "fastapi":
        await serve_uvicorn(fastapi_app(), sock, ready)
    elif app == "aiohttp":
        await serve_aiohttp(sock, ready)
    elif app == "websockets":
        await serve_websockets(sock, ready)
    else:
        await serve_lines(sock, ready)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", choices=APPS, required=True)
    parser.add_argument("--loop", default="asyncio")
    parser.add_argument("--addr", default="127.0.0.1:0")
    args = parser.parse_args()
    try:
        loop = load_loop_factory(args.loop)()
        sock = listening_socket(args.addr)
    except Exception as exc:  # noqa: BLE001 - reported to the runner, which shows it
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 3
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve(args.app, sock))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
