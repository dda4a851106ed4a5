"""Stream transport: construction and the write path (write, writelines, buffer size)."""

from __future__ import annotations

import asyncio
import logging
import random
import sys

import pytest
from support import run_once, run_until
from transport_support import Peer, RecordingProtocol

# What asyncio's socket transports name in write()'s TypeError (reworded in 3.14).
WRITE_TYPES = (
    "a bytes, bytearray, or memoryview object"
    if sys.version_info >= (3, 14)
    else "a bytes-like object"
)


def test_is_an_asyncio_transport(stream_kit):
    transport, _ = stream_kit.open(RecordingProtocol())
    assert isinstance(transport, asyncio.Transport)
    assert isinstance(transport, asyncio.ReadTransport)
    assert isinstance(transport, asyncio.WriteTransport)
    assert isinstance(transport, asyncio.BaseTransport)


def test_connection_made_is_called_from_the_loop_before_reading(stream_kit, loop):
    a, b = stream_kit.socket_pair()
    b.send(b"early")  # already readable when the transport is made
    protocol = RecordingProtocol()
    transport = stream_kit.transport(a, protocol, wait=False)
    # Nothing is called synchronously: connection_made comes from the loop.
    assert protocol.events == []
    run_once(loop)
    assert protocol.events[:1] == ["connection_made"]
    assert protocol.transport is transport
    run_until(loop, lambda: protocol.data == b"early")
    assert protocol.events == ["connection_made", "data_received"]


def test_waiter_is_set_after_connection_made(stream_kit, loop):
    a, _ = stream_kit.socket_pair()
    protocol = RecordingProtocol()
    waiter = loop.create_future()
    seen = []
    waiter.add_done_callback(lambda _: seen.append(list(protocol.events)))
    stream_kit.transport(a, protocol, waiter=waiter)
    assert not waiter.done()
    loop.run_until_complete(waiter)
    assert waiter.result() is None
    assert seen == [["connection_made"]]


def test_cancelled_waiter_is_harmless(stream_kit, loop):
    a, _ = stream_kit.socket_pair()
    protocol = RecordingProtocol()
    waiter = loop.create_future()
    waiter.cancel()
    stream_kit.transport(a, protocol, waiter=waiter)
    run_until(loop, lambda: protocol.events == ["connection_made"])
    run_once(loop)
    assert waiter.cancelled()


def test_write_sends_at_once_when_nothing_is_queued(stream_kit):
    transport, peer = stream_kit.open(RecordingProtocol())
    transport.write(b"hello")
    assert transport.get_write_buffer_size() == 0
    # Sent inside write(): the peer reads it without the loop running.
    assert peer.recv_at_least_now(5) == b"hello"
    transport.write(bytearray(b" world"))
    transport.write(memoryview(b"!!"))
    assert transport.get_write_buffer_size() == 0
    assert peer.recv_at_least_now(8) == b" world!!"


def test_only_the_remainder_is_queued(stream_kit):
    transport, peer = stream_kit.open(RecordingProtocol())
    transport.set_write_buffer_limits(high=64 * 1024 * 1024)
    data = bytes(range(256)) * (32 * 1024)  # 8 MiB, more than the socket buffers hold
    transport.write(data)
    queued = transport.get_write_buffer_size()
    assert 0 < queued < len(data)
    sent = len(data) - queued
    # What write() sent at once is exactly the head of the data.
    head = peer.recv_at_least_now(sent)
    assert head == data[:sent]
    assert transport.get_write_buffer_size() == queued  # the loop has not run
    peer.drain(len(data))
    assert bytes(peer.data) == data
    run_until(stream_kit.loop, lambda: transport.get_write_buffer_size() == 0)


def test_queued_writes_keep_their_order(stream_kit):
    transport, peer = stream_kit.open(RecordingProtocol())
    transport.set_write_buffer_limits(high=64 * 1024 * 1024)
    data = stream_kit.fill(transport)
    parts = [b"a" * 1000, bytearray(b"b" * 2000), memoryview(b"c" * 3000), b"d"]
    before = transport.get_write_buffer_size()
    for part in parts:
        transport.write(part)
    # With data queued, nothing is sent now: everything is appended.
    assert transport.get_write_buffer_size() == before + 6001
    expected = data + b"".join(bytes(p) for p in parts)
    peer.drain(len(expected))
    assert bytes(peer.data) == expected


