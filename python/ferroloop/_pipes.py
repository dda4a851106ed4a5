"""Pipe transports: connect_read_pipe / connect_write_pipe over the Rust cores.

`ReadPipeTransport` (an `asyncio.ReadTransport`) and `WritePipeTransport` (an
`asyncio.WriteTransport`) are what protocols see; every method delegates to
`_core.ReadPipeCore` / `_core.WritePipeCore`, which own the state and the data path.
The behaviour is asyncio's `_UnixReadPipeTransport` / `_UnixWritePipeTransport`: pipes,
FIFOs, sockets and character devices (ptys) are accepted; the transport owns the pipe
object and closes it after connection_lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat

from ._core import ReadPipeCore, WritePipeCore
from ._transport_base import PipeTransportBase, WriteFlowControl, finish_waiter

logger = logging.getLogger("asyncio")


class ReadPipeTransport(PipeTransportBase, asyncio.ReadTransport):
    """The read end of a pipe, FIFO, socket or character device."""

    # __dict__: asyncio's pipe transports accept instance attributes (tests patch methods).
    __slots__ = ("_core", "_loop", "__weakref__", "__dict__")

    # asyncio's max_size: bytes read in one event loop iteration at most.
    max_size = 256 * 1024

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        super().__init__(extra)
        self._extra["pipe"] = pipe
        self._loop = loop
        fileno = pipe.fileno()
        mode = os.fstat(fileno).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
            self._core = None
            raise ValueError("Pipe transport is for pipes/sockets only.")
        os.set_blocking(fileno, False)
        self._core = ReadPipeCore(loop, pipe, fileno, protocol, self)
        loop.call_soon(protocol.connection_made, self)
        # Only start reading once connection_made() has been called.
        loop.call_soon(self._core._start_reading)
        if waiter is not None:
            loop.call_soon(finish_waiter, waiter)

    def is_reading(self):
        """True while incoming data is delivered."""
        return self._core.is_reading()

    def pause_reading(self):
        """Stops delivering incoming data until resume_reading()."""
        if self._core.pause_reading() and self._loop.get_debug():
            logger.debug("%r pauses reading", self)

    def resume_reading(self):
        """Delivers incoming data again."""
        if self._core.resume_reading() and self._loop.get_debug():
            logger.debug("%r resumes reading", self)

    def close(self):
        """Stops reading; connection_lost(None) follows and the pipe is closed."""
        self._core.close()

    def _close(self, exc):
        self._core._close(exc)


class WritePipeTransport(PipeTransportBase, WriteFlowControl, asyncio.WriteTransport):
    """The write end of a pipe, FIFO, socket or character device."""

    # __dict__: asyncio's pipe transports accept instance attributes (tests patch methods).
    __slots__ = ("_core", "_loop", "__weakref__", "__dict__")

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        super().__init__(extra)
        self._extra["pipe"] = pipe
        self._loop = loop
        fileno = pipe.fileno()
        mode = os.fstat(fileno).st_mode
        is_char = stat.S_ISCHR(mode)
        is_fifo = stat.S_ISFIFO(mode)
        is_socket = stat.S_ISSOCK(mode)
        if not (is_char or is_fifo or is_socket):
            self._core = None
            raise ValueError("Pipe transport is only for pipes, sockets and character devices")
        os.set_blocking(fileno, False)
        # A socket or FIFO becomes readable when its reader goes away: watch for that.
        self._core = WritePipeCore(loop, pipe, fileno, protocol, self, is_socket or is_fifo)
        loop.call_soon(protocol.connection_made, self)
        # Only start watching once connection_made() has been called.
        loop.call_soon(self._core._start_reading)
        if waiter is not None:
            loop.call_soon(finish_waiter, waiter)

    def write(self, data):
        """Writes `data` (bytes-like) as soon as the pipe takes it."""
        self._core.write(data)

    def writelines(self, list_of_data):
        """Writes every buffer of `list_of_data` in order."""
        self._core.writelines(list_of_data)

    def can_write_eof(self):
        """True: write_eof() closes the pipe."""
        return True

    def write_eof(self):
        """Closes the pipe once the queued data is written."""
        self._core.write_eof()

    def close(self):
        """Same as write_eof(): writes what is queued, then closes."""
        self._core.close()

    def _close(self, exc=None):
        self._core._close(exc)


class PipesMixin:
    """connect_read_pipe / connect_write_pipe."""

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return ReadPipeTransport(self, pipe, protocol, waiter, extra)

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return WritePipeTransport(self, pipe, protocol, waiter, extra)

    async def connect_read_pipe(self, protocol_factory, pipe):
        """Wraps the read end `pipe` (a file-like object with fileno()) in a transport.

        Returns `(transport, protocol)` once protocol.connection_made() was called.
        """
        return await self._connect_pipe(
            self._make_read_pipe_transport, "Read", protocol_factory, pipe
        )

    async def connect_write_pipe(self, protocol_factory, pipe):
        """Wraps the write end `pipe` (a file-like object with fileno()) in a transport.

        Returns `(transport, protocol)` once protocol.connection_made() was called.
        """
        return await self._connect_pipe(
            self._make_write_pipe_transport, "Write", protocol_factory, pipe
        )

    async def _connect_pipe(self, make_transport, direction, protocol_factory, pipe):
        """`(transport, protocol)` from `make_transport(pipe, protocol, waiter)` once the
        waiter is done; the transport is closed if that fails or is cancelled."""
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = make_transport(pipe, protocol, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        if self.get_debug():
            logger.debug(
                "%s pipe %r connected: (%r, %r)", direction, pipe.fileno(), transport, protocol
            )
        return transport, protocol
