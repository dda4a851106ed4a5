"""Socket stream transports (TCP and Unix): an `asyncio.Transport` over the Rust core.

`SocketTransport` is what protocols and users see; every method delegates to
`_core.StreamCore`, which owns the state and the data path. The split exists because a
native class cannot derive from asyncio's `__slots__` classes, and libraries check
`isinstance(transport, asyncio.Transport)`.
"""

from __future__ import annotations

import asyncio
import socket
import warnings
from asyncio import constants, trsock

from ._core import StreamCore


def _set_nodelay(sock):
    """TCP_NODELAY on TCP sockets, as asyncio sets it."""
    if (
        sock.family in (socket.AF_INET, socket.AF_INET6)
        and sock.type == socket.SOCK_STREAM
        and sock.proto == socket.IPPROTO_TCP
    ):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _extra_for(sock, extra):
    extra = {} if extra is None else extra
    extra["socket"] = trsock.TransportSocket(sock)
    for key, getter in (("sockname", sock.getsockname), ("peername", sock.getpeername)):
        if key not in extra:
            try:
                extra[key] = getter()
            except OSError:
                extra[key] = None
    return extra


class SocketTransport(asyncio.Transport):
    """A byte-stream transport over a connected socket."""

    __slots__ = ("_core", "_loop", "__weakref__")

    # loop.sendfile may hand the socket to os.sendfile (asyncio's marker for that).
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE
    # loop.start_tls may wrap this transport.
    _start_tls_compatible = True

    def __init__(self, loop, sock, protocol, extra=None, server=None):
        super().__init__(_extra_for(sock, extra))
        self._loop = loop
        self._core = StreamCore(loop, sock, protocol, self, server)
        _set_nodelay(sock)
        if server is not None:
            server._attach(self)
        loop._transports[sock.fileno()] = self

    def __repr__(self):
        return f"<{type(self).__name__} {self._core._describe()}>"

    def __del__(self, _warn=warnings.warn):
        core = getattr(self, "_core", None)
        sock = core.sock if core is not None else None
        if sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            sock.close()

    @property
    def _sock(self):
        return self._core.sock

    @property
    def _sock_fd(self):
        return self._core.fd

    @property
    def _protocol_paused(self):
        return self._core._protocol_paused

    def _make_empty_waiter(self):
        return self._core._make_empty_waiter()

    def _reset_empty_waiter(self):
        self._core._reset_empty_waiter()

    def write(self, data):
        """Sends `data` (bytes-like) as soon as the socket takes it."""
        self._core.write(data)

    def writelines(self, list_of_data):
        """Sends every buffer of `list_of_data` in order."""
        self._core.writelines(list_of_data)

    def write_eof(self):
        """Half-closes after the queued data is sent."""
        self._core.write_eof()

    def can_write_eof(self):
        """True: stream sockets can half-close."""
        return True

    def close(self):
        """Sends what is queued, then closes; connection_lost(None) follows."""
        self._core.close()

    def abort(self):
        """Closes at once, dropping queued data; connection_lost(None) follows."""
        self._core.abort()

    def is_closing(self):
        """True once closing has started."""
        return self._core.is_closing()

    def is_reading(self):
        """True while incoming data is delivered."""
        return self._core.is_reading()

    def pause_reading(self):
        """Stops delivering incoming data until resume_reading()."""
        self._core.pause_reading()

    def resume_reading(self):
        """Delivers incoming data again."""
        self._core.resume_reading()

    def set_write_buffer_limits(self, high=None, low=None):
        """Sets the water marks that drive pause_writing()/resume_writing()."""
        self._core.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self):
        """`(low, high)`."""
        return self._core.get_write_buffer_limits()

    def get_write_buffer_size(self):
        """Bytes queued and not yet sent."""
        return self._core.get_write_buffer_size()

    def set_protocol(self, protocol):
        """Switches to another protocol."""
        self._core.set_protocol(protocol)

    def get_protocol(self):
        """The current protocol."""
        return self._core.get_protocol()

    def _force_close(self, exc):
        self._core._force_close(exc)

    def _fatal_error(self, exc, message="Fatal error on transport"):
        self._core._fatal_error(exc, message)


def _finish_waiter(waiter):
    if not waiter.cancelled():
        waiter.set_result(None)


def make_socket_transport(loop, sock, protocol, waiter=None, extra=None, server=None):
    """A transport over connected non-blocking `sock` (TCP or Unix stream), owning it.

    Schedules protocol.connection_made(transport), starts reading, then sets `waiter`'s
    result (if given). Calls server._attach(transport) now and server._detach(transport)
    after connection_lost.
    """
    transport = SocketTransport(loop, sock, protocol, extra, server)
    loop.call_soon(protocol.connection_made, transport)
    loop.call_soon(transport._core._start_reading)
    if waiter is not None:
        loop.call_soon(_finish_waiter, waiter)
    return transport
