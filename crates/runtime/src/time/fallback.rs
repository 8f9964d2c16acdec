//! Timers without io_uring: one timer thread per runtime, started on first use.
//!
//! A runtime whose io_uring is unavailable (a seccomp profile that blocks it, an
//! old kernel), or a worker whose ring could not be set up, still has working
//! [`sleep`](super::sleep)s: they register their deadline and waker here, and the
//! thread (`{thread_name}-timer`) sleeps on a condition variable until the
//! earliest deadline, then wakes whoever is due. A sleep re-checks the clock
//! itself, so a spurious wake-up is harmless. The thread is joined when the
//! runtime shuts down (no thread outlives it).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::thread::JoinHandle;
use std::time::Instant;

#[derive(Default)]
struct State {
    /// Whom to wake, by deadline (and registration id, which makes the keys
    /// unique).
    due: BTreeMap<(Instant, u64), Waker>,
    /// Each registration's deadline, so that a cancel removes its entry at
    /// once (until 2026-11-29 a cancelled registration stayed until its
    /// deadline: a loop of `timeout(1 h, …)` grew the timers for an hour).
    deadlines: HashMap<u64, Instant>,
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
        if let Some(id) = id {
            if let Some(&at) = s.deadlines.get(&id) {
                let mut replaced = None;
                if let Some(w) = s.due.get_mut(&(at, id)) {
                    if !w.will_wake(waker) {
                        replaced = Some(std::mem::replace(w, waker.clone()));
                    }
                }
                // A waker let go of after the lock: it may own a task whose
                // future, dropped with it, cancels a timer here.
                drop(s);
                drop(replaced);
                return Ok(Some(id));
            }
        }
        let id = s.next_id;
        s.next_id += 1;
        s.deadlines.insert(id, deadline);
        s.due.insert((deadline, id), waker.clone());
        drop(s);
        cv.notify_one();
        Ok(Some(id))
    }

    /// Forgets registration `id` (its sleep was dropped or is done).
    pub(crate) fn cancel(&self, id: u64) {
        let mut s = lock(&self.shared.0);
        let gone = s
            .deadlines
            .remove(&id)
            .and_then(|at| s.due.remove(&(at, id)));
        drop(s);
        // After the lock (see `register`).
        drop(gone);
    }

    /// Registrations waiting (tests).
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        let s = lock(&self.shared.0);
        debug_assert_eq!(s.due.len(), s.deadlines.len());
        s.due.len()
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
        let waiting = {
            let mut s = lock(&self.shared.0);
            s.closed = true;
            s.deadlines.clear();
            std::mem::take(&mut s.due)
        };
        // Wake whoever still waits: their sleeps see the runtime closed.
        for w in waiting.into_values() {
            w.wake();
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
        while let Some(entry) = s.due.first_entry() {
            let (deadline, id) = *entry.key();
            if deadline > now {
                break;
            }
            due.push(entry.remove());
            s.deadlines.remove(&id);
        }
        let next = s.due.first_key_value().map(|((d, _), _)| *d);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Counts its wake-ups.
    struct Count(AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_cancelled_timer_is_gone_at_once_and_a_due_one_wakes() {
        let timers = Timers::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let hour = Instant::now() + Duration::from_secs(3600);
        // As a loop of `timeout(1 h, quick)` leaves them: each cancelled.
        for _ in 0..1000 {
            let id = timers
                .register(None, hour, &waker, "test")
                .unwrap()
                .unwrap();
            assert_eq!(timers.waiting(), 1);
            timers.cancel(id);
        }
        assert_eq!(timers.waiting(), 0, "cancelled timers stayed");
        // Re-registering an id updates it (one entry), and it comes due.
        let soon = Instant::now() + Duration::from_millis(5);
        let id = timers.register(None, soon, &waker, "test").unwrap();
        assert_eq!(timers.register(id, soon, &waker, "test").unwrap(), id);
        assert_eq!(timers.waiting(), 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while count.0.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "a due timer never woke");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(timers.waiting(), 0);
        // Shut down: what waits is woken, later registrations refused.
        timers.register(None, hour, &waker, "test").unwrap();
        timers.shutdown();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert_eq!(timers.register(None, hour, &waker, "test").unwrap(), None);
    }
}
