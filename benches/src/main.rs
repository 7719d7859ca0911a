//! splpd-bench: load through the gateway against the upstream called directly, in one run.
//!
//! `cargo run -p splpd-bench --release -- quick` makes a dev PKI, starts a fixed upstream (1 KiB
//! answers) and the gateway as a separate process (pinned to core 0 with `taskset` when it is
//! there; the load and the upstream run on core 1), then drives both with the same closed-loop
//! load of HTTP/1.1 keep-alive connections, and prints requests/s, latency percentiles and the
//! gateway's CPU time per 1000 requests. The full side-by-side harness (nginx, haproxy, HTTP/2,
//! gRPC, open loop) builds on this.

#![allow(clippy::print_stdout)]

mod audit;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use splpd_certs::id::Identity;
use splpd_certs::pki::{Ca, InitOptions, KeyType, LeafRequest};

#[derive(Debug, Parser)]
#[command(name = "splpd-bench", about = "Load splpd and compare it with calling the upstream directly")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// One closed-loop run: direct to the upstream, then through splpd with each audit mode.
    Quick {
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Seconds of load per row (after one second of warm-up).
        #[arg(long, default_value_t = 10)]
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
    /// How fast `splpd audit verify` reads a log of the given size.
    AuditVerify {
        /// Records in the log.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
    },
    /// Internal: runs the gateway on a configuration (the benchmark's separate process).
    #[command(hide = true)]
    Gateway {
        /// The configuration file.
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Quick { connections, seconds } => quick(connections, Duration::from_secs(seconds)),
        Cmd::Gateway { config } => gateway_child(&config),
        Cmd::AuditVerify { records } => runtime(1).and_then(|rt| rt.block_on(audit::verify_speed(records))),
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

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?)
}

/// The gateway process: one worker thread, as the comparison pins one core per proxy.
fn gateway_child(config: &Path) -> anyhow::Result<()> {
    let config = splpd_gateway::config::load(config)?;
    runtime(1)?.block_on(async move {
        let options = splpd_gateway::audit::log::AuditLogOptions::from_config(&config);
        let audit = Arc::new(splpd_gateway::audit::log::AuditLog::open(&options)?);
        let running = splpd_gateway::server::start(config, audit).await?;
        // Runs until the parent kills it.
        std::future::pending::<()>().await;
        drop(running);
        Ok(())
    })
}

struct Sandbox {
    dir: tempfile::TempDir,
    ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn sandbox() -> anyhow::Result<Sandbox> {
    let dir = tempfile::tempdir()?;
    let now = time::OffsetDateTime::now_utc();
    let ca = Ca::init(&dir.path().join("ca"), &InitOptions::new("Bench Region", vec!["ID/PEMDA/1602".parse()?]), now)?;
    let issue = |id: Identity, stem: &str, names: bool| -> anyhow::Result<(PathBuf, PathBuf)> {
        let (c, k) = (dir.path().join(format!("{stem}.crt")), dir.path().join(format!("{stem}.key")));
        let mut req = LeafRequest::new(id);
        if names {
            req = req.with_names(vec!["localhost".into()], vec![[127, 0, 0, 1].into()]);
        }
        ca.issue(&req, KeyType::default(), &c, &k, false, now)?;
        Ok((c, k))
    };
    issue(Identity::Server("ID/PEMDA/1602/gw1".parse()?), "gw1", true)?;
    let (client_cert, client_key) = issue(Identity::Subsystem("ID/PEMDA/1602/BENCH".parse()?), "client", false)?;
    let ca_file = dir.path().join("ca/ca.crt");
    Ok(Sandbox { dir, ca: ca_file, client_cert, client_key })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn write_config(sb: &Sandbox, port: u16, upstream: SocketAddr, mode: &str) -> anyhow::Result<PathBuf> {
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
upstreams = ["http://{upstream}"]

[[grant]]
service = "ID/PEMDA/1602/UPSTREAM/echo"
client = "ID/PEMDA/1602/BENCH"

[audit]
dir = "audit-{mode}"
mode = "{mode}"
"#
    );
    let path = sb.dir.path().join(format!("splpd-{mode}.toml"));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The fixed upstream: 1 KiB for every request.
async fn upstream() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let body = Bytes::from(vec![b'x'; 1024]);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let body = body.clone();
                    async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body))) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    });
    Ok(addr)
}

fn pinned(core: usize) -> Option<Command> {
    Path::new("/usr/bin/taskset").exists().then(|| {
        let mut c = Command::new("/usr/bin/taskset");
        c.args(["-c", &core.to_string()]);
        c
    })
}

fn start_gateway(config: &Path) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut cmd = match pinned(0) {
        Some(mut c) => {
            c.arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.arg("gateway").arg(config).current_dir(config.parent().unwrap_or(Path::new(".")));
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::inherit());
    Ok(cmd.spawn()?)
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Clock ticks are 100 per second on Linux for every architecture splpd targets.
    Some((utime + stime) / 100.0)
}

#[derive(Clone)]
enum Target {
    Plain(SocketAddr),
    Tls { addr: SocketAddr, tls: Arc<rustls::ClientConfig> },
}

