"""A memcached text-protocol server and client on ferroloop.framing.ChunkProtocol.

    python examples/memcached.py            # serve, run a few commands as a client, exit
    python examples/memcached.py serve 11211

memcached's text protocol is CRLF-delimited lines, except that a value is raw bytes of a
length the line before it announced (it may contain CRLF): the protocol switches to raw
mode for it and back to lines after it. Commands: `get KEY...`, `set KEY FLAGS EXPTIME
BYTES` followed by the value line, `delete KEY`; `noreply` is not supported and expiry
times are ignored (a toy, not a cache).

Runs on ferroloop (the lines are cut in Rust, one call per line) and, unchanged, on any
asyncio loop.
"""

from __future__ import annotations

import asyncio
import sys

import ferroloop
from ferroloop.framing import ChunkProtocol, Delimiter

LINES = Delimiter(b"\r\n", max_frame_size=2048)
MAX_VALUE = 1024 * 1024


class RawBlock:
    """Collects `size` raw bytes plus the CRLF after them, then hands back the rest."""

    def __init__(self, protocol, size, done):
        self.protocol = protocol
        self.size = size
        self.done = done
        self.data = bytearray()

    def __call__(self, data):
        self.data += data
        if len(self.data) < self.size + 2:
            return
        block, rest = bytes(self.data[: self.size + 2]), bytes(self.data[self.size + 2 :])
        self.protocol.set_frame_mode(rest)
        self.done(block[:-2] if block.endswith(b"\r\n") else None)


class MemcachedServer:
    """One connection's protocol handler; `store` is shared by all connections."""

    def __init__(self, store):
        self.store = store
        self.protocol = ChunkProtocol(LINES, self.on_line)

    def reply(self, *lines):
        self.protocol.write_chunks(lines)

    def on_line(self, line):
        words = line.split()
        if not words:
            return self.reply(b"ERROR")
        command, args = words[0], words[1:]
        if command == b"get" and args:
            # A value is a raw block (it may exceed a line's maximum and hold CRLF): the
            # answer is written as bytes, not as frames.
            out = []
            for key in args:
                if key in self.store:
                    flags, value = self.store[key]
                    out += [b"VALUE %s %d %d\r\n" % (key, flags, len(value)), value, b"\r\n"]
            return self.protocol.transport.write(b"".join([*out, b"END\r\n"]))
        if command == b"set" and len(args) == 4:
            key, flags, _, size = args
            if not (size.isdigit() and flags.isdigit()) or int(size) > MAX_VALUE:
                return self.reply(b"CLIENT_ERROR bad command line format")
            return self.protocol.set_raw_mode(
                RawBlock(self.protocol, int(size), lambda v: self.stored(key, int(flags), v))
            )
        if command == b"delete" and len(args) == 1:
            return self.reply(b"DELETED" if self.store.pop(args[0], None) else b"NOT_FOUND")
        return self.reply(b"ERROR")

    def stored(self, key, flags, value):
        if value is None:
            return self.reply(b"CLIENT_ERROR bad data chunk")
        self.store[key] = (flags, value)
        self.reply(b"STORED")


class MemcachedClient:
    """A pipelining client: each request waits on a future resolved in reply order."""

    def __init__(self):
        self.protocol = ChunkProtocol(LINES, self.on_line, on_connection_lost=self.on_lost)
        self.pending = []  # (future, values found so far) per request, oldest first
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def connect(cls, host, port):
        client = cls()
        await client.loop.create_connection(lambda: client.protocol, host, port)
        return client

    def request(self, line, block=None):
        """Sends a command line (and a raw data block); resolves with the reply."""
        future = self.loop.create_future()
        self.pending.append((future, {}))
        if block is None:
            self.protocol.write_chunk(line)
        else:
            self.protocol.transport.write(b"".join([line, b"\r\n", block, b"\r\n"]))
        return future

    async def get(self, *keys):
        return await self.request(b"get " + b" ".join(keys))

    async def set(self, key, value, flags=0):
        return await self.request(b"set %s %d 0 %d" % (key, flags, len(value)), value)

    async def delete(self, key):
        return await self.request(b"delete " + key)

    def on_line(self, line):
        future, values = self.pending[0]
        if line.startswith(b"VALUE "):
            _, key, _, size = line.split()
            self.protocol.set_raw_mode(
                RawBlock(self.protocol, int(size), lambda v: values.__setitem__(key, v))
            )
            return
        self.pending.pop(0)
        future.set_result(values if line == b"END" else line)

    def on_lost(self, exc):
        for future, _ in self.pending:
            if not future.done():
                future.set_exception(exc or ConnectionError("connection lost"))

    def close(self):
        self.protocol.transport.close()


async def serve(port):
    store = {}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: MemcachedServer(store).protocol, "127.0.0.1", port)
    print(f"memcached (toy) on 127.0.0.1:{server.sockets[0].getsockname()[1]}")
    await server.serve_forever()


async def demo():
    store = {}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: MemcachedServer(store).protocol, "127.0.0.1", 0)
    client = await MemcachedClient.connect("127.0.0.1", server.sockets[0].getsockname()[1])
    print(await client.set(b"greeting", b"hello\r\nworld"))  # a value with CRLF in it
    print(await client.set(b"n", b"42", flags=7))
    # Pipelined: three requests in flight at once.
    print(
        await asyncio.gather(
            client.get(b"greeting", b"n", b"missing"), client.delete(b"n"), client.get(b"n")
        )
    )
    client.close()
    server.close()
    await server.wait_closed()


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        ferroloop.run(serve(int(sys.argv[2]) if len(sys.argv) > 2 else 11211))
    else:
        ferroloop.run(demo())
