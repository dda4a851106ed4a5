//! Stall detection: knowing, from another thread, that an event loop has been running
//! callbacks for too long — while it is still stuck.
//!
//! The loop thread moves a counter, the stamp of a [`StallMonitor`], on at each change
//! between "dispatching" and "in the poller": odd while it dispatches, even while it
//! waits, so every stretch of dispatching has a number of its own. That is two plain
//! stores per iteration, and no clock read unless a watchdog runs: then the loop also
//! notes when each stretch starts. A [`Watchdog`] thread samples the stamp a few times per
//! threshold; when one odd stamp has lasted the threshold it reports a stall
//! ([`StallEvent::Started`]). When the loop leaves a stretch the watchdog reported, it
//! posts the time it left, and the watchdog reports [`StallEvent::Ended`] with the total
//! length.
//!
//! A stretch that began before the watchdog started is timed from the first sample that
//! saw it, so its reports may call it shorter than it is by up to one sampling interval
//! (a quarter of the threshold) or more on a loaded machine. Nothing here takes a lock, so a process that forks while a watchdog runs finds the
//! monitor usable in the child, where the watchdog's thread does not exist
//! ([`Watchdog::is_orphaned`]).
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use ferroloop_core::stall::{StallEvent, StallMonitor, Watchdog};
//!
//! let monitor = Arc::new(StallMonitor::new());
//! let (tx, rx) = std::sync::mpsc::channel();
//! let watchdog = Watchdog::spawn(Arc::clone(&monitor), Duration::from_millis(20), move |e| {
//!     let _ = tx.send(e);
//! }).unwrap();
//! monitor.enter_callbacks();                     // the loop starts a stretch of callbacks
//! std::thread::sleep(Duration::from_millis(60)); // ... which blocks
//! assert!(matches!(rx.recv().unwrap(), StallEvent::Started { .. }));
//! monitor.enter_poller();                        // back in the poller
//! assert!(matches!(rx.recv().unwrap(), StallEvent::Ended { .. }));
//! watchdog.stop();
//! ```

use std::sync::atomic::{fence, AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::clock;

/// Samples per threshold: a stall is reported between one threshold and one threshold
/// plus a quarter after it began.
const SAMPLES_PER_THRESHOLD: u32 = 4;

/// The shortest sampling interval (and threshold).
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// The state a loop thread and its watchdog share.
#[derive(Debug, Default)]
pub struct StallMonitor {
    /// Written only by the loop thread: odd while it dispatches, even while it is in its
    /// poller or not running; one more at every change.
    stamp: AtomicU64,
    /// The stamp of the stretch the watchdog reported and whose end it awaits; 0 for none.
    claimed: AtomicU64,
    /// When the claimed stretch ended (clock ns), posted by the loop thread before it
    /// stores the stretch's stamp in `ended`.
    end_ns: AtomicI64,
    /// The stamp of the stretch whose end is in `end_ns`.
    ended: AtomicU64,
    /// True while a watchdog runs: the loop then also notes when each stretch starts.
    timed: AtomicBool,
    /// When the stretch in `stamp` (or the last one) started (clock ns), written by the
    /// loop thread while `timed`, before it moves `stamp` to that stretch.
    started_ns: AtomicI64,
    /// The watchdog that may run: every [`Watchdog::spawn`] and every stop moves it on,
    /// and a thread whose generation is not this one exits. (A per-monitor flag would let
    /// a new watchdog revive one that was asked to stop from its own `on_event`.)
    generation: AtomicU64,
}

/// What a [`Watchdog`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallEvent {
    /// The stretch `stretch` has run for `elapsed` since `since` (clock ns) and still
    /// runs.
    Started {
        /// The stretch's stamp (see [`StallMonitor::still_in`]).
        stretch: u64,
        /// When the stretch started, as the loop noted it (or, for a stretch that began
        /// before the watchdog, when the watchdog first saw it), clock ns.
        since: i64,
        /// How long it had run when the watchdog reported it.
        elapsed: Duration,
    },
    /// The stretch reported by the `Started` with the same `stretch` has ended.
    Ended {
        /// The stretch's stamp.
        stretch: u64,
        /// Its total length (from `since` in its `Started`).
        duration: Duration,
    },
}

impl StallMonitor {
    /// A monitor for a loop that is not running.
    pub fn new() -> Self {
        Self::default()
    }

