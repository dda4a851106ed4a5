"""ferroloop.framing: ChunkProtocol, the framers and framed streams, on both loops.

On ferroloop's transports the frames are cut in Rust inside the transport's read path;
on asyncio's loop `data_received` feeds the same splitter. Every test runs on both, so the
two paths are held to the same behaviour (TLS and pipes: test_framing_transports.py).

Reads are controlled through a Unix socket pair: the test writes one part, runs the loop
until the kernel holds no unread byte for the transport (FIONREAD), then writes the next,
so each part is one read (or several) and a frame can be split at any byte.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import ssl
import struct
import subprocess
import sys
import termios

import pytest
from ferroloop import framing
from ferroloop.framing import (
    ChunkProtocol,
    Delimiter,
    FixedSize,
    FrameTooLarge,
    LengthPrefixed,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import run_until
from transport_support import idle


def unread_bytes(sock: socket.socket) -> int:
    """Bytes the kernel holds for `sock` that no one has read yet."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


class Conn:
    """A ChunkProtocol on one end of a Unix socket pair (a transport made by the loop's
    connect_accepted_socket), the other end a plain socket the test writes to."""

    def __init__(self, loop, framer, *, on_eof=None, protocol=None):
        self.loop = loop
        self.frames: list[bytes] = []
        self.lost: list[BaseException | None] = []
        self.eofs: list[BaseException | None] = []
        near, self.peer = socket.socketpair()
        self.near = near
        if on_eof is None and protocol is None:
            on_eof = self._record_eof
        if protocol is None:
            protocol = ChunkProtocol(
                framer, self.frames.append, on_eof=on_eof, on_connection_lost=self.lost.append
            )
        else:
            # Record the end of a protocol the test made, too.
            connection_lost = protocol.connection_lost

            def record(exc):
                self.lost.append(exc)
                connection_lost(exc)

            protocol.connection_lost = record
        self.protocol = protocol
        self.transport, _ = loop.run_until_complete(
            loop.connect_accepted_socket(lambda: self.protocol, near)
        )

    def _record_eof(self, error):
        self.eofs.append(error)

    def send(self, data: bytes) -> None:
        """Writes `data` and runs the loop until the transport has read all of it."""
        self.peer.sendall(data)
        run_until(self.loop, lambda: unread_bytes(self.near) == 0 or self.lost)
        # One more iteration: a transport may have read the last bytes and not yet
        # delivered (asyncio's loop reads and delivers in the same callback; so does
        # ferroloop; this is for safety against a deferred delivery).
        idle(self.loop, 0)

    def close(self) -> None:
        self.peer.close()
        if not self.lost:
            self.transport.close()
            run_until(self.loop, lambda: self.lost)


@pytest.fixture
def conns(loop):
    made: list[Conn] = []

    def make(framer, **kwargs) -> Conn:
        conn = Conn(loop, framer, **kwargs)
        made.append(conn)
        return conn

    yield make
    for conn in made:
        conn.close()


FRAMERS = {
    "crlf": (Delimiter(b"\r\n", max_frame_size=64), [b"GET a", b"", b"SET b 1"]),
    "length4": (LengthPrefixed(4, max_frame_size=64), [b"abc", b"", b"\r\n\0"]),
    "length2le": (LengthPrefixed(2, byteorder="little", max_frame_size=64), [b"x", b"yz"]),
    "fixed3": (FixedSize(3), [b"abc", b"\r\n\0", b"xyz"]),
}


@pytest.mark.parametrize("name", sorted(FRAMERS))
def test_frames_split_across_reads_at_every_byte_position(conns, name):
    framer, frames = FRAMERS[name]
    stream = b"".join(framer.encode(f) for f in frames)
    conn = conns(framer)
    for split in range(len(stream) + 1):
        conn.send(stream[:split])
        conn.send(stream[split:])
    assert conn.frames == frames * (len(stream) + 1)
    assert conn.protocol._splitter.pending() == b""
    assert not conn.lost


def test_many_frames_in_one_read(conns):
    conn = conns(Delimiter(b"\n"))
    lines = [b"line %d" % i for i in range(500)]
    conn.send(b"".join(line + b"\n" for line in lines))
    assert conn.frames == lines


