"""Bad input and misbehaving callbacks get asyncio's answer (divergences the differential
fuzzer, test_differential.py, found; each runs on both loops and follows the running
Python's asyncio where its answer changed between versions)."""

from __future__ import annotations

import asyncio
import gc
import math
import os
import socket
import sys
import warnings

import pytest

# -- ports: never wrapped to 16 bits ----------------------------------------------------


def test_create_connection_refuses_a_port_beyond_65535(loop):
    accepted = []

    async def main():
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server._protocol_factory = lambda: accepted.append(1) or asyncio.Protocol()
        try:
            with pytest.raises(OverflowError, match="port must be 0-65535"):
                await loop.create_connection(asyncio.Protocol, "127.0.0.1", port + 65536)
            await asyncio.sleep(0.05)
        finally:
            server.close()
            await server.wait_closed()

    loop.run_until_complete(main())
    assert accepted == []


def test_create_server_refuses_a_port_beyond_65535(loop):
    async def main():
        with pytest.raises(OverflowError, match="port must be 0-65535"):
            await loop.create_server(asyncio.Protocol, "127.0.0.1", 65536)

    loop.run_until_complete(main())


def test_create_server_truncates_a_float_port(loop):
    async def main():
        # asyncio's int(port): 0.9 is port 0, an ephemeral port.
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0.9)
        try:
            assert server.sockets[0].getsockname()[1] != 0
        finally:
            server.close()
            await server.wait_closed()

    loop.run_until_complete(main())


# -- writes after the loop closed are never swallowed -----------------------------------


def test_every_write_after_loop_close_raises(loop):
    ours, peer = socket.socketpair()

    def write_after_close():
        transport, _ = loop.run_until_complete(loop.connect_accepted_socket(asyncio.Protocol, ours))
        loop.close()
        for _ in range(3):
            with pytest.raises(RuntimeError, match="Event loop is closed"):
                transport.write(b"x" * 10_000_000)
            assert transport.get_write_buffer_size() == 0

    with peer, warnings.catch_warnings():
        # Nothing can close a transport once its loop is closed; both loops'
        # finalizers close its socket, with a ResourceWarning, expected here.
        warnings.simplefilter("ignore", ResourceWarning)
        write_after_close()
        gc.collect()


@pytest.mark.parametrize("method", ["write", "writelines"])
def test_every_pipe_write_after_loop_close_raises(loop, method):
    read_fd, write_fd = os.pipe()

    def write_after_close():
        pipe = os.fdopen(write_fd, "wb", buffering=0)
        transport, _ = loop.run_until_complete(loop.connect_write_pipe(asyncio.BaseProtocol, pipe))
        loop.close()
        data = b"x" * 1_000_000
        for _ in range(3):
            with pytest.raises(RuntimeError, match="Event loop is closed"):
                if method == "write":
                    transport.write(data)
                else:
                    transport.writelines([data[:10], data])
            assert transport.get_write_buffer_size() == 0

    try:
        with warnings.catch_warnings():
            # Nothing can close a transport once its loop is closed; both loops'
            # finalizers close its pipe, with a ResourceWarning, expected here.
            warnings.simplefilter("ignore", ResourceWarning)
            write_after_close()
            gc.collect()
    finally:
        os.close(read_fd)


def test_write_after_a_drained_close(loop, loop_kind):
    transport, _, peer = _connected(loop)
    peer.setblocking(False)
    with peer:
        transport.write(b"x" * 3_000_000)
        transport.close()
        while transport.get_write_buffer_size():
            try:
                peer.recv(1 << 20)
            except BlockingIOError:
                pass
            loop.run_until_complete(asyncio.sleep(0.001))
        loop.run_until_complete(asyncio.sleep(0.01))
        if loop_kind == "asyncio" and sys.version_info < (3, 14):
            # asyncio 3.11's transport has forgotten its loop (a knowing difference).
            with pytest.raises(AttributeError):
                transport.write(b"y")
        else:
            assert transport.write(b"y") is None
            assert transport.abort() is None


# -- memoryviews that are not contiguous ------------------------------------------------


def _connected(loop, protocol_factory=asyncio.Protocol):
    ours, peer = socket.socketpair()
    transport, protocol = loop.run_until_complete(
        loop.connect_accepted_socket(protocol_factory, ours)
    )
    return transport, protocol, peer


class LostRecorder(asyncio.Protocol):
    def __init__(self):
        self.lost = []

    def connection_lost(self, exc):
        self.lost.append(exc)


