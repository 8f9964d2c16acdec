//! The matrix product against the textbook definition, and the answer check.

mod common;

use common::matrix;
use proptest::prelude::*;
use ss_proto::matrix::{square_into, square_row_into, verify_square, VerifyError};
use ss_proto::{Dim, MatrixView};

/// C[i][j] = Σk M[i][k] · M[k][j], wrapping, straight from the definition.
fn reference(n: usize, m: &[u32]) -> Vec<u32> {
    let mut c = vec![0u32; n * n];
    for i in 0..n {
        for j in 0..n {
            c[i * n + j] = (0..n).fold(0u32, |sum, k| {
                sum.wrapping_add(m[i * n + k].wrapping_mul(m[k * n + j]))
            });
        }
    }
    c
}

proptest! {
    #[test]
    fn square_matches_reference((n, m) in matrix()) {
        let dim = Dim::new(n).unwrap();
        let expected = reference(dim.n(), &m);

        let mut c = vec![0; dim.elements()];
        square_into(dim, m.as_slice(), &mut c).unwrap();
        prop_assert_eq!(&c, &expected);

        let bytes: Vec<u8> = m.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = MatrixView::from_le_bytes(dim, &bytes).unwrap();
        let mut from_view = vec![0; dim.elements()];
        square_into(dim, &view, &mut from_view).unwrap();
        prop_assert_eq!(&from_view, &expected);

        let mut row = vec![0; dim.n()];
        for i in 0..dim.n() {
            square_row_into(dim, &view, i, &mut row).unwrap();
            prop_assert_eq!(&row[..], &expected[i * dim.n()..(i + 1) * dim.n()]);
        }
    }

    #[test]
    fn verify_accepts_the_product_and_finds_any_wrong_element(
        (n, m) in matrix(),
        at in any::<usize>(),
        delta in 1..=u32::MAX,
    ) {
        let dim = Dim::new(n).unwrap();
        let mut c = reference(dim.n(), &m);
        prop_assert_eq!(verify_square(dim, m.as_slice(), c.as_slice()), Ok(()));

        let at = at % c.len();
        let expected = c[at];
        c[at] = expected.wrapping_add(delta);
        prop_assert_eq!(
            verify_square(dim, m.as_slice(), c.as_slice()),
            Err(VerifyError::WrongElement {
                row: at / dim.n(),
                col: at % dim.n(),
                expected,
                found: c[at],
            })
        );
    }
}
