//! Reading frames from a buffer that a stream fills a piece at a time.
//!
//! # Parsing
//!
//! Every `parse_*` function looks at the bytes received so far, from the start of
//! the next frame, and answers one of three things:
//!
//! - [`Parsed::Complete`]: a frame, borrowed from `buf` (the payload is not
//!   copied), and how many bytes it took; drop those and parse again;
//! - [`Parsed::Incomplete`]: not enough bytes yet; `needed` is the smallest
//!   total length of `buf` at which parsing again can get further. It is always
//!   more than `buf.len()` and never more than [`MAX_FRAME_LEN`](crate::MAX_FRAME_LEN);
//! - [`ProtoError`]: the frame is bad; no later byte of the stream means anything.
//!
//! Fields are checked as soon as they have arrived, in wire order: the magic
//! once 4 bytes are there, the rest of the header (dim, op, flags, reserved) once
//! 16 (or 8) bytes are there, and only then is the payload length computed, from
//! the checked [`Dim`]. So a request with dim 60000 fails after 16 bytes and is
//! never asked to deliver 14 GB of payload, and the result does not depend on
//! how the stream was cut into reads.
//!
//! # Decoders
//!
//! [`ServerDecoder`] and [`ClientDecoder`] add the one piece of connection state
//! the protocol has: whether the Hello exchange may still happen.
//!
//! ```text
//!            Hello or Request           Request
//!  ┌───────┐ ───────────────► ┌───────┐ ◄─────┐
//!  │ First │                  │ Later │ ──────┘
//!  └───────┘ ─┐               └───────┘ ─┐
//!             │ bad frame                │ bad frame
//!             ▼                          ▼
//!          ┌────────────────────────────────┐
//!          │ Failed(error): every later call│
//!          │ returns the same error         │
//!          └────────────────────────────────┘
//! ```
//!
//! The client side is the same with HelloAck and Response (and a HelloAck is
//! accepted only by a decoder made with [`ClientDecoder::after_hello`]).

use crate::error::ProtoError;
use crate::frame::{
    ClientFrame, Dim, ErrorStatus, FrameKind, Header, Hello, HelloAck, HelloShape, Request,
    Response, ServerFrame, HEADER_LEN, HELLO_LEN, MAGIC_LEN, OP_SQUARE, STATUS_OK,
};
use crate::payload::MatrixView;

/// The outcome of parsing a buffer that may hold only part of a frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Parsed<T> {
    /// A whole frame.
    Complete {
        /// The frame, borrowing the buffer.
        frame: T,
        /// The frame's length: drop this many bytes before parsing the next.
        consumed: usize,
    },
    /// The buffer holds only the start of a frame (or nothing).
    Incomplete {
        /// Parse again once the buffer holds at least this many bytes in total
        /// (not: this many more). Always more than the length given.
        needed: usize,
    },
}

impl<T> Parsed<T> {
    /// Converts the frame of a `Complete`, keeping `consumed` and `needed`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Parsed<U> {
        match self {
            Parsed::Complete { frame, consumed } => Parsed::Complete {
                frame: f(frame),
                consumed,
            },
            Parsed::Incomplete { needed } => Parsed::Incomplete { needed },
        }
    }

    /// Whether a whole frame was parsed.
    pub const fn is_complete(&self) -> bool {
        matches!(self, Parsed::Complete { .. })
    }
}

type ParseResult<T> = Result<Parsed<T>, ProtoError>;

const fn incomplete<T>(needed: usize) -> ParseResult<T> {
    Ok(Parsed::Incomplete { needed })
}

/// The kind named by the first four bytes; `Ok(None)` while fewer have arrived.
fn frame_kind(buf: &[u8]) -> Result<Option<FrameKind>, ProtoError> {
    match buf.first_chunk::<MAGIC_LEN>() {
        None => Ok(None),
        Some(&found) => match FrameKind::from_magic(found) {
            Some(kind) => Ok(Some(kind)),
            None => Err(ProtoError::BadMagic { found }),
        },
    }
}

/// Parses the 8-byte Hello or HelloAck shape whose magic has been checked.
fn hello_shape(buf: &[u8], kind: FrameKind) -> ParseResult<u8> {
    let Some(bytes) = buf.first_chunk::<HELLO_LEN>() else {
        return incomplete(HELLO_LEN);
    };
    let shape = HelloShape::from_bytes(bytes);
    if shape.reserved != [0; 3] {
        return Err(ProtoError::BadReserved { kind, id: 0 });
    }
    Ok(Parsed::Complete {
        frame: shape.priority,
        consumed: HELLO_LEN,
    })
}

