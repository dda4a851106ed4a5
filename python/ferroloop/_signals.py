"""Unix signal handlers: add_signal_handler / remove_signal_handler.

CPython owns signal dispositions, so the loop never calls sigaction itself. It installs a
no-op Python handler with `signal.signal` (which makes the signal "caught") and points
`signal.set_wakeup_fd` at one end of a socketpair; CPython's C-level handler writes the
signal number there at once, even while the loop sleeps in the poller without the GIL. The
loop reads the other end with an ordinary reader and queues the registered handle. The
handler is therefore live the moment add_signal_handler returns.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket

from ._core import Handle
from ._errors import is_coroutine_or_function

logger = logging.getLogger("asyncio")


def _ignore_signal(signum, frame):
    """Python-level handler installed for every watched signal; the work happens in the loop."""


def _check_signal(sig):
    if not isinstance(sig, int):
        raise TypeError(f"sig must be an int, not {sig!r}")
    if sig not in signal.valid_signals():
        raise ValueError(f"invalid signal number {sig}")


class SignalsMixin:
    """Signal handlers delivered through `signal.set_wakeup_fd`."""

    _signal_reader = None
    _signal_writer = None

    def _init_signals(self):
        self._signal_handlers = {}

    def add_signal_handler(self, sig, callback, *args):
        """Calls `callback(*args)` in the loop whenever signal `sig` arrives."""
        if is_coroutine_or_function(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        _check_signal(sig)
        self._check_closed()
        self._open_signal_channel()
        try:
            signal.set_wakeup_fd(self._signal_writer.fileno())
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc)) from None
        self._signal_handlers[sig] = Handle(callback, args, self, None)
        try:
            signal.signal(sig, _ignore_signal)
            # Restart interrupted system calls, as asyncio asks.
            signal.siginterrupt(sig, False)
        except OSError as exc:
            del self._signal_handlers[sig]
            if not self._signal_handlers:
                self._release_wakeup_fd()
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise

    def remove_signal_handler(self, sig):
        """Removes the handler of `sig`; True if there was one."""
        _check_signal(sig)
        if self._signal_handlers.pop(sig, None) is None:
            return False
        default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, default)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise
        if not self._signal_handlers:
            self._release_wakeup_fd()
        return True

    def _open_signal_channel(self):
        if self._signal_reader is not None:
            return
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._signal_reader, self._signal_writer = reader, writer
        self._add_reader(reader.fileno(), self._read_signals)

    def _read_signals(self):
        while True:
            try:
                data = self._signal_reader.recv(4096)
            except InterruptedError:
                continue
            except BlockingIOError:
                return
            if not data:
                return
            for sig in data:
                handle = self._signal_handlers.get(sig)
                if handle is None:
                    continue
                if handle.cancelled():
                    self.remove_signal_handler(sig)
                else:
                    self._add_callback(handle)

    def _release_wakeup_fd(self):
        try:
            signal.set_wakeup_fd(-1)
        except (ValueError, OSError) as exc:
            logger.info("set_wakeup_fd(-1) failed: %s", exc)

    def _close_signals(self):
        for sig in list(self._signal_handlers):
            self.remove_signal_handler(sig)
        reader, writer = self._signal_reader, self._signal_writer
        self._signal_reader = self._signal_writer = None
        if reader is not None:
            self._remove_reader(reader.fileno())
            reader.close()
            writer.close()
