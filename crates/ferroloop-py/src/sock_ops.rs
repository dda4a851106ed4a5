//! asyncio's `sock_*` operations, completion-style: the syscall runs in Rust at once, and
//! only when it would block is a reader/writer registered and a future returned.
//!
//! The Python layer (`ferroloop._sockets`) checks the arguments the way asyncio does and
//! calls one `_sock_*` method here. That method tries the operation on the fd straight
//! away; a finished operation returns its value (or raises), one that would block returns
//! a pending future. The pending operation lives in a [`SockOp`]: the fd's reader or writer
//! `Handle` calls it whenever the fd is ready, it retries in Rust and, once the operation
//! finishes, unregisters itself and resolves the future.
//!
//! Cancellation: the future's done callback unregisters the op. The op never touches the
//! socket once its future is done, so a cancelled `sock_recv` consumes no bytes.
//!
//! Borrowing rule (as in `event_loop.rs`): the op's cell and the loop's `state` are
//! borrowed only for short stretches without Python calls; the op's working state is
//! moved out of its cell while a step runs and moved back if the step must wait.

use std::io;
use std::os::fd::RawFd;

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{
    PyBlockingIOError, PyBufferError, PyConnectionError, PyInterruptedError, PyKeyboardInterrupt,
    PyOSError, PySystemExit, PyTypeError, PyValueError,
};
use pyo3::ffi;
use pyo3::gc::{PyTraverseError, PyVisit};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};
use pyo3::IntoPyObjectExt;

use crate::errors::os_error;
use crate::event_loop::EventLoop;
use crate::gil_cell::GilCell;
use crate::handle::Handle;
use crate::sockaddr::{numeric_sockaddr, sockaddr_to_py, SockAddr};

/// At most this many bytes are moved by one step of `sock_sendall`/`sock_sendfile`, so a
/// fast peer cannot keep the loop inside one callback indefinitely.
const MAX_BYTES_PER_STEP: usize = 16 * 1024 * 1024;

/// Which readiness an op waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Read,
    Write,
}

/// The operation-specific part of a pending op.
enum OpKind {
    /// `sock.recv(n)`.
    Recv { n: usize },
    /// `sock.recv_into(buf)`; the buffer is exported anew on every attempt, as asyncio does.
    RecvInto { buf: Py<PyAny> },
    /// `sock.recvfrom(n)` on an AF_INET, AF_INET6 or AF_UNIX socket.
    RecvFrom { n: usize },
    /// `sock.recvfrom_into(buf, n)` on an AF_INET, AF_INET6 or AF_UNIX socket.
    RecvFromInto { buf: Py<PyAny>, n: usize },
    /// `sock.sendall(data)`: the exported buffer and how much of it was sent.
    SendAll { data: PyUntypedBuffer, pos: usize },
    /// The end of a non-blocking `connect()`: reads `SO_ERROR`.
    Connect { address: Py<PyAny> },
    /// A cold operation done by calling `sock.<method>(*args)` (accept, sendto, recvfrom
    /// on other families). `accept` makes the accepted socket non-blocking.
    Call {
        method: Py<PyString>,
        args: Py<PyTuple>,
        accept: bool,
    },
    /// `os.sendfile` from `file_fd` starting at `offset`.
    SendFile(SendFile),
    /// `sock.sendto(data, address)` to a numeric IPv4/IPv6 address.
    SendTo {
        data: PyUntypedBuffer,
        address: SockAddr,
    },
}

/// The progress of a zero-copy `sock_sendfile`.
struct SendFile {
    file_fd: RawFd,
    /// The next file offset to send from.
    offset: i64,
    /// Bytes to send in total, 0 for "to the end of the file".
    count: usize,
    /// Bytes asked of one sendfile call when `count` is 0.
    blocksize: usize,
    total_sent: usize,
    /// True once the op waited for writability (asyncio's `registered_fd is not None`).
    registered: bool,
}

