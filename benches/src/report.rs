//! The comparison's results: the data (serialised as JSON), the markdown tables with every
//! figure also as a ratio to nginx's, and where splpd stands against its targets.

use std::fmt::Write as _;

use serde::Serialize;

use crate::loadgen::{Load, Protocol};

/// One full run.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) command: String,
    pub(crate) machine: Machine,
    pub(crate) settings: Settings,
    /// The row whose saturation rates set the open-loop rates (nginx, or the floor without it).
    pub(crate) rate_base: Option<String>,
    pub(crate) rows: Vec<Row>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Machine {
    pub(crate) cpu: String,
    pub(crate) cores: usize,
    pub(crate) kernel: String,
    pub(crate) memory_mib: u64,
    pub(crate) load_average_before: String,
    pub(crate) load_average_after: String,
    pub(crate) commit: String,
    pub(crate) pinned: bool,
    pub(crate) versions: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Settings {
    /// Times every row was measured at saturation, rows taking turns; see [`Report::merge_rounds`].
    pub(crate) rounds: usize,
    pub(crate) warmup_s: f64,
    pub(crate) window_s: f64,
    pub(crate) closed_h1_connections: usize,
    pub(crate) closed_h2_connections: usize,
    pub(crate) closed_h2_streams: usize,
    pub(crate) open_h1_connections: usize,
    pub(crate) open_h2_connections: usize,
    pub(crate) open_h2_streams: usize,
    pub(crate) handshake_concurrency: usize,
    pub(crate) idle_connections: usize,
    /// Protocols whose handshakes are measured: those of the loads the run selects.
    pub(crate) handshake_protocols: Vec<Protocol>,
    /// Protocols whose idle memory is measured (HTTP/2 standing for gRPC); none with `--idle 0`.
    pub(crate) idle_protocols: Vec<Protocol>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Row {
    pub(crate) name: String,
    /// Why the row was not measured (a proxy not installed).
    pub(crate) skipped: Option<String>,
    pub(crate) loads: Vec<LoadResult>,
    /// One entry per protocol measured.
    pub(crate) handshakes: Vec<Handshakes>,
    /// One entry per protocol measured, each on a freshly started proxy.
    pub(crate) idle: Vec<IdleMemory>,
}

impl Row {
    pub(crate) fn skipped(name: &str, why: String) -> Self {
        Self { name: name.to_owned(), skipped: Some(why), loads: Vec::new(), handshakes: Vec::new(), idle: Vec::new() }
    }

    fn load(&self, load: Load) -> Option<&LoadResult> {
        self.loads.iter().find(|l| l.load == load)
    }

    fn handshakes(&self, protocol: Protocol) -> Option<&Handshakes> {
        self.handshakes.iter().find(|h| h.protocol == protocol)
    }

    fn idle(&self, protocol: Protocol) -> Option<&IdleMemory> {
        self.idle.iter().find(|i| i.protocol == protocol)
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct LoadResult {
    pub(crate) load: Load,
    /// Answers per second at saturation (closed loop).
    pub(crate) rate: f64,
    /// CPU seconds of the proxy process per 1000 answers (= CPU ms per answer).
    pub(crate) cpu_s_per_1000: Option<f64>,
    /// Of that, splpd's audit log writer thread: its share of what the audit log costs (the
    /// rest falls on the exchanges' threads: appending, waiting, being preempted).
    pub(crate) audit_writer_s_per_1000: Option<f64>,
    /// The audit log's batches (one write each) and syncs per 1000 answers: 1000 over the
    /// syncs is the exchanges a group commit carries.
    pub(crate) audit_batches_per_1000: Option<(f64, f64)>,
    /// Share of its core the proxy used in the window: below 1, something else (the load
    /// generator's core, or other work on the machine) set the saturation rate.
    pub(crate) proxy_core_busy: Option<f64>,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) closed_p50_us: u64,
    pub(crate) closed_p99_us: u64,
    pub(crate) open: Vec<OpenResult>,
    /// The saturation rate of each round, in order; the figures above are the median round's.
    pub(crate) round_rates: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct OpenResult {
    /// Fraction of the base row's saturation rate.
    pub(crate) fraction: f64,
    pub(crate) target_rate: f64,
    pub(crate) achieved_rate: f64,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) p999_us: u64,
    pub(crate) errors: u64,
}

/// Full mTLS handshakes, a new connection for each call of one protocol.
#[derive(Debug, Serialize)]
pub(crate) struct Handshakes {
    pub(crate) protocol: Protocol,
    pub(crate) per_s: f64,
    pub(crate) cpu_ms_each: Option<f64>,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    /// `per_s` over nginx's for the same protocol (set once every row is in).
    pub(crate) per_s_vs_nginx: Option<f64>,
    pub(crate) cpu_ms_each_vs_nginx: Option<f64>,
}

impl Handshakes {
    pub(crate) fn new(protocol: Protocol, per_s: f64, cpu_ms_each: Option<f64>, errors: u64) -> Self {
        Self {
            protocol,
            per_s,
            cpu_ms_each,
            errors,
            first_error: None,
            per_s_vs_nginx: None,
            cpu_ms_each_vs_nginx: None,
        }
    }
}

/// What the proxy's resident memory grew by while it held idle connections of one protocol.
#[derive(Debug, Serialize)]
pub(crate) struct IdleMemory {
    pub(crate) protocol: Protocol,
    /// The protocols this figure stands for: an idle gRPC connection is an HTTP/2 one.
    pub(crate) covers: Vec<Protocol>,
    pub(crate) connections: usize,
    pub(crate) errors: usize,
    pub(crate) rss_before_kib: u64,
    pub(crate) rss_after_kib: u64,
    pub(crate) kib_per_1000: Option<f64>,
    /// `kib_per_1000` over nginx's for the same protocol (set once every row is in).
    pub(crate) kib_per_1000_vs_nginx: Option<f64>,
}

impl IdleMemory {
    pub(crate) fn new(
        protocol: Protocol,
        connections: usize,
        errors: usize,
        rss_before_kib: u64,
        rss_after_kib: u64,
    ) -> Self {
        let kib_per_1000 = (connections > 0)
            .then(|| rss_after_kib.saturating_sub(rss_before_kib) as f64 * 1000.0 / connections as f64);
        Self {
            protocol,
            covers: protocol.idle_covers(),
            connections,
            errors,
            rss_before_kib,
            rss_after_kib,
            kib_per_1000,
            kib_per_1000_vs_nginx: None,
        }
    }
}

/// What an idle figure is headed with: HTTP/2's is gRPC's too.
fn idle_label(protocol: Protocol) -> String {
    let names: Vec<&str> = protocol.idle_covers().into_iter().map(Protocol::label).collect();
    names.join(" and ")
}

/// The median of `values` (the upper one of the middle two for an even count); `None` for none.
/// The median of the finite values (the upper one of an even count), if any.
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// Requests/s of `a` against `b`: with several rounds the median of the ratios of each round
/// (rows measured side by side), which drifts of a shared machine between rounds do not move;
/// also returned, the ratio of each round.
fn rate_ratio(a: &LoadResult, b: &LoadResult) -> (Option<f64>, Vec<f64>) {
    if a.round_rates.len() > 1 && a.round_rates.len() == b.round_rates.len() {
        let each: Vec<f64> =
            a.round_rates.iter().zip(&b.round_rates).filter_map(|(x, y)| ratio(Some(*x), Some(*y))).collect();
        (median(&each), each)
    } else {
        (ratio(Some(a.rate), Some(b.rate)), Vec::new())
    }
}

fn ratio(v: Option<f64>, base: Option<f64>) -> Option<f64> {
    match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => Some(v / b),
        _ => None,
    }
}

/// `value (ratio×)`, or `-` for what was not measured.
fn cell(v: Option<f64>, base: Option<f64>, digits: usize) -> String {
    match (v, ratio(v, base)) {
        (Some(v), Some(r)) => format!("{v:.digits$} ({r:.2}×)"),
        (Some(v), None) => format!("{v:.digits$}"),
        (None, _) => "-".to_owned(),
    }
}

impl Report {
    /// Makes one row per subject out of the rows of each round (`rounds[0]` measured in full,
    /// later rounds at saturation only): each load keeps the figures of its median round by
    /// requests/s, and the rates of all rounds.
    pub(crate) fn merge_rounds(mut rounds: Vec<Vec<Row>>) -> Vec<Row> {
        if rounds.is_empty() {
            return Vec::new();
        }
        let mut later = rounds.split_off(1);
        let mut rows = rounds.pop().unwrap_or_default();
        for row in &mut rows {
            for result in &mut row.loads {
                // This load's results from the later rounds, taken out of them.
                let mut others: Vec<LoadResult> = later
                    .iter_mut()
                    .filter_map(|r| r.iter_mut().find(|x| x.name == row.name))
                    .filter_map(|x| {
                        let i = x.loads.iter().position(|l| l.load == result.load)?;
                        Some(x.loads.swap_remove(i))
                    })
                    .collect();
                let rates: Vec<f64> = std::iter::once(result.rate).chain(others.iter().map(|c| c.rate)).collect();
                let Some(mid) = median(&rates) else { continue };
                if result.rate != mid
                    && let Some(i) = others.iter().position(|c| c.rate == mid)
                {
                    // Open loops are measured in the first round only.
                    let open = std::mem::take(&mut result.open);
                    *result = others.swap_remove(i);
                    result.open = open;
                }
                result.round_rates = rates;
            }
        }
        rows
    }

    /// Fills in every connection figure's ratio to nginx's for the same protocol.
    pub(crate) fn set_ratios_to_nginx(&mut self) {
        let (base_h, base_i): (Vec<_>, Vec<_>) = match self.nginx() {
            Some(n) => (
                n.handshakes.iter().map(|h| (h.protocol, h.per_s, h.cpu_ms_each)).collect(),
                n.idle.iter().map(|i| (i.protocol, i.kib_per_1000)).collect(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        for row in &mut self.rows {
            for h in &mut row.handshakes {
                let base = base_h.iter().find(|(p, ..)| *p == h.protocol);
                h.per_s_vs_nginx = ratio(Some(h.per_s), base.map(|b| b.1));
                h.cpu_ms_each_vs_nginx = ratio(h.cpu_ms_each, base.and_then(|b| b.2));
            }
            for i in &mut row.idle {
                let base = base_i.iter().find(|(p, _)| *p == i.protocol).and_then(|b| b.1);
                i.kib_per_1000_vs_nginx = ratio(i.kib_per_1000, base);
            }
        }
    }

    fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name && r.skipped.is_none())
    }

    fn nginx(&self) -> Option<&Row> {
        self.row("nginx")
    }

    fn loads(&self) -> Vec<Load> {
        let mut loads: Vec<Load> = Vec::new();
        for r in &self.rows {
            for l in &r.loads {
                if !loads.contains(&l.load) {
                    loads.push(l.load);
                }
            }
        }
        loads
    }

    fn open_loads(&self) -> Vec<Load> {
        self.loads()
            .into_iter()
            .filter(|l| self.rows.iter().any(|r| r.load(*l).is_some_and(|x| !x.open.is_empty())))
            .collect()
    }

    /// The markdown report.
    pub(crate) fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(s, "Command: `{}`\n", self.command);
        let _ = writeln!(
            s,
            "Machine: {} ({} cores, {} MiB, Linux {}); proxies pinned to core 0, load and upstream to core 1: {}. \
             Load average before/after: {} / {}. Commit: {}.",
            m.cpu, m.cores, m.memory_mib, m.kernel, m.pinned, m.load_average_before, m.load_average_after, m.commit
        );
        for (what, v) in &m.versions {
            let _ = writeln!(s, "- {what}: {v}");
        }
        let st = &self.settings;
        let _ = writeln!(
            s,
            "\nEach measurement: {:.1} s warm-up, {:.1} s window. Saturation: closed loop, {} HTTP/1.1 connections, \
             or {} HTTP/2 connections × {} streams. Open loop: {} HTTP/1.1 connections or {} × {} streams, latency \
             from when each call was due. Handshakes: {} loops, each a new connection with a full mTLS handshake and \
             one call (HTTP/1.1: a GET with `Connection: close`; HTTP/2: ALPN h2, a GET; gRPC: ALPN h2, a unary \
             call). Idle memory: {} mTLS connections opened (one call each, so HTTP/2 has exchanged its SETTINGS) \
             and held, on a freshly started proxy for each protocol; a gRPC connection is an HTTP/2 connection, so \
             HTTP/2's figure stands for gRPC's.",
            st.warmup_s,
            st.window_s,
            st.closed_h1_connections,
            st.closed_h2_connections,
            st.closed_h2_streams,
            st.open_h1_connections,
            st.open_h2_connections,
            st.open_h2_streams,
            st.handshake_concurrency,
            st.idle_connections
        );
        if st.rounds > 1 {
            let _ = writeln!(
                s,
                "\nSaturation was measured in {} rounds: the first row after row, each later one with every row's \
                 proxy running and the rows taking turns within each load. Each saturation figure is its load's \
                 median round. Idle memory, open loops and handshakes are from the first round.",
                st.rounds
            );
        }
        for r in &self.rows {
            if let Some(why) = &r.skipped {
                let _ = writeln!(s, "\n**{}: skipped.** {why}", r.name);
            }
        }
        let loads = self.loads();
        let nginx = self.nginx();

        let header = |s: &mut String, title: &str, loads: &[Load]| {
            let _ = writeln!(s, "\n### {title}\n");
            let _ = write!(s, "| row |");
            for l in loads {
                let _ = write!(s, " {} |", l.label());
            }
            let _ = write!(s, "\n|---|");
            for _ in loads {
                let _ = write!(s, "---|");
            }
            s.push('\n');
        };
        let measured: Vec<&Row> = self.rows.iter().filter(|r| r.skipped.is_none()).collect();

        header(&mut s, "Requests/s at saturation (× nginx)", &loads);
        for r in &measured {
            let _ = write!(s, "| {} |", r.name);
            for l in &loads {
                let v = r.load(*l).map(|x| x.rate);
                let b = nginx.and_then(|n| n.load(*l)).map(|x| x.rate);
                let errs = r.load(*l).map_or(0, |x| x.errors);
                let mark = if errs > 0 { format!(" [{errs} errors]") } else { String::new() };
                let _ = write!(s, " {}{mark} |", cell(v, b, 0));
            }
            s.push('\n');
        }

        header(&mut s, "CPU seconds of the proxy per 1000 requests, at saturation (× nginx)", &loads);
        for r in measured.iter().filter(|r| r.name != "direct") {
            let _ = write!(s, "| {} |", r.name);
            for l in &loads {
                let v = r.load(*l).and_then(|x| x.cpu_s_per_1000);
                let b = nginx.and_then(|n| n.load(*l)).and_then(|x| x.cpu_s_per_1000);
                let _ = write!(s, " {} |", cell(v, b, 3));
            }
            s.push('\n');
        }

        header(&mut s, "Share of its core the proxy used at saturation", &loads);
        for r in measured.iter().filter(|r| r.name != "direct") {
            let _ = write!(s, "| {} |", r.name);
            for l in &loads {
                let v = r.load(*l).and_then(|x| x.proxy_core_busy);
                let _ = write!(s, " {} |", v.map_or("-".to_owned(), |v| format!("{:.0}%", v * 100.0)));
            }
            s.push('\n');
        }

        let open_loads = self.open_loads();
        let base = self.rate_base.as_deref().unwrap_or("nginx");
        for (i, frac) in [0.25, 0.5].into_iter().enumerate() {
            header(
                &mut s,
                &format!(
                    "Latency p50 / p99 / p99.9 in µs, open loop at {:.0}% of {base}'s saturation rate (p99 × nginx)",
                    frac * 100.0
                ),
                &open_loads,
            );
            for r in &measured {
                let _ = write!(s, "| {} |", r.name);
                for l in &open_loads {
                    let o = r.load(*l).and_then(|x| x.open.get(i));
                    let b = nginx.and_then(|n| n.load(*l)).and_then(|x| x.open.get(i)).map(|o| o.p99_us as f64);
                    match o {
                        Some(o) => {
                            let rr = ratio(Some(o.p99_us as f64), b).map_or(String::new(), |r| format!(" ({r:.2}×)"));
                            let errs = if o.errors > 0 { format!(" [{} errors]", o.errors) } else { String::new() };
                            let _ = write!(
                                s,
                                " {} / {} / {}{rr} @{:.0}/s{errs} |",
                                o.p50_us, o.p99_us, o.p999_us, o.achieved_rate
                            );
                        }
                        None => s.push_str(" - |"),
                    }
                }
                s.push('\n');
            }
        }

        s.push_str(&self.connections_table());
        s.push_str(&self.targets());
        s
    }

    /// Handshakes per second, CPU per handshake and idle memory, a column per protocol.
    fn connections_table(&self) -> String {
        let mut s = String::from("\n### Connections (× nginx)\n\n");
        let st = &self.settings;
        let nginx = self.nginx();
        let mut columns: Vec<String> = Vec::new();
        for p in &st.handshake_protocols {
            columns.push(format!("full mTLS handshakes/s, {}", p.label()));
        }
        for p in &st.handshake_protocols {
            columns.push(format!("CPU ms per handshake, {}", p.label()));
        }
        for p in &st.idle_protocols {
            columns.push(format!("RSS KiB per 1000 idle mTLS connections, {}", idle_label(*p)));
        }
        let _ = writeln!(s, "| row | {} |", columns.join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(columns.len()));
        let measured = self.rows.iter().filter(|r| r.skipped.is_none());
        for r in measured.filter(|r| !r.handshakes.is_empty() || !r.idle.is_empty()) {
            let mut cells: Vec<String> = Vec::new();
            for p in &st.handshake_protocols {
                let h = r.handshakes(*p);
                let errs = h.map_or(0, |h| h.errors);
                let mark = if errs > 0 { format!(" [{errs} errors]") } else { String::new() };
                let base = nginx.and_then(|n| n.handshakes(*p)).map(|h| h.per_s);
                cells.push(format!("{}{mark}", cell(h.map(|h| h.per_s), base, 0)));
            }
            for p in &st.handshake_protocols {
                let base = nginx.and_then(|n| n.handshakes(*p)).and_then(|h| h.cpu_ms_each);
                cells.push(cell(r.handshakes(*p).and_then(|h| h.cpu_ms_each), base, 3));
            }
            for p in &st.idle_protocols {
                let i = r.idle(*p);
                let note = i
                    .filter(|i| i.errors > 0)
                    .map_or(String::new(), |i| format!(" [{} of {} opened]", i.connections, i.connections + i.errors));
                let base = nginx.and_then(|n| n.idle(*p)).and_then(|i| i.kib_per_1000);
                cells.push(format!("{}{note}", cell(i.and_then(|i| i.kib_per_1000), base, 0)));
            }
            let _ = writeln!(s, "| {} | {} |", r.name, cells.join(" | "));
        }
        if st.idle_protocols.contains(&Protocol::H2) {
            s.push_str(
                "\ngRPC calls run on HTTP/2 connections, and an idle gRPC connection is an idle HTTP/2 connection: \
                 the HTTP/2 idle figure stands for both.\n",
            );
        }
        s
    }

    /// splpd against its targets (issue 6) and the audit log's (issue 5), as measured.
    fn targets(&self) -> String {
        let mut s = String::from("\n### splpd against its targets\n\n");
        let sync = self.row("splpd audit sync");
        let nginx = self.nginx();
        let floor = self.row("floor");
        let off = self.row("splpd audit off");
        let verdict = |v: Option<f64>, ok: &dyn Fn(f64) -> bool| match v {
            Some(v) if ok(v) => format!("{v:.2}: met"),
            Some(v) => format!("{v:.2}: not met"),
            None => "not measured".to_owned(),
        };
        let loads = self.loads();
        for l in &loads {
            let cpu = |r: Option<&Row>| r.and_then(|r| r.load(*l)).and_then(|x| x.cpu_s_per_1000);
            let rates = sync.and_then(|r| r.load(*l)).zip(off.and_then(|r| r.load(*l)));
            let _ = writeln!(
                s,
                "- {}: CPU per request, audit sync / nginx ≤ 0.8: {}; splpd (sync) / floor ≤ 1.3: {}; \
                 requests/s audit sync / audit off ≥ 0.9: {}",
                l.label(),
                verdict(ratio(cpu(sync), cpu(nginx)), &|v| v <= 0.8),
                verdict(ratio(cpu(sync), cpu(floor)), &|v| v <= 1.3),
                verdict(rates.and_then(|(s, o)| rate_ratio(s, o).0), &|v| v >= 0.9),
            );
        }
        for l in self.open_loads() {
            let p99 = |r: Option<&Row>| r.and_then(|r| r.load(l)).and_then(|x| x.open.get(1)).map(|o| o.p99_us as f64);
            let _ = writeln!(
                s,
                "- {}: p99 at 50% load, audit sync / nginx ≤ 1.0: {}",
                l.label(),
                verdict(ratio(p99(sync), p99(nginx)), &|v| v <= 1.0)
            );
        }
        for p in &self.settings.handshake_protocols {
            let hs = |r: Option<&Row>| r.and_then(|r| r.handshakes(*p)).map(|h| h.per_s);
            let _ = writeln!(
                s,
                "- {}: full mTLS handshakes/s, audit sync / nginx ≥ 1.5: {}",
                p.label(),
                verdict(ratio(hs(sync), hs(nginx)), &|v| v >= 1.5)
            );
        }
        for p in &self.settings.idle_protocols {
            let idle = sync.and_then(|r| r.idle(*p)).and_then(|i| i.kib_per_1000).map(|k| k / 1000.0);
            let _ = writeln!(
                s,
                "- {}: RSS per idle mTLS connection ≤ 32 KiB: {}",
                idle_label(*p),
                verdict(idle, &|v| v <= 32.0)
            );
        }
        if self.settings.idle_protocols.is_empty() {
            let _ = writeln!(s, "- RSS per idle mTLS connection ≤ 32 KiB: not measured");
        }
        let _ = writeln!(
            s,
            "\nThroughput of each audit mode against audit off (same run{}):\n",
            if self.settings.rounds > 1 { "; the median of the rounds' ratios" } else { "" }
        );
        for mode in ["async", "sync", "strict"] {
            let r = self.row(&format!("splpd audit {mode}"));
            let parts: Vec<String> = loads
                .iter()
                .filter_map(|l| {
                    let (v, each) = rate_ratio(r?.load(*l)?, off?.load(*l)?);
                    let v = v?;
                    Some(if each.is_empty() {
                        format!("{} {v:.2}×", l.label())
                    } else {
                        let each: Vec<String> = each.iter().map(|x| format!("{x:.2}")).collect();
                        format!("{} {v:.2}× (rounds: {})", l.label(), each.join(", "))
                    })
                })
                .collect();
            let _ = writeln!(
                s,
                "- {mode}: {}",
                if parts.is_empty() { "not measured".to_owned() } else { parts.join(", ") }
            );
        }
        let _ = writeln!(
            s,
            "\nCPU seconds per 1000 requests, whole gateway (of it, the audit log's writer thread; its batches and \
             syncs per 1000 requests):\n"
        );
        for mode in ["off", "async", "sync", "strict"] {
            let r = self.row(&format!("splpd audit {mode}"));
            let parts: Vec<String> = loads
                .iter()
                .filter_map(|l| {
                    let x = r?.load(*l)?;
                    let total = x.cpu_s_per_1000?;
                    Some(match (x.audit_writer_s_per_1000, x.audit_batches_per_1000) {
                        (Some(w), Some((b, n))) => {
                            format!("{} {total:.4} ({w:.4}; {b:.1} batches, {n:.1} syncs)", l.label())
                        }
                        (Some(w), None) => format!("{} {total:.4} ({w:.4})", l.label()),
                        _ => format!("{} {total:.4}", l.label()),
                    })
                })
                .collect();
            let _ = writeln!(
                s,
                "- {mode}: {}",
                if parts.is_empty() { "not measured".to_owned() } else { parts.join(", ") }
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_show_the_value_and_its_ratio_to_the_base() {
        assert_eq!(cell(Some(1500.0), Some(1000.0), 0), "1500 (1.50×)");
        assert_eq!(cell(Some(0.1234), None, 3), "0.123");
        assert_eq!(cell(None, Some(1.0), 0), "-");
        assert_eq!(cell(Some(5.0), Some(0.0), 1), "5.0");
    }

    #[test]
    fn idle_memory_is_per_thousand_connections_and_never_negative() {
        let m = IdleMemory::new(Protocol::H1, 2000, 0, 10_000, 50_000);
        assert_eq!(m.kib_per_1000, Some(20_000.0));
        let shrunk = IdleMemory::new(Protocol::H1, 10, 0, 10_000, 9_000);
        assert_eq!(shrunk.kib_per_1000, Some(0.0));
        let none = IdleMemory::new(Protocol::H2, 0, 5, 1, 2);
        assert_eq!(none.kib_per_1000, None);
        assert_eq!(none.covers, vec![Protocol::H2, Protocol::Grpc]);
    }

    fn settings() -> Settings {
        Settings {
            rounds: 1,
            warmup_s: 1.0,
            window_s: 5.0,
            closed_h1_connections: 32,
            closed_h2_connections: 4,
            closed_h2_streams: 8,
            open_h1_connections: 64,
            open_h2_connections: 4,
            open_h2_streams: 32,
            handshake_concurrency: 16,
            idle_connections: 1000,
            handshake_protocols: Protocol::ALL.to_vec(),
            idle_protocols: vec![Protocol::H1, Protocol::H2],
        }
    }

    fn row(name: &str, handshakes: &[(Protocol, f64, f64)], idle: &[(Protocol, u64)]) -> Row {
        Row {
            name: name.to_owned(),
            skipped: None,
            loads: Vec::new(),
            handshakes: handshakes.iter().map(|&(p, per_s, cpu)| Handshakes::new(p, per_s, Some(cpu), 0)).collect(),
            idle: idle.iter().map(|&(p, kib)| IdleMemory::new(p, 1000, 0, 1000, 1000 + kib)).collect(),
        }
    }

    fn report(rows: Vec<Row>) -> Report {
        let machine = Machine {
            cpu: "test CPU".to_owned(),
            cores: 2,
            kernel: "6.1".to_owned(),
            memory_mib: 1024,
            load_average_before: "0 0 0".to_owned(),
            load_average_after: "0 0 0".to_owned(),
            commit: "abc1234".to_owned(),
            pinned: true,
            versions: Vec::new(),
        };
        Report { command: "splpd-bench compare".to_owned(), machine, settings: settings(), rate_base: None, rows }
    }

    fn two_rows() -> Report {
        let nginx = row(
            "nginx",
            &[(Protocol::H1, 100.0, 2.0), (Protocol::H2, 80.0, 2.5), (Protocol::Grpc, 50.0, 4.0)],
            &[(Protocol::H1, 20_000), (Protocol::H2, 40_000)],
        );
        let sync = row(
            "splpd audit sync",
            &[(Protocol::H1, 300.0, 1.0), (Protocol::H2, 100.0, 2.0)],
            &[(Protocol::H1, 30_000), (Protocol::H2, 50_000)],
        );
        report(vec![nginx, sync])
    }

    #[test]
    fn connection_figures_carry_their_ratio_to_nginx_for_the_same_protocol() {
        let mut r = two_rows();
        r.set_ratios_to_nginx();
        let sync = &r.rows[1];
        let h2 = sync.handshakes(Protocol::H2).expect("measured");
        assert_eq!(h2.per_s_vs_nginx, Some(1.25));
        assert_eq!(h2.cpu_ms_each_vs_nginx, Some(0.8));
        assert_eq!(sync.handshakes(Protocol::H1).and_then(|h| h.per_s_vs_nginx), Some(3.0));
        assert_eq!(sync.idle(Protocol::H2).and_then(|i| i.kib_per_1000_vs_nginx), Some(1.25));
        assert_eq!(sync.idle(Protocol::H1).and_then(|i| i.kib_per_1000_vs_nginx), Some(1.5));
        let json = serde_json::to_value(&r).expect("serialisable");
        let h = &json["rows"][1]["handshakes"][1];
        assert_eq!(h["protocol"], "H2");
        assert_eq!(h["per_s_vs_nginx"], 1.25);
        assert_eq!(json["rows"][1]["idle"][1]["covers"], serde_json::json!(["H2", "Grpc"]));
        assert_eq!(json["rows"][1]["idle"][1]["kib_per_1000"], 50_000.0);
    }

    #[test]
    fn without_nginx_there_are_no_ratios() {
        let mut r = two_rows();
        r.rows.remove(0);
        r.set_ratios_to_nginx();
        assert_eq!(r.rows[0].handshakes[0].per_s_vs_nginx, None);
        assert_eq!(r.rows[0].idle[0].kib_per_1000_vs_nginx, None);
    }

    #[test]
    fn the_connections_table_has_a_column_per_protocol_and_figure() {
        let md = two_rows().connections_table();
        let lines: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(
            lines[0],
            "| row | full mTLS handshakes/s, HTTP/1.1 | full mTLS handshakes/s, HTTP/2 | full mTLS handshakes/s, gRPC \
             | CPU ms per handshake, HTTP/1.1 | CPU ms per handshake, HTTP/2 | CPU ms per handshake, gRPC \
             | RSS KiB per 1000 idle mTLS connections, HTTP/1.1 \
             | RSS KiB per 1000 idle mTLS connections, HTTP/2 and gRPC |"
        );
        assert_eq!(lines[1], "|---|---|---|---|---|---|---|---|---|");
        assert_eq!(
            lines[2],
            "| nginx | 100 (1.00×) | 80 (1.00×) | 50 (1.00×) | 2.000 (1.00×) | 2.500 (1.00×) | 4.000 (1.00×) | 20000 (1.00×) | 40000 (1.00×) |"
        );
        // gRPC handshakes were not measured on this row: a dash, not a borrowed figure.
        assert_eq!(
            lines[3],
            "| splpd audit sync | 300 (3.00×) | 100 (1.25×) | - | 1.000 (0.50×) | 2.000 (0.80×) | - | 30000 (1.50×) | 50000 (1.25×) |"
        );
        assert!(md.contains("the HTTP/2 idle figure stands for both"));
    }

    fn saturation(name: &str, load: Load, rate: f64) -> Row {
        let mut r = row(name, &[], &[]);
        r.loads.push(LoadResult {
            load,
            rate,
            cpu_s_per_1000: Some(1000.0 / rate),
            audit_writer_s_per_1000: None,
            audit_batches_per_1000: None,
            proxy_core_busy: Some(1.0),
            errors: 0,
            first_error: None,
            closed_p50_us: rate as u64,
            closed_p99_us: 0,
            open: Vec::new(),
            round_rates: Vec::new(),
        });
        r
    }

    #[test]
    fn rounds_merge_into_each_loads_median_round_and_ratios_are_the_median_of_each_rounds() {
        let round = |off: f64, sync: f64| {
            vec![saturation("splpd audit off", Load::H1, off), saturation("splpd audit sync", Load::H1, sync)]
        };
        // The second round ran while the machine was slower for the sync row only.
        let rows = Report::merge_rounds(vec![round(100.0, 95.0), round(110.0, 70.0), round(90.0, 92.0)]);
        let off = rows[0].load(Load::H1).unwrap();
        let sync = rows[1].load(Load::H1).unwrap();
        assert_eq!(off.round_rates, [100.0, 110.0, 90.0]);
        assert_eq!((off.rate, off.closed_p50_us), (100.0, 100));
        // The median round's figures come whole: its rate with its own CPU and latency.
        assert_eq!((sync.rate, sync.closed_p50_us, sync.cpu_s_per_1000), (92.0, 92, Some(1000.0 / 92.0)));
        // Ratios 0.95, 0.64 and 1.02: the median is 0.95, where the medians' ratio would be 0.92.
        let (median, each) = rate_ratio(sync, off);
        assert_eq!(each.len(), 3);
        assert!((median.unwrap() - 0.95).abs() < 1e-9, "{median:?}");
        let mut r = report(rows);
        r.settings.rounds = 3;
        let t = r.targets();
        assert!(t.contains("requests/s audit sync / audit off ≥ 0.9: 0.95: met"), "{t}");
        assert!(t.contains("- sync: HTTP/1.1 0.95× (rounds: 0.95, 0.64, 1.02)"), "{t}");
    }

    #[test]
    fn one_round_is_reported_as_measured() {
        let rows = Report::merge_rounds(vec![vec![
            saturation("splpd audit off", Load::H1, 100.0),
            saturation("splpd audit sync", Load::H1, 85.0),
        ]]);
        assert_eq!(rows[1].load(Load::H1).unwrap().round_rates, [85.0]);
        let t = report(rows).targets();
        assert!(t.contains("requests/s audit sync / audit off ≥ 0.9: 0.85: not met"), "{t}");
        assert!(t.contains("- sync: HTTP/1.1 0.85×\n"), "{t}");
    }

    #[test]
    fn the_writer_threads_share_and_its_batches_and_syncs_are_shown_beside_the_gateways_cpu() {
        let mut rows =
            vec![saturation("splpd audit off", Load::H1, 100.0), saturation("splpd audit sync", Load::H1, 90.0)];
        let sync = rows[1].loads.first_mut().unwrap();
        sync.cpu_s_per_1000 = Some(0.03);
        sync.audit_writer_s_per_1000 = Some(0.002);
        sync.audit_batches_per_1000 = Some((16.0, 15.625));
        let t = report(rows).targets();
        assert!(t.contains("- sync: HTTP/1.1 0.0300 (0.0020; 16.0 batches, 15.6 syncs)\n"), "{t}");
        // Audit off has no writer: its CPU alone.
        assert!(t.contains("- off: HTTP/1.1 10.0000\n"), "{t}");
    }

    #[test]
    fn the_targets_are_judged_per_protocol() {
        let t = two_rows().targets();
        assert!(t.contains("- HTTP/1.1: full mTLS handshakes/s, audit sync / nginx ≥ 1.5: 3.00: met\n"), "{t}");
        assert!(t.contains("- HTTP/2: full mTLS handshakes/s, audit sync / nginx ≥ 1.5: 1.25: not met\n"), "{t}");
        assert!(t.contains("- gRPC: full mTLS handshakes/s, audit sync / nginx ≥ 1.5: not measured\n"), "{t}");
        assert!(t.contains("- HTTP/1.1: RSS per idle mTLS connection ≤ 32 KiB: 30.00: met\n"), "{t}");
        assert!(t.contains("- HTTP/2 and gRPC: RSS per idle mTLS connection ≤ 32 KiB: 50.00: not met\n"), "{t}");
    }

    #[test]
    fn with_idle_memory_skipped_there_are_no_idle_columns() {
        let mut r = two_rows();
        r.settings.idle_protocols.clear();
        r.settings.handshake_protocols = vec![Protocol::H1];
        let md = r.connections_table();
        let header = md.lines().find(|l| l.starts_with("| row")).expect("a header");
        assert_eq!(header, "| row | full mTLS handshakes/s, HTTP/1.1 | CPU ms per handshake, HTTP/1.1 |");
        assert!(!md.contains("stands for both"));
        assert!(r.targets().contains("- RSS per idle mTLS connection ≤ 32 KiB: not measured\n"));
    }
}
