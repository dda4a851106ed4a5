"""Framed-protocol echo servers, three ways, measured in one run (issue 13).

    .venv/bin/python bench/net/framing_bench.py [--reps 5] [--duration 2] [--markdown]
    .venv/bin/python bench/net/framing_bench.py --serve KIND --frames lines|len4 \\
        --loop ferroloop|uvloop|asyncio          # one server; prints "ready HOST:PORT"

Server kinds (each echoes every frame back as a frame of its own):

* ``chunk``: ``ferroloop.framing.ChunkProtocol``; ``on_chunk`` calls ``write_chunk``.
* ``readuntil``: ``asyncio.start_server``; per client ``await reader.readuntil(b"\\n")``
  (or ``readexactly(4)`` + ``readexactly(n)``), ``writer.write`` and ``await
  writer.drain()`` per frame.
* ``splitter``: a hand-written ``asyncio.Protocol``: ``data_received`` appends to a
  ``bytearray``, cuts every complete frame with ``find`` (or the 4-byte header) and writes
  each reply with ``transport.write``.
* ``splitter-batch``: the same, collecting the replies of one ``data_received`` and
  writing them with one ``transport.write``.

Client: ``loadgen --frames lines|len4 --pipeline P -s SIZE``: each connection sends P
frames of SIZE bytes in one write and waits for all P echoed before sending the next
batch, so each read brings several frames. Responses are frames: req/s is the loadgen's
batches per second × P. Server CPU per response is the server process's CPU time (from
/proc) over the measured window divided by the frames answered in it.

Every (scenario, server) pair runs ``--reps`` times; the servers' order rotates between
repetitions; the server runs on CPU 0 and the load generator on CPU 1 (2-core machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# -- servers ----------------------------------------------------------------------------


def lines_split(buffer: bytearray):
    """Complete lines of `buffer` (consumed), without their newline."""
    frames = []
    start = 0
    while True:
        end = buffer.find(b"\n", start)
        if end < 0:
            break
        frames.append(bytes(buffer[start:end]))
        start = end + 1
    del buffer[:start]
    return frames


def len4_split(buffer: bytearray):
    """Complete 4-byte-length-prefixed frames of `buffer` (consumed), without headers."""
    frames = []
    start = 0
    while len(buffer) - start >= 4:
        n = int.from_bytes(buffer[start : start + 4], "big")
        if len(buffer) - start - 4 < n:
            break
        frames.append(bytes(buffer[start + 4 : start + 4 + n]))
        start += 4 + n
    del buffer[:start]
    return frames


def encode(frames_kind: str, frame: bytes) -> bytes:
    if frames_kind == "lines":
        return frame + b"\n"
    return len(frame).to_bytes(4, "big") + frame


def make_server(kind: str, frames_kind: str, loop):
    """A coroutine that starts the server of `kind` on 127.0.0.1:0."""
    if kind == "chunk":
        from ferroloop import framing

        framer = framing.Delimiter(b"\n") if frames_kind == "lines" else framing.LengthPrefixed(4)

        def factory():
            protocol = framing.ChunkProtocol(framer, lambda frame: protocol.write_chunk(frame))
            return protocol

        return loop.create_server(factory, "127.0.0.1", 0)

    if kind == "readuntil":

        async def handle(reader, writer):
            try:
                while True:
                    if frames_kind == "lines":
                        frame = await reader.readuntil(b"\n")
                        writer.write(frame)
                    else:
                        header = await reader.readexactly(4)
                        body = await reader.readexactly(int.from_bytes(header, "big"))
                        writer.write(header + body)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            writer.close()

        return asyncio.start_server(handle, "127.0.0.1", 0)

    split = lines_split if frames_kind == "lines" else len4_split
    batch = kind == "splitter-batch"

    class Splitter(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.buffer = bytearray()

        def data_received(self, data):
            self.buffer += data
            frames = split(self.buffer)
            if batch:
                self.transport.write(b"".join(encode(frames_kind, f) for f in frames))
            else:
                for frame in frames:
                    self.transport.write(encode(frames_kind, frame))

    return loop.create_server(Splitter, "127.0.0.1", 0)


def serve(kind: str, frames_kind: str, loop_name: str) -> None:
    if loop_name == "ferroloop":
        import ferroloop

        loop = ferroloop.new_event_loop()
    elif loop_name == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(make_server(kind, frames_kind, loop))
    host, port = server.sockets[0].getsockname()[:2]
    print(f"ready {host}:{port}", flush=True)
    loop.run_forever()


# -- runner -----------------------------------------------------------------------------

SERVERS = [
    ("chunk", "ferroloop"),
    ("readuntil", "uvloop"),
    ("splitter", "uvloop"),
    ("splitter-batch", "uvloop"),
    # The same ChunkProtocol on uvloop: its data_received feeds the Rust framer.
    ("chunk", "uvloop"),
]


def loadgen_path() -> Path:
    subprocess.run(
        ["cargo", "build", "--release", "-q", "-p", "ferroloop-loadgen"], cwd=ROOT, check=True
    )
    target = os.environ.get("CARGO_TARGET_DIR", ROOT / "target")
    return Path(target) / "release" / "loadgen"


def start(kind, loop_name, frames_kind, python):
    proc = subprocess.Popen(
        [python, __file__, "--serve", kind, "--frames", frames_kind, "--loop", loop_name],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {0}),
    )
    line = proc.stdout.readline().split()
    if line[:1] != ["ready"]:
        stop(proc)
        raise RuntimeError(f"{kind} on {loop_name} did not start: {line}")
    return proc, line[1]


def stop(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def measure(loadgen, addr, pid, scenario, args):
    frames_kind, conns, pipeline, size = scenario
    cmd = [
        str(loadgen),
        "--addr",
        addr,
        "-c",
        str(conns),
        "-s",
        str(size),
        "--frames",
        frames_kind,
        "--pipeline",
        str(pipeline),
        "-d",
        str(args.duration),
        "-w",
        str(args.warmup),
        "--server-pid",
        str(pid),
    ]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=args.duration + args.warmup + 30,
        preexec_fn=lambda: os.sched_setaffinity(0, {1}),
    )
    result = json.loads(out.stdout)
    if not result["ok"]:
        raise RuntimeError(f"loadgen failed: {result.get('error_samples')}")
    frames = result["requests"] * pipeline
    return {
        "rps": result["rps"] * pipeline,
        "cpu_us": result["server_cpu_s"] / frames * 1e6 if frames else float("nan"),
    }


def scenarios(args):
    for frames_kind in args.frames.split(","):
        for conns in (10, 100):
            yield (frames_kind, conns, args.pipeline, args.size)


def spread(values):
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med else 0.0


def run(args) -> None:
    loadgen = loadgen_path()
    results = {}
    for scenario in scenarios(args):
        for rep in range(args.reps):
            order = SERVERS[rep % len(SERVERS) :] + SERVERS[: rep % len(SERVERS)]
            for kind, loop_name in order:
                proc, addr = start(kind, loop_name, scenario[0], args.python)
                try:
                    got = measure(loadgen, addr, proc.pid, scenario, args)
                finally:
                    stop(proc)
                results.setdefault((scenario, (kind, loop_name)), []).append(got)
                print(
                    f"  {scenario} rep {rep} {kind:15} {loop_name:9} {got['rps']:10.0f} frames/s "
                    f"{got['cpu_us']:6.2f} us/frame",
                    file=sys.stderr,
                    flush=True,
                )
    report(results, args)


def report(results, args) -> None:
    names = SERVERS
    first = SERVERS[0]
    head = ["scenario"] + [f"{n} ({loop})" for n, loop in SERVERS]
    rows = []
    for scenario in scenarios(args):
        frames_kind, conns, pipeline, size = scenario
        label = f"{frames_kind} {size}B c{conns} x{pipeline}"
        rps = {n: statistics.median(r["rps"] for r in results[(scenario, n)]) for n in names}
        cpu = {n: statistics.median(r["cpu_us"] for r in results[(scenario, n)]) for n in names}
        widest = max(spread([r["rps"] for r in results[(scenario, n)]]) for n in names)
        rps_row = [f"{label} frames/s (spread {widest:.0%})"]
        cpu_row = [f"{label} server CPU us/frame"]
        for n in names:
            rps_row.append(f"{rps[n]:,.0f} ({rps[first] / rps[n]:.2f}x)")
            cpu_row.append(f"{cpu[n]:.2f} ({cpu[n] / cpu[first]:.2f}x)")
        rows += [rps_row, cpu_row]
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        for row in [head, *rows]:
            print("  ".join(f"{cell:>28}" for cell in row))
    print(
        "(x) = ChunkProtocol on ferroloop's advantage: its frames/s over the column's, the "
        "column's CPU per frame over its"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--serve", choices=["chunk", "readuntil", "splitter", "splitter-batch"])
    p.add_argument("--loop", default="ferroloop")
    p.add_argument("--frames", default="lines,len4")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--pipeline", type=int, default=8)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"))
    args = p.parse_args()
    if args.serve:
        serve(args.serve, args.frames, args.loop)
    else:
        started = time.monotonic()
        run(args)
        print(f"({time.monotonic() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
