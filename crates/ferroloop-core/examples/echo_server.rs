//! A single-threaded echo server on `ferroloop-core` alone: the ceiling for the
//! Python loop's echo benchmarks.
//!
//! It shows the pieces a loop needs for stream sockets, with nothing in between:
//! non-blocking listeners and connections, one level-triggered [`Poller`], one read
//! buffer shared by every connection, and per-connection output buffering. A connection
//! is watched for writability only while it has output the kernel did not take, and it
//! stops being read while that backlog is above a high-water mark, so a client that
//! sends without reading cannot make the server buffer without bound.
//!
//! ```text
//! cargo run -p ferroloop-core --release --example echo_server -- [--addr 127.0.0.1:25000] [--unix PATH]
//! ```
//!
//! With `--unix PATH` it listens on a Unix stream socket instead (a stale socket file
//! left at `PATH` by an earlier run is replaced); give `--addr` as well to listen on
//! both. `--addr HOST:0` picks a free port. Once every listener is ready it prints
//! `listening on ADDR` for each (the bound address, so the chosen port for `:0`) on
//! stdout. Peer errors (resets, broken pipes) are logged to stderr and close only that
//! connection. SIGINT and SIGTERM keep their default action: the process ends and the
//! kernel closes every socket. (A non-interactive shell starts `cmd &` with SIGINT
//! ignored, and the server inherits that: stop such a background server with SIGTERM.)

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::process::ExitCode;

use ferroloop_core::poll::{Events, Interest, Poller};
use rustix::io::Errno;
use rustix::net::{SendFlags, SocketFlags};

/// Size of the one read buffer every connection shares.
const READ_BUFFER: usize = 256 * 1024;
/// Stop reading from a connection while this much of its output is still unsent.
const HIGH_WATER: usize = 1024 * 1024;
/// Most connections accepted per listener report, so a flood of connects cannot starve
/// the connections already open (level triggering reports the rest next time).
const ACCEPTS_PER_EVENT: usize = 128;
/// Listener tokens are their index; connection tokens start here.
const FIRST_CONN_TOKEN: u64 = 1 << 32;

struct Listener {
    fd: OwnedFd,
    /// TCP connections get `TCP_NODELAY`, as asyncio's transports do.
    tcp: bool,
}

struct Conn {
    fd: OwnedFd,
    /// Output the kernel has not taken yet: `out[sent..]`.
    out: Vec<u8>,
    sent: usize,
    /// The peer sent EOF: flush what is left, then close.
    read_done: bool,
    /// What the poller currently watches this fd for.
    interest: Interest,
}

