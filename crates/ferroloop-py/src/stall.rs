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

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ferroloop_core::clock;
use ferroloop_core::stall::{StallEvent, Watchdog};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::event_loop::EventLoop;

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
            py.detach(|| old.stop());
        }
    }
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
        let monitor = Arc::clone(&self.stall);
        let on_event = move |event: StallEvent| {
            // Never attaches to an interpreter that is shutting down.
            Python::try_attach(|py| {
                let args = match event {
                    StallEvent::Started { since, elapsed } => {
                        let live = monitor.still_in(since);
                        let seconds = if live {
                            clock::ns_to_secs(clock::now_ns() - since)
                        } else {
                            elapsed.as_secs_f64()
                        };
                        ("start", seconds, live)
                    }
                    StallEvent::Ended { duration, .. } => ("end", duration.as_secs_f64(), true),
                };
                if let Err(err) = callback.call1(py, args) {
                    err.write_unraisable(py, None);
                }
            });
        };
        let watchdog = Watchdog::spawn(
            Arc::clone(&self.stall),
            Duration::from_secs_f64(threshold),
            on_event,
        )?;
        *self.watchdog.lock().unwrap_or_else(|e| e.into_inner()) = Some(watchdog);
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
