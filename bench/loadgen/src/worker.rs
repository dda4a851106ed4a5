//! One client thread: its connections, one poller, one shared read buffer.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ferroloop_core::poll::{Events, Interest, Poller};

use crate::hist::Histogram;
use crate::http::{self, Progress};
use crate::payload::{self, Pattern};
use crate::tls::{TlsClient, TlsStream};
use crate::{ws, Config, Mode, Target};

/// Size of the read buffer every connection of a thread shares.
const READ_BUFFER: usize = 256 * 1024;
/// Longest a wait sleeps, so the end of the run and stalls are noticed in time.
const MAX_WAIT: Duration = Duration::from_millis(50);
/// Error messages kept per thread.
const MAX_SAMPLES: usize = 5;

/// A connected, non-blocking socket: a stream, a UDP socket connected to the server (one
/// `send` is one datagram, one `recv` one datagram), or TLS over TCP (`read` and `write`
/// move plaintext).
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Udp(UdpSocket),
    Tls(Box<TlsStream>),
}

impl Stream {
    /// Connects (blocking, bounded for TCP), completes the TLS handshake when `tls` is
    /// given (TCP only) or the WebSocket handshake in `Mode::Ws` (its key made from
    /// `nonce`), then switches to non-blocking mode.
    pub fn connect(
        target: &Target,
        mode: Mode,
        tls: Option<&TlsClient>,
        nonce: u64,
    ) -> io::Result<Stream> {
        let stream = match target {
            Target::Tcp(addr) if mode == Mode::Udp => {
                let local: SocketAddr = if addr.is_ipv4() {
                    ([127, 0, 0, 1], 0).into()
                } else {
                    (std::net::Ipv6Addr::LOCALHOST, 0).into()
                };
                let socket = UdpSocket::bind(local)?;
                socket.connect(addr)?;
                Stream::Udp(socket)
            }
            Target::Tcp(addr) => {
                let mut stream = TcpStream::connect_timeout(addr, Duration::from_secs(5))?;
                stream.set_nodelay(true)?;
                if mode == Mode::Ws {
                    ws::handshake(&mut stream, &addr.to_string(), nonce)?;
                }
                match tls {
                    Some(tls) => return Ok(Stream::Tls(Box::new(tls.handshake(stream)?))),
                    None => Stream::Tcp(stream),
                }
            }
            Target::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
        };
        match &stream {
            Stream::Tcp(s) => s.set_nonblocking(true)?,
            Stream::Unix(s) => s.set_nonblocking(true)?,
            Stream::Udp(s) => s.set_nonblocking(true)?,
            Stream::Tls(_) => unreachable!("returned above, already non-blocking"),
        }
        Ok(stream)
    }

    fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Udp(s) => s.as_raw_fd(),
            Stream::Tls(s) => s.fd(),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Udp(s) => s.recv(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Rust programs start with SIGPIPE ignored, so a closed peer is EPIPE, not death.
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Udp(s) => s.send(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    /// Sends what TLS has encrypted but not yet sent (nothing to do for plain sockets).
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tls(s) => s.flush(),
            _ => Ok(()),
        }
    }

    /// TLS records are waiting for the socket to take them.
    fn wants_write(&self) -> bool {
        match self {
            Stream::Tls(s) => s.wants_write(),
            _ => false,
        }
    }

    /// Received bytes may be waiting in user space, where no readiness report announces
    /// them (TLS plaintext that did not fit the last read).
    fn buffered(&self) -> bool {
        match self {
            Stream::Tls(s) => s.buffered(),
            _ => false,
        }
    }
}

/// What one thread (or, merged, the whole run) measured.
#[derive(Default)]
pub struct Outcome {
    /// Replies completed inside the measured window.
    pub requests: u64,
    /// Reply bytes of those.
    pub bytes: u64,
    pub latency: Histogram,
    /// Broken connections: wrong bytes, early close, I/O errors, stalls (any phase).
    pub errors: u64,
    pub samples: Vec<String>,
}

impl Outcome {
    pub fn merge(&mut self, other: Outcome) {
        self.requests += other.requests;
        self.bytes += other.bytes;
        self.latency.merge(&other.latency);
        self.errors += other.errors;
        for sample in other.samples {
            if self.samples.len() < MAX_SAMPLES * 2 {
                self.samples.push(sample);
            }
        }
    }

    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(message);
        }
    }
}

struct Conn {
    id: u32,
    stream: Stream,
    /// Requests completed so far (the current request's number).
    counter: u64,
    /// The current request; `out[sent..]` is still to be sent.
    out: Vec<u8>,
    /// WebSocket: the payload of the current message, and the exact reply expected.
    message: Vec<u8>,
    expect: Vec<u8>,
    sent: usize,
    /// Reply bytes received (and, for echo, verified) so far.
    received: usize,
    /// HTTP: the head received so far, until it is complete.
    head: Vec<u8>,
    /// HTTP: the length of the whole response, once the head is known.
    total: Option<usize>,
    started: Instant,
    interest: Interest,
}

