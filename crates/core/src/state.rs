//! The coroutine state model (paper §2.3), explicit and checked.
//!
//! ```text
//!                    ①                  ②
//!      ┌────────┐  spawn   ┌───────┐  pick   ┌─────────┐  ⑥ trap / interrupt  ┌───────────────────┐
//!      │ Create ├─────────►│ Ready ├────────►│ Running ├─────────────────────►│ Running-suspended │
//!      └───┬────┘          └─┬───▲─┘         └─┬──┬──┬─┘◄─────────────────────┤  (holds the stack)│
//!          │                 │   │  ④ Pending, │  │  │   ⑦ handler returns   └───────────────────┘
//!          │                 │   └─woken in poll┘  │  │
//!          │                 │   ⑧ wake            │  │ ③ Pending, not woken
//!          │                 │   ┌───────────┐     │  │
//!          │                 │   │  Blocked  │◄────┼──┘
//!          │                 │   └─────┬─────┘     │
//!          │ ⑪ cancel        │ ⑩ cancel│ ⑨ cancel  │ ⑤ Ready / cancelled / panicked
//!          ▼                 ▼         ▼           ▼
//!      ┌──────────────────────────────────────────────┐
//!      │                     Exit                     │  future dropped, cid retired
//!      └──────────────────────────────────────────────┘
//! ```
//!
//! | edge | from → to | taken by |
//! |---|---|---|
//! | ① | Create → Ready | [`Executor::spawn`](crate::Executor::spawn) |
//! | ② | Ready → Running | a [`Poller`](crate::Poller) popping the most important ready coroutine |
//! | ③ | Running → Blocked | the poller, when `poll` returned `Pending` and nobody woke it meanwhile |
//! | ④ | Running → Ready | the poller, when it was woken during `poll` (this is how a yield looks) |
//! | ⑤ | Running → Exit | the poller: `poll` returned `Ready`, or cancellation was asked during `poll`, or `poll` panicked |
//! | ⑥ | Running → Running-suspended | [`Executor::suspend`](crate::Executor::suspend), from a trap handler |
//! | ⑦ | Running-suspended → Running | [`Executor::resume`](crate::Executor::resume) |
//! | ⑧ | Blocked → Ready | [`Executor::wake`](crate::Executor::wake) or the coroutine's `Waker` |
//! | ⑨ ⑩ ⑪ | Blocked / Ready / Create → Exit | [`Executor::cancel`](crate::Executor::cancel), or shutdown |
//!
//! A wake that arrives while the coroutine is Ready, Create or Exit changes
//! nothing; one that arrives while it is Running (or Running-suspended) is
//! remembered and turns ③ into ④. That rule is what makes a wake-up impossible to
//! lose or to queue twice, however the wake races with the poll: see the
//! [bits](#the-state-word) below.
//!
//! Rust futures only say `Ready` or `Pending`, so the paper leaves state implicit
//! in "the queue it is in". Here the state is one atomic word per coroutine, so it
//! can be changed by compare-and-swap from any CPU without a lock, and read by
//! anyone ([`Executor::state`](crate::Executor::state)).
//!
//! # The state word
//!
//! | bit | meaning | set by | cleared by |
//! |---|---|---|---|
//! | `CREATED` | allocated, not yet queued | spawn | ① |
//! | `QUEUED` | Ready: the waker that set it owns the right, and the duty, to put it in a ready queue | ①, ④ (woken by another party), ⑧ | ② |
//! | `RUNNING` | a poller owns the future — or, for a coroutine that woke *itself* during its poll (a yield), the queue entry does (see below) | ② | ③ ④ ⑤ |
//! | `NOTIFIED` | woken while `RUNNING`; the poller must take ④ instead of ③ | a wake | ③ ④ |
//! | `SUSPENDED` | with `RUNNING`: interrupted, still holding its stack | ⑥ | ⑦, ③ ④ ⑤ |
//! | `CANCEL` | cancellation asked while another party owns the future | cancel | ⑤ ⑩ |
//! | `DONE` | Exit; never cleared | ⑤ ⑨ ⑩ ⑪ | — |
//!
//! **Yields.** A coroutine that wakes itself during its own poll (through the
//! poll-scoped waker, a plain store) takes ④ without touching its word: it goes
//! back to its ready queue still `RUNNING`, and whichever poller pops it inherits
//! the right to poll it through the ready lock. In the model it is Ready; the
//! executor tells it from a coroutine being polled by queue membership, under the
//! ready lock (`Executor::state`, a wake, a cancel, `suspend` all do). A wake that
//! finds it queued changes nothing, as for any Ready coroutine.
//!
//! Ownership rule: exactly one party may touch a coroutine's future at a time —
//! the poller that set `RUNNING` (or popped a yielded coroutine), whoever took a
//! coroutine out of a ready queue, or whoever moved the word into `DONE` from a
//! state where nobody else owned it. Every transition that
//! grants ownership is a successful compare-and-swap with `Acquire`, and every one
//! that gives it up is a `Release`, so the future's memory is handed over cleanly.

