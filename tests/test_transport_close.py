"""Stream transport: close, abort, write_eof, peer resets, and get_extra_info."""

from __future__ import annotations

import logging
import select
import socket

import pytest
from support import PATIENCE, run_once, run_until
from transport_support import RecordingProtocol, idle

# -- close ----------------------------------------------------------------------------------


def test_close_with_nothing_queued(stream_kit):
    loop = stream_kit.loop
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    assert not transport.is_closing()
    transport.close()
    assert transport.is_closing()
    # connection_lost is not called from inside close(): the loop calls it.
    assert protocol.events == ["connection_made"]
    run_once(loop)
    assert protocol.events == ["connection_made", "connection_lost"]
    assert protocol.lost == [None]
    idle(loop)
    assert protocol.count("connection_lost") == 1
    peer.drain()
    assert peer.eof and bytes(peer.data) == b""


def test_close_flushes_queued_data_then_closes(stream_kit):
    loop = stream_kit.loop
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    data = stream_kit.fill(transport)
    transport.write(b"the end")
    data += b"the end"
    transport.close()
    assert transport.is_closing()
    idle(loop)
    # The peer is not reading: the queue cannot drain, so the connection stays.
    assert protocol.lost == []
    assert transport.get_write_buffer_size() > 0
    peer.drain()
    assert peer.eof
    assert bytes(peer.data) == data
    run_until(loop, lambda: protocol.lost)
    assert protocol.lost == [None]
    idle(loop)
    assert protocol.events == [
        "connection_made",
        "pause_writing",
        "resume_writing",
        "connection_lost",
    ]


def test_close_twice_is_harmless(stream_kit):
    protocol = RecordingProtocol()
    transport, _ = stream_kit.open(protocol)
    transport.close()
    transport.close()
    run_until(stream_kit.loop, lambda: protocol.lost)
    transport.close()
    idle(stream_kit.loop)
    assert protocol.lost == [None]


def test_close_then_abort_calls_connection_lost_once(stream_kit):
    protocol = RecordingProtocol()
    transport, _ = stream_kit.open(protocol)
    transport.close()
    transport.abort()
    run_until(stream_kit.loop, lambda: protocol.lost)
    idle(stream_kit.loop)
    assert protocol.lost == [None]


def test_abort_while_close_flushes(stream_kit):
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    data = stream_kit.fill(transport)
    transport.close()
    transport.abort()
    assert transport.get_write_buffer_size() == 0
    run_until(stream_kit.loop, lambda: protocol.lost)
    peer.drain()
    assert len(peer.data) < len(data)
    assert protocol.lost == [None]
    assert protocol.count("connection_lost") == 1


def test_close_before_connection_made(stream_kit):
    loop = stream_kit.loop
    a, _ = stream_kit.socket_pair()
    protocol = RecordingProtocol()
    waiter = loop.create_future()
    transport = stream_kit.transport(a, protocol, waiter=waiter)
    transport.close()
    assert protocol.events == []
    run_until(loop, lambda: protocol.lost)
    # connection_made still comes first, then connection_lost.
    assert protocol.events == ["connection_made", "connection_lost"]
    assert protocol.transport is transport
    assert waiter.done() and waiter.result() is None


def test_close_inside_data_received(stream_kit):
    class Closing(RecordingProtocol):
        def data_received(self, data):
            super().data_received(data)
            self.transport.write(b"reply")
            self.transport.close()

    protocol = Closing()
    transport, peer = stream_kit.open(protocol)
    peer.send(b"request")
    peer.drain()
    assert peer.eof and bytes(peer.data) == b"reply"
    run_until(stream_kit.loop, lambda: protocol.lost)
    assert protocol.events == ["connection_made", "data_received", "connection_lost"]
    assert protocol.lost == [None]


# -- abort ----------------------------------------------------------------------------------


