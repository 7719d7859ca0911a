//! `splpd audit`: the real binary against logs written by the gateway's own `AuditLog`, then
//! damaged the ways an attacker or a failing disk would: flipped bytes, a record cut out, records
//! swapped, a log cut short. Verification must name the place; proofs must check offline and fail
//! when altered; exports must verify once extracted.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test by panicking")]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use splpd_certs::id::Identity;
use splpd_certs::pki::{Ca, InitOptions, KeyType, LeafRequest};
use splpd_gateway::audit::checkpoint::CheckpointSigner;
use splpd_gateway::audit::log::{AuditLog, AuditLogOptions, read_checkpoints};
use splpd_gateway::audit::retention::{self, RetentionPolicy};
use splpd_gateway::audit::segment::SegmentOptions;
use splpd_gateway::audit::{AuditMode, AuditSink as _, ExchangeRecord};

const GATEWAY: &str = "ID/PEMDA/1602/gw1";
/// 2025-03-01T00:00:00Z.
const BASE_NANOS: i64 = 1_740_787_200_000_000_000;
const CLIENTS: [&str; 3] = ["ID/PEMDA/1602/DINKES", "ID/PEMDA/1602/BAPPEDA", "ID/PEMDA/1602/DISPENDUK"];
const SERVICES: [&str; 2] = ["ID/PEMDA/1602/DISDUKCAPIL/nik-verify", "ID/PEMDA/1602/BPKAD/pajak"];

fn exchange_id(i: u64) -> String {
    format!("0b7e5a2c-6f1d-4e8a-9c3b-{i:012x}")
}

/// Record `i`: every third client, every second service; one in ten denied (403), one in ten
/// failed upstream (502); one second apart.
fn record(i: u64) -> ExchangeRecord {
    let (status, error_type) = match i % 10 {
        3 => (403, "Client.AccessDenied"),
        7 => (502, "Server.ServerProxy.ServiceFailed"),
        _ => (200, ""),
    };
    ExchangeRecord {
        exchange_id: exchange_id(i),
        received_at_unix_nanos: BASE_NANOS + i as i64 * 1_000_000_000,
        responded_at_unix_nanos: BASE_NANOS + i as i64 * 1_000_000_000 + 5_000_000,
        client: CLIENTS[(i % 3) as usize].to_owned(),
        client_cert_sha256: vec![0xab; 32],
        client_address: format!("10.20.{}.7", i % 4),
        service: SERVICES[(i % 2) as usize].to_owned(),
        method: "GET".to_owned(),
        path: "/r1/ID/PEMDA/1602/DISDUKCAPIL/nik-verify/v1/check".to_owned(),
        status,
        error_type: error_type.to_owned(),
        gateway: GATEWAY.to_owned(),
        ..ExchangeRecord::default()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A gateway's log in `<tmp>/audit`, with its key and certificate and the CA's.
struct Log {
    tmp: tempfile::TempDir,
}

impl Log {
    /// Writes `records` records through the real `AuditLog`: small segments, a checkpoint every
    /// 100 records, and one at shutdown.
    fn new(records: u64) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let now = time::OffsetDateTime::now_utc();
        let ca =
            Ca::init(&tmp.path().join("ca"), &InitOptions::new("Test", vec!["ID/PEMDA/1602".parse().unwrap()]), now)
                .unwrap();
        let (cert, key) = (tmp.path().join("gw1.crt"), tmp.path().join("gw1.key"));
        let id = Identity::Server(GATEWAY.parse().unwrap());
        ca.issue(&LeafRequest::new(id), KeyType::default(), &cert, &key, false, now).unwrap();
        let log = Self { tmp };
        log.write(&log.dir(), 0..records, &record);
        log
    }

    /// Appends records `seqs` made by `make` through the real `AuditLog` in `dir`, signed with
    /// this log's gateway key: small segments, a checkpoint every 100 records, one at shutdown.
    fn write(&self, dir: &Path, seqs: std::ops::Range<u64>, make: &dyn Fn(u64) -> ExchangeRecord) {
        let options = AuditLogOptions {
            segments: SegmentOptions { segment_size: 8 * 1024, ..SegmentOptions::new(dir) },
            gateway: GATEWAY.parse().unwrap(),
            signing_key: self.path("gw1.key"),
            signing_cert: self.path("gw1.crt"),
            checkpoint_every: 100,
            checkpoint_interval: Duration::from_secs(3600),
            retention: None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let audit = AuditLog::open(&options).unwrap();
            // Groups of 20 appended together are committed together, as under load.
            for start in seqs.clone().step_by(20) {
                let tickets: Vec<_> =
                    (start..(start + 20).min(seqs.end)).map(|i| audit.append(make(i), AuditMode::Sync)).collect();
                for ticket in tickets {
                    ticket.await.unwrap();
                }
            }
            audit.shutdown().await.unwrap();
            for _ in 0..500 {
                if read_checkpoints(dir).unwrap().last().is_some_and(|c| c.tree_size == seqs.end) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the last checkpoint never came");
        });
    }

    fn dir(&self) -> PathBuf {
        self.tmp.path().join("audit")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn splpd(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_splpd")).args(args).current_dir(self.tmp.path()).output().unwrap()
    }

    /// Runs splpd, expects success, returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.splpd(args);
        assert!(out.status.success(), "splpd {args:?} failed: {}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }

    /// Runs splpd, expects exit status 1, returns stdout and stderr together.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.splpd(args);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "splpd {args:?} should fail: {all}");
        all
    }

    /// The segment files, in order, with their first sequence numbers.
    fn segments(&self) -> Vec<(u64, PathBuf)> {
        let mut segments: Vec<(u64, PathBuf)> = fs::read_dir(self.dir())
            .unwrap()
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".seg").map(|stem| (stem.parse().unwrap(), e.path()))
            })
            .collect();
        segments.sort();
        segments
    }

    fn checkpoint_sizes(&self) -> Vec<u64> {
        read_checkpoints(&self.dir()).unwrap().iter().map(|c| c.tree_size).collect()
    }
}

/// The frames of a segment file: offset and payload length of each.
fn frames(path: &Path) -> Vec<(usize, usize)> {
    let bytes = fs::read(path).unwrap();
    let mut at = 32;
    let mut out = Vec::new();
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        out.push((at, len));
        at += 8 + len;
    }
    assert_eq!(at, bytes.len(), "{} holds whole frames", path.display());
    out
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn a_clean_log_verifies_and_reports_its_speed() {
    let log = Log::new(1000);
    assert!(log.segments().len() > 5, "small segments make many files");
    let sizes = log.checkpoint_sizes();
    assert!(sizes.len() >= 10 && *sizes.last().unwrap() == 1000, "{sizes:?}");

    let out = log.ok(&["audit", "verify", "audit"]);
    assert!(out.contains("audit: ok: 1000 records"), "{out}");
    assert!(out.contains(&format!("{0} of {0} checkpoint(s) match", sizes.len())), "{out}");
    assert!(out.contains("records/s"), "{out}");
    // With the region's CA, the signer certificate must be the CA's too.
    log.ok(&["audit", "verify", "audit", "--ca", "ca/ca.crt"]);
    let other = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    Ca::init(&other.path().join("ca"), &InitOptions::new("Other", vec!["ID/PEMDA/1603".parse().unwrap()]), now)
        .unwrap();
    let other_ca = other.path().join("ca/ca.crt");
    let all = log.fails(&["audit", "verify", "audit", "--ca", other_ca.to_str().unwrap()]);
    // The signature verifies and the identity is right: only the CA check fails, and says so.
    let only_ca = format!("names gateway {GATEWAY}, but it was not issued by the given CA: anyone can make");
    assert!(all.contains("checkpoint 0: the signature verifies, and its signer certificate signer-"), "{all}");
    assert!(all.contains(&only_ca) && !all.contains("does not verify") && !all.contains("but its signer"), "{all}");
    // Said once, not once per checkpoint: the others are counted.
    assert_eq!(all.matches(&only_ca).count(), 1, "{all}");
    let others = format!(
        "{} later checkpoints, up to checkpoint {}, have the same signature problem",
        sizes.len() - 1,
        sizes.len() - 1
    );
    assert!(all.contains(&others) && all.contains("as checkpoint 0"), "{all}");
    log.ok(&["audit", "proof", "audit", &exchange_id(7), "--out", "p7.json"]);
    let all = log.fails(&["audit", "check-proof", "p7.json", "--ca", other_ca.to_str().unwrap()]);
    assert!(all.contains(&format!("the signer certificate {only_ca}")), "{all}");
    assert!(!all.contains("does not verify") && !all.contains("expected gateway"), "{all}");
}

#[test]
fn a_flipped_byte_is_named_by_file_offset_and_record() {
    let log = Log::new(300);
    let (first, segment) = log.segments()[1].clone();
    let (offset, len) = frames(&segment)[5];
    let original = fs::read(&segment).unwrap();
    let mut bytes = original.clone();
    bytes[offset + 8 + len / 2] ^= 0x01;
    fs::write(&segment, bytes).unwrap();

    let all = log.fails(&["audit", "verify", "audit"]);
    let place = format!("{}: byte {offset}, record {}: checksum mismatch", name(&segment), first + 5);
    assert!(all.contains(&place), "{place}\n{all}");
    assert!(all.contains("FAILED"), "{all}");
    fs::write(&segment, original).unwrap();
    log.ok(&["audit", "verify", "audit"]);

    // In the last segment too, where damage followed by intact records is no torn write.
    let (first, segment) = log.segments().last().unwrap().clone();
    let (offset, _) = frames(&segment)[1];
    let mut bytes = fs::read(&segment).unwrap();
    bytes[offset + 12] ^= 0x80;
    fs::write(&segment, bytes).unwrap();
    let all = log.fails(&["audit", "verify", "audit"]);
    assert!(all.contains(&format!("{}: byte {offset}, record {}", name(&segment), first + 1)), "{all}");
}

#[test]
fn a_record_cut_out_is_found() {
    let log = Log::new(300);
    // In a middle segment: the next segment then starts a record too late.
    let segments = log.segments();
    let (_, segment) = &segments[2];
    let (next_first, next) = &segments[3];
    let (offset, len) = frames(segment)[4];
    let mut bytes = fs::read(segment).unwrap();
    bytes.drain(offset..offset + 8 + len);
    fs::write(segment, bytes).unwrap();
    let all = log.fails(&["audit", "verify", "audit"]);
    let place = format!(
        "{}: byte 0, record {}: records {}..{next_first} are missing",
        name(next),
        next_first - 1,
        next_first - 1
    );
    assert!(all.contains(&place), "{place}\n{all}");
    assert!(all.contains("but the log holds"), "{all}");

    // In the last segment: nothing follows, so only the checkpoints tell.
    let log = Log::new(300);
    let (first, segment) = log.segments().last().unwrap().clone();
    let (offset, len) = frames(&segment)[1];
    let mut bytes = fs::read(&segment).unwrap();
    bytes.drain(offset..offset + 8 + len);
    fs::write(&segment, bytes).unwrap();
    let all = log.fails(&["audit", "verify", "audit"]);
    let sizes = log.checkpoint_sizes();
    let last = sizes.len() - 1;
    assert!(all.contains(&format!("checkpoint {last}: covers 300 records but the log holds 299")), "{all}");
    // The checkpoints before the cut still match, and the message says from where on it is not.
    let since = format!("it matches checkpoint {}, so records {}.. are affected", last - 1, sizes[last - 1]);
    assert!(sizes[last - 1] <= first + 1 && all.contains(&since), "{since}\n{all}");
}

