//! `TlsPump`: the per-record hot path of a TLS connection, in Rust, driving the user's own
//! `ssl.SSLObject` through its two `ssl.MemoryBIO`s.
//!
//! `ferroloop._tls.TlsProtocol` is CPython's `asyncio.sslproto.SSLProtocol` (handshake,
//! shutdown, timeouts, errors and flow control stay exactly asyncio's) with the steady
//! state handed to this pump while the connection is `WRAPPED`:
//!
//! * incoming: the socket transport `recv`s into a buffer (`get_buffer`), the bytes go
//!   into the incoming BIO, and the pump decrypts with `SSLObject.read` into that same
//!   buffer (the BIO has copied the ciphertext out), asking only while the BIO or the
//!   `SSL` object still holds bytes — so no `SSLWantReadError` is raised per read and no
//!   256 KiB `bytes` is allocated per read; the application gets one `bytes` of exactly
//!   what arrived. Reads never nest on a thread, so every pump of a thread shares one
//!   buffer (`ferroloop._tls` hands it out): a TLS connection costs no 256 KiB of its own;
//! * outgoing: the application transport's `write`/`writelines` encrypt at once (one
//!   `SSLObject.write` for all the buffers of a `writelines`), and the records go straight
//!   to the Rust socket transport;
//! * a `BufferedProtocol` application gets the plaintext decrypted straight into its own
//!   buffer (`get_buffer(incoming.pending)`, then `buffer_updated(n)`);
//! * a framed application (`ferroloop.framing.ChunkProtocol`) gets the plaintext appended
//!   to its `FrameSplitter`, which calls `on_chunk` once per complete frame: no `bytes` of
//!   the whole read. Its errors are those of `data_received`: "Fatal error on SSL
//!   protocol", as asyncio reports them.
//!
//! Anything off that path — handshake, shutdown, a paused side, a write backlog, an
//! error — runs the `SSLProtocol` method asyncio would have run, so behaviour and
//! messages are asyncio's. The protocol's flow-control flags and
//! water marks are mirrored here: `TlsProtocol` overrides every `SSLProtocol` method that
//! sets one (they are set nowhere else) and pushes them with `sync`.

use pyo3::exceptions::{PyException, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::gc::{PyTraverseError, PyVisit};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PyTuple, PyType};

use super::exported_buffer::ExportedBuffer;
use super::stream::StreamCore;
use crate::framing::{splitter_of, FrameSplitter};
use crate::gil_cell::GilCell;

/// The smallest shared buffer accepted: one TLS record and its overhead.
const MIN_BUFFER_SIZE: usize = 17 * 1024;

/// The message asyncio reports errors of the TLS layer with.
const FATAL_MESSAGE: &str = "Fatal error on SSL protocol";

/// The parts that change during the connection's life.
struct PumpState {
    /// The protocol is in `SSLProtocolState.WRAPPED` (mirrored by `_set_state`).
    wrapped: bool,
    /// Mirrors of the protocol's attributes of the same names (see `sync`).
    flags: Flags,
    /// How plaintext reaches the application protocol (cached as uvloop does); None once
    /// there is no application protocol.
    app: Option<AppReceiver>,
    /// The Rust core of the socket transport below, when it is one of ours.
    raw_core: Option<Py<StreamCore>>,
    /// The transport below (any `asyncio.Transport`), while connected.
    raw_transport: Option<Py<PyAny>>,
}

/// Why `decrypt_into` stopped.
enum Decrypted {
    /// Nothing more to decrypt for now.
    Drained,
    /// The window is full; more may be buffered.
    Full,
    /// The peer's close_notify arrived.
    CloseNotify,
}

/// The application protocol's entry points.
enum AppReceiver {
    /// `data_received` of an `asyncio.Protocol`.
    Data(Py<PyAny>),
    /// `get_buffer` and `buffer_updated` of an `asyncio.BufferedProtocol`.
    Buffered(Py<PyAny>, Py<PyAny>),
    /// A framed protocol's splitter: plaintext is appended to it and split in Rust.
    Framed(Py<FrameSplitter>),
}

