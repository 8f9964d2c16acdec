//! Arbitrary bytes: the decoders never panic, agree with a reference decoder
//! written from the specification, give the same answer however the bytes are
//! cut into reads, and every error carries a status of 1, 2 or 3.

mod common;

use common::*;
use proptest::prelude::*;
use ss_proto::decode::parse_request;
use ss_proto::{Parsed, ProtoError};

fn garbage() -> impl Strategy<Value = Vec<u8>> {
    let magic = prop::sample::select(vec![*b"SSHI", *b"SSHA", *b"SSRQ", *b"SSRS", *b"SSXX"]);
    prop_oneof![
        // Anything at all.
        prop::collection::vec(any::<u8>(), 0..64),
        // A real magic, then anything: reaches the header checks.
        (magic, prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(m, rest)| {
            let mut v = m.to_vec();
            v.extend(rest);
            v
        }),
        // Valid streams with a few bytes changed, cut short or extended:
        // reaches the payload and the frames after the first.
        (server_stream(), client_stream(), any::<bool>(), mutations()).prop_map(
            |(s, c, pick, muts)| {
                let stream = if pick {
                    encode_server(&s)
                } else {
                    encode_client(&c)
                };
                mutate(stream, &muts)
            }
        ),
    ]
}

fn mutations() -> impl Strategy<Value = (Vec<(usize, u8)>, usize, Vec<u8>)> {
    (
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        any::<usize>(),
        prop::collection::vec(any::<u8>(), 0..8),
    )
}

fn mutate(mut stream: Vec<u8>, (flips, cut, tail): &(Vec<(usize, u8)>, usize, Vec<u8>)) -> Vec<u8> {
    if !stream.is_empty() {
        for &(at, byte) in flips {
            let len = stream.len();
            stream[at % len] = byte;
        }
    }
    if cut % 4 == 0 {
        stream.truncate(cut / 4 % (stream.len() + 1));
    }
    stream.extend_from_slice(tail);
    stream
}

fn check_status(end: End) -> Result<(), TestCaseError> {
    if let End::Error(error) = end {
        let status = error.status().code();
        prop_assert!((1..=3).contains(&status), "{error}: status {status}");
        prop_assert!(!error.to_string().is_empty());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn server_decoder_matches_reference(bytes in garbage(), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        let whole = drive_server(&bytes, &[]);
        prop_assert_eq!(&whole, &reference_server(&bytes));
        prop_assert_eq!(&drive_server(&bytes, &cuts), &whole);
        check_status(whole.1)?;
    }

    #[test]
    fn client_decoder_matches_reference(
        bytes in garbage(),
        sent_hello in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let whole = drive_client(&bytes, sent_hello, &[]);
        prop_assert_eq!(&whole, &reference_client(&bytes, sent_hello));
        prop_assert_eq!(&drive_client(&bytes, sent_hello, &cuts), &whole);
        check_status(whole.1)?;
    }

    #[test]
    fn bad_dim_is_refused_from_the_header_alone(id in any::<u64>(), dim in any::<u16>(), op in any::<u8>(), flags in any::<u8>()) {
        prop_assume!(!(1..=64).contains(&dim));
        let mut header = b"SSRQ".to_vec();
        header.extend(id.to_le_bytes());
        header.extend(dim.to_le_bytes());
        header.extend([op, flags]);
        prop_assert_eq!(parse_request(&header[..15]), Ok(Parsed::Incomplete { needed: 16 }));
        let error = parse_request(&header).unwrap_err();
        prop_assert_eq!(error, ProtoError::BadDim { id, dim });
        prop_assert_eq!(error.status().code(), 2);
        prop_assert_eq!(error.request_id(), id);
    }
}
