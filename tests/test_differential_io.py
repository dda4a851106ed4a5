"""Differential fuzzing of datagram endpoints and pipe transports: random sequences of
their calls, with valid and invalid arguments, on asyncio's loop and on ferroloop with
the same draw; both must answer the same (the approach of test_differential.py, which
fuzzes stream transports and the loop: the same outcome, protocol callbacks, exception
handler calls, bytes or datagrams at the peer, and no fd left open).

Bounded for CI (a fixed seed, few examples); `tools/dev.py fuzz` runs it longer with
random seeds, as test_differential.py.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket

from differential import (
    LoopSide,
    Mischief,
    assert_only_exceptions_escape,
    describe_exception,
    describe_value,
    open_fds,
    outcome,
)
from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from test_differential import (
    DELAYS,
    NUMBERS,
    SMALL,
    WRITE_DATA,
    _strided,
    comparable,
    plain,
    run_machine,
)

MISCHIEF = [None, "raise", "return_value", "close", "abort", "stop", "run_loop"]


class IoSide(LoopSide):
    """One loop kind with its pipe and datagram transports; records callbacks and handler
    calls."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.transports: dict[str, object] = {}
        self.lost: set[str] = set()

    def _handler(self, loop, context) -> None:
        exc = context.get("exception")
        if isinstance(exc, AttributeError) and WRITE_PIPE_LOST_AGAIN in context.get("message", ""):
            self.record(*_SECOND_CONNECTION_LOST)
            return
        super()._handler(loop, context)

    def misbehave(self, name: str):
        """Does what `mischief` says the callback `name` ("<transport>.<callback>") does."""
        action = self.mischief.get(name)
        transport = self.transports[name.split(".")[0]]
        if action == "raise":
            raise Mischief(name)
        if action == "return_value":
            return 42
        if action == "close":
            transport.close()
        elif action == "abort":
            transport.abort()
        elif action == "stop":
            self.loop.stop()
        elif action == "run_loop":
            self.record(name + ".run_loop", outcome(self.run_briefly))
        return None


class Recorder:
    """A protocol that records every callback as "<name>.<callback>" and misbehaves as
    its side's mischief says."""

    def __init__(self, side: IoSide, name: str, symbolic) -> None:
        self.side = side
        self.name = name
        self.symbolic = symbolic

    def _event(self, callback, *details):
        self.side.record(f"{self.name}.{callback}", *details)
        return self.side.misbehave(f"{self.name}.{callback}")

    def connection_made(self, transport):
        self.side.transports[self.name] = transport
        return self._event("connection_made")

    def connection_lost(self, exc):
        self.side.lost.add(self.name)
        return self._event("connection_lost", None if exc is None else describe_exception(exc))

    def pause_writing(self):
        return self._event("pause_writing")

    def resume_writing(self):
        return self._event("resume_writing")

    def data_received(self, data):
        return self._event("data_received", len(data))

    def eof_received(self):
        return self._event("eof_received")

    def datagram_received(self, data, addr):
        return self._event("datagram_received", len(data), self.symbolic(addr))

    def error_received(self, exc):
        return self._event("error_received", describe_exception(exc))


class PipeRecorder(Recorder, asyncio.Protocol):
    pass


class DatagramRecorder(Recorder, asyncio.DatagramProtocol):
    pass


class Differential(RuleBasedStateMachine):
    """The comparing of two `IoSide`s; subclasses open the transports."""

    examples = 0
    comparisons = 0

    def __init__(self):
        super().__init__()
        type(self).examples += 1
        gc.collect()
        self.fds_before = open_fds()
        self.sides: list[IoSide] = []

    def symbolic_value(self, side, value):
        """`value` with the side's own addresses named (they differ between sides)."""
        return value

    def compare(self, what, call):
        type(self).comparisons += 1
        results = []
        for side in self.sides:
            result = outcome(lambda side=side: call(side))
            results.append(comparable(self.symbolic_value(side, result)))
        events = [[comparable(e) for e in side.take_events()] for side in self.sides]
        events[0] = [e for e in events[0] if e != _SECOND_CONNECTION_LOST]
        note(f"{what}: {results[0]!r} events {events[0]!r}")
        if _pipe_assertion(results) or _asyncio_forgot_its_loop(self.sides[0], what, results):
            return results[1]
        assert results[0] == results[1], f"{what}: asyncio {results[0]!r}, ferroloop {results[1]!r}"
        assert events[0] == events[1], f"{what}: asyncio {events[0]!r}, ferroloop {events[1]!r}"
        return results[0]

    def method_call(self, transport, method, *args):
        self.compare(
            f"{transport}.{method}{args!r}",
            lambda s: getattr(s.transports[transport], method)(*args),
        )

    @rule()
    def run_loop(self):
        self.compare("run loop", lambda s: s.settle())

    @rule()
    def stop(self):
        self.compare("stop", lambda s: s.loop.stop())

    @invariant()
    def same_state(self):
        for side in self.sides:
            assert not side.loop.is_running()
        for name in sorted(self.sides[0].transports if self.sides else ()):
            self.compare(f"{name}.is_closing", lambda s, n=name: s.transports[n].is_closing())

    def close_sides(self) -> None:
        for side in self.sides:
            try:
                for transport in side.transports.values():
                    outcome(getattr(transport, "abort", transport.close))
                side.settle()
            finally:
                side.loop.close()

    def check_fds(self) -> None:
        self.sides = []
        gc.collect()
        leaked = open_fds() - self.fds_before
        assert not leaked, f"file descriptors left open: {sorted(leaked)}"


