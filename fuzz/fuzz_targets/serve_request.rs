#![no_main]
//! See `fuzz/bodies/serve_request.rs`. The binary's command-line and web-app modules are
//! included at the crate root, where their `crate::cli` and `crate::serve` paths expect them.

#[allow(dead_code, unused_imports)]
#[path = "../../src/cli/mod.rs"]
mod cli;
#[allow(dead_code, unused_imports)]
#[path = "../../src/serve/mod.rs"]
mod serve;

#[path = "../bodies/mod.rs"]
mod bodies;
#[path = "../bodies/serve_request.rs"]
mod serve_request;

libfuzzer_sys::fuzz_target!(|data: &[u8]| serve_request::run(data));
