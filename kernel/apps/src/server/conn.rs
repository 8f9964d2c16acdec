//! One connection's protocol work, the same in every model: the receive
//! component turns bytes into [`Job`]s ([`Inbox`]), the handle component turns
//! a job into a [`Reply`] ([`Handler::handle`]), the send component writes the reply.

use alloc::vec;
use alloc::vec::Vec;

use ss_proto::encode::{
    encode_hello_ack, encode_response_error, encode_response_ok, hello_ack_len, response_error_len,
    response_ok_len,
};
use ss_proto::matrix::square_into;
use ss_proto::{Dim, ErrorStatus, MatrixView, Parsed, ProtoError, ServerDecoder, ServerFrame};

use super::LEVELS;

/// The most bytes asked of one socket read (the kernel returns at most 4096).
pub const READ_SIZE: usize = 4096;

/// The fewest bytes asked of one socket read by [`Inbox::read_len`] (a 15 ×
/// 15 request, the paper's, is 916 bytes).
pub const MIN_READ: usize = 1024;

/// What the receive component queues for the handle component.
#[derive(Debug)]
pub enum Job {
    /// The connection opened with a Hello; this priority was granted.
    Hello {
        /// The granted priority.
        granted: u8,
    },
    /// A Request to square a matrix.
    Request {
        /// The request's id.
        id: u64,
        /// Its checked dimension.
        dim: Dim,
        /// The matrix as it came on the wire (`dim.payload_len()` bytes).
        payload: Vec<u8>,
    },
    /// A frame the server cannot accept: answer with one error Response and
    /// close the connection. Nothing follows it ([`Inbox::error`] says what
    /// was wrong).
    Bad {
        /// The id the error Response echoes.
        id: u64,
        /// Its status.
        status: ErrorStatus,
    },
}

/// Tags of [`Job`]s as messages (see [`Job::encode`]).
const TAG_HELLO: u8 = 0;
const TAG_REQUEST: u8 = 1;
const TAG_BAD: u8 = 2;

impl Job {
    /// The job as one message for a byte queue (the thread models' pipes):
    /// a tag, then the fields little-endian, then a request's payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        match self {
            Job::Hello { granted } => out.extend_from_slice(&[TAG_HELLO, *granted]),
            Job::Request { id, dim, payload } => {
                out.push(TAG_REQUEST);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&dim.get().to_le_bytes());
                out.extend_from_slice(payload);
            }
            Job::Bad { id, status } => {
                out.extend_from_slice(&[TAG_BAD, status.code()]);
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
    }

    /// The job a message made by [`Job::encode`] holds; `None` for anything
    /// else.
    pub fn decode(msg: &[u8]) -> Option<Job> {
        let (&tag, rest) = msg.split_first()?;
        let id_at = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(*rest.get(at..at + 8)?.first_chunk()?))
        };
        match tag {
            TAG_HELLO => match rest {
                [granted] => Some(Job::Hello { granted: *granted }),
                _ => None,
            },
            TAG_REQUEST => {
                let id = id_at(0)?;
                let dim = u16::from_le_bytes(*rest.get(8..10)?.first_chunk()?);
                let dim = Dim::new(dim).ok()?;
                let payload = rest.get(10..)?;
                (payload.len() == dim.payload_len()).then(|| Job::Request {
                    id,
                    dim,
                    payload: payload.to_vec(),
                })
            }
            TAG_BAD => {
                let status = ErrorStatus::from_code(*rest.first()?)?;
                (rest.len() == 9).then_some(Job::Bad {
                    id: id_at(1)?,
                    status,
                })
            }
            _ => None,
        }
    }
}

/// What the handle component queues for the send component.
#[derive(Debug)]
pub struct Reply {
    /// The frame's bytes.
    pub bytes: Vec<u8>,
    /// The last reply of the connection: close it once this is sent.
    pub last: bool,
}

/// The priority granted to a Hello asking for `requested`: capped to the
/// levels.
pub fn grant(requested: u8) -> u8 {
    requested.min(LEVELS - 1)
}

/// The priority of the `n`-th accepted connection (0-based) when it sends
/// no Hello: accept order modulo the levels, as in the paper.
pub fn default_priority(n: usize) -> u8 {
    // The remainder is below LEVELS (8), so it fits.
    (n % usize::from(LEVELS)) as u8
}

