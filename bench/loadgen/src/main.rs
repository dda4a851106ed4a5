//! `loadgen`: a closed-loop load generator for ferroloop's network benchmarks.
//!
//! Every connection keeps exactly one request in flight: it sends a request, waits for the
//! complete reply, checks it, and sends the next one. In UDP mode a "connection" is a
//! connected UDP socket with one datagram in flight; a reply that does not come within
//! `--stall` seconds (a lost datagram) is an error, like a stalled TCP connection. Connections are spread over
//! `--threads` threads, each with one level-triggered `ferroloop_core::poll::Poller`.
//! After `--warmup` seconds, replies completed during the next `--duration` seconds are
//! counted and their latencies recorded; the result is one JSON object on stdout.
//!
//! ```text
//! loadgen --mode echo --addr 127.0.0.1:25000 -c 10 -s 1k -d 2 -w 0.5
//! loadgen --mode echo --unix /tmp/echo.sock -c 1 -s 100k
//! loadgen --mode http --addr 127.0.0.1:8080 -c 100 -s 1k --server-pid 1234
//! loadgen --mode udp --addr 127.0.0.1:25001 -c 10 -s 64
//! loadgen --mode ws --addr 127.0.0.1:8765 -c 10 -s 1k
//! loadgen --mode http --addr 127.0.0.1:8443 --tls --ca ca.pem -c 10 -s 1k
//! ```
//!
//! `--tls` (echo and http over TCP) needs the cargo feature `tls` (rustls with ring); every
//! connection completes its handshake before the warm-up starts. See `tls.rs`.
//!
//! Exit status: 0 for a clean run, 2 when there were errors or no replies were counted,
//! 1 for bad arguments or when a connection could not be made.

mod hist;
mod http;
mod payload;
#[cfg_attr(not(feature = "tls"), path = "tls_off.rs")]
mod tls;
#[cfg(all(test, feature = "tls"))]
mod tls_tests;
mod worker;
mod ws;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hist::Histogram;
use worker::{Outcome, Stream};

const USAGE: &str = "\
usage: loadgen [--mode echo|http|udp|ws] (--addr HOST:PORT | --unix PATH) [options]

  --mode MODE          echo: send SIZE bytes, expect them back; http: GET /SIZE, expect a
                       200 response with Content-Length SIZE; udp: send one SIZE-byte
                       datagram, expect the same datagram back; ws: WebSocket handshake
                       (GET /, Sec-WebSocket-Accept checked) before the warm-up, then send
                       one masked binary message of SIZE bytes, expect the same message
                       back in one unmasked binary frame (default echo)
  --addr HOST:PORT     loopback TCP (UDP for --mode udp) address of the server
  --unix PATH          Unix stream socket of the server (echo or http)
  -c, --connections N  connections (UDP: sockets), each with one request in flight
                       (default 10)
  -t, --threads N      client threads (default 1)
  -s, --size N         message / body size: 1024, 1k, 10KiB, 1m ... (default 1k)
  -d, --duration S     measured seconds (default 5)
  -w, --warmup S       unmeasured seconds before (default 1)
  --stall S            a reply outstanding this long is an error (default 5)
  --frames lines|len4  echo: the payload is --pipeline frames of SIZE bytes, each ending
                       with a newline or starting with a 4-byte big-endian length (for
                       framed-protocol servers that echo frame by frame); a request is
                       the whole batch (default: one unframed SIZE-byte message)
  --pipeline N         frames per request with --frames (default 1)
  --server-pid PID     also report that process's CPU seconds over the measured window
  --tls                TLS over TCP (echo and http modes); needs the `tls` cargo feature
  --ca FILE            with --tls: PEM file of the CA certificate(s) to trust (required)
  --sni NAME           with --tls: the name the server's certificate must carry (default:
                       the host of --addr; an IP address is checked against IP SANs)
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Echo,
    Http,
    Udp,
    /// WebSocket echo: binary messages over an upgraded HTTP/1.1 connection.
    Ws,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Http => "http",
            Mode::Udp => "udp",
            Mode::Ws => "ws",
        }
    }
}

/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;

#[derive(Clone, Debug)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(addr) => write!(f, "{addr}"),
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Everything a worker thread needs to know about the run.
pub struct Config {
    pub mode: Mode,
    pub size: usize,
    pub stall: Duration,
    /// Replies completed in `[window_start, window_end)` are counted.
    pub window_start: Instant,
    pub window_end: Instant,
}

