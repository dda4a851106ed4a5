//! The stall watchdog of a loop: `ferroloop_core::stall::Watchdog` with its reports
//! handed to Python.
//!
//! The run loop stamps `EventLoop::stall` once per iteration (see `run.rs`). The watchdog
//! thread sleeps without the GIL; only when a stretch of callbacks crosses the threshold
//! does it attach to the interpreter and call the Python layer's callback, which captures
//! the loop thread's stack. A thread running Python code gives the GIL up every switch
//! interval, and `time.sleep` or I/O gives it up at once, so the capture happens while the
//! loop is still stuck; a C call that keeps the GIL delays it until the stall is over,
//! which the callback is told (`live` false).
//!
//! After `os.fork()` the child has the loop but not the watchdog's thread: stopping it
//! there only forgets it, and the next `run_forever` in the child starts a new one with
//! the same threshold and callback.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ferroloop_core::clock;
use ferroloop_core::stall::{StallEvent, StallMonitor, Watchdog};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::event_loop::EventLoop;

/// A running watchdog and what it was started with (to start it again in a forked child).
pub struct ActiveWatch {
    watchdog: Watchdog,
    threshold: Duration,
    callback: Py<PyAny>,
}

impl EventLoop {
    /// Stops the watchdog, if any, and waits for its thread with the GIL released (the
    /// thread may be waiting for the GIL to deliver a report).
    pub fn stop_watchdog(&self, py: Python<'_>) {
        let old = self
            .watchdog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(old) = old {
            py.detach(|| old.watchdog.stop());
        }
    }

    /// In a child forked while a watchdog ran: starts a new one in place of the thread
    /// the child does not have. Called when the loop starts running.
    pub fn restart_orphaned_watchdog(&self, py: Python<'_>) -> PyResult<()> {
        let mut slot = self.watchdog.lock().unwrap_or_else(|e| e.into_inner());
        if !slot.as_ref().is_some_and(|w| w.watchdog.is_orphaned()) {
            return Ok(());
        }
        let Some(old) = slot.take() else {
            return Ok(());
        };
        old.watchdog.stop();
        *slot = Some(start(py, &self.stall, old.threshold, old.callback)?);
        Ok(())
    }
}

/// Starts a watchdog on `monitor` that calls `callback` (see `_set_stall_watch`).
fn start(
    py: Python<'_>,
    monitor: &Arc<StallMonitor>,
    threshold: Duration,
    callback: Py<PyAny>,
) -> PyResult<ActiveWatch> {
    let watched = Arc::clone(monitor);
    let to_call = callback.clone_ref(py);
    let on_event = move |event: StallEvent| {
        // Never attaches to an interpreter that is shutting down.
        Python::try_attach(|py| {
            let args = match event {
                StallEvent::Started {
                    stretch,
                    since,
                    elapsed,
                } => {
                    let live = watched.still_in(stretch);
                    let seconds = if live {
                        clock::ns_to_secs(clock::now_ns() - since)
                    } else {
                        elapsed.as_secs_f64()
                    };
                    ("start", seconds, live)
                }
                StallEvent::Ended { duration, .. } => ("end", duration.as_secs_f64(), true),
            };
            if let Err(err) = to_call.call1(py, args) {
                err.write_unraisable(py, None);
            }
        });
    };
    let watchdog = Watchdog::spawn(Arc::clone(monitor), threshold, on_event)?;
    Ok(ActiveWatch {
        watchdog,
        threshold,
        callback,
    })
}

#[pymethods]
impl EventLoop {
    /// Starts the stall watchdog with `threshold` seconds, replacing any other; with None
    /// for either argument, stops it. On the watchdog thread, with the GIL, it calls
    /// `callback("start", seconds_so_far, live)` when a stretch of callbacks crosses the
    /// threshold (`live`: the loop is still in that stretch now that the GIL is held), and
    /// `callback("end", total_seconds, True)` when that stretch ends.
    #[pyo3(signature = (threshold, callback))]
    fn _set_stall_watch(
        &self,
        py: Python<'_>,
        threshold: Option<f64>,
        callback: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        self.stop_watchdog(py);
        let (Some(threshold), Some(callback)) = (threshold, callback) else {
            return Ok(());
        };
        if !(threshold.is_finite() && threshold > 0.0) {
            return Err(PyValueError::new_err(format!(
                "threshold must be a positive number of seconds, got {threshold}"
            )));
        }
        self.ensure_open()?;
        let watch = start(
            py,
            &self.stall,
            Duration::from_secs_f64(threshold),
            callback,
        )?;
        *self.watchdog.lock().unwrap_or_else(|e| e.into_inner()) = Some(watch);
        Ok(())
    }

    /// The handle the loop is running now, or None between handles.
    fn _stall_current_handle(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        let address = self.current_handle.load(Ordering::Relaxed);
        if address == 0 {
            return None;
        }
        // SAFETY: the loop thread stores the address of a handle it holds a reference to
        // and clears it, with the GIL held, before that reference can go away; we hold the
        // GIL, so the object is alive for this borrow and we take a new reference to it.
        Some(unsafe { Bound::from_borrowed_ptr(py, address as *mut pyo3::ffi::PyObject) }.unbind())
    }
}
