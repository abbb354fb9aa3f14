#![no_main]
//! See `fuzz/bodies/tokenizer_files.rs`.

#[path = "../bodies/mod.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::tokenizer_files::run(data));
