//! TLS client connections (`--tls`, cargo feature `tls`) on rustls with the ring provider.
//!
//! The handshake is done blocking, at connect time, before any thread starts, so it is
//! neither measured nor part of the warm-up. After it the socket is non-blocking and
//! [`TlsStream`] moves bytes between it and rustls only when the worker's poller says so:
//! `read_tls` + `process_new_packets` + `reader()` to receive, `writer()` + `write_tls` to
//! send. Without the feature, `tls_off.rs` stands in for this file.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// Longest a handshake may block on one read or write.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes asked of the socket per `recv`. rustls's `read_tls` reads at most 4 KiB at a
/// time, so records come through this buffer: fewer system calls for large replies.
const INBOX: usize = 64 * 1024;

/// What every connection of a run shares: the client configuration (trusting only the
/// `--ca` certificates) and the name the server's certificate must carry.
pub struct TlsClient {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl TlsClient {
    /// Trusts the certificates in the PEM file `ca` and expects the server to be `name`: an
    /// IP address (checked against the certificate's IP SANs) or a DNS name.
    pub fn new(ca: &Path, name: &str) -> Result<TlsClient, String> {
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca).map_err(|e| format!("--ca: {e}"))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("--ca {}: {e}", ca.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("--ca {}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("--ca {}: no certificate in it", ca.display()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(name.to_owned())
            .map_err(|_| format!("--sni: {name:?} is neither an IP address nor a DNS name"))?;
        Ok(TlsClient {
            config: Arc::new(config),
            name,
        })
    }

    /// Completes the handshake on the connected, blocking `sock`, then makes it
    /// non-blocking.
    pub fn handshake(&self, mut sock: TcpStream) -> io::Result<TlsStream> {
        let mut conn = ClientConnection::new(Arc::clone(&self.config), self.name.clone())
            .map_err(io::Error::other)?;
        sock.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        sock.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
        while conn.is_handshaking() {
            let moved = conn
                .complete_io(&mut sock)
                .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
            if moved == (0, 0) {
                return Err(io::Error::other("TLS handshake: stuck"));
            }
        }
        sock.set_read_timeout(None)?;
        sock.set_write_timeout(None)?;
        sock.set_nonblocking(true)?;
        let mut stream = TlsStream {
            sock,
            conn,
            inbox: vec![0; INBOX],
            start: 0,
            end: 0,
            full: false,
        };
        stream.flush()?;
        Ok(stream)
    }
}

/// One non-blocking TLS connection. `read` and `write` take and give plaintext, with the
/// same meaning of `WouldBlock` as on the socket.
pub struct TlsStream {
    sock: TcpStream,
    conn: ClientConnection,
    /// Received records; `inbox[start..end]` is not yet handed to rustls.
    inbox: Vec<u8>,
    start: usize,
    end: usize,
    /// The last `read` filled the caller's buffer: rustls may hold more plaintext, which
    /// no readiness report would announce.
    full: bool,
}

impl TlsStream {
    /// The socket's descriptor, for the poller.
    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Reads plaintext into `buf`: what rustls has already decrypted, then records from
    /// the socket until a `recv` returns less than it asked for (the socket is drained:
    /// no second call just to see `EAGAIN`) or `buf` is full. `Ok(0)` is the end of the
    /// connection (with or without `close_notify`).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        let mut drained = false;
        self.full = false;
        loop {
            match self.conn.reader().read(&mut buf[filled..]) {
                Ok(0) => return Ok(filled), // close_notify: `buf[filled..]` is never empty
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(filled),
                Err(e) => return Err(e),
            }
            if filled == buf.len() {
                self.full = true;
                return Ok(filled);
            }
            if self.start < self.end {
                let n = self.conn.read_tls(&mut &self.inbox[self.start..self.end])?;
                // Zero only after close_notify, which the reader reports above.
                self.start = if n == 0 { self.end } else { self.start + n };
                self.process()?;
                continue;
            }
            if drained {
                break;
            }
            match self.sock.read(&mut self.inbox) {
                Ok(0) => {
                    // EOF: rustls notes it, and the reader reports it above.
                    self.conn.read_tls(&mut io::empty())?;
                    self.process()?;
                    drained = true;
                }
                Ok(n) => {
                    (self.start, self.end) = (0, n);
                    drained = n < self.inbox.len();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(filled)
    }

    /// Decrypts the records rustls has; on a TLS error, sends the alert rustls made.
    fn process(&mut self) -> io::Result<()> {
        if let Err(e) = self.conn.process_new_packets() {
            let _ = self.flush();
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        Ok(())
    }

    /// Encrypts as much of `buf` as rustls buffers and sends what the socket takes.
    /// Returns how many plaintext bytes were taken, or `WouldBlock` if none could be.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Make room first: rustls holds at most 64 KiB of unsent records.
        self.flush()?;
        let n = self.conn.writer().write(buf)?;
        self.flush()?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Sends encrypted records rustls holds until the socket would block.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Records are waiting to be sent: watch the socket for writability.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Plaintext may be waiting in rustls: read again before waiting for the socket.
    pub fn buffered(&self) -> bool {
        self.full
    }
}
