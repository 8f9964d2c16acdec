//! Throws bad pointers, lengths, numbers, descriptors and priorities at every
//! system call and checks each gets the right error code. Exits 0 when all did;
//! otherwise with the number of the first check that did not. The kernel must
//! survive all of it.
#![no_std]
#![no_main]

extern crate alloc;

use core::mem::offset_of;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use ss_abi::page::{ProcessPage, GLOBAL_PAGE_SEQ_OFFSET};
use ss_abi::syscall::{IoMode, SysError, Syscall, ASYNC_ARG_NONE};
use ss_abi::uspace::{GLOBAL_PAGE_VA, PROCESS_PAGE_VA, USER_BASE, USER_END};
use ss_abi::Levels;
use ss_kernel_logic::folded::FoldedWords;
use ss_ulib::sys;

const KERNEL: usize = 0x8020_0000;
const UNMAPPED: usize = 0x5000_0000;
const NONE: usize = ASYNC_ARG_NONE as usize;

/// Pointers that are never readable or writable user memory.
const BAD: [usize; 8] = [
    0,
    8,
    KERNEL,
    USER_BASE - 8,
    UNMAPPED,
    USER_END,
    usize::MAX - 3,
    0x40_0000_0000,
];

fn call(s: Syscall, args: [usize; 6]) -> Result<usize, SysError> {
    SysError::from_ret(sys::raw(s.number(), args))
}

struct Checks {
    n: i32,
    failed: Option<i32>,
}

impl Checks {
    fn expect(&mut self, what: &str, got: Result<usize, SysError>, want: Result<usize, SysError>) {
        self.n += 1;
        if got != want {
            ss_ulib::println!(
                "[hostile] check {} ({what}): got {got:?}, want {want:?}",
                self.n
            );
            self.failed.get_or_insert(self.n);
        }
    }
}