def test_write_of_a_strided_memoryview_is_a_fatal_error(loop, exc_handler):
    transport, protocol, peer = _connected(loop, LostRecorder)
    with peer:
        transport.write(memoryview(b"abcdef")[::2])
        loop.run_until_complete(asyncio.sleep(0.01))
        context = exc_handler.pop_one()
        assert context["message"] == "Fatal write error on socket transport"
        assert isinstance(context["exception"], BufferError)
        assert len(protocol.lost) == 1 and isinstance(protocol.lost[0], BufferError)
        assert peer.recv(100) == b""


def test_writelines_with_a_strided_memoryview(loop, exc_handler):
    transport, protocol, peer = _connected(loop, LostRecorder)
    with peer:
        if sys.version_info < (3, 12):
            # asyncio writes b''.join(list_of_data), which refuses the view.
            with pytest.raises(TypeError, match="sequence item 0"):
                transport.writelines([memoryview(b"abcdef")[::2]])
            assert exc_handler.contexts == []
            transport.close()
            loop.run_until_complete(asyncio.sleep(0.01))
            assert protocol.lost == [None]
        else:
            transport.writelines([memoryview(b"abcdef")[::2]])
            context = exc_handler.pop_one()
            assert isinstance(context["exception"], BufferError)
            loop.run_until_complete(asyncio.sleep(0.01))
            assert len(protocol.lost) == 1 and isinstance(protocol.lost[0], BufferError)


def test_writelines_of_something_not_bytes_like(loop):
    transport, protocol, peer = _connected(loop)
    with peer:
        with pytest.raises(TypeError):
            transport.writelines(["text"])
        transport.close()
        loop.run_until_complete(asyncio.sleep(0.01))


def _received(peer) -> bytes:
    data = b""
    while True:
        try:
            chunk = peer.recv(1 << 16)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def test_writelines_failing_on_an_item_keeps_the_items_before_it_on_3_15(loop):
    # asyncio 3.15 queues each item as it takes it: those before the one that fails
    # stay queued, unsent and with no writer watch, until the next writelines()
    # flushes the queue; 3.11 (a join) and 3.12-3.14 (all taken first) queue nothing.
    kept = sys.version_info >= (3, 15)
    transport, _, peer = _connected(loop)
    with peer:
        peer.setblocking(False)
        with pytest.raises(TypeError):
            transport.writelines([b"a", "not bytes"])
        assert transport.get_write_buffer_size() == (1 if kept else 0)
        transport.write(b"bc")
        assert transport.get_write_buffer_size() == (3 if kept else 0)
        loop.run_until_complete(asyncio.sleep(0.01))
        assert _received(peer) == (b"" if kept else b"bc")
        transport.writelines([b"d"])
        assert transport.get_write_buffer_size() == 0
        loop.run_until_complete(asyncio.sleep(0.01))
        assert _received(peer) == (b"abcd" if kept else b"d")
        transport.close()
        loop.run_until_complete(asyncio.sleep(0.01))


def _write_pipe(loop):
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    pipe = os.fdopen(write_fd, "wb", buffering=0)
    transport, protocol = loop.run_until_complete(loop.connect_write_pipe(LostRecorder, pipe))
    return transport, protocol, read_fd


def test_pipe_write_of_a_strided_memoryview_is_a_fatal_error(loop, exc_handler):
    transport, protocol, read_fd = _write_pipe(loop)
    try:
        transport.write(memoryview(b"")[::2])  # empty: nothing to write
        transport.write(memoryview(b"abcdef")[::2])
        context = exc_handler.pop_one()
        assert context["message"] == "Fatal write error on pipe transport"
        assert isinstance(context["exception"], BufferError)
        loop.run_until_complete(asyncio.sleep(0.01))
        assert len(protocol.lost) == 1 and isinstance(protocol.lost[0], BufferError)
    finally:
        os.close(read_fd)


def test_pipe_write_of_a_strided_memoryview_behind_queued_data(loop, exc_handler):
    # asyncio extends its bytearray queue with it, which refuses it.
    transport, protocol, read_fd = _write_pipe(loop)
    try:
        transport.write(b"x" * 1_000_000)
        queued = transport.get_write_buffer_size()
        assert queued > 0
        with pytest.raises(TypeError):
            transport.write(memoryview(b"abcdef")[::2])
        assert transport.get_write_buffer_size() == queued
        assert exc_handler.contexts == []
        transport.abort()
        loop.run_until_complete(asyncio.sleep(0.01))
        assert protocol.lost == [None]
    finally:
        os.close(read_fd)


