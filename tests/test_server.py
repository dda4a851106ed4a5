"""create_server, create_unix_server and the Server object they return."""

from __future__ import annotations

import asyncio
import contextvars
import errno
import os
import socket
import sys
import tempfile
import threading

import pytest
from support import PATIENCE

# asyncio's wait_closed() waits for live connections from Python 3.12.1 on.
ASYNCIO_WAIT_CLOSED_WAITS = sys.version_info >= (3, 12, 1)
# asyncio has cleanup_socket, close_clients and abort_clients from Python 3.13 on.
ASYNCIO_313 = sys.version_info >= (3, 13)


class Echo(asyncio.Protocol):
    """Server side: echoes everything back and records the transport."""

    instances: list[Echo] = []

    def connection_made(self, transport):
        self.transport = transport
        Echo.instances.append(self)

    def data_received(self, data):
        self.transport.write(data)


@pytest.fixture(autouse=True)
def forget_echo_instances():
    Echo.instances = []
    yield
    Echo.instances = []


def ipv6_loopback_available():
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


async def round_trip(loop, address, payload=b"ping"):
    """Connect through the loop to TCP `address`, send, read the echo back, close."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address[:2]), PATIENCE)
    writer.write(payload)
    data = await asyncio.wait_for(reader.readexactly(len(payload)), PATIENCE)
    writer.close()
    await writer.wait_closed()
    return data


async def unix_round_trip(path, payload=b"ping"):
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), PATIENCE)
    writer.write(payload)
    data = await asyncio.wait_for(reader.readexactly(len(payload)), PATIENCE)
    writer.close()
    await writer.wait_closed()
    return data


def connect_refused(address, family=socket.AF_INET):
    """True if a blocking connect to `address` is refused."""
    with socket.socket(family) as sock:
        sock.settimeout(PATIENCE)
        try:
            sock.connect(address)
        except ConnectionRefusedError:
            return True
        except FileNotFoundError:
            return True
        return False


def test_create_server_port_zero_echo(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        assert server.get_loop() is loop
        assert server.is_serving()
        [listener] = server.sockets
        address = listener.getsockname()
        assert address[0] == "127.0.0.1" and address[1] > 0
        assert await round_trip(loop, address) == b"ping"
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_create_server_host_list(loop):
    async def main():
        hosts = ["127.0.0.1", "127.0.0.1"]
        if ipv6_loopback_available():
            hosts.append("::1")
        server = await loop.create_server(Echo, hosts, 0)
        families = sorted(s.family for s in server.sockets)
        # Duplicate hosts are bound once.
        expected = [socket.AF_INET] + ([socket.AF_INET6] if "::1" in hosts else [])
        assert families == sorted(expected)
        for listener in server.sockets:
            if listener.family == socket.AF_INET6:
                # One socket per family: the IPv6 socket does not take IPv4 too.
                assert listener.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
            assert await round_trip(loop, listener.getsockname()) == b"ping"
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_create_server_with_sock(loop):
    async def main():
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = await loop.create_server(Echo, sock=sock)
        [listener] = server.sockets
        assert listener.fileno() == sock.fileno()
        assert await round_trip(loop, sock.getsockname()) == b"ping"
        assert sock.fileno() >= 0  # still ours until the server closes
        server.close()
        assert sock.fileno() == -1  # Server.close() closes the listening sockets
        await server.wait_closed()

    loop.run_until_complete(main())


def test_close_closes_listening_socket(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        server.close()
        assert not server.is_serving()
        assert server.sockets == ()
        await server.wait_closed()
        assert connect_refused(address)
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(asyncio.Protocol, *address)
        server.close()  # closing twice is harmless

    loop.run_until_complete(main())


def test_async_with_closes(loop):
    async def main():
        async with await loop.create_server(Echo, "127.0.0.1", 0) as server:
            address = server.sockets[0].getsockname()
            assert await round_trip(loop, address) == b"ping"
        assert not server.is_serving()
        assert connect_refused(address)

    loop.run_until_complete(main())


def test_repr(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        assert repr(server) == f"<{type(server).__name__} sockets={server.sockets!r}>"
        server.close()
        await server.wait_closed()
        assert repr(server) == f"<{type(server).__name__} sockets=()>"

    loop.run_until_complete(main())


def test_wait_closed_waits_for_live_connection(loop, loop_kind):
    if loop_kind == "asyncio" and not ASYNCIO_WAIT_CLOSED_WAITS:
        pytest.skip("asyncio's wait_closed() waits for connections only from Python 3.12.1")

    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        writer.write(b"x")
        assert await asyncio.wait_for(reader.readexactly(1), PATIENCE) == b"x"
        server.close()
        waiter = loop.create_task(server.wait_closed())
        await asyncio.sleep(0.05)
        assert not waiter.done()  # the accepted connection is still alive
        writer.close()
        await writer.wait_closed()
        await asyncio.wait_for(waiter, PATIENCE)

    loop.run_until_complete(main())


def test_wait_closed_before_close_waits(loop, loop_kind):
    if loop_kind == "asyncio" and not ASYNCIO_WAIT_CLOSED_WAITS:
        pytest.skip("asyncio's wait_closed() waits for close() only from Python 3.12.1")

    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        waiter = loop.create_task(server.wait_closed())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        server.close()
        await asyncio.wait_for(waiter, PATIENCE)

    loop.run_until_complete(main())


def test_serve_forever_cancelled_by_close(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0, start_serving=False)
        task = loop.create_task(server.serve_forever())
        await asyncio.sleep(0.01)
        assert server.is_serving()
        assert await round_trip(loop, server.sockets[0].getsockname()) == b"ping"
        with pytest.raises(RuntimeError, match="is already being awaited on serve_forever"):
            await server.serve_forever()
        server.close()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(RuntimeError, match=r"^server <.*> is closed$"):
            await server.serve_forever()

    loop.run_until_complete(main())


def test_serve_forever_cancelled_closes_server(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        task = loop.create_task(server.serve_forever())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not server.is_serving()
        assert connect_refused(address)

    loop.run_until_complete(main())


def test_start_serving_false(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0, start_serving=False)
        assert not server.is_serving()
        address = server.sockets[0].getsockname()
        assert connect_refused(address)  # bound, not listening yet
        await server.start_serving()
        assert server.is_serving()
        await server.start_serving()  # idempotent
        assert await round_trip(loop, address) == b"ping"
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_address_in_use(loop):
    async def main():
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with pytest.raises(OSError) as info:
                await loop.create_server(Echo, "127.0.0.1", port)
        assert info.value.errno == errno.EADDRINUSE
        assert str(info.value).startswith(
            f"[Errno {errno.EADDRINUSE}] error while attempting to bind on address "
            f"('127.0.0.1', {port}): "
        )

    loop.run_until_complete(main())


def test_reuse_port(loop):
    if not hasattr(socket, "SO_REUSEPORT"):
        pytest.skip("no SO_REUSEPORT")

    async def main():
        first = await loop.create_server(Echo, "127.0.0.1", 0, reuse_port=True)
        port = first.sockets[0].getsockname()[1]
        assert first.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        second = await loop.create_server(Echo, "127.0.0.1", port, reuse_port=True)
        first.close()
        second.close()
        await first.wait_closed()
        await second.wait_closed()

    loop.run_until_complete(main())


def test_reuse_address_is_default(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        assert server.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_unix_server_echo_and_stale_socket_replaced(loop):
    async def main():
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "sock")
            stale = socket.socket(socket.AF_UNIX)
            stale.bind(path)
            stale.close()  # leaves the socket file behind
            server = await loop.create_unix_server(Echo, path)
            assert server.sockets[0].getsockname() == path
            assert await unix_round_trip(path) == b"ping"
            server.close()
            await server.wait_closed()

    loop.run_until_complete(main())


def test_unix_server_existing_regular_file(loop):
    async def main():
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "file")
            with open(path, "w"):
                pass
            with pytest.raises(OSError) as info:
                await loop.create_unix_server(Echo, path)
            assert info.value.errno == errno.EADDRINUSE
            assert (
                str(info.value) == f"[Errno {errno.EADDRINUSE}] Address {path!r} is already in use"
            )

    loop.run_until_complete(main())


@pytest.mark.parametrize("cleanup_socket", [False, True])
def test_unix_server_filesystem_calls_are_off_the_loop_thread(
    loop, loop_kind, monkeypatch, cleanup_socket
):
    """create_unix_server's stale-socket check (os.stat, os.remove) and the stat for
    cleanup_socket: asyncio makes them on the loop's thread, ferroloop on a thread of its
    own (aiohttp's suite, with blockbuster: "Blocking call to os.stat"). The stale socket
    is still replaced, and the server works."""
    loop_thread = threading.get_ident()
    on_loop_thread = []

    def recording(name, real):
        def call(*args, **kwargs):
            if threading.get_ident() == loop_thread:
                on_loop_thread.append(name)
            return real(*args, **kwargs)

        return call

    async def main():
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "sock")
            stale = socket.socket(socket.AF_UNIX)
            stale.bind(path)
            stale.close()
            for name in ("stat", "remove", "unlink"):
                monkeypatch.setattr(os, name, recording(name, getattr(os, name)))
            takes_cleanup = loop_kind == "ferroloop" or sys.version_info >= (3, 13)
            kwargs = {"cleanup_socket": cleanup_socket} if takes_cleanup else {}
            server = await loop.create_unix_server(Echo, path, **kwargs)
            monkeypatch.undo()
            assert await unix_round_trip(path) == b"ping"
            server.close()
            await server.wait_closed()

    loop.run_until_complete(main())
    if loop_kind == "asyncio":
        assert "stat" in on_loop_thread
    else:
        assert on_loop_thread == []


def test_unix_server_cleanup_socket(loop, loop_kind):
    if loop_kind == "asyncio" and not ASYNCIO_313:
        pytest.skip("asyncio has cleanup_socket from Python 3.13")

    async def main():
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "sock")
            server = await loop.create_unix_server(Echo, path, cleanup_socket=True)
            assert os.path.exists(path)
            server.close()
            await server.wait_closed()
            assert not os.path.exists(path)

            kept = await loop.create_unix_server(Echo, path, cleanup_socket=False)
            kept.close()
            await kept.wait_closed()
            assert os.path.exists(path)
            os.unlink(path)

            # A file that replaced ours is not removed.
            replaced = await loop.create_unix_server(Echo, path, cleanup_socket=True)
            os.unlink(path)
            with open(path, "w"):
                pass
            replaced.close()
            await replaced.wait_closed()
            assert os.path.isfile(path)

    loop.run_until_complete(main())


def test_unix_server_socket_file_default_follows_the_python_version(loop):
    # Python 3.13 removes the socket file on close by default; older versions keep it.
    async def main():
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "sock")
            server = await loop.create_unix_server(Echo, path)
            server.close()
            await server.wait_closed()
            assert os.path.exists(path) == (not ASYNCIO_313)

    loop.run_until_complete(main())


def test_unix_server_with_sock(loop):
    async def main():
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "sock")
            sock = socket.socket(socket.AF_UNIX)
            sock.bind(path)
            server = await loop.create_unix_server(Echo, sock=sock)
            assert await unix_round_trip(path) == b"ping"
            server.close()
            await server.wait_closed()
            assert sock.fileno() == -1

    loop.run_until_complete(main())


def test_protocol_factory_error_is_reported_and_connection_closed(loop, loop_kind, exc_handler):
    if loop_kind == "asyncio":
        pytest.skip("asyncio leaves the socket to the GC")
    # Reported in debug mode only, as asyncio does (test_bad_input.py runs both loops).
    loop.set_debug(True)

    def broken_factory():
        raise ZeroDivisionError("no protocol today")

    async def main():
        server = await loop.create_server(broken_factory, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        assert await asyncio.wait_for(reader.read(), PATIENCE) == b""  # closed at once
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())
    [context] = exc_handler.pop()
    assert context["message"] == "Error on transport creation for incoming connection"
    assert isinstance(context["exception"], ZeroDivisionError)


class FlakyListener(socket.socket):
    """A listening socket whose first accept() fails with EMFILE."""

    failed = False

    def accept(self):
        if not self.failed:
            self.failed = True
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return super().accept()


def test_accept_out_of_fds_is_reported_and_accepting_goes_on(loop, exc_handler):
    async def main():
        listener = FlakyListener()
        listener.bind(("127.0.0.1", 0))
        server = await loop.create_server(Echo, sock=listener)
        # The first accept fails; the connection is accepted later (asyncio retries at
        # once in the same wake-up, ferroloop after pausing accepting for one second).
        echoed = await asyncio.wait_for(round_trip(loop, listener.getsockname()), PATIENCE + 1)
        assert echoed == b"ping"
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())
    [context] = exc_handler.pop()
    assert context["message"] == "socket.accept() out of system resource"
    assert context["exception"].errno == errno.EMFILE


def _scaffold_transport():
    import ferroloop._stream

    return hasattr(ferroloop._stream, "selector_events")


def test_close_clients_and_abort_clients(loop, loop_kind):
    if loop_kind == "asyncio" and not ASYNCIO_313:
        pytest.skip("asyncio has close_clients/abort_clients from Python 3.13")
    if loop_kind == "ferroloop" and not ASYNCIO_313 and _scaffold_transport():
        pytest.skip("the temporary scaffold transport does not pass itself to _attach")

    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        readers = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection(*address)
            writer.write(b"x")
            assert await asyncio.wait_for(reader.readexactly(1), PATIENCE) == b"x"
            readers.append((reader, writer))
        server.close()
        waiter = loop.create_task(server.wait_closed())
        server.close_clients()
        for reader, writer in readers:
            assert await asyncio.wait_for(reader.read(), PATIENCE) == b""
            writer.close()
            await writer.wait_closed()
        await asyncio.wait_for(waiter, PATIENCE)
        server.abort_clients()  # nothing left: harmless

    loop.run_until_complete(main())


# -- argument checks: same exception type and message as asyncio ----------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc_type", "message"),
    [
        ({"host": "127.0.0.1", "port": 0, "ssl": True}, TypeError, "ssl argument must be an"),
        (
            {"host": "127.0.0.1", "port": 0, "ssl_handshake_timeout": 1},
            ValueError,
            "ssl_handshake_timeout is only meaningful with ssl",
        ),
        pytest.param(
            {"host": "127.0.0.1", "port": 0, "ssl_shutdown_timeout": 1},
            ValueError,
            "ssl_shutdown_timeout is only meaningful with ssl",
            marks=pytest.mark.asyncio_since((3, 11)),
        ),
        ({}, ValueError, "Neither host/port nor sock were specified"),
        (
            {"host": "127.0.0.1", "port": 0, "sock": "SOCK"},
            ValueError,
            "host/port and sock can not be specified at the same time",
        ),
        ({"sock": "DGRAM"}, ValueError, "A Stream Socket was expected, got "),
    ],
)
def test_create_server_bad_arguments(loop, kwargs, exc_type, message):
    sockets = []

    def materialise(value):
        if value in ("SOCK", "DGRAM"):
            kind = socket.SOCK_DGRAM if value == "DGRAM" else socket.SOCK_STREAM
            sockets.append(socket.socket(type=kind))
            return sockets[-1]
        return value

    kwargs = {key: materialise(value) for key, value in kwargs.items()}
    try:
        with pytest.raises(exc_type) as info:
            loop.run_until_complete(loop.create_server(Echo, **kwargs))
        assert str(info.value).startswith(message)
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize(
    ("kwargs", "exc_type", "message"),
    [
        ({"path": "/nonexistent/x", "ssl": True}, TypeError, "ssl argument must be an"),
        ({"path": "/nonexistent/x", "ssl_handshake_timeout": 1}, ValueError, "ssl_handshake"),
        pytest.param(
            {"path": "/nonexistent/x", "ssl_shutdown_timeout": 1},
            ValueError,
            "ssl_shutdown",
            marks=pytest.mark.asyncio_since((3, 11)),
        ),
        ({}, ValueError, "path was not specified, and no sock specified"),
        (
            {"path": "/nonexistent/x", "sock": "UNIX"},
            ValueError,
            "path and sock can not be specified at the same time",
        ),
        ({"sock": "TCP"}, ValueError, "A UNIX Domain Stream Socket was expected, got "),
        ({"path": "/nonexistent/x"}, FileNotFoundError, "[Errno 2]"),
    ],
)
def test_create_unix_server_bad_arguments(loop, kwargs, exc_type, message):
    sockets = []

    def materialise(value):
        if value in ("UNIX", "TCP"):
            family = socket.AF_UNIX if value == "UNIX" else socket.AF_INET
            sockets.append(socket.socket(family))
            return sockets[-1]
        return value

    kwargs = {key: materialise(value) for key, value in kwargs.items()}
    try:
        with pytest.raises(exc_type) as info:
            loop.run_until_complete(loop.create_unix_server(Echo, **kwargs))
        assert str(info.value).startswith(message)
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.asyncio_since((3, 14))  # before, asyncio waits for the connection to end
def test_cancelling_serve_forever_closes_its_connections(loop):
    async def main():
        connected = loop.create_future()

        class Silent(asyncio.Protocol):
            def connection_made(self, transport):
                connected.set_result(None)

        server = await loop.create_server(Silent, "127.0.0.1", 0)
        serving = loop.create_task(server.serve_forever())
        address = server.sockets[0].getsockname()[:2]
        reader, writer = await asyncio.open_connection(*address)
        await asyncio.wait_for(connected, PATIENCE)
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(serving, PATIENCE)
        assert not server.is_serving()
        # The server closed the connection the client kept open.
        assert await asyncio.wait_for(reader.read(), PATIENCE) == b""
        await asyncio.wait_for(server.wait_closed(), PATIENCE)
        writer.close()
        await writer.wait_closed()

    loop.run_until_complete(main())


# Python 3.15: a server connection's callbacks all run in one context, a copy of the
# server's; before, each ran in a copy of the context current when it was scheduled, so
# a task that called resume_reading() leaked its context into them (gh-140947).
TRANSPORT_HAS_ONE_CONTEXT = sys.version_info >= (3, 15)


def test_resume_reading_from_a_task_and_the_context_of_later_callbacks(loop):
    var = contextvars.ContextVar("var", default="unset")
    seen = {}

    class Pausing(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.chunks = 0

        def data_received(self, data):
            self.chunks += 1
            seen[f"data {self.chunks}"] = var.get()
            if self.chunks == 1:
                self.transport.pause_reading()
                loop.create_task(self.resume())

        async def resume(self):
            var.set("set before resume_reading")
            self.transport.resume_reading()
            var.set("set after resume_reading")
            seen["task"] = var.get()

        def connection_lost(self, exc):
            seen["connection_lost"] = var.get()

    async def main():
        server = await loop.create_server(Pausing, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        writer.write(b"first")
        while "task" not in seen:
            await asyncio.sleep(0.001)
        writer.write(b"second")
        while "data 2" not in seen:
            await asyncio.sleep(0.001)
        writer.close()
        await writer.wait_closed()
        server.close()
        await asyncio.wait_for(server.wait_closed(), PATIENCE)

    loop.run_until_complete(asyncio.wait_for(main(), PATIENCE * 2))
    leaked = "unset" if TRANSPORT_HAS_ONE_CONTEXT else "set before resume_reading"
    assert seen == {
        "data 1": "unset",
        "task": "set after resume_reading",
        "data 2": leaked,
        "connection_lost": leaked,
    }
