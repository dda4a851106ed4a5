"""Support for the differential fuzzer (test_differential.py).

A `Side` is one loop (asyncio's own selector loop, or ferroloop) with a connected
transport over a socketpair, a recording protocol and a recording exception handler.
The fuzzer makes the same call on both sides and compares what came back (`outcome`):
the same return value or the same exception type and message, the same protocol
callbacks, the same exception handler calls, the same bytes at the peer.

Everything a side does must be deterministic, so that any difference is the loops'
doing: timers are only ever due at once or never, the loop runs a fixed number of
iterations between steps, and received data is compared as a byte count, not by how it
was cut into data_received() calls.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import sys
import threading

# The exception types whose message is part of asyncio's contract for the calls fuzzed
# here (code matches on "Event loop is closed", "Cannot call write() after
# write_eof()", ...). For the others only the type is compared: their text comes from
# argument conversion (PyO3 names the argument, CPython's C code names the format).
MESSAGE_COMPARED = (RuntimeError, ValueError)

# Loop iterations run by `Side.settle()`: enough for anything a step scheduled (a
# connection_lost after close(), a timer due at once) to have happened on both loops.
SETTLE_ITERATIONS = 6


def make_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "asyncio":
        return asyncio.SelectorEventLoop()
    import ferroloop

    return ferroloop.new_event_loop()


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def describe_exception(exc: BaseException) -> tuple:
    """What is compared of an exception: its type's name, and its message where that
    is part of the contract."""
    if isinstance(exc, MESSAGE_COMPARED):
        return (type(exc).__name__, str(exc))
    return (type(exc).__name__,)


def assert_only_exceptions_escape(call, in_thread: bool) -> None:
    """Runs `call()` (on a thread of its own if `in_thread`): an `Exception` from it is a
    fine answer to misuse; anything else escaping (a panic, SystemExit, ...) fails."""
    escaped = []

    def guarded():
        try:
            call()
        except Exception:  # noqa: BLE001 (an ordinary exception is a fine answer)
            pass
        except BaseException as exc:  # noqa: BLE001 (this is what must never happen)
            escaped.append(exc)

    if in_thread:
        thread = threading.Thread(target=guarded)
        thread.start()
        thread.join()
    else:
        guarded()
    assert not escaped, f"{describe_exception(escaped[0])} escaped"


def describe_value(value: object) -> object:
    """A return value reduced to what both loops must agree on."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        if isinstance(value, float) and math.isnan(value):
            return "nan"
        return value
    if isinstance(value, (tuple, list)):
        return tuple(describe_value(v) for v in value)
    if isinstance(value, asyncio.TimerHandle) or type(value).__name__ == "TimerHandle":
        return "TimerHandle"
    if isinstance(value, asyncio.Handle) or type(value).__name__ == "Handle":
        return "Handle"
    return type(value).__name__


def outcome(call) -> tuple:
    """`("ok", value)` or `("raised", *describe_exception(exc))` of `call()`."""
    try:
        return ("ok", describe_value(call()))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 (any exception is an outcome to compare)
        return ("raised", *describe_exception(exc))


class Mischief(Exception):
    """What a misbehaving protocol callback raises."""


class RecordingBase:
    """Records every protocol callback; a callback may misbehave as the side's
    `mischief` says (raise, return a value, close/abort the transport, stop the loop,
    write or re-run the loop from inside)."""

    def __init__(self, side: Side) -> None:
        self.side = side
        self.transport = None

    def _misbehave(self, name: str):
        action = self.side.mischief.get(name)
        if action is None:
            return None
        side = self.side
        if action == "raise":
            raise Mischief(name)
        if action == "return_value":
            return 42
        if action == "close":
            side.transport.close()
        elif action == "abort":
            side.transport.abort()
        elif action == "stop":
            side.loop.stop()
        elif action == "write":
            side.record(name + ".write", outcome(lambda: side.transport.write(b"re-entrant")))
        elif action == "run_loop":
            side.record(name + ".run_loop", outcome(side.run_briefly))
        elif action == "pause_reading":
            side.transport.pause_reading()
        return None

    def connection_made(self, transport):
        self.transport = transport
        self.side.record("connection_made")
        return self._misbehave("connection_made")

    def eof_received(self):
        self.side.record("eof_received")
        result = self._misbehave("eof_received")
        return self.side.keep_open_on_eof if result is None else result

    def pause_writing(self):
        self.side.record("pause_writing")
        return self._misbehave("pause_writing")

    def resume_writing(self):
        self.side.record("resume_writing")
        return self._misbehave("resume_writing")

    def connection_lost(self, exc):
        self.side.record("connection_lost", None if exc is None else describe_exception(exc))
        return self._misbehave("connection_lost")


class PlainProtocol(RecordingBase, asyncio.Protocol):
    """A recording `Protocol` (data_received)."""

    def data_received(self, data):
        self.side.record_data(len(data))
        return self._misbehave("data_received")


