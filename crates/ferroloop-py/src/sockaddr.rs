//! Socket addresses between Python and C, formatted and parsed exactly as CPython's
//! `socket` module does (`makesockaddr`, `getsockaddrarg`), for the Rust fast paths of
//! `sock_sendto`, `sock_recvfrom` and the datagram transport.

use std::ffi::CStr;
use std::io;
use std::mem::size_of;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

use crate::errors::os_error;

extern "C" {
    /// POSIX `inet_ntop` from the C library (the `libc` crate does not declare it); the
    /// socket module formats addresses with it, so ours match byte for byte.
    fn inet_ntop(
        af: libc::c_int,
        src: *const libc::c_void,
        dst: *mut libc::c_char,
        size: libc::socklen_t,
    ) -> *const libc::c_char;

    /// POSIX `inet_pton`, the test the socket module makes for a numeric host.
    fn inet_pton(af: libc::c_int, src: *const libc::c_char, dst: *mut libc::c_void) -> libc::c_int;
}

/// A socket address built in Rust: `len` bytes of `storage`.
pub(crate) struct SockAddr {
    pub(crate) storage: libc::sockaddr_storage,
    pub(crate) len: libc::socklen_t,
}

impl SockAddr {
    /// The address as the `sockaddr` pointer the socket calls take.
    pub(crate) fn as_ptr(&self) -> *const libc::sockaddr {
        (&self.storage as *const libc::sockaddr_storage).cast()
    }
}

/// `address` as a sockaddr of `family` when it is a numeric (host, port[, flowinfo[,
/// scope_id]]) tuple whose values the socket module would accept unchanged; `None`
/// otherwise (host names, special names, bad values: the socket module handles them).
pub(crate) fn numeric_sockaddr(family: i32, address: &Bound<'_, PyAny>) -> Option<SockAddr> {
    let tuple = address.cast::<PyTuple>().ok()?;
    let items: Vec<Bound<'_, PyAny>> = tuple.iter().collect();
    let (host, port) = match (family, items.len()) {
        (libc::AF_INET, 2) | (libc::AF_INET6, 2..=4) => (&items[0], &items[1]),
        _ => return None,
    };
    let host = host.cast::<PyString>().ok()?.to_str().ok()?;
    let host = std::ffi::CString::new(host).ok()?;
    if !port.is_exact_instance_of::<pyo3::types::PyInt>() {
        return None;
    }
    let port: u16 = port.extract().ok()?;
    // SAFETY: an all-zero sockaddr_storage is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = if family == libc::AF_INET {
        // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
        let addr = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_port = port.to_be();
        if !pton(libc::AF_INET, &host, &mut addr.sin_addr) {
            return None;
        }
        std::mem::size_of::<libc::sockaddr_in>()
    } else {
        let small = |index: usize| -> Option<u32> {
            match items.get(index) {
                None => Some(0),
                Some(value) if value.is_exact_instance_of::<pyo3::types::PyInt>() => {
                    value.extract().ok()
                }
                Some(_) => None,
            }
        };
        let flowinfo = small(2).filter(|&f| f <= 0xfffff)?;
        let scope_id = small(3)?;
        // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in6.
        let addr = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
        addr.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        addr.sin6_port = port.to_be();
        addr.sin6_flowinfo = flowinfo.to_be();
        addr.sin6_scope_id = scope_id;
        if !pton(libc::AF_INET6, &host, &mut addr.sin6_addr) {
            return None;
        }
        std::mem::size_of::<libc::sockaddr_in6>()
    };
    Some(SockAddr {
        storage,
        len: len as libc::socklen_t,
    })
}

