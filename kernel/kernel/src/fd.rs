//! Descriptors: the console, pipes, and TCP listeners and connections
//! (`crate::net`).
//!
//! A pipe is a bounded byte queue with counts of open read and write ends.
//! Reading an empty pipe blocks while a write end is open (then reads 0: end of
//! file); writing to a full pipe blocks while a read end is open (with none, the
//! write fails with `BrokenPipe`). Closing the last end of a kind wakes the
//! other side's waiters, who re-issue their call and see the new state.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::task::Waker;

use ss_abi::syscall::SysError;

use crate::proc::Thread;
use crate::sync::IrqMutex;

/// Bytes a pipe holds.
pub const PIPE_CAPACITY: usize = 4096;

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

    /// Adds (or refreshes) a kernel coroutine's waker.
    pub fn add_task(&mut self, w: &Waker) {
        if !self.tasks.iter().any(|k| k.will_wake(w)) {
            self.tasks.push(w.clone());
        }
    }

    /// Forgets a kernel coroutine's waker (its call ended another way).
    pub fn remove_task(&mut self, w: &Waker) {
        self.tasks.retain(|k| !k.will_wake(w));
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty() && self.tasks.is_empty()
    }
}

/// A pipe.
pub struct Pipe {
    /// Its state, under one lock.
    pub state: IrqMutex<PipeState>,
}

impl Pipe {
    /// A pipe with one read and one write end.
    pub fn open() -> (Fd, Fd) {
        let p = Arc::new(Pipe {
            state: IrqMutex::new(PipeState {
                buf: VecDeque::new(),
                readers: 1,
                writers: 1,
                read_wait: Waiters::new(),
                write_wait: Waiters::new(),
            }),
        });
        (Fd::PipeRead(p.clone()), Fd::PipeWrite(p))
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
        let n = room.min(data.len());
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
