#![no_main]
//! See `fuzz/bodies/lora.rs`.

#[path = "../bodies/mod.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::lora::run(data));
