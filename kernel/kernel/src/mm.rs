//! Memory: the kernel heap, physical frames, and address spaces (Sv39).
//!
//! # Physical memory map (QEMU virt, `-m 128M`)
//!
//! ```text
//! 0x0000_0000 .. 0x4000_0000   devices (test device, PLIC, UART, …)   gigapage, RW, kernel only
//! 0x8000_0000 .. 0x8020_0000   OpenSBI
//! 0x8020_0000 .. kernel_end    kernel image, boot stacks, .bss
//! kernel_end  .. +16 MiB       kernel heap (buddy allocator)
//!             .. 0x8800_0000   frames for page tables and user pages
//! ```
//!
//! The kernel runs on an identity map: the first gigabyte (devices) and the
//! third (RAM, `0x8000_0000..0xC000_0000`) are gigapages without `U` in every
//! address space, so a trap needs no page-table switch and the kernel reaches
//! any frame at its physical address. User memory lives in the second gigabyte
//! (`ss_abi::uspace`), in 4 KiB pages each process owns.
//!
//! The kernel never dereferences a user virtual address: [`AddressSpace::copy_in`]
//! and [`AddressSpace::copy_out`] check every page of a range against the
//! process's page table (present, `U`, readable or writable) before touching
//! any byte, then copy through the physical addresses. A bad pointer is an
//! error code, never a kernel fault.

use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};

use ss_abi::syscall::SysError;
use ss_kernel_logic::frames::FrameAllocator;
use ss_kernel_logic::heap::BuddyHeap;
use ss_kernel_logic::sv39::{self, Pte, PAGE_SIZE};
use ss_kernel_logic::user::UserRange;

use crate::sync::{IrqMutex, NoIrq};

/// First byte of RAM.
pub const RAM_START: usize = 0x8000_0000;
/// One past the last byte of RAM (`-m 128M`).
pub const RAM_END: usize = 0x8800_0000;
const HEAP_SIZE: usize = 16 << 20;

/// The buddy heap with interrupts kept off while its lock is held, so an
/// interrupt handler that allocates cannot deadlock against its own hart.
struct KernelHeap(BuddyHeap);

// SAFETY: delegates to `BuddyHeap`'s allocator, inside an interrupt-free section.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _irq = NoIrq::now();
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _irq = NoIrq::now();
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(BuddyHeap::empty());

/// Bytes of the kernel heap not handed out.
pub fn heap_free() -> usize {
    let _irq = NoIrq::now();
    HEAP.0.free_bytes()
}

static FRAMES: IrqMutex<Option<FrameAllocator>> = IrqMutex::new(None);
static KERNEL_ROOT: IrqMutex<usize> = IrqMutex::new(0);

extern "C" {
    static __kernel_end: u8;
}

/// Sets up the heap, the frame allocator and the kernel page table. Boot hart,
/// once, before anything allocates.
pub fn init() {
    let kernel_end = core::ptr::addr_of!(__kernel_end) as usize;
    let heap_start = sv39::page_ceil(kernel_end).expect("kernel end is below RAM_END");
    // SAFETY: [heap_start, heap_start + HEAP_SIZE) is RAM past the kernel image
    // that nothing else uses (frames start after it).
    unsafe { HEAP.0.init(heap_start, HEAP_SIZE) };
    let first = (heap_start + HEAP_SIZE) / PAGE_SIZE;
    *FRAMES.lock() = Some(FrameAllocator::new(first, RAM_END / PAGE_SIZE - first));
    let root = alloc_frame().expect("a frame for the kernel page table");
    let table = table(root);
    table[0] = Pte::leaf(0, sv39::R | sv39::W | sv39::G);
    table[2] = Pte::leaf(RAM_START / PAGE_SIZE, sv39::R | sv39::W | sv39::X | sv39::G);
    *KERNEL_ROOT.lock() = root;
}

/// The kernel's own page table, as a `satp` value.
pub fn kernel_satp() -> usize {
    sv39::satp(*KERNEL_ROOT.lock())
}

/// Frames in use and managed, for tests and the boot banner.
pub fn frame_stats() -> (usize, usize) {
    FRAMES
        .lock()
        .as_ref()
        .map_or((0, 0), |f| (f.in_use(), f.capacity()))
}

/// A zeroed frame, by page number.
pub fn alloc_frame() -> Option<usize> {
    let ppn = FRAMES.lock().as_mut()?.alloc()?;
    // SAFETY: the frame was just handed to us and is identity-mapped RAM.
    unsafe { core::ptr::write_bytes((ppn * PAGE_SIZE) as *mut u8, 0, PAGE_SIZE) };
    Some(ppn)
}

/// Returns a frame. A bad free is a kernel bug: it is reported, not ignored.
pub fn free_frame(ppn: usize) {
    if let Some(Err(e)) = FRAMES.lock().as_mut().map(|f| f.free(ppn)) {
        panic!("frame allocator refused a free: {e:?}");
    }
}

/// The page table in frame `ppn`.
fn table(ppn: usize) -> &'static mut [Pte; sv39::ENTRIES] {
    // SAFETY: page-table frames are identity-mapped RAM owned by one
    // AddressSpace (or the kernel root), whose lock serialises access.
    unsafe { &mut *((ppn * PAGE_SIZE) as *mut [Pte; sv39::ENTRIES]) }
}

/// A process's page table and the frames it owns.
pub struct AddressSpace {
    root: usize,
    owned: Vec<usize>,
}

impl AddressSpace {
    /// An address space with only the kernel's mappings.
    ///
    /// # Errors
    /// [`SysError::OutOfMemory`].
    pub fn new() -> Result<AddressSpace, SysError> {
        let root = alloc_frame().ok_or(SysError::OutOfMemory)?;
        let kroot = *KERNEL_ROOT.lock();
        let (src, dst) = (table(kroot), table(root));
        dst[0] = src[0];
        dst[2] = src[2];
        Ok(AddressSpace {
            root,
            owned: alloc::vec![root],
        })
    }

