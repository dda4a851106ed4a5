"""create_connection, create_unix_connection and connect_accepted_socket."""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import socket
import sys
import tempfile

import pytest
from support import PATIENCE

ASYNCIO_HAS_ALL_ERRORS = sys.version_info >= (3, 12)


class Echo(asyncio.Protocol):
    """Server side: echoes everything back."""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class Collect(asyncio.Protocol):
    """Client side: collects what arrives; `made` is set by connection_made."""

    def __init__(self):
        self.made = False
        self.data = bytearray()
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.made = True
        self.transport = transport

    def data_received(self, data):
        self.data += data

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)

    async def receive(self, size):
        async def enough():
            while len(self.data) < size:
                await asyncio.sleep(0.001)

        await asyncio.wait_for(enough(), PATIENCE)
        return bytes(self.data)


def free_port_refused():
    """A loopback TCP port with nothing listening (bound and closed again)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ipv6_loopback_available():
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


async def echo_round_trip(transport, protocol, payload=b"ping"):
    assert protocol.made
    transport.write(payload)
    assert await protocol.receive(len(payload)) == payload
    transport.close()
    await protocol.lost


def test_tcp_echo_round_trip(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, protocol = await loop.create_connection(Collect, "127.0.0.1", port)
        assert transport.get_extra_info("peername") == ("127.0.0.1", port)
        await echo_round_trip(transport, protocol, b"hello over tcp")
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_unix_echo_round_trip(loop):
    async def main():
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "sock")
            server = await loop.create_unix_server(Echo, path)
            transport, protocol = await loop.create_unix_connection(Collect, path)
            await echo_round_trip(transport, protocol, b"hello over unix")
            server.close()
            await server.wait_closed()

    loop.run_until_complete(main())


def test_create_connection_with_connected_sock(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        sock = socket.create_connection(server.sockets[0].getsockname())
        transport, protocol = await loop.create_connection(Collect, sock=sock)
        assert transport.get_extra_info("socket").fileno() == sock.fileno()
        await echo_round_trip(transport, protocol)
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_create_unix_connection_with_sock(loop):
    async def main():
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "sock")
            server = await loop.create_unix_server(Echo, path)
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(path)
            transport, protocol = await loop.create_unix_connection(Collect, sock=sock)
            await echo_round_trip(transport, protocol)
            server.close()
            await server.wait_closed()

    loop.run_until_complete(main())


def test_connection_refused(loop):
    port = free_port_refused()

    async def main():
        with pytest.raises(ConnectionRefusedError) as info:
            await loop.create_connection(Collect, "127.0.0.1", port)
        assert info.value.errno == errno.ECONNREFUSED

    loop.run_until_complete(main())


@pytest.mark.parametrize("connect", ["create_connection", "sock_connect"])
def test_refused_error_is_referenced_by_nothing_of_the_loop(loop, connect):
    """A failed connect leaves its error referenced only by whoever caught it: no list of
    errors and no future in the frames its traceback keeps (anyio checks this with
    gc.get_referrers, after CPython's gh-124859; a cycle keeps every frame alive)."""
    import gc

    port = free_port_refused()

    async def attempt(caught):
        try:
            if connect == "create_connection":
                await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
            else:
                with socket.socket() as sock:
                    sock.setblocking(False)
                    await loop.sock_connect(sock, ("127.0.0.1", port))
        except OSError as exc:
            caught.append(exc)

    async def main():
        caught = []
        await loop.create_task(attempt(caught))
        error = caught.pop()
        assert isinstance(error, ConnectionRefusedError)
        # This coroutine's own frame holds `error` (on 3.14 the coroutine itself is
        # reported as the referrer): nothing else may.
        here = sys._getframe()
        others = [
            r
            for r in gc.get_referrers(error)
            if r is not here and getattr(r, "cr_frame", None) is not here
        ]
        assert others == []

    loop.run_until_complete(main())


def test_unix_connection_to_missing_path(loop):
    async def main():
        with tempfile.TemporaryDirectory() as tmp:
            with pytest.raises(FileNotFoundError):
                await loop.create_unix_connection(Collect, os.path.join(tmp, "nothing"))

    loop.run_until_complete(main())


def test_local_addr_is_bound(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            local_port = probe.getsockname()[1]
        transport, protocol = await loop.create_connection(
            Collect, "127.0.0.1", port, local_addr=("127.0.0.1", local_port)
        )
        assert transport.get_extra_info("sockname") == ("127.0.0.1", local_port)
        await echo_round_trip(transport, protocol)
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_local_addr_of_other_family_only(loop):
    if not ipv6_loopback_available():
        pytest.skip("no IPv6 loopback")
    port = free_port_refused()

    async def main():
        with pytest.raises(OSError, match="^no matching local address with family=.* found$"):
            await loop.create_connection(Collect, "127.0.0.1", port, local_addr=("::1", 0))

    loop.run_until_complete(main())


def test_happy_eyeballs_with_unreachable_first_address(loop):
    """The first candidate refuses; the second (started at once on failure) wins."""

    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        refused = ("127.0.0.2", port)  # nothing listens on 127.0.0.2
        good = ("127.0.0.1", port)
        stream = (socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
        infos = [(socket.AF_INET, *stream, refused), (socket.AF_INET, *stream, good)]

        async def getaddrinfo(*args, **kwargs):
            return infos

        loop.getaddrinfo = getaddrinfo
        try:
            transport, protocol = await loop.create_connection(
                Collect, "example.invalid", port, happy_eyeballs_delay=0.25
            )
        finally:
            del loop.getaddrinfo
        assert transport.get_extra_info("peername") == good
        await echo_round_trip(transport, protocol)
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_happy_eyeballs_loser_is_cancelled_and_closed(loop):
    """The first candidate never answers (a full backlog); after the delay the second
    starts and wins, and the hanging first attempt's socket is closed."""

    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        # A listener that never accepts, with its backlog filled: new SYNs go unanswered.
        hanging = socket.socket()
        hanging.bind(("127.0.0.1", 0))
        hanging.listen(0)
        fillers = []
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            try:
                filler.connect(hanging.getsockname())
            except BlockingIOError:
                pass
            fillers.append(filler)
        stream = (socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
        infos = [
            (socket.AF_INET, *stream, hanging.getsockname()),
            (socket.AF_INET, *stream, ("127.0.0.1", port)),
        ]

        async def getaddrinfo(*args, **kwargs):
            return infos

        loop.getaddrinfo = getaddrinfo
        try:
            start = loop.time()
            transport, protocol = await loop.create_connection(
                Collect, "example.invalid", port, happy_eyeballs_delay=0.05
            )
            elapsed = loop.time() - start
        finally:
            del loop.getaddrinfo
            for filler in fillers:
                filler.close()
            hanging.close()
        assert transport.get_extra_info("peername") == ("127.0.0.1", port)
        assert elapsed < PATIENCE
        await echo_round_trip(transport, protocol)
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_all_candidates_fail_with_combined_message(loop):
    async def main():
        port = free_port_refused()
        stream = (socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
        infos = [
            (socket.AF_INET, *stream, ("127.0.0.1", port)),
            (socket.AF_INET, *stream, ("127.0.0.2", port)),
        ]

        async def getaddrinfo(*args, **kwargs):
            return infos

        loop.getaddrinfo = getaddrinfo
        try:
            with pytest.raises(OSError) as info:
                await loop.create_connection(Collect, "example.invalid", port)
        finally:
            del loop.getaddrinfo
        assert str(info.value).startswith("Multiple exceptions: ")
        assert "('127.0.0.1'," in str(info.value)
        assert "('127.0.0.2'," in str(info.value)

    loop.run_until_complete(main())


def test_all_errors_raises_exception_group(loop, loop_kind):
    if loop_kind == "asyncio" and not ASYNCIO_HAS_ALL_ERRORS:
        pytest.skip("asyncio added all_errors in Python 3.12")
    port = free_port_refused()

    async def main():
        with pytest.raises(ExceptionGroup) as info:
            await loop.create_connection(Collect, "127.0.0.1", port, all_errors=True)
        assert str(info.value).startswith("create_connection failed")
        assert [type(e) for e in info.value.exceptions] == [ConnectionRefusedError]

    loop.run_until_complete(main())


def test_getaddrinfo_empty_list(loop):
    async def main():
        async def getaddrinfo(*args, **kwargs):
            return []

        loop.getaddrinfo = getaddrinfo
        try:
            with pytest.raises(OSError, match=r"^getaddrinfo\(\) returned empty list$"):
                await loop.create_connection(Collect, "example.invalid", 80)
        finally:
            del loop.getaddrinfo

    loop.run_until_complete(main())


def test_connect_accepted_socket(loop):
    async def main():
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        listener.close()
        transport, protocol = await loop.connect_accepted_socket(Collect, accepted)
        assert protocol.made
        client.sendall(b"from the peer")
        assert await protocol.receive(13) == b"from the peer"
        transport.write(b"back")
        client.settimeout(PATIENCE)
        assert client.recv(4) == b"back"
        client.close()
        assert await protocol.lost is None

    loop.run_until_complete(main())


@pytest.mark.parametrize("happy_eyeballs_delay", [None, 0.01])
def test_cancelled_connect_closes_socket(loop, happy_eyeballs_delay):
    """Cancelling create_connection while the SYN hangs leaves no socket behind."""

    async def main():
        hanging = socket.socket()
        hanging.bind(("127.0.0.1", 0))
        hanging.listen(0)
        fillers = []
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            try:
                filler.connect(hanging.getsockname())
            except BlockingIOError:
                pass
            fillers.append(filler)
        try:
            host, port = hanging.getsockname()
            stream = (socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
            # Two hanging candidates, so with happy eyeballs both attempts are running.
            infos = [(socket.AF_INET, *stream, (host, port))] * 2

            async def getaddrinfo(*args, **kwargs):
                return infos

            loop.getaddrinfo = getaddrinfo
            task = loop.create_task(
                loop.create_connection(
                    Collect, "example.invalid", port, happy_eyeballs_delay=happy_eyeballs_delay
                )
            )
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            del loop.getaddrinfo
            for filler in fillers:
                filler.close()
            hanging.close()

    loop.run_until_complete(main())


# -- argument checks: same exception type and message as asyncio ----------------------------


def _sock_pair_member():
    a, b = socket.socketpair()
    b.close()
    return a


@pytest.mark.parametrize(
    ("kwargs", "exc_type", "message"),
    [
        (
            {"host": "127.0.0.1", "port": 1, "server_hostname": "x"},
            ValueError,
            "server_hostname is only meaningful with ssl",
        ),
        (
            {"port": 1, "ssl": True},
            ValueError,
            "You must set server_hostname when using ssl without a host",
        ),
        (
            {"host": "127.0.0.1", "port": 1, "ssl_handshake_timeout": 1},
            ValueError,
            "ssl_handshake_timeout is only meaningful with ssl",
        ),
        pytest.param(
            {"host": "127.0.0.1", "port": 1, "ssl_shutdown_timeout": 1},
            ValueError,
            "ssl_shutdown_timeout is only meaningful with ssl",
            marks=pytest.mark.asyncio_since((3, 11)),
        ),
        ({}, ValueError, "host and port was not specified and no sock specified"),
        (
            {"host": "127.0.0.1", "port": 1, "sock": "SOCK"},
            ValueError,
            "host/port and sock can not be specified at the same time",
        ),
        ({"sock": "DGRAM"}, ValueError, "A Stream Socket was expected, got "),
    ],
)
def test_create_connection_bad_arguments(loop, kwargs, exc_type, message):
    sockets = []

    def materialise(value):
        if value == "SOCK":
            sockets.append(socket.socket())
            return sockets[-1]
        if value == "DGRAM":
            sockets.append(socket.socket(type=socket.SOCK_DGRAM))
            return sockets[-1]
        return value

    kwargs = {key: materialise(value) for key, value in kwargs.items()}
    try:
        with pytest.raises(exc_type) as info:
            loop.run_until_complete(loop.create_connection(asyncio.Protocol, **kwargs))
        assert str(info.value).startswith(message)
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "/nonexistent", "server_hostname": "x"}, "server_hostname is only meaningful"),
        ({"path": "/nonexistent", "ssl_handshake_timeout": 1}, "ssl_handshake_timeout is only"),
        pytest.param(
            {"path": "/nonexistent", "ssl_shutdown_timeout": 1},
            "ssl_shutdown_timeout is only",
            marks=pytest.mark.asyncio_since((3, 11)),
        ),
        ({"path": "/nonexistent", "ssl": True}, "you have to pass server_hostname when using ssl"),
        ({}, "no path and sock were specified"),
        ({"path": "/nonexistent", "sock": "UNIX"}, "path and sock can not be specified"),
        ({"sock": "TCP"}, "A UNIX Domain Stream Socket was expected, got "),
    ],
)
def test_create_unix_connection_bad_arguments(loop, kwargs, message):
    sockets = []

    def materialise(value):
        if value == "UNIX":
            sockets.append(socket.socket(socket.AF_UNIX))
            return sockets[-1]
        if value == "TCP":
            sockets.append(socket.socket())
            return sockets[-1]
        return value

    kwargs = {key: materialise(value) for key, value in kwargs.items()}
    try:
        with pytest.raises(ValueError) as info:
            loop.run_until_complete(loop.create_unix_connection(asyncio.Protocol, **kwargs))
        assert str(info.value).startswith(message)
    finally:
        for sock in sockets:
            sock.close()


def test_connect_accepted_socket_bad_arguments(loop):
    dgram = socket.socket(type=socket.SOCK_DGRAM)
    stream = socket.socket()
    try:
        with pytest.raises(ValueError, match="^A Stream Socket was expected, got "):
            loop.run_until_complete(loop.connect_accepted_socket(asyncio.Protocol, dgram))
        with pytest.raises(ValueError, match="^ssl_handshake_timeout is only meaningful with ssl$"):
            loop.run_until_complete(
                loop.connect_accepted_socket(asyncio.Protocol, stream, ssl_handshake_timeout=1)
            )
        with pytest.raises(ValueError, match="^ssl_shutdown_timeout is only meaningful with ssl$"):
            loop.run_until_complete(
                loop.connect_accepted_socket(asyncio.Protocol, stream, ssl_shutdown_timeout=1)
            )
    finally:
        dgram.close()
        stream.close()


@pytest.mark.asyncio_since((3, 14))  # before, asyncio's happy eyeballs kept it in cycles
def test_happy_eyeballs_error_is_referenced_only_by_its_catcher(loop):
    """What create_connection raises after racing the addresses is held by nothing but the
    coroutine that caught it: no cycle through the frames it passed, no queued callback."""
    port = free_port_refused()
    referrers = []

    async def main():
        error = None
        try:
            await loop.create_connection(
                asyncio.Protocol, "127.0.0.1", port, happy_eyeballs_delay=0.25
            )
        except OSError as exc:
            error = exc
        assert isinstance(error, ConnectionRefusedError)
        # The running coroutine itself is listed on some Python versions.
        referrers.extend(type(r).__name__ for r in gc.get_referrers(error))

    gc.collect()
    loop.run_until_complete(main())
    assert [r for r in referrers if r != "coroutine"] == []
