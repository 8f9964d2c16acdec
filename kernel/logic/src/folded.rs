//! Telling a process which of its bitmaps the kernel folded into the global
//! page, so that "is something more important ready *elsewhere*?" (paper
//! §2.4) is answered exactly.
//!
//! The global page holds `global` (levels some process has ready) and `multi`
//! (levels at least two have ready); a process whose folded bitmap is `F`
//! finds the levels ready elsewhere as `(global & !F) | multi`. But a process
//! publishes its bitmap before every poll, and the kernel folds it in only at
//! ticks and when one of its threads starts or stops being runnable: the
//! process does not know which of its recent bitmaps the global page holds.
//! Using the last one it published makes it yield needlessly (a level it no
//! longer has still counts as someone else's) or miss a yield (a level it
//! published after the fold hides another process's). So the kernel writes
//! the bitmap it folded in, and the global page's `seq` from which it counts,
//! into three words of the process page ([`FoldedWords`]), under a sequence
//! lock of their own:
//!
//! ```text
//!   kernel (under its scheduler lock)          process (vDSO, before a poll)
//!   begin:   folded_seq = odd                  (s, global, multi) = global page (its seq lock)
//!   update the global bitmap with the page     f1 = folded_seq; F = folded; at = folded_at
//!   publish the global page if it changed      f2 = folded_seq
//!   finish:  folded = F, folded_at = seq,      F is exact if f1 == f2, even, non-zero,
//!            folded_seq = even                   and at <= s ([`accept`])
//! ```
//!
//! Why `at <= s` is enough: `F` is written after the global page that
//! includes it (sequence `at`), and stays what the kernel holds for this
//! process until the next fold, which makes the words odd *before* it
//! changes the global bitmap. A reader that saw the global page at `s` then
//! sees the words odd or rewritten if a fold of this process went into
//! that page (release of the global seq, acquire by the reader); it sees an
//! older `F` only if no such fold did. A fold that changed nothing in the
//! global page leaves `s` as it was and writes `at = s`: its `F` is exact for
//! that page too (a level in `F` is in `multi` exactly when another process
//! has it, a level not in `F` is in `global` exactly when another has it).
//! When the words do not answer — written just now, or never (the Linux
//! coordinator leaves them 0) — the caller falls back to the union of what it
//! published since the global page last changed.
//!
//! The words sit in the process's own writable page. The kernel never reads
//! them back (it keeps the folded bitmap itself), so a process that writes
//! them misleads only its own yields.

use core::sync::atomic::{fence, AtomicU64, Ordering};

use ss_abi::page::{
    PROCESS_PAGE_FOLDED_AT_OFFSET, PROCESS_PAGE_FOLDED_OFFSET, PROCESS_PAGE_FOLDED_SEQ_OFFSET,
};

/// The three words of a process page that tell the process which of its
/// bitmaps the kernel folded in (`ss_abi::page::ProcessPage::folded_seq`,
/// `folded`, `folded_at`).
#[derive(Clone, Copy, Debug)]
pub struct FoldedWords<'a> {
    /// The sequence lock: odd while the kernel writes, 0 before the first fold.
    pub seq: &'a AtomicU64,
    /// The folded bitmap.
    pub folded: &'a AtomicU64,
    /// The global page's `seq` from which `folded` counts.
    pub at: &'a AtomicU64,
}

