//! The coordinator: one thread, one epoll set, one global page.
//!
//! The epoll set holds the listening socket, a periodic timerfd (the tick), an
//! eventfd to stop, and per connection its socket and — once registered — a
//! pidfd of its process. Each turn of the loop:
//!
//! 1. accepts connections (they wait as *pending* until their hello arrives;
//!    one that sends none within `handshake_timeout` is closed);
//! 2. registers a pending connection whose hello arrived, or drops it;
//! 3. for a registered socket: drains notifications and scans that page; end of
//!    stream deregisters; any other message deregisters (a protocol violation);
//! 4. for a readable pidfd (the process exited — even if a child still holds
//!    the socket): deregisters;
//! 5. on a tick: scans every page (this is where the top-level budget
//!    advances), leaves out of the view a process that holds the global top
//!    and has not moved for a window (see [`stall`](crate::stall)), closes stale pending
//!    connections, updates the yield rates once a second and moves OS
//!    weights whose target changed (see [`weights`]);
//! 6. publishes the global page if the view changed, and wakes its waiters.
//!
//! A second thread serves the read-only query socket ([`query`])
//! from the [`Status`] the loop publishes; it never touches the loop's state.
//!
//! Nothing a client does can block the loop: every socket is non-blocking, a
//! process page is a sealed memfd (its reads cannot fault or wait on I/O), every
//! value read is sanitised, and a busy client is served at most
//! `NOTIFY_BATCH` messages per turn.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use ss_abi::{Levels, Priority};
use ss_core::global::{GlobalBitmap, GlobalView, SourceId};

use crate::page::{GlobalPageWriter, ProcessPageReader, YieldCount};
use crate::policy::{self, Budget, Holder, Policy};
use crate::query;
use crate::stall::Stall;
use crate::sys::CpuMask;
use crate::sys::{self, Epoll};
use crate::weights::{self, ProcessWeights, Recent, Weight, WeightsState};
use crate::wire::{Hello, Refusal, Reply, Welcome, MSG_LEN, NOTIFY};

/// How a coordinator runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The registration socket.
    pub socket: PathBuf,
    /// The scan period (default 1 ms).
    pub tick: Duration,
    /// Connections served at most; more are refused (default 1024).
    pub max_clients: usize,
    /// Connections (registered or still in their handshake) one uid may have
    /// at a time; more are refused at once (default 64).
    pub max_per_uid: usize,
    /// Permission bits of the registration and query socket files (e.g.
    /// `0o666` for a system-wide coordinator); `None`: what the umask gives.
    /// Connecting needs write permission on the file.
    pub socket_mode: Option<u32>,
    /// The read-only query socket; `None`: [`query::query_path`] of `socket`.
    pub query_socket: Option<PathBuf>,
    /// How long a connection may take to send its hello (default 1 s).
    pub handshake_timeout: Duration,
    /// Ceilings and the top-level budget.
    pub policy: Policy,
    /// Log registrations and removals to stderr.
    pub verbose: bool,
}

impl Config {
    /// The defaults, listening at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Config {
        Config {
            socket: socket.into(),
            tick: Duration::from_millis(1),
            max_clients: 1024,
            max_per_uid: 64,
            socket_mode: None,
            query_socket: None,
            handshake_timeout: Duration::from_secs(1),
            policy: Policy::default(),
            verbose: false,
        }
    }

    /// Where the query socket is.
    pub fn query_path(&self) -> PathBuf {
        self.query_socket
            .clone()
            .unwrap_or_else(|| query::query_path(&self.socket))
    }
}

/// Where clients and the daemon look for the socket by default:
/// `$SS_COORD_SOCKET`, else `$XDG_RUNTIME_DIR/ss-coord.sock`, else
/// `/tmp/ss-coord-<uid>.sock`.
pub fn default_socket_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SS_COORD_SOCKET") {
        return p.into();
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        return Path::new(&d).join("ss-coord.sock");
    }
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/ss-coord-{uid}.sock"))
}

