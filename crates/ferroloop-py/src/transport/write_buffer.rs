//! The queue of bytes a transport could not send yet.
//!
//! Immutable `bytes` are kept by reference (no copy); mutable buffers (`bytearray`,
//! `memoryview`) are copied, so mutating them after `write()` cannot change what is sent.
//! Flushing gathers up to [`MAX_IOVECS`] chunks into one `sendmsg` (scatter/gather I/O)
//! for sockets, or one `writev` for pipes ([`WriteBuffer::flush_pipe`]).

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// How many queued chunks one flush hands to the kernel at most.
const MAX_IOVECS: usize = 64;

enum Chunk {
    Shared(Py<PyBytes>),
    Owned(Vec<u8>),
}

impl Chunk {
    fn bytes<'a>(&'a self, py: Python<'_>) -> &'a [u8] {
        match self {
            Chunk::Shared(b) => b.as_bytes(py),
            Chunk::Owned(v) => v,
        }
    }
}

/// Queued output: chunks in order, with how much of the first one was already sent.
#[derive(Default)]
pub struct WriteBuffer {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already sent.
    front_sent: usize,
    /// Unsent bytes in total.
    len: usize,
}

impl WriteBuffer {
    /// Unsent bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues a `bytes` object without copying it.
    pub fn push_shared(&mut self, data: Py<PyBytes>, len: usize) {
        if len > 0 {
            self.chunks.push_back(Chunk::Shared(data));
            self.len += len;
        }
    }

    /// Queues a copy of `data`.
    pub fn push_copy(&mut self, data: &[u8]) {
        if !data.is_empty() {
            self.push_owned(data.to_vec());
        }
    }

    /// Queues bytes the caller already copied (no second copy).
    pub fn push_owned(&mut self, data: Vec<u8>) {
        if !data.is_empty() {
            self.len += data.len();
            self.chunks.push_back(Chunk::Owned(data));
        }
    }

    /// Queues a `bytes` object of `total` bytes whose first `already_sent` bytes were
    /// written, without copying it. Only an empty queue can start mid-chunk; otherwise
    /// the unsent tail is copied.
    pub fn push_shared_tail(
        &mut self,
        py: Python<'_>,
        data: Py<PyBytes>,
        total: usize,
        already_sent: usize,
    ) {
        if already_sent >= total {
            return;
        }
        if self.chunks.is_empty() {
            self.front_sent = already_sent;
            self.chunks.push_back(Chunk::Shared(data));
            self.len += total - already_sent;
        } else {
            let tail = data.as_bytes(py)[already_sent..].to_vec();
            self.len += tail.len();
            self.chunks.push_back(Chunk::Owned(tail));
        }
    }

    /// Removes everything; returns the chunks so the caller drops them outside any borrow.
    pub fn take(&mut self) -> WriteBuffer {
        std::mem::take(self)
    }

    /// Sends as much as the socket takes with one `sendmsg`. Returns the bytes sent;
    /// `WouldBlock`/`Interrupted` errors are for the caller to treat as "sent nothing".
    pub fn flush(&mut self, py: Python<'_>, fd: RawFd) -> io::Result<usize> {
        let sent = {
            let mut slices: Vec<&[u8]> = Vec::with_capacity(self.chunks.len().min(MAX_IOVECS));
            for (i, chunk) in self.chunks.iter().take(MAX_IOVECS).enumerate() {
                let bytes = chunk.bytes(py);
                slices.push(if i == 0 {
                    &bytes[self.front_sent..]
                } else {
                    bytes
                });
            }
            send_vectored(fd, &slices)?
        };
        self.consume(py, sent);
        Ok(sent)
    }

    /// Writes as much as the pipe takes with one `writev` (pipes, FIFOs, character
    /// devices and sockets used as pipes). Returns the bytes written; `WouldBlock`/
    /// `Interrupted` errors are for the caller to treat as "wrote nothing".
    pub fn flush_pipe(&mut self, py: Python<'_>, fd: RawFd) -> io::Result<usize> {
        let written = {
            let iovecs: Vec<libc::iovec> = self
                .chunks
                .iter()
                .take(MAX_IOVECS)
                .enumerate()
                .map(|(i, chunk)| {
                    let bytes = chunk.bytes(py);
                    let bytes = if i == 0 {
                        &bytes[self.front_sent..]
                    } else {
                        bytes
                    };
                    libc::iovec {
                        iov_base: bytes.as_ptr() as *mut libc::c_void,
                        iov_len: bytes.len(),
                    }
                })
                .collect();
            if iovecs.is_empty() {
                return Ok(0);
            }
            // SAFETY: every iovec points into a chunk owned by `self.chunks`, which is not
            // modified until the call returns; the kernel only reads them.
            let n = unsafe { libc::writev(fd, iovecs.as_ptr(), iovecs.len() as libc::c_int) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            n as usize
        };
        self.consume(py, written);
        Ok(written)
    }

    fn consume(&mut self, py: Python<'_>, mut sent: usize) {
        self.len -= sent;
        while sent > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let remaining = front.bytes(py).len() - self.front_sent;
            if sent >= remaining {
                sent -= remaining;
                self.chunks.pop_front();
                self.front_sent = 0;
            } else {
                self.front_sent += sent;
                sent = 0;
            }
        }
    }
}

/// `send(fd, data, MSG_NOSIGNAL)`: a peer that went away yields `EPIPE`, never SIGPIPE.
pub fn send(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is a valid slice for the duration of the call; the kernel only reads it.
    let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `write(fd, data)`: the pipe counterpart of [`send`]. A reader that went away yields
/// `EPIPE` (CPython ignores SIGPIPE).
pub fn write_fd(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is a valid slice for the duration of the call; the kernel only reads it.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `sendmsg` with one iovec per slice, `MSG_NOSIGNAL`.
pub fn send_vectored(fd: RawFd, slices: &[&[u8]]) -> io::Result<usize> {
    if slices.len() == 1 {
        return send(fd, slices[0]);
    }
    let mut iovecs: Vec<libc::iovec> = slices
        .iter()
        .map(|s| libc::iovec {
            iov_base: s.as_ptr() as *mut libc::c_void,
            iov_len: s.len(),
        })
        .collect();
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iovecs.as_mut_ptr();
    msg.msg_iovlen = iovecs.len() as _;
    // SAFETY: every iovec points into a slice that outlives the call; the kernel only reads.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// True for the errors that mean "try again when the fd is ready".
pub fn would_block(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}
