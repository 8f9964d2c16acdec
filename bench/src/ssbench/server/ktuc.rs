//! `ktuc`: kernel threads, user coroutines (paper §4.1, model 4) — three
//! ss-runtime coroutines per connection at its priority, with readiness-based
//! I/O: a separate poller thread waits in `epoll_wait` on every socket
//! (edge-triggered) and, when one becomes readable or writable, wakes the
//! coroutine waiting for it by id. The coroutine then does the non-blocking
//! `recv(2)`/`send(2)` itself.
//!
//! The paper's KTUC thread polls the sockets and copies the data too; here the
//! copy is the woken coroutine's, as in every epoll server (the paper expects
//! epoll to change little: §4.1).
//!
//! # Readiness without lost wake-ups
//!
//! Each socket has, per direction, a `ready` flag and a waiting coroutine,
//! under one mutex. The poller sets `ready` and takes the waiter. A coroutine
//! tries its system call first; on `EAGAIN` it takes the lock: if `ready` is
//! set (an edge came since), it clears it and tries again, else it registers
//! and sleeps. An edge is therefore either seen by the retry or finds the
//! waiter registered.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use anyhow::Context as _;
use ss_runtime::Runtime;

use super::framing::Framer;
use super::pipeline::{self, RecvIo, SendIo};
use super::queue::Wakeup;
use super::ss::{self, SsWake};
use super::{accept, Policy, Running, Setup};

/// Events the poller takes from one `epoll_wait`.
const EVENTS: usize = 256;

/// The two directions of a socket.
#[derive(Clone, Copy)]
enum Dir {
    Read = 0,
    Write = 1,
}

/// A socket's readiness, shared by the poller and the connection's coroutines.
#[derive(Default)]
struct Readiness {
    state: Mutex<[Side; 2]>,
}

#[derive(Default)]
struct Side {
    ready: bool,
    waiter: Option<SsWake>,
}

impl Readiness {
    fn lock(&self) -> MutexGuard<'_, [Side; 2]> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ready (an edge since the last call): clears it. Not ready: registers
    /// the coroutine of `cx` for the next edge.
    fn poll_ready(&self, cx: &Context<'_>, dir: Dir) -> Poll<()> {
        let mut s = self.lock();
        let side = &mut s[dir as usize];
        if std::mem::take(&mut side.ready) {
            Poll::Ready(())
        } else {
            side.waiter = Some(SsWake::register(cx));
            Poll::Pending
        }
    }

    /// The poller saw an edge in the given directions.
    fn set_ready(&self, read: bool, write: bool, rt: &Runtime) {
        let mut s = self.lock();
        let mut woken: [Option<SsWake>; 2] = [None, None];
        for (i, hit) in [read, write].into_iter().enumerate() {
            if hit {
                s[i].ready = true;
                woken[i] = s[i].waiter.take();
            }
        }
        drop(s);
        for w in woken.into_iter().flatten() {
            w.wake_in(rt);
        }
    }
}

/// The poller: one epoll instance and its thread, and the table from epoll
/// tokens to sockets.
struct Poller {
    epoll: OwnedFd,
    table: Mutex<Table>,
}

/// Sockets by token; a freed slot is reused. A stale event for a reused slot
/// only makes that socket retry its system call once.
#[derive(Default)]
struct Table {
    slots: Vec<Option<Arc<Readiness>>>,
    free: Vec<usize>,
}

impl Poller {
    fn new() -> io::Result<Poller> {
        // SAFETY: epoll_create1 takes no pointers; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Poller {
            // SAFETY: a fresh descriptor that nothing else owns.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            table: Mutex::default(),
        })
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches `fd` (edge-triggered, both directions) until `deregister`.
    fn register(&self, fd: RawFd) -> io::Result<(usize, Arc<Readiness>)> {
        let readiness = Arc::new(Readiness::default());
        let token = {
            let mut t = self.table();
            let slot = Some(readiness.clone());
            match t.free.pop() {
                Some(i) => {
                    t.slots[i] = slot;
                    i
                }
                None => {
                    t.slots.push(slot);
                    t.slots.len() - 1
                }
            }
        };
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token as u64,
        };
        // SAFETY: `ev` is a valid epoll_event for the call; `fd` is a socket the
        // caller keeps open until it deregisters.
        if unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0
        {
            let e = io::Error::last_os_error();
            self.free(token);
            return Err(e);
        }
        Ok((token, readiness))
    }

    /// Stops watching `fd` (before it is closed) and frees its token.
    fn deregister(&self, fd: RawFd, token: usize) {
        // SAFETY: `fd` is still open (the caller closes it after); a null event
        // pointer is allowed for EPOLL_CTL_DEL.
        unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
        self.free(token);
    }

    fn free(&self, token: usize) {
        let mut t = self.table();
        if let Some(slot) = t.slots.get_mut(token) {
            *slot = None;
            t.free.push(token);
        }
    }

    /// The poller thread's loop: wait, then wake whoever waits for each edge.
    fn run(&self, rt: &Runtime) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        let mut hits = Vec::with_capacity(EVENTS);
        loop {
            // SAFETY: `events` has room for EVENTS entries, which the kernel
            // fills; the count it returns is checked.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS as i32,
                    -1,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    eprintln!("ssbench server ktuc: epoll_wait failed: {e}; the poller stops");
                    return;
                }
                continue;
            }
            {
                let t = self.table();
                for ev in &events[..n as usize] {
                    let bits = ev.events as i32;
                    let Some(Some(r)) = t.slots.get(ev.u64 as usize) else {
                        continue;
                    };
                    let hang = bits & (libc::EPOLLERR | libc::EPOLLHUP) != 0;
                    let read = hang || bits & (libc::EPOLLIN | libc::EPOLLRDHUP) != 0;
                    let write = hang || bits & libc::EPOLLOUT != 0;
                    hits.push((r.clone(), read, write));
                }
            }
            for (r, read, write) in hits.drain(..) {
                r.set_ready(read, write, rt);
            }
        }
    }
}

