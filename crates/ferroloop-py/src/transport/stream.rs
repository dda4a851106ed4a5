//! `StreamCore`: the state machine of a socket stream transport (TCP or Unix).
//!
//! The Python class `ferroloop._stream.SocketTransport` derives from `asyncio.Transport`
//! and delegates every method here (a native class cannot share a layout with asyncio's
//! `__slots__` classes, and being a real `asyncio.Transport` matters to libraries).
//!
//! Data path (all Rust): a readable fd runs `_read_ready`, which `recv`s into a reusable
//! buffer and calls `protocol.data_received(bytes)` — or, for a `BufferedProtocol`,
//! `recv`s straight into `protocol.get_buffer()` and calls `buffer_updated(n)`.
//! `write()` sends at once when nothing is queued and queues only the rest; a writable fd
//! runs `_write_ready`, which flushes the queue with one `sendmsg`. Crossing the high-water
//! mark calls `protocol.pause_writing()`, draining to the low-water mark `resume_writing()`.
//!
//! Framed protocols (`ferroloop.framing.ChunkProtocol`): when the protocol carries a
//! `FrameSplitter`, `_read_ready` `recv`s into the thread's read buffer and hands the
//! bytes to the splitter, which calls `on_chunk` once per complete frame; no `bytes` of
//! the whole read is made.
//! While those frames are delivered the transport is *corked*: `write()` queues, and the
//! replies to every frame of the read leave together in one `sendmsg` once delivery ends
//! (a pipelined client costs one send per read, not one per frame). Anything that drops
//! the queue (abort, a fatal error) first tries that send, so what `on_chunk` wrote before
//! an `abort()` still goes out as it would have at once.
//!
//! Semantics follow asyncio's selector transport: the same callbacks in the same order,
//! the same exceptions and messages. The borrow rule of the loop applies here too: `state`
//! is never borrowed across a call into Python.

use std::cell::RefCell;
use std::os::fd::RawFd;

use pyo3::exceptions::{PyBufferError, PyRuntimeError, PyTypeError};
use pyo3::gc::{PyTraverseError, PyVisit};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView};

use super::exported_buffer::ExportedBuffer;
use super::lifecycle::{
    clone_of, socket_lifecycle_pymethods, transport_core, write_flow_pymethods, FlowControl,
    Lifecycle, SocketLifecycle, TransportCore, WriteFlow,
};
use super::sized_read::{Direct, SizedRead};
use super::write_buffer::{send, send_vectored, would_block, WriteBuffer};
use crate::errors::os_error;
use crate::framing::{splitter_of, FrameSplitter};
use crate::gil_cell::GilCell;
use crate::stats::{IoStats, OpenTransport, TransportKind};

/// Bytes one `recv` asks for at most (asyncio's `max_size`).
const MAX_READ_SIZE: usize = 256 * 1024;

/// Buffers one `write`/`writelines` hands to a single `sendmsg` at most (well under the
/// kernel's `IOV_MAX`); the rest is queued and goes out with the writer watch.
const MAX_SEND_SLICES: usize = 64;

thread_local! {
    /// One read buffer per loop thread: reads never nest, and the bytes are copied out
    /// (only as many as arrived) before any Python code runs.
    pub(crate) static READ_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_READ_SIZE]);
}

/// How incoming bytes reach the protocol.
enum Receiver {
    /// `protocol.data_received`, cached.
    Data(Py<PyAny>),
    /// `protocol.get_buffer` and `protocol.buffer_updated`, cached.
    Buffered(Py<PyAny>, Py<PyAny>),
    /// A framed protocol's splitter: bytes are received into it and split in Rust.
    Framed(Py<FrameSplitter>),
}

struct StreamState {
    /// The Python socket; `None` once the connection is lost and the socket closed.
    sock: Option<Py<PyAny>>,
    /// The `asyncio.Transport` object users see; handed to the protocol and in error
    /// contexts. Dropped at connection_lost, which breaks the owner <-> core cycle.
    owner: Option<Py<PyAny>>,
    /// The loop (the Python `ferroloop.Loop`); `None` after connection_lost.
    event_loop: Option<Py<PyAny>>,
    protocol: Option<Py<PyAny>>,
    receiver: Option<Receiver>,
    server: Option<Py<PyAny>>,
    buffer: WriteBuffer,
    flow: FlowControl,
    lifecycle: Lifecycle,
    /// write_eof() was called.
    eof: bool,
    /// Frames of one read are being delivered: `write()` queues without sending. `Some`
    /// holds whether the queue was empty (no writer watch) when delivery began.
    cork: Option<bool>,
    /// Set while `loop.sendfile` owns the socket: resolved when the queue drains, and
    /// write() refuses data meanwhile.
    empty_waiter: Option<Py<PyAny>>,
    /// The context every callback of the transport runs in (`TransportCore::context`);
    /// given on Python 3.15+ only, where asyncio's socket transports have one.
    context: Option<Py<PyAny>>,
    /// Counts the transport as open in its loop's `stats()` until connection_lost.
    open: Option<OpenTransport>,
}

