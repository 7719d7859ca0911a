//! `splpd config apply --admin` and `undo --admin` against a real `splpd serve` on the demo's
//! configuration: an operator changes the running gateway's file through its admin listener with
//! an admin certificate, the change is shown, confirmed, put in force and undone, mistakes are
//! reported in the operator's own file, and the audit log names the operator for each change.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use splpd_certs::load::sha256;
use splpd_gateway::audit::segment::SegmentReader;
use splpd_gateway::config::history::{ChangeNote, History, version_of};

const BUDI: &str = "ID/PEMDA/1602/budi";

struct Served {
    dir: PathBuf,
    config: PathBuf,
    ca: String,
    admin: String,
    child: Child,
}

/// A test that fails before `stop` leaves no gateway running.
impl Drop for Served {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Served {
    fn start(tmp: &Path) -> Self {
        let demo = splpd(tmp, &["demo", "--dir", "sandbox", "--no-serve"], "");
        assert!(demo.status.success(), "{}", String::from_utf8_lossy(&demo.stderr));
        let dir = tmp.join("sandbox");
        let manifest: Value = serde_json::from_slice(&std::fs::read(dir.join("demo.json")).unwrap()).unwrap();
        let config = PathBuf::from(manifest["config"].as_str().unwrap());
        let ca = manifest["ca_file"].as_str().unwrap().to_owned();
        let admin = manifest["admin"]["url"].as_str().unwrap().to_owned();
        // The demo's own log is in the same folder; serve gets a fresh one.
        let _ = std::fs::remove_dir_all(dir.join("audit"));
        Self::serve(dir, config, ca, admin)
    }

    /// `splpd serve` on the demo's configuration in `dir`, its log in `dir/audit`.
    fn serve(dir: PathBuf, config: PathBuf, ca: String, admin: String) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_splpd"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let served = Self { dir, config, ca, admin, child };
        served.wait_listening();
        served
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            // Any answer (even a refusal without a certificate) means it is up; curl exits with
            // 7 while nothing listens.
            let out = Command::new("curl").args(["-s", "-o", "/dev/null", "--cacert", &self.ca, &self.admin]).status();
            if out.unwrap().code() != Some(7) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("splpd serve's admin listener did not start at {}", self.admin);
    }

    /// `splpd config VERB --admin ... ARGS` as `who` (a certificate in the demo's PKI folder).
    fn config(&self, verb: &str, who: &str, args: &[&str], stdin: &str) -> Output {
        let pki = self.dir.join("pki");
        let (cert, key) = (pki.join(format!("{who}.crt")), pki.join(format!("{who}.key")));
        let mut all = vec!["config", verb, "--admin", &self.admin, "--ca", &self.ca];
        let (cert, key) = (cert.to_str().unwrap().to_owned(), key.to_str().unwrap().to_owned());
        all.extend(["--cert", &cert, "--key", &key]);
        all.extend(args);
        splpd(&self.dir, &all, stdin)
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.config).unwrap()
    }

    /// Stops the gateway with SIGTERM and returns the records of its audit log.
    fn stop(mut self) -> Vec<splpd_gateway::audit::ExchangeRecord> {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "splpd serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut reader = SegmentReader::open(&self.dir.join("audit")).unwrap();
        let mut records = Vec::new();
        while let Some((_, bytes)) = reader.next_record().unwrap() {
            records.push(prost::Message::decode(bytes).unwrap());
        }
        records
    }
}

