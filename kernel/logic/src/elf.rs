//! Program images: which pages an ELF file needs, with which permissions.
//!
//! The programs are built by `cargo xtask` and embedded in the kernel image, but
//! the loader still checks each one as if it came from outside: a 64-bit RISC-V
//! executable whose loadable segments lie inside the image area of the user
//! layout (`IMAGE_BASE..IMAGE_END` of [`ss_abi::uspace`]),
//! do not share a page, are never writable and executable at once, and whose
//! file bytes are inside the file; its entry point must be in an executable
//! segment. Parsing is `xmas-elf`'s; the checks are ours.

use alloc::vec::Vec;
use core::fmt;

use ss_abi::uspace::{IMAGE_BASE, IMAGE_END};
use xmas_elf::header::{Class, Machine, Type};
use xmas_elf::program::Type as PType;
use xmas_elf::ElfFile;

use crate::sv39::{page_ceil, page_floor};

/// Segment permissions.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Perm {
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
}

/// One loadable segment, checked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Segment {
    /// Virtual address of the first byte.
    pub vaddr: usize,
    /// Bytes in memory (the part past `file_size` is zero).
    pub mem_size: usize,
    /// Offset of the file bytes.
    pub offset: usize,
    /// Bytes taken from the file.
    pub file_size: usize,
    /// Permissions.
    pub perm: Perm,
}

impl Segment {
    /// The page-aligned address range the segment occupies.
    pub fn pages(&self) -> core::ops::Range<usize> {
        // Checked in `plan`: no overflow.
        page_floor(self.vaddr)..page_ceil(self.vaddr + self.mem_size).unwrap_or(usize::MAX)
    }
}

/// A checked program image.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Plan {
    /// The entry point.
    pub entry: usize,
    /// The loadable segments, by address.
    pub segments: Vec<Segment>,
}

/// Why an image cannot be loaded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ElfError {
    /// Not an ELF file xmas-elf can read.
    Parse(&'static str),
    /// Not a 64-bit RISC-V executable.
    NotRiscv64Executable,
    /// A segment's sizes or placement are impossible or outside the image area.
    BadSegment(usize),
    /// Two segments share a page.
    Overlap(usize),
    /// A segment is writable and executable.
    WritableCode(usize),
    /// No loadable segment, or the entry point is not in an executable one.
    BadEntry(usize),
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfError::Parse(e) => write!(f, "not a readable ELF file: {e}"),
            ElfError::NotRiscv64Executable => {
                f.write_str("not a 64-bit RISC-V executable; build with --target riscv64gc-unknown-none-elf")
            }
            ElfError::BadSegment(a) => write!(
                f,
                "segment at {a:#x} lies outside its area (programs: {IMAGE_BASE:#x}..{IMAGE_END:#x}) or past the file; link with kernel/apps/user.ld"
            ),
            ElfError::Overlap(a) => write!(f, "segment at {a:#x} shares a page with another; align segments to 4 KiB"),
            ElfError::WritableCode(a) => write!(f, "segment at {a:#x} is writable and executable"),
            ElfError::BadEntry(a) => write!(f, "entry point {a:#x} is not in an executable segment"),
        }
    }
}

/// Checks a program image for the image area and returns what to map.
///
/// # Errors
/// [`ElfError`] naming the first problem found.
pub fn plan(image: &[u8]) -> Result<Plan, ElfError> {
    plan_in(image, IMAGE_BASE..IMAGE_END)
}

