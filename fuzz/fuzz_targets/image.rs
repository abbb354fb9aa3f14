#![no_main]
//! See `fuzz/bodies/image.rs`.

#[path = "../bodies/mod.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::image::run(data));
