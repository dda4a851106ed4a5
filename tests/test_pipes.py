"""connect_read_pipe / connect_write_pipe: pipe transports over pipes, sockets and ptys."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import tempfile

import pytest
from support import run_once, run_until


class ReadProto(asyncio.Protocol):
    """Records every event of a read pipe transport."""

    def __init__(self, loop):
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.done = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        assert isinstance(data, bytes)
        self.data += data
        if not self.events or self.events[-1] != "data":
            self.events.append("data")

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        self.done.set_result(exc)


class WriteProto(asyncio.BaseProtocol):
    """Records every event of a write pipe transport."""

    def __init__(self, loop):
        self.events = []
        self.transport = None
        self.done = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        self.done.set_result(exc)


def reading(transport):
    """transport.is_reading(); None where asyncio's pipe transport lacks it (3.10)."""
    try:
        return transport.is_reading()
    except NotImplementedError:
        return None


def drain(fd):
    """Everything readable from non-blocking `fd` now."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def pipe_fds():
    """A pipe; whichever end a test does not hand to a transport is closed afterwards."""
    r, w = os.pipe()
    fds = {"r": r, "w": w}
    yield fds
    for fd in fds.values():
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def connect_read(loop, fds):
    pipe = open(fds["r"], "rb", buffering=0)
    fds["r"] = None
    proto = ReadProto(loop)
    transport, protocol = loop.run_until_complete(loop.connect_read_pipe(lambda: proto, pipe))
    assert protocol is proto and transport is proto.transport
    return transport, proto, pipe


def connect_write(loop, fds):
    pipe = open(fds["w"], "wb", buffering=0)
    fds["w"] = None
    proto = WriteProto(loop)
    transport, protocol = loop.run_until_complete(loop.connect_write_pipe(lambda: proto, pipe))
    assert protocol is proto and transport is proto.transport
    return transport, proto, pipe


# -- reading ---------------------------------------------------------------------------


def test_read_pipe_data_then_eof(loop, pipe_fds):
    transport, proto, pipe = connect_read(loop, pipe_fds)
    assert isinstance(transport, asyncio.ReadTransport)
    assert proto.events == ["made"]
    assert transport.get_extra_info("pipe") is pipe
    assert reading(transport) in (True, None)
    assert not os.get_blocking(pipe.fileno())

    os.write(pipe_fds["w"], b"hello ")
    run_until(loop, lambda: len(proto.data) >= 6)
    os.write(pipe_fds["w"], b"world")
    run_until(loop, lambda: len(proto.data) >= 11)
    assert bytes(proto.data) == b"hello world"

    os.close(pipe_fds["w"])
    pipe_fds["w"] = None
    assert loop.run_until_complete(proto.done) is None
    assert proto.events == ["made", "data", "eof", ("lost", None)]
    assert transport.is_closing()
    assert pipe.closed
    assert "closed" in repr(transport)


def test_read_pipe_eof_before_connection_lost_in_separate_callbacks(loop, pipe_fds):
    transport, proto, pipe = connect_read(loop, pipe_fds)
    os.close(pipe_fds["w"])
    pipe_fds["w"] = None
    # The reader sees end of file; eof_received and connection_lost are scheduled, so
    # neither has run when the read callback returns.
    run_until(loop, transport.is_closing)
    loop.run_until_complete(proto.done)
    assert proto.events == ["made", "eof", ("lost", None)]


def test_read_pipe_large_transfer_in_chunks(loop, pipe_fds):
    transport, proto, pipe = connect_read(loop, pipe_fds)
    payload = os.urandom(1 << 20)
    os.set_blocking(pipe_fds["w"], False)
    view = memoryview(payload)

    def feed():
        nonlocal view
        try:
            n = os.write(pipe_fds["w"], view[: 1 << 16])
        except BlockingIOError:
            return
        view = view[n:]
        if not view:
            loop.remove_writer(pipe_fds["w"])
            os.close(pipe_fds["w"])
            pipe_fds["w"] = None

    loop.add_writer(pipe_fds["w"], feed)
    loop.run_until_complete(proto.done)
    assert bytes(proto.data) == payload


def test_read_pipe_pause_and_resume(loop, pipe_fds):
    transport, proto, pipe = connect_read(loop, pipe_fds)
    transport.pause_reading()
    assert reading(transport) in (False, None)
    transport.pause_reading()  # harmless twice
    os.write(pipe_fds["w"], b"held back")
    for _ in range(5):
        run_once(loop)
    assert proto.data == b""
    transport.resume_reading()
    assert reading(transport) in (True, None)
    run_until(loop, lambda: len(proto.data) >= 9)
    assert proto.data == b"held back"
    transport.close()
    loop.run_until_complete(proto.done)
    assert reading(transport) in (False, None)


def test_read_pipe_close(loop, pipe_fds):
    transport, proto, pipe = connect_read(loop, pipe_fds)
    transport.close()
    assert transport.is_closing()
    transport.close()  # twice is harmless
    os.write(pipe_fds["w"], b"ignored")
    assert loop.run_until_complete(proto.done) is None
    assert proto.events == ["made", ("lost", None)]
    assert pipe.closed
    # pause/resume after close do nothing
    transport.pause_reading()
    transport.resume_reading()


def test_read_pipe_close_before_connection_made_runs(loop, pipe_fds):
    pipe = open(pipe_fds["r"], "rb", buffering=0)
    pipe_fds["r"] = None
    proto = ReadProto(loop)
    transport = loop._make_read_pipe_transport(pipe, proto)
    transport.close()
    loop.run_until_complete(proto.done)
    assert proto.events == ["made", ("lost", None)]


def test_read_pipe_data_received_error_goes_to_handler(loop, pipe_fds, exc_handler):
    transport, proto, pipe = connect_read(loop, pipe_fds)

    def boom(data):
        raise ZeroDivisionError

    proto.data_received = boom
    os.write(pipe_fds["w"], b"x")
    run_until(loop, lambda: exc_handler.calls)
    context = exc_handler.pop_one()
    assert isinstance(context["exception"], ZeroDivisionError)
    # asyncio leaves the pipe open in that case.
    assert not transport.is_closing()
    transport.close()
    loop.run_until_complete(proto.done)


def test_read_pipe_set_protocol(loop, pipe_fds):
    transport, proto, pipe = connect_read(loop, pipe_fds)
    other = ReadProto(loop)
    transport.set_protocol(other)
    assert transport.get_protocol() is other
    os.write(pipe_fds["w"], b"to other")
    run_until(loop, lambda: len(other.data) >= 8)
    assert proto.data == b""
    transport.close()
    loop.run_until_complete(other.done)


def test_read_pipe_from_socket(loop):
    a, b = socket.socketpair()
    proto = ReadProto(loop)
    try:
        transport, _ = loop.run_until_complete(loop.connect_read_pipe(lambda: proto, a))
        b.sendall(b"over a socket")
        run_until(loop, lambda: len(proto.data) >= 13)
        b.close()
        loop.run_until_complete(proto.done)
    finally:
        b.close()
    assert proto.data == b"over a socket"
    assert proto.events[-2:] == ["eof", ("lost", None)]
    assert a.fileno() == -1


def test_read_pty_eio_closes_without_report(loop):
    master, slave = os.openpty()
    pipe = open(master, "rb", buffering=0)
    proto = ReadProto(loop)
    transport, _ = loop.run_until_complete(loop.connect_read_pipe(lambda: proto, pipe))
    os.write(slave, b"tty")
    run_until(loop, lambda: len(proto.data) >= 3)
    os.close(slave)
    exc = loop.run_until_complete(proto.done)
    # Reading a pty master whose slave closed fails with EIO: connection_lost(exc), and
    # no exception handler call (the fixture would fail the test).
    assert isinstance(exc, OSError)
    assert proto.data == b"tty"


def test_read_pipe_rejects_regular_file(loop):
    with tempfile.TemporaryFile() as f:
        proto = ReadProto(loop)
        with pytest.raises(ValueError, match="Pipe transport is for pipes/sockets only."):
            loop.run_until_complete(loop.connect_read_pipe(lambda: proto, f))
        proto.done.cancel()


def test_write_pipe_rejects_regular_file(loop):
    with tempfile.TemporaryFile() as f:
        proto = WriteProto(loop)
        with pytest.raises(
            ValueError, match="Pipe transport is only for pipes, sockets and character devices"
        ):
            loop.run_until_complete(loop.connect_write_pipe(lambda: proto, f))
        proto.done.cancel()


def test_repr_and_unclosed_warning(loop, pipe_fds):
    transport, proto, pipe = connect_read(loop, pipe_fds)
    assert "polling" in repr(transport)
    assert f"fd={pipe.fileno()}" in repr(transport)
    transport.pause_reading()
    assert "idle" in repr(transport)
    fd = pipe.fileno()
    del proto.transport
    with pytest.warns(ResourceWarning, match="unclosed transport"):
        del transport
        gc.collect()
    assert pipe.closed
    with pytest.raises(OSError):
        os.fstat(fd)
    proto.done.cancel()


def test_unclosed_transports_after_loop_close(loop, pipe_fds):
    """asyncio's GitHub issue 314: repr works after the loop closed."""
    rt, rproto, rpipe = connect_read(loop, pipe_fds)
    wt, wproto, wpipe = connect_write(loop, pipe_fds)
    loop.close()
    assert "open" in repr(rt)
    assert "open" in repr(wt)
    rpipe.close()
    wpipe.close()
    rt._pipe = None
    wt._pipe = None


