//! The registry: every live coroutine by id. Blocked coroutines live only here, so
//! this is the paper's **blocking set** — plus the index that makes `wake(cid)`,
//! `reprio(cid)` and `state(cid)` O(1).
//!
//! A generational slab: a [`CoroutineId`] is `generation << 32 | slot`. A slot's
//! generation changes whenever its coroutine exits, so the id of an exited
//! coroutine never names a later one that reuses the slot, and a forged or stale id
//! (a system call argument, a completion record) finds nothing. Generation 0 is
//! never issued, so the raw id 0 is never valid. A slot whose coroutine exits
//! at the last generation (2³² − 1) is retired, never reused: its generations
//! do not wrap round to name, with an old id, a coroutine that came later.
//! (They did until 2026-11-29: one slot spawned into and exited 2³² − 1 times
//! — minutes of a hot spawn loop, the free list being last in, first out —
//! gave every stale id of it a live coroutine again.) A retired slot costs its
//! few bytes, once per 2³² − 1 coroutines.
//!
//! Slots live in fixed pages of [`PAGE`] slots that never move: growing the
//! registry allocates one page and copies nothing. (A single doubling `Vec` would
//! copy every slot under the registry lock when it grows — a stall of milliseconds
//! at a million coroutines — and free multi-megabyte buffers that make the
//! allocator consolidate its free lists.)

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

use ss_abi::CoroutineId;

use crate::platform::Platform;
use crate::task::DynTask;

const NO_SLOT: u32 = u32::MAX;
/// Slots per page.
const PAGE: usize = 1024;

struct Slot<P: Platform> {
    generation: u32,
    next_free: u32,
    task: Option<Arc<DynTask<P>>>,
}

pub(crate) struct Registry<P: Platform> {
    pages: Vec<Box<[Slot<P>]>>,
    /// Slots handed out so far (all below are initialised).
    high: u32,
    free_head: u32,
    len: usize,
}

#[inline]
fn split(cid: CoroutineId) -> (usize, u32) {
    let raw = cid.into_raw();
    ((raw & 0xffff_ffff) as usize, (raw >> 32) as u32)
}

/// The next generation of a slot, or `None` at the last: the slot is retired.
#[inline]
fn next_generation(g: u32) -> Option<u32> {
    g.checked_add(1)
}

impl<P: Platform> Registry<P> {
    pub(crate) const fn new() -> Self {
        Registry {
            pages: Vec::new(),
            high: 0,
            free_head: NO_SLOT,
            len: 0,
        }
    }

    #[inline]
    fn slot(&self, index: usize) -> Option<&Slot<P>> {
        if index >= self.high as usize {
            return None;
        }
        self.pages.get(index / PAGE)?.get(index % PAGE)
    }

    #[inline]
    fn slot_mut(&mut self, index: usize) -> Option<&mut Slot<P>> {
        if index >= self.high as usize {
            return None;
        }
        self.pages.get_mut(index / PAGE)?.get_mut(index % PAGE)
    }

    /// Stores `task`, writing its id into it first. `task` must be unshared.
    ///
    /// Gives `task` back when all 2³² − 1 slots are taken (for the caller to
    /// drop outside its lock: dropping it drops its future).
    pub(crate) fn insert(
        &mut self,
        mut task: Arc<DynTask<P>>,
    ) -> Result<CoroutineId, Arc<DynTask<P>>> {
        let index = if self.free_head != NO_SLOT {
            let i = self.free_head;
            let Some(slot) = self.slot(i as usize) else {
                return Err(task);
            };
            self.free_head = slot.next_free;
            i
        } else {
            let i = self.high;
            if i == NO_SLOT {
                return Err(task);
            }
            if i as usize % PAGE == 0 {
                let page: Box<[Slot<P>]> = (0..PAGE)
                    .map(|_| Slot {
                        generation: 1,
                        next_free: NO_SLOT,
                        task: None,
                    })
                    .collect();
                self.pages.push(page);
            }
            self.high += 1;
            i
        };
        let Some(slot) = self.slot_mut(index as usize) else {
            return Err(task);
        };
        let cid = CoroutineId::from_raw(u64::from(slot.generation) << 32 | u64::from(index));
        Arc::get_mut(&mut task)
            .expect("a task being registered is not shared yet")
            .header
            .cid = cid;
        slot.task = Some(task);
        self.len += 1;
        Ok(cid)
    }

