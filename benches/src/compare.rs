//! `splpd-bench compare`: every row in one run on one machine. Makes the PKI, starts the fixed
//! upstream, then for each row starts the proxy pinned to its core and measures saturation, open
//! loop latency at fixed fractions of nginx's saturation rate, handshakes and idle memory.
//! nginx runs first so that its rates set the open-loop rates of every row.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::external::External;
use crate::gateway::Audit;
use crate::loadgen::{self, Load, Protocol, Target, Tls};
use crate::pki::Sandbox;
use crate::procs::{self, Proc};
use crate::report::{self, Handshakes, IdleMemory, LoadResult, OpenResult, Report};
use crate::upstream::{self, Upstream};

/// A proxy (or none) under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subject {
    Direct,
    Floor,
    External(External),
    Splpd(Audit),
}

impl Subject {
    pub(crate) const ALL: [Self; 8] = [
        Self::Direct,
        Self::Floor,
        Self::External(External::Nginx),
        Self::External(External::Haproxy),
        Self::Splpd(Audit::Off),
        Self::Splpd(Audit::Async),
        Self::Splpd(Audit::Sync),
        Self::Splpd(Audit::Strict),
    ];

    pub(crate) fn name(self) -> String {
        match self {
            Self::Direct => "direct".to_owned(),
            Self::Floor => "floor".to_owned(),
            Self::External(e) => e.name().to_owned(),
            Self::Splpd(a) => format!("splpd audit {}", a.name()),
        }
    }

    /// The short name `--rows` takes.
    pub(crate) fn key(self) -> String {
        match self {
            Self::Splpd(a) => format!("splpd-{}", a.name()),
            other => other.name(),
        }
    }
}

/// What `compare` does, from the command line.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) subjects: Vec<Subject>,
    /// Loads measured at saturation and in open loop.
    pub(crate) full_loads: Vec<Load>,
    /// Loads measured at saturation only.
    pub(crate) saturation_loads: Vec<Load>,
    pub(crate) settings: report::Settings,
    pub(crate) out_dir: PathBuf,
    pub(crate) command: String,
}

/// A proxy row in progress: the process and where to send load.
pub(crate) struct Running {
    proc: Option<Proc>,
    pub(crate) target: Target,
}

pub(crate) fn run(plan: &Plan) -> anyhow::Result<Report> {
    let sb = Sandbox::new()?;
    // The load and the upstream share core 1 (threads created from here on inherit it).
    procs::pin_self(procs::LOAD_CORE);
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let up_rt = crate::runtime(1)?;
    let up = up_rt.block_on(upstream::start())?;
    let rt = crate::runtime(1)?;
    let tls = Tls { h1: sb.client_tls(b"http/1.1")?, h2: sb.client_tls(b"h2")? };

    let mut order = plan.subjects.clone();
    // nginx first: its saturation rates set every row's open-loop rates; the floor stands in
    // when nginx is missing.
    order.sort_by_key(|s| match s {
        Subject::External(External::Nginx) => 0,
        Subject::Floor => 1,
        _ => 2,
    });
    let mut versions = Vec::new();
    let mut rounds = Vec::new();
    let mut base: Option<(String, Vec<(Load, f64)>)> = None;
    for round in 0..plan.settings.rounds.max(1) {
        if round > 0 {
            // The rows the first round measured, in turns within each load from now on.
            let first: &[report::Row] = rounds.first().map_or(&[], Vec::as_slice);
            let measured: Vec<Subject> = order
                .iter()
                .copied()
                .filter(|s| first.iter().any(|x| x.name == s.name() && x.skipped.is_none()))
                .collect();
            eprintln!("round {} of {}: the rows take turns within each load", round + 1, plan.settings.rounds.max(1));
            rounds.push(rt.block_on(interleaved_round(plan, &sb, up, &tls, &measured, round)));
            continue;
        }
        let mut rows = Vec::new();
        for &subject in &order {
            let name = subject.name();
            if let Subject::External(e) = subject {
                match e.binary() {
                    Some(bin) => versions.push((e.name().to_owned(), e.version(&bin))),
                    None => {
                        let why = format!("{} is not installed: `apt-get install {}` adds it.", e.name(), e.package());
                        eprintln!("{name}: skipped. {why}");
                        rows.push(report::Row::skipped(&name, why));
                        continue;
                    }
                }
            }
            eprintln!("{name}: starting");
            let row = rt.block_on(measure_row(plan, &sb, up, &tls, subject, base.as_ref()));
            let row = match row {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{name}: failed: {e:#}");
                    report::Row::skipped(&name, format!("failed: {e:#}"))
                }
            };
            if base.is_none()
                && row.skipped.is_none()
                && matches!(subject, Subject::External(External::Nginx) | Subject::Floor)
            {
                base = Some((name.clone(), row.loads.iter().map(|l| (l.load, l.rate)).collect()));
            }
            rows.push(row);
        }
        rounds.push(rows);
    }
    let mut rows = Report::merge_rounds(rounds);
    drop(rt);
    drop(up_rt);
    // Report in the canonical order.
    rows.sort_by_key(|r| Subject::ALL.iter().position(|s| s.name() == r.name));
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut report = Report {
        command: plan.command.clone(),
        machine: machine(&load_before, &load_after, versions),
        settings: plan.settings.clone(),
        rate_base: base.map(|(n, _)| n),
        rows,
    };
    report.set_ratios_to_nginx();
    std::fs::create_dir_all(&plan.out_dir)?;
    std::fs::write(plan.out_dir.join("compare.json"), serde_json::to_string_pretty(&report)?)?;
    std::fs::write(plan.out_dir.join("compare.md"), report.markdown())?;
    Ok(report)
}

