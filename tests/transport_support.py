"""Helpers for the stream-transport behaviour tests (test_transport_*.py).

A transport is made directly over one end of a connected non-blocking socket pair,
without create_connection: on asyncio's loop with its selector-loop method
``loop._make_socket_transport``, on ferroloop with the factory
``ferroloop._stream.make_socket_transport``.  The other end is either a second
transport or a :class:`Peer`, a raw socket driven by the loop's public
add_reader/add_writer.

The ``stream_kit`` fixture (conftest.py) hands out a :class:`StreamKit` per loop and
per socket kind (``unix``: ``socket.socketpair()``; ``tcp``: a 127.0.0.1 listener)
and closes everything it handed out before the loop is closed.
"""

from __future__ import annotations

import asyncio
import select
import socket
import struct
import time

from support import PATIENCE, run_once, run_until

SOCKET_KINDS = ["unix", "tcp"]


def idle(loop, seconds: float = 0.01) -> None:
    """Let the loop run for a while, to show that something does NOT happen."""
    loop.run_until_complete(asyncio.sleep(seconds))


def make_transport(loop, sock, protocol, waiter=None, extra=None):
    """A stream transport owning connected non-blocking ``sock``, on either loop."""
    import ferroloop

    if isinstance(loop, ferroloop.Loop):
        from ferroloop import _stream

        return _stream.make_socket_transport(loop, sock, protocol, waiter, extra=extra)
    return loop._make_socket_transport(sock, protocol, waiter, extra=extra)


def _set_buffer_sizes(sock: socket.socket, size: int | None) -> None:
    if size is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def socket_pair(kind: str, bufsize: int | None = None) -> tuple[socket.socket, socket.socket]:
    """Two connected non-blocking stream sockets of ``kind`` ("unix" or "tcp").

    ``bufsize`` fixes the kernel send and receive buffer sizes (the kernel doubles
    it), so that a peer that stops reading pushes back quickly.
    """
    if kind == "unix":
        a, b = socket.socketpair()
        _set_buffer_sizes(a, bufsize)
        _set_buffer_sizes(b, bufsize)
    elif kind == "tcp":
        # proto=IPPROTO_TCP as getaddrinfo() gives it to create_connection/create_server
        # (asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP).
        tcp = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        with socket.socket(*tcp) as listener:
            _set_buffer_sizes(listener, bufsize)  # inherited by the accepted socket
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            a = socket.socket(*tcp)
            _set_buffer_sizes(a, bufsize)
            a.connect(listener.getsockname())
            b, _ = listener.accept()
    else:
        raise ValueError(kind)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


class RecordingProtocol(asyncio.Protocol):
    """Records every protocol call, in order, in ``events``.

    ``eof_result`` is what eof_received() returns.  ``pause_sizes``/``resume_sizes``
    hold the transport's write-buffer size at each pause_writing()/resume_writing().
    """

    def __init__(self, *, eof_result=None) -> None:
        self.events: list[str] = []
        self.transport = None
        self.chunks: list = []
        self.lost: list = []  # the argument of each connection_lost() call
        self.eof_result = eof_result
        self.pause_sizes: list[int] = []
        self.resume_sizes: list[int] = []

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def received(self) -> int:
        return sum(map(len, self.chunks))

    def count(self, event: str) -> int:
        return self.events.count(event)

    def connection_made(self, transport) -> None:
        self.events.append("connection_made")
        self.transport = transport

    def data_received(self, data) -> None:
        self.events.append("data_received")
        self.chunks.append(data)

    def eof_received(self):
        self.events.append("eof_received")
        return self.eof_result

    def pause_writing(self) -> None:
        self.events.append("pause_writing")
        self.pause_sizes.append(self.transport.get_write_buffer_size())

    def resume_writing(self) -> None:
        self.events.append("resume_writing")
        self.resume_sizes.append(self.transport.get_write_buffer_size())

    def connection_lost(self, exc) -> None:
        self.events.append("connection_lost")
        self.lost.append(exc)


class RecordingBufferedProtocol(asyncio.BufferedProtocol):
    """A BufferedProtocol handing out a ``size``-byte buffer; records calls in ``events``."""

    def __init__(self, size: int = 64 * 1024, *, eof_result=None) -> None:
        self.events: list[str] = []
        self.transport = None
        self.buffer = bytearray(size)
        self.sizehints: list[int] = []
        self.nbytes: list[int] = []
        self.received_data = bytearray()
        self.lost: list = []
        self.eof_result = eof_result

    @property
    def data(self) -> bytes:
        return bytes(self.received_data)

    def count(self, event: str) -> int:
        return self.events.count(event)

    def connection_made(self, transport) -> None:
        self.events.append("connection_made")
        self.transport = transport

    def get_buffer(self, sizehint):
        self.events.append("get_buffer")
        self.sizehints.append(sizehint)
        return self.buffer

    def buffer_updated(self, nbytes) -> None:
        self.events.append("buffer_updated")
        self.nbytes.append(nbytes)
        self.received_data += self.buffer[:nbytes]

    def eof_received(self):
        self.events.append("eof_received")
        return self.eof_result

    def connection_lost(self, exc) -> None:
        self.events.append("connection_lost")
        self.lost.append(exc)