    #[inline]
    pub(crate) fn get(&self, cid: CoroutineId) -> Option<&Arc<DynTask<P>>> {
        let (index, generation) = split(cid);
        let slot = self.slot(index)?;
        if slot.generation == generation {
            slot.task.as_ref()
        } else {
            None
        }
    }

    pub(crate) fn remove(&mut self, cid: CoroutineId) -> Option<Arc<DynTask<P>>> {
        let (index, generation) = split(cid);
        let free_head = self.free_head;
        let slot = self.slot_mut(index)?;
        if slot.generation != generation {
            return None;
        }
        let task = slot.task.take()?;
        if let Some(g) = next_generation(slot.generation) {
            slot.generation = g;
            slot.next_free = free_head;
            self.free_head = index as u32;
        }
        self.len -= 1;
        Some(task)
    }

    /// Takes every task out (executor shutdown). Ids are retired as by `remove`.
    pub(crate) fn drain(&mut self) -> Vec<Arc<DynTask<P>>> {
        let mut out = Vec::with_capacity(self.len);
        let high = self.high as usize;
        for index in 0..high {
            let free_head = self.free_head;
            let Some(slot) = self.slot_mut(index) else {
                break;
            };
            if let Some(task) = slot.task.take() {
                if let Some(g) = next_generation(slot.generation) {
                    slot.generation = g;
                    slot.next_free = free_head;
                    self.free_head = index as u32;
                }
                out.push(task);
            }
        }
        self.len = 0;
        out
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Visits every live task.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Arc<DynTask<P>>)) {
        for page in &self.pages {
            for slot in page.iter() {
                if let Some(t) = &slot.task {
                    f(t);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::SpinPlatform;
    use crate::Executor;
    use ss_abi::{CoroutineKind, Priority};

    fn task(exec: &Executor) -> Arc<DynTask<SpinPlatform>> {
        crate::task::Task::new_arc(
            async {},
            CoroutineKind::Normal,
            Priority::new(0).unwrap(),
            0,
            exec.shared().clone(),
        )
    }

    #[test]
    fn a_slot_at_its_last_generation_is_retired_not_wrapped() {
        let exec = Executor::new();
        let mut reg = Registry::<SpinPlatform>::new();
        let first = reg.insert(task(&exec)).ok().unwrap();
        assert_eq!(split(first), (0, 1));
        // Slot 0 near the end of its generations (as after 2³² − 3 exits).
        reg.remove(first).unwrap();
        reg.slot_mut(0).unwrap().generation = u32::MAX - 1;
        let mut stale = Vec::new();
        for g in [u32::MAX - 1, u32::MAX] {
            let cid = reg.insert(task(&exec)).ok().unwrap();
            assert_eq!(split(cid), (0, g));
            reg.remove(cid).unwrap();
            stale.push(cid);
        }
        // Retired: the next coroutines take other slots, however many come and
        // go, and no old id of slot 0 names one of them.
        for round in 0..3 {
            let cid = reg.insert(task(&exec)).ok().unwrap();
            assert_eq!(split(cid).0, 1, "round {round}: slot 0 was reused");
            for old in stale.iter().chain([&first]) {
                assert!(reg.get(*old).is_none(), "{old} names a live coroutine");
                assert!(reg.remove(*old).is_none());
            }
            reg.remove(cid).unwrap();
        }
        // A shutdown's drain retires the same way.
        let a = reg.insert(task(&exec)).ok().unwrap();
        reg.slot_mut(split(a).0).unwrap().generation = u32::MAX;
        assert_eq!(reg.drain().len(), 1);
        let b = reg.insert(task(&exec)).ok().unwrap();
        assert_ne!(split(b).0, split(a).0);
        assert_eq!(reg.len(), 1);
    }
}
