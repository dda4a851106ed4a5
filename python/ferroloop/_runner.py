"""Entry points: new_event_loop(), run(), the policy shim and install()."""

from __future__ import annotations

import asyncio
import sys
import warnings
from asyncio import coroutines, events

from ._loop import Loop


def new_event_loop() -> Loop:
    """A new ferroloop event loop."""
    return Loop()


def run(main, *, debug=None, **kwargs):
    """Runs coroutine `main` on a new ferroloop loop and returns its result, closing the
    loop afterwards: `asyncio.run(main, debug=debug, loop_factory=new_event_loop)`."""
    if sys.version_info >= (3, 12):
        return asyncio.run(main, debug=debug, loop_factory=new_event_loop, **kwargs)
    if kwargs:
        name = next(iter(kwargs))
        raise TypeError(f"run() got an unexpected keyword argument '{name}'")
    if sys.version_info >= (3, 11):
        # Checked before the Runner exists: entering it already creates the loop.
        if events._get_running_loop() is not None:
            raise RuntimeError("asyncio.run() cannot be called from a running event loop")
        with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
            return runner.run(main)
    return _run_without_runner(main, debug)


def _run_without_runner(main, debug):
    """asyncio.run for Python 3.10, which has no Runner and no loop_factory."""
    if events._get_running_loop() is not None:
        raise RuntimeError("asyncio.run() cannot be called from a running event loop")
    if not coroutines.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    loop = new_event_loop()
    try:
        events.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_remaining_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            events.set_event_loop(None)
            loop.close()


def _cancel_remaining_tasks(loop):
    remaining = asyncio.all_tasks(loop)
    if not remaining:
        return
    for task in remaining:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*remaining, return_exceptions=True))
    for task in remaining:
        if task.cancelled() or task.exception() is None:
            continue
        loop.call_exception_handler(
            {
                "message": "unhandled exception during asyncio.run() shutdown",
                "exception": task.exception(),
                "task": task,
            }
        )


# Renamed with a leading underscore in Python 3.14, when policies were deprecated.
_BasePolicy = getattr(events, "BaseDefaultEventLoopPolicy", None) or getattr(
    events, "_BaseDefaultEventLoopPolicy", None
)


class EventLoopPolicy(_BasePolicy):
    """An asyncio event-loop policy whose loops are ferroloop loops (for Python < 3.16,
    where policies exist; prefer `loop_factory=ferroloop.new_event_loop`)."""

    def _loop_factory(self):
        return Loop()

    def new_event_loop(self):
        """A new ferroloop loop."""
        return Loop()


def install():
    """Makes asyncio create ferroloop loops (sets an `EventLoopPolicy`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(EventLoopPolicy())