impl<'a> FoldedWords<'a> {
    /// The words of the process page at address `page`: the kernel's address
    /// of its frame, or the process's own `PROCESS_PAGE_VA`.
    ///
    /// # Safety
    /// `page` is the address of a process page (`ss_abi::page::ProcessPage`,
    /// 8-byte aligned), mapped readable for `'a` — and writable, if
    /// [`begin`](Self::begin) or [`finish`](Self::finish) are called.
    pub unsafe fn in_page(page: usize) -> FoldedWords<'a> {
        let word = |off: usize| {
            // SAFETY: the caller's promise; the offsets are aligned words
            // inside the page's layout.
            unsafe { &*((page + off) as *const AtomicU64) }
        };
        FoldedWords {
            seq: word(PROCESS_PAGE_FOLDED_SEQ_OFFSET),
            folded: word(PROCESS_PAGE_FOLDED_OFFSET),
            at: word(PROCESS_PAGE_FOLDED_AT_OFFSET),
        }
    }

    /// The kernel, before it folds the process in: the words are being
    /// rewritten (odd). Must come before the global bitmap changes.
    pub fn begin(&self) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s | 1, Ordering::Relaxed);
        // Orders the odd mark before everything the kernel writes next,
        // the global page included.
        fence(Ordering::Release);
    }

    /// The kernel, once the global page holds the fold (sequence `at`, even):
    /// `folded` is what it folded in for the process.
    pub fn finish(&self, folded: u64, at: u64) {
        self.folded.store(folded, Ordering::Relaxed);
        self.at.store(at, Ordering::Relaxed);
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store((s | 1).wrapping_add(1), Ordering::Release);
    }

    /// The process, having read the global page at sequence `view_seq`: the
    /// bitmap of its that page holds, if the words can tell.
    pub fn read(&self, view_seq: u64) -> Option<u64> {
        let s1 = self.seq.load(Ordering::Acquire);
        let folded = self.folded.load(Ordering::Relaxed);
        let at = self.at.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        let s2 = self.seq.load(Ordering::Relaxed);
        accept(view_seq, s1, folded, at, s2)
    }
}

