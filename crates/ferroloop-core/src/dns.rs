//! Name resolution off the loop thread.
//!
//! `getaddrinfo(3)` and `getnameinfo(3)` block: they read `/etc/hosts`, load NSS
//! modules, and may wait on a DNS server for many seconds. An event loop thread must
//! never make such a call, so every lookup runs on another thread and its result comes
//! back to the loop as an event.
//!
//! asyncio does this in Python: `loop.getaddrinfo` is `run_in_executor(None,
//! socket.getaddrinfo, ...)`, so each lookup is a `concurrent.futures` work item, a hop
//! of the GIL to an executor thread, the Python-level call, and a
//! `call_soon_threadsafe` hop back. ferroloop makes the same hop in Rust: the loop hands
//! a [`Request`] and an id to the [`Resolver`], a worker thread that holds no GIL and
//! touches no Python object runs the libc call through [`resolve`], queues the
//! `(id, Response)` pair and calls the loop's `notify` (its waker). The loop then drains
//! [`Resolver::take_completed`] and only there builds Python objects.
//!
//! [`resolve`] calls libc with exactly the arguments CPython's `socket.getaddrinfo` and
//! `socket.getnameinfo` pass and presents the results the same way (`inet_ntop` text,
//! host-order ports and flow labels, `""` for a missing canonical name), so the loop's
//! answers match the blocking functions', errors included: [`ResolveError::Gai`] is a
//! `socket.gaierror`, [`ResolveError::Os`] (`EAI_SYSTEM`) an `OSError` built from
//! `errno`, [`ResolveError::Invalid`] an `OSError` with a message.
//!
//! The pool starts with no thread. A worker is spawned, up to `max_threads`, only when a
//! request is queued and every existing worker is busy; idle workers sleep on a condition
//! variable and are reused. Dropping the [`Resolver`] tells the workers to stop but does
//! not join them: a worker may be stuck for a long time inside the system resolver, and
//! the loop must not wait for it. Workers share the pool's state through an [`Arc`], so a
//! late worker finishes its lookup, discards the result and exits on its own.

use std::collections::VecDeque;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fmt;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;

/// What `getaddrinfo` is asked; the fields mirror its arguments.
#[derive(Clone, Debug, Default)]
pub struct AddrInfoQuery {
    /// The host (already IDNA-encoded), or `None` for the wildcard/loopback address.
    pub host: Option<CString>,
    /// The port number or service name, or `None`.
    pub service: Option<CString>,
    /// `AF_*` hint (0 for any).
    pub family: i32,
    /// `SOCK_*` hint (0 for any).
    pub socktype: i32,
    /// Protocol hint (0 for any).
    pub protocol: i32,
    /// `AI_*` flags.
    pub flags: i32,
}

/// A socket address as Python's `socket` module presents it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SockAddr {
    /// `(host, port)`.
    V4 {
        /// Dotted-quad text.
        host: String,
        /// Port number.
        port: u16,
    },
    /// `(host, port, flowinfo, scope_id)`.
    V6 {
        /// Text form as `inet_ntop` writes it.
        host: String,
        /// Port number.
        port: u16,
        /// Flow information.
        flowinfo: u32,
        /// Scope id.
        scope_id: u32,
    },
    /// Another family: the raw `sa_family` and the address bytes after it.
    Other {
        /// `sa_family`.
        family: i32,
        /// The rest of the sockaddr.
        data: Vec<u8>,
    },
}

/// One result row of `getaddrinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrInfo {
    /// `AF_*`.
    pub family: i32,
    /// `SOCK_*`.
    pub socktype: i32,
    /// Protocol number.
    pub protocol: i32,
    /// Canonical name (empty unless `AI_CANONNAME` was asked, as in Python).
    pub canonname: String,
    /// The address.
    pub addr: SockAddr,
}

/// What `getnameinfo` is asked: a numeric address and `NI_*` flags.
#[derive(Clone, Debug)]
pub struct NameInfoQuery {
    /// Numeric host text (`127.0.0.1`, `::1`).
    pub host: CString,
    /// Port number.
    pub port: u16,
    /// IPv6 flow information.
    pub flowinfo: u32,
    /// IPv6 scope id.
    pub scope_id: u32,
    /// `NI_*` flags.
    pub flags: i32,
}

/// Why a lookup failed.
#[derive(Debug)]
pub enum ResolveError {
    /// A `getaddrinfo`/`getnameinfo` error code (`EAI_*`) and its `gai_strerror` text:
    /// Python raises `socket.gaierror(code, message)`.
    Gai {
        /// The `EAI_*` code.
        code: i32,
        /// `gai_strerror(code)`.
        message: String,
    },
    /// `EAI_SYSTEM` or another OS error: Python raises `OSError(errno, strerror)`.
    Os(io::Error),
    /// A Python-level argument error detected while resolving (`sockaddr resolved to
    /// multiple addresses` and the like): Python raises `OSError(message)`.
    Invalid(String),
}

/// A lookup to run.
#[derive(Clone, Debug)]
pub enum Request {
    /// `getaddrinfo`.
    AddrInfo(AddrInfoQuery),
    /// `getnameinfo`.
    NameInfo(NameInfoQuery),
}

/// The outcome of a [`Request`].
#[derive(Debug)]
pub enum Response {
    /// `getaddrinfo` rows, in the order the system resolver returned them.
    AddrInfo(Result<Vec<AddrInfo>, ResolveError>),
    /// `getnameinfo`'s `(host, service)`.
    NameInfo(Result<(String, String), ResolveError>),
}

/// Runs lookups synchronously on the calling thread.
///
/// This blocks for as long as the system resolver takes; the loop thread calls it only
/// through a [`Resolver`]. It never panics: whatever libc hands back is checked before
/// it is read.
pub fn resolve(request: &Request) -> Response {
    match request {
        Request::AddrInfo(query) => Response::AddrInfo(lookup_addrinfo(query)),
        Request::NameInfo(query) => Response::NameInfo(lookup_nameinfo(query)),
    }
}

// ---------------------------------------------------------------------------------------
// libc glue
// ---------------------------------------------------------------------------------------

