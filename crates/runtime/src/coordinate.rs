//! Cross-process cooperative scheduling (paper §2.4) through the `ss-coord`
//! coordinator: the runtime side.
//!
//! Opt-in, through [`Builder::coordination`](crate::Builder::coordination) or
//! the environment variable `SS_COORD` (see [`Coordination`]). A coordinated
//! runtime registers its process with the coordinator (a page only it writes,
//! the global page mapped read-only; `docs/coordinator.md`), and then:
//!
//! 1. **Publishes** what this process needs a CPU for: the executor's ready
//!    bitmap, plus the level each worker is running right now (a coroutine being
//!    polled is in no ready queue, yet it is work at its level). Every worker
//!    refreshes it at each scheduling decision; a change of the most important
//!    level pokes the coordinator (one non-blocking `send`) so it rescans at once,
//!    any other change is a plain store the coordinator sees at its next tick.
//! 2. **Decides** before each poll, with a few loads and no syscall: if some other
//!    process has work ready that is more important than the most important work
//!    ready here (the global bitmap minus this process's own bits), the worker
//!    does not run less important work.
//! 3. **Defers**: it gives up the CPU and sleeps until the global page changes (a
//!    futex on the page's `seq`, armed as an io_uring `FUTEX_WAIT` on the worker's
//!    own ring, so its I/O completions and doorbell still wake it), or at most
//!    [`Builder::defer_recheck`](crate::Builder::defer_recheck) (1 ms by
//!    default), after which it decides again. Coroutines woken by this process's
//!    own I/O wake their worker at once; a wake from a thread that is not a worker
//!    while every worker defers is seen within the recheck interval.
//!
//! 4. **Does not spin idle beside others' work**: a worker about to go idle
//!    parks at once, without the runtime's idle spin, while any other process
//!    has work ready. A spinning worker holds a CPU the OS could give that
//!    process, and this process's own threads woken meanwhile can queue behind
//!    the spinner for a scheduler tick: measured with `coordbench` (server beside
//!    a `SCHED_IDLE` flood), p99 1.9 ms with the spin, 0.11 ms without.
//!
//! A coroutine that never yields is not interrupted (cooperative scheduling),
//! but the runtime's budget ([`crate::budget`]) also ends its slice when more
//! important work is ready elsewhere. If the coordinator goes away, the runtime
//! stops deferring (it cannot know what others need any more) and runs on;
//! its watch thread ([`Builder::stall_watch`](crate::Builder::stall_watch))
//! looks at most once every [`RECONNECT_EVERY`] whether the coordinator is
//! still there, and if not tries to register with whichever listens at the
//! same socket now (a restarted one), waiting at most [`RECONNECT_TIMEOUT`];
//! once registered again it defers again. Never from a worker.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ss_coord::Client;
use ss_core::{Executor, Poller, PrioBitmap, Priority};

use crate::WorkerPlatform;

/// The environment variable that opts a runtime built with
/// [`Coordination::FromEnv`] (the default) in: unset, empty, `0` or `off` — not
/// coordinated; `1`, `on` or `connect` — join the coordinator at its default
/// socket ([`ss_coord::default_socket_path`]: `$SS_COORD_SOCKET`, else
/// `$XDG_RUNTIME_DIR/ss-coord.sock`, else `/tmp/ss-coord-<uid>.sock`) and fail to
/// build if none listens; `start` — the same, starting one if none listens.
pub const ENV: &str = "SS_COORD";

/// The environment variable naming the `ss-coord` executable that
/// [`Coordination::Start`] runs (else `ss-coord` beside the current executable,
/// else `ss-coord` on `PATH`).
pub const ENV_BIN: &str = "SS_COORD_BIN";

/// How long [`Coordination::Start`] waits for a coordinator it started.
const START_TIMEOUT: Duration = Duration::from_secs(3);

