"""`Server`: the object create_server returns, and the accept loop of its listening sockets.

Semantics are asyncio 3.13's on every Python version: `close()` stops accepting and closes
the listening sockets; `wait_closed()` returns once the server is closed and every
connection it accepted is gone; `close_clients()`/`abort_clients()` end those connections.
Cancelling `serve_forever()` also closes the connections, as asyncio 3.14 does.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import logging
import os
import weakref
from asyncio import trsock

from ._stream import _ONE_CONTEXT, make_socket_transport
from ._tls import make_ssl_transport

logger = logging.getLogger("asyncio")

# accept() failures that mean "out of resources, try later" (asyncio's list). Linux keeps
# reporting the listening socket readable, so accepting pauses for a while.
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ACCEPT_RETRY_DELAY = 1.0


class Server(asyncio.AbstractServer):
    """Listening sockets serving connections with `protocol_factory`."""

    def __init__(
        self,
        loop,
        sockets,
        protocol_factory,
        backlog,
        unix_paths=None,
        ssl_context=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        self._loop = loop
        # TLS for accepted connections: the user's SSLContext and timeouts, or None.
        self._ssl_context = ssl_context
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        self._sockets = sockets  # None once closed
        self._protocol_factory = protocol_factory
        self._backlog = backlog
        # Live connections. Transports that pass themselves are held weakly (an abandoned
        # transport must stay collectable); those that do not are only counted.
        self._clients = weakref.WeakSet()
        self._anonymous_clients = 0
        self._waiters = []  # None once closed with no connection left
        self._serving = False
        self._serving_forever_fut = None
        self._accept_retries = {}  # listening socket -> TimerHandle of the paused accept
        # listening socket -> (path, inode) of the Unix socket file to remove on close
        self._unix_paths = dict(unix_paths or {})
        # Python 3.15+: each connection runs in its own copy of this context, the one
        # current when the server was created (as asyncio's); before, None.
        self._context = contextvars.copy_context() if _ONE_CONTEXT else None

    def __repr__(self):
        return f"<{type(self).__name__} sockets={self.sockets!r}>"

    # -- connection bookkeeping (called by transports) ------------------------------------

    def _attach(self, transport=None):
        if transport is None:
            self._anonymous_clients += 1
        else:
            self._clients.add(transport)

    def _detach(self, transport=None):
        if transport is None:
            self._anonymous_clients = max(self._anonymous_clients - 1, 0)
        else:
            self._clients.discard(transport)
        if self._sockets is None and not self._live_connections():
            self._wakeup()

    def _live_connections(self):
        return len(self._clients) + self._anonymous_clients

    def _wakeup(self):
        waiters = self._waiters
        self._waiters = None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    # -- accepting ------------------------------------------------------------------------

    def _start_serving(self):
        if self._serving:
            return
        self._serving = True
        for sock in self._sockets:
            sock.listen(self._backlog)
            self._loop._add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, sock):
        """Reader callback of a listening socket: accept what is queued, up to `backlog`."""
        loop = self._loop
        for _ in range(max(self._backlog, 1)):
            if self._sockets is None:
                return  # a protocol factory closed the server
            try:
                conn, address = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise  # reported by the loop's exception handler
                loop.call_exception_handler(
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": exc,
                        "socket": trsock.TransportSocket(sock),
                    }
                )
                loop._remove_reader(sock.fileno())
                self._accept_retries[sock] = loop.call_later(
                    _ACCEPT_RETRY_DELAY, self._resume_accepting, sock
                )
                return
            if loop.get_debug():
                logger.debug("%r got a new connection from %r: %r", self, address, conn)
            if self._context is None:
                self._serve_connection(conn, address)
            else:
                context = self._context.copy()
                context.run(self._serve_connection, conn, address, context)

    def _resume_accepting(self, sock):
        self._accept_retries.pop(sock, None)
        if self._serving and self._sockets is not None:
            self._loop._add_reader(sock.fileno(), self._accept, sock)

    def _serve_connection(self, conn, address, context=None):
        protocol = None
        try:
            conn.setblocking(False)
            protocol = self._protocol_factory()
            if self._ssl_context is None:
                make_socket_transport(
                    self._loop,
                    conn,
                    protocol,
                    extra={"peername": address},
                    server=self,
                    context=context,
                )
            else:
                handshake = self._loop.create_future()
                handshake.add_done_callback(_retrieve_handshake_error)
                make_ssl_transport(
                    self._loop,
                    conn,
                    protocol,
                    self._ssl_context,
                    handshake,
                    server_side=True,
                    extra={"peername": address},
                    server=self,
                    ssl_handshake_timeout=self._ssl_handshake_timeout,
                    ssl_shutdown_timeout=self._ssl_shutdown_timeout,
                    context=context,
                )
        except (SystemExit, KeyboardInterrupt):
            conn.close()
            raise
        except BaseException as exc:
            conn.close()
            context = {
                "message": "Error on transport creation for incoming connection",
                "exception": exc,
            }
            if protocol is not None:
                context["protocol"] = protocol
            # asyncio reports a failed protocol factory or transport only in debug mode.
            if self._loop.get_debug():
                self._loop.call_exception_handler(context)

    # -- the AbstractServer API -----------------------------------------------------------

    def get_loop(self):
        """The loop this server runs on."""
        return self._loop

    def is_serving(self):
        """True while the server accepts new connections."""
        return self._serving

    @property
    def sockets(self):
        """The listening sockets (wrapped, as asyncio does); empty once closed."""
        if self._sockets is None:
            return ()
        return tuple(trsock.TransportSocket(sock) for sock in self._sockets)

    def close(self):
        """Stops accepting and closes the listening sockets; connections stay open."""
        sockets = self._sockets
        if sockets is None:
            return
        self._sockets = None
        loop = self._loop
        for sock in sockets:
            retry = self._accept_retries.pop(sock, None)
            if retry is not None:
                retry.cancel()
            if self._serving and not loop.is_closed() and sock.fileno() >= 0:
                loop._remove_reader(sock.fileno())
            sock.close()
            unix_path = self._unix_paths.pop(sock, None)
            if unix_path is not None:
                _remove_if_ours(*unix_path)
        self._serving = False
        if self._serving_forever_fut is not None and not self._serving_forever_fut.done():
            self._serving_forever_fut.cancel()
            self._serving_forever_fut = None
        if not self._live_connections():
            self._wakeup()

    def close_clients(self):
        """Closes every connection this server accepted (after flushing their buffers)."""
        for transport in self._clients.copy():
            transport.close()

    def abort_clients(self):
        """Aborts every connection this server accepted, dropping unsent data."""
        for transport in self._clients.copy():
            transport.abort()

    async def start_serving(self):
        """Starts accepting connections (idempotent)."""
        if self._sockets is None:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        # One iteration, so the listening sockets are registered when this returns.
        await asyncio.sleep(0)

    async def serve_forever(self):
        """Accepts connections until cancelled; cancelling closes the server and its
        connections (as asyncio 3.14 does: before, a connection that never ended kept the
        cancellation waiting in wait_closed() forever)."""
        if self._serving_forever_fut is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._sockets is None:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except asyncio.CancelledError:
            try:
                self.close()
                self.close_clients()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    async def wait_closed(self):
        """Waits until the server is closed and all its connections are gone."""
        if self._waiters is None:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter


def _remove_if_ours(path, inode):
    """Unlinks the Unix socket file at `path` unless something else replaced it."""
    try:
        if os.stat(path).st_ino == inode:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        logger.error("Unable to clean up listening UNIX socket %r: %r", path, err)


def _retrieve_handshake_error(handshake):
    """A failed server-side handshake closes its connection (SSLProtocol does that and
    reports it); the waiter's exception is read so it is not logged as never retrieved."""
    if not handshake.cancelled():
        handshake.exception()
