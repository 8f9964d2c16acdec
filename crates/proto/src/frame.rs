//! Frame layouts, constants and the decoded frame types.
//!
//! Every integer on the wire is little-endian. There are four frames, told apart
//! by their first four bytes (the *magic*):
//!
//! ```text
//! Hello      (client → server, optional, first frame only)     8 bytes
//!   0..4  "SSHI"   4  priority u8   5..8  reserved, zero
//! HelloAck   (server → client, answers Hello)                   8 bytes
//!   0..4  "SSHA"   4  granted  u8   5..8  reserved, zero
//! Request    (client → server)                          16 + 4·n·n bytes
//!   0..4  "SSRQ"   4..12 id u64   12..14 dim u16   14 op u8   15 flags u8
//!   16..  n·n × u32, row-major
//! Response   (server → client)              16 (+ 4·n·n when status 0) bytes
//!   0..4  "SSRS"   4..12 id u64   12..14 dim u16   14 status u8   15 reserved u8
//!   16..  n·n × u32 when status is 0; nothing otherwise (and dim is 0)
//! ```
//!
//! Request and Response share one 16-byte header shape ([`HEADER_LEN`]); Hello and
//! HelloAck share one 8-byte shape ([`HELLO_LEN`]). The largest frame of all is
//! [`MAX_FRAME_LEN`] bytes, so a receive buffer that big always suffices.
//!
//! A dimension read from the wire is an *allegation*: it only becomes a [`Dim`]
//! after it has been checked to lie in `1..=64`, and only a `Dim` is ever used to
//! compute a payload length.

use core::fmt;

use crate::payload::MatrixView;

/// Magic of a [`Hello`]: `b"SSHI"`.
pub const HELLO_MAGIC: [u8; 4] = *b"SSHI";
/// Magic of a [`HelloAck`]: `b"SSHA"`.
pub const HELLO_ACK_MAGIC: [u8; 4] = *b"SSHA";
/// Magic of a [`Request`]: `b"SSRQ"`.
pub const REQUEST_MAGIC: [u8; 4] = *b"SSRQ";
/// Magic of a [`Response`]: `b"SSRS"`.
pub const RESPONSE_MAGIC: [u8; 4] = *b"SSRS";

/// Length of every magic; a decoder looks at nothing else until it has this many bytes.
pub const MAGIC_LEN: usize = 4;
/// Length of a Hello and of a HelloAck frame.
pub const HELLO_LEN: usize = 8;
/// Length of the Request and of the Response header (everything but the payload).
pub const HEADER_LEN: usize = 16;
/// The largest matrix dimension the protocol allows.
pub const MAX_DIM: u16 = 64;
/// The only operation of protocol version 1: square the matrix (C = M × M).
pub const OP_SQUARE: u8 = 1;
/// The Response status of a successful answer.
pub const STATUS_OK: u8 = 0;
/// Payload length of the largest matrix: 64 · 64 · 4 bytes.
pub const MAX_PAYLOAD_LEN: usize = Dim::MAX.payload_len();
/// Length of the largest frame (a 64 × 64 Request or Response).
pub const MAX_FRAME_LEN: usize = HEADER_LEN + MAX_PAYLOAD_LEN;

/// Which of the four frames a magic names.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum FrameKind {
    /// `SSHI`, client → server.
    Hello,
    /// `SSHA`, server → client.
    HelloAck,
    /// `SSRQ`, client → server.
    Request,
    /// `SSRS`, server → client.
    Response,
}

impl FrameKind {
    /// Every kind.
    pub const ALL: [FrameKind; 4] = [
        FrameKind::Hello,
        FrameKind::HelloAck,
        FrameKind::Request,
        FrameKind::Response,
    ];

    /// The four bytes that open a frame of this kind.
    pub const fn magic(self) -> [u8; 4] {
        match self {
            FrameKind::Hello => HELLO_MAGIC,
            FrameKind::HelloAck => HELLO_ACK_MAGIC,
            FrameKind::Request => REQUEST_MAGIC,
            FrameKind::Response => RESPONSE_MAGIC,
        }
    }

