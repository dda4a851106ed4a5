//! Large reads straight into a `bytes` of their size (issue 14).
//!
//! The usual read path `recv`s into the thread's 256 KiB buffer and copies what arrived
//! into a new `bytes` (uvloop does the same). For a 100 KiB message that copy is a
//! 100 KiB `memcpy` per read. When a socket's last read was large, `SizedRead` first asks
//! the kernel how much is waiting (`FIONREAD`) and, if that is large too, `recv`s into a
//! `bytes` object of exactly that size: one copy (the kernel's) instead of two. The extra
//! `ioctl` costs about as much as copying 16 KiB, so small reads never pay it.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Reads of at least this many bytes take the direct path, and a read this large makes
/// the next read of the socket try it (below it, the `ioctl` costs more than the copy).
pub(crate) const LARGE_READ: usize = 32 * 1024;

/// Whether a socket's reads are large enough for the direct path; one per transport.
#[derive(Default)]
pub(crate) struct SizedRead {
    /// The last read returned at least [`LARGE_READ`] bytes. Written and read by the loop
    /// thread only (with the GIL); atomic because the transport class is `Sync`.
    last_was_large: AtomicBool,
}

/// What a direct read got. `Declined`: too little is waiting (or no object could be
/// made), the caller reads as usual.
pub(crate) enum Direct {
    Declined,
    /// The bytes read: `size` or fewer.
    Data(Py<PyBytes>),
    /// `recv` returned 0.
    Eof,
    /// `recv` failed (`EAGAIN` included), with `errno` taken right after the call.
    Error(std::io::Error),
    /// Bytes were read but the object holding them could not be finished.
    Failed(PyErr),
}

impl SizedRead {
    /// Remembers the size of the read just made (`recv`'s return value).
    pub(crate) fn note(&self, n: isize) {
        let large = n >= LARGE_READ as isize;
        self.last_was_large.store(large, Ordering::Relaxed);
    }

    /// Reads up to `max` bytes from `fd` into a new `bytes` of the size waiting, when the
    /// last read was large and a large read is waiting now. `count` is told `recv`'s
    /// return value.
    pub(crate) fn try_read(
        &self,
        py: Python<'_>,
        fd: RawFd,
        max: usize,
        count: impl FnOnce(isize),
    ) -> Direct {
        if !self.last_was_large.load(Ordering::Relaxed) {
            return Direct::Declined;
        }
        let waiting = waiting_bytes(fd);
        if waiting < LARGE_READ {
            return Direct::Declined;
        }
        read_into_new_bytes(py, fd, waiting.min(max), |n| {
            self.note(n);
            count(n);
        })
    }
}

/// Bytes in the socket's receive queue (`FIONREAD`); 0 when the kernel will not say.
fn waiting_bytes(fd: RawFd) -> usize {
    let mut waiting: libc::c_int = 0;
    // SAFETY: FIONREAD writes one `int` through the pointer, which points at `waiting`.
    let status = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut waiting as *mut libc::c_int) };
    if status == 0 && waiting > 0 {
        waiting as usize
    } else {
        0
    }
}

/// `recv(fd, size)` into a fresh `bytes` through a `PyBytesWriter` (no zero-filling, no
/// copy), shrunk to what arrived; `count` is told `recv`'s return value.
fn read_into_new_bytes(
    py: Python<'_>,
    fd: RawFd,
    size: usize,
    count: impl FnOnce(isize),
) -> Direct {
    // SAFETY: the GIL is held; a writer of `size` bytes is created, or NULL is returned
    // with an exception set, which is cleared (the caller then reads the usual way).
    let writer = unsafe { ffi::compat::PyBytesWriter_Create(size as ffi::Py_ssize_t) };
    if writer.is_null() {
        drop(PyErr::take(py));
        return Direct::Declined;
    }
    // SAFETY: `writer` is live; its data is `size` writable bytes until it is finished or
    // discarded, and the kernel writes at most `size` bytes there.
    let n = unsafe { libc::recv(fd, ffi::compat::PyBytesWriter_GetData(writer), size, 0) };
    let error = (n < 0).then(std::io::Error::last_os_error);
    count(n);
    if n <= 0 {
        // SAFETY: `writer` is live and discarded exactly once.
        unsafe { ffi::compat::PyBytesWriter_Discard(writer) };
        return match error {
            Some(err) => Direct::Error(err),
            None => Direct::Eof,
        };
    }
    // SAFETY: `writer` is live and consumed exactly once; its first `n` bytes were
    // written by `recv`. The result is a new reference, or NULL with an exception set.
    let bytes = unsafe { ffi::compat::PyBytesWriter_FinishWithSize(writer, n as ffi::Py_ssize_t) };
    if bytes.is_null() {
        return Direct::Failed(PyErr::fetch(py));
    }
    // SAFETY: `bytes` is a new reference to a `bytes` object, owned from here on.
    let bytes = unsafe { Bound::from_owned_ptr(py, bytes) };
    match bytes.cast_into::<PyBytes>() {
        Ok(bytes) => Direct::Data(bytes.unbind()),
        Err(err) => Direct::Failed(err.into()),
    }
}