class Peer:
    """The raw-socket end of a connection, read and written through add_reader/add_writer.

    ``recv_now()`` reads without running the loop, to observe what a transport sent
    synchronously.
    """

    def __init__(self, loop, sock: socket.socket) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.data = bytearray()
        self.eof = False
        self.error: OSError | None = None
        self.reading = False
        self._out = bytearray()
        self.writing = False

    # -- reading ---------------------------------------------------------------------
    def start_reading(self) -> None:
        if not self.reading and not self.eof:
            self.reading = True
            self.loop.add_reader(self.fd, self._on_readable)

    def stop_reading(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.fd)

    def _on_readable(self) -> None:
        try:
            chunk = self.sock.recv(1024 * 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.error = exc
            self.stop_reading()
            return
        if chunk:
            self.data += chunk
        else:
            self.eof = True
            self.stop_reading()

    def recv_now(self) -> bytes:
        """Everything readable right now (sets ``eof`` on end of stream), without the loop."""
        got = bytearray()
        while not self.eof:
            try:
                chunk = self.sock.recv(1024 * 1024)
            except (BlockingIOError, InterruptedError):
                break
            if not chunk:
                self.eof = True
                break
            got += chunk
        self.data += got
        return bytes(got)

    def recv_at_least_now(self, nbytes: int, timeout: float = PATIENCE) -> bytes:
        """Read (without running the loop) until ``nbytes`` arrived; then whatever else is there.

        Over TCP, bytes a transport sent may still sit in its socket's send queue for a
        moment; this waits for the kernel to deliver them.
        """
        got = bytearray()
        deadline = time.monotonic() + timeout
        while len(got) < nbytes and not self.eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"only {len(got)} of {nbytes} bytes arrived")
            select.select([self.sock], [], [], remaining)
            got += self.recv_now()
        return bytes(got)

    def drain(self, nbytes: int | None = None) -> None:
        """Run the loop, reading, until ``nbytes`` arrived in total (or EOF if None)."""
        self.start_reading()
        if nbytes is None:
            run_until(self.loop, lambda: self.eof or self.error is not None)
        else:
            run_until(
                self.loop, lambda: len(self.data) >= nbytes or self.eof or self.error is not None
            )

    # -- writing ---------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Send ``data`` in order, queueing what the socket does not take now."""
        self._out += data
        self._flush()

    @property
    def pending(self) -> int:
        return len(self._out)

    def _flush(self) -> None:
        while self._out:
            try:
                n = self.sock.send(self._out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # the transport end is gone: drop the rest
                self.error = exc
                self._out.clear()
                break
            del self._out[:n]
        if self._out and not self.writing:
            self.writing = True
            self.loop.add_writer(self.fd, self._flush)
        elif not self._out and self.writing:
            self.writing = False
            self.loop.remove_writer(self.fd)

    # -- ending ----------------------------------------------------------------------
    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.stop_reading()
        if self.writing:
            self.writing = False
            self.loop.remove_writer(self.fd)
        self.sock.close()

    def reset(self) -> None:
        """Close abruptly: TCP sends RST (SO_LINGER 0); a Unix socket with unread data
        makes the other end's next recv fail with ECONNRESET and send with EPIPE."""
        if self.sock.family != socket.AF_UNIX:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()


class StreamKit:
    """Makes connected transports on one loop; ``close_all()`` releases everything."""

    def __init__(self, loop, kind: str) -> None:
        self.loop = loop
        self.kind = kind
        self._sockets: list[socket.socket] = []
        self._transports: list = []
        self._peers: list[Peer] = []

    def socket_pair(self, bufsize: int | None = None) -> tuple[socket.socket, socket.socket]:
        a, b = socket_pair(self.kind, bufsize)
        self._sockets += [a, b]
        return a, b

    def transport(self, sock, protocol, *, extra=None, wait: bool = True, waiter=None):
        """A transport over ``sock``.

        With ``wait`` (and no ``waiter`` of the caller's) the loop runs until the
        transport's waiter is done, i.e. connection_made() ran.
        """
        if waiter is None and wait:
            waiter = self.loop.create_future()
        else:
            wait = False
        transport = make_transport(self.loop, sock, protocol, waiter, extra)
        self._transports.append(transport)
        if wait:
            self.loop.run_until_complete(asyncio.wait_for(waiter, PATIENCE))
        return transport

    def open(self, protocol, *, extra=None):
        """(transport, Peer): a connected transport whose other end is a raw socket."""
        a, b = self.socket_pair()
        transport = self.transport(a, protocol, extra=extra)
        peer = Peer(self.loop, b)
        self._peers.append(peer)
        return transport, peer

    def open_both(self, protocol_a, protocol_b, *, bufsize: int | None = None):
        """(transport_a, transport_b): transports at both ends of one connection."""
        a, b = self.socket_pair(bufsize)
        return self.transport(a, protocol_a), self.transport(b, protocol_b)

    def fill(self, transport, above: int = 64 * 1024, chunk_size: int = 1024 * 1024) -> bytes:
        """Write distinct 1 MiB chunks until the transport has more than ``above`` bytes
        queued (by default: the default high-water mark); return everything written."""
        written = []
        for i in range(64):
            chunk = bytes([i % 251]) * chunk_size
            transport.write(chunk)
            written.append(chunk)
            if transport.get_write_buffer_size() > above:
                return b"".join(written)
        raise AssertionError("the socket never stopped accepting data")

    def close_all(self) -> None:
        if self.loop.is_closed():
            return
        for transport in self._transports:
            # A closing transport with nothing queued has its connection_lost scheduled or
            # done (asyncio's abort() then even fails if close() had to flush first).
            if not (transport.is_closing() and not transport.get_write_buffer_size()):
                transport.abort()
        for peer in self._peers:
            if peer.sock.fileno() != -1:
                peer.close()
        # connection_lost (which closes the socket) is scheduled with call_soon.
        for _ in range(3):
            run_once(self.loop)
        for sock in self._sockets:
            sock.close()
