//! Descriptors: the console, pipes, and TCP listeners and connections
//! (`crate::net`).
//!
//! A pipe is a bounded byte queue with counts of open read and write ends.
//! Reading an empty pipe blocks while a write end is open (then reads 0: end of
//! file); writing to a full pipe blocks while a read end is open (with none, the
//! write fails with `BrokenPipe`). Closing the last end of a kind wakes the
//! other side's waiters, who re-issue their call and see the new state.
//!
//! A pipe is charged to the process that made it ([`crate::kmem`]) for all
//! it may hold, [`PIPE_CHARGE`], when it is made; its buffer grows as bytes
//! come, fallibly (a full kernel heap makes a write wait for room, or fail
//! with `OutOfMemory` if the pipe is empty, never panics the kernel).

use alloc::collections::VecDeque;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::task::Waker;

use ss_abi::syscall::SysError;

use crate::kmem::{self, Account, Charge};
use crate::proc::{Thread, ThreadState};
use crate::sched::same_waiter;
use crate::sync::IrqMutex;

/// Bytes a pipe holds.
pub const PIPE_CAPACITY: usize = 4096;

/// What a pipe is charged to its maker: its buffer at capacity and its
/// state.
pub const PIPE_CHARGE: usize = PIPE_CAPACITY + core::mem::size_of::<Pipe>() + 64;

/// An open descriptor.
pub enum Fd {
    /// Console input.
    Stdin,
    /// Console output.
    Stdout,
    /// A pipe's read end.
    PipeRead(Arc<Pipe>),
    /// A pipe's write end.
    PipeWrite(Arc<Pipe>),
    /// A TCP listener.
    Listener(Arc<crate::net::Listener>),
    /// A TCP connection (read and write).
    Tcp(Arc<crate::net::Conn>),
}

/// A pipe's state.
pub struct PipeState {
    /// Bytes written and not yet read.
    pub buf: VecDeque<u8>,
    /// Open read ends.
    pub readers: usize,
    /// Open write ends.
    pub writers: usize,
    /// Threads and kernel coroutines waiting for bytes.
    pub read_wait: Waiters,
    /// Threads and kernel coroutines waiting for room.
    pub write_wait: Waiters,
}

/// Who waits for something: threads blocked in a synchronous call (they
/// re-issue it when woken) and the kernel coroutines of asynchronous calls.
#[derive(Default)]
pub struct Waiters {
    /// Blocked threads.
    pub threads: VecDeque<Arc<Thread>>,
    /// Kernel coroutines' wakers.
    pub tasks: Vec<Waker>,
}

impl Waiters {
    /// No waiters (usable in a `static`).
    pub const fn new() -> Waiters {
        Waiters {
            threads: VecDeque::new(),
            tasks: Vec::new(),
        }
    }

    /// Adds a kernel coroutine's waker, once per waiting party
    /// (`sched::same_waiter`).
    pub fn add_task(&mut self, w: &Waker) {
        if !self.tasks.iter().any(|k| same_waiter(k, w)) {
            self.tasks.push(w.clone());
        }
    }

    /// Forgets a kernel coroutine's waker (its call ended another way).
    pub fn remove_task(&mut self, w: &Waker) {
        self.tasks.retain(|k| !same_waiter(k, w));
    }

    /// Takes the threads that were killed while they waited here out of
    /// the list (each holds its process in memory); the caller drops them
    /// after its lock.
    #[must_use]
    pub fn take_dead(&mut self) -> Vec<Arc<Thread>> {
        let mut dead = Vec::new();
        self.threads.retain(|t| {
            let gone = t.state() == ThreadState::Dead;
            if gone {
                dead.push(t.clone());
            }
            !gone
        });
        dead
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty() && self.tasks.is_empty()
    }
}

/// A descriptor's object whose wait lists may hold blocked threads. A thread
/// that blocks in one records it ([`Thread::record_site`]), so that teardown
/// finds it even once no descriptor of the process names the object (another
/// thread closed it while this one waited).
pub trait WaitSite: Send + Sync {
    /// Takes the threads that were killed while they waited here out of the
    /// wait lists (each holds its process in memory), for the caller to drop
    /// after the lock.
    fn take_dead_waiters(&self) -> Vec<Arc<Thread>>;
}

/// A weak reference to `site`, as a thread records it (it must not keep the
/// object alive: closing its last descriptor still frees it).
pub fn site_of<T: WaitSite + 'static>(site: &Arc<T>) -> Weak<dyn WaitSite> {
    Arc::downgrade(site) as Weak<dyn WaitSite>
}

impl WaitSite for Pipe {
    fn take_dead_waiters(&self) -> Vec<Arc<Thread>> {
        let mut s = self.state.lock();
        let mut dead = s.read_wait.take_dead();
        dead.append(&mut s.write_wait.take_dead());
        dead
    }
}

