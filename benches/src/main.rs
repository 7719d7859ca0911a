//! splpd-bench: splpd side by side with what an operator would deploy instead, in one run.
//!
//! `cargo run -p splpd-bench --release -- compare` makes a dev PKI, starts a fixed upstream,
//! then measures in turn: the upstream called directly, a minimal hyper+rustls proxy (the floor),
//! nginx and haproxy doing the gateway's job, and splpd with its audit log off, async, sync and
//! strict; each proxy pinned to one core, the load and the upstream to the other. It prints
//! markdown tables (every figure also as a ratio to nginx's) and writes them with a JSON copy.
//! `audit-append` and `audit-verify` measure the audit log alone.

#![allow(clippy::print_stdout)]

mod audit;
mod audit_load;

// glibc's malloc and free were 8–9% of the gateway's CPU under `splpd-bench compare` (perf); a
// thread-caching allocator serves the per-request allocations of the exchange path cheaper.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
mod compare;
mod external;
mod floor;
mod gateway;
mod loadgen;
mod oha;
mod pki;
mod procs;
mod report;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::compare::{Plan, Subject};
use crate::loadgen::{Load, Protocol};

#[derive(Debug, Parser)]
#[command(
    name = "splpd-bench",
    about = "Measure splpd side by side with nginx, haproxy, a floor proxy and direct calls"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The side-by-side comparison (about 15 minutes with the defaults; `--quick` for a short run).
    Compare(CompareArgs),
    /// The load generator's HTTP/1.1 requests/s against oha's, on one row.
    OhaCheck {
        /// The row: direct, floor, nginx, haproxy, splpd-off, splpd-async, splpd-sync, splpd-strict.
        #[arg(long, default_value = "nginx")]
        row: String,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// What handing a record to the audit log costs the exchange path.
    AuditAppend {
        /// Records appended back to back.
        #[arg(long, default_value_t = 200_000)]
        records: u64,
        /// Records appended with a fixed piece of work between them.
        #[arg(long, default_value_t = 20_000)]
        spaced: u64,
    },
    /// What the audit log costs a busy gateway in each mode, measured on a model of the exchange
    /// path on one core (see `benches/src/audit_load.rs`): steadier than `compare` on a noisy
    /// machine, for trying changes to the log.
    AuditLoad {
        /// Exchanges in flight (the closed loop's clients).
        #[arg(long, default_value_t = 128)]
        tasks: usize,
        /// CPU each exchange spends besides its record, in µs (the gateway's path with the log
        /// off took about 25 µs per 1 KiB HTTP/1.1 request in `compare`).
        #[arg(long, default_value_t = 25.0)]
        work_us: f64,
        /// Seconds measured per row and round.
        #[arg(long, default_value_t = 3.0)]
        window: f64,
        /// Rounds; the rows take turns in each.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// A directory on the disk to measure (the audit log's, in production).
        #[arg(long, default_value = "target/splpd-bench")]
        dir: PathBuf,
    },
    /// How fast `splpd audit verify` reads a log of the given size.
    AuditVerify {
        /// Records in the log.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
    },
    /// What one group commit costs: a write and fdatasync at the end of a file and over zeros
    /// written ahead, and one O_DIRECT | O_DSYNC write over such zeros.
    AuditSync {
        /// Batches written and synced.
        #[arg(long, default_value_t = 2000)]
        syncs: u64,
        /// Bytes per batch, rounded up to 4 KiB (about 12 records of 350 bytes by default).
        #[arg(long, default_value_t = 4096)]
        batch: usize,
        /// A directory on the disk to measure (the audit log's, in production).
        #[arg(long, default_value = "target/splpd-bench")]
        dir: PathBuf,
    },
    /// Internal: runs the gateway on a configuration (a row of the comparison).
    #[command(hide = true)]
    Gateway {
        /// The configuration file.
        config: PathBuf,
        /// Drop audit records instead of writing them (the `audit off` row; not a splpd mode).
        #[arg(long)]
        discard_audit: bool,
    },
    /// Internal: runs the floor proxy (a row of the comparison).
    #[command(hide = true)]
    Floor {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        http_upstream: SocketAddr,
        #[arg(long)]
        grpc_upstream: SocketAddr,
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// A short run for development: 0.5 s warm-up, 2 s windows, 1000 idle connections.
    #[arg(long)]
    quick: bool,
    /// Seconds measured per figure (default 5, or 2 with --quick).
    #[arg(long)]
    window: Option<f64>,
    /// Seconds of warm-up before each window (default 1, or 0.5 with --quick).
    #[arg(long)]
    warmup: Option<f64>,
    /// Rows to run, comma-separated: direct, floor, nginx, haproxy, splpd-off, splpd-async,
    /// splpd-sync, splpd-strict (default: all).
    #[arg(long, value_delimiter = ',')]
    rows: Vec<String>,
    /// Loads to run, comma-separated: h1, h2, grpc (saturation and open loop); h1-64k, h2-64k,
    /// grpc-stream (saturation only) (default: all).
    #[arg(long, value_delimiter = ',')]
    loads: Vec<String>,
    /// Idle mTLS connections held for the memory figure, per protocol (default 3000, or 1000 with
    /// --quick; at most 10000; 0 skips it).
    #[arg(long)]
    idle: Option<usize>,
    /// Concurrent calls of the closed loop (saturation): HTTP/1.1 connections, or HTTP/2 and
    /// gRPC streams over 4 connections. A proxy that makes each answer wait, as splpd's audit
    /// `sync` does for its disk, needs more of them to reach its saturation: with 32, `sync`
    /// was measured at its latency rather than its throughput.
    #[arg(long, default_value_t = 128)]
    clients: usize,
    /// Times each row is measured at saturation (default 1). The first round measures row after
    /// row; in each later one every row's proxy runs at once and the rows take turns within each
    /// load. The report gives each load's median round, and audit modes against audit off as the
    /// median of the rounds' ratios: on a shared, noisy machine one window per row can be off by
    /// a tenth. Idle memory, open loops and handshakes are measured in the first round only.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Where compare.md and compare.json are written.
    #[arg(long, default_value = "target/splpd-bench")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Compare(args) => compare_cmd(&args),
        Cmd::OhaCheck { row, connections, seconds } => subject(&row).and_then(|s| oha::run(s, connections, seconds)),
        Cmd::Gateway { config, discard_audit } => gateway::child(&config, discard_audit),
        Cmd::Floor { listen, http_upstream, grpc_upstream, ca, cert, key } => {
            runtime(1).and_then(|rt| rt.block_on(floor::serve(listen, http_upstream, grpc_upstream, &ca, &cert, &key)))
        }
        Cmd::AuditVerify { records } => runtime(1).and_then(|rt| rt.block_on(audit::verify_speed(records))),
        Cmd::AuditLoad { tasks, work_us, window, rounds, dir } => audit_load::run(&audit_load::LoadArgs {
            tasks,
            work_us,
            warmup: Duration::from_millis(500),
            window: Duration::from_secs_f64(window),
            rounds,
            dir,
        }),
        Cmd::AuditSync { syncs, batch, dir } => audit::sync_cost(&dir, syncs, batch),
        Cmd::AuditAppend { records, spaced } => {
            runtime(1).and_then(|rt| rt.block_on(audit::append_cost(records, spaced)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A tokio runtime with `threads` workers: one, for every process of the comparison.
fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?)
}

const FULL_LOADS: [(&str, Load); 3] = [("h1", Load::H1), ("h2", Load::H2), ("grpc", Load::Grpc)];
const SATURATION_LOADS: [(&str, Load); 3] =
    [("h1-64k", Load::H1Large), ("h2-64k", Load::H2Large), ("grpc-stream", Load::GrpcStream)];

fn compare_cmd(args: &CompareArgs) -> anyhow::Result<()> {
    let plan = plan(args)?;
    let report = compare::run(&plan)?;
    println!("{}", report.markdown());
    eprintln!("written: {0}/compare.md, {0}/compare.json", plan.out_dir.display());
    Ok(())
}

fn subject(key: &str) -> anyhow::Result<Subject> {
    Subject::ALL.into_iter().find(|s| s.key() == key).ok_or_else(|| {
        let known: Vec<String> = Subject::ALL.iter().map(|s| s.key()).collect();
        anyhow::anyhow!("unknown row `{key}`; the rows are {}", known.join(", "))
    })
}

fn plan(args: &CompareArgs) -> anyhow::Result<Plan> {
    let subjects = if args.rows.is_empty() {
        Subject::ALL.to_vec()
    } else {
        args.rows.iter().map(|r| subject(r)).collect::<anyhow::Result<Vec<_>>>()?
    };
    let pick = |table: &[(&str, Load)]| -> Vec<Load> {
        table
            .iter()
            .filter(|(k, _)| args.loads.is_empty() || args.loads.iter().any(|l| l == k))
            .map(|(_, l)| *l)
            .collect()
    };
    for l in &args.loads {
        if !FULL_LOADS.iter().chain(&SATURATION_LOADS).any(|(k, _)| k == l) {
            anyhow::bail!("unknown load `{l}` in --loads; the loads are h1, h2, grpc, h1-64k, h2-64k, grpc-stream");
        }
    }
    let quick = args.quick;
    let full_loads = pick(&FULL_LOADS);
    let saturation_loads = pick(&SATURATION_LOADS);
    let protocols = Protocol::of_loads(&[full_loads.as_slice(), saturation_loads.as_slice()].concat());
    let idle_connections = args
        .idle
        .unwrap_or(if quick { 1000 } else { 3000 })
        .min(10_000)
        // Each idle connection holds a descriptor here and in the proxy.
        .min(usize::try_from(procs::max_connections()).unwrap_or(10_000).saturating_sub(200));
    let settings = report::Settings {
        rounds: args.rounds,
        warmup_s: args.warmup.unwrap_or(if quick { 0.5 } else { 1.0 }),
        window_s: args.window.unwrap_or(if quick { 2.0 } else { 5.0 }),
        closed_h1_connections: args.clients,
        closed_h2_connections: 4,
        closed_h2_streams: args.clients.div_ceil(4),
        open_h1_connections: 64,
        open_h2_connections: 4,
        open_h2_streams: 32,
        handshake_concurrency: 16,
        idle_connections,
        idle_protocols: if idle_connections > 0 { Protocol::idle_of(&protocols) } else { Vec::new() },
        handshake_protocols: protocols,
    };
    anyhow::ensure!((4..=1000).contains(&args.clients), "--clients must be 4 to 1000");
    anyhow::ensure!((1..=20).contains(&args.rounds), "--rounds must be 1 to 20");
    anyhow::ensure!(
        settings.window_s > 0.0 && settings.warmup_s >= 0.0,
        "--window must be above 0 and --warmup not negative"
    );
    let command =
        std::iter::once("splpd-bench".to_owned()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" ");
    Ok(Plan { subjects, full_loads, saturation_loads, settings, out_dir: args.out.clone(), command })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(args: &[&str]) -> Plan {
        let cli = Cli::try_parse_from(["splpd-bench", "compare"].iter().chain(args)).expect("valid arguments");
        let Cmd::Compare(args) = cli.command else { unreachable!("a compare command") };
        plan(&args).expect("a valid plan")
    }

    #[test]
    fn connection_figures_follow_the_protocols_of_the_selected_loads() {
        let p = plan_of(&["--loads", "h1-64k,grpc", "--idle", "300"]);
        assert_eq!(p.settings.handshake_protocols, vec![Protocol::H1, Protocol::Grpc]);
        assert_eq!(p.settings.idle_protocols, vec![Protocol::H1, Protocol::H2]);
        let all = plan_of(&["--quick"]);
        assert_eq!(all.settings.handshake_protocols, Protocol::ALL.to_vec());
    }

    #[test]
    fn idle_zero_skips_idle_memory_for_every_protocol() {
        let p = plan_of(&["--loads", "h1,h2,grpc", "--idle", "0"]);
        assert_eq!(p.settings.idle_connections, 0);
        assert!(p.settings.idle_protocols.is_empty());
        assert_eq!(p.settings.handshake_protocols.len(), 3);
    }
}
