//! # SharedScheduler matrix protocol
//!
//! The wire protocol of the benchmark service (paper §4): a client sends a
//! matrix, the server squares it and sends the result back. Every server of the
//! project — the four Linux models, the peer runtimes, the servers on the RISC-V
//! kernel — and every client speak it through this one crate, so any client can
//! drive any server and the two sides can never disagree about a byte.
//! `shared/PROTOCOL.md` is the specification; [`frame`] restates the layouts.
//!
//! ## Design
//!
//! - **`no_std`, no allocation.** Encoders write into a buffer the caller owns;
//!   decoders borrow the caller's receive buffer and return views into it. The
//!   same code runs in a kernel and in a load generator.
//! - **Wire values are allegations until checked.** A length is only ever computed
//!   from a checked [`Dim`] (1 to 64), so no peer can make a server allocate, wait
//!   for or index by a length it made up. The header is checked before the payload
//!   is awaited: a bad dim fails after 16 bytes.
//! - **Partial reads are the normal case.** Parsing answers "a frame and how many
//!   bytes it took", "come back with *n* bytes" or "bad frame", and the answer for
//!   a stream does not depend on how the stream was cut into reads.
//! - **Every bad frame has its status.** A [`ProtoError`] says what was wrong and
//!   how to fix it, and gives the status byte and id of the error Response the
//!   server sends before it closes the connection.
//! - **No `unsafe`, no panics on input.** Fixed-size fields are read by
//!   destructuring arrays; slices are taken with `get`.
//!
//! ## Modules
//!
//! - [`frame`]: magics, lengths, [`Dim`], [`ErrorStatus`] and the decoded frames;
//! - [`payload`]: [`MatrixView`], a matrix borrowed from a buffer;
//! - [`encode`]: `encode_*` writers and the exact `*_len` of each frame;
//! - [`decode`]: `parse_*` functions, [`Parsed`], [`ServerDecoder`], [`ClientDecoder`];
//! - [`matrix`]: C = M × M (wrapping `u32`) and the check of an answer;
//! - [`error`]: [`ProtoError`] and [`EncodeError`].
//!
//! ## A server and a client
//!
//! ```
//! use ss_proto::{
//!     encode, matrix, ClientDecoder, ClientFrame, Dim, Parsed, ServerDecoder, ServerFrame,
//!     MAX_FRAME_LEN,
//! };
//!
//! // The client asks for priority 1 and sends one 2 × 2 matrix.
//! let sent = [1u32, 2, 3, 4];
//! let mut wire = [0u8; 64];
//! let mut len = encode::encode_hello(1, &mut wire)?;
//! len += encode::encode_request(7, Dim::new(2)?, &sent, &mut wire[len..])?;
//!
//! // The server receives the bytes in reads of any size; here, two.
//! let mut inbox = Vec::new();
//! let mut outbox = Vec::new();
//! let mut server = ServerDecoder::new();
//! let mut reply = [0u8; MAX_FRAME_LEN];
//! let mut product = [0u32; 64 * 64];
//! for read in [&wire[..5], &wire[5..len]] {
//!     inbox.extend_from_slice(read);
//!     loop {
//!         let (n, consumed) = match server.decode(&inbox) {
//!             Ok(Parsed::Incomplete { .. }) => break,
//!             Ok(Parsed::Complete { frame, consumed }) => match frame {
//!                 // The policy grants what was asked, capped at 7.
//!                 ServerFrame::Hello(hello) => {
//!                     (encode::encode_hello_ack(hello.priority.min(7), &mut reply)?, consumed)
//!                 }
//!                 ServerFrame::Request(request) => {
//!                     let dim = request.dim();
//!                     let c = &mut product[..dim.elements()];
//!                     matrix::square_into(dim, &request.matrix, c)?;
//!                     (encode::encode_response_ok(request.id, dim, &*c, &mut reply)?, consumed)
//!                 }
//!             },
//!             Err(bad) => {
//!                 // One error Response, then close the connection.
//!                 let n = encode::encode_response_error(bad.request_id(), bad.status(), &mut reply)?;
//!                 outbox.extend_from_slice(&reply[..n]);
//!                 break;
//!             }
//!         };
//!         outbox.extend_from_slice(&reply[..n]);
//!         inbox.drain(..consumed);
//!     }
//! }
//!
//! // The client checks every answer.
//! let mut client = ClientDecoder::after_hello();
//! let mut rest: &[u8] = &outbox;
//! while let Parsed::Complete { frame, consumed } = client.decode(rest)? {
//!     match frame {
//!         ClientFrame::HelloAck(ack) => assert_eq!(ack.priority, 1),
//!         ClientFrame::Response(response) => {
//!             matrix::verify_response(7, Dim::new(2)?, &sent, &response)?;
//!         }
//!     }
//!     rest = &rest[consumed..];
//! }
//! assert!(rest.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![no_std]
#![forbid(unsafe_code)]

pub mod decode;
pub mod encode;
pub mod error;
pub mod frame;
pub mod matrix;
pub mod payload;

pub use decode::{ClientDecoder, Parsed, ServerDecoder};
pub use error::{EncodeError, ProtoError};
pub use frame::{
    ClientFrame, Dim, ErrorStatus, FrameKind, Hello, HelloAck, InvalidDim, Request, Response,
    ServerFrame, MAX_DIM, MAX_FRAME_LEN,
};
pub use matrix::{MatrixSource, VerifyError};
pub use payload::MatrixView;
