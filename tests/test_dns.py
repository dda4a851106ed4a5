"""getaddrinfo / getnameinfo give what the blocking socket functions give."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

ADDRINFO_CASES = [
    pytest.param(("127.0.0.1", 80), {}, id="ipv4-literal"),
    pytest.param(("localhost", "http"), {}, id="localhost-service-name"),
    pytest.param((None, 0), {"flags": socket.AI_PASSIVE}, id="passive-wildcard"),
    pytest.param(("::1", 443), {"family": socket.AF_INET6}, id="ipv6-literal"),
    pytest.param((b"127.0.0.1", 8080), {}, id="bytes-host"),
    pytest.param(("127.0.0.1", "80"), {"type": socket.SOCK_STREAM}, id="stream-only"),
    pytest.param(("127.0.0.1", 53), {"proto": socket.IPPROTO_UDP}, id="udp-proto"),
    pytest.param(
        ("localhost", None),
        {"family": socket.AF_INET, "type": socket.SOCK_DGRAM},
        id="no-port",
    ),
    pytest.param(
        ("127.0.0.1", 80),
        {"flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV},
        id="numeric-flags",
    ),
]


def _blocking(func, *args, **kwargs):
    """The blocking call's outcome: ("ok", result) or ("error", exception type)."""
    try:
        return "ok", func(*args, **kwargs)
    except OSError as exc:
        return "error", type(exc)


def _via_loop(loop, coro_func, *args, **kwargs):
    try:
        return "ok", loop.run_until_complete(coro_func(*args, **kwargs))
    except OSError as exc:
        return "error", type(exc)


@pytest.mark.parametrize(("args", "kwargs"), ADDRINFO_CASES)
def test_getaddrinfo_matches_socket_getaddrinfo(loop, args, kwargs):
    expected = _blocking(socket.getaddrinfo, *args, **kwargs)
    assert _via_loop(loop, loop.getaddrinfo, *args, **kwargs) == expected


def test_getaddrinfo_result_shape(loop):
    infos = loop.run_until_complete(
        loop.getaddrinfo("127.0.0.1", 80, family=socket.AF_INET, type=socket.SOCK_STREAM)
    )
    assert isinstance(infos, list)
    assert infos == [
        (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 80))
    ]
    family, kind, proto, canonname, sockaddr = infos[0]
    assert type(family) is socket.AddressFamily
    assert type(kind) is socket.SocketKind
    assert type(proto) is int
    assert type(canonname) is str
    assert type(sockaddr) is tuple


def test_getaddrinfo_unknown_host_raises_gaierror(loop):
    with pytest.raises(socket.gaierror) as info:
        loop.run_until_complete(loop.getaddrinfo("no-such-host.invalid", 80))
    with pytest.raises(socket.gaierror) as blocking:
        socket.getaddrinfo("no-such-host.invalid", 80)
    assert info.value.errno == blocking.value.errno


def test_getaddrinfo_bad_port_type_raises(loop):
    with pytest.raises(OSError) as info:
        loop.run_until_complete(loop.getaddrinfo("127.0.0.1", "not-a-service"))
    assert isinstance(info.value, socket.gaierror)


def test_concurrent_getaddrinfo_calls(loop):
    async def main():
        return await asyncio.gather(*(loop.getaddrinfo("127.0.0.1", p) for p in range(1, 21)))

    results = loop.run_until_complete(main())
    assert results == [socket.getaddrinfo("127.0.0.1", p) for p in range(1, 21)]


@pytest.mark.parametrize(
    ("sockaddr", "flags"),
    [
        pytest.param(("127.0.0.1", 80), 0, id="ipv4"),
        pytest.param(("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV, id="num"),
        pytest.param(("::1", 443, 0, 0), 0, id="ipv6"),
        pytest.param(("127.0.0.1", 53), socket.NI_DGRAM, id="dgram"),
    ],
)
def test_getnameinfo_matches_socket_getnameinfo(loop, sockaddr, flags):
    expected = _blocking(socket.getnameinfo, sockaddr, flags)
    assert _via_loop(loop, loop.getnameinfo, sockaddr, flags) == expected


def test_getnameinfo_default_flags(loop):
    expected = socket.getnameinfo(("127.0.0.1", 80), 0)
    assert loop.run_until_complete(loop.getnameinfo(("127.0.0.1", 80))) == expected


def test_getnameinfo_bad_sockaddr_raises_like_socket(loop):
    with pytest.raises(TypeError):
        socket.getnameinfo("127.0.0.1", 0)
    with pytest.raises(TypeError):
        loop.run_until_complete(loop.getnameinfo("127.0.0.1"))


def test_close_right_after_a_lookup_releases_every_fd(loop_factory):
    def open_fd_count():
        return len(os.listdir("/proc/self/fd"))

    for _ in range(20):
        before = open_fd_count()
        loop = loop_factory()
        try:
            loop.run_until_complete(loop.getaddrinfo("localhost", "http"))
        finally:
            loop.close()
        # No grace period: close() itself must release what the loop opened.
        assert open_fd_count() == before
