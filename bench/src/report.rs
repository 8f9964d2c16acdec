//! Fixed-width tables for the report.

use crate::harness::Sample;

/// Formats nanoseconds per operation with a precision that suits the size.
pub fn ns(v: f64) -> String {
    if v >= 100_000.0 {
        format!("{:.0}", v)
    } else if v >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Formats an optional sample's median, or `text` when absent.
pub fn median_or(s: Option<&Sample>, text: &str) -> String {
    s.map_or_else(|| text.to_owned(), |s| ns(s.median))
}

/// A table printed row by row with right-aligned columns after the first.
#[derive(Debug)]
pub struct Table {
    widths: Vec<usize>,
}

impl Table {
    /// A table with these column widths; prints the header row and a rule.
    pub fn new(columns: &[(&str, usize)]) -> Self {
        let t = Table {
            widths: columns.iter().map(|c| c.1).collect(),
        };
        let header: Vec<&str> = columns.iter().map(|c| c.0).collect();
        t.row(&header);
        let width: usize = t.widths.iter().sum::<usize>() + 2 * t.widths.len();
        println!("  {}", "-".repeat(width));
        t
    }

    /// Prints one row.
    pub fn row<S: AsRef<str>>(&self, cells: &[S]) {
        let mut line = String::from("  ");
        for (i, (cell, w)) in cells.iter().zip(&self.widths).enumerate() {
            let cell = cell.as_ref();
            if i == 0 {
                line.push_str(&format!("{cell:<w$}  "));
            } else {
                line.push_str(&format!("{cell:>w$}  "));
            }
        }
        println!("{}", line.trim_end());
    }
}
