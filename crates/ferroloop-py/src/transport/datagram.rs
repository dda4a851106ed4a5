//! `DatagramCore`: the state machine of a datagram transport (UDP, Unix datagram).
//!
//! The Python class `ferroloop._datagram.DatagramTransport` derives from asyncio's
//! transport classes and delegates every method here, as the stream transport does.
//!
//! Reading: a readable fd runs `_read_ready`, which `recvfrom`s up to
//! [`MAX_DATAGRAMS_PER_WAKEUP`] datagrams (stopping at `EAGAIN`, or when the protocol
//! closed the transport or paused reading) and calls
//! `protocol.datagram_received(data, addr)` for each; `addr` is built in Rust in the
//! socket module's form for AF_INET, AF_INET6 and AF_UNIX sockets, and sockets of other
//! families are read through `sock.recvfrom` so Python builds their addresses. An OS
//! error goes to `protocol.error_received(exc)` (e.g. the ICMP "port unreachable" a
//! connected UDP socket reports as `ECONNREFUSED`).
//!
//! Writing: `sendto` sends at once when nothing is queued (`send` on a connected socket,
//! `sendto` with a sockaddr built in Rust for numeric IPv4/IPv6 addresses, else the
//! Python socket's `sendto`) and queues `(bytes, addr)` on `EAGAIN`; a writable fd
//! runs `_sendto_ready`, which sends the queue in order. Water marks drive
//! `pause_writing()`/`resume_writing()`. Semantics follow asyncio's selector datagram
//! transport; the borrow rule holds: `state` is never borrowed across a call into Python.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::mem::size_of;
use std::os::fd::RawFd;

use pyo3::exceptions::{
    PyBlockingIOError, PyInterruptedError, PyOSError, PyTypeError, PyValueError,
};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView};
use pyo3::{PyTraverseError, PyVisit};

use super::exported_buffer::ExportedBuffer;
use super::lifecycle::{
    clone_of, socket_lifecycle_pymethods, transport_core, write_flow_pymethods, FlowControl,
    Lifecycle, SocketLifecycle, TransportCore, WriteFlow,
};
use super::write_buffer::send;
use crate::errors::os_error;
use crate::gil_cell::GilCell;
use crate::sockaddr::{numeric_sockaddr, sockaddr_to_py};
use crate::stats::{IoStats, OpenTransport, TransportKind};

/// Bytes one `recvfrom` asks for at most (asyncio's `max_size`).
const MAX_READ_SIZE: usize = 256 * 1024;
/// Datagrams read per readiness event at most; the rest wait for the next iteration so
/// one busy socket cannot starve the loop.
const MAX_DATAGRAMS_PER_WAKEUP: usize = 32;

thread_local! {
    /// One receive buffer per loop thread: reads never nest, and each datagram is
    /// copied out (only its length) before any Python code runs.
    static READ_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_READ_SIZE]);
}

/// A datagram waiting for the socket to become writable.
pub(crate) struct Queued {
    data: Py<PyBytes>,
    addr: Option<Py<PyAny>>,
}

struct DatagramState {
    /// The Python socket; `None` once connection_lost ran and the socket is closed.
    sock: Option<Py<PyAny>>,
    /// The `asyncio` transport object users see. Dropped at connection_lost, which
    /// breaks the owner <-> core cycle.
    owner: Option<Py<PyAny>>,
    /// The loop; `None` after connection_lost.
    event_loop: Option<Py<PyAny>>,
    protocol: Option<Py<PyAny>>,
    /// The remote address of a connected endpoint (`remote_addr`), when truthy.
    address: Option<Py<PyAny>>,
    queue: VecDeque<Queued>,
    /// Bytes queued, plus the per-datagram header allowance on Python 3.13+.
    buffer_size: usize,
    flow: FlowControl,
    lifecycle: Lifecycle,
    /// Counts the transport as open in its loop's `stats()` until connection_lost.
    open: Option<OpenTransport>,
}

