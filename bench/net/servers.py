"""Benchmark servers for ferroloop's network benchmarks, one per process.

    python bench/net/servers.py --loop asyncio|uvloop|ferroloop|MODULE:FACTORY \\
        --kind proto|bufproto|streams|sockets|http|udp --addr 127.0.0.1:PORT \
        [--tls [--ca-out FILE]]

Prints ``ready HOST:PORT LOOPCLASS`` on stdout once it listens (PORT 0 picks a free port and
the line names the chosen one), then serves until killed. With ``--tls`` the line ends with
`` ca=FILE``: the PEM file of the CA that signed the server's certificate. A failure to
start (a loop that cannot be imported, a method that raises NotImplementedError) is printed
to stderr as ``error: ...`` and the process exits with status 3.

Kinds:

* ``proto``: ``asyncio.Protocol``; ``data_received`` calls ``transport.write(data)``.
* ``bufproto``: ``asyncio.BufferedProtocol`` with a 256 KiB buffer; ``buffer_updated``
  writes a copy of the new bytes.
* ``streams``: ``asyncio.start_server``; per client ``reader.read(256 KiB)``,
  ``writer.write``, ``await writer.drain()``.
* ``sockets``: ``loop.sock_accept`` / ``sock_recv`` / ``sock_sendall``, one task per client.
* ``http``: HTTP/1.1 keep-alive over ``asyncio.Protocol`` with a small hand-written parser
  (or ``httptools`` with ``--parser httptools``, when installed). Every request runs in its
  own Task, as ASGI servers do. ``GET /N`` answers ``N`` bytes (1024 when the path has no
  number, at most 16 MiB).
* ``udp``: ``asyncio.DatagramProtocol`` from ``loop.create_datagram_endpoint``;
  ``datagram_received`` sends the datagram back to its sender with ``sendto``. The socket's
  receive buffer is raised to 4 MiB (``SO_RCVBUF``, up to ``net.core.rmem_max``).

``--tls`` (``proto`` and ``http`` only): the server is ``create_server(..., ssl=CTX)``
with a certificate for 127.0.0.1 and ::1 from a throw-away CA made at start with
``trustme`` (which must be installed). The CA is written to ``--ca-out FILE``, or to a
temporary file removed at a normal exit.

Only loopback addresses are accepted. Uses the standard library only (and ``trustme`` for
``--tls``).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import importlib
import ipaddress
import os
import socket
import sys
import tempfile
import traceback

READ_SIZE = 256 * 1024
MAX_BODY = 16 * 1024 * 1024
MAX_HEAD = 64 * 1024
UDP_RCVBUF = 4 * 1024 * 1024  # capped by net.core.rmem_max


def load_loop_factory(spec: str):
    """Returns a zero-argument callable that makes a new event loop."""
    if spec == "asyncio":
        return asyncio.new_event_loop
    if spec == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    if spec == "ferroloop":
        import ferroloop

        return ferroloop.new_event_loop
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--loop {spec!r}: expected asyncio, uvloop, ferroloop or MODULE:FACTORY")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def nodelay(sock: socket.socket | None) -> None:
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# -- echo --------------------------------------------------------------------------------


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        nodelay(transport.get_extra_info("socket"))

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        return False  # close the transport


class UdpEchoProtocol(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)

    def error_received(self, exc):
        # ICMP errors (a client socket already closed) are not server errors.
        pass


class EchoBufferedProtocol(asyncio.BufferedProtocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = bytearray(READ_SIZE)
        self.view = memoryview(self.buffer)
        nodelay(transport.get_extra_info("socket"))

    def get_buffer(self, sizehint):
        return self.view

    def buffer_updated(self, nbytes):
        # The buffer is reused by the next read: the transport must get its own copy.
        self.transport.write(bytes(self.view[:nbytes]))

    def eof_received(self):
        return False


async def echo_stream_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    nodelay(writer.get_extra_info("socket"))
    try:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def echo_socket_client(loop: asyncio.AbstractEventLoop, conn: socket.socket):
    try:
        while True:
            data = await loop.sock_recv(conn, READ_SIZE)
            if not data:
                break
            await loop.sock_sendall(conn, data)
    except (ConnectionError, OSError):
        pass
    finally:
        conn.close()


async def serve_sockets(loop: asyncio.AbstractEventLoop, host: str, port: int):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1024)
    listener.setblocking(False)
    tasks: set[asyncio.Task] = set()

    async def accept_forever():
        while True:
            conn, _ = await loop.sock_accept(listener)
            conn.setblocking(False)
            nodelay(conn)
            task = loop.create_task(echo_socket_client(loop, conn))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    # The first accept is started before announcing readiness, so a loop that does not
    # implement sock_accept fails here rather than after "ready".
    acceptor = loop.create_task(accept_forever())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    if acceptor.done():
        acceptor.result()  # raises
    return listener.getsockname(), acceptor


# -- http --------------------------------------------------------------------------------

_bodies: dict[int, bytes] = {}


def response_for(path: bytes) -> bytes:
    digits = path.lstrip(b"/").split(b"?", 1)[0]
    size = int(digits) if digits.isdigit() else 1024
    size = min(size, MAX_BODY)
    cached = _bodies.get(size)
    if cached is None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % size
        cached = head + b"x" * size
        if len(_bodies) < 64:
            _bodies[size] = cached
    return cached


BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive with a minimal parser: request line, Content-Length, Connection."""

    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self.buf = bytearray()
        self.tasks: set[asyncio.Task] = set()

    def connection_made(self, transport):
        self.transport = transport
        nodelay(transport.get_extra_info("socket"))

    def connection_lost(self, exc):
        for task in self.tasks:
            task.cancel()

    def data_received(self, data):
        buf = self.buf
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self.fail()
                return
            head = bytes(buf[:end])
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ")
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
                self.fail()
                return
            length = 0
            keep_alive = parts[2] == b"HTTP/1.1"
            for line in lines[1:]:
                name, sep, value = line.partition(b":")
                if not sep:
                    self.fail()
                    return
                name = name.strip().lower()
                if name == b"content-length":
                    try:
                        length = int(value.strip())
                    except ValueError:
                        self.fail()
                        return
                elif name == b"connection":
                    token = value.strip().lower()
                    keep_alive = token == b"keep-alive" or (keep_alive and token != b"close")
            total = end + 4 + length
            if len(buf) < total:
                return  # wait for the request body
            del buf[:total]
            self.dispatch(parts[1], keep_alive)

    def dispatch(self, path: bytes, keep_alive: bool):
        task = self.loop.create_task(self.handle(path, keep_alive))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def handle(self, path: bytes, keep_alive: bool):
        # No awaits: tasks run in creation order, so pipelined responses stay in order.
        if self.transport.is_closing():
            return
        self.transport.write(response_for(path))
        if not keep_alive:
            self.transport.close()

    def fail(self):
        self.transport.write(BAD_REQUEST)
        self.transport.close()


