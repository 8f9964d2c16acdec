//! No process can write the global page: mapping it writable is refused, so is
//! upgrading a read-only mapping, writing the file, or reopening it writable and
//! mapping that; a store through the mapping kills the process with SIGSEGV.
//!
//! The test re-runs itself as the client that tries (`CHILD` in the environment).

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use common::{start, wait_view};
use ss_coord::Client;

const CHILD: &str = "SS_COORD_READONLY_CHILD";
const NAME: &str = "global_page_is_read_only";

#[test]
fn global_page_is_read_only() {
    if let Some(path) = std::env::var_os(CHILD) {
        return child(path.into());
    }
    let (_coord, path) = start("ro", |c| c.policy.hold = None);
    let observer = Client::connect(&path).unwrap();
    observer.publish(0b1).unwrap();
    assert!(wait_view(&observer, |g, _| g == 0b1));
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD, &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in [
        "MMAP-WRITE-REFUSED",
        "MPROTECT-REFUSED",
        "WRITE-REFUSED",
        "REOPENED-MMAP-WRITE-REFUSED",
        "TRUNCATE-REFUSED",
        "STORING",
    ] {
        assert!(stdout.contains(line), "missing {line}:\n{stdout}");
    }
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSEGV),
        "the store did not fault: {:?}\n{stdout}",
        out.status
    );
    assert_eq!(observer.view().global.bits(), 0b1, "the page is intact");
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn child(path: std::path::PathBuf) {
    let c = Client::connect(&path).unwrap();
    let fd = c.global_fd().as_raw_fd();
    let len = 4096;
    // SAFETY: the tries below map fresh memory or fail; nothing aliases Rust
    // objects. The final store is meant to fault.
    unsafe {
        let rw = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        assert_eq!(
            rw,
            libc::MAP_FAILED,
            "a writable shared mapping was allowed"
        );
        println!("MMAP-WRITE-REFUSED {}", errno());

        let ro = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        );
        assert_ne!(ro, libc::MAP_FAILED);
        let r = libc::mprotect(ro, len, libc::PROT_READ | libc::PROT_WRITE);
        assert_eq!(r, -1, "mprotect to PROT_WRITE was allowed");
        println!("MPROTECT-REFUSED {}", errno());

        let byte = 0u8;
        let r = libc::pwrite(fd, (&byte as *const u8).cast(), 1, 0);
        assert_eq!(r, -1, "write(2) to the global page was allowed");
        println!("WRITE-REFUSED {}", errno());

        // Reopening through /proc may succeed (a memfd's inode is 0777); the
        // F_SEAL_FUTURE_WRITE seal still refuses a writable mapping and writes.
        let proc_path = format!("/proc/self/fd/{fd}\0");
        let rw_fd = libc::open(proc_path.as_ptr().cast(), libc::O_RDWR);
        if rw_fd >= 0 {
            let rw = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                rw_fd,
                0,
            );
            assert_eq!(rw, libc::MAP_FAILED, "the reopened fd mapped writable");
            println!("REOPENED-MMAP-WRITE-REFUSED {}", errno());
            let r = libc::pwrite(rw_fd, (&byte as *const u8).cast(), 1, 0);
            assert_eq!(r, -1, "write(2) through the reopened fd was allowed");
            assert_eq!(libc::ftruncate(rw_fd, 0), -1, "shrinking was allowed");
            println!("TRUNCATE-REFUSED {}", errno());
        } else {
            println!("REOPENED-MMAP-WRITE-REFUSED (reopen refused: {})", errno());
            println!("TRUNCATE-REFUSED (reopen refused)");
        }

        println!("STORING");
        // Must raise SIGSEGV: the mapping is read-only.
        std::ptr::write_volatile(ro.cast::<u64>().add(2), u64::MAX);
    }
    println!("STORE-SUCCEEDED");
}