def _pipe_assertion(results):
    """Known difference (docs/design.md): a pipe write() of something not bytes-like
    raises TypeError on ferroloop, AssertionError (its assert statement) on asyncio."""
    return results[0][:2] == ("raised", "AssertionError") and results[1][:2] == (
        "raised",
        "TypeError",
    )


# Known difference (docs/design.md): asyncio's write pipe transport schedules
# connection_lost a second time when abort() follows write_eof() or close(), which fails
# (its protocol is gone by then) and is reported; ferroloop calls connection_lost once.
_SECOND_CONNECTION_LOST = ("second connection_lost failed",)
WRITE_PIPE_LOST_AGAIN = "_UnixWritePipeTransport._call_connection_lost("


def _asyncio_forgot_its_loop(side, what, results):
    """Known difference (docs/design.md): asyncio's pipe and datagram transports forget
    their loop (and socket) once connection_lost ran, so a later abort() of a pipe, or
    sendto() on an unconnected endpoint, fails with AttributeError; ferroloop's does
    nothing (a lost write), as close() does on both."""
    return (
        what.split(".")[0] in side.lost
        and results[0][:2] == ("raised", "AttributeError")
        and results[1][0] == "ok"
    )


# -- pipes ---------------------------------------------------------------------------------


class Pipes(Differential):
    """A read pipe transport ("r", the peer writes `feed`) and a write pipe transport
    ("w", the peer reads `sink`) on each side."""

    @initialize()
    def start(self):
        for kind in ("asyncio", "ferroloop"):
            side = IoSide(kind)
            self.sides.append(side)
            r1, side.feed = os.pipe()
            side.sink, w2 = os.pipe()
            os.set_blocking(side.feed, False)
            os.set_blocking(side.sink, False)
            side.received = 0
            side.peer_closed = set()
            reader = open(r1, "rb", buffering=0)  # noqa: SIM115 (the transport closes it)
            writer = open(w2, "wb", buffering=0)  # noqa: SIM115 (the transport closes it)
            side.loop.run_until_complete(
                side.loop.connect_read_pipe(lambda s=side: PipeRecorder(s, "r", str), reader)
            )
            side.loop.run_until_complete(
                side.loop.connect_write_pipe(lambda s=side: PipeRecorder(s, "w", str), writer)
            )
        self.compare("start", lambda s: s.settle())

    @rule(data=WRITE_DATA)
    def write(self, data):
        data = plain(data)
        self.compare(f"w.write({describe_value(data)!r})", lambda s: s.transports["w"].write(data))

    @rule(items=st.lists(WRITE_DATA, max_size=3))
    def writelines(self, items):
        items = [plain(i) for i in items]
        self.compare("w.writelines", lambda s: s.transports["w"].writelines(items))

    @rule(high=NUMBERS, low=NUMBERS)
    def set_write_buffer_limits(self, high, low):
        self.method_call("w", "set_write_buffer_limits", high, low)
        self.method_call("w", "get_write_buffer_limits")

    @rule(
        method=st.sampled_from(
            ["get_write_buffer_size", "write_eof", "can_write_eof", "close", "abort"]
        )
    )
    def write_pipe_method(self, method):
        self.method_call("w", method)

    @rule(
        method=st.sampled_from(["pause_reading", "resume_reading", "is_reading", "close", "abort"])
    )
    def read_pipe_method(self, method):
        self.method_call("r", method)

    @rule(name=st.sampled_from(["pipe", "nonsense", 3]))
    def get_extra_info(self, name):
        for transport in ("r", "w"):
            self.compare(
                f"{transport}.get_extra_info({name!r})",
                lambda s, t=transport: s.transports[t].get_extra_info(name, "d"),
            )

    @rule(
        callback=st.sampled_from(
            [
                "connection_made",
                "data_received",
                "eof_received",
                "pause_writing",
                "resume_writing",
                "connection_lost",
            ]
        ),
        transport=st.sampled_from(["r", "w"]),
        action=st.sampled_from(MISCHIEF),
    )
    def set_mischief(self, callback, transport, action):
        for side in self.sides:
            side.mischief[f"{transport}.{callback}"] = action

    @precondition(lambda self: "feed" not in self.sides[0].peer_closed)
    @rule(data=st.binary(min_size=1, max_size=2000))
    def peer_writes(self, data):
        self.compare("peer writes", lambda s: os.write(s.feed, data))

    @rule()
    def peer_drains(self):
        def drain(side):
            if "sink" in side.peer_closed:
                return None
            total = 0
            while True:
                try:
                    chunk = os.read(side.sink, 1 << 20)
                except BlockingIOError:
                    break
                if not chunk:
                    side.record("peer_eof")
                    break
                total += len(chunk)
            side.received += total
            return total

        self.compare("peer drains", drain)
        self.compare("run loop", lambda s: s.settle())

    @rule(end=st.sampled_from(["feed", "sink"]))
    def peer_closes(self, end):
        def close(side):
            if end in side.peer_closed:
                return None
            side.peer_closed.add(end)
            return os.close(getattr(side, end))

        self.compare(f"peer closes {end}", close)

    def teardown(self):
        try:
            self.close_sides()
        finally:
            for side in self.sides:
                for end in {"feed", "sink"} - side.peer_closed:
                    os.close(getattr(side, end))
        if self.sides:
            assert self.sides[0].received == self.sides[1].received
        self.check_fds()