impl AppReceiver {
    fn clone_ref(&self, py: Python<'_>) -> AppReceiver {
        match self {
            AppReceiver::Data(d) => AppReceiver::Data(d.clone_ref(py)),
            AppReceiver::Buffered(g, u) => AppReceiver::Buffered(g.clone_ref(py), u.clone_ref(py)),
            AppReceiver::Framed(s) => AppReceiver::Framed(s.clone_ref(py)),
        }
    }

    /// True for the receivers `read_wrapped` serves (plaintext copied out of the window).
    fn takes_copies(&self) -> bool {
        matches!(self, AppReceiver::Data(_) | AppReceiver::Framed(_))
    }
}

/// The protocol's flow-control state, as `SSLProtocol` keeps it.
#[derive(Default, Clone, Copy)]
struct Flags {
    app_reading_paused: bool,
    ssl_writing_paused: bool,
    app_writing_paused: bool,
    ssl_reading_paused: bool,
    outgoing_high_water: usize,
    outgoing_low_water: usize,
    incoming_high_water: usize,
    incoming_low_water: usize,
}

/// The Rust hot path of one TLS connection; see the module documentation.
#[pyclass(module = "ferroloop._core", frozen)]
pub struct TlsPump {
    /// The `TlsProtocol` (an `asyncio.sslproto.SSLProtocol`).
    protocol: Py<PyAny>,
    /// The protocol's `_write_backlog` deque (created once, in `SSLProtocol.__init__`).
    backlog: Py<PyAny>,
    /// Bound methods of the `SSLObject`'s C object: `read`, `write`, `pending`.
    ssl_read: Py<PyAny>,
    ssl_write: Py<PyAny>,
    ssl_pending: Py<PyAny>,
    /// The incoming BIO and its bound `write`.
    incoming: Py<PyAny>,
    incoming_write: Py<PyAny>,
    /// The outgoing BIO and its bound `read`.
    outgoing: Py<PyAny>,
    outgoing_read: Py<PyAny>,
    /// The thread's shared buffer: ciphertext is `recv`ed into it, plaintext decrypted
    /// into it; never resized (`view` pins it).
    buffer: Py<PyByteArray>,
    /// `memoryview(buffer)`, what `get_buffer` hands out.
    view: Py<PyAny>,
    /// `len(buffer)`.
    size: usize,
    state: GilCell<PumpState>,
}

/// `ssl.SSLWantReadError` and `ssl.SSLWantWriteError` (asyncio's `SSLAgainErrors`).
fn again_errors(py: Python<'_>) -> PyResult<&Bound<'_, PyTuple>> {
    static AGAIN: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();
    AGAIN
        .get_or_try_init(py, || {
            let ssl = py.import("ssl")?;
            let read: Bound<'_, PyType> = ssl.getattr("SSLWantReadError")?.cast_into()?;
            let write: Bound<'_, PyType> = ssl.getattr("SSLWantWriteError")?.cast_into()?;
            Ok(PyTuple::new(py, [read, write])?.unbind())
        })
        .map(|t| t.bind(py))
}

fn is_again(py: Python<'_>, err: &PyErr) -> PyResult<bool> {
    Ok(err.is_instance(py, again_errors(py)?))
}

/// A memoryview over `len` bytes at `ptr` (`writable` or read-only), without a copy.
///
/// # Safety
/// `ptr..ptr+len` must stay valid for as long as the view is used; callers pass it only to
/// a C function that copies out or in before returning.
unsafe fn raw_view(
    py: Python<'_>,
    ptr: *mut u8,
    len: usize,
    writable: bool,
) -> PyResult<Bound<'_, PyMemoryView>> {
    let flags = if writable {
        ffi::PyBUF_WRITE
    } else {
        ffi::PyBUF_READ
    };
    let view = ffi::PyMemoryView_FromMemory(ptr.cast(), len as ffi::Py_ssize_t, flags);
    Bound::from_owned_ptr_or_err(py, view).map(|v| v.cast_into_unchecked())
}

