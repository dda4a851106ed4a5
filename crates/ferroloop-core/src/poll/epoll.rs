//! Level-triggered epoll.
//!
//! Why level-triggered: asyncio's `add_reader` promises a callback whenever the fd is
//! readable. With edge triggering a reader that consumes 1 of 10 pending bytes is never
//! woken again (a bug other Rust loops shipped, because mio is edge-only). Level
//! triggering costs nothing extra here, since the loop re-arms nothing.
//!
//! Why eager `EPOLL_CTL_DEL`: the kernel keys registrations by open file description, not
//! by fd number. If a watched fd is closed and its number reused while still registered,
//! the stale registration would report the new file. Callers remove an fd before closing
//! it; [`Poller::register`] also recovers when the kernel already dropped a registration
//! (`ENOENT` on modify) or still has one (`EEXIST` on add).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use rustix::event::epoll;
use rustix::io::Errno;

use super::{Event, Interest};

/// How many kernel events the first wait collects; the buffer doubles while waits fill it.
const INITIAL_EVENTS_PER_WAIT: usize = 64;
/// How many kernel events one wait collects at most; more are reported by the next wait.
const MAX_EVENTS_PER_WAIT: usize = 1024;

/// A level-triggered readiness poller over epoll.
pub struct Poller {
    epoll: OwnedFd,
}

/// A reusable buffer for the reports of one [`Poller::wait`]; owned by the waiting thread,
/// so the poller itself can be shared (fds are registered from any thread while one waits).
pub struct Events {
    buffer: Vec<epoll::Event>,
}

// SAFETY: the buffer holds plain kernel reports; their user data is a u64 token (rustix
// types it as a union with a pointer, which makes it !Send, but we never store pointers).
unsafe impl Send for Events {}

impl Default for Events {
    fn default() -> Self {
        Events {
            buffer: Vec::with_capacity(INITIAL_EVENTS_PER_WAIT),
        }
    }
}

impl Events {
    /// An empty buffer.
    pub fn new() -> Events {
        Events::default()
    }

    /// The reports of the last wait.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        let error_or_hangup = epoll::EventFlags::ERR | epoll::EventFlags::HUP;
        self.buffer.iter().map(move |event| {
            let flags = event.flags;
            let broken = flags.intersects(error_or_hangup);
            Event {
                token: event.data.u64(),
                readable: broken
                    || flags.intersects(epoll::EventFlags::IN | epoll::EventFlags::PRI),
                writable: broken || flags.contains(epoll::EventFlags::OUT),
            }
        })
    }

    /// Number of reports from the last wait.
    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    /// True when the last wait reported nothing.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }
}

fn flags_for(interest: Interest) -> epoll::EventFlags {
    let mut flags = epoll::EventFlags::empty();
    if interest.readable {
        flags |= epoll::EventFlags::IN;
    }
    if interest.writable {
        flags |= epoll::EventFlags::OUT;
    }
    flags
}

fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the fd is only used for the duration of one epoll_ctl call, which fails
    // with EBADF (an error, not UB) if the caller passed a closed descriptor.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