def test_pipe_writelines_refuses_a_strided_memoryview(loop, exc_handler):
    # asyncio writes b''.join(list_of_data), which refuses even an empty one.
    transport, protocol, read_fd = _write_pipe(loop)
    try:
        for view in (memoryview(b"abcdef")[::2], memoryview(b"")[::2]):
            with pytest.raises(TypeError, match="sequence item 1"):
                transport.writelines([b"ab", view])
        with pytest.raises(BlockingIOError):
            os.read(read_fd, 100)
        transport.close()
        loop.run_until_complete(asyncio.sleep(0.01))
        assert protocol.lost == [None]
        assert exc_handler.contexts == []
    finally:
        os.close(read_fd)


# -- water marks: Python numbers, asyncio's checks ---------------------------------------


@pytest.mark.parametrize(
    ("high", "low", "limits"),
    [
        (10.5, 2.5, (2.5, 10.5)),
        (2**70, None, (2**68, 2**70)),
        (math.inf, 0, (0, math.inf)),
    ],
)
def test_write_buffer_limits_take_any_real_numbers(loop, high, low, limits):
    transport, _, peer = _connected(loop)
    with peer:
        transport.set_write_buffer_limits(high, low)
        assert transport.get_write_buffer_limits() == limits
        transport.close()
        loop.run_until_complete(asyncio.sleep(0.01))


@pytest.mark.parametrize(
    ("high", "low"), [(math.nan, None), (1, 5), (-1, None), (None, -4), (math.inf, None)]
)
def test_write_buffer_limits_out_of_range_are_value_errors(loop, high, low):
    transport, _, peer = _connected(loop)
    with peer:
        with pytest.raises(ValueError, match=r"must be >= low .* must be >= 0"):
            transport.set_write_buffer_limits(high, low)
        transport.close()
        loop.run_until_complete(asyncio.sleep(0.01))


def test_float_water_mark_pauses_as_its_floor(loop):
    class Pauses(asyncio.Protocol):
        paused = 0

        def pause_writing(self):
            self.paused += 1

    transport, protocol, peer = _connected(loop, Pauses)
    with peer:
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        transport.set_write_buffer_limits(high=0.5)
        transport.write(b"x" * 10_000_000)
        assert protocol.paused == 1
        transport.abort()
        loop.run_until_complete(asyncio.sleep(0.01))


# -- timers and debug ---------------------------------------------------------------------


def test_call_later_with_a_delay_that_is_not_a_number(loop):
    with pytest.raises(TypeError, match=r"unsupported operand type\(s\) for \+"):
        loop.call_later("1", print)


def test_call_later_with_a_huge_int(loop):
    with pytest.raises(OverflowError):
        loop.call_later(10**400, print)


@pytest.mark.parametrize("method", ["call_later", "call_at"])
def test_nan_timer_runs_at_once(loop, method):
    fired = []
    getattr(loop, method)(math.nan, fired.append, 1)
    loop.run_until_complete(asyncio.sleep(0))
    loop.run_until_complete(asyncio.sleep(0))
    assert fired == [1]


@pytest.mark.parametrize("value", [None, 0, 1, "yes"])
def test_get_debug_returns_what_set_debug_got(loop, value):
    loop.set_debug(value)
    assert loop.get_debug() is value


# -- name resolution -----------------------------------------------------------------------


def test_getnameinfo_refuses_an_ipv4_4_tuple(loop):
    with pytest.raises(OSError, match="IPv4 sockaddr must be 2 tuple"):
        loop.run_until_complete(loop.getnameinfo(("127.0.0.1", 80, 0, 0)))


@pytest.mark.parametrize("flags", ["x", 1.5, None])
def test_getnameinfo_flags_that_are_not_ints(loop, flags):
    with pytest.raises(TypeError, match="cannot be interpreted as an integer"):
        loop.run_until_complete(loop.getnameinfo(("127.0.0.1", 80), flags))


def test_getnameinfo_needs_a_numeric_host(loop):
    with pytest.raises(socket.gaierror):
        loop.run_until_complete(loop.getnameinfo(("localhost", 80)))