    /// The kind whose magic is `magic`, if any.
    pub const fn from_magic(magic: [u8; 4]) -> Option<FrameKind> {
        match &magic {
            b"SSHI" => Some(FrameKind::Hello),
            b"SSHA" => Some(FrameKind::HelloAck),
            b"SSRQ" => Some(FrameKind::Request),
            b"SSRS" => Some(FrameKind::Response),
            _ => None,
        }
    }

    /// The frame's name as the protocol document spells it.
    pub const fn name(self) -> &'static str {
        match self {
            FrameKind::Hello => "Hello",
            FrameKind::HelloAck => "HelloAck",
            FrameKind::Request => "Request",
            FrameKind::Response => "Response",
        }
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A checked matrix dimension *n*, `1 ≤ n ≤ 64`.
///
/// Holding a `Dim` is the proof that `n · n · 4` is a small, sane payload length
/// (at most [`MAX_PAYLOAD_LEN`]); nothing in this crate computes a length from an
/// unchecked wire value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct Dim(u8);

impl Dim {
    /// The smallest dimension, 1.
    pub const MIN: Dim = Dim(1);
    /// The largest dimension, [`MAX_DIM`] (64).
    pub const MAX: Dim = Dim(MAX_DIM as u8);
    /// The dimension the paper's benchmark uses, 15.
    pub const PAPER: Dim = Dim(15);

    /// Checks `n`.
    ///
    /// # Errors
    /// [`InvalidDim`] unless `1 <= n <= 64`.
    pub const fn new(n: u16) -> Result<Dim, InvalidDim> {
        if n >= 1 && n <= MAX_DIM {
            // The check above keeps `n` below 256.
            Ok(Dim(n as u8))
        } else {
            Err(InvalidDim(n))
        }
    }

    /// *n* as the wire spells it.
    #[inline]
    pub const fn get(self) -> u16 {
        self.0 as u16
    }

    /// *n*, for indexing.
    #[inline]
    pub const fn n(self) -> usize {
        self.0 as usize
    }

    /// Number of elements, *n*·*n*.
    #[inline]
    pub const fn elements(self) -> usize {
        self.n() * self.n()
    }

    /// Payload length in bytes, 4·*n*·*n*.
    #[inline]
    pub const fn payload_len(self) -> usize {
        self.elements() * 4
    }
}

impl fmt::Debug for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.0, self.0)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl TryFrom<u16> for Dim {
    type Error = InvalidDim;

    fn try_from(n: u16) -> Result<Dim, InvalidDim> {
        Dim::new(n)
    }
}

impl From<Dim> for u16 {
    fn from(dim: Dim) -> u16 {
        dim.get()
    }
}

impl From<Dim> for usize {
    fn from(dim: Dim) -> usize {
        dim.n()
    }
}

/// A matrix dimension outside `1..=64`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct InvalidDim(pub u16);

impl fmt::Display for InvalidDim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "matrix dimension {} is out of range; use 1 to {MAX_DIM} (the paper uses 15)",
            self.0
        )
    }
}

impl core::error::Error for InvalidDim {}

/// Why a server refused a request: the non-zero Response status codes.
///
/// Codes 1 to 3 are what a decoder reports for a bad frame
/// ([`ProtoError::status`](crate::ProtoError::status)); code 4 is the server's
/// own decision, for example when its queue is full.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum ErrorStatus {
    /// 1: the frame did not start with a magic the server accepts there.
    BadMagic = 1,
    /// 2: the dimension was outside `1..=64`.
    BadDim = 2,
    /// 3: an unknown operation, non-zero flags or non-zero reserved bytes.
    BadOpOrFlags = 3,
    /// 4: the server is too busy to take the request.
    Overloaded = 4,
}

