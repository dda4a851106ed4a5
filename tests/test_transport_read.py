"""Stream transport: the read path (data_received, BufferedProtocol, EOF, pause/resume,
protocol errors, switching protocols)."""

from __future__ import annotations

import asyncio
import random

import pytest
from support import run_once, run_until
from transport_support import RecordingBufferedProtocol, RecordingProtocol, idle


def recording_handler(loop, exc_handler, protocol):
    """Install an exception handler that forwards to ``exc_handler`` and returns, per call,
    the protocol's events at the moment of the call."""
    seen = []

    def handler(loop, context):
        seen.append(list(protocol.events))
        exc_handler(loop, context)

    loop.set_exception_handler(handler)
    return seen


# -- data_received -------------------------------------------------------------------------


def test_chunks_concatenate_to_what_was_sent(stream_kit):
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    data = random.Random(1).randbytes(3 * 1024 * 1024 + 17)
    for i in range(0, len(data), 100_000):
        peer.send(data[i : i + 100_000])
    run_until(stream_kit.loop, lambda: protocol.received >= len(data))
    assert protocol.data == data
    # Each chunk is one bytes object.
    assert {type(chunk) for chunk in protocol.chunks} == {bytes}
    assert all(protocol.chunks)
    assert protocol.events.count("connection_made") == 1
    assert not transport.is_closing()


def test_large_reads_stay_within_asyncios_read_size_and_end_with_eof(stream_kit):
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    data = random.Random(2).randbytes(2 * 1024 * 1024 + 5)
    # Large reads first (ferroloop then reads straight into a bytes of the size waiting),
    # then a small one, then EOF right behind the data.
    peer.send(data[:-5])
    run_until(stream_kit.loop, lambda: protocol.received >= len(data) - 5)
    peer.send(data[-5:])
    peer.shutdown_write()
    run_until(stream_kit.loop, lambda: protocol.lost)
    assert protocol.data == data
    assert max(len(chunk) for chunk in protocol.chunks) <= 256 * 1024
    assert protocol.events[-2:] == ["eof_received", "connection_lost"]
    assert protocol.lost == [None]
    assert transport.is_closing()


def test_small_messages_arrive_in_order(stream_kit):
    protocol = RecordingProtocol()
    _, peer = stream_kit.open(protocol)
    expected = b""
    for i in range(50):
        message = f"message {i};".encode()
        expected += message
        peer.send(message)
        run_once(stream_kit.loop)
    run_until(stream_kit.loop, lambda: protocol.data == expected)


def test_data_before_eof_is_delivered_first(stream_kit):
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    peer.send(b"last words")
    peer.shutdown_write()
    run_until(stream_kit.loop, lambda: protocol.lost)
    assert protocol.data == b"last words"
    assert protocol.events[0] == "connection_made"
    assert protocol.events[-2:] == ["eof_received", "connection_lost"]
    assert protocol.count("eof_received") == 1
    assert protocol.lost == [None]


# -- pause_reading / resume_reading ---------------------------------------------------------


def test_pause_and_resume_reading(stream_kit):
    loop = stream_kit.loop
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    assert transport.is_reading()
    transport.pause_reading()
    assert not transport.is_reading()
    transport.pause_reading()  # idempotent
    assert not transport.is_reading()
    peer.send(b"while paused")
    idle(loop)
    assert protocol.chunks == []
    transport.resume_reading()
    assert transport.is_reading()
    transport.resume_reading()  # idempotent
    assert transport.is_reading()
    run_until(loop, lambda: protocol.data == b"while paused")
    # Pausing again holds back EOF too.
    transport.pause_reading()
    peer.shutdown_write()
    idle(loop)
    assert "eof_received" not in protocol.events
    assert not protocol.lost
    transport.resume_reading()
    run_until(loop, lambda: protocol.lost)
    assert protocol.events[-2:] == ["eof_received", "connection_lost"]


def test_pause_reading_inside_data_received(stream_kit):
    loop = stream_kit.loop

    class Pausing(RecordingProtocol):
        def data_received(self, data):
            super().data_received(data)
            self.transport.pause_reading()

    protocol = Pausing()
    transport, peer = stream_kit.open(protocol)
    data = bytes(range(256)) * 4096  # 1 MiB: more than one recv
    peer.send(data)
    run_until(loop, lambda: protocol.chunks)
    idle(loop)
    assert len(protocol.chunks) == 1
    assert not transport.is_reading()
    while protocol.received < len(data):
        count = len(protocol.chunks)
        transport.resume_reading()
        run_until(loop, lambda count=count: len(protocol.chunks) > count)
        assert len(protocol.chunks) == count + 1
    assert protocol.data == data


