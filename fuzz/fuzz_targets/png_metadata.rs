#![no_main]
//! See `fuzz/bodies/png_metadata.rs`.

#[path = "../bodies/mod.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::png_metadata::run(data));
