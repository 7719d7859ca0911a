//! Hot reload (design §6): on SIGHUP, or when the configuration file or a certificate, key, CA or
//! CRL file it names changes, the configuration is read, validated and compiled again, then put
//! in force whole. A configuration that fails is refused, its errors logged, and the running one
//! kept. Exchanges in progress finish on the snapshot they started with; connections already
//! open take the new one on their next request ([`LiveConnection`]).
//!
//! Operators can also change the file through the admin listener (`change`): the new text is
//! checked, written and put in force at once, and its audit record names the operator.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, watch};

use arc_swap::ArcSwap;
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::audit::{AuditMode, ExchangeRecord, RecordBuilder};
use crate::config::history::{ChangeNote, History};
use crate::config::{self, Config, ConfigError};
use crate::exchange::{Connection, Gateway};
use crate::identify::{self, ConnectionAuth, IdentifyError};
use crate::runtime::{ListenerRuntime, RuntimeError, Snapshot};
use crate::server::stopped;

mod change;
pub use crate::config::history::version_of;
pub use change::{ChangeError, Changed, ChangedBy, Checked};

/// Quiet time after the last file change before reloading: editors and `cp` write a file in
/// several steps, and a certificate and its key are usually replaced together.
const DEBOUNCE: Duration = Duration::from_millis(500);

/// Why a new configuration was refused. The running one stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read, or has mistakes (each with its `file:line:column`).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Certificates, keys or CRLs it names could not be loaded.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// It changes the listeners, which are bound once at start.
    #[error(
        "{0}; listeners are bound at start and cannot change while splpd runs: put the file with the new listeners \
         in place by hand and restart splpd (a reload of such a file is refused and the configuration in force \
         stays; `splpd config apply` and the admin API do not write it)"
    )]
    Listeners(String),
    /// A CRL it names is older than the one of the same CA in force.
    #[error("{0}")]
    OlderCrl(String),
    /// It puts in place a gateway certificate that has already expired.
    #[error("[gateway] cert: a new certificate put in place: {0}")]
    ExpiredGatewayCert(String),
    /// The compiling task failed.
    #[error("the reload task failed: {0}")]
    Task(String),
    /// The audit log could not take the record of the change, so the change was not made.
    #[error("{0}; the change was not made, since every configuration put in force is recorded first")]
    Unlogged(String),
}

/// What a successful reload changed that it could not apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// `[audit]` keys that changed but take effect only at the next start (the log is open).
    pub audit_needs_restart: Vec<String>,
    /// `[telemetry]` changed, which takes effect only at the next start (the exporter runs).
    pub telemetry_needs_restart: bool,
    /// The audit log's signing key (the gateway's, unless `[audit] signing_key` names another)
    /// is another than at start: TLS uses a new gateway key at once, while the audit log signs
    /// its checkpoints with the one it opened with until the next start.
    pub signing_key_changed: bool,
    /// The SHA-256 of the key file now named, when it is another than at start: the warning is
    /// given once per new key, not at every reload while the condition lasts.
    pub signing_key_now: Option<[u8; 32]>,
}

impl ReloadReport {
    /// What waits for a restart, one sentence each: for the log at each reload, and for
    /// `/readyz`'s notes and the dashboard while it lasts.
    pub fn waiting_for_restart(&self) -> Vec<String> {
        let mut waiting: Vec<String> = self
            .audit_needs_restart
            .iter()
            .map(|key| {
                format!(
                    "[audit] {key} changed: the audit log keeps its settings from the start until splpd is restarted \
                     ([audit] mode and a service's audit apply at once)"
                )
            })
            .collect();
        if self.telemetry_needs_restart {
            waiting.push(
                "[telemetry] changed: the exporter keeps its settings from the start until splpd is restarted"
                    .to_owned(),
            );
        }
        if self.signing_key_changed {
            waiting.push(
                "the key that signs the audit log's checkpoints changed (the gateway's key, or [audit] signing_key): \
                 the audit log signs with the key it was opened with until splpd is restarted, while TLS takes a new \
                 gateway key at once; restart it soon, and at once if the old key may have been compromised"
                    .to_owned(),
            );
        }
        waiting
    }
}

