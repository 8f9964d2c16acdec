//! Global bitmap aggregation (paper §2.4).
//!
//! The kernel (or, on Linux, the coordinator process) folds the ready bitmaps of
//! every process — and of its own executor — into one **global bitmap**, publishes
//! it read-only to every process, and each process yields when something more
//! important is ready *elsewhere*.
//!
//! The paper's global bitmap is the OR of all sources. An OR alone cannot answer
//! "elsewhere": a process whose own bit *p* is set cannot tell whether anybody else
//! also has *p*. [`GlobalBitmap`] therefore keeps, per level, how many sources have
//! that bit, and publishes two words ([`GlobalView`]):
//!
//! - `global`: levels at least one source has;
//! - `multi`: levels at least two sources have.
//!
//! For a process whose own bitmap is `mine`, the levels ready somewhere else are
//! `(global & !mine) | multi` — one expression, O(1), no matter how many processes
//! there are. Updating a source costs O(bits that changed).
//!
//! Every source bitmap is **untrusted** (it is read from a page another process
//! writes): [`GlobalBitmap::update`] masks it to the configured levels and caps it
//! by the source's policy ceiling, so no value can crash the scan or claim a
//! priority the policy does not allow.

use alloc::vec::Vec;

use ss_abi::page::{GlobalPage, GLOBAL_PAGE_MAGIC, PAGE_VERSION};
use ss_abi::{Levels, Priority, MAX_LEVELS};

use crate::bitmap::PrioBitmap;

/// A source's handle in a [`GlobalBitmap`]: a process, or the kernel's executor.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SourceId(u32);

impl SourceId {
    /// The slot index (for tables kept beside the aggregate).
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// The published global state: what every process reads, in O(1).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct GlobalView {
    /// Levels some source has ready.
    pub global: PrioBitmap,
    /// Levels at least two sources have ready.
    pub multi: PrioBitmap,
}

impl GlobalView {
    /// The levels ready in some source other than the one whose bitmap is `mine`.
    ///
    /// `mine` must be the bitmap that source last published (or a subset of it).
    #[inline]
    pub const fn elsewhere(self, mine: PrioBitmap) -> PrioBitmap {
        PrioBitmap::from_bits((self.global.bits() & !mine.bits()) | self.multi.bits())
    }

    /// Whether a coroutine more important than `than` is ready in another source:
    /// the question a process asks before running a coroutine at `than`.
    #[inline]
    pub const fn more_important_elsewhere(self, mine: PrioBitmap, than: Priority) -> bool {
        self.elsewhere(mine).has_more_important_than(than)
    }

    /// Reads the view out of a global page.
    ///
    /// # Errors
    /// [`BadGlobalPage`] when the page's magic or version is not ours.
    pub fn from_page(page: &GlobalPage) -> Result<GlobalView, BadGlobalPage> {
        if page.magic != GLOBAL_PAGE_MAGIC || page.version != PAGE_VERSION {
            return Err(BadGlobalPage {
                magic: page.magic,
                version: page.version,
            });
        }
        Ok(GlobalView {
            global: PrioBitmap::from_bits(page.global),
            // `multi` is a subset of `global` by construction; keep it so.
            multi: PrioBitmap::from_bits(page.multi & page.global),
        })
    }

    /// Writes the view into a global page, bumping its sequence number.
    pub fn to_page(self, page: &mut GlobalPage) {
        page.magic = GLOBAL_PAGE_MAGIC;
        page.version = PAGE_VERSION;
        page.global = self.global.bits();
        page.multi = self.multi.bits();
        page.seq = page.seq.wrapping_add(1);
    }
}

/// A global page whose header is not one this build understands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BadGlobalPage {
    /// The magic found.
    pub magic: u32,
    /// The version found.
    pub version: u32,
}

impl core::error::Error for BadGlobalPage {}

impl core::fmt::Display for BadGlobalPage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "global page has magic {:#x} version {}, expected {GLOBAL_PAGE_MAGIC:#x} version {PAGE_VERSION}: \
             the process and the kernel/coordinator were built from different ss-abi versions",
            self.magic, self.version
        )
    }
}

#[derive(Clone, Copy)]
struct Source {
    bits: u64,
    /// Bits this source may claim (its policy ceiling and the configured levels).
    allowed: u64,
}

/// The aggregate of many sources' ready bitmaps.
///
/// Owned by the one party that scans (the kernel's timer path, or the coordinator),
/// hence `&mut self` on updates; what it publishes is the [`GlobalView`].
pub struct GlobalBitmap {
    levels: Levels,
    sources: Vec<Option<Source>>,
    free: Vec<u32>,
    counts: [u32; MAX_LEVELS as usize],
    view: GlobalView,
}

impl GlobalBitmap {
    /// An aggregate over sources with `levels` priority levels.
    pub fn new(levels: Levels) -> Self {
        GlobalBitmap {
            levels,
            sources: Vec::new(),
            free: Vec::new(),
            counts: [0; MAX_LEVELS as usize],
            view: GlobalView::default(),
        }
    }

