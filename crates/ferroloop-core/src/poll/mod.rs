//! Readiness polling.
//!
//! One file per kernel facility, each exposing the same [`Poller`] type; Linux uses
//! [`epoll`](epoll.rs). The contract is **level-triggered**: an fd that is still readable
//! after its callback ran is reported again on the next wait. `loop.add_reader` is defined
//! that way, and a callback that consumes part of the pending data must be called again.

mod epoll;

pub use epoll::{Events, Poller};

/// Which readiness an fd is watched for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    /// Report when reading would not block (or the peer hung up, or an error is pending).
    pub readable: bool,
    /// Report when writing would not block (or an error is pending).
    pub writable: bool,
}

impl Interest {
    /// Watch for reading only.
    pub const READ: Interest = Interest {
        readable: true,
        writable: false,
    };
    /// Watch for writing only.
    pub const WRITE: Interest = Interest {
        readable: false,
        writable: true,
    };
    /// Watch for both.
    pub const BOTH: Interest = Interest {
        readable: true,
        writable: true,
    };

    /// True when neither direction is watched.
    pub fn is_empty(self) -> bool {
        !self.readable && !self.writable
    }
}

/// One readiness report from [`Poller::wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The token the fd was registered with.
    pub token: u64,
    /// Reading would not block. Hang-ups and errors set this too, so a reader sees EOF or
    /// the error, as with `select()`.
    pub readable: bool,
    /// Writing would not block. Errors and hang-ups set this too.
    pub writable: bool,
}