class HttptoolsProtocol(HttpProtocol):
    """The same server with the ``httptools`` parser (optional dependency)."""

    def __init__(self):
        super().__init__()
        import httptools

        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.error = httptools.HttpParserError

    def on_url(self, url):
        self.url += url

    def on_message_complete(self):
        self.dispatch(self.url, self.parser.should_keep_alive())
        self.url = b""

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except self.error:
            self.fail()


# -- main --------------------------------------------------------------------------------


def parse_addr(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError(f"--addr {text!r}: expected HOST:PORT")
    host = host.strip("[]") or "127.0.0.1"
    if host == "localhost":
        host = "127.0.0.1"
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"--addr {text!r}: only loopback addresses are allowed")
    return host, int(port)


def make_tls_context(ca_out: str | None) -> tuple:
    """A server SSLContext with a fresh trustme certificate; returns (context, CA path)."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "::1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    if ca_out:
        path = ca_out
    else:
        fd, path = tempfile.mkstemp(prefix="ferroloop-bench-ca-", suffix=".pem")
        os.close(fd)
        atexit.register(lambda: os.path.exists(path) and os.unlink(path))
    ca.cert_pem.write_to_path(path)
    return context, path


async def start(kind: str, host: str, port: int, parser: str, ssl_context=None):
    loop = asyncio.get_running_loop()
    if kind == "udp":
        transport, _protocol = await loop.create_datagram_endpoint(
            UdpEchoProtocol, local_addr=(host, port)
        )
        # With 100 clients x 1 KiB in flight the default receive buffer (~208 KiB, ~3 KiB
        # of it per queued datagram) overflows and the kernel drops datagrams.
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        return transport.get_extra_info("sockname"), transport
    if kind == "sockets":
        return await serve_sockets(loop, host, port)
    if kind == "streams":
        server = await asyncio.start_server(
            echo_stream_client, host, port, backlog=1024, limit=READ_SIZE
        )
    else:
        if kind == "proto":
            factory = EchoProtocol
        elif kind == "bufproto":
            factory = EchoBufferedProtocol
        elif parser == "httptools":
            factory = HttptoolsProtocol
        else:
            factory = HttpProtocol
        server = await loop.create_server(factory, host, port, backlog=1024, ssl=ssl_context)
    return server.sockets[0].getsockname(), server


def report_exception(loop, context):
    message = context.get("message", "")
    exc = context.get("exception")
    if isinstance(exc, (ConnectionError, BrokenPipeError)):
        return  # a client going away mid-run is not a server error
    text = f"loop error: {message}"
    if exc is not None:
        text += ": " + "".join(traceback.format_exception_only(type(exc), exc)).strip()
    print(text, file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", default="asyncio")
    parser.add_argument(
        "--kind",
        required=True,
        choices=["proto", "bufproto", "streams", "sockets", "http", "udp"],
    )
    parser.add_argument("--tls", action="store_true", help="TLS (proto and http kinds)")
    parser.add_argument("--ca-out", help="with --tls: write the CA certificate (PEM) here")
    parser.add_argument("--addr", default="127.0.0.1:0")
    parser.add_argument("--parser", choices=["builtin", "httptools"], default="builtin")
    args = parser.parse_args()

    try:
        host, port = parse_addr(args.addr)
        if args.parser == "httptools":
            import httptools  # noqa: F401  (fail early and clearly)
        if args.tls and args.kind not in ("proto", "http"):
            raise ValueError(f"--tls works with the proto and http kinds, not {args.kind}")
        ssl_context, ca_path = make_tls_context(args.ca_out) if args.tls else (None, None)
        loop = load_loop_factory(args.loop)()
    except Exception as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 3
    asyncio.set_event_loop(loop)
    loop.set_exception_handler(report_exception)
    try:
        sockname, _keep = loop.run_until_complete(
            start(args.kind, host, port, args.parser, ssl_context)
        )
    except BaseException as exc:
        traceback.print_exc(file=sys.stderr)
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" (raised in {frames[-1].name})" if frames else ""
        print(f"error: {text or type(exc).__name__}{where}", file=sys.stderr, flush=True)
        return 3
    ready = f"ready {sockname[0]}:{sockname[1]} {type(loop).__module__}.{type(loop).__name__}"
    if ca_path:
        ready += f" ca={ca_path}"
    print(ready)
    sys.stdout.flush()
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