/// The payload of a frame whose header (at the start of `buf`) gave `dim`.
fn payload(buf: &[u8], dim: Dim) -> Parsed<MatrixView<'_>> {
    // `dim` is checked, so `total` is at most MAX_FRAME_LEN.
    let total = HEADER_LEN + dim.payload_len();
    match buf.get(HEADER_LEN..total) {
        Some(bytes) => Parsed::Complete {
            frame: MatrixView::from_exact(dim, bytes),
            consumed: total,
        },
        None => Parsed::Incomplete { needed: total },
    }
}

/// Parses a Request whose magic has been checked.
fn request_body(buf: &[u8]) -> ParseResult<Request<'_>> {
    let Some(bytes) = buf.first_chunk::<HEADER_LEN>() else {
        return incomplete(HEADER_LEN);
    };
    let header = Header::from_bytes(bytes);
    let id = header.id;
    let dim = Dim::new(header.dim).map_err(|_| ProtoError::BadDim {
        id,
        dim: header.dim,
    })?;
    if header.byte14 != OP_SQUARE {
        return Err(ProtoError::BadOp {
            id,
            op: header.byte14,
        });
    }
    if header.byte15 != 0 {
        return Err(ProtoError::BadFlags {
            id,
            flags: header.byte15,
        });
    }
    Ok(payload(buf, dim).map(|matrix| Request { id, matrix }))
}

/// Parses a Response whose magic has been checked.
fn response_body(buf: &[u8]) -> ParseResult<Response<'_>> {
    let Some(bytes) = buf.first_chunk::<HEADER_LEN>() else {
        return incomplete(HEADER_LEN);
    };
    let header = Header::from_bytes(bytes);
    let id = header.id;
    let bad_reserved = ProtoError::BadReserved {
        kind: FrameKind::Response,
        id,
    };
    if header.byte14 == STATUS_OK {
        let dim = Dim::new(header.dim).map_err(|_| ProtoError::BadDim {
            id,
            dim: header.dim,
        })?;
        if header.byte15 != 0 {
            return Err(bad_reserved);
        }
        return Ok(payload(buf, dim).map(|matrix| Response {
            id,
            result: Ok(matrix),
        }));
    }
    let Some(status) = ErrorStatus::from_code(header.byte14) else {
        return Err(ProtoError::BadStatus {
            id,
            status: header.byte14,
        });
    };
    if header.dim != 0 {
        return Err(ProtoError::ErrorWithDim {
            id,
            status,
            dim: header.dim,
        });
    }
    if header.byte15 != 0 {
        return Err(bad_reserved);
    }
    Ok(Parsed::Complete {
        frame: Response {
            id,
            result: Err(status),
        },
        consumed: HEADER_LEN,
    })
}

/// Checks that `buf` starts with the magic of `want`.
fn expect(buf: &[u8], want: FrameKind) -> Result<bool, ProtoError> {
    match frame_kind(buf)? {
        None => Ok(false),
        Some(kind) if kind == want => Ok(true),
        Some(kind) => Err(ProtoError::UnexpectedFrame { kind }),
    }
}

/// Parses one Hello at the start of `buf`.
///
/// # Errors
/// [`ProtoError`] if the frame is not a valid Hello.
pub fn parse_hello(buf: &[u8]) -> ParseResult<Hello> {
    if !expect(buf, FrameKind::Hello)? {
        return incomplete(MAGIC_LEN);
    }
    Ok(hello_shape(buf, FrameKind::Hello)?.map(|priority| Hello { priority }))
}

/// Parses one HelloAck at the start of `buf`.
///
/// # Errors
/// [`ProtoError`] if the frame is not a valid HelloAck.
pub fn parse_hello_ack(buf: &[u8]) -> ParseResult<HelloAck> {
    if !expect(buf, FrameKind::HelloAck)? {
        return incomplete(MAGIC_LEN);
    }
    Ok(hello_shape(buf, FrameKind::HelloAck)?.map(|priority| HelloAck { priority }))
}

/// Parses one Request at the start of `buf`.
///
/// # Errors
/// [`ProtoError`] if the frame is not a valid Request.
pub fn parse_request(buf: &[u8]) -> ParseResult<Request<'_>> {
    if !expect(buf, FrameKind::Request)? {
        return incomplete(MAGIC_LEN);
    }
    request_body(buf)
}

