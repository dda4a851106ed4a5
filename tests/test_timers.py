"""call_later / call_at / time(): ordering, handles, cancellation, the clock."""

from __future__ import annotations

import asyncio
import contextvars
import math
import time

import pytest
from support import handle_classes, run_once, run_until, run_with_guard

var = contextvars.ContextVar("var", default="unset")

# Allowed difference between loop.time() and time.monotonic() read back to back.
CLOCK_TOLERANCE = 0.005


def test_call_later_runs_timers_in_deadline_order(loop):
    calls = []
    loop.call_later(0.03, calls.append, "c")
    loop.call_later(0.01, calls.append, "a")
    loop.call_later(0.02, calls.append, "b")
    loop.call_later(0.04, loop.stop)
    assert not run_with_guard(loop)
    assert calls == ["a", "b", "c"]


def test_call_at_runs_timers_in_deadline_order(loop):
    calls = []
    now = loop.time()
    loop.call_at(now + 0.02, calls.append, 2)
    loop.call_at(now + 0.01, calls.append, 1)
    loop.call_at(now + 0.03, calls.append, 3)
    loop.call_at(now + 0.04, loop.stop)
    assert not run_with_guard(loop)
    assert calls == [1, 2, 3]


def test_timer_does_not_fire_early(loop):
    fired = []
    handle = loop.call_later(0.05, lambda: fired.append(loop.time()))
    run_until(loop, lambda: fired)
    assert fired[0] >= handle.when() - 0.002


def test_negative_delay_runs_soon(loop):
    calls = []

    def callback():
        calls.append("ran")
        loop.stop()

    loop.call_later(-1, callback)
    assert not run_with_guard(loop)
    assert calls == ["ran"]


def test_call_at_in_the_past_runs_soon(loop):
    calls = []

    def callback(arg):
        calls.append(arg)
        loop.stop()

    loop.call_at(loop.time() - 10, callback, "past")
    assert not run_with_guard(loop)
    assert calls == ["past"]


def test_zero_delay_runs_after_already_ready_callbacks(loop):
    calls = []
    loop.call_soon(calls.append, "soon")
    loop.call_later(0, calls.append, "later")
    run_until(loop, lambda: len(calls) == 2)
    assert calls == ["soon", "later"]


def test_call_later_none_delay_raises(loop):
    with pytest.raises(TypeError, match=r"^delay must not be None$"):
        loop.call_later(None, lambda: None)


def test_call_at_none_when_raises(loop):
    with pytest.raises(TypeError, match=r"^when cannot be None$"):
        loop.call_at(None, lambda: None)


@pytest.mark.parametrize("method", ["call_later", "call_at"])
def test_timers_return_timer_handles(loop, method):
    when = 10 if method == "call_later" else loop.time() + 10
    handle = getattr(loop, method)(when, lambda: None)
    handle_class, timer_handle_class = handle_classes(loop)
    assert isinstance(handle, timer_handle_class)
    assert isinstance(handle, handle_class)
    handle.cancel()


def test_call_later_handle_when_is_now_plus_delay(loop):
    before = loop.time()
    handle = loop.call_later(10, lambda: None)
    after = loop.time()
    assert before + 10 <= handle.when() <= after + 10
    handle.cancel()


def test_call_at_handle_when_is_exactly_the_deadline(loop):
    when = loop.time() + 123.25
    handle = loop.call_at(when, lambda: None)
    assert handle.when() == when
    handle.cancel()
    assert handle.when() == when


def test_timer_passes_args_and_honours_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(var.set, "timer-ctx")
    later, at = [], []
    loop.call_later(0.001, lambda a, b: later.append((a, b, var.get())), 1, 2, context=ctx)
    loop.call_at(loop.time(), lambda: at.append(var.get()), context=ctx)
    run_until(loop, lambda: later and at)
    assert later == [(1, 2, "timer-ctx")]
    assert at == ["timer-ctx"]
    assert var.get() == "unset"