impl ErrorStatus {
    /// Every error status, in code order.
    pub const ALL: [ErrorStatus; 4] = [
        ErrorStatus::BadMagic,
        ErrorStatus::BadDim,
        ErrorStatus::BadOpOrFlags,
        ErrorStatus::Overloaded,
    ];

    /// The status byte on the wire.
    #[inline]
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The error status whose wire byte is `code`; `None` for 0 (ok) and for
    /// codes protocol version 1 does not define.
    pub const fn from_code(code: u8) -> Option<ErrorStatus> {
        match code {
            1 => Some(ErrorStatus::BadMagic),
            2 => Some(ErrorStatus::BadDim),
            3 => Some(ErrorStatus::BadOpOrFlags),
            4 => Some(ErrorStatus::Overloaded),
            _ => None,
        }
    }
}

impl From<ErrorStatus> for u8 {
    fn from(status: ErrorStatus) -> u8 {
        status.code()
    }
}

impl fmt::Display for ErrorStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            ErrorStatus::BadMagic => "bad magic",
            ErrorStatus::BadDim => "bad dim",
            ErrorStatus::BadOpOrFlags => "bad op or flags",
            ErrorStatus::Overloaded => "overloaded",
        };
        write!(f, "status {} ({what})", self.code())
    }
}

/// A decoded Hello: the client asks for a priority.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Hello {
    /// The requested priority, 0 = most important. Raw: the server checks it
    /// against its own levels and policy, and answers the priority it grants.
    pub priority: u8,
}

/// A decoded HelloAck: the server's answer to a Hello.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct HelloAck {
    /// The priority the server granted (it may differ from the one asked for).
    pub priority: u8,
}

/// A decoded Request: square `matrix`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Request<'a> {
    /// Chosen by the client; the Response echoes it.
    pub id: u64,
    /// The matrix M, borrowed from the receive buffer.
    pub matrix: MatrixView<'a>,
}

impl Request<'_> {
    /// The matrix dimension.
    #[inline]
    pub const fn dim(&self) -> Dim {
        self.matrix.dim()
    }
}

/// A decoded Response.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Response<'a> {
    /// The request's id (0 when the server could not read it).
    pub id: u64,
    /// C = M × M borrowed from the receive buffer, or why the server refused.
    pub result: Result<MatrixView<'a>, ErrorStatus>,
}

/// A frame a server receives.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ServerFrame<'a> {
    /// The optional first frame.
    Hello(Hello),
    /// A matrix to square.
    Request(Request<'a>),
}

/// A frame a client receives.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ClientFrame<'a> {
    /// The answer to the client's Hello; only ever the first frame.
    HelloAck(HelloAck),
    /// The answer to a Request.
    Response(Response<'a>),
}

/// The 16-byte header shared by Request and Response, as raw fields.
///
/// `byte14` is the Request's op or the Response's status; `byte15` the Request's
/// flags or the Response's reserved byte.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Header {
    pub(crate) magic: [u8; 4],
    pub(crate) id: u64,
    pub(crate) dim: u16,
    pub(crate) byte14: u8,
    pub(crate) byte15: u8,
}

impl Header {
    /// Splits 16 bytes into fields. Destructuring keeps this free of indexing.
    pub(crate) const fn from_bytes(bytes: &[u8; HEADER_LEN]) -> Header {
        let [m0, m1, m2, m3, i0, i1, i2, i3, i4, i5, i6, i7, d0, d1, byte14, byte15] = *bytes;
        Header {
            magic: [m0, m1, m2, m3],
            id: u64::from_le_bytes([i0, i1, i2, i3, i4, i5, i6, i7]),
            dim: u16::from_le_bytes([d0, d1]),
            byte14,
            byte15,
        }
    }

    /// The inverse of [`Header::from_bytes`].
    pub(crate) const fn to_bytes(self) -> [u8; HEADER_LEN] {
        let [m0, m1, m2, m3] = self.magic;
        let [i0, i1, i2, i3, i4, i5, i6, i7] = self.id.to_le_bytes();
        let [d0, d1] = self.dim.to_le_bytes();
        [
            m0,
            m1,
            m2,
            m3,
            i0,
            i1,
            i2,
            i3,
            i4,
            i5,
            i6,
            i7,
            d0,
            d1,
            self.byte14,
            self.byte15,
        ]
    }
}