/// The Rust half of a datagram transport.
#[pyclass(module = "ferroloop._core", frozen)]
pub struct DatagramCore {
    fd: RawFd,
    /// The loop's byte counters.
    io: Option<std::sync::Arc<IoStats>>,
    family: i32,
    /// The socket had a peer name when the transport was made: send with `send()`.
    connected: bool,
    /// Bytes counted per queued datagram on top of its payload (8 on Python 3.13+).
    header_size: usize,
    /// Python 3.13+ sends empty datagrams; older versions drop them.
    send_empty: bool,
    state: GilCell<DatagramState>,
}

fn is_not_ready(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyBlockingIOError>(py) || err.is_instance_of::<PyInterruptedError>(py)
}

/// What one receive attempt produced.
enum Received {
    Datagram(Py<PyAny>, Py<PyAny>),
    NotReady,
    /// An `OSError`: for `protocol.error_received`.
    Error(PyErr),
    /// Anything else: a fatal error.
    Fatal(PyErr),
}

/// What one send attempt produced.
enum Sent {
    Done,
    NotReady,
    /// An `OSError`: for `protocol.error_received`.
    Error(PyErr),
    /// Anything else: a fatal error.
    Fatal(PyErr),
}

impl Sent {
    fn from_py(py: Python<'_>, result: PyResult<()>) -> Sent {
        match result {
            Ok(()) => Sent::Done,
            Err(err) if is_not_ready(py, &err) => Sent::NotReady,
            Err(err) if err.is_instance_of::<PyOSError>(py) => Sent::Error(err),
            Err(err) => Sent::Fatal(err),
        }
    }

    fn from_io(result: io::Result<usize>) -> Sent {
        match result {
            Ok(_) => Sent::Done,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Sent::NotReady,
            Err(err) => Sent::Error(os_error(err)),
        }
    }
}

transport_core!(DatagramCore);

impl WriteFlow for DatagramCore {
    fn with_flow<R>(&self, py: Python<'_>, f: impl FnOnce(&mut FlowControl, usize) -> R) -> R {
        let mut state = self.state.borrow_mut(py);
        let queued = state.buffer_size;
        f(&mut state.flow, queued)
    }
}

impl SocketLifecycle for DatagramCore {
    type Queue = VecDeque<Queued>;

    const LOGS_FATAL_OS_ERRORS: bool = false;

    fn with_lifecycle<R>(&self, py: Python<'_>, f: impl FnOnce(&mut Lifecycle, bool) -> R) -> R {
        let mut state = self.state.borrow_mut(py);
        let queue_empty = state.queue.is_empty();
        f(&mut state.lifecycle, queue_empty)
    }

    fn take_queue(&self, py: Python<'_>) -> VecDeque<Queued> {
        let mut state = self.state.borrow_mut(py);
        state.buffer_size = 0;
        std::mem::take(&mut state.queue)
    }
}

impl DatagramCore {
    fn sock_obj(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state
            .borrow_mut(py)
            .sock
            .as_ref()
            .map(|s| s.clone_ref(py))
    }

    fn error_received(&self, py: Python<'_>, err: PyErr) -> PyResult<()> {
        if let Some(protocol) = self.protocol(py) {
            protocol.call_method1(py, intern!(py, "error_received"), (err.into_value(py),))?;
        }
        Ok(())
    }

