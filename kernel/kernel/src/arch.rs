//! The machine: control registers, the boot and trap entry code, and the one
//! function that enters user mode.
//!
//! All of the kernel's assembly is in this file. Everything else is Rust.
//!
//! # Trap path
//!
//! `stvec` points at `trap_entry` on every hart. `sscratch` tells it where the
//! trap came from:
//!
//! - **0 — from the kernel.** The registers (integer and floating point) are
//!   pushed on the current kernel stack, [`kernel_trap`](crate::trap::kernel_trap)
//!   handles the interrupt, and `sret` resumes the interrupted kernel code.
//! - **a [`TrapFrame`] — from user mode.** [`run_user`] set it just before `sret`
//!   to user mode. The user's registers go into that frame, the kernel's
//!   callee-saved registers, `sp`, `ra` and `tp` come back out of it, and
//!   `run_user` *returns* to its caller, the hart's switching coroutine. User
//!   mode is thus a function call that ends at the next trap: no kernel stack per
//!   thread, and the coroutine that called it decides what happens next.
//!
//! Every address space maps the kernel (without `U`), so the entry needs no
//! page-table switch (no trampoline page).

use core::arch::{asm, global_asm};

/// Harts the kernel supports.
pub const MAX_HARTS: usize = 8;
/// Bytes of boot (and kernel) stack per hart (a power of two: the boot code
/// shifts by it).
pub const STACK_SIZE: usize = 64 * 1024;
const _: () = assert!(STACK_SIZE.is_power_of_two());

/// `sstatus.SIE`: supervisor interrupts enabled.
pub const SSTATUS_SIE: usize = 1 << 1;
/// `sstatus.SPIE`: interrupts enabled before the trap.
pub const SSTATUS_SPIE: usize = 1 << 5;
/// `sstatus.SPP`: the trap came from supervisor mode.
pub const SSTATUS_SPP: usize = 1 << 8;
/// `sstatus.FS` = Initial: floating point on, nothing to save yet.
pub const SSTATUS_FS_INITIAL: usize = 1 << 13;

/// `sie` bits: software (IPI), timer, external (PLIC).
pub const SIE_SSIE: usize = 1 << 1;
/// Timer interrupt enable.
pub const SIE_STIE: usize = 1 << 5;
/// External interrupt enable.
pub const SIE_SEIE: usize = 1 << 9;

/// `scause` interrupt bit.
pub const CAUSE_INTERRUPT: usize = 1 << 63;
/// Supervisor software interrupt.
pub const IRQ_SOFT: usize = 1;
/// Supervisor timer interrupt.
pub const IRQ_TIMER: usize = 5;
/// Supervisor external interrupt.
pub const IRQ_EXTERNAL: usize = 9;
/// Environment call from user mode.
pub const EXC_USER_ECALL: usize = 8;

/// Timebase of QEMU virt's `time` CSR.
pub const TIME_HZ: u64 = 10_000_000;

macro_rules! csr_read {
    ($csr:literal) => {{
        let v: usize;
        // SAFETY: reading a supervisor CSR has no side effect.
        unsafe { asm!(concat!("csrr {0}, ", $csr), out(reg) v, options(nomem, nostack)) };
        v
    }};
}

/// Reads `scause`.
pub fn scause() -> usize {
    csr_read!("scause")
}
/// Reads `stval`.
pub fn stval() -> usize {
    csr_read!("stval")
}
/// Reads `sepc`.
pub fn sepc() -> usize {
    csr_read!("sepc")
}
/// Reads `sstatus`.
pub fn sstatus() -> usize {
    csr_read!("sstatus")
}
/// Reads `time`.
pub fn time() -> u64 {
    csr_read!("time") as u64
}

/// This hart's id (kept in `tp` while in the kernel).
#[inline]
pub fn hart_id() -> usize {
    let id: usize;
    // SAFETY: reading `tp`, which the kernel sets to the hart id at boot and
    // restores on every trap from user mode.
    unsafe { asm!("mv {0}, tp", out(reg) id, options(nomem, nostack)) };
    id
}

