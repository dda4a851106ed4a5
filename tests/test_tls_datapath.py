"""The steady state of a TLS connection: writes of every bytes-like kind, writelines,
pausing either side, switching protocols mid-stream and close_notify.

On ferroloop this is the Rust pump (`_core.TlsPump`) with its fall-backs into asyncio's
`SSLProtocol`; every behaviour test also runs on asyncio's own loop. Connections are made
with start_tls over a socketpair (see test_tls.py).
"""

from __future__ import annotations

import asyncio
import gc
import ssl
import tracemalloc
import weakref

import ferroloop
import pytest
from test_tls import Recorder, handshake


async def tls_pair(loop, server_context, client_context):
    """(server transport, server protocol, client transport, client protocol), wrapped."""
    server_tls, client_tls, server_proto, client_proto = await handshake(
        loop, server_context, client_context
    )
    server, client = await server_tls, await client_tls
    server_proto.transport, client_proto.transport = server, client
    return server, server_proto, client, client_proto


async def wait_for_bytes(proto, count, timeout=5):
    async def poll():
        while len(proto.data) < count:
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), timeout)


async def close_both(server, server_proto, client, client_proto):
    client.close()
    server.close()
    await asyncio.wait_for(asyncio.gather(server_proto.lost, client_proto.lost), 5)


def test_every_bytes_like_write_arrives_in_order(loop, server_context, client_context):
    async def main():
        server, server_proto, client, client_proto = await tls_pair(
            loop, server_context, client_context
        )
        client.write(b"bytes|")
        client.write(bytearray(b"bytearray|"))
        client.write(memoryview(b"--memoryview|")[2:])
        client.write(b"")
        client.writelines([b"a", bytearray(b"b"), memoryview(b"c"), b"|"])
        client.writelines([])
        client.writelines(iter([b"generator", b"|"]))
        big = bytes(range(256)) * 1024  # several TLS records in one write
        client.write(big)
        expected = b"bytes|bytearray|memoryview|abc|generator|" + big
        await wait_for_bytes(server_proto, len(expected))
        assert bytes(server_proto.data) == expected
        assert client.get_write_buffer_size() == 0
        await close_both(server, server_proto, client, client_proto)

    loop.run_until_complete(main())


@pytest.mark.parametrize("bad", ["text", 12, None])
def test_write_rejects_what_is_not_bytes_like(loop, server_context, client_context, bad):
    async def main():
        server, server_proto, client, client_proto = await tls_pair(
            loop, server_context, client_context
        )
        with pytest.raises(TypeError, match="data: expecting a bytes-like instance, got"):
            client.write(bad)
        client.write(b"still fine")
        await wait_for_bytes(server_proto, 10)
        assert bytes(server_proto.data) == b"still fine"
        await close_both(server, server_proto, client, client_proto)

    loop.run_until_complete(main())


def test_paused_reading_holds_data_until_resumed(loop, server_context, client_context):
    async def main():
        server, server_proto, client, client_proto = await tls_pair(
            loop, server_context, client_context
        )
        server.pause_reading()
        assert not server.is_reading()
        client.write(b"x" * 100_000)
        for _ in range(50):
            await asyncio.sleep(0.002)
        assert server_proto.data == b""
        server.resume_reading()
        await wait_for_bytes(server_proto, 100_000)
        assert bytes(server_proto.data) == b"x" * 100_000
        await close_both(server, server_proto, client, client_proto)

    loop.run_until_complete(main())


class PauseRecorder(Recorder):
    """A Recorder that counts pause_writing/resume_writing."""

    def __init__(self, loop):
        super().__init__(loop)
        self.pauses = 0
        self.resumes = 0

    def pause_writing(self):
        self.pauses += 1

    def resume_writing(self):
        self.resumes += 1


