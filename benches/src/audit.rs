//! `splpd-bench audit-append`: what handing a record to the audit log costs the exchange path,
//! for the segment log. Run it under `taskset -c 0` to see
//! the one-core case.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use splpd_gateway::audit::log::AuditLogOptions;
use splpd_gateway::audit::segment::{SegmentLog, SegmentOptions};
use splpd_gateway::audit::{AuditMode, AuditSink, ExchangeRecord};

/// CPU the calling thread has used, from the scheduler's accounting.
pub(crate) fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    Duration::from_nanos(stat.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0))
}

/// CPU the whole process has used (all threads); Linux counts it in ticks of 10 ms.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((tick(11) + tick(12)) * 10)
}

fn record(i: u64) -> ExchangeRecord {
    ExchangeRecord {
        exchange_id: format!("{i:08}"),
        received_at_unix_nanos: 1_700_000_000_000_000_001,
        responded_at_unix_nanos: 1_700_000_000_000_400_001,
        service: service(i % SERVICES),
        status: 200,
        path: "/r1/ID/PEMDA/1602/DISDUKCAPIL/nik-verify/cek".to_owned(),
        ..ExchangeRecord::default()
    }
}

/// Services the records name in turn.
const SERVICES: u64 = 40;

fn service(k: u64) -> String {
    format!("ID/PEMDA/1602/DISDUKCAPIL/service-{k}")
}

fn per_record(d: Duration, n: u64) -> f64 {
    d.as_nanos() as f64 / n as f64
}

/// Appends `n` async records back to back, then `spaced` records with a fixed piece of work
/// between them (as exchanges come), to each sink, and prints the cost per record.
///
/// The second row is the same log behind the counters the admin listener's `/metrics` shows
/// (`admin::metrics::Metered`, as the gateway runs it), for 40 services and 3 peers: the
/// difference is what counting costs an exchange. The third also makes each record a span, as
/// `[telemetry]` does with every exchange sampled.
pub(crate) async fn append_cost(n: u64, spaced: u64) -> anyhow::Result<()> {
    use splpd_gateway::admin::metrics::{ExchangeMetrics, Metered};

    let dir = tempfile::tempdir()?;
    let seg = Arc::new(SegmentLog::open(&SegmentOptions::new(dir.path().join("seg")))?);
    let segment: Arc<dyn AuditSink> = Arc::clone(&seg) as _;
    let services: Vec<String> = (0..SERVICES).map(service).collect();
    let peers: Vec<String> = (1..=3).map(|k| format!("ID/PEMDA/160{k}/gw1")).collect();
    let metrics = Arc::new(ExchangeMetrics::for_routes(&services, &peers));
    let counted_log = Arc::new(SegmentLog::open(&SegmentOptions::new(dir.path().join("counted")))?);
    let counted: Arc<dyn AuditSink> = Arc::new(Metered::new(counted_log, Arc::clone(&metrics)));
    // Every exchange a span too, as with `[telemetry] traces_sample_ratio = 1`. Nothing exports
    // them: once the queue is full each span is still made, then dropped.
    let telemetry = splpd_gateway::config::Telemetry {
        otlp_endpoint: "http://127.0.0.1:4317".to_owned(),
        service_name: None,
        traces_sample_ratio: None,
        metrics_interval: None,
    };
    let gateway_id = "ID/PEMDA/1602/gw1".parse()?;
    let exporter = splpd_gateway::telemetry::Telemetry::new(&telemetry, &gateway_id)?;
    let traced_log = Arc::new(SegmentLog::open(&SegmentOptions::new(dir.path().join("traced")))?);
    let traced: Arc<dyn AuditSink> = Arc::new(Metered::new(traced_log, metrics).with_spans(Some(exporter.span_sink())));
    println!("| sink | burst: appender ns/record | burst: process ns/record | spaced: ns/record over the work |");
    println!("|---|---|---|---|");
    fn work() -> u64 {
        (0..20_000u64)
            .fold(1, |acc, i| std::hint::black_box(acc.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i)))
    }
    let process0 = process_cpu();
    for i in 0..spaced {
        std::hint::black_box(work());
        std::hint::black_box(i);
    }
    let baseline = process_cpu() - process0;
    for (name, sink) in [
        ("segment log", segment),
        ("segment log, counted for /metrics", counted),
        ("segment log, counted and each a span", traced),
    ] {
        sink.flush().await?;
        let (thread0, process0) = (thread_cpu(), process_cpu());
        for i in 0..n {
            sink.append(record(i), AuditMode::Async).await?;
        }
        let appender = thread_cpu() - thread0;
        sink.flush().await?;
        let burst = process_cpu() - process0;
        let process0 = process_cpu();
        for i in 0..spaced {
            std::hint::black_box(work());
            sink.append(record(i), AuditMode::Async).await?;
        }
        sink.flush().await?;
        let spaced_cost = (process_cpu() - process0).saturating_sub(baseline);
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} |",
            per_record(appender, n),
            per_record(burst, n),
            per_record(spaced_cost, spaced)
        );
    }
    let stats = seg.stats();
    println!("segment log: {} records in {} batches, {} writer wake-ups", stats.records, stats.batches, stats.wakeups);
    Ok(())
}

