//! `BytesBuilder`: a `bytes` object filled in place and then cut to what was written, so
//! data produced by C code (a decrypt) reaches Python without a second copy.

use std::os::raw::c_int;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

extern "C" {
    /// CPython's `_PyBytes_Resize` (exported by every supported version; pyo3-ffi keeps
    /// its declaration private): resizes a `bytes` that nobody else references yet.
    fn _PyBytes_Resize(bytes: *mut *mut ffi::PyObject, newsize: ffi::Py_ssize_t) -> c_int;
}

/// A new, not yet shared `bytes` of `capacity` uninitialised bytes.
pub(crate) struct BytesBuilder {
    /// The only reference to the object; null once handed out by `finish`.
    obj: *mut ffi::PyObject,
    capacity: usize,
}

impl BytesBuilder {
    /// Allocates the object (a `MemoryError` when that fails).
    pub(crate) fn new(py: Python<'_>, capacity: usize) -> PyResult<Self> {
        // SAFETY: a NULL source asks CPython for uninitialised storage of that size.
        let obj = unsafe { ffi::PyBytes_FromStringAndSize(std::ptr::null(), capacity as isize) };
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        Ok(BytesBuilder { obj, capacity })
    }

    /// The object's storage, to be written before `finish`.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `obj` is a live bytes object of `capacity` bytes that only this builder
        // references, so nobody can observe the writes; the storage lives as long as it.
        unsafe {
            std::slice::from_raw_parts_mut(ffi::PyBytes_AsString(self.obj).cast(), self.capacity)
        }
    }

    /// The object holding the first `len` bytes written, or None when `len` is 0.
    pub(crate) fn finish(
        mut self,
        py: Python<'_>,
        len: usize,
    ) -> PyResult<Option<Bound<'_, PyBytes>>> {
        if len == 0 {
            return Ok(None);
        }
        let mut obj = std::mem::replace(&mut self.obj, std::ptr::null_mut());
        if len < self.capacity {
            // SAFETY: `obj` is referenced only here; on failure CPython has released it
            // and set `obj` to NULL with an exception set.
            if unsafe { _PyBytes_Resize(&mut obj, len.min(self.capacity) as isize) } != 0 {
                return Err(PyErr::fetch(py));
            }
        }
        // SAFETY: `obj` is an owned reference to a bytes object.
        Ok(Some(unsafe {
            Bound::from_owned_ptr(py, obj).cast_into_unchecked()
        }))
    }
}

impl Drop for BytesBuilder {
    fn drop(&mut self) {
        if !self.obj.is_null() {
            // SAFETY: the builder owns this reference; it exists only while the GIL is held
            // (it is created from a `Python` token and is not `Send`).
            unsafe { ffi::Py_DECREF(self.obj) };
        }
    }
}
