//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use ss_core::platform::{Critical, Park, Platform};
use ss_core::{CoroutineId, CoroutineState, Priority};

pub fn p(level: u8) -> Priority {
    Priority::new(level).unwrap()
}

/// Returns `Pending` once without arranging any wake-up: the coroutine blocks
/// until someone wakes it by id (like an asynchronous system call).
pub fn block_once() -> impl Future<Output = ()> {
    let mut first = true;
    std::future::poll_fn(move |_| {
        if std::mem::take(&mut first) {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
}

/// Wakes itself and returns `Pending` once: a yield.
pub fn yield_now() -> impl Future<Output = ()> {
    let mut first = true;
    std::future::poll_fn(move |cx| {
        if std::mem::take(&mut first) {
            cx.waker().wake_by_ref();
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
}

/// A slot a coroutine parks its waker in, for a test to wake it later.
#[derive(Clone, Default)]
pub struct WakerSlot(Arc<Mutex<Option<Waker>>>);

impl WakerSlot {
    /// Blocks once, leaving its waker in the slot.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let slot = self.0.clone();
        let mut first = true;
        std::future::poll_fn(move |cx| {
            if std::mem::take(&mut first) {
                *slot.lock().unwrap() = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
    }

    pub fn take(&self) -> Option<Waker> {
        self.0.lock().unwrap().take()
    }
}

/// Counts drops of the value it guards: a future holding one shows whether the
/// executor dropped it.
#[derive(Clone, Default)]
pub struct DropCount(Arc<std::sync::atomic::AtomicUsize>);

pub struct DropToken(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for DropToken {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl DropCount {
    pub fn token(&self) -> DropToken {
        DropToken(self.0.clone())
    }
    pub fn get(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A future that never completes and never wakes itself.
pub struct Forever;

impl Future for Forever {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

/// A platform that records every state transition, in the manner of
/// embassy's test platforms.
#[derive(Default)]
pub struct Recorder {
    pub log: Mutex<Vec<(CoroutineId, CoroutineState, CoroutineState)>>,
}

impl Recorder {
    pub fn trace_of(&self, cid: CoroutineId) -> Vec<(CoroutineState, CoroutineState)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, _, _)| *c == cid)
            .map(|&(_, a, b)| (a, b))
            .collect()
    }
}

impl Park for Recorder {
    fn park(&self) {}
    fn unpark_one(&self) {}
}

impl Critical for Recorder {
    type Guard = ();
    fn enter(&self) {}
}

impl Platform for Recorder {
    fn on_transition(&self, cid: CoroutineId, from: CoroutineState, to: CoroutineState) {
        assert!(from.can_become(to), "illegal edge {from} -> {to}");
        self.log.lock().unwrap().push((cid, from, to));
    }
}

/// Wraps a future and fails the test if two CPUs ever poll it at once — the
/// symptom of a coroutine queued twice.
pub struct Exclusive<F> {
    inner: Pin<Box<F>>,
    busy: Arc<std::sync::atomic::AtomicBool>,
}

pub fn exclusive<F: Future>(f: F) -> Exclusive<F> {
    Exclusive {
        inner: Box::pin(f),
        busy: Arc::default(),
    }
}

impl<F: Future> Future for Exclusive<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        use std::sync::atomic::Ordering::SeqCst;
        assert!(!self.busy.swap(true, SeqCst), "polled on two CPUs at once");
        let r = self.inner.as_mut().poll(cx);
        self.busy.store(false, SeqCst);
        r
    }
}