@pytest.mark.parametrize(
    "make", [bytes, bytearray, memoryview, lambda b: memoryview(bytearray(b))[2:-2]]
)
def test_bytes_like_objects_are_accepted(stream_kit, make):
    transport, peer = stream_kit.open(RecordingProtocol())
    payload = make(b"xx payload yy")
    transport.write(payload)
    expected = bytes(payload)
    assert peer.recv_at_least_now(len(expected)) == expected


# asyncio copies what it queues up to 3.11; 3.12+ queues a memoryview of the caller's
# buffer (zero-copy writes), so a later mutation changes what it sends.  ferroloop copies.
def skip_if_asyncio_keeps_views(loop_kind: str) -> None:
    if loop_kind == "asyncio" and sys.version_info >= (3, 12):
        pytest.skip("asyncio 3.12+ does not copy a queued bytearray")


def test_mutating_a_queued_bytearray_does_not_change_what_is_sent(stream_kit, loop_kind):
    skip_if_asyncio_keeps_views(loop_kind)
    transport, peer = stream_kit.open(RecordingProtocol())
    transport.set_write_buffer_limits(high=64 * 1024 * 1024)
    data = stream_kit.fill(transport)
    buf = bytearray(b"original")
    transport.write(buf)
    buf[:] = b"MUTATED!"
    view_target = bytearray(b"via view")
    transport.write(memoryview(view_target))
    view_target[:] = b"CHANGED!"
    peer.drain(len(data) + 16)
    assert bytes(peer.data) == data + b"originalvia view"


def test_mutating_a_partly_sent_bytearray_does_not_change_the_remainder(stream_kit, loop_kind):
    skip_if_asyncio_keeps_views(loop_kind)
    transport, peer = stream_kit.open(RecordingProtocol())
    transport.set_write_buffer_limits(high=64 * 1024 * 1024)
    original = bytes(range(256)) * (32 * 1024)  # 8 MiB: only part is sent at once
    buf = bytearray(original)
    transport.write(buf)
    assert transport.get_write_buffer_size() > 0
    buf[:] = bytes(len(buf))
    peer.drain(len(original))
    assert bytes(peer.data) == original


def test_empty_write_is_a_no_op(stream_kit):
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    transport.write(b"")
    transport.write(bytearray())
    transport.write(memoryview(b""))
    assert transport.get_write_buffer_size() == 0
    transport.write(b"x")
    assert peer.recv_at_least_now(1) == b"x"


@pytest.mark.parametrize(
    ("value", "name"), [("text", "str"), ("", "str"), (42, "int"), (None, "NoneType")]
)
def test_write_rejects_non_bytes(stream_kit, value, name):
    transport, _ = stream_kit.open(RecordingProtocol())
    with pytest.raises(TypeError) as info:
        transport.write(value)
    assert str(info.value) == f"data argument must be {WRITE_TYPES}, not {name!r}"
    assert not transport.is_closing()


def test_write_after_write_eof_raises(stream_kit):
    transport, _ = stream_kit.open(RecordingProtocol())
    transport.write_eof()
    with pytest.raises(RuntimeError) as info:
        transport.write(b"data")
    assert str(info.value) == "Cannot call write() after write_eof()"
    # The write_eof check comes before the empty-data shortcut.
    with pytest.raises(RuntimeError, match=r"after write_eof\(\)"):
        transport.write(b"")
    with pytest.raises(RuntimeError, match=r"after write_eof\(\)"):
        transport.writelines([b"data"])
    # ... but after the type check.
    with pytest.raises(TypeError):
        transport.write("text")


def test_write_after_close_is_dropped_and_warns_from_the_fifth(stream_kit, caplog):
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    transport.write(b"before")
    transport.close()
    caplog.set_level(logging.WARNING, logger="asyncio")
    for _ in range(4):
        transport.write(b"dropped")
    assert transport.get_write_buffer_size() == 0
    assert [r for r in caplog.records if r.name == "asyncio"] == []
    transport.write(b"dropped")  # the fifth
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.WARNING, "socket.send() raised exception.")
    ]
    run_until(stream_kit.loop, lambda: protocol.lost)
    transport.write(b"dropped")  # every further write warns again
    assert len([r for r in caplog.records if r.name == "asyncio"]) == 2
    caplog.clear()
    transport.write(b"")  # empty writes return before the check
    assert [r for r in caplog.records if r.name == "asyncio"] == []
    peer.drain()
    assert bytes(peer.data) == b"before"
    assert protocol.lost == [None]


def test_write_after_abort_is_dropped(stream_kit):
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    transport.abort()
    transport.write(b"dropped")
    assert transport.get_write_buffer_size() == 0
    run_until(stream_kit.loop, lambda: protocol.lost)
    transport.write(b"dropped")
    peer.drain()
    assert bytes(peer.data) == b""
    assert protocol.lost == [None]