/// Whether a read of the words (`s1`, `folded`, `at`, `s2`, in that order)
/// tells which bitmap of the process the global page at `view_seq` holds:
/// the lock held still and even, the words were written at all, the global
/// page was read whole (even), and it includes the fold (`at <= view_seq`).
pub const fn accept(view_seq: u64, s1: u64, folded: u64, at: u64, s2: u64) -> Option<u64> {
    if s1 != 0 && s1 & 1 == 0 && s1 == s2 && view_seq & 1 == 0 && at <= view_seq {
        Some(folded)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn the_words_answer_only_when_written_whole_and_not_after_the_page() {
        assert_eq!(accept(10, 4, 0b11, 10, 4), Some(0b11));
        assert_eq!(accept(10, 4, 0b11, 8, 4), Some(0b11));
        // Folded after the global page was read.
        assert_eq!(accept(10, 4, 0b11, 12, 4), None);
        // Being written, or rewritten during the read.
        assert_eq!(accept(10, 5, 0b11, 8, 5), None);
        assert_eq!(accept(10, 4, 0b11, 8, 6), None);
        // Never written (the Linux coordinator's pages).
        assert_eq!(accept(10, 0, 0, 0, 0), None);
        // A global page read while it was written.
        assert_eq!(accept(11, 4, 0b11, 8, 4), None);
    }

    #[test]
    fn begin_and_finish_keep_the_lock_odd_then_even() {
        let (seq, folded, at) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
        let w = FoldedWords {
            seq: &seq,
            folded: &folded,
            at: &at,
        };
        assert_eq!(w.read(2), None);
        w.begin();
        assert_eq!(seq.load(Ordering::Relaxed), 1);
        assert_eq!(w.read(2), None);
        w.finish(0b101, 2);
        assert_eq!(seq.load(Ordering::Relaxed), 2);
        assert_eq!(w.read(2), Some(0b101));
        assert_eq!(w.read(0), None);
        // A process that scribbled an odd value over its own words: the
        // kernel's next fold still leaves them even and readable.
        seq.store(7, Ordering::Relaxed);
        assert_eq!(w.read(2), None);
        w.begin();
        w.finish(0b1, 4);
        assert_eq!(seq.load(Ordering::Relaxed), 8);
        assert_eq!(w.read(4), Some(0b1));
    }

    /// The shared words of the model below (sequentially consistent).
    #[derive(Clone, Copy, Default)]
    struct Mem {
        gseq: u64,
        global: u64,
        multi: u64,
        fseq: u64,
        folded: u64,
        at: u64,
    }

    /// One step of the kernel's fold of our process from `f0` to `f1`, with
    /// another process's bitmap `o` unchanged: the order of `sched::fold`,
    /// `sched::publish` and [`FoldedWords::finish`].
    fn kernel_step(m: &mut Mem, step: usize, o: u64, f1: u64) {
        let changes = (o | f1, o & f1) != (m.global, m.multi) || m.gseq & 1 == 1;
        match step {
            0 => m.fseq |= 1,
            1 if changes => m.gseq += 1,
            2 if changes => m.global = o | f1,
            3 if changes => m.multi = o & f1,
            4 if m.gseq & 1 == 1 => m.gseq += 1,
            5 => m.folded = f1,
            6 => m.at = m.gseq,
            7 => m.fseq = (m.fseq | 1) + 1,
            _ => {}
        }
    }

    /// What the reader has read so far.
    #[derive(Clone, Copy, Default)]
    struct Reader {
        g1: u64,
        global: u64,
        multi: u64,
        g2: u64,
        f1: u64,
        folded: u64,
        at: u64,
        f2: u64,
    }

    fn reader_step(r: &mut Reader, m: &Mem, step: usize) {
        match step {
            0 => r.g1 = m.gseq,
            1 => r.global = m.global,
            2 => r.multi = m.multi,
            3 => r.g2 = m.gseq,
            4 => r.f1 = m.fseq,
            5 => r.folded = m.folded,
            6 => r.at = m.at,
            _ => r.f2 = m.fseq,
        }
    }

    /// Every interleaving of the kernel's 8 steps with the reader's 8, for
    /// every pair of our bitmaps before and after and every other process's
    /// bitmap (two levels): whenever the words answer, the levels they make
    /// "elsewhere" are exactly the other process's. `use_at` false drops the
    /// `at` check, and then some interleaving must go wrong (the model has
    /// teeth).
    fn model(use_at: bool) -> (u64, u64) {
        const K: usize = 8;
        const R: usize = 8;
        let (mut answered, mut wrong) = (0, 0);
        // Each interleaving: which of the K + R slots the reader takes.
        let mut masks = Vec::new();
        for mask in 0u32..(1 << (K + R)) {
            if mask.count_ones() as usize == R {
                masks.push(mask);
            }
        }
        for o in 0..4u64 {
            for f0 in 0..4u64 {
                for f1 in 0..4u64 {
                    for &mask in &masks {
                        let mut m = Mem {
                            gseq: 2,
                            global: o | f0,
                            multi: o & f0,
                            fseq: 2,
                            folded: f0,
                            at: 2,
                        };
                        let mut r = Reader::default();
                        let (mut k, mut rd) = (0, 0);
                        for slot in 0..K + R {
                            if mask & (1 << slot) != 0 {
                                reader_step(&mut r, &m, rd);
                                rd += 1;
                            } else {
                                kernel_step(&mut m, k, o, f1);
                                k += 1;
                            }
                        }
                        if r.g1 != r.g2 || r.g1 & 1 == 1 {
                            continue; // the global page's own lock: read again
                        }
                        let at = if use_at { r.at } else { 0 };
                        if let Some(mine) = accept(r.g1, r.f1, r.folded, at, r.f2) {
                            answered += 1;
                            if (r.global & !mine) | r.multi != o {
                                wrong += 1;
                            }
                        }
                    }
                }
            }
        }
        (answered, wrong)
    }

    #[test]
    fn in_every_interleaving_an_answer_names_exactly_the_others_levels() {
        let (answered, wrong) = model(true);
        assert!(answered > 0);
        assert_eq!(wrong, 0);
    }

    #[test]
    fn without_the_fold_s_sequence_the_model_finds_a_wrong_answer() {
        let (_, wrong) = model(false);
        assert!(wrong > 0);
    }
}