/// One registered process, as the coordinator last saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientStatus {
    /// Its source id (also sent to it).
    pub source: u32,
    /// Its pid (from the socket's peer credentials).
    pub pid: u32,
    /// Its uid (from the socket's peer credentials).
    pub uid: u32,
    /// Its executable, if readable.
    pub exe: Option<PathBuf>,
    /// Its ceiling.
    #[serde(with = "query::as_priority")]
    pub ceiling: Priority,
    /// The `ready` word last read from its page (raw, untrusted).
    pub raw: u64,
    /// What was folded into the global bitmap for it.
    pub effective: u64,
    /// Whether its page header was valid at the last scan.
    pub header_ok: bool,
    /// Whether its top-level budget is exhausted (its claims at its ceiling
    /// are reported one level lower).
    pub demoted: bool,
    /// How full its top-level budget's bucket is, in percent.
    pub budget_percent: u8,
    /// Yields it reported since registering (sane increments of its page's
    /// counter; a decrease or a jump above 2^32 counts as a restart).
    pub yields: u64,
    /// Yields per second over the last full second.
    pub yields_per_sec: u64,
    /// The OS weight of its worker threads.
    pub os_weight: Weight,
    /// Threads whose weight the coordinator changed (and will restore).
    pub weighted_threads: usize,
    /// The last failure to read or set a thread's weight.
    pub weight_error: Option<String>,
    /// Whether its bits are left out of the view because it held the global
    /// top and made no progress (neither its workers' CPU time nor its page's `seq`
    /// moved) for the stall window ([`stall`](crate::stall)).
    #[serde(default)]
    pub stalled: bool,
    /// How many times that happened since it registered.
    #[serde(default)]
    pub stalls: u64,
}

/// What the coordinator is doing; for tests, logs and the live view (which
/// reads it as JSON through the [`query`] socket).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Status {
    /// The published view.
    #[serde(with = "query::as_view")]
    pub view: GlobalView,
    /// The global page's `seq`.
    pub seq: u64,
    /// Registered processes, by source id.
    pub clients: Vec<ClientStatus>,
    /// Registrations refused (bad hello, page, pid; full).
    pub refused: u64,
    /// Registrations ended by a protocol violation.
    pub violations: u64,
    /// Registrations ended because the process exited (pidfd).
    pub exited: u64,
    /// Registrations ended by a clean disconnect.
    pub disconnected: u64,
    /// Scans of one page.
    pub scans: u64,
    /// Ticks handled.
    pub ticks: u64,
    /// The priority levels.
    #[serde(with = "query::as_levels")]
    pub levels: Levels,
    /// Whether OS weights are applied, and if not why.
    pub weights: WeightsState,
}

struct Registered {
    sock: OwnedFd,
    pidfd: OwnedFd,
    page: ProcessPageReader,
    source: SourceId,
    pid: u32,
    uid: u32,
    exe: Option<PathBuf>,
    ceiling: Priority,
    /// Its part in the budget of its uid and ceiling (`Coordinator::budgets`).
    holder: Holder,
    raw: u64,
    effective: u64,
    header_ok: bool,
    /// The page's `seq` at the last scan.
    seq: u64,
    /// Whether it makes progress while it holds the global top.
    stall: Stall,
    /// Its yields, from its page's counter.
    yields: YieldCount,
    /// `(when, yields)` at the start of the current rate window.
    yields_mark: (Instant, u64),
    yields_per_sec: u64,
    recent: Recent,
    weights: ProcessWeights,
}

/// The window of the yields-per-second rate.
const RATE_WINDOW: Duration = Duration::from_secs(1);

enum Conn {
    Pending {
        sock: OwnedFd,
        since: Instant,
        uid: u32,
        /// The peer's executable, read before the welcome was sent.
        exe: Option<PathBuf>,
    },
    Registered(Box<Registered>),
}

impl Conn {
    fn sock(&self) -> &OwnedFd {
        match self {
            Conn::Pending { sock, .. } => sock,
            Conn::Registered(r) => &r.sock,
        }
    }