/// A pipe.
pub struct Pipe {
    /// Its state, under one lock.
    pub state: IrqMutex<PipeState>,
    /// What it is charged to its maker, given back when it is freed.
    _charge: Charge,
}

impl Pipe {
    /// A pipe with one read and one write end, charged to `account`.
    ///
    /// # Errors
    /// The charge's: [`SysError::Limit`], [`SysError::OutOfMemory`].
    pub fn open(account: &Arc<Account>) -> Result<(Fd, Fd), SysError> {
        let charge = kmem::charge(account, PIPE_CHARGE)?;
        let p = Arc::new(Pipe {
            state: IrqMutex::new(PipeState {
                buf: VecDeque::new(),
                readers: 1,
                writers: 1,
                read_wait: Waiters::new(),
                write_wait: Waiters::new(),
            }),
            _charge: charge,
        });
        Ok((Fd::PipeRead(p.clone()), Fd::PipeWrite(p)))
    }
}

impl Fd {
    /// A second descriptor for the same object (for a child process).
    pub fn dup(&self) -> Fd {
        match self {
            Fd::Stdin => Fd::Stdin,
            Fd::Stdout => Fd::Stdout,
            Fd::PipeRead(p) => {
                p.state.lock().readers += 1;
                Fd::PipeRead(p.clone())
            }
            Fd::PipeWrite(p) => {
                p.state.lock().writers += 1;
                Fd::PipeWrite(p.clone())
            }
            Fd::Listener(l) => Fd::Listener(l.clone()),
            Fd::Tcp(c) => Fd::Tcp(c.clone()),
        }
    }
}

/// Wakes every waiter in `list` (after the lock that guarded it is released).
pub fn wake_all(list: Waiters) {
    for t in list.threads {
        t.wake();
    }
    for w in list.tasks {
        w.wake();
    }
}

impl Pipe {
    /// Takes up to `max` bytes: `Some(bytes)` (empty at end of file), or
    /// `None` after `wait` parked the caller in the read waiters (under the
    /// pipe's lock) because the pipe is empty and a write end is open.
    pub fn read(&self, max: usize, wait: impl FnOnce(&mut Waiters)) -> Option<Vec<u8>> {
        let mut s = self.state.lock();
        if s.buf.is_empty() {
            if s.writers == 0 {
                return Some(Vec::new());
            }
            wait(&mut s.read_wait);
            return None;
        }
        let n = max.min(s.buf.len());
        let data = s.buf.drain(..n).collect();
        let woken = core::mem::take(&mut s.write_wait);
        drop(s);
        wake_all(woken);
        Some(data)
    }

    /// Appends what fits of `data`: `Ok(Some(count))`, or `Ok(None)` after
    /// `wait` parked the caller in the write waiters because the pipe is full.
    ///
    /// # Errors
    /// [`SysError::BrokenPipe`] when no read end is open.
    pub fn write(
        &self,
        data: &[u8],
        wait: impl FnOnce(&mut Waiters),
    ) -> Result<Option<usize>, SysError> {
        if data.is_empty() {
            return Ok(Some(0));
        }
        let mut s = self.state.lock();
        if s.readers == 0 {
            return Err(SysError::BrokenPipe);
        }
        let room = PIPE_CAPACITY - s.buf.len();
        if room == 0 {
            wait(&mut s.write_wait);
            return Ok(None);
        }
        let mut n = room.min(data.len());
        let len = s.buf.len();
        if s.buf.capacity() < len + n {
            // Grow in powers of two up to the capacity the pipe is charged
            // for; a full kernel heap leaves the buffer as it is.
            let want = (len + n).next_power_of_two().min(PIPE_CAPACITY);
            if s.buf.try_reserve_exact(want - len).is_err() {
                n = n.min(s.buf.capacity() - len);
                if n == 0 && len == 0 {
                    return Err(SysError::OutOfMemory);
                }
                if n == 0 {
                    // Full as far as the heap allows: wait for a reader.
                    wait(&mut s.write_wait);
                    return Ok(None);
                }
            }
        }
        s.buf.extend(&data[..n]);
        let woken = core::mem::take(&mut s.read_wait);
        drop(s);
        wake_all(woken);
        Ok(Some(n))
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        let woken = match self {
            Fd::PipeRead(p) => {
                let mut s = p.state.lock();
                s.readers -= 1;
                if s.readers == 0 {
                    core::mem::take(&mut s.write_wait)
                } else {
                    Waiters::new()
                }
            }
            Fd::PipeWrite(p) => {
                let mut s = p.state.lock();
                s.writers -= 1;
                if s.writers == 0 {
                    core::mem::take(&mut s.read_wait)
                } else {
                    Waiters::new()
                }
            }
            Fd::Stdin | Fd::Stdout | Fd::Listener(_) | Fd::Tcp(_) => Waiters::new(),
        };
        wake_all(woken);
    }
}