/// A connection's socket (non-blocking) and its registration.
struct Registered {
    poller: Arc<Poller>,
    token: usize,
    readiness: Arc<Readiness>,
    stream: TcpStream,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.poller.deregister(self.stream.as_raw_fd(), self.token);
    }
}

impl Registered {
    /// Runs `op` until it does not say `EAGAIN`, waiting for an edge in `dir`
    /// between tries.
    async fn retry<T>(&self, dir: Dir, mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        loop {
            match op() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::future::poll_fn(|cx| self.readiness.poll_ready(cx, dir)).await;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }
}

/// The receiving or sending coroutine's handle on the connection.
struct Epoll(Arc<Registered>);

impl RecvIo for Epoll {
    async fn recv(&mut self, framer: &mut Framer) -> io::Result<usize> {
        let fd = self.0.stream.as_raw_fd();
        self.0
            .retry(Dir::Read, || framer.recv_fd(fd, libc::MSG_DONTWAIT))
            .await
    }

    /// The linger's receive, cut short by ss-runtime's timer (the poller
    /// waits for readiness only; a waiter registered by the dropped receive
    /// is at most woken once for nothing).
    async fn recv_until(
        &mut self,
        framer: &mut Framer,
        deadline: Instant,
    ) -> io::Result<Option<usize>> {
        pipeline::recv_until_ss(self.recv(framer), deadline).await
    }
}

impl SendIo for Epoll {
    async fn send_all(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        let fd = self.0.stream.as_raw_fd();
        let mut sent = 0;
        while sent < buf.len() {
            let rest = &buf[sent..];
            let n = self
                .0
                .retry(Dir::Write, || {
                    // SAFETY: `rest` is a live slice for the call; send(2) only
                    // reads it.
                    let n = unsafe {
                        libc::send(
                            fd,
                            rest.as_ptr().cast(),
                            rest.len(),
                            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                        )
                    };
                    if n < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(n as usize)
                    }
                })
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            sent += n;
        }
        Ok(())
    }

    fn finish(&mut self) {
        let _ = self.0.stream.shutdown(Shutdown::Write);
    }

    fn abort(&mut self) {
        let _ = self.0.stream.shutdown(Shutdown::Both);
    }
}

pub(crate) fn start(setup: Setup) -> anyhow::Result<Running> {
    let rt = Arc::new(ss::runtime("ktuc", &setup)?);
    let poller = Arc::new(Poller::new().context("epoll_create1")?);
    {
        let (rt, poller) = (rt.clone(), poller.clone());
        std::thread::Builder::new()
            .name("ktuc-poller".into())
            .spawn(move || poller.run(&rt))?;
    }
    // A blocking accept on its own thread: connecting is not what the model
    // measures, and a coroutine accept would need the same poller.
    let policy = Arc::new(setup.policy);
    let listener = setup.listener;
    let runtime = rt.clone();
    std::thread::Builder::new()
        .name("ktuc-accept".into())
        .spawn(move || accept_loop(&listener, &runtime, &poller, &policy))?;
    Ok(Box::new(ss::Serving { model: "ktuc", rt }))
}

fn accept_loop(
    listener: &std::net::TcpListener,
    rt: &Runtime,
    poller: &Arc<Poller>,
    policy: &Arc<Policy>,
) {
    accept::serve_blocking("ktuc", listener, |stream| {
        stream.set_nonblocking(true)?;
        let (token, readiness) = poller.register(stream.as_raw_fd())?;
        let conn = Arc::new(Registered {
            poller: poller.clone(),
            token,
            readiness,
            stream,
        });
        start_connection(conn, rt, policy);
        Ok(())
    });
}

fn start_connection(conn: Arc<Registered>, rt: &Runtime, policy: &Arc<Policy>) {
    let priority = policy.on_accept();
    let (queues, hooks) = ss::connection(policy);
    let futures = (
        pipeline::receive(Epoll(conn.clone()), queues.clone(), hooks.clone()),
        pipeline::handle(queues.clone(), hooks.clone()),
        pipeline::send(Epoll(conn), queues.clone()),
    );
    // Spawned from this thread, which is not a worker, through the handle.
    ss::spawn_connection(Some(rt), "ktuc", priority, &queues, &hooks, futures);
}
