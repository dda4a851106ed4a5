"""getaddrinfo / getnameinfo: numeric fast path, else the Rust resolver pool.

A numeric host with a numeric port cannot block, so `socket.getaddrinfo` answers it at
once on the loop thread, with exactly the socket module's result. Anything else goes to
`ferroloop-core`'s worker pool, which calls the system resolver without the GIL; its rows
come back as plain ints and are turned into the socket module's enums here.
"""

from __future__ import annotations

import operator
import socket
import sys


def _encode_host(host):
    if host is None:
        return None
    if isinstance(host, str):
        return host.encode("idna")
    if isinstance(host, bytes):
        return bytes(host)
    raise TypeError("getaddrinfo() argument 1 must be string or None")


_ANY_INT_PORT = sys.version_info >= (3, 14)


def _encode_port(port):
    if port is None:
        return None
    # As socket.getaddrinfo takes it: a str, bytes (not bytearray), or an int in decimal.
    # Before 3.14 the int must be exactly an int (not bool, not an IntEnum) and fit a C
    # long; 3.14+ takes any int, of any size.
    if _ANY_INT_PORT and isinstance(port, int):
        return str(int(port)).encode()
    if type(port) is int:
        if not -(2**63) <= port < 2**63:
            raise OverflowError("Python int too large to convert to C long")
        return str(port).encode()
    if isinstance(port, str):
        return port.encode()
    if isinstance(port, bytes):
        return bytes(port)
    raise OSError("Int or String expected")


def _c_int(value):
    """`value` as socket.getaddrinfo/getnameinfo take their int arguments (the C "i"
    format): an integer (`__index__`) that fits a C int, with the same errors."""
    value = operator.index(value)
    if value >= 2**31:
        raise OverflowError("signed integer is greater than maximum")
    if value < -(2**31):
        raise OverflowError("signed integer is less than minimum")
    return value


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
        # socket.getaddrinfo converts its int arguments first.
        for value in (family, type, proto, flags):
            _c_int(value)
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
        flags = _c_int(flags)
        if not isinstance(sockaddr, tuple):
            raise TypeError("getnameinfo() argument 1 must be a tuple")
        if not 2 <= len(sockaddr) <= 4:
            raise TypeError("getnameinfo(): illegal sockaddr argument")
        host, port, flowinfo, scope_id = (*sockaddr, 0, 0)[:4]
        if not isinstance(host, str):
            raise TypeError("getnameinfo(): illegal sockaddr argument")
        try:
            port = _c_int(port)
            # flowinfo and scope_id are C unsigned ints, taken modulo 2**32.
            flowinfo = operator.index(flowinfo) & 0xFFFFFFFF
            scope_id = operator.index(scope_id) & 0xFFFFFFFF
        except TypeError:
            raise TypeError("getnameinfo(): illegal sockaddr argument") from None
        if flowinfo > 0xFFFFF:
            raise OverflowError("getnameinfo(): flowinfo must be 0-1048575.")
        # socket.getnameinfo takes a numeric host only (AI_NUMERICHOST), so this cannot
        # block; the port goes through it as a string too (glibc keeps its low 16 bits).
        infos = socket.getaddrinfo(
            host, str(port), socket.AF_UNSPEC, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST
        )
        if len(infos) != 1:
            raise OSError("sockaddr resolved to multiple addresses")
        if infos[0][0] == socket.AF_INET and len(sockaddr) != 2:
            raise OSError("IPv4 sockaddr must be 2 tuple")
        port = infos[0][4][1]
        numeric = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
        if flags & numeric == numeric:
            return socket.getnameinfo(sockaddr, flags)
        answer = self.create_future()
        self._getnameinfo_submit(answer, host, port, flowinfo, scope_id, int(flags))
        return await answer
