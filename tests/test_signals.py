"""add_signal_handler / remove_signal_handler (Unix, main thread)."""

from __future__ import annotations

import os
import signal
import threading

import pytest
from support import run_until, run_with_guard

pytestmark = pytest.mark.usefixtures("restore_signals")


def test_handler_is_live_when_add_signal_handler_returns(loop):
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "usr1")
    os.kill(os.getpid(), signal.SIGUSR1)
    run_until(loop, lambda: calls)
    assert calls == ["usr1"]
    loop.remove_signal_handler(signal.SIGUSR1)


def test_handler_runs_in_the_loop_not_in_the_signal_handler(loop):
    seen = []

    def handler(a, b):
        in_main_thread = threading.current_thread() is threading.main_thread()
        seen.append((a, b, loop.is_running(), in_main_thread))

    loop.add_signal_handler(signal.SIGUSR1, handler, 1, 2)
    os.kill(os.getpid(), signal.SIGUSR1)
    # Delivered signals are only acted upon by the running loop.
    assert seen == []
    run_until(loop, lambda: seen)
    assert seen == [(1, 2, True, True)]
    loop.remove_signal_handler(signal.SIGUSR1)


def test_signal_sent_from_a_thread_wakes_an_idle_loop(loop):
    calls = []

    def handler():
        calls.append("usr2")
        loop.stop()

    loop.add_signal_handler(signal.SIGUSR2, handler)
    sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGUSR2))
    loop.call_later(0.01, sender.start)
    try:
        assert not run_with_guard(loop), "the signal did not wake the loop"
    finally:
        sender.join()
    assert calls == ["usr2"]
    loop.remove_signal_handler(signal.SIGUSR2)


def test_each_delivery_calls_the_handler(loop):
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, calls.append, 1)
    for expected in range(1, 4):
        os.kill(os.getpid(), signal.SIGUSR1)
        run_until(loop, lambda n=expected: len(calls) >= n)
    assert calls == [1, 1, 1]
    loop.remove_signal_handler(signal.SIGUSR1)


def test_re_adding_replaces_the_handler(loop):
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "old")
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "new")
    os.kill(os.getpid(), signal.SIGUSR1)
    run_until(loop, lambda: calls)
    assert calls == ["new"]
    loop.remove_signal_handler(signal.SIGUSR1)


def test_remove_signal_handler_returns_true_then_false(loop):
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_removing_sigint_handler_restores_default_int_handler(loop):
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    loop.remove_signal_handler(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigint_handler_replaces_keyboard_interrupt(loop):
    calls = []
    loop.add_signal_handler(signal.SIGINT, calls.append, "int")
    try:
        os.kill(os.getpid(), signal.SIGINT)
        run_until(loop, lambda: calls)
    except KeyboardInterrupt:
        pytest.fail("SIGINT raised KeyboardInterrupt instead of calling the loop's handler")
    assert calls == ["int"]
    loop.remove_signal_handler(signal.SIGINT)


def test_sigint_without_handler_interrupts_an_idle_loop(loop):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main_thread = threading.main_thread().ident
    sender = threading.Thread(target=signal.pthread_kill, args=(main_thread, signal.SIGINT))
    fired = []

    def guard():
        fired.append("guard")
        loop.stop()

    loop.call_later(0.01, sender.start)
    loop.call_later(1.0, guard)
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_forever()
    finally:
        sender.join()
    assert fired == [], "Ctrl-C was only noticed when the next callback ran"
    assert loop.is_running() is False


def test_close_removes_signal_handlers(loop):
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    loop.add_signal_handler(signal.SIGUSR2, lambda: None)
    loop.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    # No wakeup fd is left behind pointing at the closed loop.
    assert signal.set_wakeup_fd(-1) == -1


@pytest.mark.parametrize("sig", [0, 1000, -1])
def test_invalid_signal_number_raises_value_error(loop, sig):
    with pytest.raises(ValueError, match=rf"^invalid signal number {sig}$"):
        loop.add_signal_handler(sig, lambda: None)
    with pytest.raises(ValueError, match=rf"^invalid signal number {sig}$"):
        loop.remove_signal_handler(sig)


def test_non_int_signal_raises_type_error(loop):
    with pytest.raises(TypeError, match=r"^sig must be an int, not '10'$"):
        loop.add_signal_handler("10", lambda: None)
    with pytest.raises(TypeError, match=r"^sig must be an int, not None$"):
        loop.remove_signal_handler(None)


def test_coroutine_function_as_handler_raises_type_error(loop):
    async def handler():
        pass

    before = signal.getsignal(signal.SIGUSR1)
    with pytest.raises(TypeError, match=r"^coroutines cannot be used with add_signal_handler\(\)$"):
        loop.add_signal_handler(signal.SIGUSR1, handler)
    assert signal.getsignal(signal.SIGUSR1) is before


def test_coroutine_object_as_handler_raises_type_error(loop):
    async def handler():
        pass

    coro = handler()
    try:
        with pytest.raises(
            TypeError, match=r"^coroutines cannot be used with add_signal_handler\(\)$"
        ):
            loop.add_signal_handler(signal.SIGUSR1, coro)
    finally:
        coro.close()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP])
