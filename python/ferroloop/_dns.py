"""getaddrinfo / getnameinfo: numeric fast path, else the Rust resolver pool.

A numeric host with a numeric port cannot block, so `socket.getaddrinfo` answers it at
once on the loop thread, with exactly the socket module's result. Anything else goes to
`ferroloop-core`'s worker pool, which calls the system resolver without the GIL; its rows
come back as plain ints and are turned into the socket module's enums here.
"""

from __future__ import annotations

import operator
import socket


def _encode_host(host):
    if host is None:
        return None
    if isinstance(host, str):
        return host.encode("idna")
    if isinstance(host, (bytes, bytearray)):
        return bytes(host)
    raise TypeError(f"getaddrinfo() argument 1 must be string or None, not {type(host).__name__}")


def _encode_port(port):
    if port is None:
        return None
    if isinstance(port, int):
        return str(port).encode()
    if isinstance(port, str):
        return port.encode()
    if isinstance(port, (bytes, bytearray)):
        return bytes(port)
    raise OSError("Int or String expected")


def _is_numeric_host(host: bytes) -> bool:
    text = host.split(b"%", 1)[0].decode("ascii", "replace")
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text)
        except OSError:
            continue
        return True
    return False


def _as_enum(enum_type, value):
    try:
        return enum_type(value)
    except ValueError:
        return value


class DnsMixin:
    """Name resolution that never blocks the loop."""

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        """`socket.getaddrinfo(host, port, family, type, proto, flags)` without blocking."""
        encoded_host = _encode_host(host)
        encoded_port = _encode_port(port)
        numeric_port = encoded_port is None or encoded_port.isdigit()
        if numeric_port and (encoded_host is None or _is_numeric_host(encoded_host)):
            return socket.getaddrinfo(host, port, family, type, proto, flags)
        answer = self.create_future()
        self._getaddrinfo_submit(
            answer, encoded_host, encoded_port, int(family), int(type), int(proto), int(flags)
        )
        rows = await answer
        return [
            (
                _as_enum(socket.AddressFamily, af),
                _as_enum(socket.SocketKind, kind),
                proto_,
                canonname,
                addr,
            )
            for af, kind, proto_, canonname, addr in rows
        ]

    async def getnameinfo(self, sockaddr, flags=0):
        """`socket.getnameinfo(sockaddr, flags)` without blocking."""
        # The checks below are socket.getnameinfo's own, in its order, so bad arguments
        # raise what asyncio (which calls it in the executor) raises.
        flags = operator.index(flags)
        if not -(2**31) <= flags < 2**31:
            side = "greater than maximum" if flags > 0 else "less than minimum"
            raise OverflowError(f"signed integer is {side}")
        if not isinstance(sockaddr, tuple):
            raise TypeError("getnameinfo() argument 1 must be a tuple")
        if not 2 <= len(sockaddr) <= 4:
            raise TypeError("getnameinfo(): illegal sockaddr argument")
        host, port, flowinfo, scope_id = (*sockaddr, 0, 0)[:4]
        if not isinstance(host, str) or not all(
            isinstance(v, int) for v in (port, flowinfo, scope_id)
        ):
            raise TypeError("getnameinfo(): illegal sockaddr argument")
        if not 0 <= port <= 0xFFFF:
            raise OverflowError("getnameinfo(): port must be 0-65535.")
        if not 0 <= flowinfo <= 0xFFFFF:
            raise OverflowError("getnameinfo(): flowinfo must be 0-1048575.")
        # socket.getnameinfo takes a numeric host only (AI_NUMERICHOST), so this cannot block.
        infos = socket.getaddrinfo(
            host, str(port), socket.AF_UNSPEC, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST
        )
        if len(infos) != 1:
            raise OSError("sockaddr resolved to multiple addresses")
        if infos[0][0] == socket.AF_INET and len(sockaddr) != 2:
            raise OSError("IPv4 sockaddr must be 2 tuple")
        numeric = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
        if flags & numeric == numeric:
            return socket.getnameinfo(sockaddr, flags)
        answer = self.create_future()
        self._getnameinfo_submit(answer, host, port, flowinfo, scope_id, int(flags))
        return await answer