async fn main(_arg: usize) -> i32 {
    let mut c = Checks { n: 0, failed: None };
    // First, while this is the process's only thread (later checks start
    // more, whose polls would publish over the scribbled page).
    scribbled_process_page(&mut c);
    let e = |e: SysError| Err::<usize, _>(e);
    let buf = [0u8; 16];
    let ok = buf.as_ptr() as usize;
    let mut status = 0i32;
    let st = &mut status as *mut i32 as usize;

    for n in [0, 23, 999, usize::MAX] {
        c.expect(
            "unknown number",
            SysError::from_ret(sys::raw(n, [0; 6])),
            e(SysError::NoSuchSyscall),
        );
    }
    for p in BAD {
        c.expect(
            "write from bad pointer",
            call(Syscall::Write, [1, p, 16, NONE, 0, 0]),
            e(SysError::BadAddress),
        );
        c.expect(
            "read into bad pointer",
            call(Syscall::Read, [0, p, 16, NONE, 0, 0]),
            e(SysError::BadAddress),
        );
        c.expect(
            "spawn with bad name",
            call(Syscall::Spawn, [p, 6, 1, 0, 0, 0]),
            e(SysError::BadAddress),
        );
        c.expect(
            "wait with bad status",
            call(Syscall::Wait, [p, 0, 0, 0, 0, 0]),
            e(SysError::BadAddress),
        );
        c.expect(
            "pipe with bad array",
            call(Syscall::Pipe, [p, 0, 0, 0, 0, 0]),
            e(SysError::BadAddress),
        );
    }
    // Read-only memory is readable but not writable.
    c.expect(
        "read into the global page",
        call(Syscall::Read, [0, GLOBAL_PAGE_VA, 8, NONE, 0, 0]),
        e(SysError::BadAddress),
    );
    c.expect(
        "wait into the global page",
        call(Syscall::Wait, [GLOBAL_PAGE_VA, 0, 0, 0, 0, 0]),
        e(SysError::BadAddress),
    );
    c.expect(
        "pipe into the global page",
        call(Syscall::Pipe, [GLOBAL_PAGE_VA, 0, 0, 0, 0, 0]),
        e(SysError::BadAddress),
    );
    c.expect(
        "write from the global page",
        call(Syscall::Write, [1, GLOBAL_PAGE_VA, 0, NONE, 0, 0]),
        Ok(0),
    );
    // Ranges that start mapped and run off the end.
    c.expect(
        "write past the stack top",
        call(Syscall::Write, [1, USER_END - 8, 4096, NONE, 0, 0]),
        e(SysError::BadAddress),
    );
    c.expect(
        "wrapping length",
        call(Syscall::Write, [1, ok, usize::MAX, NONE, 0, 0]),
        e(SysError::BadAddress),
    );
    c.expect(
        "misaligned status",
        call(Syscall::Wait, [st + 1, 0, 0, 0, 0, 0]),
        e(SysError::BadAddress),
    );
    // Descriptors.
    for fd in [3, 63, 64, 9999, usize::MAX] {
        c.expect(
            "write to closed fd",
            call(Syscall::Write, [fd, ok, 1, NONE, 0, 0]),
            e(SysError::BadFd),
        );
        c.expect(
            "read from closed fd",
            call(Syscall::Read, [fd, ok, 1, NONE, 0, 0]),
            e(SysError::BadFd),
        );
        c.expect(
            "close closed fd",
            call(Syscall::Close, [fd, 0, 0, 0, 0, 0]),
            e(SysError::BadFd),
        );
    }
    c.expect(
        "write to stdin",
        call(Syscall::Write, [0, ok, 1, NONE, 0, 0]),
        e(SysError::BadFd),
    );
    c.expect(
        "read from stdout",
        call(Syscall::Read, [1, ok, 1, NONE, 0, 0]),
        e(SysError::BadFd),
    );
    // The asynchronous forms check the same things, in the same order, and
    // start nothing when they refuse.
    let (rd, wr) = (Syscall::Read, Syscall::Write);
    let mut async_cases = alloc::vec::Vec::new();
    for p in BAD {
        async_cases.push((
            "async write from bad pointer",
            wr,
            1,
            p,
            SysError::BadAddress,
        ));
        async_cases.push((
            "async read into bad pointer",
            rd,
            0,
            p,
            SysError::BadAddress,
        ));
    }
    async_cases.extend([
        (
            "async read into the global page",
            rd,
            0,
            GLOBAL_PAGE_VA,
            SysError::BadAddress,
        ),
        ("async read from stdout", rd, 1, ok, SysError::BadFd),
        ("async write to stdin", wr, 0, ok, SysError::BadFd),
        ("async write to a closed fd", wr, 3, ok, SysError::BadFd),
        (
            "async write to a huge fd",
            wr,
            usize::MAX,
            ok,
            SysError::BadFd,
        ),
    ]);
    for (what, call_no, fd, p, want) in async_cases {
        c.expect(what, call(call_no, [fd, p, 8, 5, 0, 0]), e(want));
    }
    // Any other cid is accepted: a result for a coroutine that does not exist
    // is dropped by the shared scheduler.
    // An accepted call returns its operation id, rising with every call.
    let mut last_op = 0;
    let mut op_rises = |r: Result<usize, SysError>| {
        r.map(|op| {
            let rose = op > last_op;
            last_op = op;
            usize::from(rose)
        })
    };
    for cid in [0, 5, 0xdead_beef, usize::MAX - 1] {
        c.expect(
            "async empty write, any cid (a rising operation id)",
            op_rises(call(Syscall::Write, [1, ok, 0, cid, 0, 0])),
            Ok(1),
        );
    }
    // The priority argument: 0 (none) or a level + 1; anything beyond the
    // levels is refused before anything starts, on every asynchronous call.
    for prio in [1, 8] {
        c.expect(
            "async empty write at a valid priority (a rising operation id)",
            op_rises(call(Syscall::Write, [1, ok, 0, 5, prio, 0])),
            Ok(1),
        );
    }
    for prio in [9, 64, 65, usize::MAX] {
        c.expect(
            "async write at a priority beyond the levels",
            call(Syscall::Write, [1, ok, 1, 5, prio, 0]),
            e(SysError::BadArgument),
        );
        c.expect(
            "async read at a priority beyond the levels",
            call(Syscall::Read, [0, ok, 1, 5, prio, 0]),
            e(SysError::BadArgument),
        );
        c.expect(
            "async sleep at a priority beyond the levels",
            call(Syscall::Sleep, [1, 5, prio, 0, 0, 0]),
            e(SysError::BadArgument),
        );
        c.expect(
            "async accept at a priority beyond the levels",
            call(Syscall::Accept, [0, 5, prio, 0, 0, 0]),
            e(SysError::BadArgument),
        );
    }
    c.expect(
        "upcall_return outside a handler",
        call(Syscall::UpcallReturn, [0; 6]),
        e(SysError::BadArgument),
    );
    for h in [KERNEL, USER_END, usize::MAX, USER_BASE + 0x1001] {
        c.expect(
            "upcall handler outside user memory or misaligned",
            call(Syscall::UpcallRegister, [h, 0, 0, 0, 0, 0]),
            e(SysError::BadAddress),
        );
    }
    // Spawn arguments.
    let name = b"worker";
    let np = name.as_ptr() as usize;
    c.expect(
        "name too long",
        call(Syscall::Spawn, [np, 10_000, 1, 0, 0, 0]),
        e(SysError::BadArgument),
    );
    c.expect(
        "name not UTF-8",
        call(
            Syscall::Spawn,
            [b"\xff\xfe".as_ptr() as usize, 2, 1, 0, 0, 0],
        ),
        e(SysError::BadArgument),
    );
    for prio in [8, 64, 255, 256, usize::MAX] {
        c.expect(
            "priority beyond the levels",
            call(Syscall::Spawn, [np, 6, prio, 0, 0, 0]),
            e(SysError::BadArgument),
        );
    }
    c.expect(
        "unknown program",
        call(Syscall::Spawn, [b"nope".as_ptr() as usize, 4, 1, 0, 0, 0]),
        e(SysError::NoSuchProgram),
    );
    c.expect(
        "wait without children",
        call(Syscall::Wait, [st, 0, 0, 0, 0, 0]),
        e(SysError::NoChild),
    );
    for entry in [0, KERNEL, USER_END, usize::MAX] {
        c.expect(
            "thread entry outside user memory",
            call(Syscall::AllocCpu, [entry, 0, 0, 0, 0, 0]),
            e(SysError::BadAddress),
        );
    }
    // Permits: three unparks make three parks return at once.
    for _ in 0..3 {
        c.expect("unpark", call(Syscall::Unpark, [0; 6]), Ok(0));
    }
    for _ in 0..3 {
        c.expect("park with a permit", call(Syscall::Park, [0; 6]), Ok(0));
    }
    c.expect(
        "sleep 0",
        call(Syscall::Sleep, [0, ASYNC_ARG_NONE as usize, 0, 0, 0, 0]),
        Ok(0),
    );
    // A pipe, used correctly, still works after all that.
    let (r, w) = sys::pipe().unwrap_or((usize::MAX, usize::MAX));
    c.expect("pipe write", sys::write(w, b"ok"), Ok(2));
    let mut got = [0u8; 4];
    c.expect("pipe read", sys::read(r, &mut got), Ok(2));
    c.expect("close write end", sys::close(w).map(|_| 0), Ok(0));
    c.expect("end of file", sys::read(r, &mut got), Ok(0));
    c.expect("close read end", sys::close(r).map(|_| 0), Ok(0));
    network(&mut c);
    // I/O modes: only the three there are.
    for m in [3, 4, 1000, usize::MAX] {
        c.expect(
            "set_io_mode out of range",
            call(Syscall::SetIoMode, [m, 0, 0, 0, 0, 0]),
            e(SysError::BadArgument),
        );
    }
    for m in IoMode::ALL {
        c.expect("set_io_mode", sys::set_io_mode(m).map(|_| 0), Ok(0));
    }
    c.expect(
        "set_io_mode back",
        sys::set_io_mode(IoMode::Direct).map(|_| 0),
        Ok(0),
    );
    // Threads that end give their stack slots back: five rounds of 32
    // threads that end at once stay within the first rounds' slots.
    let mut highest = 0;
    for round in 1..=5 {
        for _ in 0..32 {
            match sys::alloc_cpu_raw(ending_thread as *const () as usize, 0) {
                Ok(tid) => highest = highest.max(tid),
                Err(err) => c.expect("alloc_cpu of an ending thread", Err(err), Ok(0)),
            }
        }
        while ENDED.load(Ordering::SeqCst) < round * 32 {
            sys::yield_now();
        }
    }
    c.expect(
        "ended threads' slots reused",
        Ok(usize::from(highest <= 64)),
        Ok(1),
    );
    // Threads until the kernel says no: `Limit` (4096 stack slots) or
    // `OutOfMemory` (32 KiB each), never a crash. They poll the Executor,
    // find nothing, and park until the process exits (last, so that their
    // parking cannot take the permits checked above).
    let mut made = 0;
    let refused = loop {
        match ss_ulib::alloc_cpu() {
            Ok(_) => made += 1,
            Err(err) => break err,
        }
        if made >= ss_abi::uspace::MAX_THREADS {
            break SysError::BadArgument;
        }
    };
    c.expect(
        "alloc_cpu until refused",
        Ok(usize::from(matches!(
            refused,
            SysError::Limit | SysError::OutOfMemory
        ))),
        Ok(1),
    );
    ss_ulib::println!("[hostile] {} checks, first failure: {:?}", c.n, c.failed);
    c.failed.unwrap_or(0)
}

