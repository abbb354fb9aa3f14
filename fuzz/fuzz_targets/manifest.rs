#![no_main]
//! See `fuzz/bodies/manifest.rs`.

#[path = "../bodies/mod.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::manifest::run(data));
