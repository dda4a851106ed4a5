//! `ReadPipeCore` and `WritePipeCore`: the state machines of the pipe transports.
//!
//! The Python classes `ferroloop._pipes.ReadPipeTransport` (an `asyncio.ReadTransport`)
//! and `WritePipeTransport` (an `asyncio.WriteTransport`) delegate every method here, as
//! the socket transport delegates to `StreamCore`. They serve `connect_read_pipe`,
//! `connect_write_pipe` and the pipes of subprocesses.
//!
//! Semantics follow asyncio's `_UnixReadPipeTransport` and `_UnixWritePipeTransport`:
//!
//! * reading: `read(2)` of up to 256 KiB into the loop thread's buffer, one `bytes` to
//!   `protocol.data_received`; end of file schedules `eof_received()` then
//!   `connection_lost(None)`; a read error is fatal (`EIO`, what a pty reports when its
//!   other side closes, is not reported to the exception handler) and ends with
//!   `connection_lost(exc)`.
//! * framed reading (`ferroloop.framing.ChunkProtocol`, and a `SubprocessChunkProtocol`'s
//!   pipes): when the protocol carries a `FrameSplitter`, the bytes read are appended to
//!   it and it calls `on_chunk` once per complete frame, no `bytes` of the whole read made.
//!   A delivery error (from `on_chunk`, or a frame over the limit) goes to the protocol's
//!   `_framing_failed(exc)`, which reports and closes as the protocol's own `data_received`
//!   does on any other loop's pipes (asyncio's read pipes would only log it).
//! * writing: `write(2)` at once when nothing is queued, the rest queued (`bytes` by
//!   reference) and flushed with `writev` when the fd is writable; water marks drive
//!   `pause_writing()`/`resume_writing()`; `write_eof()` and `close()` both close the pipe
//!   once the queue is drained; writes after that are dropped (and counted, as asyncio
//!   does). For sockets and FIFOs the fd is also watched for reading: that only happens
//!   when the reader went away, which closes the transport (`BrokenPipeError` when data
//!   was still queued). `EPIPE` from a write ends with `connection_lost(BrokenPipeError)`.
//!
//! The borrow rule of the loop applies: `state` is never borrowed across a call into
//! Python, and Python objects are moved out of it before they are dropped.

use std::os::fd::RawFd;
use std::sync::Arc;

use pyo3::exceptions::{PyBrokenPipeError, PyBufferError, PyOSError, PyTypeError};
use pyo3::gc::{PyTraverseError, PyVisit};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView};

use super::exported_buffer::ExportedBuffer;
use super::lifecycle::{
    asyncio_logger, clone_of, is_exit, transport_core, write_flow_pymethods, FlowControl,
    TransportCore, WriteFlow,
};
use super::stream::READ_BUFFER;
use super::write_buffer::{would_block, write_fd, WriteBuffer};
use crate::errors::os_error;
use crate::framing::{splitter_of, FrameSplitter};
use crate::gil_cell::GilCell;
use crate::stats::{IoStats, OpenTransport, TransportKind};

/// After this many writes on a closed pipe, each further write logs a warning.
const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;

/// The Python objects a pipe transport holds until `connection_lost`.
#[derive(Default)]
struct Attachments {
    /// The pipe object (a file object or a socket); `None` once closed.
    pipe: Option<Py<PyAny>>,
    /// The `asyncio` transport users see; dropped at connection_lost, which breaks the
    /// owner <-> core cycle.
    owner: Option<Py<PyAny>>,
    /// The loop; `None` after connection_lost.
    event_loop: Option<Py<PyAny>>,
    protocol: Option<Py<PyAny>>,
    /// Counts the transport as open in its loop's `stats()` until connection_lost.
    open: Option<OpenTransport>,
}

impl Attachments {
    fn new(
        py: Python<'_>,
        pipe: Py<PyAny>,
        owner: Py<PyAny>,
        event_loop: Py<PyAny>,
        protocol: Py<PyAny>,
        kind: TransportKind,
    ) -> Self {
        let open = OpenTransport::register(event_loop.bind(py), kind);
        Attachments {
            pipe: Some(pipe),
            owner: Some(owner),
            event_loop: Some(event_loop),
            protocol: Some(protocol),
            open,
        }
    }

    /// The loop's byte counters, if it is a ferroloop loop.
    fn io(&self) -> Option<Arc<IoStats>> {
        self.open.as_ref().map(OpenTransport::io_arc)
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.pipe)?;
        visit.call(&self.owner)?;
        visit.call(&self.event_loop)?;
        visit.call(&self.protocol)
    }
}

