"""Debug mode: the flag, slow callback warnings, thread and callback checks."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import threading
import time

import pytest
from support import run_once

SLOW_MESSAGE = r"^Executing .+ took \d+\.\d{3} seconds$"


def _debug_by_default() -> bool:
    return sys.flags.dev_mode or bool(os.environ.get("PYTHONASYNCIODEBUG"))


def test_get_debug_default_and_set_debug(loop):
    assert loop.get_debug() is _debug_by_default()
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_set_debug_while_running(loop):
    seen = []

    def toggle():
        loop.set_debug(True)
        seen.append(loop.get_debug())

    loop.call_soon(toggle)
    run_once(loop)
    assert seen == [True]
    assert loop.get_debug() is True


def test_slow_callback_duration_attribute(loop):
    assert loop.slow_callback_duration == 0.1
    loop.slow_callback_duration = 0.25
    assert loop.slow_callback_duration == 0.25


def test_slow_callback_is_logged_in_debug_mode(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    def slow():
        time.sleep(0.02)

    loop.call_soon(slow)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run_once(loop)
    records = [r for r in caplog.records if r.name == "asyncio" and "took" in r.getMessage()]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    assert re.match(SLOW_MESSAGE, message, re.DOTALL), message
    assert "slow" in message
    assert float(message.rsplit(" took ", 1)[1].split()[0]) >= 0.02


def test_slow_task_step_is_logged_in_debug_mode(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    async def slow_coro():
        time.sleep(0.02)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_until_complete(slow_coro())
    messages = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
    assert len(messages) == 1
    assert re.match(SLOW_MESSAGE, messages[0], re.DOTALL), messages[0]
    assert "slow_coro" in messages[0]


def test_fast_callbacks_are_not_logged(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 10
    loop.call_soon(time.sleep, 0.001)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run_once(loop)
    assert not [r for r in caplog.records if "took" in r.getMessage()]


def test_slow_callback_not_logged_outside_debug_mode(loop, caplog):
    loop.set_debug(False)
    loop.slow_callback_duration = 0.001
    loop.call_soon(time.sleep, 0.01)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run_once(loop)
    assert not [r for r in caplog.records if "took" in r.getMessage()]


@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at"])
def test_non_threadsafe_call_from_another_thread_raises_in_debug_mode(loop, method):
    loop.set_debug(True)
    errors = []
    calls = []

    def from_thread():
        args = {"call_soon": (), "call_later": (0,), "call_at": (loop.time(),)}[method]
        try:
            getattr(loop, method)(*args, calls.append, "should not run")
        except RuntimeError as exc:
            errors.append(str(exc))

    def inside_loop():
        thread = threading.Thread(target=from_thread)
        thread.start()
        thread.join()

    loop.call_soon(inside_loop)
    run_once(loop)
    run_once(loop)
    assert errors == [
        "Non-thread-safe operation invoked on an event loop other than the current one"
    ]
    assert calls == []


def test_call_soon_from_another_thread_is_allowed_when_loop_is_not_running(loop):
    loop.set_debug(True)
    calls = []
    thread = threading.Thread(target=loop.call_soon, args=(calls.append, "ok"))
    thread.start()
    thread.join()
    run_once(loop)
    assert calls == ["ok"]


def test_call_soon_threadsafe_from_another_thread_is_fine_in_debug_mode(loop):
    loop.set_debug(True)
    calls = []

    def inside_loop():
        thread = threading.Thread(target=loop.call_soon_threadsafe, args=(calls.append, "ok"))
        thread.start()
        thread.join()

    loop.call_soon(inside_loop)
    run_once(loop)
    run_once(loop)
    assert calls == ["ok"]


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe"])
def test_non_callable_rejected_in_debug_mode(loop, method):
    loop.set_debug(True)
    with pytest.raises(
        TypeError, match=rf"^a callable object was expected by {method}\(\), got 42$"
    ):
        getattr(loop, method)(42)


def test_non_callable_rejected_by_timers_in_debug_mode(loop):
    loop.set_debug(True)
    with pytest.raises(TypeError, match=r"^a callable object was expected by call_at\(\), got 42$"):
        loop.call_at(loop.time(), 42)
    with pytest.raises(
        TypeError, match=r"^a callable object was expected by call_(later|at)\(\), got 42$"
    ):
        loop.call_later(1, 42)


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe", "run_in_executor"])
def test_coroutine_function_rejected_in_debug_mode(loop, method):
    loop.set_debug(True)

    async def coro_func():
        pass

    args = (None, coro_func) if method == "run_in_executor" else (coro_func,)
    with pytest.raises(TypeError, match=rf"^coroutines cannot be used with {method}\(\)$"):
        getattr(loop, method)(*args)


def test_coroutine_object_rejected_by_call_soon_in_debug_mode(loop):
    loop.set_debug(True)

    async def coro_func():
        pass

    coro = coro_func()
    try:
        with pytest.raises(TypeError, match=r"^coroutines cannot be used with call_soon\(\)$"):
            loop.call_soon(coro)
    finally:
        coro.close()


def test_debug_mode_tracks_coroutine_origin_while_running(loop):
    loop.set_debug(True)
    seen = []

    async def main():
        seen.append(sys.get_coroutine_origin_tracking_depth())

    before = sys.get_coroutine_origin_tracking_depth()
    loop.run_until_complete(main())
    assert seen[0] > 0
    assert sys.get_coroutine_origin_tracking_depth() == before


def test_run_until_complete_works_in_debug_mode(loop):
    loop.set_debug(True)

    async def main():
        await asyncio.sleep(0.001)
        return "debug ok"

    assert loop.run_until_complete(main()) == "debug ok"


def _slow_with(delay):
    time.sleep(delay)


def test_slow_callback_message_reads_as_asyncios(loop, caplog):
    # asyncio: logger.warning('Executing %s took %.3f seconds', _format_handle(handle), dt),
    # with the handle's repr: callback source and, in debug mode, where it was created.
    import functools

    loop.set_debug(True)
    loop.slow_callback_duration = 0.01
    created_line = sys._getframe().f_lineno + 1
    loop.call_soon(functools.partial(_slow_with, 0.02))
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run_once(loop)
    messages = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
    assert len(messages) == 1
    source = f"{__file__}:{_slow_with.__code__.co_firstlineno}"
    created = f"{__file__}:{created_line}"
    expected = f"Executing <Handle _slow_with(0.02)() at {source} created at {created}>"
    assert messages[0].startswith(expected + " took "), messages[0]
    assert re.fullmatch(r"\d+\.\d{3} seconds", messages[0][len(expected) + 6 :]), messages[0]