#[test]
fn swapped_records_are_found_between_two_checkpoints() {
    let log = Log::new(400);
    // Two frames of equal length in a segment in the middle (records of the same client, service
    // and outcome), swapped.
    let (first, segment) = log.segments()[6].clone();
    let frames = frames(&segment);
    let (i, j) = (0..frames.len())
        .flat_map(|i| (i + 1..frames.len()).map(move |j| (i, j)))
        .find(|&(i, j)| frames[i].1 == frames[j].1)
        .unwrap();
    let ((a, len), (b, _)) = (frames[i], frames[j]);
    let mut bytes = fs::read(&segment).unwrap();
    let first_frame = bytes[a..a + 8 + len].to_vec();
    bytes.copy_within(b..b + 8 + len, a);
    bytes[b..b + 8 + len].copy_from_slice(&first_frame);
    fs::write(&segment, bytes).unwrap();

    let all = log.fails(&["audit", "verify", "audit"]);
    let seq = first + i as u64;
    let sizes = log.checkpoint_sizes();
    let broken = sizes.iter().position(|s| *s > seq).unwrap();
    let expected = if broken == 0 {
        format!("checkpoint 0: covers {} records, but its root", sizes[0])
    } else {
        format!("checkpoint {broken}: covers {} records, but its root", sizes[broken])
    };
    assert!(all.contains(&expected), "{expected}\n{all}");
    if broken > 0 {
        let since = format!(
            "records {}..{} (after checkpoint {}, which matches)",
            sizes[broken - 1],
            sizes[broken],
            broken - 1
        );
        assert!(all.contains(&since), "{since}\n{all}");
    }
    assert!(all.contains("do not match either"), "the later checkpoints are counted: {all}");
}

/// A damaged checkpoint is named, and the checkpoints after it are still read and checked:
/// the records they cover are still shown to be the ones they signed.
#[test]
fn a_damaged_checkpoint_is_named_and_the_ones_after_it_still_checked() {
    let log = Log::new(300);
    let sizes = log.checkpoint_sizes();
    assert!(sizes.len() >= 3, "{sizes:?}");
    let path = log.dir().join("checkpoints.log");
    let mut bytes = fs::read(&path).unwrap();
    bytes[20] ^= 0x01; // inside the first checkpoint's payload
    fs::write(&path, bytes).unwrap();
    let all = log.fails(&["audit", "verify", "audit"]);
    assert!(all.contains("byte 0, checkpoint 0: checksum mismatch"), "{all}");
    let matched = format!("{} of {} checkpoint(s) match", sizes.len() - 1, sizes.len() - 1);
    assert!(all.contains(&matched), "the later checkpoints are read: {matched}\n{all}");
    assert!(!all.contains("not covered by a checkpoint"), "{all}");
}

#[test]
fn a_log_cut_short_under_a_checkpoint_fails_and_a_torn_tail_after_it_only_warns() {
    let log = Log::new(300);
    let (_, segment) = log.segments().last().unwrap().clone();
    // A torn write after the last checkpoint: a warning.
    let mut bytes = fs::read(&segment).unwrap();
    let whole = bytes.len();
    bytes.extend_from_slice(&[0x40, 0, 0, 0, 1, 2]);
    fs::write(&segment, &bytes).unwrap();
    let out = log.splpd(&["audit", "verify", "audit"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stderr).contains("warning:") && text(&out.stderr).contains("torn tail"), "{}", text(&out.stderr));

    // Cut at a frame boundary, two records short.
    let frames = frames_of(&bytes[..whole]);
    let cut = frames[frames.len() - 2].0;
    fs::write(&segment, &bytes[..cut]).unwrap();
    let all = log.fails(&["audit", "verify", "audit"]);
    let sizes = log.checkpoint_sizes();
    let first_short = sizes.iter().position(|s| *s > 298).unwrap();
    let expected = format!("checkpoint {first_short}: covers {} records but the log holds 298", sizes[first_short]);
    assert!(all.contains(&expected), "{expected}\n{all}");

    // Cut in the middle of a frame: a torn tail, but under a checkpoint, so a failure too.
    fs::write(&segment, &bytes[..cut + 5]).unwrap();
    let all = log.fails(&["audit", "verify", "audit"]);
    assert!(all.contains(&format!("{expected}; the log ends with a torn tail")), "{all}");
    // Not also told as a crash's leftover the gateway would cut: records a checkpoint covers
    // are lost.
    assert!(!all.contains("cut short by a crash"), "{all}");

    // A whole segment deleted from the middle.
    let log = Log::new(300);
    let (first, gone) = log.segments()[3].clone();
    fs::remove_file(&gone).unwrap();
    let all = log.fails(&["audit", "verify", "audit"]);
    assert!(all.contains(&format!("records {first}..")) && all.contains("are missing"), "{all}");
}

fn frames_of(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut at = 32;
    let mut out = Vec::new();
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        out.push((at, len));
        at += 8 + len;
    }
    out
}

#[test]
fn an_altered_checkpoint_fails_its_signature() {
    let log = Log::new(200);
    let path = log.dir().join("checkpoints.log");
    let mut bytes = fs::read(&path).unwrap();
    // The first checkpoint's tree size is its first field, right after the frame header (tag 0x08):
    // make it claim one record more, with a fresh CRC so that only the signature can tell.
    let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    assert_eq!(bytes[8], 0x08);
    bytes[9] += 1;
    let crc = crc32c::crc32c(&bytes[8..8 + len]);
    bytes[4..8].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, bytes).unwrap();
    let all = log.fails(&["audit", "verify", "audit"]);
    assert!(all.contains("checkpoints.log: byte 0, checkpoint 0: the checkpoint's signature does not verify"), "{all}");
}

#[test]
fn verify_says_in_its_verdict_which_records_no_checkpoint_proves_yet() {
    let log = Log::new(200);
    let path = log.dir().join("checkpoints.log");
    let original = fs::read(&path).unwrap();
    // The last checkpoint cut off at a frame's end: the records after the first are unproven,
    // which a running gateway's newest records are too, so a warning, not a failure.
    let first_len = 8 + u32::from_le_bytes(original[..4].try_into().unwrap()) as usize;
    fs::write(&path, &original[..first_len]).unwrap();
    let out = log.splpd(&["audit", "verify", "audit", "--ca", "ca/ca.crt"]);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    let verdict = said.lines().next().unwrap_or_default();
    assert!(verdict.contains(": ok: 200 records"), "{said}");
    assert!(verdict.contains("records 100..200 (100 of them) are not covered by a signed checkpoint yet"), "{said}");
    fs::write(&path, &original).unwrap();
    let said = log.ok(&["audit", "verify", "audit", "--ca", "ca/ca.crt"]);
    assert!(!said.contains("not covered"), "{said}");
}