/// Starts the row's proxy (nothing for the direct row) and waits until it listens.
pub(crate) async fn start(sb: &Sandbox, up: Upstream, tls: &Tls, subject: Subject) -> anyhow::Result<Running> {
    let exe = std::env::current_exe()?;
    let port = procs::free_port()?;
    let addr = crate::gateway::listen_addr(port);
    let log = sb.path(&format!("{}.log", subject.key()));
    let proxied = |prefix: &str| Target { addr, grpc_addr: addr, tls: Some(tls.clone()), prefix: prefix.to_owned() };
    let (mut proc, target) = match subject {
        Subject::Direct => {
            return Ok(Running {
                proc: None,
                target: Target { addr: up.http, grpc_addr: up.grpc, tls: None, prefix: String::new() },
            });
        }
        Subject::Floor => {
            let mut cmd = procs::pinned_command(&exe);
            cmd.arg("floor").arg("--listen").arg(addr.to_string());
            cmd.arg("--http-upstream").arg(up.http.to_string()).arg("--grpc-upstream").arg(up.grpc.to_string());
            cmd.arg("--ca").arg(&sb.ca).arg("--cert").arg(&sb.server_cert).arg("--key").arg(&sb.server_key);
            (Proc::spawn("floor", cmd, &log)?, proxied(""))
        }
        Subject::External(e) => {
            let bin = e.binary().context("not installed")?;
            let mut cmd = procs::pinned_command(&bin);
            cmd.args(e.prepare(sb, port, up)?);
            (Proc::spawn(e.name(), cmd, &log)?, proxied(""))
        }
        Subject::Splpd(audit) => {
            let config = crate::gateway::write_config(sb, port, up, audit)?;
            let mut cmd = procs::pinned_command(&exe);
            cmd.arg("gateway").arg(&config).current_dir(sb.dir.path());
            if audit == Audit::Off {
                cmd.arg("--discard-audit");
            }
            (Proc::spawn("splpd", cmd, &log)?, proxied(crate::gateway::SERVICE_PATH))
        }
    };
    if let Err(e) = procs::wait_listening(&mut proc, addr, Duration::from_secs(30)).await {
        // The sandbox goes with the run: say here what the proxy said.
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = said.lines().rev().take(12).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        anyhow::bail!("{e:#}; its output:\n{}", tail.join("\n"));
    }
    Ok(Running { proc: Some(proc), target })
}