/// The Rust half of a socket stream transport.
#[pyclass(module = "ferroloop._core", frozen)]
pub struct StreamCore {
    fd: RawFd,
    /// The loop's byte counters (None for a loop that is not ferroloop's).
    io: Option<std::sync::Arc<IoStats>>,
    /// Whether `data_received` reads go straight into a `bytes` of their size.
    sized: SizedRead,
    state: GilCell<StreamState>,
}

fn receiver_for(protocol: &Bound<'_, PyAny>) -> PyResult<Receiver> {
    let py = protocol.py();
    let buffered = py
        .import("asyncio")?
        .getattr(intern!(py, "BufferedProtocol"))?;
    if protocol.is_instance(&buffered)? {
        Ok(Receiver::Buffered(
            protocol.getattr(intern!(py, "get_buffer"))?.unbind(),
            protocol.getattr(intern!(py, "buffer_updated"))?.unbind(),
        ))
    } else if let Some(splitter) = splitter_of(protocol) {
        Ok(Receiver::Framed(splitter))
    } else {
        Ok(Receiver::Data(
            protocol.getattr(intern!(py, "data_received"))?.unbind(),
        ))
    }
}

/// What `_read_ready` got from the socket.
enum ReadOutcome {
    Data(Py<PyBytes>),
    Filled(usize),
    /// Bytes went into a framed protocol's splitter.
    Received,
    Eof,
    NotReady,
    Failed(std::io::Error),
    /// get_buffer()'s result cannot be read into (read-only, not contiguous): the error
    /// asyncio's `sock.recv_into(buf)` raises there.
    Refused(PyErr),
}

transport_core!(StreamCore; context);

impl WriteFlow for StreamCore {
    fn with_flow<R>(&self, py: Python<'_>, f: impl FnOnce(&mut FlowControl, usize) -> R) -> R {
        let mut state = self.state.borrow_mut(py);
        let queued = state.buffer.len();
        f(&mut state.flow, queued)
    }
}

impl SocketLifecycle for StreamCore {
    type Queue = WriteBuffer;

    const LOGS_FATAL_OS_ERRORS: bool = true;

    fn with_lifecycle<R>(&self, py: Python<'_>, f: impl FnOnce(&mut Lifecycle, bool) -> R) -> R {
        let mut state = self.state.borrow_mut(py);
        let queue_empty = state.buffer.is_empty();
        f(&mut state.lifecycle, queue_empty)
    }

    fn take_queue(&self, py: Python<'_>) -> WriteBuffer {
        let mut state = self.state.borrow_mut(py);
        if state.cork.is_some() {
            // What on_chunk wrote would have been sent at once without the cork.
            let _ = state.buffer.flush(py, self.fd);
        }
        state.buffer.take()
    }
}

impl StreamCore {
    fn call_protocol(
        &self,
        py: Python<'_>,
        name: &Bound<'_, pyo3::types::PyString>,
    ) -> PyResult<Option<Py<PyAny>>> {
        match self.protocol(py) {
            Some(protocol) => Ok(Some(protocol.call_method0(py, name)?)),
            None => Ok(None),
        }
    }