/// Whether a connection goes on after an event.
type Step = Result<(), String>;

impl Conn {
    fn expected_len(&self, mode: Mode) -> Option<usize> {
        match mode {
            Mode::Echo | Mode::Udp => Some(self.out.len()),
            Mode::Ws => Some(self.expect.len()),
            Mode::Http => self.total,
        }
    }

    fn begin(&mut self, config: &Config, pattern: &Pattern, now: Instant) -> Step {
        match config.mode {
            Mode::Echo | Mode::Udp => pattern.fill(self.id, self.counter, &mut self.out),
            Mode::Ws => {
                pattern.fill(self.id, self.counter, &mut self.message);
                let mask = (self.counter as u32 ^ self.id.rotate_left(16)).to_le_bytes();
                ws::encode(&self.message, mask, &mut self.out, &mut self.expect);
            }
            Mode::Http => {
                if self.out.is_empty() {
                    self.out = http::request(config.size);
                }
            }
        }
        self.sent = 0;
        self.received = 0;
        self.head.clear();
        self.total = None;
        self.started = now;
        self.send_some()
    }

    fn send_some(&mut self) -> Step {
        while self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(0) => return Err("send returned 0".into()),
                Ok(n) if matches!(self.stream, Stream::Udp(_)) && n != self.out.len() => {
                    return Err(format!("sent {n} of a {}-byte datagram", self.out.len()))
                }
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("send: {e}")),
            }
        }
        Ok(())
    }

    /// Takes `chunk` of the reply; returns true when the reply is complete.
    fn take(&mut self, mode: Mode, size: usize, chunk: &[u8]) -> Result<bool, String> {
        match mode {
            Mode::Echo => {
                payload::verify(&self.out, self.received, chunk)
                    .map_err(|e| format!("connection {} request {}: {e}", self.id, self.counter))?;
                self.received += chunk.len();
            }
            Mode::Ws => {
                payload::verify(&self.expect, self.received, chunk)
                    .map_err(|e| format!("connection {} message {}: {e}", self.id, self.counter))?;
                self.received += chunk.len();
            }
            Mode::Udp => {
                // A datagram is the whole reply: anything but the request's exact bytes is
                // wrong (a reply to an earlier request carries an earlier counter).
                if chunk.len() != self.out.len() {
                    return Err(format!(
                        "socket {} request {}: {}-byte datagram for a {}-byte request",
                        self.id,
                        self.counter,
                        chunk.len(),
                        self.out.len()
                    ));
                }
                payload::verify(&self.out, 0, chunk)
                    .map_err(|e| format!("socket {} request {}: {e}", self.id, self.counter))?;
                self.received = chunk.len();
            }
            Mode::Http => {
                if self.total.is_none() {
                    self.head.extend_from_slice(chunk);
                    match http::parse_head(&self.head, Some(size)) {
                        Ok(Progress::NeedHead) => return Ok(false),
                        Ok(Progress::Total(total)) => self.total = Some(total),
                        Err(e) => return Err(format!("connection {}: {e}", self.id)),
                    }
                    self.received = self.head.len();
                } else {
                    self.received += chunk.len();
                }
            }
        }
        let expected = self.expected_len(mode).unwrap_or(usize::MAX);
        if self.received > expected {
            return Err(format!(
                "connection {}: {} reply bytes for a {expected}-byte reply",
                self.id, self.received
            ));
        }
        Ok(self.received == expected)
    }

    fn wanted(&self) -> Interest {
        Interest {
            readable: true,
            writable: self.sent < self.out.len() || self.stream.wants_write(),
        }
    }
}