/// The 8-byte shape shared by Hello and HelloAck, as raw fields.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct HelloShape {
    pub(crate) magic: [u8; 4],
    pub(crate) priority: u8,
    pub(crate) reserved: [u8; 3],
}

impl HelloShape {
    /// Splits 8 bytes into fields.
    pub(crate) const fn from_bytes(bytes: &[u8; HELLO_LEN]) -> HelloShape {
        let [m0, m1, m2, m3, priority, r0, r1, r2] = *bytes;
        HelloShape {
            magic: [m0, m1, m2, m3],
            priority,
            reserved: [r0, r1, r2],
        }
    }

    /// The inverse of [`HelloShape::from_bytes`].
    pub(crate) const fn to_bytes(self) -> [u8; HELLO_LEN] {
        let [m0, m1, m2, m3] = self.magic;
        let [r0, r1, r2] = self.reserved;
        [m0, m1, m2, m3, self.priority, r0, r1, r2]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dim_bounds() {
        assert_eq!(Dim::new(0), Err(InvalidDim(0)));
        assert_eq!(Dim::new(1), Ok(Dim::MIN));
        assert_eq!(Dim::new(15), Ok(Dim::PAPER));
        assert_eq!(Dim::new(64), Ok(Dim::MAX));
        assert_eq!(Dim::new(65), Err(InvalidDim(65)));
        assert_eq!(Dim::new(u16::MAX), Err(InvalidDim(u16::MAX)));
        assert_eq!(Dim::PAPER.elements(), 225);
        assert_eq!(Dim::PAPER.payload_len(), 900);
        assert_eq!(MAX_PAYLOAD_LEN, 16_384);
        assert_eq!(MAX_FRAME_LEN, 16_400);
        for n in 1..=MAX_DIM {
            assert_eq!(Dim::try_from(n).map(u16::from), Ok(n));
        }
    }

    #[test]
    fn magics_and_kinds() {
        for kind in FrameKind::ALL {
            assert_eq!(FrameKind::from_magic(kind.magic()), Some(kind));
        }
        assert_eq!(FrameKind::from_magic(*b"SSRX"), None);
        assert_eq!(FrameKind::from_magic(*b"sshi"), None);
    }

    #[test]
    fn status_codes() {
        assert_eq!(ErrorStatus::BadMagic.code(), 1);
        assert_eq!(ErrorStatus::BadDim.code(), 2);
        assert_eq!(ErrorStatus::BadOpOrFlags.code(), 3);
        assert_eq!(ErrorStatus::Overloaded.code(), 4);
        for status in ErrorStatus::ALL {
            assert_eq!(ErrorStatus::from_code(status.code()), Some(status));
        }
        assert_eq!(ErrorStatus::from_code(STATUS_OK), None);
        assert_eq!(ErrorStatus::from_code(5), None);
    }

    #[test]
    fn header_round_trip() {
        let header = Header {
            magic: REQUEST_MAGIC,
            id: 0x0102_0304_0506_0708,
            dim: 0x0a0b,
            byte14: 0xee,
            byte15: 0xff,
        };
        let bytes = header.to_bytes();
        assert_eq!(
            bytes,
            [b'S', b'S', b'R', b'Q', 8, 7, 6, 5, 4, 3, 2, 1, 0x0b, 0x0a, 0xee, 0xff]
        );
        assert_eq!(Header::from_bytes(&bytes), header);

        let hello = HelloShape {
            magic: HELLO_MAGIC,
            priority: 3,
            reserved: [4, 5, 6],
        };
        assert_eq!(hello.to_bytes(), *b"SSHI\x03\x04\x05\x06");
        assert_eq!(HelloShape::from_bytes(&hello.to_bytes()), hello);
    }
}
