//! The interface of the shared scheduler code (the paper's vDSO) on the RISC-V
//! kernel.
//!
//! The kernel links ss-core's Executor for user processes once, as its own
//! program (`kernel/vdso`), at [`VDSO_BASE`](crate::uspace::VDSO_BASE). Every
//! process maps its code and read-only data from the same frames, read+execute,
//! and gets a private copy of its writable data: one copy of the scheduler's
//! code in memory, one Executor per process in that process's memory.
//!
//! A process reaches it through the [`VdsoTable`] at `VDSO_BASE`: plain
//! `extern "C"` function pointers, checked by magic and version. Futures cross
//! as [`RawTask`]: the program's own poll and drop functions for a boxed
//! future, so no Rust trait object crosses the boundary. The one Rust type that
//! does is `core::task::Context` (by pointer, to the program's poll function):
//! the vDSO and the programs are built by the same compiler in one build
//! (`cargo xtask`), and the magic/version pair refuses a table from another.

/// `magic` of the table: `b"SSVD"` little-endian.
pub const VDSO_MAGIC: u32 = u32::from_le_bytes(*b"SSVD");
/// Version of the table layout (5: [`VdsoTable::release_descriptor`]).
pub const VDSO_VERSION: u32 = 5;

/// A program's future, type-erased for the vDSO.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct RawTask {
    /// The boxed future.
    pub data: *mut (),
    /// Polls it with the `core::task::Context` at `cx`; returns 1 when it
    /// completed, 0 when pending.
    pub poll: unsafe extern "C" fn(data: *mut (), cx: *mut ()) -> u8,
    /// Drops it (and frees its box).
    pub drop: unsafe extern "C" fn(data: *mut ()),
}

/// What the vDSO offers a process, at `VDSO_BASE`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct VdsoTable {
    /// [`VDSO_MAGIC`].
    pub magic: u32,
    /// [`VDSO_VERSION`].
    pub version: u32,
    /// Gives the vDSO its heap (`len` bytes at `heap`, which it owns from now
    /// on) and creates the process's Executor. Once, before anything else.
    pub init: unsafe extern "C" fn(heap: *mut u8, len: usize),
    /// Spawns `task` at level `priority` with kind `kind` (`CoroutineKind` as
    /// `u8`); returns the coroutine id, or a negative error: -1 bad priority or
    /// kind, -2 shut down, -3 too many. On error the task has been dropped.
    pub spawn: unsafe extern "C" fn(task: RawTask, priority: u8, kind: u8) -> i64,
    /// The calling thread polls the Executor for good (publishing the ready
    /// bitmap and yielding to more important processes between polls).
    pub run: extern "C" fn() -> !,
    /// `wake(cid)`: 0, or -1 for an id that is not live.
    pub wake: extern "C" fn(cid: u64) -> i64,
    /// `reprio(cid, prio)`: 0, -1 no such coroutine, -2 bad priority.
    pub reprio: extern "C" fn(cid: u64, priority: u8) -> i64,
    /// The id of the coroutine that the `core::task::Waker` at `waker`
    /// belongs to (`getcid`), or `u64::MAX`.
    pub cid_of: unsafe extern "C" fn(waker: *const ()) -> u64,
    /// For the running coroutine whose `Waker` is at `waker`: publish, and
    /// yield the hart if a more important coroutine is ready in another
    /// process; returns 1 if a more important coroutine is ready in this one.
    pub cooperate: unsafe extern "C" fn(waker: *const ()) -> u8,
    /// The Executor's ready bitmap.
    pub ready_bitmap: extern "C" fn() -> u64,
    /// Publishes `ready` as the process's bitmap now.
    pub publish: extern "C" fn(ready: u64),
    /// How many times the process yielded to a more important one.
    pub global_yields: extern "C" fn() -> u64,
    /// The result of asynchronous call `op` issued with `cid` that has been
    /// delivered (and is taken now), or [`NO_RESULT`]; with a result, the
    /// kernel's completion time (`Completion::stamp`) goes to `stamp` unless
    /// it is null. A result of an earlier call of `cid` (one it abandoned) is
    /// never handed out for `op`: it is dropped.
    pub take_result: unsafe extern "C" fn(cid: u64, op: u64, stamp: *mut u64) -> i64,
    /// Drains the completion queue now (what the upcall handler does): stores
    /// each result for `take_result` and wakes its coroutine. Returns how many
    /// entries it took.
    pub drain: extern "C" fn() -> u64,
    /// The level of live coroutine `cid`, or -1 for an id that is not live
    /// (an asynchronous call names its issuer's level to the kernel).
    pub priority_of: extern "C" fn(cid: u64) -> i64,
    /// `cid` will never take the result of its `accept` call `op`, which
    /// has finished (`cancel(op)` said so after the call's future was
    /// dropped): the vDSO closes the descriptor — now if the result is
    /// here, else when the queue delivers it. Nothing else would: the
    /// program never sees the number.
    pub release_descriptor: extern "C" fn(cid: u64, op: u64),
}

/// [`VdsoTable::take_result`]'s "nothing delivered for this cid yet".
pub const NO_RESULT: i64 = i64::MIN;