/// How often the watch thread checks the coordinator, and at most tries to
/// register again while it is gone.
pub const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// How long one attempt to register again may wait for the coordinator (to
/// connect, and for each of its two messages). A coordinator that answers
/// at all answers within a turn of its loop; one that does not costs the
/// watch thread at most four times this long (connect, welcome, hello,
/// reply) per [`RECONNECT_EVERY`].
pub const RECONNECT_TIMEOUT: Duration = Duration::from_millis(100);

/// The default of [`Builder::defer_recheck`](crate::Builder::defer_recheck).
pub const DEFAULT_RECHECK: Duration = Duration::from_millis(1);

/// How a runtime takes part in cross-process scheduling.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Coordination {
    /// As the environment variable [`ENV`] (`SS_COORD`) says; not coordinated
    /// when it is unset.
    #[default]
    FromEnv,
    /// Not coordinated: the runtime never looks at other processes.
    Off,
    /// Join the coordinator listening at this socket; building the runtime
    /// fails if none does.
    Connect(PathBuf),
    /// Join the coordinator at this socket, starting `ss-coord` there (detached:
    /// it outlives this process and serves others) if none listens.
    Start(PathBuf),
}

impl Coordination {
    /// Replaces [`FromEnv`](Coordination::FromEnv) with what [`ENV`] says.
    fn resolve(self) -> io::Result<Coordination> {
        if self != Coordination::FromEnv {
            return Ok(self);
        }
        let value = std::env::var(ENV).unwrap_or_default();
        Ok(match value.trim() {
            "" | "0" | "off" => Coordination::Off,
            "1" | "on" | "connect" => Coordination::Connect(ss_coord::default_socket_path()),
            "start" => Coordination::Start(ss_coord::default_socket_path()),
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{ENV}={other:?} is not one of: off, 0, on, 1, connect, start"),
                ))
            }
        })
    }

    /// Registers with the coordinator as configured; `None` when not
    /// coordinated. Also gives the socket, to register again at.
    pub(crate) fn join(self) -> io::Result<Option<(Client, PathBuf)>> {
        match self.resolve()? {
            Coordination::FromEnv | Coordination::Off => Ok(None),
            Coordination::Connect(path) => Client::connect(&path).map(|c| Some((c, path))),
            Coordination::Start(path) => match Client::connect(&path) {
                Ok(c) => Ok(Some((c, path))),
                Err(e) if absent(&e) => start_coordinator(&path).map(|c| Some((c, path))),
                Err(e) => Err(e),
            },
        }
    }
}

/// Whether a connect error means that nobody listens at the socket.
fn absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}

/// The `ss-coord` executable to start.
fn coordinator_binary() -> PathBuf {
    if let Some(p) = std::env::var_os(ENV_BIN) {
        return p.into();
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("ss-coord")));
    match beside {
        Some(p) if p.is_file() => p,
        _ => PathBuf::from("ss-coord"),
    }
}