/// Writes a log of `records` records with the gateway's own writer and checkpoints, then times
/// `verify` over it (frames, CRCs, Merkle tree, checkpoint signatures).
pub(crate) async fn verify_speed(records: u64) -> anyhow::Result<()> {
    use splpd_gateway::audit::log::{AuditLog, read_checkpoints};

    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("audit");
    let options = log_options(tmp.path(), &dir, 10_000)?;
    let log = AuditLog::open(&options)?;
    for start in (0..records).step_by(1000) {
        let tickets: Vec<_> =
            (start..(start + 1000).min(records)).map(|i| log.append(record(i), AuditMode::Sync)).collect();
        for t in tickets {
            t.await?;
        }
    }
    log.shutdown().await?;
    while read_checkpoints(&dir)?.last().is_none_or(|c| c.tree_size != records) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = std::time::Instant::now();
    let report = splpd_gateway::audit::verify::verify_log(&dir, None, &mut |_, _, _, _| {
        splpd_gateway::audit::verify::Reading::On
    })?;
    let took = started.elapsed();
    anyhow::ensure!(report.is_ok(), "the freshly written log does not verify: {report:?}");
    println!("verify: {records} records in {took:.2?}: {:.0} records/s", records as f64 / took.as_secs_f64());
    Ok(())
}

/// The options of an audit log in `dir` as `splpd serve` opens it, signing checkpoints every
/// `checkpoint_every` records with a gateway key issued in `pki` by a fresh CA.
pub(crate) fn log_options(pki: &Path, dir: &Path, checkpoint_every: u64) -> anyhow::Result<AuditLogOptions> {
    use splpd_certs::id::Identity;
    use splpd_certs::pki::{Ca, InitOptions, KeyType, LeafRequest};

    let now = time::OffsetDateTime::now_utc();
    let ca = Ca::init(&pki.join("ca"), &InitOptions::new("Bench", vec!["ID/PEMDA/1602".parse()?]), now)?;
    let (cert, key) = (pki.join("gw1.crt"), pki.join("gw1.key"));
    ca.issue(
        &LeafRequest::new(Identity::Server("ID/PEMDA/1602/gw1".parse()?)),
        KeyType::default(),
        &cert,
        &key,
        false,
        now,
    )?;
    Ok(AuditLogOptions {
        segments: SegmentOptions { segment_size: 16 << 20, ..SegmentOptions::new(dir) },
        gateway: "ID/PEMDA/1602/gw1".parse()?,
        signing_key: key,
        signing_cert: cert,
        checkpoint_every,
        checkpoint_interval: Duration::from_secs(3600),
        retention: None,
    })
}

