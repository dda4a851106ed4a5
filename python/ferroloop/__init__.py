"""ferroloop: a drop-in asyncio event loop with a Rust engine.

import asyncio, ferroloop
asyncio.run(main(), loop_factory=ferroloop.new_event_loop)   # Python 3.12+
ferroloop.run(main())                                        # the same, on 3.11 too
"""

from . import _runner
from ._core import Handle, TimerHandle
from ._loop import Loop
from ._runner import new_event_loop, run
from ._stall import StallFrame, StallReport, log_stall
from ._stats import LagStats, LoopStats

__all__ = [
    "EventLoopPolicy",
    "Handle",
    "LagStats",
    "Loop",
    "LoopStats",
    "StallFrame",
    "StallReport",
    "TimerHandle",
    "install",
    "log_stall",
    "new_event_loop",
    "run",
]

if hasattr(_runner, "install"):
    install = _runner.install
else:  # Python 3.16+: asyncio has no policies any more, nor has ferroloop.
    __all__.remove("EventLoopPolicy")
    __all__.remove("install")


def __getattr__(name):
    # From Python 3.14 on, naming the policy class warns, as asyncio.DefaultEventLoopPolicy
    # does.
    if name == "EventLoopPolicy" and hasattr(_runner, name):
        if _runner.POLICIES_DEPRECATED:
            _runner.warn_policy_deprecated("ferroloop.EventLoopPolicy")
        return _runner.EventLoopPolicy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
