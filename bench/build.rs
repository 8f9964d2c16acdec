//! Captures, at build time, what the benchmark report names: the compiler that
//! built it, the build profile, and the exact versions of the baselines (read
//! from the workspace's `Cargo.lock`, so the report can never disagree with
//! what was linked).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = Command::new(&rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "rustc (version unknown)".to_owned());
    println!("cargo:rustc-env=SS_BENCH_RUSTC={version}");

    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".to_owned());
    println!("cargo:rustc-env=SS_BENCH_PROFILE={profile}");

    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let lock_path = manifest.join("..").join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock_path.display());
    println!("cargo:rerun-if-changed=build.rs");
    let lock = std::fs::read_to_string(&lock_path).unwrap_or_default();
    for (krate, var) in [
        ("tokio", "SS_BENCH_TOKIO_VERSION"),
        ("async-executor", "SS_BENCH_ASYNC_EXECUTOR_VERSION"),
    ] {
        let v = locked_version(&lock, krate).unwrap_or_else(|| "?".to_owned());
        println!("cargo:rustc-env={var}={v}");
    }
}

/// The version of `krate` in a `Cargo.lock` (the first entry of that name).
fn locked_version(lock: &str, krate: &str) -> Option<String> {
    let wanted = format!("name = \"{krate}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == wanted {
            let next = lines.next()?.trim();
            let v = next.strip_prefix("version = \"")?.strip_suffix('"')?;
            return Some(v.to_owned());
        }
    }
    None
}
