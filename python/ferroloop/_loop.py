"""`ferroloop.Loop`: the Rust core plus the cold, argument-heavy parts in Python."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import warnings
from asyncio import coroutines

from . import _core
from ._dns import DnsMixin
from ._errors import ErrorsMixin
from ._executor import ExecutorMixin
from ._running import RunningMixin
from ._signals import SignalsMixin
from ._tasks import TasksMixin

logger = logging.getLogger("asyncio")


def _debug_from_environment() -> bool:
    """asyncio's rule: debug in development mode or when PYTHONASYNCIODEBUG is set.

    asyncio's own loops ask `asyncio.coroutines._is_debug_mode()`; it is asked here too
    when it exists, so code (and CPython's tests) that patch it see the same loop.
    """
    asyncio_rule = getattr(coroutines, "_is_debug_mode", None)
    if asyncio_rule is not None:
        return bool(asyncio_rule())
    if sys.flags.dev_mode:
        return True
    return not sys.flags.ignore_environment and bool(os.environ.get("PYTHONASYNCIODEBUG"))


class Loop(
    _core.Loop,
    RunningMixin,
    ErrorsMixin,
    ExecutorMixin,
    SignalsMixin,
    DnsMixin,
    TasksMixin,
    asyncio.AbstractEventLoop,
):
    """An asyncio event loop whose engine is Rust. Create it with `new_event_loop()`."""

    def __init__(self):
        self._init_running()
        self._init_signals()
        self.set_debug(_debug_from_environment())

    def __repr__(self):
        return (
            f"<{type(self).__module__}.{type(self).__qualname__} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()}>"
        )

    def close(self):
        """Closes the loop: drops pending callbacks, fds and signal handlers, and shuts the
        default executor down without waiting. Closing twice is harmless."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if self.get_debug():
            logger.debug("Close %r", self)
        if not sys.is_finalizing():
            self._close_signals()
        self._close_core()
        self._shutdown_executor_nowait()

    def __del__(self, _warn=warnings.warn):
        try:
            closed = self.is_closed()
        except Exception:
            return
        if not closed:
            _warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
            if not self.is_running():
                self.close()
