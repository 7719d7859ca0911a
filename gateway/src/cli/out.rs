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

/// An error and its causes on one line, "what failed: why: why that", like anyhow's `{:#}` but
/// without the causes the line already says: many error types quote their source in their own
/// message (`cannot read FILE: {source}`) and also report it as their source.
pub(crate) fn error_line(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    let mut previous = line.clone();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        // Quoted by the link before it, which ends with it ("cannot read X: {source}"); a
        // cause merely found elsewhere in the line is still a cause of its own.
        if !previous.ends_with(&format!(": {cause}")) {
            line.push_str(": ");
            line.push_str(&cause);
        }
        previous = cause;
    }
    line
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    /// Quotes its source in its message, and reports it as its source too.
    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {path}: {source}")]
    struct Quoting {
        path: &'static str,
        #[source]
        source: io::Error,
    }

    /// Reports its source without quoting it.
    #[derive(Debug, thiserror::Error)]
    #[error("the key is unusable")]
    struct Silent {
        #[source]
        source: io::Error,
    }

    fn not_found() -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, "No such file or directory (os error 2)")
    }

    #[test]
    fn a_cause_the_message_already_quotes_is_not_repeated() {
        let err = anyhow::Error::new(Quoting { path: "splpd.toml", source: not_found() });
        assert_eq!(error_line(&err), "cannot read splpd.toml: No such file or directory (os error 2)");
        let err = err.context("reading the configuration");
        assert_eq!(
            error_line(&err),
            "reading the configuration: cannot read splpd.toml: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn a_cause_not_in_the_message_is_kept() {
        let err = anyhow::Error::new(Silent { source: not_found() });
        assert_eq!(error_line(&err), "the key is unusable: No such file or directory (os error 2)");
        let err = anyhow::Error::new(not_found()).context("opening gw1.key");
        assert_eq!(error_line(&err), "opening gw1.key: No such file or directory (os error 2)");
        // Found in the line, but not as the quoted cause: kept.
        let denied = io::Error::new(io::ErrorKind::PermissionDenied, "denied");
        let err = anyhow::Error::new(denied).context("opening /srv/denied");
        assert_eq!(error_line(&err), "opening /srv/denied: denied");
    }
}
