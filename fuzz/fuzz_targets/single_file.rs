#![no_main]
//! See `fuzz/bodies/single_file.rs`.

#[path = "../bodies/mod.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::single_file::run(data));
