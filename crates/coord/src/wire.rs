//! The registration protocol on the coordinator's `SOCK_SEQPACKET` Unix socket.
//!
//! Four messages, little-endian, fixed size:
//!
//! | message | direction | bytes | descriptors (`SCM_RIGHTS`) |
//! |---|---|---|---|
//! | [`Welcome`] | coordinator → client, first message, once it has accepted the connection | 16: `"SSCW"`, version `u32`, 0 `u64` | none |
//! | [`Hello`] | client → coordinator, first message, only after the welcome (the kernel attaches its checked `SCM_CREDENTIALS`) | 16: `"SSCH"`, version `u32`, pid `u32`, 0 `u32` | exactly one: the process page memfd |
//! | [`Reply`] | coordinator → client, answer to hello | 16: `"SSCR"`, status `u32`, source id `u32`, ceiling `u8`, levels `u8`, 0 `u16` | the global page (read-only) when status is 0 |
//! | [`NOTIFY`] | client → coordinator, any time after | 1: `b'!'` | none |
//!
//! The welcome exists for the policy: the coordinator reads the client's
//! executable *before* sending it, and a hello that was already waiting then
//! is refused, so the hello is known to have been sent after that read (see
//! `Coordinator` on identity). A refusal [`Reply`] (`--max-per-uid`) may come
//! instead of the welcome.
//!
//! Anything else — a wrong length, magic, version or byte, a missing or extra
//! descriptor, a truncated message — ends that connection's registration and
//! nothing else. Closing the socket deregisters.

use ss_abi::page::PAGE_VERSION;

/// `magic` of a [`Hello`]: `b"SSCH"`.
pub const HELLO_MAGIC: u32 = u32::from_le_bytes(*b"SSCH");
/// `magic` of a [`Welcome`]: `b"SSCW"`.
pub const WELCOME_MAGIC: u32 = u32::from_le_bytes(*b"SSCW");
/// `magic` of a [`Reply`]: `b"SSCR"`.
pub const REPLY_MAGIC: u32 = u32::from_le_bytes(*b"SSCR");
/// Protocol version: that of the page layouts.
pub const PROTOCOL_VERSION: u32 = PAGE_VERSION;
/// The one-byte change notification ("my page changed, scan it now").
pub const NOTIFY: u8 = b'!';
/// Length of [`Hello`] and [`Reply`] on the wire.
pub const MSG_LEN: usize = 16;

/// The coordinator's first message on an accepted connection: "send your
/// hello now".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Welcome;

impl Welcome {
    /// The wire bytes.
    pub fn encode(&self) -> [u8; MSG_LEN] {
        let mut b = [0u8; MSG_LEN];
        b[0..4].copy_from_slice(&WELCOME_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        b
    }

    /// Whether `b` is exactly a welcome of this protocol version.
    pub fn decode(b: &[u8]) -> Option<Welcome> {
        (b == Welcome.encode()).then_some(Welcome)
    }
}

/// A client's registration request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The client's pid; must match the socket's peer credentials.
    pub pid: u32,
}

impl Hello {
    /// The wire bytes.
    pub fn encode(&self) -> [u8; MSG_LEN] {
        let mut b = [0u8; MSG_LEN];
        b[0..4].copy_from_slice(&HELLO_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        b[8..12].copy_from_slice(&self.pid.to_le_bytes());
        b
    }

    /// Parses a hello; `None` for anything that is not exactly one.
    pub fn decode(b: &[u8]) -> Option<Hello> {
        let b: &[u8; MSG_LEN] = b.try_into().ok()?;
        let [m0, m1, m2, m3, v0, v1, v2, v3, p0, p1, p2, p3, r0, r1, r2, r3] = *b;
        (u32::from_le_bytes([m0, m1, m2, m3]) == HELLO_MAGIC
            && u32::from_le_bytes([v0, v1, v2, v3]) == PROTOCOL_VERSION
            && u32::from_le_bytes([r0, r1, r2, r3]) == 0)
            .then_some(Hello {
                pid: u32::from_le_bytes([p0, p1, p2, p3]),
            })
    }
}

/// Why the coordinator refused a registration (the `status` of a [`Reply`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Refusal {
    /// The hello was malformed or of another protocol version, or was sent
    /// before the coordinator's [`Welcome`].
    BadHello = 1,
    /// The process page descriptor was missing or unusable.
    BadPage = 2,
    /// The pid in the hello is not the socket peer's, or the hello was sent
    /// by another process than the one that connected (its kernel-checked
    /// `SCM_CREDENTIALS`).
    PidMismatch = 3,
    /// The coordinator has as many clients as it accepts.
    Full = 4,
    /// The coordinator failed for its own reasons (e.g. out of descriptors).
    Internal = 5,
    /// The connecting user has as many connections as the policy allows
    /// (`--max-per-uid`); sent at once, possibly before the hello is read.
    UidLimit = 6,
}