fn loop_debug(py: Python<'_>, event_loop: &Py<PyAny>) -> PyResult<bool> {
    event_loop
        .call_method0(py, intern!(py, "get_debug"))?
        .is_truthy(py)
}

fn loop_closed(py: Python<'_>, event_loop: &Py<PyAny>) -> PyResult<bool> {
    event_loop
        .call_method0(py, intern!(py, "is_closed"))?
        .is_truthy(py)
}

/// Logs `"<transport repr> was closed by peer"` in debug mode, as asyncio does.
fn log_closed_by_peer(py: Python<'_>, event_loop: &Py<PyAny>, owner: Py<PyAny>) -> PyResult<()> {
    if loop_debug(py, event_loop)? {
        asyncio_logger(py)?.call_method1("info", ("%r was closed by peer", owner))?;
    }
    Ok(())
}

/// Closes the pipe object and drops everything the transport held.
fn release(py: Python<'_>, attachments: Attachments) -> PyResult<()> {
    let closed = match &attachments.pipe {
        Some(pipe) => pipe.call_method0(py, intern!(py, "close")).map(drop),
        None => Ok(()),
    };
    drop(attachments);
    closed
}

/// The `repr` details asyncio shows: `closed`/`closing`, `fd=N`, then `polling`/`idle`
/// while the loop is open, `open` once it is closed, `closed` after connection_lost.
fn describe(
    fd: RawFd,
    open: bool,
    closing: bool,
    loop_open: bool,
    watched: bool,
    bufsize: Option<usize>,
) -> String {
    let mut info = Vec::new();
    if !open {
        info.push("closed".to_string());
    } else if closing {
        info.push("closing".to_string());
    }
    info.push(format!("fd={fd}"));
    if open && loop_open {
        info.push(if watched { "polling" } else { "idle" }.to_string());
        if let Some(size) = bufsize {
            info.push(format!("bufsize={size}"));
        }
    } else if open {
        info.push("open".to_string());
    } else {
        info.push("closed".to_string());
    }
    info.join(" ")
}

/// What both pipe cores share on top of [`TransportCore`]: the [`Attachments`] they hold
/// until connection_lost, and asyncio's pipe rule that nothing is scheduled on a closed
/// loop.
trait PipeCore: TransportCore {
    /// Runs `f` on the attachments, state borrowed.
    fn with_attached<R>(&self, py: Python<'_>, f: impl FnOnce(&mut Attachments) -> R) -> R;

    /// True while attached to a loop that is not closed.
    fn loop_open(&self, py: Python<'_>) -> PyResult<bool> {
        match self.loop_obj(py) {
            Some(event_loop) => Ok(!loop_closed(py, &event_loop)?),
            None => Ok(false),
        }
    }

    /// Closes the pipe object and lets go of everything the transport held.
    fn release_attachments(&self, py: Python<'_>) -> PyResult<()> {
        let attached = self.with_attached(py, std::mem::take);
        release(py, attached)
    }

    /// `loop.call_soon(self._call_connection_lost, exc)`; on a closed loop, where nothing
    /// can run, the pipe is closed and the protocol dropped at once.
    fn schedule_connection_lost(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let Some(event_loop) = this.loop_obj(py) else {
            return Ok(());
        };
        if loop_closed(py, &event_loop)? {
            return this.release_attachments(py);
        }
        let callback = slf.as_any().getattr(intern!(py, "_call_connection_lost"))?;
        event_loop.call_method1(py, intern!(py, "call_soon"), (callback, exc))?;
        Ok(())
    }
}

/// The Python methods both pipe cores have: `fd`, `pipe`, `_forget_pipe`,
/// `get_protocol`, `is_closing`, `_fatal_error` and `_close`; the last two call the
/// core's own `fatal_error` and `close_with`.
macro_rules! pipe_core_pymethods {
    ($core:ty) => {
        #[pymethods]
        impl $core {
            /// The pipe's fd.
            #[getter]
            fn fd(&self) -> RawFd {
                self.fd
            }

            /// The pipe object, or None once closed.
            #[getter]
            fn pipe(&self, py: Python<'_>) -> Option<Py<PyAny>> {
                self.with_attached(py, |attached| clone_of(py, &attached.pipe))
            }

            /// Forgets the pipe object without closing it (asyncio tests set `_pipe = None`).
            fn _forget_pipe(&self, py: Python<'_>) {
                let old = self.with_attached(py, |attached| attached.pipe.take());
                drop(old);
            }

            /// The current protocol.
            fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
                self.protocol(py)
            }

            /// True once closing started (close(), end of file, write_eof() or a failure).
            fn is_closing(&self, py: Python<'_>) -> bool {
                self.state.borrow_mut(py).closing
            }

            /// asyncio's `_fatal_error`: reports and closes with `exc`.
            #[pyo3(signature = (exc, message = "Fatal error on pipe transport"))]
            fn _fatal_error(
                slf: &Bound<'_, Self>,
                exc: Bound<'_, PyAny>,
                message: &str,
            ) -> PyResult<()> {
                Self::fatal_error(slf, PyErr::from_value(exc), message)
            }

            /// asyncio's `_close`: stops and schedules connection_lost(exc).
            #[pyo3(signature = (exc = None))]
            fn _close(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
                Self::close_with(slf, exc)
            }
        }
    };
}

