//! `loop.create_future` and `loop.create_task` without a Python frame in the common case.
//!
//! Every ASGI request and every `asyncio.create_task` goes through here, and a future is
//! made each time a stream or a lock waits (`StreamReader._wait_for_data`, `drain`). With no task
//! factory the loop calls `asyncio.tasks.Task(coro, loop=self, **kwargs)` itself; a task
//! factory goes to the Python implementation (`_create_task_slow` in `ferroloop._tasks`).
//!
//! The keywords follow the running Python's `BaseEventLoop.create_task`: up to 3.13 it
//! takes only `name` and `context`; from 3.14 on it passes any keyword (`eager_start`, or
//! whatever a task factory understands) through unchanged.

use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule, PyString};

use crate::event_loop::EventLoop;

/// `module.<name>`, looked up on every call as asyncio does (tests and libraries replace
/// `asyncio.futures.Future` or `asyncio.tasks.Task`); the module itself is imported once.
fn module_attribute<'py>(
    py: Python<'py>,
    module: &'static PyOnceLock<Py<PyModule>>,
    module_name: &str,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    module
        .get_or_try_init(py, || Ok::<_, PyErr>(py.import(module_name)?.unbind()))?
        .bind(py)
        .getattr(name)
}

/// Whether `create_task` passes every keyword through (Python 3.14+).
fn passes_any_keyword(py: Python<'_>) -> bool {
    static ANY_KEYWORD: PyOnceLock<bool> = PyOnceLock::new();
    *ANY_KEYWORD.get_or_init(py, || py.version_info() >= (3, 14))
}

/// Before 3.14, `create_task` accepts only `name` and `context`, like asyncio's.
fn check_keywords(kwargs: &Bound<'_, PyDict>) -> PyResult<()> {
    for key in kwargs.keys() {
        let key = key.cast_into::<PyString>()?;
        let key = key.to_cow()?;
        if key != "name" && key != "context" {
            return Err(PyTypeError::new_err(format!(
                "create_task() got an unexpected keyword argument '{key}'"
            )));
        }
    }
    Ok(())
}

#[pymethods]
impl EventLoop {
    /// A new `asyncio.Future` attached to this loop.
    fn create_future(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        static FUTURES: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
        let future_type = module_attribute(py, &FUTURES, "asyncio.futures", intern!(py, "Future"))?;
        let options = PyDict::new(py);
        options.set_item(intern!(py, "loop"), slf)?;
        Ok(future_type.call((), Some(&options))?.unbind())
    }

    /// The task factory (asyncio's attribute of the same name), or None.
    #[getter(_task_factory)]
    fn task_factory(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.task_factory
            .borrow_mut(py)
            .as_ref()
            .map(|f| f.clone_ref(py))
    }

    /// Sets the task factory without `set_task_factory()`'s check, as assigning asyncio's
    /// attribute does (None: `asyncio.Task`).
    #[setter(_task_factory)]
    fn set_task_factory_attr(&self, py: Python<'_>, factory: Py<PyAny>) {
        let factory = (!factory.is_none(py)).then_some(factory);
        // The old factory is dropped after the borrow ends: its `__del__` may re-enter.
        let old = std::mem::replace(&mut *self.task_factory.borrow_mut(py), factory);
        drop(old);
    }

    /// Wraps `coro` in a Task (or the task factory's result) scheduled on this loop.
    #[pyo3(signature = (coro, **kwargs))]
    fn create_task(
        slf: &Bound<'_, Self>,
        coro: &Bound<'_, PyAny>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        if let Some(kwargs) = kwargs.filter(|_| !passes_any_keyword(py)) {
            check_keywords(kwargs)?;
        }
        if slf.get().task_factory.borrow_mut(py).is_some() {
            return Ok(slf
                .call_method(intern!(py, "_create_task_slow"), (coro,), kwargs)?
                .unbind());
        }
        slf.get().ensure_open()?;
        static TASKS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
        let task_type = module_attribute(py, &TASKS, "asyncio.tasks", intern!(py, "Task"))?;
        let options = match kwargs {
            Some(kwargs) => kwargs.copy()?,
            None => PyDict::new(py),
        };
        options.set_item(intern!(py, "loop"), slf)?;
        // In debug mode the Task's `_source_traceback` ends with the caller's frame: no
        // Python frame of create_task's own is on the stack to drop, unlike asyncio's.
        Ok(task_type.call((coro,), Some(&options))?.unbind())
    }
}
