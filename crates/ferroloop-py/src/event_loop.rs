//! `_core.Loop`: the loop's state and its hot-path methods.
//!
//! The Python class `ferroloop.Loop` derives from this and from
//! `asyncio.AbstractEventLoop`; it adds the cold orchestration (run_forever's set-up,
//! exception handlers, executors, signals). Everything a coroutine step touches —
//! `call_soon`, timers, the run loop itself — is here.
//!
//! Borrowing rule: `state` is borrowed only for short stretches that never call into
//! Python and never drop a Python object; whatever must be dropped is moved out first.

use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ferroloop_core::dns::Resolver;
use ferroloop_core::poll::{Interest, Poller};
use ferroloop_core::stall::StallMonitor;
use ferroloop_core::timer::TimerHeap;
use ferroloop_core::waker::Waker;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::gc::{PyTraverseError, PyVisit};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyTuple};

use crate::gil_cell::GilCell;
use crate::handle::{Handle, TimerHandle};
use crate::stats::{Counters, IoStats};

/// The poller token of the loop's own waker.
pub const WAKER_TOKEN: u64 = u64::MAX;
/// asyncio's default `slow_callback_duration`, in seconds.
const DEFAULT_SLOW_CALLBACK_DURATION: f64 = 0.1;

/// The reader and writer callbacks watching one fd.
#[derive(Default)]
pub struct FdWatch {
    pub reader: Option<Py<Handle>>,
    pub writer: Option<Py<Handle>>,
    /// The address of the object last given to `add_reader`/`add_writer` for this fd, to
    /// find the watch again from that object once its `fileno()` is -1 (closed), as
    /// asyncio's selectors do. An address, not a reference: holding the object would let
    /// dropping a watch run its `__del__` while the loop state is borrowed. 0 for none.
    pub fileobj: usize,
}

impl FdWatch {
    pub fn interest(&self) -> Interest {
        Interest {
            readable: self.reader.is_some(),
            writable: self.writer.is_some(),
        }
    }
}

/// Everything the loop mutates, behind the GIL (see `GilCell`).
pub struct LoopState {
    /// Handles to run in the next iteration, in order.
    pub ready: VecDeque<Py<Handle>>,
    /// Scheduled timers.
    pub timers: TimerHeap<Py<TimerHandle>>,
    /// fds watched by `add_reader`/`add_writer`.
    pub fds: HashMap<RawFd, FdWatch>,
    /// Futures waiting for a DNS answer, by request id.
    pub dns_waiters: HashMap<u64, Py<PyAny>>,
    pub next_dns_id: u64,
    /// Shared so the run loop can wait on it with the state released; `None` once closed.
    pub poller: Option<Arc<Poller>>,
    pub waker: Option<Arc<Waker>>,
    pub resolver: Option<Resolver>,
    /// What `stats()` reports (see `stats.rs`).
    pub counters: Counters,
}

/// The Rust half of a ferroloop event loop.
#[pyclass(module = "ferroloop._core", name = "Loop", subclass, frozen)]
pub struct EventLoop {
    pub state: GilCell<LoopState>,
    pub closed: AtomicBool,
    /// Set by `stop()`; the run loop finishes its iteration and returns.
    pub stopping: AtomicBool,
    pub running: AtomicBool,
    /// Whether debug mode is on: the truth of what `set_debug()` was last given.
    pub debug: AtomicBool,
    /// What `set_debug()` was last given, returned as is by `get_debug()` (asyncio does not
    /// turn it into a bool); `None` until the first `set_debug()`. Read on every future
    /// and task creation (CPython's C Future asks `loop.get_debug()`), hence kept here.
    debug_given: GilCell<Option<Py<PyAny>>>,
    /// `set_task_factory()`'s factory (asyncio's `_task_factory`); `None` for none.
    /// `create_task` reads it on every call.
    pub task_factory: GilCell<Option<Py<PyAny>>>,
    /// True while the run loop waits in the poller with the GIL released. Set and cleared
    /// by the loop thread while it holds the GIL; `call_soon_threadsafe` (which holds the
    /// GIL too) wakes the poller only when it is set, so a wake is never lost and never
    /// paid for when the loop is busy.
    pub polling: AtomicBool,
    /// Set by DNS workers when an answer is ready; swapped back by the run loop.
    pub dns_pending: Arc<AtomicBool>,
    /// The waker as DNS workers see it. `close()` empties it under the lock, so the
    /// eventfd is closed by `close()` itself even while a worker is finishing a lookup.
    pub dns_waker: Arc<Mutex<Option<Arc<Waker>>>>,
    /// Timers cancelled while in the heap, not yet reported to `state.timers`.
    pub cancelled_timers: Arc<AtomicUsize>,
    /// `slow_callback_duration` as f64 bits.
    slow_callback_duration: AtomicU64,
    /// The clock's resolution in nanoseconds: timers due within it fire now, as in asyncio.
    pub clock_resolution_ns: i64,
    /// The stamp the run loop writes once per iteration for the stall watchdog.
    pub stall: Arc<StallMonitor>,
    /// The stall watchdog thread, while a stall handler is set.
    pub watchdog: Mutex<Option<crate::stall::ActiveWatch>>,
    /// The address of the handle running now (0 between handles), for stall reports.
    /// Written and read only with the GIL held; cleared before the handle can be dropped.
    pub current_handle: AtomicUsize,
    /// Bytes and open transports, counted by the Rust transports.
    pub io: Arc<IoStats>,
    /// True when `time` is replaced (an instance attribute such as `mock.patch.object(loop,
    /// "time")`, or a subclass's method): the run loop and `call_later` then read the
    /// clock through `self.time()`, as asyncio's loop always does, so that timers follow it.
    pub python_clock: AtomicBool,
}