async fn measure_row(
    plan: &Plan,
    sb: &Sandbox,
    up: Upstream,
    tls: &Tls,
    subject: Subject,
    base: Option<&(String, Vec<(Load, f64)>)>,
) -> anyhow::Result<report::Row> {
    let st = &plan.settings;
    let warm = Duration::from_secs_f64(st.warmup_s);
    let window = Duration::from_secs_f64(st.window_s);
    let name = subject.name();
    let mut running = start(sb, up, tls, subject).await?;
    // Idle memory first, on a fresh process for each protocol, so that memory freed by an earlier
    // phase (the allocator keeps it) does not hide what connections cost. The last protocol's
    // process goes on to the load phases.
    let mut idle = Vec::new();
    if running.proc.is_some() && st.idle_connections > 0 {
        for (i, protocol) in st.idle_protocols.iter().enumerate() {
            if i > 0 {
                drop(running);
                running = start(sb, up, tls, subject).await?;
            }
            idle.push(measure_idle(&running, *protocol, st.idle_connections, &name).await?);
        }
    }
    let pid = running.proc.as_ref().map(Proc::pid);
    let target = running.target.clone();
    let mut loads = Vec::new();
    for load in plan.full_loads.iter().chain(&plan.saturation_loads).copied() {
        loads.push(saturation(plan, &mut running, load, &name).await?);
    }
    // Open loop, at fractions of the base row's saturation (this row's own when it is the base).
    // This is the first round; later ones (`interleaved_round`) repeat the saturation figures
    // alone, whose ratios between rows the noise of a shared machine moves most.
    for result in loads.iter_mut().filter(|l| plan.full_loads.contains(&l.load)) {
        let load = result.load;
        let base_rate =
            base.and_then(|(_, b)| b.iter().find(|(l, _)| *l == load).map(|(_, r)| *r)).unwrap_or(result.rate);
        for fraction in [0.25, 0.5] {
            let rate = base_rate * fraction;
            let (conns, streams) = connections(st, load, true);
            let slots = loadgen::open_slots(&target, load, conns, streams).await?;
            let out = loadgen::open(slots, rate, warm, window).await;
            eprintln!(
                "{name}: {} open loop at {rate:.0}/s: p50 {} µs, p99 {} µs, p99.9 {} µs, {} errors",
                load.label(),
                out.quantile_us(0.5),
                out.quantile_us(0.99),
                out.quantile_us(0.999),
                out.errors
            );
            result.open.push(OpenResult {
                fraction,
                target_rate: rate,
                achieved_rate: out.rate(),
                p50_us: out.quantile_us(0.5),
                p99_us: out.quantile_us(0.99),
                p999_us: out.quantile_us(0.999),
                errors: out.errors,
            });
        }
    }
    let mut handshakes = Vec::new();
    for protocol in st.handshake_protocols.iter().copied().filter(|_| running.proc.is_some()) {
        let out = loadgen::handshakes(&target, protocol, st.handshake_concurrency, warm, window, pid).await;
        let (cpu, errors) = cpu_and_errors(&out);
        eprintln!("{name}: {} {:.0} handshakes/s, CPU {cpu} ms each, {errors}", protocol.label(), out.rate());
        let mut h = Handshakes::new(protocol, out.rate(), out.cpu_ms_per_answer(), out.errors);
        h.first_error = out.first_error;
        handshakes.push(h);
    }
    if let Some(p) = running.proc.as_mut() {
        p.check_alive()?;
    }
    drop(running);
    Ok(report::Row { name, skipped: None, loads, handshakes, idle })
}

/// The proxy's CPU per answer (or "-") and the errors with the first of them, as the progress
/// lines show them.
fn cpu_and_errors(out: &loadgen::Outcome) -> (String, String) {
    let cpu = out.cpu_ms_per_answer().map_or("-".to_owned(), |c| format!("{c:.3}"));
    let first = out.first_error.as_deref().map_or(String::new(), |e| format!(" (first: {e})"));
    (cpu, format!("{} errors{first}", out.errors))
}

/// The closed loop at saturation of one load on a running proxy.
async fn saturation(plan: &Plan, running: &mut Running, load: Load, name: &str) -> anyhow::Result<LoadResult> {
    let st = &plan.settings;
    let (warm, window) = (Duration::from_secs_f64(st.warmup_s), Duration::from_secs_f64(st.window_s));
    let pid = running.proc.as_ref().map(Proc::pid);
    let (conns, streams) = connections(st, load, false);
    let slots = loadgen::open_slots(&running.target, load, conns, streams).await.context(load.label())?;
    let out = loadgen::closed(slots, warm, window, pid).await;
    if let Some(p) = running.proc.as_mut() {
        p.check_alive()?;
    }
    let (cpu, errors) = cpu_and_errors(&out);
    eprintln!("{name}: {} saturation {:.0}/s, CPU {cpu} s/1000, {errors}", load.label(), out.rate());
    Ok(LoadResult {
        load,
        rate: out.rate(),
        cpu_s_per_1000: out.cpu_ms_per_answer(),
        audit_writer_s_per_1000: out.audit_cpu_ms_per_answer(),
        audit_batches_per_1000: out.audit_batches_per_1000(),
        proxy_core_busy: out.cpu.map(|c| c / window.as_secs_f64()),
        errors: out.errors,
        first_error: out.first_error.clone(),
        closed_p50_us: out.quantile_us(0.5),
        closed_p99_us: out.quantile_us(0.99),
        open: Vec::new(),
        round_rates: Vec::new(),
    })
}