/// Disables supervisor interrupts; returns whether they were enabled.
#[inline]
pub fn irq_disable() -> bool {
    let old: usize;
    // SAFETY: clearing SIE only defers interrupts.
    unsafe { asm!("csrrci {0}, sstatus, 2", out(reg) old, options(nostack)) };
    old & SSTATUS_SIE != 0
}

/// Enables supervisor interrupts.
#[inline]
pub fn irq_enable() {
    // SAFETY: the trap vector is installed before any hart enables interrupts.
    unsafe { asm!("csrsi sstatus, 2", options(nostack)) };
}

/// Sets the bits of `sie`.
pub fn sie_set(bits: usize) {
    // SAFETY: enabling interrupt sources whose handlers exist (trap.rs).
    unsafe { asm!("csrs sie, {0}", in(reg) bits, options(nostack)) };
}

/// Clears `sip.SSIP` (an IPI has been seen).
pub fn clear_soft_pending() {
    // SAFETY: acknowledging a software interrupt has no other effect.
    unsafe { asm!("csrc sip, {0}", in(reg) SIE_SSIE, options(nostack)) };
}

/// Sets the bits of `sstatus` (FS at boot).
pub fn sstatus_set(bits: usize) {
    // SAFETY: the only caller sets FS (floating point on), which cannot break
    // the kernel's invariants. (`SUM` stays clear: the kernel never touches
    // user addresses directly.)
    unsafe { asm!("csrs sstatus, {0}", in(reg) bits, options(nostack)) };
}

/// Lets user mode read `time` (`scounteren.TM`), for the user library's clock.
pub fn allow_user_time() {
    // SAFETY: exposing the timer to user mode reveals only the time.
    unsafe { asm!("csrs scounteren, {0}", in(reg) 2usize, options(nostack)) };
}

/// Installs the trap vector on this hart.
pub fn install_trap_vector() {
    extern "C" {
        fn trap_entry();
    }
    // SAFETY: `trap_entry` is 4-byte aligned (direct mode) and handles every
    // trap; `sscratch` = 0 marks "in the kernel".
    unsafe {
        asm!("csrw sscratch, zero", "csrw stvec, {0}", in(reg) trap_entry as *const () as usize, options(nostack));
    }
}

/// Switches to the page table `satp` and flushes the TLB.
///
/// # Safety
/// The table must map the kernel exactly as the current one does.
pub unsafe fn set_satp(satp: usize) {
    // SAFETY: per the contract, the code and stack being used stay mapped.
    unsafe { asm!("csrw satp, {0}", "sfence.vma", in(reg) satp, options(nostack)) };
}

/// Waits for an interrupt.
#[inline]
pub fn wfi() {
    // SAFETY: `wfi` only pauses the hart.
    unsafe { asm!("wfi", options(nomem, nostack)) };
}

/// A user thread's registers while the kernel runs, and the kernel's while the
/// thread runs. Layout shared with the assembly below (offsets in bytes).
#[derive(Clone, Debug)]
#[repr(C)]
pub struct TrapFrame {
    /// x0..x31 (x0 unused). Offset 0.
    pub regs: [usize; 32],
    /// f0..f31. Offset 256.
    pub fregs: [u64; 32],
    /// `fcsr`. Offset 512.
    pub fcsr: usize,
    /// Where the thread resumes. Offset 520.
    pub sepc: usize,
    /// The thread's `sstatus` (SPP = user, SPIE set, SIE clear). Offset 528.
    pub sstatus: usize,
    /// The kernel's `sp`, `tp`, `ra`, `s0..s11`, `fs0..fs11` (the registers the
    /// calling convention preserves) while the thread runs. Offset 536.
    pub kernel: [usize; 27],
}

/// Register indexes of the calling convention.
pub mod reg {
    /// Return address.
    pub const RA: usize = 1;
    /// Stack pointer.
    pub const SP: usize = 2;
    /// First argument / return value.
    pub const A0: usize = 10;
    /// Second argument.
    pub const A1: usize = 11;
    /// System call number.
    pub const A7: usize = 17;
}

