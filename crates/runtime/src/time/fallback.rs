//! Timers without io_uring: one timer thread per runtime, started on first use.
//!
//! A runtime whose io_uring is unavailable (a seccomp profile that blocks it, an
//! old kernel), or a worker whose ring could not be set up, still has working
//! [`sleep`](super::sleep)s: they register their deadline and waker here, and the
//! thread (`{thread_name}-timer`) sleeps on a condition variable until the
//! earliest deadline, then wakes whoever is due. A sleep re-checks the clock
//! itself, so a spurious wake-up is harmless. The thread is joined when the
//! runtime shuts down (no thread outlives it).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::thread::JoinHandle;
use std::time::Instant;

#[derive(Default)]
struct State {
    /// Deadlines and registration ids; an id whose waker is gone was dropped.
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    wakers: HashMap<u64, Waker>,
    next_id: u64,
    closed: bool,
}

/// A runtime's fallback timers.
#[derive(Default)]
pub(crate) struct Timers {
    shared: Arc<(Mutex<State>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Timers {
    /// Registers a wake-up of `waker` at `deadline` (or updates registration
    /// `id`); returns the id. `Ok(None)` once the runtime shut down (nothing will
    /// poll the sleep again).
    ///
    /// # Errors
    /// The timer thread could not be started.
    pub(crate) fn register(
        &self,
        id: Option<u64>,
        deadline: Instant,
        waker: &Waker,
        thread_name: &str,
    ) -> io::Result<Option<u64>> {
        let (state, cv) = &*self.shared;
        self.ensure_thread(thread_name)?;
        let mut s = lock(state);
        if s.closed {
            return Ok(None);
        }
        let id = match id {
            Some(id) if s.wakers.contains_key(&id) => {
                if let Some(w) = s.wakers.get_mut(&id) {
                    if !w.will_wake(waker) {
                        w.clone_from(waker);
                    }
                }
                return Ok(Some(id));
            }
            _ => {
                let id = s.next_id;
                s.next_id += 1;
                s.wakers.insert(id, waker.clone());
                s.heap.push(Reverse((deadline, id)));
                id
            }
        };
        drop(s);
        cv.notify_one();
        Ok(Some(id))
    }

    /// Forgets registration `id` (its sleep was dropped or is done).
    pub(crate) fn cancel(&self, id: u64) {
        lock(&self.shared.0).wakers.remove(&id);
    }

    fn ensure_thread(&self, thread_name: &str) -> io::Result<()> {
        let mut t = lock(&self.thread);
        if t.is_none() && !lock(&self.shared.0).closed {
            let shared = self.shared.clone();
            *t = Some(
                std::thread::Builder::new()
                    .name(format!("{thread_name}-timer"))
                    .spawn(move || run(&shared))?,
            );
        }
        Ok(())
    }

    /// Stops and joins the thread; later registrations are refused.
    pub(crate) fn shutdown(&self) {
        {
            let mut s = lock(&self.shared.0);
            s.closed = true;
            // Wake whoever still waits: their sleeps see the runtime closed.
            for (_, w) in s.wakers.drain() {
                w.wake();
            }
        }
        self.shared.1.notify_all();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

fn run(shared: &(Mutex<State>, Condvar)) {
    let (state, cv) = shared;
    let mut due = Vec::new();
    let mut s = lock(state);
    loop {
        if s.closed {
            return;
        }
        let now = Instant::now();
        while let Some(&Reverse((deadline, id))) = s.heap.peek() {
            if deadline > now {
                break;
            }
            s.heap.pop();
            if let Some(w) = s.wakers.remove(&id) {
                due.push(w);
            }
        }
        let next = s.heap.peek().map(|Reverse((d, _))| *d);
        if !due.is_empty() {
            drop(s);
            for w in due.drain(..) {
                w.wake();
            }
            s = lock(state);
            continue;
        }
        s = match next {
            Some(d) => cv
                .wait_timeout(s, d.saturating_duration_since(now))
                .map_or_else(|e| e.into_inner().0, |(g, _)| g),
            None => cv.wait(s).unwrap_or_else(|e| e.into_inner()),
        };
    }
}
