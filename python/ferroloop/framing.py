"""Framed protocols: PEP 3153's ChunkProtocol, with the splitting done in Rust.

Most protocols frame their messages by a delimiter (Redis inline commands, SMTP, IRC,
memcached's text protocol, JSON lines), by a length prefix (binary RPC, PostgreSQL,
Kafka), or by a fixed size, and some switch to raw bytes for a while (an HTTP body, SMTP
DATA). Here the application names its framing once and receives one call per frame::

    def on_chunk(frame):
        protocol.write_chunk(frame.upper())

    protocol = ChunkProtocol(Delimiter(b"\\r\\n"), on_chunk)

A framer (`Delimiter`, `LengthPrefixed`, `FixedSize`) describes the framing; every
`ChunkProtocol` gets its own `ferroloop._core.FrameSplitter`, a Rust state machine. On
ferroloop's TCP and Unix socket transports the transport receives straight into the
splitter's buffer and frames are cut in Rust, one call into Python per frame. On any other
transport (asyncio's or uvloop's loop, TLS, pipes) `data_received` feeds the same splitter,
so behaviour is identical everywhere.

Flow control is per frame: `protocol.transport.pause_reading()` inside `on_chunk` stops
delivery of the frames still buffered until `resume_reading()`. An oversized frame raises
`FrameTooLarge` (a `LimitOverrunError`) and closes the connection; EOF in the middle of a
frame is reported as an `IncompleteReadError` carrying the partial frame.

The awaitable face: `open_connection(host, port, framer=...)` and
`start_server(cb, host, port, framer=...)` give `FramedStream` objects with
`read_frame()`, `async for`, `write_frame()` and `drain()`.
"""

from __future__ import annotations

import asyncio
import collections

from ._core import FrameSplitter

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "ChunkProtocol",
    "Delimiter",
    "FixedSize",
    "FrameTooLarge",
    "FramedStream",
    "FramedTransport",
    "InvalidFrame",
    "LengthPrefixed",
    "SubprocessChunkProtocol",
    "open_connection",
    "open_unix_connection",
    "start_server",
    "start_unix_server",
]

# The largest frame accepted unless a framer says otherwise: asyncio streams' 64 KiB limit
# is too small for many binary protocols, 1 MiB bounds what one connection can buffer.
DEFAULT_MAX_FRAME_SIZE = 1024 * 1024


class FrameTooLarge(asyncio.LimitOverrunError):
    """A frame is longer than the framer's `max_frame_size`; the connection is closed.

    `consumed` (as in `LimitOverrunError`) is the frame's size when a length field gave
    it, or the number of bytes buffered without finding a delimiter; `max_frame_size` is
    the limit.
    """

    def __init__(self, message, size, max_frame_size):
        super().__init__(message, size)
        self.max_frame_size = max_frame_size

    def __reduce__(self):
        return type(self), (self.args[0], self.consumed, self.max_frame_size)


class InvalidFrame(ValueError):
    """A length field describes an impossible frame (negative after the adjustment)."""


class _Framer:
    """What the three framers share: the limit and how a protocol gets its splitter."""

    __slots__ = ("max_frame_size",)

    def __init__(self, max_frame_size):
        if max_frame_size <= 0:
            raise ValueError("max_frame_size must be positive")
        self.max_frame_size = max_frame_size

    def _options(self):
        raise NotImplementedError

    def _splitter(self, on_chunk):
        return FrameSplitter(on_chunk, self.max_frame_size, **self._options())

    def encode(self, data):
        """`data` as one frame on the wire (bytes); ValueError if it cannot be one."""
        return self._splitter(None).encode(data)


class Delimiter(_Framer):
    """Frames that end with `delimiter` (e.g. `b"\\r\\n"`), delivered without it unless
    `keep`; a frame may hold `max_frame_size` bytes besides the delimiter."""

    __slots__ = ("delimiter", "keep")

    def __init__(self, delimiter=b"\n", *, keep=False, max_frame_size=DEFAULT_MAX_FRAME_SIZE):
        super().__init__(max_frame_size)
        delimiter = bytes(delimiter)
        if not delimiter:
            raise ValueError("the delimiter must not be empty")
        self.delimiter = delimiter
        self.keep = keep

    def _options(self):
        return {"delimiter": self.delimiter, "keep": self.keep}

    def __repr__(self):
        return (
            f"Delimiter({self.delimiter!r}, keep={self.keep}, max_frame_size={self.max_frame_size})"
        )


