//! `Handle` and `TimerHandle`: a scheduled callback, as asyncio's `events.Handle`.
//!
//! A handle owns the callback, its arguments and the `contextvars.Context` it runs in
//! (a copy of the scheduling thread's current context when none is given, as asyncio
//! does). Cancelling drops the callback and arguments at once, so a cancelled timer that
//! is still in the heap holds no user objects.
//!
//! One kind of handle enters no context: the loop's own wrapper of an asyncio handle made
//! in Python (`call_soon_threadsafe` on 3.14+ returns asyncio's `_ThreadSafeHandle`), whose
//! callback is that handle's `_run`, which enters the handle's context itself.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use pyo3::gc::{PyTraverseError, PyVisit};
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyInt, PyTuple};

use crate::context;
use crate::gil_cell::GilCell;

/// The callable and its positional arguments.
type Call = (Py<PyAny>, Py<PyTuple>);

/// A callback scheduled with `call_soon`, `add_reader` or a signal handler.
#[pyclass(module = "ferroloop._core", frozen, weakref, subclass)]
pub struct Handle {
    /// `None` once cancelled.
    call: GilCell<Option<Call>>,
    /// The context the callback runs in; `None` only for `Handle::without_context`.
    context: Option<Py<PyAny>>,
    /// [`CANCELLED`], set by `cancel()` and read by the loop before running the handle,
    /// and below it when `call_soon` queued the handle (clock ns) if the loop sampled it
    /// for its lag histogram (else 0). One word for both keeps a handle in CPython's
    /// 96-byte allocation class.
    status: AtomicU64,
    /// asyncio's `_source_traceback`, filled by the Python layer in debug mode.
    source_traceback: GilCell<Option<Py<PyAny>>>,
}

/// The bit of `Handle::status` that says `cancel()` was called.
const CANCELLED: u64 = 1 << 63;

impl Handle {
    /// A handle for `callback(*args)` in `context`, or in a copy of the current context.
    pub fn create(
        py: Python<'_>,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Handle> {
        let context = match context {
            Some(context) if !context.is_none(py) => context,
            _ => context::copy_current(py)?,
        };
        Ok(Handle {
            call: GilCell::new(Some((callback, args))),
            context: Some(context),
            status: AtomicU64::new(0),
            source_traceback: GilCell::new(None),
        })
    }

    /// A handle for `callback()` called as is, in whatever context is current: for a
    /// callback that enters a context itself (an asyncio handle's `_run`).
    pub fn without_context(py: Python<'_>, callback: Py<PyAny>) -> Handle {
        Handle {
            call: GilCell::new(Some((callback, PyTuple::empty(py).unbind()))),
            context: None,
            status: AtomicU64::new(0),
            source_traceback: GilCell::new(None),
        }
    }

    /// Whether `cancel()` was called.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.status.load(Ordering::Relaxed) & CANCELLED != 0
    }

    /// Records when the handle was queued (only sampled handles are stamped; `now_ns`, a
    /// monotonic clock reading, is never negative).
    #[inline]
    pub fn mark_queued(&self, now_ns: i64) {
        self.status
            .fetch_or(now_ns.max(0) as u64 & !CANCELLED, Ordering::Relaxed);
    }

    /// When the handle was queued, if it was sampled for the lag histogram (else 0), and
    /// whether it is cancelled: what the loop reads when it takes the handle off its queue.
    #[inline]
    pub fn queued_ns_and_cancelled(&self) -> (i64, bool) {
        let status = self.status.load(Ordering::Relaxed);
        ((status & !CANCELLED) as i64, status & CANCELLED != 0)
    }

    /// Runs the callback inside its context. A cancelled handle does nothing.
    pub fn run(&self, py: Python<'_>) -> PyResult<()> {
        let (callback, args) = match &*self.call.borrow_mut(py) {
            Some((callback, args)) => (callback.clone_ref(py), args.clone_ref(py)),
            None => return Ok(()),
        };
        match &self.context {
            Some(context) => context::run_in_context(py, context, &callback, &args),
            None => context::call(py, &callback, &args),
        }
    }

    fn mark_cancelled(&self, py: Python<'_>) -> bool {
        if self.status.fetch_or(CANCELLED, Ordering::Relaxed) & CANCELLED != 0 {
            return false;
        }
        // Taken out of the cell first: dropping the callback may run arbitrary Python code.
        let call = self.call.borrow_mut(py).take();
        drop(call);
        true
    }

    fn describe(&self, py: Python<'_>, kind: &str, extra: &str) -> String {
        if self.is_cancelled() {
            return format!("<{kind} cancelled{extra}>");
        }
        let call = self
            .call
            .borrow_mut(py)
            .as_ref()
            .map(|(callback, args)| (callback.clone_ref(py), args.clone_ref(py)));
        match call {
            Some((callback, args)) => {
                let callback = callback
                    .bind(py)
                    .repr()
                    .map(|r| r.to_string())
                    .unwrap_or_default();
                let args = args
                    .bind(py)
                    .repr()
                    .map(|r| r.to_string())
                    .unwrap_or_default();
                format!("<{kind}{extra} {callback}{args}>")
            }
            None => format!("<{kind}{extra}>"),
        }
    }
}

#[pymethods]
impl Handle {
    /// `Handle(callback, args, loop=None, context=None)`, as asyncio's constructor.
    #[new]
    #[pyo3(signature = (callback, args, r#loop = None, context = None))]
    fn py_new(
        py: Python<'_>,
        callback: Py<PyAny>,
        args: Bound<'_, PyAny>,
        r#loop: Option<Py<PyAny>>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Handle> {
        let _ = r#loop;
        let args = PyTuple::new(py, args.try_iter()?.collect::<PyResult<Vec<_>>>()?)?;
        Handle::create(py, callback, args.unbind(), context)
    }

