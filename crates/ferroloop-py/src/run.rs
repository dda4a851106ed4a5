//! The run loop: one iteration polls for I/O, moves due timers to the ready queue and runs
//! exactly the handles that were ready when the iteration started — callbacks scheduled
//! during an iteration run in the next one, as asyncio promises.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ferroloop_core::clock;
use ferroloop_core::poll::{Events, Poller};
use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::prelude::*;

use crate::event_loop::{EventLoop, WAKER_TOKEN};
use crate::handle::{Handle, TimerHandle};

/// The longest single wait in the poller, as asyncio's `MAXIMUM_SELECT_TIMEOUT` (one day).
const MAX_POLL_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// What the iteration must wait for before running handles.
enum Wait {
    /// Something is ready: only collect I/O that is already pending.
    NoWait { any_fds: bool },
    /// Sleep until an fd is ready, the waker fires, or the timeout passes; `since` is the
    /// clock when the loop decided to sleep.
    Sleep {
        timeout: Option<Duration>,
        since: i64,
    },
}

#[pymethods]
impl EventLoop {
    /// Runs iterations until `stop()` is called. The Python layer wraps this with the
    /// running-loop registration and async-generator hooks.
    fn _run_forever_core(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        this.restart_orphaned_watchdog(slf.py())?;
        this.running.store(true, Ordering::Relaxed);
        this.state.borrow_mut(slf.py()).counters.busy_started = clock::now_ns();
        let mut events = Events::new();
        let result = loop {
            if let Err(err) = run_once(slf, &mut events) {
                break Err(err);
            }
            if this.stopping.load(Ordering::Relaxed) {
                break Ok(());
            }
        };
        this.stall.enter_poller();
        let now = clock::now_ns();
        this.state.borrow_mut(slf.py()).counters.stop_running(now);
        this.stopping.store(false, Ordering::Relaxed);
        this.running.store(false, Ordering::Relaxed);
        result
    }
}

fn run_once(slf: &Bound<'_, EventLoop>, events: &mut Events) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();
    // Back at the poller: the stall watchdog sees one stamp per iteration on each side of
    // the poll, never one per callback, and no clock read. The clock is read after the
    // poll only when the loop slept or has timers (and before it only when it sleeps). A
    // replaced `loop.time` is asked instead for the timers (asyncio's loop reads its
    // clock through `self.time()`).
    this.stall.enter_poller();
    let python_clock = this.python_clock.load(Ordering::Relaxed);
    let loop_now = if python_clock {
        Some(EventLoop::now_ns(slf)?)
    } else {
        None
    };
    let (wait, poller) = plan_wait(py, this, loop_now);
    let (polled, slept_at) = match (wait, poller) {
        (Wait::NoWait { any_fds: false }, _) | (_, None) => (false, None),
        (Wait::NoWait { any_fds: true }, Some(poller)) => (
            collect(py, poller.wait(events, Some(Duration::ZERO)))?,
            None,
        ),
        (Wait::Sleep { timeout, since }, Some(poller)) => {
            let outcome = py.detach(|| poller.wait(events, timeout));
            this.polling.store(false, Ordering::SeqCst);
            (collect(py, outcome)?, Some(since))
        }
    };
    this.stall.enter_callbacks();
    if polled {
        dispatch_io(py, this, events);
    }
    if this.dns_pending.swap(false, Ordering::Relaxed) {
        crate::dns::deliver_answers(slf)?;
    }
    let timers_now = if python_clock {
        Some(EventLoop::now_ns(slf)?)
    } else {
        None
    };
    move_due_timers(py, this, slept_at, timers_now);
    run_ready(slf)
}

/// Decides how long to wait, the loop's time being `loop_now` (clock nanoseconds; None:
/// the monotonic clock, read only if the loop may sleep); sets `polling` when the loop
/// will sleep (see its doc).
fn plan_wait(
    py: Python<'_>,
    this: &EventLoop,
    loop_now: Option<i64>,
) -> (Wait, Option<Arc<Poller>>) {
    let mut state = this.state.borrow_mut(py);
    state.counters.iterations += 1;
    let newly_cancelled = this.cancelled_timers.swap(0, Ordering::Relaxed);
    state.timers.note_cancelled(newly_cancelled);
    state.counters.timers_cancelled += newly_cancelled as u64;
    let poller = state.poller.clone();
    if !state.ready.is_empty() || this.stopping.load(Ordering::Relaxed) {
        let any_fds = !state.fds.is_empty();
        return (Wait::NoWait { any_fds }, poller);
    }
    let real_now = clock::now_ns();
    let now = loop_now.unwrap_or(real_now);
    let timeout = state.timers.peek().map(|(deadline, _)| {
        let remaining = deadline.saturating_sub(now).max(0) as u64;
        Duration::from_nanos(remaining).min(MAX_POLL_TIMEOUT)
    });
    if timeout == Some(Duration::ZERO) {
        let any_fds = !state.fds.is_empty();
        return (Wait::NoWait { any_fds }, poller);
    }
    state.counters.start_sleep(real_now);
    this.polling.store(true, Ordering::SeqCst);
    (
        Wait::Sleep {
            timeout,
            since: real_now,
        },
        poller,
    )
}