@pytest.mark.asyncio_since((3, 11))  # asyncio 3.10 still delivers data while paused
def test_pause_reading_before_connection_made(stream_kit):
    loop = stream_kit.loop
    a, b = stream_kit.socket_pair()
    b.send(b"early")
    protocol = RecordingProtocol()
    transport = stream_kit.transport(a, protocol, wait=False)
    transport.pause_reading()
    assert not transport.is_reading()
    idle(loop)
    assert protocol.events == ["connection_made"]
    transport.resume_reading()
    run_until(loop, lambda: protocol.data == b"early")


def test_pause_and_resume_reading_after_close_are_harmless(stream_kit):
    protocol = RecordingProtocol()
    transport, _ = stream_kit.open(protocol)
    transport.close()
    assert not transport.is_reading()
    transport.pause_reading()
    transport.resume_reading()
    assert not transport.is_reading()
    run_until(stream_kit.loop, lambda: protocol.lost)
    transport.pause_reading()
    transport.resume_reading()
    assert not transport.is_reading()
    assert protocol.lost == [None]


def test_close_stops_reading_at_once(stream_kit):
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    peer.send(b"unread")
    transport.close()
    run_until(stream_kit.loop, lambda: protocol.lost)
    assert protocol.chunks == []
    assert protocol.events == ["connection_made", "connection_lost"]


# -- eof_received ---------------------------------------------------------------------------


@pytest.mark.parametrize("result", [None, False])
def test_eof_received_falsy_closes_the_transport(stream_kit, result):
    protocol = RecordingProtocol(eof_result=result)
    transport, peer = stream_kit.open(protocol)
    peer.shutdown_write()
    run_until(stream_kit.loop, lambda: "eof_received" in protocol.events)
    assert transport.is_closing()
    run_until(stream_kit.loop, lambda: protocol.lost)
    assert protocol.events == ["connection_made", "eof_received", "connection_lost"]
    assert protocol.lost == [None]
    peer.drain()
    assert peer.eof


def test_eof_received_true_keeps_the_transport_open_for_writing(stream_kit):
    loop = stream_kit.loop
    protocol = RecordingProtocol(eof_result=True)
    transport, peer = stream_kit.open(protocol)
    peer.send(b"request")
    peer.shutdown_write()
    run_until(loop, lambda: "eof_received" in protocol.events)
    idle(loop)
    assert not transport.is_closing()
    assert not protocol.lost
    assert protocol.count("eof_received") == 1
    transport.write(b"response")
    peer.drain(8)
    assert bytes(peer.data) == b"response"
    transport.close()
    run_until(loop, lambda: protocol.lost)
    assert protocol.events == [
        "connection_made",
        "data_received",
        "eof_received",
        "connection_lost",
    ]
    assert protocol.lost == [None]
    peer.drain()
    assert peer.eof and bytes(peer.data) == b"response"


def test_eof_received_true_then_write_eof(stream_kit):
    protocol = RecordingProtocol(eof_result=True)
    transport, peer = stream_kit.open(protocol)
    peer.shutdown_write()
    run_until(stream_kit.loop, lambda: "eof_received" in protocol.events)
    transport.write(b"bye")
    transport.write_eof()
    peer.drain()
    assert peer.eof and bytes(peer.data) == b"bye"
    transport.close()
    run_until(stream_kit.loop, lambda: protocol.lost)
    assert protocol.lost == [None]


# -- exceptions from the protocol -----------------------------------------------------------


def test_exception_in_data_received(stream_kit, exc_handler):
    loop = stream_kit.loop
    error = ValueError("boom")

    class Failing(RecordingProtocol):
        def data_received(self, data):
            super().data_received(data)
            raise error

    protocol = Failing()
    transport, peer = stream_kit.open(protocol)
    seen = recording_handler(loop, exc_handler, protocol)
    peer.send(b"first")
    run_until(loop, lambda: protocol.lost)
    context = exc_handler.pop_one()
    assert context["message"] == "Fatal error: protocol.data_received() call failed."
    assert context["exception"] is error
    assert context["transport"] is transport
    assert context["protocol"] is protocol
    # The handler runs at once, connection_lost(exc) later, exactly once.
    assert seen == [["connection_made", "data_received"]]
    assert protocol.events == ["connection_made", "data_received", "connection_lost"]
    assert protocol.lost == [error]
    assert transport.is_closing()
    # The socket is closed: the peer reads EOF.
    peer.drain()
    assert peer.eof


