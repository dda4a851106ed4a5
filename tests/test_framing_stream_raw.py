"""FramedStream's raw mode: `set_raw_mode()`, `read(n)`, `readexactly(n)`,
`set_frame_mode()`, on both loops.

A stream queues frames ahead of the reader, so when the reader switches to raw mode some
of the bytes it wants were already cut into frames: they must come back as the bytes they
came as, followed by what the splitter still holds, with nothing lost or reordered,
wherever the reads split the input and whether or not the input has ended.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from ferroloop import framing
from ferroloop.framing import Delimiter, FrameTooLarge, LengthPrefixed


def serve_bytes(parts, tasks, *, close=True, pause=0.005):
    """A plain server that writes `parts` one by one (a pause between them, so they tend
    to arrive as separate reads), then closes unless told not to; its tasks go to
    `tasks`."""

    class Sender(asyncio.Protocol):
        def connection_made(self, transport):
            tasks.append(asyncio.get_running_loop().create_task(self.send(transport)))

        async def send(self, transport):
            for part in parts:
                transport.write(part)
                await asyncio.sleep(pause)
            if close:
                transport.close()

    return Sender


def run_client(loop, parts, framer, client, *, close=True, max_queued=64, pause=0.005):
    """Runs `client(stream)` against a server sending `parts`; returns its result."""
    tasks: list = []

    async def main():
        sender = serve_bytes(parts, tasks, close=close, pause=pause)
        server = await loop.create_server(sender, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        stream = await framing.open_connection(
            "127.0.0.1", port, framer=framer, max_queued=max_queued
        )
        try:
            return await asyncio.wait_for(client(stream), 10)
        finally:
            stream.close()
            await stream.wait_closed()
            await asyncio.gather(*tasks)
            server.close()
            await server.wait_closed()

    return loop.run_until_complete(main())


MEMCACHED = b"VALUE k 0 7\r\nhe\r\nl\r\n\r\nEND\r\nVALUE j 0 2\r\nok\r\nEND\r\n"


@pytest.mark.parametrize("cut", [1, 5, 13, 17, 20, 30, len(MEMCACHED)])
def test_a_value_block_after_a_header_frame(loop, cut):
    """memcached's get reply: a header line, a data block that holds CRLF, then lines."""

    async def client(stream):
        got = []
        for _ in range(2):
            header = await stream.read_frame()
            size = int(header.split()[3])
            stream.set_raw_mode()
            block = await stream.readexactly(size + 2)
            stream.set_frame_mode()
            got += [header, block, await stream.read_frame()]
        return got

    parts = [MEMCACHED[:cut], MEMCACHED[cut:]]
    assert run_client(loop, parts, Delimiter(b"\r\n"), client) == [
        b"VALUE k 0 7",
        b"he\r\nl\r\n\r\n",
        b"END",
        b"VALUE j 0 2",
        b"ok\r\n",
        b"END",
    ]


def test_frames_queued_ahead_of_the_reader_come_back_as_their_bytes(loop):
    """All frames are queued before the switch (one write, a reader that waits)."""
    framer = LengthPrefixed(2)
    wire = b"".join(framer.encode(f) for f in (b"head", b"abc", b"", b"defg", b"tail"))

    async def client(stream):
        await asyncio.sleep(0.05)  # let every frame be queued
        first = await stream.read_frame()
        stream.set_raw_mode()
        middle = await stream.readexactly(len(wire) - 6 - 6)
        stream.set_frame_mode()
        return first, middle, await stream.read_frame()

    first, middle, last = run_client(loop, [wire], framer, client)
    assert (first, last) == (b"head", b"tail")
    assert middle == wire[6:-6]


def test_a_header_the_frames_lose_is_given_back_whole(loop):
    """PostgreSQL-like messages: a type byte, a 4-byte length counting itself; the frame
    is delivered without the header, yet raw mode sees the exact bytes."""
    framer = LengthPrefixed(4, offset=1, adjustment=-4)
    messages = [b"Z\0\0\0\x05I", b"D\0\0\0\x08abcd", b"C\0\0\0\x06ok"]

    async def client(stream):
        await asyncio.sleep(0.05)
        first = await stream.read_frame()
        stream.set_raw_mode()
        second = await stream.readexactly(len(messages[1]))
        stream.set_frame_mode()
        return first, second, await stream.read_frame()

    assert run_client(loop, [b"".join(messages)], framer, client) == (
        b"I",
        messages[1],
        b"ok",
    )


def test_read_returns_what_is_there_and_b_empty_at_the_end(loop):
    async def client(stream):
        stream.set_raw_mode()
        chunks = []
        while chunk := await stream.read(4):
            assert len(chunk) <= 4
            chunks.append(chunk)
        assert await stream.read() == b""
        return b"".join(chunks)

    assert run_client(loop, [b"line\nand raw", b" bytes"], Delimiter(b"\n"), client) == (
        b"line\nand raw bytes"
    )


