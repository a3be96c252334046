//! Paths of the guest components built by `build.rs` for `wasm32-wasip2`: one constant per
//! `<crate>.wasm` (crate name upper-cased, `-` → `_`) and [`ALL`]. For tests and benches only.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