#[test]
fn checkpoints_must_not_go_backwards() {
    let log = Log::new(200);
    let path = log.dir().join("checkpoints.log");
    let original = fs::read(&path).unwrap();
    // An old checkpoint replayed at the end: signed, but the log would have shrunk.
    let first_len = 8 + u32::from_le_bytes(original[..4].try_into().unwrap()) as usize;
    let mut replayed = original.clone();
    replayed.extend_from_slice(&original[..first_len]);
    fs::write(&path, &replayed).unwrap();
    let all = log.fails(&["audit", "verify", "audit"]);
    let n = log.checkpoint_sizes().len() - 1;
    assert!(all.contains(&format!("checkpoint {n}: the log goes backwards")), "{all}");
    // The records the larger checkpoint before it covers stay covered.
    assert!(!all.contains("are not covered by a checkpoint yet"), "{all}");

    // A checkpoint signed by the gateway's own key with the right root, dated before the last.
    let last = read_checkpoints(&log.dir()).unwrap()[n - 1].clone();
    let signer = CheckpointSigner::load(&log.path("gw1.key")).unwrap();
    let root: [u8; 32] = last.root_hash.as_slice().try_into().unwrap();
    let cp = signer.sign(&GATEWAY.parse().unwrap(), last.tree_size, &root, last.time_unix_nanos - 1).unwrap();
    let payload = prost::Message::encode_to_vec(&cp);
    let mut dated = original;
    dated.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    dated.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    dated.extend_from_slice(&payload);
    fs::write(&path, &dated).unwrap();
    let all = log.fails(&["audit", "verify", "audit"]);
    assert!(all.contains(&format!("checkpoint {n}: time goes backwards")), "{all}");
    assert!(!all.contains("its root"), "the root itself matches: {all}");
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn query_filters_select_the_right_records() {
    let log = Log::new(300);
    let all = json_lines(&log.ok(&["audit", "query", "audit"]));
    assert_eq!(all.len(), 300);
    let first = &all[0];
    assert_eq!(first["exchange_id"], exchange_id(0));
    assert_eq!(first["received_at"], "2025-03-01T00:00:00.000000000Z");
    assert_eq!(first["received_at_unix_nanos"], BASE_NANOS);
    assert_eq!(first["client_cert_sha256"], "ab".repeat(32));
    assert_eq!(first["client_address"], "10.20.0.7");
    assert_eq!(first["forwarded_at"], serde_json::Value::Null);
    // Each line gives its record's number, as `proof --record` and verify name records.
    assert!(all.iter().enumerate().all(|(i, line)| line["record"] == i), "{:?}", all[1]);

    let ids = |out: &str| -> Vec<String> {
        json_lines(out).iter().map(|v| v["exchange_id"].as_str().unwrap().to_owned()).collect()
    };
    let expect = |f: &dyn Fn(u64) -> bool| -> Vec<String> { (0..300).filter(|i| f(*i)).map(exchange_id).collect() };

    assert_eq!(ids(&log.ok(&["audit", "query", "audit", "--client", CLIENTS[1]])), expect(&|i| i % 3 == 1));
    assert_eq!(ids(&log.ok(&["audit", "query", "audit", "--status", "4xx"])), expect(&|i| i % 10 == 3));
    assert_eq!(ids(&log.ok(&["audit", "query", "audit", "--address", "10.20.2.7"])), expect(&|i| i % 4 == 2));
    assert_eq!(ids(&log.ok(&["audit", "query", "audit", "--address", "10.20.*"])).len(), 300);
    assert_eq!(ids(&log.ok(&["audit", "query", "audit", "--address", "10.20.2.0/24"])), expect(&|i| i % 4 == 2));
    let bad = log.splpd(&["audit", "query", "audit", "--address", "10.20.2.7:443"]);
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("is not an address: give an IP address"), "{}", text(&bad.stderr));
    assert_eq!(ids(&log.ok(&["audit", "query", "audit", "--status", "502"])), expect(&|i| i % 10 == 7));
    assert_eq!(ids(&log.ok(&["audit", "query", "audit", "--error-type", "Server.*"])), expect(&|i| i % 10 == 7));
    assert_eq!(
        ids(&log.ok(&["audit", "query", "audit", "--service", SERVICES[0], "--status", "5xx"])),
        expect(&|i| i % 2 == 0 && i % 10 == 7)
    );
    assert_eq!(
        ids(&log.ok(&[
            "audit",
            "query",
            "audit",
            "--since",
            "2025-03-01T07:01:40+07:00",
            "--until",
            "2025-03-01T00:01:50Z"
        ])),
        expect(&|i| (100..110).contains(&i))
    );
    assert_eq!(ids(&log.ok(&["audit", "query", "audit", "--exchange-id", &exchange_id(42)])), vec![exchange_id(42)]);
    assert_eq!(ids(&log.ok(&["audit", "query", "audit", "--client", "ID/PEMDA/1602/*", "--limit", "7"])).len(), 7);
    assert!(log.ok(&["audit", "query", "audit", "--client", "nobody"]).is_empty());

    let table = log.ok(&["audit", "query", "audit", "--format", "table", "--status", "403", "--limit", "3"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        lines[0].starts_with("TIME")
            && lines[0].contains("EXCHANGE ID")
            && lines[0].contains("ERROR TYPE")
            && lines[0].ends_with("PATH")
    );
    assert!(lines[0].starts_with("TIME (UTC)") && lines[1].starts_with("2025-03-01T00:00:03.000Z"), "{table}");
    // In Indonesia's western zone, as an auditor there reads the hour.
    for (zone, shown) in [("WIB", "WIB"), ("wib", "WIB"), ("+07:00", "+07:00")] {
        let wib =
            log.ok(&["audit", "query", "audit", "--format", "table", "--status", "403", "--limit", "1", "--tz", zone]);
        let wib: Vec<&str> = wib.lines().collect();
        assert!(wib[0].starts_with(&format!("TIME ({shown})")), "{wib:?}");
        assert!(wib[1].starts_with("2025-03-01T07:00:03.000+07:00 "), "{wib:?}");
    }
    let bad = log.splpd(&["audit", "query", "audit", "--format", "table", "--tz", "Jakarta"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("WITA (+08:00)"), "{}", text(&bad.stderr));
    let column = lines[0].find("CLIENT").unwrap();
    assert!(lines.iter().skip(1).all(|l| l[column..].starts_with("ID/PEMDA/1602/")), "aligned: {table}");
    assert!(lines[1].contains("Client.AccessDenied"), "{table}");
    let address = lines[0].find("ADDRESS").unwrap();
    assert!(lines.iter().skip(1).all(|l| l[address..].starts_with("10.20.")), "{table}");
    // The status, a number, is right-aligned under its head; the method left-aligned under its.
    let status_end = lines[0].find("STATUS").unwrap() + "STATUS".len();
    assert!(lines.iter().skip(1).all(|l| l[..status_end].ends_with(" 403")), "{table}");
    let method = lines[0].find("METHOD").unwrap();
    assert!(lines.iter().skip(1).all(|l| l[method..].starts_with("GET ")), "{table}");
    // The path last, where the records' paths start in the head's column.
    let path = lines[0].find("PATH").unwrap();
    assert!(lines.iter().skip(1).all(|l| l[path..].starts_with("/r1/ID/PEMDA/1602/")), "{table}");

    let bad = log.splpd(&["audit", "query", "audit", "--status", "6xx"]);
    assert_eq!(bad.status.code(), Some(2), "clap refuses a bad status");
    let bad = log.splpd(&["audit", "query", "audit", "--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2));
    // A time without its zone, the likeliest slip, is told as such.
    let bad = log.splpd(&["audit", "query", "audit", "--since", "2025-03-01T13:00:00"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("has no time zone: add it, e.g. 2025-03-01T13:00:00+07:00 for WIB"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn every_command_refuses_a_folder_that_holds_no_log() {
    let log = Log::new(1);
    // The CA's folder, and the folder holding the gateway's key: easy to give by mistake.
    for dir in ["ca", "."] {
        for args in [
            &["audit", "verify", dir][..],
            &["audit", "query", dir],
            &["audit", "query", dir, "--format", "table"],
            &["audit", "proof", dir, &exchange_id(0)],
            &["audit", "consistency", dir, "--from", "1"],
            &["audit", "export", dir, "--to", "x.tar", "--key", "gw1.key"],
        ] {
            let out = log.splpd(args);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "splpd {args:?} should fail: {stderr}");
            assert!(stderr.starts_with(&format!("error: {dir}: no audit log here")), "{args:?}: {stderr}");
            assert!(stderr.contains("[audit] section"), "says where the log is: {stderr}");
            assert!(out.stdout.is_empty(), "{args:?} prints no result: {}", text(&out.stdout));
        }
    }
    assert!(!log.path("x.tar").exists());
    // The real log still answers.
    assert_eq!(json_lines(&log.ok(&["audit", "query", "audit"])).len(), 1);
}

#[test]
fn a_proof_checks_offline_and_fails_when_altered() {
    let log = Log::new(300);
    for i in [0, 1, 137, 255, 299] {
        let out = format!("proof-{i}.json");
        log.ok(&["audit", "proof", "audit", &exchange_id(i), "--out", &out]);
        let ok = log.ok(&["audit", "check-proof", &out, "--ca", "ca/ca.crt"]);
        assert!(ok.contains(&format!("exchange {} is record {i} of gateway {GATEWAY}", exchange_id(i))), "{ok}");
    }
    // To standard output too, with the documented fields.
    let proof: serde_json::Value =
        serde_json::from_str(&log.ok(&["audit", "proof", "audit", &exchange_id(137)])).unwrap();
    assert_eq!(proof["format"], "splpd-inclusion-proof/v1");
    assert_eq!(proof["leaf_index"], 137);
    assert_eq!(proof["checkpoint"]["tree_size"], 300);
    assert_eq!(proof["record"]["status"], 502);
    assert_eq!(proof["record"]["error_type"], "Server.ServerProxy.ServiceFailed");
    assert!(proof["signer_certificate"].as_str().unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(proof["audit_path"].as_array().unwrap().len(), 9, "a tree of 300 leaves is 9 levels deep here");

    let altered = |name: &str, change: &dyn Fn(&mut serde_json::Value)| {
        let mut p = proof.clone();
        change(&mut p);
        fs::write(log.path(name), serde_json::to_string(&p).unwrap()).unwrap();
        log.fails(&["audit", "check-proof", name, "--no-ca"])
    };
    let all = altered("status.json", &|p| p["record"]["status"] = 200.into());
    assert!(all.contains("the record shown in the proof is not the record stored"), "{all}");
    assert!(all.contains("field status differs;"), "{all}");
    let other = serde_json::to_string(&serde_json::json!(base64_of_record(&record(138)))).unwrap();
    let all = altered("bytes.json", &|p| {
        p["record_base64"] = serde_json::from_str(&other).unwrap();
        p["record"] = shown_record(&log, 138);
        p["exchange_id"] = exchange_id(138).into();
    });
    assert!(all.contains("leaf_hash"), "{all}");
    let all = altered("bytes-and-leaf.json", &|p| {
        p["record_base64"] = serde_json::from_str(&other).unwrap();
        p["record"] = shown_record(&log, 138);
        p["exchange_id"] = exchange_id(138).into();
        p["leaf_hash"] = leaf_hash_hex(&record(138)).into();
    });
    assert!(all.contains("the audit path does not lead from leaf 137"), "{all}");
    let all = altered("root.json", &|p| {
        let root = p["checkpoint"]["root_hash"].as_str().unwrap().to_owned();
        let flipped = match root.strip_prefix('0') {
            Some(rest) => format!("1{rest}"),
            None => format!("0{}", &root[1..]),
        };
        p["checkpoint"]["root_hash"] = flipped.into();
    });
    assert!(all.contains("the audit path does not lead"), "{all}");
    let all = altered("index.json", &|p| p["leaf_index"] = 136.into());
    assert!(all.contains("the audit path does not lead"), "{all}");
    let all = altered("size.json", &|p| p["checkpoint"]["tree_size"] = 301.into());
    assert!(all.contains("does not"), "{all}");
    let all = altered("time.json", &|p| p["checkpoint"]["time_unix_nanos"] = BASE_NANOS.into());
    assert!(all.contains("time"), "{all}");

    let all = log.fails(&["audit", "proof", "audit", "00000000-0000-4000-8000-000000000000"]);
    assert!(all.contains("no record with exchange id"), "{all}");
}

fn base64_of_record(r: &ExchangeRecord) -> String {
    use base64::Engine as _;
    use prost::Message as _;
    base64::engine::general_purpose::STANDARD.encode(r.encode_to_vec())
}

fn leaf_hash_hex(r: &ExchangeRecord) -> String {
    use prost::Message as _;
    hex::encode(splpd_gateway::audit::merkle::leaf_hash(&r.encode_to_vec()))
}

fn extract(archive: &Path, into: &Path) {
    fs::create_dir_all(into).unwrap();
    tar::Archive::new(fs::File::open(archive).unwrap()).unpack(into).unwrap();
}

/// Record `i` as a proof shows it: `query`'s line without the record's number.
fn shown_record(log: &Log, i: u64) -> serde_json::Value {
    let mut line: serde_json::Value =
        serde_json::from_str(&log.ok(&["audit", "query", "audit", "--exchange-id", &exchange_id(i)])).unwrap();
    line.as_object_mut().unwrap().remove("record");
    line
}

#[test]
fn an_export_verifies_once_extracted() {
    let log = Log::new(400);
    let out = log.ok(&["audit", "export", "audit", "--to", "all.tar", "--key", "gw1.key"]);
    assert!(out.contains("records 0..=399"), "{out}");
    extract(&log.path("all.tar"), &log.path("all"));
    let ok = log.ok(&["audit", "verify", "all"]);
    assert!(ok.contains("all: ok: 400 records") && ok.contains("manifest of ID/PEMDA/1602/gw1"), "{ok}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(log.path("all/MANIFEST.json")).unwrap()).unwrap();
    assert_eq!(manifest["records"]["first_seq"], 0);
    assert_eq!(manifest["latest_checkpoint"]["tree_size"], 400);
    let files: Vec<&str> = manifest["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert!(files.contains(&"checkpoints.log") && files.iter().any(|f| f.starts_with("signer-")), "{files:?}");
    // The signature is openssl-checkable: MANIFEST.sig over MANIFEST.json by the signer's key.
    assert!(log.path("all/MANIFEST.sig").exists());
    // Its members are not for every account on the host once extracted.
    let mut members = tar::Archive::new(fs::File::open(log.path("all.tar")).unwrap());
    for entry in members.entries().unwrap() {
        let entry = entry.unwrap();
        let mode = entry.header().mode().unwrap();
        assert_eq!(mode & 0o007, 0, "{:?}: {mode:o}", entry.path().unwrap());
    }

    // A range from the middle: whole segments, started from the signed frontier, up to the
    // segment holding the last record of the checkpoint of 200 records.
    let segments = log.segments();
    let last = segments.iter().rposition(|(first, _)| *first < 200).unwrap();
    assert!(last > 5 && segments[4].0 < 200, "{segments:?}");
    let (from, to) = (segments[4].0 + 3, segments[last].0);
    let out = log.ok(&[
        "audit",
        "export",
        "audit",
        "--to",
        "part.tar",
        "--from-seq",
        &from.to_string(),
        "--to-seq",
        &to.to_string(),
        "--key",
        "gw1.key",
        "--cert",
        "gw1.crt",
    ]);
    assert!(out.contains(&format!("records {}..={}", segments[4].0, segments[last + 1].0 - 1)), "{out}");
    extract(&log.path("part.tar"), &log.path("part"));
    let ok = log.ok(&["audit", "verify", "part"]);
    assert!(ok.contains(&format!("an archive starting at record {}", segments[4].0)), "{ok}");
    let extracted: Vec<String> = fs::read_dir(log.path("part"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".seg"))
        .collect();
    assert_eq!(extracted.len(), last - 3, "{extracted:?}");
    // An archive exports again (the DR centre passing it on), and still verifies.
    log.ok(&["audit", "export", "part", "--to", "again.tar", "--key", "gw1.key"]);
    extract(&log.path("again.tar"), &log.path("again"));
    let ok = log.ok(&["audit", "verify", "again"]);
    assert!(ok.contains(&format!("an archive starting at record {}", segments[4].0)), "{ok}");

    // Tampering after extraction is caught by the manifest and by the log's own checks.
    let (_, seg) = &segments[5];
    let copy = log.path("part").join(name(seg));
    let mut bytes = fs::read(&copy).unwrap();
    let (offset, _) = frames(&copy)[2];
    bytes[offset + 20] ^= 0x04;
    fs::write(&copy, bytes).unwrap();
    let all = log.fails(&["audit", "verify", "part"]);
    assert!(
        all.contains(&format!("{}: ", name(seg))) && all.contains("the file was changed after the export"),
        "{all}"
    );
    assert!(all.contains("checksum mismatch"), "{all}");

    let mut manifest = fs::read_to_string(log.path("all/MANIFEST.json")).unwrap();
    manifest = manifest.replace("\"first_seq\": 0", "\"first_seq\": 1");
    fs::write(log.path("all/MANIFEST.json"), manifest).unwrap();
    let all = log.fails(&["audit", "verify", "all"]);
    assert!(all.contains("MANIFEST.sig does not verify"), "{all}");

    // The target is never overwritten, and a damaged log is not exported.
    let all = log.splpd(&["audit", "export", "audit", "--to", "all.tar", "--key", "gw1.key"]);
    assert!(!all.status.success() && text(&all.stderr).contains("exists already"));
    let (_, seg) = &segments[2];
    let mut bytes = fs::read(seg).unwrap();
    bytes[100] ^= 0xff;
    fs::write(seg, bytes).unwrap();
    let all = log.fails(&["audit", "export", "audit", "--to", "bad.tar", "--key", "gw1.key"]);
    assert!(all.contains("the log does not verify"), "{all}");
    assert!(!log.path("bad.tar").exists() && !log.path("bad.tar.partial").exists());
}

#[test]
fn consistency_proofs_between_checkpoints_check_offline_and_catch_a_rewritten_history() {
    let log = Log::new(300);
    assert_eq!(log.checkpoint_sizes(), [100, 200, 300]);
    log.ok(&["audit", "consistency", "audit", "--from", "100", "--out", "c.json"]);
    let ok = log.ok(&["audit", "check-proof", "c.json", "--ca", "ca/ca.crt"]);
    assert!(ok.contains(&format!("gateway {GATEWAY}'s audit log of 300 records")), "{ok}");
    assert!(ok.contains("extends its log of 100 records"), "{ok}");
    let proof: serde_json::Value =
        serde_json::from_str(&log.ok(&["audit", "consistency", "audit", "--from", "200", "--to", "300"])).unwrap();
    assert_eq!(proof["format"], "splpd-consistency-proof/v1");
    assert_eq!(
        (proof["old_checkpoint"]["tree_size"].as_u64(), proof["new_checkpoint"]["tree_size"].as_u64()),
        (Some(200), Some(300))
    );
    assert!(!proof["proof"].as_array().unwrap().is_empty());

    // Only signed sizes can be the ends of a proof; the error lists those there are.
    let all = log.fails(&["audit", "consistency", "audit", "--from", "150"]);
    assert!(all.contains("no checkpoint covers exactly 150 records") && all.contains("100, 200, 300"), "{all}");
    let all = log.fails(&["audit", "consistency", "audit", "--from", "300", "--to", "100"]);
    assert!(all.contains("give the smaller size first"), "{all}");

    // An altered proof or checkpoint fails.
    let c: serde_json::Value = serde_json::from_str(&fs::read_to_string(log.path("c.json")).unwrap()).unwrap();
    let altered = |name: &str, change: &dyn Fn(&mut serde_json::Value)| {
        let mut p = c.clone();
        change(&mut p);
        fs::write(log.path(name), serde_json::to_string(&p).unwrap()).unwrap();
        log.fails(&["audit", "check-proof", name, "--no-ca"])
    };
    let all = altered("hash.json", &|p| p["proof"][0] = "00".repeat(32).into());
    assert!(all.contains("does not lead from the root of 100 records"), "{all}");
    let all = altered("root.json", &|p| p["old_checkpoint"]["root_hash"] = "11".repeat(32).into());
    assert!(all.contains("the checkpoint of 100 records"), "{all}");

    // The real attack: the same gateway key rewrites record 53 (a denial) after checkpoint 100 was handed to
    // an auditor, and signs new checkpoints over the rewritten log. Each new checkpoint is
    // validly signed, but no consistency proof joins the old checkpoint to them.
    let forged_dir = log.path("forged");
    log.write(&forged_dir, 0..300, &|i| {
        let mut r = record(i);
        if i == 53 {
            r.status = 200;
            r.error_type.clear();
        }
        r
    });
    let forged: serde_json::Value =
        serde_json::from_str(&log.ok(&["audit", "consistency", "forged", "--from", "100"])).unwrap();
    assert_ne!(forged["old_checkpoint"]["root_hash"], c["old_checkpoint"]["root_hash"]);
    let mut spliced = forged.clone();
    spliced["old_checkpoint"] = c["old_checkpoint"].clone();
    fs::write(log.path("spliced.json"), serde_json::to_string(&spliced).unwrap()).unwrap();
    let all = log.fails(&["audit", "check-proof", "spliced.json", "--ca", "ca/ca.crt"]);
    assert!(all.contains("the log was changed between the two checkpoints"), "{all}");
}

#[test]
fn retention_removes_only_segments_an_export_holds_and_the_log_goes_on_verifiable() {
    let log = Log::new(600);
    let dir = log.dir();
    let all_segments = log.segments().len();
    assert!(all_segments > 10, "small segments: {all_segments}");
    let tiny = RetentionPolicy { max_age: None, max_size: Some(1) };

    // Everything is due, but nothing is exported: nothing goes, and the operator is told what to do.
    let pass = retention::apply(&dir, &tiny, SystemTime::now()).unwrap();
    assert!(pass.removed.is_empty());
    let why = pass.waiting_for_export.unwrap();
    assert!(why.contains("no export holds it") && why.contains("splpd audit export"), "{why}");
    assert_eq!(log.segments().len(), all_segments);

    // An export of the first 300 records: the segments it holds go, the others stay.
    log.ok(&["audit", "export", "audit", "--to", "part1.tar", "--key", "gw1.key", "--to-seq", "299"]);
    let exports = retention::read_exports(&dir).unwrap();
    assert_eq!(exports.len(), 1);
    let held_to = exports[0].last_seq;
    assert!((299..600).contains(&held_to), "{exports:?}");
    let pass = retention::apply(&dir, &tiny, SystemTime::now()).unwrap();
    assert!(!pass.removed.is_empty());
    // The export holds records up to its last checkpoint, which need not end a segment (the
    // writer's batches, and so its checkpoints, fall as the load has it): every segment that
    // ends by then goes, and the one that goes on past it stays.
    let left = log.segments();
    assert_eq!(left[0].0, pass.first_seq);
    assert!(pass.first_seq <= held_to + 1, "nothing the export does not hold goes: {pass:?}, held to {held_to}");
    assert!(left.len() > 1 && left[1].0 > held_to + 1, "every segment it holds goes: {left:?}, held to {held_to}");
    assert_eq!(left.len() + pass.removed.len(), all_segments);
    assert!(pass.waiting_for_export.is_some(), "the next segment is due too, but not exported");

    // What is left verifies, from the base on, against the same checkpoints.
    let out = log.splpd(&["audit", "verify", "audit"]);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert!(all.contains(&format!("records 0..{} were removed by retention", pass.first_seq)), "{all}");
    assert!(all.contains(&format!("(those before {} removed by retention)", pass.first_seq)), "not an archive: {all}");
    assert!(all.contains("2 checkpoint(s) of the removed records were checked by their signatures only"), "{all}");
    assert!(all.contains("part1.tar"), "the note names the export that holds them: {all}");
    // Queries, and proofs of records still there, work; removed ones are gone.
    let q = json_lines(&log.ok(&["audit", "query", "audit", "--exchange-id", &exchange_id(550)]));
    assert_eq!(q.len(), 1);
    log.ok(&["audit", "proof", "audit", &exchange_id(550), "--out", "p550.json"]);
    log.ok(&["audit", "check-proof", "p550.json", "--ca", "ca/ca.crt"]);
    let all = log.fails(&["audit", "proof", "audit", &exchange_id(3)]);
    assert!(all.contains("no record with exchange id"), "{all}");
    // It says how few were read, and where the removed ones are.
    let read = 600 - pass.first_seq;
    assert!(all.contains(&format!("({read} records read)")), "{all}");
    assert!(
        all.contains(&format!("records 0..{} were removed by retention and are held by", pass.first_seq))
            && all.contains("part1.tar"),
        "{all}"
    );
    let missing = log.splpd(&["audit", "query", "audit", "--exchange-id", &exchange_id(3)]);
    let said = text(&missing.stderr);
    assert!(
        said.contains("0 of") && said.contains("were removed by retention") && said.contains("part1.tar"),
        "{said}"
    );
    let all = log.fails(&["audit", "consistency", "audit", "--from", "100"]);
    let said = format!("a proof from the checkpoint of 100 records needs records before {}", pass.first_seq);
    assert!(all.contains(&said) && all.contains("retention removed"), "{all}");
    log.ok(&["audit", "consistency", "audit", "--from", "600"]);

    // The gateway reopens the trimmed log and goes on: new checkpoints verify over it.
    log.write(&dir, 600..750, &record);
    let out = log.splpd(&["audit", "verify", "audit", "--ca", "ca/ca.crt"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(log.checkpoint_sizes().last(), Some(&750));
    // A consistency proof from the export's last checkpoint, the first left after the cut, is
    // made from the tree's frontier there, and checks.
    let from = (held_to + 1).to_string();
    log.ok(&["audit", "consistency", "audit", "--from", &from, "--out", "after-cut.json"]);
    let ok = log.ok(&["audit", "check-proof", "after-cut.json", "--ca", "ca/ca.crt"]);
    assert!(ok.contains(&from) && ok.contains("750"), "{ok}");

    // By age: a pass as of ten days on removes what the export holds, and only that.
    let aged = RetentionPolicy { max_age: Some(Duration::from_secs(86_400)), max_size: None };
    let later = SystemTime::now() + Duration::from_secs(10 * 86_400);
    let pass = retention::apply(&dir, &aged, later).unwrap();
    assert!(pass.removed.is_empty(), "the held segments are gone already: {pass:?}");
    log.ok(&["audit", "export", "audit", "--to", "part2.tar", "--key", "gw1.key"]);
    let pass = retention::apply(&dir, &aged, later).unwrap();
    assert_eq!(log.segments().len(), 1, "all but the segment being written: {pass:?}");
    let out = log.splpd(&["audit", "verify", "audit"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
}

/// Issues a certificate and key for `identity` from the CA in `ca_dir`, as `<stem>.crt` and
/// `<stem>.key` beside the log.
fn issue(log: &Log, ca_dir: &Path, identity: Identity, stem: &str) {
    let ca = Ca::open(ca_dir).unwrap();
    let (cert, key) = (log.path(&format!("{stem}.crt")), log.path(&format!("{stem}.key")));
    ca.issue(&LeafRequest::new(identity), KeyType::default(), &cert, &key, false, time::OffsetDateTime::now_utc())
        .unwrap();
}

/// Signs the extracted archive in `dir` again with the key and certificate `<stem>.key` and
/// `<stem>.crt`, as someone holding that key would: the manifest names it, and its certificate
/// is put beside it.
fn resign_manifest(log: &Log, dir: &Path, stem: &str) {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};

    let key = log.path(&format!("{stem}.key"));
    let signer = CheckpointSigner::load(&key).unwrap();
    let cert_name = format!("signer-{}.crt", hex::encode(signer.key_sha256()));
    fs::copy(log.path(&format!("{stem}.crt")), dir.join(&cert_name)).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("MANIFEST.json")).unwrap()).unwrap();
    manifest["signer"]["key_sha256"] = hex::encode(signer.key_sha256()).into();
    manifest["signer"]["certificate"] = cert_name.into();
    let text = serde_json::to_vec_pretty(&manifest).unwrap();
    let der = splpd_certs::load::read_private_key(&key).unwrap();
    let pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_ASN1_SIGNING, der.secret_der()).unwrap();
    let sig = pair.sign(&aws_lc_rs::rand::SystemRandom::new(), &text).unwrap();
    fs::write(dir.join("MANIFEST.json"), &text).unwrap();
    fs::write(dir.join("MANIFEST.sig"), sig.as_ref()).unwrap();
}

#[test]
fn an_export_and_its_manifest_are_signed_only_by_the_logs_own_gateway() {
    let log = Log::new(200);
    let ca_dir = log.path("ca");
    issue(&log, &ca_dir, Identity::Server("ID/PEMDA/1602/gw2".parse().unwrap()), "gw2");
    issue(&log, &ca_dir, Identity::Subsystem("ID/PEMDA/1602/DINKES".parse().unwrap()), "dinkes");

    // Another gateway's key, or an agency's client key: refused, nothing written or recorded.
    for (stem, what) in [("gw2", "is gateway ID/PEMDA/1602/gw2's"), ("dinkes", "subsystem ID/PEMDA/1602/DINKES")] {
        let (key, cert) = (format!("{stem}.key"), format!("{stem}.crt"));
        let out = log.splpd(&["audit", "export", "audit", "--to", "x.tar", "--key", &key, "--cert", &cert]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.contains(what) && stderr.contains(&format!("expected gateway {GATEWAY}'s own server certificate")),
            "{stderr}"
        );
        assert!(!log.path("x.tar").exists() && !log.dir().join("exports.log").exists(), "{stderr}");
    }
    // Without --cert, another gateway's key is told as the key that never signed this log.
    let out = log.splpd(&["audit", "export", "audit", "--to", "x.tar", "--key", "gw2.key"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success() && stderr.contains("gw2.key has not signed this log's checkpoints"), "{stderr}");

    // An archive whose manifest was signed again with such a key after the export fails to verify.
    log.ok(&["audit", "export", "audit", "--to", "all.tar", "--key", "gw1.key"]);
    extract(&log.path("all.tar"), &log.path("all"));
    log.ok(&["audit", "verify", "all", "--ca", "ca/ca.crt"]);
    for (stem, what) in [("gw2", "is gateway ID/PEMDA/1602/gw2's"), ("dinkes", "subsystem ID/PEMDA/1602/DINKES")] {
        let dir = log.path(&format!("all-{stem}"));
        extract(&log.path("all.tar"), &dir);
        resign_manifest(&log, &dir, stem);
        let dir = name(&dir);
        for args in [&["audit", "verify", &dir][..], &["audit", "verify", &dir, "--ca", "ca/ca.crt"]] {
            let all = log.fails(args);
            let expected = format!("MANIFEST.json: it names gateway {GATEWAY}, but its signer certificate");
            assert!(all.contains(&expected) && all.contains(what), "{args:?}: {all}");
        }
    }
    // A certificate of the right gateway made by some other CA: only --ca tells.
    let other = tempfile::tempdir().unwrap();
    Ca::init(
        &other.path().join("ca"),
        &InitOptions::new("Other", vec!["ID/PEMDA/1602".parse().unwrap()]),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    issue(&log, &other.path().join("ca"), Identity::Server(GATEWAY.parse().unwrap()), "self-made");
    let dir = log.path("all-self-made");
    extract(&log.path("all.tar"), &dir);
    resign_manifest(&log, &dir, "self-made");
    let ok = log.ok(&["audit", "verify", "all-self-made"]);
    assert!(ok.contains("not checked against any CA") && ok.contains("--ca"), "{ok}");
    let all = log.fails(&["audit", "verify", "all-self-made", "--ca", "ca/ca.crt"]);
    let only_ca = format!("names gateway {GATEWAY}, but it was not issued by the given CA: anyone can make");
    assert!(all.contains("MANIFEST.json: the signature verifies, and its signer certificate signer-"), "{all}");
    assert!(all.contains(&only_ca) && !all.contains("expected gateway") && !all.contains("does not verify"), "{all}");
}

#[test]
fn export_takes_a_time_range_as_the_records_received_in_it() {
    let log = Log::new(300);
    let wib = ["--since", "2025-03-01T07:01:40+07:00", "--until", "2025-03-01T00:03:20Z"];
    let out = log.ok(&[&["audit", "export", "audit", "--to", "t.tar", "--key", "gw1.key"], &wib[..]].concat());
    assert!(out.contains("(asked for 100..=199)"), "{out}");
    let dir = log.path("t");
    extract(&log.path("t.tar"), &dir);
    log.ok(&["audit", "verify", &name(&dir), "--ca", "ca/ca.crt"]);
    let since_only = ["--since", "2025-03-01T00:04:00Z"];
    let out = log.ok(&[&["audit", "export", "audit", "--to", "s.tar", "--key", "gw1.key"], &since_only[..]].concat());
    assert!(out.contains("(asked for 240..=299)"), "{out}");
    let none = ["--since", "2026-01-01T00:00:00Z"];
    let out = log.splpd(&[&["audit", "export", "audit", "--to", "n.tar", "--key", "gw1.key"], &none[..]].concat());
    assert!(!out.status.success() && !log.path("n.tar").exists());
    assert!(text(&out.stderr).contains("no record in audit was received between 2026-01-01"), "{}", text(&out.stderr));
    let both = log.splpd(&[
        "audit",
        "export",
        "audit",
        "--to",
        "b.tar",
        "--key",
        "gw1.key",
        "--from-seq",
        "1",
        "--since",
        "2025-03-01T00:04:00Z",
    ]);
    assert_eq!(both.status.code(), Some(2), "a range by number or by time, not both");
}

#[test]
fn a_partial_archive_is_refused_naming_the_missing_file() {
    let log = Log::new(150);
    log.ok(&["audit", "export", "audit", "--to", "all.tar", "--key", "gw1.key"]);
    // The archive itself, not extracted: said so, with how.
    let out = log.splpd(&["audit", "verify", "all.tar"]);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("all.tar is a file, not an audit log's directory") && all.contains("tar -xf all.tar"),
        "{all}"
    );
    for (gone, kept) in [("MANIFEST.json", "MANIFEST.sig"), ("MANIFEST.sig", "MANIFEST.json")] {
        let dir = log.path(&format!("without-{gone}"));
        extract(&log.path("all.tar"), &dir);
        fs::remove_file(dir.join(gone)).unwrap();
        assert!(dir.join(kept).exists());
        let all = log.fails(&["audit", "verify", &name(&dir), "--ca", "ca/ca.crt"]);
        assert!(
            all.contains(&format!("{gone} is missing")) && all.contains("extract the whole archive again"),
            "{all}"
        );
    }
    // Cut before its end, where the manifest and its signature are: the archive's first file
    // still says what the folder is, and it does not pass for a plain log.
    let dir = log.path("cut");
    extract(&log.path("all.tar"), &dir);
    fs::remove_file(dir.join("MANIFEST.json")).unwrap();
    fs::remove_file(dir.join("MANIFEST.sig")).unwrap();
    let all = log.fails(&["audit", "verify", &name(&dir), "--ca", "ca/ca.crt"]);
    assert!(
        all.contains("SPLPD-EXPORT.txt is here but MANIFEST.json is missing")
            && all.contains("extract the whole archive again"),
        "{all}"
    );
}

/// Alters record `seq` of the log in `dir` (a flipped bit in its payload) and gives its frame a
/// fresh CRC, so that only the Merkle tree can tell.
fn alter_record(log: &Log, seq: u64) {
    let (first, segment) = log.segments().into_iter().rev().find(|(first, _)| *first <= seq).unwrap();
    let (offset, len) = frames(&segment)[(seq - first) as usize];
    let mut bytes = fs::read(&segment).unwrap();
    let payload = offset + 8..offset + 8 + len;
    bytes[payload.end - 1] ^= 0x01;
    let crc = crc32c::crc32c(&bytes[payload]);
    bytes[offset + 4..offset + 8].copy_from_slice(&crc.to_le_bytes());
    fs::write(&segment, bytes).unwrap();
}

/// Changes record `seq`'s status from 403 to 200 in place (both two-byte varints after field
/// 18's tag) and gives its frame a fresh CRC: a forged record that reads like any other.
fn forge_status(log: &Log, seq: u64) {
    let (first, segment) = log.segments().into_iter().rev().find(|(first, _)| *first <= seq).unwrap();
    let (offset, len) = frames(&segment)[(seq - first) as usize];
    let mut bytes = fs::read(&segment).unwrap();
    let payload = offset + 8..offset + 8 + len;
    let at = bytes[payload.clone()].windows(4).position(|w| w == [0x90, 0x01, 0x93, 0x03]).expect("status 403");
    bytes[payload.start + at + 2..payload.start + at + 4].copy_from_slice(&[0xc8, 0x01]);
    let crc = crc32c::crc32c(&bytes[payload]);
    bytes[offset + 4..offset + 8].copy_from_slice(&crc.to_le_bytes());
    fs::write(&segment, bytes).unwrap();
}

#[test]
fn query_checks_the_log_as_it_reads_and_fails_on_a_record_forged_under_a_fresh_checksum() {
    let log = Log::new(300);
    let all = |out: Output| (out.status.code(), format!("{}{}", text(&out.stdout), text(&out.stderr)));
    let (code, told) = all(log.splpd(&["audit", "query", "audit", "--exchange-id", &exchange_id(153)]));
    assert_eq!(code, Some(0), "{told}");
    assert!(told.contains("checked as read: 300 records") && told.contains("3 of 3 checkpoint(s) match"), "{told}");
    assert!(told.contains("not checked against any CA"), "{told}");

    forge_status(&log, 153);
    let table = ["audit", "query", "audit", "--exchange-id", &exchange_id(153), "--format", "table"];
    let (code, told) = all(log.splpd(&table));
    assert_eq!(code, Some(1), "{told}");
    assert!(told.contains(" 200 "), "shown as stored: {told}");
    assert!(told.contains("records 100..200 (after checkpoint 0, which matches) were altered"), "{told}");
    assert!(told.contains("does not check out against its signed checkpoints"), "{told}");
    // A limit reached at the forged record stops at the checkpoint that does not match: the
    // query fails, and says where it stopped, not that the log was cut short.
    let (code, told) = all(log.splpd(&["audit", "query", "audit", "--exchange-id", &exchange_id(153), "--limit", "1"]));
    assert_eq!(code, Some(1), "{told}");
    assert!(told.contains("read up to record 199, past a checkpoint that does not match"), "{told}");
    assert!(!told.contains("truncated") && !told.contains("cannot be checked"), "{told}");
    // At --limit, the log is read on to the checkpoint that covers the last record shown: the
    // first records are proven by the checkpoint of 100, which the forgery at 153 does not touch.
    let (code, told) = all(log.splpd(&["audit", "query", "audit", "--limit", "1"]));
    assert_eq!(code, Some(0), "{told}");
    assert!(told.contains("read up to record 99, which checkpoint 0 (of 100 records) covers"), "{told}");
    // With the region's CA, the signers are checked too.
    let (code, told) = all(log.splpd(&["audit", "query", "audit", "--limit", "1", "--ca", "ca/ca.crt"]));
    assert_eq!(code, Some(0), "{told}");
    assert!(told.contains("checked as read") && !told.contains("not checked against any CA"), "{told}");
    // Unchecked, it is shown as stored, and said to be unchecked.
    let (code, told) = all(log.splpd(&[&table[..], &["--unchecked"]].concat()));
    assert_eq!(code, Some(0), "{told}");
    assert!(told.contains(" 200 ") && told.contains("not checked (--unchecked)"), "{told}");
}

#[test]
fn a_consistency_proof_is_refused_from_a_log_that_does_not_match_its_checkpoints() {
    let log = Log::new(300);
    alter_record(&log, 150);
    // As `proof` does: the checkpoint whose root no longer matches is named.
    let all = log.fails(&["audit", "proof", "audit", &exchange_id(10)]);
    assert!(all.contains("checkpoint 2 does not match the log's records"), "{all}");
    let all = log.fails(&["audit", "consistency", "audit", "--from", "100", "--out", "c.json"]);
    assert!(
        all.contains("checkpoint 2 does not match the log's records") && all.contains("splpd audit verify"),
        "{all}"
    );
    assert!(!log.path("c.json").exists());
    let all = log.fails(&["audit", "consistency", "audit", "--from", "200", "--to", "300"]);
    assert!(all.contains("checkpoint 1 does not match the log's records"), "{all}");
    // The part before the altered record still proves.
    log.ok(&["audit", "consistency", "audit", "--from", "100", "--to", "100"]);
}

#[test]
fn records_without_any_checkpoint_fail_verification_and_a_clean_log_says_what_ca_checked() {
    let log = Log::new(150);
    let ok = log.ok(&["audit", "verify", "audit"]);
    assert!(ok.contains("not checked against any CA") && ok.contains("--ca with the region's CA certificate"), "{ok}");
    let ok = log.ok(&["audit", "verify", "audit", "--ca", "ca/ca.crt"]);
    assert!(!ok.contains("not checked against"), "{ok}");

    let path = log.dir().join("checkpoints.log");
    let original = fs::read(&path).unwrap();
    // Emptied, then deleted.
    fs::write(&path, b"").unwrap();
    for deleted in [false, true] {
        if deleted {
            fs::remove_file(&path).unwrap();
        }
        let all = log.fails(&["audit", "verify", "audit", "--ca", "ca/ca.crt"]);
        let none = "none of the log's 150 record(s) (records 0..150) is covered by a signed checkpoint";
        assert!(all.contains(none) && all.contains("checkpoints.log is missing, empty or was emptied"), "{all}");
        // When a running gateway signs: at open, and after a quiet spell up to 1.5 intervals later.
        let when = "signs a checkpoint when it opens the log and within one and a half checkpoint_intervals";
        assert!(all.contains(when) && all.contains("FAILED"), "{all}");
    }
    fs::write(&path, original).unwrap();
    log.ok(&["audit", "verify", "audit", "--ca", "ca/ca.crt"]);
}

#[test]
fn a_kept_checkpoint_reveals_a_log_rewritten_with_the_gateways_own_key() {
    let log = Log::new(300);
    // The auditor keeps a proof handed out at 300 records, and the checkpoint in it.
    log.ok(&["audit", "proof", "audit", &exchange_id(53), "--out", "kept.json"]);
    let kept: serde_json::Value = serde_json::from_str(&fs::read_to_string(log.path("kept.json")).unwrap()).unwrap();
    fs::write(log.path("kept-checkpoint.json"), kept["checkpoint"].to_string()).unwrap();

    // The honest log grows; a proof from the kept checkpoint holds, in each file format kept.
    log.write(&log.dir(), 300..400, &record);
    log.ok(&["audit", "consistency", "audit", "--kept", "kept.json", "--out", "c.json"]);
    for kept in ["kept.json", "kept-checkpoint.json"] {
        let ok = log.ok(&["audit", "check-proof", "c.json", "--ca", "ca/ca.crt", "--kept", kept]);
        assert!(ok.contains("extends its log of 300 records"), "{ok}");
        // Offline it shows only that the new checkpoint's log extends the kept one.
        assert!(ok.contains("the log under the new checkpoint extends the kept one"), "{ok}");
        assert!(ok.contains("keep the new checkpoint") && !ok.contains("not rewritten"), "{ok}");
    }
    // A proof from another size cannot tell.
    log.ok(&["audit", "consistency", "audit", "--from", "100", "--out", "c100.json"]);
    let all = log.fails(&["audit", "check-proof", "c100.json", "--no-ca", "--kept", "kept.json"]);
    assert!(all.contains("covers 300 records") && all.contains("--from 300"), "{all}");
    // Nor one that ends before the kept checkpoint: it is newer than the proof.
    log.ok(&["audit", "consistency", "audit", "--from", "100", "--to", "200", "--out", "c200.json"]);
    let all = log.fails(&["audit", "check-proof", "c200.json", "--no-ca", "--kept", "kept.json"]);
    assert!(all.contains("more than this proof reaches (200 records)") && !all.contains("--from 300"), "{all}");

    // The same key rewrites record 53 and signs the result: self-consistent, but not the kept one.
    let forged = log.path("forged");
    log.write(&forged, 0..400, &|i| {
        let mut r = record(i);
        if i == 53 {
            r.status = 200;
            r.error_type.clear();
        }
        r
    });
    log.ok(&["audit", "verify", "forged", "--ca", "ca/ca.crt"]);
    log.ok(&["audit", "consistency", "forged", "--from", "300", "--out", "f.json"]);
    // Without the kept checkpoint it holds, and says what that leaves open.
    let ok = log.ok(&["audit", "check-proof", "f.json", "--ca", "ca/ca.crt"]);
    assert!(ok.contains("its old checkpoint was taken from the log, not from one you kept"), "{ok}");
    let all = log.fails(&["audit", "check-proof", "f.json", "--ca", "ca/ca.crt", "--kept", "kept.json"]);
    assert!(all.contains("the log was rewritten since the kept checkpoint"), "{all}");
    let all = log.fails(&["audit", "consistency", "forged", "--kept", "kept.json", "--out", "f2.json"]);
    assert!(all.contains("the log was rewritten since the kept checkpoint") && !log.path("f2.json").exists(), "{all}");

    // An inclusion proof under a rewritten checkpoint of the kept one's size: two logs of 300
    // records, both signed by the gateway's key.
    let rewritten = log.path("rewritten");
    log.write(&rewritten, 0..300, &|i| if i == 53 { ExchangeRecord { status: 200, ..record(i) } } else { record(i) });
    log.ok(&["audit", "proof", "rewritten", &exchange_id(53), "--out", "r53.json"]);
    log.ok(&["audit", "check-proof", "r53.json", "--ca", "ca/ca.crt"]);
    let all = log.fails(&["audit", "check-proof", "r53.json", "--ca", "ca/ca.crt", "--kept", "kept.json"]);
    assert!(all.contains("both cover 300 records, but their roots differ"), "{all}");
    assert!(all.contains("two different logs of that size were signed"), "{all}");
    // The honest one under the same checkpoint holds; one of another size needs a consistency proof.
    log.ok(&["audit", "check-proof", "kept.json", "--ca", "ca/ca.crt", "--kept", "kept.json"]);
    log.ok(&["audit", "proof", "forged", &exchange_id(53), "--out", "f53.json"]);
    let all = log.fails(&["audit", "check-proof", "f53.json", "--ca", "ca/ca.crt", "--kept", "kept.json"]);
    assert!(
        all.contains("covers 400 records and the kept one 300") && all.contains("splpd audit consistency"),
        "{all}"
    );
}

#[test]
fn check_proof_says_what_the_record_is_and_whether_a_document_is_its_body() {
    let log = Log::new(1);
    let letter = b"{\"nomor\": \"SPT/2025/0417\", \"perihal\": \"rujukan\"}".to_vec();
    let digest = splpd_certs::load::sha256(&letter).to_vec();
    log.write(&log.dir(), 1..101, &|i| ExchangeRecord {
        method: "POST".to_owned(),
        request_body_bytes: letter.len() as u64,
        request_body_sha256: digest.clone(),
        forwarded_at_unix_nanos: BASE_NANOS + i as i64 * 1_000_000_000 + 1_000_000,
        ..record(i)
    });
    fs::write(log.path("surat.json"), &letter).unwrap();
    fs::write(log.path("other.json"), b"{}").unwrap();
    log.ok(&["audit", "proof", "audit", &exchange_id(42), "--out", "p.json"]);
    let check = |extra: &[&str]| log.splpd(&[&["audit", "check-proof", "p.json", "--ca", "ca/ca.crt"], extra].concat());

    let out = check(&["--request-body", "surat.json"]);
    let told = text(&out.stdout);
    assert!(out.status.success(), "{told}{}", text(&out.stderr));
    assert!(
        told.contains("the record: received 2025-03-01T00:00:42") && told.contains("from ID/PEMDA/1602/"),
        "{told}"
    );
    assert!(told.contains("answered 200; sent on to the service") && told.contains(": POST /r1/"), "{told}");
    assert!(told.contains("the request body: surat.json is the one recorded"), "{told}");

    let out = check(&["--request-body", "other.json"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("other.json is not the request body recorded: it has 2 bytes"), "{err}");
    assert!(!text(&out.stdout).contains(": ok:"), "no ok for a proof of another document: {}", text(&out.stdout));
    // A consistency proof holds no record, so no body.
    log.ok(&["audit", "consistency", "audit", "--from", "1", "--out", "c.json"]);
    let out = log.splpd(&["audit", "check-proof", "c.json", "--ca", "ca/ca.crt", "--request-body", "surat.json"]);
    assert!(!out.status.success() && text(&out.stderr).contains("go with an inclusion proof"), "{}", text(&out.stderr));
    // A record with no response body digest cannot match any file.
    let out = check(&["--response-body", "surat.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("the record holds no response body digest"), "{}", text(&out.stderr));
}

#[test]
fn check_proof_wants_the_regions_ca_or_to_be_told_to_go_without() {
    let log = Log::new(100);
    log.ok(&["audit", "proof", "audit", &exchange_id(7), "--out", "p.json"]);
    let all = log.fails(&["audit", "check-proof", "p.json"]);
    assert!(all.contains("give --ca with the region's CA certificate") && all.contains("--no-ca"), "{all}");
    let ok = log.ok(&["audit", "check-proof", "p.json", "--no-ca"]);
    assert!(ok.contains(": ok: exchange") && ok.contains("not checked against any CA"), "{ok}");
    let ok = log.ok(&["audit", "check-proof", "p.json", "--ca", "ca/ca.crt"]);
    assert!(ok.contains(": ok: exchange") && !ok.contains("not checked against any CA"), "{ok}");
    let out = log.splpd(&["audit", "check-proof", "p.json", "--ca", "ca/ca.crt", "--no-ca"]);
    assert_eq!(out.status.code(), Some(2), "clap refuses both");
}

#[test]
fn reversed_ranges_and_empty_results_are_told() {
    let log = Log::new(100);
    let out = log.splpd(&[
        "audit",
        "export",
        "audit",
        "--to",
        "x.tar",
        "--key",
        "gw1.key",
        "--from-seq",
        "20",
        "--to-seq",
        "10",
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("from (--from-seq 20) is after to (--to-seq 10)"), "{}", text(&out.stderr));
    let out =
        log.splpd(&["audit", "query", "audit", "--since", "2025-03-02T00:00:00Z", "--until", "2025-03-01T00:00:00Z"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("is not before --until"), "{}", text(&out.stderr));

    let out = log.splpd(&["audit", "query", "audit", "--client", "nobody"]);
    assert!(out.status.success() && out.stdout.is_empty());
    assert!(text(&out.stderr).contains("--client nobody names no whole identifier"), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("0 of 100 record(s) read match"), "{}", text(&out.stderr));
}

/// Runs `splpd audit export audit --to FILE --key gw1.key --from-seq FROM --to-seq TO`.
fn export_range(log: &Log, file: &str, from: u64, to: u64) -> Output {
    let (from, to) = (from.to_string(), to.to_string());
    log.splpd(&["audit", "export", "audit", "--to", file, "--key", "gw1.key", "--from-seq", &from, "--to-seq", &to])
}

#[test]
fn an_export_no_checkpoint_would_cover_is_refused_naming_the_ranges_that_would_be() {
    let log = Log::new(300);
    assert_eq!(log.checkpoint_sizes(), [100, 200, 300]);
    let segments = log.segments();
    let refused = |file: &str, from: u64, to: u64| {
        let out = export_range(&log, file, from, to);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(!log.path(file).exists() && !log.path(&format!("{file}.partial")).exists(), "{stderr}");
        assert!(!log.dir().join("exports.log").exists(), "nothing recorded for retention: {stderr}");
        stderr
    };

    // Record 0 only: its segment ends before the first checkpoint.
    let stderr = refused("x.tar", 0, 0);
    let held = format!("no checkpoint covers any of records 0..={}", segments[1].0 - 1);
    assert!(stderr.contains(&held) && stderr.contains("it would prove nothing, so it is not written"), "{stderr}");
    assert!(stderr.contains("the nearest checkpoints cover 100 records;"), "{stderr}");
    assert!(stderr.contains("end the range at or after the checkpoint of 100 records (--to-seq 99)"), "{stderr}");

    // A segment between two checkpoints: both ways out are named, and both give an archive that verifies.
    let k = (0..segments.len() - 1).find(|&k| segments[k].0 > 100 && segments[k + 1].0 <= 200).unwrap();
    let (first, next) = (segments[k].0, segments[k + 1].0);
    let stderr = refused("x.tar", first, first);
    assert!(stderr.contains(&format!("no checkpoint covers any of records {first}..={}", next - 1)), "{stderr}");
    assert!(stderr.contains("the nearest checkpoints cover 100 records and 200 records"), "{stderr}");
    assert!(stderr.contains("(--to-seq 199)") && stderr.contains("(--from-seq 99 or earlier)"), "{stderr}");
    for (file, from, to) in [("later-end.tar", first, 199), ("earlier-start.tar", 99, first)] {
        let out = export_range(&log, file, from, to);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let dir = log.path(file.trim_end_matches(".tar"));
        extract(&log.path(file), &dir);
        log.ok(&["audit", "verify", &name(&dir), "--ca", "ca/ca.crt"]);
    }

    // An archive made before export refused these (its checkpoints.log holding none over its
    // records, the manifest signed over that) fails verify, worded for an archive and counting
    // its own records.
    let dir = log.path("later-end");
    let manifest: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("MANIFEST.json")).unwrap()).unwrap();
    let (a, b) =
        (manifest["records"]["first_seq"].as_u64().unwrap(), manifest["records"]["last_seq"].as_u64().unwrap());
    fs::write(dir.join("checkpoints.log"), b"").unwrap();
    let mut manifest = manifest;
    for file in manifest["files"].as_array_mut().unwrap() {
        if file["name"] == "checkpoints.log" {
            file["bytes"] = 0.into();
            file["sha256"] = hex::encode(splpd_certs::load::sha256(b"")).into();
        }
    }
    manifest["latest_checkpoint"] = serde_json::Value::Null;
    fs::write(dir.join("MANIFEST.json"), serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    resign_manifest(&log, &dir, "gw1");
    let all = log.fails(&["audit", "verify", "later-end", "--ca", "ca/ca.crt"]);
    let none = format!("none of the archive's {} record(s) (records {a}..{}) is covered", b + 1 - a, b + 1);
    assert!(all.contains(&none) && all.contains("FAILED: 1 problem(s)"), "{all}");
    assert!(all.contains("export these records again") && !all.contains("brand-new"), "{all}");
}

#[test]
fn proofs_are_made_from_an_archive_that_starts_after_record_0() {
    let log = Log::new(300);
    // An archive from a segment that starts between record 0 and the first checkpoint.
    let start = log.segments().iter().map(|(first, _)| *first).find(|&first| first > 0 && first < 100).unwrap();
    let out = export_range(&log, "late.tar", start, 299);
    assert!(out.status.success(), "{}", text(&out.stderr));
    extract(&log.path("late.tar"), &log.path("late"));
    log.ok(&["audit", "verify", "late", "--ca", "ca/ca.crt"]);

    let i = start + 1;
    log.ok(&["audit", "proof", "late", &exchange_id(i), "--out", "late-proof.json"]);
    let ok = log.ok(&["audit", "check-proof", "late-proof.json", "--ca", "ca/ca.crt"]);
    assert!(ok.contains(&format!("exchange {} is record {i} of gateway {GATEWAY}", exchange_id(i))), "{ok}");
    // Its records are queried from where it starts.
    let found = log.ok(&["audit", "query", "late", "--exchange-id", &exchange_id(i), "--format", "jsonl"]);
    assert_eq!(json_lines(&found).len(), 1, "{found}");
    // A consistency proof from a checkpoint after the archive's start is made from the manifest's
    // frontier: the same proof as the live log's, and it checks.
    log.ok(&["audit", "consistency", "late", "--from", "200", "--out", "late-consistency.json"]);
    log.ok(&["audit", "consistency", "audit", "--from", "200", "--out", "live-consistency.json"]);
    let proof = |file: &str| {
        let doc: serde_json::Value = serde_json::from_slice(&fs::read(log.path(file)).unwrap()).unwrap();
        (doc["proof"].clone(), doc["old_checkpoint"].clone(), doc["new_checkpoint"].clone())
    };
    assert_eq!(proof("late-consistency.json"), proof("live-consistency.json"));
    assert!(proof("late-consistency.json").0.as_array().is_some_and(|p| !p.is_empty()));
    let ok = log.ok(&["audit", "check-proof", "late-consistency.json", "--ca", "ca/ca.crt"]);
    assert!(ok.contains("200") && ok.contains("300"), "{ok}");
}

#[test]
fn query_selects_the_exchanges_that_crossed_a_peer() {
    let log = Log::new(1);
    // Every fourth of the next 40 crossed the neighbouring region's gateway.
    let peer = |i: u64| if i.is_multiple_of(4) { "ID/PEMDA/1601/gw1" } else { "" };
    log.write(&log.dir(), 1..41, &|i| ExchangeRecord { peer: peer(i).to_owned(), ..record(i) });
    let expected: Vec<String> = (1_u64..41).filter(|i| i.is_multiple_of(4)).map(exchange_id).collect();
    for pattern in ["ID/PEMDA/1601/gw1", "ID/PEMDA/1601/*"] {
        let out = log.ok(&["audit", "query", "audit", "--peer", pattern, "--format", "jsonl"]);
        let ids: Vec<String> = json_lines(&out).iter().map(|r| r["exchange_id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(ids, expected, "--peer {pattern}");
    }
    let out = log.ok(&["audit", "query", "audit", "--peer", "ID/PEMDA/1603/*", "--format", "jsonl"]);
    assert!(json_lines(&out).is_empty(), "{out}");
}

#[test]
fn query_selects_one_case_and_one_end_user_and_the_table_shows_the_case() {
    let log = Log::new(1);
    // Every fifth of the next 30 belongs to case SPT/2025/0417; every third is for user 3271.
    let issue = |i: u64| if i.is_multiple_of(5) { "SPT/2025/0417" } else { "SPT/2025/0999" };
    let user = |i: u64| if i.is_multiple_of(3) { "ID/NIK/3271" } else { "" };
    log.write(&log.dir(), 1..31, &|i| ExchangeRecord {
        issue: issue(i).to_owned(),
        user_id: user(i).to_owned(),
        ..record(i)
    });
    let ids = |args: &[&str]| -> Vec<String> {
        let out = log.ok(&[&["audit", "query", "audit", "--format", "jsonl"], args].concat());
        json_lines(&out).iter().map(|r| r["exchange_id"].as_str().unwrap().to_owned()).collect()
    };
    let case: Vec<String> = (1_u64..31).filter(|i| i.is_multiple_of(5)).map(exchange_id).collect();
    assert_eq!(ids(&["--issue", "SPT/2025/0417"]), case);
    assert_eq!(ids(&["--issue", "SPT/2025/*"]).len(), 30);
    let for_user: Vec<String> = (1_u64..31).filter(|i| i.is_multiple_of(3)).map(exchange_id).collect();
    assert_eq!(ids(&["--user-id", "ID/NIK/3271"]), for_user);
    assert_eq!(ids(&["--user-id", "ID/NIK/3271", "--issue", "SPT/2025/0417"]), vec![exchange_id(15), exchange_id(30)]);

    let table = log.ok(&["audit", "query", "audit", "--format", "table", "--issue", "SPT/2025/0417"]);
    let lines: Vec<&str> = table.lines().collect();
    let column = lines[0].find("ISSUE").expect("an ISSUE column");
    assert_eq!(lines.len(), 1 + case.len(), "{table}");
    assert!(lines.iter().skip(1).all(|l| l[column..].starts_with("SPT/2025/0417 ")), "{table}");
}

#[test]
fn records_after_an_archives_last_checkpoint_are_not_recorded_for_retention() {
    let log = Log::new(300);
    assert_eq!(log.checkpoint_sizes(), [100, 200, 300]);
    // A range whose last segment ends between the checkpoints of 100 and 200 records.
    let segments = log.segments();
    let end = segments.iter().map(|(first, _)| *first).find(|&first| first > 101 && first < 200).unwrap();
    let out = export_range(&log, "tail.tar", 0, end - 1);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("records 100..{end} in the archive come after its last checkpoint")), "{stderr}");
    let entry: serde_json::Value =
        serde_json::from_str(fs::read_to_string(log.dir().join("exports.log")).unwrap().lines().next().unwrap())
            .unwrap();
    assert_eq!((entry["first_seq"].as_u64(), entry["last_seq"].as_u64()), (Some(0), Some(99)), "{entry}");
    let archive = Path::new(entry["archive"].as_str().unwrap());
    assert!(archive.is_absolute() && archive.ends_with("tail.tar"), "{entry}");
}

#[test]
fn an_export_ships_and_checks_only_the_gateways_own_current_certificate() {
    let log = Log::new(150);
    let refused = |key: &str, cert: &str| {
        let all = log.fails(&["audit", "export", "audit", "--to", "x.tar", "--key", key, "--cert", cert]);
        assert!(!log.path("x.tar").exists() && !log.dir().join("exports.log").exists(), "{all}");
        all
    };
    // A fresh key with a self-made certificate naming no splpd identity, as `openssl req -x509` makes.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["gw1.example".to_owned()]).unwrap().self_signed(&key).unwrap();
    fs::write(log.path("plain.key"), key.serialize_pem()).unwrap();
    fs::write(log.path("plain.crt"), cert.pem()).unwrap();
    let all = refused("plain.key", "plain.crt");
    let expected = format!(
        "plain.crt: the log's checkpoints name gateway {GATEWAY}, but this certificate carries no splpd identity; \
         expected gateway {GATEWAY}'s own server certificate"
    );
    assert!(all.contains(&expected), "{all}");
    // A fresh key with a self-made certificate that names the gateway: its name proves nothing,
    // and the key is not the one that signs the log.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["gw1.example".to_owned()]).unwrap();
    let urn = format!("urn:splp:server:{}", GATEWAY.replace('/', ":"));
    params.subject_alt_names.push(rcgen::SanType::URI(urn.as_str().try_into().unwrap()));
    fs::write(log.path("self.key"), key.serialize_pem()).unwrap();
    fs::write(log.path("self.crt"), params.self_signed(&key).unwrap().pem()).unwrap();
    let all = refused("self.key", "self.crt");
    assert!(all.contains("self.key is not the key that signs this log: its latest checkpoint"), "{all}");

    // The gateway's own certificate, but expired.
    let ca = Ca::open(&log.path("ca")).unwrap();
    let request = LeafRequest { days: Some(1), ..LeafRequest::new(Identity::Server(GATEWAY.parse().unwrap())) };
    let ten_days_ago = time::OffsetDateTime::now_utc() - time::Duration::days(10);
    ca.issue(&request, KeyType::default(), &log.path("old.crt"), &log.path("old.key"), false, ten_days_ago).unwrap();
    let all = refused("old.key", "old.crt");
    assert!(all.contains(&format!("names gateway {GATEWAY}, but it was not valid at")), "{all}");

    // The archive ships the certificate the log keeps for the key, so that one is checked too:
    // here one of gw1's key, self-made, naming no identity (the log still verifies without --ca).
    let kept = fs::read_dir(log.dir())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| name(p).starts_with("signer-"))
        .unwrap();
    let original = fs::read(&kept).unwrap();
    let gw1_key = rcgen::KeyPair::from_pem(&fs::read_to_string(log.path("gw1.key")).unwrap()).unwrap();
    let self_made =
        rcgen::CertificateParams::new(vec!["gw1.example".to_owned()]).unwrap().self_signed(&gw1_key).unwrap();
    fs::write(&kept, self_made.pem()).unwrap();
    log.ok(&["audit", "verify", "audit"]);
    let all = refused("gw1.key", "gw1.crt");
    assert!(all.contains(&format!("{}: the log's checkpoints name gateway {GATEWAY}", name(&kept))), "{all}");
    assert!(all.contains("carries no splpd identity") && all.contains("the archive ships this file"), "{all}");

    fs::write(&kept, original).unwrap();
    log.ok(&["audit", "export", "audit", "--to", "x.tar", "--key", "gw1.key", "--cert", "gw1.crt"]);
    extract(&log.path("x.tar"), &log.path("x"));
    log.ok(&["audit", "verify", "x", "--ca", "ca/ca.crt"]);
}

#[test]
fn a_kept_checkpoint_the_log_no_longer_reaches_or_holds_is_evidence_it_was_cut_short_or_rewritten() {
    let log = Log::new(250);
    assert_eq!(log.checkpoint_sizes(), [100, 200, 250]);
    log.ok(&["audit", "proof", "audit", &exchange_id(10), "--out", "kept.json"]);
    let evidence = "this is evidence that the log was cut short or rewritten since the kept checkpoint was signed";

    // Cut short: its latest checkpoint is before the kept one.
    log.write(&log.path("short"), 0..200, &record);
    let all = log.fails(&["audit", "consistency", "short", "--kept", "kept.json", "--out", "c.json"]);
    assert!(all.contains("checkpoints cover at most 200 records, fewer than the kept checkpoint of 250"), "{all}");
    assert!(all.contains(evidence) && !all.contains("give the smaller size first"), "{all}");

    // Rewritten: larger, but without the kept checkpoint's size; then without any checkpoint.
    let other = log.path("other");
    log.write(&other, 0..300, &record);
    let all = log.fails(&["audit", "consistency", "other", "--kept", "kept.json", "--out", "c.json"]);
    assert!(all.contains("the log has no checkpoint of 250 records") && all.contains("100, 200, 300"), "{all}");
    assert!(all.contains(evidence), "{all}");
    fs::write(other.join("checkpoints.log"), b"").unwrap();
    let all = log.fails(&["audit", "consistency", "other", "--kept", "kept.json", "--out", "c.json"]);
    assert!(all.contains("the log has no checkpoint at all") && all.contains(evidence), "{all}");

    // A --to before the kept checkpoint is a mistake in the command, not evidence.
    let all = log.fails(&["audit", "consistency", "audit", "--kept", "kept.json", "--to", "200", "--out", "c.json"]);
    assert!(all.contains("--to 200 is before the kept checkpoint of 250 records") && !all.contains(evidence), "{all}");
    assert!(!log.path("c.json").exists());
    log.ok(&["audit", "consistency", "audit", "--kept", "kept.json", "--out", "c.json"]);
}

#[test]
fn an_exchange_id_two_callers_chose_is_proved_only_once_told_whose() {
    let log = Log::new(60);
    // Record 71 carries record 10's id: another client chose the same X-Road-Id.
    log.write(&log.dir(), 60..80, &|i| ExchangeRecord {
        exchange_id: exchange_id(if i == 71 { 10 } else { i }),
        ..record(i)
    });
    let (first, second) = (CLIENTS[1], CLIENTS[2]);
    let id = exchange_id(10);
    let all = log.fails(&["audit", "proof", "audit", &id]);
    assert!(all.contains("is carried by 2 records"), "{all}");
    assert!(
        all.contains(&format!("record 10, client {first}")) && all.contains(&format!("record 71, client {second}"))
    );
    assert!(all.contains("--client"), "{all}");
    for (args, leaf) in [(vec!["--client", second], 71), (vec!["--client", first], 10), (vec!["--record", "71"], 71)] {
        let mut cmd = vec!["audit", "proof", "audit", &id];
        cmd.extend(args);
        let proof: serde_json::Value = serde_json::from_str(&log.ok(&cmd)).unwrap();
        assert_eq!(proof["leaf_index"], leaf, "{cmd:?}");
    }
    let all = log.fails(&["audit", "proof", "audit", &id, "--client", CLIENTS[0]]);
    assert!(all.contains("no record with exchange id"), "{all}");
    // It says which records do carry the id.
    assert!(
        all.contains(&format!(
            "records carrying that id that the proof does not take: 10 (client {first}), 71 (client {second})"
        )),
        "{all}"
    );
    // An id carried once needs no such help.
    log.ok(&["audit", "proof", "audit", &exchange_id(11)]);
}

/// The tools often run as root on a folder the gateway's account can write: a symbolic link
/// planted there must not point them at another file of the host, which an export would ship
/// (the gateway's key as a signer's certificate), nor make export write through it.
#[test]
fn links_planted_in_the_audit_folder_are_refused_not_followed() {
    let log = Log::new(100);
    let planted = log.dir().join("signer-planted.crt");
    std::os::unix::fs::symlink(log.path("gw1.key"), &planted).unwrap();
    let all = log.fails(&["audit", "export", "audit", "--to", "x.tar", "--key", "gw1.key"]);
    assert!(all.contains("signer-planted.crt is a symbolic link or not a plain file"), "{all}");
    assert!(!log.path("x.tar").exists());
    fs::remove_file(&planted).unwrap();
    // A FIFO in its place: refused too, not waited on for ever.
    assert!(Command::new("mkfifo").arg(&planted).status().unwrap().success());
    let all = log.fails(&["audit", "export", "audit", "--to", "x.tar", "--key", "gw1.key"]);
    assert!(all.contains("signer-planted.crt is a symbolic link or not a plain file"), "{all}");
    fs::remove_file(&planted).unwrap();

    // A segment replaced by a link: verify says so rather than reading where it points.
    let segment = fs::read_dir(log.dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("a segment");
    let moved = log.path("moved.seg");
    fs::rename(&segment, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &segment).unwrap();
    let all = log.fails(&["audit", "verify", "audit"]);
    assert!(all.contains("is a symbolic link or not a plain file"), "{all}");
    fs::remove_file(&segment).unwrap();
    fs::rename(&moved, &segment).unwrap();

    // exports.log as a link: the archive is made, but the export is not recorded through it,
    // which the operator is told.
    let target = log.path("elsewhere.log");
    std::os::unix::fs::symlink(&target, log.dir().join("exports.log")).unwrap();
    let out = log.splpd(&["audit", "export", "audit", "--to", "y.tar", "--key", "gw1.key"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("the export could not be recorded in"), "{}", text(&out.stderr));
    assert!(!target.exists(), "export wrote through the link");
}