    fn read(&self, py: Python<'_>, receiver: &Receiver) -> PyResult<ReadOutcome> {
        match receiver {
            Receiver::Data(_) => {
                match self
                    .sized
                    .try_read(py, self.fd, MAX_READ_SIZE, |n| self.count_read(n))
                {
                    Direct::Declined => {}
                    Direct::Data(bytes) => return Ok(ReadOutcome::Data(bytes)),
                    Direct::Eof => return Ok(ReadOutcome::Eof),
                    Direct::Error(err) if would_block(&err) => return Ok(ReadOutcome::NotReady),
                    Direct::Error(err) => return Ok(ReadOutcome::Failed(err)),
                    Direct::Failed(err) => return Ok(ReadOutcome::Refused(err)),
                }
                Ok(READ_BUFFER.with_borrow_mut(|buf| {
                    // SAFETY: `buf` is a valid writable region of `buf.len()` bytes.
                    let n = unsafe { libc::recv(self.fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                    self.count_read(n);
                    self.sized.note(n);
                    classify(n, |n| {
                        ReadOutcome::Data(PyBytes::new(py, &buf[..n]).unbind())
                    })
                }))
            }
            Receiver::Buffered(get_buffer, _) => {
                let target = get_buffer.call1(py, (-1,))?;
                // asyncio's order: `len(buf)` (its errors and an empty buffer are
                // get_buffer() failures), then `recv_into(buf)`, which refuses a buffer it
                // cannot write into contiguously with a TypeError.
                if target.bind(py).len()? == 0 {
                    return Err(PyRuntimeError::new_err(
                        "get_buffer() returned an empty buffer",
                    ));
                }
                let mut buffer = match ExportedBuffer::writable(target.bind(py)) {
                    Ok(buffer) => buffer,
                    Err(_) => {
                        let kind = target.bind(py).get_type().name()?;
                        return Ok(ReadOutcome::Refused(PyTypeError::new_err(format!(
                            "recv_into() argument 1 must be read-write bytes-like object, \
                             not {kind}"
                        ))));
                    }
                };
                let room = buffer.as_mut_slice();
                if room.is_empty() {
                    return Err(PyRuntimeError::new_err(
                        "get_buffer() returned an empty buffer",
                    ));
                }
                // SAFETY: `room` is a valid writable region of `room.len()` bytes.
                let n = unsafe { libc::recv(self.fd, room.as_mut_ptr().cast(), room.len(), 0) };
                self.count_read(n);
                Ok(classify(n, ReadOutcome::Filled))
            }
            Receiver::Framed(splitter) => Ok(match splitter.get().receive(py, self.fd) {
                Ok(0) => ReadOutcome::Eof,
                Ok(n) => {
                    self.count_read(n as isize);
                    ReadOutcome::Received
                }
                Err(err) if would_block(&err) => ReadOutcome::NotReady,
                Err(err) => ReadOutcome::Failed(err),
            }),
        }
    }

    fn on_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let keep_open = match slf.get().call_protocol(py, intern!(py, "eof_received")) {
            Ok(result) => match result {
                Some(value) => value.bind(py).is_truthy()?,
                None => false,
            },
            Err(err) => {
                return Self::fatal_error(
                    slf,
                    err,
                    "Fatal error: protocol.eof_received() call failed.",
                );
            }
        };
        if keep_open {
            // Half-closed: the peer sends no more, we may still write.
            slf.get().unwatch(py, intern!(py, "_remove_reader"))
        } else {
            Self::close(slf)
        }
    }
}

/// Resolves the sendfile waiter unless it is already done (a drained queue may have
/// resolved it before the connection was lost).
fn settle(py: Python<'_>, waiter: &Py<PyAny>, outcome: Result<(), Py<PyAny>>) -> PyResult<()> {
    if waiter
        .call_method0(py, intern!(py, "done"))?
        .bind(py)
        .is_truthy()?
    {
        return Ok(());
    }
    match outcome {
        Ok(()) => waiter.call_method1(py, intern!(py, "set_result"), (py.None(),))?,
        Err(exc) => waiter.call_method1(py, intern!(py, "set_exception"), (exc,))?,
    };
    Ok(())
}

fn classify(n: isize, ok: impl FnOnce(usize) -> ReadOutcome) -> ReadOutcome {
    if n > 0 {
        ok(n as usize)
    } else if n == 0 {
        ReadOutcome::Eof
    } else {
        let err = std::io::Error::last_os_error();
        if would_block(&err) {
            ReadOutcome::NotReady
        } else {
            ReadOutcome::Failed(err)
        }
    }
}

/// The bytes of a `write()` argument: `bytes` is kept by reference; a `bytearray` or a
/// C-contiguous `memoryview` is read in place while the call lasts, and only what the
/// socket does not take at once is copied. A memoryview that is not C-contiguous is
/// `Strided`: `socket.send` refuses it, so asyncio's `write()` fails with a `BufferError`
/// instead of sending its bytes.
enum Payload {
    Shared(Py<PyBytes>),
    Exported(ExportedBuffer),
    Strided { empty: bool },
}

impl Payload {
    /// The bytes to send (none for a strided view, which is never sent).
    fn bytes<'a>(&'a self, py: Python<'a>) -> &'a [u8] {
        match self {
            Payload::Shared(b) => b.as_bytes(py),
            Payload::Exported(view) => view.as_slice(),
            Payload::Strided { .. } => &[],
        }
    }
}

/// What `write()`/`writelines()` leave to the queue once the socket took `sent` bytes:
/// `bytes` objects by reference (the first one possibly started), other buffers copied.
/// Made before any call into Python, so no export outlives the send.
struct Unsent {
    started: Option<(Py<PyBytes>, usize)>,
    rest: Vec<Unsent1>,
}

enum Unsent1 {
    Shared(Py<PyBytes>),
    Owned(Vec<u8>),
}

impl Unsent {
    fn after(
        py: Python<'_>,
        payloads: impl IntoIterator<Item = Payload>,
        mut sent: usize,
    ) -> Unsent {
        let mut unsent = Unsent {
            started: None,
            rest: Vec::new(),
        };
        for payload in payloads {
            let len = payload.bytes(py).len();
            if sent >= len {
                sent -= len;
                continue;
            }
            match payload {
                Payload::Shared(b) if sent > 0 => unsent.started = Some((b, sent)),
                Payload::Shared(b) => unsent.rest.push(Unsent1::Shared(b)),
                Payload::Exported(view) => unsent
                    .rest
                    .push(Unsent1::Owned(view.as_slice()[sent..].to_vec())),
                Payload::Strided { .. } => {}
            }
            sent = 0;
        }
        unsent
    }