# -- writing ---------------------------------------------------------------------------


def test_write_pipe_writes_at_once(loop, pipe_fds):
    transport, proto, pipe = connect_write(loop, pipe_fds)
    assert isinstance(transport, asyncio.WriteTransport)
    assert transport.get_extra_info("pipe") is pipe
    assert transport.can_write_eof()
    transport.write(b"abc")
    transport.write(bytearray(b"def"))
    transport.write(memoryview(b"ghi"))
    transport.write(b"")
    transport.writelines([b"j", bytearray(b"k"), memoryview(b"l")])
    # All written synchronously: nothing queued.
    assert transport.get_write_buffer_size() == 0
    assert os.read(pipe_fds["r"], 100) == b"abcdefghijkl"
    transport.close()
    assert loop.run_until_complete(proto.done) is None
    assert proto.events == ["made", ("lost", None)]
    assert pipe.closed


def test_write_pipe_rejects_str(loop, pipe_fds):
    transport, proto, pipe = connect_write(loop, pipe_fds)
    with pytest.raises((TypeError, AssertionError)):
        transport.write("text")
    transport.close()
    loop.run_until_complete(proto.done)


def test_write_pipe_buffering_and_water_marks(loop, pipe_fds):
    transport, proto, pipe = connect_write(loop, pipe_fds)
    os.set_blocking(pipe_fds["r"], False)
    assert transport.get_write_buffer_limits() == (16384, 65536)
    transport.set_write_buffer_limits(high=4096)
    assert transport.get_write_buffer_limits() == (1024, 4096)
    with pytest.raises(ValueError, match="high .* must be >= low .* must be >= 0"):
        transport.set_write_buffer_limits(high=1, low=2)

    payload = os.urandom(1 << 20)
    transport.write(payload)
    # The pipe took what it could hold; the rest waits, and the protocol was paused.
    queued = transport.get_write_buffer_size()
    assert 0 < queued < len(payload)
    assert proto.events == ["made", "pause"]

    transport.write(b"tail")
    assert transport.get_write_buffer_size() == queued + 4

    received = bytearray()

    def read_some():
        received.extend(drain(pipe_fds["r"]))
        return len(received) >= len(payload) + 4

    run_until(loop, read_some)
    assert bytes(received) == payload + b"tail"
    run_until(loop, lambda: "resume" in proto.events)
    assert transport.get_write_buffer_size() == 0
    assert proto.events == ["made", "pause", "resume"]
    transport.close()
    loop.run_until_complete(proto.done)