/// Drives `conns` until the end of the measured window and returns what it measured.
pub fn run(config: &Config, pattern: &Pattern, conns: Vec<(u32, Stream)>) -> Outcome {
    let mut outcome = Outcome::default();
    let poller = match Poller::new() {
        Ok(poller) => poller,
        Err(e) => {
            outcome.error(format!("epoll: {e}"));
            return outcome;
        }
    };
    let now = Instant::now();
    let mut slots: Vec<Option<Conn>> = Vec::with_capacity(conns.len());
    for (id, stream) in conns {
        let mut conn = Conn {
            id,
            stream,
            counter: 0,
            out: Vec::new(),
            message: Vec::new(),
            expect: Vec::new(),
            sent: 0,
            received: 0,
            head: Vec::new(),
            total: None,
            started: now,
            interest: Interest::default(),
        };
        let started = conn.begin(config, pattern, now).and_then(|()| {
            let wanted = conn.wanted();
            poller
                .register(conn.stream.fd(), slots.len() as u64, wanted)
                .map_err(|e| format!("register: {e}"))?;
            conn.interest = wanted;
            Ok(())
        });
        match started {
            Ok(()) => slots.push(Some(conn)),
            Err(e) => {
                outcome.error(format!("connection {id}: {e}"));
                slots.push(None);
            }
        }
    }

    let mut buffer = vec![0u8; READ_BUFFER];
    let mut events = Events::new();
    let mut alive = slots.iter().filter(|s| s.is_some()).count();
    let mut next_stall_check = now + MAX_WAIT;
    while alive > 0 {
        let now = Instant::now();
        if now >= config.window_end {
            break;
        }
        let timeout = (config.window_end - now).min(MAX_WAIT);
        match poller.wait(&mut events, Some(timeout)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                outcome.error(format!("epoll_wait: {e}"));
                break;
            }
        }
        for event in events.iter() {
            let slot = event.token as usize;
            let Some(conn) = slots.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            let step = handle(config, pattern, conn, &mut outcome, &mut buffer, event);
            let step = step.and_then(|()| {
                let wanted = conn.wanted();
                if wanted != conn.interest {
                    poller
                        .register(conn.stream.fd(), slot as u64, wanted)
                        .map_err(|e| format!("register: {e}"))?;
                    conn.interest = wanted;
                }
                Ok(())
            });
            if let Err(e) = step {
                outcome.error(e);
                let _ = poller.deregister(conn.stream.fd());
                slots[slot] = None;
                alive -= 1;
            }
        }
        let now = Instant::now();
        if now >= next_stall_check {
            next_stall_check = now + MAX_WAIT;
            for slot in slots.iter_mut() {
                let stalled = match slot {
                    Some(conn) if now.duration_since(conn.started) > config.stall => conn,
                    _ => continue,
                };
                outcome.error(format!(
                    "connection {}: no complete reply after {:.1} s ({} of {} bytes sent, {} received)",
                    stalled.id,
                    config.stall.as_secs_f64(),
                    stalled.sent,
                    stalled.out.len(),
                    stalled.received + stalled.head.len(),
                ));
                let _ = poller.deregister(stalled.stream.fd());
                *slot = None;
                alive -= 1;
            }
        }
    }
    outcome
}

/// Handles one readiness report of `conn`.
fn handle(
    config: &Config,
    pattern: &Pattern,
    conn: &mut Conn,
    outcome: &mut Outcome,
    buffer: &mut [u8],
    event: ferroloop_core::poll::Event,
) -> Step {
    if event.writable {
        conn.stream
            .flush()
            .map_err(|e| format!("connection {}: send: {e}", conn.id))?;
        if conn.sent < conn.out.len() {
            conn.send_some()?;
        }
    }
    if !event.readable {
        return Ok(());
    }
    // One read per report: level triggering brings us back when more is waiting in the
    // socket. Only plaintext TLS holds in user space is read again at once.
    loop {
        receive(config, pattern, conn, outcome, buffer)?;
        if !conn.stream.buffered() {
            return Ok(());
        }
    }
}

/// Reads once from `conn` and takes what came; sends the next request after a complete
/// reply.
fn receive(
    config: &Config,
    pattern: &Pattern,
    conn: &mut Conn,
    outcome: &mut Outcome,
    buffer: &mut [u8],
) -> Step {
    let n = match conn.stream.read(buffer) {
        Ok(0) if matches!(conn.stream, Stream::Udp(_)) => {
            return Err(format!("socket {}: empty datagram", conn.id))
        }
        Ok(0) => {
            return Err(format!(
                "connection {}: closed by the server ({} of {} bytes sent, {} received)",
                conn.id,
                conn.sent,
                conn.out.len(),
                conn.received + conn.head.len(),
            ))
        }
        Ok(n) => n,
        Err(e)
            if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted =>
        {
            return Ok(())
        }
        Err(e) => return Err(format!("connection {}: recv: {e}", conn.id)),
    };
    if !conn.take(config.mode, config.size, &buffer[..n])? {
        return Ok(());
    }
    if conn.sent < conn.out.len() {
        return Err(format!(
            "connection {}: complete reply before the request was sent",
            conn.id
        ));
    }
    let now = Instant::now();
    if now >= config.window_start && now < config.window_end {
        outcome.requests += 1;
        outcome.bytes += conn.received as u64;
        outcome
            .latency
            .record(now.duration_since(conn.started).as_nanos() as u64);
    }
    conn.counter += 1;
    conn.begin(config, pattern, now)
}
