//! The TLS client end to end (`cargo test -p ferroloop-loadgen --features tls`): workers
//! drive `--tls` connections against a small blocking rustls echo / HTTP server on
//! threads, with the fixed certificates in `testdata/` (see `make_certs.py` there).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::payload::Pattern;
use crate::tls::TlsClient;
use crate::worker::{self, Outcome, Stream};
use crate::{Config, Mode, Target};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn server_config() -> Arc<ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(testdata("server.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(testdata("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    Arc::new(config)
}

/// Listens on a free loopback port and serves `connections` connections, each on its own
/// thread, until the client goes away.
fn serve(mode: Mode, connections: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = server_config();
    thread::spawn(move || {
        for _ in 0..connections {
            let Ok((sock, _)) = listener.accept() else {
                return;
            };
            let conn = ServerConnection::new(Arc::clone(&config)).unwrap();
            thread::spawn(move || {
                // Errors (the client closing, a failed handshake) just end the connection.
                let _ = serve_one(mode, StreamOwned::new(conn, sock));
            });
        }
    });
    addr
}

fn serve_one(mode: Mode, mut tls: StreamOwned<ServerConnection, TcpStream>) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    loop {
        let n = tls.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        if mode == Mode::Echo {
            tls.write_all(&buf[..n])?;
            continue;
        }
        head.extend_from_slice(&buf[..n]);
        while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let request = String::from_utf8_lossy(&head[..end]).into_owned();
            head.drain(..end + 4);
            let size: usize = request
                .strip_prefix("GET /")
                .and_then(|rest| rest.split(' ').next())
                .and_then(|size| size.parse().ok())
                .unwrap_or(0);
            let mut response = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n");
            response.push_str(&"x".repeat(size));
            tls.write_all(response.as_bytes())?;
        }
    }
}

/// Connects `connections` TLS clients to `addr` and drives them for 300 ms in one worker.
fn drive(addr: SocketAddr, mode: Mode, size: usize, connections: u32) -> Outcome {
    let client = TlsClient::new(&testdata("ca.pem"), "127.0.0.1").unwrap();
    let target = Target::Tcp(addr);
    let conns = (0..connections)
        .map(|id| {
            (
                id,
                Stream::connect(&target, mode, Some(&client), u64::from(id)).unwrap(),
            )
        })
        .collect();
    let now = Instant::now();
    let config = Config {
        mode,
        size,
        stall: Duration::from_secs(5),
        window_start: now,
        window_end: now + Duration::from_millis(300),
    };
    worker::run(&config, &Pattern::new(size), conns)
}

fn assert_clean(outcome: &Outcome, what: &str) {
    assert_eq!(outcome.errors, 0, "{what}: {:?}", outcome.samples);
    assert!(outcome.requests > 0, "{what}: no replies");
}

#[test]
fn echo_small_and_larger_than_the_read_buffer() {
    // 300 KiB is more than the worker's 256 KiB read buffer and rustls's 64 KiB send limit.
    for (size, connections) in [(1024, 3), (300 * 1024, 2)] {
        let addr = serve(Mode::Echo, connections as usize);
        let outcome = drive(addr, Mode::Echo, size, connections);
        assert_clean(&outcome, &format!("echo {size} B"));
        assert_eq!(outcome.bytes, outcome.requests * size as u64);
    }
}

#[test]
fn http_keep_alive() {
    let addr = serve(Mode::Http, 2);
    let outcome = drive(addr, Mode::Http, 1024, 2);
    assert_clean(&outcome, "http");
}

#[test]
fn handshake_checks_the_certificate() {
    let target = Target::Tcp(serve(Mode::Echo, 2));
    // The server's own certificate is not a CA: its issuer stays unknown.
    let untrusting = TlsClient::new(&testdata("server.pem"), "127.0.0.1").unwrap();
    let err = Stream::connect(&target, Mode::Echo, Some(&untrusting), 0)
        .err()
        .expect("a certificate from an unknown CA was accepted");
    assert!(err.to_string().contains("TLS handshake"), "{err}");
    // The certificate is for 127.0.0.1, not for this name.
    let wrong_name = TlsClient::new(&testdata("ca.pem"), "example.com").unwrap();
    let err = Stream::connect(&target, Mode::Echo, Some(&wrong_name), 0)
        .err()
        .expect("a certificate for another name was accepted");
    assert!(err.to_string().contains("TLS handshake"), "{err}");
}

#[test]
fn ca_file_errors_are_reported() {
    let missing = TlsClient::new(Path::new("/nonexistent/ca.pem"), "127.0.0.1");
    assert!(missing.is_err());
    let no_certs = TlsClient::new(&testdata("server.key"), "127.0.0.1");
    assert!(no_certs.err().unwrap().contains("no certificate"));
}

#[test]
fn plaintext_left_in_rustls_is_announced() {
    let addr = serve(Mode::Echo, 1);
    let client = TlsClient::new(&testdata("ca.pem"), "127.0.0.1").unwrap();
    let mut tls = client.handshake(TcpStream::connect(addr).unwrap()).unwrap();
    let sent: Vec<u8> = (0..1024u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(tls.write(&sent).unwrap(), sent.len());
    assert!(!tls.wants_write());
    // Wait until the whole echo has arrived, then read it 100 bytes at a time: after the
    // first read the socket is drained and only rustls holds the rest.
    let mut got = Vec::new();
    let mut buf = [0u8; 100];
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.is_empty() {
        assert!(Instant::now() < deadline, "no echo");
        thread::sleep(Duration::from_millis(20));
        match tls.read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
        }
    }
    while tls.buffered() {
        let n = tls.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, sent);
}
