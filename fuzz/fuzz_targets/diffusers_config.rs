#![no_main]
//! See `fuzz/bodies/diffusers_config.rs`.

#[path = "../bodies/mod.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::diffusers_config::run(data));