def test_delimiter_split_across_two_reads(conns):
    conn = conns(Delimiter(b"\r\n"))
    conn.send(b"PING\r")
    assert conn.frames == []
    conn.send(b"\nPONG\r\n")
    assert conn.frames == [b"PING", b"PONG"]


def test_delimiter_kept(conns):
    conn = conns(Delimiter(b"\r\n", keep=True))
    conn.send(b"a\r\nb\r\n")
    assert conn.frames == [b"a\r\n", b"b\r\n"]


def test_length_prefix_split_across_reads(conns):
    conn = conns(LengthPrefixed(4))
    conn.send(b"\0\0")
    conn.send(b"\0\x05hel")
    assert conn.frames == []
    conn.send(b"lo")
    assert conn.frames == [b"hello"]


def test_length_field_with_offset_adjustment_and_header_kept(conns):
    # PostgreSQL's backend messages: a type byte, then a 4-byte length that counts
    # itself but not the type byte; the whole message delivered.
    conn = conns(LengthPrefixed(4, offset=1, adjustment=-4, strip=0))
    messages = [b"Z\0\0\0\x05I", b"C\0\0\0\x0dSELECT 1\0"]
    conn.send(b"".join(messages))
    assert conn.frames == messages


@pytest.mark.parametrize(
    "framer, at_max, over",
    [
        (Delimiter(b"\r\n", max_frame_size=8), b"12345678\r\n", b"123456789\r\n"),
        (LengthPrefixed(2, max_frame_size=8), b"\0\x0812345678", b"\0\x09"),
    ],
    ids=["delimiter", "length"],
)
def test_frame_at_max_frame_size_and_one_byte_over(conns, exc_handler, framer, at_max, over):
    conn = conns(framer)
    conn.send(at_max)
    assert conn.frames == [at_max[2:] if isinstance(framer, LengthPrefixed) else at_max[:8]]
    conn.peer.sendall(over + at_max)
    run_until(conn.loop, lambda: conn.lost)
    (error,) = conn.lost
    assert isinstance(error, FrameTooLarge)
    assert isinstance(error, asyncio.LimitOverrunError)
    assert error.consumed == 9 and error.max_frame_size == 8
    assert len(conn.frames) == 1  # nothing after the oversized frame
    assert conn.transport.is_closing()
    context = exc_handler.pop_one()
    assert context["exception"] is error
    assert context["message"] == "Fatal error: protocol.data_received() call failed."


def test_missing_delimiter_never_buffers_beyond_the_limit(conns, exc_handler):
    conn = conns(Delimiter(b"\n", max_frame_size=100))
    conn.peer.sendall(b"x" * 1000)
    run_until(conn.loop, lambda: conn.lost)
    assert isinstance(conn.lost[0], FrameTooLarge)
    exc_handler.pop_one()


def test_eof_in_the_middle_of_a_frame_reports_the_partial_frame(conns):
    conn = conns(LengthPrefixed(4))
    conn.send(b"\0\0\0\x02ok\0\0\0\x0apart")
    conn.peer.shutdown(socket.SHUT_WR)
    run_until(conn.loop, lambda: conn.lost)
    assert conn.frames == [b"ok"]
    (error,) = conn.eofs
    assert isinstance(error, asyncio.IncompleteReadError)
    assert error.partial == b"\0\0\0\x0apart"
    assert error.expected == 14
    assert conn.lost == [None]


def test_clean_eof_reports_none_and_may_keep_the_connection_half_open(loop, conns):
    def on_eof(error):
        seen.append(error)
        return True  # keep open to write the answer

    seen: list = []
    conn = conns(Delimiter(b"\n"), on_eof=on_eof)
    conn.send(b"a\n")
    conn.peer.shutdown(socket.SHUT_WR)
    run_until(loop, lambda: seen)
    assert seen == [None]
    conn.protocol.write_chunk(b"bye")
    conn.protocol.transport.close()
    run_until(loop, lambda: conn.lost)
    assert conn.peer.recv(100) == b"bye\n"


def test_partial_frame_at_eof_goes_to_connection_lost_without_on_eof(loop):
    lost: list = []
    protocol = ChunkProtocol(Delimiter(b"\n"), lambda f: None, on_connection_lost=lost.append)
    near, peer = socket.socketpair()
    with peer:
        loop.run_until_complete(loop.connect_accepted_socket(lambda: protocol, near))
        peer.sendall(b"a\nhalf")
        peer.shutdown(socket.SHUT_WR)
        run_until(loop, lambda: lost)
    (error,) = lost
    assert isinstance(error, asyncio.IncompleteReadError)
    assert error.partial == b"half" and error.expected is None