/// Turns a wait's outcome into "events to dispatch": an interrupted wait runs the Python
/// signal handlers (which may raise, e.g. `KeyboardInterrupt`) and reports nothing.
fn collect(py: Python<'_>, outcome: std::io::Result<usize>) -> PyResult<bool> {
    match outcome {
        Ok(count) => Ok(count > 0),
        Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {
            py.check_signals()?;
            Ok(false)
        }
        Err(err) => Err(err.into()),
    }
}

/// Queues the reader/writer handles of ready fds (level-triggered: every iteration an fd
/// stays ready). A cancelled handle unregisters its direction instead, as asyncio does.
fn dispatch_io(py: Python<'_>, this: &EventLoop, events: &Events) {
    let mut stale: Vec<Py<Handle>> = Vec::new();
    {
        let mut state = this.state.borrow_mut(py);
        let state = &mut *state;
        for event in events.iter() {
            if event.token == WAKER_TOKEN {
                if let Some(waker) = &state.waker {
                    let _ = waker.drain();
                }
                continue;
            }
            state.counters.io_events += 1;
            let fd = event.token as i32;
            let Some(watch) = state.fds.get_mut(&fd) else {
                continue;
            };
            let mut changed = false;
            for (ready, slot) in [
                (event.readable, &mut watch.reader),
                (event.writable, &mut watch.writer),
            ] {
                let Some(handle) = slot.as_ref().filter(|_| ready) else {
                    continue;
                };
                if handle.get().is_cancelled() {
                    stale.extend(slot.take());
                    changed = true;
                } else {
                    state.ready.push_back(handle.clone_ref(py));
                }
            }
            if changed {
                crate::fds::apply_interest(state, fd);
            }
        }
    }
    drop(stale);
}

/// Moves every timer due within the clock's resolution of the loop's time to the ready
/// queue, dropping cancelled ones; compacts the heap when cancelled timers dominate it.
/// `loop_now` is the loop's time when the poller returned if `time` is replaced (None: the
/// monotonic clock, read here, once, only when the loop slept or has timers); `slept_at`
/// when the loop went to sleep in the poller, if it did (for the counters).
fn move_due_timers(py: Python<'_>, this: &EventLoop, slept_at: Option<i64>, loop_now: Option<i64>) {
    let mut dead: Vec<Py<TimerHandle>> = Vec::new();
    {
        let mut state = this.state.borrow_mut(py);
        let mut woke_at = None;
        if let Some(slept_at) = slept_at {
            let now = clock::now_ns();
            state.counters.end_sleep(slept_at, now);
            woke_at = Some(now);
        }
        if state.timers.should_compact() {
            dead = state
                .timers
                .compact(|t| t.bind(py).as_super().get().is_cancelled());
            for timer in &dead {
                timer.get().unschedule();
            }
        }
        if state.timers.is_empty() {
            drop(state);
            drop(dead);
            return;
        }
        let now = loop_now.or(woke_at).unwrap_or_else(clock::now_ns);
        let end = now.saturating_add(this.clock_resolution_ns);
        while let Some((deadline, _)) = state.timers.peek() {
            if deadline >= end {
                break;
            }
            let is_cancelled = |t: &Py<TimerHandle>| t.bind(py).as_super().get().is_cancelled();
            let Some((_, timer)) = state.timers.pop(is_cancelled) else {
                break;
            };
            timer.get().unschedule();
            if is_cancelled(&timer) {
                dead.push(timer);
            } else {
                let handle = timer.into_bound(py).into_super().unbind();
                state.ready.push_back(handle);
                state.counters.timers_fired += 1;
            }
        }
    }
    drop(dead);
}

/// Runs the handles that are ready now; anything they schedule waits for the next
/// iteration. `KeyboardInterrupt` and `SystemExit` propagate (the remaining handles stay
/// queued, so the loop can run again); any other exception goes to the exception handler.
fn run_ready(slf: &Bound<'_, EventLoop>) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();
    let count = this.state.borrow_mut(py).ready.len();
    for _ in 0..count {
        let (handle, cancelled) = {
            let mut state = this.state.borrow_mut(py);
            let Some(handle) = state.ready.pop_front() else {
                break;
            };
            state.counters.popped += 1;
            let (queued, cancelled) = handle.get().queued_ns_and_cancelled();
            if queued != 0 {
                state.counters.record_lag(queued);
            }
            (handle, cancelled)
        };
        let h = handle.get();
        if cancelled {
            this.state.borrow_mut(py).counters.skipped += 1;
            continue;
        }
        let debug = this.debug.load(Ordering::Relaxed);
        let started = if debug { clock::now_ns() } else { 0 };
        // For stall reports: the handle stays referenced by `handle` until this is cleared.
        this.current_handle
            .store(handle.as_ptr() as usize, Ordering::Relaxed);
        let outcome = h.run(py);
        this.current_handle.store(0, Ordering::Relaxed);
        if let Err(err) = outcome {
            report_callback_error(slf, &handle, err)?;
        }
        if debug {
            let took = clock::ns_to_secs(clock::now_ns() - started);
            if took >= this.slow_callback_secs() {
                slf.call_method1(pyo3::intern!(py, "_log_slow_callback"), (&handle, took))?;
            }
        }
    }
    Ok(())
}

fn report_callback_error(
    slf: &Bound<'_, EventLoop>,
    handle: &Py<Handle>,
    err: PyErr,
) -> PyResult<()> {
    let py = slf.py();
    if err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py) {
        return Err(err);
    }
    slf.call_method1(
        pyo3::intern!(py, "_report_callback_error"),
        (handle, err.into_value(py)),
    )?;
    Ok(())
}
