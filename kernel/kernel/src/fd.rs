//! Descriptors: the console and pipes.
//!
//! A pipe is a bounded byte queue with counts of open read and write ends.
//! Reading an empty pipe blocks while a write end is open (then reads 0: end of
//! file); writing to a full pipe blocks while a read end is open (with none, the
//! write fails with `BrokenPipe`). Closing the last end of a kind wakes the
//! other side's waiters, who re-issue their call and see the new state.

use alloc::collections::VecDeque;
use alloc::sync::Arc;

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
}

/// A pipe's state.
pub struct PipeState {
    /// Bytes written and not yet read.
    pub buf: VecDeque<u8>,
    /// Open read ends.
    pub readers: usize,
    /// Open write ends.
    pub writers: usize,
    /// Threads waiting for bytes.
    pub read_wait: VecDeque<Arc<Thread>>,
    /// Threads waiting for room.
    pub write_wait: VecDeque<Arc<Thread>>,
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
                read_wait: VecDeque::new(),
                write_wait: VecDeque::new(),
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
        }
    }
}

/// Wakes every thread in `list` (after the lock that guarded it is released).
pub fn wake_all(list: VecDeque<Arc<Thread>>) {
    for t in list {
        t.wake();
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
                    VecDeque::new()
                }
            }
            Fd::PipeWrite(p) => {
                let mut s = p.state.lock();
                s.writers -= 1;
                if s.writers == 0 {
                    core::mem::take(&mut s.read_wait)
                } else {
                    VecDeque::new()
                }
            }
            Fd::Stdin | Fd::Stdout => VecDeque::new(),
        };
        wake_all(woken);
    }
}
