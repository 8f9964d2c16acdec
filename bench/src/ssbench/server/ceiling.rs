//! `ceiling`: the no-scheduler baseline (issue item 5) — one thread, one
//! io_uring, no queues, no tasks, no wake-ups. The loop waits for at least one
//! completion, handles every completion that has arrived (decode, square,
//! encode straight into the connection's send buffer), and submits all the
//! receives and sends this produced in the next `io_uring_enter`: the physical
//! limit of the service on this machine, which the models are measured
//! against.
//!
//! Each connection has at most one receive and one send in flight. Received
//! frames are answered in order into `out`; when no send is in flight, `out`
//! becomes the send (`inflight`) and a new `out` collects the next answers.
//! A connection whose unsent answers pass [`OUT_LIMIT`] is not given a new
//! receive until they drain (a peer that sends and never reads holds at most
//! that much). A connection is freed only when neither of its operations is in
//! flight, so the kernel never writes into a freed buffer.
//!
//! After a bad frame the connection lingers as in the other models
//! (`pipeline::LINGER`): once its error Response is sent and its side shut,
//! it is put on a deadline list (in order of deadline, as every linger is
//! equally long), and one timeout operation in the ring, for the earliest
//! deadline, wakes the loop to end those that are due: their socket is shut
//! down both ways, which completes the receive in flight.

use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::Instant;

use io_uring::{opcode, squeue, types, IoUring};
use ss_proto::ServerFrame;

use super::accept::{self, ACCEPT_RETRY};
use super::framing::{answer_bad, answer_hello, Framer, Handler};
use super::pipeline::{DISCARD_LIMIT, LINGER};
use super::{probe_io_uring, Policy, Running, Setup};

/// Submission queue entries (the completion queue has twice as many).
const ENTRIES: u32 = 4096;
/// Unsent answers beyond which a connection receives no more until they drain.
const OUT_LIMIT: usize = 256 * 1024;

/// What a completion is for: the low [`KIND_BITS`] bits of its `user_data`;
/// the rest is the connection's slot.
const ACCEPT: u64 = 0;
const RECV: u64 = 1;
const SEND: u64 = 2;
const RETRY: u64 = 3;
/// The timeout for the earliest linger deadline.
const LINGER_DUE: u64 = 4;
const KIND_BITS: u32 = 3;
const KIND_MASK: u64 = (1 << KIND_BITS) - 1;

pub(crate) fn start(setup: Setup) -> anyhow::Result<Running> {
    probe_io_uring()?;
    let ring = IoUring::new(ENTRIES)?;
    std::thread::Builder::new()
        .name("ceiling".into())
        .spawn(move || {
            let mut server = Server {
                ring,
                listener: setup.listener,
                policy: setup.policy,
                conns: Vec::new(),
                free: Vec::new(),
                handler: Handler::new(),
                retry_after: types::Timespec::from(ACCEPT_RETRY),
                accept_errors: accept::Errors::default(),
                next_serial: 0,
                lingering: VecDeque::new(),
                linger_timer: None,
            };
            if let Err(e) = server.run() {
                eprintln!("ssbench server ceiling: the loop failed: {e}; no longer serving");
            }
        })?;
    Ok(Box::new(()))
}

/// One connection's state.
struct Conn {
    stream: TcpStream,
    framer: Framer,
    /// Answers not yet handed to a send.
    out: Vec<u8>,
    /// The bytes of the send in flight (`sent..` still to go).
    inflight: Vec<u8>,
    sent: usize,
    recv_busy: bool,
    send_busy: bool,
    /// The peer closed, reset, or the connection failed: no more receives.
    ended: bool,
    /// A bad frame was answered: decode nothing more, discard what arrives.
    failed: bool,
    discarded: usize,
    /// This connection's number in accept order (a slot is reused; the
    /// number tells a linger deadline whose connection it was).
    serial: u64,
    /// After a bad frame, with its error Response sent: our side is shut and
    /// the connection lingers (its deadline is on `Server::lingering`).
    lingers: bool,
}