/// Reloads one gateway's configuration from its file.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    gateway: Arc<Gateway>,
    /// The listeners as bound at start, the admin listener under the name `[admin]`.
    listeners: Vec<(String, SocketAddr)>,
    /// `[audit]` as the log was opened at start.
    audit: config::Audit,
    /// `[telemetry]` as the exporter was started.
    telemetry: Option<config::Telemetry>,
    /// Taken by [`Reloader::run`].
    hangup: Mutex<Option<Hangup>>,
    /// Reloads and changes run one at a time.
    changing: tokio::sync::Mutex<()>,
    /// The configuration text in force, when known: its SHA-256 tells a file event for the text
    /// already in force (a change made through the admin listener), which needs no reload.
    in_force: Mutex<Option<InForce>>,
    /// The latest configuration put in force since start, for the dashboard.
    last_change: Mutex<Option<LastChange>>,
    /// Reloads refused since start, for `/metrics`.
    refused: std::sync::atomic::AtomicU64,
    /// The latest reload refused, until a configuration goes into force after it.
    last_refused: Mutex<Option<RefusedReload>>,
    /// The SHA-256 of the key file the audit log was opened with (see [`signing_key_digest`]).
    signing_key: Option<[u8; 32]>,
    /// The new key last warned of, so that it is warned of once.
    key_warned: Mutex<Option<[u8; 32]>>,
    /// What the configuration in force changed that waits for a restart.
    waiting: Mutex<Vec<String>>,
    /// A change through the admin listener put a configuration in force: [`Reloader::run`]
    /// watches the files it names.
    changed_elsewhere: tokio::sync::Notify,
}

/// A configuration put in force since start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastChange {
    /// Its version.
    pub version: String,
    /// When.
    pub at: time::OffsetDateTime,
    /// The operator, for a change made through the admin listener.
    pub by: Option<splpd_certs::id::AdminId>,
    /// The host account, for a change made on the host with `splpd config apply --config`.
    pub host_user: Option<String>,
    /// The reason given.
    pub issue: String,
}

/// A reload that was refused, for the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedReload {
    /// The version of the text refused ("unreadable" when the file could not be read).
    pub version: String,
    /// When.
    pub at: time::OffsetDateTime,
    /// Why, as the log says it.
    pub why: String,
}

impl RefusedReload {
    /// Why, on one line: the configuration's diagnostics (a location, its hint below it) joined
    /// with ` | `, for a log line or a JSON field.
    pub fn why_on_one_line(&self) -> String {
        one_line(&self.why)
    }
}

fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ")
}

