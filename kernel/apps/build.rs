//! Links every user program with `user.ld` (the user layout of `ss_abi::uspace`).

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    println!("cargo:rerun-if-changed={dir}/user.ld");
    println!("cargo:rustc-link-arg-bins=-T{dir}/user.ld");
}