def test_cancelled_timer_does_not_fire(loop):
    calls = []
    handle = loop.call_later(0.01, calls.append, "cancelled")
    loop.call_later(0.02, calls.append, "kept")
    handle.cancel()
    assert handle.cancelled() is True
    run_until(loop, lambda: calls)
    run_until(loop, lambda: loop.time() > handle.when() + 0.01)
    assert calls == ["kept"]


def test_timer_cancelled_by_an_earlier_callback_does_not_fire(loop):
    calls = []
    handle = loop.call_later(0.02, calls.append, "victim")
    loop.call_later(0.01, handle.cancel)
    loop.call_later(0.03, calls.append, "done")
    run_until(loop, lambda: calls)
    assert calls == ["done"]


def test_cancelling_many_timers(loop):
    calls = []
    handles = [loop.call_later(0.001 * (1 + i % 20), calls.append, i) for i in range(2000)]
    last_deadline = loop.time() + 0.021
    for i, handle in enumerate(handles):
        if i % 100:
            handle.cancel()
    run_until(loop, lambda: len(calls) == 20)
    run_until(loop, lambda: loop.time() > last_deadline + 0.005)
    assert sorted(calls) == list(range(0, 2000, 100))
    assert all(h.cancelled() for i, h in enumerate(handles) if i % 100)
    assert not any(h.cancelled() for i, h in enumerate(handles) if not i % 100)


def test_cancel_after_fire_is_harmless(loop):
    calls = []
    handle = loop.call_later(0, calls.append, 1)
    run_until(loop, lambda: calls)
    handle.cancel()
    assert handle.cancelled() is True
    run_once(loop)
    assert calls == [1]


def test_timer_scheduled_from_a_timer(loop):
    calls = []

    def first():
        calls.append("first")
        loop.call_later(0.005, second)

    def second():
        calls.append("second")
        loop.stop()

    loop.call_later(0.005, first)
    assert not run_with_guard(loop)
    assert calls == ["first", "second"]


def test_pending_long_timer_does_not_prevent_stop_or_close(loop):
    calls = []
    loop.call_later(3600, calls.append, "never")
    loop.call_soon(loop.stop)
    loop.run_forever()
    loop.close()
    assert calls == []


def test_call_later_on_closed_loop_raises(loop):
    loop.close()
    with pytest.raises(RuntimeError, match=r"^Event loop is closed$"):
        loop.call_later(1, lambda: None)
    with pytest.raises(RuntimeError, match=r"^Event loop is closed$"):
        loop.call_at(loop.time() + 1, lambda: None)


def test_time_is_on_the_monotonic_clock(loop):
    before = time.monotonic()
    now = loop.time()
    after = time.monotonic()
    assert isinstance(now, float)
    assert before - CLOCK_TOLERANCE <= now <= after + CLOCK_TOLERANCE


def test_time_advances_outside_and_inside_a_running_loop(loop):
    first = loop.time()
    time.sleep(0.02)
    second = loop.time()
    assert second - first >= 0.02 - CLOCK_TOLERANCE
    assert abs(second - time.monotonic()) <= CLOCK_TOLERANCE

    inside = []

    def callback():
        inside.append((time.monotonic(), loop.time()))
        time.sleep(0.02)
        inside.append((time.monotonic(), loop.time()))

    loop.call_soon(callback)
    run_once(loop)
    for mono, loop_time in inside:
        assert abs(loop_time - mono) <= CLOCK_TOLERANCE


def test_time_never_goes_backwards(loop):
    readings = [loop.time() for _ in range(1000)]
    assert readings == sorted(readings)


def test_asyncio_sleep_uses_the_loop_timers(loop):
    async def main():
        start = loop.time()
        await asyncio.sleep(0.02)
        return loop.time() - start

    assert loop.run_until_complete(main()) >= 0.02 - 0.002