    fn uid(&self) -> u32 {
        match self {
            Conn::Pending { uid, .. } => *uid,
            Conn::Registered(r) => r.uid,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Why {
    Disconnected,
    Violation,
    Exited,
}

const KIND_SOCK: u64 = 0;
const KIND_PIDFD: u64 = 1;
const LISTENER: u64 = 1 << 63;
const TIMER: u64 = (1 << 63) | 1;
const STOP: u64 = (1 << 63) | 2;
/// Notifications read from one client per turn; the rest wait for the next.
const NOTIFY_BATCH: usize = 64;
/// After `accept` failed for want of descriptors, try again at the latest
/// after this long.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// At most one log line per this long about failing accepts.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// A coordinator bound to its socket, ready to [`run`](Coordinator::run).
pub struct Coordinator {
    cfg: Config,
    listener: OwnedFd,
    epoll: Epoll,
    timer: OwnedFd,
    stop: Arc<OwnedFd>,
    global: GlobalPageWriter,
    bitmap: GlobalBitmap,
    published: GlobalView,
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    status: Arc<Mutex<Status>>,
    counters: Status,
    dirty: bool,
    query_listener: Option<OwnedFd>,
    weights: WeightsState,
    /// The top-level budgets, by uid and ceiling level: kept across
    /// registrations (so reconnecting does not empty one) until no
    /// registration uses one and it has drained.
    budgets: HashMap<(u32, u8), Budget>,
    /// When unused budgets were last looked for.
    budgets_pruned: Instant,
    /// Since when the listener is out of the epoll set because `accept`
    /// failed (out of descriptors): a level-triggered listener with a
    /// connection it cannot take would wake the loop at once, forever.
    accept_paused: Option<Instant>,
    /// When an accept failure was last logged, and how many since.
    accept_logged: (Option<Instant>, u64),
}

/// Stops a running coordinator from another thread (or a signal handler: it
/// only writes to an eventfd).
#[derive(Clone)]
pub struct StopHandle(Arc<OwnedFd>);

impl StopHandle {
    /// Asks the loop to publish an empty view and return.
    pub fn stop(&self) {
        sys::signal_counter(self.0.as_fd());
    }

    /// The raw eventfd, for a signal handler.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.0.as_raw_fd()
    }
}

impl Coordinator {
    /// Creates the global page and binds the socket. A stale socket file (no
    /// coordinator answers on it) is replaced.
    ///
    /// # Errors
    /// Another coordinator already serves `cfg.socket`, or a system call failed.
    pub fn bind(cfg: Config) -> io::Result<Coordinator> {
        // Each client costs two descriptors (socket, pidfd); a 1024 soft
        // limit would hold about 500 of the default 1024 clients.
        let _ = sys::raise_nofile_limit();
        let query_path = cfg.query_path();
        claim(&cfg.socket, false)?;
        claim(&query_path, true)?;
        let listener = sys::listen_with(&cfg.socket, 128, false, cfg.socket_mode)?;
        let query_listener = match sys::listen_with(&query_path, 16, true, cfg.socket_mode) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_file(&cfg.socket);
                return Err(io::Error::new(
                    e.kind(),
                    format!("query socket {}: {e}", query_path.display()),
                ));
            }
        };
        let epoll = Epoll::new()?;
        let timer = sys::timerfd(cfg.tick.max(Duration::from_micros(10)))?;
        let stop = Arc::new(sys::eventfd()?);
        epoll.add(listener.as_fd(), LISTENER)?;
        epoll.add(timer.as_fd(), TIMER)?;
        epoll.add(stop.as_fd(), STOP)?;
        let global = GlobalPageWriter::create()?;
        let bitmap = GlobalBitmap::new(cfg.policy.levels);
        let weights = WeightsState::for_config(&cfg.policy.weights);
        let counters = Status {
            levels: cfg.policy.levels,
            weights: weights.clone(),
            ..Status::default()
        };
        Ok(Coordinator {
            cfg,
            listener,
            epoll,
            timer,
            stop,
            global,
            bitmap,
            published: GlobalView::default(),
            conns: HashMap::new(),
            next_conn: 1,
            status: Arc::new(Mutex::new(counters.clone())),
            counters,
            dirty: true,
            query_listener: Some(query_listener),
            weights,
            budgets: HashMap::new(),
            budgets_pruned: Instant::now(),
            accept_paused: None,
            accept_logged: (None, 0),
        })
    }

    /// A handle that stops [`run`](Coordinator::run).
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// The status, updated by the loop after every turn that changed it.
    pub fn status(&self) -> Arc<Mutex<Status>> {
        self.status.clone()
    }

    /// Runs [`run`](Coordinator::run) on a new thread.
    ///
    /// # Errors
    /// As [`bind`](Coordinator::bind).
    pub fn spawn(cfg: Config) -> io::Result<Running> {
        let c = Coordinator::bind(cfg)?;
        let stop = c.stop_handle();
        let status = c.status();
        let thread = std::thread::Builder::new()
            .name("ss-coord".into())
            .spawn(move || c.run())?;
        Ok(Running {
            stop,
            status,
            thread: Some(thread),
        })
    }