def test_raw_mode_switch_keeps_bytes_buffered_after_the_switch_point(conns):
    """An HTTP-like exchange in one read: a header line announcing 5 raw bytes, the raw
    bytes, then more lines; the switch happens with all of it already buffered."""
    events: list = []
    holder: dict = {}

    def on_chunk(frame):
        events.append(("frame", frame))
        if frame.startswith(b"BODY "):
            holder["left"] = int(frame[5:])
            holder["body"] = b""
            protocol.set_raw_mode(on_data)

    def on_data(data):
        events.append(("raw", data))
        take = data[: holder["left"]]
        holder["left"] -= len(take)
        holder["body"] += take
        if holder["left"] == 0:
            protocol.set_frame_mode(data[len(take) :])

    protocol = ChunkProtocol(Delimiter(b"\r\n"), on_chunk)
    conn = conns(None, protocol=protocol)
    conn.send(b"A\r\nBODY 5\r\nhelloB\r\nC\r\n")
    assert holder["body"] == b"hello"
    assert [e for e in events if e[0] == "frame"] == [
        ("frame", b"A"),
        ("frame", b"BODY 5"),
        ("frame", b"B"),
        ("frame", b"C"),
    ]
    assert events[2] == ("raw", b"helloB\r\nC\r\n")
    # The body split across reads, and the frame after it too.
    conn.send(b"BODY 6\r\nab")
    conn.send(b"cd")
    conn.send(b"efD\r")
    conn.send(b"\n")
    assert holder["body"] == b"abcdef"
    assert events[-1] == ("frame", b"D")


class BareTransport(asyncio.Transport):
    """The least a transport gives a protocol, for tests that call the protocol's
    methods themselves in an order a real transport may use."""

    def __init__(self):
        super().__init__()
        self.closing = False
        self.reading = True

    def write(self, data):
        pass

    def is_closing(self):
        return self.closing

    def close(self):
        self.closing = True

    def abort(self):
        self.closing = True

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True

    def is_reading(self):
        return self.reading


def test_eof_before_the_delivery_after_set_frame_mode_still_gets_the_frames_first(loop):
    """set_frame_mode(extra) outside a delivery (from a task) delivers `extra` from the
    loop, later. When the transport's end of input runs first (its handle was queued
    ahead, in the same iteration), the complete frames in `extra` still reach on_chunk
    before on_eof, and only the trailing partial frame is incomplete."""
    events: list = []
    raw: list = []

    def on_chunk(frame):
        events.append(("frame", frame))
        if frame == b"BODY 2":
            protocol.set_raw_mode(raw.append)

    protocol = ChunkProtocol(
        Delimiter(b"\r\n"), on_chunk, on_eof=lambda error: events.append(("eof", error))
    )

    async def main():
        transport = BareTransport()
        protocol.connection_made(transport)
        protocol.data_received(b"BODY 2\r\nxyA\r\nB\r\nhal")
        assert raw == [b"xyA\r\nB\r\nhal"]
        protocol.set_frame_mode(raw[0][2:])
        protocol.eof_received()
        transport.close()
        protocol.connection_lost(None)

    loop.run_until_complete(main())
    assert events[:3] == [("frame", b"BODY 2"), ("frame", b"A"), ("frame", b"B")]
    (_, error), *rest = events[3:]
    assert isinstance(error, asyncio.IncompleteReadError)
    assert error.partial == b"hal" and error.expected is None
    assert rest == []


def test_pause_reading_inside_on_chunk_holds_back_buffered_frames(loop, conns):
    def on_chunk(frame):
        got.append(frame)
        if frame == b"0":
            protocol.transport.pause_reading()

    got: list = []
    protocol = ChunkProtocol(Delimiter(b"\n"), on_chunk)
    conn = conns(None, protocol=protocol)
    conn.send(b"".join(b"%d\n" % i for i in range(11)))
    assert got == [b"0"]
    assert not protocol.transport.is_reading()
    conn.peer.sendall(b"11\n")
    idle(loop, 0.02)
    assert got == [b"0"]  # neither the buffered frames nor new data
    protocol.transport.resume_reading()
    run_until(loop, lambda: len(got) == 12)
    assert got == [b"%d" % i for i in range(12)]
    assert protocol.transport.is_reading()


