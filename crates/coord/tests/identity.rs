//! Who a registration is: the ceiling a program rule grants goes only to a
//! registration that program's process made itself.

mod common;

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::start;
use ss_coord::page::ProcessPageWriter;
use ss_coord::sys;
use ss_coord::wire::{Hello, Reply, MSG_LEN};

fn addr(path: &Path) -> (libc::sockaddr_un, libc::socklen_t) {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    for (d, s) in a.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    (a, len as libc::socklen_t)
}

/// The next reply on `sock`, skipping anything that is not one (the
/// coordinator's welcome).
fn reply(sock: &OwnedFd) -> Option<Reply> {
    sys::set_recv_timeout(sock.as_fd(), Duration::from_secs(5)).unwrap();
    for _ in 0..2 {
        let mut buf = [0u8; MSG_LEN + 1];
        let m = sys::recv_msg(sock.as_fd(), &mut buf, false).ok()?;
        if m.len == 0 {
            return None;
        }
        if let Some(r) = Reply::decode(&buf[..m.len]) {
            return Some(r);
        }
    }
    None
}

/// A coordinator that grants `/usr/bin/sleep` ceiling 0 and everyone else 5,
/// an unconnected socket with the coordinator's address, and a `sleep 30`
/// to spawn.
struct Setup {
    /// `sleep 30`, to spawn.
    cmd: Command,
    coord: ss_coord::Running,
    sock: OwnedFd,
    addr: (libc::sockaddr_un, libc::socklen_t),
}

fn setup(name: &str) -> Option<Setup> {
    let sleep = Path::new("/usr/bin/sleep");
    if !sleep.exists() {
        eprintln!("skipped: no /usr/bin/sleep");
        return None;
    }
    let (coord, path) = start(name, |c| {
        c.policy.hold = None;
        c.policy.apply(&["default", "5"]).unwrap();
        c.policy.apply(&["program", "/usr/bin/sleep", "0"]).unwrap();
    });
    // SAFETY: plain socket call.
    let s = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    assert!(s >= 0);
    // SAFETY: a fresh descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(s) };
    let mut cmd = Command::new(sleep);
    cmd.arg("30");
    Some(Setup {
        cmd,
        coord,
        sock,
        addr: addr(&path),
    })
}

/// The reviewer's attack: a child connects the socket and execs a trusted
/// program; the parent sends the hello with the child's pid and its own page.
#[test]
fn a_borrowed_pid_does_not_lend_its_ceiling() {
    let Some(Setup {
        mut cmd,
        coord,
        sock,
        addr: (a, len),
    }) = setup("borrowed-pid")
    else {
        return;
    };
    let raw = sock.as_raw_fd();
    // SAFETY: the closure only makes one async-signal-safe syscall.
    unsafe {
        cmd.pre_exec(move || {
            if libc::connect(raw, (&a as *const libc::sockaddr_un).cast(), len) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let page = ProcessPageWriter::create().unwrap();
    let hello = Hello { pid: child.id() }.encode();
    let _ = sys::send_msg(sock.as_fd(), &hello, &[page.fd()], false);
    let r = reply(&sock);
    let status = coord.status();
    let _ = child.kill();
    let _ = child.wait();
    // Refused, or at most the sender's own ceiling.
    if let Some(Ok((_, ceiling, _))) = r.map(|r| r.result) {
        assert_eq!(
            ceiling, 5,
            "the trusted program's ceiling was lent: {status:?}"
        );
    }
    assert!(
        status.clients.iter().all(|c| c.ceiling.level() != 0),
        "{status:?}"
    );
}

/// The other order: the child itself connects, waits for the welcome, sends
/// its hello (with a page its parent keeps mapped) and only then execs the
/// trusted program. The executable read before the welcome is the child's
/// own, so it gets the default ceiling, not the program's.
#[test]
fn a_hello_sent_before_exec_gets_the_senders_ceiling() {
    let Some(Setup {
        mut cmd,
        coord,
        sock,
        addr: (a, len),
    }) = setup("pre-exec")
    else {
        return;
    };
    let raw = sock.as_raw_fd();
    let page = ProcessPageWriter::create().unwrap();
    let page_fd = page.fd().as_raw_fd();
    // SAFETY: the closure makes only syscalls on stack data (no allocation).
    unsafe {
        cmd.pre_exec(move || {
            if libc::connect(raw, (&a as *const libc::sockaddr_un).cast(), len) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut buf = [0u8; MSG_LEN];
            if libc::recv(raw, buf.as_mut_ptr().cast(), MSG_LEN, 0) != MSG_LEN as isize {
                return Err(std::io::Error::other("no welcome"));
            }
            let hello = Hello {
                pid: libc::getpid() as u32,
            }
            .encode();
            let fd = std::os::fd::BorrowedFd::borrow_raw(page_fd);
            sys::send_msg(
                std::os::fd::BorrowedFd::borrow_raw(raw),
                &hello,
                &[fd],
                false,
            )?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let r = reply(&sock).map(|r| r.result);
    let status = coord.status();
    let _ = child.kill();
    let _ = child.wait();
    match r {
        Some(Ok((_, ceiling, _))) => {
            assert_eq!(
                ceiling, 5,
                "the trusted program's ceiling was taken: {status:?}"
            )
        }
        other => panic!("an honest-looking registration was refused: {other:?}"),
    }
}
