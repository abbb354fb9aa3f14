//! Command output on stdout (`ditail devices`, `ditail eval`'s tables, a batch's status).
//! `println!` panics when the reader has gone (`ditail devices | head -1`: "failed printing
//! to stdout: Broken pipe"); these end the process quietly instead, with success, as the
//! reader took what it wanted (as `ripgrep` does). Any other write error is reported and
//! exits 1.

use std::io::Write;

/// Writes `args` to stdout, then a newline when `newline`.
pub fn write(args: std::fmt::Arguments, newline: bool) {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| match newline {
            true => out.write_all(b"\n"),
            false => Ok(()),
        })
        .and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            std::process::exit(1)
        }
    }
}

/// `println!` on stdout, ending quietly on a closed pipe.
macro_rules! outln {
    () => {
        $crate::cli::out::write(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::cli::out::write(format_args!($($arg)*), true)
    };
}

/// `print!` on stdout, ending quietly on a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out::write(format_args!($($arg)*), false)
    };
}

pub(crate) use {out, outln};
