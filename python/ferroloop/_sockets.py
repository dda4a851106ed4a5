"""asyncio's low-level `sock_*` API: argument checks here, the data path in Rust.

Each method checks its arguments as asyncio's selector loop does, then calls a `_sock_*`
method of the Rust core. That call performs the operation on the fd at once: when it
completes, the value comes straight back; when it would block, the core registers a
reader or writer and returns a pending future, resolved from Rust once the fd is ready.
Cancelling that future unregisters the reader/writer without touching the socket.
"""

from __future__ import annotations

import io
import os
import socket
from asyncio import exceptions, futures

try:
    import ssl
except ImportError:  # pragma: no cover - Python built without ssl
    ssl = None

# Families whose addresses the Rust core builds itself for recvfrom/recvfrom_into;
# other families go through the socket module's own method.
_NATIVE_ADDRESS_FAMILIES = frozenset(
    family
    for family in (
        getattr(socket, "AF_INET", None),
        getattr(socket, "AF_INET6", None),
        getattr(socket, "AF_UNIX", None),
    )
    if family is not None
)
_IP_FAMILIES = frozenset(
    family for family in (socket.AF_INET, getattr(socket, "AF_INET6", None)) if family is not None
)
# What one read of the fallback sendfile path asks of the file.
_SENDFILE_CHUNK = 256 * 1024

_isfuture = futures.isfuture


