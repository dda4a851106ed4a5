"""TLS with the user's own `ssl.SSLContext`: start_tls and the `ssl=` transport factory.

Version 1 (DESIGN.md §3): CPython's `asyncio.sslproto.SSLProtocol` — which drives the
user's `SSLObject` through `ssl.MemoryBIO`s — runs as the protocol of ferroloop's Rust
socket transport. Certificates, verification, ALPN and errors are therefore exactly those
of the `ssl` module, and passing `ssl=` can never end in plaintext: a handshake that does
not complete fails the waiter, and the raw transport is closed.
"""

from __future__ import annotations

import ssl as ssl_module
from asyncio import sslproto

from ._stream import make_socket_transport


def _timeouts(handshake, shutdown):
    """SSLProtocol's timeout keywords. Python 3.10's SSLProtocol has no shutdown timeout
    (asyncio 3.10 has no such argument either), so it is passed only when given."""
    timeouts = {"ssl_handshake_timeout": handshake}
    if shutdown is not None:
        timeouts["ssl_shutdown_timeout"] = shutdown
    return timeouts


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
):
    """A TLS transport over connected non-blocking `sock`; returns the application-side
    transport. `sslcontext=None` means a default client or server context (as `ssl=True`).
    `waiter` gets its result once the handshake completed, or the handshake's exception.
    """
    tls = sslproto.SSLProtocol(
        loop,
        protocol,
        sslcontext,
        waiter,
        server_side,
        server_hostname,
        **_timeouts(ssl_handshake_timeout, ssl_shutdown_timeout),
    )
    make_socket_transport(loop, sock, tls, extra=extra, server=server)
    return tls._app_transport


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
        tls = sslproto.SSLProtocol(
            self,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            call_connection_made=False,
            **_timeouts(ssl_handshake_timeout, ssl_shutdown_timeout),
        )
        # Paused first, so no byte reaches the TLS protocol before connection_made.
        transport.pause_reading()
        transport.set_protocol(tls)
        made = self.call_soon(tls.connection_made, transport)
        resumed = self.call_soon(transport.resume_reading)
        try:
            await waiter
        except BaseException:
            transport.close()
            made.cancel()
            resumed.cancel()
            raise
        return tls._app_transport
