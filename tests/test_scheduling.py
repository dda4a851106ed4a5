"""call_soon: ordering, arguments, handles, contexts, iterations, closed loops."""

from __future__ import annotations

import contextvars
import functools
import sys

import pytest
from support import handle_classes, run_once, run_until

var = contextvars.ContextVar("var", default="unset")


def test_call_soon_runs_callbacks_in_fifo_order_with_args(loop):
    calls = []
    for i in range(50):
        loop.call_soon(calls.append, i)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == list(range(50))


def test_call_soon_passes_several_positional_args(loop):
    calls = []
    loop.call_soon(lambda *args: calls.append(args), 1, "two", None)
    loop.call_soon(calls.append, ())
    run_once(loop)
    assert calls == [(1, "two", None), ()]


def test_call_soon_accepts_partial_and_bound_method(loop):
    calls = []
    loop.call_soon(functools.partial(calls.append, "partial"))
    loop.call_soon(calls.append, "bound")
    run_once(loop)
    assert calls == ["partial", "bound"]


def test_call_soon_rejects_keyword_arguments_for_the_callback(loop):
    with pytest.raises(TypeError):
        loop.call_soon(print, sep="")


def test_call_soon_returns_a_handle(loop):
    handle = loop.call_soon(lambda: None)
    handle_class, timer_handle_class = handle_classes(loop)
    assert isinstance(handle, handle_class)
    assert not isinstance(handle, timer_handle_class)
    run_once(loop)


def test_handle_is_not_cancelled_before_or_after_running(loop):
    handle = loop.call_soon(lambda: None)
    assert handle.cancelled() is False
    run_once(loop)
    assert handle.cancelled() is False


def test_cancelled_handle_does_not_run(loop):
    calls = []
    handle = loop.call_soon(calls.append, "cancelled")
    loop.call_soon(calls.append, "kept")
    assert handle.cancel() is None
    assert handle.cancelled() is True
    handle.cancel()  # idempotent
    assert handle.cancelled() is True
    run_once(loop)
    assert calls == ["kept"]


def test_callback_can_cancel_a_later_callback_of_the_same_iteration(loop):
    calls = []
    second = None

    def first():
        calls.append("first")
        second.cancel()

    loop.call_soon(first)
    second = loop.call_soon(calls.append, "second")
    loop.call_soon(calls.append, "third")
    run_once(loop)
    assert calls == ["first", "third"]


def test_cancel_after_run_is_harmless(loop):
    calls = []
    handle = loop.call_soon(calls.append, 1)
    run_once(loop)
    handle.cancel()
    assert handle.cancelled() is True
    run_once(loop)
    assert calls == [1]


def test_callbacks_scheduled_during_an_iteration_run_in_the_next_one(loop):
    calls = []

    def outer():
        calls.append("outer")
        loop.call_soon(calls.append, "inner")

    loop.call_soon(outer)
    loop.call_soon(calls.append, "sibling")
    run_once(loop)
    assert calls == ["outer", "sibling"]
    run_once(loop)
    assert calls == ["outer", "sibling", "inner"]


def test_self_rescheduling_callback_does_not_starve_the_loop(loop):
    count = 0

    def spin():
        nonlocal count
        count += 1
        loop.call_soon(spin)

    loop.call_soon(spin)
    run_until(loop, lambda: count >= 100)
    # Timers (the sleep inside run_until) still fire while spin reschedules itself.
    assert count >= 100


def test_call_soon_context_runs_callback_inside_given_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in-ctx")
    seen = []

    def callback():
        seen.append(var.get())
        var.set("changed-by-callback")

    loop.call_soon(callback, context=ctx)
    run_once(loop)
    assert seen == ["in-ctx"]
    assert ctx[var] == "changed-by-callback"
    assert var.get() == "unset"


def test_call_soon_without_context_copies_the_current_context_at_call_time(loop):
    seen = []

    def schedule():
        var.set("at-schedule")
        loop.call_soon(lambda: seen.append(var.get()))
        var.set("after-schedule")

    contextvars.copy_context().run(schedule)
    run_once(loop)
    assert seen == ["at-schedule"]


def test_changes_inside_a_callback_do_not_leak_to_the_next_one(loop):
    seen = []

    def setter():
        var.set("leaked?")

    loop.call_soon(setter)
    loop.call_soon(lambda: seen.append(var.get()))
    run_once(loop)
    assert seen == ["unset"]
    assert var.get() == "unset"


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Handle.get_context() is new in 3.12")
def test_handle_get_context_returns_the_context(loop):
    ctx = contextvars.copy_context()
    handle = loop.call_soon(lambda: None, context=ctx)
    assert handle.get_context() is ctx
    run_once(loop)


def test_call_soon_on_closed_loop_raises(loop):
    loop.close()
    with pytest.raises(RuntimeError, match=r"^Event loop is closed$"):
        loop.call_soon(lambda: None)


def test_call_soon_with_non_callable_fails_when_run_outside_debug_mode(loop, exc_handler):
    # Outside debug mode asyncio does not validate the callback when it is
    # scheduled; calling it fails and the failure goes to the exception handler.
    loop.set_debug(False)
    handle = loop.call_soon(42)
    run_once(loop)
    context = exc_handler.pop_one()
    assert isinstance(context["exception"], TypeError)
    assert context["message"].startswith("Exception in callback ")
    assert context["handle"] is handle


def test_pending_callbacks_are_dropped_by_close(loop):
    calls = []
    loop.call_soon(calls.append, 1)
    loop.close()
    assert calls == []