    fn queue(self, py: Python<'_>, buffer: &mut WriteBuffer) {
        if let Some((b, sent)) = self.started {
            let total = b.as_bytes(py).len();
            buffer.push_shared_tail(py, b, total, sent);
        }
        for piece in self.rest {
            match piece {
                Unsent1::Shared(b) => {
                    let len = b.as_bytes(py).len();
                    buffer.push_shared(b, len);
                }
                Unsent1::Owned(v) => buffer.push_owned(v),
            }
        }
    }
}

/// The error `socket.send` raises for a memoryview that is not C-contiguous.
fn strided_error() -> PyErr {
    PyBufferError::new_err("memoryview: underlying buffer is not C-contiguous")
}

/// True on Python 3.12+, whose asyncio queues `write()`'s data as memoryviews (3.11
/// extends a bytearray) and whose `writelines()` is its own (3.11: `write(b''.join(...))`).
fn queues_views(py: Python<'_>) -> bool {
    static QUEUES_VIEWS: PyOnceLock<bool> = PyOnceLock::new();
    *QUEUES_VIEWS.get_or_init(py, || py.version_info() >= (3, 12))
}

/// True on Python 3.15+, whose asyncio `writelines()` queues each item as it takes it, so
/// an item that is not a buffer fails the call with the items before it queued (3.12 to
/// 3.14 take them all first and queue nothing when one fails).
fn queues_items_one_by_one(py: Python<'_>) -> bool {
    static ONE_BY_ONE: PyOnceLock<bool> = PyOnceLock::new();
    *ONE_BY_ONE.get_or_init(py, || py.version_info() >= (3, 15))
}

/// Every non-empty item of `list_of_data` as asyncio's `memoryview(item)` takes it (a
/// `bytes` kept as it is: it needs no view to be sent), pushed onto `items` in order, so
/// that when one is no buffer, `items` holds those taken before it.
fn items_of<'py>(
    list_of_data: &Bound<'py, PyAny>,
    items: &mut Vec<Bound<'py, PyAny>>,
) -> PyResult<()> {
    let py = list_of_data.py();
    let memoryview = py.import("builtins")?.getattr(intern!(py, "memoryview"))?;
    for item in list_of_data.try_iter()? {
        let item = item?;
        if !item.is_truthy()? {
            continue;
        }
        if item.is_exact_instance_of::<PyBytes>() {
            items.push(item);
        } else {
            items.push(memoryview.call1((item,))?);
        }
    }
    Ok(())
}

fn payload(data: &Bound<'_, PyAny>) -> PyResult<Payload> {
    if let Ok(bytes) = data.cast::<PyBytes>() {
        return Ok(Payload::Shared(bytes.clone().unbind()));
    }
    if data.is_instance_of::<PyMemoryView>()
        && !data
            .getattr(intern!(data.py(), "c_contiguous"))?
            .is_truthy()?
    {
        return Ok(Payload::Strided {
            empty: !data.is_truthy()?,
        });
    }
    if data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>() {
        return Ok(Payload::Exported(ExportedBuffer::readable(data)?));
    }
    Err(not_a_buffer_error(data))
}

/// The `TypeError` asyncio's socket transports raise for a `write()` of something that is
/// not bytes, a bytearray or a memoryview; Python 3.14 reworded it to name those types.
fn not_a_buffer_error(data: &Bound<'_, PyAny>) -> PyErr {
    let py = data.py();
    static NAMES_THE_TYPES: PyOnceLock<bool> = PyOnceLock::new();
    let kind = if *NAMES_THE_TYPES.get_or_init(py, || py.version_info() >= (3, 14)) {
        "a bytes, bytearray, or memoryview object"
    } else {
        "a bytes-like object"
    };
    match data.get_type().name() {
        Ok(name) => PyTypeError::new_err(format!("data argument must be {kind}, not '{name}'")),
        Err(err) => err,
    }
}

write_flow_pymethods!(StreamCore);
socket_lifecycle_pymethods!(StreamCore);

#[pymethods]
impl StreamCore {
    /// `StreamCore(loop, sock, protocol, owner, server=None, context=None)`.
    #[new]
    #[pyo3(signature = (event_loop, sock, protocol, owner, server = None, context = None))]
    fn py_new(
        event_loop: Py<PyAny>,
        sock: Bound<'_, PyAny>,
        protocol: Bound<'_, PyAny>,
        owner: Py<PyAny>,
        server: Option<Py<PyAny>>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let fd: RawFd = sock.call_method0("fileno")?.extract()?;
        let receiver = receiver_for(&protocol)?;
        let open = OpenTransport::register(event_loop.bind(sock.py()), TransportKind::Stream);
        Ok(StreamCore {
            fd,
            io: open.as_ref().map(|o| o.io_arc()),
            sized: SizedRead::default(),
            state: GilCell::new(StreamState {
                sock: Some(sock.unbind()),
                owner: Some(owner),
                event_loop: Some(event_loop),
                protocol: Some(protocol.unbind()),
                receiver: Some(receiver),
                server,
                buffer: WriteBuffer::default(),
                flow: FlowControl::default(),
                lifecycle: Lifecycle::default(),
                eof: false,
                cork: None,
                empty_waiter: None,
                context,
                open,
            }),
        })
    }

    /// The socket's fd.
    #[getter]
    fn fd(&self) -> RawFd {
        self.fd
    }

    /// The Python socket, or None once closed.
    #[getter]
    fn sock(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state
            .borrow_mut(py)
            .sock
            .as_ref()
            .map(|s| s.clone_ref(py))
    }

