//! Code shared by the user programs: the matrix benchmark server of
//! `shared/PROTOCOL.md` in the paper's four models (§4), which the programs
//! `kcuc`, `kcut`, `ktut` and `ktuc` run.
#![no_std]

extern crate alloc;

pub mod server;
