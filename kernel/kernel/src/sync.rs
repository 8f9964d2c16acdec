//! Locks for the kernel: every lock a timer interrupt might also take must keep
//! interrupts off on its hart while held, or the handler would spin forever on a
//! lock its own hart holds. So the kernel has one kind of lock, [`IrqMutex`].

use core::ops::{Deref, DerefMut};

use crate::arch;

/// A spin lock that disables this hart's interrupts while held.
pub struct IrqMutex<T> {
    inner: spin::Mutex<T>,
}

/// The guard of an [`IrqMutex`]: unlocks, then restores interrupts.
pub struct IrqGuard<'a, T> {
    guard: Option<spin::MutexGuard<'a, T>>,
    irq: bool,
}

impl<T> IrqMutex<T> {
    /// A new lock.
    pub const fn new(value: T) -> Self {
        IrqMutex {
            inner: spin::Mutex::new(value),
        }
    }

    /// Spins until the lock is ours.
    pub fn lock(&self) -> IrqGuard<'_, T> {
        let irq = arch::irq_disable();
        IrqGuard {
            guard: Some(self.inner.lock()),
            irq,
        }
    }

    /// Takes the lock if it is free.
    pub fn try_lock(&self) -> Option<IrqGuard<'_, T>> {
        let irq = arch::irq_disable();
        match self.inner.try_lock() {
            Some(g) => Some(IrqGuard {
                guard: Some(g),
                irq,
            }),
            None => {
                if irq {
                    arch::irq_enable();
                }
                None
            }
        }
    }
}

impl<T> Deref for IrqGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.guard.as_ref().expect("guard is live until drop")
    }
}

impl<T> DerefMut for IrqGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_mut().expect("guard is live until drop")
    }
}

impl<T> Drop for IrqGuard<'_, T> {
    fn drop(&mut self) {
        drop(self.guard.take());
        if self.irq {
            arch::irq_enable();
        }
    }
}

/// Interrupts off until dropped (restored to what they were).
pub struct NoIrq(bool);

impl NoIrq {
    /// Disables interrupts on this hart.
    pub fn now() -> NoIrq {
        NoIrq(arch::irq_disable())
    }
}

impl Drop for NoIrq {
    fn drop(&mut self) {
        if self.0 {
            arch::irq_enable();
        }
    }
}
