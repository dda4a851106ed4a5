//! `loop.stats()`: counters the loop keeps as it runs, always on.
//!
//! The loop's own counters are plain integers in `LoopState` (guarded by the GIL like the
//! rest of it) and are bumped inside borrows the run loop makes anyway. The lag — the time
//! from `call_soon` to the callback running — is measured on one `call_soon` in
//! [`LAG_SAMPLE_EVERY`], so the clock is read for it on a few callbacks only. Transports
//! count bytes through a shared [`IoStats`] of relaxed atomics, one update per system call.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use ferroloop_core::histogram::Histogram;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::event_loop::EventLoop;
use crate::handle::Handle;

/// One `call_soon` in this many is stamped for the lag histogram (a power of two).
pub const LAG_SAMPLE_EVERY: u64 = 64;

/// The run loop's counters.
#[derive(Default)]
pub struct Counters {
    /// Iterations of the run loop.
    pub iterations: u64,
    /// Handles taken off the ready queue (cancelled ones included).
    pub popped: u64,
    /// Cancelled handles found on the ready queue and skipped.
    pub skipped: u64,
    /// `call_soon`/`call_soon_threadsafe` calls (drives the lag sampling).
    pub soon: u64,
    /// `call_at`/`call_later` calls.
    pub timers_scheduled: u64,
    /// Timers that came due and were queued to run.
    pub timers_fired: u64,
    /// Timers cancelled while scheduled, as reported by the run loop so far.
    pub timers_cancelled: u64,
    /// Readiness events from the poller (the loop's own waker excluded).
    pub io_events: u64,
    /// Nanoseconds spent asleep in the poller, and running everything else (zero-timeout
    /// polls of a busy loop included).
    pub poll_ns: u64,
    pub busy_ns: u64,
    /// When the current stretch of work began (clock ns), 0 when not running.
    pub busy_started: i64,
    /// Sampled lag, nanoseconds.
    pub lag: Histogram,
}

impl Counters {
    /// Counts a `call_soon`; true when this one is to be stamped for the lag histogram.
    #[inline]
    pub fn sample_soon(&mut self) -> bool {
        self.soon += 1;
        self.soon & (LAG_SAMPLE_EVERY - 1) == 0
    }

    /// Records the lag of a handle stamped when it was queued at `queued` (clock ns).
    #[cold]
    #[inline(never)]
    pub fn record_lag(&mut self, queued: i64) {
        let lag = ferroloop_core::clock::now_ns()
            .saturating_sub(queued)
            .max(0) as u64;
        self.lag.record(lag);
    }

    /// Accounts the work up to `now` (clock ns), when the loop goes to sleep.
    #[inline]
    pub fn start_sleep(&mut self, now: i64) {
        if self.busy_started != 0 {
            self.busy_ns += now.saturating_sub(self.busy_started).max(0) as u64;
        }
    }

    /// Accounts the sleep from `slept_at` to `now`, after which work starts.
    #[inline]
    pub fn end_sleep(&mut self, slept_at: i64, now: i64) {
        self.poll_ns += now.saturating_sub(slept_at).max(0) as u64;
        self.busy_started = now;
    }

    /// Accounts the end of `run_forever` at `now`.
    pub fn stop_running(&mut self, now: i64) {
        if self.busy_started != 0 {
            self.busy_ns += now.saturating_sub(self.busy_started).max(0) as u64;
        }
        self.busy_started = 0;
    }
}

/// Stamps a handle `call_soon` sampled for the lag histogram with the time it was queued
/// (out of line: one `call_soon` in [`LAG_SAMPLE_EVERY`] comes here).
#[cold]
#[inline(never)]
pub fn stamp_queued(handle: &Handle) {
    handle.mark_queued(ferroloop_core::clock::now_ns());
}

/// Kinds of transport counted in [`IoStats::open`].
#[derive(Clone, Copy)]
pub enum TransportKind {
    Stream = 0,
    Datagram = 1,
    ReadPipe = 2,
    WritePipe = 3,
}

const KIND_NAMES: [&str; 4] = ["stream", "datagram", "read_pipe", "write_pipe"];

/// Counters the Rust transports of one loop update.
#[derive(Default)]
pub struct IoStats {
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    /// Open transports, by [`TransportKind`].
    pub open: [AtomicI64; 4],
}

impl IoStats {
    /// Adds `n` bytes read.
    #[inline]
    pub fn read(&self, n: usize) {
        self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Adds `n` bytes written.
    #[inline]
    pub fn written(&self, n: usize) {
        self.bytes_written.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Held by a transport core while it is open: counts it among the loop's open transports
/// until it is dropped (at connection_lost, or with the core).
pub struct OpenTransport {
    io: Arc<IoStats>,
    kind: TransportKind,
}

impl OpenTransport {
    /// Counts a new transport of `kind` on `event_loop`'s stats (None if it is not a
    /// ferroloop loop).
    pub fn register(event_loop: &Bound<'_, PyAny>, kind: TransportKind) -> Option<Self> {
        let event_loop = event_loop.cast::<EventLoop>().ok()?;
        let io = Arc::clone(&event_loop.get().io);
        io.open[kind as usize].fetch_add(1, Ordering::Relaxed);
        Some(OpenTransport { io, kind })
    }

    /// The loop's byte counters.
    pub fn io_arc(&self) -> Arc<IoStats> {
        Arc::clone(&self.io)
    }
}

impl Drop for OpenTransport {
    fn drop(&mut self) {
        self.io.open[self.kind as usize].fetch_sub(1, Ordering::Relaxed);
    }
}

#[pymethods]
impl EventLoop {
    /// The raw counters behind `loop.stats()`, as a dict.
    fn _stats_core<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let pending_cancelled = self.cancelled_timers.load(Ordering::Relaxed) as u64;
        let out = PyDict::new(py);
        {
            let state = self.state.borrow_mut(py);
            let c = &state.counters;
            let busy_now = if c.busy_started != 0 {
                ferroloop_core::clock::now_ns()
                    .saturating_sub(c.busy_started)
                    .max(0) as u64
            } else {
                0
            };
            let items: [(&str, u64); 17] = [
                ("iterations", c.iterations),
                ("callbacks", c.popped - c.skipped),
                ("timers_scheduled", c.timers_scheduled),
                ("timers_fired", c.timers_fired),
                ("timers_cancelled", c.timers_cancelled + pending_cancelled),
                ("io_events", c.io_events),
                ("ready", state.ready.len() as u64),
                ("timers", state.timers.len() as u64),
                ("poll_ns", c.poll_ns),
                ("busy_ns", c.busy_ns + busy_now),
                ("lag_count", c.lag.count()),
                ("lag_p50_ns", c.lag.percentile(50.0)),
                ("lag_p99_ns", c.lag.percentile(99.0)),
                ("lag_max_ns", c.lag.max()),
                ("lag_sum_ns", c.lag.sum()),
                ("lag_sample_every", LAG_SAMPLE_EVERY),
                ("call_soon", c.soon),
            ];
            drop(state);
            for (key, value) in items {
                out.set_item(key, value)?;
            }
        }
        out.set_item("bytes_read", self.io.bytes_read.load(Ordering::Relaxed))?;
        out.set_item(
            "bytes_written",
            self.io.bytes_written.load(Ordering::Relaxed),
        )?;
        let open = PyDict::new(py);
        for (name, count) in KIND_NAMES.iter().zip(&self.io.open) {
            open.set_item(*name, count.load(Ordering::Relaxed).max(0))?;
        }
        out.set_item("transports", open)?;
        Ok(out)
    }
}