struct Server {
    ring: IoUring,
    listener: std::net::TcpListener,
    policy: Policy,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    handler: Handler,
    /// The timeout before re-arming a failed accept (the kernel reads it while
    /// the timeout is in flight, so it lives here).
    retry_after: types::Timespec,
    accept_errors: accept::Errors,
    /// The next connection's serial (connections accepted so far).
    next_serial: u64,
    /// Lingering connections (slot, serial, deadline), earliest first.
    lingering: VecDeque<(usize, u64, Instant)>,
    /// The linger timeout in flight, if any (the kernel reads it while it is
    /// in flight, so it lives here, and changes only when none is).
    linger_timer: Option<types::Timespec>,
}

impl Server {
    fn run(&mut self) -> io::Result<()> {
        self.arm_accept();
        let mut done = Vec::with_capacity(ENTRIES as usize);
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(e) => return Err(e),
            }
            done.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
            for (data, result) in done.drain(..) {
                let slot = (data >> KIND_BITS) as usize;
                match data & KIND_MASK {
                    ACCEPT => self.accepted(result),
                    RECV => self.received(slot, result),
                    SEND => self.sent(slot, result),
                    RETRY => self.arm_accept(),
                    _ => self.linger_due(),
                }
            }
        }
    }

    /// Pushes `sqe`, submitting first if the queue is full.
    fn push(&mut self, sqe: squeue::Entry) {
        loop {
            // SAFETY: every entry built here points at memory that outlives its
            // operation: a connection's buffers are left untouched while the
            // operation is in flight and freed only after it completes; the
            // retry and linger timespecs are fields of `self`, which lives for
            // the loop, and the linger one is not changed while in flight.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return;
            }
            let _ = self.ring.submit();
        }
    }

    fn arm_accept(&mut self) {
        let sqe = opcode::Accept::new(
            types::Fd(self.listener.as_raw_fd()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(ACCEPT);
        self.push(sqe);
    }

    fn accepted(&mut self, result: i32) {
        if result < 0 {
            let e = io::Error::from_raw_os_error(-result);
            self.accept_errors.failed("ceiling", &e);
            let sqe = opcode::Timeout::new(&self.retry_after)
                .build()
                .user_data(RETRY);
            self.push(sqe);
            return;
        }
        self.accept_errors.ok();
        self.arm_accept();
        // SAFETY: a successful accept returns a fresh descriptor owned by nobody.
        let stream = unsafe { TcpStream::from_raw_fd(result as RawFd) };
        let _ = stream.set_nodelay(true);
        let _ = self.policy.on_accept();
        let serial = self.next_serial;
        self.next_serial += 1;
        let conn = Conn {
            stream,
            framer: Framer::new(),
            out: Vec::new(),
            inflight: Vec::new(),
            sent: 0,
            recv_busy: false,
            send_busy: false,
            ended: false,
            failed: false,
            discarded: 0,
            serial,
            lingers: false,
        };
        let slot = match self.free.pop() {
            Some(i) => {
                self.conns[i] = Some(conn);
                i
            }
            None => {
                self.conns.push(Some(conn));
                self.conns.len() - 1
            }
        };
        self.arm_recv(slot);
    }

    fn arm_recv(&mut self, slot: usize) {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return;
        };
        if c.recv_busy || c.ended || c.out.len() > OUT_LIMIT {
            return;
        }
        if c.failed {
            c.framer.clear();
        }
        let (ptr, len) = c.framer.spare();
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let sqe = opcode::Recv::new(types::Fd(c.stream.as_raw_fd()), ptr, len)
            .build()
            .user_data(RECV | (slot as u64) << KIND_BITS);
        c.recv_busy = true;
        self.push(sqe);
    }

    fn received(&mut self, slot: usize, result: i32) {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return;
        };
        c.recv_busy = false;
        if result <= 0 {
            c.ended = true;
        } else {
            // Positive: a byte count, at most the room given.
            let n = result as usize;
            // SAFETY: the kernel wrote `n` bytes into the room `spare` gave, and
            // nothing touched the framer while the receive was in flight.
            unsafe { c.framer.filled(n) };
            if c.failed {
                c.discarded += n;
                c.ended = c.discarded >= DISCARD_LIMIT;
            } else {
                self.decode(slot);
            }
        }
        self.flush(slot);
        self.arm_recv(slot);
        self.close_if_done(slot);
    }

    /// Answers every whole frame received, into `out`.
    fn decode(&mut self, slot: usize) {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return;
        };
        let (policy, handler) = (&self.policy, &mut self.handler);
        while !c.failed {
            let out = &mut c.out;
            let answered = c.framer.next_with(|frame| match frame {
                Ok((ServerFrame::Hello(h), _)) => {
                    answer_hello(policy.grant(h.priority), out).map(|()| false)
                }
                Ok((ServerFrame::Request(r), _)) => handler.answer_request(&r, out).map(|()| false),
                Err(bad) => answer_bad(&bad, out).map(|()| true),
            });
            match answered {
                None => break,
                Some(Ok(bad)) => c.failed = bad,
                Some(Err(e)) => {
                    eprintln!("ssbench server ceiling: {e}; dropping the connection");
                    c.ended = true;
                    c.failed = true;
                }
            }
        }
    }

    /// Starts a send of `out` if none is in flight; after a bad frame, with
    /// everything sent, shuts the sending side and starts the linger.
    fn flush(&mut self, slot: usize) {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return;
        };
        if c.send_busy {
            return;
        }
        if c.out.is_empty() {
            if c.failed && !c.ended && !c.lingers {
                let _ = c.stream.shutdown(Shutdown::Write);
                c.lingers = true;
                let until = Instant::now() + LINGER;
                self.lingering.push_back((slot, c.serial, until));
                self.arm_linger_timer();
            }
            return;
        }
        std::mem::swap(&mut c.out, &mut c.inflight);
        c.out.clear();
        c.sent = 0;
        self.send_rest(slot);
    }

    fn send_rest(&mut self, slot: usize) {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return;
        };
        let rest = &c.inflight[c.sent..];
        let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        let sqe = opcode::Send::new(types::Fd(c.stream.as_raw_fd()), rest.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(SEND | (slot as u64) << KIND_BITS);
        c.send_busy = true;
        self.push(sqe);
    }

    fn sent(&mut self, slot: usize, result: i32) {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return;
        };
        c.send_busy = false;
        if result <= 0 {
            // The peer is gone: stop receiving too (a receive in flight
            // completes once the socket is shut down).
            c.ended = true;
            c.out.clear();
            let _ = c.stream.shutdown(Shutdown::Both);
        } else {
            c.sent += result as usize;
            if c.sent < c.inflight.len() {
                self.send_rest(slot);
                return;
            }
            self.flush(slot);
            self.arm_recv(slot);
        }
        self.close_if_done(slot);
    }

    /// Arms the timeout for the earliest linger deadline, unless one is in
    /// flight or none is left.
    fn arm_linger_timer(&mut self) {
        if self.linger_timer.is_some() {
            return;
        }
        let Some(&(_, _, until)) = self.lingering.front() else {
            return;
        };
        let after = until.saturating_duration_since(Instant::now());
        let ts = self.linger_timer.insert(types::Timespec::from(after));
        let sqe = opcode::Timeout::new(ts).build().user_data(LINGER_DUE);
        self.push(sqe);
    }

    /// The linger timeout completed: ends every connection whose deadline has
    /// come (a connection already freed, or its slot's new one, is left be),
    /// and arms the timeout for the next.
    fn linger_due(&mut self) {
        self.linger_timer = None;
        let now = Instant::now();
        while let Some(&(slot, serial, until)) = self.lingering.front() {
            if until > now {
                break;
            }
            self.lingering.pop_front();
            let Some(Some(c)) = self.conns.get_mut(slot) else {
                continue;
            };
            if c.serial != serial {
                continue;
            }
            // Completes the receive in flight (with end of file), which then
            // frees the connection; without one, it is freed here.
            c.ended = true;
            let _ = c.stream.shutdown(Shutdown::Both);
            self.close_if_done(slot);
        }
        self.arm_linger_timer();
    }

    /// Frees a connection that has ended, has nothing left to send and no
    /// operation in flight.
    fn close_if_done(&mut self, slot: usize) {
        let Some(Some(c)) = self.conns.get(slot) else {
            return;
        };
        if c.ended && !c.recv_busy && !c.send_busy && c.out.is_empty() {
            self.conns[slot] = None;
            self.free.push(slot);
        }
    }
}
