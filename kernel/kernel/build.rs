//! Links the kernel at 0x80200000 and embeds the user programs.
//!
//! `cargo xtask` builds `kernel/apps` first and passes their directory in
//! `SS_APPS_DIR` and their names in `SS_APPS` (comma-separated); each becomes an
//! entry of `apps::APPS`. Without them (a bare `cargo build` or clippy) the
//! table is empty and the kernel says so when asked to spawn.

use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let ld = dir.join("src/linker.ld");
    println!("cargo:rerun-if-changed={}", ld.display());
    println!("cargo:rustc-link-arg-bins=-T{}", ld.display());
    println!("cargo:rerun-if-env-changed=SS_APPS_DIR");
    println!("cargo:rerun-if-env-changed=SS_APPS");

    // ELF parsing reads the headers in place: keep each image 8-byte aligned.
    let mut table = String::from(
        "#[allow(dead_code)] // unused when no program is embedded\n#[repr(C, align(8))]\nstruct Aligned<B: ?Sized>(B);\n\n\
         /// The embedded user programs: (name, ELF image).\npub static APPS: &[(&str, &[u8])] = &[\n",
    );
    if let (Ok(apps_dir), Ok(names)) = (env::var("SS_APPS_DIR"), env::var("SS_APPS")) {
        for name in names.split(',').filter(|n| !n.is_empty()) {
            let path = PathBuf::from(&apps_dir).join(name);
            assert!(
                path.exists(),
                "user program {} is missing; run `cargo xtask qemu`",
                path.display()
            );
            println!("cargo:rerun-if-changed={}", path.display());
            writeln!(
                table,
                "    ({name:?}, {{ const A: &Aligned<[u8]> = &Aligned(*include_bytes!({:?})); &A.0 }}),",
                path.display().to_string()
            )
            .unwrap();
        }
    } else {
        println!("cargo:warning=SS_APPS_DIR/SS_APPS unset: no user programs embedded (use `cargo xtask qemu`)");
    }
    table.push_str("];\n");
    // The shared scheduler code (the vDSO), built beside the programs.
    println!("cargo:rerun-if-env-changed=SS_VDSO");
    match env::var("SS_VDSO") {
        Ok(path) => {
            println!("cargo:rerun-if-changed={path}");
            writeln!(
                table,
                "/// The vDSO's ELF image.\npub static VDSO: &[u8] = {{ const A: &Aligned<[u8]> = &Aligned(*include_bytes!({path:?})); &A.0 }};"
            )
            .unwrap();
        }
        Err(_) => table.push_str(
            "/// The vDSO's ELF image (none in this build).\npub static VDSO: &[u8] = &[];\n",
        ),
    }
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("apps.rs");
    std::fs::write(out, table).unwrap();
}
