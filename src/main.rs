//! `ditail`: the command line (see `ditail --help` and the README).

mod alloc;
mod cli;
mod serve;

fn main() -> std::process::ExitCode {
    alloc::configure();
    cli::main()
}
