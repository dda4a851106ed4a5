"""ferroloop.framing over TLS (client and server side) and pipes, on both loops.

On ferroloop these transports hand what they read (TLS: the decrypted plaintext) to the
protocol's splitter themselves, so `data_received` is never called; on asyncio's loop it
is the way in. The same behaviour is asked of both: frames split across reads, raw mode,
per-frame pause/resume, an oversized frame, EOF in the middle of a frame.

The other end is a plain protocol (TLS) or the raw write end of an `os.pipe()`, through
which the test sends exactly the bytes it wants.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys

import pytest
from ferroloop.framing import ChunkProtocol, Delimiter, FrameTooLarge, LengthPrefixed
from support import run_until
from transport_support import idle

KINDS = ["tls-client", "tls-server", "pipe"]


class Counting(ChunkProtocol):
    """A ChunkProtocol that counts the calls of data_received (the Python way in)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.data_calls = 0

    def data_received(self, data):
        self.data_calls += 1
        super().data_received(data)


class Peer(asyncio.Protocol):
    """The other end of a TLS connection: writes what the test sends, records the rest."""

    def __init__(self):
        self.transport = None
        self.data = bytearray()
        self.lost: list = []

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data

    def connection_lost(self, exc):
        self.lost.append(exc)


@pytest.fixture
def tls_contexts():
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


class TlsLink:
    """`protocol` on one side of a TLS connection over TCP, a `Peer` on the other."""

    def __init__(self, loop, protocol, contexts, side):
        self.loop = loop
        self.protocol = protocol
        self.peer = Peer()
        server_ctx, client_ctx = contexts
        near, far = (protocol, self.peer) if side == "server" else (self.peer, protocol)

        async def connect():
            server = await loop.create_server(lambda: near, "127.0.0.1", 0, ssl=server_ctx)
            port = server.sockets[0].getsockname()[1]
            await loop.create_connection(
                lambda: far, "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
            )
            return server

        self.server = loop.run_until_complete(connect())
        run_until(loop, lambda: protocol.transport is not None and self.peer.transport)

    def send(self, data: bytes) -> None:
        self.peer.transport.write(data)

    def finish(self) -> None:
        """The peer closes: close_notify, then the TCP connection."""
        self.peer.transport.close()

    def close(self) -> None:
        if not self.peer.lost:
            self.peer.transport.abort()
        run_until(self.loop, lambda: self.peer.lost)
        if self.protocol.transport is not None and not self.protocol.transport.is_closing():
            self.protocol.transport.abort()
        self.server.close()
        self.loop.run_until_complete(self.server.wait_closed())
        idle(self.loop)


class PipeLink:
    """`protocol` reading an `os.pipe()` through connect_read_pipe; the test writes the
    other end."""

    def __init__(self, loop, protocol):
        self.loop = loop
        self.protocol = protocol
        rfd, self.wfd = os.pipe()
        self.transport, _ = loop.run_until_complete(
            loop.connect_read_pipe(lambda: protocol, open(rfd, "rb", buffering=0))
        )

    def send(self, data: bytes) -> None:
        os.write(self.wfd, data)

    def finish(self) -> None:
        os.close(self.wfd)
        self.wfd = None

    def close(self) -> None:
        if self.wfd is not None:
            self.finish()
        if not self.transport.is_closing():
            self.transport.close()
        idle(self.loop)


@pytest.fixture(params=KINDS)
def link(request, loop):
    """`link(protocol)`: connects `protocol` over the transport kind of the parameter."""
    made = []

    def make(protocol):
        if request.param == "pipe":
            made.append(PipeLink(loop, protocol))
        else:
            contexts = request.getfixturevalue("tls_contexts")
            side = request.param.removeprefix("tls-")
            made.append(TlsLink(loop, protocol, contexts, side))
        return made[-1]

    make.kind = request.param
    yield make
    for each in made:
        each.close()


def fatal_message(kind: str) -> str:
    """What the exception handler is told when a frame fails: asyncio's SSLProtocol reports
    a failing data_received itself; on a pipe, ChunkProtocol reports it as a socket
    transport does."""
    if kind == "pipe":
        return "Fatal error: protocol.data_received() call failed."
    return "Fatal error on SSL protocol"


def test_frames_across_reads_are_cut_by_the_transport_on_ferroloop(loop_kind, loop, link):
    got: list = []
    protocol = Counting(LengthPrefixed(2), got.append)
    conn = link(protocol)
    frames = [b"", b"a", b"bc" * 100, os.urandom(3000)]
    wire = b"".join(LengthPrefixed(2).encode(f) for f in frames)
    for start in range(0, len(wire), 7):
        conn.send(wire[start : start + 7])
        idle(loop, 0)
    run_until(loop, lambda: len(got) == len(frames))
    assert got == frames
    if loop_kind == "ferroloop":
        assert protocol.data_calls == 0  # the transport fed the splitter itself
    else:
        assert protocol.data_calls > 0