impl SendFile {
    /// Moves the file position after the bytes sent (to `offset` when none were), as
    /// asyncio 3.14 does; asyncio before 3.14 left the position alone when nothing was
    /// sent, so `sendfile(offset=len(file))` kept a stale position.
    fn update_file_position(&self) {
        // SAFETY: lseek only reads its integer arguments; a bad fd yields EBADF.
        unsafe { libc::lseek(self.file_fd, self.offset as libc::off_t, libc::SEEK_SET) };
    }
}

/// The outcome of one attempt.
enum Step {
    /// The operation would block: wait for readiness.
    Pending,
    /// The operation finished with this result.
    Done(PyResult<Py<PyAny>>),
}

fn would_block(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

fn py_would_block(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyBlockingIOError>(py) || err.is_instance_of::<PyInterruptedError>(py)
}

fn is_fatal(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py)
}

/// Retries `f` while it fails with EINTR; the non-blocking calls here never sleep.
fn retry_eintr<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn check_len(value: isize, message: &str) -> PyResult<usize> {
    usize::try_from(value).map_err(|_| PyValueError::new_err(message.to_owned()))
}

/// `recv(fd, n)` into a new `bytes` of exactly the received size.
fn recv_bytes(py: Python<'_>, fd: RawFd, n: usize) -> io::Result<PyResult<Py<PyAny>>> {
    let size = n as ffi::Py_ssize_t;
    // SAFETY: GIL held; the writer is either finished or discarded on every path below.
    let writer = unsafe { ffi::compat::PyBytesWriter_Create(size) };
    if writer.is_null() {
        return Ok(Err(PyErr::fetch(py)));
    }
    // SAFETY: `writer` is a live writer of `n` bytes; recv writes at most `n` bytes there.
    let received = retry_eintr(|| {
        let data = unsafe { ffi::compat::PyBytesWriter_GetData(writer) };
        let got = unsafe { libc::recv(fd, data.cast(), n, 0) };
        if got < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(got as usize)
        }
    });
    match received {
        Ok(got) => {
            // SAFETY: `got <= n`; FinishWithSize consumes the writer and returns a new
            // reference or NULL with an exception set.
            let object = unsafe {
                ffi::compat::PyBytesWriter_FinishWithSize(writer, got as ffi::Py_ssize_t)
            };
            // SAFETY: an owned reference or NULL, handled by from_owned_ptr_or_err.
            Ok(unsafe { Bound::from_owned_ptr_or_err(py, object) }.map(Bound::unbind))
        }
        Err(err) => {
            // SAFETY: the writer was neither finished nor discarded yet.
            unsafe { ffi::compat::PyBytesWriter_Discard(writer) };
            Err(err)
        }
    }
}

/// `recvfrom(fd, buf, n)` returning the byte count and the sender's address.
fn recvfrom_raw(
    fd: RawFd,
    buf: *mut u8,
    n: usize,
) -> io::Result<(usize, libc::sockaddr_storage, libc::socklen_t)> {
    // SAFETY: an all-zero sockaddr_storage is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let got = retry_eintr(|| {
        len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: `buf` is valid for `n` writable bytes (callers' contract); `storage`
        // and `len` describe a writable sockaddr_storage.
        let got = unsafe {
            libc::recvfrom(
                fd,
                buf.cast(),
                n,
                0,
                (&mut storage as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        };
        if got < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(got as usize)
        }
    })?;
    Ok((got, storage, len))
}