def test_uncatchable_signal_raises_runtime_error(loop, sig):
    with pytest.raises(RuntimeError, match=rf"^sig {int(sig)} cannot be caught$"):
        loop.add_signal_handler(int(sig), lambda: None)
    assert not loop.remove_signal_handler(int(sig))
    assert signal.set_wakeup_fd(-1) == -1


def test_add_signal_handler_on_closed_loop_raises(loop):
    loop.close()
    with pytest.raises(RuntimeError, match=r"^Event loop is closed$"):
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)


def test_add_signal_handler_outside_the_main_thread_raises(loop):
    errors = []

    def worker():
        try:
            loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        except BaseException as exc:  # recorded and checked below
            errors.append(exc)

    before = signal.getsignal(signal.SIGUSR1)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert type(errors[0]) is RuntimeError
    assert "main thread" in str(errors[0])
    assert signal.getsignal(signal.SIGUSR1) is before


def test_exception_in_signal_handler_goes_to_the_exception_handler(loop, exc_handler):
    def broken():
        raise ValueError("signal handler failed")

    loop.add_signal_handler(signal.SIGUSR1, broken)
    os.kill(os.getpid(), signal.SIGUSR1)
    run_until(loop, lambda: exc_handler.calls)
    context = exc_handler.pop_one()
    assert isinstance(context["exception"], ValueError)
    assert context["message"].startswith("Exception in callback ")
    loop.remove_signal_handler(signal.SIGUSR1)


def test_signal_handler_moves_to_a_new_loop_after_close(loop, loop_factory):
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "first")
    loop.close()
    second = loop_factory()
    try:
        second.add_signal_handler(signal.SIGUSR1, calls.append, "second")
        os.kill(os.getpid(), signal.SIGUSR1)
        run_until(second, lambda: calls)
        assert calls == ["second"]
        second.remove_signal_handler(signal.SIGUSR1)
    finally:
        second.close()


def test_handlers_for_two_signals(loop):
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "usr1")
    loop.add_signal_handler(signal.SIGUSR2, calls.append, "usr2")
    os.kill(os.getpid(), signal.SIGUSR2)
    run_until(loop, lambda: calls)
    os.kill(os.getpid(), signal.SIGUSR1)
    run_until(loop, lambda: len(calls) == 2)
    assert calls == ["usr2", "usr1"]
    loop.remove_signal_handler(signal.SIGUSR1)
    # Removing one handler leaves the other working.
    os.kill(os.getpid(), signal.SIGUSR2)
    run_until(loop, lambda: len(calls) == 3)
    assert calls == ["usr2", "usr1", "usr2"]
    loop.remove_signal_handler(signal.SIGUSR2)
