//! Name lookups off the loop thread: `loop.getaddrinfo` without Python.
//!
//! Every name given on the command line is submitted to a [`Resolver`] at once; its
//! worker threads run `getaddrinfo(3)` and, after each lookup, call the `notify` we gave
//! the pool, which wakes our [`Poller`] through a [`Waker`]. The loop thread never
//! blocks on a lookup: it sleeps in [`Poller::wait`] and collects finished results with
//! [`Resolver::take_completed`]. Rows are printed the way Python prints the tuples of
//! `socket.getaddrinfo(name, service)`, so the two can be compared line by line:
//!
//! ```text
//! cargo run -p ferroloop-core --example resolve -- [--service SERVICE] [NAME ...]
//! python3 -c "import socket; [print(r) for r in socket.getaddrinfo('localhost', None)]"
//! ```
//!
//! The default name is `localhost`, which the hosts file answers without any network.
//! The exit status is 1 if any lookup failed (printed as Python's `socket.gaierror`).

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ferroloop_core::clock::now_ns;
use ferroloop_core::dns::{
    AddrInfo, AddrInfoQuery, Request, ResolveError, Resolver, Response, SockAddr,
};
use ferroloop_core::poll::{Events, Interest, Poller};
use ferroloop_core::waker::Waker;

/// The token the waker's eventfd is registered with.
const WAKER_TOKEN: u64 = 0;
/// Give up on lookups still running after this long.
const DEADLINE: Duration = Duration::from_secs(30);
/// Most lookups run at once.
const MAX_THREADS: usize = 4;

/// `repr()` of a Python `str`, for the ASCII text addresses and names are made of.
fn py_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `repr()` of a Python `bytes`.
fn py_bytes(data: &[u8]) -> String {
    let mut out = String::from("b'");
    for &b in data {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\'' => out.push_str("\\'"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('\'');
    out
}

/// `repr()` of the `socket.AddressFamily` member for `family`.
fn py_family(family: i32) -> String {
    let name = match family {
        libc::AF_UNSPEC => "AF_UNSPEC",
        libc::AF_UNIX => "AF_UNIX",
        libc::AF_INET => "AF_INET",
        libc::AF_INET6 => "AF_INET6",
        libc::AF_PACKET => "AF_PACKET",
        _ => return family.to_string(),
    };
    format!("<AddressFamily.{name}: {family}>")
}

/// `repr()` of the `socket.SocketKind` member for `socktype`.
fn py_kind(socktype: i32) -> String {
    let name = match socktype {
        libc::SOCK_STREAM => "SOCK_STREAM",
        libc::SOCK_DGRAM => "SOCK_DGRAM",
        libc::SOCK_RAW => "SOCK_RAW",
        libc::SOCK_RDM => "SOCK_RDM",
        libc::SOCK_SEQPACKET => "SOCK_SEQPACKET",
        _ => return socktype.to_string(),
    };
    format!("<SocketKind.{name}: {socktype}>")
}

/// One row as Python prints the 5-tuple.
fn py_row(row: &AddrInfo) -> String {
    let addr = match &row.addr {
        SockAddr::V4 { host, port } => format!("({}, {port})", py_str(host)),
        SockAddr::V6 {
            host,
            port,
            flowinfo,
            scope_id,
        } => format!("({}, {port}, {flowinfo}, {scope_id})", py_str(host)),
        SockAddr::Other { family, data } => format!("({family}, {})", py_bytes(data)),
    };
    format!(
        "({}, {}, {}, {}, {addr})",
        py_family(row.family),
        py_kind(row.socktype),
        row.protocol,
        py_str(&row.canonname)
    )
}

/// The exception Python would raise.
fn py_error(error: &ResolveError) -> String {
    match error {
        ResolveError::Gai { code, message } => {
            format!("socket.gaierror: [Errno {code}] {message}")
        }
        ResolveError::Os(e) => match e.raw_os_error() {
            Some(errno) => format!("OSError: [Errno {errno}] {e}"),
            None => format!("OSError: {e}"),
        },
        ResolveError::Invalid(message) => format!("OSError: {message}"),
    }
}

struct Lookup {
    name: String,
    submitted_ns: i64,
    /// The printed report, once the lookup is done.
    report: Option<(String, bool)>,
}

fn parse_args() -> Result<(Option<String>, Vec<String>), String> {
    let mut service = None;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--service" | "-s" => {
                service = Some(args.next().ok_or("--service needs a value")?);
            }
            "-h" | "--help" => {
                return Err("usage: resolve [--service SERVICE] [NAME ...]".to_owned())
            }
            _ => names.push(arg),
        }
    }
    if names.is_empty() {
        names.push("localhost".to_owned());
    }
    Ok((service, names))
}