impl OpKind {
    /// Tries the operation once (looping over partial sends). Runs with the op's cell
    /// released: it may call into Python.
    fn attempt(&mut self, py: Python<'_>, fd: RawFd, sock: &Bound<'_, PyAny>) -> Step {
        match self {
            // As the socket module: asking for nothing makes no syscall.
            OpKind::Recv { n: 0 } => Step::Done(Ok(PyBytes::new(py, b"").into_any().unbind())),
            OpKind::Recv { n } => match recv_bytes(py, fd, *n) {
                Ok(result) => Step::Done(result),
                Err(err) if would_block(&err) => Step::Pending,
                Err(err) => Step::Done(Err(os_error(err))),
            },
            OpKind::RecvInto { buf } => {
                let buffer = match write_buffer(buf.bind(py), "recv_into") {
                    Ok(buffer) => buffer,
                    Err(err) => return Step::Done(Err(err)),
                };
                let (ptr, len) = (buffer.buf_ptr() as usize, buffer.len_bytes());
                if len == 0 {
                    buffer.release(py);
                    return Step::Done(0usize.into_py_any(py));
                }
                let got = retry_eintr(|| {
                    // SAFETY: the exported, writable, contiguous buffer is `len` bytes.
                    let got = unsafe { libc::recv(fd, ptr as *mut libc::c_void, len, 0) };
                    if got < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(got as usize)
                    }
                });
                buffer.release(py);
                match got {
                    Ok(got) => Step::Done(got.into_py_any(py)),
                    Err(err) if would_block(&err) => Step::Pending,
                    Err(err) => Step::Done(Err(os_error(err))),
                }
            }
            OpKind::RecvFrom { n } => {
                let mut data = vec![0u8; *n];
                match recvfrom_raw(fd, data.as_mut_ptr(), *n) {
                    Ok((got, storage, len)) => {
                        let result = sockaddr_to_py(py, &storage, len as usize).and_then(|addr| {
                            Ok((PyBytes::new(py, &data[..got]), addr)
                                .into_pyobject(py)?
                                .into_any()
                                .unbind())
                        });
                        Step::Done(result)
                    }
                    Err(err) if would_block(&err) => Step::Pending,
                    Err(err) => Step::Done(Err(os_error(err))),
                }
            }
            OpKind::RecvFromInto { buf, n } => {
                let buffer = match write_buffer(buf.bind(py), "recvfrom_into") {
                    Ok(buffer) => buffer,
                    Err(err) => return Step::Done(Err(err)),
                };
                let available = buffer.len_bytes();
                let wanted = if *n == 0 { available } else { *n };
                if wanted > available {
                    buffer.release(py);
                    return Step::Done(Err(PyValueError::new_err(
                        "nbytes is greater than the length of the buffer",
                    )));
                }
                let outcome = recvfrom_raw(fd, buffer.buf_ptr().cast(), wanted);
                buffer.release(py);
                match outcome {
                    Ok((got, storage, len)) => {
                        let result = sockaddr_to_py(py, &storage, len as usize).and_then(|addr| {
                            Ok((got, addr).into_pyobject(py)?.into_any().unbind())
                        });
                        Step::Done(result)
                    }
                    Err(err) if would_block(&err) => Step::Pending,
                    Err(err) => Step::Done(Err(os_error(err))),
                }
            }
            OpKind::SendAll { data, pos } => {
                let total = data.len_bytes();
                let base = data.buf_ptr() as *const u8;
                let mut moved = 0usize;
                loop {
                    let remaining = total - *pos;
                    // SAFETY: `pos <= total`; the exported buffer stays alive and pinned
                    // while `data` holds the export.
                    let sent = retry_eintr(|| {
                        let got = unsafe {
                            libc::send(fd, base.add(*pos).cast(), remaining, libc::MSG_NOSIGNAL)
                        };
                        if got < 0 {
                            Err(io::Error::last_os_error())
                        } else {
                            Ok(got as usize)
                        }
                    });
                    match sent {
                        Ok(sent) => {
                            *pos += sent;
                            moved += sent;
                            if *pos >= total {
                                return Step::Done(Ok(py.None()));
                            }
                            if sent == 0 || moved >= MAX_BYTES_PER_STEP {
                                return Step::Pending;
                            }
                        }
                        Err(err) if would_block(&err) => return Step::Pending,
                        Err(err) => return Step::Done(Err(os_error(err))),
                    }
                }
            }
            OpKind::Connect { address } => {
                let mut error: libc::c_int = 0;
                let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                // SAFETY: `error` and `len` describe a writable c_int.
                let rc = unsafe {
                    libc::getsockopt(
                        fd,
                        libc::SOL_SOCKET,
                        libc::SO_ERROR,
                        (&mut error as *mut libc::c_int).cast(),
                        &mut len,
                    )
                };
                if rc < 0 {
                    let err = io::Error::last_os_error();
                    if would_block(&err) {
                        return Step::Pending;
                    }
                    return Step::Done(Err(os_error(err)));
                }
                if error == libc::EINPROGRESS || error == libc::EAGAIN || error == libc::EINTR {
                    return Step::Pending;
                }
                if error != 0 {
                    let shown = address
                        .bind(py)
                        .str()
                        .map(|s| s.to_string())
                        .unwrap_or_default();
                    return Step::Done(Err(PyOSError::new_err((
                        error,
                        format!("Connect call failed {shown}"),
                    ))));
                }
                Step::Done(Ok(py.None()))
            }
            OpKind::Call {
                method,
                args,
                accept,
            } => {
                let result = sock.call_method1(method.bind(py), args.bind(py));
                match result {
                    Ok(value) => {
                        if *accept {
                            let made_nonblocking = value
                                .get_item(0)
                                .and_then(|conn| conn.call_method1("setblocking", (false,)));
                            if let Err(err) = made_nonblocking {
                                return Step::Done(Err(err));
                            }
                        }
                        Step::Done(Ok(value.unbind()))
                    }
                    Err(err) if py_would_block(py, &err) => Step::Pending,
                    Err(err) => Step::Done(Err(err)),
                }
            }
            OpKind::SendFile(state) => state.attempt(py, fd),
            OpKind::SendTo { data, address } => {
                let sent = retry_eintr(|| {
                    // SAFETY: the exported buffer is `len_bytes()` readable bytes; the
                    // address is a valid sockaddr of `address.len` bytes.
                    let got = unsafe {
                        libc::sendto(
                            fd,
                            data.buf_ptr().cast_const(),
                            data.len_bytes(),
                            libc::MSG_NOSIGNAL,
                            address.as_ptr(),
                            address.len,
                        )
                    };
                    if got < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(got as usize)
                    }
                });
                match sent {
                    Ok(sent) => Step::Done(sent.into_py_any(py)),
                    Err(err) if would_block(&err) => Step::Pending,
                    Err(err) => Step::Done(Err(os_error(err))),
                }
            }
        }
    }

    fn direction(&self) -> Direction {
        match self {
            OpKind::Recv { .. }
            | OpKind::RecvInto { .. }
            | OpKind::RecvFrom { .. }
            | OpKind::RecvFromInto { .. } => Direction::Read,
            OpKind::SendAll { .. }
            | OpKind::Connect { .. }
            | OpKind::SendFile(_)
            | OpKind::SendTo { .. } => Direction::Write,
            OpKind::Call { accept, .. } => {
                if *accept {
                    Direction::Read
                } else {
                    Direction::Write
                }
            }
        }
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            OpKind::RecvInto { buf } | OpKind::RecvFromInto { buf, .. } => visit.call(buf),
            OpKind::Connect { address } => visit.call(address),
            OpKind::Call { method, args, .. } => {
                visit.call(method)?;
                visit.call(args)
            }
            _ => Ok(()),
        }
    }
}