    /// Called by the loop thread when it leaves the poller to dispatch. Reads the clock
    /// only while a watchdog runs.
    #[inline]
    pub fn enter_callbacks(&self) {
        let stamp = self.stamp.load(Ordering::Relaxed);
        if stamp & 1 == 0 {
            if self.timed.load(Ordering::Relaxed) {
                // Ordered after the store that left the previous stretch (see `start_of`).
                fence(Ordering::Release);
                self.started_ns.store(clock::now_ns(), Ordering::Relaxed);
            }
            self.stamp.store(stamp + 1, Ordering::Release);
        }
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
        let stamp = self.stamp.load(Ordering::Relaxed);
        if stamp & 1 == 1 {
            self.stamp.store(stamp + 1, Ordering::Release);
            // Without a fence this may miss a claim made just now; the watchdog then
            // sees the stamp move on and times the end itself (see `wait_end`).
            if self.claimed.load(Ordering::Relaxed) == stamp {
                self.post_end(stamp, now());
            }
        }
    }

    #[cold]
    fn post_end(&self, stretch: u64, now: i64) {
        self.end_ns.store(now, Ordering::Relaxed);
        self.ended.store(stretch, Ordering::Release);
    }

    /// The stamp of the stretch of dispatching the loop is in, or None when idle.
    #[inline]
    pub fn current_stretch(&self) -> Option<u64> {
        let stamp = self.stamp.load(Ordering::Acquire);
        (stamp & 1 == 1).then_some(stamp)
    }

    /// When the stretch `stretch` started, if the loop noted it (it does while a watchdog
    /// runs) after `armed_at` (clock ns; older notes belong to earlier stretches).
    fn start_of(&self, stretch: u64, armed_at: i64) -> Option<i64> {
        let started = self.started_ns.load(Ordering::Relaxed);
        // A note written for a later stretch comes after the loop left this one, so if
        // the stamp still names this stretch after the read, the note is this stretch's.
        fence(Ordering::Acquire);
        let still = self.stamp.load(Ordering::Relaxed) == stretch;
        (still && started >= armed_at).then_some(started)
    }

    /// True while the loop is still in the stretch `stretch`.
    pub fn still_in(&self, stretch: u64) -> bool {
        self.current_stretch() == Some(stretch)
    }

    /// Commits the watchdog to reporting the stretch `stretch`. Returns false (and
    /// commits to nothing) when the stretch ended meanwhile.
    pub fn claim(&self, stretch: u64) -> bool {
        self.claimed.store(stretch, Ordering::SeqCst);
        if self.stamp.load(Ordering::SeqCst) == stretch {
            return true;
        }
        self.claimed.store(0, Ordering::SeqCst);
        false
    }

    /// Waits, sampling every `interval`, until the claimed stretch `stretch` ends; returns
    /// its end (clock ns): the time the loop posted, or the sample that saw the stamp move
    /// on without one (a claim the loop did not see yet when it left). None when the
    /// watchdog of `generation` was stopped first.
    fn wait_end(&self, stretch: u64, interval: Duration, generation: u64) -> Option<i64> {
        let end = loop {
            if self.ended.load(Ordering::Acquire) == stretch {
                break Some(self.end_ns.load(Ordering::Relaxed));
            }
            if !self.still_in(stretch) {
                let now = clock::now_ns();
                // The loop may be posting right now: a last look.
                if self.ended.load(Ordering::Acquire) == stretch {
                    break Some(self.end_ns.load(Ordering::Relaxed));
                }
                break Some(now);
            }
            if !self.sleep(interval, generation) {
                break None;
            }
        };
        self.claimed.store(0, Ordering::SeqCst);
        end
    }

    /// Sleeps for `timeout` or until the watchdog of `generation` is stopped; returns
    /// false when stopped. (Woken early, it returns true: callers sample again.)
    fn sleep(&self, timeout: Duration, generation: u64) -> bool {
        if !self.is_current(generation) {
            return false;
        }
        std::thread::park_timeout(timeout);
        self.is_current(generation)
    }

    fn is_current(&self, generation: u64) -> bool {
        self.generation.load(Ordering::Acquire) == generation
    }