    /// Serves until stopped; on the way out publishes an empty view (so no
    /// process keeps deferring to work nobody tracks), wakes every waiter and
    /// removes the socket file.
    ///
    /// # Errors
    /// Only if epoll itself fails; client errors never end the loop.
    pub fn run(mut self) -> io::Result<()> {
        if !self.weights.note.is_empty() {
            self.log(format_args!("{}", self.weights.note));
        }
        let query = self.query_listener.take().and_then(|l| {
            let (stop, status) = (self.stop.clone(), self.status.clone());
            std::thread::Builder::new()
                .name("ss-coord-query".into())
                .spawn(move || query::serve(l, stop, status))
                .ok()
        });
        let mut tokens = Vec::with_capacity(64);
        let result = loop {
            if let Err(e) = self.epoll.wait(&mut tokens, -1) {
                break Err(e);
            }
            let mut stop = false;
            for &t in &tokens {
                match t {
                    LISTENER => self.accept_all(),
                    TIMER => self.tick(),
                    STOP => stop = true,
                    t => self.conn_event(t >> 2, t & 3),
                }
            }
            self.publish_if_changed();
            if stop {
                break Ok(());
            }
        };
        for id in self.conns.keys().copied().collect::<Vec<_>>() {
            self.remove(id, Why::Disconnected);
        }
        self.global.publish(GlobalView::default());
        self.dirty = true;
        self.publish_if_changed();
        let _ = std::fs::remove_file(&self.cfg.socket);
        // The stop eventfd stays readable, which ends the query thread too.
        sys::signal_counter(self.stop.as_fd());
        if let Some(q) = query {
            let _ = q.join();
        }
        let _ = std::fs::remove_file(self.cfg.query_path());
        result
    }

    fn log(&self, msg: std::fmt::Arguments<'_>) {
        if self.cfg.verbose {
            eprintln!("ss-coord: {msg}");
        }
    }

