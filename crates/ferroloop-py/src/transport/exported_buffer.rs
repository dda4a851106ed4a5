//! `ExportedBuffer`: the contiguous bytes a Python object exports through the buffer
//! protocol (`bytes`, `bytearray`, `memoryview`, a protocol's `get_buffer()` result),
//! released when dropped. Every transport that reads into or sends from such an object
//! without copying it first goes through here.

use std::marker::PhantomData;
use std::mem::MaybeUninit;

use pyo3::ffi;
use pyo3::prelude::*;

/// A buffer-protocol view, released on drop. It lives only inside one call made with the
/// GIL held (it is not `Send`). The flags asked for (`PyBUF_SIMPLE`, `PyBUF_WRITABLE`)
/// request no shape or strides, so the view holds no pointer into itself and may move.
pub(crate) struct ExportedBuffer {
    view: ffi::Py_buffer,
    _not_send: PhantomData<*const ()>,
}

impl ExportedBuffer {
    /// A read-only view of `obj`'s bytes.
    pub(crate) fn readable(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        Self::export(obj, ffi::PyBUF_SIMPLE)
    }

    /// A writable view of `obj`'s bytes; fails (as the exporter says) for read-only objects.
    pub(crate) fn writable(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        Self::export(obj, ffi::PyBUF_WRITABLE)
    }

    fn export(obj: &Bound<'_, PyAny>, flags: std::os::raw::c_int) -> PyResult<Self> {
        let mut view = MaybeUninit::<ffi::Py_buffer>::uninit();
        // SAFETY: `obj` is a live object; on success the view is initialised and released
        // exactly once by `Drop`.
        if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), flags) } != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(ExportedBuffer {
            // SAFETY: PyObject_GetBuffer succeeded, so the view is initialised.
            view: unsafe { view.assume_init() },
            _not_send: PhantomData,
        })
    }

    /// The exported bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        let len = self.view.len.max(0) as usize;
        if len == 0 || self.view.buf.is_null() {
            return &[];
        }
        // SAFETY: a view without shape or strides is `len` contiguous bytes at `buf`,
        // valid until it is released (which needs `self`, so not before this borrow ends).
        unsafe { std::slice::from_raw_parts(self.view.buf as *const u8, len) }
    }

    /// The exported bytes, to write into. Panics for a read-only view (a bug: writable
    /// views come from `writable`, which never returns one).
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        assert!(self.view.readonly == 0, "writing into a read-only buffer");
        let len = self.view.len.max(0) as usize;
        if len == 0 || self.view.buf.is_null() {
            return &mut [];
        }
        // SAFETY: as `as_slice`, and the exporter allows writing (readonly == 0); the
        // `&mut self` borrow makes this the only access through the view.
        unsafe { std::slice::from_raw_parts_mut(self.view.buf as *mut u8, len) }
    }
}

impl Drop for ExportedBuffer {
    fn drop(&mut self) {
        // SAFETY: the view was filled by PyObject_GetBuffer and is released once, inside
        // the GIL-holding call that made it (the value is not `Send`).
        unsafe { ffi::PyBuffer_Release(&mut self.view) };
    }
}