/// Who put a configuration in force, for its audit record and the dashboard.
#[derive(Debug, Clone, Copy)]
enum Author<'a> {
    /// Not known: the file changed, or a SIGHUP.
    Unknown,
    /// An operator, through the admin listener.
    Operator(&'a ChangedBy),
    /// An account on the host, with `splpd config apply` or `undo --config`.
    Host(&'a ChangeNote),
}

/// The configuration text in force, as the [`Reloader`] knows it.
#[derive(Debug, Clone)]
struct InForce {
    digest: [u8; 32],
    /// `None` when the text read at start was not UTF-8.
    text: Option<Arc<str>>,
}

impl Reloader {
    /// A reloader for `gateway`, serving the configuration read from `path`. From now on a
    /// SIGHUP no longer ends the process; [`Reloader::run`] turns it into a reload.
    pub fn new(path: &Path, gateway: Arc<Gateway>) -> Self {
        // The file the gateway was started with, read again: small, and read once.
        let text = std::fs::read(path).ok();
        Self::started_with(path, gateway, text.as_deref())
    }

    /// A reloader for `gateway`, started with the configuration `text` (when known) read from
    /// `path`: the text in force, against which the next reload tells whether it changed.
    pub fn started_with(path: &Path, gateway: Arc<Gateway>, text: Option<&[u8]>) -> Self {
        let snap = gateway.snapshot();
        let listeners = snap
            .listeners
            .iter()
            .map(|l| (l.name.clone(), l.address))
            .chain(snap.admin.iter().map(|a| (ADMIN.to_owned(), a.address)))
            .collect();
        let audit = snap.config.audit.clone();
        let telemetry = snap.config.telemetry.clone();
        let in_force = text.map(|t| InForce {
            digest: splpd_certs::load::sha256(t),
            text: std::str::from_utf8(t).ok().map(Arc::from),
        });
        let signing_key = signing_key_digest(&snap.config);
        Self {
            path: path.to_owned(),
            gateway,
            listeners,
            audit,
            telemetry,
            hangup: Mutex::new(Some(hangup_signal())),
            changing: tokio::sync::Mutex::new(()),
            in_force: Mutex::new(in_force),
            last_change: Mutex::new(None),
            refused: std::sync::atomic::AtomicU64::new(0),
            last_refused: Mutex::new(None),
            key_warned: Mutex::new(None),
            waiting: Mutex::default(),
            signing_key,
            changed_elsewhere: tokio::sync::Notify::new(),
        }
    }

    /// Reloads refused since start (the file, or a change, that did not go into force).
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The latest reload refused since start, unless a configuration went into force after it.
    pub fn last_refused(&self) -> Option<RefusedReload> {
        lock(&self.last_refused).clone()
    }

    /// The version of the configuration text in force, when known.
    pub fn version_in_force(&self) -> Option<String> {
        self.digest_in_force().as_ref().map(config::history::version_of_digest)
    }

    /// The SHA-256 of the configuration text in force, when known.
    fn digest_in_force(&self) -> Option<[u8; 32]> {
        lock(&self.in_force).as_ref().map(|f| f.digest)
    }

    /// The latest configuration put in force since start.
    pub fn last_change(&self) -> Option<LastChange> {
        lock(&self.last_change).clone()
    }

    /// The text in force and its version, when known.
    pub fn text_in_force(&self) -> Option<(Arc<str>, String)> {
        let in_force = lock(&self.in_force).clone()?;
        Some((in_force.text?, config::history::version_of_digest(&in_force.digest)))
    }

    /// Notes `text`, whose SHA-256 is `digest`, as in force, put there by `by`.
    /// What the configuration in force changed that waits for a restart (see
    /// [`ReloadReport::waiting_for_restart`]); empty when nothing does.
    pub fn waiting_for_restart(&self) -> Vec<String> {
        lock(&self.waiting).clone()
    }

    fn now_in_force(&self, digest: [u8; 32], text: Arc<str>, by: Author<'_>, report: &ReloadReport) {
        // Against the start, so that a change put back no longer waits.
        *lock(&self.waiting) = report.waiting_for_restart();
        // Done with, whoever put the text in force; first, so that the dashboard's last change
        // is shown only once it is gone.
        History::of(&self.path).clear_note_for(&digest);
        *lock(&self.in_force) = Some(InForce { digest, text: Some(text) });
        *lock(&self.last_refused) = None;
        let (operator, host_user, issue) = match by {
            Author::Unknown => (None, None, String::new()),
            Author::Operator(b) => (Some(b.operator.clone()), None, b.issue.clone()),
            Author::Host(note) => (None, Some(note.host_user.clone()), note.issue.clone()),
        };
        *lock(&self.last_change) = Some(LastChange {
            version: config::history::version_of_digest(&digest),
            at: time::OffsetDateTime::now_utc(),
            by: operator,
            host_user,
            issue,
        });
    }

    /// The configuration file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads, checks and compiles the configuration again and puts it in force, or says why not
    /// and keeps the running one. Either way the outcome is logged.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let _one_at_a_time = self.changing.lock().await;
        self.reload_held().await
    }

    /// [`Reloader::reload`], with `changing` held by the caller.
    async fn reload_held(&self) -> Result<ReloadReport, ReloadError> {
        let (outcome, version) = self.try_reload().await;
        let version = version.as_deref().unwrap_or("unreadable");
        match &outcome {
            Ok(report) => {
                // The key's warning once per new key: the condition lasts until a restart, and a
                // warning at every reload would teach operators to pass over it (`/readyz` keeps
                // saying it).
                let newly = {
                    let mut warned = lock(&self.key_warned);
                    let before = std::mem::replace(&mut *warned, report.signing_key_now);
                    report.signing_key_now.is_some() && before != report.signing_key_now
                };
                let quiet = ReloadReport { signing_key_changed: report.signing_key_changed && newly, ..report.clone() };
                for waiting in quiet.waiting_for_restart() {
                    tracing::warn!(config = %self.path.display(), "{waiting}");
                }
                tracing::info!(config = %self.path.display(), %version, "configuration reloaded and in force");
            }
            Err(err) => {
                *lock(&self.last_refused) = Some(RefusedReload {
                    version: version.to_owned(),
                    at: time::OffsetDateTime::now_utc(),
                    why: err.to_string(),
                });
                self.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // One line, so that a journal keeps the reason in the same entry as the refusal.
                let why = one_line(&err.to_string());
                tracing::error!(
                    config = %self.path.display(),
                    "configuration reload refused (version {version}); the running configuration stays in force: {why}"
                );
            }
        }
        outcome
    }

    /// The outcome, and the version of the file read: the first 16 hex digits of its SHA-256,
    /// which the log shows so that an operator can tell which edit is in force.
    async fn try_reload(&self) -> (Result<ReloadReport, ReloadError>, Option<String>) {
        let path = self.path.clone();
        let check = self.checker();
        // Reading files and building TLS configurations is blocking work.
        let built = tokio::task::spawn_blocking(move || {
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(source) => return (Err(ConfigError::Read { path, source }.into()), None),
            };
            let version = version_of(&text);
            let digest = splpd_certs::load::sha256(text.as_bytes());
            // Who wrote this text, when it was a change made on the host.
            let note = History::of(&path).note_for(&digest);
            let built = check
                .build(&path, &path, &text)
                .map(|(snapshot, report)| (snapshot, report, (digest, Arc::<str>::from(text.as_str())), note));
            (built, Some(version))
        })
        .await;
        match built {
            Ok((Ok((snapshot, report, (digest, text), note)), version)) => {
                // The note's account made this change only if the text it replaced is the one in
                // force, or an edit whose reload was refused (never in force: the change then
                // replaced it whole, as a fix): not a SIGHUP or certificate reload of the same
                // text, nor the same text put back by hand after other edits.
                let replaced = self.digest_in_force().map(hex::encode);
                let refused = lock(&self.last_refused).as_ref().map(|r| r.version.clone());
                let by = note
                    .as_ref()
                    .filter(|n| {
                        replaced.as_deref() == Some(n.replaces.as_str())
                            || refused.as_deref().is_some_and(|v| n.replaces.starts_with(v))
                    })
                    .map_or(Author::Unknown, Author::Host);
                // Like every change, a new configuration is in the audit log before it is in force.
                let reloaded = loaded_anew(&self.gateway.snapshot(), &snapshot);
                let record =
                    configuration_record(&self.gateway, "RELOAD", &self.path, digest, text.len(), by, reloaded.clone());
                if let Err(e) = self.gateway.operations_log().append(record, AuditMode::Sync).await {
                    return (Err(ReloadError::Unlogged(e.to_string())), version);
                }
                self.gateway.replace(snapshot);
                for file in &reloaded {
                    tracing::info!(config = %self.path.display(), "loaded anew: {file}");
                }
                self.now_in_force(digest, text, by, &report);
                (Ok(report), version)
            }
            Ok((Err(e), version)) => (Err(e), version),
            Err(e) => (Err(ReloadError::Task(e.to_string())), None),
        }
    }

    /// What a new configuration is checked against: the listeners bound at start, and the
    /// `[audit]` and `[telemetry]` the running log and exporter were started with.
    fn checker(&self) -> Checker {
        Checker {
            listeners: self.listeners.clone(),
            audit: self.audit.clone(),
            telemetry: serde_json::to_value(&self.telemetry).ok(),
            signing_key: self.signing_key,
            crls: self.gateway.snapshot().trust.crl_status().to_vec(),
            gateway_cert: self.gateway.snapshot().gateway_cert.chain().first().map(|c| c.to_vec()).unwrap_or_default(),
        }
    }

    /// Whether the only file that changed is the configuration, and it holds the text in force.
    fn already_in_force(&self, changed: &std::collections::BTreeSet<PathBuf>) -> bool {
        let config = std::path::absolute(&self.path).unwrap_or_else(|_| self.path.clone());
        if changed.iter().any(|p| *p != config) {
            return false;
        }
        let Some(in_force) = self.digest_in_force() else { return false };
        std::fs::read(&self.path).is_ok_and(|text| splpd_certs::load::sha256(&text) == in_force)
    }

    /// The files whose change triggers a reload: the configuration itself and every file the
    /// running configuration names (certificates, keys, CAs, CRLs, OpenAPI documents, the
    /// national client secret), and those the file names now, if it
    /// holds a version that was refused: a fix of the CRL or key it complained about then brings
    /// it in, as a fix of the file itself does.
    pub fn watched_files(&self) -> HashSet<PathBuf> {
        let snap = self.gateway.snapshot();
        let mut files = vec![self.path.clone()];
        files.extend(config_files(&snap.config));
        let in_file = std::fs::read_to_string(&self.path).ok().and_then(|t| config::parse_shape(&self.path, &t));
        files.extend(in_file.iter().flat_map(config_files));
        files.into_iter().map(|p| std::path::absolute(&p).unwrap_or(p)).collect()
    }

    /// Reloads on SIGHUP and on changes of the watched files until `stop` turns true. Reloads
    /// run one at a time, in the returned future's task.
    ///
    /// The files are watched from the call on, not from the future's first poll; `early`, a
    /// watch started before the gateway loaded its files ([`FileWatch::before_start`]), takes
    /// over what it saw since, so that a CRL published while the gateway started is not missed.
    pub fn run(
        self: Arc<Self>,
        early: Option<FileWatch>,
        stop: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let hangup: Hangup = lock(&self.hangup).take().unwrap_or_default();
        let mut files = early.unwrap_or_else(|| FileWatch::start(&HashSet::new()));
        // What the configuration in force names, which is what the early watch was given too.
        files.watch(&self.watched_files());
        self.reload_until_stopped(hangup, files, stop)
    }

    async fn reload_until_stopped(
        self: Arc<Self>,
        mut hangup: Hangup,
        mut files: FileWatch,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let changed = tokio::select! {
                () = next_hangup(&mut hangup) => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    None
                }
                Some(first) = files.changes.recv() => {
                    // Wait for the writes to settle: reload once the files have been quiet a while.
                    let mut changed = std::collections::BTreeSet::from([first]);
                    while let Ok(Some(path)) = tokio::time::timeout(DEBOUNCE, files.changes.recv()).await {
                        changed.insert(path);
                    }
                    Some(changed)
                }
                // A change through the admin listener is in force: only the files to watch change.
                () = self.changed_elsewhere.notified() => {
                    files.watch(&self.watched_files());
                    continue;
                }
                () = stopped(&mut stop) => return,
            };
            let one_at_a_time = self.changing.lock().await;
            if let Some(changed) = changed {
                // Asked under the lock: a change through the admin listener has either not
                // written the file yet, or has put its text in force.
                if self.already_in_force(&changed) {
                    // Put back as it was: a refusal of an edit in between no longer stands (one
                    // of the version in force itself, for another file it names, still does).
                    let in_force = self.version_in_force();
                    let refused = {
                        let mut shown = lock(&self.last_refused);
                        match &*shown {
                            Some(r) if Some(&r.version) != in_force.as_ref() => shown.take(),
                            _ => None,
                        }
                    };
                    match refused {
                        Some(refused) => tracing::info!(
                            "the configuration file holds the version in force again; the refused version {} is \
                             gone, and nothing needs reloading",
                            refused.version
                        ),
                        None => tracing::debug!("the configuration file holds the version in force; nothing to reload"),
                    }
                    continue;
                }
                let changed: Vec<String> = changed.iter().map(|p| p.display().to_string()).collect();
                tracing::info!("file changed ({}): reloading the configuration", changed.join(", "));
            }
            let _ = self.reload_held().await;
            drop(one_at_a_time);
            // The configuration in force, or the one refused, may name other files.
            files.watch(&self.watched_files());
        }
    }
}

