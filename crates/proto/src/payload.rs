//! A zero-copy view of a matrix payload.
//!
//! The decoder never copies a payload: a [`MatrixView`] borrows the receive
//! buffer and reads each element as a little-endian `u32` when asked. The bytes
//! need no alignment, so the view works on any buffer a socket filled.

use core::fmt;
use core::iter::FusedIterator;
use core::slice::ChunksExact;

use crate::frame::Dim;

/// An *n* × *n* matrix of little-endian `u32`, row-major, borrowed from a buffer.
///
/// Invariant: the borrowed bytes are exactly `dim.payload_len()` long.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MatrixView<'a> {
    dim: Dim,
    bytes: &'a [u8],
}

impl<'a> MatrixView<'a> {
    /// Views `bytes` as a `dim` × `dim` matrix; `None` unless `bytes` is exactly
    /// `dim.payload_len()` long.
    pub fn from_le_bytes(dim: Dim, bytes: &'a [u8]) -> Option<MatrixView<'a>> {
        (bytes.len() == dim.payload_len()).then_some(MatrixView { dim, bytes })
    }

    /// Views `bytes`, which the caller has sliced to exactly
    /// `dim.payload_len()`.
    pub(crate) fn from_exact(dim: Dim, bytes: &'a [u8]) -> MatrixView<'a> {
        debug_assert_eq!(bytes.len(), dim.payload_len());
        MatrixView { dim, bytes }
    }

    /// The dimension *n*.
    #[inline]
    pub const fn dim(&self) -> Dim {
        self.dim
    }

    /// The payload as it is on the wire.
    #[inline]
    pub const fn as_le_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Element `i` in row-major order (row `i / n`, column `i % n`).
    ///
    /// # Panics
    /// If `i >= n·n`, like indexing a slice out of bounds. Use
    /// [`MatrixView::try_get`] for an index that is not known to be in range.
    #[inline]
    #[track_caller]
    pub fn get(&self, i: usize) -> u32 {
        match self.try_get(i) {
            Some(value) => value,
            None => panic!(
                "matrix element {i} is out of bounds for a {:?} matrix",
                self.dim
            ),
        }
    }

    /// Element `i` in row-major order, or `None` if `i >= n·n`.
    #[inline]
    pub fn try_get(&self, i: usize) -> Option<u32> {
        // Check `i` before multiplying, so that a huge `i` cannot wrap around.
        if i >= self.dim.elements() {
            return None;
        }
        let at = i * 4;
        match self.bytes.get(at..at + 4)? {
            &[b0, b1, b2, b3] => Some(u32::from_le_bytes([b0, b1, b2, b3])),
            _ => None,
        }
    }

    /// Element at `row`, `col`.
    ///
    /// # Panics
    /// If `row` or `col` is not below *n*.
    #[inline]
    #[track_caller]
    pub fn at(&self, row: usize, col: usize) -> u32 {
        let n = self.dim.n();
        assert!(
            row < n && col < n,
            "matrix element ({row}, {col}) is out of bounds for a {:?} matrix",
            self.dim
        );
        self.get(row * n + col)
    }

    /// Every element in row-major order.
    #[inline]
    pub fn iter(&self) -> Elements<'a> {
        Elements::new(self.bytes)
    }

    /// The elements of row `row`, or `None` if `row >= n`.
    #[inline]
    pub fn row(&self, row: usize) -> Option<Elements<'a>> {
        self.row_bytes(row).map(Elements::new)
    }

    /// The bytes of row `row`, or `None` if `row >= n`.
    #[inline]
    pub(crate) fn row_bytes(&self, row: usize) -> Option<&'a [u8]> {
        let len = self.dim.n() * 4;
        if row >= self.dim.n() {
            return None;
        }
        self.bytes.get(row * len..(row + 1) * len)
    }
}

impl fmt::Debug for MatrixView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MatrixView({:?}) ", self.dim)?;
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for MatrixView<'a> {
    type Item = u32;
    type IntoIter = Elements<'a>;

    fn into_iter(self) -> Elements<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &MatrixView<'a> {
    type Item = u32;
    type IntoIter = Elements<'a>;

    fn into_iter(self) -> Elements<'a> {
        self.iter()
    }
}

/// Iterator over little-endian `u32` elements of a payload.
#[derive(Clone, Debug)]
pub struct Elements<'a> {
    chunks: ChunksExact<'a, u8>,
}

impl<'a> Elements<'a> {
    fn new(bytes: &'a [u8]) -> Elements<'a> {
        Elements {
            chunks: bytes.chunks_exact(4),
        }
    }
}

/// Reads one element from a 4-byte chunk.
#[inline]
fn le(chunk: &[u8]) -> u32 {
    match *chunk {
        [b0, b1, b2, b3] => u32::from_le_bytes([b0, b1, b2, b3]),
        // `chunks_exact(4)` yields nothing else.
        _ => 0,
    }
}

impl Iterator for Elements<'_> {
    type Item = u32;

    #[inline]
    fn next(&mut self) -> Option<u32> {
        self.chunks.next().map(le)
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }

    #[inline]
    fn nth(&mut self, n: usize) -> Option<u32> {
        self.chunks.nth(n).map(le)
    }
}

impl DoubleEndedIterator for Elements<'_> {
    #[inline]
    fn next_back(&mut self) -> Option<u32> {
        self.chunks.next_back().map(le)
    }
}

impl ExactSizeIterator for Elements<'_> {}
impl FusedIterator for Elements<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    const BYTES: [u8; 16] = [1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];

    #[test]
    fn view_reads_little_endian() {
        let dim = Dim::new(2).unwrap();
        let view = MatrixView::from_le_bytes(dim, &BYTES).unwrap();
        assert_eq!(view.get(0), 1);
        assert_eq!(view.get(3), u32::MAX);
        assert_eq!(view.at(1, 0), 3);
        assert_eq!(view.try_get(4), None);
        assert_eq!(view.try_get(usize::MAX), None);
        assert!(view.iter().eq([1, 2, 3, u32::MAX]));
        assert!(view.iter().rev().eq([u32::MAX, 3, 2, 1]));
        assert_eq!(view.iter().len(), 4);
        assert!(view.row(1).unwrap().eq([3, u32::MAX]));
        assert!(view.row(2).is_none());
    }

    #[test]
    fn view_rejects_wrong_length() {
        let dim = Dim::new(2).unwrap();
        assert!(MatrixView::from_le_bytes(dim, &BYTES[..15]).is_none());
        assert!(MatrixView::from_le_bytes(Dim::MIN, &BYTES).is_none());
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn get_out_of_range_panics() {
        let view = MatrixView::from_le_bytes(Dim::MIN, &BYTES[..4]).unwrap();
        view.get(1);
    }
}