impl TrapFrame {
    /// A thread that starts at `entry` with `sp` and arguments `a0`, `a1`.
    pub fn new_user(entry: usize, sp: usize, a0: usize, a1: usize) -> TrapFrame {
        let mut f = TrapFrame {
            regs: [0; 32],
            fregs: [0; 32],
            fcsr: 0,
            sepc: entry,
            // From the kernel's own value, so FS carries over; SIE must be
            // clear (`run_user` writes it before `sret`, see there).
            sstatus: (sstatus() | SSTATUS_SPIE) & !(SSTATUS_SPP | SSTATUS_SIE),
            kernel: [0; 27],
        };
        f.regs[reg::SP] = sp;
        f.regs[reg::A0] = a0;
        f.regs[reg::A1] = a1;
        f
    }

    /// System call argument `i` (a0..a5).
    pub fn arg(&self, i: usize) -> usize {
        self.regs[reg::A0 + i]
    }
}

const _: () = assert!(core::mem::offset_of!(TrapFrame, fregs) == 256);
const _: () = assert!(core::mem::offset_of!(TrapFrame, fcsr) == 512);
const _: () = assert!(core::mem::offset_of!(TrapFrame, sepc) == 520);
const _: () = assert!(core::mem::offset_of!(TrapFrame, sstatus) == 528);
const _: () = assert!(core::mem::offset_of!(TrapFrame, kernel) == 536);

extern "C" {
    fn __run_user(frame: *mut TrapFrame);
}

/// Runs the user thread whose registers are `frame` until its next trap; then
/// returns with the user registers saved in `frame` and `scause`, `stval`
/// describing the trap. Interrupts are off on return.
///
/// # Safety
/// The current page table must be the thread's address space, and `frame`'s
/// `sepc`/`sstatus` must be a user context (SPP clear, SIE clear).
pub unsafe fn run_user(frame: &mut TrapFrame) {
    debug_assert!(frame.sstatus & (SSTATUS_SPP | SSTATUS_SIE) == 0);
    // SAFETY: per the contract; the assembly saves and restores every register
    // the kernel's calling convention needs preserved.
    unsafe { __run_user(frame) }
}

// Boot: each hart gets `MAX_HARTS`-indexed stack; the boot hart also zeroes .bss.
// Only the first hart to arrive at `_start` boots: one that comes later (seen
// once in a few hundred loaded boots: a second hart entering at the kernel's
// entry, which then booted the kernel again over the first) goes the
// secondary way instead. The claim lives in .data, which no one zeroes.
global_asm!(
    r#"
    .section .data
    .balign 4
__boot_claimed:
    .word 0

    .section .text.entry
    .globl _start
_start:
    li t0, {max_harts}
    bgeu a0, t0, 3f
    la t0, __boot_claimed
    li t1, 1
    .option push
    .option arch, +a
    amoswap.w.aqrl t1, t1, (t0)
    .option pop
    bnez t1, _start_secondary
    mv tp, a0
    la sp, __boot_stacks_top
    slli t0, a0, {stack_shift}
    sub sp, sp, t0
    la t0, __bss_start
    la t1, __bss_end
1:  bgeu t0, t1, 2f
    sd zero, 0(t0)
    addi t0, t0, 8
    j 1b
2:  call {boot}
3:  wfi
    j 3b

    .globl _start_secondary
_start_secondary:
    li t0, {max_harts}
    bgeu a0, t0, 3b
    mv tp, a0
    la sp, __boot_stacks_top
    slli t0, a0, {stack_shift}
    sub sp, sp, t0
    call {secondary}
    j 3b

    .section .bss.stack
    .align 12
__boot_stacks:
    .space {stack_size} * {max_harts}
    .globl __boot_stacks_top
__boot_stacks_top:
    "#,
    max_harts = const MAX_HARTS,
    stack_size = const STACK_SIZE,
    stack_shift = const STACK_SIZE.trailing_zeros(),
    boot = sym crate::boot_main,
    secondary = sym crate::secondary_main,
);

