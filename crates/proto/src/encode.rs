//! Writing frames into a caller's buffer.
//!
//! Each `encode_*` function writes one whole frame at the start of `buf` and
//! returns its length, or fails without writing anything. The `*_len` functions
//! give the exact length first, so a caller can size or reserve its buffer;
//! [`MAX_FRAME_LEN`](crate::MAX_FRAME_LEN) bytes always suffice.
//!
//! Encoders only write valid frames: the dimension is a checked [`Dim`], the
//! matrix must have `dim · dim` elements, and reserved bytes and flags are zero.
//! A test that needs a bad frame writes its bytes by hand.

use crate::error::EncodeError;
use crate::frame::{
    ClientFrame, Dim, ErrorStatus, Header, HelloShape, ServerFrame, HEADER_LEN, HELLO_ACK_MAGIC,
    HELLO_LEN, HELLO_MAGIC, OP_SQUARE, REQUEST_MAGIC, RESPONSE_MAGIC, STATUS_OK,
};
use crate::matrix::MatrixSource;

/// Length of a Hello frame (8).
pub const fn hello_len() -> usize {
    HELLO_LEN
}

/// Length of a HelloAck frame (8).
pub const fn hello_ack_len() -> usize {
    HELLO_LEN
}

/// Length of a Request for a `dim` × `dim` matrix: 16 + 4·n·n.
pub const fn request_len(dim: Dim) -> usize {
    HEADER_LEN + dim.payload_len()
}

/// Length of an ok Response for a `dim` × `dim` result: 16 + 4·n·n.
pub const fn response_ok_len(dim: Dim) -> usize {
    HEADER_LEN + dim.payload_len()
}

/// Length of an error Response (16: header only).
pub const fn response_error_len() -> usize {
    HEADER_LEN
}

/// The first `needed` bytes of `buf`, or the error naming both lengths.
fn frame_buf(buf: &mut [u8], needed: usize) -> Result<&mut [u8], EncodeError> {
    let available = buf.len();
    buf.get_mut(..needed)
        .ok_or(EncodeError::BufferTooSmall { needed, available })
}

fn check_elements<M: MatrixSource + ?Sized>(dim: Dim, matrix: &M) -> Result<(), EncodeError> {
    let found = matrix.element_count();
    if found == dim.elements() {
        Ok(())
    } else {
        Err(EncodeError::WrongElementCount { dim, found })
    }
}

fn encode_hello_shape(magic: [u8; 4], priority: u8, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let out = frame_buf(buf, HELLO_LEN)?;
    let shape = HelloShape {
        magic,
        priority,
        reserved: [0; 3],
    };
    out.copy_from_slice(&shape.to_bytes());
    Ok(HELLO_LEN)
}

/// Writes a header and, after it, `matrix` (if any); `matrix` has been checked
/// to hold `header.dim²` elements.
fn encode_with_payload<M: MatrixSource + ?Sized>(
    header: Header,
    matrix: Option<&M>,
    len: usize,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    let out = frame_buf(buf, len)?;
    // `len >= HEADER_LEN` for every frame that has this header.
    let (head, payload) = out.split_at_mut(HEADER_LEN);
    head.copy_from_slice(&header.to_bytes());
    if let Some(matrix) = matrix {
        matrix.write_le(payload);
    }
    Ok(len)
}

/// Writes a Hello asking for `priority` (0 = most important).
///
/// # Errors
/// [`EncodeError::BufferTooSmall`] if `buf` is shorter than [`hello_len`].
pub fn encode_hello(priority: u8, buf: &mut [u8]) -> Result<usize, EncodeError> {
    encode_hello_shape(HELLO_MAGIC, priority, buf)
}

/// Writes a HelloAck granting `priority`.
///
/// # Errors
/// [`EncodeError::BufferTooSmall`] if `buf` is shorter than [`hello_ack_len`].
pub fn encode_hello_ack(priority: u8, buf: &mut [u8]) -> Result<usize, EncodeError> {
    encode_hello_shape(HELLO_ACK_MAGIC, priority, buf)
}

/// Writes a Request to square the `dim` × `dim` row-major `matrix`.
///
/// # Errors
/// [`EncodeError::WrongElementCount`] unless `matrix` has `dim · dim` elements;
/// [`EncodeError::BufferTooSmall`] if `buf` is shorter than [`request_len`].
///
/// # Example
/// ```
/// use ss_proto::{encode, Dim};
///
/// let mut buf = [0u8; 64];
/// let len = encode::encode_request(7, Dim::new(2)?, &[1, 2, 3, 4], &mut buf)?;
/// assert_eq!(len, encode::request_len(Dim::new(2)?));
/// assert_eq!(&buf[..4], b"SSRQ");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode_request<M: MatrixSource + ?Sized>(
    id: u64,
    dim: Dim,
    matrix: &M,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    check_elements(dim, matrix)?;
    let header = Header {
        magic: REQUEST_MAGIC,
        id,
        dim: dim.get(),
        byte14: OP_SQUARE,
        byte15: 0,
    };
    encode_with_payload(header, Some(matrix), request_len(dim), buf)
}

/// Writes an ok Response to request `id` carrying the `dim` × `dim` `result`.
///
/// # Errors
/// [`EncodeError::WrongElementCount`] unless `result` has `dim · dim` elements;
/// [`EncodeError::BufferTooSmall`] if `buf` is shorter than [`response_ok_len`].
pub fn encode_response_ok<M: MatrixSource + ?Sized>(
    id: u64,
    dim: Dim,
    result: &M,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    check_elements(dim, result)?;
    let header = Header {
        magic: RESPONSE_MAGIC,
        id,
        dim: dim.get(),
        byte14: STATUS_OK,
        byte15: 0,
    };
    encode_with_payload(header, Some(result), response_ok_len(dim), buf)
}