fn splpd(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_splpd"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn an_operator_changes_and_undoes_the_running_gateways_configuration_through_its_admin_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let served = Served::start(tmp.path());
    let original = served.text();
    let new = original.replacen("per_second = 200", "per_second = 250", 1);
    assert_ne!(new, original, "the demo's configuration has RSUD's quota of 200 a second");
    // And one key that takes effect only at a restart, which the operator is told of once.
    let new = new.replacen("segment_size = \"64 MiB\"", "segment_size = \"32 MiB\"", 1);
    assert!(new.contains("segment_size = \"32 MiB\""), "{original}");
    std::fs::write(served.dir.join("new.toml"), &new).unwrap();

    // The diff is shown and the question asked; no answer is no.
    let declined = served.config("apply", "admin-budi", &["new.toml"], "");
    assert!(!declined.status.success());
    let out = text(&declined.stdout);
    assert!(out.contains("-per_second = 200\n+per_second = 250"), "{out}");
    assert!(out.contains("Nothing changed") && out.contains(&version_of(&original)), "{out}");
    assert_eq!(served.text(), original);

    // Confirmed, with the reason: in force, and the replaced version kept.
    let applied = served.config("apply", "admin-budi", &["new.toml", "--issue", "CHG-20 RSUD quota"], "y\n");
    assert!(applied.status.success(), "{}{}", text(&applied.stdout), text(&applied.stderr));
    let out = text(&applied.stdout);
    assert!(out.contains(&format!("now runs version {}", version_of(&new))), "{out}");
    assert!(out.contains("splpd-history") && out.contains("To go back: splpd config undo --admin"), "{out}");
    assert_eq!(served.text(), new);
    let err = text(&applied.stderr);
    assert_eq!(err.matches("[audit] segment_size take effect only when splpd is restarted").count(), 1, "{err}");

    // The gateway's history, read as an operator: the original, kept by the change.
    let listed = served.config("history", "admin-budi", &[], "");
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let out = text(&listed.stdout);
    assert!(out.contains(&version_of(&original)) && out.contains("splpd-history"), "{out}");

    // A mistake is reported in the operator's own file, and changes nothing.
    std::fs::write(served.dir.join("broken.toml"), "[gateway\n").unwrap();
    let broken = served.config("apply", "admin-budi", &["broken.toml", "--yes"], "");
    assert!(!broken.status.success());
    let err = text(&broken.stderr);
    assert!(err.contains("broken.toml:1:") && err.contains("unchanged"), "{err}");
    assert_eq!(served.text(), new);

    // An edit by hand that a reload refuses: undo is refused before it asks, since it would drop
    // the version in force too.
    let hand = format!("{new}\n[gateway\n");
    std::fs::write(&served.config, &hand).unwrap();
    let refused = served.config("undo", "admin-budi", &["--yes"], "");
    assert!(!refused.status.success());
    let err = text(&refused.stderr);
    assert!(
        err.contains(&format!("runs version {}", version_of(&new)))
            && err.contains(&format!("holds version {}", version_of(&hand))),
        "{err}"
    );
    assert_eq!(served.text(), hand);
    std::fs::write(&served.config, &new).unwrap();

    // An agency's certificate is not an operator's.
    let refused = served.config("undo", "dinkes", &["--yes"], "");
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("403") && text(&refused.stderr).contains("admin certificates only"));

    // Undo: the diff back, then the original in force again.
    let undone = served.config("undo", "admin-budi", &["--yes", "--issue", "CHG-20 back"], "");
    assert!(undone.status.success(), "{}", text(&undone.stderr));
    assert!(text(&undone.stdout).contains("-per_second = 250\n+per_second = 200"), "{}", text(&undone.stdout));
    assert_eq!(served.text(), original);

    // Each change in the audit log, under Budi's name, with the reason and the text's hash; and
    // only once: the file watcher, past its half second of quiet, finds each in force already.
    std::thread::sleep(Duration::from_millis(1500));
    let records = served.stop();
    let changes: Vec<_> = records.iter().filter(|r| r.method == "RELOAD").collect();
    assert_eq!(changes.len(), 2, "{records:#?}");
    let sha = |t: &str| splpd_certs::load::sha256(t.as_bytes()).to_vec();
    assert_eq!((changes[0].client.as_str(), changes[0].issue.as_str()), (BUDI, "CHG-20 RSUD quota"));
    assert_eq!(changes[0].request_body_sha256, sha(&new));
    assert_eq!((changes[1].client.as_str(), changes[1].issue.as_str()), (BUDI, "CHG-20 back"));
    assert_eq!(changes[1].request_body_sha256, sha(&original));
}

