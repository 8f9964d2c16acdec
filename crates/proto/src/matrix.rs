//! The service's one operation, C = M × M, and the check a client runs on every
//! answer.
//!
//! Arithmetic is `u32` with wrapping, rows are stored one after another
//! (row-major). The product walks i-k-j: for each output row *i* and each *k*,
//! it adds `M[i][k] × row k of M` to row *i* of C. The inner loop then reads one
//! input row and writes one output row, both contiguous, which the compiler turns
//! into vector code; the naive i-j-k order would stride down a column instead.
//!
//! Inputs are anything that implements [`MatrixSource`]: a `[u32]` slice (what a
//! client generates) or a [`MatrixView`] straight out of a receive buffer (what a
//! server decodes), so a server multiplies without first copying the payload.

use core::fmt;

use crate::frame::{Dim, ErrorStatus, Response, MAX_DIM};
use crate::payload::MatrixView;

/// A row-major matrix of `u32` that the functions of this module can read: a
/// `[u32]` slice, a `[u32; N]` array or a [`MatrixView`].
///
/// The trait is sealed; its methods are internal.
pub trait MatrixSource: sealed::Sealed {}

mod sealed {
    /// The operations [`MatrixSource`](super::MatrixSource) stands for.
    pub trait Sealed {
        /// Number of elements.
        fn element_count(&self) -> usize;
        /// Element `i`, or 0 when out of range (callers check ranges first).
        fn element(&self, i: usize) -> u32;
        /// `out[j] += a × self[start + j]` for every `j` of `out`, wrapping.
        /// Does nothing if the range is out of bounds (callers check first).
        fn add_scaled(&self, start: usize, a: u32, out: &mut [u32]);
        /// Writes every element little-endian into `out`, which is exactly
        /// `4 × element_count()` long (callers check first).
        fn write_le(&self, out: &mut [u8]);
    }
}

impl sealed::Sealed for [u32] {
    #[inline]
    fn element_count(&self) -> usize {
        self.len()
    }

    #[inline]
    fn element(&self, i: usize) -> u32 {
        self.get(i).copied().unwrap_or(0)
    }

    #[inline]
    fn add_scaled(&self, start: usize, a: u32, out: &mut [u32]) {
        if let Some(row) = self.get(start..start + out.len()) {
            for (o, &b) in out.iter_mut().zip(row) {
                *o = o.wrapping_add(a.wrapping_mul(b));
            }
        }
    }

    #[inline]
    fn write_le(&self, out: &mut [u8]) {
        for (chunk, value) in out.chunks_exact_mut(4).zip(self) {
            chunk.copy_from_slice(&value.to_le_bytes());
        }
    }
}

impl MatrixSource for [u32] {}

impl<const N: usize> sealed::Sealed for [u32; N] {
    #[inline]
    fn element_count(&self) -> usize {
        N
    }

    #[inline]
    fn element(&self, i: usize) -> u32 {
        self.as_slice().element(i)
    }

    #[inline]
    fn add_scaled(&self, start: usize, a: u32, out: &mut [u32]) {
        self.as_slice().add_scaled(start, a, out);
    }

    #[inline]
    fn write_le(&self, out: &mut [u8]) {
        self.as_slice().write_le(out);
    }
}

impl<const N: usize> MatrixSource for [u32; N] {}

impl sealed::Sealed for MatrixView<'_> {
    #[inline]
    fn element_count(&self) -> usize {
        self.dim().elements()
    }

    #[inline]
    fn element(&self, i: usize) -> u32 {
        self.try_get(i).unwrap_or(0)
    }

    #[inline]
    fn add_scaled(&self, start: usize, a: u32, out: &mut [u32]) {
        let bytes = self.as_le_bytes();
        if start > self.dim().elements() {
            return;
        }
        if let Some(row) = bytes.get(start * 4..(start + out.len()) * 4) {
            for (o, chunk) in out.iter_mut().zip(row.chunks_exact(4)) {
                let b = match *chunk {
                    [b0, b1, b2, b3] => u32::from_le_bytes([b0, b1, b2, b3]),
                    _ => 0,
                };
                *o = o.wrapping_add(a.wrapping_mul(b));
            }
        }
    }

    #[inline]
    fn write_le(&self, out: &mut [u8]) {
        let bytes = self.as_le_bytes();
        if out.len() == bytes.len() {
            out.copy_from_slice(bytes);
        }
    }
}

