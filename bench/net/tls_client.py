"""TLS load client for ferroloop's network benchmarks: the loadgen's counterpart over TLS.

    python bench/net/tls_client.py --mode echo|http --addr 127.0.0.1:PORT --ca CA.pem \\
        [-c N] [-s SIZE] [-d S] [-w S] [--stall S] [--server-pid PID]

The Rust load generator has no TLS library, so TLS is driven from here: the standard
library's ``ssl`` module on plain blocking sockets, one thread per connection, each with
one request in flight (closed loop). The client is the same for every loop, so the ratios
between loops hold even where the client is the limit (``client_cpu_s`` says when).

* ``echo``: sends SIZE bytes that differ with every request (the connection and request
  numbers in the first 12 bytes, over a window of a pseudo-random pattern), reads SIZE
  bytes back and compares them.
* ``http``: ``GET /SIZE HTTP/1.1`` on a keep-alive connection; the reply must be ``200``
  with ``Content-Length: SIZE`` and a body of SIZE ``x`` bytes, and nothing after it.

All connections connect and finish the TLS handshake before the warm-up starts. Replies
completed in the measured window are counted. A reply outstanding for ``--stall`` seconds,
wrong bytes, a closed connection or any other error ends that connection and counts as an
error. Prints one JSON object with the same fields as ``loadgen``; exit status 0 for a
clean run, 2 when there were errors or no replies, 1 for a failure to connect.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import resource
import socket
import ssl
import statistics
import struct
import sys
import threading
import time

OFFSETS = 251  # distinct pattern offsets, as in bench/loadgen/src/payload.rs
MAX_HEAD = 64 * 1024
MAX_SAMPLES = 5


def parse_size(text: str) -> int:
    lower = text.strip().lower()
    digits = len(lower) - len(lower.lstrip("0123456789"))
    number, unit = lower[:digits], lower[digits:]
    units = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1 << 20, "mib": 1 << 20}
    if not number or unit not in units:
        raise argparse.ArgumentTypeError(f"bad size {text!r}")
    size = int(number) * units[unit]
    if not 0 < size <= 64 << 20:
        raise argparse.ArgumentTypeError(f"size {text!r} must be 1 byte .. 64 MiB")
    return size


def loopback_addr(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not ipaddress.ip_address(host).is_loopback:
        raise argparse.ArgumentTypeError(f"--addr {text!r}: expected a loopback HOST:PORT")
    return host, int(port)


def cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Worker:
    """One connection and the thread that drives it."""

    def __init__(self, ident: int, sock: ssl.SSLSocket, args, pattern: bytes, window):
        self.id = ident
        self.sock = sock
        self.args = args
        self.pattern = pattern
        self.window_start, self.window_end = window
        self.requests = 0
        self.bytes = 0
        self.latencies: list[int] = []
        self.errors: list[str] = []

    def payload(self, counter: int) -> bytes:
        size = self.args.size
        offset = (counter * 7 + self.id) % OFFSETS
        header = struct.pack("<IQ", self.id, counter & 0xFFFF_FFFF_FFFF_FFFF)[:size]
        return header + self.pattern[offset + len(header) : offset + size]

    def recv_exact(self, view: memoryview, what: str) -> None:
        got = 0
        while got < len(view):
            n = self.sock.recv_into(view[got:])
            if n == 0:
                raise ConnectionError(f"closed by the server ({got} of {len(view)} {what} bytes)")
            got += n

    def run(self) -> None:
        try:
            if self.args.mode == "echo":
                self.run_echo()
            else:
                self.run_http()
        except TimeoutError:
            self.errors.append(
                f"connection {self.id}: no complete reply after {self.args.stall:.1f} s"
            )
        except Exception as exc:  # noqa: BLE001 - every failure is a counted error
            self.errors.append(f"connection {self.id}: {type(exc).__name__}: {exc}")
        finally:
            try:
                self.sock.close()
            except OSError:
                pass

    def count(self, started: int, nbytes: int) -> bool:
        """Records a completed reply; returns False once the window has ended."""
        now = time.perf_counter_ns()
        if self.window_start <= now < self.window_end:
            self.requests += 1
            self.bytes += nbytes
            self.latencies.append(now - started)
        return now < self.window_end

    def run_echo(self) -> None:
        size = self.args.size
        reply = bytearray(size)
        view = memoryview(reply)
        counter = 0
        while True:
            out = self.payload(counter)
            started = time.perf_counter_ns()
            self.sock.sendall(out)
            self.recv_exact(view, "reply")
            if reply != out:
                first = next(i for i in range(size) if reply[i] != out[i])
                raise ValueError(
                    f"request {counter}: echoed bytes differ at offset {first} of {size}"
                )
            if not self.count(started, size):
                return
            counter += 1

    def run_http(self) -> None:
        size = self.args.size
        request = f"GET /{size} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        body_expected = b"x" * size
        pending = bytearray()
        while True:
            started = time.perf_counter_ns()
            self.sock.sendall(request)
            while (end := pending.find(b"\r\n\r\n")) < 0:
                if len(pending) > MAX_HEAD:
                    raise ValueError("response head too long")
                chunk = self.sock.recv(256 * 1024)
                if not chunk:
                    raise ConnectionError("closed by the server in a response head")
                pending += chunk
            head = bytes(pending[:end]).decode("latin-1").split("\r\n")
            if not head[0].startswith("HTTP/1.1 200 "):
                raise ValueError(f"status line {head[0]!r}")
            length = None
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if length != size:
                raise ValueError(f"Content-Length {length} for a {size}-byte request")
            body = bytearray(pending[end + 4 :])
            if len(body) > size:
                raise ValueError("bytes after the response body")
            missing = size - len(body)
            if missing:
                rest = bytearray(missing)
                self.recv_exact(memoryview(rest), "body")
                body += rest
            if body != body_expected:
                raise ValueError("wrong response body")
            pending.clear()
            if not self.count(started, end + 4 + size):
                return


def percentile(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return 0.0
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1000.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=["echo", "http"], default="echo")
    p.add_argument("--addr", type=loopback_addr, required=True)
    p.add_argument("--ca", required=True, help="PEM file of the CA the server's cert chains to")
    p.add_argument("-c", "--connections", type=int, default=10)
    p.add_argument("-s", "--size", type=parse_size, default=1024)
    p.add_argument("-d", "--duration", type=float, default=5.0)
    p.add_argument("-w", "--warmup", type=float, default=1.0)
    p.add_argument("--stall", type=float, default=5.0)
    p.add_argument("--server-pid", type=int)
    args = p.parse_args()
    if not 1 <= args.connections <= 1000 or args.duration <= 0 or args.stall <= 0:
        p.error("-c must be 1..1000, --duration and --stall above 0")
    host, port = args.addr
    target = f"{host}:{port}"

    socks = []
    try:
        context = ssl.create_default_context(cafile=args.ca)
        for _ in range(args.connections):
            raw = socket.create_connection((host, port), timeout=5)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = context.wrap_socket(raw, server_hostname=host)
            sock.settimeout(args.stall)
            socks.append(sock)
    except (OSError, ssl.SSLError) as exc:
        message = f"connect {target}: {type(exc).__name__}: {exc}"
        print(f"tls_client: {message}", file=sys.stderr)
        print(json.dumps({"ok": False, "target": target, "fatal": message}))
        for sock in socks:
            sock.close()
        return 1

    pattern = random.Random(0x9E3779B9).randbytes(args.size + OFFSETS)
    start = time.perf_counter_ns()
    window_start = start + int(args.warmup * 1e9)
    window_end = window_start + int(args.duration * 1e9)
    workers = [
        Worker(i, sock, args, pattern, (window_start, window_end)) for i, sock in enumerate(socks)
    ]
    threads = [threading.Thread(target=w.run, name=f"tls-{w.id}", daemon=True) for w in workers]
    for thread in threads:
        thread.start()

    def sleep_until(deadline_ns: int) -> None:
        delay = (deadline_ns - time.perf_counter_ns()) / 1e9
        if delay > 0:
            time.sleep(delay)

    sleep_until(window_start)
    client0, server0 = own_cpu_seconds(), cpu_seconds(args.server_pid) if args.server_pid else None
    sleep_until(window_end)
    client1, server1 = own_cpu_seconds(), cpu_seconds(args.server_pid) if args.server_pid else None
    for thread in threads:
        thread.join(args.stall + 5)
    stuck = sum(thread.is_alive() for thread in threads)

    requests = sum(w.requests for w in workers)
    nbytes = sum(w.bytes for w in workers)
    latencies = sorted(ns for w in workers for ns in w.latencies)
    errors = [e for w in workers for e in w.errors]
    if stuck:
        errors.append(f"{stuck} connection thread(s) still blocked after the run")
    ok = not errors and requests > 0
    result = {
        "ok": ok,
        "mode": f"tls-{args.mode}",
        "target": target,
        "connections": args.connections,
        "threads": args.connections,
        "size": args.size,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "requests": requests,
        "rps": round(requests / args.duration, 3),
        "mib_s": round(nbytes / args.duration / (1 << 20), 3),
        "latency_us": {
            "mean": round(statistics.fmean(latencies) / 1000, 3) if latencies else 0.0,
            "p50": percentile(latencies, 0.50),
            "p90": percentile(latencies, 0.90),
            "p99": percentile(latencies, 0.99),
            "p999": percentile(latencies, 0.999),
            "max": latencies[-1] / 1000 if latencies else 0.0,
        },
        "errors": len(errors),
        "error_samples": errors[:MAX_SAMPLES],
        "client_cpu_s": round(client1 - client0, 3),
        "server_cpu_s": (
            round(server1 - server0, 3) if server0 is not None and server1 is not None else None
        ),
    }
    print(json.dumps(result), flush=True)
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
