"""TLS with the user's own `ssl.SSLContext`: start_tls and the `ssl=` transport factory.

Version 1 (DESIGN.md §3): CPython's `asyncio.sslproto.SSLProtocol` — which drives the
user's `SSLObject` through `ssl.MemoryBIO`s — runs as the protocol of ferroloop's Rust
socket transport. Certificates, verification, ALPN and errors are therefore exactly those
of the `ssl` module, and passing `ssl=` can never end in plaintext: a handshake that does
not complete fails the waiter, and the raw transport is closed.
"""

from __future__ import annotations

import ssl as ssl_module
import threading
from asyncio import sslproto, streams

from ._core import TlsPump
from ._stream import make_socket_transport

_State = sslproto.SSLProtocolState

# Reads never nest on a thread, so the TLS connections of a thread share one buffer: the
# socket is read into it, then (its bytes copied into the incoming BIO) it takes the
# decrypted data. asyncio's SSLProtocol keeps 256 KiB per connection instead.
_BUFFER_SIZE = 256 * 1024
_per_thread = threading.local()


def _shared_buffer():
    """This thread's `(bytearray, memoryview)` for TLS reads."""
    shared = getattr(_per_thread, "buffer", None)
    if shared is None:
        buffer = bytearray(_BUFFER_SIZE)
        shared = _per_thread.buffer = (buffer, memoryview(buffer))
    return shared


class TlsProtocol(sslproto.SSLProtocol):
    """asyncio's `SSLProtocol` with its steady state in Rust (`_core.TlsPump`).

    Handshake, shutdown, timeouts, errors and flow control are the base class's. While the
    connection is WRAPPED, received records are decrypted and the application's writes
    encrypted by the pump, which falls back to the base class's methods whenever a side is
    paused or data is backlogged. The pump keeps a mirror of the flow-control attributes:
    every base method that assigns one is overridden below to push them (`_sync_pump`).
    """

    def __init__(self, *args, **kwargs):
        self._pump = None
        super().__init__(*args, **kwargs)
        # The base class's own 256 KiB read buffer is never used while the pump reads.
        self._ssl_buffer = bytearray()
        self._ssl_buffer_view = memoryview(self._ssl_buffer)
        pump = TlsPump(self, self._sslobj, self._incoming, self._outgoing, *_shared_buffer())
        self._pump = pump
        pump.sync()
        # Instance attributes, so the socket transport and the application call the pump
        # directly, without a Python frame in between.
        self.get_buffer = pump.get_buffer
        self.buffer_updated = pump.buffer_updated
        self._app_transport.write = pump.write
        self._app_transport.writelines = pump.writelines

    def connection_made(self, transport):
        self._pump.attach(transport)
        super().connection_made(transport)

    def connection_lost(self, exc):
        app_transport = self._app_transport
        try:
            super().connection_lost(exc)
        finally:
            self._unhook_pump(app_transport)

    def _unhook_pump(self, app_transport):
        """Detaches the pump so that, as with asyncio, a closed connection is freed by
        reference counting, SSLContext included: no protocol <-> pump cycle, and an
        application that keeps its transport keeps no pump (nor this protocol) alive."""
        pump, self._pump = self._pump, None
        if pump is None:
            return
        pump.detach()
        del self.get_buffer, self.buffer_updated
        if app_transport is not None:
            app_transport.__dict__.pop("write", None)
            app_transport.__dict__.pop("writelines", None)

    def _set_state(self, new_state):
        super()._set_state(new_state)
        if self._pump is not None:
            self._pump.set_wrapped(new_state is _State.WRAPPED)

    def _sync_pump(self):
        if self._pump is not None:
            self._pump.sync()

    def _set_app_protocol(self, app_protocol):
        super()._set_app_protocol(app_protocol)
        self._sync_pump()

    def _control_app_writing(self):
        try:
            super()._control_app_writing()
        finally:
            self._sync_pump()

    def _set_write_buffer_limits(self, high=None, low=None):
        super()._set_write_buffer_limits(high, low)
        self._sync_pump()

    def _pause_reading(self):
        super()._pause_reading()
        self._sync_pump()

    def _resume_reading(self):
        super()._resume_reading()
        self._sync_pump()

    def _control_ssl_reading(self):
        super()._control_ssl_reading()
        self._sync_pump()

    def _set_read_buffer_limits(self, high=None, low=None):
        super()._set_read_buffer_limits(high, low)
        self._sync_pump()

    def pause_writing(self):
        super().pause_writing()
        self._sync_pump()

    def resume_writing(self):
        # The base method's three lines, with the mirror updated before the flush.
        assert self._ssl_writing_paused
        self._ssl_writing_paused = False
        self._sync_pump()
        self._process_outgoing()

    def _do_read(self):
        pump = self._pump
        if pump is None or self._state != _State.WRAPPED or self._app_reading_paused:
            super()._do_read()
        else:
            pump.read_now()

    def _process_outgoing(self):
        if self._pump is None:
            super()._process_outgoing()
        else:
            self._pump.process_outgoing_now()

    def _dispatch_incoming(self):
        """The base `buffer_updated` after the bytes went into the incoming BIO: what the
        pump runs outside the WRAPPED state."""
        if self._state == _State.DO_HANDSHAKE:
            self._do_handshake()
        elif self._state == _State.WRAPPED:
            self._do_read()
        elif self._state == _State.FLUSHING:
            self._do_flush()
        elif self._state == _State.SHUTDOWN:
            self._do_shutdown()