def test_write_pipe_set_limits_pauses_at_once(loop, pipe_fds):
    transport, proto, pipe = connect_write(loop, pipe_fds)
    transport.set_write_buffer_limits(high=1 << 20)
    transport.write(os.urandom(1 << 18))
    queued = transport.get_write_buffer_size()
    assert queued > 0
    assert proto.events == ["made"]
    # Lowering the high-water mark below what is queued pauses the protocol at once.
    transport.set_write_buffer_limits(high=queued - 1)
    assert proto.events == ["made", "pause"]
    transport.abort()
    loop.run_until_complete(proto.done)


def test_write_eof_flushes_then_closes(loop, pipe_fds):
    transport, proto, pipe = connect_write(loop, pipe_fds)
    os.set_blocking(pipe_fds["r"], False)
    payload = os.urandom(300_000)
    transport.write(payload)
    assert transport.get_write_buffer_size() > 0
    transport.write_eof()
    assert transport.is_closing()
    # Writes after write_eof() are dropped silently, as asyncio does.
    transport.write(b"dropped")
    received = bytearray()

    def read_all():
        chunk = drain(pipe_fds["r"])
        received.extend(chunk)
        return proto.done.done()

    run_until(loop, read_all)
    received.extend(drain(pipe_fds["r"]))
    assert bytes(received) == payload
    assert proto.done.result() is None
    assert pipe.closed
    # The reader now sees end of file.
    assert os.read(pipe_fds["r"], 10) == b""


def test_close_is_write_eof(loop, pipe_fds):
    transport, proto, pipe = connect_write(loop, pipe_fds)
    transport.write(b"last words")
    transport.close()
    transport.close()
    loop.run_until_complete(proto.done)
    assert os.read(pipe_fds["r"], 100) == b"last words"
    assert proto.events == ["made", ("lost", None)]