    /// Called by the loop when the fd is readable.
    fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let receiver = {
            let state = this.state.borrow_mut(py);
            if state.lifecycle.conn_lost > 0 {
                return Ok(());
            }
            match &state.receiver {
                Some(Receiver::Data(cb)) => Receiver::Data(cb.clone_ref(py)),
                Some(Receiver::Buffered(g, u)) => {
                    Receiver::Buffered(g.clone_ref(py), u.clone_ref(py))
                }
                Some(Receiver::Framed(splitter)) => Receiver::Framed(splitter.clone_ref(py)),
                None => return Ok(()),
            }
        };
        let outcome = match this.read(py, &receiver) {
            Ok(outcome) => outcome,
            Err(err) => {
                return Self::fatal_error(
                    slf,
                    err,
                    "Fatal error: protocol.get_buffer() call failed.",
                );
            }
        };
        match (outcome, &receiver) {
            (ReadOutcome::NotReady, _) => Ok(()),
            (ReadOutcome::Failed(err), _) => {
                Self::fatal_error(slf, os_error(err), "Fatal read error on socket transport")
            }
            (ReadOutcome::Refused(err), _) => {
                Self::fatal_error(slf, err, "Fatal read error on socket transport")
            }
            (ReadOutcome::Eof, _) => Self::on_eof(slf),
            (ReadOutcome::Data(data), Receiver::Data(data_received)) => {
                match data_received.call1(py, (data,)) {
                    Ok(_) => Ok(()),
                    Err(err) => Self::fatal_error(
                        slf,
                        err,
                        "Fatal error: protocol.data_received() call failed.",
                    ),
                }
            }
            (ReadOutcome::Filled(n), Receiver::Buffered(_, buffer_updated)) => {
                match buffer_updated.call1(py, (n,)) {
                    Ok(_) => Ok(()),
                    Err(err) => Self::fatal_error(
                        slf,
                        err,
                        "Fatal error: protocol.buffer_updated() call failed.",
                    ),
                }
            }
            (ReadOutcome::Received, Receiver::Framed(splitter)) => {
                let was_empty = {
                    let mut state = this.state.borrow_mut(py);
                    let was_empty = state.buffer.is_empty();
                    state.cork = Some(was_empty);
                    was_empty
                };
                let delivered = splitter.get().deliver(py);
                this.state.borrow_mut(py).cork = None;
                Self::uncork(slf, was_empty)?;
                match delivered {
                    Ok(()) => Ok(()),
                    Err(err) => Self::fatal_error(
                        slf,
                        err,
                        "Fatal error: protocol.data_received() call failed.",
                    ),
                }
            }
            _ => Ok(()),
        }
    }

    /// Sends `data` at once if nothing is queued; queues what the socket does not take.
    pub(crate) fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let payload = payload(data)?;
        let (queue_empty, conn_lost) = {
            let state = this.state.borrow_mut(py);
            if state.eof {
                return Err(PyRuntimeError::new_err(
                    "Cannot call write() after write_eof()",
                ));
            }
            if state.empty_waiter.is_some() {
                return Err(PyRuntimeError::new_err(
                    "unable to write; sendfile is in progress",
                ));
            }
            (state.buffer.is_empty(), state.lifecycle.conn_lost)
        };
        if let Payload::Strided { empty } = payload {
            if empty {
                return Ok(());
            }
            if conn_lost > 0 {
                return this.count_lost_write(py, conn_lost);
            }
            if !queue_empty && !queues_views(py) {
                // asyncio 3.11 extends its bytearray queue with it, which fails.
                return Err(PyTypeError::new_err(
                    "can't set bytearray slice from memoryview",
                ));
            }
            // asyncio's send() (3.12+: its sendmsg() of the queue) fails with it.
            return Self::fatal_error(
                slf,
                strided_error(),
                "Fatal write error on socket transport",
            );
        }
        Self::send_or_queue(slf, [payload])
    }

    /// Writes every buffer of `list_of_data`, flushing them together.
    ///
    /// Python 3.11's asyncio writes `b''.join(list_of_data)` (so its errors are `join`'s);
    /// 3.12+ checks its own state first and takes each item as a memoryview. Here the
    /// buffers go out with one `sendmsg` straight from the objects; only what the socket
    /// does not take is queued (`bytes` by reference, other buffers copied).
    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        if !queues_views(py) {
            let joined =
                PyBytes::new(py, b"").call_method1(intern!(py, "join"), (list_of_data,))?;
            return Self::write(slf, &joined);
        }
        let this = slf.get();
        let conn_lost = {
            let state = this.state.borrow_mut(py);
            if state.eof {
                return Err(PyRuntimeError::new_err(
                    "Cannot call writelines() after write_eof()",
                ));
            }
            if state.empty_waiter.is_some() {
                return Err(PyRuntimeError::new_err(
                    "unable to writelines; sendfile is in progress",
                ));
            }
            state.lifecycle.conn_lost
        };
        if !list_of_data.is_truthy()? {
            return Ok(());
        }
        if conn_lost > 0 {
            return this.count_lost_write(py, conn_lost);
        }
        // Every item becomes a memoryview first, as asyncio does, so an item that is no
        // buffer fails before anything is sent (3.15 keeps the items before it queued).
        let mut items = Vec::new();
        if let Err(err) = items_of(list_of_data, &mut items) {
            if queues_items_one_by_one(py) {
                Self::queue_unsent(slf, &items)?;
            }
            return Err(err);
        }
        let mut payloads = Vec::with_capacity(items.len());
        for item in &items {
            if let Ok(bytes) = item.cast_exact::<PyBytes>() {
                payloads.push(Payload::Shared(bytes.clone().unbind()));
                continue;
            }
            if !item.getattr(intern!(py, "c_contiguous"))?.is_truthy()? {
                drop(payloads);
                return Self::fatal_error(
                    slf,
                    strided_error(),
                    "Fatal write error on socket transport",
                );
            }
            payloads.push(Payload::Exported(ExportedBuffer::readable(item)?));
        }
        drop(items);
        let behind_queued = {
            let state = this.state.borrow_mut(py);
            !state.buffer.is_empty() && state.cork.is_none()
        };
        if !behind_queued {
            return Self::send_or_queue(slf, payloads);
        }
        // asyncio queues behind what is queued and flushes at once: a queue a failed
        // writelines() left unsent (3.15) has no writer watch until this call.
        Unsent::after(py, payloads, 0).queue(py, &mut this.state.borrow_mut(py).buffer);
        Self::_write_ready(slf)?;
        if this.state.borrow_mut(py).buffer.is_empty() {
            return Ok(());
        }
        Self::watch(slf, intern!(py, "_add_writer"), "_write_ready")?;
        this.maybe_pause_protocol(py)
    }

    /// Called by the loop when the fd is writable and output is queued.
    fn _write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let outcome = {
            let mut state = this.state.borrow_mut(py);
            if state.lifecycle.conn_lost > 0 {
                return Ok(());
            }
            state.buffer.flush(py, this.fd)
        };
        match outcome {
            Ok(n) => this.count_written(n),
            Err(err) if would_block(&err) => return Ok(()),
            Err(err) => {
                let (dropped, waiter) = {
                    let mut state = this.state.borrow_mut(py);
                    let waiter = state.empty_waiter.as_ref().map(|w| w.clone_ref(py));
                    (state.buffer.take(), waiter)
                };
                drop(dropped);
                this.unwatch(py, intern!(py, "_remove_writer"))?;
                let err = os_error(err);
                if let Some(waiter) = waiter {
                    let exc = err.clone_ref(py).into_value(py);
                    settle(py, &waiter, Err(exc.into_any()))?;
                }
                return Self::fatal_error(slf, err, "Fatal write error on socket transport");
            }
        }
        this.maybe_resume_protocol(py)?;
        let drained = this.state.borrow_mut(py).buffer.is_empty();
        if !drained {
            return Ok(());
        }
        this.unwatch(py, intern!(py, "_remove_writer"))?;
        Self::after_drain(slf)
    }

    /// Half-closes after the queued output is sent.
    fn write_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let drained = {
            let mut state = this.state.borrow_mut(py);
            if state.lifecycle.closing || state.eof {
                return Ok(());
            }
            state.eof = true;
            state.buffer.is_empty()
        };
        if drained {
            this.shutdown_write(py)?;
        }
        Ok(())
    }

    /// Stream sockets can half-close.
    fn can_write_eof(&self) -> bool {
        true
    }

    /// Switches the protocol that receives data and events.
    fn set_protocol(&self, py: Python<'_>, protocol: Bound<'_, PyAny>) -> PyResult<()> {
        let receiver = receiver_for(&protocol)?;
        let old = {
            let mut state = self.state.borrow_mut(py);
            (
                state.protocol.replace(protocol.unbind()),
                state.receiver.replace(receiver),
            )
        };
        drop(old);
        Ok(())
    }

    /// The current protocol.
    fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.protocol(py)
    }

    /// Calls protocol.connection_lost(exc), closes the socket and detaches from the server.
    #[pyo3(signature = (exc = None))]
    fn _call_connection_lost(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (protocol, waiter) = {
            let mut state = this.state.borrow_mut(py);
            let protocol = state.protocol.as_ref().map(|p| p.clone_ref(py));
            (protocol, state.empty_waiter.take())
        };
        if let Some(waiter) = waiter {
            // A sendfile in progress learns that the connection is gone.
            let lost = pyo3::exceptions::PyConnectionError::new_err("Connection is closed by peer");
            settle(py, &waiter, Err(lost.into_value(py).into_any()))?;
        }
        let result = match protocol {
            Some(protocol) => protocol
                .call_method1(py, intern!(py, "connection_lost"), (exc,))
                .map(drop),
            None => Ok(()),
        };
        let released = {
            let mut state = this.state.borrow_mut(py);
            (
                state.sock.take(),
                state.protocol.take(),
                state.receiver.take(),
                state.event_loop.take(),
                state.server.take(),
                state.owner.take(),
            )
        };
        let open = this.state.borrow_mut(py).open.take();
        drop(open);
        let (sock, protocol, receiver, event_loop, server, owner) = released;
        let closed = match &sock {
            Some(sock) => sock.call_method0(py, intern!(py, "close")).map(drop),
            None => Ok(()),
        };
        let detached = match &server {
            Some(server) => server
                .call_method1(
                    py,
                    intern!(py, "_detach"),
                    (owner.as_ref().map(|o| o.clone_ref(py)),),
                )
                .map(drop),
            None => Ok(()),
        };
        drop((sock, protocol, receiver, event_loop, server, owner));
        result.and(closed).and(detached)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(state) = self.state.try_borrow_in_gc() else {
            return Ok(());
        };
        visit.call(&state.sock)?;
        visit.call(&state.owner)?;
        visit.call(&state.event_loop)?;
        visit.call(&state.protocol)?;
        visit.call(&state.server)?;
        visit.call(&state.empty_waiter)?;
        visit.call(&state.context)?;
        match &state.receiver {
            Some(Receiver::Data(callback)) => visit.call(callback)?,
            Some(Receiver::Buffered(get_buffer, updated)) => {
                visit.call(get_buffer)?;
                visit.call(updated)?;
            }
            Some(Receiver::Framed(splitter)) => visit.call(splitter)?,
            None => {}
        }
        Ok(())
    }

    /// Breaks the owner <-> core cycle of an abandoned transport. The socket stays, so
    /// the owner's finalizer (which runs first) can warn and close it.
    fn __clear__(&self) {
        let released = self.state.try_borrow_in_gc().map(|mut state| {
            (
                state.owner.take(),
                state.event_loop.take(),
                state.protocol.take(),
                state.receiver.take(),
                state.server.take(),
                state.empty_waiter.take(),
                state.context.take(),
            )
        });
        drop(released);
    }

    /// A future resolved once the write queue is empty (for `loop.sendfile`); write()
    /// refuses data until `_reset_empty_waiter()`.
    fn _make_empty_waiter(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let (event_loop, drained) = {
            let state = self.state.borrow_mut(py);
            if state.empty_waiter.is_some() {
                return Err(PyRuntimeError::new_err("Empty waiter is already set"));
            }
            (
                state.event_loop.as_ref().map(|l| l.clone_ref(py)),
                state.buffer.is_empty(),
            )
        };
        let event_loop =
            event_loop.ok_or_else(|| PyRuntimeError::new_err("Transport is closed"))?;
        let waiter = event_loop.call_method0(py, intern!(py, "create_future"))?;
        if drained {
            settle(py, &waiter, Ok(()))?;
        }
        self.state.borrow_mut(py).empty_waiter = Some(waiter.clone_ref(py));
        Ok(waiter)
    }

    /// Forgets the sendfile waiter; write() accepts data again.
    fn _reset_empty_waiter(&self, py: Python<'_>) {
        let old = self.state.borrow_mut(py).empty_waiter.take();
        drop(old);
    }

    /// A short description for the owner's repr: `fd=6 read=polling write=<idle, bufsize=0>`.
    fn _describe(&self, py: Python<'_>) -> String {
        let state = self.state.borrow_mut(py);
        if state.sock.is_none() {
            return "closed".into();
        }
        let mut text = String::new();
        if state.lifecycle.closing {
            text.push_str("closing ");
        }
        text.push_str(&format!("fd={}", self.fd));
        let reading = if !state.lifecycle.closing && !state.lifecycle.reading_paused {
            "polling"
        } else {
            "idle"
        };
        text.push_str(&format!(" read={reading}"));
        let writing = if state.buffer.is_empty() {
            "idle"
        } else {
            "polling"
        };
        text.push_str(&format!(
            " write=<{writing}, bufsize={}>",
            state.buffer.len()
        ));
        text
    }
}