def test_abort_drops_queued_data(stream_kit):
    loop = stream_kit.loop
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    data = stream_kit.fill(transport)
    queued = transport.get_write_buffer_size()
    assert queued > 0
    transport.abort()
    assert transport.is_closing()
    assert transport.get_write_buffer_size() == 0
    assert protocol.lost == []  # called from the loop
    run_until(loop, lambda: protocol.lost)
    assert protocol.lost == [None]
    peer.drain()
    # Only what the kernel had already accepted arrives.
    assert len(peer.data) <= len(data) - queued
    assert bytes(peer.data) == data[: len(peer.data)]
    idle(loop)
    assert protocol.count("connection_lost") == 1
    assert "resume_writing" not in protocol.events


def test_abort_twice_and_close_after_abort(stream_kit):
    protocol = RecordingProtocol()
    transport, _ = stream_kit.open(protocol)
    transport.abort()
    transport.abort()
    transport.close()
    run_until(stream_kit.loop, lambda: protocol.lost)
    transport.abort()
    transport.close()
    idle(stream_kit.loop)
    assert protocol.lost == [None]


def test_abort_inside_data_received(stream_kit):
    class Aborting(RecordingProtocol):
        def data_received(self, data):
            super().data_received(data)
            self.transport.abort()

    protocol = Aborting()
    _, peer = stream_kit.open(protocol)
    peer.send(b"x" * 1_000_000)
    run_until(stream_kit.loop, lambda: protocol.lost)
    idle(stream_kit.loop)
    assert protocol.count("data_received") == 1
    assert protocol.lost == [None]


# -- write_eof ------------------------------------------------------------------------------


def test_can_write_eof(stream_kit):
    transport, _ = stream_kit.open(RecordingProtocol())
    assert transport.can_write_eof() is True


def test_write_eof_with_nothing_queued_shuts_down_at_once(stream_kit):
    loop = stream_kit.loop
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    transport.write(b"data")
    transport.write_eof()
    # The shutdown happens inside write_eof(): the peer sees EOF without the loop.
    peer.recv_at_least_now(4)
    peer.recv_now()
    assert peer.eof and bytes(peer.data) == b"data"
    assert not transport.is_closing()
    transport.write_eof()  # twice is harmless
    # Half-closed: the transport still reads.
    peer.send(b"answer")
    run_until(loop, lambda: protocol.data == b"answer")
    peer.shutdown_write()
    run_until(loop, lambda: protocol.lost)
    assert protocol.events == [
        "connection_made",
        "data_received",
        "eof_received",
        "connection_lost",
    ]
    assert protocol.lost == [None]


def test_write_eof_waits_for_the_queue_to_drain(stream_kit):
    loop = stream_kit.loop
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    data = stream_kit.fill(transport)
    transport.write_eof()
    assert transport.get_write_buffer_size() > 0
    assert not transport.is_closing()
    peer.drain()
    assert peer.eof
    assert bytes(peer.data) == data
    assert transport.get_write_buffer_size() == 0
    assert protocol.lost == []
    peer.send(b"still open")
    run_until(loop, lambda: protocol.data == b"still open")
    transport.close()
    run_until(loop, lambda: protocol.lost)
    assert protocol.lost == [None]


def test_write_eof_after_close_is_a_no_op(stream_kit):
    protocol = RecordingProtocol()
    transport, _ = stream_kit.open(protocol)
    transport.close()
    transport.write_eof()
    run_until(stream_kit.loop, lambda: protocol.lost)
    transport.write_eof()
    assert protocol.lost == [None]


def test_close_after_write_eof(stream_kit):
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    data = stream_kit.fill(transport)
    transport.write_eof()
    transport.close()
    peer.drain()
    assert peer.eof and bytes(peer.data) == data
    run_until(stream_kit.loop, lambda: protocol.lost)
    assert protocol.lost == [None]


