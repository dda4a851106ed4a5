//! What every transport core shares: reaching the loop, the owner and the protocol,
//! watching the fd, reporting errors as asyncio does, and write flow control
//! (`pause_writing()`/`resume_writing()` around the water marks).
//!
//! Each core implements [`TransportCore`] with a few accessors over its own state; the
//! provided methods are the shared behaviour. They follow the borrow rule of the loop:
//! the state is borrowed only inside the accessors, never across a call into Python.

use std::os::fd::RawFd;

use pyo3::exceptions::{PyKeyboardInterrupt, PyOSError, PySystemExit, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::boolean_struct::True;
use pyo3::types::{PyDict, PyString};
use pyo3::PyClass;

/// Default high-water mark of a write queue, in bytes (asyncio's).
pub(crate) const DEFAULT_HIGH_WATER: usize = 64 * 1024;

/// True for `KeyboardInterrupt` and `SystemExit`, which always propagate.
pub(crate) fn is_exit(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py)
}

/// A new reference to the object in `obj`, if any.
pub(crate) fn clone_of(py: Python<'_>, obj: &Option<Py<PyAny>>) -> Option<Py<PyAny>> {
    obj.as_ref().map(|o| o.clone_ref(py))
}

/// `logging.getLogger("asyncio")`.
pub(crate) fn asyncio_logger(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    py.import("logging")?
        .call_method1("getLogger", ("asyncio",))
}

/// The water marks of a write queue and whether the protocol was paused for it.
pub(crate) struct FlowControl {
    /// Above this many queued bytes the protocol is paused.
    pub(crate) high: usize,
    /// At or below this many queued bytes a paused protocol is resumed.
    pub(crate) low: usize,
    /// pause_writing() was called and resume_writing() not yet.
    pub(crate) paused: bool,
}

impl Default for FlowControl {
    fn default() -> Self {
        FlowControl {
            high: DEFAULT_HIGH_WATER,
            low: DEFAULT_HIGH_WATER / 4,
            paused: false,
        }
    }
}

impl FlowControl {
    /// `(low, high)`, as `get_write_buffer_limits()` returns them.
    pub(crate) fn limits(&self) -> (usize, usize) {
        (self.low, self.high)
    }

    /// True (and marks the protocol paused) when `queued` crossed the high-water mark.
    fn should_pause(&mut self, queued: usize) -> bool {
        if queued <= self.high || self.paused {
            return false;
        }
        self.paused = true;
        true
    }

    /// True (and marks the protocol resumed) when `queued` drained to the low-water mark.
    fn should_resume(&mut self, queued: usize) -> bool {
        if !self.paused || queued > self.low {
            return false;
        }
        self.paused = false;
        true
    }
}

/// asyncio's `_set_write_buffer_limits`: the defaults (`high` 64 KiB or `4 * low`,
/// `low` `high // 4`) and the check `high >= low >= 0`. Returns `(high, low)`.
pub(crate) fn water_marks(
    high: Option<Bound<'_, PyAny>>,
    low: Option<Bound<'_, PyAny>>,
) -> PyResult<(usize, usize)> {
    let high: Option<i64> = high.map(|h| h.extract()).transpose()?;
    let low: Option<i64> = low.map(|l| l.extract()).transpose()?;
    let high = high.unwrap_or_else(|| match low {
        Some(low) => low.saturating_mul(4),
        None => DEFAULT_HIGH_WATER as i64,
    });
    // Floor division, as Python's `high // 4` (matters for negative values).
    let low = low.unwrap_or(high.div_euclid(4));
    if !(high >= low && low >= 0) {
        return Err(PyValueError::new_err(format!(
            "high ({high}) must be >= low ({low}) must be >= 0"
        )));
    }
    Ok((high as usize, low as usize))
}

/// The lifecycle every transport core shares. Implementors give access to their state;
/// the provided methods are asyncio's common transport behaviour on top of it.
pub(crate) trait TransportCore: PyClass<Frozen = True> + Sync {
    /// The fd the loop watches for this transport.
    fn raw_fd(&self) -> RawFd;

