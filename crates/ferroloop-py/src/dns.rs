//! `getaddrinfo`/`getnameinfo` on the core's worker pool, answered through futures.
//!
//! The Python layer validates and encodes the arguments, creates a future and calls
//! `_getaddrinfo_submit`/`_getnameinfo_submit`; a worker resolves without the GIL, sets
//! `dns_pending` and wakes the loop; the run loop then calls `deliver_answers`, which
//! converts each answer to what the `socket` module would return and resolves its future
//! (unless the caller cancelled it meanwhile).

use std::ffi::CString;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ferroloop_core::dns::{
    AddrInfo, AddrInfoQuery, NameInfoQuery, Request, ResolveError, Resolver, Response, SockAddr,
};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::errors::os_error;
use crate::event_loop::EventLoop;

/// How many resolver threads one loop may use at most.
const MAX_RESOLVER_THREADS: usize = 8;

fn cstring(value: Option<&[u8]>) -> PyResult<Option<CString>> {
    value
        .map(|v| {
            CString::new(v)
                .map_err(|_| pyo3::exceptions::PyValueError::new_err("embedded null character"))
        })
        .transpose()
}

impl EventLoop {
    fn submit(&self, py: Python<'_>, future: Py<PyAny>, request: Request) -> PyResult<()> {
        self.ensure_open()?;
        let mut state = self.state.borrow_mut(py);
        let state = &mut *state;
        if state.resolver.is_none() {
            let pending = Arc::clone(&self.dns_pending);
            let waker_slot = Arc::clone(&self.dns_waker);
            state.resolver = Some(Resolver::new(
                MAX_RESOLVER_THREADS,
                Arc::new(move || {
                    pending.store(true, Ordering::Relaxed);
                    // Under the slot's lock: close() empties the slot under the same lock,
                    // so after it returns no worker can still hold (or write) the eventfd.
                    let slot = waker_slot.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(waker) = slot.as_ref() {
                        let _ = waker.wake();
                    }
                }),
            ));
        }
        let id = state.next_dns_id;
        state.next_dns_id += 1;
        state.dns_waiters.insert(id, future);
        if let Some(resolver) = &state.resolver {
            resolver.submit(id, request);
        }
        Ok(())
    }
}

#[pymethods]
impl EventLoop {
    /// Starts `getaddrinfo(host, port, family, type, proto, flags)` on the worker pool;
    /// `future` receives the list of raw rows or the exception.
    #[allow(clippy::too_many_arguments)]
    fn _getaddrinfo_submit(
        &self,
        py: Python<'_>,
        future: Py<PyAny>,
        host: Option<&[u8]>,
        port: Option<&[u8]>,
        family: i32,
        socktype: i32,
        proto: i32,
        flags: i32,
    ) -> PyResult<()> {
        let query = AddrInfoQuery {
            host: cstring(host)?,
            service: cstring(port)?,
            family,
            socktype,
            protocol: proto,
            flags,
        };
        self.submit(py, future, Request::AddrInfo(query))
    }

    /// Starts `getnameinfo((host, port, flowinfo, scope_id), flags)` on the worker pool.
    #[allow(clippy::too_many_arguments)]
    fn _getnameinfo_submit(
        &self,
        py: Python<'_>,
        future: Py<PyAny>,
        host: &str,
        port: u16,
        flowinfo: u32,
        scope_id: u32,
        flags: i32,
    ) -> PyResult<()> {
        let query = NameInfoQuery {
            host: cstring(Some(host.as_bytes()))?.unwrap_or_default(),
            port,
            flowinfo,
            scope_id,
            flags,
        };
        self.submit(py, future, Request::NameInfo(query))
    }
}

/// Resolves the futures of every finished lookup. Called by the run loop.
pub fn deliver_answers(slf: &Bound<'_, EventLoop>) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();
    let answers: Vec<(Py<PyAny>, Response)> = {
        let mut state = this.state.borrow_mut(py);
        let completed = match &state.resolver {
            Some(resolver) => resolver.take_completed(),
            None => return Ok(()),
        };
        completed
            .into_iter()
            .filter_map(|(id, response)| state.dns_waiters.remove(&id).map(|f| (f, response)))
            .collect()
    };
    for (future, response) in answers {
        let future = future.bind(py);
        if future
            .call_method0(pyo3::intern!(py, "done"))?
            .is_truthy()?
        {
            continue;
        }
        match response_to_python(py, response) {
            Ok(value) => future.call_method1(pyo3::intern!(py, "set_result"), (value,))?,
            Err(err) => {
                future.call_method1(pyo3::intern!(py, "set_exception"), (err.into_value(py),))?
            }
        };
    }
    Ok(())
}

fn response_to_python(py: Python<'_>, response: Response) -> PyResult<Py<PyAny>> {
    match response {
        Response::AddrInfo(Ok(rows)) => {
            let rows = rows
                .into_iter()
                .map(|row| addrinfo_row(py, row))
                .collect::<PyResult<Vec<_>>>()?;
            Ok(PyList::new(py, rows)?.into_any().unbind())
        }
        Response::NameInfo(Ok((host, service))) => {
            Ok((host, service).into_pyobject(py)?.into_any().unbind())
        }
        Response::AddrInfo(Err(err)) | Response::NameInfo(Err(err)) => Err(resolve_error(py, err)),
    }
}

fn addrinfo_row(py: Python<'_>, row: AddrInfo) -> PyResult<Bound<'_, PyTuple>> {
    let addr = match row.addr {
        SockAddr::V4 { host, port } => (host, port).into_pyobject(py)?.into_any(),
        SockAddr::V6 {
            host,
            port,
            flowinfo,
            scope_id,
        } => (host, port, flowinfo, scope_id)
            .into_pyobject(py)?
            .into_any(),
        // A row without an address: the socket module gives None.
        SockAddr::Other { family: 0, data } if data.is_empty() => py.None().into_bound(py),
        SockAddr::Other { family, data } => (family, PyBytes::new(py, &data))
            .into_pyobject(py)?
            .into_any(),
    };
    (row.family, row.socktype, row.protocol, row.canonname, addr).into_pyobject(py)
}

fn resolve_error(py: Python<'_>, err: ResolveError) -> PyErr {
    match err {
        ResolveError::Gai { code, message } => {
            match py.import("socket").and_then(|m| m.getattr("gaierror")) {
                Ok(gaierror) => match gaierror.call1((code, message)) {
                    Ok(exc) => PyErr::from_value(exc),
                    Err(e) => e,
                },
                Err(e) => e,
            }
        }
        ResolveError::Os(err) => os_error(err),
        ResolveError::Invalid(message) => PyOSError::new_err(message),
    }
}
