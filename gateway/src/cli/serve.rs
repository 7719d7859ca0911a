//! `splpd serve`: run the gateway on a configuration file until interrupted.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use splpd_gateway::audit::AuditSink;
use splpd_gateway::audit::log::{AuditLog, AuditLogOptions};
use splpd_gateway::config::{self, Config, ConfigError};
use splpd_gateway::reload::Reloader;
use splpd_gateway::server::Running;
use splpd_gateway::workers::Workers;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  splpd serve --config /etc/splpd/splpd.toml\n  RUST_LOG=debug splpd serve --config splpd.toml"
)]
pub(crate) struct ServeArgs {
    /// The configuration file (check it first with `splpd config check`).
    #[arg(long, short)]
    config: PathBuf,
}

pub(crate) fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    super::init_tracing("info");
    let (config, text) = match config::load_with_text(&args.config) {
        Ok(loaded) => loaded,
        Err(err @ ConfigError::Invalid(_)) => {
            eprintln!("{err}");
            return Ok(ExitCode::FAILURE);
        }
        Err(err) => return Err(err.into()),
    };
    let workers = Arc::new(Workers::default());
    let runtime = workers.runtime(None).context("starting the async runtime")?;
    runtime.block_on(async move {
        let audit_dir = config.audit.dir.clone();
        // Said at start, where the operator reads what the gateway opens (a warning from
        // `config check`; the demo's sandbox has such a client on purpose).
        let header_identified = config::header_identified_clients(&config);
        let served = Served::start(&args.config, config, &text, &workers, "the gateway").await?;
        let running = &served.running;
        for (name, addr) in running.addrs() {
            tracing::info!(listener = %name, %addr, "listening");
        }
        for opt_in in &header_identified {
            tracing::info!("{opt_in}");
        }
        if let Some(addr) = running.admin_addr() {
            tracing::info!(%addr, "admin listener: the dashboard at /, and /healthz, /readyz, /metrics, /maintenance and /config for operators");
        }
        let snap = running.gateway().snapshot();
        tracing::info!(
            audit = %audit_dir.display(),
            "gateway {} ready; SIGHUP or a change of {} reloads the configuration",
            snap.gateway_id,
            args.config.display()
        );
        drop(snap);
        wait_for_signal().await;
        let drain = running.gateway().snapshot().limits.drain_timeout.0;
        tracing::info!("stopping: no new connections; open exchanges have {drain:?} to finish");
        served.stop().await.context("flushing the audit log")?;
        tracing::info!("stopped; the audit log is flushed");
        Ok(ExitCode::SUCCESS)
    })
}

/// A gateway served from its configuration file: how `serve` and the demo's two gateways run.
pub(crate) struct Served {
    /// The gateway.
    pub(crate) running: Running,
    stop_reload: tokio::sync::watch::Sender<bool>,
    reloading: tokio::task::JoinHandle<()>,
}

impl Served {
    /// Opens the audit log `config` names, starts the gateway (`what`, for errors), writes the
    /// `START` record of the configuration read from `path` as `text`, and reloads the file when
    /// it changes or on SIGHUP, as operators may also change it through the admin listener's
    /// /config. A `START` record that cannot be written is logged and the gateway serves on, as
    /// it would refuse exchanges anyway until its log takes records again.
    pub(crate) async fn start(
        path: &Path,
        config: Config,
        text: &str,
        workers: &Arc<Workers>,
        what: &str,
    ) -> anyhow::Result<Self> {
        let audit_dir = config.audit.dir.clone();
        // Before the gateway loads the files: a CRL published while it starts reaches the reloader.
        let watch = splpd_gateway::reload::FileWatch::before_start(path, &config);
        let audit: Arc<dyn AuditSink> = Arc::new(
            AuditLog::open(&AuditLogOptions::from_config(&config).with_workers(workers))
                .with_context(|| format!("opening the audit log of {what} in {}", audit_dir.display()))?,
        );
        let running = splpd_gateway::server::start(config, audit).await.with_context(|| format!("starting {what}"))?;
        if let Err(e) = splpd_gateway::reload::record_start(running.gateway(), path, text).await {
            tracing::error!("the configuration in force of {what} could not be recorded in the audit log: {e}");
        }
        let reloader = Arc::new(Reloader::started_with(path, Arc::clone(running.gateway()), Some(text.as_bytes())));
        running.gateway().attach_reloader(&reloader);
        let (stop_reload, reload_stopped) = tokio::sync::watch::channel(false);
        let reloading = tokio::spawn(reloader.run(Some(watch), reload_stopped));
        Ok(Self { running, stop_reload, reloading })
    }

    /// Stops reloading, then the gateway: open exchanges may finish, and the audit log is
    /// flushed.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        // Readiness says so at once, even while a reload in progress finishes.
        self.running.gateway().begin_stopping();
        let _ = self.stop_reload.send(true);
        let _ = self.reloading.await;
        Ok(self.running.stop().await?)
    }
}

/// Ctrl-C, or SIGTERM from a service manager.
pub(crate) async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