struct Outcome {
    /// CPU seconds the gateway process used during the measured window.
    cpu: Option<f64>,
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

async fn connection_loop(
    target: Target,
    path: Arc<str>,
    stop: Arc<AtomicBool>,
    warm: Instant,
) -> (u64, u64, Histogram<u64>) {
    let mut hist = new_histogram();
    let (mut ok, mut errors) = (0u64, 0u64);
    let Ok(mut sender) = connect(&target).await else { return (0, 1, hist) };
    while !stop.load(Ordering::Relaxed) {
        let req = hyper::Request::get(&*path).header("host", "localhost").body(Empty::<Bytes>::new());
        let Ok(req) = req else { break };
        let t0 = Instant::now();
        let result = async {
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            resp.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        }
        .await;
        match result {
            Ok(s) if s.is_success() => {
                if t0 >= warm {
                    ok += 1;
                    let _ = hist.record(t0.elapsed().as_micros().try_into().unwrap_or(u64::MAX));
                }
            }
            _ => errors += 1,
        }
    }
    (ok, errors, hist)
}

/// Latencies in microseconds, from 1 µs to 60 s, three significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid")
}

async fn connect(target: &Target) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    match target {
        Target::Plain(addr) => {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            Ok(sender)
        }
        Target::Tls { addr, tls } => {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
                .connect(ServerName::try_from("localhost")?, tcp)
                .await?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            Ok(sender)
        }
    }
}

async fn load(target: Target, path: &str, connections: usize, duration: Duration, pid: Option<u32>) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let path: Arc<str> = Arc::from(path);
    let warm = Instant::now() + Duration::from_secs(1);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        tasks.push(tokio::spawn(connection_loop(target.clone(), Arc::clone(&path), Arc::clone(&stop), warm)));
    }
    tokio::time::sleep_until(warm.into()).await;
    let before = pid.and_then(cpu_seconds);
    tokio::time::sleep(duration).await;
    let after = pid.and_then(cpu_seconds);
    stop.store(true, Ordering::Relaxed);
    let cpu = before.zip(after).map(|(b, a)| a - b);
    let mut out = Outcome { cpu, requests: 0, errors: 0, elapsed: duration, latency: new_histogram() };
    for t in tasks {
        if let Ok((ok, errors, hist)) = t.await {
            out.requests += ok;
            out.errors += errors;
            let _ = out.latency.add(hist);
        }
    }
    out
}

fn client_tls(sb: &Sandbox) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in splpd_certs::load::read_certificates(&sb.ca)? {
        roots.add(c)?;
    }
    let chain = splpd_certs::load::read_certificates(&sb.client_cert)?;
    let key = splpd_certs::load::read_private_key(&sb.client_key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the gateway did not start listening on {addr}")
}

fn row(name: &str, o: &Outcome, base_rps: Option<f64>) {
    let rps = o.requests as f64 / o.elapsed.as_secs_f64();
    let ratio = base_rps.map_or("1.00".to_owned(), |b| format!("{:.2}", rps / b));
    let cpu = o.cpu.map_or("-".to_owned(), |c| format!("{:.3}", c * 1000.0 / o.requests.max(1) as f64));
    println!(
        "| {name:<24} | {rps:>9.0} | {ratio:>8} | {:>7} | {:>7} | {:>7} | {cpu:>14} | {:>6} |",
        o.latency.value_at_quantile(0.5),
        o.latency.value_at_quantile(0.99),
        o.latency.value_at_quantile(0.999),
        o.errors
    );
}

fn quick(connections: usize, duration: Duration) -> anyhow::Result<()> {
    let sb = sandbox()?;
    // The load and the upstream share core 1; the gateway process gets core 0.
    if let Some(mut c) = pinned(1) {
        let _ = c.arg("-p").arg(std::process::id().to_string()).output();
    }
    let rt = runtime(1)?;
    rt.block_on(async {
        let up = upstream().await?;
        println!(
            "splpd-bench quick: {connections} HTTP/1.1 keep-alive connections, {}s per row, 1 KiB responses",
            duration.as_secs()
        );
        println!("| row                      |     req/s | vs direct | p50 µs | p99 µs | p99.9 µs | CPU ms/1000 req | errors |");
        println!("|---|---|---|---|---|---|---|---|");
        let direct = load(Target::Plain(up), "/", connections, duration, None).await;
        let base = direct.requests as f64 / direct.elapsed.as_secs_f64();
        row("direct (plain HTTP)", &direct, None);
        let tls = client_tls(&sb)?;
        for mode in ["async", "sync"] {
            let port = free_port()?;
            let config = write_config(&sb, port, up, mode)?;
            let mut child = start_gateway(&config).context("starting the gateway process")?;
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            wait_listening(addr).await?;
            let out = load(
                Target::Tls { addr, tls: Arc::clone(&tls) },
                "/r1/ID/PEMDA/1602/UPSTREAM/echo/",
                connections,
                duration,
                Some(child.id()),
            )
            .await;
            let _ = child.kill();
            let _ = child.wait();
            row(&format!("splpd mTLS, audit {mode}"), &out, Some(base));
        }
        Ok(())
    })
}