class LengthPrefixed(_Framer):
    """Frames with a length field in a header, as tokio-util's LengthDelimitedCodec.

    A frame is `offset` header bytes, the length field (`size` bytes: 1, 2, 4 or 8, in
    `byteorder`), then `value + adjustment` bytes, where `value` is the field's value
    (`adjustment` is negative when the field counts the header too). The delivered frame
    leaves out its first `strip` bytes (default: the whole header). `max_frame_size`
    bounds `value + adjustment`. `write_chunk` can build a header only when it is the
    length field alone and is stripped (`offset == 0`, `strip == size`).
    """

    __slots__ = ("size", "byteorder", "offset", "adjustment", "strip")

    def __init__(
        self,
        size=4,
        *,
        byteorder="big",
        offset=0,
        adjustment=0,
        strip=None,
        max_frame_size=DEFAULT_MAX_FRAME_SIZE,
    ):
        super().__init__(max_frame_size)
        if size not in (1, 2, 4, 8):
            raise ValueError("the length field must be 1, 2, 4 or 8 bytes")
        if byteorder not in ("big", "little"):
            raise ValueError("byteorder must be 'big' or 'little'")
        if offset < 0:
            raise ValueError("offset must not be negative")
        strip = offset + size if strip is None else strip
        if not 0 <= strip <= offset + size:
            raise ValueError("strip must be between 0 and offset + size")
        self.size = size
        self.byteorder = byteorder
        self.offset = offset
        self.adjustment = adjustment
        self.strip = strip

    def _options(self):
        return {
            "length_size": self.size,
            "big_endian": self.byteorder == "big",
            "offset": self.offset,
            "adjustment": self.adjustment,
            "strip": self.strip,
        }

    def __repr__(self):
        return (
            f"LengthPrefixed({self.size}, byteorder={self.byteorder!r}, offset={self.offset},"
            f" adjustment={self.adjustment}, strip={self.strip},"
            f" max_frame_size={self.max_frame_size})"
        )


class FixedSize(_Framer):
    """Frames of exactly `size` bytes."""

    __slots__ = ("size",)

    def __init__(self, size, *, max_frame_size=None):
        super().__init__(size if max_frame_size is None else max_frame_size)
        if size <= 0 or size > self.max_frame_size:
            raise ValueError("size must be positive and at most max_frame_size")
        self.size = size

    def _options(self):
        return {"fixed_size": self.size}

    def __repr__(self):
        return f"FixedSize({self.size})"


class FramedTransport(asyncio.Transport):
    """The transport a `ChunkProtocol` hands out: the connection's transport, with
    `pause_reading`/`resume_reading` that also hold back and release the frames already
    received (per-frame flow control), and `close`/`abort` that end delivery."""

    __slots__ = ("_transport", "_protocol")

    def __init__(self, transport, protocol):
        super().__init__()
        self._transport = transport
        self._protocol = protocol

    def pause_reading(self):
        """Stops delivering frames, from the next one on, until resume_reading()."""
        self._protocol._pause()

    def resume_reading(self):
        """Delivers the frames held back (soon, not inside this call), then reads again."""
        self._protocol._resume()

    def is_reading(self):
        """False while paused or closing."""
        return not self._protocol._splitter.paused and self._transport.is_reading()

    def close(self):
        """Delivers no more frames; closes the transport after its queued output."""
        self._protocol._splitter.stop()
        self._transport.close()

    def abort(self):
        """Delivers no more frames; closes the transport at once."""
        self._protocol._splitter.stop()
        self._transport.abort()

    def write(self, data):
        """`transport.write(data)`: raw bytes, no framing."""
        self._transport.write(data)

    def writelines(self, list_of_data):
        """`transport.writelines(list_of_data)`."""
        self._transport.writelines(list_of_data)

    def write_eof(self):
        """`transport.write_eof()`."""
        self._transport.write_eof()

    def can_write_eof(self):
        """`transport.can_write_eof()`."""
        return self._transport.can_write_eof()

    def is_closing(self):
        """`transport.is_closing()`."""
        return self._transport.is_closing()

    def get_extra_info(self, name, default=None):
        """`transport.get_extra_info(name, default)`."""
        return self._transport.get_extra_info(name, default)

    def set_write_buffer_limits(self, high=None, low=None):
        """`transport.set_write_buffer_limits(high, low)`."""
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self):
        """`transport.get_write_buffer_size()`."""
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self):
        """`transport.get_write_buffer_limits()`."""
        return self._transport.get_write_buffer_limits()

    def get_protocol(self):
        """The `ChunkProtocol`."""
        return self._transport.get_protocol()

    def set_protocol(self, protocol):
        """`transport.set_protocol(protocol)`."""
        self._transport.set_protocol(protocol)

    def __getattr__(self, name):
        return getattr(self._transport, name)

    def __repr__(self):
        return f"<FramedTransport {self._transport!r}>"


