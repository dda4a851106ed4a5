//! Waking a loop that sleeps in [`Poller::wait`](crate::poll::Poller::wait).
//!
//! The waker is an eventfd registered with the poller. Another thread (a Python thread
//! calling `call_soon_threadsafe`, a DNS worker finishing a lookup) calls [`Waker::wake`];
//! the loop sees the eventfd readable and calls [`Waker::drain`]. Writes coalesce in the
//! eventfd counter, so any number of wakes costs the loop one read.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::event::{eventfd, EventfdFlags};
use rustix::io::Errno;

/// An eventfd-based wake-up signal, safe to share between threads.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    /// Creates a non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<Waker> {
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Waker { fd })
    }

    /// Makes the eventfd readable. Never blocks: a full counter (2^64 - 2 wakes nobody
    /// drained) already means "readable", so `EAGAIN` is ignored.
    pub fn wake(&self) -> io::Result<()> {
        match rustix::io::write(&self.fd, &1u64.to_ne_bytes()) {
            Ok(_) | Err(Errno::AGAIN) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Resets the eventfd to not readable. Returns whether any wake was pending.
    pub fn drain(&self) -> io::Result<bool> {
        let mut counter = [0u8; 8];
        match rustix::io::read(&self.fd, &mut counter) {
            Ok(_) => Ok(true),
            Err(Errno::AGAIN) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsFd for Waker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Waker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poll::{Events, Interest, Poller};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn wake_from_another_thread_ends_a_wait() {
        let waker = Arc::new(Waker::new().unwrap());
        let poller = Poller::new().unwrap();
        poller
            .register(waker.as_raw_fd(), 99, Interest::READ)
            .unwrap();
        let remote = Arc::clone(&waker);
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            remote.wake().unwrap();
            remote.wake().unwrap();
        });
        let mut events = Events::new();
        poller
            .wait(&mut events, Some(Duration::from_secs(10)))
            .unwrap();
        thread.join().unwrap();
        assert_eq!(events.iter().next().unwrap().token, 99);
        assert!(waker.drain().unwrap(), "two wakes coalesce into one read");
        assert!(!waker.drain().unwrap());
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(events.is_empty(), "drained waker is quiet");
    }
}