    /// One `recvfrom`, in Rust for the families whose addresses Rust builds.
    fn receive(&self, py: Python<'_>, sock: &Py<PyAny>) -> Received {
        if !matches!(self.family, libc::AF_INET | libc::AF_INET6 | libc::AF_UNIX) {
            return match sock.call_method1(py, intern!(py, "recvfrom"), (MAX_READ_SIZE,)) {
                Ok(pair) => match pair.extract::<(Py<PyAny>, Py<PyAny>)>(py) {
                    Ok((data, addr)) => Received::Datagram(data, addr),
                    Err(err) => Received::Fatal(err),
                },
                Err(err) if is_not_ready(py, &err) => Received::NotReady,
                Err(err) if err.is_instance_of::<PyOSError>(py) => Received::Error(err),
                Err(err) => Received::Fatal(err),
            };
        }
        // SAFETY: an all-zero sockaddr_storage is valid.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let received = READ_BUFFER.with_borrow_mut(|buf| loop {
            let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: `buf` is writable for `buf.len()` bytes and `storage` for `len`
            // bytes; the kernel writes at most that much and updates `len`.
            let n = unsafe {
                libc::recvfrom(
                    self.fd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    &mut storage as *mut _ as *mut libc::sockaddr,
                    &mut len,
                )
            };
            if n >= 0 {
                if let Some(io) = &self.io {
                    io.read(n as usize);
                }
                let data = PyBytes::new(py, &buf[..n as usize]);
                break Ok((data.into_any().unbind(), len as usize));
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                break Err(err);
            }
        });
        match received {
            Ok((data, len)) => match sockaddr_to_py(py, &storage, len) {
                Ok(addr) => Received::Datagram(data, addr),
                Err(err) => Received::Fatal(err),
            },
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Received::NotReady,
            Err(err) => Received::Error(os_error(err)),
        }
    }

    /// One send of `data` to `addr` (`send` when connected, else `sendto`).
    fn send_datagram(
        &self,
        py: Python<'_>,
        sock: &Py<PyAny>,
        data: &Bound<'_, PyAny>,
        addr: Option<&Bound<'_, PyAny>>,
    ) -> Sent {
        let target = match (self.connected, addr) {
            (true, _) => None,
            (false, Some(addr)) => match numeric_sockaddr(self.family, addr) {
                Some(target) => Some(target),
                None => {
                    let result = sock
                        .call_method1(py, intern!(py, "sendto"), (data, addr))
                        .map(drop);
                    return Sent::from_py(py, result);
                }
            },
            (false, None) => {
                // The socket module decides (it raises TypeError for a missing address).
                let result = sock
                    .call_method1(py, intern!(py, "sendto"), (data, py.None()))
                    .map(drop);
                return Sent::from_py(py, result);
            }
        };
        let view;
        let bytes: &[u8] = match data.cast::<PyBytes>() {
            Ok(b) => b.as_bytes(),
            Err(_) => match ExportedBuffer::readable(data) {
                Ok(v) => {
                    view = v;
                    view.as_slice()
                }
                Err(err) => return Sent::Fatal(err),
            },
        };
        loop {
            let result = match &target {
                None => send(self.fd, bytes),
                Some(target) => {
                    // SAFETY: `bytes` is valid for reads; `target` holds a sockaddr of
                    // `target.len` bytes built by numeric_sockaddr.
                    let n = unsafe {
                        libc::sendto(
                            self.fd,
                            bytes.as_ptr().cast(),
                            bytes.len(),
                            libc::MSG_NOSIGNAL,
                            target.as_ptr(),
                            target.len,
                        )
                    };
                    if n < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(n as usize)
                    }
                }
            };
            match result {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                other => {
                    if let (Ok(n), Some(io)) = (&other, &self.io) {
                        io.written(*n);
                    }
                    return Sent::from_io(other);
                }
            }
        }
    }
}

/// The `bytes` to queue for `data`: the object itself for `bytes`, else `bytes(data)`.
fn to_bytes(data: &Bound<'_, PyAny>) -> PyResult<Py<PyBytes>> {
    if let Ok(bytes) = data.cast_exact::<PyBytes>() {
        return Ok(bytes.clone().unbind());
    }
    // SAFETY: `data` is alive; PyBytes_FromObject returns a new reference or NULL with
    // an exception set.
    let copy = unsafe { ffi::PyBytes_FromObject(data.as_ptr()) };
    // SAFETY: as above.
    let copy = unsafe { Bound::from_owned_ptr_or_err(data.py(), copy) }?;
    Ok(copy.cast_into::<PyBytes>()?.unbind())
}

write_flow_pymethods!(DatagramCore);
socket_lifecycle_pymethods!(DatagramCore);