    /// Stops the watchdog of `generation` (no other).
    fn stop_generation(&self, generation: u64) {
        let stopped = self.generation.compare_exchange(
            generation,
            generation + 1,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        if stopped.is_ok() {
            self.timed.store(false, Ordering::Relaxed);
        }
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
    /// The process that started the thread: in a child forked since, there is no thread.
    pid: u32,
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
        let threshold = threshold.max(MIN_INTERVAL);
        let generation = monitor.generation.fetch_add(1, Ordering::AcqRel) + 1;
        monitor.claimed.store(0, Ordering::SeqCst);
        let armed_at = clock::now_ns();
        monitor.timed.store(true, Ordering::Relaxed);
        let watched = Arc::clone(&monitor);
        let spawned = std::thread::Builder::new()
            .name("ferroloop-stall".into())
            .spawn(move || watch(&watched, threshold, generation, armed_at, &mut on_event));
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
            pid: std::process::id(),
        })
    }

    /// True in a child process forked after the watchdog started: its thread was not
    /// copied into this process.
    pub fn is_orphaned(&self) -> bool {
        self.pid != std::process::id()
    }

    /// Stops the thread and waits for it (it may be inside `on_event`; it returns once
    /// that call returns). Called from `on_event` itself, it only asks the thread to stop;
    /// in a forked child, where the thread does not exist, it only forgets it.
    pub fn stop(mut self) {
        self.monitor.stop_generation(self.generation);
        let Some(thread) = self.thread.take() else {
            return;
        };
        if self.is_orphaned() {
            // The handle names a thread of the parent: joining or detaching it here
            // would touch whatever the child's threads library reused its memory for.
            std::mem::forget(thread);
            return;
        }
        thread.thread().unpark();
        if thread.thread().id() != std::thread::current().id() {
            let _ = thread.join();
        }
    }

    /// Asks the thread to stop without waiting for it.
    pub fn stop_detached(mut self) {
        self.monitor.stop_generation(self.generation);
        if let Some(thread) = self.thread.take() {
            if self.is_orphaned() {
                std::mem::forget(thread);
            } else {
                thread.thread().unpark();
            }
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.monitor.stop_generation(self.generation);
            if self.is_orphaned() {
                std::mem::forget(thread);
            } else {
                thread.thread().unpark();
            }
        }
    }
}

/// The sampling interval for `threshold`.
fn interval_of(threshold: Duration) -> Duration {
    (threshold / SAMPLES_PER_THRESHOLD).max(MIN_INTERVAL)
}