def test_half_close_between_two_transports(stream_kit):
    loop = stream_kit.loop
    client = RecordingProtocol()

    class Server(RecordingProtocol):
        def eof_received(self):
            super().eof_received()
            self.transport.write(b"got " + self.data)
            self.transport.close()
            return True

    server = Server()
    client_transport, server_transport = stream_kit.open_both(client, server)
    client_transport.write(b"question")
    client_transport.write_eof()
    run_until(loop, lambda: client.lost and server.lost)
    assert client.data == b"got question"
    assert client.events[-2:] == ["eof_received", "connection_lost"]
    assert client.lost == [None]
    assert server.lost == [None]


# -- the peer goes away ---------------------------------------------------------------------


def test_peer_close_while_idle(stream_kit):
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    peer.close()
    run_until(stream_kit.loop, lambda: protocol.lost)
    assert protocol.events == ["connection_made", "eof_received", "connection_lost"]
    assert protocol.lost == [None]
    assert transport.is_closing()


def test_peer_reset_mid_write(stream_kit):
    loop = stream_kit.loop
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    stream_kit.fill(transport)
    assert transport.get_write_buffer_size() > 0
    peer.reset()
    run_until(loop, lambda: protocol.lost)
    (exc,) = protocol.lost
    assert isinstance(exc, (ConnectionResetError, BrokenPipeError)), exc
    # An OSError is not reported to the exception handler (the exc_handler fixture
    # fails the test on any call); asyncio only logs it in debug mode.
    assert transport.is_closing()
    assert transport.get_write_buffer_size() == 0
    idle(loop)
    assert protocol.count("connection_lost") == 1


def test_peer_reset_while_reading(stream_kit):
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    peer.send(b"some data")
    run_until(stream_kit.loop, lambda: protocol.data == b"some data")
    # Unread data makes the close a reset for Unix sockets too (Linux).
    transport.write(b"never read by the peer")
    peer.reset()
    run_until(stream_kit.loop, lambda: protocol.lost)
    (exc,) = protocol.lost
    assert isinstance(exc, ConnectionResetError), exc
    assert protocol.events == ["connection_made", "data_received", "connection_lost"]


def test_peer_reset_seen_by_the_write_path(stream_kit):
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    transport.pause_reading()  # only the queued writes can notice
    stream_kit.fill(transport)
    peer.reset()
    run_until(stream_kit.loop, lambda: protocol.lost)
    (exc,) = protocol.lost
    assert isinstance(exc, (ConnectionResetError, BrokenPipeError)), exc
    assert transport.get_write_buffer_size() == 0
    assert protocol.events == ["connection_made", "pause_writing", "connection_lost"]


def test_write_to_a_reset_peer_fails_inside_write(stream_kit):
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    transport.pause_reading()
    transport.write(b"unread")
    peer.reset()
    # Wait (without the loop) until the kernel has delivered the reset.
    fd = transport.get_extra_info("socket").fileno()
    assert select.select([fd], [], [], PATIENCE)[0]
    # The loop has not noticed; the immediate send inside write() fails, and write()
    # itself does not raise: the transport closes and reports through connection_lost.
    transport.write(b"more")
    assert transport.is_closing()
    assert transport.get_write_buffer_size() == 0
    assert protocol.lost == []
    run_until(stream_kit.loop, lambda: protocol.lost)
    (exc,) = protocol.lost
    assert isinstance(exc, (ConnectionResetError, BrokenPipeError)), exc


def test_writes_after_a_reset_are_dropped(stream_kit, caplog):
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    stream_kit.fill(transport)
    peer.reset()
    run_until(stream_kit.loop, lambda: protocol.lost)
    caplog.set_level(logging.WARNING, logger="asyncio")
    for _ in range(4):
        transport.write(b"dropped")
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
    transport.write(b"dropped")
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == [
        "socket.send() raised exception."
    ]
    assert transport.get_write_buffer_size() == 0


# -- get_extra_info -------------------------------------------------------------------------


