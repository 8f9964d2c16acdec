//! What every model shares about bytes: cutting the received stream into
//! frames ([`Framer`]), the work item between receive and handle ([`Job`]),
//! and the handle step that turns a job into the bytes of its answer
//! ([`Handler`]).

use std::io;
use std::os::fd::RawFd;

use ss_proto::{
    decode::parse_request, encode, matrix, Parsed, ProtoError, Request, ServerDecoder, ServerFrame,
};

/// The least room a receive is given: a few requests of the paper's 15 × 15
/// (916 bytes each) at once.
const RECV_CHUNK: usize = 4096;

/// One unit of work for the handle component, in stream order.
#[derive(Debug)]
pub(crate) enum Job {
    /// A Hello, with the priority already granted by the policy.
    Hello {
        /// The priority to answer with.
        priority: u8,
    },
    /// A whole Request frame (header and payload), copied out of the receive
    /// buffer into a recycled buffer.
    Request(Vec<u8>),
    /// A bad frame: answer with its error status; nothing follows.
    Bad(ProtoError),
}

/// A connection's receive buffer and decoder: bytes in, [`Job`]s out.
///
/// The received bytes not yet decoded are `buf[start..]`; `buf.len()` is the
/// end of the received data, and receives append into the spare capacity.
#[derive(Debug)]
pub(crate) struct Framer {
    buf: Vec<u8>,
    start: usize,
    decoder: ServerDecoder,
    /// The total length `buf[start..]` must reach before decoding can progress.
    needed: usize,
}

impl Framer {
    pub(crate) fn new() -> Framer {
        Framer {
            buf: Vec::with_capacity(RECV_CHUNK),
            start: 0,
            decoder: ServerDecoder::new(),
            needed: 0,
        }
    }

    /// Makes room for the next receive: moves the undecoded bytes to the front
    /// if that is what it takes, and reserves at least [`RECV_CHUNK`] and at least
    /// what the frame in progress still needs. `needed` is at most the largest
    /// frame (16 400 bytes), so a peer cannot grow the buffer beyond a few times
    /// that.
    fn make_room(&mut self) {
        let pending = self.buf.len() - self.start;
        let want = RECV_CHUNK.max(self.needed.saturating_sub(pending));
        self.compact_for(want);
        self.buf.reserve(want);
    }

    /// Moves the undecoded bytes to the front if the spare room is short of
    /// `want` and that frees some.
    fn compact_for(&mut self, want: usize) {
        if self.start > 0 && self.buf.capacity() - self.buf.len() < want {
            let pending = self.buf.len() - self.start;
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(pending);
            self.start = 0;
        }
    }