def test_wait_for_timeout_fires(loop):
    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(loop.create_future(), 0.01)
        return "ok"

    assert loop.run_until_complete(main()) == "ok"


def test_huge_and_infinite_delays_are_accepted(loop):
    calls = []
    huge = loop.call_later(1e9, calls.append, "huge")
    infinite = loop.call_later(math.inf, calls.append, "inf")
    assert infinite.when() == math.inf
    run_once(loop)
    huge.cancel()
    infinite.cancel()
    assert calls == []


def test_sleep_forever_can_be_cancelled(loop):
    async def sleeper():
        await asyncio.sleep(math.inf)

    async def main():
        task = loop.create_task(sleeper())
        await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return "cancelled"

    assert loop.run_until_complete(main()) == "cancelled"


def test_timer_callback_runs_in_context_copied_when_scheduled(loop):
    seen = []

    def schedule():
        var.set("at call_later")
        loop.call_later(0.001, lambda: seen.append(var.get()))
        var.set("after call_later")

    contextvars.copy_context().run(schedule)
    run_until(loop, lambda: seen)
    assert seen == ["at call_later"]


def test_asyncio_timeout_context_manager(loop):
    async def main():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await asyncio.sleep(3600)
        async with asyncio.timeout(None) as cm:
            cm.reschedule(loop.time() + 3600)
            await asyncio.sleep(0)
        return "ok"

    assert loop.run_until_complete(main()) == "ok"


def test_replaced_time_is_the_clock_of_the_timers(loop):
    """Replacing loop.time (mock.patch.object, as aiohttp's keep-alive test does) moves
    the timers: asyncio's loop reads its clock through self.time(). Once restored, the
    real clock is the timers' clock again."""
    from unittest import mock

    async def main():
        fired = []
        now = loop.time()
        with mock.patch.object(loop, "time") as fake:
            fake.return_value = now
            loop.call_at(now + 1000, fired.append, "call_at")
            loop.call_later(500, fired.append, "call_later")
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert fired == []
            fake.return_value = now + 1000
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert sorted(fired) == ["call_at", "call_later"]
        assert "time" not in vars(loop)
        started = time.monotonic()
        await asyncio.sleep(0.05)
        assert 0.05 <= time.monotonic() - started < 5

    loop.run_until_complete(main())


def test_subclass_time_is_the_clock_of_the_timers(loop):
    """A subclass's time() is its loop's clock (asyncio's test loops rely on it): a timer
    due by that clock fires, though the monotonic clock is an hour behind it."""

    class Shifted(type(loop)):
        def time(self):
            return super().time() + 3600

    shifted = Shifted()
    try:
        fired = []
        shifted.call_at(shifted.time() + 0.01, fired.append, "call_at")
        shifted.call_later(0.02, fired.append, "call_later")
        shifted.call_later(0.03, shifted.stop)
        started = time.monotonic()
        assert not run_with_guard(shifted)
        assert fired == ["call_at", "call_later"]
        assert time.monotonic() - started < 5
    finally:
        shifted.close()


def test_call_at_keeps_an_int_when(loop):
    """call_at(int) gives a handle whose when() is that int, as asyncio's (aiohttp rounds
    its deadlines up with math.ceil and checks the type); a float stays a float."""
    import math

    when = math.ceil(loop.time() + 3600)
    at_int = loop.call_at(when, lambda: None)
    at_float = loop.call_at(when + 0.5, lambda: None)
    later = loop.call_later(3600, lambda: None)
    try:
        assert at_int.when() == when
        assert type(at_int.when()) is int
        assert type(at_int._when) is int
        assert f"when={when} " in repr(at_int)
        assert type(at_float.when()) is float
        assert at_float.when() == when + 0.5
        assert type(later.when()) is float
        assert at_int < at_float
    finally:
        for handle in (at_int, at_float, later):
            handle.cancel()