pub fn closed_error() -> PyErr {
    PyRuntimeError::new_err("Event loop is closed")
}

impl EventLoop {
    /// The loop's time in clock nanoseconds: `CLOCK_MONOTONIC`, or `self.time()` when
    /// `time` is replaced. Calls into Python then: no borrow of the state may be held.
    pub fn now_ns(slf: &Bound<'_, Self>) -> PyResult<i64> {
        if !slf.get().python_clock.load(Ordering::Relaxed) {
            return Ok(ferroloop_core::clock::now_ns());
        }
        let secs: f64 = slf
            .call_method0(pyo3::intern!(slf.py(), "time"))?
            .extract()?;
        Ok(ferroloop_core::clock::secs_to_ns(secs))
    }

    /// Raises `RuntimeError('Event loop is closed')` when closed.
    #[inline]
    pub fn ensure_open(&self) -> PyResult<()> {
        if self.closed.load(Ordering::Relaxed) {
            Err(closed_error())
        } else {
            Ok(())
        }
    }

    /// Appends a handle to the ready queue.
    #[inline(always)]
    pub fn push_ready(&self, py: Python<'_>, handle: Py<Handle>) {
        let mut state = self.state.borrow_mut(py);
        if state.counters.sample_soon() {
            crate::stats::stamp_queued(handle.get());
        }
        state.ready.push_back(handle);
    }

    /// Wakes the run loop if it is waiting in the poller.
    pub fn wake_if_polling(&self, py: Python<'_>) {
        if self.polling.load(Ordering::SeqCst) {
            let waker = self.state.borrow_mut(py).waker.clone();
            if let Some(waker) = waker {
                // A failed eventfd write leaves nothing to recover: the loop still wakes
                // at its next timer, and the failure cannot be reported to the caller's
                // thread meaningfully.
                let _ = waker.wake();
            }
        }
    }

    pub fn slow_callback_secs(&self) -> f64 {
        f64::from_bits(self.slow_callback_duration.load(Ordering::Relaxed))
    }

    /// Debug-mode checks asyncio makes before scheduling: the calling thread and the
    /// callback's type. Delegated to the Python layer; only called in debug mode.
    fn debug_checks(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        method: &str,
        check_thread: bool,
    ) -> PyResult<()> {
        let py = slf.py();
        if check_thread {
            slf.call_method0(pyo3::intern!(py, "_check_thread"))?;
        }
        slf.call_method1(pyo3::intern!(py, "_check_callback"), (callback, method))?;
        Ok(())
    }

    fn schedule_soon(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
        method: &str,
        threadsafe: bool,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let this = slf.get();
        this.ensure_open()?;
        if this.debug.load(Ordering::Relaxed) {
            Self::debug_checks(slf, &callback, method, !threadsafe)?;
        }
        let handle = Py::new(
            py,
            Handle::create(py, callback.unbind(), args.unbind(), context)?,
        )?;
        if this.debug.load(Ordering::Relaxed) {
            slf.call_method1(pyo3::intern!(py, "_capture_source_traceback"), (&handle,))?;
        }
        this.push_ready(py, handle.clone_ref(py));
        if threadsafe {
            this.wake_if_polling(py);
        }
        Ok(handle)
    }
}