def _reject_ssl_socket(sock):
    if ssl is not None and isinstance(sock, ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")


def _numeric_address(address, sock):
    """`address` with a numeric host as connect() takes it, or None when the host (or the
    port, a service name) needs the resolver."""
    host, port = address[:2]
    if host is None or sock.proto not in (0, socket.IPPROTO_TCP, socket.IPPROTO_UDP):
        return None
    if sock.type not in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        return None
    if port is None or port == b"" or port == "":
        port = 0
    else:
        try:
            port = int(port)
        except (TypeError, ValueError):
            return None
    if isinstance(host, bytes):
        host = host.decode("idna")
    if not isinstance(host, str) or "%" in host:
        return None
    try:
        socket.inet_pton(sock.family, host)
    except (OSError, ValueError):
        return None
    if sock.family == socket.AF_INET:
        return (host, port)
    flowinfo, scope_id = (*address[2:4], 0, 0)[:2]
    return (host, port, flowinfo, scope_id)


class SocketsMixin:
    """sock_recv, sock_sendall, sock_connect, sock_accept, sock_sendfile and friends."""

    def _check_nonblocking(self, sock):
        if self.get_debug() and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")

    async def sock_recv(self, sock, n):
        """Receive up to `n` bytes from `sock`; b"" at end of stream."""
        _reject_ssl_socket(sock)
        self._check_nonblocking(sock)
        result = self._sock_recv(sock, n)
        if result.__class__ is bytes:
            return result
        return await result

    async def sock_recv_into(self, sock, buf):
        """Receive into the writable buffer `buf`; returns the number of bytes written."""
        _reject_ssl_socket(sock)
        self._check_nonblocking(sock)
        result = self._sock_recv_into(sock, buf)
        if result.__class__ is int:
            return result
        return await result

    async def sock_recvfrom(self, sock, bufsize):
        """Receive a datagram of up to `bufsize` bytes; returns (data, address)."""
        _reject_ssl_socket(sock)
        self._check_nonblocking(sock)
        if sock.family in _NATIVE_ADDRESS_FAMILIES:
            result = self._sock_recvfrom(sock, bufsize)
            if result.__class__ is tuple:
                return result
            return await result
        result = self._sock_call(sock, "recvfrom", (bufsize,), True)
        if _isfuture(result):
            return await result
        return result

    async def sock_recvfrom_into(self, sock, buf, nbytes=0):
        """Receive a datagram into `buf` (at most `nbytes`, or its size when 0); returns
        (number of bytes, address)."""
        _reject_ssl_socket(sock)
        self._check_nonblocking(sock)
        if not nbytes:
            nbytes = len(buf)
        if sock.family in _NATIVE_ADDRESS_FAMILIES:
            result = self._sock_recvfrom_into(sock, buf, nbytes)
            if result.__class__ is tuple:
                return result
            return await result
        result = self._sock_call(sock, "recvfrom_into", (buf, nbytes), True)
        if _isfuture(result):
            return await result
        return result

    async def sock_sendall(self, sock, data):
        """Send all of `data` to the connected `sock`. Cancelling keeps what was sent."""
        _reject_ssl_socket(sock)
        self._check_nonblocking(sock)
        result = self._sock_sendall(sock, data)
        if result is None:
            return None
        return await result

    async def sock_sendto(self, sock, data, address):
        """Send the datagram `data` to `address`; returns the number of bytes sent."""
        _reject_ssl_socket(sock)
        self._check_nonblocking(sock)
        if sock.family in _IP_FAMILIES:
            result = self._sock_sendto(sock, data, address, sock.family)
        else:
            result = self._sock_call(sock, "sendto", (data, address), False)
        if _isfuture(result):
            return await result
        return result

    async def sock_connect(self, sock, address):
        """Connect `sock` to `address`, resolving a host name first (AF_INET/AF_INET6)."""
        _reject_ssl_socket(sock)
        self._check_nonblocking(sock)
        if sock.family in _IP_FAMILIES:
            resolved = _numeric_address(address, sock)
            if resolved is None:
                host, port = address[:2]
                infos = await self.getaddrinfo(
                    host, port, family=sock.family, type=sock.type, proto=sock.proto
                )
                resolved = infos[0][4]
            address = resolved
        result = self._sock_connect(sock, address)
        if result is None:
            return None
        try:
            return await result
        finally:
            # The error's traceback keeps this frame: the future holding the same error
            # may not stay in it (a reference cycle, as CPython's gh-124859).
            result = None

    async def sock_accept(self, sock):
        """Accept a connection on the listening `sock`; returns (conn, address) with
        `conn` a non-blocking socket."""
        _reject_ssl_socket(sock)
        self._check_nonblocking(sock)
        result = self._sock_call(sock, "accept", (), True)
        if _isfuture(result):
            return await result
        return result

    async def sock_sendfile(self, sock, file, offset=0, count=None, *, fallback=True):
        """Send `file` (from `offset`, `count` bytes or to its end) over the stream
        `sock` with os.sendfile; with `fallback`, read and send it when that cannot be
        used. Returns the number of bytes sent; the file position ends after them."""
        self._check_nonblocking(sock)
        _reject_ssl_socket(sock)
        self._check_sendfile_args(sock, file, offset, count)
        try:
            return await self._sock_sendfile_zero_copy(sock, file, offset, count)
        except exceptions.SendfileNotAvailableError:
            if not fallback:
                raise
        return await self._sock_sendfile_copying(sock, file, offset, count)

    def _check_sendfile_args(self, sock, file, offset, count):
        if "b" not in getattr(file, "mode", "b"):
            raise ValueError("file should be opened in binary mode")
        if sock.type != socket.SOCK_STREAM:
            raise ValueError("only SOCK_STREAM type sockets are supported")
        if count is not None:
            if not isinstance(count, int):
                raise TypeError(f"count must be a positive integer (got {count!r})")
            if count <= 0:
                raise ValueError(f"count must be a positive integer (got {count!r})")
        if not isinstance(offset, int):
            raise TypeError(f"offset must be a non-negative integer (got {offset!r})")
        if offset < 0:
            raise ValueError(f"offset must be a non-negative integer (got {offset!r})")

    async def _sock_sendfile_zero_copy(self, sock, file, offset, count):
        if not hasattr(os, "sendfile"):
            raise exceptions.SendfileNotAvailableError("os.sendfile() is not available")
        try:
            fileno = file.fileno()
        except (AttributeError, io.UnsupportedOperation):
            raise exceptions.SendfileNotAvailableError("not a regular file") from None
        try:
            size = os.fstat(fileno).st_size
        except OSError:
            raise exceptions.SendfileNotAvailableError("not a regular file") from None
        blocksize = count if count else size
        if not blocksize:
            return 0  # an empty file
        result = self._sock_sendfile(sock, fileno, offset, count or 0, blocksize)
        if result.__class__ is int:
            return result
        return await result

    async def _sock_sendfile_copying(self, sock, file, offset, count):
        # From `offset` even when it is 0 (see SendfileMixin._sendfile_fallback).
        if hasattr(file, "seek"):
            file.seek(offset)
        chunk = min(count, _SENDFILE_CHUNK) if count else _SENDFILE_CHUNK
        buffer = bytearray(chunk)
        sent = 0
        try:
            while True:
                if count:
                    chunk = min(count - sent, chunk)
                    if chunk <= 0:
                        break
                view = memoryview(buffer)[:chunk]
                got = await self.run_in_executor(None, file.readinto, view)
                if not got:
                    break  # end of file
                await self.sock_sendall(sock, view[:got])
                sent += got
            return sent
        finally:
            if sent > 0 and hasattr(file, "seek"):
                file.seek(offset + sent)
