"""ferroloop demo: an ordinary asyncio program, then the same workloads on both loops.

Run with `python3 tools/dev.py demo` (builds the extension first).
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl
import time

import ferroloop

request_id = contextvars.ContextVar("request_id", default=None)


async def handle_request(n: int) -> str:
    request_id.set(n)
    await asyncio.sleep(0.001 * (n % 3))
    loop = asyncio.get_running_loop()
    digest = await loop.run_in_executor(None, sum, range(n * 1000))
    return f"request {request_id.get()} -> {digest}"


async def echo_over_tcp() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(1024))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"hello through the Rust transport")
    reply = await reader.read(1024)
    transport = writer.transport
    print(f"  TCP echo via asyncio streams: {reply!r} ({type(transport).__name__})")
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()


async def echo_over_tls() -> None:
    try:
        import trustme  # a development requirement: certificates made on the spot
    except ImportError:
        print("  (TLS echo skipped: the trustme package is not installed)")
        return
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(1024))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_context, server_hostname="localhost"
    )
    writer.write(b"hello over TLS")
    reply = await reader.read(1024)
    version = writer.get_extra_info("ssl_object").version()
    print(f"  TLS echo with your own ssl.SSLContext: {reply!r} ({version})")
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()


async def tour() -> None:
    loop = asyncio.get_running_loop()
    print(f"running on {loop!r}")
    results = await asyncio.gather(*(handle_request(n) for n in range(1, 4)))
    for line in results:
        print(f"  {line}  (contextvars stay per task)")
    fired = []
    loop.call_later(0.02, fired.append, "call_later")
    loop.call_soon(fired.append, "call_soon")
    await asyncio.sleep(0.03)
    print(f"  callbacks fired in order: {fired}")
    addresses = await loop.getaddrinfo("localhost", 80, type=0)
    print(f"  getaddrinfo('localhost', 80) on the Rust resolver pool: {addresses[0][4]}")
    await echo_over_tcp()
    await echo_over_tls()
    try:
        await asyncio.wait_for(asyncio.sleep(1), timeout=0.01)
    except TimeoutError:
        print("  asyncio.wait_for timed out on time")


def call_soon_rate(loop: asyncio.AbstractEventLoop, n: int = 200_000) -> float:
    remaining = [n]

    def tick() -> None:
        remaining[0] -= 1
        if not remaining[0]:
            loop.stop()

    started = time.perf_counter()
    for _ in range(n):
        loop.call_soon(tick)
    loop.run_forever()
    return n / (time.perf_counter() - started)


def task_rate(loop: asyncio.AbstractEventLoop, n: int = 20_000) -> float:
    async def leaf() -> int:
        await asyncio.sleep(0)
        return 1

    async def fan_out() -> int:
        return sum(await asyncio.gather(*(leaf() for _ in range(n))))

    started = time.perf_counter()
    loop.run_until_complete(fan_out())
    return n / (time.perf_counter() - started)


def sleep0_rate(loop: asyncio.AbstractEventLoop, n: int = 50_000) -> float:
    async def spin() -> None:
        for _ in range(n):
            await asyncio.sleep(0)

    started = time.perf_counter()
    loop.run_until_complete(spin())
    return n / (time.perf_counter() - started)


WORKLOADS = {"call_soon": call_soon_rate, "tasks+gather": task_rate, "sleep(0)": sleep0_rate}


def compare() -> None:
    factories = {"asyncio": asyncio.new_event_loop, "ferroloop": ferroloop.new_event_loop}
    print("\nSame workloads, best of 3 (ops/s; a noisy shared machine, so look at ratios):")
    print(f"  {'workload':<14}{'asyncio':>12}{'ferroloop':>12}{'ratio':>8}")
    for name, workload in WORKLOADS.items():
        rates = {}
        for loop_name, factory in factories.items():
            samples = []
            for _ in range(3):
                loop = factory()
                try:
                    samples.append(workload(loop))
                finally:
                    loop.close()
            rates[loop_name] = max(samples)
        ratio = rates["ferroloop"] / rates["asyncio"]
        print(f"  {name:<14}{rates['asyncio']:>12,.0f}{rates['ferroloop']:>12,.0f}{ratio:>7.2f}x")


if __name__ == "__main__":
    ferroloop.run(tour())
    compare()
