//! `splpd-bench audit-load`: what the audit log costs a busy gateway, without the rest of the
//! gateway. A model of the exchange path on one core: `tasks` exchanges in a closed loop on one
//! runtime worker, each spending a fixed amount of CPU (standing for TLS, HTTP and forwarding),
//! then handing its record to the log and waiting for its ticket, as the gateway does in each
//! mode (`strict`: a request record before the work's second half, the exchange record after).
//! The log is the gateway's own (segments, Merkle tree, signed checkpoints) on a real disk, its
//! writer thread on the same core, the runtime built with the same idle hooks.
//!
//! Without sockets, TLS and a load generator sharing the machine, a mode's ratio to audit off
//! moves far less from one run to the next than in `compare`, so a change to the log can be
//! measured here before the whole comparison is run.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prost::Message as _;
use splpd_gateway::audit::log::AuditLog;
use splpd_gateway::audit::{AuditMode, AuditSink, ExchangeRecord};
use splpd_gateway::workers::Workers;
use splpd_proto::v1 as pb;

use crate::audit::{log_options, thread_cpu};
use crate::gateway::DiscardSink;
use crate::procs;

/// What `audit-load` measures and how long.
#[derive(Debug, Clone)]
pub(crate) struct LoadArgs {
    /// Exchanges in flight: the closed loop's concurrent clients.
    pub(crate) tasks: usize,
    /// CPU each exchange spends besides its audit record, in µs.
    pub(crate) work_us: f64,
    pub(crate) warmup: Duration,
    pub(crate) window: Duration,
    pub(crate) rounds: usize,
    /// Where the logs go: a directory on the disk to measure.
    pub(crate) dir: PathBuf,
}

/// A row of the model: audit off or one of the log's modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    Off,
    Mode(AuditMode),
}

impl Row {
    const ALL: [Self; 4] =
        [Self::Off, Self::Mode(AuditMode::Async), Self::Mode(AuditMode::Sync), Self::Mode(AuditMode::Strict)];

    fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Mode(AuditMode::Async) => "async",
            Self::Mode(AuditMode::Sync) => "sync",
            Self::Mode(AuditMode::Strict) => "strict",
        }
    }
}

/// One window of one row.
#[derive(Debug, Clone, Copy)]
struct Window {
    per_s: f64,
    /// The whole process's CPU per exchange, µs (ticks of 10 ms).
    cpu_us: f64,
    /// The audit writer threads' CPU per exchange, µs.
    writer_us: f64,
    /// Exchanges finished, warm-up included.
    exchanges: u64,
}

/// A record the size and shape of the gateway's for a GET answered with 1 KiB.
fn exchange_record(i: u64, kind: pb::RecordKind) -> ExchangeRecord {
    let upstream = "http://127.0.0.1:40123".to_owned();
    let mut record = ExchangeRecord {
        exchange_id: format!("{:08x}-7d1c-4b2a-9e3f-{:012x}", i >> 32, i),
        received_at_unix_nanos: 1_790_000_000_000_000_000 + i64::try_from(i).unwrap_or(0),
        forwarded_at_unix_nanos: 1_790_000_000_000_040_000,
        upstream_answered_at_unix_nanos: 1_790_000_000_000_140_000,
        responded_at_unix_nanos: 1_790_000_000_000_160_000,
        client: "ID/PEMDA/1602/BAPPEDA/perencanaan".to_owned(),
        client_cert_sha256: vec![0x11; 32],
        service: "ID/PEMDA/1602/DINKES/rujukan-rest".to_owned(),
        method: "GET".to_owned(),
        path: "/r1/ID/PEMDA/1602/DINKES/rujukan-rest/1k".to_owned(),
        status: 200,
        response_body_bytes: 1024,
        request_body_sha256: vec![0x22; 32],
        response_body_sha256: vec![0x33; 32],
        request_hash: vec![0x44; 64],
        attempts: vec![pb::UpstreamAttempt { endpoint: upstream.clone(), outcome: "200".to_owned() }],
        upstream,
        trace_id: vec![0x55; 16],
        gateway: "ID/PEMDA/1602/gw1".to_owned(),
        ..ExchangeRecord::default()
    };
    record.set_connection_type(pb::ConnectionType::Mtls);
    record.set_protocol(pb::Protocol::Rest);
    record.set_kind(kind);
    record
}

