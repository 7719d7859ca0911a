//! `splpd config`: check a configuration file before it is used, and change the one in force.

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
    /// Put a new version of the configuration in force: check it where it will run, show what
    /// changes as a diff, ask (or take --yes), keep the version it replaces for `undo`, and write
    /// it over the configuration file, which a running `splpd serve` then reloads by itself (and
    /// writes to its audit log first).
    #[command(after_help = "Examples:
  splpd config apply --config /etc/splpd/splpd.toml splpd-new.toml
  splpd config apply --config /etc/splpd/splpd.toml splpd-new.toml --yes")]
    Apply {
        /// The configuration file in force.
        #[arg(long, short)]
        config: PathBuf,
        /// The new version.
        new: PathBuf,
        /// Make the change without asking.
        #[arg(long, short)]
        yes: bool,
    },
    /// Put back the version the last `apply` (or `undo`) replaced, after showing the diff and
    /// asking; running it again redoes the change.
    #[command(after_help = "Examples:
  splpd config undo --config /etc/splpd/splpd.toml")]
    Undo {
        /// The configuration file in force.
        #[arg(long, short)]
        config: PathBuf,
        /// Make the change without asking.
        #[arg(long, short)]
        yes: bool,
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
        ConfigCommand::Apply { config, new, yes } => super::config_change::apply(&config, &new, yes),
        ConfigCommand::Undo { config, yes } => super::config_change::undo(&config, yes),
    }
}
