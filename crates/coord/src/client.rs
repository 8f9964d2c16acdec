//! The process side: register, publish the ready bitmap, read the global view.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ss_abi::{Levels, Priority};
use ss_core::global::GlobalView;
use ss_core::PrioBitmap;

use crate::page::{GlobalPageReader, ProcessPageWriter};
use crate::policy::clamp;
use crate::sys;
use crate::wire::{Hello, Reply, Welcome, MSG_LEN, NOTIFY};

/// A process registered with the coordinator.
///
/// Dropping it closes the socket, which deregisters the process; if the process
/// dies instead, the coordinator notices through its pidfd.
pub struct Client {
    sock: OwnedFd,
    page: ProcessPageWriter,
    global_fd: OwnedFd,
    global: GlobalPageReader,
    /// The source id and ceiling of the current registration (a
    /// [`reconnect`](Client::reconnect) changes them).
    source: AtomicU32,
    ceiling: AtomicU8,
    levels: Levels,
    /// Serialises [`reconnect`](Client::reconnect)s.
    reconnecting: Mutex<()>,
    /// Successful [`reconnect`](Client::reconnect)s so far.
    registrations: AtomicU64,
}

/// One registration's outcome: what [`Client`] keeps of it.
struct Registration {
    sock: OwnedFd,
    global_fd: OwnedFd,
    global: GlobalPageReader,
    source: u32,
    ceiling: Priority,
    levels: Levels,
}

/// How long [`Client::connect`] waits for the coordinator's reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

impl Client {
    /// Registers this process with the coordinator listening at `path`: creates
    /// the process page, sends it with the pid, maps the global page read-only.
    ///
    /// # Errors
    /// No coordinator at `path` (`NotFound`/`ConnectionRefused`: start
    /// `ss-coord`), a refusal (its message says why), or a reply that is not
    /// one (a different ss-coord version).
    pub fn connect(path: impl AsRef<Path>) -> io::Result<Client> {
        let page = ProcessPageWriter::create()?;
        let r = register(path.as_ref(), &page, REPLY_TIMEOUT)?;
        Ok(Client {
            sock: r.sock,
            page,
            global_fd: r.global_fd,
            global: r.global,
            source: AtomicU32::new(r.source),
            ceiling: AtomicU8::new(r.ceiling.level()),
            levels: r.levels,
            reconnecting: Mutex::new(()),
            registrations: AtomicU64::new(0),
        })
    }

