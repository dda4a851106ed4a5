"""Transports are ordinary Python objects: code (uvicorn's and aiohttp's tests, wrappers
that count or trace writes) replaces a transport's methods and sets attributes on the
instance, as asyncio's transports allow. A transport class without an instance
`__dict__` fails that with "attribute 'write' is read-only" (issue 11).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys


def _wrap_write(transport, method="write"):
    """Replaces `transport.<method>` on the instance with a recording wrapper."""
    calls = []
    original = getattr(transport, method)

    def wrapper(*args):
        calls.append(args)
        return original(*args)

    setattr(transport, method, wrapper)
    transport.note = "set by the application"
    return calls


def test_stream_transport_methods_can_be_replaced(loop):
    received = bytearray()
    accepted = []

    class Sink(asyncio.Protocol):
        def connection_made(self, transport):
            accepted.append(transport)

        def data_received(self, data):
            received.extend(data)

    async def main():
        server = await loop.create_server(Sink, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        calls = _wrap_write(transport)
        lines = _wrap_write(transport, "writelines")
        transport.write(b"one ")
        transport.writelines([b"two ", b"three"])
        # (asyncio 3.11's writelines calls write() once with the joined buffers.)
        assert calls[:1] == [(b"one ",)]
        assert lines == [([b"two ", b"three"],)]
        assert transport.note == "set by the application"
        await asyncio.wait_for(_until(lambda: received == b"one two three"), 5)
        transport.close()
        accepted[0].close()
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_stream_transport_method_replaced_then_restored(loop):
    # mock.patch.object and wrappers that undo themselves: after the instance attribute is
    # gone or put back, the transport's own write works again.
    from unittest import mock

    received = bytearray()
    accepted = []

    class Sink(asyncio.Protocol):
        def connection_made(self, transport):
            accepted.append(transport)

        def data_received(self, data):
            received.extend(data)

    async def main():
        server = await loop.create_server(Sink, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        with mock.patch.object(transport, "write") as patched:
            transport.write(b"lost")
            patched.assert_called_once_with(b"lost")
        assert not transport.is_closing()
        transport.write(b"one ")
        transport.write = lambda data: None
        del transport.write
        transport.write(b"two")
        await asyncio.wait_for(_until(lambda: received == b"one two"), 5)
        transport.close()
        accepted[0].close()
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_datagram_transport_methods_can_be_replaced(loop):
    async def main():
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=receiver.getsockname()
        )
        calls = _wrap_write(transport, "sendto")
        transport.sendto(b"datagram")
        assert calls == [(b"datagram",)]
        assert transport.note == "set by the application"
        data = await asyncio.wait_for(loop.sock_recv(receiver, 100), 5)
        assert data == b"datagram"
        transport.close()
        receiver.close()

    loop.run_until_complete(main())


def test_pipe_and_subprocess_transports_take_attributes(loop):
    async def main():
        read_fd, write_fd = os.pipe()
        pipe_transport, _ = await loop.connect_write_pipe(
            asyncio.BaseProtocol, os.fdopen(write_fd, "wb", 0)
        )
        calls = _wrap_write(pipe_transport)
        pipe_transport.write(b"piped")
        assert calls == [(b"piped",)]
        assert os.read(read_fd, 100) == b"piped"
        pipe_transport.close()
        os.close(read_fd)

        process, _ = await loop.subprocess_exec(
            asyncio.SubprocessProtocol, sys.executable, "-c", "pass"
        )
        process.note = "set by the application"
        assert process.note == "set by the application"
        assert await asyncio.wait_for(_until(lambda: process.get_returncode() == 0), 10)
        process.close()

    loop.run_until_complete(main())


async def _until(predicate):
    while not predicate():
        await asyncio.sleep(0.005)
    return True