/// A watch on the files a configuration names: its callback sends the changed paths to
/// `changes`. Without a watcher (the system refused one), only SIGHUP reloads.
#[derive(Debug)]
pub struct FileWatch {
    changes: mpsc::Receiver<PathBuf>,
    watched: Arc<Mutex<HashSet<PathBuf>>>,
    watcher: Option<notify::RecommendedWatcher>,
    dirs: HashSet<PathBuf>,
}

impl FileWatch {
    fn start(files: &HashSet<PathBuf>) -> Self {
        let (tx, changes) = mpsc::channel::<PathBuf>(64);
        let watched = Arc::new(Mutex::new(HashSet::new()));
        let watcher = match file_watcher(Arc::clone(&watched), tx) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("cannot watch the configuration files ({e}); reload with SIGHUP instead");
                None
            }
        };
        let mut watch = Self { changes, watched, watcher, dirs: HashSet::new() };
        watch.watch(files);
        watch
    }

    /// Watches the files `config` (read from `path`) names, before the gateway loads them: a
    /// change made while it starts then reaches [`Reloader::run`].
    pub fn before_start(path: &Path, config: &Config) -> Self {
        let files = std::iter::once(path.to_owned()).chain(config_files(config));
        Self::start(&files.map(|p| std::path::absolute(&p).unwrap_or(p)).collect())
    }

    /// Watches `files` from now on (and their folders), in place of those before.
    fn watch(&mut self, files: &HashSet<PathBuf>) {
        // Not held while the folders are watched: the watcher's thread takes the lock in its
        // callback while `watch` waits for that thread.
        files.clone_into(&mut lock(&self.watched));
        if let Some(w) = &mut self.watcher {
            watch_dirs(w, files, &mut self.dirs);
        }
    }
}