    /// The loop, while the transport is attached to it.
    fn loop_obj(&self, py: Python<'_>) -> Option<Py<PyAny>>;

    /// The `asyncio` transport object users see, or None once connection_lost ran.
    fn owner(&self, py: Python<'_>) -> Py<PyAny>;

    /// The current protocol, while there is one.
    fn protocol(&self, py: Python<'_>) -> Option<Py<PyAny>>;

    /// The `contextvars.Context` all of the transport's callbacks run in, if it has one
    /// (stream sockets on Python 3.15+, as asyncio's); without one, each callback runs in
    /// a copy of the context current when it was scheduled.
    fn context(&self, _py: Python<'_>) -> Option<Py<PyAny>> {
        None
    }

    /// `{"context": context}` when the transport has a context, for the loop's scheduling
    /// methods.
    fn context_kwargs<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        match self.context(py) {
            Some(context) => {
                let kwargs = PyDict::new(py);
                kwargs.set_item(intern!(py, "context"), context)?;
                Ok(Some(kwargs))
            }
            None => Ok(None),
        }
    }

    /// `loop.<method>(fd, <bound method `callback` of the core>)`, while attached.
    fn watch(slf: &Bound<'_, Self>, method: &Bound<'_, PyString>, callback: &str) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if let Some(event_loop) = this.loop_obj(py) {
            let callback = slf.as_any().getattr(callback)?;
            let kwargs = this.context_kwargs(py)?;
            event_loop.call_method(py, method, (this.raw_fd(), callback), kwargs.as_ref())?;
        }
        Ok(())
    }

    /// `loop.<method>(fd)`, while attached.
    fn unwatch(&self, py: Python<'_>, method: &Bound<'_, PyString>) -> PyResult<()> {
        if let Some(event_loop) = self.loop_obj(py) {
            event_loop.call_method1(py, method, (self.raw_fd(),))?;
        }
        Ok(())
    }

    /// `protocol.connection_lost(exc)`, while there is a protocol.
    fn call_connection_lost_on_protocol(
        &self,
        py: Python<'_>,
        exc: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        match self.protocol(py) {
            Some(protocol) => protocol
                .call_method1(py, intern!(py, "connection_lost"), (exc,))
                .map(drop),
            None => Ok(()),
        }
    }

    /// `loop.call_exception_handler({message, exception, transport, protocol})`, while
    /// attached.
    fn report_error(&self, py: Python<'_>, message: &str, exc: &Py<PyAny>) -> PyResult<()> {
        let Some(event_loop) = self.loop_obj(py) else {
            return Ok(());
        };
        let context = PyDict::new(py);
        context.set_item("message", message)?;
        context.set_item("exception", exc)?;
        context.set_item("transport", self.owner(py))?;
        context.set_item("protocol", self.protocol(py))?;
        event_loop.call_method1(py, intern!(py, "call_exception_handler"), (context,))?;
        Ok(())
    }

    /// asyncio logs expected errors of a transport only in debug mode, at DEBUG level.
    fn log_error_in_debug(
        &self,
        py: Python<'_>,
        exc: &Bound<'_, PyAny>,
        message: &str,
    ) -> PyResult<()> {
        let Some(event_loop) = self.loop_obj(py) else {
            return Ok(());
        };
        if !event_loop
            .call_method0(py, intern!(py, "get_debug"))?
            .is_truthy(py)?
        {
            return Ok(());
        }
        let kwargs = PyDict::new(py);
        kwargs.set_item("exc_info", exc)?;
        asyncio_logger(py)?.call_method(
            "debug",
            ("%r: %s", self.owner(py), message),
            Some(&kwargs),
        )?;
        Ok(())
    }

    /// The reporting half of asyncio's `_fatal_error`: an expected error (`quiet`) is
    /// logged in debug mode only, anything else goes to the exception handler.
    fn report_fatal(
        &self,
        py: Python<'_>,
        exc: &Py<PyAny>,
        message: &str,
        quiet: bool,
    ) -> PyResult<()> {
        if quiet {
            self.log_error_in_debug(py, exc.bind(py), message)
        } else {
            self.report_error(py, message, exc)
        }
    }

    /// Calls `protocol.<name>()`; a failure other than an exit goes to the exception
    /// handler with `message`.
    fn notify_protocol(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyString>,
        message: &str,
    ) -> PyResult<()> {
        let Some(protocol) = self.protocol(py) else {
            return Ok(());
        };
        match protocol.call_method0(py, name) {
            Ok(_) => Ok(()),
            Err(err) if is_exit(py, &err) => Err(err),
            Err(err) => self.report_error(py, message, &err.into_value(py).into_any()),
        }
    }
}

/// Write flow control for a transport core with a write queue: `pause_writing()` above
/// the high-water mark, `resume_writing()` once drained to the low-water mark.
pub(crate) trait WriteFlow: TransportCore {
    /// Runs `f` on the flow control and the number of queued bytes, state borrowed.
    fn with_flow<R>(&self, py: Python<'_>, f: impl FnOnce(&mut FlowControl, usize) -> R) -> R;

    /// Calls pause_writing() when the queue went above the high-water mark.
    fn maybe_pause_protocol(&self, py: Python<'_>) -> PyResult<()> {
        if !self.with_flow(py, |flow, queued| flow.should_pause(queued)) {
            return Ok(());
        }
        self.notify_protocol(
            py,
            intern!(py, "pause_writing"),
            "protocol.pause_writing() failed",
        )
    }

    /// Calls resume_writing() when the queue drained to the low-water mark.
    fn maybe_resume_protocol(&self, py: Python<'_>) -> PyResult<()> {
        if !self.with_flow(py, |flow, queued| flow.should_resume(queued)) {
            return Ok(());
        }
        self.notify_protocol(
            py,
            intern!(py, "resume_writing"),
            "protocol.resume_writing() failed",
        )
    }

    /// `set_write_buffer_limits(high, low)`: sets the water marks, may pause the protocol.
    fn set_water_marks(
        &self,
        py: Python<'_>,
        high: Option<Bound<'_, PyAny>>,
        low: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let (high, low) = water_marks(high, low)?;
        self.with_flow(py, |flow, _| {
            flow.high = high;
            flow.low = low;
        });
        self.maybe_pause_protocol(py)
    }
}

/// After this many writes on a lost connection, each further write logs a warning.
pub(crate) const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;

/// Where a socket transport (stream or datagram) is in its life, as asyncio's
/// `_SelectorTransport` tracks it.
#[derive(Default)]
pub(crate) struct Lifecycle {
    /// close() or a fatal error started closing; no more reading.
    pub(crate) closing: bool,
    /// pause_reading() was called.
    pub(crate) reading_paused: bool,
    /// Non-zero once connection_lost is scheduled; counts writes after that.
    pub(crate) conn_lost: u32,
}

impl Lifecycle {
    /// True while incoming data is delivered.
    pub(crate) fn is_reading(&self) -> bool {
        !self.closing && !self.reading_paused
    }
}

/// asyncio's `_SelectorTransport` lifecycle for socket transports: closing, aborting,
/// pausing and resuming reading. The fd is watched with `_read_ready` for reading and
/// unwatched with `_remove_writer` when queued output is dropped.
pub(crate) trait SocketLifecycle: TransportCore {
    /// What [`SocketLifecycle::take_queue`] moves out of the state, dropped outside it.
    type Queue;