impl Refusal {
    fn from_u32(v: u32) -> Option<Refusal> {
        Some(match v {
            1 => Refusal::BadHello,
            2 => Refusal::BadPage,
            3 => Refusal::PidMismatch,
            4 => Refusal::Full,
            5 => Refusal::Internal,
            6 => Refusal::UidLimit,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::BadHello => {
                "the coordinator refused the hello: client and coordinator were built from different ss-coord versions (or the hello came before the coordinator's welcome)"
            }
            Refusal::BadPage => {
                "the coordinator refused the process page: it must be a one-page memfd sealed with F_SEAL_SHRINK"
            }
            Refusal::PidMismatch => {
                "the coordinator refused the registration: the pid sent, or the process that sent the hello, is not the one that connected"
            }
            Refusal::Full => {
                "the coordinator has its maximum number of clients; raise --max-clients or retry later"
            }
            Refusal::Internal => "the coordinator failed to register this process; see its log",
            Refusal::UidLimit => {
                "the coordinator refused the connection: this user has as many as it allows \
                 (--max-per-uid); close some or raise the limit"
            }
        })
    }
}

/// The coordinator's answer to a [`Hello`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// `Ok((source id, ceiling level, level count))` or why not.
    pub result: Result<(u32, u8, u8), Refusal>,
}

impl Reply {
    /// The wire bytes.
    pub fn encode(&self) -> [u8; MSG_LEN] {
        let mut b = [0u8; MSG_LEN];
        b[0..4].copy_from_slice(&REPLY_MAGIC.to_le_bytes());
        match self.result {
            Ok((id, ceiling, levels)) => {
                b[8..12].copy_from_slice(&id.to_le_bytes());
                b[12] = ceiling;
                b[13] = levels;
            }
            Err(r) => b[4..8].copy_from_slice(&(r as u32).to_le_bytes()),
        }
        b
    }

    /// Parses a reply; `None` for anything that is not exactly one: the
    /// reserved `u16` and, in a refusal, the words an acceptance uses must be
    /// zero (a reply is the encoding of what it decodes to, byte for byte).
    pub fn decode(b: &[u8]) -> Option<Reply> {
        let b: &[u8; MSG_LEN] = b.try_into().ok()?;
        let [m0, m1, m2, m3, s0, s1, s2, s3, i0, i1, i2, i3, ceiling, levels, _, _] = *b;
        if u32::from_le_bytes([m0, m1, m2, m3]) != REPLY_MAGIC {
            return None;
        }
        let status = u32::from_le_bytes([s0, s1, s2, s3]);
        let result = if status == 0 {
            Ok((u32::from_le_bytes([i0, i1, i2, i3]), ceiling, levels))
        } else {
            Err(Refusal::from_u32(status)?)
        };
        let reply = Reply { result };
        (reply.encode() == *b).then_some(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects() {
        let h = Hello { pid: 1234 };
        assert_eq!(Hello::decode(&h.encode()), Some(h));
        let mut bad = h.encode();
        bad[4] ^= 1;
        assert_eq!(Hello::decode(&bad), None);
        assert_eq!(Hello::decode(&h.encode()[..15]), None);
        assert_eq!(Welcome::decode(&Welcome.encode()), Some(Welcome));
        assert_eq!(Welcome::decode(&h.encode()), None);
        for r in [
            Reply {
                result: Ok((7, 2, 8)),
            },
            Reply {
                result: Err(Refusal::Full),
            },
        ] {
            assert_eq!(Reply::decode(&r.encode()), Some(r));
        }
        let mut bad = Reply {
            result: Err(Refusal::Full),
        }
        .encode();
        bad[4] = 99;
        assert_eq!(Reply::decode(&bad), None);
    }

    #[test]
    fn a_reply_with_a_nonzero_byte_it_does_not_use_is_refused() {
        let ok = Reply {
            result: Ok((7, 2, 8)),
        }
        .encode();
        let refusal = Reply {
            result: Err(Refusal::Full),
        }
        .encode();
        for (reply, unused) in [(ok, 14..16), (refusal, 8..16)] {
            for at in unused {
                let mut bad = reply;
                bad[at] = 1;
                assert_eq!(Reply::decode(&bad), None, "byte {at} of {reply:?}");
            }
        }
    }
}