impl SendFile {
    fn attempt(&mut self, py: Python<'_>, fd: RawFd) -> Step {
        let ask = if self.count > 0 {
            let left = self.count.saturating_sub(self.total_sent);
            if left == 0 {
                self.update_file_position();
                return Step::Done(self.total_sent.into_py_any(py));
            }
            left
        } else {
            self.blocksize
        };
        let mut offset = self.offset as libc::off_t;
        let sent = retry_eintr(|| {
            // SAFETY: plain integer arguments and a pointer to a local offset.
            let got = unsafe { libc::sendfile(fd, self.file_fd, &mut offset, ask) };
            if got < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(got as usize)
            }
        });
        match sent {
            Ok(0) => {
                // End of file.
                self.update_file_position();
                Step::Done(self.total_sent.into_py_any(py))
            }
            Ok(sent) => {
                // One chunk per loop iteration, as asyncio: the transfer stays "in
                // progress" (transport.write() refused) until a later iteration.
                self.offset += sent as i64;
                self.total_sent += sent;
                Step::Pending
            }
            Err(err) if would_block(&err) => Step::Pending,
            Err(err) => {
                self.update_file_position();
                Step::Done(Err(self.sendfile_error(py, err)))
            }
        }
    }

    /// asyncio's mapping of a failed `os.sendfile`: nothing sent yet means "sendfile is
    /// not available here" (the caller may fall back); ENOTCONN after waiting means the
    /// peer went away, reported as `ConnectionError` on every platform.
    fn sendfile_error(&self, py: Python<'_>, err: io::Error) -> PyErr {
        let original = os_error(err);
        if self.total_sent == 0 {
            return match py
                .import("asyncio.exceptions")
                .and_then(|m| m.getattr("SendfileNotAvailableError"))
                .and_then(|cls| cls.call1(("os.sendfile call failed",)))
            {
                Ok(exc) => PyErr::from_value(exc),
                Err(e) => e,
            };
        }
        let is_enotconn = original
            .value(py)
            .getattr("errno")
            .and_then(|e| e.extract::<i32>())
            .map(|e| e == libc::ENOTCONN)
            .unwrap_or(false);
        if self.registered
            && is_enotconn
            && !original.get_type(py).is(py.get_type::<PyConnectionError>())
        {
            let replaced = PyConnectionError::new_err(("socket is not connected", libc::ENOTCONN));
            replaced.set_cause(py, Some(original));
            return replaced;
        }
        original
    }
}

