//! Shared helpers for the integration tests: owned copies of frames, a driver
//! that feeds a stream to a decoder in arbitrary pieces, and a reference decoder
//! written straight from PROTOCOL.md with none of the crate's code.
#![allow(dead_code)]

use proptest::prelude::*;
use ss_proto::frame::MAX_FRAME_LEN;
use ss_proto::{
    encode, ClientDecoder, ClientFrame, Dim, ErrorStatus, FrameKind, Parsed, ProtoError,
    ServerDecoder, ServerFrame,
};

/// A frame a server receives, owning its matrix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToServer {
    Hello(u8),
    Request { id: u64, dim: u16, m: Vec<u32> },
}

/// A frame a client receives, owning its matrix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToClient {
    Ack(u8),
    Ok { id: u64, dim: u16, c: Vec<u32> },
    Err { id: u64, status: ErrorStatus },
}

impl ToServer {
    pub fn from_frame(frame: &ServerFrame<'_>) -> ToServer {
        match frame {
            ServerFrame::Hello(hello) => ToServer::Hello(hello.priority),
            ServerFrame::Request(request) => ToServer::Request {
                id: request.id,
                dim: request.dim().get(),
                m: request.matrix.iter().collect(),
            },
        }
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut buf = vec![0; MAX_FRAME_LEN];
        let len = match self {
            ToServer::Hello(priority) => encode::encode_hello(*priority, &mut buf),
            ToServer::Request { id, dim, m } => {
                encode::encode_request(*id, Dim::new(*dim).unwrap(), m.as_slice(), &mut buf)
            }
        }
        .unwrap();
        out.extend_from_slice(&buf[..len]);
    }
}

impl ToClient {
    pub fn from_frame(frame: &ClientFrame<'_>) -> ToClient {
        match frame {
            ClientFrame::HelloAck(ack) => ToClient::Ack(ack.priority),
            ClientFrame::Response(response) => match response.result {
                Ok(c) => ToClient::Ok {
                    id: response.id,
                    dim: c.dim().get(),
                    c: c.iter().collect(),
                },
                Err(status) => ToClient::Err {
                    id: response.id,
                    status,
                },
            },
        }
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut buf = vec![0; MAX_FRAME_LEN];
        let len = match self {
            ToClient::Ack(priority) => encode::encode_hello_ack(*priority, &mut buf),
            ToClient::Ok { id, dim, c } => {
                encode::encode_response_ok(*id, Dim::new(*dim).unwrap(), c.as_slice(), &mut buf)
            }
            ToClient::Err { id, status } => encode::encode_response_error(*id, *status, &mut buf),
        }
        .unwrap();
        out.extend_from_slice(&buf[..len]);
    }
}

/// How a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Every byte was part of a complete frame.
    Clean,
    /// This many bytes of an unfinished frame are left over.
    Partial(usize),
    /// A bad frame.
    Error(ProtoError),
}

/// Feeds `stream` to a decoder, cut at the positions in `cuts` (any order, any
/// value: out-of-range cuts are clamped), checking the `Parsed` contract on
/// every call.
fn drive<F, T>(stream: &[u8], cuts: &[usize], mut decode: F) -> (Vec<T>, End)
where
    F: FnMut(&[u8]) -> Result<Parsed<T>, ProtoError>,
{
    let mut points: Vec<usize> = cuts.iter().map(|&c| c.min(stream.len())).collect();
    points.push(stream.len());
    points.sort_unstable();
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let mut from = 0;
    for to in points {
        buf.extend_from_slice(&stream[from..to]);
        from = to;
        loop {
            match decode(&buf) {
                Ok(Parsed::Complete { frame, consumed }) => {
                    assert!(consumed > 0 && consumed <= buf.len(), "consumed {consumed}");
                    frames.push(frame);
                    buf.drain(..consumed);
                }
                Ok(Parsed::Incomplete { needed }) => {
                    assert!(needed > buf.len(), "needed {needed} <= {}", buf.len());
                    assert!(needed <= MAX_FRAME_LEN, "needed {needed}");
                    break;
                }
                Err(error) => {
                    // Sticky: the decoder says the same again.
                    assert_eq!(decode(&buf).err(), Some(error));
                    return (frames, End::Error(error));
                }
            }
        }
    }
    let end = if buf.is_empty() {
        End::Clean
    } else {
        End::Partial(buf.len())
    };
    (frames, end)
}

