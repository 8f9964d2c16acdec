//! A client trusts only a coordinator of its own user (or root), and only a
//! global page that cannot be truncated under it.

mod common;

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use common::socket_path;
use ss_abi::page::{GlobalPage, GLOBAL_PAGE_MAGIC, PAGE_VERSION};
use ss_coord::page::GlobalPageWriter;
use ss_coord::sys;
use ss_coord::wire::{Reply, Welcome, MSG_LEN};
use ss_coord::Client;

/// A fake coordinator of our own user on a thread: welcomes one client and
/// answers its hello with `page` as the global page.
fn fake(path: &Path, page: OwnedFd) -> std::thread::JoinHandle<()> {
    let listener = sys::listen(path, 4).unwrap();
    std::thread::spawn(move || {
        let sock = loop {
            if let Some(s) = sys::accept(listener.as_fd()).unwrap() {
                break s;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let _ = sys::send_msg(sock.as_fd(), &Welcome.encode(), &[], false);
        let mut buf = [0u8; MSG_LEN + 1];
        for _ in 0..5000 {
            match sys::recv_msg(sock.as_fd(), &mut buf, true) {
                Ok(_) => break,
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        let reply = Reply {
            result: Ok((0, 0, 8)),
        };
        let _ = sys::send_msg(sock.as_fd(), &reply.encode(), &[page.as_fd()], false);
        std::thread::sleep(Duration::from_millis(200));
    })
}

/// A file of one page with a valid global page header.
fn page_file(f: &mut std::fs::File) {
    let mut b = vec![0u8; 4096];
    let m = std::mem::offset_of!(GlobalPage, magic);
    let v = std::mem::offset_of!(GlobalPage, version);
    b[m..m + 4].copy_from_slice(&GLOBAL_PAGE_MAGIC.to_ne_bytes());
    b[v..v + 4].copy_from_slice(&PAGE_VERSION.to_ne_bytes());
    f.write_all(&b).unwrap();
}

#[test]
fn a_global_page_that_can_shrink_is_refused() {
    // A regular file: the fake could truncate it and every view() would
    // die of SIGBUS.
    let path = socket_path("fake-file");
    let file_path = std::env::temp_dir().join(format!("ss-coord-t{}-page", std::process::id()));
    let mut f = std::fs::File::create(&file_path).unwrap();
    page_file(&mut f);
    let ro = std::fs::File::open(&file_path).unwrap();
    let _ = std::fs::remove_file(&file_path);
    refused(&path, ro.into(), "a regular file");

    // A memfd without F_SEAL_SHRINK.
    let path = socket_path("fake-unsealed");
    let memfd = sys::memfd(c"unsealed-global", 4096).unwrap();
    let mut f = std::fs::File::from(memfd.try_clone().unwrap());
    page_file(&mut f);
    refused(&path, memfd, "an unsealed memfd");
}

/// A client of the fake coordinator at `path` serving `page` fails to
/// register, and says the data was bad.
fn refused(path: &Path, page: OwnedFd, what: &str) {
    let t = fake(path, page);
    let err = Client::connect(path)
        .err()
        .unwrap_or_else(|| panic!("{what} was accepted"));
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    t.join().unwrap();
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_coordinator_of_another_user_is_refused() {
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        // Needs root to run a listener as another user; the check itself
        // (peer uid = ours or root) runs in every other test.
        eprintln!("skipped: not root");
        return;
    }
    let nobody: u32 = 65534;
    let path = socket_path("other-user");
    let (addr, len) = {
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: all-zero is a valid sockaddr_un.
        let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        a.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_os_str().as_bytes();
        for (d, s) in a.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        (
            a,
            (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t,
        )
    };
    // A real, sealed global page: only the peer's uid is wrong.
    let page = GlobalPageWriter::create().unwrap();
    let page_fd = page.client_fd().as_raw_fd();
    let welcome = Welcome.encode();
    let reply = Reply {
        result: Ok((0, 0, 8)),
    }
    .encode();
    let (mut ready_r, ready_w) = std::io::pipe().unwrap();
    let ready_w = ready_w.as_raw_fd();
    // SAFETY: the child makes only syscalls on data prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: plain syscalls; the child never returns.
        unsafe {
            if libc::setgid(nobody) != 0 || libc::setuid(nobody) != 0 {
                libc::_exit(3);
            }
            let l = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0);
            if libc::bind(l, (&addr as *const libc::sockaddr_un).cast(), len) != 0
                || libc::listen(l, 4) != 0
            {
                libc::_exit(4);
            }
            libc::write(ready_w, b"r".as_ptr().cast(), 1);
            let s = libc::accept(l, std::ptr::null_mut(), std::ptr::null_mut());
            let sock = std::os::fd::BorrowedFd::borrow_raw(s);
            let _ = sys::send_msg(sock, &welcome, &[], false);
            let mut buf = [0u8; MSG_LEN];
            libc::recv(s, buf.as_mut_ptr().cast(), MSG_LEN, 0);
            let fd = std::os::fd::BorrowedFd::borrow_raw(page_fd);
            let _ = sys::send_msg(sock, &reply, &[fd], false);
            libc::sleep(5);
            libc::_exit(0);
        }
    }
    let mut b = [0u8; 1];
    std::io::Read::read_exact(&mut ready_r, &mut b).unwrap();
    let r = Client::connect(&path);
    // SAFETY: the child forked above.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    let _ = std::fs::remove_file(&path);
    let err = r.err().expect("a coordinator of another user was trusted");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
}
