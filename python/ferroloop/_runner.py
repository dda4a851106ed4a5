"""Entry points: new_event_loop(), run(), the policy shim and install()."""

from __future__ import annotations

import asyncio
import sys
import warnings
from asyncio import events

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
    # Checked before the Runner exists: entering it already creates the loop.
    if events._get_running_loop() is not None:
        raise RuntimeError("asyncio.run() cannot be called from a running event loop")
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)


# Event-loop policies are deprecated from Python 3.14 and gone in 3.16; ferroloop's policy
# shim follows asyncio's: it warns where asyncio's policy functions warn, and exists only
# where asyncio's policies do.
POLICIES_DEPRECATED = sys.version_info >= (3, 14)
# Renamed with a leading underscore in Python 3.14, when policies were deprecated.
_BasePolicy = getattr(events, "BaseDefaultEventLoopPolicy", None) or getattr(
    events, "_BaseDefaultEventLoopPolicy", None
)


def warn_policy_deprecated(name: str) -> None:
    """The DeprecationWarning asyncio gives for its policy API from 3.14 on, for ours."""
    warnings.warn(
        f"{name!r} is deprecated and slated for removal in Python 3.16; use "
        "asyncio.run(main(), loop_factory=ferroloop.new_event_loop) or ferroloop.run()",
        DeprecationWarning,
        stacklevel=3,
    )


if _BasePolicy is not None:

    class EventLoopPolicy(_BasePolicy):
        """An asyncio event-loop policy whose loops are ferroloop loops (for Python < 3.16,
        where policies exist; prefer `loop_factory=ferroloop.new_event_loop`)."""

        def _loop_factory(self):
            return Loop()

        def new_event_loop(self):
            """A new ferroloop loop."""
            return Loop()

    def install():
        """Makes asyncio create ferroloop loops (sets an `EventLoopPolicy`). Deprecated
        from Python 3.14 on, as asyncio's `set_event_loop_policy` is."""
        if POLICIES_DEPRECATED:
            warn_policy_deprecated("ferroloop.install")
        with warnings.catch_warnings():
            # One warning, ours, which names the caller's line, not asyncio's as well.
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(EventLoopPolicy())