/// Decodes a server's inbound stream cut at `cuts`.
pub fn drive_server(stream: &[u8], cuts: &[usize]) -> (Vec<ToServer>, End) {
    let mut decoder = ServerDecoder::new();
    drive(stream, cuts, |buf| {
        decoder
            .decode(buf)
            .map(|parsed| parsed.map(|frame| ToServer::from_frame(&frame)))
    })
}

/// Decodes a client's inbound stream cut at `cuts`.
pub fn drive_client(stream: &[u8], sent_hello: bool, cuts: &[usize]) -> (Vec<ToClient>, End) {
    let mut decoder = if sent_hello {
        ClientDecoder::after_hello()
    } else {
        ClientDecoder::new()
    };
    drive(stream, cuts, |buf| {
        decoder
            .decode(buf)
            .map(|parsed| parsed.map(|frame| ToClient::from_frame(&frame)))
    })
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap())
}

fn le_u16(b: &[u8]) -> u16 {
    u16::from_le_bytes(b[..2].try_into().unwrap())
}

fn le_u32s(b: &[u8]) -> Vec<u32> {
    b.chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn unexpected(magic: &[u8]) -> Option<ProtoError> {
    let kind = match magic {
        b"SSHI" => FrameKind::Hello,
        b"SSHA" => FrameKind::HelloAck,
        b"SSRQ" => FrameKind::Request,
        b"SSRS" => FrameKind::Response,
        _ => return None,
    };
    Some(ProtoError::UnexpectedFrame { kind })
}

/// The reference server-side decoder: whole stream at once, plain indexing.
pub fn reference_server(stream: &[u8]) -> (Vec<ToServer>, End) {
    let mut frames = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &stream[pos..];
        if rest.is_empty() {
            return (frames, End::Clean);
        }
        if rest.len() < 4 {
            return (frames, End::Partial(rest.len()));
        }
        let magic = &rest[..4];
        if magic == b"SSHI" && pos == 0 {
            if rest.len() < 8 {
                return (frames, End::Partial(rest.len()));
            }
            if rest[5..8] != [0, 0, 0] {
                let kind = FrameKind::Hello;
                return (frames, End::Error(ProtoError::BadReserved { kind, id: 0 }));
            }
            frames.push(ToServer::Hello(rest[4]));
            pos += 8;
        } else if magic == b"SSRQ" {
            if rest.len() < 16 {
                return (frames, End::Partial(rest.len()));
            }
            let id = le_u64(&rest[4..]);
            let dim = le_u16(&rest[12..]);
            let (op, flags) = (rest[14], rest[15]);
            let error = if !(1..=64).contains(&dim) {
                Some(ProtoError::BadDim { id, dim })
            } else if op != 1 {
                Some(ProtoError::BadOp { id, op })
            } else if flags != 0 {
                Some(ProtoError::BadFlags { id, flags })
            } else {
                None
            };
            if let Some(error) = error {
                return (frames, End::Error(error));
            }
            let total = 16 + 4 * usize::from(dim) * usize::from(dim);
            if rest.len() < total {
                return (frames, End::Partial(rest.len()));
            }
            let m = le_u32s(&rest[16..total]);
            frames.push(ToServer::Request { id, dim, m });
            pos += total;
        } else {
            let error = unexpected(magic).unwrap_or(ProtoError::BadMagic {
                found: magic.try_into().unwrap(),
            });
            return (frames, End::Error(error));
        }
    }
}