    fn accept_all(&mut self) {
        loop {
            match sys::accept(self.listener.as_fd()) {
                Ok(Some(sock)) => {
                    let Ok(cred) = sys::peer_cred(sock.as_fd()) else {
                        continue;
                    };
                    let uid = cred.uid;
                    let held = self.conns.values().filter(|c| c.uid() == uid).count();
                    if held >= self.cfg.max_per_uid {
                        // Refused at once, before it costs anything more; the
                        // client reads the refusal after its hello fails.
                        self.counters.refused += 1;
                        self.dirty = true;
                        self.log(format_args!("uid {uid}: over --max-per-uid"));
                        let reply = Reply {
                            result: Err(Refusal::UidLimit),
                        };
                        let _ = sys::send_msg(sock.as_fd(), &reply.encode(), &[], true);
                        sys::close_gracefully(sock);
                        continue;
                    }
                    // Identity (see `handshake`): the kernel attaches the
                    // checked sender of every message from here on; the
                    // executable is read now, and only a hello sent after this
                    // read, i.e. after the welcome, is taken.
                    if sys::set_passcred(sock.as_fd()).is_err() {
                        continue;
                    }
                    let exe = policy::exe_of(cred.pid as u32);
                    match sys::peek_input(sock.as_fd()) {
                        None => {}
                        // Gone already (or an empty message): nothing to say.
                        Some(0) => continue,
                        Some(_) => {
                            self.counters.refused += 1;
                            self.dirty = true;
                            self.log(format_args!(
                                "pid {}: sent its hello before the welcome",
                                cred.pid
                            ));
                            let reply = Reply {
                                result: Err(Refusal::BadHello),
                            };
                            let _ = sys::send_msg(sock.as_fd(), &reply.encode(), &[], true);
                            sys::close_gracefully(sock);
                            continue;
                        }
                    }
                    if sys::send_msg(sock.as_fd(), &Welcome.encode(), &[], true).is_err() {
                        continue;
                    }
                    let id = self.next_conn;
                    self.next_conn += 1;
                    if self.epoll.add(sock.as_fd(), id << 2 | KIND_SOCK).is_ok() {
                        self.conns.insert(
                            id,
                            Conn::Pending {
                                sock,
                                since: Instant::now(),
                                uid,
                                exe,
                            },
                        );
                    }
                }
                Ok(None) => return,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO)
                    ) => {}
                // EMFILE and the like: the connection stays in the backlog.
                // Stop watching the listener (it would report it at once,
                // forever) until a descriptor is freed (`resume_accepting`).
                Err(e) => {
                    self.epoll.remove(self.listener.as_fd());
                    self.accept_paused = Some(Instant::now());
                    let now = Instant::now();
                    let (last, n) = self.accept_logged;
                    if last.is_none_or(|l| now.saturating_duration_since(l) >= ACCEPT_LOG_EVERY) {
                        self.accept_logged = (Some(now), 0);
                        self.log(format_args!(
                            "accept: {e}; not accepting until a descriptor is freed \
                             ({n} more such pauses since the last message; raise RLIMIT_NOFILE \
                             or lower --max-clients)"
                        ));
                    } else {
                        self.accept_logged = (last, n + 1);
                    }
                    return;
                }
            }
        }
    }

    /// Watches the listener again after `accept` failed: when a connection
    /// has freed descriptors, or `ACCEPT_RETRY` after the failure (the
    /// query thread frees its own).
    fn resume_accepting(&mut self, freed: bool, now: Instant) {
        let Some(since) = self.accept_paused else {
            return;
        };
        if freed || now.saturating_duration_since(since) >= ACCEPT_RETRY {
            self.accept_paused = None;
            let _ = self.epoll.add(self.listener.as_fd(), LISTENER);
        }
    }

    fn conn_event(&mut self, id: u64, kind: u64) {
        match (self.conns.get(&id), kind) {
            (Some(Conn::Pending { .. }), KIND_SOCK) => self.handshake(id),
            (Some(Conn::Registered(_)), KIND_SOCK) => self.notifications(id),
            (Some(Conn::Registered(_)), KIND_PIDFD) => self.remove(id, Why::Exited),
            // A stale event of a connection removed earlier in this turn.
            _ => {}
        }
    }

    fn handshake(&mut self, id: u64) {
        let Some(Conn::Pending { sock, .. }) = self.conns.get(&id) else {
            return;
        };
        let mut buf = [0u8; MSG_LEN + 1];
        let msg = match sys::recv_msg(sock.as_fd(), &mut buf, true) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => return self.drop_pending(id, None),
        };
        if msg.len == 0 && msg.fds.is_empty() && !msg.truncated {
            return self.drop_pending(id, None);
        }
        // A descriptor cut off because this process is at its limit is our
        // failure, not a bad hello.
        if msg.ctrunc && !sys::can_open_descriptor(sock.as_fd()) {
            self.log(format_args!(
                "a hello's page descriptor was cut off: out of descriptors"
            ));
            return self.drop_pending(id, Some(Refusal::Internal));
        }
        let hello = Hello::decode(&buf[..msg.len]).filter(|_| !msg.truncated);
        let Some(hello) = hello else {
            return self.drop_pending(id, Some(Refusal::BadHello));
        };
        let mut fds = msg.fds;
        let (Some(page_fd), None) = (fds.pop(), fds.pop()) else {
            return self.drop_pending(id, Some(Refusal::BadPage));
        };
        let cred = match sys::peer_cred(sock.as_fd()) {
            Ok(c) => c,
            Err(_) => return self.drop_pending(id, Some(Refusal::Internal)),
        };
        let (pid, uid) = (cred.pid as u32, cred.uid);
        // The hello must come from the process that connected: the pid it
        // names and the kernel-checked sender (`SCM_CREDENTIALS`) are both the
        // `SO_PEERCRED` pid. Otherwise another process holding the socket
        // could register under a connected trusted program's identity.
        let sender = msg.cred.map(|c| (c.pid, c.uid));
        if hello.pid != pid || sender != Some((cred.pid, cred.uid)) {
            self.log(format_args!(
                "pid {pid}: hello names pid {}, sent by {sender:?}",
                hello.pid
            ));
            return self.drop_pending(id, Some(Refusal::PidMismatch));
        }
        let page = match ProcessPageReader::open(&page_fd) {
            Ok(p) => p,
            Err(e) => {
                self.log(format_args!("pid {pid}: {e}"));
                return self.drop_pending(id, Some(Refusal::BadPage));
            }
        };
        drop(page_fd);
        // Yields count from here on; read before the reply, after which the
        // client may start counting.
        let yields = YieldCount::new(page.snapshot().yields);
        if self.bitmap.len() >= self.cfg.max_clients {
            return self.drop_pending(id, Some(Refusal::Full));
        }
        let Ok(pidfd) = sys::peer_pidfd(sock.as_fd(), cred.pid) else {
            return self.drop_pending(id, Some(Refusal::Internal));
        };
        // The executable before the welcome and now: the hello was sent in
        // between, by one of them (or one exec'd between them), so the
        // registration gets the less important of their ceilings. A process
        // that execs a trusted program after its hello gains nothing.
        let Some(Conn::Pending { exe: before, .. }) = self.conns.get(&id) else {
            unreachable!("checked at the top");
        };
        let before = before.clone();
        let exe = policy::exe_of(pid);
        let ceiling = {
            let a = self.cfg.policy.ceiling(uid, before.as_deref());
            let b = self.cfg.policy.ceiling(uid, exe.as_deref());
            if a.is_more_important_than(b) {
                b
            } else {
                a
            }
        };
        if before != exe {
            self.log(format_args!(
                "pid {pid}: executable changed during the handshake ({} -> {})",
                before.as_deref().unwrap_or(Path::new("?")).display(),
                exe.as_deref().unwrap_or(Path::new("?")).display()
            ));
        }
        let source = self.bitmap.add_source_capped(ceiling);
        let reply = Reply {
            result: Ok((
                source.index() as u32,
                ceiling.level(),
                self.cfg.policy.levels.count(),
            )),
        };
        let sent = sys::send_msg(
            sock.as_fd(),
            &reply.encode(),
            &[self.global.client_fd()],
            true,
        );
        if sent.is_err() || self.epoll.add(pidfd.as_fd(), id << 2 | KIND_PIDFD).is_err() {
            self.bitmap.remove_source(source);
            return self.drop_pending(id, None);
        }
        let Some(Conn::Pending { sock, .. }) = self.conns.remove(&id) else {
            unreachable!("checked at the top");
        };
        let now = Instant::now();
        self.budgets
            .entry((uid, ceiling.level()))
            .or_insert_with(|| Budget::new(ceiling));
        self.log(format_args!(
            "registered pid {pid} uid {uid} exe {} as source {} with ceiling {}",
            exe.as_deref().unwrap_or(Path::new("?")).display(),
            source.index(),
            ceiling.level()
        ));
        self.conns.insert(
            id,
            Conn::Registered(Box::new(Registered {
                sock,
                pidfd,
                page,
                source,
                pid,
                uid,
                exe,
                ceiling,
                holder: Holder::default(),
                raw: 0,
                effective: 0,
                header_ok: true,
                seq: 0,
                stall: Stall::default(),
                yields,
                yields_mark: (now, 0),
                yields_per_sec: 0,
                recent: Recent::default(),
                weights: ProcessWeights::new(pid),
            })),
        );
        self.dirty = true;
        self.scan(id, now);
    }

    fn drop_pending(&mut self, id: u64, refusal: Option<Refusal>) {
        let Some(Conn::Pending { sock, .. }) = self.conns.remove(&id) else {
            return;
        };
        self.resume_accepting(true, Instant::now());
        self.epoll.remove(sock.as_fd());
        if let Some(r) = refusal {
            self.counters.refused += 1;
            self.dirty = true;
            let _ = sys::send_msg(sock.as_fd(), &Reply { result: Err(r) }.encode(), &[], true);
            // So that the client reads the refusal rather than ECONNRESET.
            sys::close_gracefully(sock);
        }
    }

    fn notifications(&mut self, id: u64) {
        let Some(Conn::Registered(r)) = self.conns.get(&id) else {
            return;
        };
        let mut buf = [0u8; 2];
        let mut outcome = None;
        for _ in 0..NOTIFY_BATCH {
            match sys::recv_msg(r.sock.as_fd(), &mut buf, true) {
                Ok(m) if m.len == 0 && m.fds.is_empty() && !m.truncated => {
                    outcome = Some(Why::Disconnected);
                    break;
                }
                Ok(m) if m.len == 1 && buf[0] == NOTIFY && m.fds.is_empty() && !m.truncated => {}
                Ok(_) => {
                    outcome = Some(Why::Violation);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    outcome = Some(Why::Disconnected);
                    break;
                }
            }
        }
        match outcome {
            Some(why) => self.remove(id, why),
            None => self.scan(id, Instant::now()),
        }
    }

    fn remove(&mut self, id: u64, why: Why) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        self.resume_accepting(true, Instant::now());
        self.epoll.remove(conn.sock().as_fd());
        if let Conn::Registered(mut r) = conn {
            self.epoll.remove(r.pidfd.as_fd());
            match why {
                // Its threads are gone (and their tids may be reused).
                Why::Exited => r.weights.forget(),
                _ => r.weights.restore(),
            }
            self.bitmap.remove_source(r.source);
            match why {
                Why::Disconnected => self.counters.disconnected += 1,
                Why::Violation => self.counters.violations += 1,
                Why::Exited => self.counters.exited += 1,
            }
            self.log(format_args!(
                "removed pid {} (source {}): {why:?}",
                r.pid,
                r.source.index()
            ));
            self.dirty = true;
        }
    }

    /// Reads one page, applies the policy, folds it in.
    fn scan(&mut self, id: u64, now: Instant) {
        let Some(Conn::Registered(r)) = self.conns.get_mut(&id) else {
            return;
        };
        let snap = r.page.snapshot();
        let (clamped, ok) = policy::scan_bits(&snap, self.cfg.policy.levels, r.ceiling);
        let budget = self
            .budgets
            .entry((r.uid, r.ceiling.level()))
            .or_insert_with(|| Budget::new(r.ceiling));
        let was_demoted = budget.demoted();
        // A stalled process claims nothing (and is not charged for it).
        let claimed = if r.stall.stalled() { 0 } else { clamped };
        let effective = budget.observe(&mut r.holder, claimed, now, &self.cfg.policy);
        if (snap.ready, effective, ok) != (r.raw, r.effective, r.header_ok)
            || was_demoted != budget.demoted()
        {
            self.dirty = true;
        }
        r.raw = snap.ready;
        r.effective = effective;
        r.header_ok = ok;
        r.seq = snap.seq;
        r.recent.note(effective, now);
        if ok {
            r.yields.note(snap.yields);
        }
        self.bitmap.update(r.source, effective);
        self.counters.scans += 1;
    }

    /// After a tick's scans: watches each registration that holds the global
    /// top, and leaves out of the view (or takes back) one that has not moved
    /// for the stall window (see [`stall`](crate::stall)).
    fn check_stalls(&mut self, now: Instant) {
        let window = self.cfg.policy.stall_window();
        let global = self.bitmap.view().global.bits();
        // The global top's bit (level 0 is the lowest bit); stalled
        // registrations contribute nothing to it.
        let top = global & global.wrapping_neg();
        let prefix = self.cfg.policy.weights.thread_prefix.as_str();
        let mut changed = Vec::new();
        for (&id, conn) in self.conns.iter_mut() {
            let Conn::Registered(r) = conn else { continue };
            let at_top = r.effective & top != 0 && r.weights.applied() == Weight::Original;
            let pid = r.pid;
            let cpu = || crate::stall::progress(pid, prefix);
            if r.stall.check(now, at_top, r.seq, cpu, window) {
                changed.push((id, pid, r.stall.stalled()));
            }
        }
        for (id, pid, stalled) in changed {
            if stalled {
                self.log(format_args!(
                    "pid {pid}: held the top without progress for {window:?}; \
                     its levels are left out until it moves"
                ));
            } else {
                self.log(format_args!("pid {pid}: moves again; its levels count"));
            }
            self.dirty = true;
            self.scan(id, now);
        }
    }

    /// Once a [`RATE_WINDOW`]: forgets the budgets no registration uses that
    /// have drained (so their number stays that of uids and ceilings seen
    /// recently).
    fn prune_budgets(&mut self, now: Instant) {
        if now.saturating_duration_since(self.budgets_pruned) < RATE_WINDOW {
            return;
        }
        self.budgets_pruned = now;
        let used: std::collections::HashSet<(u32, u8)> = self
            .conns
            .values()
            .filter_map(|c| match c {
                Conn::Registered(r) => Some((r.uid, r.ceiling.level())),
                Conn::Pending { .. } => None,
            })
            .collect();
        let policy = &self.cfg.policy;
        self.budgets
            .retain(|k, b| used.contains(k) || !b.drained(now, policy));
    }

    /// Once a [`RATE_WINDOW`]: each process's yields per second.
    fn update_rates(&mut self, now: Instant) {
        for conn in self.conns.values_mut() {
            let Conn::Registered(r) = conn else { continue };
            let (since, at) = r.yields_mark;
            let elapsed = now.saturating_duration_since(since);
            if elapsed < RATE_WINDOW {
                continue;
            }
            let n = u128::from(r.yields.total().wrapping_sub(at));
            let rate = n * 1_000_000 / elapsed.as_micros().max(1);
            r.yields_per_sec = u64::try_from(rate).unwrap_or(u64::MAX);
            r.yields_mark = (now, r.yields.total());
            // Also refreshes the budget fill shown in the status.
            self.dirty = true;
        }
    }

    /// Moves each process's worker threads to the OS weight its recent top
    /// level calls for (see [`weights`]); only where the target changed, and
    /// at refreshes for threads started since.
    fn update_weights(&mut self, now: Instant) {
        if !self.weights.enabled {
            return;
        }
        let (levels, window) = (self.cfg.policy.levels, self.cfg.policy.weights.window);
        let reserved = CpuMask::of(self.weights.reserved.iter().copied());
        let mut tops = Vec::with_capacity(self.conns.len());
        for (&id, conn) in self.conns.iter_mut() {
            if let Conn::Registered(r) = conn {
                tops.push((id, r.recent.top(now, window, levels)));
            }
        }
        let global_top = tops
            .iter()
            .filter_map(|&(_, t)| t)
            .min_by_key(|t| t.level());
        for (id, top) in tops {
            let Some(Conn::Registered(r)) = self.conns.get_mut(&id) else {
                continue;
            };
            let want = weights::target(top, global_top, levels, &self.cfg.policy.weights);
            // A process that has exited is removed in this turn; its tids
            // must not be touched any more. (The poll only when about to write.)
            if !r.weights.due(want, &self.cfg.policy.weights, now)
                || sys::is_readable(r.pidfd.as_fd())
            {
                continue;
            }
            let before = r.weights.applied();
            if r.weights
                .update(want, &self.cfg.policy.weights, reserved, now)
            {
                self.dirty = true;
                if before != r.weights.applied() {
                    let (pid, applied) = (r.pid, r.weights.applied());
                    self.log(format_args!("pid {pid}: OS weight {before} -> {applied}"));
                }
            }
        }
    }

    fn tick(&mut self) {
        sys::read_counter(self.timer.as_fd());
        self.counters.ticks += 1;
        let now = Instant::now();
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            match self.conns.get(&id) {
                Some(Conn::Registered(_)) => self.scan(id, now),
                Some(Conn::Pending { since, .. })
                    if now.saturating_duration_since(*since) > self.cfg.handshake_timeout =>
                {
                    self.drop_pending(id, Some(Refusal::BadHello));
                }
                _ => {}
            }
        }
        self.check_stalls(now);
        self.update_rates(now);
        self.update_weights(now);
        self.prune_budgets(now);
        self.resume_accepting(false, now);
        // Ticks alone do not mark the status dirty: only what they change does.
    }

    fn publish_if_changed(&mut self) {
        let view = self.bitmap.view();
        if view != self.published {
            self.global.publish(view);
            self.published = view;
            self.dirty = true;
        }
        if self.dirty {
            self.dirty = false;
            let mut clients: Vec<ClientStatus> = self
                .conns
                .values()
                .filter_map(|c| match c {
                    Conn::Registered(r) => {
                        let budget = self.budgets.get(&(r.uid, r.ceiling.level()));
                        Some(ClientStatus {
                            source: r.source.index() as u32,
                            pid: r.pid,
                            uid: r.uid,
                            exe: r.exe.clone(),
                            ceiling: r.ceiling,
                            raw: r.raw,
                            effective: r.effective,
                            header_ok: r.header_ok,
                            demoted: budget.is_some_and(Budget::demoted),
                            budget_percent: budget.map_or(0, |b| b.fill_percent(&self.cfg.policy)),
                            yields: r.yields.total(),
                            yields_per_sec: r.yields_per_sec,
                            os_weight: r.weights.applied(),
                            weighted_threads: r.weights.threads(),
                            weight_error: r.weights.error().map(str::to_string),
                            stalled: r.stall.stalled(),
                            stalls: r.stall.stalls(),
                        })
                    }
                    Conn::Pending { .. } => None,
                })
                .collect();
            clients.sort_by_key(|c| c.source);
            let s = Status {
                view,
                seq: self.global.seq(),
                clients,
                ..self.counters.clone()
            };
            if let Ok(mut g) = self.status.lock() {
                *g = s;
            }
        }
    }
}

/// Makes `path` free for a new socket: refuses if a coordinator answers there,
/// removes a stale file otherwise.
fn claim(path: &Path, stream: bool) -> io::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let probe = if stream {
        sys::connect_stream(path)
    } else {
        sys::connect(path)
    };
    match probe {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "a coordinator already serves {}; stop it or pick another --socket",
                path.display()
            ),
        )),
        Err(_) => std::fs::remove_file(path),
    }
}

/// A coordinator running on its own thread; stops and joins on drop.
pub struct Running {
    stop: StopHandle,
    status: Arc<Mutex<Status>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Running {
    /// A copy of the current status.
    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Polls the status until `cond` holds or `timeout` passes; returns the
    /// last status and whether `cond` held.
    pub fn wait_until(&self, timeout: Duration, cond: impl Fn(&Status) -> bool) -> (Status, bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status();
            if cond(&s) {
                return (s, true);
            }
            if Instant::now() >= deadline {
                return (s, false);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Stops the loop and waits for it.
    ///
    /// # Errors
    /// What [`Coordinator::run`] returned.
    pub fn stop(mut self) -> io::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> io::Result<()> {
        self.stop.stop();
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("coordinator panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}