/// Starts a detached coordinator at `path` and registers with it.
fn start_coordinator(path: &Path) -> io::Result<Client> {
    let bin = coordinator_binary();
    let mut cmd = Command::new(&bin);
    cmd.arg("--socket")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // Detach: the coordinator serves every process, so it must neither die with
    // this one's terminal session nor stay our child (a zombie once it exits).
    // SAFETY: the closure runs in the forked child before `exec` and calls only
    // async-signal-safe functions (fork, _exit, setsid).
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            match libc::fork() {
                -1 => return Err(io::Error::last_os_error()),
                0 => {}
                _ => libc::_exit(0),
            }
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "could not start the coordinator `{}` ({e}); install ss-coord \
                 (`cargo install --path crates/coord`) or name it in ${ENV_BIN}",
                bin.display()
            ),
        )
    })?;
    // The intermediate child exits at once; the coordinator is its orphan.
    let _ = child.wait();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match Client::connect(path) {
            Ok(c) => return Ok(c),
            Err(e) if absent(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Workers beyond this many do not publish the level they run (they still
/// publish through the ready bitmap).
const SLOTS: usize = 64;

/// A coordinated runtime's cross-process state, shared by its workers.
pub(crate) struct Global {
    /// Shared with the watch thread's [`Global::reconnector`].
    client: Arc<Client>,
    /// The coordinator's socket, to register again at.
    path: PathBuf,
    /// Per worker: the bit of the level it is running (0 when it runs nothing).
    running: [AtomicU64; SLOTS],
    /// Slots in use (the highest worker index + 1).
    slots: AtomicUsize,
    /// What this process published last.
    published: AtomicU64,
    /// Serialises publishing, so that the last one to publish saw every slot.
    publish: Mutex<()>,
    /// The coordinator has gone: stop deferring. Shared with the watch
    /// thread's [`Global::reconnector`], which clears it.
    gone: Arc<AtomicBool>,
    /// Times a worker started deferring.
    deferrals: AtomicU64,
    recheck: Duration,
}

/// The most important level of a bitmap, as a bit (0 if empty).
#[inline]
fn top_bit(bits: u64) -> u64 {
    bits & bits.wrapping_neg()
}

impl Global {
    pub(crate) fn new(client: Client, path: PathBuf, recheck: Duration) -> Global {
        Global {
            client: Arc::new(client),
            path,
            running: [const { AtomicU64::new(0) }; SLOTS],
            slots: AtomicUsize::new(0),
            published: AtomicU64::new(0),
            publish: Mutex::new(()),
            gone: Arc::new(AtomicBool::new(false)),
            deferrals: AtomicU64::new(0),
            recheck: recheck.max(Duration::from_micros(10)),
        }
    }

    /// The coordinator client (its view, ceiling, levels).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Times a worker of this runtime started deferring to another process.
    pub(crate) fn deferrals(&self) -> u64 {
        self.deferrals.load(Ordering::Relaxed)
    }

    /// What the watch thread calls at each of its looks: at most once per
    /// [`RECONNECT_EVERY`] (a clock read otherwise), checks the coordinator
    /// (one zero-timeout `poll`); if it has gone, marks it so and registers
    /// with whichever coordinator listens at the socket now, waiting at most
    /// [`RECONNECT_TIMEOUT`]. Registered again, the runtime follows the new
    /// coordinator: it reads this process's page (what it published last)
    /// at once.
    pub(crate) fn reconnector(&self) -> impl FnMut() + Send + 'static {
        let (client, gone, path) = (self.client.clone(), self.gone.clone(), self.path.clone());
        let mut last: Option<Instant> = None;
        move || {
            let now = Instant::now();
            if last.is_some_and(|l| now.saturating_duration_since(l) < RECONNECT_EVERY) {
                return;
            }
            last = Some(now);
            if client.coordinator_alive() {
                // Also clears a `gone` set by a poke on the old socket that
                // raced with the previous reconnect.
                gone.store(false, Ordering::Relaxed);
                return;
            }
            gone.store(true, Ordering::Relaxed);
            if client.reconnect(&path, RECONNECT_TIMEOUT).is_ok() {
                gone.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Whether the coordinator is still followed.
    pub(crate) fn active(&self) -> bool {
        !self.gone.load(Ordering::Relaxed)
    }

    /// This process's bits: ready queues and running workers.
    #[inline]
    fn current(&self, ready: u64) -> u64 {
        let n = self.slots.load(Ordering::Relaxed).min(SLOTS);
        self.running[..n]
            .iter()
            .fold(ready, |acc, s| acc | s.load(Ordering::Relaxed))
    }

    /// Publishes this process's bits if they changed; returns them.
    #[inline]
    fn sync(&self, exec: &Executor<WorkerPlatform>, force: bool) -> u64 {
        let mine = self.current(exec.ready_bitmap().bits());
        if !force && mine == self.published.load(Ordering::Relaxed) {
            return mine;
        }
        self.sync_slow(exec)
    }

    #[cold]
    fn sync_slow(&self, exec: &Executor<WorkerPlatform>) -> u64 {
        let _g = self.publish.lock().unwrap_or_else(|e| e.into_inner());
        // Fresh loads under the lock: whoever publishes last saw every slot
        // store made before an earlier publisher released it.
        let mine = self.current(exec.ready_bitmap().bits());
        let old = self.published.load(Ordering::Relaxed);
        if mine != old {
            self.published.store(mine, Ordering::Relaxed);
            if top_bit(mine) != top_bit(old) {
                if let Err(e) = self.client.publish(mine) {
                    if coordinator_gone(&e) {
                        self.gone.store(true, Ordering::Relaxed);
                    }
                }
            } else {
                self.client.publish_quiet(mine);
            }
        }
        mine
    }

    /// Whether something more important than this process's most important
    /// ready work waits elsewhere, for a process whose bits are `mine`.
    #[inline]
    fn yield_to_elsewhere(&self, mine: u64, ready: PrioBitmap) -> bool {
        match ready.most_important() {
            Some(best) if !self.gone.load(Ordering::Relaxed) => self
                .client
                .more_important_elsewhere(PrioBitmap::from_bits(mine), best),
            _ => false,
        }
    }

    /// The decision before each poll of worker `slot`: publish, then run
    /// (`true`) unless more important work is ready in another process.
    /// `carried` is the coroutine the poller holds back to poll again (it
    /// yielded while nothing as important was ready): ready work in no queue.
    #[inline]
    fn keep_going(
        &self,
        slot: usize,
        exec: &Executor<WorkerPlatform>,
        carried: Option<Priority>,
    ) -> bool {
        let mut ready = exec.ready_bitmap();
        if let Some(p) = carried {
            ready = ready.with(p);
        }
        let run = top_bit(ready.bits());
        if let Some(s) = self.running.get(slot) {
            if s.load(Ordering::Relaxed) != run {
                s.store(run, Ordering::Relaxed);
            }
        }
        // Idle (nothing ready): publish under the lock, as this may be the last
        // decision before the worker sleeps. (A carried coroutine is counted in
        // this worker's slot.)
        let mine = self.sync(exec, ready.is_empty());
        if ready.is_empty() {
            // About to idle: spin only if no other process has work ready
            // (see `park::set_spin_allowed`).
            let others = self.client.view().elsewhere(PrioBitmap::from_bits(mine));
            crate::park::set_spin_allowed(others.is_empty() || !self.active());
            return true;
        }
        !self.yield_to_elsewhere(mine, ready)
    }

    /// Worker `slot`'s loop: the poller's, leaving it to defer when another
    /// process has more important work ready. Returns once the executor closes.
    pub(crate) fn run_worker(
        &self,
        slot: usize,
        poller: &mut Poller<WorkerPlatform>,
        exec: &Executor<WorkerPlatform>,
        os_yield: &mut crate::park::OsYield,
    ) {
        self.slots.fetch_max(slot + 1, Ordering::Relaxed);
        WORKER.with(|w| w.set(Some((self as *const Global, slot))));
        let _scope = WorkerScope;
        let mut deferring = false;
        loop {
            let polls = poller.run_while_carrying(|carried| {
                os_yield.tick();
                self.keep_going(slot, exec, carried)
            });
            if exec.is_closed() {
                break;
            }
            if polls > 0 {
                deferring = false;
            }
            if self.defer(slot, exec, !deferring) {
                deferring = true;
            }
        }
        if let Some(s) = self.running.get(slot) {
            s.store(0, Ordering::Relaxed);
        }
        self.sync(exec, true);
    }

    /// Gives the CPU up while more important work is ready elsewhere: sleeps
    /// until the global page changes, a completion or doorbell of this worker's
    /// ring, or the recheck interval. Returns whether it deferred.
    fn defer(&self, slot: usize, exec: &Executor<WorkerPlatform>, first: bool) -> bool {
        if let Some(s) = self.running.get(slot) {
            s.store(0, Ordering::Relaxed);
        }
        let seen = self.client.seq();
        let mine = self.sync(exec, true);
        if !self.yield_to_elsewhere(mine, exec.ready_bitmap()) {
            return false;
        }
        if first {
            self.deferrals.fetch_add(1, Ordering::Relaxed);
            self.client.add_yields(1);
        }
        exec.platform().beats.parking();
        // SAFETY: the futex word lives in the client's mapping, which lives in
        // the runtime's shared state; every worker holds that state until after
        // its ring (with any armed wait) is torn down.
        let on_ring = unsafe {
            crate::io::driver::defer_local(
                self.client.futex_word(),
                seen as u32,
                self.client.registrations(),
                self.recheck,
            )
        };
        if !on_ring {
            self.client.wait_for_change(seen, Some(self.recheck));
        }
        crate::nudge::beat();
        if self.client.seq() == seen && !self.client.coordinator_alive() {
            self.gone.store(true, Ordering::Relaxed);
        }
        true
    }

    /// For the budget: whether the coroutine worker `slot` is running should
    /// give way to more important work in another process now.
    #[inline]
    fn give_way(&self, slot: usize) -> bool {
        let run = self
            .running
            .get(slot)
            .map_or(0, |s| s.load(Ordering::Relaxed));
        match PrioBitmap::from_bits(run).most_important() {
            Some(level) if !self.gone.load(Ordering::Relaxed) => {
                let mine = PrioBitmap::from_bits(self.published.load(Ordering::Relaxed));
                self.client.more_important_elsewhere(mine, level)
            }
            _ => false,
        }
    }
}

thread_local! {
    /// On a coordinated worker: its runtime's `Global` and its slot.
    static WORKER: std::cell::Cell<Option<(*const Global, usize)>> =
        const { std::cell::Cell::new(None) };
}

/// Clears [`WORKER`] when the worker's loop ends, however it ends.
struct WorkerScope;

impl Drop for WorkerScope {
    fn drop(&mut self) {
        WORKER.with(|w| w.set(None));
    }
}

/// For the budget: whether the calling worker's coroutine should give way to
/// more important work in another process (false when not coordinated).
#[inline]
pub(crate) fn give_way_elsewhere() -> bool {
    match WORKER.with(|w| w.get()) {
        // SAFETY: set by `run_worker` for the span of its loop, during which the
        // `Global` it points to (borrowed by `run_worker`) is alive.
        Some((g, slot)) => unsafe { &*g }.give_way(slot),
        None => false,
    }
}

impl Drop for Global {
    fn drop(&mut self) {
        // Nothing ready, nothing running: others need not defer to us while the
        // client's socket closes (which deregisters this process).
        self.client.publish_quiet(0);
    }
}

/// Whether a failed poke means the coordinator is gone (its end of the
/// connection closed), rather than a moment's shortage (`ENOBUFS`, `ENOMEM`,
/// an interrupted call) after which the page — already written — is seen at
/// its next scan anyway. (Any error counted as gone until 2026-11-29: one
/// `ENOBUFS` under memory pressure ended the process's deferring for its
/// life; found in review.)
pub(crate) fn coordinator_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
    )
}

#[cfg(test)]
mod tests {
    use super::coordinator_gone;
    use std::io;

    #[test]
    fn only_a_closed_connection_means_the_coordinator_is_gone() {
        for errno in [
            libc::EPIPE,
            libc::ECONNRESET,
            libc::ENOTCONN,
            libc::ECONNABORTED,
        ] {
            assert!(
                coordinator_gone(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        for errno in [libc::ENOBUFS, libc::ENOMEM, libc::EINTR, libc::EAGAIN] {
            assert!(
                !coordinator_gone(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
    }
}