    /// Registers this process again, with the coordinator now listening at
    /// `path`, after the one it registered with has gone (it restarted, say).
    /// The client, its page and what it published stay: the new coordinator
    /// reads the page's current bitmap at registration. The new global page
    /// is mapped over the old one at the same address and the new socket
    /// takes the old one's descriptor number, so threads using the client
    /// meanwhile need no lock: each call sees the old registration or the
    /// new one (a futex waiter asleep on the old page is woken once the new
    /// one is in place, and a poke on the old socket fails as it did
    /// before). The source id and ceiling
    /// are the new coordinator's. Waits at most `timeout` for the
    /// coordinator (to connect, and for each of its two messages).
    ///
    /// Use it only once [`coordinator_alive`](Client::coordinator_alive)
    /// says no: called on a live registration it registers the process a
    /// second time and closes the first.
    ///
    /// # Errors
    /// As [`connect`](Client::connect) (nothing changes then); also
    /// `InvalidData` if the new coordinator has other levels than this
    /// client (connect anew instead). If mapping the new page fails the
    /// client stays on the old registration; if only replacing the socket
    /// fails, on the old (closed) socket with the new page, so
    /// `coordinator_alive` still says no and a retry registers again.
    pub fn reconnect(&self, path: impl AsRef<Path>, timeout: Duration) -> io::Result<()> {
        let _one = self.reconnecting.lock().unwrap_or_else(|e| e.into_inner());
        let r = register(path.as_ref(), &self.page, timeout)?;
        if r.levels != self.levels {
            return Err(invalid(&format!(
                "the coordinator at {} has {} levels, this client {}: connect anew",
                path.as_ref().display(),
                r.levels.count(),
                self.levels.count()
            )));
        }
        // The page first: should the socket fail, it still says "gone".
        self.global
            .replace_with(self.global_fd.as_fd(), &r.global_fd)?;
        sys::dup_onto(r.global_fd.as_fd(), self.global_fd.as_fd())?;
        sys::dup_onto(r.sock.as_fd(), self.sock.as_fd())?;
        self.source.store(r.source, Ordering::Relaxed);
        self.ceiling.store(r.ceiling.level(), Ordering::Relaxed);
        // Release: whoever sees the new count sees the new page mapped.
        self.registrations.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// How many times this client registered again
    /// ([`reconnect`](Client::reconnect)): a wait on the global page's futex
    /// word that was armed under another count waits on an earlier
    /// coordinator's page (another file at the same address), whose futex
    /// nobody wakes any more; re-arm it.
    pub fn registrations(&self) -> u64 {
        self.registrations.load(Ordering::Acquire)
    }

    /// Publishes this process's ready bitmap: stores it in the process page,
    /// bumps the page's `seq` and, if the value changed, pokes the coordinator
    /// with a one-byte message so it scans now rather than at the next tick.
    /// The poke never blocks: if the socket buffer is full the coordinator
    /// already has pokes to read.
    ///
    /// # Errors
    /// The coordinator has gone (`BrokenPipe` and the like): stop deferring to
    /// the global view, which nobody updates any more.
    pub fn publish(&self, ready: u64) -> io::Result<()> {
        if self.page.publish(ready) == ready {
            return Ok(());
        }
        match sys::send_msg(self.sock.as_fd(), &[NOTIFY], &[], true) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Publishes without a poke, so without a syscall: the coordinator sees it
    /// at its next tick.
    pub fn publish_quiet(&self, ready: u64) {
        self.page.publish(ready);
    }

    /// The global view: a few loads from the read-only page, no syscall.
    #[inline]
    pub fn view(&self) -> GlobalView {
        self.global.read().1
    }

    /// The global page's current `seq`, for [`wait_for_change`](Client::wait_for_change).
    #[inline]
    pub fn seq(&self) -> u64 {
        self.global.seq()
    }

    /// Counts `n` yields — times a worker gave up the CPU because
    /// [`more_important_elsewhere`](Client::more_important_elsewhere) said so —
    /// in this process's page, for the live view's yields per second. One
    /// relaxed atomic add on the mapped page; no syscall.
    #[inline]
    pub fn add_yields(&self, n: u64) {
        self.page.add_yields(n);
    }

    /// The view and the `seq` it was read at.
    #[inline]
    pub fn view_at(&self) -> (u64, GlobalView) {
        self.global.read()
    }

    /// Whether another process has work ready that is more important than
    /// `prio`, for a process whose published bitmap is `mine`.
    ///
    /// Both are first seen as the coordinator sees them: `mine` clamped to this
    /// process's ceiling, and `prio` no more important than the ceiling (a
    /// capped process competes at its ceiling). O(1), no syscall.
    #[inline]
    pub fn more_important_elsewhere(&self, mine: PrioBitmap, prio: Priority) -> bool {
        let ceiling = self.ceiling();
        let mine = PrioBitmap::from_bits(clamp(mine.bits(), self.levels, ceiling));
        let prio = if prio.is_more_important_than(ceiling) {
            ceiling
        } else {
            prio
        };
        self.view().more_important_elsewhere(mine, prio)
    }

    /// Sleeps until the global page changes from `seen` (a `seq`) or `timeout`
    /// passes; returns the `seq` then current. A futex wait on the page. Use a
    /// timeout: if the coordinator dies nobody wakes the futex.
    pub fn wait_for_change(&self, seen: u64, timeout: Option<Duration>) -> u64 {
        self.global.wait_for_change(seen, timeout)
    }

    /// The global page's futex word (the low 32 bits of its `seq`), for waiting
    /// on a change through something other than [`wait_for_change`](Client::wait_for_change)
    /// (the runtime arms an io_uring `FUTEX_WAIT` on it). Read-only.
    pub fn futex_word(&self) -> &std::sync::atomic::AtomicU32 {
        self.global.futex_word()
    }

    /// Whether the coordinator is still there (its end of the socket is open):
    /// one zero-timeout `poll(2)`. A process that waits for the global page to
    /// change asks this now and then, since a dead coordinator wakes nobody.
    pub fn coordinator_alive(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut pfd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid `pollfd` that lives across the call; no timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        !(n > 0 && pfd.revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR) != 0)
    }

    /// This process's source id at the coordinator.
    pub fn source_id(&self) -> u32 {
        self.source.load(Ordering::Relaxed)
    }

    /// The ceiling the coordinator's policy granted this process.
    pub fn ceiling(&self) -> Priority {
        let c = self.ceiling.load(Ordering::Relaxed);
        // Always one of `levels` (checked at registration).
        Priority::new(c).unwrap_or(self.levels.least_important())
    }

    /// The coordinator's priority levels.
    pub fn levels(&self) -> Levels {
        self.levels
    }

    /// The read-only descriptor of the global page (for tools and tests).
    pub fn global_fd(&self) -> BorrowedFd<'_> {
        self.global_fd.as_fd()
    }

