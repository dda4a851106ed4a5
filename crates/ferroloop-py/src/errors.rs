//! OS errors as Python raises them.

use pyo3::exceptions::PyOSError;
use pyo3::PyErr;

/// `OSError(errno, strerror)`, which Python turns into the matching subclass
/// (`PermissionError`, `ConnectionResetError`, ...) with `.errno` set, as the `socket`
/// and `select` modules do.
pub fn os_error(err: std::io::Error) -> PyErr {
    match err.raw_os_error() {
        Some(code) => {
            // SAFETY: strerror returns a pointer to a static or thread-local string
            // that stays valid until the next strerror call on this thread; it is
            // copied immediately.
            let message = unsafe { std::ffi::CStr::from_ptr(libc::strerror(code)) }
                .to_string_lossy()
                .into_owned();
            PyOSError::new_err((code, message))
        }
        None => PyOSError::new_err(err.to_string()),
    }
}