/// The start of a bytearray's storage.
fn storage(array: &Bound<'_, PyByteArray>) -> *mut u8 {
    // SAFETY: `array` is a live bytearray; the pointer is valid until it is resized, and
    // the pump's buffer is never resized (the view exported from it pins it).
    unsafe { ffi::PyByteArray_AsString(array.as_ptr()).cast() }
}

impl TlsPump {
    fn wrapped(&self, py: Python<'_>) -> bool {
        self.state.borrow_mut(py).wrapped
    }

    fn flags(&self, py: Python<'_>) -> Flags {
        self.state.borrow_mut(py).flags
    }

    fn backlog_len(&self, py: Python<'_>) -> PyResult<usize> {
        self.backlog.bind(py).len()
    }

    /// asyncio's `except Exception as ex: self._fatal_error(ex, ...)` around the data path;
    /// `KeyboardInterrupt`, `SystemExit` and other `BaseException`s propagate.
    fn guard(&self, py: Python<'_>, result: PyResult<()>) -> PyResult<()> {
        match result {
            Err(err) if err.is_instance_of::<PyException>(py) => {
                self.protocol.call_method1(
                    py,
                    intern!(py, "_fatal_error"),
                    (err, FATAL_MESSAGE),
                )?;
                Ok(())
            }
            other => other,
        }
    }

    /// Decrypts what the incoming BIO holds and hands it to the application (asyncio's
    /// `_do_read` for a non-buffered application that is reading), then flushes.
    fn read_wrapped(&self, py: Python<'_>) -> PyResult<()> {
        let protocol = self.protocol.bind(py);
        let base = storage(self.buffer.bind(py));
        // SAFETY: the pump's buffer is `size` bytes at `base`, kept alive by the pump and
        // never resized.
        let window = unsafe { std::slice::from_raw_parts_mut(base, self.size) };
        loop {
            let (filled, stop) = self.decrypt_into(py, window)?;
            if filled > 0 {
                self.deliver(py, protocol, &window[..filled])?;
            }
            match stop {
                Decrypted::Drained => return self.finish_read(py, false),
                Decrypted::CloseNotify => return self.finish_read(py, true),
                Decrypted::Full => {}
            }
            if !self.wrapped(py) || self.flags(py).app_reading_paused {
                break;
            }
            let copies = self
                .state
                .borrow_mut(py)
                .app
                .as_ref()
                .map(AppReceiver::takes_copies);
            if copies != Some(true) {
                // The application switched protocols: the base class reads the rest.
                self.call_soon_do_read(py)?;
                break;
            }
            if !self.more_buffered(py)? {
                break;
            }
        }
        self.finish_read(py, false)
    }

    /// Decrypts into `window` until it is full, the BIO and the `SSL` object hold no more,
    /// or the peer's close_notify arrives. Returns how many bytes it wrote, and why it
    /// stopped.
    fn decrypt_into(&self, py: Python<'_>, window: &mut [u8]) -> PyResult<(usize, Decrypted)> {
        let mut filled = 0usize;
        loop {
            let room = window.len() - filled;
            // SAFETY: `window[filled..]` is valid writable memory for the whole call, and
            // `read` only writes into it before returning.
            let view = unsafe { raw_view(py, window.as_mut_ptr().add(filled), room, true)? };
            match self.ssl_read.call1(py, (room, view)) {
                Ok(count) => {
                    let count: usize = count.extract(py)?;
                    if count == 0 {
                        return Ok((filled, Decrypted::CloseNotify));
                    }
                    filled += count;
                }
                Err(err) if is_again(py, &err)? => return Ok((filled, Decrypted::Drained)),
                Err(err) => return Err(err),
            }
            if filled == window.len() {
                return Ok((filled, Decrypted::Full));
            }
            if !self.more_buffered(py)? {
                return Ok((filled, Decrypted::Drained));
            }
        }
    }

