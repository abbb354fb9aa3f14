#![no_main]
//! See `fuzz/bodies/serve_request.rs`: the web app's router, from the `ditail` library.

#[path = "../bodies/mod.rs"]
mod bodies;
#[path = "../bodies/serve_request.rs"]
mod serve_request;

libfuzzer_sys::fuzz_target!(|data: &[u8]| serve_request::run(data));
