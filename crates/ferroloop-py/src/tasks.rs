//! `loop.create_task` without a Python frame in the common case.
//!
//! Every ASGI request and every `asyncio.create_task` goes through here. With no task
//! factory and no extra keywords, the loop calls `asyncio.tasks.Task(coro, loop=self,
//! name=..., context=...)` itself; anything else goes to the Python implementation
//! (`_create_task_slow` in `ferroloop._tasks`), which handles factories and keywords.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule};

use crate::event_loop::EventLoop;

#[pymethods]
impl EventLoop {
    /// Wraps `coro` in a Task (or the task factory's result) scheduled on this loop.
    #[pyo3(signature = (coro, *, name = None, context = None, **kwargs))]
    fn create_task(
        slf: &Bound<'_, Self>,
        coro: &Bound<'_, PyAny>,
        name: Option<&Bound<'_, PyAny>>,
        context: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let plain = kwargs.map_or(true, |k| k.is_empty())
            && slf.getattr(intern!(py, "_task_factory"))?.is_none();
        if !plain {
            let all = PyDict::new(py);
            if let Some(kwargs) = kwargs {
                all.update(kwargs.as_mapping())?;
            }
            all.set_item(intern!(py, "name"), name)?;
            all.set_item(intern!(py, "context"), context)?;
            return Ok(slf
                .call_method(intern!(py, "_create_task_slow"), (coro,), Some(&all))?
                .unbind());
        }
        slf.get().ensure_open()?;
        // Looked up on every call, as asyncio does (`tasks.Task` may be replaced).
        static TASKS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
        let task_type = TASKS
            .get_or_try_init(py, || Ok::<_, PyErr>(py.import("asyncio.tasks")?.unbind()))?
            .bind(py)
            .getattr(intern!(py, "Task"))?;
        let options = PyDict::new(py);
        options.set_item(intern!(py, "loop"), slf)?;
        if let Some(name) = name.filter(|n| !n.is_none()) {
            options.set_item(intern!(py, "name"), name)?;
        }
        // Python 3.10's Task has no `context`; it is passed only when given.
        if let Some(context) = context.filter(|c| !c.is_none()) {
            options.set_item(intern!(py, "context"), context)?;
        }
        // In debug mode the Task's `_source_traceback` ends with the caller's frame: no
        // Python frame of create_task's own is on the stack to drop, unlike asyncio's.
        Ok(task_type.call((coro,), Some(&options))?.unbind())
    }
}