impl MatrixSource for MatrixView<'_> {}

/// A matrix or output buffer of the wrong size.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MatrixError {
    /// The input does not have `dim · dim` elements.
    WrongInputLength {
        /// The dimension given.
        dim: Dim,
        /// The input's element count.
        found: usize,
    },
    /// The output does not have room for exactly the result.
    WrongOutputLength {
        /// The element count the result has.
        expected: usize,
        /// The output's element count.
        found: usize,
    },
    /// A row index not below *n*.
    RowOutOfRange {
        /// The dimension given.
        dim: Dim,
        /// The row asked for.
        row: usize,
    },
}

impl fmt::Display for MatrixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MatrixError::WrongInputLength { dim, found } => write!(
                f,
                "the input has {found} elements but a {dim:?} matrix has {}; \
                 pass dim·dim elements in row-major order",
                dim.elements()
            ),
            MatrixError::WrongOutputLength { expected, found } => write!(
                f,
                "the output has room for {found} elements but the result has \
                 {expected}; pass a slice of exactly that length"
            ),
            MatrixError::RowOutOfRange { dim, row } => write!(
                f,
                "row {row} does not exist in a {dim:?} matrix; use rows 0 to {}",
                dim.n() - 1
            ),
        }
    }
}

impl core::error::Error for MatrixError {}

fn check_input<M: MatrixSource + ?Sized>(dim: Dim, m: &M) -> Result<(), MatrixError> {
    let found = m.element_count();
    if found == dim.elements() {
        Ok(())
    } else {
        Err(MatrixError::WrongInputLength { dim, found })
    }
}

fn check_output(expected: usize, found: usize) -> Result<(), MatrixError> {
    if expected == found {
        Ok(())
    } else {
        Err(MatrixError::WrongOutputLength { expected, found })
    }
}

/// Row `i` of C = M × M, once lengths are checked.
#[inline]
fn square_row<M: MatrixSource + ?Sized>(n: usize, m: &M, i: usize, out_row: &mut [u32]) {
    out_row.fill(0);
    for k in 0..n {
        let a = m.element(i * n + k);
        m.add_scaled(k * n, a, out_row);
    }
}

/// Computes C = M × M into `out` (row-major, wrapping `u32` arithmetic).
///
/// # Errors
/// [`MatrixError`] unless `m` and `out` both have exactly `dim · dim` elements.
///
/// # Example
/// ```
/// use ss_proto::{matrix::square_into, Dim};
///
/// let m = [1, 2, 3, 4];
/// let mut c = [0; 4];
/// square_into(Dim::new(2)?, &m, &mut c)?;
/// assert_eq!(c, [7, 10, 15, 22]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn square_into<M: MatrixSource + ?Sized>(
    dim: Dim,
    m: &M,
    out: &mut [u32],
) -> Result<(), MatrixError> {
    check_input(dim, m)?;
    check_output(dim.elements(), out.len())?;
    let n = dim.n();
    for (i, out_row) in out.chunks_exact_mut(n).enumerate() {
        square_row(n, m, i, out_row);
    }
    Ok(())
}

/// Computes row `row` of C = M × M into `out_row`, for a server that streams its
/// answer row by row or a checker that keeps no whole result.
///
/// # Errors
/// [`MatrixError`] unless `m` has `dim · dim` elements, `out_row` has `dim`
/// elements and `row < dim`.
pub fn square_row_into<M: MatrixSource + ?Sized>(
    dim: Dim,
    m: &M,
    row: usize,
    out_row: &mut [u32],
) -> Result<(), MatrixError> {
    check_input(dim, m)?;
    check_output(dim.n(), out_row.len())?;
    if row >= dim.n() {
        return Err(MatrixError::RowOutOfRange { dim, row });
    }
    square_row(dim.n(), m, row, out_row);
    Ok(())
}

/// Why an answer is not the right one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum VerifyError {
    /// The sent matrix or the result has the wrong number of elements.
    Length(MatrixError),
    /// The Response answers another request.
    WrongId {
        /// The id of the request sent.
        expected: u64,
        /// The id the Response carries.
        found: u64,
    },
    /// The server refused the request.
    Refused {
        /// The status it gave.
        status: ErrorStatus,
    },
    /// The result has another dimension than the request.
    WrongDim {
        /// The request's dimension.
        expected: Dim,
        /// The result's dimension.
        found: Dim,
    },
    /// An element of the result is wrong.
    WrongElement {
        /// Row of the first wrong element.
        row: usize,
        /// Column of the first wrong element.
        col: usize,
        /// What M × M has there.
        expected: u32,
        /// What the result has there.
        found: u32,
    },
}

