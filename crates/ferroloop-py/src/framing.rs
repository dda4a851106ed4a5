//! `FrameSplitter`: the core crate's [`Framer`] with the callbacks that receive its frames,
//! the engine of `ferroloop.framing.ChunkProtocol`.
//!
//! One splitter belongs to one connection. It is driven in one of two ways, with the same
//! delivery loop ([`FrameSplitter::deliver`]) in both:
//!
//! - On any transport (asyncio's, uvloop's), the protocol's `data_received(data)` calls
//!   `feed(data)`: the bytes are appended to the framer and every complete frame is
//!   handed to `on_chunk`.
//! - On ferroloop's transports the transport finds the splitter on the protocol and
//!   appends what it read to the framer itself, then delivers: no `bytes` of the whole
//!   read, one call into Python per frame. `StreamCore` `recv`s into the thread's read
//!   buffer ([`FrameSplitter::receive`]); `ReadPipeCore` `read`s into it and `TlsPump`
//!   decrypts into its own, and both hand the bytes over with [`FrameSplitter::extend`].
//!   The framer's buffer holds only what is not yet delivered and is freed when empty, so
//!   idle connections hold no buffer.
//!
//! Delivery stops between two frames when the protocol pauses (`paused`), stops (close,
//! connection lost, an error) or switches to raw bytes; the bytes still buffered stay in
//! order for `dispatch()` (after resume_reading) or the raw-mode callback.
//!
//! The borrow rule of the loop holds: the state is borrowed to take one frame out as a
//! new `bytes` and a new reference to its callback, and released before the call.

use std::os::fd::RawFd;

use ferroloop_core::framing::{FrameError, Framer, Framing, LengthField};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::gc::{PyTraverseError, PyVisit};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList};

use crate::gil_cell::GilCell;
use crate::transport::stream::{StreamCore, READ_BUFFER};

/// Buffer room a framer keeps once everything is delivered; above it the buffer is freed,
/// so an idle connection holds no read buffer (reads land in the thread's `READ_BUFFER`).
const KEEP_IDLE_BUFFER: usize = 4 * 1024;

/// `write_chunks` sends a `bytes` payload of at least this size from where it is (one
/// more buffer of the vectored write); smaller ones are copied next to their headers,
/// which costs less than a buffer of their own.
const SHARE_PAYLOAD_MIN: usize = 1024;

/// Where the next bytes go.
enum Mode {
    /// Split into frames for `on_chunk`.
    Frames,
    /// Handed over as they come, to this callable (`set_raw_mode`).
    Raw(Py<PyAny>),
}

struct SplitterState {
    framer: Framer,
    on_chunk: Option<Py<PyAny>>,
    /// The transport's `write`, for `write_chunk`/`write_chunks` (set at connection_made).
    writer: Option<Py<PyAny>>,
    /// The transport's `writelines`, for the vectored writes of `write_chunks`.
    writelines: Option<Py<PyAny>>,
    /// The Rust core of a ferroloop socket transport: `write_chunks` queues its buffers
    /// there directly.
    stream: Option<Py<StreamCore>>,
    mode: Mode,
    /// Receives a framing error instead of the transport (`defer_errors`): delivery
    /// pauses before the frame in error, whose bytes stay buffered.
    on_error: Option<Py<PyAny>>,
    /// The protocol paused reading: no frame is delivered until it is cleared.
    paused: bool,
    /// Delivery is over for good (closed, lost, or a framing error).
    stopped: bool,
    /// A delivery loop is running; a nested `dispatch()` (from inside a callback) returns
    /// at once and the running loop picks up whatever changed.
    delivering: bool,
}

/// What the delivery loop takes out of the state for one callback.
enum Step {
    Call(Py<PyAny>, Py<PyBytes>),
    Done,
    Failed(FrameError),
    /// A framing error for the `on_error` callback; delivery is paused.
    Deferred(Py<PyAny>, FrameError),
}

/// A connection's framer and the callbacks its frames and raw bytes go to.
#[pyclass(module = "ferroloop._core", frozen)]
pub struct FrameSplitter {
    state: GilCell<SplitterState>,
}

