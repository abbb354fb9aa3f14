//! The GPU benchmark's three programs in one binary, chosen by the name it is called by
//! (`bench`, `bench_attention`, `gpu_counts`: links to it), so that `scripts/gpu_bench.sh`
//! carries one copy of burn, cubecl and ditail instead of three. The device tool carries
//! the repository's tracked files (43 MB) and at most 64 MiB in all: three release
//! binaries are ~100 MB each stripped, one compresses to ~18 MB with xz.
//!
//! ```text
//! cargo build --release --example gpu_tools
//! ln -s gpu_tools gpu_counts && ./gpu_counts --backend wgpu --dtype f16
//! ```

// bench and bench_attention each declare the examples' `common` module, as when each is
// built alone; here it is loaded twice, harmlessly (helpers only, no global state).
#![allow(clippy::duplicate_mod)]

#[path = "bench.rs"]
mod bench;
#[path = "bench_attention.rs"]
mod bench_attention;
#[path = "gpu_counts.rs"]
mod gpu_counts;

use anyhow::{Result, bail};

fn main() -> Result<()> {
    let called = std::env::args().next().unwrap_or_default();
    let name = std::path::Path::new(&called)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    // The programs read their arguments after the name, so the name is the choice.
    match name.as_str() {
        "bench" => bench::main(),
        "bench_attention" => bench_attention::main(),
        "gpu_counts" => gpu_counts::main(),
        other => {
            bail!("gpu_tools: called as `{other}`; link it as bench, bench_attention or gpu_counts")
        }
    }
}