/// The socket module's form of a received address (`makesockaddr`).
pub(crate) fn sockaddr_to_py(
    py: Python<'_>,
    storage: &libc::sockaddr_storage,
    len: usize,
) -> PyResult<Py<PyAny>> {
    if len == 0 {
        return Ok(py.None());
    }
    let family = storage.ss_family as i32;
    if family == libc::AF_INET && len >= size_of::<libc::sockaddr_in>() {
        // SAFETY: the kernel wrote a sockaddr_in (family and length checked).
        let sin = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
        let host = ntop(family, &sin.sin_addr as *const _ as *const libc::c_void)?;
        return Ok((host, u16::from_be(sin.sin_port) as i32)
            .into_pyobject(py)?
            .into_any()
            .unbind());
    }
    if family == libc::AF_INET6 && len >= size_of::<libc::sockaddr_in6>() {
        // SAFETY: the kernel wrote a sockaddr_in6 (family and length checked).
        let sin6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
        let host = ntop(family, &sin6.sin6_addr as *const _ as *const libc::c_void)?;
        return Ok((
            host,
            u16::from_be(sin6.sin6_port) as i32,
            u32::from_be(sin6.sin6_flowinfo),
            sin6.sin6_scope_id,
        )
            .into_pyobject(py)?
            .into_any()
            .unbind());
    }
    if family == libc::AF_UNIX {
        // SAFETY: the kernel wrote a sockaddr_un (family checked; sockaddr_storage is
        // large enough, and only the first `len` bytes are read below).
        let sun = unsafe { &*(storage as *const _ as *const libc::sockaddr_un) };
        let offset = std::mem::offset_of!(libc::sockaddr_un, sun_path);
        let path_len = len.saturating_sub(offset).min(sun.sun_path.len());
        // SAFETY: sun_path is an array of c_char; reinterpreting as u8 is sound.
        let path: &[u8] =
            unsafe { std::slice::from_raw_parts(sun.sun_path.as_ptr().cast(), path_len) };
        if path_len > 0 && path[0] == 0 {
            // The Linux abstract namespace: bytes, leading NUL included.
            return Ok(PyBytes::new(py, path).into_any().unbind());
        }
        let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
        // SAFETY: `path[..end]` is valid for reads; the call copies it into a new str.
        let text = unsafe {
            ffi::PyUnicode_DecodeFSDefaultAndSize(path.as_ptr().cast(), end as ffi::Py_ssize_t)
        };
        // SAFETY: a new reference or NULL with an exception set.
        return unsafe { Bound::from_owned_ptr_or_err(py, text) }.map(Bound::unbind);
    }
    // Any other family: `(family, sa_data)` as the socket module's fallback.
    // SAFETY: every sockaddr starts with the generic header; storage is large enough.
    let generic = unsafe { &*(storage as *const _ as *const libc::sockaddr) };
    // SAFETY: sa_data is an array of c_char; reinterpreting as u8 is sound.
    let data: &[u8] = unsafe {
        std::slice::from_raw_parts(generic.sa_data.as_ptr().cast(), generic.sa_data.len())
    };
    Ok((family, PyBytes::new(py, data))
        .into_pyobject(py)?
        .into_any()
        .unbind())
}

/// `inet_pton(family, host, dst)`: true when `host` is a numeric address of `family`,
/// written into `dst` (an `in_addr` for AF_INET, an `in6_addr` for AF_INET6).
fn pton<T>(family: libc::c_int, host: &CStr, dst: &mut T) -> bool {
    // SAFETY: `host` is NUL-terminated and `dst` is a writable address of the size
    // `family` asks for (the two callers pass in_addr with AF_INET, in6_addr with AF_INET6).
    unsafe { inet_pton(family, host.as_ptr(), (dst as *mut T).cast()) == 1 }
}

/// `inet_ntop`, as the socket module formats addresses.
fn ntop(family: libc::c_int, addr: *const libc::c_void) -> PyResult<String> {
    let mut text = [0 as libc::c_char; 64];
    // SAFETY: `addr` points at an in_addr/in6_addr as `family` says; `text` is larger
    // than INET6_ADDRSTRLEN (46) and inet_ntop NUL-terminates what it writes.
    let ok = unsafe { inet_ntop(family, addr, text.as_mut_ptr(), text.len() as _) };
    if ok.is_null() {
        return Err(os_error(io::Error::last_os_error()));
    }
    // SAFETY: inet_ntop wrote a NUL-terminated string into `text`.
    Ok(unsafe { CStr::from_ptr(text.as_ptr()) }
        .to_string_lossy()
        .into_owned())
}