def _writer_of(transport):
    """`transport.write` (on ferroloop's socket transport, unless replaced on the
    instance, the Rust core's own write), or None for a read pipe."""
    return getattr(transport, "write", None)


class ChunkProtocol(asyncio.Protocol):
    """A protocol that calls `on_chunk(frame)` once per complete frame (`bytes`).

    `framer` is a `Delimiter`, `LengthPrefixed` or `FixedSize`. `on_eof(error)` is called
    at end of input with None, or with an `IncompleteReadError` holding a partial frame;
    a true result keeps the connection half-open, as `eof_received`'s does.
    `on_connection_lost(exc)` is called last; `exc` is the error that ended the
    connection, or the unreported `IncompleteReadError` of a partial frame, or None.

    An exception from `on_chunk` is handled as one from `data_received`: the exception
    handler is called and the connection closed with it. `transport` (after
    connection_made) is a `FramedTransport`.
    """

    def __init__(self, framer, on_chunk, *, on_eof=None, on_connection_lost=None):
        if not isinstance(framer, _Framer):
            raise TypeError("framer must be a Delimiter, LengthPrefixed or FixedSize")
        self.framer = framer
        # ferroloop's socket transports find the splitter here and feed it themselves.
        self._ferroloop_splitter = self._splitter = framer._splitter(on_chunk)
        self._on_eof = on_eof
        self._on_connection_lost = on_connection_lost
        self._raw_transport = None
        self._loop = None
        self.transport = None
        # An error to report at connection_lost: a partial frame at EOF, or an exception
        # from a delivery the transport did not see (after resume_reading).
        self._error = None

    def connection_made(self, transport):
        self._raw_transport = transport
        self._loop = asyncio.get_running_loop()
        self.transport = FramedTransport(transport, self)
        writer = _writer_of(transport)
        if writer is not None:
            self._splitter.set_writer(writer)
        # Straight into Rust: encode and hand to the transport's write in one call.
        self.write_chunk = self._splitter.write_chunk
        self.write_chunks = self._splitter.write_chunks

    def data_received(self, data):
        self._splitter.feed(data)

    def eof_received(self):
        error = self._incomplete()
        if self._on_eof is not None:
            return self._on_eof(error)
        self._error = self._error or error
        return None

    def connection_lost(self, exc):
        self._splitter.stop()
        if exc is None:
            exc, self._error = self._error, None
        if self._on_connection_lost is not None:
            self._on_connection_lost(exc)

    def _incomplete(self):
        """The `IncompleteReadError` of a partial frame at EOF, or None."""
        if self._splitter.raw or self._splitter.stopped:
            return None
        partial = self._splitter.pending()
        if not partial:
            return None
        return asyncio.IncompleteReadError(partial, self._splitter.expected())

    # Writing.

    def write_chunk(self, data):
        """Sends `data` as one frame (the delimiter or the length prefix added);
        ValueError if it cannot be one (too long, wrong size)."""
        self._splitter.write_chunk(data)

    def write_chunks(self, frames):
        """Sends every frame of `frames` with one write of the transport."""
        self._splitter.write_chunks(frames)

    # Mode switches.

    def set_raw_mode(self, on_data):
        """From now on bytes go to `on_data(data)` as they arrive, starting with those
        already received after the current frame."""
        self._splitter.set_raw(on_data)
        self._deliver_later()

    def set_frame_mode(self, extra=b""):
        """Back to frames; `extra` (bytes the raw reader handed back) is split first."""
        if self._splitter.set_frames(bytes(extra)):
            self._deliver_later()

    # Flow control (through FramedTransport).

    def _pause(self):
        self._splitter.paused = True
        self._raw_transport.pause_reading()

    def _resume(self):
        if not self._splitter.paused:
            return
        self._splitter.paused = False
        # Even inside on_chunk (a delivery running): the transport itself is paused.
        self._loop.call_soon(self._deliver_held)

    def _deliver_later(self):
        """Delivers held-back bytes from the loop (never inside the caller), then reads
        again unless delivery paused once more."""
        if not self._splitter.delivering:
            self._loop.call_soon(self._deliver_held)

    def _deliver_held(self):
        transport = self._raw_transport
        if self._splitter.stopped or transport.is_closing():
            return
        try:
            self._splitter.dispatch()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            # What the transport does when data_received raises: report, then close with
            # the error.
            self._error = exc
            self._loop.call_exception_handler(
                {
                    "message": "Fatal error: protocol.data_received() call failed.",
                    "exception": exc,
                    "transport": transport,
                    "protocol": self,
                }
            )
            self._splitter.stop()
            transport.abort()
            return
        if not self._splitter.paused:
            transport.resume_reading()


