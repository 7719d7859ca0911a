//! Hot reload of a real `splpd serve` under load: a client keeps calling through the gateway
//! over new and kept-alive connections (HTTP/1.1 and HTTP/2) while the configuration is reloaded
//! twenty times by SIGHUP, once with a broken file. No call may fail; the broken file is refused
//! with its position in the log and the old configuration keeps serving; a grant added by a good
//! reload takes effect; a CRL published with `splpd certs` is picked up by the file watch and the
//! revoked client refused. SIGTERM then stops the process cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use splpd_gateway::reload::version_of;

const SERVICE: &str = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify";
const RSUD: &str = "ID/PEMDA/1602/RSUD";
const DISHUB: &str = "ID/PEMDA/1602/DISHUB";
/// Generous: the machine may be busy.
const WAIT: Duration = Duration::from_secs(60);

fn splpd(args: &[&str], dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_splpd")).args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "splpd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn config_text(generation: u32, upstream: SocketAddr, dishub_granted: bool, broken: bool) -> String {
    let service = if broken { "ID/PEMDA/1602/DISDUKCAPIL/no-such-service" } else { SERVICE };
    let dishub = if dishub_granted {
        format!("[[grant]]\nservice = \"{SERVICE}\"\nclient = \"{DISHUB}\"\n")
    } else {
        String::new()
    };
    format!(
        r#"# generation {generation}
[gateway]
id = "ID/PEMDA/1602/gw1"
cert = "pki/gw1.crt"
key = "pki/gw1.key"

[[listener]]
name = "public"
address = "127.0.0.1:0"

[[trust_anchor]]
name = "region"
ca = "pki/ca/ca.crt"
scopes = ["ID/PEMDA/1602"]
crls = ["pki/ca/crl.pem"]

[[service]]
id = "{SERVICE}"
description = "generation {generation}"
upstreams = ["http://{upstream}"]

[[grant]]
service = "{service}"
client = "{RSUD}"

{dishub}
# Long enough that the kept-alive connections outlive the test on a busy machine.
[limits]
header_read_timeout = "300s"
idle_timeout = "300s"

[audit]
dir = "reload-audit"
"#
    )
}

/// Writes the configuration as an operator's tooling should: a new file renamed over the old.
fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The gateway's log, line by line, as it comes.
struct Log {
    lines: mpsc::Receiver<String>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Log {
    fn follow(child: &mut Child) -> Self {
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&seen);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                keep.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line.clone());
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { lines, seen }
    }

    /// The next line containing every one of `parts`; panics after [`WAIT`].
    fn wait_for(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if parts.iter().all(|p| line.contains(p)) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line with {parts:?}; the log so far:\n{}", self.text()),
            }
        }
    }

    fn text(&self) -> String {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).join("\n")
    }
}

/// A plain HTTP upstream answering every request with 200 `ok`.
async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(Bytes::from(
                        "ok",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    });
    addr
}

/// A client identity for calls through the gateway.
#[derive(Clone)]
struct Client {
    tls: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
}

impl Client {
    fn new(pki: &Path, name: &str, addr: SocketAddr, alpn: &[u8]) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for ca in splpd_certs::load::read_certificates(&pki.join("ca/ca.crt")).unwrap() {
            roots.add(ca).unwrap();
        }
        let chain = splpd_certs::load::read_certificates(&pki.join(format!("{name}.crt"))).unwrap();
        let key = splpd_certs::load::read_private_key(&pki.join(format!("{name}.key"))).unwrap();
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)
                .unwrap();
        config.alpn_protocols = vec![alpn.to_vec()];
        Self { tls: Arc::new(config), addr }
    }

    /// Opens a connection and makes `calls` calls on it, one after another; the statuses, or
    /// the error that ended the connection.
    async fn session(&self, calls: usize) -> Result<Vec<StatusCode>, String> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        let uri = format!("https://localhost:{}/r1/{SERVICE}/nik/1", self.addr.port());
        let mut statuses = Vec::new();
        if h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            for _ in 0..calls {
                let req = Request::get(&uri).body(Empty::<Bytes>::new()).unwrap();
                let resp = sender.send_request(req).await.map_err(|e| format!("h2 call: {e}"))?;
                let status = resp.status();
                resp.into_body().collect().await.map_err(|e| format!("h2 body: {e}"))?;
                statuses.push(status);
            }
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            for _ in 0..calls {
                let req = Request::get(&uri).header("host", "localhost").body(Empty::<Bytes>::new()).unwrap();
                let resp = sender.send_request(req).await.map_err(|e| format!("h1 call: {e}"))?;
                let status = resp.status();
                resp.into_body().collect().await.map_err(|e| format!("h1 body: {e}"))?;
                statuses.push(status);
            }
        }
        Ok(statuses)
    }

    async fn status(&self) -> Result<StatusCode, String> {
        self.session(1).await.map(|s| s[0])
    }
}