struct Options {
    mode: Mode,
    target: Option<Target>,
    /// The host part of `--addr` as given, the default `--sni`.
    host: Option<String>,
    tls: bool,
    ca: Option<PathBuf>,
    sni: Option<String>,
    connections: usize,
    threads: usize,
    size: usize,
    duration: f64,
    warmup: f64,
    stall: f64,
    server_pid: Option<u32>,
    frames: Option<payload::Frames>,
    pipeline: usize,
}

/// Parses `1024`, `1k`, `10KiB`, `1m`, `2MiB` (binary multiples).
fn parse_size(text: &str) -> Result<usize, String> {
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let number: usize = number.parse().map_err(|_| format!("bad size {text:?}"))?;
    let multiplier = match unit {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return Err(format!("bad size unit in {text:?}")),
    };
    match number.checked_mul(multiplier) {
        Some(size) if size > 0 && size <= 64 * 1024 * 1024 => Ok(size),
        _ => Err(format!("size {text:?} must be 1 byte .. 64 MiB")),
    }
}

fn parse_seconds(name: &str, text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=3600.0).contains(&s) => Ok(s),
        _ => Err(format!("{name}: bad number of seconds {text:?}")),
    }
}

fn parse_count(name: &str, text: &str, max: usize) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("{name}: expected 1..={max}, got {text:?}")),
    }
}

/// Resolves `HOST:PORT` and insists on a loopback address: this tool is for benchmarks on
/// one machine and must not load anything else.
fn loopback_addr(text: &str) -> Result<SocketAddr, String> {
    let addrs = text
        .to_socket_addrs()
        .map_err(|e| format!("--addr {text}: {e}"))?;
    let mut first = None;
    for addr in addrs {
        if addr.ip().is_loopback() {
            return Ok(addr);
        }
        first.get_or_insert(addr);
    }
    Err(match first {
        Some(addr) => format!("--addr {text}: {addr} is not a loopback address"),
        None => format!("--addr {text}: no address"),
    })
}

/// The host part of `HOST:PORT` (brackets of `[IPv6]:PORT` removed).
fn host_of(text: &str) -> String {
    let host = text.rsplit_once(':').map_or(text, |(host, _)| host);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        mode: Mode::Echo,
        target: None,
        host: None,
        tls: false,
        ca: None,
        sni: None,
        connections: 10,
        threads: 1,
        size: 1024,
        duration: 5.0,
        warmup: 1.0,
        stall: 5.0,
        server_pid: None,
        frames: None,
        pipeline: 1,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "--mode" => {
                options.mode = match value()?.as_str() {
                    "echo" => Mode::Echo,
                    "http" => Mode::Http,
                    "udp" => Mode::Udp,
                    "ws" => Mode::Ws,
                    other => return Err(format!("--mode: echo, http, udp or ws, not {other:?}")),
                }
            }
            "--addr" => {
                let text = value()?;
                options.target = Some(Target::Tcp(loopback_addr(&text)?));
                options.host = Some(host_of(&text));
            }
            "--unix" => options.target = Some(Target::Unix(PathBuf::from(value()?))),
            "-c" | "--connections" => options.connections = parse_count(&name, &value()?, 10_000)?,
            "-t" | "--threads" => options.threads = parse_count(&name, &value()?, 256)?,
            "-s" | "--size" => options.size = parse_size(&value()?)?,
            "-d" | "--duration" => options.duration = parse_seconds(&name, &value()?)?,
            "-w" | "--warmup" => options.warmup = parse_seconds(&name, &value()?)?,
            "--frames" => {
                options.frames = Some(match value()?.as_str() {
                    "lines" => payload::Frames::Lines,
                    "len4" => payload::Frames::Len4,
                    other => return Err(format!("--frames: lines or len4, not {other:?}")),
                })
            }
            "--pipeline" => options.pipeline = parse_count(&name, &value()?, 100_000)?,
            "--stall" => options.stall = parse_seconds(&name, &value()?)?,
            "--tls" if inline.is_some() => return Err("--tls takes no value".into()),
            "--tls" => options.tls = true,
            "--ca" => options.ca = Some(PathBuf::from(value()?)),
            "--sni" => options.sni = Some(value()?),
            "--server-pid" => {
                let text = value()?;
                let pid = text
                    .parse::<u32>()
                    .map_err(|_| format!("--server-pid: bad pid {text:?}"))?;
                options.server_pid = Some(pid);
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if options.target.is_none() {
        return Err(format!("--addr or --unix is required\n{USAGE}"));
    }
    if options.duration <= 0.0 {
        return Err("--duration must be above 0".into());
    }
    if options.stall <= 0.0 {
        return Err("--stall must be above 0".into());
    }
    if options.frames.is_some() {
        if options.mode != Mode::Echo {
            return Err("--frames goes with --mode echo".into());
        }
        if options.size < 5 {
            return Err("--frames needs a size of at least 5 bytes".into());
        }
    } else if options.pipeline != 1 {
        return Err("--pipeline goes with --frames".into());
    }
    if options.mode == Mode::Udp {
        if matches!(options.target, Some(Target::Unix(_))) {
            return Err("--mode udp needs --addr, not --unix".into());
        }
        if options.size > MAX_DATAGRAM {
            return Err(format!(
                "--mode udp: size must be at most {MAX_DATAGRAM} bytes"
            ));
        }
    }
    if options.mode == Mode::Ws && !matches!(options.target, Some(Target::Tcp(_))) {
        return Err("--mode ws needs --addr, not --unix".into());
    }
    if options.tls {
        if matches!(options.mode, Mode::Udp | Mode::Ws)
            || !matches!(options.target, Some(Target::Tcp(_)))
        {
            return Err("--tls works with --addr in the echo and http modes".into());
        }
        if options.ca.is_none() {
            return Err("--tls needs --ca FILE (the CA certificate to trust)".into());
        }
    } else if options.ca.is_some() || options.sni.is_some() {
        return Err("--ca and --sni go with --tls".into());
    }
    options.threads = options.threads.min(options.connections);
    Ok(options)
}

/// CPU seconds (user + system) of process `pid` so far, from `/proc/PID/stat`.
fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: fields start after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 14 (utime) and 15 (stime) of proc(5); `rest` starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        return None;
    }
    Some((utime + stime) as f64 / ticks as f64)
}