    /// Runs `f` on the lifecycle and whether the write queue is empty, state borrowed.
    fn with_lifecycle<R>(&self, py: Python<'_>, f: impl FnOnce(&mut Lifecycle, bool) -> R) -> R;

    /// Empties the write queue, handing its contents back to drop.
    fn take_queue(&self, py: Python<'_>) -> Self::Queue;

    /// Whether a fatal OS error is logged in debug mode before the transport closes (the
    /// stream transport logs it; the datagram transport only closes).
    const LOGS_FATAL_OS_ERRORS: bool;

    /// asyncio's `_fatal_error`: exits propagate; OS errors only close the transport
    /// (see [`SocketLifecycle::LOGS_FATAL_OS_ERRORS`]); anything else is also reported to
    /// the exception handler.
    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        if is_exit(py, &err) {
            return Err(err);
        }
        let exc = err.into_value(py).into_any();
        if !exc.bind(py).is_instance_of::<PyOSError>() {
            slf.get().report_error(py, message, &exc)?;
        } else if Self::LOGS_FATAL_OS_ERRORS {
            slf.get().log_error_in_debug(py, exc.bind(py), message)?;
        }
        Self::force_close(slf, Some(exc))
    }

    /// `loop.call_soon(self._call_connection_lost, exc)`, while attached.
    fn schedule_connection_lost(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        if let Some(event_loop) = slf.get().loop_obj(py) {
            let callback = slf.as_any().getattr(intern!(py, "_call_connection_lost"))?;
            let kwargs = slf.get().context_kwargs(py)?;
            event_loop.call_method(
                py,
                intern!(py, "call_soon"),
                (callback, exc),
                kwargs.as_ref(),
            )?;
        }
        Ok(())
    }

    /// asyncio's `_force_close`: drop queued output, stop watching, schedule
    /// connection_lost(exc); once only.
    fn force_close(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let started = this.with_lifecycle(py, |life, queue_empty| {
            if life.conn_lost > 0 {
                return None;
            }
            let was_closing = life.closing;
            life.closing = true;
            life.conn_lost += 1;
            Some((!queue_empty, was_closing))
        });
        let Some((had_queue, was_closing)) = started else {
            return Ok(());
        };
        drop(this.take_queue(py));
        if had_queue {
            this.unwatch(py, intern!(py, "_remove_writer"))?;
        }
        if !was_closing {
            this.unwatch(py, intern!(py, "_remove_reader"))?;
        }
        Self::schedule_connection_lost(slf, exc)
    }

    /// `close()`: stop reading; once the queue is empty, connection_lost(None) follows.
    fn close_gracefully(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let drained = this.with_lifecycle(py, |life, queue_empty| {
            if life.closing {
                return None;
            }
            life.closing = true;
            if queue_empty {
                life.conn_lost += 1;
            }
            Some(queue_empty)
        });
        let Some(drained) = drained else {
            return Ok(());
        };
        this.unwatch(py, intern!(py, "_remove_reader"))?;
        if drained {
            this.unwatch(py, intern!(py, "_remove_writer"))?;
            Self::schedule_connection_lost(slf, None)?;
        }
        Ok(())
    }

    /// `pause_reading()`: stop watching the fd for reading.
    fn stop_reading(&self, py: Python<'_>) -> PyResult<()> {
        let pause = self.with_lifecycle(py, |life, _| {
            let pause = !life.closing && !life.reading_paused;
            life.reading_paused |= pause;
            pause
        });
        if pause {
            self.unwatch(py, intern!(py, "_remove_reader"))?;
        }
        Ok(())
    }

    /// `resume_reading()`: watch the fd for reading again.
    fn restart_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let resume = slf.get().with_lifecycle(py, |life, _| {
            let resume = !life.closing && life.reading_paused;
            if resume {
                life.reading_paused = false;
            }
            resume
        });
        if resume {
            Self::watch(slf, intern!(py, "_add_reader"), "_read_ready")?;
        }
        Ok(())
    }