def test_exception_in_eof_received(stream_kit, exc_handler):
    error = RuntimeError("eof failed")

    class Failing(RecordingProtocol):
        def eof_received(self):
            super().eof_received()
            raise error

    protocol = Failing()
    transport, peer = stream_kit.open(protocol)
    peer.shutdown_write()
    run_until(stream_kit.loop, lambda: protocol.lost)
    context = exc_handler.pop_one()
    assert context["message"] == "Fatal error: protocol.eof_received() call failed."
    assert context["exception"] is error
    assert context["transport"] is transport
    assert context["protocol"] is protocol
    assert protocol.lost == [error]
    assert protocol.events == ["connection_made", "eof_received", "connection_lost"]


def test_base_exception_in_data_received_is_handled_too(stream_kit, exc_handler):
    # Not KeyboardInterrupt/SystemExit: any other BaseException goes to the handler.
    class Custom(BaseException):
        pass

    error = Custom()

    class Failing(RecordingProtocol):
        def data_received(self, data):
            raise error

    protocol = Failing()
    _, peer = stream_kit.open(protocol)
    peer.send(b"x")
    run_until(stream_kit.loop, lambda: protocol.lost)
    context = exc_handler.pop_one()
    assert context["exception"] is error
    assert protocol.lost == [error]


# -- BufferedProtocol -----------------------------------------------------------------------


def test_buffered_protocol_receives_everything(stream_kit):
    protocol = RecordingBufferedProtocol(4096)
    transport, peer = stream_kit.open(protocol)
    data = random.Random(2).randbytes(300_000)
    peer.send(data)
    run_until(stream_kit.loop, lambda: len(protocol.received_data) >= len(data))
    assert protocol.data == data
    assert all(0 < n <= 4096 for n in protocol.nbytes)
    assert all(isinstance(hint, int) for hint in protocol.sizehints)
    # get_buffer() precedes every buffer_updated().
    calls = [e for e in protocol.events if e in ("get_buffer", "buffer_updated")]
    assert calls[0::2] == ["get_buffer"] * len(protocol.nbytes)
    assert calls[1::2] == ["buffer_updated"] * len(protocol.nbytes)
    peer.shutdown_write()
    run_until(stream_kit.loop, lambda: protocol.lost)
    assert protocol.events[-2:] == ["eof_received", "connection_lost"]
    assert protocol.lost == [None]
    assert transport.is_closing()


def test_buffered_protocol_may_return_memoryview_slices(stream_kit):
    class Slicing(asyncio.BufferedProtocol):
        def __init__(self):
            self.store = bytearray(10_000)
            self.pos = 0
            self.lost = []

        def get_buffer(self, sizehint):
            return memoryview(self.store)[self.pos : self.pos + 7]

        def buffer_updated(self, nbytes):
            self.pos += nbytes

        def connection_lost(self, exc):
            self.lost.append(exc)

    protocol = Slicing()
    _, peer = stream_kit.open(protocol)
    data = bytes(range(200)) * 25  # 5000 bytes, 7 at a time
    peer.send(data)
    run_until(stream_kit.loop, lambda: protocol.pos >= len(data))
    assert bytes(protocol.store[: protocol.pos]) == data


def test_buffered_protocol_eof_received_true_keeps_open(stream_kit):
    protocol = RecordingBufferedProtocol(eof_result=True)
    transport, peer = stream_kit.open(protocol)
    peer.send(b"abc")
    peer.shutdown_write()
    run_until(stream_kit.loop, lambda: "eof_received" in protocol.events)
    assert protocol.data == b"abc"
    assert not transport.is_closing()
    transport.write(b"reply")
    peer.drain(5)
    assert bytes(peer.data) == b"reply"


def test_buffered_protocol_empty_buffer_is_an_error(stream_kit, exc_handler):
    class Empty(RecordingBufferedProtocol):
        def get_buffer(self, sizehint):
            super().get_buffer(sizehint)
            return bytearray()

    protocol = Empty()
    transport, peer = stream_kit.open(protocol)
    peer.send(b"data")
    run_until(stream_kit.loop, lambda: protocol.lost)
    context = exc_handler.pop_one()
    assert context["message"] == "Fatal error: protocol.get_buffer() call failed."
    exc = context["exception"]
    assert type(exc) is RuntimeError
    assert str(exc) == "get_buffer() returned an empty buffer"
    assert context["transport"] is transport
    assert context["protocol"] is protocol
    assert protocol.lost == [exc]
    assert "buffer_updated" not in protocol.events
    assert transport.is_closing()


def test_buffered_protocol_get_buffer_raises(stream_kit, exc_handler):
    error = MemoryError("no buffer")

    class Failing(RecordingBufferedProtocol):
        def get_buffer(self, sizehint):
            raise error

    protocol = Failing()
    _, peer = stream_kit.open(protocol)
    peer.send(b"data")
    run_until(stream_kit.loop, lambda: protocol.lost)
    context = exc_handler.pop_one()
    assert context["message"] == "Fatal error: protocol.get_buffer() call failed."
    assert context["exception"] is error
    assert protocol.lost == [error]