use core::fmt;

pub(crate) const CREATED: u32 = 1 << 0;
pub(crate) const QUEUED: u32 = 1 << 1;
pub(crate) const RUNNING: u32 = 1 << 2;
pub(crate) const NOTIFIED: u32 = 1 << 3;
pub(crate) const SUSPENDED: u32 = 1 << 4;
pub(crate) const CANCEL: u32 = 1 << 5;
pub(crate) const DONE: u32 = 1 << 6;

/// The state of a coroutine (paper §2.3, Fig. 2).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum CoroutineState {
    /// Spawned, not yet in a ready queue.
    Create,
    /// In a ready queue, waiting for a CPU.
    Ready,
    /// Being polled on some CPU.
    Running,
    /// Interrupted while running (timer, exception, synchronous system call): it
    /// holds its stack but does not execute, and goes back to Running, not Ready.
    RunningSuspended,
    /// Waiting for a wake-up, in the blocking set.
    Blocked,
    /// Finished or cancelled; its future is dropped.
    Exit,
}

impl CoroutineState {
    /// The state a state word describes.
    #[inline]
    pub(crate) const fn from_bits(bits: u32) -> Self {
        if bits & DONE != 0 {
            CoroutineState::Exit
        } else if bits & RUNNING != 0 {
            if bits & SUSPENDED != 0 {
                CoroutineState::RunningSuspended
            } else {
                CoroutineState::Running
            }
        } else if bits & QUEUED != 0 {
            CoroutineState::Ready
        } else if bits & CREATED != 0 {
            CoroutineState::Create
        } else {
            CoroutineState::Blocked
        }
    }

    /// Whether the model has an edge `self → to` (the numbered edges above).
    pub const fn can_become(self, to: CoroutineState) -> bool {
        use CoroutineState::*;
        matches!(
            (self, to),
            (Create, Ready)                       // ①
                | (Ready, Running)                // ②
                | (Running, Blocked)              // ③
                | (Running, Ready)                // ④
                | (Running, Exit)                 // ⑤
                | (Running, RunningSuspended)     // ⑥
                | (RunningSuspended, Running)     // ⑦
                | (RunningSuspended, Blocked)     // ⑦③ when the poll ends while suspended
                | (RunningSuspended, Ready)       // ⑦④
                | (RunningSuspended, Exit)        // ⑦⑤
                | (Blocked, Ready)                // ⑧
                | (Blocked, Exit)                 // ⑨
                | (Ready, Exit)                   // ⑩
                | (Create, Exit) // ⑪
        )
    }
}

impl fmt::Display for CoroutineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CoroutineState::Create => "create",
            CoroutineState::Ready => "ready",
            CoroutineState::Running => "running",
            CoroutineState::RunningSuspended => "running-suspended",
            CoroutineState::Blocked => "blocked",
            CoroutineState::Exit => "exit",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CoroutineState::*;

    #[test]
    fn decoding_bits() {
        assert_eq!(CoroutineState::from_bits(CREATED), Create);
        assert_eq!(CoroutineState::from_bits(QUEUED), Ready);
        assert_eq!(CoroutineState::from_bits(QUEUED | CANCEL), Ready);
        assert_eq!(CoroutineState::from_bits(RUNNING | NOTIFIED), Running);
        assert_eq!(
            CoroutineState::from_bits(RUNNING | SUSPENDED),
            RunningSuspended
        );
        assert_eq!(CoroutineState::from_bits(0), Blocked);
        assert_eq!(CoroutineState::from_bits(DONE | QUEUED), Exit);
    }

    #[test]
    fn no_way_back_from_exit_and_no_shortcut_to_running() {
        for s in [Create, Ready, Running, RunningSuspended, Blocked, Exit] {
            assert!(!Exit.can_become(s));
            assert!(!s.can_become(Create));
        }
        assert!(!Blocked.can_become(Running));
        assert!(!Create.can_become(Running));
        assert!(!RunningSuspended.can_become(RunningSuspended));
    }
}
