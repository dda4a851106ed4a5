//! Calling a Python callable inside a `contextvars.Context`.
//!
//! asyncio runs every callback as `context.run(callback, *args)`. Going through
//! `Context.run` costs an attribute lookup and a vectorcall per callback; entering the
//! context directly with `PyContext_Enter`/`PyContext_Exit` does the same work without them.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// `PyContext_CopyCurrent()`: a copy of the calling thread's current context.
pub fn copy_current(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // SAFETY: the GIL is held (we have `py`); the call returns a new reference or NULL
    // with an exception set, which `from_owned_ptr_or_err` turns into an error.
    unsafe { Ok(Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent())?.unbind()) }
}

/// Calls `callback(*args)` with `context` entered, as `context.run(callback, *args)` does,
/// including its `RuntimeError` when the context is already entered.
pub fn run_in_context(
    py: Python<'_>,
    context: &Py<PyAny>,
    callback: &Py<PyAny>,
    args: &Py<PyTuple>,
) -> PyResult<()> {
    let ctx = context.as_ptr();
    // SAFETY: `ctx` is a live object kept alive by `context` for the whole call. A
    // non-Context object makes PyContext_Enter fail with a TypeError, not crash.
    if unsafe { ffi::PyContext_Enter(ctx) } != 0 {
        return Err(PyErr::fetch(py));
    }
    let result = call(py, callback, args);
    // SAFETY: the same context was entered just above on this thread, so exiting it is
    // valid even if the callback raised.
    if unsafe { ffi::PyContext_Exit(ctx) } != 0 {
        return Err(PyErr::fetch(py));
    }
    result
}

/// Calls `callback(*args)` in the current context (inlined: it runs once per callback).
#[inline(always)]
pub fn call(py: Python<'_>, callback: &Py<PyAny>, args: &Py<PyTuple>) -> PyResult<()> {
    let args = args.bind(py);
    // SAFETY: the GIL is held; callable and arguments are live, owned references; each call
    // returns a new reference or NULL with an exception set.
    let result = unsafe {
        match args.len() {
            0 => ffi::PyObject_CallNoArgs(callback.as_ptr()),
            1 => ffi::PyObject_CallOneArg(
                callback.as_ptr(),
                args.get_borrowed_item_unchecked(0).as_ptr(),
            ),
            _ => ffi::PyObject_Call(callback.as_ptr(), args.as_ptr(), std::ptr::null_mut()),
        }
    };
    // SAFETY: `result` is an owned reference or NULL, as above.
    unsafe { Bound::from_owned_ptr_or_err(py, result) }.map(drop)
}
