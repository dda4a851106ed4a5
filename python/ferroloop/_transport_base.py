"""What the Python halves of ferroloop's transports share.

Each transport is an asyncio transport class that delegates to a Rust core in
`self._core` (see `_stream.py` for why the split exists). These mixins hold the
delegating methods that are the same for several transports; they come before the
asyncio base class so their methods replace asyncio's abstract ones. They declare empty
`__slots__`, so the transports keep their own layout. Every concrete transport has an
instance `__dict__` all the same: applications and test suites set attributes and replace
methods (`transport.write = wrapper`) on the instance, as asyncio's transports allow.

The methods called once per message (`write`, `is_closing`, ...) are in that `__dict__`
from the start, bound to the core (`bind_to_core`): a call goes straight to Rust instead
of through a Python method that calls the core (~60 ns less per call on 3.11). The class
keeps its delegating method of the same name, for `type(transport).write(transport, d)`.
"""

from __future__ import annotations

import math
import warnings


def bind_to_core(transport, names):
    """Makes the core's own methods `names` instance attributes of `transport`. They stay
    replaceable on the instance like any attribute (`transport.write = wrapper`)."""
    core = transport._core
    attributes = transport.__dict__
    for name in names:
        attributes[name] = getattr(core, name)


def finish_waiter(waiter):
    """Sets `waiter`'s result to None unless it was cancelled."""
    if not waiter.cancelled():
        waiter.set_result(None)


class CoreTransport:
    """repr, finalizer, closing and protocol access over `self._core`."""

    __slots__ = ()

    # The core attribute holding the object the transport owns (closed if abandoned).
    _owned = "sock"

    def __repr__(self):
        core = self._core
        detail = core._describe() if core is not None else "closed"
        return f"<{type(self).__name__} {detail}>"

    def __del__(self, _warn=warnings.warn):
        core = getattr(self, "_core", None)
        owned = getattr(core, self._owned) if core is not None else None
        if owned is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            owned.close()

    def is_closing(self):
        """True once closing has started."""
        return self._core.is_closing()

    def set_protocol(self, protocol):
        """Switches to another protocol."""
        self._core.set_protocol(protocol)

    def get_protocol(self):
        """The current protocol."""
        return self._core.get_protocol()


# Water marks at or above this many bytes are never reached (the core keeps them as i64).
_UNREACHABLE_BYTES = 2**62


def _byte_threshold(mark):
    """The whole number of bytes the Rust core compares queue sizes against: for a
    whole-number `size`, `size > mark` exactly when `size > floor(mark)`."""
    if mark >= _UNREACHABLE_BYTES:
        return _UNREACHABLE_BYTES
    return math.floor(mark)


class WriteFlowControl:
    """Water marks, the write queue's size and abort() over `self._core`."""

    __slots__ = ()

    @property
    def _protocol_paused(self):
        return self._core._protocol_paused

    def abort(self):
        """Closes at once, dropping queued data; connection_lost(None) follows."""
        self._core.abort()

    def set_write_buffer_limits(self, high=None, low=None):
        """Sets the water marks that drive pause_writing()/resume_writing().

        asyncio's defaults and checks, with Python's arithmetic and comparisons: any
        real numbers are accepted (floats, ints beyond 64 bits), NaN and negatives are
        refused with ValueError. `get_write_buffer_limits()` returns the values as given.
        """
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._core.set_write_buffer_limits(_byte_threshold(high), _byte_threshold(low))
        self.__dict__["_given_write_limits"] = (low, high)

    def get_write_buffer_limits(self):
        """`(low, high)`."""
        given = self.__dict__.get("_given_write_limits")
        return given if given is not None else self._core.get_write_buffer_limits()

    def get_write_buffer_size(self):
        """Bytes queued and not yet sent."""
        return self._core.get_write_buffer_size()


class SocketTransportBase(CoreTransport, WriteFlowControl):
    """What the socket transports (stream and datagram) share over `self._core`."""

    __slots__ = ()

    @property
    def _sock(self):
        return self._core.sock

    @property
    def _sock_fd(self):
        return self._core.fd

    @property
    def _paused(self):
        # asyncio's selector transports have this attribute (some libraries read it).
        return not self._core.is_reading() and not self._core.is_closing()

    def close(self):
        """Sends what is queued, then closes; connection_lost(None) follows."""
        self._core.close()

    def is_reading(self):
        """True while incoming data is delivered."""
        return self._core.is_reading()

    def pause_reading(self):
        """Stops delivering incoming data until resume_reading()."""
        self._core.pause_reading()

    def resume_reading(self):
        """Delivers incoming data again."""
        self._core.resume_reading()

    def _force_close(self, exc):
        self._core._force_close(exc)

    def _fatal_error(self, exc, message="Fatal error on transport"):
        self._core._fatal_error(exc, message)


class PipeTransportBase(CoreTransport):
    """What the pipe transports (read and write end) share over `self._core`."""

    __slots__ = ()

    _owned = "pipe"

    @property
    def _pipe(self):
        return self._core.pipe

    @_pipe.setter
    def _pipe(self, value):
        if value is not None:
            raise ValueError("_pipe can only be reset to None")
        self._core._forget_pipe()

    @property
    def _fileno(self):
        return self._core.fd

    @property
    def _protocol(self):
        return self._core.get_protocol()

    @property
    def _closing(self):
        return self._core.is_closing()

    def _fatal_error(self, exc, message="Fatal error on pipe transport"):
        self._core._fatal_error(exc, message)

    def _call_connection_lost(self, exc):
        self._core._call_connection_lost(exc)