    /// The buffer, for an operation that appends into its spare capacity and
    /// gives it back ([`Framer::give`]): io_uring's owned buffers, tokio's
    /// `read_buf`. It has at least [`RECV_CHUNK`] bytes of room.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        self.make_room();
        std::mem::take(&mut self.buf)
    }

    /// Appends received bytes (from a receive into a buffer not the framer's:
    /// a pooled receive).
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.compact_for(bytes.len());
        self.buf.extend_from_slice(bytes);
    }

    /// Frees the buffer if it holds nothing undecoded: a connection waiting
    /// between frames then keeps no receive memory (with pooled receives).
    pub(crate) fn release_if_empty(&mut self) {
        if self.start == self.buf.len() {
            self.buf = Vec::new();
            self.start = 0;
        }
    }

    /// Returns the buffer [`Framer::take`] gave, with the received bytes
    /// appended.
    pub(crate) fn give(&mut self, buf: Vec<u8>) {
        self.buf = buf;
    }

    /// Receives from socket `fd` with `recv(2)` (`flags`: e.g. `MSG_DONTWAIT`)
    /// into the spare room. `Ok(0)` is end of file.
    ///
    /// # Errors
    /// The errno of `recv(2)` (`WouldBlock` for a non-blocking socket with
    /// nothing to read, `ConnectionReset`, …).
    pub(crate) fn recv_fd(&mut self, fd: RawFd, flags: libc::c_int) -> io::Result<usize> {
        let (ptr, len) = self.spare();
        // SAFETY: `ptr..ptr + len` is the Vec's spare capacity, which nothing else
        // touches during the call; recv(2) writes at most `len` bytes there.
        let n = unsafe { libc::recv(fd, ptr.cast(), len, flags) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // recv(2) returned a count of at most `len` (n ≥ 0 was checked).
        let n = n as usize;
        // SAFETY: recv(2) initialised the first `n` bytes of the spare room.
        unsafe { self.filled(n) };
        Ok(n)
    }

    /// The spare room for a receive that writes through a raw pointer (recv(2),
    /// an io_uring `Recv` waited for on the spot), after making room.
    pub(crate) fn spare(&mut self) -> (*mut u8, usize) {
        self.make_room();
        let spare = self.buf.spare_capacity_mut();
        (spare.as_mut_ptr().cast(), spare.len())
    }

    /// Counts `n` bytes written into the room [`Framer::spare`] gave as received.
    ///
    /// # Safety
    /// The first `n` bytes of that room (`n` no more than its length) have
    /// been initialised since, and the buffer was not touched in between.
    pub(crate) unsafe fn filled(&mut self, n: usize) {
        debug_assert!(n <= self.buf.capacity() - self.buf.len());
        // SAFETY: the caller promises those bytes are initialised and in the
        // spare capacity.
        unsafe { self.buf.set_len(self.buf.len() + n) };
    }

    /// Forgets every byte received and not decoded (the discarding after a bad
    /// frame).
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.needed = 0;
    }

    /// Decodes the next frame and passes it and its wire bytes to `f` (both
    /// borrow the receive buffer), then consumes it. `None` until a whole frame
    /// has arrived. After a bad frame `f` gets the error, and gets it again on
    /// every later call.
    pub(crate) fn next_with<R>(
        &mut self,
        f: impl FnOnce(Result<(ServerFrame<'_>, &[u8]), ProtoError>) -> R,
    ) -> Option<R> {
        let data = &self.buf[self.start..];
        match self.decoder.decode(data) {
            Ok(Parsed::Incomplete { needed }) => {
                self.needed = needed;
                None
            }
            Ok(Parsed::Complete { frame, consumed }) => {
                let answer = f(Ok((frame, &data[..consumed])));
                self.start += consumed;
                self.needed = 0;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                Some(answer)
            }
            Err(bad) => Some(f(Err(bad))),
        }
    }

    /// The next [`Job`]: a Request is copied into `recycled()` (a cleared
    /// buffer); a Hello carries the *requested* priority, for the receiver to
    /// grant. `None` until a whole frame has arrived.
    pub(crate) fn next_job(&mut self, recycled: impl FnOnce() -> Vec<u8>) -> Option<Job> {
        self.next_with(|frame| match frame {
            Ok((ServerFrame::Hello(hello), _)) => Job::Hello {
                priority: hello.priority,
            },
            Ok((ServerFrame::Request(_), wire)) => {
                let mut copy = recycled();
                copy.clear();
                copy.extend_from_slice(wire);
                Job::Request(copy)
            }
            Err(bad) => Job::Bad(bad),
        })
    }
}

/// The handle component's step: a job in, the bytes of its answer out.
///
/// It holds nothing per connection: the product C is computed in a scratch
/// buffer of the calling thread ([`PRODUCT`]), which the step never holds
/// across an `await`. A 64 × 64 product is 16 KiB; kept per connection (as it
/// was) it was most of what a coroutine model's idle connection cost.
pub(crate) struct Handler(());

thread_local! {
    /// C, reused for every request answered on this thread; grows to the
    /// largest dimension seen (at most `Dim::MAX`).
    static PRODUCT: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Why an answer could not be made; not the peer's fault (the job was checked
/// when it was decoded), so the connection is dropped and the event reported.
#[derive(Debug)]
pub(crate) struct Internal(String);

impl std::fmt::Display for Internal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "internal error while answering: {}", self.0)
    }
}

impl Handler {
    pub(crate) fn new() -> Handler {
        Handler(())
    }

    /// Appends the answer to `job` to `out`.
    pub(crate) fn respond(&mut self, job: &Job, out: &mut Vec<u8>) -> Result<(), Internal> {
        match job {
            Job::Hello { priority } => answer_hello(*priority, out),
            Job::Request(bytes) => match parse_request(bytes) {
                Ok(Parsed::Complete { frame, .. }) => self.answer_request(&frame, out),
                other => Err(Internal(format!(
                    "a queued request no longer parses: {other:?}"
                ))),
            },
            Job::Bad(bad) => answer_bad(bad, out),
        }
    }

    /// Appends the ok Response to `request` (C = M × M) to `out`.
    pub(crate) fn answer_request(
        &mut self,
        request: &Request<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), Internal> {
        let dim = request.dim();
        PRODUCT.with_borrow_mut(|product| {
            if product.len() < dim.elements() {
                product.resize(dim.elements(), 0);
            }
            let c = &mut product[..dim.elements()];
            matrix::square_into(dim, &request.matrix, c).map_err(|e| Internal(format!("{e:?}")))?;
            let at = out.len();
            out.resize(at + encode::response_ok_len(dim), 0);
            encode::encode_response_ok(request.id, dim, &*c, &mut out[at..])
                .map(drop)
                .map_err(|e| Internal(e.to_string()))
        })
    }
}

/// Appends the HelloAck granting `priority` to `out`.
pub(crate) fn answer_hello(priority: u8, out: &mut Vec<u8>) -> Result<(), Internal> {
    let at = out.len();
    out.resize(at + encode::hello_ack_len(), 0);
    encode::encode_hello_ack(priority, &mut out[at..]).map_err(|e| Internal(e.to_string()))?;
    Ok(())
}

