//! The one place the command line writes results to standard output; diagnostics go to stderr.

use std::io::Write as _;

/// Writes one line of a command's result. When the reader has gone away (`splpd audit query …
/// | head`), the command stops quietly, as command-line tools do, instead of panicking.
pub(crate) fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{text}").is_err() {
        std::process::exit(0);
    }
}
