//! Timers, poll timeouts and a cross-thread wake-up: the skeleton of an event loop's
//! `run_once`, in a few hundred milliseconds.
//!
//! The loop keeps its timers in a [`TimerHeap`] and sleeps in [`Poller::wait`] for just
//! as long as the earliest live timer allows. One timer cancels another when it fires
//! (cancellation is lazy: the heap drops the dead timer when it reaches the top). A
//! second thread plays `call_soon_threadsafe`: it queues a request on a channel and
//! calls [`Waker::wake`] (twice; the wakes coalesce), which ends the loop's wait early.
//! The loop then schedules the timer the thread asked for. Finally a burst of cancelled
//! timers shows [`TimerHeap::should_compact`] and [`TimerHeap::compact`].
//!
//! ```text
//! cargo run -p ferroloop-core --example timers
//! ```
//!
//! It prints each timer as it fires, with how late it was, and finishes in about 0.3 s.

use std::cell::Cell;
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use ferroloop_core::clock::{now_ns, secs_to_ns};
use ferroloop_core::poll::{Events, Interest, Poller};
use ferroloop_core::timer::TimerHeap;
use ferroloop_core::waker::Waker;

/// The token the waker's eventfd is registered with.
const WAKER_TOKEN: u64 = 0;

/// A scheduled callback, shared between the heap and whoever may cancel it (asyncio's
/// `TimerHandle`).
struct Timer {
    name: String,
    cancelled: Cell<bool>,
    /// Another timer this one cancels when it fires.
    cancels: Option<Rc<Timer>>,
}

struct Loop {
    start_ns: i64,
    heap: TimerHeap<Rc<Timer>>,
}

impl Loop {
    /// Milliseconds since the demo started.
    fn ms(&self, ns: i64) -> f64 {
        (ns - self.start_ns) as f64 / 1e6
    }

    fn call_later(&mut self, delay_secs: f64, name: &str, cancels: Option<Rc<Timer>>) -> Rc<Timer> {
        let deadline = now_ns() + secs_to_ns(delay_secs);
        let timer = Rc::new(Timer {
            name: name.to_owned(),
            cancelled: Cell::new(false),
            cancels,
        });
        self.heap.push(deadline, Rc::clone(&timer));
        println!(
            "[{:6.1} ms] scheduled {:<14} due at {:6.1} ms",
            self.ms(now_ns()),
            timer.name,
            self.ms(deadline)
        );
        timer
    }

    fn cancel(&mut self, timer: &Timer) {
        if !timer.cancelled.replace(true) {
            self.heap.note_cancelled(1);
        }
    }

    /// Drops cancelled timers from the top of the heap, then returns how long the poller
    /// may sleep: until the earliest live deadline, or forever when there is none.
    fn timeout(&mut self) -> Option<Duration> {
        while let Some((_, timer)) = self.heap.peek() {
            if !timer.cancelled.get() {
                break;
            }
            if let Some((_, timer)) = self.heap.pop(|t| t.cancelled.get()) {
                println!(
                    "[{:6.1} ms] discarded cancelled {}",
                    self.ms(now_ns()),
                    timer.name
                );
            }
        }
        let (deadline, _) = self.heap.peek()?;
        let wait_ns = (deadline - now_ns()).max(0);
        Some(Duration::from_nanos(wait_ns as u64))
    }

    /// Fires every live timer whose deadline has passed, in deadline order.
    fn run_due(&mut self) {
        let now = now_ns();
        while let Some((deadline, _)) = self.heap.peek() {
            if deadline > now {
                break;
            }
            let Some((deadline, timer)) = self.heap.pop(|t| t.cancelled.get()) else {
                break;
            };
            if timer.cancelled.get() {
                println!(
                    "[{:6.1} ms] discarded cancelled {}",
                    self.ms(now),
                    timer.name
                );
                continue;
            }
            let fired = now_ns();
            println!(
                "[{:6.1} ms] fired {:<18} ({:.2} ms late)",
                self.ms(fired),
                timer.name,
                (fired - deadline) as f64 / 1e6
            );
            if let Some(victim) = &timer.cancels {
                println!(
                    "[{:6.1} ms]   {} cancels {}",
                    self.ms(fired),
                    timer.name,
                    victim.name
                );
                self.cancel(victim);
            }
        }
    }
}

