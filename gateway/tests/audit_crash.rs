//! The crash test of the audit log: `splpd serve` on the demo's configuration takes a load of
//! concurrent calls to a service whose audit mode is `sync`, and is killed with SIGKILL at a
//! random moment. Restarted on the same log, the log must verify, and every exchange whose
//! response a client fully received must have its record in it: in sync mode a response is only
//! released once its record is on disk. Ten crashes in a row, on the same log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use splpd_gateway::audit::ExchangeRecord;
use splpd_gateway::audit::segment::SegmentReader;
use uuid::Uuid;

use support::{Sandbox, Serve};

const CRASHES: usize = 10;
const LOAD_THREADS: usize = 3;
/// Calls per curl run, and how many of them run at once.
const BATCH: usize = 24;
const PARALLEL: &str = "12";
const NIK_CHECK: &str = "/r1/ID/PEMDA/1602/DISDUKCAPIL/nik-verify/nik/1602015708900001";

/// A small xorshift64, seeded from the clock: the moments of the crashes.
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn from_time() -> Self {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        // Truncation is fine: any non-zero seed will do.
        Self((nanos as u64) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

/// One calling application: its certificate and the headers it sends.
#[derive(Debug, Clone)]
struct Caller {
    ca: String,
    cert: String,
    key: String,
    headers: Vec<String>,
}

/// What the load saw: the ids of the exchanges whose responses were fully received, and how
/// many of each status.
#[derive(Debug, Default)]
struct Acked {
    ids: Vec<String>,
    statuses: BTreeMap<String, usize>,
}

/// One `curl --parallel` run of `BATCH` calls, each with a fresh X-Road-Id; records the ids of
/// the calls that got a whole response (curl's per-transfer exit code 0 and a status code).
fn batch(url: &str, caller: &Caller, acked: &Mutex<Acked>) {
    let mut cmd = Command::new("curl");
    cmd.args(["--parallel", "--parallel-immediate", "--parallel-max", PARALLEL]);
    for i in 0..BATCH {
        if i > 0 {
            cmd.arg("--next");
        }
        let id = Uuid::new_v4().hyphenated().to_string();
        cmd.args(["-s", "-o", "/dev/null", "--max-time", "5"]);
        cmd.args(["--cacert", &caller.ca, "--cert", &caller.cert, "--key", &caller.key]);
        for h in &caller.headers {
            cmd.args(["-H", h]);
        }
        cmd.args(["-H", &format!("X-Road-Id: {id}")]);
        cmd.args(["-w", &format!("{id} %{{http_code}} %{{exitcode}}\\n")]);
        cmd.arg(url);
    }
    let out = cmd.stdin(Stdio::null()).stderr(Stdio::null()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut acked = acked.lock().unwrap();
    for line in stdout.lines() {
        let mut fields = line.split_whitespace();
        let (Some(id), Some(code), Some(exit)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if exit == "0" && code != "000" {
            acked.ids.push(id.to_owned());
            *acked.statuses.entry(code.to_owned()).or_default() += 1;
        }
    }
}

/// Every exchange id in the log, read once. A torn tail ends the reading (the running gateway
/// cut it off when it opened the log, but a reader may meet one all the same).
fn logged_ids(audit: &Path) -> (HashSet<String>, u64) {
    let mut reader = SegmentReader::open(audit).unwrap();
    let mut ids = HashSet::new();
    let mut records = 0;
    loop {
        match reader.next_record() {
            Ok(Some((_, payload))) => {
                ids.insert(ExchangeRecord::decode(payload).unwrap().exchange_id);
                records += 1;
            }
            Ok(None) => break,
            Err(e) if e.is_torn_tail() => break,
            Err(e) => panic!("reading the audit log: {e}"),
        }
    }
    (ids, records)
}

fn verify(audit: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_splpd")).arg("audit").arg("verify").arg(audit).output().unwrap();
    assert!(
        out.status.success(),
        "splpd audit verify failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_acknowledged_exchange_survives_a_kill_9() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let Sandbox { config, ca, url: base, addr, audit, pki } = Sandbox::new(tmp.path());
    let url = format!("{base}{NIK_CHECK}");
    // The demo's own log is in the same folder; serve gets a fresh one.
    let _ = std::fs::remove_dir_all(&audit);
    let serve_log = tmp.path().join("serve.log");
    File::create(&serve_log).unwrap();

    let caller = |name: &str, headers: &[&str]| Caller {
        ca: ca.clone(),
        cert: pki.join(format!("{name}.crt")).to_str().unwrap().to_owned(),
        key: pki.join(format!("{name}.key")).to_str().unwrap().to_owned(),
        headers: headers.iter().map(|&h| h.to_owned()).collect(),
    };
    // RSUD is allowed: its calls end in 502 (the demo's upstream is gone), 503 once that endpoint
    // is ejected, or, past its quota, in 429. Dishub holds no grant: 403. The service is known in every case, so every record is
    // written in the service's mode, sync.
    let callers = [
        caller("rsud", &["X-Road-Client: ID/PEMDA/1602/RSUD", "X-SPLP-Purpose: pelayanan-kesehatan"]),
        caller("dishub", &["X-Road-Client: ID/PEMDA/1602/DISHUB"]),
        caller("rsud", &["X-Road-Client: ID/PEMDA/1602/RSUD", "X-SPLP-Purpose: pelayanan-kesehatan"]),
    ];
    assert_eq!(callers.len(), LOAD_THREADS);

    let mut rng = XorShift::from_time();
    let mut gateway = Serve::start(&config, &serve_log, addr);
    let mut all_acked: Vec<String> = Vec::new();
    for crash in 1..=CRASHES {
        let stop = AtomicBool::new(false);
        let acked = Mutex::new(Acked::default());
        let after = Duration::from_millis(rng.between(50, 400));
        std::thread::scope(|s| {
            for c in &callers {
                let (stop, acked, url) = (&stop, &acked, &url);
                s.spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        batch(url, c, acked);
                    }
                });
            }
            // The load must be flowing before the crash: on a busy machine the first calls can
            // take longer than the longest delay. Then a random moment into it.
            let flowing = Instant::now() + Duration::from_secs(60);
            while acked.lock().unwrap().ids.is_empty() && Instant::now() < flowing {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(after);
            gateway.crash();
            stop.store(true, Ordering::SeqCst);
        });
        let acked = acked.into_inner().unwrap();

        gateway = Serve::start(&config, &serve_log, addr);
        verify(&audit);
        let (logged, records) = logged_ids(&audit);
        let missing: Vec<&String> = acked.ids.iter().filter(|id| !logged.contains(*id)).collect();
        assert!(
            missing.is_empty(),
            "crash {crash} ({after:?} after the first answers): {} of {} acknowledged exchanges are not in the log, e.g. {:?}",
            missing.len(),
            acked.ids.len(),
            &missing[..missing.len().min(5)]
        );
        // Every earlier crash's exchanges are still there too.
        assert!(all_acked.iter().all(|id| logged.contains(id)), "crash {crash}: a restart lost earlier records");
        eprintln!(
            "crash {crash}: killed {after:?} after the first answers; {} exchanges acknowledged ({:?}), all in the log \
             ({records} records)",
            acked.ids.len(),
            acked.statuses
        );
        all_acked.extend(acked.ids);
    }
    assert!(!all_acked.is_empty(), "the load got no response at all");

    gateway.stop();
    verify(&audit);
    let (logged, _) = logged_ids(&audit);
    assert!(all_acked.iter().all(|id| logged.contains(id)));
    // A restart after a kill says so, when the kill left records unsigned (under load, nearly
    // every time); after the clean stop above it would not.
    let told = std::fs::read_to_string(&serve_log).unwrap();
    let unclean = told.matches("the gateway before this one did not stop cleanly").count();
    assert!((1..=CRASHES).contains(&unclean), "{unclean} restarts said so:\n{told}");
    // And the audit log says so too, in the START record of each such restart, for an auditor:
    // which records were signed only after the gateway was down.
    let starts = Command::new(env!("CARGO_BIN_EXE_splpd"))
        .args(["audit", "query"])
        .arg(&audit)
        .args(["--method", "START", "--unchecked"])
        .output()
        .unwrap();
    let starts = String::from_utf8_lossy(&starts.stdout);
    let recovered = starts.lines().filter(|l| l.contains("\"recovered\":\"")).count();
    assert_eq!(recovered, unclean, "{starts}");
    assert!(starts.contains("had no signed checkpoint, and were signed at this start"), "{starts}");
    eprintln!("{CRASHES} crashes, {} acknowledged exchanges checked, in {:?}", all_acked.len(), started.elapsed());
}
