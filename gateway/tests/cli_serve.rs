//! `splpd serve` as an operator runs it: on the demo's configuration, it answers an agency's call
//! over mutual TLS, writes the exchange to the segment audit log, and on SIGTERM stops cleanly,
//! leaving a signed checkpoint that covers every record.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use splpd_gateway::audit::log::read_checkpoints;
use splpd_gateway::audit::segment::SegmentReader;

fn curl_status(args: &[&str]) -> u16 {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// Waits until the gateway accepts connections at `url`, by connecting only: an HTTP request
/// would be an exchange of its own, refused and logged.
fn wait_listening(url: &str) {
    let authority = url.trim_start_matches("https://").trim_end_matches('/');
    let addr: std::net::SocketAddr = authority.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("splpd serve did not start listening at {url}");
}

#[test]
fn serve_answers_logs_and_stops_with_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = Command::new(env!("CARGO_BIN_EXE_splpd"))
        .args(["demo", "--dir", "sandbox", "--no-serve"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(demo.status.success(), "{}", String::from_utf8_lossy(&demo.stderr));
    let sandbox = tmp.path().join("sandbox");
    let manifest: Value = serde_json::from_slice(&std::fs::read(sandbox.join("demo.json")).unwrap()).unwrap();
    let config = manifest["config"].as_str().unwrap();
    let ca = manifest["ca_file"].as_str().unwrap();
    let url = manifest["gateway_url"].as_str().unwrap();
    let audit = Path::new(config).parent().unwrap().join("audit");
    // The demo's own log is in the same folder; serve gets a fresh one.
    let _ = std::fs::remove_dir_all(&audit);

    // Its log goes to a pipe, as to a file or the journal: no colours, even when the test's
    // environment would turn them off anyway.
    // Started from the configuration's folder with the file's bare name, as an operator might: the
    // START record still names the file by its whole path.
    let config_dir = Path::new(config).parent().unwrap();
    let config_name = Path::new(config).file_name().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_splpd"))
        .arg("serve")
        .arg("--config")
        .arg(config_name)
        .current_dir(config_dir)
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(url);

    // Dishub has no grant: refused, and logged.
    let pki = sandbox.join("pki");
    let (cert, key) = (pki.join("dishub.crt"), pki.join("dishub.key"));
    let target = format!("{url}/r1/ID/PEMDA/1602/DISDUKCAPIL/nik-verify/nik/1602015708900001");
    let status =
        curl_status(&["--cacert", ca, "--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap(), &target]);
    assert_eq!(status, 403);

    // A second gateway on the same audit log is refused, and told which process holds it, once.
    // It signs with a key of its own, whose certificate it must not leave in the running log.
    let files = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    let before = files(&audit);
    let second_config = sandbox.join("second.toml");
    let issued = Command::new(env!("CARGO_BIN_EXE_splpd"))
        .args(["certs", "issue", "--ca", "pki/ca", "server", "ID/PEMDA/1602/gw1", "--out", "pki/gw1-signing"])
        .current_dir(&sandbox)
        .output()
        .unwrap();
    assert!(issued.status.success(), "{}", String::from_utf8_lossy(&issued.stderr));
    let text = std::fs::read_to_string(config).unwrap().replacen(
        "\n[audit]\n",
        "\n[audit]\nsigning_key = \"pki/gw1-signing.key\"\nsigning_cert = \"pki/gw1-signing.crt\"\n",
        1,
    );
    assert!(text.contains("signing_key = \"pki/gw1-signing.key\""), "the demo's configuration has an [audit] section");
    std::fs::write(&second_config, text).unwrap();
    let second =
        Command::new(env!("CARGO_BIN_EXE_splpd")).arg("serve").arg("--config").arg(&second_config).output().unwrap();
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    let holder = format!("writer.lock: the audit log is being written by process {}", child.id());
    assert!(said.starts_with("error: "), "{said}");
    assert_eq!(said.matches(&holder).count(), 1, "{said}");
    assert_eq!(said.matches("two writers would interleave").count(), 1, "{said}");
    assert_eq!(files(&audit), before, "the refused gateway wrote nothing into the running one's log");

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "splpd serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "splpd serve exited with {exit}");
    let mut logged = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut logged).unwrap();
    assert!(logged.contains("listening") && logged.contains("stopped"), "{logged}");
    assert!(!logged.contains('\x1b'), "no colour codes in a log that is not a terminal: {logged:?}");

    let mut reader = SegmentReader::open(&audit).unwrap();
    let mut methods = Vec::new();
    let mut paths = Vec::new();
    while let Some((_, bytes)) = reader.next_record().unwrap() {
        let record = <splpd_gateway::audit::ExchangeRecord as prost::Message>::decode(bytes).unwrap();
        methods.push(record.method);
        paths.push(record.path);
    }
    // The configuration the gateway started with, then the refused call, the one exchange.
    assert_eq!(methods, ["START", "GET"], "{methods:?}");
    let whole = std::fs::canonicalize(config).unwrap();
    assert_eq!(paths.first().map(String::as_str), Some(whole.to_str().unwrap()), "{paths:?}");
    let checkpoints = read_checkpoints(&audit).unwrap();
    assert_eq!(checkpoints.last().map(|c| c.tree_size), Some(2), "{checkpoints:?}");
}

#[test]
fn a_missing_configuration_file_is_named_with_its_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_splpd"))
        .args(["serve", "--config", "nowhere/splpd.toml"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.starts_with("error: cannot read configuration file nowhere/splpd.toml: "), "{said}");
    assert_eq!(said.matches("No such file or directory").count(), 1, "{said}");
}
