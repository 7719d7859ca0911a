//! `splpd config`: check a configuration file before it is used, and change the one in force.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
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
    /// Print the annotated example configuration: a sample region (the demo's) with every table,
    /// the keys each takes, their defaults and why. Save it, change its identifiers, files and
    /// addresses to your region's, and check it.
    #[command(after_help = "Examples:\n  splpd config example > splpd.toml")]
    Example,
    /// Put a new version of the configuration in force: check it where it will run, show what
    /// changes as a diff, ask (or take --yes), keep the version it replaces for `undo`, and write
    /// it over the configuration file, which a running `splpd serve` then reloads by itself (and
    /// writes to its audit log first, naming your account on the host and the reason given with
    /// --issue). With --admin, the same through the gateway's admin listener, as an operator: the
    /// audit log then names your admin certificate.
    #[command(after_help = "Examples:
  splpd config apply --config /etc/splpd/splpd.toml splpd-new.toml
  splpd config apply --config /etc/splpd/splpd.toml splpd-new.toml --yes --issue 'CHG-12 new CRL URL'
  splpd config apply --admin https://splpd.okikab.go.id:9443 --ca ca.crt --cert budi.crt --key budi.key \\
      --issue 'CHG-13 quota for Dinkes' splpd-new.toml")]
    Apply {
        #[command(flatten)]
        target: Target,
        /// The new version.
        new: PathBuf,
        #[command(flatten)]
        change: Change,
    },
    /// Put back the version the last `apply` (or `undo`) replaced, after showing the diff and
    /// asking; running it again redoes the change. With --admin, through the admin listener.
    #[command(after_help = "Examples:
  splpd config undo --config /etc/splpd/splpd.toml
  splpd config undo --admin https://splpd.okikab.go.id:9443 --ca ca.crt --cert budi.crt --key budi.key")]
    Undo {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        change: Change,
    },
    /// List the versions earlier changes replaced, oldest first: when, which version, and the
    /// file that keeps it (on the gateway's host). The last is the one `undo` puts back.
    #[command(after_help = "Examples:
  splpd config history --config /etc/splpd/splpd.toml
  splpd config history --admin https://splpd.okikab.go.id:9443 --ca ca.crt --cert budi.crt --key budi.key")]
    History {
        #[command(flatten)]
        target: Target,
    },
}

/// Which configuration: the file on this host, or the one a gateway's admin listener serves.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(false).args(["config", "admin"])))]
pub(crate) struct Target {
    /// The configuration file in force (on this host), or --admin for a gateway's admin listener.
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[command(flatten)]
    remote: Remote,
}

/// How a change is made.
#[derive(Debug, Clone, Args)]
pub(crate) struct Change {
    /// Make the change without asking.
    #[arg(long, short)]
    yes: bool,
    /// Why: a change ticket or a few words, kept in the change's audit record (`issue`).
    #[arg(long, default_value = "")]
    issue: String,
}

/// A gateway's admin listener, and the operator's certificate to reach it with.
#[derive(Debug, Clone, Args)]
pub(crate) struct Remote {
    /// The gateway's admin listener (`https://HOST:PORT`), instead of --config.
    #[arg(long, requires_all = ["ca", "cert", "key"])]
    pub(crate) admin: Option<String>,
    /// The CA certificate(s) to trust for the gateway's certificate.
    #[arg(long, requires = "admin")]
    pub(crate) ca: Option<PathBuf>,
    /// Your admin certificate (`splpd certs issue ... admin ID/PEMDA/1602/NAME`).
    #[arg(long, requires = "admin")]
    pub(crate) cert: Option<PathBuf>,
    /// Its private key.
    #[arg(long, requires = "admin")]
    pub(crate) key: Option<PathBuf>,
}