/// Parses one Response at the start of `buf`.
///
/// # Errors
/// [`ProtoError`] if the frame is not a valid Response.
pub fn parse_response(buf: &[u8]) -> ParseResult<Response<'_>> {
    if !expect(buf, FrameKind::Response)? {
        return incomplete(MAGIC_LEN);
    }
    response_body(buf)
}

/// Parses the next frame a server receives: a Request, or a Hello when
/// `hello_allowed` (that is, at the start of the connection).
///
/// # Errors
/// [`ProtoError`] for a bad frame; a Hello when `hello_allowed` is false is
/// [`ProtoError::UnexpectedFrame`].
pub fn parse_server_frame(buf: &[u8], hello_allowed: bool) -> ParseResult<ServerFrame<'_>> {
    match frame_kind(buf)? {
        None => incomplete(MAGIC_LEN),
        Some(FrameKind::Request) => Ok(request_body(buf)?.map(ServerFrame::Request)),
        Some(FrameKind::Hello) if hello_allowed => Ok(hello_shape(buf, FrameKind::Hello)?
            .map(|priority| ServerFrame::Hello(Hello { priority }))),
        Some(kind) => Err(ProtoError::UnexpectedFrame { kind }),
    }
}

/// Parses the next frame a client receives: a Response, or a HelloAck when
/// `ack_allowed` (the client sent a Hello and nothing has arrived yet).
///
/// # Errors
/// [`ProtoError`] for a bad frame; a HelloAck when `ack_allowed` is false is
/// [`ProtoError::UnexpectedFrame`].
pub fn parse_client_frame(buf: &[u8], ack_allowed: bool) -> ParseResult<ClientFrame<'_>> {
    match frame_kind(buf)? {
        None => incomplete(MAGIC_LEN),
        Some(FrameKind::Response) => Ok(response_body(buf)?.map(ClientFrame::Response)),
        Some(FrameKind::HelloAck) if ack_allowed => Ok(hello_shape(buf, FrameKind::HelloAck)?
            .map(|priority| ClientFrame::HelloAck(HelloAck { priority }))),
        Some(kind) => Err(ProtoError::UnexpectedFrame { kind }),
    }
}

/// Where a connection is (see the state diagram in the [module docs](self)).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Nothing decoded yet: the Hello exchange may happen.
    First,
    /// At least one frame decoded.
    Later,
    /// A bad frame was seen; the connection is to be closed.
    Failed(ProtoError),
}

impl Phase {
    /// Moves on after a parse.
    fn advance<T>(&mut self, result: &ParseResult<T>) {
        match result {
            Ok(Parsed::Complete { .. }) => *self = Phase::Later,
            Ok(Parsed::Incomplete { .. }) => {}
            Err(error) => *self = Phase::Failed(*error),
        }
    }
}

/// The server end of a connection: Hello (optional, first), then Requests.
///
/// # Example
/// ```
/// use ss_proto::{Parsed, ServerDecoder, ServerFrame};
///
/// let mut stream = Vec::new();
/// stream.extend_from_slice(b"SSHI\x02\0\0\0");
/// stream.extend_from_slice(b"SSRQ\x07\0\0\0\0\0\0\0\x01\0\x01\0\x03\0\0\0");
///
/// let mut decoder = ServerDecoder::new();
/// let mut buf: &[u8] = &stream;
/// let mut frames = Vec::new();
/// while let Parsed::Complete { frame, consumed } = decoder.decode(buf)? {
///     frames.push(frame);
///     buf = &buf[consumed..];
/// }
/// assert!(matches!(frames[0], ServerFrame::Hello(h) if h.priority == 2));
/// assert!(matches!(frames[1], ServerFrame::Request(r) if r.id == 7 && r.matrix.get(0) == 3));
/// # Ok::<(), ss_proto::ProtoError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ServerDecoder {
    phase: Phase,
}

impl ServerDecoder {
    /// A decoder for a new connection.
    pub const fn new() -> ServerDecoder {
        ServerDecoder {
            phase: Phase::First,
        }
    }

