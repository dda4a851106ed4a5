"""Real asyncio libraries over TLS, unchanged, on ferroloop and on asyncio's own loop.

Run by `python3 tools/dev.py compat` (and by `tools/dev.py test`) in its own venv,
`.venv-compat`, which holds the pinned libraries of `COMPAT_REQUIREMENTS` in tools/dev.py;
ferroloop is imported from the source tree (`PYTHONPATH=python`) as built into `.venv`.

Each case starts a library's server with the user's `ssl.SSLContext` (or certificate
files) and talks to it with a library client over TLS, on one loop:

* aiohttp: POST bodies of 10 B, 100 KB and 3 MB, and a `wss://` WebSocket;
* uvicorn + starlette, served with `ssl_certfile`/`ssl_keyfile`, and an httpx client;
* websockets: `wss://` echo of a short and a 200 KB message;
* anyio: `TLSListener` and `connect_tcp(ssl_context=...)`;
* asyncio streams upgraded with `StreamWriter.start_tls` (STARTTLS).
"""

from __future__ import annotations

import asyncio

from support import free_port, run_on, serve_aiohttp, serve_uvicorn, stop_uvicorn


async def aiohttp_round_trips(server_ctx, client_ctx):
    from aiohttp import ClientSession, TCPConnector, web

    async def hello(request):
        return web.Response(body=b"hello " + await request.read())

    async def echo_ws(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str("echo:" + message.data)
        return ws

    app = web.Application(client_max_size=16 * 2**20)
    app.router.add_post("/", hello)
    app.router.add_get("/ws", echo_ws)
    runner, port = await serve_aiohttp(app, ssl_context=server_ctx)
    try:
        async with ClientSession(connector=TCPConnector(ssl=client_ctx)) as session:
            for size in (10, 100_000, 3_000_000):
                body = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
                async with session.post(f"https://127.0.0.1:{port}/", data=body) as response:
                    assert response.status == 200
                    assert await response.read() == b"hello " + body
            async with session.ws_connect(f"wss://127.0.0.1:{port}/ws") as ws:
                await ws.send_str("hi")
                assert (await ws.receive()).data == "echo:hi"
    finally:
        await runner.cleanup()


def test_aiohttp_https_and_wss(loop_name, tls):
    server_ctx, client_ctx, _, _ = tls
    run_on(loop_name, aiohttp_round_trips(server_ctx, client_ctx))


async def uvicorn_round_trip(client_ctx, chain, key):
    import httpx
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def home(request):
        body = await request.body()
        return PlainTextResponse(f"{len(body)} {body[:5].decode()}")

    app = Starlette(routes=[Route("/", home, methods=["POST"])])
    server, serving, port = await serve_uvicorn(app, ssl_certfile=chain, ssl_keyfile=key)
    try:
        async with httpx.AsyncClient(verify=client_ctx) as client:
            response = await client.post(f"https://127.0.0.1:{port}/", content=b"world" * 1000)
            assert response.status_code == 200
            assert response.text == "5000 world"
    finally:
        await stop_uvicorn(server, serving)


def test_uvicorn_starlette_over_tls_with_httpx(loop_name, tls):
    _, client_ctx, chain, key = tls
    run_on(loop_name, uvicorn_round_trip(client_ctx, chain, key))


async def websockets_echo(server_ctx, client_ctx):
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    port = free_port()
    async with serve(echo, "127.0.0.1", port, ssl=server_ctx):
        async with connect(f"wss://127.0.0.1:{port}", ssl=client_ctx) as ws:
            for payload in ("hello", "y" * 200_000):
                await ws.send(payload)
                assert await ws.recv() == payload


def test_websockets_wss_echo(loop_name, tls):
    server_ctx, client_ctx, _, _ = tls
    run_on(loop_name, websockets_echo(server_ctx, client_ctx))


async def anyio_tls_exchange(server_ctx, client_ctx):
    import anyio
    from anyio.streams.tls import TLSListener

    port = free_port()
    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    listener = TLSListener(tcp, server_ctx)

    async def reverse(stream):
        async with stream:
            await stream.send((await stream.receive())[::-1])

    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, reverse)
        stream = await anyio.connect_tcp(
            "127.0.0.1", port, ssl_context=client_ctx, tls_hostname="127.0.0.1"
        )
        async with stream:
            await stream.send(b"abc")
            assert await stream.receive() == b"cba"
        group.cancel_scope.cancel()


def test_anyio_tls_streams(loop_name, tls):
    server_ctx, client_ctx, _, _ = tls
    run_on(loop_name, anyio_tls_exchange(server_ctx, client_ctx))


async def starttls_exchange(server_ctx, client_ctx):
    async def handler(reader, writer):
        assert await reader.readline() == b"STARTTLS\n"
        writer.write(b"OK\n")
        await writer.drain()
        await writer.start_tls(server_ctx)
        data = await reader.readexactly(5)
        writer.write(data.upper())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"STARTTLS\n")
    await writer.drain()
    assert await reader.readline() == b"OK\n"
    await writer.start_tls(client_ctx, server_hostname="127.0.0.1")
    assert writer.get_extra_info("ssl_object") is not None
    writer.write(b"hello")
    await writer.drain()
    assert await reader.read() == b"HELLO"
    writer.close()
    server.close()
    await server.wait_closed()


def test_streams_upgraded_with_start_tls(loop_name, tls):
    server_ctx, client_ctx, _, _ = tls
    run_on(loop_name, starttls_exchange(server_ctx, client_ctx))
