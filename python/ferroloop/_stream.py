"""Socket stream transports (TCP and Unix): an `asyncio.Transport` over the Rust core.

`SocketTransport` is what protocols and users see; every method delegates to
`_core.StreamCore`, which owns the state and the data path. The split exists because a
native class cannot derive from asyncio's `__slots__` classes, and libraries check
`isinstance(transport, asyncio.Transport)`.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
import sys
from asyncio import constants, trsock

from ._core import StreamCore
from ._transport_base import SocketTransportBase, bind_to_core, finish_waiter

# Python 3.15: a socket transport runs all its callbacks (connection_made, data_received,
# connection_lost, ...) in one context: the one current when it was made, or for a
# server's connection a copy of the server's. So what a task sets before it calls
# resume_reading() does not leak into them (gh-140947). Before 3.15 each callback runs in
# a copy of the context current when it was scheduled, as in asyncio.
_ONE_CONTEXT = sys.version_info >= (3, 15)

# Called per message by protocols and streams (StreamWriter.write/drain, StreamReader's
# flow control, websockets' send_data): bound straight to the core (see bind_to_core).
_BOUND_TO_CORE = ("write", "writelines", "is_closing", "pause_reading", "resume_reading")


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


class SocketTransport(SocketTransportBase, asyncio.Transport):
    """A byte-stream transport over a connected socket."""

    __slots__ = ("_core", "_loop", "__weakref__", "__dict__")

    # loop.sendfile may hand the socket to os.sendfile (asyncio's marker for that).
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE
    # loop.start_tls may wrap this transport.
    _start_tls_compatible = True

    def __init__(self, loop, sock, protocol, extra=None, server=None, context=None):
        super().__init__(_extra_for(sock, extra))
        self._loop = loop
        self._core = StreamCore(loop, sock, protocol, self, server, context)
        bind_to_core(self, _BOUND_TO_CORE)
        _set_nodelay(sock)
        if server is not None:
            server._attach(self)
        loop._transports[sock.fileno()] = self

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


def make_socket_transport(loop, sock, protocol, waiter=None, extra=None, server=None, context=None):
    """A transport over connected non-blocking `sock` (TCP or Unix stream), owning it.

    Schedules protocol.connection_made(transport), starts reading, then sets `waiter`'s
    result (if given). Calls server._attach(transport) now and server._detach(transport)
    after connection_lost. On Python 3.15+ its callbacks run in `context`, by default a
    copy of the current one.
    """
    if _ONE_CONTEXT and context is None:
        context = contextvars.copy_context()
    transport = SocketTransport(loop, sock, protocol, extra, server, context)
    loop.call_soon(protocol.connection_made, transport, context=context)
    loop.call_soon(transport._core._start_reading, context=context)
    if waiter is not None:
        loop.call_soon(finish_waiter, waiter, context=context)
    return transport
