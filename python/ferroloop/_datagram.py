"""Datagram endpoints (UDP, Unix datagram): `create_datagram_endpoint` and its transport.

`DatagramTransport` is what protocols and users see; every method delegates to
`_core.DatagramCore`, which owns the state and the data path (see `_stream.py` for why
the split exists). `DatagramMixin.create_datagram_endpoint` follows asyncio's checks,
messages and address handling for the running Python version.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import sys
from asyncio import trsock

from ._core import DatagramCore
from ._offload import run_off_loop
from ._transport_base import SocketTransportBase, bind_to_core, finish_waiter

logger = logging.getLogger("asyncio")

# Python 3.13 sends empty datagrams and counts 8 header bytes per queued datagram.
_SEND_EMPTY = sys.version_info >= (3, 13)
_HEADER_SIZE = 8 if sys.version_info >= (3, 13) else 0
_HAS_IPV6 = hasattr(socket, "AF_INET6")


class DatagramTransport(SocketTransportBase, asyncio.Transport, asyncio.DatagramTransport):
    """A datagram transport over a non-blocking socket.

    An `asyncio.Transport` as well as an `asyncio.DatagramTransport`, as asyncio's own
    datagram transport is (code checks either).
    """

    __slots__ = ("_core", "_loop", "__weakref__", "__dict__")

    max_size = 256 * 1024  # Bytes one recvfrom asks for (asyncio's value).

    def __init__(self, loop, sock, protocol, address=None, extra=None):
        extra = {} if extra is None else extra
        extra["socket"] = trsock.TransportSocket(sock)
        try:
            extra["sockname"] = sock.getsockname()
        except OSError:
            extra["sockname"] = None
        if "peername" not in extra:
            try:
                extra["peername"] = sock.getpeername()
            except OSError:
                extra["peername"] = None
        super().__init__(extra)
        self._loop = loop
        self._core = DatagramCore(
            loop,
            sock,
            protocol,
            self,
            address,
            bool(extra["peername"]),
            _HEADER_SIZE,
            _SEND_EMPTY,
        )
        bind_to_core(self, ("sendto",))
        loop._transports[sock.fileno()] = self

    @property
    def _address(self):
        return self._core.address

    def sendto(self, data, addr=None):
        """Sends `data` (bytes-like) to `addr`, or to the remote address if connected."""
        self._core.sendto(data, addr)


def make_datagram_transport(loop, sock, protocol, address=None, waiter=None, extra=None):
    """A datagram transport over non-blocking `sock`, owning it.

    Schedules protocol.connection_made(transport), starts reading, then sets `waiter`'s
    result (if given), as asyncio does.
    """
    transport = DatagramTransport(loop, sock, protocol, address, extra)
    loop.call_soon(protocol.connection_made, transport)
    loop.call_soon(transport._core._start_reading)
    if waiter is not None:
        loop.call_soon(finish_waiter, waiter)
    return transport


def _numeric_info(host, port, family, type_, proto, flowinfo=0, scopeid=0):
    """The getaddrinfo row for an already numeric `host`, or None (asyncio's shortcut,
    which also decides which values are accepted without a lookup)."""
    if proto not in {0, socket.IPPROTO_TCP, socket.IPPROTO_UDP} or host is None:
        return None
    if type_ == socket.SOCK_STREAM:
        proto = socket.IPPROTO_TCP
    elif type_ == socket.SOCK_DGRAM:
        proto = socket.IPPROTO_UDP
    else:
        return None
    if port is None or (isinstance(port, (bytes, str)) and not port):
        port = 0
    else:
        try:
            port = int(port)
        except (TypeError, ValueError):
            return None
    families = [family]
    if family == socket.AF_UNSPEC:
        families = [socket.AF_INET, socket.AF_INET6] if _HAS_IPV6 else [socket.AF_INET]
    if isinstance(host, bytes):
        host = host.decode("idna")
    if "%" in host:
        # inet_pton rejects a zone index such as '::1%lo0'; getaddrinfo handles it.
        return None
    for af in families:
        try:
            socket.inet_pton(af, host)
        except OSError:
            continue
        if _HAS_IPV6 and af == socket.AF_INET6:
            return af, type_, proto, "", (host, port, flowinfo, scopeid)
        return af, type_, proto, "", (host, port)
    return None


def _set_reuseport(sock):
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port not supported by socket module")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        raise ValueError(
            "reuse_port not supported by socket module, SO_REUSEPORT defined but not implemented."
        ) from None


def _check_sock_type(sock):
    if sys.version_info >= (3, 13):
        if sock.type == socket.SOCK_STREAM:
            raise ValueError(f"A datagram socket was expected, got {sock!r}")
    elif sock.type != socket.SOCK_DGRAM:
        raise ValueError(f"A UDP Socket was expected, got {sock!r}")


def _remove_stale_unix_socket(path):
    if path[0] in (0, "\x00"):
        return
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        # The directory may only allow creating the socket.
        logger.error("Unable to check or remove stale UNIX socket %r: %r", path, err)


class DatagramMixin:
    """`create_datagram_endpoint`."""

    async def create_datagram_endpoint(
        self,
        protocol_factory,
        local_addr=None,
        remote_addr=None,
        *,
        family=0,
        proto=0,
        flags=0,
        reuse_port=None,
        allow_broadcast=None,
        sock=None,
    ):
        """Creates a datagram endpoint; returns `(transport, protocol)`."""
        owned = sock is None
        if sock is not None:
            _check_sock_type(sock)
            if (
                local_addr
                or remote_addr
                or family
                or proto
                or flags
                or reuse_port
                or allow_broadcast
            ):
                opts = {
                    "local_addr": local_addr,
                    "remote_addr": remote_addr,
                    "family": family,
                    "proto": proto,
                    "flags": flags,
                }
                opts["reuse_port"] = reuse_port
                opts["allow_broadcast"] = allow_broadcast
                problems = ", ".join(f"{k}={v}" for k, v in opts.items() if v)
                raise ValueError(
                    "socket modifier keyword arguments can not be used "
                    f"when sock is specified. ({problems})"
                )
            sock.setblocking(False)
            r_addr = None
        else:
            sock, r_addr = await self._open_datagram_socket(
                local_addr,
                remote_addr,
                family,
                proto,
                flags,
                reuse_port,
                allow_broadcast,
            )

        try:
            protocol = protocol_factory()
        except BaseException:
            if owned:
                sock.close()
            raise
        waiter = self.create_future()
        transport = make_datagram_transport(self, sock, protocol, r_addr, waiter)
        if self.get_debug():
            if local_addr:
                logger.info(
                    "Datagram endpoint local_addr=%r remote_addr=%r created: (%r, %r)",
                    local_addr,
                    remote_addr,
                    transport,
                    protocol,
                )
            else:
                logger.debug(
                    "Datagram endpoint remote_addr=%r created: (%r, %r)",
                    remote_addr,
                    transport,
                    protocol,
                )
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return transport, protocol

    async def _datagram_address_pairs(self, local_addr, remote_addr, family, proto, flags):
        """`[((family, proto), (local_address, remote_address)), ...]` to try in order."""
        if not (local_addr or remote_addr):
            if family == 0:
                raise ValueError("unexpected address family")
            return [((family, proto), (None, None))]
        if hasattr(socket, "AF_UNIX") and family == socket.AF_UNIX:
            for addr in (local_addr, remote_addr):
                if addr is not None and not isinstance(addr, str):
                    raise TypeError("string is expected")
            if local_addr and local_addr[0] not in (0, "\x00"):
                # A filesystem check: not on the loop thread.
                await run_off_loop(self, _remove_stale_unix_socket, local_addr)
            return [((family, proto), (local_addr, remote_addr))]
        # Addresses grouped by (family, proto), in the order getaddrinfo gives them.
        by_key = {}
        for index, addr in ((0, local_addr), (1, remote_addr)):
            if addr is None:
                continue
            if not (isinstance(addr, tuple) and len(addr) == 2):
                raise TypeError("2-tuple is expected")
            host, port = addr[:2]
            info = _numeric_info(host, port, family, socket.SOCK_DGRAM, proto, *addr[2:])
            if info is not None:
                infos = [info]
            else:
                infos = await self.getaddrinfo(
                    host, port, family=family, type=socket.SOCK_DGRAM, proto=proto, flags=flags
                )
            if not infos:
                raise OSError("getaddrinfo() returned empty list")
            for fam, _, pro, _, address in infos:
                by_key.setdefault((fam, pro), [None, None])[index] = address
        pairs = [
            (key, pair)
            for key, pair in by_key.items()
            if not ((local_addr and pair[0] is None) or (remote_addr and pair[1] is None))
        ]
        if not pairs:
            raise ValueError("can not get address information")
        return pairs

    async def _open_datagram_socket(
        self,
        local_addr,
        remote_addr,
        family,
        proto,
        flags,
        reuse_port,
        allow_broadcast,
    ):
        """The first socket that binds and connects as asked, and its remote address."""
        pairs = await self._datagram_address_pairs(local_addr, remote_addr, family, proto, flags)
        exceptions = []
        for (fam, pro), (local_address, remote_address) in pairs:
            sock = None
            try:
                sock = socket.socket(family=fam, type=socket.SOCK_DGRAM, proto=pro)
                if reuse_port:
                    _set_reuseport(sock)
                if allow_broadcast:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                sock.setblocking(False)
                if local_addr:
                    sock.bind(local_address)
                r_addr = None
                if remote_addr:
                    if not allow_broadcast:
                        await self._connect_datagram_socket(sock, remote_address)
                    r_addr = remote_address
            except OSError as exc:
                if sock is not None:
                    sock.close()
                exceptions.append(exc)
            except BaseException:
                if sock is not None:
                    sock.close()
                raise
            else:
                return sock, r_addr
        raise exceptions[0]

    async def _connect_datagram_socket(self, sock, address):
        """`connect()` a non-blocking datagram socket; it completes at once on every
        family this runs on, but a would-block result is waited for all the same."""
        try:
            sock.connect(address)
            return
        except (BlockingIOError, InterruptedError):
            pass
        fd = sock.fileno()
        writable = self.create_future()
        self._add_writer(fd, finish_waiter, writable)
        try:
            await writable
        finally:
            self._remove_writer(fd)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err != 0:
            raise OSError(err, f"Connect call failed {address}")