// ---------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------

struct ReadPipeState {
    attached: Attachments,
    /// close(), end of file or a fatal error: no more reading.
    closing: bool,
    /// pause_reading() was called and resume_reading() not yet.
    paused: bool,
    /// The loop watches the fd for reading on our behalf.
    watched: bool,
    /// connection_lost is scheduled (or done).
    lost: bool,
    /// A framed protocol's splitter: bytes read are appended to it and split in Rust.
    framed: Option<Py<FrameSplitter>>,
}

/// The Rust half of a read pipe transport (`ferroloop._pipes.ReadPipeTransport`).
#[pyclass(module = "ferroloop._core", frozen)]
pub struct ReadPipeCore {
    fd: RawFd,
    /// The loop's byte counters.
    io: Option<Arc<IoStats>>,
    state: GilCell<ReadPipeState>,
}

impl PipeCore for ReadPipeCore {
    fn with_attached<R>(&self, py: Python<'_>, f: impl FnOnce(&mut Attachments) -> R) -> R {
        f(&mut self.state.borrow_mut(py).attached)
    }
}

transport_core!(ReadPipeCore, attached);

impl ReadPipeCore {
    fn add_reader(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.loop_obj(py).is_some() {
            Self::watch(slf, intern!(py, "_add_reader"), "_read_ready")?;
            this.state.borrow_mut(py).watched = true;
        }
        Ok(())
    }

    fn remove_reader(&self, py: Python<'_>) -> PyResult<()> {
        if std::mem::replace(&mut self.state.borrow_mut(py).watched, false) {
            self.unwatch(py, intern!(py, "_remove_reader"))?;
        }
        Ok(())
    }