fn watch(
    monitor: &StallMonitor,
    threshold: Duration,
    generation: u64,
    armed_at: i64,
    on_event: &mut dyn FnMut(StallEvent),
) {
    let interval = interval_of(threshold);
    let threshold_ns = threshold.as_nanos().min(i64::MAX as u128) as i64;
    // The busy stretch the last sample saw (0: none) and when it started.
    let mut seen = 0u64;
    let mut first_seen = 0i64;
    let mut timeout = interval;
    while monitor.sleep(timeout, generation) {
        timeout = interval;
        let Some(stretch) = monitor.current_stretch() else {
            seen = 0;
            continue;
        };
        let now = clock::now_ns();
        if stretch != seen {
            seen = stretch;
            first_seen = monitor.start_of(stretch, armed_at).unwrap_or(now).min(now);
        }
        let elapsed = now.saturating_sub(first_seen);
        if elapsed < threshold_ns {
            // The next look at the moment the stretch reaches the threshold, so that late
            // wake-ups on a busy machine do not add up.
            let remaining = Duration::from_nanos((threshold_ns - elapsed) as u64);
            timeout = remaining.min(interval);
            continue;
        }
        if !monitor.claim(stretch) {
            continue;
        }
        on_event(StallEvent::Started {
            stretch,
            since: first_seen,
            elapsed: Duration::from_nanos(elapsed.max(0) as u64),
        });
        let Some(end) = monitor.wait_end(stretch, interval, generation) else {
            return;
        };
        let duration = Duration::from_nanos(end.saturating_sub(first_seen).max(0) as u64);
        on_event(StallEvent::Ended { stretch, duration });
        seen = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::Mutex;

    const MS: i64 = 1_000_000;
    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn every_stretch_has_a_stamp_of_its_own() {
        let m = StallMonitor::new();
        assert_eq!(m.current_stretch(), None);
        m.enter_callbacks();
        let first = m.current_stretch().unwrap();
        m.enter_callbacks();
        assert_eq!(m.current_stretch(), Some(first), "still the same stretch");
        m.enter_poller();
        m.enter_poller();
        assert_eq!(m.current_stretch(), None);
        m.enter_callbacks();
        let second = m.current_stretch().unwrap();
        assert_ne!(first, second);
        assert!(m.still_in(second) && !m.still_in(first));
    }

    #[test]
    fn claim_fails_once_the_stretch_is_over() {
        let m = StallMonitor::new();
        m.enter_callbacks();
        let old = m.current_stretch().unwrap();
        m.enter_poller_at(6 * MS);
        assert!(!m.claim(old));
        m.enter_callbacks();
        assert!(!m.claim(old), "a later stretch is not the claimed one");
        let new = m.current_stretch().unwrap();
        assert!(m.claim(new));
        m.enter_poller_at(9 * MS);
        assert_eq!(m.wait_end(new, MIN_INTERVAL, 0), Some(9 * MS));
    }

    #[test]
    fn unclaimed_stretches_post_nothing() {
        let m = StallMonitor::new();
        m.enter_callbacks();
        m.enter_poller_at(6 * MS);
        assert_eq!(m.ended.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_end_the_loop_did_not_post_is_timed_by_the_watchdog() {
        let m = StallMonitor::new();
        m.enter_callbacks();
        let stretch = m.current_stretch().unwrap();
        m.enter_poller_at(6 * MS); // before the claim: nothing posted
        m.claimed.store(stretch, Ordering::SeqCst); // a claim that read a stale stamp
        let before = clock::now_ns();
        let end = m.wait_end(stretch, MIN_INTERVAL, 0).unwrap();
        assert!(end >= before && end <= clock::now_ns());
        assert_eq!(m.claimed.load(Ordering::Relaxed), 0);
    }

    fn spawn_recording(
        monitor: &Arc<StallMonitor>,
        threshold: Duration,
    ) -> (Watchdog, mpsc::Receiver<StallEvent>) {
        let (tx, rx) = mpsc::channel();
        let dog = Watchdog::spawn(Arc::clone(monitor), threshold, move |e| {
            let _ = tx.send(e);
        })
        .unwrap();
        (dog, rx)
    }

    #[test]
    fn a_long_stretch_is_reported_once_while_it_runs_then_ended() {
        let monitor = Arc::new(StallMonitor::new());
        let (dog, rx) = spawn_recording(&monitor, Duration::from_millis(20));
        let start = clock::now_ns();
        monitor.enter_callbacks();
        let stretch = monitor.current_stretch().unwrap();
        let since = match rx.recv_timeout(WAIT).unwrap() {
            StallEvent::Started {
                stretch: reported,
                since,
                elapsed,
            } => {
                assert_eq!(reported, stretch);
                assert!(since >= start);
                assert!(elapsed >= Duration::from_millis(20));
                assert!(clock::now_ns() - start >= 20 * MS);
                since
            }
            other => panic!("expected Started, got {other:?}"),
        };
        std::thread::sleep(Duration::from_millis(60));
        assert!(rx.try_recv().is_err(), "one report per stretch");
        let end = clock::now_ns();
        monitor.enter_poller_at(end);
        match rx.recv_timeout(WAIT).unwrap() {
            StallEvent::Ended {
                stretch: reported,
                duration,
            } => {
                assert_eq!(reported, stretch);
                assert_eq!(duration, Duration::from_nanos((end - since) as u64));
            }
            other => panic!("expected Ended, got {other:?}"),
        }
        dog.stop();
    }

    #[test]
    fn short_stretches_and_idle_time_are_never_reported() {
        let monitor = Arc::new(StallMonitor::new());
        let (dog, rx) = spawn_recording(&monitor, Duration::from_millis(30));
        // A 2 ms sleep that a loaded machine stretches past the threshold is a stall.
        let mut long_ones = Vec::new();
        let deadline = clock::now_ns() + 200 * MS;
        while clock::now_ns() < deadline {
            let start = clock::now_ns();
            monitor.enter_callbacks();
            let stretch = monitor.current_stretch().unwrap();
            std::thread::sleep(Duration::from_millis(2));
            monitor.enter_poller();
            if clock::now_ns() - start >= 30 * MS {
                long_ones.push(stretch);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        dog.stop();
        for event in rx.try_iter() {
            if let StallEvent::Started { stretch, .. } = event {
                assert!(long_ones.contains(&stretch), "a short stretch was reported");
            }
        }
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
        monitor.enter_callbacks();
        assert!(matches!(
            rx.recv_timeout(WAIT).unwrap(),
            StallEvent::Started { .. }
        ));
        let (second, rx2) = spawn_recording(&monitor, Duration::from_millis(5));
        // The first thread must not come back to life and report the same stretch.
        assert!(matches!(
            rx2.recv_timeout(WAIT).unwrap(),
            StallEvent::Started { .. }
        ));
        monitor.enter_poller();
        assert!(matches!(
            rx2.recv_timeout(WAIT).unwrap(),
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
        let (dog, rx) = spawn_recording(&monitor, Duration::from_millis(5));
        monitor.enter_callbacks();
        assert!(matches!(
            rx.recv_timeout(WAIT).unwrap(),
            StallEvent::Started { .. }
        ));
        dog.stop();
        monitor.enter_poller();
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn stopping_wakes_a_watchdog_with_a_long_interval_at_once() {
        let monitor = Arc::new(StallMonitor::new());
        let (dog, _rx) = spawn_recording(&monitor, Duration::from_secs(3600));
        std::thread::sleep(Duration::from_millis(10));
        let started = std::time::Instant::now();
        dog.stop();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "stop waited for the interval"
        );
    }
}