/// The working state of a pending op; `None` in [`SockOp`] once it finished.
struct OpState {
    event_loop: Py<EventLoop>,
    future: Py<PyAny>,
    sock: Py<PyAny>,
    fd: RawFd,
    direction: Direction,
    /// The reader/writer handle registered for this op.
    handle: Option<Py<Handle>>,
    /// Moved out while a step runs.
    kind: Option<OpKind>,
}

/// A pending `sock_*` operation: the callback of its fd's reader or writer handle.
#[pyclass(module = "ferroloop._core", frozen)]
pub struct SockOp {
    state: GilCell<Option<OpState>>,
}

impl SockOp {
    /// Removes the op's reader/writer if it is still the registered one; takes the state.
    fn finish(&self, py: Python<'_>, cancel_handle: bool) -> Option<OpState> {
        let mut state = self.state.borrow_mut(py).take()?;
        let handle = state.handle.take();
        let removed = handle.as_ref().and_then(|handle| {
            let event_loop = state.event_loop.get();
            let mut loop_state = event_loop.state.borrow_mut(py);
            let loop_state = &mut *loop_state;
            let watch = loop_state.fds.get_mut(&state.fd)?;
            let slot = match state.direction {
                Direction::Read => &mut watch.reader,
                Direction::Write => &mut watch.writer,
            };
            if slot.as_ref().is_some_and(|h| h.is(handle)) {
                let removed = slot.take();
                crate::fds::apply_interest(loop_state, state.fd);
                removed
            } else {
                None
            }
        });
        if cancel_handle {
            if let Some(handle) = &removed {
                let _ = handle.call_method0(py, "cancel");
            }
        }
        drop(removed);
        drop(handle);
        Some(state)
    }
}

