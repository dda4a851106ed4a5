//! Stall detection: knowing, from another thread, that an event loop has been running
//! callbacks for too long — while it is still stuck.
//!
//! The loop thread writes one stamp per iteration into a shared [`StallMonitor`]: "busy
//! since T" when it leaves the poller and starts dispatching, "idle" when it comes back
//! to the poller. A [`Watchdog`] thread, which sleeps on a condition variable and touches
//! nothing else, wakes up when the current stretch would cross the threshold, and if the
//! stamp still names the same stretch it reports a stall ([`StallEvent::Started`]). When
//! the loop returns to the poller after a reported stall it posts the stretch's end, and
//! the watchdog reports [`StallEvent::Ended`] with the total length.
//!
//! Costs on the loop thread: one relaxed store when it starts dispatching, one swap and
//! one load when it comes back to the poller. It never takes a lock unless a stall was
//! reported.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use ferroloop_core::{clock, stall::{StallEvent, StallMonitor, Watchdog}};
//!
//! let monitor = Arc::new(StallMonitor::new());
//! let (tx, rx) = std::sync::mpsc::channel();
//! let watchdog = Watchdog::spawn(Arc::clone(&monitor), Duration::from_millis(20), move |e| {
//!     let _ = tx.send(e);
//! }).unwrap();
//! monitor.enter_callbacks(clock::now_ns());      // the loop starts a stretch of callbacks
//! std::thread::sleep(Duration::from_millis(60)); // ... which blocks
//! assert!(matches!(rx.recv().unwrap(), StallEvent::Started { .. }));
//! monitor.enter_poller();         // back in the poller
//! assert!(matches!(rx.recv().unwrap(), StallEvent::Ended { .. }));
//! watchdog.stop();
//! ```

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::clock;

/// The state a loop thread and its watchdog share.
#[derive(Debug, Default)]
pub struct StallMonitor {
    /// 0 while the loop is in its poller (or not running); otherwise the clock reading
    /// (ns, never 0) at which the current stretch of dispatching began.
    busy_since: AtomicI64,
    /// The stretch (its `busy_since`) the watchdog has reported and whose end it awaits;
    /// 0 for none.
    claimed: AtomicI64,
    /// What the watchdog sleeps on.
    shared: Mutex<Shared>,
    wakeup: Condvar,
}

#[derive(Debug, Default)]
struct Shared {
    /// The watchdog that may run: every [`Watchdog::spawn`] and every stop moves it on,
    /// and a thread whose generation is not this one exits. (A per-monitor flag would let
    /// a new watchdog revive one that was asked to stop from its own `on_event`.)
    generation: u64,
    /// The end of a claimed stretch, posted by the loop thread: `(busy_since, end_ns)`.
    ended: Option<(i64, i64)>,
}

/// What the monitor's state means to a watchdog at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The loop is in its poller or not running: look again after a full threshold.
    Idle,
    /// The loop has been dispatching since `since`, for less than the threshold: look
    /// again after `remaining`.
    Busy {
        /// Start of the stretch (clock ns).
        since: i64,
        /// Time left until the stretch crosses the threshold.
        remaining: Duration,
    },
    /// The stretch that began at `since` has lasted at least the threshold.
    Stalled {
        /// Start of the stretch (clock ns).
        since: i64,
    },
}

/// What a [`Watchdog`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallEvent {
    /// The stretch that began at `since` (clock ns) has run for `elapsed` and still runs.
    Started {
        /// Start of the stretch (clock ns).
        since: i64,
        /// How long it had run when the watchdog noticed.
        elapsed: Duration,
    },
    /// The stretch reported by the `Started` with the same `since` has ended.
    Ended {
        /// Start of the stretch (clock ns).
        since: i64,
        /// Its total length.
        duration: Duration,
    },
}

impl StallMonitor {
    /// A monitor for a loop that is not running.
    pub fn new() -> Self {
        Self::default()
    }

    /// Called by the loop thread when it leaves the poller to dispatch (`now`: clock ns).
    #[inline]
    pub fn enter_callbacks(&self, now: i64) {
        self.busy_since.store(now.max(1), Ordering::Relaxed);
    }