/// `NI_MAXHOST` in glibc and the BSDs; CPython sizes its host buffer with it.
const NI_MAXHOST: usize = 1025;
/// `NI_MAXSERV`; CPython sizes its service buffer with it.
const NI_MAXSERV: usize = 32;
/// `INET6_ADDRSTRLEN`: room for any IPv6 (and so any IPv4) text form plus the NUL.
const INET6_ADDRSTRLEN: usize = 46;
/// `sizeof(((struct sockaddr *)0)->sa_data)`: the bytes CPython reports for a family
/// it does not know.
const SA_DATA_LEN: usize =
    mem::size_of::<libc::sockaddr>() - mem::offset_of!(libc::sockaddr, sa_data);

extern "C" {
    // POSIX (`<arpa/inet.h>`); the `libc` crate does not declare it.
    fn inet_ntop(
        af: c_int,
        src: *const c_void,
        dst: *mut c_char,
        size: libc::socklen_t,
    ) -> *const c_char;
}

/// Turns a nonzero `getaddrinfo`/`getnameinfo` return into an error, the way CPython's
/// `set_gaierror` does. Must be called right after the failing call, before anything
/// else can overwrite `errno`.
fn gai_error(code: c_int) -> ResolveError {
    if code == libc::EAI_SYSTEM {
        return ResolveError::Os(io::Error::last_os_error());
    }
    // SAFETY: `gai_strerror` accepts any code and returns null or a pointer to a static
    // NUL-terminated string (glibc, musl and the BSDs never free or reuse it).
    let text = unsafe { libc::gai_strerror(code) };
    let message = if text.is_null() {
        format!("getaddrinfo error {code}")
    } else {
        // SAFETY: non-null, NUL-terminated and static, as above.
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    };
    ResolveError::Gai { code, message }
}

/// The text in a C character buffer, up to its first NUL (or its end if it has none).
/// Bytes that are not UTF-8 are replaced, so this never fails.
fn buffer_text(buffer: &[c_char]) -> String {
    let bytes: Vec<u8> = buffer
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
    }
}

/// `inet_ntop(AF_INET, ...)`, the text CPython's `make_ipv4_addr` reports.
fn ipv4_text(addr: &libc::in_addr) -> String {
    let mut buffer = [0 as c_char; INET6_ADDRSTRLEN];
    // SAFETY: `addr` points at a live `in_addr`, as `AF_INET` requires; `buffer` is
    // writable for the length passed, which exceeds `INET_ADDRSTRLEN`.
    let written = unsafe {
        inet_ntop(
            libc::AF_INET,
            ptr::from_ref(addr).cast(),
            buffer.as_mut_ptr(),
            buffer.len() as libc::socklen_t,
        )
    };
    if written.is_null() {
        // Cannot happen with a buffer this size; fall back to the same dotted quad.
        return Ipv4Addr::from(u32::from_be(addr.s_addr)).to_string();
    }
    buffer_text(&buffer)
}

/// `inet_ntop(AF_INET6, ...)`, the text CPython's `make_ipv6_addr` reports (no `%scope`).
fn ipv6_text(addr: &libc::in6_addr) -> String {
    let mut buffer = [0 as c_char; INET6_ADDRSTRLEN];
    // SAFETY: `addr` points at a live `in6_addr`, as `AF_INET6` requires; `buffer` is
    // writable for the `INET6_ADDRSTRLEN` bytes passed.
    let written = unsafe {
        inet_ntop(
            libc::AF_INET6,
            ptr::from_ref(addr).cast(),
            buffer.as_mut_ptr(),
            buffer.len() as libc::socklen_t,
        )
    };
    if written.is_null() {
        // Cannot happen with a buffer this size; Rust's form differs only in rare cases.
        return Ipv6Addr::from(addr.s6_addr).to_string();
    }
    buffer_text(&buffer)
}

/// Converts a socket address the way CPython's `makesockaddr` does for
/// `getaddrinfo` rows.
///
/// An address too short for its family is reported as [`SockAddr::Other`]; a missing
/// address (null, or shorter than the family field — CPython would give `None`) as
/// `Other { family: AF_UNSPEC, data: [] }`.
///
/// # Safety
/// `addr` is null or readable for `len` bytes.
unsafe fn convert_sockaddr(addr: *const libc::sockaddr, len: usize) -> SockAddr {
    let family_end =
        mem::offset_of!(libc::sockaddr, sa_family) + mem::size_of::<libc::sa_family_t>();
    if addr.is_null() || len < family_end {
        return SockAddr::Other {
            family: libc::AF_UNSPEC,
            data: Vec::new(),
        };
    }
    // SAFETY: `addr` is readable for `len >= family_end` bytes (caller's contract), which
    // covers `sa_family`; the read is unaligned because C owes us no alignment here.
    let family = c_int::from(unsafe { ptr::addr_of!((*addr).sa_family).read_unaligned() });
    if family == libc::AF_INET && len >= mem::size_of::<libc::sockaddr_in>() {
        // SAFETY: readable for `len >= size_of::<sockaddr_in>()` bytes; every bit
        // pattern is a valid `sockaddr_in`.
        let sin = unsafe { addr.cast::<libc::sockaddr_in>().read_unaligned() };
        return SockAddr::V4 {
            host: ipv4_text(&sin.sin_addr),
            port: u16::from_be(sin.sin_port),
        };
    }
    if family == libc::AF_INET6 && len >= mem::size_of::<libc::sockaddr_in6>() {
        // SAFETY: readable for `len >= size_of::<sockaddr_in6>()` bytes; every bit
        // pattern is a valid `sockaddr_in6`.
        let sin6 = unsafe { addr.cast::<libc::sockaddr_in6>().read_unaligned() };
        return SockAddr::V6 {
            host: ipv6_text(&sin6.sin6_addr),
            port: u16::from_be(sin6.sin6_port),
            flowinfo: u32::from_be(sin6.sin6_flowinfo),
            scope_id: sin6.sin6_scope_id,
        };
    }
    // CPython returns `(sa_family, sa_data)` with all of `sa_data`; bytes the address does
    // not have are left zero rather than read past its end.
    let start = mem::offset_of!(libc::sockaddr, sa_data);
    let end = len.min(mem::size_of::<libc::sockaddr>());
    let mut data = vec![0u8; SA_DATA_LEN];
    if end > start {
        // SAFETY: bytes `start..end` lie within the `len` readable bytes, and
        // `end - start <= SA_DATA_LEN` fits in `data`; the regions cannot overlap.
        unsafe {
            ptr::copy_nonoverlapping(addr.cast::<u8>().add(start), data.as_mut_ptr(), end - start);
        }
    }
    SockAddr::Other { family, data }
}