/// What one group commit costs the disk and the core, with the batch written at the end of the
/// file (each sync also writes the file's new length), over zeros written ahead of it (what the
/// segment writer does, `[audit] preallocate`), and over such zeros with `O_DIRECT | O_DSYNC`
/// (one aligned `pwrite` that returns once durable; a lead, not what the writer does): the
/// figures behind the writer's choices. The sleeps are the writing thread's voluntary context
/// switches, each a wake-up by the disk's interrupt.
pub(crate) fn sync_cost(dir: &std::path::Path, syncs: u64, batch: usize) -> anyhow::Result<()> {
    use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
    std::fs::create_dir_all(dir)?;
    // O_DIRECT wants the buffer, the offset and the length aligned to the device's blocks: the
    // batch is rounded up to 4 KiB and placed at a 4 KiB boundary of a larger buffer.
    const ALIGN: usize = 4096;
    let batch = batch.div_ceil(ALIGN) * ALIGN;
    let mut raw = vec![0x5a_u8; batch + ALIGN];
    let at = raw.as_ptr().align_offset(ALIGN);
    let frames = raw.get_mut(at..at + batch).ok_or_else(|| anyhow::anyhow!("cannot align a buffer"))?;
    println!("{syncs} batches of {batch} bytes, each written and made durable, in {}", dir.display());
    println!();
    println!(
        "| where the batch goes, and how | µs per batch (wall) | µs of CPU per batch, writing thread | sleeps per batch |"
    );
    println!("|---|---|---|---|");
    let mut walls = Vec::new();
    let ways = [
        ("end of the file, `pwrite` and `fdatasync`", false, false),
        ("zeros written ahead, `pwrite` and `fdatasync`", true, false),
        ("zeros written ahead, one `pwrite` with `O_DIRECT` and `O_DSYNC`", true, true),
    ];
    for (name, ahead, direct) in ways {
        let path = dir.join("sync-cost.tmp");
        let file = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path)?;
        let total = syncs * batch as u64;
        if ahead {
            let zeros = vec![0u8; 1 << 20];
            let mut at = 0;
            while at < total {
                file.write_all_at(&zeros[..(total - at).min(zeros.len() as u64) as usize], at)?;
                at += zeros.len() as u64;
            }
            file.sync_all()?;
        }
        let file = if direct {
            match std::fs::OpenOptions::new().write(true).custom_flags(libc::O_DIRECT | libc::O_DSYNC).open(&path) {
                Ok(f) => f,
                Err(e) => {
                    println!("| {name} | not measured: {e} (a file system without O_DIRECT, such as tmpfs) | | |");
                    std::fs::remove_file(&path)?;
                    continue;
                }
            }
        } else {
            file
        };
        let (wall0, cpu0, sleeps0) = (std::time::Instant::now(), thread_cpu(), thread_sleeps());
        for i in 0..syncs {
            file.write_all_at(frames, i * batch as u64)?;
            if !direct {
                file.sync_data()?;
            }
        }
        let (wall, cpu, sleeps) = (wall0.elapsed(), thread_cpu() - cpu0, thread_sleeps() - sleeps0);
        drop(file);
        std::fs::remove_file(&path)?;
        let wall_us = wall.as_secs_f64() * 1e6 / syncs as f64;
        let cpu_us = cpu.as_secs_f64() * 1e6 / syncs as f64;
        println!("| {name} | {wall_us:.0} | {cpu_us:.0} | {:.2} |", sleeps as f64 / syncs as f64);
        walls.push(wall_us);
    }
    println!();
    if let [end, ahead, ..] = walls[..] {
        println!("zeros written ahead / end of the file: {:.2}× the time per batch", ahead / end);
    }
    Ok(())
}

/// The calling thread's voluntary context switches so far: each time it slept.
fn thread_sleeps() -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}