impl Conn {
    fn pending(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Readable while the peer may send more and the backlog is small; writable while
    /// there is a backlog.
    fn wanted(&self) -> Interest {
        let pending = self.pending();
        Interest {
            readable: !self.read_done && pending < HIGH_WATER,
            writable: pending > 0,
        }
    }

    /// Sends as much of `data` as the socket takes without blocking.
    fn send_some(&self, mut data: &[u8]) -> io::Result<usize> {
        let total = data.len();
        while !data.is_empty() {
            match rustix::net::send(&self.fd, data, SendFlags::NOSIGNAL) {
                Ok(n) => data = &data[n..],
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(total - data.len())
    }

    /// Echoes freshly read bytes: straight to the socket when nothing is queued ahead of
    /// them, which is the common case and saves a trip through the poller.
    fn echo(&mut self, data: &[u8]) -> io::Result<()> {
        let written = if self.pending() == 0 {
            self.out.clear();
            self.sent = 0;
            self.send_some(data)?
        } else {
            0
        };
        if written < data.len() {
            // Reclaim the sent prefix before growing, when it is most of the buffer.
            if self.sent > 0 && self.sent >= self.out.len() / 2 {
                self.out.drain(..self.sent);
                self.sent = 0;
            }
            self.out.extend_from_slice(&data[written..]);
        }
        Ok(())
    }

    /// Writes queued output after a writability report.
    fn flush(&mut self) -> io::Result<()> {
        if self.pending() == 0 {
            return Ok(());
        }
        let written = self.send_some(&self.out[self.sent..])?;
        self.sent += written;
        if self.pending() == 0 {
            self.out.clear();
            self.sent = 0;
            // A burst can leave a large allocation behind; do not keep it per connection.
            if self.out.capacity() > HIGH_WATER {
                self.out.shrink_to(READ_BUFFER);
            }
        }
        Ok(())
    }
}

/// What to do with a connection after handling its report.
enum Next {
    Keep,
    Close,
}

struct Server {
    poller: Poller,
    listeners: Vec<Listener>,
    conns: Vec<Option<Conn>>,
    /// Slots free for new connections.
    free: Vec<usize>,
    /// Slots closed during the current batch of reports: reused only after it, so a
    /// stale report for a closed connection never reaches a new one.
    closed: Vec<usize>,
    buffer: Vec<u8>,
}

impl Server {
    fn accept(&mut self, index: usize) {
        let listener = &self.listeners[index];
        for _ in 0..ACCEPTS_PER_EVENT {
            let fd = match rustix::net::accept_with(
                &listener.fd,
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            ) {
                Ok(fd) => fd,
                Err(Errno::AGAIN) => return,
                // The client gave up before we got to it, or a signal: try the next one.
                Err(Errno::CONNABORTED) | Err(Errno::INTR) => continue,
                Err(e) => {
                    // EMFILE and friends: say so, and leave the rest in the backlog.
                    eprintln!("accept: {}", io::Error::from(e));
                    return;
                }
            };
            if listener.tcp {
                if let Err(e) = rustix::net::sockopt::set_tcp_nodelay(&fd, true) {
                    eprintln!("TCP_NODELAY: {}", io::Error::from(e));
                }
            }
            let slot = match self.free.pop() {
                Some(slot) => slot,
                None => {
                    self.conns.push(None);
                    self.conns.len() - 1
                }
            };
            let token = FIRST_CONN_TOKEN + slot as u64;
            if let Err(e) = self.poller.register(fd.as_raw_fd(), token, Interest::READ) {
                eprintln!("register: {e}");
                self.free.push(slot);
                continue;
            }
            self.conns[slot] = Some(Conn {
                fd,
                out: Vec::new(),
                sent: 0,
                read_done: false,
                interest: Interest::READ,
            });
        }
    }

    fn on_conn_event(&mut self, slot: usize, readable: bool, writable: bool) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let next = match serve(conn, &mut self.buffer, readable, writable) {
            Ok(next) => next,
            Err(e) => {
                eprintln!("connection {slot}: {e}");
                Next::Close
            }
        };
        match next {
            Next::Keep => {
                let wanted = conn.wanted();
                if wanted != conn.interest {
                    let token = FIRST_CONN_TOKEN + slot as u64;
                    match self.poller.register(conn.fd.as_raw_fd(), token, wanted) {
                        Ok(()) => conn.interest = wanted,
                        Err(e) => {
                            eprintln!("connection {slot}: register: {e}");
                            self.close(slot);
                        }
                    }
                }
            }
            Next::Close => self.close(slot),
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(conn) = self.conns[slot].take() {
            // Remove the registration before the fd number can be reused.
            if let Err(e) = self.poller.deregister(conn.fd.as_raw_fd()) {
                eprintln!("connection {slot}: deregister: {e}");
            }
            drop(conn);
            self.closed.push(slot);
        }
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::new();
        loop {
            match self.poller.wait(&mut events, None) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                if event.token >= FIRST_CONN_TOKEN {
                    let slot = (event.token - FIRST_CONN_TOKEN) as usize;
                    self.on_conn_event(slot, event.readable, event.writable);
                } else {
                    self.accept(event.token as usize);
                }
            }
            self.free.append(&mut self.closed);
        }
    }
}

/// Handles one readiness report for a connection.
fn serve(conn: &mut Conn, buffer: &mut [u8], readable: bool, writable: bool) -> io::Result<Next> {
    if writable {
        conn.flush()?;
    }
    // Read once per report: level triggering brings us back if more is waiting, and
    // other connections get their turn in between.
    if readable && conn.wanted().readable {
        match rustix::io::read(&conn.fd, &mut *buffer) {
            Ok(0) => conn.read_done = true,
            Ok(n) => conn.echo(&buffer[..n])?,
            Err(Errno::AGAIN) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if conn.read_done && conn.pending() == 0 {
        return Ok(Next::Close);
    }
    Ok(Next::Keep)
}

struct Options {
    addr: Option<SocketAddr>,
    unix: Option<String>,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        addr: None,
        unix: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "--addr" => {
                let text = value()?;
                let addr = text
                    .parse()
                    .map_err(|e| format!("--addr {text}: {e} (expected HOST:PORT)"))?;
                options.addr = Some(addr);
            }
            "--unix" => options.unix = Some(value()?),
            "-h" | "--help" => {
                return Err("usage: echo_server [--addr 127.0.0.1:25000] [--unix PATH]".into())
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if options.addr.is_none() && options.unix.is_none() {
        options.addr = Some(SocketAddr::from(([127, 0, 0, 1], 25000)));
    }
    Ok(options)
}

/// Binds the listeners and returns them with the text to announce for each.
fn bind(options: &Options) -> io::Result<Vec<(Listener, String)>> {
    let mut bound = Vec::new();
    if let Some(addr) = options.addr {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let name = listener.local_addr()?.to_string();
        let fd = OwnedFd::from(listener);
        bound.push((Listener { fd, tcp: true }, name));
    }
    if let Some(path) = &options.unix {
        // Replace a socket file left by an earlier run, but never any other kind of file.
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if meta.file_type().is_socket() {
                std::fs::remove_file(path)?;
            }
        }
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        let fd = OwnedFd::from(listener);
        bound.push((Listener { fd, tcp: false }, path.clone()));
    }
    Ok(bound)
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let setup = || -> io::Result<Server> {
        let poller = Poller::new()?;
        let mut listeners = Vec::new();
        let mut names = Vec::new();
        for (token, (listener, name)) in bind(&options)?.into_iter().enumerate() {
            poller.register(listener.fd.as_raw_fd(), token as u64, Interest::READ)?;
            listeners.push(listener);
            names.push(name);
        }
        let mut stdout = io::stdout().lock();
        for name in names {
            writeln!(stdout, "listening on {name}")?;
        }
        stdout.flush()?;
        Ok(Server {
            poller,
            listeners,
            conns: Vec::new(),
            free: Vec::new(),
            closed: Vec::new(),
            buffer: vec![0; READ_BUFFER],
        })
    };
    let result = setup().and_then(|mut server| server.run());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_server: {e}");
            ExitCode::FAILURE
        }
    }
}
