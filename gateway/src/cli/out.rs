//! The one place the command line writes results to standard output; diagnostics go to stderr.

#![allow(clippy::print_stdout)]

/// Writes one line of a command's result.
pub(crate) fn line(text: &str) {
    println!("{text}");
}