def test_raw_mode_switch_keeps_the_bytes_after_the_switch_point(link, loop):
    events: list = []
    left: list = []

    def on_chunk(frame):
        events.append(("frame", frame))
        if frame.startswith(b"BODY "):
            left.append(int(frame[5:]))
            protocol.set_raw_mode(on_data)

    def on_data(data):
        take = data[: left[0]]
        left[0] -= len(take)
        events.append(("raw", take))
        if left[0] == 0:
            left.pop()
            protocol.set_frame_mode(data[len(take) :])

    protocol = ChunkProtocol(Delimiter(b"\r\n"), on_chunk)
    conn = link(protocol)
    conn.send(b"A\r\nBODY 5\r\nhelloB\r\nBODY 4\r\nwx")
    conn.send(b"yzC\r")
    conn.send(b"\n")
    run_until(loop, lambda: ("frame", b"C") in events)
    frames = [e[1] for e in events if e[0] == "frame"]
    raw = b"".join(e[1] for e in events if e[0] == "raw")
    assert frames == [b"A", b"BODY 5", b"B", b"BODY 4", b"C"]
    assert raw == b"hellowxyz"


def test_pause_reading_in_on_chunk_holds_back_the_frames_already_read(link, loop):
    got: list = []

    def on_chunk(frame):
        got.append(frame)
        if frame == b"0":
            protocol.transport.pause_reading()

    protocol = ChunkProtocol(Delimiter(b"\n"), on_chunk)
    conn = link(protocol)
    conn.send(b"".join(b"%d\n" % i for i in range(10)))
    run_until(loop, lambda: got)
    conn.send(b"10\n")
    idle(loop, 0.05)
    assert got == [b"0"]
    assert not protocol.transport.is_reading()
    protocol.transport.resume_reading()
    run_until(loop, lambda: len(got) == 11)
    assert got == [b"%d" % i for i in range(11)]


def test_an_oversized_frame_is_a_fatal_error(link, loop, exc_handler):
    got: list = []
    lost: list = []
    protocol = ChunkProtocol(
        LengthPrefixed(2, max_frame_size=8), got.append, on_connection_lost=lost.append
    )
    conn = link(protocol)
    conn.send(b"\0\x02ok\0\x09" + b"x" * 9 + b"\0\x05never")
    run_until(loop, lambda: lost)
    assert got == [b"ok"]
    (error,) = lost
    assert isinstance(error, FrameTooLarge)
    assert error.consumed == 9 and error.max_frame_size == 8
    context = exc_handler.pop_one()
    assert context["exception"] is error
    assert context["message"] == fatal_message(link.kind)


def test_an_exception_in_on_chunk_is_a_fatal_error(link, loop, exc_handler):
    got: list = []
    lost: list = []

    def on_chunk(frame):
        got.append(frame)
        if frame == b"bad":
            raise ZeroDivisionError("boom")

    protocol = ChunkProtocol(Delimiter(b"\n"), on_chunk, on_connection_lost=lost.append)
    conn = link(protocol)
    conn.send(b"ok\nbad\nnever\n")
    run_until(loop, lambda: lost)
    assert got == [b"ok", b"bad"]
    assert isinstance(lost[0], ZeroDivisionError)
    assert exc_handler.pop_one()["exception"] is lost[0]


def test_eof_in_the_middle_of_a_frame_reports_the_partial_frame(link, loop):
    got: list = []
    eofs: list = []
    lost: list = []
    protocol = ChunkProtocol(
        LengthPrefixed(4), got.append, on_eof=eofs.append, on_connection_lost=lost.append
    )
    conn = link(protocol)
    conn.send(b"\0\0\0\x02ok\0\0\0\x0apart")
    run_until(loop, lambda: got)
    conn.finish()
    run_until(loop, lambda: lost)
    assert got == [b"ok"]
    (error,) = eofs
    assert isinstance(error, asyncio.IncompleteReadError)
    assert error.partial == b"\0\0\0\x0apart"
    assert error.expected == 14
    assert lost == [None]


