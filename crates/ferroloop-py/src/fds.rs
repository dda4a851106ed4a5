//! `add_reader`/`add_writer`/`remove_reader`/`remove_writer`: callbacks on fd readiness.
//!
//! Level-triggered (see `ferroloop_core::poll`): a reader is called on every iteration
//! while its fd stays readable. One poller registration per fd carries both directions;
//! changing either re-registers the union.

use std::os::fd::RawFd;

use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyTuple};

use crate::errors::os_error;
use crate::event_loop::{EventLoop, FdWatch, LoopState};
use crate::handle::Handle;

#[derive(Clone, Copy)]
enum Direction {
    Read,
    Write,
}

/// What a file object given to `add_*`/`remove_*` names, as asyncio's selectors see it.
enum Target {
    /// A watchable fd.
    Fd(RawFd),
    /// An int too large for a C int: never watched (`remove_*` answers False, `add_*`
    /// raises the `OverflowError` epoll's registration raises).
    TooLarge,
}

/// Resolves an int or an object with `fileno()` with the errors asyncio's selectors raise.
///
/// A closed socket's `fileno()` is -1, but asyncio's selectors still find the
/// registration made with that same object (anyio removes its readers that way after
/// closing a socket): the watch made with it is looked up by identity.
fn resolve(event_loop: &EventLoop, obj: &Bound<'_, PyAny>) -> PyResult<Target> {
    let py = obj.py();
    let is_int = obj.is_instance_of::<PyInt>();
    let number = if is_int {
        obj.clone()
    } else {
        let invalid = || {
            let repr = obj.repr().map(|r| r.to_string()).unwrap_or_default();
            PyValueError::new_err(format!("Invalid file object: {repr}"))
        };
        let fileno = obj.call_method0("fileno").map_err(|_| invalid())?;
        // `int(obj.fileno())`, as asyncio converts it.
        py.get_type::<PyInt>()
            .call1((fileno,))
            .map_err(|_| invalid())?
    };
    if number.lt(0)? {
        let identity = obj.as_ptr() as usize;
        let registered = if is_int {
            None
        } else {
            let state = event_loop.state.borrow_mut(py);
            state
                .fds
                .iter()
                .find(|(_, watch)| watch.fileobj == identity)
                .map(|(fd, _)| *fd)
        };
        return match registered {
            Some(fd) => Ok(Target::Fd(fd)),
            None => Err(PyValueError::new_err(format!(
                "Invalid file descriptor: {number}"
            ))),
        };
    }
    Ok(number
        .extract::<RawFd>()
        .map_or(Target::TooLarge, Target::Fd))
}

/// Re-registers `fd` with the poller for the directions still watched, or forgets it.
/// Errors are ignored: they mean the fd was closed, which already removed it from epoll.
pub fn apply_interest(state: &mut LoopState, fd: RawFd) {
    let interest = state
        .fds
        .get(&fd)
        .map(FdWatch::interest)
        .unwrap_or_default();
    if interest.is_empty() {
        state.fds.remove(&fd);
    }
    if let Some(poller) = &state.poller {
        let _ = poller.register(fd, fd as u64, interest);
    }
}

fn slot(watch: &mut FdWatch, direction: Direction) -> &mut Option<Py<Handle>> {
    match direction {
        Direction::Read => &mut watch.reader,
        Direction::Write => &mut watch.writer,
    }
}

impl EventLoop {
    fn add_watch(
        &self,
        py: Python<'_>,
        fd: &Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
        direction: Direction,
    ) -> PyResult<()> {
        self.ensure_open()?;
        let identity = fd.as_ptr() as usize;
        let target = resolve(self, fd)?;
        let Target::Fd(fd) = target else {
            return Err(PyOverflowError::new_err(
                "Python int too large to convert to C int",
            ));
        };
        let handle = Py::new(
            py,
            Handle::create(py, callback.unbind(), args.unbind(), context)?,
        )?;
        let outcome = {
            let mut state = self.state.borrow_mut(py);
            let state = &mut *state;
            let watch = state.fds.entry(fd).or_default();
            watch.fileobj = identity;
            let previous = slot(watch, direction).replace(handle);
            let interest = watch.interest();
            let registered = match &state.poller {
                Some(poller) => poller.register(fd, fd as u64, interest),
                None => Ok(()),
            };
            match registered {
                Ok(()) => Ok(previous),
                Err(err) => {
                    // Leave the watch as it was before the call.
                    let watch = state.fds.get_mut(&fd).expect("entry created above");
                    let ours = std::mem::replace(slot(watch, direction), previous);
                    if watch.interest().is_empty() {
                        state.fds.remove(&fd);
                    }
                    Err((err, ours))
                }
            }
        };
        let replaced = outcome.map_err(|(err, _ours)| os_error(err))?;
        if let Some(previous) = replaced {
            previous.call_method0(py, "cancel")?;
        }
        Ok(())
    }

    fn remove_watch(
        &self,
        py: Python<'_>,
        fd: &Bound<'_, PyAny>,
        direction: Direction,
    ) -> PyResult<bool> {
        if self.is_closed() {
            return Ok(false);
        }
        let Target::Fd(fd) = resolve(self, fd)? else {
            return Ok(false);
        };
        let removed = {
            let mut state = self.state.borrow_mut(py);
            let state = &mut *state;
            let Some(watch) = state.fds.get_mut(&fd) else {
                return Ok(false);
            };
            let removed = slot(watch, direction).take();
            if removed.is_some() {
                apply_interest(state, fd);
            }
            removed
        };
        match removed {
            Some(handle) => {
                handle.call_method0(py, "cancel")?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

#[pymethods]
impl EventLoop {
    /// Calls `callback(*args)` whenever `fd` is readable; replaces an earlier reader.
    /// `context` (for transports; the Python layer's public `add_reader` has none, as
    /// asyncio's) is the context the callback runs in, else a copy of the current one.
    #[pyo3(signature = (fd, callback, *args, context = None))]
    fn add_reader(
        &self,
        py: Python<'_>,
        fd: &Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        self.add_watch(py, fd, callback, args, context, Direction::Read)
    }

    /// Calls `callback(*args)` whenever `fd` is writable; replaces an earlier writer.
    /// `context` as for `add_reader`.
    #[pyo3(signature = (fd, callback, *args, context = None))]
    fn add_writer(
        &self,
        py: Python<'_>,
        fd: &Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        self.add_watch(py, fd, callback, args, context, Direction::Write)
    }

    /// Stops watching `fd` for reading; True if a reader was registered.
    fn remove_reader(&self, py: Python<'_>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.remove_watch(py, fd, Direction::Read)
    }

    /// Stops watching `fd` for writing; True if a writer was registered.
    fn remove_writer(&self, py: Python<'_>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.remove_watch(py, fd, Direction::Write)
    }
}
