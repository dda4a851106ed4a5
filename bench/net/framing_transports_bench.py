"""Framed reading over a pipe and over TLS: the transport's Rust read path against
`data_received` feeding the same framer (issue 13), in one run.

    .venv/bin/python bench/net/framing_transports_bench.py [--reps 5] [--mib 64]
        [--frame-size 64] [--markdown]

A child process writes `--mib` MiB of `--frame-size`-byte lines (`Delimiter(b"\\n")`
frames) as fast as it can: into its stdout (read with `connect_read_pipe`), or into a
TLS connection to a server on the loop (plain blocking `ssl` in the child). The loop's
process counts the frames with a `ChunkProtocol` whose `on_chunk` only counts. Reported:
frames/s from the first frame to the end (bounded by the child as much as by the
reader), and the loop process's CPU time per frame (`time.process_time`), the figure to
compare.

Readers: `ChunkProtocol` on ferroloop (the transport feeds the splitter in Rust); the same
protocol on ferroloop with the native path turned off (`data_received` feeds the
splitter, as before issue 13's leftovers); the same protocol on uvloop and on asyncio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

import ferroloop
from ferroloop.framing import ChunkProtocol, Delimiter

# The children write 64 KiB blocks of whole lines: `frame_size` divides 65536.
PIPE_WRITER = """
import sys
mib, size = int(sys.argv[1]), int(sys.argv[2])
block = (b"x" * (size - 1) + b"\\n") * (65536 // size)
for _ in range(mib * 16):
    sys.stdout.buffer.write(block)
sys.stdout.buffer.flush()
"""

TLS_WRITER = """
import socket, ssl, sys
ca, port, mib, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
context = ssl.create_default_context(cafile=ca)
block = (b"x" * (size - 1) + b"\\n") * (65536 // size)
with socket.create_connection(("127.0.0.1", port)) as raw:
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        for _ in range(mib * 16):
            tls.sendall(block)
        tls.unwrap()
"""


class Counter(ChunkProtocol):
    """Counts frames; records when the first byte came and when the input ended."""

    def __init__(self, native, done):
        super().__init__(Delimiter(b"\n"), self._count, on_connection_lost=self._lost)
        if not native:
            self._ferroloop_splitter = None  # the transport falls back to data_received
        self.frames = 0
        self.first = None
        self.done = done

    def _count(self, frame):
        if self.first is None:
            self.first = time.perf_counter()
        self.frames += 1

    def _lost(self, exc):
        if not self.done.done():
            self.done.set_result(time.perf_counter())


async def read_pipe(native, mib, size):
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    protocol = Counter(native, done)
    command = [sys.executable, "-c", PIPE_WRITER, str(mib), str(size)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE)
    cpu = time.process_time()
    await loop.connect_read_pipe(lambda: protocol, child.stdout)
    end = await done
    cpu = time.process_time() - cpu
    child.wait()
    return protocol, end, cpu


async def read_tls(native, mib, size, server_ctx, ca_path):
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    protocol = Counter(native, done)
    server = await loop.create_server(lambda: protocol, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    cpu = time.process_time()
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", TLS_WRITER, ca_path, str(port), str(mib), str(size)
    )
    end = await done
    cpu = time.process_time() - cpu
    await child.wait()
    server.close()
    await server.wait_closed()
    return protocol, end, cpu


def new_loop(kind):
    if kind == "ferroloop":
        return ferroloop.new_event_loop()
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run_one(transport, loop_kind, native, args, tls):
    loop = new_loop(loop_kind)
    try:
        if transport == "pipe":
            reading = read_pipe(native, args.mib, args.frame_size)
        else:
            reading = read_tls(native, args.mib, args.frame_size, *tls)
        protocol, end, cpu = loop.run_until_complete(reading)
    finally:
        loop.close()
    expected = args.mib * 1024 * 1024 // args.frame_size
    if protocol.frames != expected:
        raise RuntimeError(f"{protocol.frames} frames, expected {expected}")
    return protocol.frames / (end - protocol.first), cpu / protocol.frames * 1e6


READERS = [
    ("ferroloop", True, "ChunkProtocol, ferroloop (Rust read path)"),
    ("ferroloop", False, "ChunkProtocol, ferroloop via data_received"),
    ("uvloop", True, "ChunkProtocol, uvloop"),
    ("asyncio", True, "ChunkProtocol, asyncio"),
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--frame-size", type=int, default=64, help="a divisor of 65536")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    import trustme

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as pem:
        pem.write(ca.cert_pem.bytes())
    results = {}
    try:
        for rep in range(args.reps):
            for transport in ("pipe", "tls"):
                for loop_kind, native, label in READERS:
                    rate, cpu = run_one(transport, loop_kind, native, args, (server_ctx, pem.name))
                    results.setdefault((transport, label), []).append((rate, cpu))
                    print(
                        f"rep {rep} {transport:4} {label:44} {rate:12,.0f} frames/s "
                        f"{cpu:6.3f} us/frame",
                        flush=True,
                    )
    finally:
        os.unlink(pem.name)
    if args.markdown:
        print("\n| transport | reader | frames/s (median) | loop CPU us/frame (median) |")
        print("|---|---|---:|---:|")
        for (transport, label), runs in results.items():
            rate = statistics.median(r for r, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            print(f"| {transport} | {label} | {rate:,.0f} | {cpu:.3f} |")


if __name__ == "__main__":
    main()