    /// Called by the loop thread when it comes back to the poller or stops running.
    /// Posts the end of the stretch if the watchdog reported it; only then does it read
    /// the clock.
    #[inline]
    pub fn enter_poller(&self) {
        self.leave_stretch(clock::now_ns);
    }

    /// [`StallMonitor::enter_poller`] with the time given (`now`: clock ns).
    #[inline]
    pub fn enter_poller_at(&self, now: i64) {
        self.leave_stretch(|| now);
    }

    #[inline]
    fn leave_stretch(&self, now: impl FnOnce() -> i64) {
        // SeqCst pairs with `claim`: either the watchdog sees this stretch is over before
        // it commits to a report, or this thread sees the claim and posts the end.
        let since = self.busy_since.swap(0, Ordering::SeqCst);
        if since != 0 && self.claimed.load(Ordering::SeqCst) == since {
            self.post_end(since, now());
        }
    }

    #[cold]
    fn post_end(&self, since: i64, now: i64) {
        let mut shared = self.lock();
        shared.ended = Some((since, now));
        drop(shared);
        self.wakeup.notify_all();
    }

    /// The start of the current stretch of dispatching (clock ns), or None when idle.
    #[inline]
    pub fn busy_since(&self) -> Option<i64> {
        match self.busy_since.load(Ordering::SeqCst) {
            0 => None,
            since => Some(since),
        }
    }

    /// True while the loop is still in the stretch that began at `since`.
    pub fn still_in(&self, since: i64) -> bool {
        self.busy_since() == Some(since)
    }

    /// Classifies the loop's state at `now` against `threshold`.
    pub fn check(&self, now: i64, threshold: Duration) -> Check {
        let Some(since) = self.busy_since() else {
            return Check::Idle;
        };
        let elapsed = Duration::from_nanos(now.saturating_sub(since).max(0) as u64);
        if elapsed >= threshold {
            Check::Stalled { since }
        } else {
            Check::Busy {
                since,
                remaining: threshold - elapsed,
            }
        }
    }

    /// Commits the watchdog to reporting the stretch `since`. Returns false (and commits
    /// to nothing) when the stretch ended meanwhile. After a true return, the loop thread
    /// will post the stretch's end, which [`StallMonitor::wait_end`] returns.
    pub fn claim(&self, since: i64) -> bool {
        self.claimed.store(since, Ordering::SeqCst);
        if self.busy_since.load(Ordering::SeqCst) == since {
            return true;
        }
        self.claimed.store(0, Ordering::SeqCst);
        false
    }

    /// Waits until the claimed stretch `since` ends; returns its end (clock ns), or None
    /// when the watchdog was stopped first. An end already posted is returned even when
    /// the watchdog is stopping.
    pub fn wait_end(&self, since: i64) -> Option<i64> {
        let generation = self.lock().generation;
        self.wait_end_for(since, generation)
    }