/// What `new` loaded anew from the files the configuration names, compared with `old`: CRLs
/// published or dropped, the gateway's certificate renewed, trust anchors' CA certificates added
/// or removed. Said in the `RELOAD` record and the log, since a reload of the same text looks
/// like any other otherwise.
pub(crate) fn loaded_anew(old: &Snapshot, new: &Snapshot) -> Vec<String> {
    let mut said = Vec::new();
    let at = splpd_certs::inspect::rfc3339;
    // One CA's list, issue after issue: its file, and its signer, issuer and scope (a file may
    // hold several lists of one CA, each for a part of its certificates).
    let same = |a: &crate::tls::CrlStatus, b: &crate::tls::CrlStatus| {
        a.anchor == b.anchor && a.path == b.path && a.same_list(b)
    };
    for c in new.trust.crl_status() {
        let name = format!("CRL {} of trust anchor {:?}", c.path.display(), c.anchor);
        match old.trust.crl_status().iter().find(|o| same(o, c)) {
            None => said.push(format!("{name}: {} (new)", c.issue())),
            Some(o) if o.sha256 != c.sha256 => said.push(format!("{name}: {} (was {})", c.issue(), o.issue())),
            Some(_) => {}
        }
    }
    for o in old.trust.crl_status() {
        if !new.trust.crl_status().iter().any(|c| same(c, o)) {
            said.push(format!(
                "CRL {} of trust anchor {:?}: no longer loaded (was {})",
                o.path.display(),
                o.anchor,
                o.issue()
            ));
        }
    }
    let same_ca =
        |a: &crate::tls::CaStatus, b: &crate::tls::CaStatus| a.anchor == b.anchor && a.fingerprint == b.fingerprint;
    for c in new.trust.ca_status() {
        if !old.trust.ca_status().iter().any(|o| same_ca(o, c)) {
            said.push(format!(
                "CA {} of trust anchor {:?}: trusted now (valid until {})",
                c.subject,
                c.anchor,
                at(c.not_after)
            ));
        }
    }
    for o in old.trust.ca_status() {
        if !new.trust.ca_status().iter().any(|c| same_ca(c, o)) {
            said.push(format!("CA {} of trust anchor {:?}: no longer trusted", o.subject, o.anchor));
        }
    }
    let leaf = |g: &crate::tls::GatewayCert| g.chain().first().map(|der| splpd_certs::load::sha256(der));
    if leaf(&new.gateway_cert) != leaf(&old.gateway_cert) {
        said.push(format!(
            "the gateway's certificate {}: SHA-256 {}, valid until {} (was SHA-256 {}, valid until {})",
            new.config.gateway.cert.display(),
            leaf(&new.gateway_cert).map(hex::encode).unwrap_or_default(),
            at(new.gateway_cert.not_after()),
            leaf(&old.gateway_cert).map(hex::encode).unwrap_or_default(),
            at(old.gateway_cert.not_after())
        ));
    }
    said
}

