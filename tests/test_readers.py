"""add_reader / remove_reader / add_writer / remove_writer on socket pairs and pipes."""

from __future__ import annotations

import contextvars
import os
import socket

import pytest
from support import run_once, run_until, run_with_guard

var = contextvars.ContextVar("var", default="unset")


class FileLike:
    """Not a socket: only has fileno()."""

    def __init__(self, fd):
        self._fd = fd

    def fileno(self):
        return self._fd


def test_reader_is_level_triggered(loop, sockpair):
    a, b = sockpair
    received = []

    def read_one_byte():
        data = a.recv(1)
        received.append(data)
        if len(received) == 10:
            loop.remove_reader(a)

    loop.add_reader(a, read_one_byte)
    b.send(b"0123456789")
    run_until(loop, lambda: len(received) >= 10)
    # Ten calls were needed to drain ten bytes: readiness was reported again while
    # unread data remained, without any new data arriving.
    assert b"".join(received) == b"0123456789"
    assert len(received) == 10
    run_once(loop)
    assert len(received) == 10


def test_reader_called_again_for_data_left_unread(loop, sockpair):
    a, b = sockpair
    calls = []

    def peek_only():
        # Read nothing: the socket stays readable, so we are called again.
        calls.append(a.recv(4, socket.MSG_PEEK))

    loop.add_reader(a, peek_only)
    b.send(b"data")
    run_until(loop, lambda: len(calls) >= 3)
    loop.remove_reader(a)
    assert calls[:3] == [b"data"] * 3


def test_reader_gets_args_and_returns_none(loop, sockpair):
    a, b = sockpair
    calls = []

    def on_read(sock, tag):
        calls.append((tag, sock.recv(100)))
        loop.remove_reader(sock)

    assert loop.add_reader(a, on_read, a, "tag") is None
    b.send(b"hi")
    run_until(loop, lambda: calls)
    assert calls == [("tag", b"hi")]


def test_reader_not_called_without_data(loop, sockpair):
    a, _ = sockpair
    calls = []
    loop.add_reader(a, calls.append, "called")
    run_once(loop)
    run_once(loop)
    assert calls == []
    loop.remove_reader(a)


def test_reader_sees_eof(loop, sockpair):
    a, b = sockpair
    received = []

    def on_read():
        received.append(a.recv(100))
        loop.remove_reader(a)

    loop.add_reader(a, on_read)
    b.shutdown(socket.SHUT_WR)
    run_until(loop, lambda: received)
    assert received == [b""]


def test_writer_is_level_triggered(loop, sockpair):
    a, _ = sockpair
    calls = []

    def on_write():
        calls.append(1)
        if len(calls) == 5:
            loop.remove_writer(a)

    loop.add_writer(a, on_write)
    run_until(loop, lambda: len(calls) >= 5)
    run_once(loop)
    assert len(calls) == 5


def test_writer_gets_args_and_returns_none(loop, sockpair):
    a, b = sockpair
    calls = []

    def on_write(sock, payload):
        sock.send(payload)
        calls.append(payload)
        loop.remove_writer(sock)

    assert loop.add_writer(a, on_write, a, b"payload") is None
    run_until(loop, lambda: calls)
    assert calls == [b"payload"]
    assert b.recv(100) == b"payload"


def test_reader_and_writer_on_the_same_fd(loop, sockpair):
    a, b = sockpair
    reads, writes = [], []

    def on_write():
        writes.append(1)
        loop.remove_writer(a)
        b.send(b"ping")  # now make ``a`` readable

    def on_read():
        reads.append(a.recv(100))
        loop.remove_reader(a)

    loop.add_reader(a, on_read)
    loop.add_writer(a, on_write)
    run_until(loop, lambda: reads and writes)
    assert reads == [b"ping"]
    assert writes == [1]


def test_removing_the_writer_keeps_the_reader(loop, sockpair):
    a, b = sockpair
    reads = []
    loop.add_reader(a, lambda: reads.append(a.recv(100)))
    loop.add_writer(a, lambda: None)
    loop.remove_writer(a)
    b.send(b"still reading")
    run_until(loop, lambda: reads)
    loop.remove_reader(a)
    assert reads == [b"still reading"]


def test_removing_the_reader_keeps_the_writer(loop, sockpair):
    a, _ = sockpair
    writes = []
    loop.add_reader(a, lambda: None)
    loop.add_writer(a, writes.append, "w")
    loop.remove_reader(a)
    run_until(loop, lambda: writes)
    loop.remove_writer(a)


def test_re_adding_a_reader_replaces_the_callback(loop, sockpair):
    a, b = sockpair
    calls = []

    def old():
        calls.append("old")

    def new():
        calls.append(("new", a.recv(100)))
        loop.remove_reader(a)

    loop.add_reader(a, old)
    loop.add_reader(a, new)
    b.send(b"x")
    run_until(loop, lambda: calls)
    run_once(loop)
    assert calls == [("new", b"x")]


