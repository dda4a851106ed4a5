"""Stream transport: write flow control (buffer limits, pause_writing/resume_writing)."""

from __future__ import annotations

import pytest
from support import run_until
from transport_support import RecordingProtocol


def test_default_write_buffer_limits(stream_kit):
    transport, _ = stream_kit.open(RecordingProtocol())
    # (low, high): low first.
    assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)


@pytest.mark.parametrize(
    ("kwargs", "limits"),
    [
        ({"high": 100}, (25, 100)),  # low defaults to high // 4
        ({"high": 101}, (25, 101)),
        ({"low": 100}, (100, 400)),  # high defaults to 4 * low
        ({"high": 100, "low": 10}, (10, 100)),
        ({"high": 100, "low": 100}, (100, 100)),
        ({"high": 0}, (0, 0)),
        ({"high": 3}, (0, 3)),
        ({"low": 0}, (0, 0)),
        ({}, (16 * 1024, 64 * 1024)),
    ],
)
def test_set_write_buffer_limits(stream_kit, kwargs, limits):
    transport, _ = stream_kit.open(RecordingProtocol())
    transport.set_write_buffer_limits(high=1000, low=500)
    transport.set_write_buffer_limits(**kwargs)
    assert transport.get_write_buffer_limits() == limits


def test_set_write_buffer_limits_positional(stream_kit):
    transport, _ = stream_kit.open(RecordingProtocol())
    transport.set_write_buffer_limits(200, 50)
    assert transport.get_write_buffer_limits() == (50, 200)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"high": 1, "low": 2}, "high (1) must be >= low (2) must be >= 0"),
        ({"high": 10, "low": -1}, "high (10) must be >= low (-1) must be >= 0"),
        ({"high": -1}, "high (-1) must be >= low (-1) must be >= 0"),
        ({"low": -4}, "high (-16) must be >= low (-4) must be >= 0"),
    ],
)
def test_set_write_buffer_limits_rejects_bad_values(stream_kit, kwargs, message):
    transport, _ = stream_kit.open(RecordingProtocol())
    with pytest.raises(ValueError) as info:
        transport.set_write_buffer_limits(**kwargs)
    assert str(info.value) == message
    assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)


def test_pause_writing_once_above_high_and_resume_once_at_low(stream_kit):
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    low, high = transport.get_write_buffer_limits()
    data = stream_kit.fill(transport)
    # pause_writing() is called inside write(), as soon as the buffer exceeds high.
    assert protocol.events == ["connection_made", "pause_writing"]
    assert protocol.pause_sizes[0] > high
    # More writes while paused do not pause again.
    for _ in range(5):
        transport.write(b"x" * 100_000)
        data += b"x" * 100_000
    assert protocol.count("pause_writing") == 1
    peer.drain(len(data))
    run_until(stream_kit.loop, lambda: transport.get_write_buffer_size() == 0)
    assert bytes(peer.data) == data
    assert protocol.events == ["connection_made", "pause_writing", "resume_writing"]
    assert protocol.resume_sizes[0] <= low


def test_no_pause_at_exactly_high(stream_kit):
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    transport.set_write_buffer_limits(high=64 * 1024 * 1024)
    stream_kit.fill(transport)
    queued = transport.get_write_buffer_size()
    transport.set_write_buffer_limits(high=queued + 1000, low=0)
    transport.write(b"y" * 1000)
    assert transport.get_write_buffer_size() == queued + 1000
    assert "pause_writing" not in protocol.events
    transport.write(b"z")
    assert protocol.events[-1:] == ["pause_writing"]
    assert protocol.pause_sizes == [queued + 1001]


def test_resume_waits_for_low(stream_kit):
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    transport.set_write_buffer_limits(high=100_000, low=50_000)
    data = stream_kit.fill(transport)
    for _ in range(8):
        transport.write(b"q" * 500_000)
        data += b"q" * 500_000
    assert protocol.count("pause_writing") == 1
    peer.drain(len(data))
    run_until(stream_kit.loop, lambda: "resume_writing" in protocol.events)
    assert protocol.count("resume_writing") == 1
    assert protocol.resume_sizes[0] <= 50_000
    assert bytes(peer.data) == data