#[derive(Default)]
struct Load {
    ok: AtomicU64,
    failed: Mutex<Vec<String>>,
    stop: AtomicBool,
}

/// Calls until told to stop (at most 200,000 calls): sessions of five calls, HTTP/1.1 and
/// HTTP/2 in turn, each on a new connection.
async fn keep_calling(h1: Client, h2: Client, load: Arc<Load>) {
    for round in 0..40_000u32 {
        if load.stop.load(Ordering::Relaxed) {
            return;
        }
        let client = if round % 2 == 0 { &h1 } else { &h2 };
        match client.session(5).await {
            Ok(statuses) => {
                for s in statuses {
                    if s == StatusCode::OK {
                        load.ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        load.failed.lock().unwrap().push(format!("status {s}"));
                    }
                }
            }
            Err(e) => load.failed.lock().unwrap().push(e),
        }
    }
}

/// The gateway process, killed if the test ends early so that it never outlives the test.
struct Serving(Child);

impl Serving {
    /// `splpd serve --config CONFIG`, its log on a pipe at info level.
    fn start(config: &Path) -> Self {
        Self(
            Command::new(env!("CARGO_BIN_EXE_splpd"))
                .args(["serve", "--config", config.to_str().unwrap()])
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn signal(child: &Child, sig: &str) {
    assert!(Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success());
}

#[test]
fn twenty_reloads_under_load_fail_no_call_and_a_new_crl_refuses_the_revoked_client() {
    let tmp = tempfile::tempdir().unwrap();
    splpd(&["demo", "--dir", "sandbox", "--no-serve"], tmp.path());
    let dir: PathBuf = tmp.path().join("sandbox");
    let pki = dir.join("pki");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let upstream = rt.block_on(upstream());
    let config = dir.join("reload.toml");
    write_config(&config, &config_text(0, upstream, false, false));

    let mut serving = Serving::start(&config);
    let child = &mut serving.0;
    let log = Log::follow(child);
    let listening = log.wait_for(&["listening", "public"]);
    let addr: SocketAddr = listening.split("addr=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    log.wait_for(&["ready"]);

    let rsud_h1 = Client::new(&pki, "rsud", addr, b"http/1.1");
    let rsud_h2 = Client::new(&pki, "rsud", addr, b"h2");
    let dishub = Client::new(&pki, "dishub", addr, b"h2");
    assert_eq!(rt.block_on(dishub.status()), Ok(StatusCode::FORBIDDEN));

    let load = Arc::new(Load::default());
    let calling = rt.spawn(keep_calling(rsud_h1.clone(), rsud_h2.clone(), Arc::clone(&load)));
    // Kept-alive connections, one of each protocol, opened before the reloads and used after.
    let (kept_h1, kept_h2) = rt.block_on(async {
        let connect = |c: &Client| {
            let c = c.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(c.addr).await.unwrap();
                let name = ServerName::try_from("localhost").unwrap();
                TokioIo::new(tokio_rustls::TlsConnector::from(c.tls).connect(name, tcp).await.unwrap())
            }
        };
        let (h1, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(connect(&rsud_h1).await).await.unwrap();
        tokio::spawn(conn);
        let (h2, conn) =
            hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(TokioExecutor::new(), connect(&rsud_h2).await)
                .await
                .unwrap();
        tokio::spawn(conn);
        (h1, h2)
    });

    const BROKEN: u32 = 7;
    const GRANT: u32 = 13;
    let mut dishub_granted = false;
    for generation in 1..=20u32 {
        let broken = generation == BROKEN;
        dishub_granted |= generation == GRANT;
        let text = config_text(generation, upstream, dishub_granted, broken);
        write_config(&config, &text);
        let before = load.ok.load(Ordering::Relaxed);
        signal(child, "-HUP");
        let version = version_of(&text);
        if broken {
            log.wait_for(&["reload refused", &version]);
            let line = text.lines().position(|l| l.contains("no-such-service")).unwrap() + 1;
            let at = format!("{}:{line}:", config.display());
            let deadline = Instant::now() + WAIT;
            // On the refusal's own line, so that a journal keeps it in the same entry.
            let named = || log.text().lines().any(|l| l.contains("reload refused") && l.contains(&at));
            while !named() {
                assert!(Instant::now() < deadline, "the refusal does not name {at} on its line:\n{}", log.text());
                std::thread::sleep(Duration::from_millis(50));
            }
            // The old configuration keeps serving, with its grants.
            assert_eq!(rt.block_on(dishub.status()), Ok(StatusCode::FORBIDDEN));
        } else {
            log.wait_for(&["configuration reloaded", &version]);
        }
        if generation == GRANT {
            assert_eq!(rt.block_on(dishub.status()), Ok(StatusCode::OK), "the new grant is in force");
        }
        // Calls went through while the reload happened.
        let deadline = Instant::now() + WAIT;
        while load.ok.load(Ordering::Relaxed) < before + 5 {
            assert!(Instant::now() < deadline, "calls stalled after reload {generation}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    // Connections opened before all of it still serve.
    rt.block_on(async {
        let (mut h1, mut h2) = (kept_h1, kept_h2);
        let uri = format!("https://localhost:{}/r1/{SERVICE}/nik/1", addr.port());
        let req = Request::get(&uri).header("host", "localhost").body(Empty::<Bytes>::new()).unwrap();
        assert_eq!(h1.send_request(req).await.unwrap().status(), StatusCode::OK);
        let req = Request::get(&uri).body(Empty::<Bytes>::new()).unwrap();
        assert_eq!(h2.send_request(req).await.unwrap().status(), StatusCode::OK);
    });

    // The region CA revokes Dishub and publishes a CRL; the file watch reloads it, no signal.
    splpd(&["certs", "revoke", "--ca", "pki/ca", "--cert", "pki/dishub.crt", "--reason", "key-compromise"], &dir);
    splpd(&["certs", "crl", "--ca", "pki/ca", "--out", "pki/ca/crl.pem"], &dir);
    log.wait_for(&["file changed", "crl.pem"]);
    log.wait_for(&["configuration reloaded"]);
    let refused = rt.block_on(dishub.status());
    assert!(refused.as_ref().is_err_and(|e| e.contains("handshake") || e.contains("call")), "{refused:?}");
    assert_eq!(rt.block_on(rsud_h2.status()), Ok(StatusCode::OK));

    // An edit naming a CRL file that is not there yet is refused; once the CA publishes it there,
    // the file watch brings the edit in, with no signal: a refused version's files are watched too.
    let last = config_text(20, upstream, dishub_granted, false);
    let waiting = last.replace("crls = [\"pki/ca/crl.pem\"]", "crls = [\"pki/ca/next-crl.pem\"]");
    assert_ne!(waiting, last);
    write_config(&config, &waiting);
    log.wait_for(&["reload refused", &version_of(&waiting)]);
    // Signed away from the gateway (its own crl.pem, which the configuration in force names,
    // changes too, and the edit is refused again for want of the new file), then copied in.
    splpd(&["certs", "crl", "--ca", "pki/ca", "--out", "published.pem"], &dir);
    log.wait_for(&["file changed", "crl.pem"]);
    log.wait_for(&["reload refused", &version_of(&waiting)]);
    write_config(&pki.join("ca/next-crl.pem"), &std::fs::read_to_string(dir.join("published.pem")).unwrap());
    log.wait_for(&["file changed", "next-crl.pem"]);
    log.wait_for(&["configuration reloaded", &version_of(&waiting)]);

    load.stop.store(true, Ordering::Relaxed);
    rt.block_on(calling).unwrap();
    let failed = load.failed.lock().unwrap().clone();
    let ok = load.ok.load(Ordering::Relaxed);
    assert!(
        failed.is_empty(),
        "{} of {} calls failed during the reloads: {failed:?}",
        failed.len(),
        ok as usize + failed.len()
    );
    assert!(ok >= 100, "only {ok} calls were made during the reloads");
    eprintln!("{ok} calls through the gateway during 20 reloads and a CRL change, none failed");

    signal(child, "-TERM");
    let deadline = Instant::now() + WAIT;
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "splpd serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "splpd serve exited with {exit}:\n{}", log.text());
    log.wait_for(&["audit log is flushed"]);

    // The configuration at start and each one a reload put in force are in the audit log; the
    // broken file, never in force, is not.
    let out = Command::new(env!("CARGO_BIN_EXE_splpd"))
        .args(["audit", "query", "reload-audit"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records = String::from_utf8_lossy(&out.stdout);
    let count = |method: &str| records.lines().filter(|l| l.contains(&format!("\"method\":\"{method}\""))).count();
    assert_eq!(count("START"), 1, "{records}");
    let reloads = log.text().matches("configuration reloaded and in force").count();
    assert!(reloads >= 19, "{reloads} reloads logged");
    assert_eq!(count("RELOAD"), reloads, "{records}");
}

/// A CRL that a reload brings in, and that passes its next update before the gateway's hourly
/// look at its CRLs, is told when it passes it: the look's wait is taken again at each reload.
#[test]
fn a_reloaded_crl_that_ages_out_within_the_hour_is_told_when_it_does() {
    let tmp = tempfile::tempdir().unwrap();
    splpd(&["demo", "--dir", "sandbox", "--no-serve"], tmp.path());
    let dir: PathBuf = tmp.path().join("sandbox");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let upstream = rt.block_on(upstream());
    let config = dir.join("reload.toml");
    write_config(&config, &config_text(0, upstream, false, false));
    // The CRL in force at start was signed a day ago for two days (a later one must be signed
    // after it), and the one the reload brings a day ago for one: its next update comes seconds
    // from now.
    let ca = splpd_certs::pki::Ca::open(&dir.join("pki/ca")).unwrap();
    let passes = time::OffsetDateTime::now_utc() + time::Duration::seconds(8);
    ca.crl(2, passes - time::Duration::days(1) - time::Duration::minutes(1)).unwrap();
    let mut serving = Serving::start(&config);
    let log = Log::follow(&mut serving.0);
    log.wait_for(&["ready"]);

    let crl = ca.crl(1, passes - time::Duration::days(1)).unwrap();
    // What the reload loaded anew is said, in the log and in its audit record.
    let said = log.wait_for(&["loaded anew: CRL", "crl.pem"]);
    assert!(said.contains("number 3, issued") && said.contains("(was number 2, issued"), "{said}");
    log.wait_for(&["configuration reloaded"]);
    let out = Command::new(env!("CARGO_BIN_EXE_splpd"))
        .args(["audit", "query", "reload-audit", "--method", "RELOAD", "--unchecked"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let records = String::from_utf8_lossy(&out.stdout);
    assert!(records.contains("\"reloaded\":[\"CRL ") && records.contains("(was number 2"), "{records}");
    let told = log.wait_for(&["passed its next update"]);
    assert!(told.contains("every certificate of that CA is"), "{told}");
    assert!(time::OffsetDateTime::now_utc() >= crl.next_update, "told before it passed: {told}");
}