/// Converts one `getaddrinfo` row as CPython's `socket.getaddrinfo` does.
///
/// # Safety
/// `row.ai_canonname` is null or a NUL-terminated string, and `row.ai_addr` is null or
/// readable for `row.ai_addrlen` bytes (true of every row `getaddrinfo` returns).
unsafe fn convert_row(row: &libc::addrinfo) -> AddrInfo {
    let canonname = if row.ai_canonname.is_null() {
        String::new()
    } else {
        // SAFETY: non-null and NUL-terminated (caller's contract).
        unsafe { CStr::from_ptr(row.ai_canonname) }
            .to_string_lossy()
            .into_owned()
    };
    // SAFETY: `ai_addr` is null or readable for `ai_addrlen` bytes (caller's contract).
    let addr = unsafe { convert_sockaddr(row.ai_addr, row.ai_addrlen as usize) };
    AddrInfo {
        family: row.ai_family,
        socktype: row.ai_socktype,
        protocol: row.ai_protocol,
        canonname,
        addr,
    }
}

/// The list `getaddrinfo` allocates; freed with `freeaddrinfo` on drop.
struct AddrInfoList {
    head: *mut libc::addrinfo,
}

impl AddrInfoList {
    /// Calls `getaddrinfo(host, service, hints)`.
    fn lookup(
        host: Option<&CStr>,
        service: Option<&CStr>,
        family: c_int,
        socktype: c_int,
        protocol: c_int,
        flags: c_int,
    ) -> Result<AddrInfoList, ResolveError> {
        // SAFETY: `addrinfo` is a C struct of integers and raw pointers, for which all
        // zero bytes (null pointers) is a valid value — and the one `getaddrinfo` wants
        // in the fields a hint does not set.
        let mut hints: libc::addrinfo = unsafe { mem::zeroed() };
        hints.ai_family = family;
        hints.ai_socktype = socktype;
        hints.ai_protocol = protocol;
        hints.ai_flags = flags;
        let mut head: *mut libc::addrinfo = ptr::null_mut();
        // SAFETY: `host` and `service` are null or NUL-terminated strings that outlive
        // the call, `hints` is initialised, and `head` is a valid place for the result.
        let code = unsafe {
            libc::getaddrinfo(
                host.map_or(ptr::null(), CStr::as_ptr),
                service.map_or(ptr::null(), CStr::as_ptr),
                &hints,
                &mut head,
            )
        };
        if code != 0 {
            // On failure `head` is unspecified (CPython gh-100795): never free it.
            return Err(gai_error(code));
        }
        Ok(AddrInfoList { head })
    }

    /// The rows, in the order `getaddrinfo` linked them.
    fn rows(&self) -> impl Iterator<Item = &libc::addrinfo> + '_ {
        let mut next = self.head.cast_const();
        std::iter::from_fn(move || {
            // SAFETY: `next` is the list head or an `ai_next` link of it: null or a row
            // that lives until `freeaddrinfo` in `drop`, which `&self` holds off.
            let row = unsafe { next.as_ref() }?;
            next = row.ai_next.cast_const();
            Some(row)
        })
    }
}

impl Drop for AddrInfoList {
    fn drop(&mut self) {
        if !self.head.is_null() {
            // SAFETY: `head` came from a successful `getaddrinfo` and is freed only here.
            unsafe { libc::freeaddrinfo(self.head) };
        }
    }
}

/// `socket.getaddrinfo(host, service, family, socktype, protocol, flags)`.
fn lookup_addrinfo(query: &AddrInfoQuery) -> Result<Vec<AddrInfo>, ResolveError> {
    let list = AddrInfoList::lookup(
        query.host.as_deref(),
        query.service.as_deref(),
        query.family,
        query.socktype,
        query.protocol,
        query.flags,
    )?;
    // SAFETY: every row comes from `getaddrinfo`, which meets `convert_row`'s contract.
    Ok(list.rows().map(|row| unsafe { convert_row(row) }).collect())
}

/// `socket.getnameinfo((host, port, flowinfo, scope_id), flags)`, step by step as
/// CPython's `socket_getnameinfo` does it.
fn lookup_nameinfo(query: &NameInfoQuery) -> Result<(String, String), ResolveError> {
    // The port goes in as a decimal service, the host must be numeric.
    let service = CString::new(query.port.to_string()).unwrap_or_default();
    let list = AddrInfoList::lookup(
        Some(&query.host),
        Some(&service),
        libc::AF_UNSPEC,
        libc::SOCK_DGRAM,
        0,
        libc::AI_NUMERICHOST,
    )?;
    let mut rows = list.rows();
    let Some(row) = rows.next() else {
        // Success with no row: no libc does this, and CPython would crash.
        return Err(gai_error(libc::EAI_NONAME));
    };
    if rows.next().is_some() {
        return Err(ResolveError::Invalid(
            "sockaddr resolved to multiple addresses".to_owned(),
        ));
    }

    // Copy the address out so the IPv6 fields can be set on our own memory.
    // SAFETY: `sockaddr_storage` is plain bytes; all zeros is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = if row.ai_addr.is_null() {
        0
    } else {
        (row.ai_addrlen as usize).min(mem::size_of::<libc::sockaddr_storage>())
    };
    // SAFETY: `ai_addr` is readable for `ai_addrlen >= len` bytes, `storage` writable for
    // `len <= size_of::<sockaddr_storage>()` bytes, and they do not overlap.
    unsafe {
        ptr::copy_nonoverlapping(
            row.ai_addr.cast::<u8>().cast_const(),
            ptr::from_mut(&mut storage).cast::<u8>(),
            len,
        );
    }
    if row.ai_family == libc::AF_INET6 && len >= mem::size_of::<libc::sockaddr_in6>() {
        // SAFETY: `sockaddr_storage` is large and aligned enough for any sockaddr, and
        // its first `len` bytes hold the `sockaddr_in6` copied above.
        let sin6 = unsafe { &mut *ptr::from_mut(&mut storage).cast::<libc::sockaddr_in6>() };
        sin6.sin6_flowinfo = query.flowinfo.to_be();
        sin6.sin6_scope_id = query.scope_id;
    }

    let mut host = [0 as c_char; NI_MAXHOST];
    let mut serv = [0 as c_char; NI_MAXSERV];
    // SAFETY: `storage` is readable for `len` bytes; `host` and `serv` are writable for
    // the lengths passed. getnameinfo writes NUL-terminated text into them.
    let code = unsafe {
        libc::getnameinfo(
            ptr::from_ref(&storage).cast::<libc::sockaddr>(),
            len as libc::socklen_t,
            host.as_mut_ptr(),
            host.len() as _,
            serv.as_mut_ptr(),
            serv.len() as _,
            query.flags,
        )
    };
    if code != 0 {
        return Err(gai_error(code));
    }
    Ok((buffer_text(&host), buffer_text(&serv)))
}