def test_a_slow_peer_pauses_and_resumes_the_writer(loop, server_context, client_context):
    async def main():
        server, server_proto, client, _ = await tls_pair(loop, server_context, client_context)
        writer = PauseRecorder(loop)
        client.set_protocol(writer)
        client.set_write_buffer_limits(high=16 * 1024)
        server.pause_reading()
        chunk = bytes(range(256)) * 64
        sent = 0
        while writer.pauses == 0 and sent < 64 * 1024 * 1024:
            client.write(chunk)
            sent += len(chunk)
            await asyncio.sleep(0)
        assert writer.pauses == 1
        assert client.get_write_buffer_size() >= 16 * 1024
        server.resume_reading()
        await wait_for_bytes(server_proto, sent, timeout=20)
        assert bytes(server_proto.data) == chunk * (sent // len(chunk))
        while writer.resumes == 0:
            await asyncio.sleep(0.001)
        assert writer.resumes == 1
        assert client.get_write_buffer_size() == 0
        await close_both(server, server_proto, client, writer)

    loop.run_until_complete(main())


class BufferedRecorder(asyncio.BufferedProtocol):
    """A BufferedProtocol with a small buffer, collecting what it is given."""

    def __init__(self, loop):
        self.data = bytearray()
        self.buffer = bytearray(1000)
        self.lost = loop.create_future()

    def get_buffer(self, sizehint):
        # A memoryview: asyncio's SSLProtocol slices the buffer to fill it in parts.
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes):
        self.data += self.buffer[:nbytes]

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def test_switching_to_a_buffered_protocol_mid_stream(loop, server_context, client_context):
    async def main():
        server, server_proto, client, client_proto = await tls_pair(
            loop, server_context, client_context
        )
        client.write(b"first")
        await wait_for_bytes(server_proto, 5)
        buffered = BufferedRecorder(loop)
        server.set_protocol(buffered)
        assert server.get_protocol() is buffered
        payload = bytes(range(256)) * 100
        client.write(payload)
        await wait_for_bytes(buffered, len(payload))
        assert bytes(buffered.data) == payload
        back = Recorder(loop)
        server.set_protocol(back)
        client.write(b"plain again")
        await wait_for_bytes(back, 11)
        assert bytes(back.data) == b"plain again"
        assert bytes(server_proto.data) == b"first"
        client.close()
        server.close()
        await asyncio.wait_for(asyncio.gather(back.lost, client_proto.lost), 5)

    loop.run_until_complete(main())


class EofRecorder(Recorder):
    def __init__(self, loop):
        super().__init__(loop)
        self.events = []

    def data_received(self, data):
        super().data_received(data)
        self.events.append("data")

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        super().connection_lost(exc)


def test_close_notify_after_data_gives_data_then_eof(loop, server_context, client_context):
    async def main():
        server, _, client, client_proto = await tls_pair(loop, server_context, client_context)
        recorder = EofRecorder(loop)
        server.set_protocol(recorder)
        client.write(b"last words")
        client.close()
        assert await asyncio.wait_for(recorder.lost, 5) is None
        assert bytes(recorder.data) == b"last words"
        assert recorder.events[-2:] == ["eof", "lost"]
        assert set(recorder.events[:-2]) <= {"data"}
        await asyncio.wait_for(client_proto.lost, 5)
        server.close()

    loop.run_until_complete(main())


def test_writes_after_close_are_dropped_quietly(loop, server_context, client_context):
    async def main():
        server, server_proto, client, client_proto = await tls_pair(
            loop, server_context, client_context
        )
        client.close()
        client.write(b"too late")
        client.writelines([b"also", b"late"])
        await asyncio.wait_for(asyncio.gather(server_proto.lost, client_proto.lost), 5)
        assert server_proto.data == b""
        server.close()

    loop.run_until_complete(main())


def test_reading_records_allocates_no_large_buffers(server_context, client_context):
    """asyncio reads each record with `SSLObject.read(256 KiB)`: a fresh 256 KiB bytes per
    read. ferroloop decrypts into one buffer per connection and copies out what arrived."""
    loop = ferroloop.new_event_loop()

    async def main():
        server, server_proto, client, client_proto = await tls_pair(
            loop, server_context, client_context
        )
        client.write(b"warm-up")
        await wait_for_bytes(server_proto, 7)
        tracemalloc.start()
        try:
            received = len(server_proto.data)
            worst = 0
            for _ in range(50):
                before, _ = tracemalloc.get_traced_memory()
                tracemalloc.reset_peak()
                client.write(b"m" * 1000)
                received += 1000
                await wait_for_bytes(server_proto, received)
                _, peak = tracemalloc.get_traced_memory()
                worst = max(worst, peak - before)
        finally:
            tracemalloc.stop()
        # A 1000-byte message costs a 1000-byte bytes and some bookkeeping, nothing near a
        # 256 KiB temporary buffer per read.
        assert worst < 64 * 1024, worst
        await close_both(server, server_proto, client, client_proto)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_tls_connections_keep_no_read_buffer_of_their_own(server_context, client_context):
    """asyncio's SSLProtocol holds a 256 KiB bytearray per connection; ferroloop's TLS
    connections on a thread share one."""
    loop = ferroloop.new_event_loop()

    async def main():
        first = await tls_pair(loop, server_context, client_context)
        tracemalloc.start()
        try:
            pairs = [await tls_pair(loop, server_context, client_context) for _ in range(10)]
            for _, server_proto, client, _ in pairs:
                client.write(b"hello")
                await wait_for_bytes(server_proto, 5)
            current, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # 20 TLS endpoints; asyncio's buffers alone would be 5 MiB.
        assert current < 20 * 64 * 1024, current
        for pair in [first, *pairs]:
            await close_both(*pair)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