/// The audit record of a configuration put in force (`action`: `START` or `RELOAD`): the file,
/// and the SHA-256 of its text, by which an auditor can tell which grants were in force when;
/// and who made the change, where known: the operator (through the admin listener) or the host
/// account (`splpd config apply --config`), with the reason they gave.
fn configuration_record(
    gateway: &Gateway,
    action: &str,
    path: &Path,
    digest: [u8; 32],
    len: usize,
    by: Author<'_>,
    reloaded: Vec<String>,
) -> ExchangeRecord {
    let mut record = RecordBuilder::received_now(&gateway.snapshot().gateway_id);
    record.set_reloaded(reloaded);
    record.set_exchange_id(uuid::Uuid::new_v4());
    // The file as an absolute path: `--config splpd.toml` would tell an auditor nothing about
    // which folder it was in. Kept as given when it cannot be resolved (it was just read, so rarely).
    let file = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    record.set_configuration(action, &file.display().to_string(), digest, u64::try_from(len).unwrap_or(u64::MAX));
    match by {
        Author::Unknown => {}
        Author::Operator(by) => {
            record.set_operator(&by.operator);
            record.set_client_cert_sha256(by.cert_sha256);
            record.set_client_address(by.address);
            record.set_connection_type(config::ConnectionType::Mtls);
            record.set_issue(&by.issue);
        }
        Author::Host(note) => {
            record.set_host_user(&note.host_user);
            record.set_issue(&note.issue);
        }
    }
    record.finish()
}