def test_re_adding_a_writer_replaces_the_callback(loop, sockpair):
    a, _ = sockpair
    calls = []

    def new():
        calls.append("new")
        loop.remove_writer(a)

    loop.add_writer(a, calls.append, "old")
    loop.add_writer(a, new)
    run_until(loop, lambda: calls)
    run_once(loop)
    assert calls == ["new"]


def test_remove_returns_true_only_when_something_was_removed(loop, sockpair):
    a, _ = sockpair
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is False
    loop.add_reader(a, lambda: None)
    assert loop.remove_writer(a) is False
    assert loop.remove_reader(a) is True
    assert loop.remove_reader(a) is False
    loop.add_writer(a, lambda: None)
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is True
    assert loop.remove_writer(a) is False


def test_fd_may_be_an_int_or_an_object_with_fileno(loop, sockpair):
    a, b = sockpair
    calls = []
    loop.add_reader(a.fileno(), lambda: calls.append(("int", a.recv(100))))
    b.send(b"1")
    run_until(loop, lambda: calls)
    # Registered by int, removed by an object with the same fd.
    loop.remove_reader(FileLike(a.fileno()))

    loop.add_reader(FileLike(a.fileno()), lambda: calls.append(("obj", a.recv(100))))
    b.send(b"2")
    run_until(loop, lambda: len(calls) == 2)
    # Registered by object, removed by int.
    loop.remove_reader(a.fileno())
    b.send(b"3")
    run_once(loop)
    run_once(loop)
    assert calls == [("int", b"1"), ("obj", b"2")]

    loop.add_writer(FileLike(a.fileno()), calls.append, "writer")
    run_until(loop, lambda: len(calls) >= 3)
    loop.remove_writer(a)
    del calls[3:]  # the writer is level-triggered: it may have run more than once
    run_once(loop)
    run_once(loop)
    assert calls == [("int", b"1"), ("obj", b"2"), "writer"]


def test_reader_on_a_pipe(loop):
    rfd, wfd = os.pipe()
    try:
        os.set_blocking(rfd, False)
        received = []

        def on_read():
            received.append(os.read(rfd, 100))
            loop.remove_reader(rfd)

        loop.add_reader(rfd, on_read)
        os.write(wfd, b"piped")
        run_until(loop, lambda: received)
        assert received == [b"piped"]
    finally:
        os.close(rfd)
        os.close(wfd)


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
def test_negative_fd_raises_value_error(loop, method):
    with pytest.raises(ValueError, match=r"^Invalid file descriptor: -1$"):
        getattr(loop, method)(-1, lambda: None)


@pytest.mark.parametrize("method", ["add_reader", "add_writer", "remove_reader", "remove_writer"])
def test_object_without_fileno_raises_value_error(loop, method):
    args = (lambda: None,) if method.startswith("add") else ()
    with pytest.raises(ValueError, match=r"^Invalid file object: "):
        getattr(loop, method)(object(), *args)


@pytest.mark.parametrize("fd", [2**31, 2**70])
@pytest.mark.parametrize("direction", ["reader", "writer"])
def test_fd_beyond_a_c_int(loop, fd, direction):
    """asyncio's selectors take any non-negative int: removing one never watched answers
    False; watching it fails in epoll's registration with OverflowError."""
    assert getattr(loop, f"remove_{direction}")(fd) is False
    with pytest.raises(OverflowError, match="too large to convert to C int"):
        getattr(loop, f"add_{direction}")(fd, lambda: None)
    assert getattr(loop, f"remove_{direction}")(fd) is False


def test_huge_negative_fd_raises_value_error(loop):
    with pytest.raises(ValueError, match=rf"^Invalid file descriptor: {-(2**70)}$"):
        loop.remove_reader(-(2**70))


@pytest.mark.parametrize("direction", ["reader", "writer"])
def test_watch_is_removed_with_the_socket_object_after_it_closed(loop, direction):
    """A closed socket's fileno() is -1; asyncio still finds the watch made with that very
    object (anyio removes its readers so after closing a socket; issue 11)."""
    sock = socket.socket()
    getattr(loop, f"add_{direction}")(sock, lambda: None)
    sock.close()
    assert getattr(loop, f"remove_{direction}")(sock) is True
    # Once nothing is watched through it, -1 is an invalid fd again.
    with pytest.raises(ValueError, match=r"^Invalid file descriptor: -1$"):
        getattr(loop, f"remove_{direction}")(sock)


def test_watch_made_with_an_int_is_not_found_through_a_closed_object(loop):
    sock = socket.socket()
    loop.add_reader(sock.fileno(), lambda: None)
    fd = sock.fileno()
    sock.close()
    with pytest.raises(ValueError, match=r"^Invalid file descriptor: -1$"):
        loop.remove_reader(sock)
    assert loop.remove_reader(fd) is True


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
def test_fd_that_is_not_open_raises_os_error(loop, method):
    fd, other = os.pipe()
    os.close(fd)
    os.close(other)
    with pytest.raises(OSError):
        getattr(loop, method)(fd, lambda: None)
    # Nothing stays registered after the failure.
    assert not loop.remove_reader(fd)
    assert not loop.remove_writer(fd)


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
def test_add_on_closed_loop_raises(loop, sockpair, method):
    loop.close()
    with pytest.raises(RuntimeError, match=r"^Event loop is closed$"):
        getattr(loop, method)(sockpair[0], lambda: None)