class BufferedRecordingProtocol(RecordingBase, asyncio.BufferedProtocol):
    """A recording `BufferedProtocol`: get_buffer() returns what `side.get_buffer_kind`
    names (a good bytearray, or a read-only, strided, empty, released or wrong-typed
    buffer)."""

    def get_buffer(self, sizehint):
        kind = self.side.get_buffer_kind
        self._misbehave("get_buffer")
        if kind == "bytearray":
            return self.side.read_buffer
        if kind == "bytes":
            return b"\0" * 4096
        if kind == "strided":
            return memoryview(bytearray(8192))[::2]
        if kind == "empty":
            return bytearray()
        if kind == "released":
            view = memoryview(bytearray(4096))
            view.release()
            return view
        return 12345  # not a buffer at all

    def buffer_updated(self, nbytes):
        self.side.record_data(nbytes)
        return self._misbehave("buffer_updated")


class LoopSide:
    """One loop kind whose exception handler calls and callbacks are recorded as events,
    and the fixed way both loops are run between two compared calls."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.events: list[tuple] = []
        self.mischief: dict[str, str] = {}
        self.loop = make_loop(kind)
        self.loop.set_exception_handler(self._handler)

    def record(self, *event) -> None:
        self.events.append(event)

    def _handler(self, loop, context) -> None:
        exc = context.get("exception")
        self.record(
            "exception_handler",
            context.get("message"),
            None if exc is None else describe_exception(exc),
        )

    def take_events(self) -> list[tuple]:
        events, self.events = self.events, []
        return events

    def settle(self) -> tuple:
        """Runs the loop a fixed number of iterations (unless it is closed or running)."""
        if self.loop.is_closed():
            return ("closed",)
        return tuple(outcome(self.run_briefly) for _ in range(SETTLE_ITERATIONS))

    def run_briefly(self):
        """`run_until_complete(sleep(0))`; a coroutine the loop refused is closed (never
        awaited), one whose run was stopped early stays with its task."""
        coro = asyncio.sleep(0)
        try:
            return self.loop.run_until_complete(coro)
        except RuntimeError as exc:
            if "stopped before Future completed" not in str(exc):
                coro.close()
            raise


class Side(LoopSide):
    """One loop kind, with a transport over one end of a socketpair (`peer` is the other)."""

    def __init__(self, kind: str, *, buffered: bool, get_buffer_kind: str) -> None:
        super().__init__(kind)
        self.buffered = buffered
        self.get_buffer_kind = get_buffer_kind
        self.read_buffer = bytearray(65536)
        self.keep_open_on_eof = False
        self.received_by_peer = 0
        self.fired = 0
        self.extra_sockets: list[socket.socket] = []
        ours, self.peer = socket.socketpair()
        self.peer.setblocking(False)
        protocol_class = BufferedRecordingProtocol if buffered else PlainProtocol
        try:
            self.transport, self.protocol = self.loop.run_until_complete(
                self.loop.connect_accepted_socket(lambda: protocol_class(self), ours)
            )
        except BaseException:
            ours.close()
            self.peer.close()
            self.loop.close()
            raise

    # -- recording ------------------------------------------------------------------------

    def record_data(self, nbytes: int) -> None:
        # Chunking is the loop's business; only the total of consecutive reads counts.
        if self.events and self.events[-1][0] == "data":
            self.events[-1] = ("data", self.events[-1][1] + nbytes)
        else:
            self.events.append(("data", nbytes))

    # -- driving ----------------------------------------------------------------------

    def run(self, coro_function, *args):
        """`run_until_complete(coro_function(*args))` as a task. A run that an earlier
        loop.stop() cut short is finished by a second run: how many iterations a call
        takes is not compared (asyncio checks getnameinfo's arguments in its executor).
        For the same reason a stop() still pending is consumed first."""
        outcome(self.run_briefly)
        coro = coro_function(*args)
        try:
            task = self.loop.create_task(coro)
        except BaseException:
            coro.close()  # the loop is closed: never awaited, on purpose
            raise
        try:
            return self.loop.run_until_complete(task)
        except RuntimeError as exc:
            if "stopped before Future completed" not in str(exc):
                raise
        return self.loop.run_until_complete(task)

    def drain_peer(self) -> int:
        """Reads everything the transport sent so far; returns the byte count."""
        total = 0
        while True:
            try:
                chunk = self.peer.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.record("peer_recv_failed", exc.errno)
                break
            if not chunk:
                self.record("peer_eof")
                break
            total += len(chunk)
        self.received_by_peer += total
        return total

    def timer_fired(self, tag, when=()) -> None:
        """Records a callback; a timer's `when` (a one-item list filled once it is
        scheduled) is recorded too, for the comparing to order ties (then dropped)."""
        self.record("timer", tag, *when)

    def close(self) -> None:
        """Closes everything this side opened, whatever state it is in."""
        try:
            if not self.loop.is_closed():
                # asyncio 3.11's abort() after a drained close() raises AttributeError.
                outcome(self.transport.abort)
                self.settle()
        finally:
            # A loop closed before connection_lost ran leaves the transport's socket open.
            sock = self.transport.get_extra_info("socket")
            if sock is not None and sock.fileno() != -1:
                sock._sock.close()
            if not self.loop.is_closed():
                self.loop.close()
            self.peer.close()


def version_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"