impl StreamCore {
    /// The data path of `write()`/`writelines()` once their checks passed: sends
    /// `payloads` with one `send`/`sendmsg` when nothing is queued (and the transport is
    /// not corked), then queues what the socket did not take, after asking the loop to
    /// watch for writability (so a loop that refuses leaves nothing queued).
    fn send_or_queue<P>(slf: &Bound<'_, Self>, payloads: P) -> PyResult<()>
    where
        P: AsRef<[Payload]> + IntoIterator<Item = Payload>,
    {
        let py = slf.py();
        let this = slf.get();
        let total: usize = payloads.as_ref().iter().map(|p| p.bytes(py).len()).sum();
        if total == 0 {
            return Ok(());
        }
        let (queue_empty, conn_lost, corked) = {
            let state = this.state.borrow_mut(py);
            (
                state.buffer.is_empty(),
                state.lifecycle.conn_lost,
                state.cork.is_some(),
            )
        };
        if conn_lost > 0 {
            return this.count_lost_write(py, conn_lost);
        }
        if corked || !queue_empty {
            let unsent = Unsent::after(py, payloads, 0);
            unsent.queue(py, &mut this.state.borrow_mut(py).buffer);
            if corked {
                return Ok(());
            }
            return this.maybe_pause_protocol(py);
        }
        let outcome = if let [single] = payloads.as_ref() {
            // One buffer (every write()): no slice list to allocate.
            send(this.fd, single.bytes(py))
        } else {
            let slices: Vec<&[u8]> = payloads
                .as_ref()
                .iter()
                .map(|p| p.bytes(py))
                .filter(|b| !b.is_empty())
                .take(MAX_SEND_SLICES)
                .collect();
            send_vectored(this.fd, &slices)
        };
        let sent = match outcome {
            Ok(n) => {
                this.count_written(n);
                n
            }
            Err(err) if would_block(&err) => 0,
            Err(err) => {
                drop(payloads);
                return Self::fatal_error(
                    slf,
                    os_error(err),
                    "Fatal write error on socket transport",
                );
            }
        };
        if sent == total {
            return Ok(());
        }
        let unsent = Unsent::after(py, payloads, sent);
        // Before queueing, as asyncio does: when the loop refuses the watch (it is
        // closed), nothing stays queued that would never be sent, and the next write()
        // tries again and raises again.
        Self::watch(slf, intern!(py, "_add_writer"), "_write_ready")?;
        unsent.queue(py, &mut this.state.borrow_mut(py).buffer);
        this.maybe_pause_protocol(py)
    }

    /// Sends `parts` in order, queued behind what is queued already, with one `sendmsg`
    /// and without joining them: a framed protocol's `write_chunks`, whose large payloads
    /// stay where they are. Checks and errors are those of `writelines()` (3.11: of the
    /// `write()` its `writelines()` makes).
    pub(crate) fn write_parts(slf: &Bound<'_, Self>, parts: &[Py<PyBytes>]) -> PyResult<()> {
        let py = slf.py();
        let name = if queues_views(py) {
            "writelines"
        } else {
            "write"
        };
        {
            let state = slf.get().state.borrow_mut(py);
            if state.eof {
                return Err(PyRuntimeError::new_err(format!(
                    "Cannot call {name}() after write_eof()"
                )));
            }
            if state.empty_waiter.is_some() {
                return Err(PyRuntimeError::new_err(format!(
                    "unable to {name}; sendfile is in progress"
                )));
            }
        }
        let payloads: Vec<Payload> = parts
            .iter()
            .map(|part| Payload::Shared(part.clone_ref(py)))
            .collect();
        Self::send_or_queue(slf, payloads)
    }

    /// Queues what Python 3.15's `writelines()` took before an item failed: unsent, with
    /// no writer watch and no pause_writing(), as asyncio leaves it. A view that is not
    /// contiguous fails as asyncio's flush of it would, at once.
    fn queue_unsent(slf: &Bound<'_, Self>, items: &[Bound<'_, PyAny>]) -> PyResult<()> {
        let py = slf.py();
        let mut payloads = Vec::with_capacity(items.len());
        for item in items {
            match payload(item)? {
                Payload::Strided { .. } => {
                    drop(payloads);
                    return Self::fatal_error(
                        slf,
                        strided_error(),
                        "Fatal write error on socket transport",
                    );
                }
                other => payloads.push(other),
            }
        }
        Unsent::after(py, payloads, 0).queue(py, &mut slf.get().state.borrow_mut(py).buffer);
        Ok(())
    }

