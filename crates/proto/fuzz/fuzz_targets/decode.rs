//! Feeds arbitrary bytes to the server and the client decoder, whole and cut
//! into reads at arbitrary points, and checks that:
//!
//! - nothing panics;
//! - every `Parsed` keeps its contract (`consumed` within the buffer, `needed`
//!   beyond it and at most `MAX_FRAME_LEN`);
//! - the frames and the outcome do not depend on where the stream was cut;
//! - every decoded frame re-encodes to exactly the bytes it was decoded from;
//! - every error names a status of 1, 2 or 3 and stays put (decoders are sticky);
//! - the product of every decoded request checks out against `verify_square`.
//!
//! Input layout: byte 0 holds `sent_hello` (bit 0) and the number of cuts
//! (bits 1-3); then two bytes (little-endian) per cut; the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ss_proto::matrix::{square_into, verify_square};
use ss_proto::{
    ClientDecoder, ClientFrame, Parsed, ProtoError, ServerDecoder, ServerFrame, MAX_FRAME_LEN,
};

/// How a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// This many bytes of an unfinished frame are left (0: none).
    Rest(usize),
    /// A bad frame.
    Error(ProtoError),
}

/// What decoding a stream gave: the frames, each re-encoded, and how it ended.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    frames: Vec<Vec<u8>>,
    end: End,
}

/// One frame as the driver sees it: its re-encoding, checked against the bytes
/// it came from.
trait Frame {
    fn check_and_encode(&self, source: &[u8]) -> Vec<u8>;
}

impl Frame for ServerFrame<'_> {
    fn check_and_encode(&self, source: &[u8]) -> Vec<u8> {
        let mut out = vec![0; self.encoded_len()];
        let len = self.encode(&mut out).expect("exact buffer");
        assert_eq!(len, out.len());
        assert_eq!(out, source, "re-encoding differs from the decoded bytes");
        if let ServerFrame::Request(request) = self {
            let dim = request.dim();
            let mut c = vec![0; dim.elements()];
            square_into(dim, &request.matrix, &mut c).expect("lengths match");
            verify_square(dim, &request.matrix, c.as_slice()).expect("product checks out");
        }
        out
    }
}

impl Frame for ClientFrame<'_> {
    fn check_and_encode(&self, source: &[u8]) -> Vec<u8> {
        let mut out = vec![0; self.encoded_len()];
        let len = self.encode(&mut out).expect("exact buffer");
        assert_eq!(len, out.len());
        assert_eq!(out, source, "re-encoding differs from the decoded bytes");
        out
    }
}

/// Replaces a borrowed frame by its checked re-encoding.
fn owned<T: Frame>(
    buf: &[u8],
    parsed: Result<Parsed<T>, ProtoError>,
) -> Result<Parsed<Vec<u8>>, ProtoError> {
    Ok(match parsed? {
        Parsed::Complete { frame, consumed } => {
            assert!(consumed > 0 && consumed <= buf.len());
            Parsed::Complete {
                frame: frame.check_and_encode(&buf[..consumed]),
                consumed,
            }
        }
        Parsed::Incomplete { needed } => Parsed::Incomplete { needed },
    })
}

/// Feeds `stream` to `decode` in the pieces that `cuts` (sorted, clamped) make.
fn drive(
    stream: &[u8],
    cuts: &[usize],
    mut decode: impl FnMut(&[u8]) -> Result<Parsed<Vec<u8>>, ProtoError>,
) -> Outcome {
    let mut points: Vec<usize> = cuts.iter().map(|&c| c.min(stream.len())).collect();
    points.push(stream.len());
    points.sort_unstable();
    let mut buf: Vec<u8> = Vec::new();
    let mut frames = Vec::new();
    let mut from = 0;
    for to in points {
        buf.extend_from_slice(&stream[from..to]);
        from = to;
        loop {
            match decode(&buf) {
                Ok(Parsed::Complete { frame, consumed }) => {
                    frames.push(frame);
                    buf.drain(..consumed);
                }
                Ok(Parsed::Incomplete { needed }) => {
                    assert!(needed > buf.len() && needed <= MAX_FRAME_LEN);
                    break;
                }
                Err(error) => {
                    let status = error.status().code();
                    assert!((1..=3).contains(&status), "{error:?} has status {status}");
                    assert!(decode(&buf).err() == Some(error), "decoder is not sticky");
                    return Outcome {
                        frames,
                        end: End::Error(error),
                    };
                }
            }
        }
    }
    Outcome {
        frames,
        end: End::Rest(buf.len()),
    }
}

fn server(stream: &[u8], cuts: &[usize]) -> Outcome {
    let mut decoder = ServerDecoder::new();
    drive(stream, cuts, |buf| owned(buf, decoder.decode(buf)))
}

fn client(stream: &[u8], sent_hello: bool, cuts: &[usize]) -> Outcome {
    let mut decoder = if sent_hello {
        ClientDecoder::after_hello()
    } else {
        ClientDecoder::new()
    };
    drive(stream, cuts, |buf| owned(buf, decoder.decode(buf)))
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let sent_hello = control & 1 == 1;
    let cut_count = usize::from((control >> 1) & 7);
    let cut_bytes = rest.len().min(cut_count * 2);
    let (cut_data, stream) = rest.split_at(cut_bytes);
    let cuts: Vec<usize> = cut_data
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])))
        .collect();
    let every: Vec<usize> = (0..stream.len()).collect();

    let whole = server(stream, &[]);
    assert_eq!(server(stream, &cuts), whole, "server: cuts {cuts:?}");
    assert_eq!(server(stream, &every), whole, "server: byte by byte");

    let whole = client(stream, sent_hello, &[]);
    assert_eq!(
        client(stream, sent_hello, &cuts),
        whole,
        "client: cuts {cuts:?}"
    );
    assert_eq!(
        client(stream, sent_hello, &every),
        whole,
        "client: byte by byte"
    );
});