/// A round after the first (`--rounds`): every row's proxy is started at once, and within each
/// load the rows take turns, the first of them moving on by one each round. An audit mode and
/// audit off are then measured seconds apart, rather than a row's whole set of loads apart, so
/// that the slow swings of a shared machine move both alike. Saturation only.
async fn interleaved_round(
    plan: &Plan,
    sb: &Sandbox,
    up: Upstream,
    tls: &Tls,
    subjects: &[Subject],
    round: usize,
) -> Vec<report::Row> {
    let mut rows = Vec::new();
    let mut running = Vec::new();
    for &subject in subjects {
        match start(sb, up, tls, subject).await {
            Ok(r) => running.push((subject, r, Vec::new())),
            Err(e) => {
                eprintln!("{}: failed: {e:#}", subject.name());
                rows.push(report::Row::skipped(&subject.name(), format!("failed: {e:#}")));
            }
        }
    }
    let n = running.len();
    for load in plan.full_loads.iter().chain(&plan.saturation_loads).copied() {
        for i in turns(n, round) {
            let (subject, proxy, loads) = &mut running[i];
            match saturation(plan, proxy, load, &subject.name()).await {
                Ok(result) => loads.push(result),
                // The row keeps the rounds it has; its ratios fall back to its median round.
                Err(e) => eprintln!("{}: {} failed: {e:#}", subject.name(), load.label()),
            }
        }
    }
    for (subject, proxy, loads) in running {
        drop(proxy);
        rows.push(report::Row { name: subject.name(), skipped: None, loads, handshakes: Vec::new(), idle: Vec::new() });
    }
    rows
}

/// The order in which `n` rows take their turns within a load in `round`: each row once, the
/// first moving on by one each round, so that no row is always measured first or right after
/// the same one.
fn turns(n: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| (k + round) % n)
}

/// Holds `n` idle connections of `protocol` to the row's proxy and reads what its memory grew by.
async fn measure_idle(running: &Running, protocol: Protocol, n: usize, name: &str) -> anyhow::Result<IdleMemory> {
    let proc = running.proc.as_ref().context("no process to measure")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = proc.rss_kib().unwrap_or(0);
    let held = loadgen::idle(&running.target, protocol, n, 64).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = proc.rss_kib().unwrap_or(0);
    let m = IdleMemory::new(protocol, held.opened, held.errors, before, after);
    eprintln!(
        "{name}: {} {} idle connections ({} failed): RSS {before} → {after} KiB, {} KiB per 1000",
        held.opened,
        protocol.label(),
        held.errors,
        m.kib_per_1000.map_or("-".to_owned(), |k| format!("{k:.0}"))
    );
    held.close();
    // Let the proxy see the connections go before the next phase.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(m)
}

/// Connections and streams per connection for a load, closed or open loop.
fn connections(st: &report::Settings, load: Load, open: bool) -> (usize, usize) {
    match (load, open) {
        (Load::H1 | Load::H1Large, false) => (st.closed_h1_connections, 1),
        (Load::H1 | Load::H1Large, true) => (st.open_h1_connections, 1),
        (_, false) => (st.closed_h2_connections, st.closed_h2_streams),
        (_, true) => (st.open_h2_connections, st.open_h2_streams),
    }
}

fn machine(before: &str, after: &str, versions: Vec<(String, String)>) -> report::Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".to_owned(), |(_, v)| v.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_mib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<u64>().ok())
        .map_or(0, |k| k / 1024);
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).map_or("unknown".to_owned(), |c| {
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        if dirty { format!("{c} (with uncommitted changes)") } else { c }
    });
    let first3 = |s: &str| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    report::Machine {
        cpu,
        cores: procs::online_cores(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
        memory_mib,
        load_average_before: first3(before),
        load_average_after: first3(after),
        commit,
        pinned: procs::can_pin(),
        versions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_round_every_row_takes_one_turn_and_the_first_turn_moves_on() {
        for round in 0..5 {
            let mut order: Vec<usize> = turns(4, round).collect();
            assert_eq!(order[0], round % 4);
            order.sort_unstable();
            assert_eq!(order, [0, 1, 2, 3]);
        }
        assert_eq!(turns(0, 3).count(), 0);
    }
}