/// CPU seconds (user + system) used by this process so far.
fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we pass; zeroed is a valid initial value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
}

/// Quotes a string for JSON.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_number(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.3}")
    } else {
        "null".into()
    }
}

fn fatal(target: &str, message: &str) -> ExitCode {
    eprintln!("loadgen: {message}");
    println!(
        "{{\"ok\": false, \"target\": {}, \"fatal\": {}}}",
        json_string(target),
        json_string(message)
    );
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(1);
        }
    };
    let target = options.target.clone().expect("checked by parse_args");
    let target_text = target.to_string();
    let tls = if options.tls {
        let ca = options.ca.as_deref().expect("checked by parse_args");
        let sni = options
            .sni
            .as_deref()
            .or(options.host.as_deref())
            .unwrap_or("");
        match tls::TlsClient::new(ca, sni) {
            Ok(client) => Some(client),
            Err(message) => return fatal(&target_text, &message),
        }
    } else {
        None
    };

    // Connect everything first (with TLS: and complete the handshakes), so connection
    // set-up is neither measured nor warm-up.
    let mut per_thread: Vec<Vec<(u32, Stream)>> = (0..options.threads).map(|_| vec![]).collect();
    for id in 0..options.connections {
        match Stream::connect(&target, options.mode, tls.as_ref(), id as u64) {
            Ok(stream) => per_thread[id % options.threads].push((id as u32, stream)),
            Err(e) => return fatal(&target_text, &format!("connect {target_text}: {e}")),
        }
    }

    let start = Instant::now();
    let window_start = start + Duration::from_secs_f64(options.warmup);
    let window_end = window_start + Duration::from_secs_f64(options.duration);
    let config = Arc::new(Config {
        mode: options.mode,
        size: options.size * options.pipeline,
        stall: Duration::from_secs_f64(options.stall),
        window_start,
        window_end,
    });
    let pattern = Arc::new(match options.frames {
        Some(frames) => payload::Pattern::framed(frames, options.size, options.pipeline),
        None => payload::Pattern::new(options.size),
    });
    let mut handles = Vec::new();
    for (index, conns) in per_thread.into_iter().enumerate() {
        let config = Arc::clone(&config);
        let pattern = Arc::clone(&pattern);
        let handle = std::thread::Builder::new()
            .name(format!("loadgen-{index}"))
            .spawn(move || worker::run(&config, &pattern, conns));
        match handle {
            Ok(handle) => handles.push(handle),
            Err(e) => return fatal(&target_text, &format!("spawn thread: {e}")),
        }
    }

    sleep_until(window_start);
    let client_cpu_before = own_cpu_seconds();
    let server_cpu_before = options.server_pid.and_then(process_cpu_seconds);
    sleep_until(window_end);
    let client_cpu_after = own_cpu_seconds();
    let server_cpu_after = options.server_pid.and_then(process_cpu_seconds);

    let mut total = Outcome::default();
    for handle in handles {
        match handle.join() {
            Ok(outcome) => total.merge(outcome),
            Err(_) => {
                total.errors += 1;
                total.samples.push("worker thread panicked".into());
            }
        }
    }

    let seconds = options.duration;
    let latency: &Histogram = &total.latency;
    let us = |ns: f64| ns / 1000.0;
    let server_cpu = match (server_cpu_before, server_cpu_after) {
        (Some(before), Some(after)) => json_number(after - before),
        _ => "null".into(),
    };
    let samples: Vec<String> = total.samples.iter().map(|s| json_string(s)).collect();
    let ok = total.errors == 0 && total.requests > 0;
    println!(
        concat!(
            "{{\"ok\": {}, \"mode\": {}, \"tls\": {}, \"target\": {}, \"connections\": {}, ",
            "\"threads\": {}, ",
            "\"size\": {}, \"warmup_s\": {}, \"duration_s\": {}, \"requests\": {}, ",
            "\"rps\": {}, \"mib_s\": {}, \"latency_us\": {{\"mean\": {}, \"p50\": {}, ",
            "\"p90\": {}, \"p99\": {}, \"p999\": {}, \"max\": {}}}, \"errors\": {}, ",
            "\"error_samples\": [{}], \"client_cpu_s\": {}, \"server_cpu_s\": {}}}"
        ),
        ok,
        json_string(options.mode.name()),
        options.tls,
        json_string(&target_text),
        options.connections,
        options.threads,
        options.size,
        json_number(options.warmup),
        json_number(seconds),
        total.requests,
        json_number(total.requests as f64 / seconds),
        json_number(total.bytes as f64 / seconds / (1024.0 * 1024.0)),
        json_number(us(latency.mean())),
        json_number(us(latency.percentile(0.50))),
        json_number(us(latency.percentile(0.90))),
        json_number(us(latency.percentile(0.99))),
        json_number(us(latency.percentile(0.999))),
        json_number(us(latency.max() as f64)),
        total.errors,
        samples.join(", "),
        json_number(client_cpu_after - client_cpu_before),
        server_cpu,
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn sizes_and_arguments() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("10k"), Ok(10 * 1024));
        assert_eq!(parse_size("100KiB"), Ok(100 * 1024));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1q").is_err());

        let options = parse_args(args("--mode=http --addr 127.0.0.1:9 -c 3 -t 8 -s 2k")).unwrap();
        assert_eq!(options.mode, Mode::Http);
        assert_eq!(options.threads, 3, "never more threads than connections");
        assert_eq!(options.size, 2048);
        assert!(parse_args(args("-c 3")).is_err(), "a target is required");
        assert!(
            parse_args(args("--addr 10.1.2.3:80")).is_err(),
            "loopback only"
        );

        let options = parse_args(args("--mode udp --addr 127.0.0.1:9 -s 64")).unwrap();
        assert_eq!(options.mode, Mode::Udp);
        assert!(parse_args(args("--mode udp --unix /tmp/x")).is_err());
        assert!(parse_args(args("--mode udp --addr 127.0.0.1:9 -s 64k")).is_err());
        assert!(parse_args(args("--mode udp --addr 127.0.0.1:9 -s 65507")).is_ok());

        let options = parse_args(args("--mode ws --addr 127.0.0.1:9 -s 100k")).unwrap();
        assert_eq!(options.mode, Mode::Ws);
        assert!(parse_args(args("--mode ws --unix /tmp/x")).is_err());
        assert!(parse_args(args("--mode ws --addr 127.0.0.1:9 --tls --ca x")).is_err());
    }

    #[test]
    fn tls_arguments() {
        let options = parse_args(args("--addr 127.0.0.1:9 --tls --ca ca.pem")).unwrap();
        assert!(options.tls);
        assert_eq!(options.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(options.sni, None);
        let options = parse_args(args("--addr [::1]:9 --tls --ca ca.pem --sni=localhost")).unwrap();
        assert_eq!(options.host.as_deref(), Some("::1"));
        assert_eq!(options.sni.as_deref(), Some("localhost"));
        assert!(
            parse_args(args("--addr 127.0.0.1:9 --tls")).is_err(),
            "--ca is required"
        );
        assert!(
            parse_args(args("--addr 127.0.0.1:9 --ca ca.pem")).is_err(),
            "without --tls"
        );
        assert!(parse_args(args("--mode udp --addr 127.0.0.1:9 --tls --ca x")).is_err());
        assert!(parse_args(args("--unix /tmp/x --tls --ca x")).is_err());
        assert!(parse_args(args("--addr 127.0.0.1:9 --tls=1 --ca x")).is_err());
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_without_the_feature_says_how_to_get_it() {
        let message = tls::TlsClient::new(std::path::Path::new("ca.pem"), "127.0.0.1")
            .err()
            .expect("a build without the tls feature made a TLS client");
        assert!(message.contains("--features tls"), "{message}");
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
