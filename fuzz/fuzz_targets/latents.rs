#![no_main]
//! See `fuzz/bodies/latents.rs`.

#[path = "../bodies/mod.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::latents::run(data));