    /// asyncio's `_close(exc)`: stop reading and schedule connection_lost(exc).
    fn close_with(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        {
            let mut state = this.state.borrow_mut(py);
            state.closing = true;
            if state.lost {
                return Ok(());
            }
            state.lost = true;
        }
        this.remove_reader(py)?;
        Self::schedule_connection_lost(slf, exc)
    }

    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if is_exit(py, &err) {
            return Err(err);
        }
        let exc: Py<PyAny> = err.into_value(py).into_any();
        let is_eio = {
            let bound = exc.bind(py);
            bound.is_instance_of::<PyOSError>()
                && bound
                    .getattr(intern!(py, "errno"))?
                    .extract::<Option<i32>>()
                    .unwrap_or(None)
                    == Some(libc::EIO)
        };
        this.report_fatal(py, &exc, message, is_eio)?;
        Self::close_with(slf, Some(exc))
    }

    fn on_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let Some(event_loop) = this.loop_obj(py) else {
            return Ok(());
        };
        log_closed_by_peer(py, &event_loop, this.owner(py))?;
        let protocol = {
            let mut state = this.state.borrow_mut(py);
            state.closing = true;
            state.lost = true;
            clone_of(py, &state.attached.protocol)
        };
        this.remove_reader(py)?;
        if let Some(protocol) = protocol {
            let eof_received = protocol.getattr(py, intern!(py, "eof_received"))?;
            event_loop.call_method1(py, intern!(py, "call_soon"), (eof_received,))?;
        }
        let callback = slf.getattr(intern!(py, "_call_connection_lost"))?;
        event_loop.call_method1(py, intern!(py, "call_soon"), (callback, py.None()))?;
        Ok(())
    }
    /// `_read_ready` for a framed protocol: `read(2)` into the thread's buffer, the bytes
    /// appended to `splitter`, its complete frames delivered.
    fn read_framed(slf: &Bound<'_, Self>, splitter: &Bound<'_, FrameSplitter>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let outcome = READ_BUFFER.with_borrow_mut(|buf| {
            // SAFETY: `buf` is a valid writable region of `buf.len()` bytes.
            let n = unsafe { libc::read(this.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = n as usize;
            if n > 0 {
                if let Some(io) = &this.io {
                    io.read(n);
                }
                splitter.get().extend(py, &buf[..n]);
            }
            Ok(n)
        });
        match outcome {
            Ok(0) => Self::on_eof(slf),
            Ok(_) => match splitter.get().deliver(py) {
                Ok(()) => Ok(()),
                Err(err) => Self::framing_failed(slf, err),
            },
            Err(err) if would_block(&err) => Ok(()),
            Err(err) => Self::fatal_error(slf, os_error(err), "Fatal read error on pipe transport"),
        }
    }

    /// A framed delivery failed: the protocol's `_framing_failed(exc)` reports it and
    /// closes the pipe, as its `data_received` does on other loops. Without that method,
    /// the transport's fatal error.
    fn framing_failed(slf: &Bound<'_, Self>, err: PyErr) -> PyResult<()> {
        let py = slf.py();
        if is_exit(py, &err) {
            return Err(err);
        }
        let Some(protocol) = slf.get().protocol(py) else {
            return Ok(());
        };
        match protocol
            .bind(py)
            .getattr_opt(intern!(py, "_framing_failed"))?
        {
            Some(hook) => hook.call1((err.into_value(py),)).map(drop),
            None => Self::fatal_error(
                slf,
                err,
                "Fatal error: protocol.data_received() call failed.",
            ),
        }
    }
}

pipe_core_pymethods!(ReadPipeCore);

#[pymethods]
impl ReadPipeCore {
    /// `ReadPipeCore(loop, pipe, fd, protocol, owner)`; `fd` is non-blocking already.
    #[new]
    fn py_new(
        py: Python<'_>,
        event_loop: Py<PyAny>,
        pipe: Py<PyAny>,
        fd: RawFd,
        protocol: Py<PyAny>,
        owner: Py<PyAny>,
    ) -> Self {
        let framed = splitter_of(protocol.bind(py));
        let attached = Attachments::new(
            py,
            pipe,
            owner,
            event_loop,
            protocol,
            TransportKind::ReadPipe,
        );
        ReadPipeCore {
            fd,
            io: attached.io(),
            state: GilCell::new(ReadPipeState {
                attached,
                closing: false,
                paused: false,
                watched: false,
                lost: false,
                framed,
            }),
        }
    }

    /// Starts reading (scheduled right after connection_made), unless paused or closed.
    fn _start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        {
            let state = slf.get().state.borrow_mut(py);
            if state.closing || state.paused || state.watched || state.lost {
                return Ok(());
            }
        }
        Self::add_reader(slf)
    }

    /// Called by the loop when the fd is readable.
    fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let framed = {
            let state = this.state.borrow_mut(py);
            if state.lost || state.attached.pipe.is_none() {
                return Ok(());
            }
            state.framed.as_ref().map(|s| s.clone_ref(py))
        };
        if let Some(splitter) = framed {
            return Self::read_framed(slf, splitter.bind(py));
        }
        let outcome = READ_BUFFER.with_borrow_mut(|buf| {
            // SAFETY: `buf` is a valid writable region of `buf.len()` bytes.
            let n = unsafe { libc::read(this.fd, buf.as_mut_ptr().cast(), buf.len()) };
            match n {
                n if n > 0 => {
                    if let Some(io) = &this.io {
                        io.read(n as usize);
                    }
                    Ok(Some(PyBytes::new(py, &buf[..n as usize]).unbind()))
                }
                0 => Ok(None),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
        match outcome {
            Ok(Some(data)) => match this.protocol(py) {
                // Like asyncio, an exception from data_received goes to the loop's
                // exception handler ("Exception in callback") and the pipe stays open.
                Some(protocol) => protocol
                    .call_method1(py, intern!(py, "data_received"), (data,))
                    .map(drop),
                None => Ok(()),
            },
            Ok(None) => Self::on_eof(slf),
            Err(err) if would_block(&err) => Ok(()),
            Err(err) => Self::fatal_error(slf, os_error(err), "Fatal read error on pipe transport"),
        }
    }

    /// Stops delivering data until resume_reading(); True if it was reading.
    fn pause_reading(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        {
            let mut state = this.state.borrow_mut(py);
            if state.closing || state.paused {
                return Ok(false);
            }
            state.paused = true;
        }
        this.remove_reader(py)?;
        Ok(true)
    }

    /// Delivers data again; True if it was paused.
    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let py = slf.py();
        {
            let mut state = slf.get().state.borrow_mut(py);
            if state.closing || !state.paused {
                return Ok(false);
            }
            state.paused = false;
        }
        Self::add_reader(slf)?;
        Ok(true)
    }

    /// True while data is delivered (not paused, not closing).
    fn is_reading(&self, py: Python<'_>) -> bool {
        let state = self.state.borrow_mut(py);
        !state.paused && !state.closing
    }

    /// Stops reading; connection_lost(None) follows.
    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        if slf.get().state.borrow_mut(slf.py()).closing {
            return Ok(());
        }
        Self::close_with(slf, None)
    }

    /// Switches the protocol that receives data and events (and how: framed or not).
    fn set_protocol(&self, py: Python<'_>, protocol: Py<PyAny>) {
        let framed = splitter_of(protocol.bind(py));
        let old = {
            let mut state = self.state.borrow_mut(py);
            (
                state.attached.protocol.replace(protocol),
                std::mem::replace(&mut state.framed, framed),
            )
        };
        drop(old);
    }

    /// Calls protocol.connection_lost(exc), then closes the pipe and lets go of everything.
    #[pyo3(signature = (exc = None))]
    fn _call_connection_lost(&self, py: Python<'_>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        let result = self.call_connection_lost_on_protocol(py, exc);
        let framed = self.state.borrow_mut(py).framed.take();
        drop(framed);
        result.and(self.release_attachments(py))
    }

    /// The repr details: `fd=5 polling`, `closing fd=5 idle`, `closed fd=5 closed`.
    fn _describe(&self, py: Python<'_>) -> PyResult<String> {
        let loop_open = self.loop_open(py)?;
        let state = self.state.borrow_mut(py);
        Ok(describe(
            self.fd,
            state.attached.pipe.is_some(),
            state.closing,
            loop_open,
            state.watched,
            None,
        ))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self.state.try_borrow_in_gc() {
            Some(state) => {
                visit.call(&state.framed)?;
                state.attached.traverse(&visit)
            }
            None => Ok(()),
        }
    }

    fn __clear__(&self) {
        let released = self
            .state
            .try_borrow_in_gc()
            .map(|mut state| (std::mem::take(&mut state.attached), state.framed.take()));
        drop(released);
    }
}