    /// `_start_reading()` (scheduled right after connection_made): watch the fd for
    /// reading unless paused, closing or lost.
    fn begin_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let start = slf.get().with_lifecycle(py, |life, _| {
            !(life.closing || life.reading_paused || life.conn_lost > 0)
        });
        if start {
            Self::watch(slf, intern!(py, "_add_reader"), "_read_ready")?;
        }
        Ok(())
    }

    /// Counts a write on a lost connection; past the threshold each one logs a warning.
    fn count_lost_write(&self, py: Python<'_>, conn_lost: u32) -> PyResult<()> {
        if conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES {
            asyncio_logger(py)?.call_method1("warning", ("socket.send() raised exception.",))?;
        }
        self.with_lifecycle(py, |life, _| life.conn_lost += 1);
        Ok(())
    }
}

/// [`TransportCore`] for a core with an `fd` and a `state` (a `GilCell`) that holds
/// `event_loop`, `owner` and `protocol`, directly or in the field named second; with
/// `; context`, also a `context` (an `Option`) directly in the state.
macro_rules! transport_core {
    ($core:ty $(, $within:ident)? $(; $context:ident)?) => {
        impl TransportCore for $core {
            fn raw_fd(&self) -> RawFd {
                self.fd
            }

            fn loop_obj(&self, py: Python<'_>) -> Option<Py<PyAny>> {
                clone_of(py, &self.state.borrow_mut(py)$(.$within)?.event_loop)
            }

            fn owner(&self, py: Python<'_>) -> Py<PyAny> {
                clone_of(py, &self.state.borrow_mut(py)$(.$within)?.owner)
                    .unwrap_or_else(|| py.None())
            }

            fn protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
                clone_of(py, &self.state.borrow_mut(py)$(.$within)?.protocol)
            }

            $(
            fn context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
                clone_of(py, &self.state.borrow_mut(py).$context)
            }
            )?
        }
    };
}
pub(crate) use transport_core;

