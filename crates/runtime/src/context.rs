//! The runtime a thread belongs to: set on worker threads and inside `block_on`,
//! so that free functions (`spawn`, I/O operations, timers) find their runtime.

use std::cell::RefCell;
use std::sync::Arc;

use crate::runtime::Inner;

thread_local! {
    static CURRENT: RefCell<Option<Arc<Inner>>> = const { RefCell::new(None) };
}

/// The runtime of the calling thread, if any.
pub(crate) fn current() -> Option<Arc<Inner>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Runs `f` with the runtime of the calling thread, if it has one, without
/// touching its reference count.
pub(crate) fn try_with_current<R>(f: impl FnOnce(&Arc<Inner>) -> R) -> Option<R> {
    CURRENT.with(|c| c.borrow().as_ref().map(f))
}

/// Runs `f` with the runtime of the calling thread.
///
/// # Panics
/// Outside a runtime, with a message naming the fix.
pub(crate) fn with_current<R>(f: impl FnOnce(&Arc<Inner>) -> R) -> R {
    CURRENT.with(|c| match &*c.borrow() {
        Some(inner) => f(inner),
        None => panic!(
            "no SharedScheduler runtime on this thread: call this from inside \
             `Runtime::block_on` or a coroutine spawned on a runtime"
        ),
    })
}

/// Makes `inner` the calling thread's runtime until the guard drops.
pub(crate) fn enter(inner: Arc<Inner>) -> EnterGuard {
    let prev = CURRENT.with(|c| c.borrow_mut().replace(inner));
    EnterGuard { prev }
}

/// Restores the previous runtime of the thread on drop.
pub(crate) struct EnterGuard {
    prev: Option<Arc<Inner>>,
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        let prev = self.prev.take();
        CURRENT.with(|c| *c.borrow_mut() = prev);
    }
}