/// The process page is this process's to write, the kernel's folded words
/// included: garbage everywhere (a bitmap with every bit, the folded words'
/// lock left odd) costs the kernel nothing, and its next fold of this process
/// writes them whole again, naming the garbage bitmap masked to the levels.
fn scribbled_process_page(c: &mut Checks) {
    let word = |off: usize| {
        // SAFETY: the process page is mapped read-write at PROCESS_PAGE_VA for
        // the process's life; the offsets are aligned words inside it.
        unsafe { &*((PROCESS_PAGE_VA + off) as *const AtomicU64) }
    };
    let ready = word(offset_of!(ProcessPage, ready));
    // SAFETY: as above.
    let FoldedWords { seq, folded, at } = unsafe { FoldedWords::in_page(PROCESS_PAGE_VA) };
    ready.store(u64::MAX, Ordering::SeqCst);
    seq.store(7, Ordering::SeqCst);
    folded.store(0xdead_beef, Ordering::SeqCst);
    at.store(u64::MAX, Ordering::SeqCst);
    // The thread stops and is woken: two folds (no poll, so no publish, in
    // between to replace the garbage `ready`).
    sys::sleep_ns(2_000_000);
    let (s, f, a) = (
        seq.load(Ordering::SeqCst),
        folded.load(Ordering::SeqCst),
        at.load(Ordering::SeqCst),
    );
    // SAFETY: the global page is mapped read-only for the process's life.
    let global = unsafe { &*((GLOBAL_PAGE_VA + GLOBAL_PAGE_SEQ_OFFSET) as *const AtomicU64) }
        .load(Ordering::SeqCst);
    c.expect(
        "folded words rewritten whole",
        Ok(usize::from(s % 2 == 0 && s > 7)),
        Ok(1),
    );
    c.expect(
        "the garbage bitmap folded in, masked to the levels",
        Ok(f as usize),
        Ok(Levels::DEFAULT.mask() as usize),
    );
    c.expect(
        "folded_at no later than the global page",
        Ok(usize::from(a <= global)),
        Ok(1),
    );
}