@pytest.mark.parametrize("side", ["client", "server"])
def test_framed_echo_over_tls(loop_kind, loop, tls_contexts, side):
    """ChunkProtocols on both ends: the server echoes each frame reversed."""
    server_ctx, client_ctx = tls_contexts
    answers: list = []
    protocols: list = []
    lost: list = []

    def echo_factory():
        protocol = Counting(
            LengthPrefixed(4),
            lambda frame: protocol.write_chunk(frame[::-1]),
            on_connection_lost=lost.append,
        )
        protocols.append(protocol)
        return protocol

    client = Counting(LengthPrefixed(4), answers.append, on_connection_lost=lost.append)
    protocols.append(client)
    payloads = [os.urandom(n) for n in (0, 1, 100, 5000, 20000, 70000)]

    async def main():
        server = await loop.create_server(echo_factory, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        await loop.create_connection(
            lambda: client, "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
        )
        if side == "client":
            client.write_chunks(payloads)
        else:
            for payload in payloads:
                client.write_chunk(payload)
        while len(answers) < len(payloads):
            await asyncio.sleep(0.001)
        client.transport.close()
        while len(lost) < 2:
            await asyncio.sleep(0.001)
        server.close()
        await server.wait_closed()

    loop.run_until_complete(asyncio.wait_for(main(), 10))
    assert answers == [p[::-1] for p in payloads]
    calls = [p.data_calls for p in protocols]
    if loop_kind == "ferroloop":
        assert calls == [0, 0]
    else:
        assert all(calls)


# -- subprocess pipes ------------------------------------------------------------------

CHILD = (
    "import os, time\n"
    "for piece in (b'one\\ntw', b'o\\nthree\\nfo', b'ur\\n'):\n"
    "    os.write(1, piece); time.sleep(0.02)\n"
    "os.write(2, b'err\\npartial')\n"
)


def test_subprocess_pipes_are_framed_by_the_pipe_transport_on_ferroloop(loop_kind, loop):
    from ferroloop.framing import SubprocessChunkProtocol

    class CountingSubprocess(SubprocessChunkProtocol):
        data_calls = 0

        def pipe_data_received(self, fd, data):
            CountingSubprocess.data_calls += 1
            super().pipe_data_received(fd, data)

    frames: list = []
    eofs: list = []

    async def main():
        done = loop.create_future()
        transport, _ = await loop.subprocess_exec(
            lambda: CountingSubprocess(
                Delimiter(b"\n"),
                lambda fd, frame: frames.append((fd, frame)),
                on_eof=lambda fd, error: eofs.append((fd, error)),
                on_exit=done.set_result,
            ),
            sys.executable,
            "-c",
            CHILD,
            stdin=None,
        )
        code = await asyncio.wait_for(done, 30)
        transport.close()
        return code

    assert loop.run_until_complete(main()) == 0
    assert [f for f in frames if f[0] == 1] == [
        (1, b"one"),
        (1, b"two"),
        (1, b"three"),
        (1, b"four"),
    ]
    assert [f for f in frames if f[0] == 2] == [(2, b"err")]
    errors = dict(eofs)
    assert errors[1] is None
    assert errors[2].partial == b"partial"
    if loop_kind == "ferroloop":
        assert CountingSubprocess.data_calls == 0
    else:
        assert CountingSubprocess.data_calls > 0


def test_subprocess_frames_read_before_connection_made_wait_for_it():
    """ferroloop's pipe transport may read a child's output before the subprocess
    protocol's connection_made: the pipe's splitter holds those frames until then, as
    asyncio holds back pipe_data_received."""
    from ferroloop.framing import SubprocessChunkProtocol

    events: list = []

    class Recording(SubprocessChunkProtocol):
        def connection_made(self, transport):
            events.append("made")
            super().connection_made(transport)

    protocol = Recording(Delimiter(b"\n"), lambda fd, frame: events.append((fd, frame)))
    splitter = protocol._native_splitter(1)
    splitter.feed(b"early\nhal")  # what the pipe transport does with the bytes it reads
    splitter.feed(b"f\n")
    assert events == []
    protocol.connection_made(object())
    assert events == ["made", (1, b"early"), (1, b"half")]
    splitter.feed(b"late\n")
    assert events[-1] == (1, b"late")


def test_pipes_raw_streams_and_vectored_writes_on_uvloop():
    """uvloop (when installed, as `tools/dev.py bench` does): an oversized frame closes a
    read pipe with the error, a FramedStream switches to raw bytes and back, and
    write_chunks goes through writelines, as on the other loops."""
    uvloop = pytest.importorskip("uvloop")
    from ferroloop import framing

    async def main():
        loop = asyncio.get_running_loop()
        errors: list = []
        loop.set_exception_handler(lambda _, context: errors.append(context))
        got, lost = [], []
        protocol = ChunkProtocol(
            LengthPrefixed(1, max_frame_size=4), got.append, on_connection_lost=lost.append
        )
        rfd, wfd = os.pipe()
        await loop.connect_read_pipe(lambda: protocol, open(rfd, "rb", buffering=0))
        os.write(wfd, b"\x02ok\x09" + b"x" * 9)
        while not lost:
            await asyncio.sleep(0.001)
        os.close(wfd)
        assert got == [b"ok"]
        assert isinstance(lost[0], FrameTooLarge)
        assert [c["exception"] for c in errors] == [lost[0]]

        big = os.urandom(50_000)

        async def serve(stream):
            stream.write_frames([b"LEN %d" % len(big), big])  # big is no frame: raw
            stream.write_frame(b"END")
            await stream.drain()
            stream.close()

        server = await framing.start_server(serve, "127.0.0.1", 0, framer=Delimiter(b"\n"))
        port = server.sockets[0].getsockname()[1]
        stream = await framing.open_connection("127.0.0.1", port, framer=Delimiter(b"\n"))
        size = int((await stream.read_frame()).split()[1])
        stream.set_raw_mode()
        payload = await stream.readexactly(size + 1)
        stream.set_frame_mode()
        assert payload == big + b"\n"
        assert await stream.read_frame() == b"END"
        stream.close()
        await stream.wait_closed()
        server.close()
        await server.wait_closed()

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