    /// The queue just drained (writer watch already off): resolve the sendfile waiter,
    /// then finish a close() or write_eof() that waited for it.
    fn after_drain(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (waiter, closing, eof) = {
            let state = this.state.borrow_mut(py);
            (
                clone_of(py, &state.empty_waiter),
                state.lifecycle.closing,
                state.eof,
            )
        };
        if let Some(waiter) = waiter {
            settle(py, &waiter, Ok(()))?;
        }
        if closing {
            Self::_call_connection_lost(slf, None)?;
        } else if eof {
            this.shutdown_write(py)?;
        }
        Ok(())
    }

    /// Sends what was written while the transport was corked (see the module
    /// documentation); `was_empty` tells whether the queue was empty when the cork began.
    /// If it was not, the writer watch is on and flushes it all in order.
    fn uncork(slf: &Bound<'_, Self>, was_empty: bool) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if !was_empty {
            return this.maybe_pause_protocol(py);
        }
        let outcome = {
            let mut state = this.state.borrow_mut(py);
            if state.lifecycle.conn_lost > 0 || state.buffer.is_empty() {
                return Ok(());
            }
            state.buffer.flush(py, this.fd)
        };
        match outcome {
            Ok(_) => {}
            Err(err) if would_block(&err) => {}
            Err(err) => {
                let dropped = this.state.borrow_mut(py).buffer.take();
                drop(dropped);
                return Self::fatal_error(
                    slf,
                    os_error(err),
                    "Fatal write error on socket transport",
                );
            }
        }
        if this.state.borrow_mut(py).buffer.is_empty() {
            return Self::after_drain(slf);
        }
        Self::watch(slf, intern!(py, "_add_writer"), "_write_ready")?;
        this.maybe_pause_protocol(py)
    }

    fn shutdown_write(&self, py: Python<'_>) -> PyResult<()> {
        let sock = self
            .state
            .borrow_mut(py)
            .sock
            .as_ref()
            .map(|s| s.clone_ref(py));
        if let Some(sock) = sock {
            let shut_wr = py.import("socket")?.getattr("SHUT_WR")?;
            sock.call_method1(py, "shutdown", (shut_wr,))?;
        }
        Ok(())
    }
}

impl StreamCore {
    /// Counts what a `recv` returned (nothing for an error or EOF).
    #[inline]
    fn count_read(&self, n: isize) {
        if let (Some(io), true) = (&self.io, n > 0) {
            io.read(n as usize);
        }
    }

    /// Counts bytes the socket accepted.
    #[inline]
    pub(crate) fn count_written(&self, n: usize) {
        if let Some(io) = &self.io {
            io.written(n);
        }
    }
}