/// Writes an error Response to request `id` (0 when its id could not be read):
/// dim 0, `status`, no payload. For a decoding error `e`, that is
/// `encode_response_error(e.request_id(), e.status(), buf)`.
///
/// # Errors
/// [`EncodeError::BufferTooSmall`] if `buf` is shorter than [`response_error_len`].
pub fn encode_response_error(
    id: u64,
    status: ErrorStatus,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    let header = Header {
        magic: RESPONSE_MAGIC,
        id,
        dim: 0,
        byte14: status.code(),
        byte15: 0,
    };
    encode_with_payload::<[u32]>(header, None, response_error_len(), buf)
}

impl ServerFrame<'_> {
    /// The frame's length on the wire.
    pub const fn encoded_len(&self) -> usize {
        match self {
            ServerFrame::Hello(_) => hello_len(),
            ServerFrame::Request(request) => request_len(request.dim()),
        }
    }

    /// Writes the frame into `buf` (for relays and tests: re-encoding a decoded
    /// frame gives back its bytes).
    ///
    /// # Errors
    /// [`EncodeError::BufferTooSmall`] if `buf` is shorter than
    /// [`ServerFrame::encoded_len`].
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        match self {
            ServerFrame::Hello(hello) => encode_hello(hello.priority, buf),
            ServerFrame::Request(request) => {
                encode_request(request.id, request.dim(), &request.matrix, buf)
            }
        }
    }
}

impl ClientFrame<'_> {
    /// The frame's length on the wire.
    pub const fn encoded_len(&self) -> usize {
        match self {
            ClientFrame::HelloAck(_) => hello_ack_len(),
            ClientFrame::Response(response) => match &response.result {
                Ok(matrix) => response_ok_len(matrix.dim()),
                Err(_) => response_error_len(),
            },
        }
    }

    /// Writes the frame into `buf`.
    ///
    /// # Errors
    /// [`EncodeError::BufferTooSmall`] if `buf` is shorter than
    /// [`ClientFrame::encoded_len`].
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        match self {
            ClientFrame::HelloAck(ack) => encode_hello_ack(ack.priority, buf),
            ClientFrame::Response(response) => match &response.result {
                Ok(matrix) => encode_response_ok(response.id, matrix.dim(), matrix, buf),
                Err(status) => encode_response_error(response.id, *status, buf),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_and_ack_bytes() {
        let mut buf = [0xaa; 9];
        assert_eq!(encode_hello(3, &mut buf), Ok(8));
        assert_eq!(&buf, b"SSHI\x03\0\0\0\xaa");
        assert_eq!(encode_hello_ack(5, &mut buf), Ok(8));
        assert_eq!(&buf[..8], b"SSHA\x05\0\0\0");
    }

    #[test]
    fn request_bytes() {
        let mut buf = [0u8; 32];
        let dim = Dim::new(2).unwrap();
        let len = encode_request(0x0102, dim, &[1, 2, 3, 0x0403_0201], &mut buf).unwrap();
        assert_eq!(len, 32);
        assert_eq!(len, request_len(dim));
        assert_eq!(&buf[..16], b"SSRQ\x02\x01\0\0\0\0\0\0\x02\0\x01\0");
        assert_eq!(
            &buf[16..],
            b"\x01\0\0\0\x02\0\0\0\x03\0\0\0\x01\x02\x03\x04"
        );
    }

    #[test]
    fn response_bytes() {
        let mut buf = [0u8; 20];
        let len = encode_response_ok(9, Dim::MIN, &[0xdead_beef_u32], &mut buf).unwrap();
        assert_eq!(len, response_ok_len(Dim::MIN));
        assert_eq!(&buf, b"SSRS\x09\0\0\0\0\0\0\0\x01\0\0\0\xef\xbe\xad\xde");

        for status in ErrorStatus::ALL {
            let len = encode_response_error(u64::MAX, status, &mut buf).unwrap();
            assert_eq!(len, response_error_len());
            assert_eq!(&buf[..12], b"SSRS\xff\xff\xff\xff\xff\xff\xff\xff");
            assert_eq!(&buf[12..16], &[0, 0, status.code(), 0]);
        }
    }

    #[test]
    fn too_small_writes_nothing() {
        let mut buf = [0x55u8; 31];
        let dim = Dim::new(2).unwrap();
        assert_eq!(
            encode_request(1, dim, &[1, 2, 3, 4], &mut buf),
            Err(EncodeError::BufferTooSmall {
                needed: 32,
                available: 31
            })
        );
        assert_eq!(
            encode_hello(0, &mut buf[..7]),
            Err(EncodeError::BufferTooSmall {
                needed: 8,
                available: 7
            })
        );
        assert_eq!(
            encode_response_error(0, ErrorStatus::BadDim, &mut buf[..15]),
            Err(EncodeError::BufferTooSmall {
                needed: 16,
                available: 15
            })
        );
        assert!(buf.iter().all(|&b| b == 0x55));
    }

    #[test]
    fn wrong_element_count() {
        let mut buf = [0u8; 64];
        let dim = Dim::new(2).unwrap();
        assert_eq!(
            encode_request(1, dim, &[1, 2, 3], &mut buf),
            Err(EncodeError::WrongElementCount { dim, found: 3 })
        );
        assert_eq!(
            encode_response_ok(1, dim, &[1u32; 5], &mut buf),
            Err(EncodeError::WrongElementCount { dim, found: 5 })
        );
    }
}