#[pymethods]
impl EventLoop {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn py_new(
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>,
    ) -> PyResult<Self> {
        let poller = Poller::new()?;
        let waker = Waker::new()?;
        use std::os::fd::AsRawFd;
        poller.register(waker.as_raw_fd(), WAKER_TOKEN, Interest::READ)?;
        let resolution = ferroloop_core::clock::resolution_secs();
        let waker = Arc::new(waker);
        Ok(EventLoop {
            state: GilCell::new(LoopState {
                ready: VecDeque::new(),
                timers: TimerHeap::new(),
                fds: HashMap::new(),
                dns_waiters: HashMap::new(),
                next_dns_id: 0,
                poller: Some(Arc::new(poller)),
                waker: Some(Arc::clone(&waker)),
                resolver: None,
                counters: Counters::default(),
            }),
            closed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            running: AtomicBool::new(false),
            debug: AtomicBool::new(false),
            debug_given: GilCell::new(None),
            task_factory: GilCell::new(None),
            polling: AtomicBool::new(false),
            dns_pending: Arc::new(AtomicBool::new(false)),
            dns_waker: Arc::new(Mutex::new(Some(waker))),
            cancelled_timers: Arc::new(AtomicUsize::new(0)),
            slow_callback_duration: AtomicU64::new(DEFAULT_SLOW_CALLBACK_DURATION.to_bits()),
            clock_resolution_ns: (resolution * 1e9).ceil() as i64,
            stall: Arc::new(StallMonitor::new()),
            watchdog: Mutex::new(None),
            current_handle: AtomicUsize::new(0),
            io: Arc::new(IoStats::default()),
            python_clock: AtomicBool::new(false),
        })
    }

    /// The loop's clock: `time.monotonic()`.
    fn time(&self) -> f64 {
        ferroloop_core::clock::now_secs()
    }

