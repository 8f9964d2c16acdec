//! Errors of the wire format: a frame that cannot be accepted, and a frame that
//! cannot be written.

use core::fmt;

use crate::frame::{Dim, ErrorStatus, FrameKind, MAX_DIM};

/// A frame the decoder cannot accept.
///
/// What happens next is fixed by the protocol: a server answers with one error
/// Response, built from [`ProtoError::request_id`] and [`ProtoError::status`],
/// and closes the connection; a client closes the connection. The stateful
/// decoders keep returning the same error, so no later byte is ever taken as a
/// frame.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ProtoError {
    /// The first four bytes are no magic of this protocol. Status 1.
    BadMagic {
        /// The four bytes found where a magic belongs.
        found: [u8; 4],
    },
    /// A valid magic where that frame may not come: a Hello after the first
    /// frame, a HelloAck after the first answer, or a frame sent the wrong way
    /// (a Request to a client, a Response to a server). Status 1.
    UnexpectedFrame {
        /// The frame that arrived.
        kind: FrameKind,
    },
    /// A Request (or ok Response) whose dim is outside `1..=64`. Status 2.
    BadDim {
        /// The frame's id.
        id: u64,
        /// The dim found.
        dim: u16,
    },
    /// An error Response whose dim is not 0 (error Responses carry no payload,
    /// so the length of the frame would be ambiguous). Status 2.
    ErrorWithDim {
        /// The frame's id.
        id: u64,
        /// The error status the Response carried.
        status: ErrorStatus,
        /// The non-zero dim found.
        dim: u16,
    },
    /// A Request whose op is not 1 (square). Status 3.
    BadOp {
        /// The frame's id.
        id: u64,
        /// The op found.
        op: u8,
    },
    /// A Request whose flags are not 0. Status 3.
    BadFlags {
        /// The frame's id.
        id: u64,
        /// The flags found.
        flags: u8,
    },
    /// Reserved bytes that are not 0 (Hello, HelloAck or Response). Status 3.
    BadReserved {
        /// The frame that carried them.
        kind: FrameKind,
        /// The frame's id; 0 for Hello and HelloAck, which have none.
        id: u64,
    },
    /// A Response status byte that protocol version 1 does not define (above 4).
    /// Status 3.
    BadStatus {
        /// The frame's id.
        id: u64,
        /// The status byte found.
        status: u8,
    },
}

impl ProtoError {
    /// The status an error Response to this frame carries.
    pub const fn status(&self) -> ErrorStatus {
        match self {
            ProtoError::BadMagic { .. } | ProtoError::UnexpectedFrame { .. } => {
                ErrorStatus::BadMagic
            }
            ProtoError::BadDim { .. } | ProtoError::ErrorWithDim { .. } => ErrorStatus::BadDim,
            ProtoError::BadOp { .. }
            | ProtoError::BadFlags { .. }
            | ProtoError::BadReserved { .. }
            | ProtoError::BadStatus { .. } => ErrorStatus::BadOpOrFlags,
        }
    }

    /// The id an error Response to this frame echoes: the frame's id when it
    /// could be read, 0 otherwise (a bad magic, or a frame that has no id).
    pub const fn request_id(&self) -> u64 {
        match *self {
            ProtoError::BadMagic { .. } | ProtoError::UnexpectedFrame { .. } => 0,
            ProtoError::BadDim { id, .. }
            | ProtoError::ErrorWithDim { id, .. }
            | ProtoError::BadOp { id, .. }
            | ProtoError::BadFlags { id, .. }
            | ProtoError::BadReserved { id, .. }
            | ProtoError::BadStatus { id, .. } => id,
        }
    }
}

