//! The registry: every live coroutine by id. Blocked coroutines live only here, so
//! this is the paper's **blocking set** — plus the index that makes `wake(cid)`,
//! `reprio(cid)` and `state(cid)` O(1).
//!
//! A generational slab: a [`CoroutineId`] is `generation << 32 | slot`. A slot's
//! generation changes whenever its coroutine exits, so the id of an exited
//! coroutine never names a later one that reuses the slot, and a forged or stale id
//! (a system call argument, a completion record) finds nothing. Generation 0 is
//! never issued, so the raw id 0 is never valid.

use alloc::sync::Arc;
use alloc::vec::Vec;

use ss_abi::CoroutineId;

use crate::platform::Platform;
use crate::task::DynTask;

const NO_SLOT: u32 = u32::MAX;

struct Slot<P: Platform> {
    generation: u32,
    task: Option<Arc<DynTask<P>>>,
    next_free: u32,
}

pub(crate) struct Registry<P: Platform> {
    slots: Vec<Slot<P>>,
    free_head: u32,
    len: usize,
}

#[inline]
fn split(cid: CoroutineId) -> (usize, u32) {
    let raw = cid.into_raw();
    ((raw & 0xffff_ffff) as usize, (raw >> 32) as u32)
}

impl<P: Platform> Registry<P> {
    pub(crate) const fn new() -> Self {
        Registry {
            slots: Vec::new(),
            free_head: NO_SLOT,
            len: 0,
        }
    }

    /// Stores `task`, writing its id into it first. `task` must be unshared.
    ///
    /// Returns `None` when all 2³² − 1 slots are taken.
    pub(crate) fn insert(&mut self, mut task: Arc<DynTask<P>>) -> Option<CoroutineId> {
        let index = if self.free_head != NO_SLOT {
            let i = self.free_head;
            self.free_head = self.slots[i as usize].next_free;
            i
        } else {
            let i = u32::try_from(self.slots.len())
                .ok()
                .filter(|&i| i != NO_SLOT)?;
            self.slots.push(Slot {
                generation: 1,
                task: None,
                next_free: NO_SLOT,
            });
            i
        };
        let slot = &mut self.slots[index as usize];
        let cid = CoroutineId::from_raw(u64::from(slot.generation) << 32 | u64::from(index));
        Arc::get_mut(&mut task)
            .expect("a task being registered is not shared yet")
            .header
            .cid = cid;
        slot.task = Some(task);
        self.len += 1;
        Some(cid)
    }

    #[inline]
    pub(crate) fn get(&self, cid: CoroutineId) -> Option<&Arc<DynTask<P>>> {
        let (index, generation) = split(cid);
        let slot = self.slots.get(index)?;
        if slot.generation == generation {
            slot.task.as_ref()
        } else {
            None
        }
    }

    pub(crate) fn remove(&mut self, cid: CoroutineId) -> Option<Arc<DynTask<P>>> {
        let (index, generation) = split(cid);
        let slot = self.slots.get_mut(index)?;
        if slot.generation != generation {
            return None;
        }
        let task = slot.task.take()?;
        // Skip generation 0 on wrap-around so the raw id 0 stays invalid.
        slot.generation = slot.generation.wrapping_add(1).max(1);
        slot.next_free = self.free_head;
        self.free_head = index as u32;
        self.len -= 1;
        Some(task)
    }

    /// Takes every task out (executor shutdown). Ids are retired as by `remove`.
    pub(crate) fn drain(&mut self) -> Vec<Arc<DynTask<P>>> {
        let mut out = Vec::with_capacity(self.len);
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if let Some(task) = slot.task.take() {
                slot.generation = slot.generation.wrapping_add(1).max(1);
                slot.next_free = self.free_head;
                self.free_head = index as u32;
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
        for slot in &self.slots {
            if let Some(t) = &slot.task {
                f(t);
            }
        }
    }
}
