//! The comparison's results: the data (serialised as JSON), the markdown tables with every
//! figure also as a ratio to nginx's, and where splpd stands against its targets.

use std::fmt::Write as _;

use serde::Serialize;

use crate::loadgen::Load;

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
}

#[derive(Debug, Serialize)]
pub(crate) struct Row {
    pub(crate) name: String,
    /// Why the row was not measured (a proxy not installed).
    pub(crate) skipped: Option<String>,
    pub(crate) loads: Vec<LoadResult>,
    pub(crate) handshakes: Option<Handshakes>,
    pub(crate) idle: Option<IdleMemory>,
}

impl Row {
    pub(crate) fn skipped(name: &str, why: String) -> Self {
        Self { name: name.to_owned(), skipped: Some(why), loads: Vec::new(), handshakes: None, idle: None }
    }

    fn load(&self, load: Load) -> Option<&LoadResult> {
        self.loads.iter().find(|l| l.load == load)
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct LoadResult {
    pub(crate) load: Load,
    /// Answers per second at saturation (closed loop).
    pub(crate) rate: f64,
    /// CPU seconds of the proxy process per 1000 answers (= CPU ms per answer).
    pub(crate) cpu_s_per_1000: Option<f64>,
    /// Share of its core the proxy used in the window: below 1, something else (the load
    /// generator's core, or other work on the machine) set the saturation rate.
    pub(crate) proxy_core_busy: Option<f64>,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) closed_p50_us: u64,
    pub(crate) closed_p99_us: u64,
    pub(crate) open: Vec<OpenResult>,
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

#[derive(Debug, Serialize)]
pub(crate) struct Handshakes {
    pub(crate) per_s: f64,
    pub(crate) cpu_ms_each: Option<f64>,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct IdleMemory {
    pub(crate) connections: usize,
    pub(crate) errors: usize,
    pub(crate) rss_before_kib: u64,
    pub(crate) rss_after_kib: u64,
}

impl IdleMemory {
    pub(crate) fn kib_per_1000(&self) -> Option<f64> {
        (self.connections > 0)
            .then(|| self.rss_after_kib.saturating_sub(self.rss_before_kib) as f64 * 1000.0 / self.connections as f64)
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
             one request. Idle memory: {} mTLS connections opened (one request each) and held.",
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

        let _ = writeln!(s, "\n### Connections (× nginx)\n");
        let _ = writeln!(
            s,
            "| row | full mTLS handshakes/s | CPU ms per handshake | RSS KiB per 1000 idle mTLS connections |"
        );
        let _ = writeln!(s, "|---|---|---|---|");
        let nh = nginx.and_then(|n| n.handshakes.as_ref());
        let ni = nginx.and_then(|n| n.idle.as_ref()).and_then(IdleMemory::kib_per_1000);
        for r in measured.iter().filter(|r| r.handshakes.is_some() || r.idle.is_some()) {
            let h = r.handshakes.as_ref();
            let idle = r.idle.as_ref().and_then(IdleMemory::kib_per_1000);
            let idle_note = r.idle.as_ref().map_or(String::new(), |i| {
                if i.errors > 0 {
                    format!(" [{} of {} opened]", i.connections, i.connections + i.errors)
                } else {
                    String::new()
                }
            });
            let _ = writeln!(
                s,
                "| {} | {} | {} | {}{idle_note} |",
                r.name,
                cell(h.map(|h| h.per_s), nh.map(|h| h.per_s), 0),
                cell(h.and_then(|h| h.cpu_ms_each), nh.and_then(|h| h.cpu_ms_each), 3),
                cell(idle, ni, 0),
            );
        }

        s.push_str(&self.targets());
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
            let rate = |r: Option<&Row>| r.and_then(|r| r.load(*l)).map(|x| x.rate);
            let _ = writeln!(
                s,
                "- {}: CPU per request, audit sync / nginx ≤ 0.8: {}; splpd (sync) / floor ≤ 1.3: {}; \
                 requests/s audit sync / audit off ≥ 0.9: {}",
                l.label(),
                verdict(ratio(cpu(sync), cpu(nginx)), &|v| v <= 0.8),
                verdict(ratio(cpu(sync), cpu(floor)), &|v| v <= 1.3),
                verdict(ratio(rate(sync), rate(off)), &|v| v >= 0.9),
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
        let hs = |r: Option<&Row>| r.and_then(|r| r.handshakes.as_ref()).map(|h| h.per_s);
        let _ = writeln!(
            s,
            "- full mTLS handshakes/s, audit sync / nginx ≥ 1.5: {}",
            verdict(ratio(hs(sync), hs(nginx)), &|v| v >= 1.5)
        );
        let idle = sync.and_then(|r| r.idle.as_ref()).and_then(IdleMemory::kib_per_1000).map(|k| k / 1000.0);
        let _ = writeln!(s, "- RSS per idle mTLS connection ≤ 32 KiB: {}", verdict(idle, &|v| v <= 32.0));
        let _ = writeln!(s, "\nThroughput of each audit mode against audit off (same run):\n");
        for mode in ["async", "sync", "strict"] {
            let r = self.row(&format!("splpd audit {mode}"));
            let parts: Vec<String> = loads
                .iter()
                .filter_map(|l| {
                    let v = ratio(
                        r.and_then(|r| r.load(*l)).map(|x| x.rate),
                        off.and_then(|o| o.load(*l)).map(|x| x.rate),
                    )?;
                    Some(format!("{} {v:.2}×", l.label()))
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
        let m = IdleMemory { connections: 2000, errors: 0, rss_before_kib: 10_000, rss_after_kib: 50_000 };
        assert_eq!(m.kib_per_1000(), Some(20_000.0));
        let shrunk = IdleMemory { connections: 10, errors: 0, rss_before_kib: 10_000, rss_after_kib: 9_000 };
        assert_eq!(shrunk.kib_per_1000(), Some(0.0));
        let none = IdleMemory { connections: 0, errors: 5, rss_before_kib: 1, rss_after_kib: 2 };
        assert_eq!(none.kib_per_1000(), None);
    }
}
