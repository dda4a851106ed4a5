"""No data loss under load, through real servers and clients on both loops.

- 256 MiB of random bytes through a TCP echo server, with pause/resume flow control on
  both sides, compared by SHA-256;
- 1000 concurrent connections, each echoing its own payload;
- peers that reset the connection while the server is writing to them.

Open fds are counted by the `loop` fixture (see conftest.py) before and after each test.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct

TOTAL = 256 * 1024 * 1024
CHUNK = 256 * 1024


class FlowControlledEcho(asyncio.Protocol):
    """Echoes everything; stops reading while its own transport's buffer is full."""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()

    def eof_received(self):
        return None  # close once the echo of everything is flushed


class HashingSender(asyncio.Protocol):
    """Sends `total` pseudo-random bytes respecting pause_writing, hashing what it sent
    and what comes back; `done` resolves with both digests at connection_lost."""

    def __init__(self, loop, total):
        self.total = total
        self.sent_hash = hashlib.sha256()
        self.received_hash = hashlib.sha256()
        self.received = 0
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.done = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def pause_writing(self):
        self.can_write.clear()

    def resume_writing(self):
        self.can_write.set()

    def data_received(self, data):
        self.received_hash.update(data)
        self.received += len(data)
        # Reading pressure on our side too: pause briefly every few MiB.
        if self.received % (8 * 1024 * 1024) < len(data):
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(0.001, self.transport.resume_reading)

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result((self.sent_hash.digest(), self.received_hash.digest(), exc))

    async def send_all(self):
        seed = hashlib.sha256(b"ferroloop").digest()
        sent = 0
        counter = 0
        while sent < self.total:
            await self.can_write.wait()
            block = hashlib.sha256(seed + struct.pack("<Q", counter)).digest() * (CHUNK // 32)
            counter += 1
            self.sent_hash.update(block)
            self.transport.write(block)
            sent += len(block)
        self.transport.write_eof()


def test_256_mib_echo_with_flow_control_keeps_every_byte(loop):
    async def main():
        server = await loop.create_server(FlowControlledEcho, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, client = await loop.create_connection(
            lambda: HashingSender(loop, TOTAL), "127.0.0.1", port
        )
        await client.send_all()
        sent_digest, received_digest, exc = await asyncio.wait_for(client.done, 120)
        assert exc is None
        assert client.received == TOTAL
        assert received_digest == sent_digest
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_1000_concurrent_connections_each_get_their_own_bytes(loop):
    async def handle(reader, writer):
        data = await reader.read()
        writer.write(data)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def client(port, n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        payload = os.urandom(64) + n.to_bytes(4, "big")
        writer.write(payload)
        writer.write_eof()
        echoed = await reader.read()
        writer.close()
        await writer.wait_closed()
        return echoed == payload

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port = server.sockets[0].getsockname()[1]
        results = await asyncio.wait_for(
            asyncio.gather(*(client(port, n) for n in range(1000))), 60
        )
        assert all(results)
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_peers_resetting_mid_write_close_cleanly(loop):
    lost = []

    class Firehose(asyncio.Protocol):
        """Writes 8 MiB as soon as it is connected; the peer resets without reading."""

        def connection_made(self, transport):
            self.transport = transport
            transport.write(b"x" * (8 * 1024 * 1024))

        def connection_lost(self, exc):
            lost.append(exc)

    async def reset_peer(port):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_recv(sock, 1024)  # some data is on its way to us
        # SO_LINGER 0: close() sends RST instead of FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    async def main():
        server = await loop.create_server(Firehose, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        await asyncio.gather(*(reset_peer(port) for _ in range(20)))
        for _ in range(500):
            if len(lost) == 20:
                break
            await asyncio.sleep(0.01)
        assert len(lost) == 20
        assert all(isinstance(exc, (ConnectionResetError, BrokenPipeError)) for exc in lost)
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())