/// `ferroloop.framing.<name>`, the exception classes the splitter raises.
fn framing_error(py: Python<'_>, err: FrameError) -> PyErr {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let module = match MODULE.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("ferroloop.framing")?.unbind())
    }) {
        Ok(module) => module.bind(py),
        Err(err) => return err,
    };
    let (name, args) = match &err {
        FrameError::TooLarge { size, max } => (
            "FrameTooLarge",
            (err.to_string(), *size, *max)
                .into_pyobject(py)
                .map(|t| t.into_any()),
        ),
        FrameError::NegativeLength { .. } => (
            "InvalidFrame",
            (err.to_string(),).into_pyobject(py).map(|t| t.into_any()),
        ),
    };
    let made = args.and_then(|args| module.getattr(name)?.call1(args.cast_into()?));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(err) => err,
    }
}

impl FrameSplitter {
    /// Appends `data` (bytes, or any buffer) to `out` as one frame.
    fn encode_into(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        out: &mut Vec<u8>,
    ) -> PyResult<()> {
        let copy: Vec<u8>;
        let payload: &[u8] = match data.cast::<PyBytes>() {
            Ok(bytes) => bytes.as_bytes(),
            Err(_) => {
                copy = pyo3::buffer::PyBuffer::<u8>::get(data)?.to_vec(py)?;
                &copy
            }
        };
        let state = self.state.borrow_mut(py);
        state
            .framer
            .framing()
            .encode(payload, state.framer.max_frame_size(), out)
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// The transport's `write`, or the error of a protocol that has none to write to.
    fn writer(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let writer = self
            .state
            .borrow_mut(py)
            .writer
            .as_ref()
            .map(|w| w.clone_ref(py));
        writer.ok_or_else(|| {
            PyRuntimeError::new_err("no transport to write to (not connected, or a read pipe)")
        })
    }

    /// Hands `framed` to the writer as one `bytes`.
    fn send(&self, py: Python<'_>, framed: &[u8]) -> PyResult<()> {
        self.writer(py)?.call1(py, (PyBytes::new(py, framed),))?;
        Ok(())
    }

    /// Hands `parts` to the transport as one vectored write: queued in order by a
    /// ferroloop socket transport's core, else the transport's `writelines`.
    fn send_parts(&self, py: Python<'_>, parts: Vec<Py<PyBytes>>) -> PyResult<()> {
        let writer = self.writer(py)?;
        let (stream, writelines) = {
            let state = self.state.borrow_mut(py);
            (
                state.stream.as_ref().map(|s| s.clone_ref(py)),
                state.writelines.as_ref().map(|w| w.clone_ref(py)),
            )
        };
        match (stream, writelines) {
            (Some(stream), _) => StreamCore::write_parts(stream.bind(py), &parts),
            (None, Some(writelines)) => {
                writelines.call1(py, (PyList::new(py, parts)?,))?;
                Ok(())
            }
            (None, None) => {
                let mut joined = Vec::new();
                for part in &parts {
                    joined.extend_from_slice(part.as_bytes(py));
                }
                writer.call1(py, (PyBytes::new(py, &joined),))?;
                Ok(())
            }
        }
    }

    /// Appends what goes before a payload of `len` bytes to `out`, and returns what goes
    /// after it.
    fn header(&self, py: Python<'_>, len: usize, out: &mut Vec<u8>) -> PyResult<Vec<u8>> {
        let state = self.state.borrow_mut(py);
        let framing = state.framer.framing();
        framing
            .header(len, state.framer.max_frame_size(), out)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(framing.trailer().to_vec())
    }

    /// Appends bytes a transport read to the framer (nothing once delivery stopped); the
    /// caller then runs [`FrameSplitter::deliver`].
    pub(crate) fn extend(&self, py: Python<'_>, data: &[u8]) {
        let mut state = self.state.borrow_mut(py);
        if !state.stopped {
            state.framer.extend(data);
        }
    }

    /// `recv`s from `fd` into the thread's read buffer and appends what came to the framer
    /// (no Python object is made): `Ok(n)` bytes, `Ok(0)` at EOF.
    pub(crate) fn receive(&self, py: Python<'_>, fd: RawFd) -> std::io::Result<usize> {
        READ_BUFFER.with_borrow_mut(|buf| {
            // SAFETY: `buf` is a valid writable region of `buf.len()` bytes.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = n as usize;
            self.state.borrow_mut(py).framer.extend(&buf[..n]);
            Ok(n)
        })
    }

    /// Takes the next callback and its argument out of the state.
    fn next_step(&self, py: Python<'_>) -> Step {
        let mut state = self.state.borrow_mut(py);
        if state.paused || state.stopped {
            return Step::Done;
        }
        let state = &mut *state;
        match &state.mode {
            Mode::Raw(on_data) => {
                if state.framer.is_empty() {
                    return Step::Done;
                }
                let on_data = on_data.clone_ref(py);
                Step::Call(
                    on_data,
                    PyBytes::new(py, state.framer.take_buffered()).unbind(),
                )
            }
            Mode::Frames => {
                let Some(on_chunk) = state.on_chunk.as_ref().map(|c| c.clone_ref(py)) else {
                    return Step::Done;
                };
                match state.framer.next_frame() {
                    Ok(Some(frame)) => Step::Call(on_chunk, PyBytes::new(py, frame).unbind()),
                    Ok(None) => Step::Done,
                    Err(err) => match state.on_error.as_ref().map(|e| e.clone_ref(py)) {
                        Some(on_error) => {
                            state.paused = true;
                            Step::Deferred(on_error, err)
                        }
                        None => {
                            state.stopped = true;
                            Step::Failed(err)
                        }
                    },
                }
            }
        }
    }

    /// Hands every complete frame (or, in raw mode, every buffered byte) to its callback,
    /// until none is left or delivery is paused or stopped. An exception from a callback,
    /// or a framing error, stops this delivery and propagates.
    pub(crate) fn deliver(&self, py: Python<'_>) -> PyResult<()> {
        {
            let mut state = self.state.borrow_mut(py);
            if state.delivering {
                return Ok(());
            }
            state.delivering = true;
        }
        let result = loop {
            match self.next_step(py) {
                Step::Call(callback, arg) => {
                    if let Err(err) = callback.call1(py, (arg,)) {
                        break Err(err);
                    }
                }
                Step::Done => break Ok(()),
                Step::Failed(err) => break Err(framing_error(py, err)),
                Step::Deferred(on_error, err) => {
                    break on_error.call1(py, (framing_error(py, err),)).map(drop);
                }
            }
        };
        let mut state = self.state.borrow_mut(py);
        state.delivering = false;
        state.framer.release_if_empty(KEEP_IDLE_BUFFER);
        drop(state);
        result
    }
}

#[allow(clippy::too_many_arguments)]
fn framing_from_args(
    delimiter: Option<Vec<u8>>,
    keep: bool,
    length_size: Option<usize>,
    big_endian: bool,
    offset: usize,
    adjustment: i64,
    strip: Option<usize>,
    fixed_size: Option<usize>,
) -> PyResult<Framing> {
    match (delimiter, length_size, fixed_size) {
        (Some(delimiter), None, None) => Ok(Framing::Delimiter { delimiter, keep }),
        (None, Some(size), None) => Ok(Framing::LengthPrefixed(LengthField {
            offset,
            size,
            big_endian,
            adjustment,
            strip: strip.unwrap_or(offset + size),
        })),
        (None, None, Some(n)) => Ok(Framing::FixedSize(n)),
        _ => Err(PyValueError::new_err(
            "give exactly one of delimiter, length_size and fixed_size",
        )),
    }
}

#[pymethods]
impl FrameSplitter {
    /// `FrameSplitter(on_chunk, max_frame_size, *, delimiter=None, keep=False,
    /// length_size=None, big_endian=True, offset=0, adjustment=0, strip=None,
    /// fixed_size=None)`: exactly one of `delimiter`, `length_size`, `fixed_size`.
    #[new]
    #[pyo3(signature = (on_chunk, max_frame_size, *, delimiter = None, keep = false,
        length_size = None, big_endian = true, offset = 0, adjustment = 0, strip = None,
        fixed_size = None))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        on_chunk: Py<PyAny>,
        max_frame_size: usize,
        delimiter: Option<Vec<u8>>,
        keep: bool,
        length_size: Option<usize>,
        big_endian: bool,
        offset: usize,
        adjustment: i64,
        strip: Option<usize>,
        fixed_size: Option<usize>,
    ) -> PyResult<Self> {
        let framing = framing_from_args(
            delimiter,
            keep,
            length_size,
            big_endian,
            offset,
            adjustment,
            strip,
            fixed_size,
        )?;
        let framer =
            Framer::new(framing, max_frame_size).map_err(|e| PyValueError::new_err(e.0))?;
        Ok(FrameSplitter {
            state: GilCell::new(SplitterState {
                framer,
                on_chunk: Some(on_chunk),
                writer: None,
                writelines: None,
                stream: None,
                on_error: None,
                mode: Mode::Frames,
                paused: false,
                stopped: false,
                delivering: false,
            }),
        })
    }

    /// Appends `data` (bytes-like) and delivers what is complete.
    fn feed(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        {
            let mut state = self.state.borrow_mut(py);
            if state.stopped {
                return Ok(());
            }
            if let Ok(bytes) = data.cast::<PyBytes>() {
                state.framer.extend(bytes.as_bytes());
            } else {
                drop(state);
                let copy: Vec<u8> = data.extract().or_else(|_| {
                    py.import("builtins")?
                        .getattr("bytes")?
                        .call1((data,))?
                        .extract()
                })?;
                self.state.borrow_mut(py).framer.extend(&copy);
            }
        }
        self.deliver(py)
    }

    /// Delivers the frames already buffered (after resume_reading or a mode switch).
    fn dispatch(&self, py: Python<'_>) -> PyResult<()> {
        self.deliver(py)
    }

    /// True while delivery is paused.
    #[getter]
    fn get_paused(&self, py: Python<'_>) -> bool {
        self.state.borrow_mut(py).paused
    }

    /// Pauses (True) or allows (False) delivery between frames.
    #[setter]
    fn set_paused(&self, py: Python<'_>, paused: bool) {
        self.state.borrow_mut(py).paused = paused;
    }

    /// True while a delivery loop runs (a callback is being called).
    #[getter]
    fn delivering(&self, py: Python<'_>) -> bool {
        self.state.borrow_mut(py).delivering
    }

    /// True once delivery stopped for good.
    #[getter]
    fn stopped(&self, py: Python<'_>) -> bool {
        self.state.borrow_mut(py).stopped
    }

    /// Ends delivery for good and drops the callbacks (close, connection lost). The writer
    /// stays: a write after the end goes to the transport, which handles it as asyncio's
    /// transports do.
    fn stop(&self, py: Python<'_>) {
        let released = {
            let mut state = self.state.borrow_mut(py);
            state.stopped = true;
            (
                state.on_chunk.take(),
                state.on_error.take(),
                std::mem::replace(&mut state.mode, Mode::Frames),
            )
        };
        drop(released);
    }

    /// From now on a framing error (a frame over the limit, an impossible length) is not
    /// raised to the transport: delivery pauses before that frame, its bytes stay
    /// buffered, and `on_error(exc)` is called. The reader decides: switch to raw mode
    /// (the bytes were not frames) or fail.
    fn defer_errors(&self, py: Python<'_>, on_error: Py<PyAny>) {
        let old = self.state.borrow_mut(py).on_error.replace(on_error);
        drop(old);
    }

    /// Sets the transport's `write`, which `write_chunk` hands the framed bytes to, and
    /// for the vectored writes of `write_chunks` its `writelines` or, on a ferroloop
    /// socket transport, its Rust core.
    #[pyo3(signature = (write, writelines = None, stream = None))]
    fn set_writer(
        &self,
        py: Python<'_>,
        write: Py<PyAny>,
        writelines: Option<Py<PyAny>>,
        stream: Option<Py<StreamCore>>,
    ) {
        let old = {
            let mut state = self.state.borrow_mut(py);
            (
                state.writer.replace(write),
                std::mem::replace(&mut state.writelines, writelines),
                std::mem::replace(&mut state.stream, stream),
            )
        };
        drop(old);
    }

    /// `data` (bytes-like) framed: with the delimiter or the length field added.
    fn encode<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = Vec::new();
        self.encode_into(py, data, &mut out)?;
        Ok(PyBytes::new(py, &out))
    }

    /// Sends `data` as one frame through the writer.
    fn write_chunk(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut out = Vec::new();
        self.encode_into(py, data, &mut out)?;
        self.send(py, &out)
    }

    /// Sends every item of `frames` as a frame, all in one vectored write: headers,
    /// delimiters and small payloads are copied together, `bytes` payloads of
    /// [`SHARE_PAYLOAD_MIN`] bytes or more are sent from where they are. Nothing is sent
    /// when one of them cannot be a frame.
    fn write_chunks(&self, py: Python<'_>, frames: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut parts: Vec<Py<PyBytes>> = Vec::new();
        let mut run = Vec::new();
        for data in frames.try_iter()? {
            let data = data?;
            match data.cast::<PyBytes>() {
                Ok(payload) if payload.as_bytes().len() >= SHARE_PAYLOAD_MIN => {
                    let trailer = self.header(py, payload.as_bytes().len(), &mut run)?;
                    if !run.is_empty() {
                        parts.push(PyBytes::new(py, &run).unbind());
                        run.clear();
                    }
                    parts.push(payload.clone().unbind());
                    run.extend_from_slice(&trailer);
                }
                _ => self.encode_into(py, &data, &mut run)?,
            }
        }
        if parts.is_empty() {
            return self.send(py, &run);
        }
        if !run.is_empty() {
            parts.push(PyBytes::new(py, &run).unbind());
        }
        self.send_parts(py, parts)
    }

    /// From now on, bytes (those buffered first) go to `on_data` as they come.
    fn set_raw(&self, py: Python<'_>, on_data: Py<PyAny>) {
        let old = std::mem::replace(&mut self.state.borrow_mut(py).mode, Mode::Raw(on_data));
        drop(old);
    }

    /// Back to frames; `extra` (bytes the raw reader did not consume) is split first.
    /// Returns True when frames may be waiting and no delivery loop runs to take them.
    #[pyo3(signature = (extra = None))]
    fn set_frames(&self, py: Python<'_>, extra: Option<&[u8]>) -> bool {
        let (old, idle) = {
            let mut state = self.state.borrow_mut(py);
            if let Some(extra) = extra {
                state.framer.unread(extra);
            }
            let old = std::mem::replace(&mut state.mode, Mode::Frames);
            (old, !state.delivering && !state.framer.is_empty())
        };
        drop(old);
        idle
    }

    /// True in raw mode.
    #[getter]
    fn raw(&self, py: Python<'_>) -> bool {
        matches!(self.state.borrow_mut(py).mode, Mode::Raw(_))
    }

    /// The bytes buffered and not delivered (a partial frame, or frames held back).
    fn pending<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let state = self.state.borrow_mut(py);
        PyBytes::new(py, state.framer.buffered())
    }

    /// The length of the frame being received, when the buffered bytes tell it.
    fn expected(&self, py: Python<'_>) -> Option<usize> {
        self.state.borrow_mut(py).framer.expected()
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(state) = self.state.try_borrow_in_gc() else {
            return Ok(());
        };
        visit.call(&state.on_chunk)?;
        visit.call(&state.writer)?;
        visit.call(&state.writelines)?;
        visit.call(&state.stream)?;
        visit.call(&state.on_error)?;
        if let Mode::Raw(on_data) = &state.mode {
            visit.call(on_data)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        let released = self.state.try_borrow_in_gc().map(|mut state| {
            (
                state.on_chunk.take(),
                state.writer.take(),
                state.writelines.take(),
                state.stream.take(),
                state.on_error.take(),
                std::mem::replace(&mut state.mode, Mode::Frames),
            )
        });
        drop(released);
    }
}

/// The splitter of a protocol that asks for native framing (`ChunkProtocol` sets
/// `_ferroloop_splitter`), if any. Any other protocol keeps the plain data path, even one
/// whose `__getattr__` answers everything (a `Mock`) or raises: the probe is ferroloop's,
/// so its failure must not fail the connection.
pub(crate) fn splitter_of(protocol: &Bound<'_, PyAny>) -> Option<Py<FrameSplitter>> {
    let py = protocol.py();
    match protocol.getattr_opt(intern!(py, "_ferroloop_splitter")) {
        Ok(Some(splitter)) => splitter
            .cast_into::<FrameSplitter>()
            .ok()
            .map(Bound::unbind),
        Ok(None) | Err(_) => None,
    }
}