impl Served {
    /// The admin dashboard, in English, as Budi sees it.
    fn dashboard(&self) -> String {
        let pki = self.dir.join("pki");
        let (cert, key) = (pki.join("admin-budi.crt"), pki.join("admin-budi.key"));
        let out = Command::new("curl")
            .args(["-s", "--cacert", &self.ca, "--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()])
            .arg(format!("{}/?lang=en", self.admin.trim_end_matches('/')))
            .output()
            .unwrap();
        text(&out.stdout)
    }

    /// Writes `broken` over the file by hand, as an edit with a mistake, and waits until the
    /// gateway has refused it.
    fn edit_refused(&self, broken: &str) {
        assert_ne!(broken, self.text());
        std::fs::write(&self.config, broken).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.dashboard().contains(&format!("{} ", version_of(broken))) {
            assert!(Instant::now() < deadline, "the broken edit was not refused:\n{}", self.dashboard());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the dashboard shows `version` as the last change, made by `who`, and returns
    /// the page.
    fn wait_for_change(&self, version: &str, who: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let page = self.dashboard();
            let last = page.split("Last change</th><td>").nth(1).and_then(|rest| rest.split("</td>").next());
            if last.is_some_and(|last| last.starts_with(&format!("{version} ")) && last.contains(who)) {
                return page;
            }
            assert!(Instant::now() < deadline, "the gateway did not put version {version} in force:\n{page}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn a_change_made_on_the_host_is_recorded_under_the_host_account_and_a_hand_edit_is_not() {
    use std::os::unix::fs::MetadataExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let served = Served::start(tmp.path());
    let original = served.text();
    let new = original.replacen("per_second = 200", "per_second = 300", 1);
    assert_ne!(new, original);
    std::fs::write(served.dir.join("new.toml"), &new).unwrap();
    let config = served.config.to_str().unwrap().to_owned();

    // `apply --config` on the host, with a reason: the reload that follows names this account.
    let applied =
        splpd(&served.dir, &["config", "apply", "--config", &config, "new.toml", "--yes", "--issue", "CHG-21"], "");
    assert!(applied.status.success(), "{}{}", text(&applied.stdout), text(&applied.stderr));
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let account = format!("uid {uid}");
    assert!(text(&applied.stdout).contains(&account), "{}", text(&applied.stdout));
    let page = served.wait_for_change(&version_of(&new), "on the host by");
    assert!(page.contains(&account) && page.contains("CHG-21"), "{page}");
    // The note was taken with the change, and is not left for a later one.
    let history = History::of(&served.config);
    assert_eq!(history.note_for(&sha256(new.as_bytes())), None);

    // A note the gateway could not remove (a history folder it may not write) names who wrote
    // the text, not who reloaded it: a SIGHUP of the same text is nobody's change.
    history.leave_note(&ChangeNote::of(&original, &new, "CHG-21")).unwrap();
    assert!(Command::new("kill").args(["-HUP", &served.child.id().to_string()]).status().unwrap().success());
    let page = served.wait_for_change(&version_of(&new), "the file was reloaded");
    assert!(!page.contains("CHG-21"), "{page}");

    // A hand edit afterwards is a reload by nobody known, whatever note of another text is there.
    history.leave_note(&ChangeNote::of(&new, "[gateway]\n", "CHG-99")).unwrap();
    let edited = format!("{new}# edited by hand\n");
    std::fs::write(&served.config, &edited).unwrap();
    let page = served.wait_for_change(&version_of(&edited), "the file was reloaded");
    assert!(!page.contains("CHG-"), "{page}");
    assert!(history.note_for(&sha256(b"[gateway]\n")).is_some(), "another text's note stays for its own reload");

    let served_dir = served.dir.clone();
    let records = served.stop();
    let changes: Vec<_> = records.iter().filter(|r| r.method == "RELOAD").collect();
    assert_eq!(changes.len(), 3, "{records:#?}");
    assert!(changes[0].host_user.contains(&account), "{:?}", changes[0]);
    assert_eq!((changes[0].client.as_str(), changes[0].issue.as_str()), ("", "CHG-21"));
    assert_eq!(changes[0].request_body_sha256, sha256(new.as_bytes()).to_vec());
    for later in &changes[1..] {
        assert_eq!((later.host_user.as_str(), later.issue.as_str()), ("", ""), "{later:?}");
    }
    // `audit query` shows the account where there is one.
    let query = splpd(&served_dir, &["audit", "query", "audit"], "");
    assert!(query.status.success(), "{}", text(&query.stderr));
    let lines: Vec<Value> = text(&query.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let reloads: Vec<&Value> = lines.iter().filter(|l| l["method"] == "RELOAD").collect();
    assert_eq!(reloads.len(), 3, "{lines:#?}");
    assert!(reloads[0]["host_user"].as_str().unwrap().contains(&account), "{:#?}", reloads[0]);
    assert!(reloads[1].get("host_user").is_none(), "{:#?}", reloads[1]);
    // An auditor's question, "what changed, and who changed it": the table names the account.
    let table = splpd(&served_dir, &["audit", "query", "audit", "--method", "RELOAD", "--format", "table"], "");
    assert!(table.status.success(), "{}", text(&table.stderr));
    let rows: Vec<String> = text(&table.stdout).lines().skip(1).map(str::to_owned).collect();
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert!(rows[0].contains("host: ") && rows[0].contains(&account) && rows[0].contains("RELOAD"), "{rows:#?}");
    assert!(rows[1..].iter().all(|r| !r.contains("host: ")), "{rows:#?}");
    // And finds the changes of an account: the one the test runs as, by its uid.
    let by_account = splpd(&served_dir, &["audit", "query", "audit", "--host-user", &account], "");
    assert!(by_account.status.success(), "{}", text(&by_account.stderr));
    let found: Vec<Value> = text(&by_account.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!((found[0]["method"].as_str(), found[0]["issue"].as_str()), (Some("RELOAD"), Some("CHG-21")));
    let starts = splpd(&served_dir, &["audit", "query", "audit", "--method", "START"], "");
    assert_eq!(text(&starts.stdout).lines().count(), 1, "{}", text(&starts.stdout));
}

#[test]
fn a_change_on_the_host_that_replaces_a_refused_hand_edit_is_recorded_under_the_host_account() {
    use std::os::unix::fs::MetadataExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let served = Served::start(tmp.path());
    let original = served.text();
    // A hand edit with a mistake: refused, so the original stays in force.
    served.edit_refused(&original.replacen("per_second = 200", "per_secnd = 300", 1));
    // The fix, made with `apply --config`: it replaces the refused text, not the one in force,
    // and is the host account's change all the same.
    let fixed = original.replacen("per_second = 200", "per_second = 300", 1);
    std::fs::write(served.dir.join("fixed.toml"), &fixed).unwrap();
    let config = served.config.to_str().unwrap().to_owned();
    let applied =
        splpd(&served.dir, &["config", "apply", "--config", &config, "fixed.toml", "--yes", "--issue", "CHG-22"], "");
    assert!(applied.status.success(), "{}{}", text(&applied.stdout), text(&applied.stderr));
    let account = format!("uid {}", std::fs::metadata("/proc/self").unwrap().uid());
    let page = served.wait_for_change(&version_of(&fixed), "on the host by");
    assert!(page.contains(&account) && page.contains("CHG-22"), "{page}");
    let records = served.stop();
    let changes: Vec<_> = records.iter().filter(|r| r.method == "RELOAD").collect();
    assert_eq!(changes.len(), 1, "{records:#?}");
    assert!(changes[0].host_user.contains(&account), "{:?}", changes[0]);
    assert_eq!(changes[0].issue, "CHG-22");
    assert_eq!(changes[0].request_body_sha256, sha256(fixed.as_bytes()).to_vec());
}

/// The file holds an edit a reload refused; the operator puts the text in force back with
/// `config apply --admin`: the configuration in force does not change, but the file must, or
/// the next start reads the refused edit.
#[test]
fn applying_the_version_in_force_over_a_refused_edit_puts_the_file_back() {
    let tmp = tempfile::tempdir().unwrap();
    let served = Served::start(tmp.path());
    let original = served.text();
    served.edit_refused(&original.replacen("per_second = 200", "per_secnd = 200", 1));
    std::fs::write(served.dir.join("running.toml"), &original).unwrap();
    let put_back = served.config("apply", "admin-budi", &["running.toml", "--yes", "--issue", "CHG-22 typo"], "");
    let out = text(&put_back.stdout);
    assert!(put_back.status.success(), "{out}{}", text(&put_back.stderr));
    assert!(!out.contains("nothing to do"), "{out}");
    assert!(out.contains("-per_secnd = 200") && out.contains("+per_second = 200"), "the diff from the file: {out}");
    assert!(out.contains("puts the file back to the version in force"), "{out}");
    assert_eq!(served.text(), original);
    let records = served.stop();
    let changes: Vec<_> = records.iter().filter(|r| r.method == "RELOAD").collect();
    assert_eq!(changes.len(), 1, "{records:#?}");
    assert_eq!((changes[0].client.as_str(), changes[0].issue.as_str()), (BUDI, "CHG-22 typo"));
}
