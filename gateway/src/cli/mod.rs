//! Command-line surface of `splpd`: one submodule per command group.

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

/// Logs to stderr; `RUST_LOG` sets the level (default `info`).
pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