    /// Parses the next frame from `buf`, which starts where the last complete
    /// frame ended.
    ///
    /// # Errors
    /// [`ProtoError`] for a bad frame, and the same error on every call after.
    pub fn decode<'a>(&mut self, buf: &'a [u8]) -> ParseResult<ServerFrame<'a>> {
        let hello_allowed = match self.phase {
            Phase::Failed(error) => return Err(error),
            Phase::First => true,
            Phase::Later => false,
        };
        let result = parse_server_frame(buf, hello_allowed);
        self.phase.advance(&result);
        result
    }

    /// Whether the next frame may be a Hello.
    pub const fn hello_allowed(&self) -> bool {
        matches!(self.phase, Phase::First)
    }

    /// The error that ended the connection, if one did.
    pub const fn error(&self) -> Option<ProtoError> {
        match self.phase {
            Phase::Failed(error) => Some(error),
            Phase::First | Phase::Later => None,
        }
    }
}

impl Default for ServerDecoder {
    fn default() -> ServerDecoder {
        ServerDecoder::new()
    }
}

/// The client end of a connection: HelloAck (only if the client sent a Hello,
/// first), then Responses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ClientDecoder {
    phase: Phase,
    sent_hello: bool,
}

impl ClientDecoder {
    /// A decoder for a connection on which the client sent no Hello: a HelloAck
    /// is an error.
    pub const fn new() -> ClientDecoder {
        ClientDecoder {
            phase: Phase::First,
            sent_hello: false,
        }
    }

    /// A decoder for a connection that the client opened with a Hello: the first
    /// frame may be the HelloAck (or an error Response, if the server refused
    /// the Hello).
    pub const fn after_hello() -> ClientDecoder {
        ClientDecoder {
            phase: Phase::First,
            sent_hello: true,
        }
    }

    /// Parses the next frame from `buf`, which starts where the last complete
    /// frame ended.
    ///
    /// # Errors
    /// [`ProtoError`] for a bad frame, and the same error on every call after.
    pub fn decode<'a>(&mut self, buf: &'a [u8]) -> ParseResult<ClientFrame<'a>> {
        let first = match self.phase {
            Phase::Failed(error) => return Err(error),
            Phase::First => true,
            Phase::Later => false,
        };
        let result = parse_client_frame(buf, first && self.sent_hello);
        self.phase.advance(&result);
        result
    }

    /// Whether the next frame may be a HelloAck.
    pub const fn ack_allowed(&self) -> bool {
        self.sent_hello && matches!(self.phase, Phase::First)
    }

    /// The error that ended the connection, if one did.
    pub const fn error(&self) -> Option<ProtoError> {
        match self.phase {
            Phase::Failed(error) => Some(error),
            Phase::First | Phase::Later => None,
        }
    }
}