class SubprocessChunkProtocol(asyncio.SubprocessProtocol):
    """A subprocess protocol whose child's output is framed: `on_chunk(fd, frame)` once
    per complete frame of its stdout (fd 1) or stderr (fd 2), each pipe split on its own
    by `framer`. `write_chunk(data)` sends one frame to the child's stdin.

    `on_eof(fd, error)` is called when a pipe closes, with None or with the
    `IncompleteReadError` of a partial frame; `on_exit(returncode)` when the process has
    exited and every pipe has closed (`connection_lost`). An exception from `on_chunk`,
    or an oversized frame (`FrameTooLarge`), is a fatal error of that pipe, as one from a
    socket's `data_received`: the exception handler is called, the pipe is closed, and
    `on_eof` gets the exception. Pause a pipe with `get_pipe_transport(fd).pause_reading()`.
    """

    def __init__(self, framer, on_chunk, *, on_eof=None, on_exit=None):
        if not isinstance(framer, _Framer):
            raise TypeError("framer must be a Delimiter, LengthPrefixed or FixedSize")
        self.framer = framer
        self._on_chunk = on_chunk
        self._on_eof = on_eof
        self._on_exit = on_exit
        self._splitters = {}
        # fd -> the exception that ended a pipe's framing, reported when it closes.
        self._errors = {}
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def _splitter_of(self, fd):
        splitter = self._splitters.get(fd)
        if splitter is None:
            on_chunk = self._on_chunk
            splitter = self.framer._splitter(lambda frame: on_chunk(fd, frame))
            self._splitters[fd] = splitter
        return splitter

    def pipe_data_received(self, fd, data):
        splitter = self._splitter_of(fd)
        if splitter.stopped:
            return
        try:
            splitter.feed(data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fail(fd, exc)

    def _fail(self, fd, exc):
        pipe = self.transport.get_pipe_transport(fd)
        asyncio.get_running_loop().call_exception_handler(
            {
                "message": "Fatal error: protocol.pipe_data_received() call failed.",
                "exception": exc,
                "transport": pipe,
                "protocol": self,
            }
        )
        self._errors[fd] = exc
        self._splitters[fd].stop()
        if pipe is not None:
            pipe.close()  # a read pipe has no abort(); it has nothing queued to lose

    def pipe_connection_lost(self, fd, exc):
        splitter = self._splitters.get(fd)
        error = self._errors.pop(fd, None)
        if splitter is not None and not splitter.stopped:
            partial = splitter.pending()
            if partial and exc is None:
                error = asyncio.IncompleteReadError(partial, splitter.expected())
            splitter.stop()
        if fd != 0 and self._on_eof is not None:
            self._on_eof(fd, exc or error)

    def connection_lost(self, exc):
        if self._on_exit is not None:
            self._on_exit(self.transport.get_returncode())

    def write_chunk(self, data):
        """Sends `data` to the child's stdin as one frame."""
        self.transport.get_pipe_transport(0).write(self.framer.encode(data))


class FramedStream:
    """A framed connection as awaitables: `read_frame()`, `async for frame in stream`,
    `write_frame()`, `write_frames()` and `drain()`.

    Received frames are queued up to `max_queued`; beyond that reading pauses until the
    application catches up (back-pressure through pause_reading/resume_reading).
    """

    def __init__(self, protocol):
        self._protocol = protocol

    @property
    def transport(self):
        """The `FramedTransport`."""
        return self._protocol.transport

    @property
    def framer(self):
        """The framer."""
        return self._protocol.framer

    async def read_frame(self):
        """The next frame. At the end of input raises `IncompleteReadError` (with the
        partial frame, or `b""` after the last whole one); a framing error (e.g.
        `FrameTooLarge`) or a connection error is raised once the frames before it are
        read."""
        return await self._protocol._read_frame()

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return await self._protocol._read_frame()
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            raise StopAsyncIteration from None

    def write_frame(self, data):
        """Sends `data` as one frame."""
        self._protocol.write_chunk(data)

    def write_frames(self, frames):
        """Sends the frames in one scatter/gather write."""
        self._protocol.write_chunks(frames)

    async def drain(self):
        """Waits until the transport's write buffer is below its high-water mark."""
        await self._protocol._drain()

    def close(self):
        """Closes the connection after the queued output."""
        self._protocol.transport.close()

    def is_closing(self):
        """True once closing."""
        return self._protocol._raw_transport.is_closing()

    async def wait_closed(self):
        """Waits until the connection is lost."""
        await asyncio.shield(self._protocol._closed)

    def get_extra_info(self, name, default=None):
        """The transport's `get_extra_info`."""
        return self._protocol._raw_transport.get_extra_info(name, default)

    def __repr__(self):
        return f"<FramedStream {self._protocol.framer!r}>"


# Frames a stream queues before it pauses reading.
DEFAULT_MAX_QUEUED = 64


class _StreamProtocol(ChunkProtocol):
    """The ChunkProtocol behind a FramedStream: frames into a queue, one waiter."""

    def __init__(self, framer, loop, *, max_queued=DEFAULT_MAX_QUEUED, connected=None):
        super().__init__(framer, self._on_frame)
        self._loop = loop
        self._frames = collections.deque()
        self._max_queued = max_queued
        self._waiter = None
        self._end = None  # exception that ends reading: IncompleteReadError or an error
        self._connected = connected
        self._write_paused = False
        self._drain_waiters = collections.deque()
        self._closed = loop.create_future()
        self._task = None
        self.stream = FramedStream(self)

    def connection_made(self, transport):
        super().connection_made(transport)
        if self._connected is not None:
            result = self._connected(self.stream)
            if asyncio.iscoroutine(result):
                self._task = self._loop.create_task(result)

    def _on_frame(self, frame):
        self._frames.append(frame)
        if len(self._frames) >= self._max_queued:
            self.transport.pause_reading()
        self._wake()

    def eof_received(self):
        self._finish(self._incomplete() or asyncio.IncompleteReadError(b"", None))
        return None

    def connection_lost(self, exc):
        if exc is None:
            exc = self._error
        super().connection_lost(exc)
        # Reading ends with the error, or (closed without EOF) as at a clean EOF.
        self._finish(exc or asyncio.IncompleteReadError(b"", None))
        for waiter in self._drain_waiters:
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)
        self._drain_waiters.clear()
        if not self._closed.done():
            self._closed.set_result(None)

    def _finish(self, exc):
        if self._end is None:
            self._end = exc
        self._wake()

    def _wake(self):
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _read_frame(self):
        while not self._frames:
            if self._end is not None:
                raise self._end
            self._waiter = self._loop.create_future()
            await self._waiter
        frame = self._frames.popleft()
        if self._splitter.paused and len(self._frames) <= self._max_queued // 2:
            self.transport.resume_reading()
        return frame

    def pause_writing(self):
        self._write_paused = True

    def resume_writing(self):
        self._write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    async def _drain(self):
        if self._raw_transport.is_closing():
            # Yield as asyncio's drain does, so a closed connection is noticed.
            await asyncio.sleep(0)
        if not self._write_paused:
            return
        waiter = self._loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter


