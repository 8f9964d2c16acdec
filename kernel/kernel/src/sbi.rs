//! The few SBI calls the kernel makes (through `sbi-rt`), and the SiFive test
//! device that ends QEMU with an exit code.

/// Arms this hart's timer for absolute time `when` (`time` CSR units).
pub fn set_timer(when: u64) {
    let _ = sbi_rt::set_timer(when);
}

/// Sends a supervisor software interrupt to `hart`.
pub fn send_ipi(hart: usize) {
    let _ = sbi_rt::send_ipi(sbi_rt::HartMask::from_mask_base(1, hart));
}

/// Starts `hart` at `entry` (physical address) with `a1 = opaque`. Returns
/// whether the SBI accepted (false for a hart that does not exist).
pub fn hart_start(hart: usize, entry: usize, opaque: usize) -> bool {
    sbi_rt::hart_start(hart, entry, opaque).is_ok()
}

const TEST_DEVICE: usize = 0x10_0000;

/// Ends QEMU: exit status 0 if `ok`, else `code` (at least 1). SBI's own
/// shutdown always exits 0, so tests go through the SiFive test device.
pub fn shutdown(ok: bool, code: u16) -> ! {
    let value = if ok {
        0x5555
    } else {
        (u32::from(code.max(1)) << 16) | 0x3333
    };
    // SAFETY: the test device is identity-mapped device memory; this write ends
    // the machine.
    unsafe { (TEST_DEVICE as *mut u32).write_volatile(value) };
    loop {
        crate::arch::wfi();
    }
}
