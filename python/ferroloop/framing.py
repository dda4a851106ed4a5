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
ferroloop's transports (TCP and Unix sockets, TLS, pipes and subprocess pipes) the
transport hands what it read (TLS: the decrypted plaintext) straight to the splitter and
frames are cut in Rust, one call into Python per frame. On any other loop (asyncio's,
uvloop's) `data_received` feeds the same splitter, so behaviour is identical everywhere.

Flow control is per frame: `protocol.transport.pause_reading()` inside `on_chunk` stops
delivery of the frames still buffered until `resume_reading()`. An oversized frame raises
`FrameTooLarge` (a `LimitOverrunError`) and closes the connection; EOF in the middle of a
frame is reported as an `IncompleteReadError` carrying the partial frame.

The awaitable face: `open_connection(host, port, framer=...)` and
`start_server(cb, host, port, framer=...)` give `FramedStream` objects with
`read_frame()`, `async for`, `write_frame()` and `drain()`, and a raw mode
(`set_raw_mode()`, `read(n)`, `readexactly(n)`, `set_frame_mode()`) for payloads that are
not frames.
"""

from __future__ import annotations

import asyncio
import collections

from ._core import FrameSplitter
from ._stream import SocketTransport

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


def _writers_of(transport):
    """`(write, writelines, core)`: the transport's `write` and `writelines`, and the Rust
    core of ferroloop's socket transport when both are still the core's own (bound on the
    instance, not replaced), which then takes the vectored writes of `write_chunks`
    directly. `write` is None for a read pipe."""
    write = getattr(transport, "write", None)
    writelines = getattr(transport, "writelines", None)
    if type(transport) is SocketTransport:
        core = transport._core
        if write == core.write and writelines == core.writelines:
            return write, None, core
    return write, writelines, None


def _close_at_once(transport):
    """`transport.abort()`, or `close()` for a read pipe (it has nothing queued to lose)."""
    abort = getattr(transport, "abort", None)
    if abort is not None:
        abort()
    else:
        transport.close()


class ChunkProtocol(asyncio.Protocol):
    """A protocol that calls `on_chunk(frame)` once per complete frame (`bytes`).

    `framer` is a `Delimiter`, `LengthPrefixed` or `FixedSize`. `on_eof(error)` is called
    at end of input with None, or with an `IncompleteReadError` holding a partial frame;
    a true result keeps the connection half-open, as `eof_received`'s does.
    `on_connection_lost(exc)` is called last; `exc` is the error that ended the
    connection, or the unreported `IncompleteReadError` of a partial frame, or None.

    An exception from `on_chunk` is handled as one from `data_received`: the exception
    handler is called and the connection closed with it (on read pipes too, which
    asyncio's loop would keep open). `transport` (after connection_made) is a
    `FramedTransport`.
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
        # A read pipe's transport leaves a data_received error to its loop's exception
        # handler and keeps reading: the protocol then reports it and closes itself.
        self._handles_own_errors = False
        # An error to report at connection_lost: a partial frame at EOF, or an exception
        # from a delivery the transport did not see (after resume_reading).
        self._error = None

    def connection_made(self, transport):
        self._raw_transport = transport
        self._loop = asyncio.get_running_loop()
        self.transport = FramedTransport(transport, self)
        write, writelines, core = _writers_of(transport)
        if write is not None:
            self._splitter.set_writer(write, writelines, core)
        self._handles_own_errors = write is None
        # Straight into Rust: encode and hand to the transport's write in one call.
        self.write_chunk = self._splitter.write_chunk
        self.write_chunks = self._splitter.write_chunks

    def data_received(self, data):
        if not self._handles_own_errors:
            self._splitter.feed(data)
            return
        try:
            self._splitter.feed(data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._framing_failed(exc)

    def _framing_failed(self, exc):
        """What a socket transport does when data_received raises: report, then close
        with the error. (ferroloop's read pipes call this when a frame they deliver
        fails.)"""
        self._error = exc
        self._loop.call_exception_handler(
            {
                "message": "Fatal error: protocol.data_received() call failed.",
                "exception": exc,
                "transport": self._raw_transport,
                "protocol": self,
            }
        )
        self._splitter.stop()
        _close_at_once(self._raw_transport)

    def eof_received(self):
        if not self._deliver_held_before_eof():
            return None
        error = self._incomplete()
        if self._on_eof is not None:
            return self._on_eof(error)
        self._error = self._error or error
        return None

    def _deliver_held_before_eof(self):
        """Bytes a mode switch held back for a delivery the loop has not run yet reach
        `on_chunk` / `on_data` before the end of input is reported. False when a delivery
        failed (the connection is then being closed with that error)."""
        splitter = self._splitter
        if splitter.stopped or splitter.paused or splitter.delivering:
            return True
        return self._dispatch()

    def _dispatch(self):
        """Delivers what the splitter holds. False when a delivery failed: the connection
        is then being closed with that error."""
        try:
            self._splitter.dispatch()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._framing_failed(exc)
            return False
        return True

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
        """Sends every frame of `frames` with one scatter/gather write of the transport
        (`writelines`): `bytes` payloads of 1 KiB or more are not copied."""
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
        if not self._dispatch():
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

    On ferroloop the pipe transports cut the frames in Rust (`pipe_data_received` is not
    called); frames read before `connection_made` are delivered when it runs, so a
    subclass that overrides `connection_made` must call the base method.
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
        # fds whose frames are held back until connection_made (see _native_splitter).
        self._held = set()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        for fd in sorted(self._held):
            self._release(fd)

    def _native_splitter(self, fd):
        """The splitter of pipe `fd`, for ferroloop's pipe transport to read into (the
        frames are then cut in Rust). It holds its frames back until connection_made, as
        asyncio holds back pipe_data_received: bytes read before stay buffered in it, in
        order with what follows."""
        splitter = self._splitter_of(fd)
        splitter.paused = True
        self._held.add(fd)
        return splitter

    def _release(self, fd):
        """Delivers what pipe `fd` held back before connection_made."""
        self._held.discard(fd)
        splitter = self._splitters[fd]
        splitter.paused = False
        try:
            splitter.dispatch()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fail(fd, exc)

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
    `write_frame()`, `write_frames()` and `drain()`; `set_raw_mode()`, `read(n)`,
    `readexactly(n)` and `set_frame_mode()` for bytes that are not frames.

    Received frames are queued up to `max_queued` (raw bytes up to the framer's
    `max_frame_size`, 64 KiB at least); beyond that reading pauses until the application
    catches up (back-pressure through pause_reading/resume_reading). No byte is lost or
    reordered across mode switches, whenever they happen.
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

    def set_raw_mode(self):
        """From now on the stream is read with `read()`/`readexactly()`: the bytes that
        follow the last frame read (frames received and not read are handed back as the
        bytes they came as), until `set_frame_mode()`. For a payload that is not framed,
        e.g. after a header frame that announces its length."""
        self._protocol._set_raw_mode()

    def set_frame_mode(self):
        """Back to frames: the bytes received and not read are split first."""
        self._protocol._set_frame_mode()

    async def read(self, n=-1):
        """Raw mode: up to `n` bytes (at least one, `b""` at the end of input); all of
        them up to the end of input when `n` is negative. An error that ended the
        connection is raised once the bytes before it are read."""
        return await self._protocol._read(n)

    async def readexactly(self, n):
        """Raw mode: exactly `n` bytes; `IncompleteReadError` with the bytes left when the
        input ends first."""
        return await self._protocol._readexactly(n)

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


# Raw bytes a stream buffers at least before it pauses reading.
MIN_RAW_BUFFER = 64 * 1024


def _header_kept(framer):
    """`framer` for a stream that may switch to raw mode: one whose frames are exactly the
    bytes they came as, or can be made back into them. A length-prefixed frame that loses
    part of its header cannot (an offset field, or a length field partly stripped): its
    stream receives frames whole and strips them when they are read. Returns the framer
    to split with and the bytes to strip."""
    if not isinstance(framer, LengthPrefixed):
        return framer, 0
    if framer.strip == 0 or (framer.offset == 0 and framer.strip == framer.size):
        return framer, 0
    whole = LengthPrefixed(
        framer.size,
        byteorder=framer.byteorder,
        offset=framer.offset,
        adjustment=framer.adjustment,
        strip=0,
        max_frame_size=framer.max_frame_size,
    )
    return whole, framer.strip


class _StreamProtocol(ChunkProtocol):
    """The ChunkProtocol behind a FramedStream: frames (or raw bytes) into a queue, one
    waiter.

    The stream frames ahead of its reader, so bytes a reader will want raw may already be
    cut into frames when it switches: queued frames are turned back into the bytes they
    came as (`_wire`). A framing error met ahead of the reader only pauses the splitter
    (`defer_errors`): it is reported, and the connection closed, when the reader reaches
    it in frame mode; in raw mode those bytes were not frames. At the end of input what
    the splitter still holds is kept unframed (`_rest`) and split when the reader gets
    there, so nothing depends on a delivery the loop would have made later.
    """

    def __init__(self, framer, loop, *, max_queued=DEFAULT_MAX_QUEUED, connected=None):
        splitting, self._strip = _header_kept(framer)
        super().__init__(splitting, self._on_frame)
        self.framer = framer
        self._splitting = splitting
        self._splitter.defer_errors(self._on_framing_error)
        self._loop = loop
        self._frames = collections.deque()
        self._max_queued = max_queued
        # Raw mode: the bytes received and not read; None in frame mode.
        self._raw = None
        self._raw_limit = max(framer.max_frame_size, MIN_RAW_BUFFER)
        self._waiter = None
        # The input ended (EOF or connection lost); with this error, or None when clean.
        self._ended = False
        self._end_error = None
        # Bytes the splitter held at the end of input, not split yet.
        self._rest = b""
        # A framing error met ahead of the reader, and the one the reader reached.
        self._deferred = None
        self._failed = None
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

    def _on_raw(self, data):
        self._raw += data
        if len(self._raw) >= self._raw_limit:
            self.transport.pause_reading()
        self._wake()

    def _on_framing_error(self, exc):
        # The splitter paused itself before the frame in error; the transport too.
        self._deferred = exc
        self.transport.pause_reading()
        self._wake()

    def eof_received(self):
        self._finish(None)
        return None

    def connection_lost(self, exc):
        if exc is None:
            exc = self._error
        super().connection_lost(exc)
        # Reading ends with the error, or (closed without EOF) as at a clean EOF.
        self._finish(exc)
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
        """The input ended, with `exc` or cleanly (None): what the splitter still holds is
        taken out, raw bytes or bytes to split later."""
        if not self._ended:
            self._ended = True
            self._end_error = exc
            tail = self._splitter.pending()
            self._splitter.stop()
            self._deferred = None  # its bytes are in the tail
            if self._raw is not None:
                self._raw += tail
            else:
                self._rest += tail
        self._wake()

    def _wake(self):
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self):
        self._maybe_resume()
        self._waiter = self._loop.create_future()
        await self._waiter

    def _maybe_resume(self):
        """Reads again once the application took enough of what is queued."""
        if not self._splitter.paused or self._ended or self._deferred is not None:
            return
        if self._raw is not None:
            room = len(self._raw) <= self._raw_limit // 2
        else:
            room = len(self._frames) <= self._max_queued // 2
        if room:
            self.transport.resume_reading()

    # Frames.

    async def _read_frame(self):
        while True:
            if self._raw is not None:
                raise RuntimeError("the stream is in raw mode: use read() or readexactly()")
            if self._frames:
                frame = self._frames.popleft()
                self._maybe_resume()
                return frame[self._strip :] if self._strip else frame
            if self._failed is not None:
                raise self._failed
            if self._deferred is not None:
                self._reach_framing_error(self._deferred)
            elif self._ended and self._rest:
                self._split_rest()
            elif self._ended:
                raise self._end_error or asyncio.IncompleteReadError(b"", None)
            else:
                await self._wait()

    def _split_rest(self):
        """Splits the bytes left at the end of input into the queue. A partial frame is
        the end (IncompleteReadError, unless a connection error ended the input); a
        framing error is reached after the good frames."""
        splitter = self._splitting._splitter(self._frames.append)
        try:
            splitter.feed(self._rest)
        except (FrameTooLarge, InvalidFrame) as exc:
            self._rest = splitter.pending()
            self._reach_framing_error(exc)
            return
        partial, self._rest = splitter.pending(), b""
        if partial and not self._frames:
            raise self._end_error or asyncio.IncompleteReadError(partial, splitter.expected())
        self._rest = partial

    def _reach_framing_error(self, exc):
        """The reader reached a frame in error: reported, and the connection closed, as a
        transport does with one; read_frame() raises it from now on."""
        self._deferred = None
        self._failed = exc
        if self._ended:
            self._loop.call_exception_handler(
                {
                    "message": "Fatal error: protocol.data_received() call failed.",
                    "exception": exc,
                    "transport": self._raw_transport,
                    "protocol": self,
                }
            )
        else:
            self._framing_failed(exc)

    # Raw mode.

    def _wire(self, frame):
        """A queued frame as the bytes it came as."""
        framer = self._splitting
        if isinstance(framer, Delimiter):
            return frame if framer.keep else frame + framer.delimiter
        if isinstance(framer, LengthPrefixed) and framer.strip != 0:
            return framer.encode(frame)
        return frame

    def _set_raw_mode(self):
        if self._raw is not None:
            return
        raw = bytearray()
        for frame in self._frames:
            raw += self._wire(frame)
        self._frames.clear()
        self._raw = raw
        if self._ended or self._failed is not None:
            raw += self._rest
            self._rest = b""
            self._failed = None
        else:
            # What the splitter holds follows, delivered to _on_raw: bytes it could not
            # frame (a deferred error) too.
            self._deferred = None
            self.set_raw_mode(self._on_raw)
            self._maybe_resume()
        self._wake()

    def _set_frame_mode(self):
        if self._raw is None:
            return
        rest, self._raw = bytes(self._raw), None
        if self._ended:
            self._rest = rest + self._rest
        else:
            self.set_frame_mode(rest)
        self._wake()

    def _raw_bytes(self):
        if self._raw is None:
            raise RuntimeError("the stream is in frame mode: call set_raw_mode() first")
        return self._raw

    def _take(self, n):
        raw = self._raw
        data = bytes(raw[:n])
        del raw[:n]
        self._maybe_resume()
        return data

    async def _read(self, n):
        raw = self._raw_bytes()
        if n == 0:
            return b""
        while (not raw or n < 0) and not self._ended:
            await self._wait()
            raw = self._raw_bytes()
        if raw:
            return self._take(len(raw) if n < 0 else n)
        if self._end_error is not None:
            raise self._end_error
        return b""

    async def _readexactly(self, n):
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        raw = self._raw_bytes()
        while len(raw) < n and not self._ended:
            await self._wait()
            raw = self._raw_bytes()
        if len(raw) >= n:
            return self._take(n)
        partial = self._take(len(raw))
        if self._end_error is not None:
            raise self._end_error
        raise asyncio.IncompleteReadError(partial, n)

    # Writing.

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