    /// True while the incoming BIO or the `SSL` object still holds bytes to decrypt.
    fn more_buffered(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.incoming_pending(py)? > 0 || self.ssl_pending.call0(py)?.extract::<usize>(py)? > 0)
    }

    /// What asyncio's `_do_read` does after handing data over: close_notify, then flush
    /// and read flow control.
    fn finish_read(&self, py: Python<'_>, close_notify: bool) -> PyResult<()> {
        let protocol = self.protocol.bind(py);
        if close_notify {
            protocol.call_method0(intern!(py, "_call_eof_received"))?;
            protocol.call_method0(intern!(py, "_start_shutdown"))?;
        }
        if self.backlog_len(py)? > 0 {
            protocol.call_method0(intern!(py, "_do_write"))?;
        } else {
            self.process_outgoing(py)?;
        }
        self.control_ssl_reading(py)
    }

    /// `loop.call_soon(protocol._do_read)`: more plaintext may be waiting.
    fn call_soon_do_read(&self, py: Python<'_>) -> PyResult<()> {
        let protocol = self.protocol.bind(py);
        let do_read = protocol.getattr(intern!(py, "_do_read"))?;
        protocol
            .getattr(intern!(py, "_loop"))?
            .call_method1(intern!(py, "call_soon"), (do_read,))?;
        Ok(())
    }

    /// asyncio's `_do_read__buffered`, decrypting straight into the application's buffer
    /// (`get_buffer(incoming.pending)`), then `buffer_updated(n)` once. Unlike asyncio, a
    /// `bytearray` buffer is filled in place: asyncio slices it (`buf[offset:]`), which
    /// copies it, and loses what a second read put there.
    fn read_buffered(
        &self,
        py: Python<'_>,
        get_buffer: &Py<PyAny>,
        buffer_updated: &Py<PyAny>,
    ) -> PyResult<()> {
        let hint = self.incoming_pending(py)?;
        let target = get_buffer.call1(py, (hint,))?;
        let (filled, stop) = {
            let mut buffer = ExportedBuffer::writable(target.bind(py))?;
            let window = buffer.as_mut_slice();
            if window.is_empty() {
                return Err(PyRuntimeError::new_err(
                    "get_buffer() returned an empty buffer",
                ));
            }
            // The view is released here, before any Python code that could resize the
            // buffer runs.
            self.decrypt_into(py, window)?
        };
        let full = matches!(stop, Decrypted::Full);
        let close_notify = matches!(stop, Decrypted::CloseNotify);
        if full {
            // As asyncio: the buffer is full, more may be waiting.
            self.call_soon_do_read(py)?;
        }
        if filled > 0 {
            buffer_updated.call1(py, (filled,))?;
        }
        self.finish_read(py, close_notify)
    }

    /// `app_protocol.data_received(bytes)` with a copy of `plaintext`, or for a framed
    /// application `plaintext` appended to its splitter and its complete frames delivered.
    fn deliver(
        &self,
        py: Python<'_>,
        protocol: &Bound<'_, PyAny>,
        plaintext: &[u8],
    ) -> PyResult<()> {
        let receiver = match &self.state.borrow_mut(py).app {
            Some(AppReceiver::Data(d)) => Some(AppReceiver::Data(d.clone_ref(py))),
            Some(AppReceiver::Framed(s)) => Some(AppReceiver::Framed(s.clone_ref(py))),
            _ => None,
        };
        if let Some(AppReceiver::Framed(splitter)) = receiver {
            splitter.get().extend(py, plaintext);
            return splitter.get().deliver(py);
        }
        let data = PyBytes::new(py, plaintext);
        match receiver {
            Some(AppReceiver::Data(data_received)) => data_received.call1(py, (data,))?,
            _ => protocol
                .getattr(intern!(py, "_app_protocol"))?
                .call_method1(intern!(py, "data_received"), (data,))?
                .unbind(),
        };
        Ok(())
    }

    fn incoming_pending(&self, py: Python<'_>) -> PyResult<usize> {
        self.incoming
            .getattr(py, intern!(py, "pending"))?
            .extract(py)
    }

    /// asyncio's `_process_outgoing`: moves the outgoing BIO's records to the socket
    /// transport unless it paused us, then `_control_app_writing`.
    fn process_outgoing(&self, py: Python<'_>) -> PyResult<()> {
        let mut pending = self.outgoing_pending(py)?;
        if pending > 0 && !self.flags(py).ssl_writing_paused {
            // `read()` takes all; sending runs no code that writes to the BIO.
            let records = self.outgoing_read.call0(py)?;
            pending = 0;
            self.send_raw(py, records.bind(py))?;
        }
        self.control_app_writing(py, pending)
    }

    fn outgoing_pending(&self, py: Python<'_>) -> PyResult<usize> {
        self.outgoing
            .getattr(py, intern!(py, "pending"))?
            .extract(py)
    }

    /// Hands ciphertext to the socket transport: straight to its Rust core when it is one.
    fn send_raw(&self, py: Python<'_>, records: &Bound<'_, PyAny>) -> PyResult<()> {
        let (core, transport) = {
            let state = self.state.borrow_mut(py);
            (
                state.raw_core.as_ref().map(|c| c.clone_ref(py)),
                state.raw_transport.as_ref().map(|t| t.clone_ref(py)),
            )
        };
        match (core, transport) {
            (Some(core), _) => StreamCore::write(core.bind(py), records),
            (None, Some(transport)) => transport
                .call_method1(py, intern!(py, "write"), (records,))
                .map(drop),
            (None, None) => self
                .protocol
                .getattr(py, intern!(py, "_transport"))?
                .call_method1(py, intern!(py, "write"), (records,))
                .map(drop),
        }
    }

    /// asyncio's `_control_app_writing`, run in Python only when it has something to do;
    /// `outgoing` is what the outgoing BIO holds now.
    fn control_app_writing(&self, py: Python<'_>, outgoing: usize) -> PyResult<()> {
        let flags = self.flags(py);
        let act = if self.backlog_len(py)? > 0 {
            // The backlog's byte count lives in Python; let it decide.
            true
        } else {
            crosses_water_mark(
                flags.app_writing_paused,
                outgoing,
                flags.outgoing_low_water,
                flags.outgoing_high_water,
            )
        };
        if act {
            self.protocol
                .call_method0(py, intern!(py, "_control_app_writing"))?;
        }
        Ok(())
    }

    /// asyncio's `_control_ssl_reading`, run in Python only when it has something to do.
    fn control_ssl_reading(&self, py: Python<'_>) -> PyResult<()> {
        let flags = self.flags(py);
        let size = self.incoming_pending(py)?;
        if crosses_water_mark(
            flags.ssl_reading_paused,
            size,
            flags.incoming_low_water,
            flags.incoming_high_water,
        ) {
            self.protocol
                .call_method0(py, intern!(py, "_control_ssl_reading"))?;
        }
        Ok(())
    }

    /// Encrypts `data` now and sends the records (asyncio's `_write_appdata` + `_do_write`
    /// with an empty backlog). Returns false, having done nothing, when the slow path must
    /// run instead.
    fn write_now(&self, py: Python<'_>, data: &Bound<'_, PyAny>, len: usize) -> PyResult<bool> {
        if !self.wrapped(py) || self.flags(py).ssl_writing_paused || self.backlog_len(py)? > 0 {
            return Ok(false);
        }
        let written = match self.ssl_write.call1(py, (data,)) {
            Ok(count) => count.extract::<usize>(py)?,
            Err(err) if is_again(py, &err)? => return Ok(false),
            Err(err) => {
                self.guard(py, Err(err))?;
                return Ok(true);
            }
        };
        if written < len {
            // SSL_write without partial writes takes all or nothing; kept for safety.
            let rest = PyMemoryView::from(data)?.get_item(pyo3::types::PySlice::new(
                py,
                written as isize,
                len as isize,
                1,
            ))?;
            self.write_appdata(py, (rest,))?;
            return Ok(true);
        }
        let flushed = self.process_outgoing(py);
        self.guard(py, flushed)?;
        Ok(true)
    }

    fn write_appdata<'py>(
        &self,
        py: Python<'py>,
        list_of_data: impl IntoPyObject<'py>,
    ) -> PyResult<()> {
        self.protocol
            .call_method1(py, intern!(py, "_write_appdata"), (list_of_data,))
            .map(drop)
    }
}