# -- datagram endpoints ---------------------------------------------------------------------

DATAGRAM_DATA = st.one_of(
    SMALL,
    SMALL.map(bytearray),
    SMALL.map(memoryview),
    st.binary(min_size=2, max_size=48).map(_strided),
    st.just(b"x" * 70_000),
    st.text(max_size=3),
    st.integers(-1, 3),
    st.none(),
)
ADDRESSES = st.sampled_from(
    [
        None,
        "peer",
        "own",
        ("127.0.0.1", 70000),
        ("127.0.0.1", -1),
        ("127.0.0.1",),
        ("127.0.0.1", "x"),
        ("::1", 9, 0, 0),
        "/nonexistent/ferroloop-fuzz",
        b"\0ferroloop-fuzz-nobody",
        5,
        1.5,
    ]
)


class Datagrams(Differential):
    """A datagram endpoint ("d") and its peer socket on each side: UDP over 127.0.0.1
    (unconnected, or connected with remote_addr) or a Unix datagram socketpair (whose
    queue fills, so sendto() queues and pauses)."""

    @initialize(flavour=st.sampled_from(["udp", "udp_connected", "unix"]))
    def start(self, flavour):
        note(f"flavour={flavour}")
        self.flavour = flavour
        for kind in ("asyncio", "ferroloop"):
            side = IoSide(kind)
            self.sides.append(side)
            side.datagrams = []
            if flavour == "unix":
                ours, side.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
                kwargs = {"sock": ours}
            else:
                side.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                side.peer.bind(("127.0.0.1", 0))
                kwargs = {"local_addr": ("127.0.0.1", 0)}
                if flavour == "udp_connected":
                    kwargs["remote_addr"] = side.peer.getsockname()
            side.peer.setblocking(False)
            side.peer_address = side.peer.getsockname()
            protocol = lambda s=side: DatagramRecorder(  # noqa: E731
                s, "d", lambda addr, s=s: self.symbolic_value(s, addr)
            )
            side.loop.run_until_complete(side.loop.create_datagram_endpoint(protocol, **kwargs))
            side.own = side.transports["d"].get_extra_info("sockname")
        self.compare("start", lambda s: s.settle())

    def symbolic_value(self, side, value):
        if value and value == side.peer_address:
            return "peer"
        if value and value == side.own:
            return "own"
        if isinstance(value, tuple):
            return tuple(self.symbolic_value(side, v) for v in value)
        return value

    def address(self, side, addr):
        if addr == "peer":
            return side.peer_address
        if addr == "own":
            return side.own
        return addr

    @rule(data=DATAGRAM_DATA, addr=ADDRESSES)
    def sendto(self, data, addr):
        self.compare(
            f"d.sendto({describe_value(data)!r}, {addr!r})",
            lambda s: s.transports["d"].sendto(data, self.address(s, addr)),
        )

    @rule(count=st.integers(1, 400), addr=st.sampled_from([None, "peer"]))
    def burst(self, count, addr):
        def send_many(side):
            for _ in range(count):
                side.transports["d"].sendto(b"b" * 1000, self.address(side, addr))
            return side.transports["d"].get_write_buffer_size()

        self.compare(f"d.burst({count}, {addr!r})", send_many)

    @rule(high=NUMBERS, low=NUMBERS)
    def set_write_buffer_limits(self, high, low):
        self.method_call("d", "set_write_buffer_limits", high, low)
        self.method_call("d", "get_write_buffer_limits")

    @rule(
        method=st.sampled_from(
            [
                "get_write_buffer_size",
                "close",
                "abort",
                "pause_reading",
                "resume_reading",
                "is_reading",
            ]
        )
    )
    def transport_method(self, method):
        self.method_call("d", method)

    @rule(name=st.sampled_from(["peername", "sockname", "socket", "nonsense"]))
    def get_extra_info(self, name):
        self.compare(
            f"d.get_extra_info({name!r})",
            lambda s: s.transports["d"].get_extra_info(name, "d"),
        )

    @rule(
        callback=st.sampled_from(
            [
                "connection_made",
                "datagram_received",
                "error_received",
                "pause_writing",
                "resume_writing",
                "connection_lost",
            ]
        ),
        action=st.sampled_from(MISCHIEF),
    )
    def set_mischief(self, callback, action):
        if (callback, action) == ("datagram_received", "stop"):
            # Known difference (docs/design.md): ferroloop delivers a batch of datagrams
            # per loop iteration, asyncio one, so a stop() there takes effect later.
            return
        for side in self.sides:
            side.mischief[f"d.{callback}"] = action

    @rule(data=st.binary(max_size=2000))
    def peer_sends(self, data):
        def send(side):
            if self.flavour == "unix":
                return side.peer.send(data)
            return side.peer.sendto(data, side.own)

        self.compare("peer sends", send)

    @rule()
    def peer_drains(self):
        def drain(side):
            got = []
            while True:
                try:
                    data, addr = side.peer.recvfrom(1 << 17)
                except BlockingIOError:
                    break
                got.append((len(data), self.symbolic_value(side, addr)))
            side.datagrams += got
            return tuple(got)

        self.compare("peer drains", drain)
        self.compare("run loop", lambda s: s.settle())

    def teardown(self):
        try:
            self.close_sides()
        finally:
            for side in self.sides:
                side.peer.close()
        if self.sides:
            assert self.sides[0].datagrams == self.sides[1].datagrams
        self.check_fds()


