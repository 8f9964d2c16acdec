//! Loading program images, and the vDSO shared by every process.
//!
//! A program's segments get frames of the process's own. The vDSO — ss-core's
//! Executor for user processes, linked once (`kernel/vdso`) — is loaded once at
//! boot: its code and read-only data go into frames that every process maps
//! from the same physical pages (read+execute or read-only, never owned by a
//! process), while its writable data is copied into frames of each process's
//! own. So one copy of the scheduler's code serves every process (the paper's
//! vDSO), and each process's Executor state stays in its own memory.

use alloc::vec::Vec;

use ss_abi::syscall::SysError;
use ss_abi::uspace::{VDSO_BASE, VDSO_END};
use ss_kernel_logic::elf::{self, Plan, Segment};
use ss_kernel_logic::sv39::{self, PAGE_SIZE};

use crate::mm::{self, AddressSpace};

fn flags_of(seg: &Segment) -> u64 {
    let mut flags = sv39::R;
    if seg.perm.write {
        flags |= sv39::W;
    }
    if seg.perm.exec {
        flags |= sv39::X;
    }
    flags
}

/// Copies the part of `seg`'s file bytes that falls into user page `page` into
/// frame `ppn` (zeroed).
fn fill(ppn: usize, page: usize, image: &[u8], seg: &Segment) {
    let lo = page.max(seg.vaddr);
    let hi = (page + PAGE_SIZE).min(seg.vaddr + seg.file_size);
    if lo < hi {
        let src = &image[seg.offset + (lo - seg.vaddr)..seg.offset + (hi - seg.vaddr)];
        // SAFETY: the frame was just allocated by the caller and is
        // identity-mapped RAM; `lo - page + src.len() <= PAGE_SIZE`.
        unsafe {
            core::ptr::copy_nonoverlapping(
                src.as_ptr(),
                (ppn * PAGE_SIZE + (lo - page)) as *mut u8,
                src.len(),
            )
        };
    }
}

/// Maps `seg` of `image` into `space` on fresh frames the space owns.
fn load_private(space: &mut AddressSpace, image: &[u8], seg: &Segment) -> Result<(), SysError> {
    for page in seg.pages().step_by(PAGE_SIZE) {
        let ppn = space.map_new(page, flags_of(seg))?;
        fill(ppn, page, image, seg);
    }
    Ok(())
}

/// Maps every segment of a checked program image into `space`.
///
/// # Errors
/// [`SysError::OutOfMemory`].
pub fn load_program(space: &mut AddressSpace, image: &[u8], plan: &Plan) -> Result<(), SysError> {
    plan.segments
        .iter()
        .try_for_each(|seg| load_private(space, image, seg))
}

/// The vDSO as loaded at boot.
struct Vdso {
    image: &'static [u8],
    /// Read-only pages, shared: (user address, frame, flags).
    shared: Vec<(usize, usize, u64)>,
    /// Writable segments, copied per process.
    private: Vec<Segment>,
}

static VDSO: spin::Once<Option<Vdso>> = spin::Once::new();

/// Loads the vDSO's shared pages. Boot hart, once. Without a vDSO in the image
/// (a bare `cargo build`), processes cannot start; `spawn` says so.
pub fn init() {
    VDSO.call_once(|| {
        let image = crate::apps::VDSO;
        if image.is_empty() {
            return None;
        }
        let plan = match elf::plan_in(image, VDSO_BASE..VDSO_END) {
            Ok(p) => p,
            Err(e) => {
                crate::println!("[kernel] the vDSO is not loadable: {e}");
                return None;
            }
        };
        let mut shared = Vec::new();
        let mut private = Vec::new();
        for seg in plan.segments {
            if seg.perm.write {
                private.push(seg);
                continue;
            }
            for page in seg.pages().step_by(PAGE_SIZE) {
                let ppn = mm::alloc_frame().expect("frames for the vDSO at boot");
                fill(ppn, page, image, &seg);
                shared.push((page, ppn, flags_of(&seg)));
            }
        }
        Some(Vdso {
            image,
            shared,
            private,
        })
    });
}

/// Maps the vDSO into `space`: its code from the shared frames, its data on
/// frames of the space's own.
///
/// # Errors
/// [`SysError::NoSuchProgram`] without a vDSO; [`SysError::OutOfMemory`].
pub fn map_vdso(space: &mut AddressSpace) -> Result<(), SysError> {
    let v = VDSO.get().and_then(Option::as_ref).ok_or_else(|| {
        crate::println!("[kernel] no vDSO in the image; build with `cargo xtask`");
        SysError::NoSuchProgram
    })?;
    for &(page, ppn, flags) in &v.shared {
        space.map(page, ppn, flags, false)?;
    }
    for seg in &v.private {
        load_private(space, v.image, seg)?;
    }
    Ok(())
}
