"""Real asyncio libraries, unchanged, on ferroloop and on asyncio's own loop: what they use
besides TLS (see test_frameworks.py for that).

* anyio: worker threads, subprocesses, cancel scopes, memory streams, Unix sockets, UDP,
  getaddrinfo;
* aiohttp: streamed 4 MiB responses read in chunks, 20 at once through one pool;
* uvicorn + starlette: a WebSocket endpoint, with a websockets client;
* httpx: 200 concurrent requests to an aiohttp server;
* signals and a subprocess pipe of 300 KB through `asyncio.create_subprocess_exec`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from support import run_on, serve_aiohttp, serve_uvicorn, stop_uvicorn


async def anyio_tour(tmp_path):
    import anyio
    from anyio.abc import SocketAttribute

    assert await anyio.to_thread.run_sync(lambda: 41 + 1) == 42
    done = await anyio.run_process(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (done.returncode, done.stdout, done.stderr) == (3, b"out\n", b"err\n")
    async with await anyio.open_process(["cat"]) as process:
        await process.stdin.send(b"abc")
        await process.stdin.aclose()
        assert await process.stdout.receive() == b"abc"
    with anyio.move_on_after(0.05) as scope:
        await anyio.sleep(5)
    assert scope.cancel_called

    send, receive = anyio.create_memory_object_stream(10)

    async def produce():
        async with send:
            for i in range(100):
                await send.send(i)

    async with receive, anyio.create_task_group() as group:
        group.start_soon(produce)
        assert [item async for item in receive] == list(range(100))

    path = str(tmp_path / "echo.sock")

    async def echo(stream):
        async with stream:
            await stream.send(await stream.receive())

    async with await anyio.create_unix_listener(path) as listener:
        async with anyio.create_task_group() as group:
            group.start_soon(listener.serve, echo)
            async with await anyio.connect_unix(path) as stream:
                await stream.send(b"unix")
                assert await stream.receive() == b"unix"
            group.cancel_scope.cancel()

    async with await anyio.create_udp_socket(local_host="127.0.0.1") as server:
        port = server.extra(SocketAttribute.local_port)
        async with await anyio.create_connected_udp_socket("127.0.0.1", port) as client:
            await client.send(b"datagram")
            data, _ = await server.receive()
            assert data == b"datagram"
    assert await anyio.getaddrinfo("localhost", 80)


def test_anyio_threads_processes_streams_sockets(loop_name, tmp_path):
    run_on(loop_name, anyio_tour(tmp_path))


async def aiohttp_streaming():
    from aiohttp import ClientSession, web

    chunk, count = b"z" * 65536, 64

    async def big(request):
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(count):
            await response.write(chunk)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/big", big)
    runner, port = await serve_aiohttp(app)
    url = f"http://127.0.0.1:{port}/big"
    try:
        async with ClientSession() as session:
            async with session.get(url) as response:
                received = 0
                async for piece in response.content.iter_chunked(10_000):
                    received += len(piece)
                assert received == count * len(chunk)

            async def fetch():
                async with session.get(url) as response:
                    return await response.read()

            bodies = await asyncio.gather(*[fetch() for _ in range(20)])
            assert all(body == chunk * count for body in bodies)
    finally:
        await runner.cleanup()


def test_aiohttp_streamed_responses_through_one_pool(loop_name):
    run_on(loop_name, aiohttp_streaming())


async def uvicorn_websocket():
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from websockets.asyncio.client import connect

    async def reverse(ws):
        await ws.accept()
        await ws.send_text((await ws.receive_text())[::-1])
        await ws.close()

    app = Starlette(routes=[WebSocketRoute("/ws", reverse)])
    server, serving, port = await serve_uvicorn(app)
    try:
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send("hello")
            assert await ws.recv() == "olleh"
    finally:
        await stop_uvicorn(server, serving)


def test_uvicorn_starlette_websocket(loop_name):
    run_on(loop_name, uvicorn_websocket())


async def httpx_concurrent():
    import httpx
    from aiohttp import web

    async def page(request):
        return web.Response(text="x" * 1000)

    app = web.Application()
    app.router.add_get("/", page)
    runner, port = await serve_aiohttp(app)
    try:
        # No per-request timeout (the whole test has one): under -X dev with tracemalloc
        # a request can wait for a pool slot longer than httpx's default 5 s.
        async with httpx.AsyncClient(timeout=None) as client:
            url = f"http://127.0.0.1:{port}/"
            responses = await asyncio.gather(*[client.get(url) for _ in range(200)])
            assert all(r.status_code == 200 and r.text == "x" * 1000 for r in responses)
    finally:
        await runner.cleanup()


def test_httpx_200_concurrent_requests(loop_name):
    run_on(loop_name, httpx_concurrent())


async def signal_and_subprocess():
    loop = asyncio.get_running_loop()
    got = loop.create_future()
    loop.add_signal_handler(signal.SIGUSR1, got.set_result, "usr1")
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert await asyncio.wait_for(got, 5) == "usr1"
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
    upper = "import sys; sys.stdout.write(sys.stdin.read().upper())"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        upper,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate(b"abc" * 100_000)
    assert out == b"ABC" * 100_000
    assert process.returncode == 0


def test_signal_handler_and_subprocess_pipes(loop_name):
    run_on(loop_name, signal_and_subprocess())
