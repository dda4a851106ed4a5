"""The low-level socket API: sock_recv, sock_sendall, sock_connect, sock_accept,
sock_sendfile and friends, on asyncio and ferroloop alike."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import os
import socket
import ssl
import struct
import tempfile

import pytest
from support import PATIENCE

HAS_IPV6 = socket.has_ipv6
try:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as _probe:
        _probe.bind(("::1", 0))
except OSError:
    HAS_IPV6 = False


def run(loop, coro, timeout=PATIENCE * 5):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


@contextlib.contextmanager
def listening(family=socket.AF_INET, address=("127.0.0.1", 0)):
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.bind(address)
        listener.listen(8)
        listener.setblocking(False)
        yield listener
    finally:
        listener.close()


@contextlib.contextmanager
def tcp_pair(loop):
    """A connected non-blocking TCP pair (client, server side)."""
    with listening() as listener:
        client = socket.socket()
        client.setblocking(False)

        async def connect():
            accepted = asyncio.ensure_future(loop.sock_accept(listener))
            await loop.sock_connect(client, listener.getsockname())
            return await accepted

        try:
            server, _ = run(loop, connect())
        except BaseException:
            client.close()
            raise
    try:
        yield client, server
    finally:
        client.close()
        server.close()


@contextlib.contextmanager
def udp_pair(family=socket.AF_INET, host="127.0.0.1"):
    a = socket.socket(family, socket.SOCK_DGRAM)
    b = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for s in (a, b):
            s.bind((host, 0))
            s.setblocking(False)
        yield a, b
    finally:
        a.close()
        b.close()


# --- sock_recv / sock_recv_into ---------------------------------------------------


def test_sock_recv_ready_data(loop, sockpair):
    a, b = sockpair
    b.send(b"hello")
    assert run(loop, loop.sock_recv(a, 100)) == b"hello"


def test_sock_recv_waits_for_data(loop, sockpair):
    a, b = sockpair

    async def main():
        task = asyncio.ensure_future(loop.sock_recv(a, 3))
        await asyncio.sleep(0.01)
        assert not task.done()
        b.send(b"abcdef")
        first = await task
        second = await loop.sock_recv(a, 100)
        return first, second

    assert run(loop, main()) == (b"abc", b"def")
    # The reader was removed once the receive completed.
    assert loop.remove_reader(a) is False


def test_sock_recv_end_of_stream(loop, sockpair):
    a, b = sockpair

    async def main():
        task = asyncio.ensure_future(loop.sock_recv(a, 10))
        await asyncio.sleep(0.01)
        b.shutdown(socket.SHUT_WR)
        return await task

    assert run(loop, main()) == b""


def test_sock_recv_zero_and_negative_size(loop, sockpair):
    a, b = sockpair
    assert run(loop, loop.sock_recv(a, 0)) == b""
    with pytest.raises(ValueError):
        run(loop, loop.sock_recv(a, -1))


def test_sock_recv_into(loop, sockpair):
    a, b = sockpair

    async def main():
        buf = bytearray(10)
        task = asyncio.ensure_future(loop.sock_recv_into(a, buf))
        await asyncio.sleep(0.01)
        b.send(b"12345")
        count = await task
        b.send(b"abc")
        view = memoryview(buf)
        with view:
            more = await loop.sock_recv_into(a, view[count:])
        return count, more, bytes(buf)

    assert run(loop, main()) == (5, 3, b"12345abc\0\0")


def test_sock_recv_into_read_only_buffer(loop, sockpair):
    a, b = sockpair
    b.send(b"x")
    with pytest.raises(TypeError):
        run(loop, loop.sock_recv_into(a, b"readonly"))
    # Nothing was consumed.
    assert run(loop, loop.sock_recv(a, 10)) == b"x"


# --- cancellation --------------------------------------------------------------------


def test_cancelled_sock_recv_loses_no_data(loop, sockpair):
    a, b = sockpair

    async def main():
        task = asyncio.ensure_future(loop.sock_recv(a, 1024))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        assert loop.remove_reader(a) is False, "the reader outlived the cancelled future"
        b.send(b"all of it")
        await asyncio.sleep(0.01)
        return await loop.sock_recv(a, 1024)

    assert run(loop, main()) == b"all of it"


def test_cancel_in_same_iteration_as_readiness_loses_no_data(loop, sockpair):
    a, b = sockpair

    async def main():
        task = asyncio.ensure_future(loop.sock_recv(a, 1024))
        await asyncio.sleep(0.01)
        # Data arrives and the future is cancelled before the loop polls again.
        b.send(b"payload")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await loop.sock_recv(a, 1024)

    assert run(loop, main()) == b"payload"


def test_cancelled_sock_recv_into_leaves_buffer_usable(loop, sockpair):
    a, b = sockpair
    data = bytearray(16)

    async def main():
        with memoryview(data) as view:
            task = asyncio.ensure_future(loop.sock_recv_into(a, view[:8]))
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            b.send(b"xyz")
            return await loop.sock_recv_into(a, view[:8])

    assert run(loop, main()) == 3
    # The buffer is not exported any more: it can be resized.
    data.extend(b"more")
    assert bytes(data[:3]) == b"xyz"


def test_second_sock_recv_replaces_the_first(loop, sockpair):
    a, b = sockpair

    async def main():
        first = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        b.send(b"data")
        got = await second
        await asyncio.sleep(0.01)
        # As in asyncio, the replaced reader never runs: the first stays pending.
        assert not first.done()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        b.send(b"again")
        return got, await loop.sock_recv(a, 100)

    assert run(loop, main()) == (b"data", b"again")


def test_cancelled_sock_sendall_then_sendall(loop, sockpair):
    a, b = sockpair

    async def main():
        # Fill the send buffer until even 4 bytes would block.
        size = 8192
        while size >= 4:
            with pytest.raises(BlockingIOError):
                while True:
                    a.send(b" " * size)
            size //= 2
        task = asyncio.ensure_future(loop.sock_sendall(a, b"hello"))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        async def receive_all():
            received = b""
            while True:
                chunk = await loop.sock_recv(b, 65536)
                if not chunk:
                    return received
                received += chunk.replace(b" ", b"")

        reader = asyncio.ensure_future(receive_all())
        await loop.sock_sendall(a, b"world")
        a.shutdown(socket.SHUT_WR)
        return await reader

    assert run(loop, main()).endswith(b"world")


# --- sock_sendall ----------------------------------------------------------------------


def test_sock_sendall_small(loop, sockpair):
    a, b = sockpair
    assert run(loop, loop.sock_sendall(a, b"ping")) is None
    assert b.recv(10) == b"ping"
    assert run(loop, loop.sock_sendall(a, b"")) is None


def test_sock_sendall_accepts_buffers(loop, sockpair):
    a, b = sockpair
    run(loop, loop.sock_sendall(a, bytearray(b"one")))
    run(loop, loop.sock_sendall(a, memoryview(b"xtwox")[1:4]))
    assert b.recv(10) == b"onetwo"
    with pytest.raises(TypeError):
        run(loop, loop.sock_sendall(a, "text"))


def test_sock_sendall_8mib_to_slow_reader(loop, sockpair):
    a, b = sockpair
    payload = os.urandom(1024) * (8 * 1024)

    async def slow_reader():
        chunks = []
        total = 0
        while total < len(payload):
            chunk = await loop.sock_recv(b, 256 * 1024)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            await asyncio.sleep(0.001)
        return b"".join(chunks)

    async def main():
        reader = asyncio.ensure_future(slow_reader())
        await loop.sock_sendall(a, payload)
        return await reader

    assert run(loop, main(), timeout=60) == payload


# --- datagrams -------------------------------------------------------------------------


@pytest.mark.asyncio_since((3, 11))  # sock_sendto/sock_recvfrom*: asyncio 3.11+
def test_sock_sendto_and_recvfrom(loop):
    with udp_pair() as (a, b):

        async def main():
            pending = asyncio.ensure_future(loop.sock_recvfrom(b, 100))
            await asyncio.sleep(0.01)
            sent = await loop.sock_sendto(a, b"datagram", b.getsockname())
            return sent, await pending

        sent, (data, address) = run(loop, main())
        assert sent == 8
        assert data == b"datagram"
        assert address == a.getsockname()


@pytest.mark.asyncio_since((3, 11))  # sock_sendto/sock_recvfrom*: asyncio 3.11+
def test_sock_recvfrom_into(loop):
    with udp_pair() as (a, b):
        buf = bytearray(64)

        async def main():
            await loop.sock_sendto(a, b"x" * 40, b.getsockname())
            first = await loop.sock_recvfrom_into(b, buf, 10)
            pending = asyncio.ensure_future(loop.sock_recvfrom_into(b, buf))
            await asyncio.sleep(0.01)
            await loop.sock_sendto(a, b"yy", b.getsockname())
            return first, await pending

        (count1, addr1), (count2, addr2) = run(loop, main())
        assert (count1, count2) == (10, 2)
        assert addr1 == addr2 == a.getsockname()
        assert buf[:2] == b"yy"
        with pytest.raises(ValueError):
            run(loop, loop.sock_recvfrom_into(b, buf, 100))


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")
@pytest.mark.asyncio_since((3, 11))  # sock_sendto/sock_recvfrom*: asyncio 3.11+
def test_sock_recvfrom_ipv6_address(loop):
    with udp_pair(socket.AF_INET6, "::1") as (a, b):

        async def main():
            await loop.sock_sendto(a, b"six", b.getsockname())
            await asyncio.sleep(0.01)
            return await loop.sock_recvfrom(b, 100)

        data, address = run(loop, main())
        assert data == b"six"
        assert address == a.getsockname()
        assert len(address) == 4


@pytest.mark.asyncio_since((3, 11))  # sock_sendto/sock_recvfrom*: asyncio 3.11+
def test_sock_recvfrom_unix_datagram_addresses(loop, tmp_path):
    a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b, c:
        a.bind(str(tmp_path / "a.sock"))
        b.bind(str(tmp_path / "b.sock"))
        c.bind(b"\0ferroloop-test-%d" % os.getpid())
        for s in (a, b, c):
            s.setblocking(False)

        async def main():
            await loop.sock_sendto(a, b"from a", b.getsockname())
            await loop.sock_sendto(c, b"from c", b.getsockname())
            return await loop.sock_recvfrom(b, 100), await loop.sock_recvfrom(b, 100)

        first, second = run(loop, main())
        assert first == (b"from a", a.getsockname())
        assert second == (b"from c", c.getsockname())
        assert isinstance(second[1], bytes)


# --- sock_connect / sock_accept --------------------------------------------------------


def test_sock_accept_pending_and_connect(loop):
    with listening() as listener:
        client = socket.socket()
        client.setblocking(False)
        with client:

            async def main():
                accepted = asyncio.ensure_future(loop.sock_accept(listener))
                await asyncio.sleep(0.01)
                assert not accepted.done()
                await loop.sock_connect(client, listener.getsockname())
                return await accepted

            conn, address = run(loop, main())
            with conn:
                assert conn.gettimeout() == 0
                assert address == client.getsockname()
                assert conn.getpeername() == client.getsockname()


def test_sock_accept_ready(loop):
    with listening() as listener:
        client = socket.create_connection(listener.getsockname())
        with client:
            conn, address = run(loop, loop.sock_accept(listener))
            with conn:
                assert conn.gettimeout() == 0
                assert address == client.getsockname()


def test_cancelled_sock_accept(loop):
    with listening() as listener:
        with pytest.raises(asyncio.TimeoutError):
            loop.run_until_complete(asyncio.wait_for(loop.sock_accept(listener), 0.05))
        loop.run_until_complete(asyncio.sleep(0))
        assert loop.remove_reader(listener) is False
        client = socket.create_connection(listener.getsockname())
        with client:
            conn, _ = run(loop, loop.sock_accept(listener))
            conn.close()


def test_sock_connect_resolves_host_name(loop):
    with listening() as listener:
        port = listener.getsockname()[1]
        client = socket.socket()
        client.setblocking(False)
        with client:

            async def main():
                accepted = asyncio.ensure_future(loop.sock_accept(listener))
                await loop.sock_connect(client, ("localhost", port))
                conn, _ = await accepted
                conn.close()

            run(loop, main())
            assert client.getpeername() == ("127.0.0.1", port)


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")
def test_sock_connect_ipv6(loop):
    with listening(socket.AF_INET6, ("::1", 0)) as listener:
        client = socket.socket(socket.AF_INET6)
        client.setblocking(False)
        with client:

            async def main():
                accepted = asyncio.ensure_future(loop.sock_accept(listener))
                await loop.sock_connect(client, listener.getsockname()[:2])
                conn, address = await accepted
                conn.close()
                return address

            address = run(loop, main())
            assert address == client.getsockname()


def test_sock_connect_unix(loop, tmp_path):
    path = str(tmp_path / "server.sock")
    with listening(socket.AF_UNIX, path) as listener:
        client = socket.socket(socket.AF_UNIX)
        client.setblocking(False)
        with client:

            async def main():
                await loop.sock_connect(client, path)
                conn, _ = await loop.sock_accept(listener)
                with conn:
                    await loop.sock_sendall(client, b"over unix")
                    return await loop.sock_recv(conn, 100)

            assert run(loop, main()) == b"over unix"


def test_sock_connect_refused(loop):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    address = probe.getsockname()
    probe.close()
    client = socket.socket()
    client.setblocking(False)
    with client:
        with pytest.raises(ConnectionRefusedError) as info:
            run(loop, loop.sock_connect(client, address))
        assert info.value.errno == errno.ECONNREFUSED


def test_sock_recv_connection_reset(loop):
    with tcp_pair(loop) as (client, server):
        server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

        async def main():
            pending = asyncio.ensure_future(loop.sock_recv(client, 100))
            await asyncio.sleep(0.01)
            server.close()
            return await pending

        with pytest.raises(ConnectionResetError) as info:
            run(loop, main())
        assert info.value.errno == errno.ECONNRESET


def test_sock_sendall_to_closed_peer(loop):
    with tcp_pair(loop) as (client, server):
        server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        server.close()

        async def main():
            await asyncio.sleep(0.01)
            for _ in range(100):
                await loop.sock_sendall(client, b"x" * 65536)

        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            run(loop, main())


def test_sock_recv_closed_socket(loop):
    sock = socket.socket()
    sock.setblocking(False)
    sock.close()
    with pytest.raises(OSError) as info:
        run(loop, loop.sock_recv(sock, 10))
    assert info.value.errno == errno.EBADF


# --- argument checks ----------------------------------------------------------------


@pytest.mark.asyncio_since((3, 11))  # sock_sendto/sock_recvfrom*: asyncio 3.11+
def test_blocking_socket_in_debug_mode(loop, sockpair):
    a, b = sockpair
    loop.set_debug(True)
    a.setblocking(True)
    try:
        for coro in (
            loop.sock_recv(a, 10),
            loop.sock_recv_into(a, bytearray(10)),
            loop.sock_recvfrom(a, 10),
            loop.sock_recvfrom_into(a, bytearray(10)),
            loop.sock_sendall(a, b"x"),
            loop.sock_sendto(a, b"x", None),
            loop.sock_connect(a, "nowhere"),
            loop.sock_accept(a),
        ):
            with pytest.raises(ValueError, match="the socket must be non-blocking"):
                loop.run_until_complete(coro)
        with tempfile.TemporaryFile() as file:
            with pytest.raises(ValueError, match="the socket must be non-blocking"):
                loop.run_until_complete(loop.sock_sendfile(a, file))
    finally:
        a.setblocking(False)
        loop.set_debug(False)


def test_ssl_socket_refused(loop):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    plain = socket.socket()
    try:
        sock = context.wrap_socket(plain, do_handshake_on_connect=False)
    finally:
        plain.close()
    with sock:
        sock.setblocking(False)
        with pytest.raises(TypeError, match="SSLSocket"):
            loop.run_until_complete(loop.sock_recv(sock, 10))
        with pytest.raises(TypeError, match="SSLSocket"):
            loop.run_until_complete(loop.sock_sendall(sock, b"x"))


class FakeTransport:
    def is_closing(self):
        return False


def test_fd_used_by_transport(loop, sockpair):
    a, b = sockpair
    with listening() as listener:
        transport = FakeTransport()
        loop._transports[a.fileno()] = transport
        loop._transports[listener.fileno()] = transport
        try:
            with pytest.raises(RuntimeError, match="is used by transport"):
                loop.run_until_complete(loop.sock_recv(a, 10))
            with pytest.raises(RuntimeError, match="is used by transport"):
                loop.run_until_complete(loop.sock_accept(listener))
        finally:
            del loop._transports[a.fileno()]
            del loop._transports[listener.fileno()]
        assert loop.remove_reader(a) is False
        assert loop.remove_reader(listener) is False


# --- sock_sendfile ---------------------------------------------------------------------


@pytest.fixture
def data_file():
    payload = os.urandom(1024 * 1024)
    with tempfile.TemporaryFile() as file:
        file.write(payload)
        file.flush()
        file.seek(0)
        yield file, payload


async def _receive_exactly(loop, sock, size):
    chunks = []
    received = 0
    while received < size:
        chunk = await loop.sock_recv(sock, 256 * 1024)
        if not chunk:
            break
        chunks.append(chunk)
        received += len(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("fallback", [False, True])
def test_sock_sendfile_1mib(loop, data_file, fallback):
    file, payload = data_file
    with tcp_pair(loop) as (client, server):

        async def main():
            reader = asyncio.ensure_future(_receive_exactly(loop, server, len(payload)))
            sent = await loop.sock_sendfile(client, file, fallback=fallback)
            return sent, await reader

        sent, received = run(loop, main())
        assert sent == len(payload)
        assert received == payload
        assert file.tell() == len(payload)


def test_sock_sendfile_offset_and_count(loop, data_file):
    file, payload = data_file
    with tcp_pair(loop) as (client, server):

        async def main():
            sent = await loop.sock_sendfile(client, file, 1000, 5000, fallback=False)
            return sent, await _receive_exactly(loop, server, 5000)

        sent, received = run(loop, main())
        assert sent == 5000
        assert received == payload[1000:6000]
        assert file.tell() == 6000


def test_sock_sendfile_empty_file(loop):
    with tempfile.TemporaryFile() as file, tcp_pair(loop) as (client, server):
        assert run(loop, loop.sock_sendfile(client, file, fallback=False)) == 0
        assert file.tell() == 0


def test_sock_sendfile_non_regular_file(loop):
    payload = b"in memory " * 1000
    with tcp_pair(loop) as (client, server):
        with pytest.raises(asyncio.SendfileNotAvailableError):
            run(loop, loop.sock_sendfile(client, io.BytesIO(payload), fallback=False))

        async def main():
            source = io.BytesIO(payload)
            sent = await loop.sock_sendfile(client, source, 10)
            return sent, source.tell(), await _receive_exactly(loop, server, len(payload) - 10)

        sent, position, received = run(loop, main())
        assert sent == len(payload) - 10
        assert position == len(payload)
        assert received == payload[10:]


def test_sock_sendfile_argument_errors(loop, data_file):
    file, _ = data_file
    with tcp_pair(loop) as (client, server):
        for offset, count, error in (
            (-1, None, ValueError),
            ("0", None, TypeError),
            (0, 0, ValueError),
            (0, -5, ValueError),
            (0, 1.5, TypeError),
        ):
            with pytest.raises(error):
                run(loop, loop.sock_sendfile(client, file, offset, count))
    with udp_pair() as (a, b):
        with pytest.raises(ValueError, match="SOCK_STREAM"):
            run(loop, loop.sock_sendfile(a, file))
    with tempfile.TemporaryFile("w") as text, tcp_pair(loop) as (client, server):
        with pytest.raises(ValueError, match="binary mode"):
            run(loop, loop.sock_sendfile(client, text))


def test_socket_closed_while_sock_recv_waits(loop):
    a, b = socket.socketpair()
    a.setblocking(False)
    with b:

        async def main():
            pending = asyncio.ensure_future(loop.sock_recv(a, 100))
            await asyncio.sleep(0.01)
            a.close()
            # A new socket may now get the same fd number; its data is not the
            # pending receive's to take.
            c, d = socket.socketpair()
            with c, d:
                c.setblocking(False)
                d.send(b"not yours")
                # Watching the new socket must not revive the old receive.
                try:
                    loop.add_writer(c, lambda: None)
                except OSError:
                    pass  # asyncio's selector refuses the stale registration
                else:
                    await asyncio.sleep(0.05)
                    loop.remove_writer(c)
                await asyncio.sleep(0.01)
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await pending
                return c.recv(100)

        assert run(loop, main()) == b"not yours"


@pytest.mark.asyncio_since((3, 11))  # sock_sendto/sock_recvfrom*: asyncio 3.11+
def test_sock_sendto_address_forms(loop):
    with udp_pair() as (a, b):
        port = b.getsockname()[1]

        async def main():
            sent = [
                await loop.sock_sendto(a, b"numeric", ("127.0.0.1", port)),
                await loop.sock_sendto(a, bytearray(b"by name"), ("localhost", port)),
                await loop.sock_sendto(a, memoryview(b"view"), ("127.0.0.1", port)),
            ]
            received = [(await loop.sock_recvfrom(b, 100))[0] for _ in range(3)]
            return sent, received

        sent, received = run(loop, main())
        assert sent == [7, 7, 4]
        assert received == [b"numeric", b"by name", b"view"]


@pytest.mark.asyncio_since((3, 11))  # sock_sendto/sock_recvfrom*: asyncio 3.11+
def test_sock_sendto_errors(loop):
    with udp_pair() as (a, b):
        with pytest.raises(TypeError):
            run(loop, loop.sock_sendto(a, "text", b.getsockname()))
        with pytest.raises(OverflowError):
            run(loop, loop.sock_sendto(a, b"x", ("127.0.0.1", 70000)))
        with pytest.raises(OSError) as info:
            run(loop, loop.sock_sendto(a, b"x" * 70000, b.getsockname()))
        assert info.value.errno == errno.EMSGSIZE


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")
@pytest.mark.asyncio_since((3, 11))  # sock_sendto/sock_recvfrom*: asyncio 3.11+
def test_sock_sendto_ipv6_tuple_lengths(loop):
    with udp_pair(socket.AF_INET6, "::1") as (a, b):
        port = b.getsockname()[1]

        async def main():
            await loop.sock_sendto(a, b"2", ("::1", port))
            await loop.sock_sendto(a, b"3", ("::1", port, 0))
            await loop.sock_sendto(a, b"4", ("::1", port, 0, 0))
            return [(await loop.sock_recvfrom(b, 10))[0] for _ in range(3)]

        assert run(loop, main()) == [b"2", b"3", b"4"]


# asyncio before 3.14 copied from the file's current position when offset was 0, and its
# zero-copy path left the position alone when nothing was sent (offset at the end).
_NEEDS_314 = pytest.mark.asyncio_since((3, 14))


_FILE_KIND_AND_OFFSET = pytest.mark.parametrize(
    ("in_memory", "offset"),
    [
        pytest.param(False, 0, id="zero-copy-0"),
        pytest.param(False, 1000, id="zero-copy-1000"),
        pytest.param(False, -1, id="zero-copy-end", marks=_NEEDS_314),
        pytest.param(True, 0, id="copying-0", marks=_NEEDS_314),
        pytest.param(True, 1000, id="copying-1000"),
        pytest.param(True, -1, id="copying-end"),
    ],
)


@_FILE_KIND_AND_OFFSET
def test_sock_sendfile_starts_at_offset_whatever_the_file_position(
    loop, data_file, in_memory, offset
):
    file, payload = data_file
    if in_memory:
        file = io.BytesIO(payload)  # no fileno(): the copying path
    if offset < 0:
        offset = len(payload)
    file.seek(123)
    with tcp_pair(loop) as (client, server):

        async def main():
            reader = asyncio.ensure_future(_receive_exactly(loop, server, len(payload) - offset))
            sent = await loop.sock_sendfile(client, file, offset)
            return sent, await reader

        sent, received = run(loop, main())
    assert sent == len(payload) - offset
    assert received == payload[offset:]
    assert file.tell() == len(payload)


@_FILE_KIND_AND_OFFSET
def test_loop_sendfile_starts_at_offset_whatever_the_file_position(
    loop, data_file, in_memory, offset
):
    file, payload = data_file
    if in_memory:
        file = io.BytesIO(payload)  # no fileno(): the fallback (read + write) path
    if offset < 0:
        offset = len(payload)
    file.seek(123)

    async def main():
        received = bytearray()
        lost = loop.create_future()

        class Sink(asyncio.Protocol):
            def data_received(self, data):
                received.extend(data)

            def connection_lost(self, exc):
                lost.set_result(exc)

        server = await loop.create_server(Sink, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()[:2]
        transport, _ = await loop.create_connection(asyncio.Protocol, *address)
        sent = await loop.sendfile(transport, file, offset)
        transport.close()
        assert await lost is None
        server.close()
        await server.wait_closed()
        return sent, bytes(received)

    sent, received = run(loop, main())
    assert sent == len(payload) - offset
    assert received == payload[offset:]
    assert file.tell() == len(payload)
