//! `ditail`: the command line (see `ditail --help` and the README).

mod cli;
mod serve;

/// Tensor buffers are large and short-lived: an allocator that reuses them avoids a page
/// fault and a zeroed page for every 4 KiB of every new buffer.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