    /// Cancels the callback: it will not run. Cancelling twice is harmless.
    fn cancel(&self, py: Python<'_>) {
        self.mark_cancelled(py);
    }

    /// True once `cancel()` was called.
    fn cancelled(&self) -> bool {
        self.is_cancelled()
    }

    /// The `contextvars.Context` the callback runs in.
    fn get_context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.context.as_ref().map(|c| c.clone_ref(py))
    }

    #[getter]
    fn _callback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.call.borrow_mut(py).as_ref().map(|c| c.0.clone_ref(py))
    }

    #[getter]
    fn _args(&self, py: Python<'_>) -> Option<Py<PyTuple>> {
        self.call.borrow_mut(py).as_ref().map(|c| c.1.clone_ref(py))
    }

    #[getter]
    fn _context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.context.as_ref().map(|c| c.clone_ref(py))
    }

    #[getter]
    fn _cancelled(&self) -> bool {
        self.is_cancelled()
    }

    #[getter]
    fn _source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.source_traceback
            .borrow_mut(py)
            .as_ref()
            .map(|t| t.clone_ref(py))
    }

    #[setter(_source_traceback)]
    fn set_source_traceback(&self, py: Python<'_>, value: Option<Py<PyAny>>) {
        let old = std::mem::replace(&mut *self.source_traceback.borrow_mut(py), value);
        drop(old);
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        self.describe(py, "Handle", "")
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(context) = &self.context {
            visit.call(context)?;
        }
        if let Some(call) = self.call.try_borrow_in_gc() {
            if let Some((callback, args)) = call.as_ref() {
                visit.call(callback)?;
                visit.call(args)?;
            }
        }
        if let Some(tb) = self.source_traceback.try_borrow_in_gc() {
            if let Some(tb) = tb.as_ref() {
                visit.call(tb)?;
            }
        }
        Ok(())
    }
}

/// A callback scheduled for a point in time with `call_later`/`call_at`.
#[pyclass(module = "ferroloop._core", frozen, extends = Handle)]
pub struct TimerHandle {
    /// The `when` given to `call_at`, as seconds on the loop clock.
    when: f64,
    /// The `when` given to `call_at` when it was an `int` (aiohttp rounds its deadlines up
    /// with `math.ceil`): `when()` returns it unchanged, as asyncio's handle does. An int
    /// refers to nothing, so the handle's garbage-collection support need not visit it.
    when_int: Option<Py<PyInt>>,
    /// `when` in clock nanoseconds, the heap's key.
    pub deadline_ns: i64,
    /// True while the timer is in the loop's heap; cleared by the loop when it pops it.
    scheduled: AtomicBool,
    /// The loop's count of cancelled timers still in its heap: a shared counter instead of
    /// a reference to the loop, so a timer never keeps its loop alive.
    cancelled_in_heap: Arc<AtomicUsize>,
}

impl TimerHandle {
    /// A timer handle wrapping `handle`, due at `when` (seconds on the loop clock;
    /// `when_int` is the same time when the caller gave an `int`).
    pub fn create(
        py: Python<'_>,
        handle: Handle,
        when: f64,
        when_int: Option<Py<PyInt>>,
        cancelled_in_heap: Arc<AtomicUsize>,
    ) -> PyResult<Py<TimerHandle>> {
        let timer = TimerHandle {
            when,
            when_int,
            deadline_ns: ferroloop_core::clock::secs_to_ns(when),
            scheduled: AtomicBool::new(true),
            cancelled_in_heap,
        };
        Py::new(py, PyClassInitializer::from(handle).add_subclass(timer))
    }

    /// Called by the loop when the timer leaves the heap.
    pub fn unschedule(&self) {
        self.scheduled.store(false, Ordering::Relaxed);
    }
}

#[pymethods]
impl TimerHandle {
    /// The absolute time (loop clock, seconds) the callback is scheduled for, as given
    /// to `call_at` (an `int` stays an `int`).
    fn when(&self, py: Python<'_>) -> Py<PyAny> {
        self._when(py)
    }

    /// Cancels the timer; the loop drops it from its heap lazily.
    fn cancel(slf: &Bound<'_, Self>) {
        let handle = slf.as_super().get();
        if handle.mark_cancelled(slf.py()) && slf.get().scheduled.load(Ordering::Relaxed) {
            slf.get().cancelled_in_heap.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[getter]
    fn _when(&self, py: Python<'_>) -> Py<PyAny> {
        match &self.when_int {
            Some(when) => when.clone_ref(py).into_any(),
            None => PyFloat::new(py, self.when).into_any().unbind(),
        }
    }

    #[getter]
    fn _scheduled(&self) -> bool {
        self.scheduled.load(Ordering::Relaxed)
    }

    fn __lt__(&self, other: &Self) -> bool {
        self.when < other.when
    }

    fn __le__(&self, other: &Self) -> bool {
        self.when <= other.when
    }

    fn __gt__(&self, other: &Self) -> bool {
        self.when > other.when
    }

    fn __ge__(&self, other: &Self) -> bool {
        self.when >= other.when
    }

    fn __repr__(slf: &Bound<'_, Self>) -> String {
        let extra = match &slf.get().when_int {
            Some(when) => format!(" when={when}"),
            None => format!(" when={}", slf.get().when),
        };
        slf.as_super()
            .get()
            .describe(slf.py(), "TimerHandle", &extra)
    }
}