// ---------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------

struct WritePipeState {
    attached: Attachments,
    buffer: WriteBuffer,
    flow: FlowControl,
    /// close() or write_eof() was called, or the pipe failed.
    closing: bool,
    /// Writes that failed or came after the pipe was lost.
    conn_lost: u32,
    /// connection_lost is scheduled (or done).
    lost: bool,
    /// Sockets and FIFOs: watch for readability, which means the reader went away.
    detects_peer_close: bool,
    /// The loop watches the fd for reading (peer close) on our behalf.
    reader_watched: bool,
    /// The loop watches the fd for writability (queued output) on our behalf.
    writer_watched: bool,
}

/// The Rust half of a write pipe transport (`ferroloop._pipes.WritePipeTransport`).
#[pyclass(module = "ferroloop._core", frozen)]
pub struct WritePipeCore {
    fd: RawFd,
    /// The loop's byte counters.
    io: Option<Arc<IoStats>>,
    state: GilCell<WritePipeState>,
}

/// The bytes of a `write()` argument.
enum Data {
    /// `bytes`: queued by reference.
    Bytes(Py<PyBytes>),
    /// `bytearray`/`memoryview`: written from the view, the unsent rest copied.
    View(ExportedBuffer),
}

/// True for a memoryview that is not C-contiguous: `os.write` refuses it, and so do
/// `bytearray +=` and `b''.join` (which asyncio's pipe `write`/`writelines` use).
fn is_strided(data: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(data.is_instance_of::<PyMemoryView>()
        && !data
            .getattr(intern!(data.py(), "c_contiguous"))?
            .is_truthy()?)
}

fn data_of(data: &Bound<'_, PyAny>) -> PyResult<Data> {
    if let Ok(bytes) = data.cast::<PyBytes>() {
        return Ok(Data::Bytes(bytes.clone().unbind()));
    }
    if data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>() {
        return Ok(Data::View(ExportedBuffer::readable(data)?));
    }
    Err(PyTypeError::new_err(format!(
        "data argument must be a bytes-like object, not {:?}",
        data.get_type().name()?.to_string()
    )))
}

impl PipeCore for WritePipeCore {
    fn with_attached<R>(&self, py: Python<'_>, f: impl FnOnce(&mut Attachments) -> R) -> R {
        f(&mut self.state.borrow_mut(py).attached)
    }
}

transport_core!(WritePipeCore, attached);