def test_buffered_protocol_buffer_updated_raises(stream_kit, exc_handler):
    error = ValueError("bad update")

    class Failing(RecordingBufferedProtocol):
        def buffer_updated(self, nbytes):
            super().buffer_updated(nbytes)
            raise error

    protocol = Failing()
    transport, peer = stream_kit.open(protocol)
    peer.send(b"data")
    run_until(stream_kit.loop, lambda: protocol.lost)
    context = exc_handler.pop_one()
    assert context["message"] == "Fatal error: protocol.buffer_updated() call failed."
    assert context["exception"] is error
    assert context["transport"] is transport
    assert context["protocol"] is protocol
    assert protocol.data == b"data"
    assert protocol.lost == [error]


# -- set_protocol / get_protocol ------------------------------------------------------------


def test_set_protocol_mid_stream(stream_kit):
    loop = stream_kit.loop
    second = RecordingProtocol()

    class First(RecordingProtocol):
        def data_received(self, data):
            super().data_received(data)
            self.transport.set_protocol(second)

    first = First()
    transport, peer = stream_kit.open(first)
    assert transport.get_protocol() is first
    peer.send(b"hello")
    run_until(loop, lambda: first.chunks)
    assert transport.get_protocol() is second
    peer.send(b"world")
    run_until(loop, lambda: second.data == b"world")
    assert first.data == b"hello"
    # The transport does not call connection_made on the new protocol.
    assert "connection_made" not in second.events
    peer.shutdown_write()
    run_until(loop, lambda: second.lost)
    assert second.events == ["data_received", "eof_received", "connection_lost"]
    assert first.lost == []
    assert second.lost == [None]


def test_set_protocol_from_protocol_to_buffered_protocol_and_back(stream_kit):
    loop = stream_kit.loop
    buffered = RecordingBufferedProtocol(16)
    plain = RecordingProtocol()
    first = RecordingProtocol()
    transport, peer = stream_kit.open(first)
    peer.send(b"one")
    run_until(loop, lambda: first.data == b"one")
    transport.set_protocol(buffered)
    assert transport.get_protocol() is buffered
    peer.send(b"two: through get_buffer")
    run_until(loop, lambda: buffered.data == b"two: through get_buffer")
    assert "get_buffer" in buffered.events
    transport.set_protocol(plain)
    peer.send(b"three")
    run_until(loop, lambda: plain.data == b"three")
    assert first.data == b"one"
    assert buffered.data == b"two: through get_buffer"


def test_set_protocol_redirects_flow_control_and_connection_lost(stream_kit):
    first = RecordingProtocol()
    second = RecordingProtocol()
    transport, peer = stream_kit.open(first)
    transport.set_protocol(second)
    second.transport = transport
    stream_kit.fill(transport)
    assert second.events == ["pause_writing"]
    assert "pause_writing" not in first.events
    transport.abort()
    run_until(stream_kit.loop, lambda: second.lost)
    assert second.lost == [None]
    assert first.lost == []


def test_exception_in_connection_made(stream_kit, exc_handler):
    # asyncio schedules connection_made as a plain callback: an exception in it goes to
    # the handler as a callback error, and the transport carries on (reading starts).
    error = ValueError("made failed")

    class Failing(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            raise error

    protocol = Failing()
    a, b = stream_kit.socket_pair()
    b.send(b"data")
    transport = stream_kit.transport(a, protocol, wait=False)
    run_until(stream_kit.loop, lambda: protocol.data == b"data")
    context = exc_handler.pop_one()
    assert context["exception"] is error
    assert context["message"].startswith("Exception in callback ")
    assert not transport.is_closing()
    assert protocol.lost == []


def test_protocol_callbacks_run_inside_the_running_loop(stream_kit):
    loop = stream_kit.loop
    seen = []

    class Checking(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            seen.append(("connection_made", asyncio.get_running_loop()))

        def data_received(self, data):
            super().data_received(data)
            seen.append(("data_received", asyncio.get_running_loop()))

        def eof_received(self):
            seen.append(("eof_received", asyncio.get_running_loop()))
            return super().eof_received()

        def connection_lost(self, exc):
            super().connection_lost(exc)
            seen.append(("connection_lost", asyncio.get_running_loop()))

    protocol = Checking()
    _, peer = stream_kit.open(protocol)
    peer.send(b"x")
    peer.shutdown_write()
    run_until(loop, lambda: protocol.lost)
    assert seen == [
        ("connection_made", loop),
        ("data_received", loop),
        ("eof_received", loop),
        ("connection_lost", loop),
    ]