impl Poller {
    /// Creates a new epoll instance (close-on-exec).
    pub fn new() -> io::Result<Poller> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        Ok(Poller { epoll })
    }

    /// Watches `fd` for `interest`, reporting it with `token`; replaces an earlier
    /// registration of the same fd. An empty interest removes the fd.
    pub fn register(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        if fd < 0 {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        if interest.is_empty() {
            return self.deregister(fd);
        }
        let data = epoll::EventData::new_u64(token);
        let flags = flags_for(interest);
        match epoll::modify(&self.epoll, borrow(fd), data, flags) {
            Ok(()) => Ok(()),
            Err(Errno::NOENT) => match epoll::add(&self.epoll, borrow(fd), data, flags) {
                Err(Errno::EXIST) => Ok(epoll::modify(&self.epoll, borrow(fd), data, flags)?),
                other => Ok(other?),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Stops watching `fd`. An fd the kernel no longer knows (closed, or never added) is
    /// not an error.
    pub fn deregister(&self, fd: RawFd) -> io::Result<()> {
        match epoll::delete(&self.epoll, borrow(fd)) {
            Ok(()) | Err(Errno::NOENT) | Err(Errno::BADF) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until an fd is ready or `timeout` passes (`None`: wait forever), and puts
    /// the reports into `events` (replacing the previous ones). Sub-millisecond timeouts
    /// round up to one millisecond so a wait never ends before a timer is due. Returns the
    /// number of reports.
    ///
    /// A signal interrupting the wait returns an error of kind `Interrupted`: the caller
    /// runs the signal handlers and decides whether to wait again.
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        let timespec = timeout.map(|t| {
            let millis = t.as_nanos().div_ceil(1_000_000);
            let millis = millis.min(i32::MAX as u128) as i64;
            rustix::time::Timespec {
                tv_sec: millis / 1000,
                tv_nsec: (millis % 1000) * 1_000_000,
            }
        });
        let buffer = &mut events.buffer;
        buffer.clear();
        epoll::wait(
            &self.epoll,
            rustix::buffer::spare_capacity(buffer),
            timespec.as_ref(),
        )?;
        let count = buffer.len();
        // A full buffer means more may be waiting: let the next wait collect more at once.
        if count == buffer.capacity() && count < MAX_EVENTS_PER_WAIT {
            buffer.reserve(count);
        }
        Ok(count)
    }
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("epoll", &self.epoll)
            .finish()
    }
}

impl AsFd for Poller {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn wait_once(poller: &Poller, ms: u64) -> Vec<Event> {
        let mut events = Events::new();
        poller
            .wait(&mut events, Some(Duration::from_millis(ms)))
            .unwrap();
        events.iter().collect()
    }

    #[test]
    fn reports_readable_until_drained() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let poller = Poller::new().unwrap();
        poller.register(b.as_raw_fd(), 7, Interest::READ).unwrap();
        assert!(wait_once(&poller, 0).is_empty());
        a.write_all(b"0123456789").unwrap();
        let mut byte = [0u8; 1];
        for _ in 0..10 {
            let events = wait_once(&poller, 100);
            assert_eq!(events.len(), 1, "level-triggered: still readable");
            assert_eq!(events[0].token, 7);
            assert!(events[0].readable && !events[0].writable);
            b.read_exact(&mut byte).unwrap();
        }
        assert!(wait_once(&poller, 0).is_empty(), "drained: no more reports");
    }

    #[test]
    fn reregister_changes_interest_and_token() {
        let (_a, b) = UnixStream::pair().unwrap();
        let poller = Poller::new().unwrap();
        poller.register(b.as_raw_fd(), 1, Interest::READ).unwrap();
        assert!(wait_once(&poller, 0).is_empty());
        poller.register(b.as_raw_fd(), 2, Interest::BOTH).unwrap();
        let events = wait_once(&poller, 100);
        assert_eq!(
            events,
            vec![Event {
                token: 2,
                readable: false,
                writable: true
            }]
        );
        poller
            .register(b.as_raw_fd(), 2, Interest::default())
            .unwrap();
        assert!(wait_once(&poller, 0).is_empty());
    }

    #[test]
    fn hangup_reports_readable() {
        let (a, b) = UnixStream::pair().unwrap();
        let poller = Poller::new().unwrap();
        poller.register(b.as_raw_fd(), 3, Interest::READ).unwrap();
        drop(a);
        let events = wait_once(&poller, 100);
        assert_eq!(events.len(), 1);
        assert!(events[0].readable);
    }

    #[test]
    fn deregister_of_unknown_or_closed_fd_is_ok() {
        let poller = Poller::new().unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        poller.deregister(a.as_raw_fd()).unwrap();
        poller.register(a.as_raw_fd(), 1, Interest::READ).unwrap();
        let fd = a.as_raw_fd();
        drop(a);
        poller.deregister(fd).unwrap();
    }

    #[test]
    fn registering_a_closed_fd_fails() {
        let poller = Poller::new().unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        drop(a);
        assert!(poller.register(fd, 1, Interest::READ).is_err());
        assert!(poller.register(-1, 1, Interest::READ).is_err());
    }

    #[test]
    fn timeout_elapses() {
        let poller = Poller::new().unwrap();
        let start = std::time::Instant::now();
        assert!(wait_once(&poller, 20).is_empty());
        assert!(start.elapsed() >= Duration::from_millis(20));
    }
}