    fn wait_end_for(&self, since: i64, generation: u64) -> Option<i64> {
        let mut shared = self.lock();
        loop {
            if let Some((ended_since, end)) = shared.ended {
                if ended_since == since {
                    shared.ended = None;
                    self.claimed.store(0, Ordering::SeqCst);
                    return Some(end);
                }
            }
            if shared.generation != generation {
                self.claimed.store(0, Ordering::SeqCst);
                return None;
            }
            shared = self.wakeup.wait(shared).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Sleeps for `timeout` or until the watchdog of `generation` is stopped; returns
    /// false when stopped.
    fn sleep(&self, timeout: Duration, generation: u64) -> bool {
        let shared = self.lock();
        if shared.generation != generation {
            return false;
        }
        let (shared, _) = self
            .wakeup
            .wait_timeout(shared, timeout)
            .unwrap_or_else(|e| e.into_inner());
        shared.generation == generation
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the watchdog of `generation` (no other).
    fn stop_generation(&self, generation: u64) {
        let mut shared = self.lock();
        if shared.generation == generation {
            shared.generation += 1;
        }
        drop(shared);
        self.wakeup.notify_all();
    }
}

/// A thread that watches a [`StallMonitor`] and reports stretches longer than a threshold.
///
/// It holds no lock while it sleeps or reports, so `on_event` may block (for instance to
/// take an interpreter lock the loop thread gives up only now and then).
#[derive(Debug)]
pub struct Watchdog {
    monitor: Arc<StallMonitor>,
    generation: u64,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts the thread. `on_event` is called on it, once per [`StallEvent`]: a
    /// `Started` for every stretch that runs at least `threshold`, then its `Ended`.
    pub fn spawn<F>(
        monitor: Arc<StallMonitor>,
        threshold: Duration,
        mut on_event: F,
    ) -> std::io::Result<Watchdog>
    where
        F: FnMut(StallEvent) + Send + 'static,
    {
        let threshold = threshold.max(Duration::from_millis(1));
        let generation = {
            let mut shared = monitor.lock();
            shared.generation += 1;
            shared.ended = None;
            shared.generation
        };
        monitor.wakeup.notify_all();
        monitor.claimed.store(0, Ordering::SeqCst);
        let watched = Arc::clone(&monitor);
        let spawned = std::thread::Builder::new()
            .name("ferroloop-stall".into())
            .spawn(move || watch(&watched, threshold, generation, &mut on_event));
        let thread = match spawned {
            Ok(thread) => thread,
            Err(err) => {
                monitor.stop_generation(generation);
                return Err(err);
            }
        };
        Ok(Watchdog {
            monitor,
            generation,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (it may be inside `on_event`; it returns once
    /// that call returns). Called from `on_event` itself, it only asks the thread to stop.
    pub fn stop(mut self) {
        self.monitor.stop_generation(self.generation);
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }

    /// Asks the thread to stop without waiting for it.
    pub fn stop_detached(mut self) {
        self.monitor.stop_generation(self.generation);
        self.thread.take();
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.monitor.stop_generation(self.generation);
        }
    }
}

fn watch(
    monitor: &StallMonitor,
    threshold: Duration,
    generation: u64,
    on_event: &mut dyn FnMut(StallEvent),
) {
    let mut timeout = threshold;
    while monitor.sleep(timeout, generation) {
        let now = clock::now_ns();
        timeout = match monitor.check(now, threshold) {
            Check::Idle => threshold,
            Check::Busy { remaining, .. } => remaining,
            Check::Stalled { since } => {
                if !monitor.claim(since) {
                    continue;
                }
                let elapsed = Duration::from_nanos((now - since).max(0) as u64);
                on_event(StallEvent::Started { since, elapsed });
                let Some(end) = monitor.wait_end_for(since, generation) else {
                    return;
                };
                let duration = Duration::from_nanos((end - since).max(0) as u64);
                on_event(StallEvent::Ended { since, duration });
                threshold
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    const MS: i64 = 1_000_000;

    #[test]
    fn check_classifies_idle_busy_and_stalled() {
        let m = StallMonitor::new();
        let t = Duration::from_millis(50);
        assert_eq!(m.check(1000 * MS, t), Check::Idle);
        m.enter_callbacks(1000 * MS);
        assert_eq!(
            m.check(1020 * MS, t),
            Check::Busy {
                since: 1000 * MS,
                remaining: Duration::from_millis(30)
            }
        );
        assert_eq!(m.check(1050 * MS, t), Check::Stalled { since: 1000 * MS });
        m.enter_poller_at(1060 * MS);
        assert_eq!(m.check(2000 * MS, t), Check::Idle);
    }

    #[test]
    fn claim_fails_once_the_stretch_is_over() {
        let m = StallMonitor::new();
        m.enter_callbacks(5 * MS);
        m.enter_poller_at(6 * MS);
        assert!(!m.claim(5 * MS));
        m.enter_callbacks(7 * MS);
        assert!(!m.claim(5 * MS), "a later stretch is not the claimed one");
        assert!(m.claim(7 * MS));
        m.enter_poller_at(9 * MS);
        assert_eq!(m.wait_end(7 * MS), Some(9 * MS));
    }

    #[test]
    fn unclaimed_stretches_post_nothing() {
        let m = StallMonitor::new();
        m.enter_callbacks(5 * MS);
        m.enter_poller_at(6 * MS);
        assert!(m.lock().ended.is_none());
    }

    #[test]
    fn a_long_stretch_is_reported_once_while_it_runs_then_ended() {
        let monitor = Arc::new(StallMonitor::new());
        let (tx, rx) = mpsc::channel();
        let dog = Watchdog::spawn(Arc::clone(&monitor), Duration::from_millis(20), move |e| {
            tx.send(e).unwrap();
        })
        .unwrap();
        let start = clock::now_ns();
        monitor.enter_callbacks(start);
        let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        match first {
            StallEvent::Started { since, elapsed } => {
                assert_eq!(since, start.max(1));
                assert!(elapsed >= Duration::from_millis(20));
            }
            other => panic!("expected Started, got {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(60));
        assert!(rx.try_recv().is_err(), "one report per stretch");
        let end = clock::now_ns();
        monitor.enter_poller_at(end);
        match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
            StallEvent::Ended { since, duration } => {
                assert_eq!(since, start);
                assert_eq!(duration, Duration::from_nanos((end - start) as u64));
            }
            other => panic!("expected Ended, got {other:?}"),
        }
        dog.stop();
    }

    #[test]
    fn short_stretches_and_idle_time_are_never_reported() {
        let monitor = Arc::new(StallMonitor::new());
        let (tx, rx) = mpsc::channel();
        let dog = Watchdog::spawn(Arc::clone(&monitor), Duration::from_millis(30), move |e| {
            tx.send(e).unwrap();
        })
        .unwrap();
        let deadline = clock::now_ns() + 200 * MS;
        while clock::now_ns() < deadline {
            monitor.enter_callbacks(clock::now_ns());
            std::thread::sleep(Duration::from_millis(2));
            monitor.enter_poller();
        }
        std::thread::sleep(Duration::from_millis(100));
        dog.stop();
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_watchdog_stopped_from_its_callback_stays_stopped_after_a_respawn() {
        let monitor = Arc::new(StallMonitor::new());
        let slot: Arc<Mutex<Option<Watchdog>>> = Arc::new(Mutex::new(None));
        let (tx, rx) = mpsc::channel();
        let inner = Arc::clone(&slot);
        let dog = Watchdog::spawn(Arc::clone(&monitor), Duration::from_millis(5), move |e| {
            if let Some(me) = inner.lock().unwrap().take() {
                me.stop(); // from its own thread: does not join itself
            }
            tx.send(e).unwrap();
        })
        .unwrap();
        *slot.lock().unwrap() = Some(dog);
        monitor.enter_callbacks(clock::now_ns());
        assert!(matches!(
            rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            StallEvent::Started { .. }
        ));
        let (tx2, rx2) = mpsc::channel();
        let second = Watchdog::spawn(Arc::clone(&monitor), Duration::from_millis(5), move |e| {
            tx2.send(e).unwrap();
        })
        .unwrap();
        // The first thread must not come back to life and report the same stretch.
        assert!(matches!(
            rx2.recv_timeout(Duration::from_secs(10)).unwrap(),
            StallEvent::Started { .. }
        ));
        monitor.enter_poller();
        assert!(matches!(
            rx2.recv_timeout(Duration::from_secs(10)).unwrap(),
            StallEvent::Ended { .. }
        ));
        second.stop();
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            rx.try_recv().is_err(),
            "the stopped watchdog reported again"
        );
    }

    #[test]
    fn stop_interrupts_a_watchdog_waiting_for_an_end() {
        let monitor = Arc::new(StallMonitor::new());
        let (tx, rx) = mpsc::channel();
        let dog = Watchdog::spawn(Arc::clone(&monitor), Duration::from_millis(5), move |e| {
            tx.send(e).unwrap();
        })
        .unwrap();
        monitor.enter_callbacks(clock::now_ns());
        assert!(matches!(
            rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            StallEvent::Started { .. }
        ));
        dog.stop();
        monitor.enter_poller();
        assert!(rx.try_recv().is_err());
    }
}