async def open_connection(host=None, port=None, *, framer, max_queued=DEFAULT_MAX_QUEUED, **kwds):
    """A `FramedStream` connected to `host`, `port` (`loop.create_connection` keywords,
    `ssl=` among them, pass through)."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(
        lambda: _StreamProtocol(framer, loop, max_queued=max_queued), host, port, **kwds
    )
    return protocol.stream


async def open_unix_connection(path=None, *, framer, max_queued=DEFAULT_MAX_QUEUED, **kwds):
    """A `FramedStream` connected to the Unix socket `path`."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_unix_connection(
        lambda: _StreamProtocol(framer, loop, max_queued=max_queued), path, **kwds
    )
    return protocol.stream


async def start_server(
    client_connected_cb, host=None, port=None, *, framer, max_queued=DEFAULT_MAX_QUEUED, **kwds
):
    """A server calling `client_connected_cb(stream)` (a function or a coroutine function,
    run as a task) with a `FramedStream` per connection."""
    loop = asyncio.get_running_loop()

    def factory():
        return _StreamProtocol(framer, loop, max_queued=max_queued, connected=client_connected_cb)

    return await loop.create_server(factory, host, port, **kwds)


async def start_unix_server(
    client_connected_cb, path=None, *, framer, max_queued=DEFAULT_MAX_QUEUED, **kwds
):
    """`start_server` on a Unix socket."""
    loop = asyncio.get_running_loop()

    def factory():
        return _StreamProtocol(framer, loop, max_queued=max_queued, connected=client_connected_cb)

    return await loop.create_unix_server(factory, path, **kwds)