impl Default for ClientDecoder {
    fn default() -> ClientDecoder {
        ClientDecoder::new()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::encode::{
        encode_hello, encode_hello_ack, encode_request, encode_response_error, encode_response_ok,
    };
    use crate::frame::{MAX_FRAME_LEN, REQUEST_MAGIC, RESPONSE_MAGIC};

    /// A raw 16-byte header, for frames no encoder will write.
    fn raw(magic: [u8; 4], id: u64, dim: u16, byte14: u8, byte15: u8) -> Vec<u8> {
        Header {
            magic,
            id,
            dim,
            byte14,
            byte15,
        }
        .to_bytes()
        .to_vec()
    }

    fn request(id: u64, m: &[u32], n: u16) -> Vec<u8> {
        let mut buf = std::vec![0; MAX_FRAME_LEN];
        let len = encode_request(id, Dim::new(n).unwrap(), m, &mut buf).unwrap();
        buf.truncate(len);
        buf
    }

    #[test]
    fn hello_frame() {
        let mut buf = [0; 8];
        encode_hello(6, &mut buf).unwrap();
        let parsed = parse_hello(&buf).unwrap();
        assert_eq!(
            parsed,
            Parsed::Complete {
                frame: Hello { priority: 6 },
                consumed: 8
            }
        );
        assert_eq!(
            parse_server_frame(&buf, true).unwrap(),
            Parsed::Complete {
                frame: ServerFrame::Hello(Hello { priority: 6 }),
                consumed: 8
            }
        );
    }

    #[test]
    fn hello_ack_frame() {
        let mut buf = [0; 8];
        encode_hello_ack(2, &mut buf).unwrap();
        assert_eq!(
            parse_hello_ack(&buf).unwrap(),
            Parsed::Complete {
                frame: HelloAck { priority: 2 },
                consumed: 8
            }
        );
        let mut decoder = ClientDecoder::after_hello();
        assert!(decoder.decode(&buf).unwrap().is_complete());
        assert!(!decoder.ack_allowed());
    }

    #[test]
    fn request_frame() {
        let buf = request(42, &[1, 2, 3, 4], 2);
        let Parsed::Complete { frame, consumed } = parse_request(&buf).unwrap() else {
            panic!("incomplete");
        };
        assert_eq!(consumed, 32);
        assert_eq!(frame.id, 42);
        assert_eq!(frame.dim(), Dim::new(2).unwrap());
        assert!(frame.matrix.iter().eq([1, 2, 3, 4]));
    }

    #[test]
    fn response_frames() {
        let mut buf = [0; 32];
        let len = encode_response_ok(3, Dim::new(2).unwrap(), &[7, 10, 15, 22], &mut buf).unwrap();
        let Parsed::Complete { frame, consumed } = parse_response(&buf[..len]).unwrap() else {
            panic!("incomplete");
        };
        assert_eq!(consumed, 32);
        assert_eq!(frame.id, 3);
        assert!(frame.result.unwrap().iter().eq([7, 10, 15, 22]));

        for status in ErrorStatus::ALL {
            let len = encode_response_error(9, status, &mut buf).unwrap();
            assert_eq!(
                parse_response(&buf[..len]).unwrap(),
                Parsed::Complete {
                    frame: Response {
                        id: 9,
                        result: Err(status)
                    },
                    consumed: 16
                }
            );
        }
    }

    #[test]
    fn incomplete_asks_for_the_next_step() {
        let buf = request(1, &[5; 9], 3);
        for len in 0..buf.len() {
            let needed = match len {
                0..4 => 4,
                4..16 => 16,
                _ => 16 + 36,
            };
            assert_eq!(
                parse_request(&buf[..len]),
                Ok(Parsed::Incomplete { needed }),
                "len {len}"
            );
        }
    }

    /// Status 1: bad magic.
    #[test]
    fn bad_magic() {
        let error = parse_server_frame(b"GET / HTTP/1.1\r\n", true).unwrap_err();
        assert_eq!(error, ProtoError::BadMagic { found: *b"GET " });
        assert_eq!(error.status(), ErrorStatus::BadMagic);
        assert_eq!(error.request_id(), 0);
        // Decided after four bytes, not sixteen.
        assert!(parse_server_frame(b"SSRX", true).is_err());
        assert_eq!(parse_server_frame(b"SSR", true), incomplete(4));
    }

    /// Status 1: a valid magic in the wrong place.
    #[test]
    fn unexpected_frames() {
        let mut hello = [0; 8];
        encode_hello(0, &mut hello).unwrap();
        let mut decoder = ServerDecoder::new();
        assert!(decoder.decode(&hello).unwrap().is_complete());
        let error = decoder.decode(&hello).unwrap_err();
        assert_eq!(
            error,
            ProtoError::UnexpectedFrame {
                kind: FrameKind::Hello
            }
        );
        assert_eq!(error.status().code(), 1);
        // Sticky: even a good request is refused now.
        assert_eq!(decoder.decode(&request(1, &[1], 1)), Err(error));
        assert_eq!(decoder.error(), Some(error));

        let response = raw(RESPONSE_MAGIC, 1, 0, 4, 0);
        assert_eq!(
            parse_server_frame(&response, true),
            Err(ProtoError::UnexpectedFrame {
                kind: FrameKind::Response
            })
        );
        let mut ack = [0; 8];
        encode_hello_ack(0, &mut ack).unwrap();
        assert_eq!(
            ClientDecoder::new().decode(&ack),
            Err(ProtoError::UnexpectedFrame {
                kind: FrameKind::HelloAck
            })
        );
        assert_eq!(
            parse_client_frame(&request(1, &[1], 1), true),
            Err(ProtoError::UnexpectedFrame {
                kind: FrameKind::Request
            })
        );
    }

    /// Status 2: bad dim, decided from the header alone.
    #[test]
    fn bad_dim() {
        for dim in [0, 65, 1000, u16::MAX] {
            let header = raw(REQUEST_MAGIC, 77, dim, OP_SQUARE, 0);
            let error = parse_request(&header).unwrap_err();
            assert_eq!(error, ProtoError::BadDim { id: 77, dim });
            assert_eq!(error.status().code(), 2);
            assert_eq!(error.request_id(), 77);
            // The header is all it takes: no payload is awaited.
            assert_eq!(parse_request(&header[..15]), incomplete(16));
        }
        let ok_without_dim = raw(RESPONSE_MAGIC, 5, 0, STATUS_OK, 0);
        assert_eq!(
            parse_response(&ok_without_dim),
            Err(ProtoError::BadDim { id: 5, dim: 0 })
        );
        let error_with_dim = raw(RESPONSE_MAGIC, 5, 3, 4, 0);
        let error = parse_response(&error_with_dim).unwrap_err();
        assert_eq!(
            error,
            ProtoError::ErrorWithDim {
                id: 5,
                status: ErrorStatus::Overloaded,
                dim: 3
            }
        );
        assert_eq!(error.status().code(), 2);
    }

    /// Status 3: bad op, flags, reserved bytes or status byte.
    #[test]
    fn bad_op_flags_reserved() {
        let cases = [
            (
                raw(REQUEST_MAGIC, 8, 2, 0, 0),
                ProtoError::BadOp { id: 8, op: 0 },
            ),
            (
                raw(REQUEST_MAGIC, 8, 2, 2, 0),
                ProtoError::BadOp { id: 8, op: 2 },
            ),
            (
                raw(REQUEST_MAGIC, 8, 2, OP_SQUARE, 0x80),
                ProtoError::BadFlags { id: 8, flags: 0x80 },
            ),
            (
                b"SSHI\0\0\x01\0".to_vec(),
                ProtoError::BadReserved {
                    kind: FrameKind::Hello,
                    id: 0,
                },
            ),
        ];
        for (bytes, expected) in cases {
            let error = parse_server_frame(&bytes, true).unwrap_err();
            assert_eq!(error, expected);
            assert_eq!(error.status().code(), 3);
            assert_eq!(error.request_id(), expected.request_id());
        }
        let client_cases = [
            (
                raw(RESPONSE_MAGIC, 4, 1, STATUS_OK, 1),
                ProtoError::BadReserved {
                    kind: FrameKind::Response,
                    id: 4,
                },
            ),
            (
                raw(RESPONSE_MAGIC, 4, 0, 5, 0),
                ProtoError::BadStatus { id: 4, status: 5 },
            ),
            (
                b"SSHA\0\0\0\x09".to_vec(),
                ProtoError::BadReserved {
                    kind: FrameKind::HelloAck,
                    id: 0,
                },
            ),
        ];
        for (bytes, expected) in client_cases {
            let error = parse_client_frame(&bytes, true).unwrap_err();
            assert_eq!(error, expected);
            assert_eq!(error.status().code(), 3);
        }
    }

    /// Status 4 is the server's decision; the decoder just carries it.
    #[test]
    fn overloaded_round_trips() {
        let mut buf = [0; 16];
        encode_response_error(12, ErrorStatus::Overloaded, &mut buf).unwrap();
        let mut decoder = ClientDecoder::new();
        assert_eq!(
            decoder.decode(&buf),
            Ok(Parsed::Complete {
                frame: ClientFrame::Response(Response {
                    id: 12,
                    result: Err(ErrorStatus::Overloaded)
                }),
                consumed: 16
            })
        );
    }

    #[test]
    fn byte_by_byte_equals_at_once() {
        let mut stream = Vec::new();
        let mut hello = [0; 8];
        encode_hello(1, &mut hello).unwrap();
        stream.extend_from_slice(&hello);
        stream.extend(request(10, &[3; 4], 2));
        stream.extend(request(11, &[9], 1));

        let mut at_once = ServerDecoder::new();
        let mut rest: &[u8] = &stream;
        let mut whole = Vec::new();
        while let Parsed::Complete { frame, consumed } = at_once.decode(rest).unwrap() {
            whole.push(frame);
            rest = &rest[consumed..];
        }
        assert!(rest.is_empty());
        assert_eq!(whole.len(), 3);

        let mut by_byte = ServerDecoder::new();
        let mut start = 0;
        let mut frames = Vec::new();
        for end in 0..=stream.len() {
            match by_byte.decode(&stream[start..end]).unwrap() {
                Parsed::Complete { frame, consumed } => {
                    frames.push(frame);
                    start += consumed;
                }
                Parsed::Incomplete { needed } => assert!(needed > end - start),
            }
        }
        assert_eq!(frames, whole);
    }
}