def make_ssl_transport(
    loop,
    sock,
    protocol,
    sslcontext,
    waiter,
    *,
    server_side=False,
    server_hostname=None,
    extra=None,
    server=None,
    ssl_handshake_timeout=None,
    ssl_shutdown_timeout=None,
    context=None,
):
    """A TLS transport over connected non-blocking `sock`; returns the application-side
    transport. `sslcontext=None` means a default client or server context (as `ssl=True`).
    `waiter` gets its result once the handshake completed, or the handshake's exception.
    `context` is the socket transport's (see make_socket_transport).
    """
    tls = TlsProtocol(
        loop,
        protocol,
        sslcontext,
        waiter,
        server_side,
        server_hostname,
        ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout,
    )
    make_socket_transport(loop, sock, tls, extra=extra, server=server, context=context)
    return tls._app_transport


def _move_buffered_stream_data(protocol, tls):
    """Bytes a server's StreamReader read before start_tls() (the peer's ClientHello may
    arrive with, or right after, the last plaintext) are the start of the TLS stream: they
    go into the TLS protocol's incoming BIO instead of staying in the reader, where the
    handshake would never see them (asyncio 3.14, gh-142352)."""
    if not isinstance(protocol, streams.StreamReaderProtocol):
        return
    reader = getattr(protocol, "_stream_reader", None)
    buffer = getattr(reader, "_buffer", None)
    if buffer:
        tls._incoming.write(buffer)
        buffer.clear()


class TlsMixin:
    """`loop.start_tls`: upgrade an existing connection to TLS."""

    async def start_tls(
        self,
        transport,
        protocol,
        sslcontext,
        *,
        server_side=False,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        """Wraps `transport` in TLS; returns the new transport for `protocol` once the
        handshake completed. Bytes the peer already sent are not lost: reading is paused
        until the TLS protocol is in place."""
        if not isinstance(sslcontext, ssl_module.SSLContext):
            raise TypeError(
                f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}"
            )
        if not getattr(transport, "_start_tls_compatible", False):
            raise TypeError(f"transport {transport!r} is not supported by start_tls()")
        waiter = self.create_future()
        tls = TlsProtocol(
            self,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            call_connection_made=False,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        # Paused first, so no byte reaches the TLS protocol before connection_made.
        transport.pause_reading()
        if server_side:
            _move_buffered_stream_data(protocol, tls)
        transport.set_protocol(tls)
        made = self.call_soon(tls.connection_made, transport)
        resumed = self.call_soon(transport.resume_reading)
        try:
            await waiter
        except BaseException:
            transport.close()
            made.cancel()
            resumed.cancel()
            # The exception's traceback holds this frame: without this, waiter -> exception
            # -> traceback -> frame -> waiter is a cycle that keeps the transport alive
            # until the garbage collector runs (asyncio 3.14 breaks it the same way).
            waiter = None
            raise
        return tls._app_transport
