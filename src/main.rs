//! `ditail`: the command line (see `ditail --help` and the README).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