// ---------------------------------------------------------------------------------------
// The worker pool
// ---------------------------------------------------------------------------------------

/// The name every worker thread carries (seen in `top -H`, `py-spy`, core dumps).
const THREAD_NAME: &str = "ferroloop-dns";

/// A pool of worker threads that run lookups and hand back results.
///
/// `notify` is called by a worker with no lock of the pool held, so it may call back
/// into the pool (`take_completed`, `submit`). After the pool is dropped, a worker
/// that was already past its last check may still call `notify` once; it must stay
/// harmless (a waker whose loop is gone is).
pub struct Resolver {
    shared: Arc<Shared>,
}

/// What the pool and its workers share. Workers hold their own `Arc`, so it outlives
/// the [`Resolver`] for as long as any worker is still inside a lookup.
struct Shared {
    /// The most workers ever alive at once (at least 1).
    max_threads: usize,
    /// Queue and worker accounting.
    state: Mutex<State>,
    /// Signalled when work is queued and when the pool shuts down.
    work_ready: Condvar,
    /// Set (under `state`'s lock) when the `Resolver` is dropped.
    shutdown: AtomicBool,
    /// Finished lookups waiting for `take_completed`.
    completed: Mutex<Vec<(u64, Response)>>,
    /// Called after each completed lookup.
    notify: Arc<dyn Fn() + Send + Sync>,
}

struct State {
    /// Submitted lookups no worker has taken yet, oldest first.
    queue: VecDeque<(u64, Request)>,
    /// Workers spawned and not yet exited.
    workers: usize,
    /// Workers not inside a lookup: waiting for work, or spawned and not yet started.
    available: usize,
}

impl Shared {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic elsewhere while holding it; the state is a queue
        // and counters that every holder leaves consistent, so keep going.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_completed(&self) -> MutexGuard<'_, Vec<(u64, Response)>> {
        self.completed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls `notify`; a panic in it must not kill the worker and so stall the pool.
    fn notify(&self) {
        let notify = &self.notify;
        let _ = panic::catch_unwind(AssertUnwindSafe(|| notify()));
    }

    /// Completes lookups that will never run (no thread could be spawned) with `error`.
    fn fail(&self, requests: Vec<(u64, Request)>, error: &io::Error) {
        if requests.is_empty() {
            return;
        }
        {
            let mut completed = self.lock_completed();
            for (id, request) in requests {
                let error = match error.raw_os_error() {
                    Some(errno) => io::Error::from_raw_os_error(errno),
                    None => io::Error::new(error.kind(), error.to_string()),
                };
                completed.push((id, failed_response(&request, ResolveError::Os(error))));
            }
        }
        self.notify();
    }
}

/// The response of the right kind for `request`, carrying `error`.
fn failed_response(request: &Request, error: ResolveError) -> Response {
    match request {
        Request::AddrInfo(_) => Response::AddrInfo(Err(error)),
        Request::NameInfo(_) => Response::NameInfo(Err(error)),
    }
}

/// [`resolve`], with a panic (a bug) turned into an error response instead of a dead
/// worker whose lookup would never complete.
fn resolve_guarded(request: &Request) -> Response {
    panic::catch_unwind(AssertUnwindSafe(|| resolve(request))).unwrap_or_else(|_| {
        failed_response(
            request,
            ResolveError::Invalid("internal error: the name lookup panicked".to_owned()),
        )
    })
}

/// A worker: takes lookups until the pool is dropped.
fn worker_main(shared: Arc<Shared>) {
    let mut state = shared.lock_state();
    loop {
        if shared.shutdown.load(Ordering::Acquire) {
            state.workers = state.workers.saturating_sub(1);
            state.available = state.available.saturating_sub(1);
            return;
        }
        let Some((id, request)) = state.queue.pop_front() else {
            state = shared
                .work_ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            continue;
        };
        state.available = state.available.saturating_sub(1);
        drop(state);

        // No lock is held from here on: the lookup may take seconds.
        let response = resolve_guarded(&request);
        drop(request);
        if !shared.shutdown.load(Ordering::Acquire) {
            shared.lock_completed().push((id, response));
            shared.notify();
        }

        state = shared.lock_state();
        state.available += 1;
    }
}

