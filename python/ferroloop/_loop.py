"""`ferroloop.Loop`: the Rust core plus the cold, argument-heavy parts in Python."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import warnings
import weakref
from asyncio import coroutines, events

from . import _core, _stall, _stats
from ._connections import ConnectionsMixin
from ._datagram import DatagramMixin
from ._dns import DnsMixin
from ._errors import ErrorsMixin
from ._executor import ExecutorMixin
from ._pipes import PipesMixin
from ._running import RunningMixin
from ._sendfile import SendfileMixin
from ._signals import SignalsMixin
from ._sockets import SocketsMixin
from ._subprocess import SubprocessMixin
from ._tasks import TasksMixin
from ._tls import TlsMixin

logger = logging.getLogger("asyncio")

# Python 3.14+: asyncio's handle for call_soon_threadsafe, whose lock makes cancel() and
# cancelled() from another thread wait while the callback runs (CPython's tests check the
# class). None before.
_ThreadSafeHandle = getattr(events, "_ThreadSafeHandle", None)


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
    ConnectionsMixin,
    SendfileMixin,
    TlsMixin,
    SocketsMixin,
    DatagramMixin,
    PipesMixin,
    SubprocessMixin,
    asyncio.AbstractEventLoop,
):
    """An asyncio event loop whose engine is Rust. Create it with `new_event_loop()`."""

    # Stall reports and counters: plain attributes rather than two more mixins, so that
    # the MRO (walked on every attribute cache miss) does not grow for them.
    _stall_watch = None
    set_stall_handler = _stall.set_stall_handler
    get_stall_handler = _stall.get_stall_handler
    _init_stall_from_environment = _stall.init_stall_from_environment
    stats = _stats.stats

    # The unchecked fd-watch primitives that transports use (asyncio has the same names).
    _add_reader = _core.Loop.add_reader
    _remove_reader = _core.Loop.remove_reader
    _add_writer = _core.Loop.add_writer
    _remove_writer = _core.Loop.remove_writer

    def __init__(self):
        # A subclass's time() is the loop's clock, as in asyncio (see __setattr__).
        if type(self).time is not _core.Loop.time:
            self._use_python_clock(True)
        # fd -> transport, so add_reader/add_writer refuse an fd a transport owns.
        self._transports = weakref.WeakValueDictionary()
        self._init_running()
        self._init_signals()
        self._init_subprocesses()
        self.set_debug(_debug_from_environment())
        self._init_stall_from_environment()

    def __setattr__(self, name, value):
        # asyncio's loop reads its clock through self.time(), so replacing `time` (as
        # mock.patch.object(loop, "time") does in aiohttp's tests) moves its timers too;
        # ferroloop's Rust clock then defers to the replacement.
        super().__setattr__(name, value)
        if name == "time":
            self._use_python_clock(True)

    def __delattr__(self, name):
        super().__delattr__(name)
        if name == "time":
            self._use_python_clock(type(self).time is not _core.Loop.time)

    def add_reader(self, fd, callback, *args):
        """Calls `callback(*args)` whenever `fd` is readable (level-triggered)."""
        self._ensure_fd_no_transport(fd)
        self._add_reader(fd, callback, *args)

    def remove_reader(self, fd):
        """Stops watching `fd` for reading; True if a reader was registered."""
        self._ensure_fd_no_transport(fd)
        return self._remove_reader(fd)

    def add_writer(self, fd, callback, *args):
        """Calls `callback(*args)` whenever `fd` is writable (level-triggered)."""
        self._ensure_fd_no_transport(fd)
        self._add_writer(fd, callback, *args)

    def remove_writer(self, fd):
        """Stops watching `fd` for writing; True if a writer was registered."""
        self._ensure_fd_no_transport(fd)
        return self._remove_writer(fd)

    if _ThreadSafeHandle is not None:

        def call_soon_threadsafe(self, callback, *args, context=None):
            """`call_soon` that may be called from any thread; wakes the loop if it sleeps.
            Returns asyncio's `events._ThreadSafeHandle`, as asyncio 3.14 does: cancelling
            it from another thread while the callback runs waits for the callback to end."""
            self._check_closed()
            if self.get_debug():
                self._check_callback(callback, "call_soon_threadsafe")
            handle = _ThreadSafeHandle(callback, args, self, context)
            if handle._source_traceback:
                # Drop _ThreadSafeHandle.__init__ and this method: it ends at the caller.
                del handle._source_traceback[-2:]
            self._call_soon_threadsafe_handle(handle)
            return handle

    def _ensure_fd_no_transport(self, fd):
        fileno = fd
        if not isinstance(fileno, int):
            try:
                fileno = int(fileno.fileno())
            except (AttributeError, TypeError, ValueError):
                raise ValueError(f"Invalid file object: {fd!r}") from None
        transport = self._transports.get(fileno)
        if transport is not None and not transport.is_closing():
            raise RuntimeError(f"File descriptor {fd!r} is used by transport {transport!r}")

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
        self._close_subprocesses()
        self._stall_watch = None
        self._close_core()  # stops the stall watchdog and waits for its thread
        self._abandon_spawns()
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