class ChunkRecorder(Recorder):
    """A Recorder that also keeps the type and size of every data_received argument."""

    def __init__(self, loop):
        super().__init__(loop)
        self.chunks = []

    def data_received(self, data):
        self.chunks.append((type(data), len(data)))
        super().data_received(data)


def test_waiting_plaintext_arrives_in_one_data_received(loop, server_context, client_context):
    """What the incoming BIO holds is decrypted and handed over in one bytes (up to the
    256 KiB buffer), as asyncio does: splitting it would cost an echoing application one
    write, one SSLObject.write and one send per piece."""

    async def main():
        server, _, client, client_proto = await tls_pair(loop, server_context, client_context)
        server_proto = ChunkRecorder(loop)
        server.set_protocol(server_proto)
        server.pause_reading()
        payload = bytes(range(256)) * 800  # 200 KiB
        client.write(payload)
        # The socket transport keeps filling the incoming BIO while the app is paused.
        incoming = server._ssl_protocol._incoming
        for _ in range(500):
            if incoming.pending >= len(payload):
                break
            await asyncio.sleep(0.002)
        assert incoming.pending >= len(payload)
        server.resume_reading()
        await wait_for_bytes(server_proto, len(payload))
        assert bytes(server_proto.data) == payload
        assert server_proto.chunks == [(bytes, len(payload))]
        await close_both(server, server_proto, client, client_proto)

    loop.run_until_complete(main())


class Exploding(Recorder):
    def data_received(self, data):
        raise ZeroDivisionError("boom")


def test_an_exception_in_data_received_is_a_fatal_tls_error(
    loop, exc_handler, server_context, client_context
):
    async def main():
        server, _, client, client_proto = await tls_pair(loop, server_context, client_context)
        exploding = Exploding(loop)
        server.set_protocol(exploding)
        client.write(b"trigger")
        assert await asyncio.wait_for(exploding.lost, 5) is not None
        await asyncio.wait_for(client_proto.lost, 5)
        server.close()  # Python 3.10's transports do not mark themselves closed here
        client.close()
        for _ in range(10):  # let the socket transports below finish closing
            await asyncio.sleep(0)

    loop.run_until_complete(main())
    context = exc_handler.pop_one()
    expected = "Fatal error on SSL protocol"
    assert context["message"] == expected
    assert isinstance(context["exception"], ZeroDivisionError)


def test_a_transport_kept_after_close_does_not_keep_the_ssl_context(loop, ca, server_context):
    """As with asyncio, the application may hold on to its closed TLS transport without
    keeping the protocol machinery and the user's SSLContext alive (no gc needed)."""

    async def main():
        context = ssl.create_default_context()
        ca.configure_trust(context)
        server, server_proto, client, client_proto = await tls_pair(loop, server_context, context)
        client.write(b"bye")
        await wait_for_bytes(server_proto, 3)
        client.close()
        await asyncio.wait_for(asyncio.gather(server_proto.lost, client_proto.lost), 5)
        client.close()  # a second close: asyncio's transport lets go of its protocol here
        server.close()
        assert client_proto.transport is client
        return client_proto, weakref.ref(context)

    gc.disable()
    try:
        kept_protocol, context_ref = loop.run_until_complete(main())
        assert kept_protocol.transport.is_closing()
        assert context_ref() is None
    finally:
        gc.enable()


class BytearrayBufferedRecorder(BufferedRecorder):
    """Hands out its bytearray itself, not a memoryview of it."""

    def get_buffer(self, sizehint):
        return self.buffer


def test_a_buffered_protocol_with_a_bytearray_buffer_gets_every_byte(
    server_context, client_context
):
    """asyncio's SSLProtocol fills such a buffer through `buf[offset:]`, a copy, and loses
    what did not fit the first read; ferroloop fills the buffer in place."""
    loop = ferroloop.new_event_loop()

    async def main():
        server, server_proto, client, client_proto = await tls_pair(
            loop, server_context, client_context
        )
        buffered = BytearrayBufferedRecorder(loop)
        server.set_protocol(buffered)
        payload = bytes(range(256)) * 400  # several records, many 1000-byte buffers
        client.write(payload)
        await wait_for_bytes(buffered, len(payload))
        assert bytes(buffered.data) == payload
        client.close()
        server.close()
        await asyncio.wait_for(asyncio.gather(buffered.lost, client_proto.lost), 5)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
