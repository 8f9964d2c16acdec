//! Encode → decode identity: every frame the encoders write decodes to itself,
//! however the stream of several frames is cut into reads.

mod common;

use common::*;
use proptest::prelude::*;
use ss_proto::frame::MAX_FRAME_LEN;
use ss_proto::{decode, ClientDecoder, Parsed, ServerDecoder};

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(any::<usize>().prop_map(|c| c % 40_000), 0..12)
}

proptest! {
    #[test]
    fn server_stream_round_trips_at_any_cuts(frames in server_stream(), cuts in cuts()) {
        let stream = encode_server(&frames);
        let cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        let (decoded, end) = drive_server(&stream, &cuts);
        prop_assert_eq!(end, End::Clean);
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn client_stream_round_trips_at_any_cuts(frames in client_stream(), cuts in cuts()) {
        let stream = encode_client(&frames);
        let cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        let sent_hello = matches!(frames.first(), Some(ToClient::Ack(_)));
        let (decoded, end) = drive_client(&stream, sent_hello, &cuts);
        prop_assert_eq!(end, End::Clean);
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn byte_by_byte_equals_at_once(frames in server_stream(), replies in client_stream()) {
        let stream = encode_server(&frames);
        let every: Vec<usize> = (0..stream.len()).collect();
        prop_assert_eq!(drive_server(&stream, &every), drive_server(&stream, &[]));

        let stream = encode_client(&replies);
        let every: Vec<usize> = (0..stream.len()).collect();
        prop_assert_eq!(drive_client(&stream, true, &every), drive_client(&stream, true, &[]));
    }

    #[test]
    fn decoded_frames_re_encode_to_their_bytes(frames in server_stream(), replies in client_stream()) {
        let stream = encode_server(&frames);
        let mut decoder = ServerDecoder::new();
        let mut rest: &[u8] = &stream;
        let mut again = Vec::new();
        let mut buf = vec![0; MAX_FRAME_LEN];
        while let Parsed::Complete { frame, consumed } = decoder.decode(rest).unwrap() {
            prop_assert_eq!(frame.encoded_len(), consumed);
            let len = frame.encode(&mut buf).unwrap();
            again.extend_from_slice(&buf[..len]);
            rest = &rest[consumed..];
        }
        prop_assert_eq!(&again, &stream);

        let stream = encode_client(&replies);
        let mut decoder = ClientDecoder::after_hello();
        let mut rest: &[u8] = &stream;
        let mut again = Vec::new();
        while let Parsed::Complete { frame, consumed } = decoder.decode(rest).unwrap() {
            prop_assert_eq!(frame.encoded_len(), consumed);
            let len = frame.encode(&mut buf).unwrap();
            again.extend_from_slice(&buf[..len]);
            rest = &rest[consumed..];
        }
        prop_assert_eq!(&again, &stream);
    }

    #[test]
    fn single_frame_parsers_agree_with_decoders(frames in server_stream()) {
        let stream = encode_server(&frames);
        let mut rest: &[u8] = &stream;
        for frame in &frames {
            let consumed = match frame {
                ToServer::Hello(_) => match decode::parse_hello(rest).unwrap() {
                    Parsed::Complete { consumed, .. } => consumed,
                    Parsed::Incomplete { .. } => unreachable!(),
                },
                ToServer::Request { .. } => match decode::parse_request(rest).unwrap() {
                    Parsed::Complete { frame: request, consumed } => {
                        prop_assert_eq!(&ToServer::Request {
                            id: request.id,
                            dim: request.dim().get(),
                            m: request.matrix.iter().collect(),
                        }, frame);
                        consumed
                    }
                    Parsed::Incomplete { .. } => unreachable!(),
                },
            };
            rest = &rest[consumed..];
        }
        prop_assert!(rest.is_empty());
    }
}
