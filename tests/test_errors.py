"""Exception handler API and the errors a loop reports or raises on bad input."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest
from support import run_once, run_until


def test_get_exception_handler_returns_what_was_set(loop, exc_handler):
    assert loop.get_exception_handler() is exc_handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None

    def handler(loop, context):
        pass

    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler


@pytest.mark.parametrize("bad", [42, "handler", object()])
def test_set_exception_handler_rejects_non_callable(loop, exc_handler, bad):
    with pytest.raises(TypeError, match=r"^A callable object or None is expected, got "):
        loop.set_exception_handler(bad)
    assert loop.get_exception_handler() is exc_handler


def test_handler_called_with_loop_and_context_when_callback_raises(loop, exc_handler):
    def broken(arg):
        raise ValueError(arg)

    handle = loop.call_soon(broken, "bad value")
    loop.call_soon(loop.stop)
    loop.run_forever()
    [(called_loop, context)] = exc_handler.calls
    exc_handler.calls.clear()
    assert called_loop is loop
    assert isinstance(context, dict)
    assert {"message", "exception", "handle"} <= context.keys()
    assert context["message"].startswith("Exception in callback ")
    assert "broken" in context["message"]
    assert type(context["exception"]) is ValueError
    assert context["exception"].args == ("bad value",)
    assert context["handle"] is handle


def test_callback_exception_does_not_stop_the_loop(loop, exc_handler):
    calls = []

    def broken():
        raise RuntimeError("first")

    loop.call_soon(broken)
    loop.call_soon(calls.append, "second")
    run_once(loop)
    assert calls == ["second"]
    assert str(exc_handler.pop_one()["exception"]) == "first"


def test_handler_called_when_a_timer_raises(loop, exc_handler):
    def broken():
        raise OSError("timer failed")

    handle = loop.call_later(0.001, broken)
    run_until(loop, lambda: exc_handler.calls)
    context = exc_handler.pop_one()
    assert isinstance(context["exception"], OSError)
    assert context["handle"] is handle
    assert context["message"].startswith("Exception in callback ")


def test_unretrieved_task_exception_is_reported(loop, exc_handler):
    async def fail():
        raise KeyError("never retrieved")

    task = loop.create_task(fail())
    run_until(loop, task.done)
    del task
    gc.collect()
    context = exc_handler.pop_one()
    assert context["message"] == "Task exception was never retrieved"
    assert isinstance(context["exception"], KeyError)
    assert isinstance(context["future"], asyncio.Task)


def test_pending_task_destroyed_is_reported(loop, exc_handler):
    async def forever():
        await loop.create_future()

    task = loop.create_task(forever())
    run_once(loop)
    loop.close()
    del task
    gc.collect()
    context = exc_handler.pop_one()
    assert context["message"] == "Task was destroyed but it is pending!"
    assert isinstance(context["task"], asyncio.Task)


def test_call_exception_handler_calls_the_custom_handler(loop, exc_handler):
    context = {"message": "custom", "extra": 1}
    loop.call_exception_handler(context)
    [(called_loop, got)] = exc_handler.calls
    exc_handler.calls.clear()
    assert called_loop is loop
    assert got == {"message": "custom", "extra": 1}


def test_raising_handler_falls_back_to_the_default_handler(loop, caplog):
    failure = ZeroDivisionError("handler is broken")

    def handler(loop, context):
        raise failure

    loop.set_exception_handler(handler)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_exception_handler({"message": "original"})
    [record] = [r for r in caplog.records if r.name == "asyncio"]
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith("Unhandled error in exception handler")
    assert "original" in record.getMessage()
    assert record.exc_info[1] is failure


def test_raising_handler_on_callback_error_keeps_the_loop_running(loop, caplog):
    calls = []

    def handler(loop, context):
        raise RuntimeError("handler is broken")

    def broken():
        raise ValueError("callback is broken")

    loop.set_exception_handler(handler)
    loop.call_soon(broken)
    loop.call_soon(calls.append, "after")
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        run_once(loop)
    assert calls == ["after"]
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert len(messages) == 1
    assert messages[0].startswith("Unhandled error in exception handler")


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_from_the_handler_propagates(loop, exc_type):
    def handler(loop, context):
        raise exc_type()

    loop.set_exception_handler(handler)
    with pytest.raises(exc_type):
        loop.call_exception_handler({"message": "x"})


def test_default_exception_handler_logs_via_asyncio_logger(loop, caplog):
    exc = ValueError("logged")
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.default_exception_handler({"message": "something failed", "exception": exc})
    [record] = [r for r in caplog.records if r.name == "asyncio"]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "something failed"
    assert record.exc_info[1] is exc


def test_default_exception_handler_without_message_and_extra_keys(loop, caplog):
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.default_exception_handler({"extra": [1, 2]})
    [record] = [r for r in caplog.records if r.name == "asyncio"]
    assert record.getMessage() == "Unhandled exception in event loop\nextra: [1, 2]"
    assert not record.exc_info


def test_without_custom_handler_errors_are_logged(loop, caplog):
    loop.set_exception_handler(None)

    def broken():
        raise ValueError("to the log")

    loop.call_soon(broken)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        run_once(loop)
    [record] = [r for r in caplog.records if r.name == "asyncio"]
    assert record.getMessage().startswith("Exception in callback ")
    assert isinstance(record.exc_info[1], ValueError)


def test_default_handler_can_be_called_from_a_custom_handler(loop, caplog):
    def handler(loop, context):
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_exception_handler({"message": "deferred"})
    [record] = [r for r in caplog.records if r.name == "asyncio"]
    assert record.getMessage() == "deferred"


def test_create_task_rejects_non_coroutine(loop):
    with pytest.raises(TypeError, match=r"^a coroutine was expected, got 42$"):
        loop.create_task(42)


def test_create_task_on_closed_loop_raises(loop):
    async def main():
        pass

    loop.close()
    coro = main()
    try:
        with pytest.raises(RuntimeError, match=r"^Event loop is closed$"):
            loop.create_task(coro)
    finally:
        coro.close()


def test_run_until_complete_on_closed_loop_raises(loop):
    async def main():
        pass

    loop.close()
    coro = main()
    try:
        with pytest.raises(RuntimeError, match=r"^Event loop is closed$"):
            loop.run_until_complete(coro)
    finally:
        coro.close()


def test_call_later_rejects_non_numeric_delay(loop):
    with pytest.raises(TypeError):
        loop.call_later("1", lambda: None)
