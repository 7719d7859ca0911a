//! `splpd-bench oha-check`: the load generator's HTTP/1.1 figures against oha's, on the same
//! server in the same run, so that a bias of the load generator would show. Starts one row
//! (direct or a proxy), measures it with the closed loop, then with `oha` (not installed by the
//! harness: `cargo install oha`) at the same connection count and duration.

use std::time::Duration;

use anyhow::Context as _;

use crate::compare::Subject;
use crate::loadgen::{self, Load, Tls};
use crate::pki::Sandbox;
use crate::procs;

pub(crate) fn run(subject: Subject, connections: usize, seconds: u64) -> anyhow::Result<()> {
    let oha = which("oha").context("oha is not installed: `cargo install oha --locked` adds it")?;
    let sb = Sandbox::new()?;
    procs::pin_self(procs::LOAD_CORE);
    let up_rt = crate::runtime(1)?;
    let up = up_rt.block_on(crate::upstream::start())?;
    let rt = crate::runtime(1)?;
    let tls = Tls { h1: sb.client_tls(b"http/1.1")?, h2: sb.client_tls(b"h2")? };
    rt.block_on(async {
        let running = crate::compare::start(&sb, up, &tls, subject).await?;
        let target = running.target.clone();
        let window = Duration::from_secs(seconds);
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        // Alternate, so that a change in the machine's load hits both alike.
        for _ in 0..2 {
            let slots = loadgen::open_slots(&target, Load::H1, connections, 1).await?;
            let out = loadgen::closed(slots, Duration::from_secs(1), window, None).await;
            ours.push(out.rate());
            let url = match target.tls {
                Some(_) => format!("https://localhost:{}{}/1k", target.addr.port(), target.prefix),
                None => format!("http://{}/1k", target.addr),
            };
            let mut cmd = tokio::process::Command::new(&oha);
            cmd.args(["--no-tui", "-c", &connections.to_string(), "-z", &format!("{seconds}s")]);
            if target.tls.is_some() {
                cmd.arg("--cacert").arg(&sb.ca).arg("--cert").arg(&sb.client_cert).arg("--key").arg(&sb.client_key);
            }
            let output = cmd.arg(&url).output().await.context("running oha")?;
            let text = String::from_utf8_lossy(&output.stdout);
            let rate = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .with_context(|| format!("no Requests/sec in oha's output:\n{text}"))?;
            theirs.push(rate);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        println!(
            "{}: HTTP/1.1, {connections} connections, {seconds} s, twice each: splpd-bench {:.0}/s ({}), oha {:.0}/s ({}); \
             splpd-bench / oha = {:.2}",
            subject.name(),
            mean(&ours),
            ours.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", "),
            mean(&theirs),
            theirs.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", "),
            mean(&ours) / mean(&theirs).max(1.0)
        );
        drop(running);
        Ok(())
    })
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    let home = std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo/bin"));
    std::env::split_paths(&path).chain(home).map(|d| d.join(name)).find(|p| p.is_file())
}
