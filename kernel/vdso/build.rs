//! Links the vDSO at `ss_abi::uspace::VDSO_BASE` with its table first.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    println!("cargo:rerun-if-changed={dir}/vdso.ld");
    println!("cargo:rustc-link-arg-bins=-T{dir}/vdso.ld");
}