def test_abort_drops_queue(loop, pipe_fds):
    transport, proto, pipe = connect_write(loop, pipe_fds)
    transport.write(os.urandom(1 << 20))
    assert transport.get_write_buffer_size() > 0
    transport.abort()
    assert transport.get_write_buffer_size() == 0
    assert transport.is_closing()
    assert loop.run_until_complete(proto.done) is None
    assert pipe.closed


def test_peer_closing_idle_pipe_is_connection_lost_none(loop, pipe_fds):
    transport, proto, pipe = connect_write(loop, pipe_fds)
    os.close(pipe_fds["r"])
    pipe_fds["r"] = None
    assert loop.run_until_complete(proto.done) is None
    assert proto.events == ["made", ("lost", None)]
    assert pipe.closed


def test_peer_closing_with_queued_data_is_broken_pipe(loop, pipe_fds):
    transport, proto, pipe = connect_write(loop, pipe_fds)
    transport.write(os.urandom(1 << 20))
    assert transport.get_write_buffer_size() > 0
    os.close(pipe_fds["r"])
    pipe_fds["r"] = None
    exc = loop.run_until_complete(proto.done)
    assert isinstance(exc, BrokenPipeError)
    assert transport.get_write_buffer_size() == 0


def test_epipe_on_write_is_broken_pipe(loop, pipe_fds):
    transport, proto, pipe = connect_write(loop, pipe_fds)
    os.close(pipe_fds["r"])
    pipe_fds["r"] = None
    # Before the loop notices the reader is gone, write() meets EPIPE.
    transport.write(b"nobody listens")
    assert transport.is_closing()
    exc = loop.run_until_complete(proto.done)
    assert isinstance(exc, BrokenPipeError)
    # Later writes are dropped quietly.
    transport.write(b"more")


def test_write_pipe_over_socket_detects_peer_close(loop):
    rsock, wsock = socket.socketpair()
    pipe = open(wsock.detach(), "wb", buffering=0)
    proto = WriteProto(loop)
    try:
        transport, _ = loop.run_until_complete(loop.connect_write_pipe(lambda: proto, pipe))
        transport.write(b"1")
        assert rsock.recv(10) == b"1"
    finally:
        rsock.close()
    assert loop.run_until_complete(proto.done) is None
    assert pipe.closed


def test_write_pty(loop):
    master, slave = os.openpty()
    pipe = open(slave, "wb", buffering=0)
    proto = WriteProto(loop)
    transport, _ = loop.run_until_complete(loop.connect_write_pipe(lambda: proto, pipe))
    try:
        transport.write(b"to the tty")
        data = b""
        while len(data) < 10:
            data += os.read(master, 100)
        assert data == b"to the tty"
        transport.close()
        loop.run_until_complete(proto.done)
    finally:
        os.close(master)


def test_write_pipe_protocol_pause_error_is_reported(loop, pipe_fds, exc_handler):
    transport, proto, pipe = connect_write(loop, pipe_fds)

    def boom():
        raise ZeroDivisionError

    proto.pause_writing = boom
    transport.write(os.urandom(1 << 18))
    context = exc_handler.pop_one()
    assert context["message"] == "protocol.pause_writing() failed"
    assert isinstance(context["exception"], ZeroDivisionError)
    assert context["transport"] is transport
    transport.abort()
    loop.run_until_complete(proto.done)


def test_write_repr(loop, pipe_fds):
    transport, proto, pipe = connect_write(loop, pipe_fds)
    text = repr(transport)
    assert "idle" in text and "bufsize=0" in text
    transport.write(os.urandom(1 << 18))
    text = repr(transport)
    assert "polling" in text and f"bufsize={transport.get_write_buffer_size()}" in text
    transport.abort()
    loop.run_until_complete(proto.done)
    assert "closed" in repr(transport)


def test_writelines_queues_behind_pending_data(loop, pipe_fds):
    transport, proto, pipe = connect_write(loop, pipe_fds)
    os.set_blocking(pipe_fds["r"], False)
    transport.set_write_buffer_limits(high=1 << 22)
    head = os.urandom(1 << 18)
    transport.write(head)
    queued = transport.get_write_buffer_size()
    assert queued > 0
    pieces = [b"a" * 1000, bytearray(b"b" * 2000), memoryview(b"c" * 3000), b""]
    transport.writelines(pieces)
    assert transport.get_write_buffer_size() == queued + 6000
    # A mutable buffer was copied: changing it now does not change what is written.
    pieces[1][:] = b"x" * 2000
    received = bytearray()

    def read_some():
        received.extend(drain(pipe_fds["r"]))
        return len(received) >= len(head) + 6000

    run_until(loop, read_some)
    assert bytes(received) == head + b"a" * 1000 + b"b" * 2000 + b"c" * 3000
    transport.close()
    loop.run_until_complete(proto.done)