/// Writes to the audit log that the configuration in `path` was put in force at start, as soon as
/// the gateway serves (an exchange that arrives in the same instant may come just before it).
/// It names no one: what the text replaced, and so whose change it was, is not known here.
pub async fn record_start(gateway: &Gateway, path: &Path, text: &str) -> Result<(), String> {
    let mut record = configuration_record(
        gateway,
        "START",
        path,
        splpd_certs::load::sha256(text.as_bytes()),
        text.len(),
        Author::Unknown,
        Vec::new(),
    );
    if let Some(recovered) = gateway.operations_log().recovered_at_open() {
        record.recovered = recovered;
    }
    gateway.operations_log().append(record, AuditMode::Sync).await.map_err(|e| e.to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Checks and compiles a configuration against what cannot change while the gateway runs.
#[derive(Debug, Clone)]
struct Checker {
    listeners: Vec<(String, SocketAddr)>,
    audit: config::Audit,
    telemetry: Option<serde_json::Value>,
    /// The SHA-256 of the key file the audit log was opened with.
    signing_key: Option<[u8; 32]>,
    /// The CRLs in force: a configuration may not put an older one of the same CA in their place.
    crls: Vec<crate::tls::CrlStatus>,
    /// The gateway's certificate in force (end entity, DER): an expired one is taken on reload
    /// only if it is this one, which lapsed while the gateway ran.
    gateway_cert: Vec<u8>,
}

impl Checker {
    /// Parses `text` (its mistakes reported as in `name`, its relative file names taken from
    /// beside `path`), checks it and builds its snapshot. Blocking: it loads certificates.
    fn build(&self, name: &Path, path: &Path, text: &str) -> Result<(Snapshot, ReloadReport), ReloadError> {
        let base = config::history::folder_of(path);
        let config = config::parse_running(name, &base, text)?;
        check_listeners(&self.listeners, &config)?;
        let key_now = signing_key_digest(&config);
        let report = ReloadReport {
            audit_needs_restart: audit_changes(&self.audit, &config.audit),
            telemetry_needs_restart: serde_json::to_value(&config.telemetry).ok() != self.telemetry,
            signing_key_changed: self.signing_key.is_some() && key_now != self.signing_key,
            // An unreadable key file counts as another key (all zeros), to be warned of too.
            signing_key_now: (self.signing_key.is_some() && key_now != self.signing_key)
                .then(|| key_now.unwrap_or_default()),
        };
        let snapshot = Snapshot::build(config)?;
        if let Some(why) = crate::tls::crl_step_back(&snapshot.trust, &self.crls) {
            return Err(ReloadError::OlderCrl(why));
        }
        let now = time::OffsetDateTime::now_utc();
        if let Some(why) = snapshot.gateway_cert.expired_replacement(&self.gateway_cert, now) {
            return Err(ReloadError::ExpiredGatewayCert(why));
        }
        Ok((snapshot, report))
    }
}

/// The SHA-256 of the key file the audit log signs checkpoints with under `config`: `[audit]
/// signing_key`, or else the gateway's own key.
fn signing_key_digest(config: &Config) -> Option<[u8; 32]> {
    let path = config.audit.signing_key.as_ref().unwrap_or(&config.gateway.key);
    std::fs::read(path).ok().map(|key| splpd_certs::load::sha256(&key))
}

/// The admin listener's name in [`check_listeners`]' messages, bracketed as in the file.
const ADMIN: &str = "[admin]";

/// Refuses `new` when it adds, removes or moves a listener of `old`, the configuration running:
/// what a reload would refuse, for `splpd config apply` to say before the file is replaced.
pub fn check_listeners_kept(old: &Config, new: &Config) -> Result<(), ReloadError> {
    let admin = old.admin.as_ref().and_then(|a| Some((ADMIN.to_owned(), a.address.parse().ok()?)));
    let bound: Vec<(String, SocketAddr)> =
        old.listeners.iter().filter_map(|l| Some((l.name.clone(), l.address.parse().ok()?))).chain(admin).collect();
    check_listeners(&bound, new)
}

/// Refuses a configuration whose listeners differ from those bound at start.
fn check_listeners(bound: &[(String, SocketAddr)], config: &Config) -> Result<(), ReloadError> {
    let mut problems = Vec::new();
    let admin = config.admin.as_ref().map(|a| (ADMIN, a.address.as_str()));
    let configured: Vec<(&str, &str)> =
        config.listeners.iter().map(|l| (l.name.as_str(), l.address.as_str())).chain(admin).collect();
    for (name, addr) in bound {
        match configured.iter().find(|(n, _)| n == name) {
            None => problems.push(format!("listener {name:?} ({addr}) was removed")),
            Some((_, address)) => match address.parse::<SocketAddr>() {
                Ok(new) if new == *addr => {}
                _ => problems.push(format!("listener {name:?} moved from {addr} to {address}")),
            },
        }
    }
    for (name, address) in &configured {
        if !bound.iter().any(|(bound, _)| bound == name) {
            problems.push(format!("listener {name:?} ({address}) was added"));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(ReloadError::Listeners(problems.join("; "))) }
}

/// The `[audit]` keys that differ, other than `mode` and `max_stored_body`, which every
/// exchange reads from the snapshot it runs on.
fn audit_changes(old: &config::Audit, new: &config::Audit) -> Vec<String> {
    let (Ok(serde_json::Value::Object(old)), Ok(serde_json::Value::Object(new))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return Vec::new();
    };
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    // `mode` and `max_stored_body` are read from the snapshot, so a reload applies them at once.
    let at_once = ["mode", "max_stored_body"];
    keys.into_iter().filter(|k| !at_once.contains(&k.as_str()) && old.get(*k) != new.get(*k)).cloned().collect()
}

/// Every file the configuration names (not the audit log's folder, which the gateway writes).
fn config_files(config: &Config) -> Vec<PathBuf> {
    config.files().into_iter().filter(|(key, _)| *key != config::AUDIT_DIR).map(|(_, path)| path).collect()
}

fn file_watcher(
    watched: Arc<Mutex<HashSet<PathBuf>>>,
    tx: mpsc::Sender<PathBuf>,
) -> notify::Result<notify::RecommendedWatcher> {
    notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Reading a file (as a reload does) is not a change of it.
        let changed = match event.kind {
            EventKind::Create(_) | EventKind::Remove(_) => true,
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
            EventKind::Modify(_) => true,
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            _ => false,
        };
        if !changed {
            return;
        }
        let watched = lock(&watched);
        for path in event.paths.into_iter().filter(|p| watched.contains(p)) {
            // A full channel already holds pending changes enough to reload.
            let _ = tx.try_send(path);
        }
    })
}

/// Watches the folders of `files`: editors and `mv` replace a file by renaming over it, which a
/// watch on the file itself would lose.
fn watch_dirs(watcher: &mut notify::RecommendedWatcher, files: &HashSet<PathBuf>, dirs: &mut HashSet<PathBuf>) {
    for dir in files.iter().filter_map(|f| f.parent()) {
        if dirs.contains(dir) {
            continue;
        }
        match watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                dirs.insert(dir.to_owned());
            }
            Err(e) => tracing::warn!(dir = %dir.display(), "cannot watch for changes ({e}); reload with SIGHUP"),
        }
    }
}