/// Whether `size` makes a side's flow control flip: a paused side resumes at or below
/// `low`, a running one pauses at or above `high` (asyncio's comparisons).
fn crosses_water_mark(paused: bool, size: usize, low: usize, high: usize) -> bool {
    if paused {
        size <= low
    } else {
        size >= high
    }
}

/// The length of a `write()` argument, or asyncio's TypeError for anything not bytes-like.
fn bytes_like_len(data: &Bound<'_, PyAny>) -> PyResult<usize> {
    if let Ok(bytes) = data.cast::<PyBytes>() {
        return Ok(bytes.as_bytes().len());
    }
    if data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>() {
        return data.len().or_else(|_| {
            // A multi-dimensional memoryview: its length in bytes.
            data.getattr("nbytes")?.extract()
        });
    }
    Err(PyTypeError::new_err(format!(
        "data: expecting a bytes-like instance, got {}",
        data.get_type().name()?
    )))
}

#[pymethods]
impl TlsPump {
    /// `TlsPump(protocol, sslobj, incoming, outgoing, buffer, view)`: the pump of
    /// `protocol`, an `SSLProtocol` whose `SSLObject` and BIOs are given; `buffer` is the
    /// thread's shared bytearray and `view` a memoryview of it.
    #[new]
    fn py_new(
        py: Python<'_>,
        protocol: Py<PyAny>,
        sslobj: &Bound<'_, PyAny>,
        incoming: &Bound<'_, PyAny>,
        outgoing: &Bound<'_, PyAny>,
        buffer: Bound<'_, PyByteArray>,
        view: Bound<'_, PyMemoryView>,
    ) -> PyResult<Self> {
        let size = buffer.len();
        if size < MIN_BUFFER_SIZE {
            return Err(PyValueError::new_err(format!(
                "the TLS buffer must hold at least {MIN_BUFFER_SIZE} bytes, got {size}"
            )));
        }
        // `ssl.SSLObject` is a Python wrapper whose methods forward to a C object; calling
        // that one saves a Python frame per call.
        let native = match sslobj.getattr(intern!(py, "_sslobj")) {
            Ok(native) if !native.is_none() => native,
            _ => sslobj.clone(),
        };
        let backlog = protocol.getattr(py, intern!(py, "_write_backlog"))?;
        Ok(TlsPump {
            protocol,
            backlog,
            ssl_read: native.getattr(intern!(py, "read"))?.unbind(),
            ssl_write: native.getattr(intern!(py, "write"))?.unbind(),
            ssl_pending: native.getattr(intern!(py, "pending"))?.unbind(),
            incoming: incoming.clone().unbind(),
            incoming_write: incoming.getattr(intern!(py, "write"))?.unbind(),
            outgoing: outgoing.clone().unbind(),
            outgoing_read: outgoing.getattr(intern!(py, "read"))?.unbind(),
            buffer: buffer.unbind(),
            view: view.into_any().unbind(),
            size,
            state: GilCell::new(PumpState {
                wrapped: false,
                flags: Flags::default(),
                app: None,
                raw_core: None,
                raw_transport: None,
            }),
        })
    }