impl Resolver {
    /// A pool of at most `max_threads` workers (spawned on demand); `notify` is called
    /// from a worker after each completed lookup (the loop passes a waker).
    pub fn new(max_threads: usize, notify: Arc<dyn Fn() + Send + Sync>) -> Resolver {
        Resolver {
            shared: Arc::new(Shared {
                max_threads: max_threads.max(1),
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    workers: 0,
                    available: 0,
                }),
                work_ready: Condvar::new(),
                shutdown: AtomicBool::new(false),
                completed: Mutex::new(Vec::new()),
                notify,
            }),
        }
    }

    /// Queues a lookup; its response comes back from [`Resolver::take_completed`] under `id`.
    ///
    /// Never blocks on a lookup. It spawns a worker when every existing one is busy and
    /// the pool is below `max_threads`. If the system refuses a thread and no worker is
    /// left to run the queue, the queued lookups complete at once with
    /// [`ResolveError::Os`] (and `notify` is called from this thread).
    pub fn submit(&self, id: u64, request: Request) {
        let shared = &self.shared;
        let mut state = shared.lock_state();
        state.queue.push_back((id, request));
        if state.queue.len() <= state.available {
            // A worker that is not busy will take it.
            drop(state);
            shared.work_ready.notify_one();
            return;
        }
        if state.workers >= shared.max_threads {
            // Every worker is busy and the pool is full: the next one free takes it.
            return;
        }
        // Count the new worker before it exists so concurrent submits see it.
        state.workers += 1;
        state.available += 1;
        drop(state);

        let worker_shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || worker_main(worker_shared));
        // The `JoinHandle` is dropped: workers are detached, never joined.
        if let Err(error) = spawned {
            let mut state = shared.lock_state();
            state.workers = state.workers.saturating_sub(1);
            state.available = state.available.saturating_sub(1);
            let stranded: Vec<(u64, Request)> = if state.workers == 0 {
                state.queue.drain(..).collect()
            } else {
                Vec::new()
            };
            drop(state);
            shared.fail(stranded, &error);
        }
    }

    /// Removes and returns every completed lookup.
    pub fn take_completed(&self) -> Vec<(u64, Response)> {
        mem::take(&mut *self.shared.lock_completed())
    }

    /// Workers currently alive (spawned and not exited).
    #[cfg(test)]
    fn worker_count(&self) -> usize {
        self.shared.lock_state().workers
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock_state();
        f.debug_struct("Resolver")
            .field("max_threads", &self.shared.max_threads)
            .field("workers", &state.workers)
            .field("queued", &state.queue.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Resolver {
    /// Tells the workers to exit and returns at once. Queued lookups are discarded;
    /// lookups in progress finish in their threads and their results are discarded.
    fn drop(&mut self) {
        let shared = &self.shared;
        let abandoned = {
            let mut state = shared.lock_state();
            // Stored under the lock, so no worker can check it and then miss the wakeup.
            shared.shutdown.store(true, Ordering::Release);
            mem::take(&mut state.queue)
        };
        shared.work_ready.notify_all();
        drop(abandoned);
        drop(mem::take(&mut *shared.lock_completed()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    fn cstring(text: &str) -> CString {
        CString::new(text).unwrap()
    }

    fn addrinfo(query: AddrInfoQuery) -> Result<Vec<AddrInfo>, ResolveError> {
        match resolve(&Request::AddrInfo(query)) {
            Response::AddrInfo(result) => result,
            other => panic!("wrong response kind: {other:?}"),
        }
    }

    fn nameinfo(query: NameInfoQuery) -> Result<(String, String), ResolveError> {
        match resolve(&Request::NameInfo(query)) {
            Response::NameInfo(result) => result,
            other => panic!("wrong response kind: {other:?}"),
        }
    }

    fn query(host: Option<&str>, service: Option<&str>) -> AddrInfoQuery {
        AddrInfoQuery {
            host: host.map(cstring),
            service: service.map(cstring),
            ..AddrInfoQuery::default()
        }
    }

    fn name_query(host: &str, port: u16, flags: i32) -> NameInfoQuery {
        NameInfoQuery {
            host: cstring(host),
            port,
            flowinfo: 0,
            scope_id: 0,
            flags,
        }
    }

    fn gai_code(error: ResolveError) -> i32 {
        match error {
            ResolveError::Gai { code, message } => {
                assert!(!message.is_empty());
                code
            }
            other => panic!("expected a gaierror, got {other:?}"),
        }
    }

    fn v4(host: &str, port: u16) -> SockAddr {
        SockAddr::V4 {
            host: host.to_owned(),
            port,
        }
    }

    fn v6(host: &str, port: u16, flowinfo: u32, scope_id: u32) -> SockAddr {
        SockAddr::V6 {
            host: host.to_owned(),
            port,
            flowinfo,
            scope_id,
        }
    }

    // ---- getaddrinfo ----------------------------------------------------------------

    #[test]
    fn numeric_ipv4_stream() {
        let rows = addrinfo(AddrInfoQuery {
            socktype: libc::SOCK_STREAM,
            ..query(Some("127.0.0.1"), Some("80"))
        })
        .unwrap();
        assert_eq!(
            rows,
            vec![AddrInfo {
                family: libc::AF_INET,
                socktype: libc::SOCK_STREAM,
                protocol: libc::IPPROTO_TCP,
                canonname: String::new(),
                addr: v4("127.0.0.1", 80),
            }]
        );
    }

    #[test]
    fn numeric_ipv4_every_socktype() {
        let rows = addrinfo(query(Some("127.0.0.1"), Some("80"))).unwrap();
        let kinds: Vec<(i32, i32)> = rows.iter().map(|r| (r.socktype, r.protocol)).collect();
        assert!(
            kinds.contains(&(libc::SOCK_STREAM, libc::IPPROTO_TCP)),
            "{rows:?}"
        );
        assert!(
            kinds.contains(&(libc::SOCK_DGRAM, libc::IPPROTO_UDP)),
            "{rows:?}"
        );
        for row in &rows {
            assert_eq!(row.family, libc::AF_INET);
            assert_eq!(row.addr, v4("127.0.0.1", 80));
            assert_eq!(row.canonname, "");
        }
    }

    #[test]
    fn numeric_ipv6_stream() {
        let rows = addrinfo(AddrInfoQuery {
            socktype: libc::SOCK_STREAM,
            ..query(Some("::1"), Some("80"))
        })
        .unwrap();
        assert_eq!(
            rows,
            vec![AddrInfo {
                family: libc::AF_INET6,
                socktype: libc::SOCK_STREAM,
                protocol: libc::IPPROTO_TCP,
                canonname: String::new(),
                addr: v6("::1", 80, 0, 0),
            }]
        );
    }

    #[test]
    fn ipv6_text_is_inet_ntop_and_scope_is_separate() {
        // Forms where inet_ntop and RFC 5952 formatting could disagree, as CPython shows them.
        for (input, text) in [
            ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
            ("::1.2.3.4", "::1.2.3.4"),
            ("FE80:0:0:0:0:0:0:1", "fe80::1"),
        ] {
            let rows = addrinfo(AddrInfoQuery {
                socktype: libc::SOCK_STREAM,
                ..query(Some(input), Some("443"))
            })
            .unwrap();
            assert_eq!(rows.len(), 1, "{input}: {rows:?}");
            assert_eq!(rows[0].addr, v6(text, 443, 0, 0), "{input}");
        }
        let rows = addrinfo(AddrInfoQuery {
            socktype: libc::SOCK_STREAM,
            ..query(Some("fe80::1%1"), Some("443"))
        })
        .unwrap();
        assert_eq!(rows[0].addr, v6("fe80::1", 443, 0, 1));
    }

    #[test]
    fn localhost_is_loopback() {
        let rows = addrinfo(AddrInfoQuery {
            socktype: libc::SOCK_STREAM,
            ..query(Some("localhost"), Some("80"))
        })
        .unwrap();
        assert!(!rows.is_empty());
        for row in &rows {
            match &row.addr {
                SockAddr::V4 { host, port } => {
                    assert!(host.starts_with("127."), "{row:?}");
                    assert_eq!(*port, 80);
                }
                SockAddr::V6 { host, port, .. } => {
                    assert_eq!(host, "::1");
                    assert_eq!(*port, 80);
                }
                SockAddr::Other { .. } => panic!("unexpected family: {row:?}"),
            }
        }
    }

    #[test]
    fn passive_without_host_is_the_wildcard() {
        let rows = addrinfo(AddrInfoQuery {
            family: libc::AF_INET,
            socktype: libc::SOCK_STREAM,
            flags: libc::AI_PASSIVE,
            ..query(None, Some("8080"))
        })
        .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].addr, v4("0.0.0.0", 8080));

        let rows = addrinfo(AddrInfoQuery {
            family: libc::AF_INET6,
            socktype: libc::SOCK_STREAM,
            flags: libc::AI_PASSIVE,
            ..query(None, Some("8080"))
        })
        .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].addr, v6("::", 8080, 0, 0));
    }

    #[test]
    fn no_host_without_passive_is_loopback() {
        let rows = addrinfo(AddrInfoQuery {
            family: libc::AF_INET,
            socktype: libc::SOCK_STREAM,
            ..query(None, Some("80"))
        })
        .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].addr, v4("127.0.0.1", 80));
    }

    #[test]
    fn canonname_only_when_asked() {
        let rows = addrinfo(AddrInfoQuery {
            flags: libc::AI_CANONNAME,
            ..query(Some("127.0.0.1"), Some("80"))
        })
        .unwrap();
        // glibc puts the name on the first row only; the others read "" as in Python.
        assert_eq!(rows[0].canonname, "127.0.0.1");
        let rows = addrinfo(query(Some("127.0.0.1"), Some("80"))).unwrap();
        assert!(rows.iter().all(|row| row.canonname.is_empty()));
    }

    #[test]
    fn unknown_host_is_a_gaierror() {
        // No network here: EAI_NONAME or EAI_AGAIN, both a gaierror.
        let error = addrinfo(query(Some("nonexistent.invalid"), Some("80"))).unwrap_err();
        assert_ne!(gai_code(error), 0);
    }

    #[test]
    fn numerichost_rejects_a_name_with_eai_noname() {
        let error = addrinfo(AddrInfoQuery {
            flags: libc::AI_NUMERICHOST,
            ..query(Some("localhost"), Some("80"))
        })
        .unwrap_err();
        match error {
            ResolveError::Gai { code, message } => {
                assert_eq!(code, libc::EAI_NONAME);
                assert_eq!(message, gai_strerror_text(libc::EAI_NONAME));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_service_is_eai_service() {
        let error = addrinfo(AddrInfoQuery {
            socktype: libc::SOCK_STREAM,
            ..query(Some("127.0.0.1"), Some("no-such-service-ferroloop"))
        })
        .unwrap_err();
        assert_eq!(gai_code(error), libc::EAI_SERVICE);
    }

    #[test]
    fn unknown_family_is_eai_family() {
        let error = addrinfo(AddrInfoQuery {
            family: 12345,
            ..query(Some("127.0.0.1"), Some("80"))
        })
        .unwrap_err();
        assert_eq!(gai_code(error), libc::EAI_FAMILY);
    }

    #[test]
    fn no_host_and_no_service_is_eai_noname() {
        let error = addrinfo(query(None, None)).unwrap_err();
        assert_eq!(gai_code(error), libc::EAI_NONAME);
    }

    fn gai_strerror_text(code: i32) -> String {
        match gai_error(code) {
            ResolveError::Gai { message, .. } => message,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn eai_system_is_an_os_error() {
        assert!(matches!(gai_error(libc::EAI_SYSTEM), ResolveError::Os(_)));
        assert!(!gai_strerror_text(libc::EAI_AGAIN).is_empty());
        // An unknown code still gets some text, never a crash.
        assert!(!gai_strerror_text(-12345).is_empty());
    }

    // ---- rows C hands back -----------------------------------------------------------

    fn empty_row() -> libc::addrinfo {
        // SAFETY: all zeros (null pointers) is a valid `addrinfo`.
        unsafe { mem::zeroed() }
    }

    #[test]
    fn row_with_null_pointers() {
        let row = libc::addrinfo {
            ai_family: libc::AF_INET,
            ai_socktype: libc::SOCK_STREAM,
            ai_addrlen: 16,
            ..empty_row()
        };
        // SAFETY: both pointers are null.
        let converted = unsafe { convert_row(&row) };
        assert_eq!(converted.canonname, "");
        assert_eq!(converted.family, libc::AF_INET);
        assert_eq!(
            converted.addr,
            SockAddr::Other {
                family: libc::AF_UNSPEC,
                data: Vec::new()
            }
        );
    }

    #[test]
    fn row_with_a_short_or_foreign_address() {
        // SAFETY: all zeros is a valid `sockaddr_in`.
        let mut sin: libc::sockaddr_in = unsafe { mem::zeroed() };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = 80u16.to_be();
        sin.sin_addr.s_addr = u32::from_be_bytes([10, 1, 2, 3]).to_be();
        let addr = ptr::from_ref(&sin).cast::<libc::sockaddr>();

        // SAFETY: `sin` is readable for its whole size.
        let whole = unsafe { convert_sockaddr(addr, mem::size_of::<libc::sockaddr_in>()) };
        assert_eq!(whole, v4("10.1.2.3", 80));

        // Too short for AF_INET: the bytes it has, zero-padded like CPython's sa_data.
        // SAFETY: 6 bytes of `sin` are readable.
        let short = unsafe { convert_sockaddr(addr, 6) };
        assert_eq!(
            short,
            SockAddr::Other {
                family: libc::AF_INET,
                data: vec![0, 80, 10, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            }
        );

        // Shorter than the family field: no address at all.
        // SAFETY: 1 byte is readable.
        let tiny = unsafe { convert_sockaddr(addr, 1) };
        assert_eq!(
            tiny,
            SockAddr::Other {
                family: libc::AF_UNSPEC,
                data: Vec::new()
            }
        );

        // A family Python does not decode: `(family, sa_data)`.
        // SAFETY: all zeros is a valid `sockaddr_un`.
        let mut sun: libc::sockaddr_un = unsafe { mem::zeroed() };
        sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (dst, src) in sun.sun_path.iter_mut().zip(b"/tmp/sock") {
            *dst = *src as c_char;
        }
        // SAFETY: `sun` is readable for its whole size.
        let unix = unsafe {
            convert_sockaddr(
                ptr::from_ref(&sun).cast(),
                mem::size_of::<libc::sockaddr_un>(),
            )
        };
        let mut expected = b"/tmp/sock".to_vec();
        expected.resize(SA_DATA_LEN, 0);
        assert_eq!(
            unix,
            SockAddr::Other {
                family: libc::AF_UNIX,
                data: expected
            }
        );
    }

    #[test]
    fn row_with_invalid_utf8_canonname() {
        let mut name = *b"caf\xe9\0";
        let row = libc::addrinfo {
            ai_canonname: name.as_mut_ptr().cast(),
            ..empty_row()
        };
        // SAFETY: `ai_canonname` is NUL-terminated; `ai_addr` is null.
        let converted = unsafe { convert_row(&row) };
        assert_eq!(converted.canonname, "caf\u{fffd}");
    }

    // ---- getnameinfo -----------------------------------------------------------------

    #[test]
    fn nameinfo_numeric_ipv4() {
        let result = nameinfo(name_query(
            "127.0.0.1",
            80,
            libc::NI_NUMERICHOST | libc::NI_NUMERICSERV,
        ));
        assert_eq!(result.unwrap(), ("127.0.0.1".to_owned(), "80".to_owned()));
    }

    #[test]
    fn nameinfo_numeric_ipv6_takes_the_scope_id() {
        let flags = libc::NI_NUMERICHOST | libc::NI_NUMERICSERV;
        let result = nameinfo(name_query("::1", 8080, flags)).unwrap();
        assert_eq!(result, ("::1".to_owned(), "8080".to_owned()));

        let (host, serv) = nameinfo(NameInfoQuery {
            flowinfo: 7,
            scope_id: 1,
            ..name_query("fe80::1", 443, flags)
        })
        .unwrap();
        // `%lo` or `%1`, depending on whether the index has an interface name.
        assert!(host.starts_with("fe80::1%"), "{host}");
        assert_eq!(serv, "443");
    }

    #[test]
    fn nameinfo_without_numeric_flags_does_not_fail_on_loopback() {
        // "localhost"/"http" here; the exact names depend on /etc/hosts and /etc/services.
        let (host, serv) = nameinfo(name_query("127.0.0.1", 80, 0)).unwrap();
        assert!(!host.is_empty());
        assert!(!serv.is_empty());
    }

    #[test]
    fn nameinfo_rejects_a_name() {
        let error = nameinfo(name_query("localhost", 80, 0)).unwrap_err();
        assert_eq!(gai_code(error), libc::EAI_NONAME);
    }

    #[test]
    fn nameinfo_namereqd_with_numeric_host_is_a_gaierror_or_a_name() {
        // NI_NAMEREQD on an address with no name must be a gaierror, never a crash;
        // 192.0.2.1 (TEST-NET-1) has no /etc/hosts entry.
        match nameinfo(name_query("192.0.2.1", 80, libc::NI_NAMEREQD)) {
            Ok((host, _)) => assert!(!host.is_empty()),
            Err(error) => assert_ne!(gai_code(error), 0),
        }
    }

    // ---- the pool --------------------------------------------------------------------

    fn counting_notify() -> (Arc<AtomicUsize>, Arc<dyn Fn() + Send + Sync>) {
        let count = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&count);
        let notify: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        (count, notify)
    }

    fn loopback_request(port: u16) -> Request {
        Request::AddrInfo(AddrInfoQuery {
            family: libc::AF_INET,
            socktype: libc::SOCK_STREAM,
            ..query(Some("127.0.0.1"), Some(&port.to_string()))
        })
    }

    /// Collects `n` completions, failing after ten seconds.
    fn collect(resolver: &Resolver, n: usize) -> Vec<(u64, Response)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut done = Vec::new();
        while done.len() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} came back",
                done.len()
            );
            done.extend(resolver.take_completed());
            thread::sleep(Duration::from_millis(1));
        }
        done
    }

    #[test]
    fn resolver_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Resolver>();
        assert_send_sync::<Request>();
        assert_send_sync::<Response>();
    }

    #[test]
    fn fifty_submits_come_back_once_each() {
        let (notified, notify) = counting_notify();
        let resolver = Resolver::new(4, notify);
        for id in 0..50u64 {
            resolver.submit(id, loopback_request(1000 + id as u16));
        }
        let mut done = collect(&resolver, 50);
        thread::sleep(Duration::from_millis(20));
        assert!(
            resolver.take_completed().is_empty(),
            "a lookup came back twice"
        );
        done.sort_by_key(|(id, _)| *id);
        for (expected, (id, response)) in done.into_iter().enumerate() {
            assert_eq!(id, expected as u64);
            match response {
                Response::AddrInfo(Ok(rows)) => {
                    assert_eq!(rows.len(), 1);
                    assert_eq!(rows[0].addr, v4("127.0.0.1", 1000 + id as u16));
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(notified.load(Ordering::SeqCst) >= 50);
        assert!(resolver.worker_count() <= 4);
    }

    #[test]
    fn mixed_requests_keep_their_kind() {
        let (_, notify) = counting_notify();
        let resolver = Resolver::new(2, notify);
        resolver.submit(1, loopback_request(80));
        resolver.submit(
            2,
            Request::NameInfo(name_query(
                "127.0.0.1",
                80,
                libc::NI_NUMERICHOST | libc::NI_NUMERICSERV,
            )),
        );
        resolver.submit(3, Request::NameInfo(name_query("not a host", 80, 0)));
        let mut done = collect(&resolver, 3);
        done.sort_by_key(|(id, _)| *id);
        assert!(matches!(done[0].1, Response::AddrInfo(Ok(_))));
        match &done[1].1 {
            Response::NameInfo(Ok(pair)) => {
                assert_eq!(pair, &("127.0.0.1".to_owned(), "80".to_owned()));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            done[2].1,
            Response::NameInfo(Err(ResolveError::Gai { .. }))
        ));
    }

    #[test]
    fn workers_are_spawned_only_when_all_are_busy() {
        let (_, notify) = counting_notify();
        let resolver = Resolver::new(8, notify);
        assert_eq!(
            resolver.worker_count(),
            0,
            "no thread before the first lookup"
        );
        for id in 0..10 {
            resolver.submit(id, loopback_request(80));
            collect(&resolver, 1);
            // Wait until the worker is back to waiting before the next submit.
            let deadline = Instant::now() + Duration::from_secs(10);
            while resolver.shared.lock_state().available != 1 {
                assert!(Instant::now() < deadline);
                thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(
            resolver.worker_count(),
            1,
            "one sequential user needs one worker"
        );
    }

    #[test]
    fn max_threads_bounds_the_pool_and_zero_means_one() {
        for (max, bound) in [(2, 2), (0, 1)] {
            let (_, notify) = counting_notify();
            let resolver = Resolver::new(max, notify);
            for id in 0..40 {
                resolver.submit(id, loopback_request(80));
                assert!(resolver.worker_count() <= bound);
            }
            assert_eq!(collect(&resolver, 40).len(), 40);
            assert!(resolver.worker_count() <= bound);
        }
    }

    #[test]
    fn workers_are_named() {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let notify: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            let name = thread::current().name().map(str::to_owned);
            let _ = tx.lock().unwrap().send(name);
        });
        let resolver = Resolver::new(1, notify);
        resolver.submit(1, loopback_request(80));
        let name = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(name.as_deref(), Some(THREAD_NAME));
    }

    #[test]
    fn notify_may_call_back_into_the_pool() {
        let slot: Arc<Mutex<Option<Arc<Resolver>>>> = Arc::new(Mutex::new(None));
        let taken = Arc::new(AtomicUsize::new(0));
        let notify: Arc<dyn Fn() + Send + Sync> = {
            let slot = Arc::clone(&slot);
            let taken = Arc::clone(&taken);
            Arc::new(move || {
                let resolver = slot.lock().unwrap().clone();
                if let Some(resolver) = resolver {
                    taken.fetch_add(resolver.take_completed().len(), Ordering::SeqCst);
                }
            })
        };
        let resolver = Arc::new(Resolver::new(2, notify));
        *slot.lock().unwrap() = Some(Arc::clone(&resolver));
        for id in 0..10 {
            resolver.submit(id, loopback_request(80));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while taken.load(Ordering::SeqCst) < 10 {
            assert!(Instant::now() < deadline, "deadlock or lost results");
            thread::sleep(Duration::from_millis(1));
        }
        slot.lock().unwrap().take();
    }

    #[test]
    fn a_panicking_notify_does_not_stall_the_pool() {
        let notify: Arc<dyn Fn() + Send + Sync> = Arc::new(|| panic!("notify panics"));
        let resolver = Resolver::new(1, notify);
        for id in 0..5 {
            resolver.submit(id, loopback_request(80));
        }
        assert_eq!(collect(&resolver, 5).len(), 5);
    }

    #[test]
    fn drop_with_work_in_flight() {
        let (_, notify) = counting_notify();
        let resolver = Resolver::new(4, notify);
        for id in 0..100 {
            resolver.submit(id, loopback_request(80));
        }
        let weak = Arc::downgrade(&resolver.shared);
        let started = Instant::now();
        drop(resolver);
        assert!(started.elapsed() < Duration::from_secs(1));
        // The workers finish on their own and the shared state is freed.
        let deadline = Instant::now() + Duration::from_secs(10);
        while weak.upgrade().is_some() {
            assert!(Instant::now() < deadline, "workers did not exit");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn drop_does_not_wait_for_a_stuck_worker() {
        // The worker blocks inside `notify` (as it could inside a slow lookup) until released.
        let (entered_tx, entered_rx) = mpsc::channel::<()>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let hooks = Mutex::new((entered_tx, release_rx));
        let calls = Arc::new(AtomicUsize::new(0));
        let notify: Arc<dyn Fn() + Send + Sync> = {
            let calls = Arc::clone(&calls);
            Arc::new(move || {
                calls.fetch_add(1, Ordering::SeqCst);
                let hooks = hooks.lock().unwrap();
                let _ = hooks.0.send(());
                let _ = hooks.1.recv_timeout(Duration::from_secs(10));
            })
        };
        let resolver = Resolver::new(1, notify);
        resolver.submit(1, loopback_request(80));
        resolver.submit(2, loopback_request(81));
        entered_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let weak = Arc::downgrade(&resolver.shared);

        let started = Instant::now();
        drop(resolver);
        assert!(started.elapsed() < Duration::from_secs(1), "drop waited");

        release_tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while weak.upgrade().is_some() {
            assert!(Instant::now() < deadline, "the worker did not exit");
            thread::sleep(Duration::from_millis(1));
        }
        // The queued second lookup was discarded, not run and reported.
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn slow_lookups_in_flight_at_drop() {
        // Real resolver traffic (fails fast or slowly, depending on the machine).
        let (_, notify) = counting_notify();
        let resolver = Resolver::new(3, notify);
        for id in 0..6 {
            resolver.submit(
                id,
                Request::AddrInfo(query(Some("nonexistent.invalid"), None)),
            );
        }
        thread::sleep(Duration::from_millis(5));
        let started = Instant::now();
        drop(resolver);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