def test_read_all_and_readexactly_at_the_end(loop):
    async def client(stream):
        assert await stream.read_frame() == b"first"
        stream.set_raw_mode()
        everything = await stream.read(-1)
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await stream.readexactly(1)
        return everything, info.value

    everything, error = run_client(loop, [b"first\nsecond\nthi", b"rd"], Delimiter(b"\n"), client)
    assert everything == b"second\nthird"
    assert error.partial == b"" and error.expected == 1


def test_a_partial_frame_at_the_end_is_raw_bytes_after_the_switch(loop):
    async def client(stream):
        await asyncio.sleep(0.05)  # the end is seen before the switch
        assert await stream.read_frame() == b"BODY 5"
        stream.set_raw_mode()
        body = await stream.readexactly(5)
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await stream.readexactly(3)
        return body, info.value

    body, error = run_client(loop, [b"BODY 5\nhello!"], Delimiter(b"\n"), client)
    assert body == b"hello"
    assert error.partial == b"!" and error.expected == 3


def test_back_to_frames_after_the_end_splits_what_is_left(loop):
    async def client(stream):
        stream.set_raw_mode()
        assert await stream.readexactly(3) == b"raw"
        await asyncio.sleep(0.05)  # the end arrives in raw mode
        stream.set_frame_mode()
        frames = [await stream.read_frame(), await stream.read_frame()]
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await stream.read_frame()
        return frames, info.value

    frames, error = run_client(loop, [b"rawa\nb\npart"], Delimiter(b"\n"), client)
    assert frames == [b"a", b"b"]
    assert error.partial == b"part"


def test_a_frame_too_large_after_the_switch_back_is_raised_after_the_good_frames(loop, exc_handler):
    async def client(stream):
        stream.set_raw_mode()
        await asyncio.sleep(0.05)
        stream.set_frame_mode()
        first = await stream.read_frame()
        with pytest.raises(FrameTooLarge) as info:
            await stream.read_frame()
        return first, info.value

    framer = Delimiter(b"\n", max_frame_size=4)
    first, error = run_client(loop, [b"ok\n" + b"x" * 10 + b"\n"], framer, client)
    assert first == b"ok"
    assert exc_handler.pop_one()["exception"] is error


def test_bytes_the_stream_cannot_frame_ahead_of_the_reader_are_not_an_error_in_raw_mode(
    loop,
):
    """The payload has no delimiter within max_frame_size: framing ahead of the reader
    fails on it, but the reader switches to raw mode before it gets there."""

    async def client(stream):
        await asyncio.sleep(0.05)  # everything is read before the reader starts
        size = int((await stream.read_frame()).split()[1])
        stream.set_raw_mode()
        payload = await stream.readexactly(size)
        stream.set_frame_mode()
        return payload, await stream.read_frame()

    framer = Delimiter(b"\n", max_frame_size=8)
    wire = b"LEN 20\n" + b"x" * 20 + b"END\n"
    assert run_client(loop, [wire], framer, client, close=False) == (b"x" * 20, b"END")


def test_reading_the_wrong_way_for_the_mode_is_an_error(loop):
    async def client(stream):
        with pytest.raises(RuntimeError, match="frame mode"):
            await stream.read(1)
        with pytest.raises(RuntimeError, match="frame mode"):
            await stream.readexactly(1)
        stream.set_raw_mode()
        with pytest.raises(RuntimeError, match="raw mode"):
            await stream.read_frame()
        with pytest.raises(ValueError):
            await stream.readexactly(-1)
        assert await stream.read(0) == b""
        return await stream.readexactly(2)

    assert run_client(loop, [b"ab"], Delimiter(b"\n"), client) == b"ab"


def test_a_large_raw_payload_pauses_reading_and_arrives_whole(loop):
    payload = os.urandom(3 * 1024 * 1024)
    wire = b"SIZE\n" + payload + b"after\n"
    parts = [wire[i : i + 256 * 1024] for i in range(0, len(wire), 256 * 1024)]
    paused = []

    async def client(stream):
        assert await stream.read_frame() == b"SIZE"
        stream.set_raw_mode()
        got = bytearray()
        while len(got) < len(payload):
            await asyncio.sleep(0.002)  # a slow reader
            paused.append(not stream.transport.is_reading())
            got += await stream.read(min(100_000, len(payload) - len(got)))
        stream.set_frame_mode()
        return bytes(got), await stream.read_frame()

    framer = Delimiter(b"\n", max_frame_size=1024)
    got, after = run_client(loop, parts, framer, client, pause=0)
    assert got == payload
    assert after == b"after"
    assert any(paused)