impl From<MatrixError> for VerifyError {
    fn from(error: MatrixError) -> VerifyError {
        VerifyError::Length(error)
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            VerifyError::Length(error) => write!(f, "cannot verify: {error}"),
            VerifyError::WrongId { expected, found } => write!(
                f,
                "response id {found} does not answer request {expected}; responses \
                 come in request order, so the server reordered, lost or invented one"
            ),
            VerifyError::Refused { status } => {
                let fix = match status {
                    ErrorStatus::Overloaded => "send more slowly or retry later",
                    _ => "the request was malformed; check the client's encoder",
                };
                write!(f, "the server refused the request with {status}: {fix}")
            }
            VerifyError::WrongDim { expected, found } => write!(
                f,
                "the result is {found:?} but the request was {expected:?}; the \
                 result of squaring has the request's dimension"
            ),
            VerifyError::WrongElement {
                row,
                col,
                expected,
                found,
            } => write!(
                f,
                "C[{row}][{col}] is {found} but M × M gives {expected}; the server \
                 must multiply row-major with wrapping u32 arithmetic"
            ),
        }
    }
}

impl core::error::Error for VerifyError {}

/// Checks that `result` is M × M for the `dim` × `dim` matrix `m`.
///
/// Needs no allocation: it recomputes one row at a time on the stack.
///
/// # Errors
/// [`VerifyError::Length`] if either matrix has the wrong element count, else
/// [`VerifyError::WrongElement`] naming the first element that differs.
pub fn verify_square<M, R>(dim: Dim, m: &M, result: &R) -> Result<(), VerifyError>
where
    M: MatrixSource + ?Sized,
    R: MatrixSource + ?Sized,
{
    check_input(dim, m)?;
    check_output(dim.elements(), result.element_count())?;
    let n = dim.n();
    let mut row_buf = [0u32; MAX_DIM as usize];
    // `n <= MAX_DIM` because `dim` is a `Dim`.
    let expected_row = &mut row_buf[..n];
    for row in 0..n {
        square_row(n, m, row, expected_row);
        for (col, &expected) in expected_row.iter().enumerate() {
            let found = result.element(row * n + col);
            if found != expected {
                return Err(VerifyError::WrongElement {
                    row,
                    col,
                    expected,
                    found,
                });
            }
        }
    }
    Ok(())
}