    /// Schedules `callback(*args)` for the next iteration; returns its `Handle`.
    #[pyo3(signature = (callback, *args, context = None))]
    fn call_soon(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<Handle>> {
        Self::schedule_soon(slf, callback, args, context, "call_soon", false)
    }

    /// `call_soon` that may be called from any thread; wakes the loop if it sleeps.
    #[pyo3(signature = (callback, *args, context = None))]
    fn call_soon_threadsafe(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<Handle>> {
        Self::schedule_soon(slf, callback, args, context, "call_soon_threadsafe", true)
    }

    /// Queues `handle._run()` from any thread and wakes the loop if it sleeps: the Python
    /// layer's `call_soon_threadsafe` on 3.14+, with asyncio's own `_ThreadSafeHandle`
    /// (its `_run` enters the handle's context and holds the lock its `cancel()` takes).
    fn _call_soon_threadsafe_handle(
        slf: &Bound<'_, Self>,
        handle: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        this.ensure_open()?;
        let run = handle.getattr(pyo3::intern!(py, "_run"))?.unbind();
        let queued = Py::new(py, Handle::without_context(py, run))?;
        this.push_ready(py, queued);
        this.wake_if_polling(py);
        Ok(())
    }

    /// Schedules `callback(*args)` at loop time `when`; returns its `TimerHandle`.
    #[pyo3(signature = (when, callback, *args, context = None))]
    fn call_at(
        slf: &Bound<'_, Self>,
        when: Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        if when.is_none() {
            return Err(PyTypeError::new_err("when cannot be None"));
        }
        let when_int = when.cast_exact::<PyInt>().ok().map(|i| i.clone().unbind());
        let when: f64 = when.extract()?;
        Self::schedule_at(slf, when, when_int, callback, args, context, "call_at")
    }

    /// Schedules `callback(*args)` after `delay` seconds; returns its `TimerHandle`.
    #[pyo3(signature = (delay, callback, *args, context = None))]
    fn call_later(
        slf: &Bound<'_, Self>,
        delay: Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        if delay.is_none() {
            return Err(PyTypeError::new_err("delay must not be None"));
        }
        // `self.time() + delay` with Python's `+`, as asyncio computes it, so a delay
        // that is not a number fails with the same TypeError (and a huge int with the
        // same OverflowError) as there. A replaced `time` is asked (see `python_clock`).
        let now = if slf.get().python_clock.load(Ordering::Relaxed) {
            slf.call_method0(pyo3::intern!(slf.py(), "time"))?
        } else {
            PyFloat::new(slf.py(), ferroloop_core::clock::now_secs()).into_any()
        };
        let when: f64 = now.add(delay)?.extract()?;
        Self::schedule_at(slf, when, None, callback, args, context, "call_later")
    }

    /// Tells the loop whether `time` is replaced (see `python_clock`); the Python class
    /// calls it when the attribute is set or deleted, and for subclasses.
    fn _use_python_clock(&self, on: bool) {
        self.python_clock.store(on, Ordering::Relaxed);
    }

    /// True between `run_forever`'s start and end.
    fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    /// True once `close()` was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Raises `RuntimeError('Event loop is closed')` when the loop is closed.
    fn _check_closed(&self) -> PyResult<()> {
        self.ensure_open()
    }

    /// Asks the running loop to return after the current iteration.
    fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// What the last `set_debug()` was given (cheap: asyncio's C Future asks on every
    /// creation).
    fn get_debug(&self, py: Python<'_>) -> Py<PyAny> {
        match &*self.debug_given.borrow_mut(py) {
            Some(given) => given.clone_ref(py),
            None => PyBool::new(py, self.debug.load(Ordering::Relaxed))
                .to_owned()
                .into_any()
                .unbind(),
        }
    }

    /// Records `set_debug(given)`: debug mode is on when `enabled` (the truth of `given`).
    fn _set_debug_flag(&self, py: Python<'_>, enabled: bool, given: Py<PyAny>) {
        self.debug.store(enabled, Ordering::Relaxed);
        // The old value is dropped after the borrow ends: its `__del__` may re-enter.
        let old = self.debug_given.borrow_mut(py).replace(given);
        drop(old);
    }

    /// Callbacks taking longer than this (seconds) are logged in debug mode.
    #[getter]
    fn get_slow_callback_duration(&self) -> f64 {
        self.slow_callback_secs()
    }

    #[setter]
    fn set_slow_callback_duration(&self, value: f64) {
        self.slow_callback_duration
            .store(value.to_bits(), Ordering::Relaxed);
    }

    /// Appends an existing handle to the ready queue (signal delivery uses this).
    fn _add_callback(&self, py: Python<'_>, handle: Py<Handle>) -> PyResult<()> {
        self.ensure_open()?;
        self.push_ready(py, handle);
        Ok(())
    }

    /// Number of handles waiting to run and of scheduled timers (for tests and insight).
    fn _queue_sizes(&self, py: Python<'_>) -> (usize, usize) {
        let state = self.state.borrow_mut(py);
        (state.ready.len(), state.timers.len())
    }

    /// Marks the loop closed and releases its queues, fds, poller and waker.
    fn _close_core(&self, py: Python<'_>) {
        if self.closed.swap(true, Ordering::Relaxed) {
            return;
        }
        self.stop_watchdog(py);
        let released = {
            let mut state = self.state.borrow_mut(py);
            let ready = std::mem::take(&mut state.ready);
            let timers = state.timers.drain();
            let fds = std::mem::take(&mut state.fds);
            let waiters = std::mem::take(&mut state.dns_waiters);
            let poller = state.poller.take();
            let waker = state.waker.take();
            let resolver = state.resolver.take();
            (ready, timers, fds, waiters, poller, waker, resolver)
        };
        let dns_waker = self
            .dns_waker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(dns_waker);
        drop(released);
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for slot in [&self.debug_given, &self.task_factory] {
            if let Some(held) = slot.try_borrow_in_gc() {
                visit.call(&*held)?;
            }
        }
        let Some(state) = self.state.try_borrow_in_gc() else {
            return Ok(());
        };
        for handle in &state.ready {
            visit.call(handle)?;
        }
        for timer in state.timers.iter() {
            visit.call(timer)?;
        }
        for watch in state.fds.values() {
            visit.call(&watch.reader)?;
            visit.call(&watch.writer)?;
        }
        for future in state.dns_waiters.values() {
            visit.call(future)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        let released = self.state.try_borrow_in_gc().map(|mut state| {
            (
                std::mem::take(&mut state.ready),
                state.timers.drain(),
                std::mem::take(&mut state.fds),
                std::mem::take(&mut state.dns_waiters),
            )
        });
        drop(released);
        let held = [&self.debug_given, &self.task_factory]
            .map(|slot| slot.try_borrow_in_gc().and_then(|mut held| held.take()));
        drop(held);
    }
}

impl EventLoop {
    fn schedule_at(
        slf: &Bound<'_, Self>,
        when: f64,
        when_int: Option<Py<PyInt>>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
        method: &str,
    ) -> PyResult<Py<TimerHandle>> {
        let py = slf.py();
        let this = slf.get();
        this.ensure_open()?;
        if this.debug.load(Ordering::Relaxed) {
            Self::debug_checks(slf, &callback, method, true)?;
        }
        let handle = Handle::create(py, callback.unbind(), args.unbind(), context)?;
        let timer = TimerHandle::create(
            py,
            handle,
            when,
            when_int,
            Arc::clone(&this.cancelled_timers),
        )?;
        if this.debug.load(Ordering::Relaxed) {
            slf.call_method1(pyo3::intern!(py, "_capture_source_traceback"), (&timer,))?;
        }
        let deadline = timer.get().deadline_ns;
        let mut state = this.state.borrow_mut(py);
        state.counters.timers_scheduled += 1;
        state.timers.push(deadline, timer.clone_ref(py));
        drop(state);
        Ok(timer)
    }
}