def test_pause_and_resume_inside_the_same_on_chunk(conns):
    def on_chunk(frame):
        got.append(frame)
        protocol.transport.pause_reading()
        protocol.transport.resume_reading()

    got: list = []
    protocol = ChunkProtocol(Delimiter(b"\n"), on_chunk)
    conn = conns(None, protocol=protocol)
    conn.send(b"a\nb\nc\n")
    run_until(conn.loop, lambda: len(got) == 3)
    conn.send(b"d\n")
    run_until(conn.loop, lambda: len(got) == 4)
    assert got == [b"a", b"b", b"c", b"d"]


def test_exception_in_on_chunk_is_a_fatal_error(conns, exc_handler):
    def on_chunk(frame):
        got.append(frame)
        if frame == b"bad":
            raise ZeroDivisionError("boom")

    got: list = []
    lost: list = []
    protocol = ChunkProtocol(Delimiter(b"\n"), on_chunk, on_connection_lost=lost.append)
    conn = conns(None, protocol=protocol)
    conn.peer.sendall(b"ok\nbad\nnever\n")
    run_until(conn.loop, lambda: lost)
    assert got == [b"ok", b"bad"]
    assert isinstance(lost[0], ZeroDivisionError)
    context = exc_handler.pop_one()
    assert context["exception"] is lost[0]
    assert context["message"] == "Fatal error: protocol.data_received() call failed."
    assert context["protocol"] is protocol


def test_exception_in_on_chunk_after_resume_is_a_fatal_error(loop, conns, exc_handler):
    def on_chunk(frame):
        if frame == b"pause":
            protocol.transport.pause_reading()
        elif frame == b"bad":
            raise ZeroDivisionError("late")

    lost: list = []
    protocol = ChunkProtocol(Delimiter(b"\n"), on_chunk, on_connection_lost=lost.append)
    conn = conns(None, protocol=protocol)
    conn.send(b"pause\nbad\n")
    protocol.transport.resume_reading()
    run_until(loop, lambda: lost)
    assert isinstance(lost[0], ZeroDivisionError)
    assert exc_handler.pop_one()["exception"] is lost[0]


def test_close_inside_on_chunk_stops_delivery(conns):
    def on_chunk(frame):
        got.append(frame)
        protocol.transport.close()

    got: list = []
    protocol = ChunkProtocol(Delimiter(b"\n"), on_chunk)
    conn = conns(None, protocol=protocol)
    conn.peer.sendall(b"a\nb\nc\n")
    run_until(conn.loop, lambda: protocol.transport.is_closing())
    idle(conn.loop)
    assert got == [b"a"]


def test_write_chunk_and_write_chunks(conns):
    conn = conns(LengthPrefixed(2))
    conn.protocol.write_chunk(b"one")
    conn.protocol.write_chunks([b"two", bytearray(b"three"), memoryview(b"")])
    idle(conn.loop)
    assert conn.peer.recv(100) == b"\0\x03one\0\x03two\0\x05three\0\0"
    lines = conns(Delimiter(b"\r\n"))
    lines.protocol.write_chunks(b"%d" % i for i in range(3))
    idle(lines.loop)
    assert lines.peer.recv(100) == b"0\r\n1\r\n2\r\n"


def test_framer_arguments_are_checked():
    with pytest.raises(ValueError):
        Delimiter(b"")
    with pytest.raises(ValueError):
        LengthPrefixed(3)
    with pytest.raises(ValueError):
        LengthPrefixed(4, strip=5)
    with pytest.raises(ValueError):
        FixedSize(0)
    with pytest.raises(ValueError):
        FixedSize(10, max_frame_size=5)
    with pytest.raises(ValueError):
        LengthPrefixed(4, offset=1).encode(b"x")
    with pytest.raises(ValueError):
        FixedSize(2).encode(b"abc")
    with pytest.raises(TypeError):
        ChunkProtocol(b"\n", print)