def test_writelines(stream_kit):
    transport, peer = stream_kit.open(RecordingProtocol())
    transport.writelines([b"one ", bytearray(b"two "), memoryview(b"three ")])
    transport.writelines(iter([b"four ", b"five"]))
    transport.writelines([])
    assert peer.recv_at_least_now(23) == b"one two three four five"
    assert transport.get_write_buffer_size() == 0


def test_writelines_queues_behind_pending_data(stream_kit):
    transport, peer = stream_kit.open(RecordingProtocol())
    transport.set_write_buffer_limits(high=64 * 1024 * 1024)
    data = stream_kit.fill(transport)
    before = transport.get_write_buffer_size()
    lines = [b"x" * 100, bytearray(b"y" * 200), memoryview(b"z" * 300)]
    transport.writelines(lines)
    assert transport.get_write_buffer_size() == before + 600
    peer.drain(len(data) + 600)
    assert bytes(peer.data) == data + b"x" * 100 + b"y" * 200 + b"z" * 300


def test_writelines_sends_a_partly_taken_mix_of_buffers_in_order(stream_kit):
    transport, peer = stream_kit.open(RecordingProtocol())
    transport.set_write_buffer_limits(high=64 * 1024 * 1024)
    rng = random.Random(7)
    # More than the socket buffers hold, so the send stops inside one of the buffers.
    lines = [
        b"head ",
        rng.randbytes(3 * 1024 * 1024),
        bytearray(rng.randbytes(2 * 1024 * 1024)),
        memoryview(rng.randbytes(3 * 1024 * 1024))[5:],
        b"",
        b" tail",
    ]
    expected = b"".join(bytes(line) for line in lines)
    transport.writelines(lines)
    queued = transport.get_write_buffer_size()
    assert 0 < queued < len(expected)
    peer.drain(len(expected))
    assert bytes(peer.data) == expected
    run_until(stream_kit.loop, lambda: transport.get_write_buffer_size() == 0)


# asyncio 3.11 copies the rest of a partly sent write into its queue; 3.12+ keeps a
# memoryview of it, and ferroloop keeps the bytes object itself (no copy).
@pytest.mark.parametrize("method", ["write", "writelines"])
def test_the_unsent_rest_of_a_bytes_object_is_queued_without_a_copy(stream_kit, loop_kind, method):
    if loop_kind == "asyncio" and sys.version_info < (3, 12):
        pytest.skip("asyncio 3.11 copies what it queues")
    transport, peer = stream_kit.open(RecordingProtocol())
    transport.set_write_buffer_limits(high=64 * 1024 * 1024)
    data = bytes(range(256)) * (32 * 1024)  # 8 MiB: only part is sent at once
    references = sys.getrefcount(data)
    if method == "write":
        transport.write(data)
    else:
        transport.writelines([data])
    assert 0 < transport.get_write_buffer_size() < len(data)
    assert sys.getrefcount(data) > references  # the queue holds the object itself
    peer.drain(len(data))
    assert bytes(peer.data) == data
    run_until(stream_kit.loop, lambda: transport.get_write_buffer_size() == 0)
    assert sys.getrefcount(data) == references


def test_writelines_rejects_str(stream_kit):
    transport, _ = stream_kit.open(RecordingProtocol())
    with pytest.raises(TypeError):
        transport.writelines(["text"])


def test_buffer_size_drains_to_zero(stream_kit):
    transport, peer = stream_kit.open(RecordingProtocol())
    transport.set_write_buffer_limits(high=64 * 1024 * 1024)
    data = stream_kit.fill(transport)
    assert transport.get_write_buffer_size() > 0
    peer.drain(len(data))
    run_until(stream_kit.loop, lambda: transport.get_write_buffer_size() == 0)
    # Once drained, the next write is sent at once again.
    transport.write(b"tail")
    assert transport.get_write_buffer_size() == 0
    peer.drain(len(data) + 4)
    assert bytes(peer.data) == data + b"tail"


def test_write_before_connection_made_is_sent_at_once(stream_kit, loop):
    a, b = stream_kit.socket_pair()
    protocol = RecordingProtocol()
    transport = stream_kit.transport(a, protocol, wait=False)
    transport.write(b"eager")
    assert transport.get_write_buffer_size() == 0
    assert protocol.events == []
    assert Peer(loop, b).recv_at_least_now(5) == b"eager"
    run_until(loop, lambda: protocol.events == ["connection_made"])