#[pymethods]
impl DatagramCore {
    /// `DatagramCore(loop, sock, protocol, owner, address=None, connected=False,
    /// header_size=0, send_empty=False)`.
    #[new]
    #[pyo3(signature = (event_loop, sock, protocol, owner, address = None, connected = false, header_size = 0, send_empty = false))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        event_loop: Py<PyAny>,
        sock: Bound<'_, PyAny>,
        protocol: Py<PyAny>,
        owner: Py<PyAny>,
        address: Option<Bound<'_, PyAny>>,
        connected: bool,
        header_size: usize,
        send_empty: bool,
    ) -> PyResult<Self> {
        let fd: RawFd = sock.call_method0("fileno")?.extract()?;
        let family: i32 = sock.getattr("family")?.extract()?;
        let address = match address {
            Some(a) if a.is_truthy()? => Some(a.unbind()),
            _ => None,
        };
        let open = OpenTransport::register(event_loop.bind(sock.py()), TransportKind::Datagram);
        Ok(DatagramCore {
            fd,
            io: open.as_ref().map(OpenTransport::io_arc),
            family,
            connected,
            header_size,
            send_empty,
            state: GilCell::new(DatagramState {
                sock: Some(sock.unbind()),
                owner: Some(owner),
                event_loop: Some(event_loop),
                protocol: Some(protocol),
                address,
                queue: VecDeque::new(),
                buffer_size: 0,
                flow: FlowControl::default(),
                lifecycle: Lifecycle::default(),
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
        self.sock_obj(py)
    }

    /// The remote address of a connected endpoint, else None.
    #[getter]
    fn address(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state
            .borrow_mut(py)
            .address
            .as_ref()
            .map(|a| a.clone_ref(py))
    }

    /// Called by the loop when the fd is readable: delivers up to
    /// `MAX_DATAGRAMS_PER_WAKEUP` datagrams.
    fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        for _ in 0..MAX_DATAGRAMS_PER_WAKEUP {
            let (sock, protocol) = {
                let state = this.state.borrow_mut(py);
                if state.lifecycle.conn_lost > 0
                    || state.lifecycle.closing
                    || state.lifecycle.reading_paused
                {
                    return Ok(());
                }
                match (&state.sock, &state.protocol) {
                    (Some(s), Some(p)) => (s.clone_ref(py), p.clone_ref(py)),
                    _ => return Ok(()),
                }
            };
            match this.receive(py, &sock) {
                Received::NotReady => return Ok(()),
                Received::Error(err) => return this.error_received(py, err),
                Received::Fatal(err) => {
                    return Self::fatal_error(slf, err, "Fatal read error on datagram transport");
                }
                Received::Datagram(data, addr) => {
                    protocol.call_method1(py, intern!(py, "datagram_received"), (data, addr))?;
                }
            }
        }
        Ok(())
    }

    /// Sends `data` to `addr` (None: the connected peer); queues it if the socket is busy.
    #[pyo3(signature = (data, addr = None))]
    fn sendto(
        slf: &Bound<'_, Self>,
        data: &Bound<'_, PyAny>,
        addr: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if !(data.is_instance_of::<PyBytes>()
            || data.is_instance_of::<PyByteArray>()
            || data.is_instance_of::<PyMemoryView>())
        {
            return Err(PyTypeError::new_err(format!(
                "data argument must be a bytes-like object, not {}",
                data.get_type().name()?.repr()?
            )));
        }
        if !this.send_empty && !data.is_truthy()? {
            return Ok(());
        }
        let address = this.address(py);
        let mut addr = addr.filter(|a| !a.is_none());
        if let Some(address) = &address {
            let address = address.bind(py);
            if let Some(given) = &addr {
                if !given.is(address) && !given.eq(address)? {
                    return Err(PyValueError::new_err(format!(
                        "Invalid address: must be None or {}",
                        address.str()?
                    )));
                }
            }
            addr = Some(address.clone());
        }
        let (conn_lost, queue_empty, sock) = {
            let state = this.state.borrow_mut(py);
            (
                state.lifecycle.conn_lost,
                state.queue.is_empty(),
                state.sock.as_ref().map(|s| s.clone_ref(py)),
            )
        };
        if conn_lost > 0 && (address.is_some() || sock.is_none()) {
            return this.count_lost_write(py, conn_lost);
        }
        let Some(sock) = sock else {
            return Ok(());
        };
        if queue_empty {
            match this.send_datagram(py, &sock, data, addr.as_ref()) {
                Sent::Done => return Ok(()),
                Sent::NotReady => Self::watch(slf, intern!(py, "_add_writer"), "_sendto_ready")?,
                Sent::Error(err) => return this.error_received(py, err),
                Sent::Fatal(err) => {
                    return Self::fatal_error(slf, err, "Fatal write error on datagram transport");
                }
            }
        }
        let data = to_bytes(data)?;
        let size = data.bind(py).as_bytes().len() + this.header_size;
        {
            let mut state = this.state.borrow_mut(py);
            state.queue.push_back(Queued {
                data,
                addr: addr.map(Bound::unbind),
            });
            state.buffer_size += size;
        }
        this.maybe_pause_protocol(py)
    }

    /// Called by the loop when the fd is writable and datagrams are queued.
    fn _sendto_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        loop {
            let (item, sock) = {
                let mut state = this.state.borrow_mut(py);
                let Some(sock) = state.sock.as_ref().map(|s| s.clone_ref(py)) else {
                    return Ok(());
                };
                let Some(item) = state.queue.pop_front() else {
                    break;
                };
                state.buffer_size = state
                    .buffer_size
                    .saturating_sub(item.data.bind(py).as_bytes().len() + this.header_size);
                (item, sock)
            };
            let data = item.data.bind(py).clone().into_any();
            let addr = item.addr.as_ref().map(|a| a.bind(py).clone());
            match this.send_datagram(py, &sock, &data, addr.as_ref()) {
                Sent::Done => {}
                Sent::NotReady => {
                    let size = item.data.bind(py).as_bytes().len() + this.header_size;
                    let mut state = this.state.borrow_mut(py);
                    state.queue.push_front(item);
                    state.buffer_size += size;
                    break;
                }
                Sent::Error(err) => return this.error_received(py, err),
                Sent::Fatal(err) => {
                    return Self::fatal_error(slf, err, "Fatal write error on datagram transport");
                }
            }
        }
        this.maybe_resume_protocol(py)?;
        let (drained, closing) = {
            let state = this.state.borrow_mut(py);
            (state.queue.is_empty(), state.lifecycle.closing)
        };
        if drained {
            this.unwatch(py, intern!(py, "_remove_writer"))?;
            if closing {
                Self::_call_connection_lost(slf, None)?;
            }
        }
        Ok(())
    }

    /// Switches the protocol that receives datagrams and events.
    fn set_protocol(&self, py: Python<'_>, protocol: Py<PyAny>) {
        let old = self.state.borrow_mut(py).protocol.replace(protocol);
        drop(old);
    }

    /// The current protocol.
    fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.protocol(py)
    }

    /// Calls protocol.connection_lost(exc) and closes the socket.
    #[pyo3(signature = (exc = None))]
    fn _call_connection_lost(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let result = this.call_connection_lost_on_protocol(py, exc);
        let released = {
            let mut state = this.state.borrow_mut(py);
            state.open = None;
            (
                state.sock.take(),
                state.protocol.take(),
                state.event_loop.take(),
                state.owner.take(),
            )
        };
        let closed = match &released.0 {
            Some(sock) => sock.call_method0(py, intern!(py, "close")).map(drop),
            None => Ok(()),
        };
        drop(released);
        result.and(closed)
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
        let reading = if !state.lifecycle.closing && !state.lifecycle.reading_paused {
            "polling"
        } else {
            "idle"
        };
        let writing = if state.queue.is_empty() {
            "idle"
        } else {
            "polling"
        };
        text.push_str(&format!(
            "fd={} read={reading} write=<{writing}, bufsize={}>",
            self.fd, state.buffer_size
        ));
        text
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(state) = self.state.try_borrow_in_gc() else {
            return Ok(());
        };
        visit.call(&state.sock)?;
        visit.call(&state.owner)?;
        visit.call(&state.event_loop)?;
        visit.call(&state.protocol)?;
        visit.call(&state.address)?;
        for item in &state.queue {
            visit.call(&item.data)?;
            visit.call(&item.addr)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        let released = self.state.try_borrow_in_gc().map(|mut state| {
            (
                state.owner.take(),
                state.event_loop.take(),
                state.protocol.take(),
                state.address.take(),
                std::mem::take(&mut state.queue),
            )
        });
        drop(released);
    }
}
