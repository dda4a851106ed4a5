//! The engine of ferroloop, with no Python in it.
//!
//! ferroloop is an asyncio event loop whose hot paths are Rust. This crate holds the
//! parts that do not need the interpreter, so they can be unit-tested, fuzzed and run
//! under Miri or sanitizers on their own, and reused by pure-Rust programs:
//!
//! - [`clock`]: the loop's time source, the same clock as Python's `time.monotonic()`.
//! - [`poll::Poller`]: level-triggered readiness polling (epoll on Linux).
//! - [`waker::Waker`]: wakes a poller blocked in another thread (eventfd).
//! - [`timer::TimerHeap`]: deadlines in a binary heap with lazy cancellation.
//! - [`dns::Resolver`]: `getaddrinfo`/`getnameinfo` on a small worker pool.
//! - [`framing::Framer`]: splits a byte stream into delimited, length-prefixed or
//!   fixed-size frames.
//! - [`stall::Watchdog`]: a thread that reports a loop stuck in its callbacks while it
//!   is still stuck, from a stamp the loop writes once per iteration.
//! - [`histogram::Histogram`]: log-linear duration counts (the loop's lag).
//!
//! `examples/echo_server.rs` is a TCP echo server built on these pieces alone: the
//! ceiling against which the Python-facing layers are measured.

#![warn(missing_docs)]

pub mod clock;
pub mod dns;
pub mod framing;
pub mod histogram;
pub mod poll;
pub mod stall;
pub mod timer;
pub mod waker;
