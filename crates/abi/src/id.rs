//! Coroutine ids.

use core::fmt;

/// The id of a coroutine: the handle by which anyone (another coroutine, an I/O
/// completion, the kernel) wakes it, re-prioritises it or asks for its state.
///
/// An id is an opaque 64-bit number. The executor that issued it decides what the
/// bits mean (the core uses a slot index and a generation, so a stale id of a
/// coroutine that has exited never names a newer one). Ids received from outside —
/// a system call argument, a completion record in shared memory — are taken with
/// [`CoroutineId::from_raw`] and are only *allegations*: the executor checks them
/// and answers "no such coroutine" rather than trusting them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct CoroutineId(u64);

impl CoroutineId {
    /// Wraps a raw id, for example one read from a system call argument.
    ///
    /// The result is not checked here; executors check ids on use.
    #[inline]
    pub const fn from_raw(raw: u64) -> Self {
        CoroutineId(raw)
    }

    /// The raw 64-bit value, for passing across a system call or shared page.
    #[inline]
    pub const fn into_raw(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for CoroutineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cid#{:x}", self.0)
    }
}

impl fmt::Display for CoroutineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_round_trip() {
        for raw in [0, 1, u64::MAX, 0x1234_5678_9abc_def0] {
            assert_eq!(CoroutineId::from_raw(raw).into_raw(), raw);
        }
    }
}