# -- crash resistance of the pipe and datagram cores (ferroloop only) ----------------------

CORE_METHODS = {
    "r": ["_read_ready", "_start_reading", "pause_reading", "resume_reading", "close", "abort"],
    "w": ["_write_ready", "_read_ready", "_start_reading", "write_eof", "close", "abort"],
    "d": ["_read_ready", "_sendto_ready", "_start_reading", "close", "abort"],
}
CORE_METHODS_WITH = ["write", "writelines", "sendto", "set_protocol", "_call_connection_lost"]
CORE_METHODS_WITH += ["_close", "_fatal_error", "set_write_buffer_limits"]


class FerroloopIoAbuse(RuleBasedStateMachine):
    """Invalid use of ferroloop's pipe and datagram cores: whatever is called, with
    whatever, from whichever thread, nothing but an ordinary `Exception` may come out (a
    Rust panic surfaces as `pyo3_runtime.PanicException`, a BaseException)."""

    examples = 0
    calls = 0

    def __init__(self):
        super().__init__()
        FerroloopIoAbuse.examples += 1
        gc.collect()
        self.fds_before = open_fds()
        self.side = None
        self.ends: list[int] = []
        self.peer = None

    @initialize()
    def start(self):
        side = self.side = IoSide("ferroloop")
        r1, feed = os.pipe()
        sink, w2 = os.pipe()
        self.ends = [feed, sink]
        for fd in self.ends:
            os.set_blocking(fd, False)
        loop = side.loop
        loop.run_until_complete(
            loop.connect_read_pipe(lambda: PipeRecorder(side, "r", str), open(r1, "rb", 0))
        )
        loop.run_until_complete(
            loop.connect_write_pipe(lambda: PipeRecorder(side, "w", str), open(w2, "wb", 0))
        )
        ours, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.peer.setblocking(False)
        loop.run_until_complete(
            loop.create_datagram_endpoint(lambda: DatagramRecorder(side, "d", str), sock=ours)
        )
        side.settle()

    def core(self, name):
        return self.side.transports[name]._core

    @rule(name=st.sampled_from("rwd"), data=st.data(), in_thread=st.booleans())
    def core_method(self, name, data, in_thread):
        method = data.draw(st.sampled_from(CORE_METHODS[name]))
        core = self.core(name)
        self.call(lambda: getattr(core, method)(), in_thread)

    @rule(
        name=st.sampled_from("rwd"),
        method=st.sampled_from(CORE_METHODS_WITH),
        argument=st.one_of(WRITE_DATA, st.lists(WRITE_DATA, max_size=2), NUMBERS),
        in_thread=st.booleans(),
    )
    def core_call_with(self, name, method, argument, in_thread):
        core = self.core(name)
        self.call(lambda: getattr(core, method)(plain(argument)), in_thread)

    @rule(data=DATAGRAM_DATA, addr=ADDRESSES, in_thread=st.booleans())
    def sendto(self, data, addr, in_thread):
        core = self.core("d")
        self.call(lambda: core.sendto(data, addr), in_thread)

    @rule(count=st.integers(1, 300))
    def fill(self, count):
        core = self.core("d")
        self.call(lambda: [core.sendto(b"f" * 1000) for _ in range(count)], False)
        self.call(lambda: self.core("w").write(b"w" * 300_000), False)

    @rule(in_thread=st.booleans(), delay=DELAYS)
    def loop_calls(self, in_thread, delay):
        loop = self.side.loop
        self.call(lambda: loop.call_later(delay, print), in_thread)

    @rule(callback=st.sampled_from(["data_received", "datagram_received", "connection_lost"]))
    def set_mischief(self, callback):
        for name in "rwd":
            self.side.mischief[f"{name}.{callback}"] = "raise"

    @rule(data=st.binary(max_size=5000))
    def peers(self, data):
        self.call(lambda: os.write(self.ends[0], data), False)
        self.call(lambda: self.peer.send(data), False)
        self.call(lambda: os.read(self.ends[1], 1 << 20), False)
        self.call(lambda: [self.peer.recv(1 << 17) for _ in range(50)], False)

    @rule()
    def run(self):
        self.side.settle()

    @rule()
    def close_loop(self):
        self.call(self.side.loop.close, False)

    def call(self, call, in_thread):
        FerroloopIoAbuse.calls += 1
        assert_only_exceptions_escape(call, in_thread)

    def teardown(self):
        if self.side is not None:
            try:
                if not self.side.loop.is_closed():
                    for transport in self.side.transports.values():
                        outcome(getattr(transport, "abort", transport.close))
                    self.side.settle()
            finally:
                for transport in self.side.transports.values():
                    # A loop closed before connection_lost ran leaves the fd open.
                    pipe = transport.get_extra_info("pipe")
                    sock = transport.get_extra_info("socket")
                    if pipe is not None:
                        pipe.close()
                    if sock is not None and sock.fileno() != -1:
                        sock._sock.close()
                self.side.loop.close()
                for fd in self.ends:
                    os.close(fd)
                self.peer.close()
                # A transport whose loop closed first still owns its (now closed) fd and
                # warns "unclosed transport" when collected, as asyncio's does; that may
                # happen in a later test, so each lets go of its core here.
                for transport in self.side.transports.values():
                    transport._core = None
        self.side = None
        gc.collect()
        leaked = open_fds() - self.fds_before
        assert not leaked, f"file descriptors left open: {sorted(leaked)}"


def test_differential_pipes():
    run_machine(Pipes, 60, 30, "comparisons", "calls compared")


def test_differential_datagrams():
    run_machine(Datagrams, 60, 30, "comparisons", "calls compared")


def test_ferroloop_pipe_and_datagram_cores_survive_abuse():
    run_machine(FerroloopIoAbuse, 40, 30, "calls", "abusive calls")