/// Writes up to four bytes as text where printable, as `\xNN` otherwise.
struct Bytes<'a>(&'a [u8]);

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            if b.is_ascii_graphic() {
                write!(f, "{}", char::from(b))?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ProtoError::BadMagic { found } => write!(
                f,
                "bad magic \"{}\": every frame starts with SSHI, SSHA, SSRQ or SSRS; \
                 check that the peer speaks matrix protocol version 1 and that the \
                 previous frame's length was right",
                Bytes(&found)
            ),
            ProtoError::UnexpectedFrame { kind } => {
                let rule = match kind {
                    FrameKind::Hello => "a Hello is only allowed as the first frame a client sends",
                    FrameKind::HelloAck => {
                        "a HelloAck is only allowed as the first frame a server sends"
                    }
                    FrameKind::Request => {
                        "a Request goes from client to server; a client never receives one"
                    }
                    FrameKind::Response => {
                        "a Response goes from server to client; a server never receives one"
                    }
                };
                write!(f, "unexpected {kind} frame: {rule}")
            }
            ProtoError::BadDim { id, dim } => write!(
                f,
                "request {id}: dim {dim} is out of range; use 1 to {MAX_DIM} \
                 (the paper uses 15)"
            ),
            ProtoError::ErrorWithDim { id, status, dim } => write!(
                f,
                "response {id}: an error response ({status}) has dim {dim}; \
                 error responses carry dim 0 and no payload"
            ),
            ProtoError::BadOp { id, op } => write!(
                f,
                "request {id}: op {op} is unknown; protocol version 1 has only op 1 \
                 (square the matrix)"
            ),
            ProtoError::BadFlags { id, flags } => write!(
                f,
                "request {id}: flags are {flags:#04x}; protocol version 1 defines no \
                 flags, send 0"
            ),
            ProtoError::BadReserved { kind, id } => match kind {
                FrameKind::Hello | FrameKind::HelloAck => {
                    write!(f, "{kind}: reserved bytes are not zero; send them as 0")
                }
                FrameKind::Request | FrameKind::Response => write!(
                    f,
                    "{kind} {id}: reserved bytes are not zero; send them as 0"
                ),
            },
            ProtoError::BadStatus { id, status } => write!(
                f,
                "response {id}: status {status} is unknown; protocol version 1 uses \
                 0 (ok) to 4 (overloaded)"
            ),
        }
    }
}

impl core::error::Error for ProtoError {}

/// A frame that cannot be written.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum EncodeError {
    /// The output buffer is shorter than the frame.
    BufferTooSmall {
        /// The frame's length.
        needed: usize,
        /// The buffer's length.
        available: usize,
    },
    /// The matrix does not have `dim · dim` elements.
    WrongElementCount {
        /// The dimension given.
        dim: Dim,
        /// The number of elements the matrix has.
        found: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EncodeError::BufferTooSmall { needed, available } => write!(
                f,
                "the frame needs {needed} bytes but the buffer has {available}; \
                 size it with the *_len functions (MAX_FRAME_LEN always suffices)"
            ),
            EncodeError::WrongElementCount { dim, found } => write!(
                f,
                "a {dim:?} matrix has {} elements but {found} were given; \
                 pass dim·dim elements in row-major order",
                dim.elements()
            ),
        }
    }
}

impl core::error::Error for EncodeError {}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;

    #[test]
    fn status_and_id_per_error() {
        let cases = [
            (ProtoError::BadMagic { found: *b"GET " }, 1, 0),
            (
                ProtoError::UnexpectedFrame {
                    kind: FrameKind::Hello,
                },
                1,
                0,
            ),
            (ProtoError::BadDim { id: 7, dim: 65 }, 2, 7),
            (
                ProtoError::ErrorWithDim {
                    id: 8,
                    status: ErrorStatus::Overloaded,
                    dim: 3,
                },
                2,
                8,
            ),
            (ProtoError::BadOp { id: 9, op: 2 }, 3, 9),
            (ProtoError::BadFlags { id: 10, flags: 1 }, 3, 10),
            (
                ProtoError::BadReserved {
                    kind: FrameKind::Hello,
                    id: 0,
                },
                3,
                0,
            ),
            (ProtoError::BadStatus { id: 11, status: 9 }, 3, 11),
        ];
        for (error, status, id) in cases {
            assert_eq!(error.status().code(), status, "{error}");
            assert_eq!(error.request_id(), id, "{error}");
        }
    }

    #[test]
    fn display_names_the_fix() {
        let text = ProtoError::BadMagic { found: *b"G\0T " }.to_string();
        assert!(text.contains("\"G\\x00T\\x20\""), "{text}");
        assert!(text.contains("SSRQ"), "{text}");
        let text = ProtoError::BadDim { id: 3, dim: 0 }.to_string();
        assert!(text.contains("use 1 to 64"), "{text}");
        let text = ProtoError::UnexpectedFrame {
            kind: FrameKind::Hello,
        }
        .to_string();
        assert!(text.contains("first frame"), "{text}");
        let text = EncodeError::BufferTooSmall {
            needed: 16,
            available: 3,
        }
        .to_string();
        assert!(text.contains("MAX_FRAME_LEN"), "{text}");
    }
}