/// The Python methods of a [`WriteFlow`] core: `set_write_buffer_limits`,
/// `get_write_buffer_limits`, `get_write_buffer_size` and `_protocol_paused`.
macro_rules! write_flow_pymethods {
    ($core:ty) => {
        #[pyo3::pymethods]
        impl $core {
            /// Sets the water marks (asyncio's defaults and checks); may pause the protocol.
            #[pyo3(signature = (high = None, low = None))]
            fn set_write_buffer_limits(
                &self,
                py: Python<'_>,
                high: Option<Bound<'_, PyAny>>,
                low: Option<Bound<'_, PyAny>>,
            ) -> PyResult<()> {
                self.set_water_marks(py, high, low)
            }

            /// `(low, high)` water marks.
            fn get_write_buffer_limits(&self, py: Python<'_>) -> (usize, usize) {
                self.with_flow(py, |flow, _| flow.limits())
            }

            /// Bytes queued and not yet sent.
            fn get_write_buffer_size(&self, py: Python<'_>) -> usize {
                self.with_flow(py, |_, queued| queued)
            }

            /// True between pause_writing() and resume_writing().
            #[getter]
            fn _protocol_paused(&self, py: Python<'_>) -> bool {
                self.with_flow(py, |flow, _| flow.paused)
            }
        }
    };
}
pub(crate) use write_flow_pymethods;

/// The Python methods of a [`SocketLifecycle`] core: `close`, `abort`, `_force_close`,
/// `is_closing`, `is_reading`, `pause_reading`, `resume_reading` and `_start_reading`.
macro_rules! socket_lifecycle_pymethods {
    ($core:ty) => {
        #[pyo3::pymethods]
        impl $core {
            /// Stops reading, sends what is queued, then closes (connection_lost(None)).
            fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
                Self::close_gracefully(slf)
            }

            /// Closes at once, dropping queued output.
            fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
                Self::force_close(slf, None)
            }

            /// asyncio's `_force_close`.
            #[pyo3(signature = (exc = None))]
            fn _force_close(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
                Self::force_close(slf, exc)
            }

            /// asyncio's `_fatal_error`.
            #[pyo3(signature = (exc, message = "Fatal error on transport"))]
            fn _fatal_error(
                slf: &Bound<'_, Self>,
                exc: Bound<'_, PyAny>,
                message: &str,
            ) -> PyResult<()> {
                Self::fatal_error(slf, PyErr::from_value(exc), message)
            }

            /// True once close() (or a fatal error) started closing.
            fn is_closing(&self, py: Python<'_>) -> bool {
                self.with_lifecycle(py, |life, _| life.closing)
            }

            /// True while the transport delivers incoming data.
            fn is_reading(&self, py: Python<'_>) -> bool {
                self.with_lifecycle(py, |life, _| life.is_reading())
            }

            /// Stops delivering incoming data until resume_reading().
            fn pause_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
                slf.get().stop_reading(slf.py())
            }

            /// Delivers incoming data again.
            fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
                Self::restart_reading(slf)
            }

            /// Starts reading (scheduled right after connection_made).
            fn _start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
                Self::begin_reading(slf)
            }
        }
    };
}
pub(crate) use socket_lifecycle_pymethods;