#[pymethods]
impl SockOp {
    /// Called by the reader/writer handle when the fd is ready: retries the operation and
    /// resolves the future once it finished. Never touches the socket once the future is
    /// done (a cancelled recv consumes nothing).
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let (future, sock, fd, mut kind) = {
            let mut state = self.state.borrow_mut(py);
            let Some(state) = state.as_mut() else {
                return Ok(());
            };
            let Some(kind) = state.kind.take() else {
                return Ok(());
            };
            (
                state.future.clone_ref(py),
                state.sock.clone_ref(py),
                state.fd,
                kind,
            )
        };
        let future = future.bind(py);
        let done = future
            .call_method0(pyo3::intern!(py, "done"))?
            .is_truthy()?;
        let step = if done {
            Step::Pending
        } else if sock_fd(sock.bind(py)).ok() != Some(fd) {
            // The socket was closed (and its fd number perhaps reused) while waiting:
            // fail as the socket's own method would, never touching another socket.
            let closed = io::Error::from_raw_os_error(libc::EBADF);
            Step::Done(Err(os_error(closed)))
        } else {
            kind.attempt(py, fd, sock.bind(py))
        };
        match step {
            Step::Pending => {
                let mut state = self.state.borrow_mut(py);
                match state.as_mut() {
                    Some(state) => {
                        state.kind = Some(kind);
                        Ok(())
                    }
                    None => {
                        drop(state);
                        drop(kind);
                        Ok(())
                    }
                }
            }
            Step::Done(result) => {
                let finished = self.finish(py, false);
                drop(kind);
                drop(finished);
                deliver(py, future, result)
            }
        }
    }

    /// The future's done callback: unregisters the op when the future was cancelled (or
    /// finished by someone else); updates the file position of a cancelled sendfile.
    fn _on_done(&self, py: Python<'_>, _future: &Bound<'_, PyAny>) {
        if let Some(mut state) = self.finish(py, true) {
            if let Some(OpKind::SendFile(sendfile)) = state.kind.take() {
                sendfile.update_file_position();
            }
            drop(state);
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        match self.state.borrow_mut(py).as_ref() {
            Some(state) => format!("<SockOp fd={} pending>", state.fd),
            None => "<SockOp finished>".to_owned(),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(state) = self.state.try_borrow_in_gc() else {
            return Ok(());
        };
        if let Some(state) = state.as_ref() {
            visit.call(&state.event_loop)?;
            visit.call(&state.future)?;
            visit.call(&state.sock)?;
            visit.call(&state.handle)?;
            if let Some(kind) = &state.kind {
                kind.traverse(&visit)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let released = self.state.try_borrow_in_gc().and_then(|mut s| s.take());
        drop(released);
    }
}

/// Sets the future's result or exception; KeyboardInterrupt and SystemExit propagate out
/// of the callback instead, as asyncio does.
fn deliver(py: Python<'_>, future: &Bound<'_, PyAny>, result: PyResult<Py<PyAny>>) -> PyResult<()> {
    match result {
        Ok(value) => {
            future.call_method1(pyo3::intern!(py, "set_result"), (value,))?;
        }
        Err(err) if is_fatal(py, &err) => return Err(err),
        Err(err) => {
            future.call_method1(pyo3::intern!(py, "set_exception"), (err.into_value(py),))?;
        }
    }
    Ok(())
}

impl EventLoop {
    /// Tries `kind` at once; returns its value, raises its error, or registers a
    /// [`SockOp`] and returns the pending future. A connect was already tried by the
    /// caller and goes straight to waiting (SO_ERROR reads 0 while it is in progress).
    fn sock_start(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        fd: RawFd,
        mut kind: OpKind,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        if !matches!(kind, OpKind::Connect { .. }) {
            match kind.attempt(py, fd, sock) {
                Step::Done(result) => return result,
                Step::Pending => {}
            }
        }
        slf.call_method1(pyo3::intern!(py, "_ensure_fd_no_transport"), (fd,))?;
        slf.get().ensure_open()?;
        if let OpKind::SendFile(sendfile) = &mut kind {
            sendfile.registered = true;
        }
        let future = slf.call_method0(pyo3::intern!(py, "create_future"))?;
        let direction = kind.direction();
        let op = Bound::new(
            py,
            SockOp {
                state: GilCell::new(Some(OpState {
                    event_loop: slf.clone().unbind(),
                    future: future.clone().unbind(),
                    sock: sock.clone().unbind(),
                    fd,
                    direction,
                    handle: None,
                    kind: Some(kind),
                })),
            },
        )?;
        let handle = register(slf, fd, direction, op.clone().into_any().unbind())?;
        if let Some(state) = op.get().state.borrow_mut(py).as_mut() {
            state.handle = Some(handle);
        }
        future.call_method1(
            pyo3::intern!(py, "add_done_callback"),
            (op.getattr(pyo3::intern!(py, "_on_done"))?,),
        )?;
        Ok(future.unbind())
    }
}

/// Registers `callback` as the reader or writer of `fd`, replacing (and cancelling) an
/// earlier one, as `add_reader`/`add_writer` do; returns the new handle.
fn register(
    slf: &Bound<'_, EventLoop>,
    fd: RawFd,
    direction: Direction,
    callback: Py<PyAny>,
) -> PyResult<Py<Handle>> {
    let py = slf.py();
    let this = slf.get();
    let handle = Py::new(
        py,
        Handle::create(py, callback, PyTuple::empty(py).unbind(), None)?,
    )?;
    let outcome = {
        let mut state = this.state.borrow_mut(py);
        let state = &mut *state;
        let watch = state.fds.entry(fd).or_default();
        let slot = match direction {
            Direction::Read => &mut watch.reader,
            Direction::Write => &mut watch.writer,
        };
        let previous = slot.replace(handle.clone_ref(py));
        let interest = watch.interest();
        let registered = match &state.poller {
            Some(poller) => poller.register(fd, fd as u64, interest),
            None => Ok(()),
        };
        match registered {
            Ok(()) => Ok(previous),
            Err(err) => {
                let ours = state.fds.get_mut(&fd).map(|watch| {
                    let slot = match direction {
                        Direction::Read => &mut watch.reader,
                        Direction::Write => &mut watch.writer,
                    };
                    std::mem::replace(slot, previous)
                });
                crate::fds::apply_interest(state, fd);
                Err((err, ours))
            }
        }
    };
    match outcome {
        Ok(previous) => {
            if let Some(previous) = previous {
                previous.call_method0(py, "cancel")?;
            }
            Ok(handle)
        }
        Err((err, ours)) => {
            drop(ours);
            Err(os_error(err))
        }
    }
}

fn sock_fd(sock: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    let fd: i64 = sock.call_method0("fileno")?.extract()?;
    // A closed socket reports -1: the syscall then fails with EBADF, as the socket
    // module's would.
    Ok(RawFd::try_from(fd).unwrap_or(-1))
}

#[pymethods]
impl EventLoop {
    /// `sock.recv(n)` now, or a future for it: the Rust half of `sock_recv`.
    fn _sock_recv(slf: &Bound<'_, Self>, sock: &Bound<'_, PyAny>, n: isize) -> PyResult<Py<PyAny>> {
        let n = check_len(n, "negative buffersize in recv")?;
        let fd = sock_fd(sock)?;
        Self::sock_start(slf, sock, fd, OpKind::Recv { n })
    }

    /// `sock.recv_into(buf)` now, or a future for it.
    fn _sock_recv_into(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        buf: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        // Validate the buffer before touching the socket, as the socket module does.
        write_buffer(buf, "recv_into")?.release(slf.py());
        let fd = sock_fd(sock)?;
        let kind = OpKind::RecvInto {
            buf: buf.clone().unbind(),
        };
        Self::sock_start(slf, sock, fd, kind)
    }

    /// `sock.recvfrom(n)` now, or a future for it (AF_INET, AF_INET6, AF_UNIX sockets).
    fn _sock_recvfrom(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        n: isize,
    ) -> PyResult<Py<PyAny>> {
        let n = check_len(n, "negative buffersize in recvfrom")?;
        let fd = sock_fd(sock)?;
        Self::sock_start(slf, sock, fd, OpKind::RecvFrom { n })
    }

    /// `sock.recvfrom_into(buf, n)` now, or a future for it (AF_INET, AF_INET6, AF_UNIX).
    fn _sock_recvfrom_into(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        buf: &Bound<'_, PyAny>,
        n: isize,
    ) -> PyResult<Py<PyAny>> {
        let n = check_len(n, "negative buffersize in recvfrom_into")?;
        let buffer = write_buffer(buf, "recvfrom_into")?;
        let available = buffer.len_bytes();
        buffer.release(slf.py());
        if n > available {
            return Err(PyValueError::new_err(
                "nbytes is greater than the length of the buffer",
            ));
        }
        let fd = sock_fd(sock)?;
        let kind = OpKind::RecvFromInto {
            buf: buf.clone().unbind(),
            n,
        };
        Self::sock_start(slf, sock, fd, kind)
    }

    /// Sends all of `data` now, or returns a future that finishes the job.
    fn _sock_sendall(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let data = read_buffer(data)?;
        let fd = sock_fd(sock)?;
        Self::sock_start(slf, sock, fd, OpKind::SendAll { data, pos: 0 })
    }

    /// `sock.connect(address)` now, or a future that reports the connection's outcome.
    fn _sock_connect(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        address: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let fd = sock_fd(sock)?;
        match sock.call_method1(pyo3::intern!(py, "connect"), (address,)) {
            Ok(_) => return Ok(py.None()),
            Err(err) if py_would_block(py, &err) => {}
            Err(err) => return Err(err),
        }
        let kind = OpKind::Connect {
            address: address.clone().unbind(),
        };
        Self::sock_start(slf, sock, fd, kind)
    }

    /// `sock.sendto(data, address)` now, or a future for it. A numeric IPv4/IPv6
    /// address is sent to from Rust; any other goes through the socket's own method.
    fn _sock_sendto(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
        address: &Bound<'_, PyAny>,
        family: i32,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let fd = sock_fd(sock)?;
        let kind = match numeric_sockaddr(family, address) {
            Some(address) => OpKind::SendTo {
                data: read_buffer(data)?,
                address,
            },
            None => OpKind::Call {
                method: pyo3::intern!(py, "sendto").clone().unbind(),
                args: PyTuple::new(py, [data, address])?.unbind(),
                accept: false,
            },
        };
        Self::sock_start(slf, sock, fd, kind)
    }

    /// `sock.<method>(*args)` now, or a future for it, waiting for readability when
    /// `read` (used for accept, and sendto/recvfrom on other socket families).
    /// `accept` makes the accepted socket non-blocking.
    fn _sock_call(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        method: Bound<'_, PyString>,
        args: Bound<'_, PyTuple>,
        accept: bool,
    ) -> PyResult<Py<PyAny>> {
        let fd = sock_fd(sock)?;
        let kind = OpKind::Call {
            method: method.unbind(),
            args: args.unbind(),
            accept,
        };
        Self::sock_start(slf, sock, fd, kind)
    }

    /// Zero-copy `os.sendfile` of `file_fd` from `offset` (`count` bytes, 0 meaning to the
    /// end); returns the byte count now or a future for it.
    fn _sock_sendfile(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        file_fd: RawFd,
        offset: i64,
        count: usize,
        blocksize: usize,
    ) -> PyResult<Py<PyAny>> {
        if offset < 0 {
            return Err(PyValueError::new_err(
                "offset must be a non-negative integer",
            ));
        }
        let fd = sock_fd(sock)?;
        let kind = OpKind::SendFile(SendFile {
            file_fd,
            offset,
            count,
            blocksize,
            total_sent: 0,
            registered: false,
        });
        Self::sock_start(slf, sock, fd, kind)
    }
}

/// The read-only, C-contiguous buffer of a bytes-like object, as `sock.send` takes it.
fn read_buffer(obj: &Bound<'_, PyAny>) -> PyResult<PyUntypedBuffer> {
    let buffer = PyUntypedBuffer::get(obj)?;
    if !buffer.is_c_contiguous() {
        buffer.release(obj.py());
        return Err(not_contiguous());
    }
    Ok(buffer)
}

/// The writable, C-contiguous buffer of `obj`, as `sock.recv_into` takes it.
fn write_buffer(obj: &Bound<'_, PyAny>, method: &str) -> PyResult<PyUntypedBuffer> {
    let buffer = match PyUntypedBuffer::get(obj) {
        Ok(buffer) => buffer,
        Err(err) if err.is_instance_of::<PyTypeError>(obj.py()) => {
            return Err(not_writable(method, obj))
        }
        Err(err) => return Err(err),
    };
    if buffer.readonly() {
        buffer.release(obj.py());
        return Err(not_writable(method, obj));
    }
    if !buffer.is_c_contiguous() {
        buffer.release(obj.py());
        return Err(not_contiguous());
    }
    Ok(buffer)
}

/// The error for a buffer that is not C-contiguous, as the socket module raises it.
fn not_contiguous() -> PyErr {
    PyBufferError::new_err("memoryview: underlying buffer is not C-contiguous")
}

/// The `TypeError` for a read-only buffer given to a `*_into` method.
fn not_writable(method: &str, obj: &Bound<'_, PyAny>) -> PyErr {
    let type_name = obj
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    PyTypeError::new_err(format!(
        "{method}() argument 'buffer' must be read-write bytes-like object, not {type_name}"
    ))
}
