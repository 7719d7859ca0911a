//! splpd as a row of the comparison: its configuration for the benchmark (one REST service on
//! the HTTP upstream, one gRPC service on the gRPC upstream, a grant for the load generator's
//! certificate), and the child process that serves it on one worker thread.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use splpd_gateway::audit::{AuditHealth, AuditMode, AuditSink, AuditTicket, ExchangeRecord};
use splpd_gateway::workers::Workers;

use crate::pki::Sandbox;
use crate::upstream::Upstream;

/// The path prefix of the REST service through splpd; the upstream sees what follows it.
pub(crate) const SERVICE_PATH: &str = "/r1/ID/PEMDA/1602/UPSTREAM/echo";

/// How the benchmark runs splpd's audit stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Audit {
    /// Records dropped by [`DiscardSink`]: not a production mode, only the cost of the rest.
    Off,
    Async,
    Sync,
    Strict,
}

impl Audit {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Async => "async",
            Self::Sync => "sync",
            Self::Strict => "strict",
        }
    }

    /// The mode written to the configuration (`off` keeps the default and swaps the sink).
    fn config_mode(self) -> &'static str {
        match self {
            Self::Off | Self::Sync => "sync",
            Self::Async => "async",
            Self::Strict => "strict",
        }
    }
}

/// Writes the configuration of one splpd row into the sandbox.
pub(crate) fn write_config(sb: &Sandbox, port: u16, up: Upstream, audit: Audit) -> anyhow::Result<PathBuf> {
    let mode = audit.config_mode();
    let name = audit.name();
    let text = format!(
        r#"[gateway]
id = "ID/PEMDA/1602/gw1"
cert = "gw1.crt"
key = "gw1.key"

[[listener]]
name = "bench"
address = "127.0.0.1:{port}"

[[trust_anchor]]
name = "region"
ca = "ca/ca.crt"
scopes = ["ID/PEMDA/1602"]

[[service]]
id = "ID/PEMDA/1602/UPSTREAM/echo"
upstreams = ["http://{http}"]

[[service]]
id = "ID/PEMDA/1602/UPSTREAM/rujukan"
protocol = "grpc"
upstreams = ["http://{grpc}"]
grpc_services = ["kesehatan.v1.Rujukan"]

[[grant]]
service = "ID/PEMDA/1602/UPSTREAM/echo"
client = "ID/PEMDA/1602/BENCH"

[[grant]]
service = "ID/PEMDA/1602/UPSTREAM/rujukan"
client = "ID/PEMDA/1602/BENCH"

[audit]
dir = "audit-{name}"
mode = "{mode}"

# The load generator is one address, and the idle-memory measure holds thousands of connections.
[limits]
connections_per_address = 100000
"#,
        http = up.http,
        grpc = up.grpc,
    );
    let path = sb.path(&format!("splpd-{name}.toml"));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The gateway process: one worker thread, as the comparison gives each proxy one core.
pub(crate) fn child(config: &Path, discard_audit: bool) -> anyhow::Result<()> {
    // As the `splpd` binary does first thing.
    splpd_gateway::memory::use_small_pages();
    let config = splpd_gateway::config::load(config)?;
    // Built as `splpd serve` builds its runtime, with the hooks the audit log's group commit
    // watches.
    let workers = Arc::new(Workers::default());
    workers.runtime(Some(1))?.block_on(async move {
        let audit: Arc<dyn AuditSink> = if discard_audit {
            Arc::new(DiscardSink)
        } else {
            let options = splpd_gateway::audit::log::AuditLogOptions::from_config(&config).with_workers(&workers);
            let log = Arc::new(splpd_gateway::audit::log::AuditLog::open(&options)?);
            publish_writer_counts(Arc::clone(&log))?;
            log
        };
        let running = splpd_gateway::server::start(config, audit).await?;
        // Serves until the harness kills it.
        std::future::pending::<()>().await;
        drop(running);
        Ok(())
    })
}

/// The file, in the gateway child's working directory (the run's sandbox), where it keeps its
/// audit writer's counters for the harness: "batches syncs records".
pub(crate) fn writer_counts_file(pid: u32) -> String {
    format!("audit-writer-{pid}")
}

/// Writes the log's counters to [`writer_counts_file`] ten times a second, from a thread of its
/// own (not named like the writer, whose CPU the harness reads). Each write replaces the file
/// whole, so a reader never sees half of one.
fn publish_writer_counts(log: Arc<splpd_gateway::audit::log::AuditLog>) -> anyhow::Result<()> {
    let name = writer_counts_file(std::process::id());
    let tmp = format!("{name}.tmp");
    std::thread::Builder::new().name("bench-counts".to_owned()).spawn(move || {
        loop {
            let s = log.stats();
            if std::fs::write(&tmp, format!("{} {} {}\n", s.batches, s.syncs, s.records)).is_ok() {
                let _ = std::fs::rename(&tmp, &name);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    })?;
    Ok(())
}

/// Drops every record and answers at once. NOT a production mode (splpd itself has no way to
/// turn its audit log off): it exists so that the benchmark can show what the rest of the
/// exchange path costs, and what the audit log adds in each durability mode.
#[derive(Debug)]
pub(crate) struct DiscardSink;

impl AuditSink for DiscardSink {
    fn append(&self, _record: ExchangeRecord, _mode: AuditMode) -> AuditTicket {
        AuditTicket::ok()
    }

    fn flush(&self) -> AuditTicket {
        AuditTicket::ok()
    }

    fn health(&self) -> AuditHealth {
        AuditHealth::Available
    }

    fn shutdown(&self) -> AuditTicket {
        AuditTicket::ok()
    }
}

/// Where the gateway's listener will be.
pub(crate) fn listen_addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}
