//! The physical frame allocator.
//!
//! Frames are numbered by physical page number within `[first, first + count)`.
//! Fresh frames come from a bump pointer, returned ones from a free stack, and a
//! bit per frame says which are handed out, so a double free or a foreign frame
//! is refused (an error the kernel reports) instead of corrupting the allocator.

use alloc::vec;
use alloc::vec::Vec;

/// What went wrong returning a frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FrameError {
    /// The frame is not in this allocator's range.
    Foreign(usize),
    /// The frame is not handed out (a double free).
    NotAllocated(usize),
}

/// Hands out physical frames.
#[derive(Debug)]
pub struct FrameAllocator {
    first: usize,
    count: usize,
    bump: usize,
    free: Vec<usize>,
    used: Vec<u64>,
}

impl FrameAllocator {
    /// An allocator over the `count` frames from page number `first`.
    pub fn new(first: usize, count: usize) -> Self {
        FrameAllocator {
            first,
            count,
            bump: 0,
            free: Vec::new(),
            used: vec![0; count.div_ceil(64)],
        }
    }

    /// A frame's page number, or `None` when all are in use.
    pub fn alloc(&mut self) -> Option<usize> {
        let index = match self.free.pop() {
            Some(i) => i,
            None if self.bump < self.count => {
                self.bump += 1;
                self.bump - 1
            }
            None => return None,
        };
        self.used[index / 64] |= 1 << (index % 64);
        Some(self.first + index)
    }

    /// Returns frame `ppn`.
    ///
    /// # Errors
    /// [`FrameError`] for a frame outside the range or not handed out; the
    /// allocator is unchanged then.
    pub fn free(&mut self, ppn: usize) -> Result<(), FrameError> {
        let index = ppn
            .checked_sub(self.first)
            .filter(|i| *i < self.count)
            .ok_or(FrameError::Foreign(ppn))?;
        let (word, bit) = (index / 64, 1u64 << (index % 64));
        if self.used[word] & bit == 0 {
            return Err(FrameError::NotAllocated(ppn));
        }
        self.used[word] &= !bit;
        self.free.push(index);
        Ok(())
    }

    /// Frames handed out now.
    pub fn in_use(&self) -> usize {
        self.bump - self.free.len()
    }

    /// Frames managed.
    pub fn capacity(&self) -> usize {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_reuse_and_exhaustion() {
        let mut a = FrameAllocator::new(100, 3);
        let f: Vec<_> = (0..3).map(|_| a.alloc().unwrap()).collect();
        assert_eq!(f, [100, 101, 102]);
        assert_eq!(a.alloc(), None);
        assert_eq!(a.in_use(), 3);
        a.free(101).unwrap();
        assert_eq!(a.in_use(), 2);
        assert_eq!(a.alloc(), Some(101));
        assert_eq!(a.alloc(), None);
    }

    #[test]
    fn bad_frees_are_refused() {
        let mut a = FrameAllocator::new(100, 70);
        let f = a.alloc().unwrap();
        assert_eq!(a.free(99), Err(FrameError::Foreign(99)));
        assert_eq!(a.free(170), Err(FrameError::Foreign(170)));
        assert_eq!(a.free(169), Err(FrameError::NotAllocated(169)));
        a.free(f).unwrap();
        assert_eq!(a.free(f), Err(FrameError::NotAllocated(f)));
        assert_eq!(a.in_use(), 0);
        // Every frame can be had, each once.
        let mut all: Vec<_> = core::iter::from_fn(|| a.alloc()).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 70);
    }
}