fn main() -> io::Result<()> {
    let poller = Poller::new()?;
    let waker = Arc::new(Waker::new()?);
    poller.register(waker.as_raw_fd(), WAKER_TOKEN, Interest::READ)?;

    let mut lp = Loop {
        start_ns: now_ns(),
        heap: TimerHeap::new(),
    };

    // Two timers due at the same nanosecond would fire in scheduling order; these are
    // scheduled out of deadline order and still fire by deadline.
    lp.call_later(0.150, "tick-150", None);
    let doomed = lp.call_later(0.100, "doomed-100", None);
    lp.call_later(0.050, "canceller-50", Some(doomed));
    lp.call_later(0.250, "tock-250", None);

    // The other thread: after 120 ms it asks the loop for a timer, then wakes it.
    let (requests_tx, requests_rx) = mpsc::channel::<(String, f64)>();
    let remote = Arc::clone(&waker);
    let helper = thread::spawn(move || -> io::Result<()> {
        thread::sleep(Duration::from_millis(120));
        let _ = requests_tx.send(("from-thread".to_owned(), 0.030));
        remote.wake()?;
        remote.wake()
    });

    let mut events = Events::new();
    let mut waits = 0;
    loop {
        let timeout = lp.timeout();
        if timeout.is_none() && helper.is_finished() {
            break;
        }
        // With no live timer left the loop would sleep until a wake: the helper's.
        let began = now_ns();
        match poller.wait(&mut events, timeout) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        waits += 1;
        let ended = now_ns();
        for event in events.iter() {
            if event.token == WAKER_TOKEN {
                let pending = waker.drain()?;
                println!(
                    "[{:6.1} ms] woken by the other thread after {:.1} ms of a {} wait (drain: {pending})",
                    lp.ms(ended),
                    (ended - began) as f64 / 1e6,
                    match timeout {
                        Some(t) => format!("{:.1} ms", t.as_secs_f64() * 1e3),
                        None => "forever".to_owned(),
                    }
                );
                for (name, delay) in requests_rx.try_iter() {
                    lp.call_later(delay, &name, None);
                }
            }
        }
        lp.run_due();
    }
    match helper.join() {
        Ok(result) => result?,
        Err(_) => return Err(io::Error::other("the helper thread panicked")),
    }
    // A drained waker stays quiet.
    poller.wait(&mut events, Some(Duration::ZERO))?;
    println!(
        "[{:6.1} ms] done after {waits} waits; heap empty: {}, waker quiet: {}",
        lp.ms(now_ns()),
        lp.heap.is_empty(),
        events.is_empty()
    );

    // Lazy cancellation: many dead timers are swept in one pass, asyncio's rule.
    let far = now_ns() + secs_to_ns(3600.0);
    let burst: Vec<Rc<Timer>> = (0..200)
        .map(|i| {
            let timer = Rc::new(Timer {
                name: format!("burst-{i}"),
                cancelled: Cell::new(false),
                cancels: None,
            });
            lp.heap.push(far + i, Rc::clone(&timer));
            timer
        })
        .collect();
    for timer in burst.iter().take(150) {
        lp.cancel(timer);
    }
    let before = lp.heap.len();
    let compact = lp.heap.should_compact();
    let removed = lp.heap.compact(|t| t.cancelled.get());
    println!(
        "compaction: {before} timers, 150 cancelled, should_compact: {compact}, removed {}, left {}",
        removed.len(),
        lp.heap.len()
    );
    Ok(())
}
