//! The user address space of the RISC-V kernel: where the kernel puts what in
//! every process, so the kernel, the user library and the link script agree.
//!
//! Every user address lies in `[USER_BASE, USER_END)` — the second gigabyte of
//! Sv39's lower half. The first gigabyte holds the devices and the third the
//! kernel's RAM, both mapped without the `U` bit in every address space, so a
//! user access there faults.
//!
//! ```text
//! 0x4000_0000  global page (read-only): the global priority bitmap, `page::GlobalPage`
//! 0x4000_1000  process page (read-write): this process's ready bitmap, `page::ProcessPage`
//! 0x4000_2000  completion queue (read-write): `completion::CompletionQueue`
//! 0x4002_0000  the vDSO: shared scheduler code (read+execute, the same frames in
//!              every process), then its private data (`vdso`)
//! 0x4010_0000  program image (ELF segments must lie in [IMAGE_BASE, IMAGE_END))
//! 0x7000_0000  thread stacks, downwards from USER_END, STACK_STRIDE apart
//! 0x8000_0000  USER_END
//! ```

/// Lowest user address.
pub const USER_BASE: usize = 0x4000_0000;
/// One past the highest user address.
pub const USER_END: usize = 0x8000_0000;
/// Where the global page is mapped, read-only, in every process.
pub const GLOBAL_PAGE_VA: usize = USER_BASE;
/// Where the process's own page is mapped, read-write.
pub const PROCESS_PAGE_VA: usize = USER_BASE + 0x1000;
/// Where the process's completion queue (asynchronous system calls) is mapped,
/// read-write.
pub const COMPLETION_PAGE_VA: usize = USER_BASE + 0x2000;
/// Where the shared scheduler code (the vDSO) and its table are linked.
pub const VDSO_BASE: usize = USER_BASE + 0x2_0000;
/// One past the highest address of the vDSO (its code and its data).
pub const VDSO_END: usize = IMAGE_BASE;
/// Lowest address an ELF segment may occupy.
pub const IMAGE_BASE: usize = 0x4010_0000;
/// One past the highest address an ELF segment may occupy.
pub const IMAGE_END: usize = 0x7000_0000;
/// Bytes of stack mapped for each thread (the paper's thread models run three
/// threads per connection, so a thread's stack is what a connection costs).
pub const STACK_SIZE: usize = 32 * 1024;
/// Distance between the tops of two threads' stacks; the unmapped rest is a guard.
pub const STACK_STRIDE: usize = 64 * 1024;
/// Most threads a process may have at once (their stacks fill
/// `[IMAGE_END, USER_END)`; an ended thread's slot is reused).
pub const MAX_THREADS: usize = 4096;

// The two shared pages lie below the vDSO, the vDSO below the image area.
const _: () = assert!(COMPLETION_PAGE_VA + 0x1000 <= VDSO_BASE);
const _: () = assert!(IMAGE_END + MAX_THREADS * STACK_STRIDE <= USER_END + STACK_STRIDE);

/// The top of thread `index`'s stack (16-byte aligned), or `None` past
/// [`MAX_THREADS`].
pub const fn stack_top(index: usize) -> Option<usize> {
    if index >= MAX_THREADS {
        return None;
    }
    Some(USER_END - index * STACK_STRIDE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_stay_above_the_image_and_below_the_end() {
        for i in 0..MAX_THREADS {
            let top = stack_top(i).unwrap();
            assert!(top <= USER_END && top - STACK_SIZE >= IMAGE_END);
            assert_eq!(top % 16, 0);
        }
        assert_eq!(stack_top(MAX_THREADS), None);
    }
}