/// The receive component's state: bytes received and not yet taken as a
/// frame, and the protocol's decoder. Holds at most one frame and one read
/// (the caller reads only when [`Inbox::next_job`] says it needs bytes), so a
/// connection's memory is bounded ([`MAX_FRAME_LEN`](ss_proto::MAX_FRAME_LEN)
/// plus a read) whatever the peer sends.
#[derive(Debug, Default)]
pub struct Inbox {
    decoder: ServerDecoder,
    bytes: Vec<u8>,
    /// The length `bytes` must reach for the decoder to get further.
    needed: usize,
    failed: bool,
}

impl Inbox {
    /// An empty inbox at the start of a connection.
    pub fn new() -> Inbox {
        Inbox {
            decoder: ServerDecoder::new(),
            bytes: Vec::new(),
            needed: 0,
            failed: false,
        }
    }

    /// The error that ended the connection, once [`Job::Bad`] was returned.
    pub fn error(&self) -> Option<ProtoError> {
        self.decoder.error()
    }

    /// How many bytes to ask of the next read: what the frame being received
    /// still lacks, at least [`MIN_READ`] and at most [`READ_SIZE`] (so an
    /// idle connection's read buffer stays small).
    pub fn read_len(&self) -> usize {
        self.needed
            .saturating_sub(self.bytes.len())
            .clamp(MIN_READ, READ_SIZE)
    }

    /// Adds bytes a read returned.
    pub fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
    }

    /// The next job, or `None` when more bytes are needed (or the connection
    /// already failed: a [`Job::Bad`] is the last job).
    pub fn next_job(&mut self) -> Option<Job> {
        if self.failed {
            return None;
        }
        let (job, consumed) = match self.decoder.decode(&self.bytes) {
            Ok(Parsed::Incomplete { needed }) => {
                self.needed = needed;
                return None;
            }
            Ok(Parsed::Complete { frame, consumed }) => match frame {
                ServerFrame::Hello(hello) => (
                    Job::Hello {
                        granted: grant(hello.priority),
                    },
                    consumed,
                ),
                ServerFrame::Request(request) => (
                    Job::Request {
                        id: request.id,
                        dim: request.dim(),
                        payload: request.matrix.as_le_bytes().to_vec(),
                    },
                    consumed,
                ),
            },
            Err(error) => {
                self.failed = true;
                self.bytes = Vec::new();
                return Some(Job::Bad {
                    id: error.request_id(),
                    status: error.status(),
                });
            }
        };
        self.bytes.drain(..consumed.min(self.bytes.len()));
        if self.bytes.is_empty() && self.bytes.capacity() > MIN_READ {
            // Between frames, an idle connection keeps no large buffer.
            self.bytes = Vec::new();
        }
        Some(job)
    }
}

/// The handle component's scratch: the product of the last request.
#[derive(Debug, Default)]
pub struct Handler {
    product: Vec<u32>,
}

impl Handler {
    /// A handler with no scratch yet.
    pub fn new() -> Handler {
        Handler {
            product: Vec::new(),
        }
    }

    /// Handles one job: the HelloAck, the squared matrix, or the error
    /// Response. `None` only if encoding failed (it cannot: every length is
    /// computed from a checked `Dim`); the caller then closes the connection.
    pub fn handle(&mut self, job: Job) -> Option<Reply> {
        match job {
            Job::Hello { granted } => {
                let mut bytes = vec![0; hello_ack_len()];
                encode_hello_ack(granted, &mut bytes).ok()?;
                Some(Reply { bytes, last: false })
            }
            Job::Request { id, dim, payload } => {
                let m = MatrixView::from_le_bytes(dim, &payload)?;
                self.product.resize(dim.elements(), 0);
                let c = &mut self.product[..dim.elements()];
                square_into(dim, &m, c).ok()?;
                let mut bytes = vec![0; response_ok_len(dim)];
                encode_response_ok(id, dim, &*c, &mut bytes).ok()?;
                Some(Reply { bytes, last: false })
            }
            Job::Bad { id, status } => {
                let mut bytes = vec![0; response_error_len()];
                encode_response_error(id, status, &mut bytes).ok()?;
                Some(Reply { bytes, last: true })
            }
        }
    }
}