def test_ferroloop_socket_transports_frame_without_data_received(loop_kind, loop, conns):
    """On ferroloop's socket transports the transport cuts the frames itself:
    data_received is never called; elsewhere it is the way in."""

    class Counting(ChunkProtocol):
        calls = 0

        def data_received(self, data):
            Counting.calls += 1
            super().data_received(data)

    got: list = []
    conn = conns(None, protocol=Counting(Delimiter(b"\n"), got.append))
    conn.send(b"a\nb\n")
    assert got == [b"a", b"b"]
    assert Counting.calls == (0 if loop_kind == "ferroloop" else 1)


# -- property: any split of a stream of random frames gives the same frames ---------------

FRAME = st.binary(max_size=40)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    frames=st.lists(FRAME, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=6),
    kind=st.sampled_from(["line", "length", "length-le-offset"]),
)
def test_any_split_of_random_frames_gives_the_same_frames(loop, frames, cuts, kind):
    if kind == "line":
        framer = Delimiter(b"\r\n", max_frame_size=64)
        frames = [f.replace(b"\r\n", b"") for f in frames]
        frames = [f[:-1] if f.endswith(b"\r") else f for f in frames]
    elif kind == "length":
        framer = LengthPrefixed(4, max_frame_size=64)
    else:
        framer = LengthPrefixed(2, byteorder="little", max_frame_size=64)
    stream = b"".join(framer.encode(f) for f in frames)
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    conn = Conn(loop, framer)
    try:
        for start, end in zip(bounds, bounds[1:], strict=False):
            conn.send(stream[start:end])
        assert conn.frames == frames
        assert not conn.lost
    finally:
        conn.close()


# -- other transports ------------------------------------------------------------------


def test_read_pipe_and_write_pipe(loop):
    rfd, wfd = os.pipe()
    got: list = []
    lost: list = []
    reader = ChunkProtocol(LengthPrefixed(1), got.append, on_connection_lost=lost.append)
    writer = ChunkProtocol(LengthPrefixed(1), lambda f: None)
    with open(rfd, "rb", buffering=0) as rpipe, open(wfd, "wb", buffering=0) as wpipe:
        rtransport, _ = loop.run_until_complete(loop.connect_read_pipe(lambda: reader, rpipe))
        wtransport, _ = loop.run_until_complete(loop.connect_write_pipe(lambda: writer, wpipe))
        writer.write_chunks([b"x" * n for n in range(20)])
        writer.transport.close()
        run_until(loop, lambda: lost)
    assert got == [b"x" * n for n in range(20)]
    assert lost == [None]


def test_subprocess_stdout_pipe(loop):
    code = "import sys; sys.stdout.write('one\\ntwo\\nthr'); sys.stdout.flush()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    got: list = []
    lost: list = []
    protocol = ChunkProtocol(Delimiter(b"\n"), got.append, on_connection_lost=lost.append)
    try:
        loop.run_until_complete(loop.connect_read_pipe(lambda: protocol, proc.stdout))
        run_until(loop, lambda: lost, timeout=10)
    finally:
        proc.stdout.close()
        proc.wait()
    assert got == [b"one", b"two"]
    assert isinstance(lost[0], asyncio.IncompleteReadError)
    assert lost[0].partial == b"thr"