    /// Adds a source that may claim any level.
    pub fn add_source(&mut self) -> SourceId {
        self.add_source_capped(Priority::MOST_IMPORTANT)
    }

    /// Adds a source whose policy ceiling is `ceiling`: it may claim `ceiling` and
    /// anything less important, never more (paper §2.4's open problem of a process
    /// claiming the top level; the policy decides the ceiling).
    pub fn add_source_capped(&mut self, ceiling: Priority) -> SourceId {
        let allowed = self.levels.mask() & !ceiling.more_important_mask();
        let src = Some(Source { bits: 0, allowed });
        if let Some(i) = self.free.pop() {
            self.sources[i as usize] = src;
            SourceId(i)
        } else {
            self.sources.push(src);
            SourceId((self.sources.len() - 1) as u32)
        }
    }

    /// Removes a source (a process that exited or died), withdrawing its bits.
    ///
    /// Returns `false` if `id` names no current source.
    pub fn remove_source(&mut self, id: SourceId) -> bool {
        if self.update(id, 0).is_none() {
            return false;
        }
        self.sources[id.index()] = None;
        self.free.push(id.0);
        true
    }

    /// Takes a source's newly read bitmap. `raw` is untrusted: bits outside the
    /// levels or above the source's ceiling are dropped.
    ///
    /// Returns whether the published view changed, or `None` if `id` names no
    /// current source. Costs O(number of bits that changed).
    pub fn update(&mut self, id: SourceId, raw: u64) -> Option<bool> {
        let src = self.sources.get_mut(id.index())?.as_mut()?;
        let new = raw & src.allowed;
        let old = core::mem::replace(&mut src.bits, new);
        let mut changed = old ^ new;
        if changed == 0 {
            return Some(false);
        }
        let before = self.view;
        while changed != 0 {
            let level = changed.trailing_zeros();
            let bit = 1u64 << level;
            changed &= !bit;
            let count = &mut self.counts[level as usize];
            if new & bit != 0 {
                *count += 1;
            } else {
                *count -= 1;
            }
            let (g, m) = (self.view.global.bits(), self.view.multi.bits());
            let g = if *count >= 1 { g | bit } else { g & !bit };
            let m = if *count >= 2 { m | bit } else { m & !bit };
            self.view = GlobalView {
                global: PrioBitmap::from_bits(g),
                multi: PrioBitmap::from_bits(m),
            };
        }
        Some(self.view != before)
    }

    /// The current aggregate.
    #[inline]
    pub fn view(&self) -> GlobalView {
        self.view
    }

    /// The bitmap a source last contributed (after sanitising).
    pub fn source_bits(&self, id: SourceId) -> Option<PrioBitmap> {
        let src = self.sources.get(id.index())?.as_ref()?;
        Some(PrioBitmap::from_bits(src.bits))
    }

    /// The number of current sources.
    pub fn len(&self) -> usize {
        self.sources.len() - self.free.len()
    }

    /// Whether there is no source.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(l: u8) -> Priority {
        Priority::new(l).unwrap()
    }

    #[test]
    fn elsewhere_excludes_only_my_own_bits() {
        let mut g = GlobalBitmap::new(Levels::DEFAULT);
        let a = g.add_source();
        let b = g.add_source();
        g.update(a, 0b0000_0100).unwrap();
        g.update(b, 0b0001_0100).unwrap();
        let v = g.view();
        assert_eq!(v.global.bits(), 0b0001_0100);
        assert_eq!(v.multi.bits(), 0b0000_0100);
        let mine_a = g.source_bits(a).unwrap();
        // Level 2 is also ready in b, so a sees it elsewhere.
        assert!(v.more_important_elsewhere(mine_a, p(3)));
        // Once b drops level 2, a is alone with it.
        g.update(b, 0b0001_0000).unwrap();
        let v = g.view();
        assert!(!v.more_important_elsewhere(mine_a, p(3)));
        assert!(v.more_important_elsewhere(mine_a, p(5)));
        assert_eq!(v.elsewhere(mine_a).most_important(), Some(p(4)));
    }

    #[test]
    fn hostile_bits_are_sanitised() {
        let mut g = GlobalBitmap::new(Levels::DEFAULT);
        let capped = g.add_source_capped(p(4));
        assert_eq!(g.update(capped, u64::MAX), Some(true));
        assert_eq!(g.view().global.bits(), 0b1111_0000);
        assert_eq!(g.update(capped, u64::MAX), Some(false));
        assert!(g.remove_source(capped));
        assert!(g.view().global.is_empty());
        assert!(!g.remove_source(capped));
        assert_eq!(g.update(capped, 1), None);
        assert_eq!(g.update(SourceId(9999), 1), None);
    }

    #[test]
    fn page_round_trip_and_bad_header() {
        let mut g = GlobalBitmap::new(Levels::MAX);
        let s = g.add_source();
        g.update(s, 1 << 63 | 1).unwrap();
        let mut page = GlobalPage::default();
        g.view().to_page(&mut page);
        assert_eq!(page.seq, 1);
        assert_eq!(GlobalView::from_page(&page), Ok(g.view()));
        page.magic = 0;
        assert!(GlobalView::from_page(&page).is_err());
    }
}