def test_lowering_high_pauses_at_once(stream_kit):
    protocol = RecordingProtocol()
    transport, _ = stream_kit.open(protocol)
    transport.set_write_buffer_limits(high=64 * 1024 * 1024)
    stream_kit.fill(transport)
    assert "pause_writing" not in protocol.events
    queued = transport.get_write_buffer_size()
    transport.set_write_buffer_limits(high=queued - 1)
    assert protocol.events[-1:] == ["pause_writing"]
    # Raising it again does not resume: only draining the buffer does.
    transport.set_write_buffer_limits(high=64 * 1024 * 1024)
    assert "resume_writing" not in protocol.events


def test_no_resume_without_pause(stream_kit):
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    transport.set_write_buffer_limits(high=64 * 1024 * 1024)
    data = stream_kit.fill(transport)
    peer.drain(len(data))
    run_until(stream_kit.loop, lambda: transport.get_write_buffer_size() == 0)
    assert protocol.events == ["connection_made"]


def test_pause_and_resume_cycle_repeatedly(stream_kit):
    loop = stream_kit.loop
    protocol = RecordingProtocol()
    transport, peer = stream_kit.open(protocol)
    total = b""
    for cycle in range(1, 4):
        total += stream_kit.fill(transport)
        assert protocol.count("pause_writing") == cycle
        peer.drain(len(total))
        run_until(loop, lambda cycle=cycle: protocol.count("resume_writing") == cycle)
        run_until(loop, lambda: transport.get_write_buffer_size() == 0)
    assert bytes(peer.data) == total
    names = [e for e in protocol.events if e.endswith("_writing")]
    assert names == ["pause_writing", "resume_writing"] * 3


def test_writing_inside_resume_writing(stream_kit):
    loop = stream_kit.loop
    extra = b"written from resume_writing"

    class Refill(RecordingProtocol):
        def resume_writing(self):
            super().resume_writing()
            self.transport.write(extra)

    protocol = Refill()
    transport, peer = stream_kit.open(protocol)
    data = stream_kit.fill(transport)
    peer.drain(len(data) + len(extra))
    assert bytes(peer.data) == data + extra
    run_until(loop, lambda: transport.get_write_buffer_size() == 0)
    assert protocol.count("resume_writing") == 1


def test_pause_writing_exception_goes_to_the_handler(stream_kit, exc_handler):
    error = ValueError("pause failed")

    class Failing(RecordingProtocol):
        def pause_writing(self):
            super().pause_writing()
            raise error

    protocol = Failing()
    transport, peer = stream_kit.open(protocol)
    data = stream_kit.fill(transport)
    context = exc_handler.pop_one()
    assert context["message"] == "protocol.pause_writing() failed"
    assert context["exception"] is error
    assert context["transport"] is transport
    assert context["protocol"] is protocol
    # The transport carries on: it is still paused and delivers everything.
    assert not transport.is_closing()
    peer.drain(len(data))
    run_until(stream_kit.loop, lambda: "resume_writing" in protocol.events)
    assert bytes(peer.data) == data
    assert protocol.lost == []


def test_resume_writing_exception_goes_to_the_handler(stream_kit, exc_handler):
    error = ValueError("resume failed")

    class Failing(RecordingProtocol):
        def resume_writing(self):
            super().resume_writing()
            raise error

    protocol = Failing()
    transport, peer = stream_kit.open(protocol)
    data = stream_kit.fill(transport)
    peer.drain(len(data))
    run_until(stream_kit.loop, lambda: exc_handler.calls)
    context = exc_handler.pop_one()
    assert context["message"] == "protocol.resume_writing() failed"
    assert context["exception"] is error
    assert context["transport"] is transport
    assert context["protocol"] is protocol
    run_until(stream_kit.loop, lambda: transport.get_write_buffer_size() == 0)
    assert not transport.is_closing()
    transport.write(b"still usable")
    peer.drain(len(data) + 12)
    assert bytes(peer.data).endswith(b"still usable")


def test_abort_while_paused_does_not_resume(stream_kit):
    protocol = RecordingProtocol()
    transport, _ = stream_kit.open(protocol)
    stream_kit.fill(transport)
    assert protocol.count("pause_writing") == 1
    transport.abort()
    assert transport.get_write_buffer_size() == 0
    run_until(stream_kit.loop, lambda: protocol.lost)
    assert protocol.events == ["connection_made", "pause_writing", "connection_lost"]