impl WriteFlow for WritePipeCore {
    fn with_flow<R>(&self, py: Python<'_>, f: impl FnOnce(&mut FlowControl, usize) -> R) -> R {
        let mut state = self.state.borrow_mut(py);
        let queued = state.buffer.len();
        f(&mut state.flow, queued)
    }
}

impl WritePipeCore {
    fn remove_writer(&self, py: Python<'_>) -> PyResult<()> {
        if std::mem::replace(&mut self.state.borrow_mut(py).writer_watched, false) {
            self.unwatch(py, intern!(py, "_remove_writer"))?;
        }
        Ok(())
    }

    fn remove_reader(&self, py: Python<'_>) -> PyResult<()> {
        if std::mem::replace(&mut self.state.borrow_mut(py).reader_watched, false) {
            self.unwatch(py, intern!(py, "_remove_reader"))?;
        }
        Ok(())
    }

    fn add_writer(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        Self::watch(slf, intern!(py, "_add_writer"), "_write_ready")?;
        slf.get().state.borrow_mut(py).writer_watched = true;
        Ok(())
    }

    /// asyncio's `_fatal_error`: OS errors are only logged in debug mode, anything else
    /// goes to the exception handler; then the pipe closes with `exc`.
    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if is_exit(py, &err) {
            return Err(err);
        }
        let exc: Py<PyAny> = err.into_value(py).into_any();
        let is_os_error = exc.bind(py).is_instance_of::<PyOSError>();
        this.report_fatal(py, &exc, message, is_os_error)?;
        Self::close_with(slf, Some(exc))
    }

    /// asyncio's `_close(exc)`: drop queued output, stop watching, schedule
    /// connection_lost(exc).
    fn close_with(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let dropped = {
            let mut state = this.state.borrow_mut(py);
            state.closing = true;
            if state.lost {
                return Ok(());
            }
            state.lost = true;
            state.buffer.take()
        };
        drop(dropped);
        this.remove_writer(py)?;
        this.remove_reader(py)?;
        Self::schedule_connection_lost(slf, exc)
    }

    /// Counts a write that arrives after the pipe closed; warns past the threshold.
    fn count_lost_write(&self, py: Python<'_>) -> PyResult<()> {
        let count = self.state.borrow_mut(py).conn_lost;
        if count >= LOG_THRESHOLD_FOR_CONNLOST_WRITES {
            asyncio_logger(py)?.call_method1(
                "warning",
                ("pipe closed by peer or os.write(pipe, data) raised exception.",),
            )?;
        }
        self.state.borrow_mut(py).conn_lost += 1;
        Ok(())
    }

    /// `write()` of a memoryview that is not C-contiguous, answered as asyncio's: nothing
    /// when it is empty or the pipe refuses writes; behind queued data the `TypeError` of
    /// `bytearray += view`; else the fatal error of `os.write`'s `BufferError`.
    fn write_strided(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if !data.is_truthy()? {
            return Ok(());
        }
        if this.refuses_writes(py) {
            return this.count_lost_write(py);
        }
        if !this.state.borrow_mut(py).buffer.is_empty() {
            return Err(PyTypeError::new_err("can't concat memoryview to bytearray"));
        }
        this.state.borrow_mut(py).conn_lost += 1;
        Self::fatal_error(
            slf,
            PyBufferError::new_err("memoryview: underlying buffer is not C-contiguous"),
            "Fatal write error on pipe transport",
        )
    }

    /// True when writes are dropped: the pipe is closing or was lost.
    fn refuses_writes(&self, py: Python<'_>) -> bool {
        let state = self.state.borrow_mut(py);
        state.conn_lost > 0 || state.closing
    }
}

write_flow_pymethods!(WritePipeCore);

pipe_core_pymethods!(WritePipeCore);

#[pymethods]
impl WritePipeCore {
    /// `WritePipeCore(loop, pipe, fd, protocol, owner, detects_peer_close)`; `fd` is
    /// non-blocking already. `detects_peer_close` for sockets and FIFOs.
    #[new]
    fn py_new(
        py: Python<'_>,
        event_loop: Py<PyAny>,
        pipe: Py<PyAny>,
        fd: RawFd,
        protocol: Py<PyAny>,
        owner: Py<PyAny>,
        detects_peer_close: bool,
    ) -> Self {
        let attached = Attachments::new(
            py,
            pipe,
            owner,
            event_loop,
            protocol,
            TransportKind::WritePipe,
        );
        WritePipeCore {
            fd,
            io: attached.io(),
            state: GilCell::new(WritePipeState {
                attached,
                buffer: WriteBuffer::default(),
                flow: FlowControl::default(),
                closing: false,
                conn_lost: 0,
                lost: false,
                detects_peer_close,
                reader_watched: false,
                writer_watched: false,
            }),
        }
    }

