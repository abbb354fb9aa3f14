//! `ditail`: the command line (see `ditail --help` and the README).

mod alloc;
mod cli;

fn main() -> std::process::ExitCode {
    alloc::configure();
    cli::main()
}