static ENDED: AtomicUsize = AtomicUsize::new(0);

/// A thread that ends at once.
extern "C" fn ending_thread(_arg: usize) -> ! {
    ENDED.fetch_add(1, Ordering::SeqCst);
    sys::thread_exit()
}

/// `listen`, `accept` and socket descriptors (the test boots have a network
/// device).
fn network(c: &mut Checks) {
    let e = |e: SysError| Err::<usize, _>(e);
    for port in [0, 65_536, 1 << 40, usize::MAX] {
        c.expect(
            "listen on a port out of range",
            call(Syscall::Listen, [port, 0, 0, 0, 0, 0]),
            e(SysError::BadArgument),
        );
    }
    let l = sys::listen(7000);
    c.expect("listen", l.map(|_| 0), Ok(0));
    let l = l.unwrap_or(usize::MAX);
    c.expect(
        "listen on a port taken",
        sys::listen(7000),
        e(SysError::AddrInUse),
    );
    for fd in [0, 1, 999, 9000, usize::MAX] {
        c.expect(
            "accept on a non-listener",
            sys::accept(fd),
            e(SysError::BadFd),
        );
        c.expect(
            "asynchronous accept on a non-listener",
            sys::accept_submit(fd, 5, None).map(|_| 0),
            e(SysError::BadFd),
        );
    }
    let mut b = [0u8; 8];
    c.expect("read a listener", sys::read(l, &mut b), e(SysError::BadFd));
    c.expect("write a listener", sys::write(l, b"x"), e(SysError::BadFd));
    for p in BAD {
        c.expect(
            "asynchronous read of a listener into a bad pointer",
            call(Syscall::Read, [l, p, 16, 9, 0, 0]),
            e(SysError::BadAddress),
        );
    }
    c.expect("close the listener", sys::close(l).map(|_| 0), Ok(0));
    let again = sys::listen(7000);
    c.expect("listen again once closed", again.map(|_| 0), Ok(0));
    if let Ok(fd) = again {
        c.expect("close it", sys::close(fd).map(|_| 0), Ok(0));
    }
}

ss_ulib::main!(main);