/// A connection's view of the configuration: its listener's settings (opt-ins) and what its
/// client certificate proves. Established at the handshake; after each reload it is checked again
/// on the connection's next request, so that a certificate revoked by a new CRL (or an opt-in
/// withdrawn) stops working on connections already open, not only on new ones.
#[derive(Debug)]
pub struct LiveConnection {
    conn: ArcSwap<Connection>,
    /// The client's certificate chain, end-entity first, when it presented one.
    chain: Option<Vec<CertificateDer<'static>>>,
    /// The [`Gateway::generation`] `conn` was checked against.
    checked: AtomicU64,
}

impl LiveConnection {
    /// A connection established under the gateway's configuration `generation`.
    pub fn new(conn: Connection, chain: Option<Vec<CertificateDer<'static>>>, generation: u64) -> Self {
        Self { conn: ArcSwap::from_pointee(conn), chain, checked: AtomicU64::new(generation) }
    }

    /// The connection as the configuration now in force sees it.
    pub fn current(&self, gateway: &Gateway) -> Arc<Connection> {
        let generation = gateway.generation();
        if self.checked.load(Ordering::Acquire) != generation {
            self.refresh(gateway, generation);
        }
        self.conn.load_full()
    }

    fn refresh(&self, gateway: &Gateway, generation: u64) {
        let snap = gateway.snapshot();
        let old = self.conn.load_full();
        let listener = snap.listener(&old.listener.name).map_or_else(|| Arc::clone(&old.listener), Arc::clone);
        let auth = match &self.chain {
            Some(chain) => recheck(&listener, &snap, chain),
            None => old.auth.clone(),
        };
        if let (Ok(_), Err(e)) = (&old.auth, &auth) {
            tracing::info!(listener = %listener.name, remote = %old.remote, "{e}");
        }
        self.conn.store(Arc::new(Connection { listener, auth, remote: old.remote, cert_sha256: old.cert_sha256 }));
        self.checked.store(generation, Ordering::Release);
    }
}

/// Verifies a certificate chain again, now, against the listener's verifier and trust store of
/// the configuration in force.
fn recheck(
    listener: &ListenerRuntime,
    snap: &Snapshot,
    chain: &[CertificateDer<'static>],
) -> Result<ConnectionAuth, IdentifyError> {
    verify_again(listener.client_verifier.as_deref(), snap, chain).map(ConnectionAuth::Mtls)
}

/// Who a certificate chain accepted earlier is under the configuration `snap`: verified again
/// now by `verifier` (its CRLs as loaded now), then identified.
pub(crate) fn verify_again(
    verifier: Option<&dyn rustls::server::danger::ClientCertVerifier>,
    snap: &Snapshot,
    chain: &[CertificateDer<'static>],
) -> Result<identify::PeerIdentity, IdentifyError> {
    let (end_entity, intermediates) = chain.split_first().ok_or(IdentifyError::NoCertificate)?;
    if let Some(verifier) = verifier {
        verifier
            .verify_client_cert(end_entity, intermediates, UnixTime::now())
            .map_err(|e| IdentifyError::NoLongerValid { reason: e.to_string() })?;
    }
    identify::identify_peer(&snap.trust, chain)
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

/// The SIGHUP handler, installed at once so that a SIGHUP from now on reloads rather than ends
/// the process.
#[cfg(unix)]
fn hangup_signal() -> Hangup {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot handle SIGHUP ({e}); the configuration reloads on file changes only");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

#[cfg(unix)]
async fn next_hangup(hangup: &mut Hangup) {
    let Some(signal) = hangup else { return std::future::pending().await };
    if signal.recv().await.is_none() {
        std::future::pending::<()>().await;
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_changes_name_every_key_but_those_applied_at_once() {
        let old = config::Audit::default();
        let mut new = old.clone();
        new.mode = config::AuditMode::Async;
        new.max_stored_body = config::units::ByteSize::kib(8);
        assert!(audit_changes(&old, &new).is_empty());
        new.checkpoint_every = 5;
        new.dir = PathBuf::from("elsewhere");
        assert_eq!(audit_changes(&old, &new), vec!["checkpoint_every".to_owned(), "dir".to_owned()]);
    }
}