/// A fixed amount of CPU: `iterations` rounds of a multiply-add the compiler cannot drop.
fn spin(iterations: u64) -> u64 {
    (0..iterations).fold(1, |acc, i| std::hint::black_box(acc.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i)))
}

/// Spin iterations per µs of this thread's CPU.
fn calibrate() -> f64 {
    let n = 20_000_000;
    let before = thread_cpu();
    std::hint::black_box(spin(n));
    let took = (thread_cpu() - before).as_secs_f64() * 1e6;
    n as f64 / took.max(1.0)
}

/// One exchange after another until `stop`: work, then the record, as the gateway orders them.
async fn exchanges(
    sink: Arc<dyn AuditSink>,
    row: Row,
    iterations: u64,
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut i = 0_u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let mode = match row {
            // The gateway builds the record with the log off too; only the sink differs.
            Row::Off => AuditMode::Sync,
            Row::Mode(mode) => mode,
        };
        if mode == AuditMode::Strict {
            std::hint::black_box(spin(iterations / 2));
            sink.append(exchange_record(i, pb::RecordKind::Request), mode).await?;
            std::hint::black_box(spin(iterations - iterations / 2));
        } else {
            std::hint::black_box(spin(iterations));
        }
        sink.append(exchange_record(i, pb::RecordKind::Exchange), mode).await?;
        done.fetch_add(1, Ordering::Relaxed);
        // The next request of a connection comes from its socket: the task lets the others run,
        // as a connection's task does while it waits for the client.
        tokio::task::yield_now().await;
    }
    Ok(())
}

async fn measure(sink: &Arc<dyn AuditSink>, row: Row, args: &LoadArgs, iterations: u64) -> anyhow::Result<Window> {
    let pid = std::process::id();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..args.tasks)
        .map(|_| tokio::spawn(exchanges(Arc::clone(sink), row, iterations, Arc::clone(&done), Arc::clone(&stop))))
        .collect();
    tokio::time::sleep(args.warmup).await;
    let cpu = || procs::cpu_seconds(pid).unwrap_or(0.0);
    let writer = || procs::thread_cpu_seconds(pid, "splpd-audit").unwrap_or(0.0);
    let (n0, cpu0, writer0, t0) = (done.load(Ordering::Relaxed), cpu(), writer(), Instant::now());
    tokio::time::sleep(args.window).await;
    let (n1, cpu1, writer1, took) = (done.load(Ordering::Relaxed), cpu(), writer(), t0.elapsed());
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    let n = (n1 - n0).max(1) as f64;
    Ok(Window {
        per_s: n / took.as_secs_f64(),
        cpu_us: (cpu1 - cpu0) * 1e6 / n,
        writer_us: (writer1 - writer0) * 1e6 / n,
        exchanges: done.load(Ordering::Relaxed),
    })
}

fn median(values: &[f64]) -> f64 {
    crate::report::median(values).unwrap_or(f64::NAN)
}