    /// This process's page, e.g. to overwrite its header in tests of the
    /// coordinator's sanitising.
    pub fn page(&self) -> &ProcessPageWriter {
        &self.page
    }
}

/// Connects to `path` and registers `page` (see [`Client::connect`]).
///
/// A signal that interrupts one of its waits (a socket call with a timeout
/// returns `EINTR` after any handler, `SA_RESTART` or not — a profiler's
/// `SIGPROF`, say) is waited through: the call is made again with what is
/// left of the `timeout` (an `EINTR` failed the registration, and a runtime's
/// `build`, until 2026-11-30's review).
fn register(path: &Path, page: &ProcessPageWriter, timeout: Duration) -> io::Result<Registration> {
    let deadline = Instant::now() + timeout;
    let sock = until(deadline, |left| sys::connect_timeout(path, left)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "no SharedScheduler coordinator at {} ({e}); start `ss-coord --socket {}`",
                path.display(),
                path.display()
            ),
        )
    })?;
    // Only a coordinator of this user or root is trusted: anyone may bind
    // a socket path first (e.g. `/tmp/ss-coord-<uid>.sock`), and the
    // global page decides when this process yields.
    let peer = sys::peer_cred(sock.as_fd())?;
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    if peer.uid != me && peer.uid != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the process listening at {} (pid {}) runs as uid {}, not as this user ({me}) or root: not a coordinator to trust",
                path.display(),
                peer.pid,
                peer.uid
            ),
        ));
    }
    let hello = Hello {
        pid: std::process::id(),
    };
    let mut buf = [0u8; MSG_LEN + 1];
    let recv = |buf: &mut [u8]| {
        until(deadline, |left| {
            sys::set_recv_timeout(sock.as_fd(), left)?;
            sys::recv_msg(sock.as_fd(), buf, false)
        })
    };
    // The coordinator speaks first: a welcome (send the hello now), or a
    // refusal (`--max-per-uid`) in place of one.
    let first = recv(&mut buf)?;
    let msg = if Welcome::decode(&buf[..first.len]).is_some() && !first.truncated {
        // (Its send timeout is the connect's: at most `timeout` more.)
        until(deadline, |_| {
            sys::send_msg(sock.as_fd(), &hello.encode(), &[page.fd()], false)
        })?;
        recv(&mut buf)?
    } else {
        first
    };
    let reply = Reply::decode(&buf[..msg.len])
        .filter(|_| !msg.truncated)
        .ok_or_else(|| {
            invalid("the coordinator's reply is not one: a different ss-coord version?")
        })?;
    let (source, ceiling, levels) = reply
        .result
        .map_err(|r| io::Error::new(io::ErrorKind::PermissionDenied, r.to_string()))?;
    let mut fds = msg.fds;
    let (Some(global_fd), None) = (fds.pop(), fds.pop()) else {
        return Err(invalid("the coordinator's reply carried no global page"));
    };
    let levels = Levels::new(levels).map_err(|_| invalid("the coordinator sent bad levels"))?;
    let ceiling = levels
        .priority(ceiling.into())
        .map_err(|_| invalid("the coordinator sent a ceiling outside its levels"))?;
    let global = GlobalPageReader::open(&global_fd)?;
    Ok(Registration {
        sock,
        global_fd,
        global,
        source,
        ceiling,
        levels,
    })
}

/// Calls `f` with the time left until `deadline` (never zero, which would
/// mean "no timeout" to the socket options) until it does not fail with
/// `EINTR` or the deadline has passed.
fn until<T>(deadline: Instant, mut f: impl FnMut(Duration) -> io::Result<T>) -> io::Result<T> {
    loop {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        match f(left) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted && Instant::now() < deadline => {}
            r => return r,
        }
    }
}