/// Checks `image`, whose segments must lie in `area`, and returns what to map.
///
/// # Errors
/// [`ElfError`] naming the first problem found.
pub fn plan_in(image: &[u8], area: core::ops::Range<usize>) -> Result<Plan, ElfError> {
    // xmas-elf reads headers in place and asserts their alignment.
    if image.as_ptr() as usize % 8 != 0 {
        return Err(ElfError::Parse("image is not 8-byte aligned in memory"));
    }
    let elf = ElfFile::new(image).map_err(ElfError::Parse)?;
    if elf.header.pt1.class() != Class::SixtyFour
        || elf.header.pt2.machine().as_machine() != Machine::RISC_V
        || elf.header.pt2.type_().as_type() != Type::Executable
    {
        return Err(ElfError::NotRiscv64Executable);
    }
    let mut segments = Vec::new();
    for ph in elf.program_iter() {
        if ph.get_type().map_err(ElfError::Parse)? != PType::Load || ph.mem_size() == 0 {
            continue;
        }
        let vaddr = usize::try_from(ph.virtual_addr()).map_err(|_| ElfError::BadSegment(0))?;
        let bad = ElfError::BadSegment(vaddr);
        let mem_size = usize::try_from(ph.mem_size()).map_err(|_| bad)?;
        let file_size = usize::try_from(ph.file_size()).map_err(|_| bad)?;
        let offset = usize::try_from(ph.offset()).map_err(|_| bad)?;
        let end = vaddr.checked_add(mem_size).ok_or(bad)?;
        let file_end = offset.checked_add(file_size).ok_or(bad)?;
        if file_size > mem_size || vaddr < area.start || end > area.end || file_end > image.len() {
            return Err(bad);
        }
        let flags = ph.flags();
        let perm = Perm {
            read: flags.is_read(),
            write: flags.is_write(),
            exec: flags.is_execute(),
        };
        if perm.write && perm.exec {
            return Err(ElfError::WritableCode(vaddr));
        }
        segments.push(Segment {
            vaddr,
            mem_size,
            offset,
            file_size,
            perm,
        });
    }
    segments.sort_by_key(|s| s.vaddr);
    for pair in segments.windows(2) {
        if pair[0].pages().end > pair[1].pages().start {
            return Err(ElfError::Overlap(pair[1].vaddr));
        }
    }
    let entry = usize::try_from(elf.header.pt2.entry_point()).map_err(|_| ElfError::BadEntry(0))?;
    if !segments
        .iter()
        .any(|s| s.perm.exec && (s.vaddr..s.vaddr + s.mem_size).contains(&entry))
    {
        return Err(ElfError::BadEntry(entry));
    }
    Ok(Plan { entry, segments })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    /// A minimal ELF64 RISC-V executable: a header and `segs` program headers
    /// of (vaddr, mem_size, file offset, file size, flags), then `pad` bytes.
    fn image(entry: u64, segs: &[(u64, u64, u64, u64, u32)], pad: usize) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // 64-bit
        b[5] = 1; // little-endian
        b[6] = 1; // version
        b[16..18].copy_from_slice(&2u16.to_le_bytes()); // executable
        b[18..20].copy_from_slice(&0xf3u16.to_le_bytes()); // RISC-V
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[24..32].copy_from_slice(&entry.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
        b[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
        b[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
        b[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        for &(va, mem, off, file, flags) in segs {
            let mut p = vec![0u8; 56];
            p[0..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
            p[4..8].copy_from_slice(&flags.to_le_bytes());
            p[8..16].copy_from_slice(&off.to_le_bytes());
            p[16..24].copy_from_slice(&va.to_le_bytes());
            p[24..32].copy_from_slice(&va.to_le_bytes());
            p[32..40].copy_from_slice(&file.to_le_bytes());
            p[40..48].copy_from_slice(&mem.to_le_bytes());
            p[48..56].copy_from_slice(&0x1000u64.to_le_bytes());
            b.extend(p);
        }
        b.resize(b.len() + pad, 0);
        b
    }

    const RX: u32 = 5;
    const RW: u32 = 6;
    const RWX: u32 = 7;
    const BASE: u64 = IMAGE_BASE as u64;

    #[test]
    fn a_misaligned_buffer_is_an_error_not_a_panic() {
        let img = image(BASE, &[(BASE, 0x100, 0, 0x100, RX)], 0x100);
        let mut shifted = vec![0u8; img.len() + 8];
        let off = 8 - (shifted.as_ptr() as usize % 8) + 1;
        shifted.resize(img.len() + off, 0);
        shifted[off..].copy_from_slice(&img);
        assert!(matches!(plan(&shifted[off..]), Err(ElfError::Parse(_))));
    }

    #[test]
    fn the_area_is_the_callers() {
        let img = image(BASE, &[(BASE, 0x100, 0, 0x100, RX)], 0x100);
        assert!(plan_in(&img, IMAGE_BASE..IMAGE_BASE + 0x1000).is_ok());
        assert!(matches!(
            plan_in(&img, IMAGE_BASE + 0x1000..IMAGE_END),
            Err(ElfError::BadSegment(_))
        ));
    }

    #[test]
    fn a_good_image_plans() {
        let img = image(
            BASE + 0x10,
            &[
                (BASE, 0x100, 0, 0x100, RX),
                (BASE + 0x1000, 0x2000, 0x100, 0x10, RW),
            ],
            0x200,
        );
        let p = plan(&img).unwrap();
        assert_eq!(p.entry, IMAGE_BASE + 0x10);
        assert_eq!(p.segments.len(), 2);
        assert!(p.segments[0].perm.exec && !p.segments[0].perm.write);
        assert_eq!(
            p.segments[1].pages(),
            IMAGE_BASE + 0x1000..IMAGE_BASE + 0x3000
        );
    }

    #[test]
    fn bad_images_are_refused() {
        let seg_ok = (BASE, 0x100, 0, 0x100, RX);
        type Case = (Vec<u8>, fn(ElfError) -> bool);
        let cases: [Case; 7] = [
            (vec![1, 2, 3], |e| matches!(e, ElfError::Parse(_))),
            // Below the image area (where the global page lives).
            (
                image(0x4000_0000, &[(0x4000_0000, 0x10, 0, 0x10, RX)], 0x100),
                |e| matches!(e, ElfError::BadSegment(_)),
            ),
            // File bytes past the end of the file.
            (
                image(BASE, &[(BASE, 0x100, 0, 0x10_0000, RX)], 0x100),
                |e| matches!(e, ElfError::BadSegment(_)),
            ),
            // A size that wraps the address space.
            (image(BASE, &[(BASE, u64::MAX, 0, 0x10, RX)], 0x100), |e| {
                matches!(e, ElfError::BadSegment(_))
            }),
            (image(BASE, &[(BASE, 0x100, 0, 0x100, RWX)], 0x100), |e| {
                matches!(e, ElfError::WritableCode(_))
            }),
            (
                image(BASE, &[seg_ok, (BASE + 0x800, 0x10, 0, 0x10, RW)], 0x100),
                |e| matches!(e, ElfError::Overlap(_)),
            ),
            (image(BASE + 0x5000, &[seg_ok], 0x100), |e| {
                matches!(e, ElfError::BadEntry(_))
            }),
        ];
        for (i, (img, want)) in cases.into_iter().enumerate() {
            let e = plan(&img).unwrap_err();
            assert!(want(e), "case {i}: {e:?}");
        }
    }
}