    /// Mirrors `SSLProtocolState.WRAPPED` (the protocol's `_set_state` calls this).
    fn set_wrapped(&self, py: Python<'_>, wrapped: bool) {
        self.state.borrow_mut(py).wrapped = wrapped;
    }

    /// Copies the protocol's flow-control attributes and application protocol into the
    /// pump; `TlsProtocol` calls it after every method that changes one of them.
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        let protocol = self.protocol.bind(py);
        let get = |name: &str| protocol.getattr(name);
        let flags = Flags {
            app_reading_paused: get("_app_reading_paused")?.is_truthy()?,
            ssl_writing_paused: get("_ssl_writing_paused")?.is_truthy()?,
            app_writing_paused: get("_app_writing_paused")?.is_truthy()?,
            ssl_reading_paused: get("_ssl_reading_paused")?.is_truthy()?,
            outgoing_high_water: get("_outgoing_high_water")?.extract()?,
            outgoing_low_water: get("_outgoing_low_water")?.extract()?,
            incoming_high_water: get("_incoming_high_water")?.extract()?,
            incoming_low_water: get("_incoming_low_water")?.extract()?,
        };
        let app = get("_app_protocol")?;
        let receiver = if app.is_none() {
            None
        } else if get("_app_protocol_is_buffer")?.is_truthy()? {
            Some(AppReceiver::Buffered(
                get("_app_protocol_get_buffer")?.unbind(),
                get("_app_protocol_buffer_updated")?.unbind(),
            ))
        } else if let Some(splitter) = splitter_of(&app) {
            Some(AppReceiver::Framed(splitter))
        } else {
            Some(AppReceiver::Data(
                app.getattr(intern!(py, "data_received"))?.unbind(),
            ))
        };
        let old = {
            let mut state = self.state.borrow_mut(py);
            state.flags = flags;
            std::mem::replace(&mut state.app, receiver)
        };
        drop(old);
        Ok(())
    }

    /// The socket transport below.
    fn attach(&self, py: Python<'_>, transport: Option<Bound<'_, PyAny>>) {
        let core = transport.as_ref().and_then(|t| {
            t.getattr(intern!(py, "_core"))
                .ok()
                .and_then(|c| c.cast_into::<StreamCore>().ok())
                .map(Bound::unbind)
        });
        let old = {
            let mut state = self.state.borrow_mut(py);
            (
                std::mem::replace(&mut state.raw_core, core),
                std::mem::replace(&mut state.raw_transport, transport.map(Bound::unbind)),
            )
        };
        drop(old);
    }

    /// Forgets the transport below and the application protocol: the connection is lost.
    fn detach(&self, py: Python<'_>) {
        let old = {
            let mut state = self.state.borrow_mut(py);
            state.wrapped = false;
            (
                state.raw_core.take(),
                state.raw_transport.take(),
                state.app.take(),
            )
        };
        drop(old);
    }

    /// `BufferedProtocol.get_buffer`: the shared buffer (its whole size).
    #[pyo3(signature = (sizehint = -1))]
    fn get_buffer(&self, py: Python<'_>, sizehint: isize) -> Py<PyAny> {
        let _ = sizehint;
        self.view.clone_ref(py)
    }

    /// `BufferedProtocol.buffer_updated`: `nbytes` of ciphertext arrived in the buffer.
    fn buffer_updated(&self, py: Python<'_>, nbytes: isize) -> PyResult<()> {
        if nbytes <= 0 || nbytes as usize > self.size {
            return Err(PyValueError::new_err(format!(
                "buffer_updated: nbytes must be in 1..={}, got {nbytes}",
                self.size
            )));
        }
        // SAFETY: the first `nbytes` of the pinned buffer; `MemoryBIO.write` copies them
        // before returning.
        let view = unsafe { raw_view(py, storage(self.buffer.bind(py)), nbytes as usize, false)? };
        self.incoming_write.call1(py, (view,))?;
        let protocol = self.protocol.bind(py);
        let (wrapped, paused, app) = {
            let state = self.state.borrow_mut(py);
            (
                state.wrapped,
                state.flags.app_reading_paused,
                state.app.as_ref().map(|a| a.clone_ref(py)),
            )
        };
        if !wrapped {
            protocol.call_method0(intern!(py, "_dispatch_incoming"))?;
            return Ok(());
        }
        if paused || app.is_none() {
            protocol.call_method0(intern!(py, "_do_read"))?;
            return Ok(());
        }
        self.read_now(py)
    }

    /// asyncio's `_do_read` in the WRAPPED state with the application reading:
    /// `TlsProtocol._do_read` calls this.
    fn read_now(&self, py: Python<'_>) -> PyResult<()> {
        let app = self
            .state
            .borrow_mut(py)
            .app
            .as_ref()
            .map(|a| a.clone_ref(py));
        let result = match app {
            Some(AppReceiver::Data(_) | AppReceiver::Framed(_)) => self.read_wrapped(py),
            Some(AppReceiver::Buffered(get_buffer, updated)) => {
                self.read_buffered(py, &get_buffer, &updated)
            }
            None => Ok(()),
        };
        self.guard(py, result)
    }

    /// `SSLProtocol._process_outgoing`, for the protocol's own (slow-path) callers.
    fn process_outgoing_now(&self, py: Python<'_>) -> PyResult<()> {
        self.process_outgoing(py)
    }

    /// The application transport's `write(data)`.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let len = bytes_like_len(data)?;
        if len == 0 {
            return Ok(());
        }
        if !self.write_now(py, data, len)? {
            self.write_appdata(py, (data,))?;
        }
        Ok(())
    }

    /// The application transport's `writelines(list_of_data)`: one `SSLObject.write` for
    /// all the buffers, so they share records instead of one record (at least) each.
    fn writelines(&self, py: Python<'_>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let items: Vec<Bound<'_, PyAny>> = list_of_data.try_iter()?.collect::<PyResult<_>>()?;
        let joined = PyBytes::new(py, b"").call_method1(intern!(py, "join"), (&items,));
        let joined = match joined {
            Ok(joined) => joined,
            // Not all bytes-like: asyncio queues them anyway and fails on the write.
            Err(_) => return self.write_appdata(py, items),
        };
        let len = joined.len()?;
        if len == 0 {
            return Ok(());
        }
        if !self.write_now(py, &joined, len)? {
            self.write_appdata(py, (joined,))?;
        }
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.protocol)?;
        visit.call(&self.backlog)?;
        visit.call(&self.ssl_read)?;
        visit.call(&self.ssl_write)?;
        visit.call(&self.ssl_pending)?;
        visit.call(&self.incoming)?;
        visit.call(&self.incoming_write)?;
        visit.call(&self.outgoing)?;
        visit.call(&self.outgoing_read)?;
        visit.call(&self.buffer)?;
        visit.call(&self.view)?;
        if let Some(state) = self.state.try_borrow_in_gc() {
            visit.call(&state.raw_core)?;
            match &state.app {
                Some(AppReceiver::Data(d)) => visit.call(d)?,
                Some(AppReceiver::Framed(s)) => visit.call(s)?,
                Some(AppReceiver::Buffered(g, u)) => {
                    visit.call(g)?;
                    visit.call(u)?;
                }
                None => {}
            }
            visit.call(&state.raw_transport)?;
        }
        Ok(())
    }

    /// Drops the references to the transport below; the protocol's own `__dict__` is what
    /// the collector clears to break the protocol <-> pump cycle.
    fn __clear__(&self) {
        let released = self.state.try_borrow_in_gc().map(|mut state| {
            (
                state.raw_core.take(),
                state.raw_transport.take(),
                state.app.take(),
            )
        });
        drop(released);
    }
}
