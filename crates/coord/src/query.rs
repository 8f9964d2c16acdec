//! The read-only query socket behind the live view (`ss-top`).
//!
//! Beside its registration socket the coordinator listens on a `SOCK_STREAM`
//! Unix socket ([`query_path`]: the registration socket's name plus `.query`).
//! A peer connects and reads one [`Snapshot`] (the coordinator's [`Status`]
//! and a format number) as JSON followed by a newline;
//! the coordinator then closes the connection. Anything the peer sends is
//! ignored: the socket cannot change anything.
//!
//! A query peer is untrusted like any other. Queries are served by a thread of
//! their own, one at a time, from a copy of the [`Status`] the coordinator's
//! loop publishes after each turn that changed it; the loop never waits for a
//! query peer. A peer that does not read is cut off after [`WRITE_TIMEOUT`]
//! and delays only the queries queued behind it.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::coordinator::Status;
use crate::sys;

/// The snapshot format; bumped on an incompatible change.
pub const SNAPSHOT_FORMAT: u32 = 1;
/// How long the coordinator waits for a query peer to take its snapshot.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest snapshot [`fetch`] accepts.
const MAX_SNAPSHOT: u64 = 16 << 20;

/// The query socket beside registration socket `socket`: `<socket>.query`.
pub fn query_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".query");
    name.into()
}

/// What a query peer reads: the coordinator's [`Status`] and the format.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`SNAPSHOT_FORMAT`].
    pub format: u32,
    /// The coordinator's state after its last turn that changed it.
    pub status: Status,
}

impl Snapshot {
    /// One snapshot as text, one process per line: `ss-top --once`.
    pub fn render_text(&self) -> String {
        use std::fmt::Write as _;
        let s = &self.status;
        let n = s.levels.count();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "global {}  multi {}  seq {}  processes {}  refused {}  violations {}  exited {}  disconnected {}",
            bits_str(s.view.global.bits(), n),
            bits_str(s.view.multi.bits(), n),
            s.seq,
            s.clients.len(),
            s.refused,
            s.violations,
            s.exited,
            s.disconnected,
        );
        let _ = writeln!(out, "{}", s.weights);
        let w = usize::from(n).max(6);
        let _ = writeln!(
            out,
            "{:>7} {:>6} {:>4} {:<w$} {:<w$} {:>6} {:>6} {:>5} {:>9} {:<8} PROGRAM",
            "PID",
            "UID",
            "CEIL",
            "READY",
            "EFFECT",
            "DEMOT",
            "BUDGET",
            "STALL",
            "YIELDS/S",
            "WEIGHT"
        );
        for c in &s.clients {
            let ready = if c.header_ok {
                bits_str(c.raw, n)
            } else {
                "bad-page".into()
            };
            let _ = writeln!(
                out,
                "{:>7} {:>6} {:>4} {:<w$} {:<w$} {:>6} {:>5}% {:>5} {:>9} {:<8} {}",
                c.pid,
                c.uid,
                c.ceiling.level(),
                ready,
                bits_str(c.effective, n),
                if c.demoted { "yes" } else { "no" },
                c.budget_percent,
                if c.stalled { "yes" } else { "no" },
                c.yields_per_sec,
                c.os_weight.to_string(),
                c.exe.as_deref().unwrap_or(Path::new("?")).display(),
            );
        }
        out
    }
}

/// Serde for [`GlobalView`](ss_core::global::GlobalView): `{"global": u64, "multi": u64}`; `multi` is kept
/// a subset of `global` on the way in.
pub mod as_view {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use ss_core::global::GlobalView;
    use ss_core::PrioBitmap;

    #[derive(Serialize, Deserialize)]
    struct Words {
        global: u64,
        multi: u64,
    }

    /// Writes the two words.
    pub fn serialize<S: Serializer>(v: &GlobalView, s: S) -> Result<S::Ok, S::Error> {
        Words {
            global: v.global.bits(),
            multi: v.multi.bits(),
        }
        .serialize(s)
    }

    /// Reads the two words.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<GlobalView, D::Error> {
        let w = Words::deserialize(d)?;
        Ok(GlobalView {
            global: PrioBitmap::from_bits(w.global),
            multi: PrioBitmap::from_bits(w.multi & w.global),
        })
    }
}

/// Serde for [`Levels`](ss_abi::Levels) as its count; an invalid count is an error.
pub mod as_levels {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};
    use ss_abi::Levels;

    /// Writes the count.
    pub fn serialize<S: Serializer>(l: &Levels, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(l.count())
    }

    /// Reads and checks the count.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Levels, D::Error> {
        Levels::new(u8::deserialize(d)?).map_err(|_| D::Error::custom("levels must be 1..=64"))
    }
}

/// Serde for [`Priority`](ss_abi::Priority) as its level; an invalid level is an error.
pub mod as_priority {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};
    use ss_abi::Priority;

    /// Writes the level.
    pub fn serialize<S: Serializer>(p: &Priority, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(p.level())
    }

    /// Reads and checks the level.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Priority, D::Error> {
        Priority::new(u8::deserialize(d)?).map_err(|_| D::Error::custom("a level is 0..=63"))
    }
}

/// A bitmap of `levels` bits as text, most important first: the level's last
/// digit where set, `.` where clear (`0..3....` is levels 0 and 3 of 8).
pub fn bits_str(bits: u64, levels: u8) -> String {
    (0..levels.min(64))
        .map(|l| {
            if bits >> l & 1 == 1 {
                char::from(b'0' + l % 10)
            } else {
                '.'
            }
        })
        .collect()
}

/// Reads one snapshot from the query socket at `path`.
///
/// # Errors
/// No coordinator there, a timeout (5 s), or a reply that is not a snapshot
/// of this format.
pub fn fetch(path: &Path) -> io::Result<Snapshot> {
    let fd = sys::connect_stream(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "no coordinator query socket at {} ({e}); is ss-coord running with that --socket?",
                path.display()
            ),
        )
    })?;
    let stream = UnixStream::from(fd);
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    stream.take(MAX_SNAPSHOT).read_to_end(&mut buf)?;
    let snap: Snapshot = serde_json::from_slice(&buf).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the query socket's answer is not a snapshot ({e})"),
        )
    })?;
    if snap.format != SNAPSHOT_FORMAT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the coordinator speaks snapshot format {}, this tool {SNAPSHOT_FORMAT}: use the ss-top of the same build",
                snap.format
            ),
        ));
    }
    Ok(snap)
}

/// Serves queries on `listener` until `stop` becomes readable.
pub(crate) fn serve(listener: OwnedFd, stop: Arc<OwnedFd>, status: Arc<Mutex<Status>>) {
    loop {
        let Ok((incoming, stopping)) = sys::wait_readable(listener.as_fd(), stop.as_fd()) else {
            return;
        };
        if stopping {
            return;
        }
        if !incoming {
            continue;
        }
        while let Ok(Some(sock)) = sys::accept(listener.as_fd()) {
            let snap = match status.lock() {
                Ok(s) => Snapshot {
                    format: SNAPSHOT_FORMAT,
                    status: s.clone(),
                },
                Err(_) => return,
            };
            let _ = answer(sock, &snap);
        }
    }
}

fn answer(sock: OwnedFd, snap: &Snapshot) -> io::Result<()> {
    sys::set_blocking(sock.as_fd())?;
    let mut stream = UnixStream::from(sock);
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut bytes = serde_json::to_vec(snap).map_err(io::Error::other)?;
    bytes.push(b'\n');
    stream.write_all(&bytes)
}
