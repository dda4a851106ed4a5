"""TLS failure modes on both loops: an expired certificate, a peer that never finishes the
handshake, a peer that never answers close_notify; and STARTTLS through asyncio streams.

Certificates are made in the test with trustme.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import socket
import ssl
import weakref

import pytest
from test_tls import connected_pair, handshake


def test_expired_certificate_fails_verification(loop, ca, client_context):
    expired = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(
        "ferroloop.test",
        not_before=datetime.datetime(2000, 1, 1),
        not_after=datetime.datetime(2001, 1, 1),
    ).configure_cert(expired)

    async def main():
        server_tls, client_tls, server_proto, _ = await handshake(loop, expired, client_context)
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"):
            await client_tls
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await server_tls
        assert not server_proto.data

    loop.run_until_complete(main())


def test_handshake_timeout_aborts_the_connection(loop, client_context):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    accepted = []

    async def main():
        async def accept_and_stay_silent():
            conn, _ = await loop.sock_accept(listener)
            accepted.append(conn)

        silent = loop.create_task(accept_and_stay_silent())
        started = loop.time()
        with pytest.raises(ConnectionAbortedError, match="SSL handshake is taking longer than"):
            await loop.create_connection(
                asyncio.Protocol,
                *listener.getsockname(),
                ssl=client_context,
                server_hostname="ferroloop.test",
                ssl_handshake_timeout=0.2,
            )
        assert 0.15 < loop.time() - started < 5
        await silent

    try:
        loop.run_until_complete(main())
    finally:
        for conn in accepted:
            conn.close()
        listener.close()


class LostRecorder(asyncio.Protocol):
    def __init__(self, loop):
        self.lost = loop.create_future()

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def test_shutdown_timeout_when_the_peer_never_answers_close_notify(
    loop, server_context, client_context
):
    async def main():
        (raw_server, server_proto), (raw_client, _) = await connected_pair(loop)
        watcher = LostRecorder(loop)
        server_tls = loop.create_task(
            loop.start_tls(raw_server, server_proto, server_context, server_side=True)
        )
        client = await loop.start_tls(
            raw_client,
            watcher,
            client_context,
            server_hostname="ferroloop.test",
            ssl_shutdown_timeout=0.2,
        )
        server = await server_tls
        # The server stops reading its socket, so close_notify is never answered.
        raw_server.pause_reading()
        started = loop.time()
        client.close()
        exc = await asyncio.wait_for(watcher.lost, 5)
        assert isinstance(exc, TimeoutError), exc
        assert "SSL shutdown timed out" in str(exc)
        assert 0.15 < loop.time() - started < 5
        server.close()
        raw_server.close()
        await asyncio.wait_for(server_proto.lost, 5)

    loop.run_until_complete(main())


def test_streams_starttls_on_both_sides(loop, server_context, client_context):
    async def main():
        upgraded = loop.create_future()

        async def serve(reader, writer):
            assert await reader.readline() == b"STARTTLS\r\n"
            writer.write(b"OK\r\n")
            await writer.drain()
            await writer.start_tls(server_context)
            upgraded.set_result(writer.get_extra_info("ssl_object") is not None)
            line = await reader.readline()
            writer.write(b"echo: " + line)
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        writer.write(b"STARTTLS\r\n")
        assert await reader.readline() == b"OK\r\n"
        await writer.start_tls(client_context, server_hostname="ferroloop.test")
        assert isinstance(writer.get_extra_info("ssl_object"), ssl.SSLObject)
        assert writer.get_extra_info("peercert")["subjectAltName"] == (("DNS", "ferroloop.test"),)
        writer.write(b"hello over tls\r\n")
        assert await reader.readline() == b"echo: hello over tls\r\n"
        assert await upgraded
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


@pytest.mark.asyncio_since((3, 14))  # before, a reference cycle kept the transport alive
def test_failed_start_tls_leaves_no_reference_cycle(loop, client_context):
    """The exception of a failed start_tls() holds the frames it passed; none of them may
    hold it back in a cycle, or the transport lives until the garbage collector runs."""

    class HangUpOnHello(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):  # the ClientHello
            self.transport.close()

    async def client(address, transports):
        transport, protocol = await loop.create_connection(asyncio.Protocol, *address)
        transports.append(weakref.ref(transport))
        try:
            await loop.start_tls(
                transport, protocol, client_context, server_hostname="ferroloop.test"
            )
        except ConnectionError:
            pass
        else:
            raise AssertionError("the handshake succeeded")

    async def main():
        server = await loop.create_server(HangUpOnHello, "127.0.0.1", 0)
        transports = []
        gc.collect()
        gc.disable()
        try:
            await client(server.sockets[0].getsockname()[:2], transports)
            for _ in range(3):  # the transport's connection_lost runs
                await asyncio.sleep(0)
            alive = transports[0]()
        finally:
            gc.enable()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)
        assert alive is None

    loop.run_until_complete(main())


@pytest.mark.asyncio_since((3, 14))  # before, asyncio left them in the reader: a hang
def test_streams_server_start_tls_uses_the_bytes_already_read(loop, server_context, client_context):
    """The client starts its handshake right after STARTTLS, without waiting for an
    answer, so its ClientHello sits in the server's StreamReader buffer when the server
    upgrades: start_tls() must hand those bytes to TLS."""

    async def serve(reader, writer):
        assert await reader.readline() == b"STARTTLS\r\n"
        while not reader._buffer:  # until the ClientHello was read too
            await asyncio.sleep(0.001)
        await writer.start_tls(server_context)
        line = await reader.readline()
        writer.write(b"echo: " + line)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        writer.write(b"STARTTLS\r\n")
        await writer.start_tls(client_context, server_hostname="ferroloop.test")
        writer.write(b"hello\r\n")
        assert await reader.readline() == b"echo: hello\r\n"
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    loop.run_until_complete(asyncio.wait_for(main(), 5))