pub(crate) fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Example => {
            let example = super::demo::EXAMPLE_CONFIG;
            super::out::line(example.strip_suffix('\n').unwrap_or(example));
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::Check { file } => match config::load(&file) {
            Ok(cfg) => {
                // The certificates and CRLs as the gateway will load them: a CRL of the wrong CA
                // fails here rather than at start, and one near its next update is named.
                match splpd_gateway::tls::TrustStore::load(&cfg) {
                    Ok(trust) => {
                        let now = time::OffsetDateTime::now_utc();
                        let crls = trust.crl_status().iter().filter_map(|c| c.concern(now));
                        for concern in crls.chain(trust.ca_concerns(now).into_iter().map(|c| c.text)) {
                            eprintln!("warning: {concern}");
                        }
                    }
                    Err(e) => {
                        eprintln!("{}: {e}", file.display());
                        return Ok(ExitCode::FAILURE);
                    }
                }
                // What depends on the host splpd runs on rather than on the file: said, not
                // failed, since the check may run under another account or shell.
                for concern in splpd_gateway::tls::secret_file_concerns(&cfg) {
                    eprintln!("warning: {concern}");
                }
                // An expired certificate is a mistake in the file, reported above; one near its
                // end is said.
                if let Ok(cert) = splpd_gateway::tls::GatewayCert::load(&cfg.gateway.cert, &cfg.gateway.key)
                    && let Some(concern) = cert.concern(time::OffsetDateTime::now_utc())
                {
                    eprintln!("warning: {concern}");
                }
                for anchor in cfg.trust_anchors.iter().filter(|a| a.crls.is_empty()) {
                    if cfg.vouches_for_region(&anchor.name) {
                        eprintln!(
                            "warning: trust anchor {:?} has no `crls`, so a certificate of its CA that is revoked is \
                             still let in: name its CA's CRL file (`crls = [\"pki/ca/crl.pem\"]`, which `splpd \
                             certs crl` signs)",
                            anchor.name
                        );
                    } else if let Some(peer) = cfg.peers.iter().find(|p| p.trust_anchor == anchor.name) {
                        eprintln!(
                            "warning: trust anchor {:?} of [[peer]] {} has no `crls`, so a revoked certificate of that \
                             gateway is still let in: ask its operators for their CA's crl.pem each time they sign one, \
                             and name it here",
                            anchor.name, peer.id
                        );
                    }
                }
                for warning in peer_anchors_too_wide(&cfg) {
                    eprintln!("warning: {warning}");
                }
                for concern in config::header_identified_clients(&cfg) {
                    eprintln!("warning: {concern}");
                }
                for client in config::unidentifiable_clients(&cfg) {
                    eprintln!(
                        "warning: a grant names {client}, whom no trust anchor's scopes, [[identity]], [[peer]] or \
                         listener can identify, so it can never be used: check the identifier (its region code?)"
                    );
                }
                if let Some(n) = cfg.national.as_ref().filter(|n| n.trust_anchor.is_none()) {
                    // The national SPLP calling in: its anchor is scoped to its gateway, so without
                    // the pin it vouches for no server, the API manager included.
                    let inbound = cfg.peers.iter().filter(|p| !p.routes_calls());
                    for peer in inbound.filter(|p| !cfg.vouches_for_servers(&p.trust_anchor)) {
                        eprintln!(
                            "warning: [[peer]] {} (the national SPLP calling in) is vouched for by trust anchor {:?}, \
                             which vouches for no server the gateway calls, so the API manager at {} is verified \
                             against other anchors: if its certificate comes from that CA, add trust_anchor = {:?} \
                             to [national]",
                            peer.id, peer.trust_anchor, n.base_url, peer.trust_anchor
                        );
                    }
                }
                for service in config::unmapped_national_grants(&cfg) {
                    eprintln!(
                        "warning: a grant names {service}, a national service that no [[national.api]] maps, so every \
                         call to it is refused as unknown: add [[national.api]] service = \"{service}\" with the API's \
                         name and version in the API manager, or correct the identifier"
                    );
                }
                if let Some(var) = cfg.national.as_ref().and_then(|n| n.client_secret_env.as_deref())
                    && std::env::var_os(var).is_none()
                {
                    eprintln!(
                        "warning: [national] client_secret_env names {var}, which is not set here; splpd serve will \
                         not start without it: set it where splpd runs (e.g. Environment= in its systemd unit), or \
                         use client_secret_file"
                    );
                }
                if let Some(concern) = audit_dir_concern(&cfg.audit.dir) {
                    eprintln!("warning: {concern}");
                }
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
        ConfigCommand::Apply { target, new, change } => match &target.config {
            Some(config) => super::config_change::apply(config, &new, &change.issue, change.yes),
            None => super::config_remote::apply(&target.remote, &change.issue, &new, change.yes),
        },
        ConfigCommand::Undo { target, change } => match &target.config {
            Some(config) => super::config_change::undo(config, &change.issue, change.yes),
            None => super::config_remote::undo(&target.remote, &change.issue, change.yes),
        },
        ConfigCommand::History { target } => {
            let (file, rows) = match &target.config {
                Some(config) => {
                    let kept = splpd_gateway::config::history::History::of(config).list()?;
                    let rows = kept.into_iter().map(|k| [k.replaced_at, k.version, k.path.display().to_string()]);
                    (config.display().to_string(), rows.collect())
                }
                None => super::config_remote::history(&target.remote)?,
            };
            Ok(print_history(&file, &rows))
        }
    }
}

/// Prints the kept versions of `file` as a table, or says there are none.
fn print_history(file: &str, rows: &[[String; 3]]) -> ExitCode {
    if rows.is_empty() {
        super::out::line(&format!(
            "No earlier version of {file} is kept: no change was made with `config apply` or through the admin listener."
        ));
        return ExitCode::SUCCESS;
    }
    super::out::line(&format!("{:<27} {:<16}  KEPT IN", "REPLACED AT (UTC)", "VERSION"));
    for [at, version, path] in rows {
        super::out::line(&format!("{at:<27} {version:<16}  {path}"));
    }
    super::out::line(&format!("`undo` puts back the last ({}).", rows.last().map_or("", |r| r[1].as_str())));
    ExitCode::SUCCESS
}

/// A peer's trust anchor scoped to more than the peer's gateway (its whole region, say): the
/// peer region's agencies may then call this gateway directly with their own certificates,
/// past their gateway's grants and audit log. Allowed, since it may be meant; said.
fn peer_anchors_too_wide(cfg: &config::Config) -> Vec<String> {
    let mut said = Vec::new();
    for peer in &cfg.peers {
        let Some(anchor) = cfg.trust_anchors.iter().find(|a| a.name == peer.trust_anchor) else { continue };
        if cfg.vouches_for_region(&anchor.name) {
            continue;
        }
        let gateway = peer.id.to_string();
        for scope in &anchor.scopes {
            let text = scope.to_string();
            // Anything under the peer's authority but its gateway: its region, or one agency.
            if text != gateway && peer.authoritative.iter().any(|a| a.overlaps(scope)) {
                said.push(format!(
                    "trust anchor {:?} vouches for {text}, not only for the peer gateway {gateway}: agencies under \
                     {text} can call this gateway directly with their own certificates, past their gateway's grants \
                     and audit log; scope it to `[\"{gateway}\"]` unless that is meant",
                    anchor.name
                ));
            }
        }
    }
    said
}

/// Why this account could not write the audit log's folder, if it could not: the gateway would
/// not start. Tried by making and removing a file there (or in the nearest folder that exists,
/// where the log's folder would be made). Or, when it can, that the folder's filesystem has less
/// than a tenth free, which the running gateway would warn of too.
fn audit_dir_concern(dir: &std::path::Path) -> Option<String> {
    // A relative path's last ancestor is the empty path, which stands for the current folder.
    let existing = dir
        .ancestors()
        .map(|d| if d.as_os_str().is_empty() { std::path::Path::new(".") } else { d })
        .find(|d| d.exists())
        .unwrap_or(dir);
    let probe = existing.join(format!(".splpd-config-check-{}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            let space = splpd_gateway::audit::space::DiskSpace::of(existing).ok().filter(|s| s.is_low())?;
            Some(format!(
                "[audit] dir {}: its filesystem has {}; once it is full every exchange is refused \
                 (Server.AuditUnavailable): give the log more room, or export it regularly so that retention can \
                 delete old segments",
                dir.display(),
                space.describe()
            ))
        }
        Err(e) => Some(format!(
            "[audit] dir {}: this account cannot write {} ({e}); splpd serve will not start unless the account it \
             runs as can (create the folder and give it to that account)",
            dir.display(),
            existing.display()
        )),
    }
}