fn run(service: Option<String>, names: Vec<String>) -> io::Result<bool> {
    let poller = Poller::new()?;
    let waker = Arc::new(Waker::new()?);
    poller.register(waker.as_raw_fd(), WAKER_TOKEN, Interest::READ)?;

    // The workers' only way back to us: make the eventfd readable.
    let notify: Arc<dyn Fn() + Send + Sync> = {
        let waker = Arc::clone(&waker);
        Arc::new(move || {
            let _ = waker.wake();
        })
    };
    let resolver = Resolver::new(MAX_THREADS, notify);

    let service = match service {
        Some(s) => Some(
            CString::new(s)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in service"))?,
        ),
        None => None,
    };
    let start = now_ns();
    let mut lookups = Vec::with_capacity(names.len());
    let mut outstanding = 0;
    for (id, name) in names.into_iter().enumerate() {
        let submitted_ns = now_ns();
        let report = match CString::new(name.as_str()) {
            Ok(host) => {
                resolver.submit(
                    id as u64,
                    Request::AddrInfo(AddrInfoQuery {
                        host: Some(host),
                        service: service.clone(),
                        ..AddrInfoQuery::default()
                    }),
                );
                outstanding += 1;
                None
            }
            Err(_) => Some(("ValueError: embedded null character".to_owned(), false)),
        };
        lookups.push(Lookup {
            name,
            submitted_ns,
            report,
        });
    }

    let deadline = start + DEADLINE.as_nanos() as i64;
    let mut events = Events::new();
    let mut wakes = 0;
    while outstanding > 0 {
        let left = deadline - now_ns();
        if left <= 0 {
            break;
        }
        match poller.wait(&mut events, Some(Duration::from_nanos(left as u64))) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if !events.iter().any(|event| event.token == WAKER_TOKEN) {
            continue;
        }
        waker.drain()?;
        wakes += 1;
        let done = now_ns();
        for (id, response) in resolver.take_completed() {
            let Some(lookup) = lookups.get_mut(id as usize) else {
                continue;
            };
            let elapsed_ms = (done - lookup.submitted_ns) as f64 / 1e6;
            let mut text = format!("{} ({elapsed_ms:.1} ms):", lookup.name);
            let ok = match response {
                Response::AddrInfo(Ok(rows)) => {
                    for row in &rows {
                        text.push('\n');
                        text.push_str(&py_row(row));
                    }
                    true
                }
                Response::AddrInfo(Err(e)) | Response::NameInfo(Err(e)) => {
                    text.push('\n');
                    text.push_str(&py_error(&e));
                    false
                }
                Response::NameInfo(Ok(_)) => continue,
            };
            if lookup.report.is_none() {
                outstanding -= 1;
            }
            lookup.report = Some((text, ok));
        }
    }

    let mut all_ok = true;
    for lookup in &lookups {
        match &lookup.report {
            Some((text, ok)) => {
                println!("{text}");
                all_ok &= *ok;
            }
            None => {
                println!(
                    "{}:\nTimeoutError: no answer within {DEADLINE:?}",
                    lookup.name
                );
                all_ok = false;
            }
        }
    }
    println!(
        "{} lookup(s) in {:.1} ms, {wakes} wake-up(s) of the loop",
        lookups.len(),
        (now_ns() - start) as f64 / 1e6
    );
    // Dropping the pool does not wait for a lookup that is still stuck in libc.
    drop(resolver);
    Ok(all_ok)
}

fn main() -> ExitCode {
    let (service, names) = match parse_args() {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(service, names) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("resolve: {e}");
            ExitCode::FAILURE
        }
    }
}