/// The reference client-side decoder.
pub fn reference_client(stream: &[u8], sent_hello: bool) -> (Vec<ToClient>, End) {
    let mut frames = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &stream[pos..];
        if rest.is_empty() {
            return (frames, End::Clean);
        }
        if rest.len() < 4 {
            return (frames, End::Partial(rest.len()));
        }
        let magic = &rest[..4];
        if magic == b"SSHA" && pos == 0 && sent_hello {
            if rest.len() < 8 {
                return (frames, End::Partial(rest.len()));
            }
            if rest[5..8] != [0, 0, 0] {
                let kind = FrameKind::HelloAck;
                return (frames, End::Error(ProtoError::BadReserved { kind, id: 0 }));
            }
            frames.push(ToClient::Ack(rest[4]));
            pos += 8;
        } else if magic == b"SSRS" {
            if rest.len() < 16 {
                return (frames, End::Partial(rest.len()));
            }
            let id = le_u64(&rest[4..]);
            let dim = le_u16(&rest[12..]);
            let (status, reserved) = (rest[14], rest[15]);
            let bad_reserved = ProtoError::BadReserved {
                kind: FrameKind::Response,
                id,
            };
            if status == 0 {
                if !(1..=64).contains(&dim) {
                    return (frames, End::Error(ProtoError::BadDim { id, dim }));
                }
                if reserved != 0 {
                    return (frames, End::Error(bad_reserved));
                }
                let total = 16 + 4 * usize::from(dim) * usize::from(dim);
                if rest.len() < total {
                    return (frames, End::Partial(rest.len()));
                }
                let c = le_u32s(&rest[16..total]);
                frames.push(ToClient::Ok { id, dim, c });
                pos += total;
            } else if (1..=4).contains(&status) {
                let status = ErrorStatus::ALL[usize::from(status) - 1];
                if dim != 0 {
                    let error = ProtoError::ErrorWithDim { id, status, dim };
                    return (frames, End::Error(error));
                }
                if reserved != 0 {
                    return (frames, End::Error(bad_reserved));
                }
                frames.push(ToClient::Err { id, status });
                pos += 16;
            } else {
                return (frames, End::Error(ProtoError::BadStatus { id, status }));
            }
        } else {
            let error = unexpected(magic).unwrap_or(ProtoError::BadMagic {
                found: magic.try_into().unwrap(),
            });
            return (frames, End::Error(error));
        }
    }
}

/// Dimensions: mostly small (fast), sometimes up to the maximum.
pub fn dim() -> impl Strategy<Value = u16> {
    prop_oneof![4 => 1u16..=6, 1 => 7u16..=64]
}

/// A square matrix of some dimension.
pub fn matrix() -> impl Strategy<Value = (u16, Vec<u32>)> {
    dim().prop_flat_map(|n| {
        let len = usize::from(n) * usize::from(n);
        (Just(n), prop::collection::vec(any::<u32>(), len))
    })
}

/// What a client may send: an optional Hello, then Requests.
pub fn server_stream() -> impl Strategy<Value = Vec<ToServer>> {
    let request =
        (any::<u64>(), matrix()).prop_map(|(id, (dim, m))| ToServer::Request { id, dim, m });
    (
        proptest::option::of(any::<u8>()),
        prop::collection::vec(request, 0..5),
    )
        .prop_map(|(hello, requests)| {
            hello
                .map(ToServer::Hello)
                .into_iter()
                .chain(requests)
                .collect()
        })
}

/// What a server may send: an optional HelloAck, then Responses.
pub fn client_stream() -> impl Strategy<Value = Vec<ToClient>> {
    let status = prop::sample::select(ErrorStatus::ALL.to_vec());
    let response = prop_oneof![
        (any::<u64>(), matrix()).prop_map(|(id, (dim, c))| ToClient::Ok { id, dim, c }),
        (any::<u64>(), status).prop_map(|(id, status)| ToClient::Err { id, status }),
    ];
    (
        proptest::option::of(any::<u8>()),
        prop::collection::vec(response, 0..5),
    )
        .prop_map(|(ack, responses)| {
            ack.map(ToClient::Ack)
                .into_iter()
                .chain(responses)
                .collect()
        })
}

pub fn encode_server(frames: &[ToServer]) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in frames {
        frame.encode_into(&mut out);
    }
    out
}

pub fn encode_client(frames: &[ToClient]) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in frames {
        frame.encode_into(&mut out);
    }
    out
}
