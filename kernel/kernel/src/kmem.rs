//! Kernel memory held on a process's behalf, accounted and bounded.
//!
//! The kernel heap is 16 MiB for everything. What a process can make the
//! kernel keep for it — the bytes of its asynchronous calls in flight (a
//! `write`'s copy), the kernel coroutines of those calls, its pipes and their
//! buffers — is charged to the process's [`Account`] before it is allocated,
//! and given back when it is freed ([`Charge`]'s drop). A charge is refused:
//!
//! - with [`SysError::Limit`] past [`PROCESS_LIMIT`] for one process;
//! - with [`SysError::OutOfMemory`] past [`TOTAL_LIMIT`] for all processes
//!   together, or when the heap would be left with less than [`HEAP_FLOOR`]
//!   free (room for what is not charged: short-lived copies, processes and
//!   threads, the network).
//!
//! A charge is what the object may come to hold at most (a pipe is charged
//! its whole capacity when it is made, though its buffer grows only as bytes
//! come), so what is charged bounds what is held, and no later growth of a
//! charged object can take the heap by surprise. The allocations themselves
//! are fallible too (`try_reserve`), an error to the caller, never a panic.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicUsize, Ordering};

use ss_abi::syscall::SysError;

/// Bytes one process may have the kernel hold for it.
pub const PROCESS_LIMIT: usize = 8 << 20;
/// Bytes all processes together may have the kernel hold for them.
pub const TOTAL_LIMIT: usize = 10 << 20;
/// Free heap a charge must leave.
pub const HEAP_FLOOR: usize = 2 << 20;

/// Bytes charged now, all processes.
static TOTAL: AtomicUsize = AtomicUsize::new(0);

/// Bytes charged now to all processes.
pub fn total() -> usize {
    TOTAL.load(Ordering::SeqCst)
}

/// What the kernel holds for one process (shared by the objects charged to
/// it, which may outlive the process: a pipe end passed to a child).
#[derive(Default)]
pub struct Account {
    used: AtomicUsize,
}

impl Account {
    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }
}

/// Bytes charged to an account, given back when dropped.
pub struct Charge {
    account: Arc<Account>,
    bytes: usize,
}

/// Adds `bytes` to `n` if the sum stays within `limit`.
fn add_within(n: &AtomicUsize, bytes: usize, limit: usize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
        used.checked_add(bytes).filter(|&u| u <= limit)
    })
    .is_ok()
}

/// Charges `bytes` to `account`.
///
/// # Errors
/// [`SysError::Limit`] past the process's limit, [`SysError::OutOfMemory`]
/// past the total or with the heap short.
pub fn charge(account: &Arc<Account>, bytes: usize) -> Result<Charge, SysError> {
    if !add_within(&account.used, bytes, PROCESS_LIMIT) {
        return Err(SysError::Limit);
    }
    let short = crate::mm::heap_free() < HEAP_FLOOR.saturating_add(bytes);
    if short || !add_within(&TOTAL, bytes, TOTAL_LIMIT) {
        account.used.fetch_sub(bytes, Ordering::SeqCst);
        return Err(SysError::OutOfMemory);
    }
    Ok(Charge {
        account: account.clone(),
        bytes,
    })
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.account.used.fetch_sub(self.bytes, Ordering::SeqCst);
        TOTAL.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}
