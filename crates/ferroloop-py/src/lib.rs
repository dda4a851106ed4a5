//! `ferroloop._core`: the Rust half of the ferroloop event loop.
//!
//! The Python package `ferroloop` builds its `Loop` class on [`event_loop::EventLoop`].
//! This crate owns everything on the hot path: scheduling, timers, the run loop, fd
//! readiness and DNS delivery; the pure-Rust machinery lives in `ferroloop-core`.

mod context;
mod dns;
mod errors;
mod event_loop;
mod fds;
mod framing;
mod gil_cell;
mod handle;
mod run;
mod sock_ops;
mod sockaddr;
mod stall;
mod stats;
mod tasks;
mod transport;

use pyo3::prelude::*;

/// Panics with `message`. Exists for the test proving that a Rust panic reaches Python
/// as an exception (`panic = "unwind"`), never killing the interpreter.
#[pyfunction]
fn _panic_for_tests(message: &str) {
    panic!("{message}");
}

/// The extension module. `gil_used = true`: `GilCell` relies on the GIL for exclusion.
#[pymodule(gil_used = true)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<event_loop::EventLoop>()?;
    m.add_class::<handle::Handle>()?;
    m.add_class::<handle::TimerHandle>()?;
    m.add_class::<transport::datagram::DatagramCore>()?;
    m.add_class::<transport::stream::StreamCore>()?;
    m.add_class::<transport::tls_pump::TlsPump>()?;
    m.add_class::<sock_ops::SockOp>()?;
    m.add_class::<framing::FrameSplitter>()?;
    m.add_class::<transport::pipe::ReadPipeCore>()?;
    m.add_class::<transport::pipe::WritePipeCore>()?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    Ok(())
}