@pytest.mark.parametrize(
    "sockaddr", [("127.0.0.1", 70000), ("127.0.0.1", -1), ("127.0.0.1", 2**40), ("::1", 80, -1, 0)]
)
def test_getnameinfo_odd_ports_and_flowinfo_as_socket_getnameinfo(loop, sockaddr):
    flags = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
    try:
        expected = ("ok", socket.getnameinfo(sockaddr, flags))
    except Exception as exc:  # noqa: BLE001 (the socket module's answer, whatever it is)
        expected = (type(exc), str(exc))
    try:
        got = ("ok", loop.run_until_complete(loop.getnameinfo(sockaddr, flags)))
    except Exception as exc:  # noqa: BLE001
        got = (type(exc), str(exc))
    assert got == expected


@pytest.mark.parametrize(
    ("keyword", "value", "error"),
    [("flags", "x", TypeError), ("family", 1.5, TypeError), ("proto", 2**40, OverflowError)],
)
def test_getaddrinfo_int_arguments_of_a_name_lookup(loop, keyword, value, error):
    with pytest.raises(error):
        loop.run_until_complete(loop.getaddrinfo("localhost", 80, **{keyword: value}))


@pytest.mark.parametrize("port", [2**70, -(2**64), True, bytearray(b"80"), b"80", "80"])
def test_getaddrinfo_int_port_of_a_name_lookup(loop, port):
    try:
        expected = ("ok", socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM))
    except Exception as exc:  # noqa: BLE001 (the socket module's answer, whatever it is)
        expected = (type(exc), str(exc))
    try:
        got = (
            "ok",
            loop.run_until_complete(loop.getaddrinfo("localhost", port, type=socket.SOCK_STREAM)),
        )
    except Exception as exc:  # noqa: BLE001
        got = (type(exc), str(exc))
    assert got == expected


@pytest.mark.parametrize("host", [bytearray(b"localhost"), 123])
def test_getaddrinfo_host_of_a_wrong_type(loop, host):
    with pytest.raises(TypeError, match=r"^getaddrinfo\(\) argument 1 must be string or None$"):
        loop.run_until_complete(loop.getaddrinfo(host, 80))


# -- a protocol factory that raises in a server --------------------------------------------


@pytest.mark.parametrize("debug", [False, True])
def test_failing_protocol_factory_is_reported_only_in_debug_mode(loop, exc_handler, debug):
    loop.set_debug(debug)

    def factory():
        raise ZeroDivisionError("factory")

    async def main():
        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    with warnings.catch_warnings():
        # asyncio leaves the accepted socket to the garbage collector (ferroloop closes
        # it); its finalizer's ResourceWarning is expected.
        warnings.simplefilter("ignore", ResourceWarning)
        loop.run_until_complete(main())
        contexts = exc_handler.pop(1 if debug else 0)
        if debug:
            assert isinstance(contexts[0]["exception"], ZeroDivisionError)
        del contexts
        gc.collect()


# -- BufferedProtocol.get_buffer() results that cannot be read into -------------------------


@pytest.mark.parametrize(
    "make_buffer",
    [lambda: b"\0" * 100, lambda: memoryview(bytearray(200))[::2]],
    ids=["read-only", "strided"],
)
def test_get_buffer_unusable_buffer_is_a_read_error(loop, exc_handler, make_buffer):
    class Buffered(asyncio.BufferedProtocol):
        lost = None

        def get_buffer(self, sizehint):
            return make_buffer()

        def buffer_updated(self, nbytes):
            raise AssertionError("nothing can be read into that buffer")

        def connection_lost(self, exc):
            self.lost = exc

    transport, protocol, peer = _connected(loop, Buffered)
    with peer:
        peer.send(b"data")
        loop.run_until_complete(asyncio.sleep(0.01))
        context = exc_handler.pop_one()
        assert context["message"] == "Fatal read error on socket transport"
        assert isinstance(context["exception"], TypeError)
        assert "read-write bytes-like object" in str(context["exception"])
        assert isinstance(protocol.lost, TypeError)


def test_get_buffer_returning_a_non_buffer_is_a_get_buffer_failure(loop, exc_handler):
    class Buffered(asyncio.BufferedProtocol):
        def get_buffer(self, sizehint):
            return 12345

        def buffer_updated(self, nbytes):
            raise AssertionError("unreachable")

    transport, protocol, peer = _connected(loop, Buffered)
    with peer:
        peer.send(b"data")
        loop.run_until_complete(asyncio.sleep(0.01))
        context = exc_handler.pop_one()
        assert context["message"] == "Fatal error: protocol.get_buffer() call failed."
        assert isinstance(context["exception"], TypeError)
