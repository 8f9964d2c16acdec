//! The UART console (QEMU virt's 16550 at 0x1000_0000) and the PLIC that
//! delivers its receive interrupts.
//!
//! Output is polled (a byte at a time when the transmitter is empty) under one
//! lock, so lines from different harts do not interleave. Input arrives by
//! interrupt: the PLIC routes UART interrupts (source 10) to the boot hart's
//! supervisor context, the handler moves the bytes into a buffer and wakes the
//! threads blocked in `read(0, …)`.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt::{self, Write};

use crate::fd::{wake_all, Waiters};
use crate::sync::IrqMutex;

const UART: usize = 0x1000_0000;
const UART_IRQ: usize = 10;
const PLIC: usize = 0x0c00_0000;
/// Bytes of input kept when nobody reads.
const INPUT_CAP: usize = 4096;

static OUT: IrqMutex<()> = IrqMutex::new(());

/// Console input: bytes received, and threads waiting for them.
pub struct Input {
    /// Received bytes not yet read.
    pub bytes: VecDeque<u8>,
    /// Threads blocked in `read(0, …)` (woken to retry) and kernel
    /// coroutines of asynchronous reads, woken on input.
    pub readers: Waiters,
}

/// Console input state.
pub static INPUT: IrqMutex<Input> = IrqMutex::new(Input {
    bytes: VecDeque::new(),
    readers: Waiters::new(),
});

/// Takes up to `max` bytes of input, or `None` after `wait` parked the caller
/// in the readers (under the input's lock) because there is none.
pub fn read_input(max: usize, wait: impl FnOnce(&mut Waiters)) -> Option<Vec<u8>> {
    let mut input = INPUT.lock();
    if input.bytes.is_empty() {
        wait(&mut input.readers);
        return None;
    }
    let n = max.min(input.bytes.len());
    Some(input.bytes.drain(..n).collect())
}

fn reg(offset: usize) -> *mut u8 {
    (UART + offset) as *mut u8
}

fn put_byte(b: u8) {
    // SAFETY: the UART's registers are mapped (identity, first gigabyte) in
    // every address space; LSR bit 5 = transmit holding register empty.
    unsafe {
        while reg(5).read_volatile() & 0x20 == 0 {}
        reg(0).write_volatile(b);
    }
}

/// Writes bytes to the console, atomically with respect to other writers.
pub fn write_bytes(bytes: &[u8]) {
    let _g = OUT.lock();
    for &b in bytes {
        if b == b'\n' {
            put_byte(b'\r');
        }
        put_byte(b);
    }
}

struct Writer;

impl Write for Writer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if b == b'\n' {
                put_byte(b'\r');
            }
            put_byte(b);
        }
        Ok(())
    }
}

/// Prints formatted text (one lock for the whole message).
pub fn print(args: fmt::Arguments<'_>) {
    let _g = OUT.lock();
    let _ = Writer.write_fmt(args);
}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// The hart whose supervisor context takes the PLIC's interrupts.
static IRQ_HART: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Enables PLIC source `irq` (priority 1) for the interrupt hart's
/// supervisor context.
pub fn enable_irq(irq: usize) {
    let ctx = 2 * IRQ_HART.load(core::sync::atomic::Ordering::SeqCst) + 1;
    // SAFETY: PLIC registers are identity-mapped device memory; these writes
    // set the source's priority and enable it for the context.
    unsafe {
        ((PLIC + 4 * irq) as *mut u32).write_volatile(1);
        let enable = (PLIC + 0x2000 + 0x80 * ctx + 4 * (irq / 32)) as *mut u32;
        enable.write_volatile(enable.read_volatile() | (1 << (irq % 32)));
    }
}

/// Completes PLIC source `irq`, claimed earlier by context `ctx`.
pub fn complete_irq(ctx: usize, irq: usize) {
    // SAFETY: writing a claimed source's id to the context's claim/complete
    // register completes it (identity-mapped device memory).
    unsafe { ((PLIC + 0x20_0004 + 0x1000 * ctx) as *mut u32).write_volatile(irq as u32) };
}

/// Enables UART receive interrupts through the PLIC to `hart`'s supervisor
/// context.
pub fn init_input(hart: usize) {
    IRQ_HART.store(hart, core::sync::atomic::Ordering::SeqCst);
    let ctx = 2 * hart + 1;
    // SAFETY: PLIC and UART registers are identity-mapped device memory; these
    // writes set source 10's priority, enable it for the context, open the
    // context's threshold, and turn on the UART's receive interrupt.
    unsafe {
        ((PLIC + 4 * UART_IRQ) as *mut u32).write_volatile(1);
        let enable = (PLIC + 0x2000 + 0x80 * ctx) as *mut u32;
        enable.write_volatile(enable.read_volatile() | (1 << UART_IRQ));
        ((PLIC + 0x20_0000 + 0x1000 * ctx) as *mut u32).write_volatile(0);
        reg(1).write_volatile(1);
    }
}

/// Handles a supervisor external interrupt on `hart`: claims it from the PLIC,
/// drains the UART, completes it.
pub fn handle_external(hart: usize) {
    let ctx = 2 * hart + 1;
    let claim = (PLIC + 0x20_0004 + 0x1000 * ctx) as *mut u32;
    // SAFETY: reading the claim register claims the highest pending source
    // for this context (0: none).
    let irq = unsafe { claim.read_volatile() };
    if irq as usize == UART_IRQ {
        let mut woken = Waiters::new();
        {
            let mut input = INPUT.lock();
            // SAFETY: LSR bit 0 = data ready; reading RBR pops a byte.
            while unsafe { reg(5).read_volatile() } & 1 != 0 {
                // SAFETY: as above.
                let b = unsafe { reg(0).read_volatile() };
                if input.bytes.len() < INPUT_CAP {
                    input.bytes.push_back(b);
                }
            }
            core::mem::swap(&mut woken, &mut input.readers);
        }
        wake_all(woken);
    } else if irq != 0 && crate::net::irq() == Some(irq as usize) {
        // Completed by the net coroutine once it has acknowledged the device.
        crate::net::interrupt(ctx);
        return;
    }
    if irq != 0 {
        // SAFETY: writing the claimed id back completes it.
        unsafe { claim.write_volatile(irq) };
    }
}