@pytest.mark.parametrize("method", ["remove_reader", "remove_writer"])
def test_remove_on_closed_loop_returns_false(loop, sockpair, method):
    loop.close()
    assert getattr(loop, method)(sockpair[0]) is False


def test_reader_exception_goes_to_the_exception_handler(loop, sockpair, exc_handler):
    a, b = sockpair

    def broken():
        a.recv(100)
        loop.remove_reader(a)
        raise RuntimeError("reader failed")

    loop.add_reader(a, broken)
    b.send(b"x")
    run_until(loop, lambda: exc_handler.calls)
    context = exc_handler.pop_one()
    assert isinstance(context["exception"], RuntimeError)
    assert str(context["exception"]) == "reader failed"
    assert context["handle"] is not None
    assert context["message"].startswith("Exception in callback ")


def test_reader_added_and_removed_before_running_is_never_called(loop, sockpair):
    a, b = sockpair
    calls = []
    b.send(b"x")
    loop.add_reader(a, calls.append, "reader")
    loop.remove_reader(a)
    run_once(loop)
    run_once(loop)
    assert calls == []


def test_reader_removed_by_another_callback_in_the_same_iteration(loop):
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        calls = []
        (a1, b1), (a2, b2) = pairs

        def make_reader(mine, other):
            def on_read():
                calls.append(mine.recv(100))
                loop.remove_reader(mine)
                loop.remove_reader(other)

            return on_read

        loop.add_reader(a1, make_reader(a1, a2))
        loop.add_reader(a2, make_reader(a2, a1))
        b1.send(b"1")
        b2.send(b"2")
        run_until(loop, lambda: calls)
        run_once(loop)
        run_once(loop)
        # Both fds were ready together; whichever reader ran first removed the other,
        # and a removed reader is not called even if its fd was already reported ready.
        assert len(calls) == 1
    finally:
        for pair in pairs:
            for sock in pair:
                sock.close()


def test_fd_number_reused_after_remove_and_close(loop):
    received = []
    for round_ in range(3):
        a, b = socket.socketpair()
        try:
            a.setblocking(False)

            def on_read(sock=a, tag=round_):
                received.append((tag, sock.recv(100)))
                loop.remove_reader(sock)

            loop.add_reader(a.fileno(), on_read)
            b.send(b"x")
            run_until(loop, lambda n=round_: len(received) > n)
        finally:
            a.close()
            b.close()
    assert received == [(0, b"x"), (1, b"x"), (2, b"x")]


def test_many_readers_are_all_called(loop):
    pairs = [socket.socketpair() for _ in range(50)]
    try:
        seen = set()

        def on_read(index, sock):
            sock.recv(100)
            seen.add(index)
            loop.remove_reader(sock)

        for index, (a, b) in enumerate(pairs):
            a.setblocking(False)
            loop.add_reader(a, on_read, index, a)
            b.send(b"!")
        run_until(loop, lambda: len(seen) == len(pairs))
        assert seen == set(range(len(pairs)))
    finally:
        for pair in pairs:
            for sock in pair:
                sock.close()


def test_io_is_not_starved_by_a_self_rescheduling_callback(loop, sockpair):
    a, b = sockpair
    received = []
    spinning = True

    def spin():
        if spinning:
            loop.call_soon(spin)

    def on_read():
        nonlocal spinning
        received.append(a.recv(100))
        loop.remove_reader(a)
        spinning = False
        loop.stop()

    loop.add_reader(a, on_read)
    b.send(b"data")
    loop.call_soon(spin)
    loop.call_later(2.0, loop.stop)
    loop.run_forever()
    spinning = False
    run_once(loop)
    assert received == [b"data"]


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_reader_propagates_and_loop_stays_usable(loop, sockpair, exc_type):
    a, b = sockpair
    calls = []

    def on_read():
        calls.append(a.recv(1))
        if len(calls) == 1:
            raise exc_type()
        loop.remove_reader(a)

    loop.add_reader(a, on_read)
    b.send(b"12")
    with pytest.raises(exc_type):
        run_with_guard(loop)
    # The reader is still registered: the second byte is delivered on the next run.
    run_until(loop, lambda: len(calls) == 2)
    assert calls == [b"1", b"2"]


def test_reader_callback_runs_in_context_copied_when_added(loop, sockpair):
    a, b = sockpair
    seen = []

    def on_read():
        a.recv(100)
        seen.append(var.get())
        loop.remove_reader(a)

    def register():
        var.set("at add_reader")
        loop.add_reader(a, on_read)
        var.set("after add_reader")

    contextvars.copy_context().run(register)
    b.send(b"x")
    run_until(loop, lambda: seen)
    assert seen == ["at add_reader"]