@pytest.fixture
def tls_contexts():
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def test_framed_streams_over_tls(loop, tls_contexts):
    server_ctx, client_ctx = tls_contexts

    async def handle(stream):
        async for frame in stream:
            stream.write_frame(frame[::-1])
            await stream.drain()
        stream.close()

    async def main():
        framer = LengthPrefixed(4)
        server = await framing.start_server(handle, "127.0.0.1", 0, framer=framer, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        stream = await framing.open_connection(
            "127.0.0.1", port, framer=framer, ssl=client_ctx, server_hostname="localhost"
        )
        payloads = [os.urandom(n) for n in (0, 1, 100, 20000, 70000)]
        stream.write_frames(payloads)
        answers = [await stream.read_frame() for _ in payloads]
        stream.close()
        await stream.wait_closed()
        server.close()
        await server.wait_closed()
        return payloads, answers

    payloads, answers = loop.run_until_complete(main())
    assert answers == [p[::-1] for p in payloads]


# -- the awaitable face ----------------------------------------------------------------


def test_stream_read_frame_iteration_and_eof(loop):
    async def handle(stream):
        stream.write_frames([b"a", b"b", b"c"])
        stream.transport.write(b"partial")
        stream.close()

    async def main():
        server = await framing.start_server(handle, "127.0.0.1", 0, framer=Delimiter(b"\n"))
        port = server.sockets[0].getsockname()[1]
        stream = await framing.open_connection("127.0.0.1", port, framer=Delimiter(b"\n"))
        got = []
        with pytest.raises(asyncio.IncompleteReadError) as info:
            async for frame in stream:
                got.append(frame)
        stream.close()
        await stream.wait_closed()
        server.close()
        await server.wait_closed()
        return got, info.value

    got, error = loop.run_until_complete(main())
    assert got == [b"a", b"b", b"c"]
    assert error.partial == b"partial"


def test_stream_back_pressure_pauses_reading(loop, tmp_path):
    count = 2000
    paused: list = []

    async def handle(stream):
        stream.write_frames(b"%d" % i for i in range(count))
        await stream.drain()
        stream.close()

    async def main():
        path = str(tmp_path / "sock")
        server = await framing.start_unix_server(handle, path, framer=Delimiter(b"\n"))
        stream = await framing.open_unix_connection(path, framer=Delimiter(b"\n"), max_queued=8)
        got = []
        async for frame in stream:
            got.append(frame)
            paused.append(not stream.transport.is_reading())
            if len(got) % 100 == 0:
                await asyncio.sleep(0.001)
        await stream.wait_closed()
        server.close()
        await server.wait_closed()
        return got

    got = loop.run_until_complete(main())
    assert got == [b"%d" % i for i in range(count)]
    assert any(paused)


def test_stream_read_frame_raises_the_framing_error_after_the_good_frames(loop, exc_handler):
    async def handle(stream):
        stream.transport.write(b"ok\n" + b"x" * 50 + b"\n")
        await stream.drain()

    async def main():
        server = await framing.start_server(handle, "127.0.0.1", 0, framer=Delimiter(b"\n"))
        port = server.sockets[0].getsockname()[1]
        framer = Delimiter(b"\n", max_frame_size=10)
        stream = await framing.open_connection("127.0.0.1", port, framer=framer)
        first = await stream.read_frame()
        with pytest.raises(FrameTooLarge):
            await stream.read_frame()
        await stream.wait_closed()
        server.close()
        await server.wait_closed()
        return first

    assert loop.run_until_complete(main()) == b"ok"
    assert isinstance(exc_handler.pop_one()["exception"], FrameTooLarge)


# -- replies written inside on_chunk ---------------------------------------------------
# (ferroloop's socket transports send them together once the read's frames are delivered;
# what the peer sees must be the same as on asyncio's loop.)


def _echo_then(action):
    def make(conn_holder):
        def on_chunk(frame):
            conn_holder[0].protocol.write_chunk(frame.upper())
            if frame == b"last":
                action(conn_holder[0].protocol.transport)

        return on_chunk

    return make


def _received_until_eof(conn) -> bytes:
    conn.peer.settimeout(2)
    got = b""
    while chunk := conn.peer.recv(65536):
        got += chunk
    return got


@pytest.mark.parametrize(
    "action",
    [
        lambda transport: transport.close(),
        lambda transport: transport.abort(),
        lambda transport: transport.write_eof(),
    ],
    ids=["close", "abort", "write_eof"],
)
def test_replies_written_in_on_chunk_reach_the_peer(loop, conns, action):
    holder: list = []
    protocol = ChunkProtocol(Delimiter(b"\n"), _echo_then(action)(holder))
    conn = conns(None, protocol=protocol)
    holder.append(conn)
    lines = [b"frame %d" % i for i in range(50)] + [b"last"]
    conn.peer.sendall(b"".join(line + b"\n" for line in lines))
    run_until(loop, lambda: protocol.transport.is_closing() or unread_bytes(conn.near) == 0)
    idle(loop)
    assert _received_until_eof(conn) == b"".join(line.upper() + b"\n" for line in lines)


def test_many_replies_in_one_read_with_a_peer_that_reads_late(loop, conns):
    """Replies beyond what the socket takes at once are queued and flushed later, and
    pause_writing/resume_writing are called as for any write."""
    events: list = []

    class Echo(ChunkProtocol):
        def pause_writing(self):
            events.append("pause")

        def resume_writing(self):
            events.append("resume")

    holder: list = []
    protocol = Echo(Delimiter(b"\n"), lambda frame: holder[0].write_chunk(frame * 100))
    holder.append(protocol)
    conn = conns(None, protocol=protocol)
    conn.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.peer.sendall(b"".join(b"%04d\n" % i for i in range(2000)))
    expected = b"".join(b"%04d" % i * 100 + b"\n" for i in range(2000))
    got = bytearray()
    conn.peer.setblocking(False)

    def drained():
        try:
            got.extend(conn.peer.recv(1 << 20))
        except BlockingIOError:
            pass
        return len(got) >= len(expected)

    run_until(loop, drained, timeout=10)
    assert bytes(got) == expected
    assert events[:1] == ["pause"] and events[-1] == "resume"


# -- the example -----------------------------------------------------------------------


def test_memcached_example_with_values_that_hold_crlf(loop):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "memcached.py"
    spec = importlib.util.spec_from_file_location("memcached_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    async def main():
        store = {}
        handlers = []

        def factory():
            handlers.append(example.MemcachedServer(store))
            return handlers[-1].protocol

        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = await example.MemcachedClient.connect("127.0.0.1", port)
        big = bytes(range(256)) * 300 + b"\r\n"
        results = await asyncio.gather(
            client.set(b"a", b"x\r\ny"),
            client.set(b"big", big, flags=3),
            client.get(b"a", b"big", b"nope"),
            client.delete(b"a"),
            client.delete(b"a"),
            client.request(b"bogus"),
        )
        client.close()
        # The server's side ends when it reads the client's EOF (connection_lost stops
        # its splitter).
        while not all(h.protocol._splitter.stopped for h in handlers):
            await asyncio.sleep(0.001)
        server.close()
        await server.wait_closed()
        return results, store, big

    results, store, big = loop.run_until_complete(main())
    assert results == [
        b"STORED",
        b"STORED",
        {b"a": b"x\r\ny", b"big": big},
        b"DELETED",
        b"NOT_FOUND",
        b"ERROR",
    ]
    assert store == {b"big": (3, big)}


@pytest.mark.parametrize("answer", ["junk", "raise"])
def test_a_protocol_answering_every_attribute_keeps_the_plain_data_path(loop, answer):
    """The transport's probe for a framed protocol must not trip over a protocol whose
    __getattr__ answers everything (as a Mock does) or raises something odd."""

    class Odd(asyncio.Protocol):
        def __init__(self):
            self.data = b""
            self.lost = False

        def data_received(self, data):
            self.data += data

        def connection_lost(self, exc):
            self.lost = True

        def __getattr__(self, name):
            if answer == "raise":
                raise KeyError(name)
            return "junk"

    protocol = Odd()
    near, peer = socket.socketpair()
    with peer:
        transport, _ = loop.run_until_complete(loop.connect_accepted_socket(lambda: protocol, near))
        peer.sendall(b"plain bytes")
        run_until(loop, lambda: protocol.data == b"plain bytes")
        transport.close()
        run_until(loop, lambda: protocol.lost)


def test_the_same_classes_on_uvloop():
    """uvloop (when installed, as `tools/dev.py bench` does): frames, raw mode, per-frame
    pause/resume, a partial frame at EOF and a framed stream, as on the other loops."""
    uvloop = pytest.importorskip("uvloop")

    async def main():
        loop = asyncio.get_running_loop()
        got, raw, lost = [], [], []

        def on_chunk(frame):
            got.append(frame)
            if frame == b"pause":
                protocol.transport.pause_reading()
                loop.call_later(0.01, protocol.transport.resume_reading)
            elif frame == b"raw":
                protocol.set_raw_mode(on_data)

        def on_data(data):
            raw.append(data)
            protocol.set_frame_mode(data[3:])

        protocol = ChunkProtocol(Delimiter(b"\n"), on_chunk, on_connection_lost=lost.append)
        near, peer = socket.socketpair()
        with peer:
            await loop.connect_accepted_socket(lambda: protocol, near)
            peer.sendall(b"a\npause\nb\nraw\nxyzc\nhalf")
            peer.shutdown(socket.SHUT_WR)
            while not lost:
                await asyncio.sleep(0.001)
        assert got == [b"a", b"pause", b"b", b"raw", b"c"]
        assert raw == [b"xyzc\nhalf"]
        assert isinstance(lost[0], asyncio.IncompleteReadError)
        assert lost[0].partial == b"half"

        async def echo(stream):
            async for frame in stream:
                stream.write_frame(frame * 2)
            stream.close()

        server = await framing.start_server(echo, "127.0.0.1", 0, framer=LengthPrefixed(2))
        port = server.sockets[0].getsockname()[1]
        stream = await framing.open_connection("127.0.0.1", port, framer=LengthPrefixed(2))
        stream.write_frames([b"x", b"yz"])
        assert [await stream.read_frame(), await stream.read_frame()] == [b"xx", b"yzyz"]
        stream.close()
        await stream.wait_closed()
        server.close()
        await server.wait_closed()

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


# Subprocess pipes: loop.subprocess_exec with a SubprocessChunkProtocol.

CHILD_WRITES = (
    "import os, sys, time\n"
    "for piece in (b'one\\ntw', b'o\\nthree\\nfo', b'ur\\n'):\n"
    "    os.write(1, piece); time.sleep(0.02)\n"
    "os.write(2, b'err\\npartial')\n"
)


def test_subprocess_output_is_framed_per_pipe(loop):
    frames, eofs, exits = [], [], []

    async def main():
        done = loop.create_future()
        transport, protocol = await loop.subprocess_exec(
            lambda: framing.SubprocessChunkProtocol(
                Delimiter(b"\n"),
                lambda fd, frame: frames.append((fd, frame)),
                on_eof=lambda fd, error: eofs.append((fd, error)),
                on_exit=lambda code: (exits.append(code), done.set_result(None)),
            ),
            sys.executable,
            "-c",
            CHILD_WRITES,
            stdin=None,
        )
        await asyncio.wait_for(done, 30)
        transport.close()

    loop.run_until_complete(main())
    assert [f for f in frames if f[0] == 1] == [
        (1, b"one"),
        (1, b"two"),
        (1, b"three"),
        (1, b"four"),
    ]
    assert [f for f in frames if f[0] == 2] == [(2, b"err")]
    errors = dict(eofs)
    assert errors[1] is None
    assert isinstance(errors[2], asyncio.IncompleteReadError)
    assert errors[2].partial == b"partial"
    assert exits == [0]


def test_subprocess_write_chunk_reaches_the_child_framed(loop):
    echo = "import sys\ndata = sys.stdin.buffer.read()\nsys.stdout.buffer.write(data.upper())\n"
    frames = []

    async def main():
        done = loop.create_future()
        transport, protocol = await loop.subprocess_exec(
            lambda: framing.SubprocessChunkProtocol(
                LengthPrefixed(4),
                lambda fd, frame: frames.append(frame),
                on_exit=lambda code: done.set_result(code),
            ),
            sys.executable,
            "-c",
            echo,
        )
        protocol.write_chunk(b"hello")
        protocol.write_chunk(b"framed world")
        transport.get_pipe_transport(0).close()
        code = await asyncio.wait_for(done, 30)
        transport.close()
        return code

    assert loop.run_until_complete(main()) == 0
    assert frames == [b"HELLO", b"FRAMED WORLD"]


def test_subprocess_oversized_frame_closes_that_pipe_as_a_fatal_error(loop, exc_handler):
    eofs = []
    child = "import os; os.write(1, b'ok\\n' + b'x' * 100 + b'\\n')"

    async def main():
        done = loop.create_future()
        transport, _ = await loop.subprocess_exec(
            lambda: framing.SubprocessChunkProtocol(
                Delimiter(b"\n", max_frame_size=10),
                lambda fd, frame: eofs.append(("frame", frame)),
                on_eof=lambda fd, error: eofs.append((fd, error)),
                on_exit=lambda code: done.set_result(code),
            ),
            sys.executable,
            "-c",
            child,
            stdin=None,
            stderr=None,
        )
        code = await asyncio.wait_for(done, 30)
        transport.close()
        return code

    loop.run_until_complete(main())
    assert eofs[0] == ("frame", b"ok")
    fd, error = eofs[1]
    assert fd == 1 and isinstance(error, FrameTooLarge)
    assert exc_handler.pop_one()["exception"] is error
