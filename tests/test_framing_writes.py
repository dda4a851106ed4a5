"""ChunkProtocol.write_chunks: one scatter/gather write, on both loops.

Headers, delimiters and small payloads are copied together; a `bytes` payload of 1 KiB or
more is handed to the transport as it is (ferroloop's socket transport queues it in Rust
and sends everything with one sendmsg; other transports get `writelines`). The peer must
see exactly the encoded frames, in order with what was written before, and flow control
must work as for any write.
"""

from __future__ import annotations

import os
import socket
import sys

import pytest
from ferroloop.framing import ChunkProtocol, Delimiter, FixedSize, LengthPrefixed
from support import run_until
from transport_support import idle


class Recording(ChunkProtocol):
    """Records flow control, and the transport's writelines calls (what other loops get)."""

    def __init__(self, framer, record_writelines):
        super().__init__(framer, lambda frame: None)
        self.flow: list[str] = []
        self.writelines_calls: list[list] = []
        self._record_writelines = record_writelines

    def connection_made(self, transport):
        if self._record_writelines:
            writelines = transport.writelines

            def record(list_of_data):
                self.writelines_calls.append(list(list_of_data))
                writelines(list_of_data)

            transport.writelines = record
        super().connection_made(transport)

    def pause_writing(self):
        self.flow.append("pause")

    def resume_writing(self):
        self.flow.append("resume")


@pytest.fixture
def connected(loop, loop_kind):
    """`connected(framer)`: `(protocol, peer)`, the protocol on one end of a socket pair."""
    made = []

    def connect(framer):
        near, peer = socket.socketpair()
        protocol = Recording(framer, record_writelines=loop_kind != "ferroloop")
        loop.run_until_complete(loop.connect_accepted_socket(lambda: protocol, near))
        made.append((protocol, peer))
        return protocol, peer

    yield connect
    for protocol, peer in made:
        peer.close()
        protocol.transport.abort()
    idle(loop)


def read_all(loop, peer, size: int) -> bytes:
    """What `peer` receives, `size` bytes of it, with the loop running to send it."""
    peer.setblocking(False)
    got = bytearray()

    def received():
        try:
            got.extend(peer.recv(1 << 20))
        except BlockingIOError:
            pass
        return len(got) >= size

    run_until(loop, received, timeout=10)
    return bytes(got)


@pytest.mark.parametrize(
    "framer",
    [LengthPrefixed(4), Delimiter(b"\r\n"), FixedSize(3000)],
    ids=["length", "delimiter", "fixed"],
)
def test_mixed_frames_reach_the_peer_in_order(loop, connected, framer):
    protocol, peer = connected(framer)
    if isinstance(framer, FixedSize):
        frames = [b"a" * 3000, bytearray(b"b" * 3000), os.urandom(3000)]
    else:
        frames = [b"", b"small", os.urandom(5000), bytearray(b"mutable"), b"x" * 1024]
        frames += [memoryview(b"view"), os.urandom(70000), b"end"]
    protocol.transport.write(b"before ")
    protocol.write_chunks(frames)
    protocol.transport.write(b" after")
    expected = b"before " + b"".join(framer.encode(f) for f in frames) + b" after"
    assert read_all(loop, peer, len(expected)) == expected


def test_large_payloads_are_passed_on_not_joined(loop_kind, loop, connected):
    framer = LengthPrefixed(4, max_frame_size=16 * 1024 * 1024)
    protocol, peer = connected(framer)
    big = os.urandom(8 * 1024 * 1024)  # more than the socket takes at once
    small = b"tiny"
    refs = sys.getrefcount(big)
    protocol.write_chunks([small, big, small])
    if loop_kind == "ferroloop":
        # Queued by reference in the transport (what it could not send at once).
        assert sys.getrefcount(big) == refs + 1
        assert protocol.transport.get_write_buffer_size() > 0
    else:
        ((header, payload, trailer),) = protocol.writelines_calls
        assert header == b"\0\0\0\x04tiny" + len(big).to_bytes(4, "big")
        assert payload is big
        assert trailer == b"\0\0\0\x04tiny"
    expected = b"".join(framer.encode(f) for f in (small, big, small))
    assert read_all(loop, peer, len(expected)) == expected
    assert protocol.transport.get_write_buffer_size() == 0


def test_small_frames_are_one_write(loop_kind, loop, connected):
    protocol, peer = connected(Delimiter(b"\n"))
    protocol.write_chunks([b"a", b"b", b"c"])
    assert protocol.writelines_calls == []  # one bytes, written with write()
    assert read_all(loop, peer, 6) == b"a\nb\nc\n"


def test_flow_control_pauses_and_resumes_the_protocol(loop, connected):
    protocol, peer = connected(LengthPrefixed(4))
    protocol.transport.set_write_buffer_limits(high=64 * 1024)
    payloads = [os.urandom(1024 * 1024) for _ in range(4)]
    protocol.write_chunks(payloads)
    assert protocol.flow == ["pause"]
    expected = b"".join(LengthPrefixed(4).encode(p) for p in payloads)
    assert read_all(loop, peer, len(expected)) == expected
    run_until(loop, lambda: protocol.flow == ["pause", "resume"])


def test_a_frame_that_cannot_be_encoded_writes_nothing(loop, connected):
    protocol, peer = connected(LengthPrefixed(1))
    with pytest.raises(ValueError):
        protocol.write_chunks([b"ok", os.urandom(2000), b"x" * 300])
    protocol.write_chunk(b"after")
    assert read_all(loop, peer, 6) == b"\x05after"


def test_write_chunks_after_write_eof_raises_as_writelines(loop, connected):
    protocol, _ = connected(LengthPrefixed(4))
    protocol.transport.write_eof()
    name = "writelines" if sys.version_info >= (3, 12) else "write"
    with pytest.raises(RuntimeError, match=rf"Cannot call {name}\(\) after write_eof\(\)"):
        protocol.write_chunks([os.urandom(4096)])


def test_write_chunks_inside_on_chunk_keep_their_order(loop):
    """On ferroloop's socket transport what on_chunk writes is queued until the read's
    frames are delivered (the cork): vectored writes must keep their place there too."""
    big = os.urandom(100_000)

    def on_chunk(frame):
        protocol.write_chunk(frame)
        protocol.write_chunks([big, frame])

    protocol = ChunkProtocol(Delimiter(b"\n"), on_chunk)
    near, peer = socket.socketpair()
    with peer:
        loop.run_until_complete(loop.connect_accepted_socket(lambda: protocol, near))
        peer.sendall(b"one\ntwo\n")
        expected = b"".join(f + b"\n" + big + b"\n" + f + b"\n" for f in (b"one", b"two"))
        assert read_all(loop, peer, len(expected)) == expected
        protocol.transport.abort()
        idle(loop)
