"""loop.sendfile(transport, file, ...): zero-copy os.sendfile, or read + write as fallback."""

from __future__ import annotations

import asyncio
from asyncio import constants, exceptions

# Bytes read from the file per write in the fallback path.
_FALLBACK_CHUNK = 16384


class _FallbackSendProtocol(asyncio.Protocol):
    """Stands in for the transport's protocol while the fallback copies the file: it turns
    pause_writing()/resume_writing() into a future the copy loop waits on."""

    def __init__(self, transport):
        self._transport = transport
        self._original = transport.get_protocol()
        self._resume_reading = transport.is_reading()
        self._resume_writing = transport._protocol_paused
        transport.pause_reading()
        transport.set_protocol(self)
        self._writable = transport._loop.create_future() if self._resume_writing else None

    async def drain(self):
        if self._transport.is_closing():
            raise ConnectionError("Connection closed by peer")
        if self._writable is not None:
            await self._writable

    def connection_made(self, transport):
        raise RuntimeError("Invalid state: connection should have been established already.")

    def connection_lost(self, exc):
        if self._writable is not None and not self._writable.done():
            lost = exc if exc is not None else ConnectionError("Connection is closed by peer")
            self._writable.set_exception(lost)
        self._original.connection_lost(exc)

    def pause_writing(self):
        if self._writable is None:
            self._writable = self._transport._loop.create_future()

    def resume_writing(self):
        if self._writable is not None:
            self._writable.set_result(False)
            self._writable = None

    def data_received(self, data):
        raise RuntimeError("Invalid state: reading should be paused")

    def eof_received(self):
        raise RuntimeError("Invalid state: reading should be paused")

    async def restore(self):
        self._transport.set_protocol(self._original)
        if self._resume_reading:
            self._transport.resume_reading()
        if self._writable is not None:
            self._writable.cancel()
        if self._resume_writing:
            self._original.resume_writing()


class SendfileMixin:
    """`loop.sendfile` for ferroloop's socket transports."""

    async def sendfile(self, transport, file, offset=0, count=None, *, fallback=True):
        """Sends `file` over `transport`; returns the number of bytes sent."""
        if transport.is_closing():
            raise RuntimeError("Transport is closing")
        mode = getattr(transport, "_sendfile_compatible", constants._SendfileMode.UNSUPPORTED)
        if mode is constants._SendfileMode.UNSUPPORTED:
            raise RuntimeError(f"sendfile is not supported for transport {transport!r}")
        if mode is constants._SendfileMode.TRY_NATIVE:
            try:
                return await self._sendfile_native(transport, file, offset, count)
            except exceptions.SendfileNotAvailableError:
                if not fallback:
                    raise
        if not fallback:
            raise RuntimeError(
                f"fallback is disabled and native sendfile is not supported "
                f"for transport {transport!r}"
            )
        return await self._sendfile_fallback(transport, file, offset, count)

    async def _sendfile_native(self, transport, file, offset, count):
        fd = transport._sock_fd
        # sendfile owns the socket meanwhile: the fd is not the transport's for add_reader.
        self._transports.pop(fd, None)
        resume_reading = transport.is_reading()
        transport.pause_reading()
        await transport._make_empty_waiter()
        try:
            return await self.sock_sendfile(transport._sock, file, offset, count, fallback=False)
        finally:
            transport._reset_empty_waiter()
            if resume_reading:
                transport.resume_reading()
            self._transports[fd] = transport

    async def _sendfile_fallback(self, transport, file, offset, count):
        # Reading starts at `offset` even when it is 0 and the file is elsewhere (asyncio
        # before 3.14 skipped the seek for 0 and sent from the file's current position).
        if hasattr(file, "seek"):
            file.seek(offset)
        blocksize = min(count, _FALLBACK_CHUNK) if count else _FALLBACK_CHUNK
        buffer = bytearray(blocksize)
        total = 0
        stand_in = _FallbackSendProtocol(transport)
        try:
            while True:
                if count:
                    blocksize = min(count - total, blocksize)
                    if blocksize <= 0:
                        return total
                view = memoryview(buffer)[:blocksize]
                read = await self.run_in_executor(None, file.readinto, view)
                if not read:
                    return total
                await stand_in.drain()
                transport.write(view[:read])
                total += read
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset + total)
            await stand_in.restore()
