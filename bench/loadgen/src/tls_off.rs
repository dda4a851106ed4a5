//! Stands in for `tls.rs` when ferroloop-loadgen is built without the `tls` feature:
//! `--tls` is refused with a message saying how to build it, and no TLS stream can exist.

use std::io;
use std::net::TcpStream;
use std::os::fd::RawFd;
use std::path::Path;

/// The error `--tls` gets from a build without TLS.
const NO_TLS: &str = "--tls: this loadgen was built without TLS support; build it with \
                      `cargo build --release -p ferroloop-loadgen --features tls`";

/// Never constructed: [`TlsClient::new`] always fails.
pub enum TlsClient {}

impl TlsClient {
    /// Always an error: this build has no TLS library.
    pub fn new(_ca: &Path, _name: &str) -> Result<TlsClient, String> {
        Err(NO_TLS.into())
    }

    /// Unreachable: there is no `TlsClient`.
    pub fn handshake(&self, _sock: TcpStream) -> io::Result<TlsStream> {
        match *self {}
    }
}

/// Never constructed: without a [`TlsClient`] there is no TLS connection.
pub enum TlsStream {}

impl TlsStream {
    /// Unreachable.
    pub fn fd(&self) -> RawFd {
        match *self {}
    }

    /// Unreachable.
    pub fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        match *self {}
    }

    /// Unreachable.
    pub fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        match *self {}
    }

    /// Unreachable.
    pub fn flush(&mut self) -> io::Result<()> {
        match *self {}
    }

    /// Unreachable.
    pub fn wants_write(&self) -> bool {
        match *self {}
    }

    /// Unreachable.
    pub fn buffered(&self) -> bool {
        match *self {}
    }
}