// The trap path (see the module docs). Frame offsets: regs 0, fregs 256, fcsr
// 512, sepc 520, sstatus 528, kernel sp/tp/ra/s0..s11 536..656, fs0..fs11
// 656..752.
global_asm!(
    r#"
    .section .text
    # global_asm! does not inherit the target's extensions: name F and D.
    .option arch, +f, +d
    .altmacro
    .macro SAVE_X base, n
        sd x\n, \n*8(\base)
    .endm
    .macro LOAD_X base, n
        ld x\n, \n*8(\base)
    .endm
    .macro SAVE_F base, n
        fsd f\n, 256+\n*8(\base)
    .endm
    .macro LOAD_F base, n
        fld f\n, 256+\n*8(\base)
    .endm
    # x1, x3..x31, f0..f31 and fcsr into the frame at sp (x2 is the caller's job).
    .macro SAVE_REGS
        sd x1, 8(sp)
        .set n, 3
        .rept 29
            SAVE_X sp, %n
            .set n, n+1
        .endr
        .set n, 0
        .rept 32
            SAVE_F sp, %n
            .set n, n+1
        .endr
        frcsr t0
        sd t0, 512(sp)
    .endm
    # The kernel's fs0..fs11 at 656..744 (callee-saved in the ABI, and
    # `__run_user` loads the user's f-registers over them).
    .macro SAVE_KERNEL_F op
        \op fs0, 656(a0)
        \op fs1, 664(a0)
        \op fs2, 672(a0)
        \op fs3, 680(a0)
        \op fs4, 688(a0)
        \op fs5, 696(a0)
        \op fs6, 704(a0)
        \op fs7, 712(a0)
        \op fs8, 720(a0)
        \op fs9, 728(a0)
        \op fs10, 736(a0)
        \op fs11, 744(a0)
    .endm
    # The kernel's ra, s0..s11 at 552..648 of the frame in a0 (op: sd or ld).
    .macro SAVE_KERNEL op
        \op ra, 552(a0)
        \op s0, 560(a0)
        \op s1, 568(a0)
        \op s2, 576(a0)
        \op s3, 584(a0)
        \op s4, 592(a0)
        \op s5, 600(a0)
        \op s6, 608(a0)
        \op s7, 616(a0)
        \op s8, 624(a0)
        \op s9, 632(a0)
        \op s10, 640(a0)
        \op s11, 648(a0)
    .endm

    .globl __run_user
    .align 2
__run_user:
    csrci sstatus, 2
    sd sp, 536(a0)
    sd tp, 544(a0)
    SAVE_KERNEL sd
    SAVE_KERNEL_F fsd
    csrw sscratch, a0
    ld t0, 520(a0)
    csrw sepc, t0
    ld t0, 528(a0)
    csrw sstatus, t0
    ld t0, 512(a0)
    fscsr t0
    .set n, 0
    .rept 32
        LOAD_F a0, %n
        .set n, n+1
    .endr
    ld x1, 8(a0)
    .set n, 2
    .rept 8
        LOAD_X a0, %n
        .set n, n+1
    .endr
    .set n, 11
    .rept 21
        LOAD_X a0, %n
        .set n, n+1
    .endr
    ld a0, 80(a0)
    sret

    .globl trap_entry
    .align 2
trap_entry:
    csrrw sp, sscratch, sp
    beqz sp, 1f
    # From user mode: sp = frame, sscratch = user sp.
    SAVE_REGS
    csrr t0, sscratch
    sd t0, 16(sp)
    csrw sscratch, zero
    csrr t0, sepc
    sd t0, 520(sp)
    csrr t0, sstatus
    sd t0, 528(sp)
    mv a0, sp
    ld tp, 544(a0)
    SAVE_KERNEL ld
    SAVE_KERNEL_F fld
    ld sp, 536(a0)
    ret

1:  # From the kernel: sp = 0, sscratch = kernel sp. Swap back and push.
    csrrw sp, sscratch, sp
    addi sp, sp, -544
    SAVE_REGS
    csrr t0, sepc
    sd t0, 520(sp)
    csrr t0, sstatus
    sd t0, 528(sp)
    mv a0, sp
    call {kernel_trap}
    ld t0, 520(sp)
    csrw sepc, t0
    ld t0, 528(sp)
    csrw sstatus, t0
    ld t0, 512(sp)
    fscsr t0
    .set n, 0
    .rept 32
        LOAD_F sp, %n
        .set n, n+1
    .endr
    ld x1, 8(sp)
    .set n, 3
    .rept 29
        LOAD_X sp, %n
        .set n, n+1
    .endr
    addi sp, sp, 544
    sret
    "#,
    kernel_trap = sym crate::trap::kernel_trap,
);