/// Appends the error Response for `bad` to `out`.
pub(crate) fn answer_bad(bad: &ProtoError, out: &mut Vec<u8>) -> Result<(), Internal> {
    let at = out.len();
    out.resize(at + encode::response_error_len(), 0);
    encode::encode_response_error(bad.request_id(), bad.status(), &mut out[at..])
        .map_err(|e| Internal(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ss_proto::Dim;

    fn request(id: u64, m: &[u32], n: u16) -> Vec<u8> {
        let dim = Dim::new(n).unwrap();
        let mut b = vec![0; encode::request_len(dim)];
        encode::encode_request(id, dim, m, &mut b).unwrap();
        b
    }

    /// Feeds `wire` in pieces of `step` bytes and collects the jobs.
    fn jobs(wire: &[u8], step: usize) -> Vec<Job> {
        let mut framer = Framer::new();
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            let mut buf = framer.take();
            buf.extend_from_slice(piece);
            framer.give(buf);
            while let Some(job) = framer.next_job(Vec::new) {
                let bad = matches!(job, Job::Bad(_));
                out.push(job);
                if bad {
                    return out;
                }
            }
        }
        out
    }

    #[test]
    fn frames_do_not_depend_on_how_the_stream_is_cut() {
        let mut wire = b"SSHI\x03\0\0\0".to_vec();
        let a = request(1, &[1, 2, 3, 4], 2);
        let b = request(2, &[5; 9], 3);
        wire.extend_from_slice(&a);
        wire.extend_from_slice(&b);
        for step in [1, 3, 7, 100, 10_000] {
            let got = jobs(&wire, step);
            assert_eq!(got.len(), 3, "step {step}");
            assert!(matches!(got[0], Job::Hello { priority: 3 }));
            assert!(matches!(&got[1], Job::Request(bytes) if *bytes == a));
            assert!(matches!(&got[2], Job::Request(bytes) if *bytes == b));
        }
    }

    #[test]
    fn extending_and_releasing_keep_every_undecoded_byte() {
        // The pooled receive's path: bytes copied in, the buffer released only
        // when nothing undecoded is left.
        let mut wire = request(1, &[1, 2, 3, 4], 2);
        let b = request(2, &[5; 9], 3);
        wire.extend_from_slice(&b);
        for step in [1, 5, 17, 10_000] {
            let mut framer = Framer::new();
            let mut got = Vec::new();
            for piece in wire.chunks(step) {
                framer.release_if_empty();
                framer.extend(piece);
                while let Some(job) = framer.next_job(Vec::new) {
                    got.push(job);
                }
            }
            assert_eq!(got.len(), 2, "step {step}");
            assert!(matches!(&got[1], Job::Request(bytes) if *bytes == b));
            framer.release_if_empty();
            assert_eq!(
                framer.buf.capacity(),
                0,
                "step {step}: an idle framer keeps memory"
            );
        }
    }

    #[test]
    fn a_bad_dim_is_a_bad_job_after_the_header() {
        let mut wire = request(9, &[1], 1);
        wire[12..14].copy_from_slice(&65u16.to_le_bytes());
        let got = jobs(&wire[..16], 16);
        assert!(matches!(
            got[..],
            [Job::Bad(ProtoError::BadDim { id: 9, dim: 65 })]
        ));
    }

    #[test]
    fn the_handler_answers_each_job() {
        let mut h = Handler::new();
        let mut out = Vec::new();
        h.respond(&Job::Hello { priority: 2 }, &mut out).unwrap();
        h.respond(&Job::Request(request(7, &[1, 2, 3, 4], 2)), &mut out)
            .unwrap();
        let bad = ProtoError::BadMagic { found: *b"XXXX" };
        h.respond(&Job::Bad(bad), &mut out).unwrap();
        let mut client = ss_proto::ClientDecoder::after_hello();
        let mut rest = &out[..];
        let mut seen = 0;
        while let Ok(Parsed::Complete { frame, consumed }) = client.decode(rest) {
            match (seen, frame) {
                (0, ss_proto::ClientFrame::HelloAck(ack)) => assert_eq!(ack.priority, 2),
                (1, ss_proto::ClientFrame::Response(r)) => {
                    matrix::verify_response(7, Dim::new(2).unwrap(), &[1u32, 2, 3, 4], &r).unwrap();
                }
                (2, ss_proto::ClientFrame::Response(r)) => {
                    assert_eq!(r.result, Err(ss_proto::ErrorStatus::BadMagic));
                }
                other => panic!("unexpected {other:?}"),
            }
            seen += 1;
            rest = &rest[consumed..];
        }
        assert_eq!((seen, rest.len()), (3, 0));
    }
}