/// Runs the model: every round measures each row in turn, and each mode is set against audit off
/// by the median of the rounds' ratios.
pub(crate) fn run(args: &LoadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.tasks >= 1 && args.rounds >= 1, "--tasks and --rounds must be at least 1");
    // The model and the logs' writer threads share the proxy's core, as in the comparison.
    procs::pin_self(procs::PROXY_CORE);
    let per_us = calibrate();
    let iterations = (per_us * args.work_us).round() as u64;
    let workers = Arc::new(Workers::default());
    let rt = workers.runtime(Some(1))?;
    std::fs::create_dir_all(&args.dir)?;
    let tmp = tempfile::tempdir_in(&args.dir)?;
    let mut sinks: Vec<(Row, Arc<dyn AuditSink>)> = Vec::new();
    for row in Row::ALL {
        let sink: Arc<dyn AuditSink> = match row {
            Row::Off => Arc::new(DiscardSink),
            Row::Mode(_) => {
                // Opened inside the runtime, as the gateway opens its log, so that the writer
                // hands its answers to the runtime.
                let _inside = rt.enter();
                let pki = tmp.path().join(format!("pki-{}", row.name()));
                let mut options = log_options(&pki, &tmp.path().join(format!("audit-{}", row.name())), 10_000)?;
                // The gateway's defaults: a checkpoint every 10 000 records or every second.
                options.checkpoint_interval = Duration::from_secs(1);
                Arc::new(AuditLog::open(&options.with_workers(&workers))?)
            }
        };
        sinks.push((row, sink));
    }
    let record_len = exchange_record(u64::MAX, pb::RecordKind::Exchange).encoded_len();
    println!(
        "{} exchanges in flight on one core, each {:.1} µs of work and a {record_len}-byte record; logs in {}",
        args.tasks,
        args.work_us,
        args.dir.display()
    );
    let mut results: Vec<Vec<Window>> = vec![Vec::new(); sinks.len()];
    for round in 0..args.rounds {
        let mut line = format!("round {}:", round + 1);
        for ((row, sink), windows) in sinks.iter().zip(&mut results) {
            let w = rt.block_on(measure(sink, *row, args, iterations))?;
            line.push_str(&format!(" {} {:.0}/s", row.name(), w.per_s));
            windows.push(w);
        }
        println!("{line}");
    }
    println!();
    println!(
        "| row | exchanges/s (median round) | against off (median of rounds; each round) | CPU µs per exchange | writer thread µs per exchange |"
    );
    println!("|---|---|---|---|---|");
    let off: Vec<f64> = results[0].iter().map(|w| w.per_s).collect();
    for ((row, _), windows) in sinks.iter().zip(&results) {
        let ratios: Vec<f64> = windows.iter().zip(&off).map(|(w, o)| w.per_s / o).collect();
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
        println!(
            "| {} | {:.0} | {:.3} ({}) | {:.2} | {:.2} |",
            row.name(),
            median(&windows.iter().map(|w| w.per_s).collect::<Vec<_>>()),
            median(&ratios),
            each.join(", "),
            median(&windows.iter().map(|w| w.cpu_us).collect::<Vec<_>>()),
            median(&windows.iter().map(|w| w.writer_us).collect::<Vec<_>>()),
        );
    }
    let logged: Vec<String> = sinks
        .iter()
        .zip(&results)
        .skip(1)
        .map(|((row, _), windows)| format!("{} {}", row.name(), windows.iter().map(|w| w.exchanges).sum::<u64>()))
        .collect();
    println!("\nexchanges logged, warm-ups included: {}", logged.join(", "));
    rt.block_on(async {
        for (_, sink) in &sinks {
            sink.shutdown().await?;
        }
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use splpd_gateway::audit::log::read_checkpoints;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn every_exchange_of_the_model_leaves_its_records_in_the_log() {
        for (mode, records_each) in [(AuditMode::Async, 1), (AuditMode::Sync, 1), (AuditMode::Strict, 2)] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("audit");
            let log: Arc<dyn AuditSink> =
                Arc::new(AuditLog::open(&log_options(tmp.path(), &dir, 10_000).unwrap()).unwrap());
            let args = LoadArgs {
                tasks: 8,
                work_us: 5.0,
                warmup: Duration::from_millis(50),
                window: Duration::from_millis(200),
                rounds: 1,
                dir: tmp.path().to_owned(),
            };
            let w = measure(&log, Row::Mode(mode), &args, 1000).await.unwrap();
            assert!(w.exchanges > 0 && w.per_s > 0.0, "{mode:?}: {w:?}");
            log.shutdown().await.unwrap();
            // The checkpoint signed at shutdown covers every record the log holds.
            let size = read_checkpoints(&dir).unwrap().last().map(|c| c.tree_size);
            assert_eq!(size, Some(w.exchanges * records_each), "{mode:?}");
        }
    }
}
