//! `splpd config`: check a configuration file before it is used.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use splpd_gateway::config::{self, ConfigError};

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Check a configuration file: syntax, keys, identifiers, references between tables, trust
    /// scopes, certificate and key files, addresses. Prints every mistake as FILE:LINE:COLUMN with
    /// a hint, and exits with status 1 when there is any.
    #[command(
        after_help = "Examples:\n  splpd config check /etc/splpd/splpd.toml\n  splpd config check examples/region-1602.toml"
    )]
    Check {
        /// The configuration file.
        file: PathBuf,
    },
}

pub(crate) fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Check { file } => match config::load(&file) {
            Ok(cfg) => {
                super::out::line(&format!(
                    "{}: ok: gateway {}, {} listener(s), {} trust anchor(s), {} service(s), {} grant(s), {} peer(s)",
                    file.display(),
                    cfg.gateway.id,
                    cfg.listeners.len(),
                    cfg.trust_anchors.len(),
                    cfg.services.len(),
                    cfg.grants.len(),
                    cfg.peers.len(),
                ));
                Ok(ExitCode::SUCCESS)
            }
            Err(err @ ConfigError::Invalid(_)) => {
                eprintln!("{err}");
                Ok(ExitCode::FAILURE)
            }
            Err(err) => Err(err.into()),
        },
    }
}