def test_get_extra_info(stream_kit):
    a, b = stream_kit.socket_pair()
    fileno, family, sockname, peername = a.fileno(), a.family, a.getsockname(), a.getpeername()
    transport = stream_kit.transport(a, RecordingProtocol())
    assert transport.get_extra_info("sockname") == sockname
    assert transport.get_extra_info("peername") == peername
    assert transport.get_extra_info("peername") == b.getsockname()
    sock = transport.get_extra_info("socket")
    assert sock.fileno() == fileno
    assert sock.family == family
    assert sock.type == socket.SOCK_STREAM
    assert sock.getsockname() == sockname
    assert sock.getpeername() == peername
    assert transport.get_extra_info("no such key") is None
    assert transport.get_extra_info("no such key", "default") == "default"
    assert transport.get_extra_info("peercert") is None
    assert transport.get_extra_info("sslcontext", 42) == 42


def test_get_extra_info_values_for_each_kind(stream_kit):
    transport, peer = stream_kit.open(RecordingProtocol())
    if stream_kit.kind == "tcp":
        host, port = transport.get_extra_info("sockname")
        assert host == "127.0.0.1" and port > 0
        assert transport.get_extra_info("peername") == peer.sock.getsockname()
        # asyncio turns Nagle's algorithm off on TCP transports.
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    else:
        # An unnamed Unix socket's address is the empty string.
        assert transport.get_extra_info("sockname") == ""
        assert transport.get_extra_info("peername") == ""


def test_get_extra_info_includes_extra(stream_kit):
    a, _ = stream_kit.socket_pair()
    transport = stream_kit.transport(a, RecordingProtocol(), extra={"custom": 7})
    assert transport.get_extra_info("custom") == 7
    assert transport.get_extra_info("socket") is not None


def test_get_extra_info_after_close(stream_kit):
    protocol = RecordingProtocol()
    transport, _ = stream_kit.open(protocol)
    sockname = transport.get_extra_info("sockname")
    peername = transport.get_extra_info("peername")
    transport.close()
    run_until(stream_kit.loop, lambda: protocol.lost)
    # The values are captured when the transport is made.
    assert transport.get_extra_info("sockname") == sockname
    assert transport.get_extra_info("peername") == peername
    assert transport.get_extra_info("socket").fileno() == -1


def test_os_errors_are_logged_only_in_debug_mode(stream_kit, caplog):
    loop = stream_kit.loop
    loop.set_debug(True)
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    caplog.set_level(logging.DEBUG, logger="asyncio")
    transport.write(b"never read by the peer")
    peer.reset()
    run_until(loop, lambda: protocol.lost)
    assert isinstance(protocol.lost[0], ConnectionResetError)
    records = [r for r in caplog.records if r.name == "asyncio" and "Fatal" in r.getMessage()]
    assert len(records) == 1
    (record,) = records
    assert record.levelno == logging.DEBUG
    assert record.getMessage().endswith(": Fatal read error on socket transport")
    assert record.exc_info[1] is protocol.lost[0]
    loop.set_debug(False)


@pytest.mark.parametrize("how", ["close", "abort", "peer_eof"])
def test_the_transport_closes_the_socket_object(stream_kit, how):
    a, b = stream_kit.socket_pair()
    protocol = RecordingProtocol()
    transport = stream_kit.transport(a, protocol)
    assert a.fileno() != -1
    if how == "close":
        transport.close()
    elif how == "abort":
        transport.abort()
    else:
        b.shutdown(socket.SHUT_WR)
    run_until(stream_kit.loop, lambda: protocol.lost)
    # The socket object the transport was given is closed, not just its descriptor.
    assert a.fileno() == -1
    assert transport.get_extra_info("socket").fileno() == -1


def test_abandoned_unclosed_transport_warns_and_closes_its_socket(loop):
    import asyncio
    import gc

    from transport_support import make_transport

    mine, peer = socket.socketpair()
    mine.setblocking(False)
    transport = make_transport(loop, mine, asyncio.Protocol())
    run_once(loop)
    transport.pause_reading()  # the loop no longer holds it
    with pytest.warns(ResourceWarning, match="unclosed transport"):
        del transport
        gc.collect()
    assert mine.fileno() == -1
    peer.close()
