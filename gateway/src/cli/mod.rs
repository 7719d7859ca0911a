//! Command-line surface of `splpd`: one submodule per command group.

use std::ffi::OsStr;
use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod audit;
mod certs;
mod config;
mod config_change;
mod config_remote;
mod demo;
mod https;
pub(crate) mod out;
mod serve;

/// splpd: the regional government service bus gateway (SPLPD).
///
/// It authenticates every caller by its certificate, routes REST and gRPC calls to the owning
/// agency, region or the national SPLP, enforces access rights and quotas, and keeps a
/// tamper-evident audit log of every exchange.
#[derive(Debug, Parser)]
#[command(name = "splpd", version, propagate_version = true, max_term_width = 100)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the region's certificate authority: create it, issue and revoke certificates, inspect any.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Run the gateway: accept exchanges on the configured listeners until Ctrl-C or SIGTERM.
    Serve(serve::ServeArgs),
    /// Run a local sandbox: a sample region's gateway and services, called with real certificates.
    Demo(demo::DemoArgs),
    /// Work with the gateway's configuration file.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Work with the audit log: verify it, query it, prove and check records, export archives.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Audit(cmd) => audit::run(cmd),
        Command::Certs(cmd) => certs::run(cmd),
        Command::Config(cmd) => config::run(cmd),
        Command::Demo(args) => demo::run(&args),
        Command::Serve(args) => serve::run(&args),
    }
}

/// Logs to stderr; `RUST_LOG` sets the level (default `default_level`). Colours only on a
/// terminal: in a file or the journal the escape codes would be noise.
pub(crate) fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let ansi = use_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}

/// Whether to colour output to a stream: only a terminal, and not when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
fn use_colour(is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    is_terminal && no_color.is_none_or(OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
        assert!(!use_colour(false, Some(OsStr::new(""))));
    }
}