    /// Starts watching for the reader going away (sockets and FIFOs), scheduled right
    /// after connection_made.
    fn _start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        {
            let state = slf.get().state.borrow_mut(py);
            if !state.detects_peer_close || state.lost || state.reader_watched {
                return Ok(());
            }
        }
        Self::watch(slf, intern!(py, "_add_reader"), "_read_ready")?;
        slf.get().state.borrow_mut(py).reader_watched = true;
        Ok(())
    }

    /// Switches the protocol that receives events.
    fn set_protocol(&self, py: Python<'_>, protocol: Py<PyAny>) {
        let old = self.with_attached(py, |attached| attached.protocol.replace(protocol));
        drop(old);
    }

    /// Writes `data` at once if nothing is queued; queues what the pipe does not take.
    /// Dropped (and counted) after close(), write_eof() or a failure, as in asyncio.
    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if is_strided(data)? {
            return Self::write_strided(slf, data);
        }
        let data = data_of(data)?;
        let bytes: &[u8] = match &data {
            Data::Bytes(b) => b.bind(py).as_bytes(),
            Data::View(view) => view.as_slice(),
        };
        if bytes.is_empty() {
            return Ok(());
        }
        if this.refuses_writes(py) {
            return this.count_lost_write(py);
        }
        let queue_empty = this.state.borrow_mut(py).buffer.is_empty();
        let mut written = 0;
        if queue_empty {
            match write_fd(this.fd, bytes) {
                Ok(n) => {
                    written = n;
                    this.count_written(n);
                }
                Err(err) if would_block(&err) => {}
                Err(err) => {
                    this.state.borrow_mut(py).conn_lost += 1;
                    return Self::fatal_error(
                        slf,
                        os_error(err),
                        "Fatal write error on pipe transport",
                    );
                }
            }
            if written == bytes.len() {
                return Ok(());
            }
            Self::add_writer(slf)?;
        }
        {
            let mut state = this.state.borrow_mut(py);
            match &data {
                Data::Bytes(b) => {
                    state
                        .buffer
                        .push_shared_tail(py, b.clone_ref(py), bytes.len(), written)
                }
                Data::View(_) => state.buffer.push_copy(&bytes[written..]),
            }
        }
        drop(data);
        this.maybe_pause_protocol(py)
    }

    /// Writes every buffer of `list_of_data`, in order, with one `writev` when possible.
    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let mut pieces = Vec::new();
        for (index, item) in list_of_data.try_iter()?.enumerate() {
            let item = item?;
            if is_strided(&item)? {
                // asyncio writes b''.join(list_of_data), which refuses it.
                return Err(PyTypeError::new_err(format!(
                    "sequence item {index}: expected a bytes-like object, memoryview found"
                )));
            }
            pieces.push(data_of(&item)?);
        }
        let total: usize = pieces
            .iter()
            .map(|p| match p {
                Data::Bytes(b) => b.bind(py).as_bytes().len(),
                Data::View(v) => v.as_slice().len(),
            })
            .sum();
        if total == 0 {
            return Ok(());
        }
        if this.refuses_writes(py) {
            return this.count_lost_write(py);
        }
        let queue_empty = {
            let mut state = this.state.borrow_mut(py);
            let queue_empty = state.buffer.is_empty();
            for piece in &pieces {
                match piece {
                    Data::Bytes(b) => {
                        let len = b.bind(py).as_bytes().len();
                        state.buffer.push_shared(b.clone_ref(py), len);
                    }
                    Data::View(v) => state.buffer.push_copy(v.as_slice()),
                }
            }
            queue_empty
        };
        drop(pieces);
        if queue_empty {
            let outcome = this.state.borrow_mut(py).buffer.flush_pipe(py, this.fd);
            match outcome {
                Ok(n) => this.count_written(n),
                Err(err) if would_block(&err) => {}
                Err(err) => {
                    let dropped = {
                        let mut state = this.state.borrow_mut(py);
                        state.conn_lost += 1;
                        state.buffer.take()
                    };
                    drop(dropped);
                    return Self::fatal_error(
                        slf,
                        os_error(err),
                        "Fatal write error on pipe transport",
                    );
                }
            }
            if this.state.borrow_mut(py).buffer.is_empty() {
                return Ok(());
            }
            if let Err(err) = Self::add_writer(slf) {
                // As write() (asyncio's writelines is write(b''.join(...))): what the
                // loop will not send (it is closed) does not stay queued.
                let dropped = this.state.borrow_mut(py).buffer.take();
                drop(dropped);
                return Err(err);
            }
        }
        this.maybe_pause_protocol(py)
    }

    /// Called by the loop when the fd is writable and output is queued.
    fn _write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let outcome = {
            let mut state = this.state.borrow_mut(py);
            if state.lost || state.buffer.is_empty() {
                return Ok(());
            }
            state.buffer.flush_pipe(py, this.fd)
        };
        match outcome {
            Ok(n) => this.count_written(n),
            Err(err) if would_block(&err) => return Ok(()),
            Err(err) => {
                let dropped = {
                    let mut state = this.state.borrow_mut(py);
                    state.conn_lost += 1;
                    state.buffer.take()
                };
                drop(dropped);
                this.remove_writer(py)?;
                return Self::fatal_error(
                    slf,
                    os_error(err),
                    "Fatal write error on pipe transport",
                );
            }
        }
        if !this.state.borrow_mut(py).buffer.is_empty() {
            // asyncio resumes the protocol only once the queue is empty.
            return Ok(());
        }
        this.remove_writer(py)?;
        // May write more (and queue it again).
        this.maybe_resume_protocol(py)?;
        let finish = {
            let mut state = this.state.borrow_mut(py);
            let finish = state.closing && !state.lost && state.buffer.is_empty();
            if finish {
                state.lost = true;
            }
            finish
        };
        if finish {
            this.remove_reader(py)?;
            this._call_connection_lost(py, None)?;
        }
        Ok(())
    }

    /// Called by the loop when a socket or FIFO becomes readable: the reader went away.
    fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (event_loop, pending) = {
            let state = this.state.borrow_mut(py);
            if state.lost {
                return Ok(());
            }
            (
                clone_of(py, &state.attached.event_loop),
                !state.buffer.is_empty(),
            )
        };
        if let Some(event_loop) = event_loop {
            log_closed_by_peer(py, &event_loop, this.owner(py))?;
        }
        let exc = if pending {
            Some(PyBrokenPipeError::new_err(()).into_value(py).into_any())
        } else {
            None
        };
        Self::close_with(slf, exc)
    }

    /// Pipes can be closed for writing: write_eof() closes the pipe.
    fn can_write_eof(&self) -> bool {
        true
    }

    /// Closes the pipe once the queued output is written; connection_lost(None) follows.
    fn write_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let drained = {
            let mut state = this.state.borrow_mut(py);
            if state.closing {
                return Ok(());
            }
            state.closing = true;
            let drained = state.buffer.is_empty();
            if drained {
                state.lost = true;
            }
            drained
        };
        if drained {
            this.remove_reader(py)?;
            Self::schedule_connection_lost(slf, None)?;
        }
        Ok(())
    }

    /// Same as write_eof() (asyncio's rule for pipes).
    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let open = {
            let state = slf.get().state.borrow_mut(py);
            state.attached.pipe.is_some() && !state.closing
        };
        if open {
            Self::write_eof(slf)?;
        }
        Ok(())
    }

    /// Closes at once, dropping queued output; connection_lost(None) follows.
    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::close_with(slf, None)
    }

    /// Calls protocol.connection_lost(exc), then closes the pipe and lets go of everything.
    #[pyo3(signature = (exc = None))]
    fn _call_connection_lost(&self, py: Python<'_>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        let result = self.call_connection_lost_on_protocol(py, exc);
        let buffer = self.state.borrow_mut(py).buffer.take();
        drop(buffer);
        result.and(self.release_attachments(py))
    }

    /// The repr details: `fd=5 idle bufsize=0`, `closing fd=5 polling bufsize=10`.
    fn _describe(&self, py: Python<'_>) -> PyResult<String> {
        let loop_open = self.loop_open(py)?;
        let state = self.state.borrow_mut(py);
        Ok(describe(
            self.fd,
            state.attached.pipe.is_some(),
            state.closing,
            loop_open,
            state.writer_watched,
            Some(state.buffer.len()),
        ))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self.state.try_borrow_in_gc() {
            Some(state) => state.attached.traverse(&visit),
            None => Ok(()),
        }
    }

    fn __clear__(&self) {
        let released = self
            .state
            .try_borrow_in_gc()
            .map(|mut state| (std::mem::take(&mut state.attached), state.buffer.take()));
        drop(released);
    }
}

impl WritePipeCore {
    /// Counts bytes the pipe accepted.
    #[inline]
    fn count_written(&self, n: usize) {
        if let Some(io) = &self.io {
            io.written(n);
        }
    }
}
