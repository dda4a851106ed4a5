"""TLS on the user's own ssl.SSLContext: start_tls on both sides, verification failures.

Certificates are made in the test with trustme. Transports come from each loop's own
socket-transport factory over a socketpair, so these tests need no server code.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

import ferroloop
import pytest
from ferroloop._stream import make_socket_transport


class Recorder(asyncio.Protocol):
    """Collects received bytes; `lost` resolves at connection_lost."""

    def __init__(self, loop):
        self.data = bytearray()
        self.lost = loop.create_future()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


def plain_transport(loop, sock, protocol):
    sock.setblocking(False)
    if isinstance(loop, ferroloop.Loop):
        transport = make_socket_transport(loop, sock, protocol)
    else:
        transport = loop._make_socket_transport(sock, protocol)
    return transport


async def connected_pair(loop):
    left, right = socket.socketpair()
    server_proto, client_proto = Recorder(loop), Recorder(loop)
    server = plain_transport(loop, left, server_proto)
    client = plain_transport(loop, right, client_proto)
    await asyncio.sleep(0)
    return (server, server_proto), (client, client_proto)


async def handshake(loop, server_context, client_context, hostname="ferroloop.test"):
    (server, server_proto), (client, client_proto) = await connected_pair(loop)
    server_tls = loop.create_task(
        loop.start_tls(
            server, server_proto, server_context, server_side=True, ssl_handshake_timeout=5
        )
    )
    client_tls = loop.create_task(
        loop.start_tls(
            client, client_proto, client_context, server_hostname=hostname, ssl_handshake_timeout=5
        )
    )
    return server_tls, client_tls, server_proto, client_proto


def test_start_tls_on_both_sides_carries_data(loop, server_context, client_context):
    async def main():
        server_tls, client_tls, server_proto, client_proto = await handshake(
            loop, server_context, client_context
        )
        server, client = await server_tls, await client_tls
        assert isinstance(client.get_extra_info("ssl_object"), ssl.SSLObject)
        assert client.get_extra_info("peercert")["subjectAltName"] == (("DNS", "ferroloop.test"),)
        assert client.get_extra_info("cipher") is not None
        assert client.get_extra_info("sslcontext") is client_context
        payload = bytes(range(256)) * 4096  # 1 MiB under flow control
        client.write(payload)
        server.write(b"pong")
        while len(server_proto.data) < len(payload) or not client_proto.data:
            await asyncio.sleep(0.001)
        assert bytes(server_proto.data) == payload
        assert bytes(client_proto.data) == b"pong"
        client.close()
        server.close()
        await asyncio.wait_for(asyncio.gather(server_proto.lost, client_proto.lost), 5)

    loop.run_until_complete(main())


def test_start_tls_keeps_bytes_sent_before_the_upgrade(loop, server_context, client_context):
    async def main():
        (server, server_proto), (client, client_proto) = await connected_pair(loop)
        # The server has stopped reading (as after a STARTTLS command); the client starts
        # its handshake at once, so its ClientHello waits in the socket when the server
        # upgrades. Nothing may be lost.
        server.pause_reading()
        client_tls = loop.create_task(
            loop.start_tls(
                client,
                client_proto,
                client_context,
                server_hostname="ferroloop.test",
                ssl_handshake_timeout=5,
            )
        )
        await asyncio.sleep(0.05)
        server_tls = await loop.start_tls(
            server, server_proto, server_context, server_side=True, ssl_handshake_timeout=5
        )
        client_side = await client_tls
        client_side.write(b"after upgrade")
        while bytes(server_proto.data) != b"after upgrade":
            await asyncio.sleep(0.001)
        client_side.close()
        server_tls.close()
        await asyncio.wait_for(asyncio.gather(server_proto.lost, client_proto.lost), 5)

    loop.run_until_complete(main())


@pytest.mark.parametrize("problem", ["wrong hostname", "untrusted CA"])
def test_failed_verification_raises_and_sends_no_plaintext(loop, ca, server_context, problem):
    context = ssl.create_default_context()
    if problem == "wrong hostname":
        ca.configure_trust(context)
    hostname = "other.test" if problem == "wrong hostname" else "ferroloop.test"

    async def main():
        server_tls, client_tls, server_proto, client_proto = await handshake(
            loop, server_context, context, hostname=hostname
        )
        with pytest.raises(ssl.SSLCertVerificationError):
            await client_tls
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await server_tls
        assert not server_proto.data, "no application data may cross without TLS"

    loop.run_until_complete(main())


def test_plaintext_peer_fails_the_handshake(loop, server_context):
    async def main():
        (server, server_proto), (client, client_proto) = await connected_pair(loop)
        server_tls = loop.create_task(
            loop.start_tls(server, server_proto, server_context, server_side=True)
        )
        await asyncio.sleep(0)
        client.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(ssl.SSLError):
            await server_tls
        assert not server_proto.data
        client.close()
        await asyncio.wait_for(client_proto.lost, 5)

    loop.run_until_complete(main())


def test_start_tls_rejects_a_non_context(loop):
    async def main():
        (server, _), (client, client_proto) = await connected_pair(loop)
        with pytest.raises(TypeError, match="sslcontext is expected to be an instance"):
            await loop.start_tls(client, client_proto, object())
        server.close()
        client.close()
        await asyncio.wait_for(client_proto.lost, 5)

    loop.run_until_complete(main())


class EchoServer(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        # Python 3.10's sslproto warns about an app transport never closed, even after
        # the connection is gone; closing it then is a no-op on every version.
        self.transport.close()


def test_create_server_and_connection_with_ssl_echo(loop, server_context, client_context):
    async def main():
        server = await loop.create_server(EchoServer, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context, server_hostname="ferroloop.test"
        )
        assert writer.get_extra_info("peercert") is not None
        writer.write(b"hello over tls")
        assert await reader.readexactly(14) == b"hello over tls"
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_ssl_client_against_a_plaintext_server_never_sends_plaintext(loop, client_context):
    async def main():
        received = bytearray()
        got_bytes = loop.create_future()

        class Plain(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport = transport

            def data_received(self, data):
                received.extend(data)
                if not got_bytes.done():
                    got_bytes.set_result(None)
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                self.transport.close()

        server = await loop.create_server(Plain, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await loop.create_connection(
                asyncio.Protocol,
                "127.0.0.1",
                port,
                ssl=client_context,
                server_hostname="ferroloop.test",
                ssl_handshake_timeout=5,
            )
        await got_bytes
        # What crossed is a TLS record (handshake content type 22), never application data.
        assert received[0] == 0x16
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_server_side_connect_accepted_socket_with_ssl(loop, server_context, client_context):
    async def main():
        left, right = socket.socketpair()
        accepted = loop.create_task(
            loop.connect_accepted_socket(EchoServer, left, ssl=server_context)
        )
        reader, writer = await asyncio.open_connection(
            sock=right, ssl=client_context, server_hostname="ferroloop.test"
        )
        server_transport, _ = await accepted
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        writer.close()
        await writer.wait_closed()
        server_transport.close()
        await asyncio.sleep(0.01)

    loop.run_until_complete(main())


def _server_context_for(ca, **options):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("ferroloop.test").configure_cert(context)
    if options.get("alpn"):
        context.set_alpn_protocols(options["alpn"])
    if options.get("require_client_cert"):
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)
    return context


def test_alpn_is_negotiated(loop, ca, client_context):
    server_context = _server_context_for(ca, alpn=["h2", "http/1.1"])
    client = ssl.create_default_context()
    ca.configure_trust(client)
    client.set_alpn_protocols(["http/1.1"])

    async def main():
        server_tls, client_tls, server_proto, client_proto = await handshake(
            loop, server_context, client
        )
        server, client_side = await server_tls, await client_tls
        assert client_side.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        assert server.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        client_side.close()
        server.close()
        await asyncio.wait_for(asyncio.gather(server_proto.lost, client_proto.lost), 5)

    loop.run_until_complete(main())


@pytest.mark.parametrize("client_has_cert", [True, False])
def test_client_certificates_are_verified(loop, ca, client_has_cert):
    server_context = _server_context_for(ca, require_client_cert=True)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    if client_has_cert:
        ca.issue_cert("client.ferroloop.test").configure_cert(client)

    async def main():
        server_tls, client_tls, server_proto, client_proto = await handshake(
            loop, server_context, client
        )
        if client_has_cert:
            server, client_side = await server_tls, await client_tls
            peer = server.get_extra_info("peercert")
            assert ("DNS", "client.ferroloop.test") in peer["subjectAltName"]
            client_side.close()
            server.close()
            await asyncio.wait_for(asyncio.gather(server_proto.lost, client_proto.lost), 5)
        else:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await server_tls
            # TLS 1.3: the client learns of the rejection only when it reads.
            try:
                client_side = await client_tls
            except (ssl.SSLError, ConnectionError):
                pass
            else:
                await asyncio.wait_for(client_proto.lost, 5)
                client_side.close()
            assert not server_proto.data

    loop.run_until_complete(main())


def test_certificates_loaded_from_files(loop, ca, tmp_path):
    cert = ca.issue_cert("ferroloop.test")
    chain_path = tmp_path / "server.pem"
    ca_path = tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(chain_path))
    ca.cert_pem.write_to_path(str(ca_path))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(str(chain_path))
    client = ssl.create_default_context(cafile=str(ca_path))

    async def main():
        server = await loop.create_server(EchoServer, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname="ferroloop.test"
        )
        writer.write(b"from files")
        assert await reader.readexactly(10) == b"from files"
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_abrupt_close_mid_handshake_fails_the_handshake(loop, server_context):
    async def main():
        (server, server_proto), (client, client_proto) = await connected_pair(loop)
        server_tls = loop.create_task(
            loop.start_tls(
                server, server_proto, server_context, server_side=True, ssl_handshake_timeout=5
            )
        )
        await asyncio.sleep(0)
        client.write(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, then gone
        client.abort()
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await server_tls
        await asyncio.wait_for(client_proto.lost, 5)
        assert not server_proto.data

    loop.run_until_complete(main())