/// Checks that `response` is the right answer to request `id`, which sent the
/// `dim` × `dim` matrix `sent`: same id, status ok, same dimension, and
/// C = M × M element for element.
///
/// # Errors
/// The first check that fails, as a [`VerifyError`].
///
/// # Example
/// ```
/// use ss_proto::{matrix, Dim, MatrixView, Response};
///
/// let sent = [1, 2, 3, 4];
/// let answer = [7u32, 10, 15, 22].map(u32::to_le_bytes).concat();
/// let response = Response {
///     id: 9,
///     result: Ok(MatrixView::from_le_bytes(Dim::new(2)?, &answer).unwrap()),
/// };
/// matrix::verify_response(9, Dim::new(2)?, &sent, &response)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn verify_response<M: MatrixSource + ?Sized>(
    id: u64,
    dim: Dim,
    sent: &M,
    response: &Response<'_>,
) -> Result<(), VerifyError> {
    check_input(dim, sent)?;
    if response.id != id {
        return Err(VerifyError::WrongId {
            expected: id,
            found: response.id,
        });
    }
    let result = response
        .result
        .map_err(|status| VerifyError::Refused { status })?;
    if result.dim() != dim {
        return Err(VerifyError::WrongDim {
            expected: dim,
            found: result.dim(),
        });
    }
    verify_square(dim, sent, &result)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    /// The textbook i-j-k product, the reference the fast one is checked against.
    fn reference(n: usize, m: &[u32]) -> Vec<u32> {
        let mut c = std::vec![0u32; n * n];
        for i in 0..n {
            for j in 0..n {
                let mut sum = 0u32;
                for k in 0..n {
                    sum = sum.wrapping_add(m[i * n + k].wrapping_mul(m[k * n + j]));
                }
                c[i * n + j] = sum;
            }
        }
        c
    }

    fn pseudo_random(len: usize, seed: u32) -> Vec<u32> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x
            })
            .collect()
    }

    #[test]
    fn two_by_two() {
        let mut c = [0; 4];
        square_into(Dim::new(2).unwrap(), &[1, 2, 3, 4], &mut c).unwrap();
        assert_eq!(c, [7, 10, 15, 22]);
    }

    #[test]
    fn matches_reference_for_every_dim_with_wrapping() {
        for n in 1..=MAX_DIM {
            let dim = Dim::new(n).unwrap();
            let m = pseudo_random(dim.elements(), u32::from(n));
            let mut c = std::vec![0; dim.elements()];
            square_into(dim, m.as_slice(), &mut c).unwrap();
            assert_eq!(c, reference(dim.n(), &m), "n = {n}");

            let bytes: Vec<u8> = m.iter().flat_map(|v| v.to_le_bytes()).collect();
            let view = MatrixView::from_le_bytes(dim, &bytes).unwrap();
            let mut from_view = std::vec![0; dim.elements()];
            square_into(dim, &view, &mut from_view).unwrap();
            assert_eq!(from_view, c, "n = {n}");
            assert_eq!(verify_square(dim, &view, c.as_slice()), Ok(()));
        }
    }

    #[test]
    fn rows_match_whole() {
        let dim = Dim::PAPER;
        let m = pseudo_random(dim.elements(), 7);
        let mut c = std::vec![0; dim.elements()];
        square_into(dim, m.as_slice(), &mut c).unwrap();
        let mut row = [0; 15];
        for i in 0..15 {
            square_row_into(dim, m.as_slice(), i, &mut row).unwrap();
            assert_eq!(&row[..], &c[i * 15..(i + 1) * 15]);
        }
        assert_eq!(
            square_row_into(dim, m.as_slice(), 15, &mut row),
            Err(MatrixError::RowOutOfRange { dim, row: 15 })
        );
    }

    #[test]
    fn length_errors() {
        let dim = Dim::new(2).unwrap();
        let mut out = [0; 4];
        assert_eq!(
            square_into(dim, &[1, 2, 3], &mut out),
            Err(MatrixError::WrongInputLength { dim, found: 3 })
        );
        assert_eq!(
            square_into(dim, &[1, 2, 3, 4], &mut out[..3]),
            Err(MatrixError::WrongOutputLength {
                expected: 4,
                found: 3
            })
        );
    }

    #[test]
    fn verify_finds_each_fault() {
        let dim = Dim::new(2).unwrap();
        let sent = [1, 2, 3, 4];
        let good: Vec<u8> = [7u32, 10, 15, 22]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bad: Vec<u8> = [7u32, 10, 16, 22]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        fn ok(dim: Dim, bytes: &[u8]) -> Response<'_> {
            Response {
                id: 5,
                result: Ok(MatrixView::from_le_bytes(dim, bytes).unwrap()),
            }
        }
        assert_eq!(verify_response(5, dim, &sent, &ok(dim, &good)), Ok(()));
        assert_eq!(
            verify_response(6, dim, &sent, &ok(dim, &good)),
            Err(VerifyError::WrongId {
                expected: 6,
                found: 5
            })
        );
        assert_eq!(
            verify_response(5, dim, &sent, &ok(dim, &bad)),
            Err(VerifyError::WrongElement {
                row: 1,
                col: 0,
                expected: 15,
                found: 16
            })
        );
        let refused = Response {
            id: 5,
            result: Err(ErrorStatus::Overloaded),
        };
        assert_eq!(
            verify_response(5, dim, &sent, &refused),
            Err(VerifyError::Refused {
                status: ErrorStatus::Overloaded
            })
        );
        let one = [49u8, 0, 0, 0];
        let small = Response {
            id: 5,
            result: Ok(MatrixView::from_le_bytes(Dim::MIN, &one).unwrap()),
        };
        assert_eq!(
            verify_response(5, dim, &sent, &small),
            Err(VerifyError::WrongDim {
                expected: dim,
                found: Dim::MIN
            })
        );
        assert_eq!(verify_response(5, Dim::MIN, &[7u32], &small), Ok(()));
        assert!(matches!(
            verify_response(5, dim, &[1u32, 2, 3], &ok(dim, &good)),
            Err(VerifyError::Length(_))
        ));
    }
}