    /// This space as a `satp` value.
    pub fn satp(&self) -> usize {
        sv39::satp(self.root)
    }

    /// The level-0 entry for `va`, creating tables on the way if `create`.
    fn entry(&mut self, va: usize, create: bool) -> Result<Option<&'static mut Pte>, SysError> {
        let idx = sv39::indexes(va);
        let mut t = table(self.root);
        for &i in &idx[..2] {
            let e = t[i];
            if e.is_leaf() {
                return Ok(None); // a kernel gigapage: not ours to touch
            }
            if !e.is_valid() {
                if !create {
                    return Ok(None);
                }
                let ppn = alloc_frame().ok_or(SysError::OutOfMemory)?;
                self.owned.push(ppn);
                t[i] = Pte::new(ppn, 0);
            }
            t = table(t[i].ppn());
        }
        Ok(Some(&mut t[idx[2]]))
    }

    /// Maps user page `va` to frame `ppn` with `flags` (`U` is added). The frame
    /// is freed with the space if `owned`.
    ///
    /// # Errors
    /// [`SysError::OutOfMemory`]; [`SysError::BadAddress`] if `va` is outside
    /// the user range or already mapped.
    pub fn map(&mut self, va: usize, ppn: usize, flags: u64, owned: bool) -> Result<(), SysError> {
        UserRange::new(va, PAGE_SIZE)?;
        let e = self.entry(va, true)?.ok_or(SysError::BadAddress)?;
        if e.is_valid() {
            return Err(SysError::BadAddress);
        }
        *e = Pte::leaf(ppn, flags | sv39::U);
        if owned {
            self.owned.push(ppn);
        }
        Ok(())
    }

    /// Maps a fresh zeroed frame at `va`; returns its page number.
    ///
    /// # Errors
    /// As [`map`](Self::map).
    pub fn map_new(&mut self, va: usize, flags: u64) -> Result<usize, SysError> {
        let ppn = alloc_frame().ok_or(SysError::OutOfMemory)?;
        if let Err(e) = self.map(va, ppn, flags, true) {
            free_frame(ppn);
            return Err(e);
        }
        Ok(ppn)
    }

    /// The leaf entry mapping user page `va`, if any.
    pub fn translate(&mut self, va: usize) -> Option<Pte> {
        if !sv39::is_canonical(va) {
            return None;
        }
        let e = *self.entry(va, false).ok()??;
        e.is_leaf().then_some(e)
    }

    /// Checks that every page of `range` allows a user access of this kind and
    /// returns the physical pieces `(address, length)`.
    fn pieces(&mut self, range: UserRange, write: bool) -> Result<Vec<(usize, usize)>, SysError> {
        let mut out = Vec::new();
        for (page, offset, len) in range.pages() {
            let pte = self.translate(page).ok_or(SysError::BadAddress)?;
            if !pte.allows_user(write) {
                return Err(SysError::BadAddress);
            }
            out.push((pte.ppn() * PAGE_SIZE + offset, len));
        }
        Ok(out)
    }

    /// Checks that every page of `range` allows a user access of this kind.
    ///
    /// # Errors
    /// [`SysError::BadAddress`].
    pub fn check(&mut self, range: UserRange, write: bool) -> Result<(), SysError> {
        self.pieces(range, write).map(|_| ())
    }

    /// Reads user memory `range` into `out` (`out.len() == range.len()`).
    ///
    /// # Errors
    /// [`SysError::BadAddress`] if any page is not readable by the user; then
    /// nothing is copied.
    pub fn copy_in(&mut self, range: UserRange, out: &mut [u8]) -> Result<(), SysError> {
        assert_eq!(out.len(), range.len());
        let mut at = 0;
        for (pa, len) in self.pieces(range, false)? {
            // SAFETY: `pa..pa + len` lies in one frame this space maps for user
            // reading (checked just now under our lock); frames are RAM,
            // identity-mapped for the kernel.
            let src = unsafe { core::slice::from_raw_parts(pa as *const u8, len) };
            out[at..at + len].copy_from_slice(src);
            at += len;
        }
        Ok(())
    }

    /// Writes `data` to user memory `range` (`data.len() == range.len()`).
    ///
    /// # Errors
    /// [`SysError::BadAddress`] if any page is not writable by the user; then
    /// nothing is written.
    pub fn copy_out(&mut self, range: UserRange, data: &[u8]) -> Result<(), SysError> {
        assert_eq!(data.len(), range.len());
        let mut at = 0;
        for (pa, len) in self.pieces(range, true)? {
            // SAFETY: as in `copy_in`, for a page the user may write.
            let dst = unsafe { core::slice::from_raw_parts_mut(pa as *mut u8, len) };
            dst.copy_from_slice(&data[at..at + len]);
            at += len;
        }
        Ok(())
    }

    /// Writes one value to user memory at `addr` (aligned for `T`).
    ///
    /// # Errors
    /// [`SysError::BadAddress`].
    pub fn write_value<T: Copy>(&mut self, addr: usize, value: T) -> Result<(), SysError> {
        let range = UserRange::for_value::<T>(addr)?;
        // SAFETY: viewing a `Copy` value's bytes; callers pass plain integers.
        let bytes = unsafe {
            core::slice::from_raw_parts(
                (&value as *const T).cast::<u8>(),
                core::mem::size_of::<T>(),
            )
        };
        self.copy_out(range, bytes)
    }
}

impl Drop for AddressSpace {
    fn drop(&mut self) {
        for &ppn in &self.owned {
            free_frame(ppn);
        }
    }
}
