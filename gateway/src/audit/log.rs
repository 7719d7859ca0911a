//! The audit log as `splpd serve` runs it (design §5): the segment files, an RFC 6962 Merkle tree
//! over their records, and checkpoints of that tree signed with the gateway's key, every N records
//! or T milliseconds, kept in `checkpoints.log` beside the segments with the signer's certificate.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prost::Message as _;
use splpd_certs::id::ServerId;

use super::checkpoint::{Checkpoint, CheckpointError, CheckpointSigner};
use super::merkle::{Hash, Tree};
use super::retention::{self, RetentionPolicy, base_tree};
use super::segment::{CommitHook, SegmentError, SegmentLog, SegmentOptions, WriterLock};
use super::ticker::Ticker;
use super::{AuditHealth, AuditMode, AuditSink, AuditTicket, ExchangeRecord, now_nanos};

/// The file of signed checkpoints in the audit directory.
pub const CHECKPOINTS_FILE: &str = "checkpoints.log";

/// Why the audit log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AuditLogError {
    /// The segments could not be opened (damage, permissions).
    #[error(transparent)]
    Segments(#[from] SegmentError),
    /// The signing key could not be loaded.
    #[error(transparent)]
    Signer(#[from] CheckpointError),
    /// The certificate given for the signing key is not its certificate.
    #[error(
        "{}: not the certificate of the key that signs the audit log's checkpoints (its public key differs), so \
         no checkpoint could be checked; give [audit] signing_cert the certificate issued for [audit] signing_key, or \
         leave both out to sign with the gateway's key",
        cert.display()
    )]
    SignerMismatch {
        /// The certificate.
        cert: PathBuf,
    },
    /// The checkpoint file or the signer's certificate could not be written or read.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: io::Error,
    },
}

/// What signs and where: the checkpoint half of the log.
struct Checkpointer {
    tree: Tree,
    signer: CheckpointSigner,
    gateway: ServerId,
    every: u64,
    interval: Duration,
    signed_size: u64,
    signed_at: Instant,
    /// Records durable on disk, as the writer last said.
    durable: u64,
    file: File,
    /// The time of the last checkpoint signed: none is signed earlier (see `checkpoint`).
    last_time: i64,
    /// Whether the clock is behind `last_time` and the operator was told.
    clock_told: bool,
}

impl Checkpointer {
    /// Signs the tree as it stands and appends the checkpoint, durably.
    fn checkpoint(&mut self) {
        let size = self.tree.size();
        // A clock that stepped back (a host started with a wrong time, an NTP correction) must
        // not sign a checkpoint earlier than the last one, which verify rightly takes for a
        // rewritten log: the last time is kept until the clock passes it, and the operator told.
        let now = now_nanos();
        let time = if now < self.last_time {
            if !self.clock_told {
                self.clock_told = true;
                tracing::warn!(
                    "this host's clock reads {}, before the audit log's last checkpoint ({}): checkpoints keep that \
                     time until the clock passes it, and exchanges are recorded at the clock's time; check the \
                     host's time (`timedatectl`, NTP)",
                    super::verify::time_text(now),
                    super::verify::time_text(self.last_time)
                );
            }
            self.last_time
        } else {
            self.clock_told = false;
            now
        };
        let result = self
            .signer
            .sign_tree(&self.gateway, &self.tree, time)
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|cp| append_frame(&mut self.file, &cp.encode_to_vec()));
        // Even a failed write may have left the checkpoint in the file (its sync failing after
        // the write): none after it may be earlier.
        self.last_time = time;
        match result {
            Ok(()) => {
                self.signed_size = size;
                self.signed_at = Instant::now();
            }
            // The records themselves are durable; a missing checkpoint only delays the proof that
            // they were not changed, so exchanges go on and the operator is told.
            Err(e) => tracing::error!("cannot write the audit checkpoint for {size} records: {e}"),
        }
    }

    fn due(&self, records: u64) -> bool {
        records == self.tree.size()
            && records > self.signed_size
            && (records - self.signed_size >= self.every || self.signed_at.elapsed() >= self.interval)
    }
}

/// The hook the segment writer calls; shared so that shutdown can sign a last checkpoint.
struct Hook(Arc<Mutex<Checkpointer>>);

impl CommitHook for Hook {
    fn appended(&mut self, _seq: u64, _payload: &[u8], leaf: &Hash) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).tree.push(*leaf);
    }

    fn durable(&mut self, records: u64) {
        let mut cp = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        cp.durable = records;
        if cp.due(records) {
            cp.checkpoint();
        }
    }
}

/// The segment log with its Merkle tree and signed checkpoints.
pub struct AuditLog {
    segments: SegmentLog,
    checkpointer: Arc<Mutex<Checkpointer>>,
    /// Stopped when the log is dropped.
    _retention: Option<Ticker>,
    /// The space of the log's filesystem, and the thread that measures it.
    space: Arc<super::space::SpaceGauge>,
    _space_watch: Ticker,
    /// Signs the checkpoint that records written before a quiet spell are still waiting for;
    /// stopped when the log is dropped.
    _quiet_checkpoints: Ticker,
    /// What the open did after an unclean stop ([`AuditSink::recovered_at_open`]).
    recovered: Option<String>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("segments", &self.segments).finish_non_exhaustive()
    }
}

/// How to open an [`AuditLog`].
#[derive(Debug, Clone)]
pub struct AuditLogOptions {
    /// The segment files' options, including the directory.
    pub segments: SegmentOptions,
    /// The gateway whose checkpoints these are.
    pub gateway: ServerId,
    /// The private key that signs checkpoints (PEM).
    pub signing_key: PathBuf,
    /// The certificate of that key, copied beside the log so that it can be verified offline.
    pub signing_cert: PathBuf,
    /// A checkpoint after this many records…
    pub checkpoint_every: u64,
    /// …or once this much time has passed since the last one, at the next commit.
    pub checkpoint_interval: Duration,
    /// Removing old segments that exports hold, and how often to look; `None` keeps everything.
    pub retention: Option<(RetentionPolicy, Duration)>,
}

/// How often retention looks for segments to remove.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

impl AuditLogOptions {
    /// The options a configuration asks for.
    pub fn from_config(config: &crate::config::Config) -> Self {
        let audit = &config.audit;
        Self {
            segments: SegmentOptions::from_config(audit),
            gateway: config.gateway.id.clone(),
            signing_key: audit.signing_key.clone().unwrap_or_else(|| config.gateway.key.clone()),
            // A key of its own comes with its own certificate (the validator asks for both).
            signing_cert: match (&audit.signing_key, &audit.signing_cert) {
                (Some(_), Some(cert)) => cert.clone(),
                _ => config.gateway.cert.clone(),
            },
            checkpoint_every: audit.checkpoint_every.max(1),
            checkpoint_interval: audit.checkpoint_interval.0,
            retention: {
                let policy = RetentionPolicy {
                    max_age: audit.retain_for.map(|s| s.0),
                    max_size: audit.retain_size.map(|b| b.bytes()),
                };
                policy.is_active().then_some((policy, RETENTION_INTERVAL))
            },
        }
    }
}

impl AuditLogOptions {
    /// Lets the writer sync at once whenever one of the runtime's workers is idle, rather than
    /// hold it for `commit_delay` (see [`crate::workers`]), and hand its answers to that runtime.
    /// Called inside the runtime, which it takes as the current one.
    pub fn with_workers(mut self, workers: &Arc<crate::workers::Workers>) -> Self {
        self.segments.workers = Some(Arc::clone(workers));
        self.segments.runtime = tokio::runtime::Handle::try_current().ok();
        self
    }
}

impl AuditLog {
    /// The segment writer's counters: batches, syncs, records.
    pub fn stats(&self) -> super::segment::SegmentStats {
        self.segments.stats()
    }

    /// Opens (or creates) the log: recovers the segments, rebuilds the tree from them, and keeps
    /// the signer's certificate beside them.
    pub fn open(options: &AuditLogOptions) -> Result<Self, AuditLogError> {
        let dir = &options.segments.dir;
        super::make_dir(dir)
            .map_err(|source| AuditLogError::Io { what: format!("creating {}", dir.display()), source })?;
        if let Some(warning) = std::fs::metadata(dir).ok().and_then(|m| open_to_others(dir, &m)) {
            tracing::warn!("{warning}");
        }
        // Before anything is written here: a second gateway given this folder by mistake must
        // leave the running one's log as it found it.
        let lock = WriterLock::take(dir)?;
        let signer = CheckpointSigner::load(&options.signing_key)?;
        let cert = splpd_certs::load::read_certificates(&options.signing_cert).map_err(|e| AuditLogError::Io {
            what: format!("reading the signer's certificate {}", options.signing_cert.display()),
            source: io::Error::other(e.to_string()),
        })?;
        let matches = cert.first().and_then(|der| super::verify::certificate_key_sha256(der).ok());
        if matches.as_ref() != Some(signer.key_sha256()) {
            return Err(AuditLogError::SignerMismatch { cert: options.signing_cert.clone() });
        }
        keep_signer_certificate(dir, &options.signing_cert, signer.key_sha256())?;
        let (file, signed_size, last_time) = open_checkpoints(&dir.join(CHECKPOINTS_FILE))?;
        // A log that retention trimmed goes on from the tree's frontier before its first record.
        let tree = base_tree(dir).map_err(|e| AuditLogError::Io {
            what: format!("reading the base of {}", dir.display()),
            source: io::Error::other(e),
        })?;
        let checkpointer = Arc::new(Mutex::new(Checkpointer {
            tree,
            signer,
            gateway: options.gateway.clone(),
            every: options.checkpoint_every,
            interval: options.checkpoint_interval,
            signed_size,
            signed_at: Instant::now(),
            durable: 0,
            file,
            last_time,
            clock_told: false,
        }));
        let segments = SegmentLog::open_locked_with_hook(&options.segments, lock, Hook(Arc::clone(&checkpointer)))?;
        let mut recovered = Vec::new();
        let torn = segments.recovered().torn_bytes;
        if torn > 0 {
            recovered.push(format!(
                "a torn tail of {torn} bytes, a record whose write the stop cut short, was cut off the last segment"
            ));
        }
        {
            // Records a crash left unsigned (recovered, and made durable, by the open above) are
            // signed now rather than after the next exchange: a log is provable from its start,
            // and `audit verify` right after a restart does not find records no checkpoint covers.
            let mut cp = checkpointer.lock().unwrap_or_else(PoisonError::into_inner);
            if cp.durable == cp.tree.size() && cp.tree.size() > cp.signed_size {
                // A gateway that stops signs its last records as it goes: these were left by a
                // crash, a kill or a power cut, which the operator should hear of, and the
                // auditor (the next START record says it).
                recovered.push(format!(
                    "records {}..{} had no signed checkpoint, and were signed at this start",
                    cp.signed_size,
                    cp.tree.size()
                ));
                cp.checkpoint();
            }
        }
        let recovered = (!recovered.is_empty()).then(|| recovered.join("; "));
        if let Some(recovered) = &recovered {
            tracing::warn!(
                "audit log: the gateway before this one did not stop cleanly: {recovered}; every whole record is kept"
            );
        }
        let retention = match options.retention {
            Some((policy, interval)) => {
                Some(retention::start_task(dir.clone(), policy, interval).map_err(|source| AuditLogError::Io {
                    what: "starting the audit retention thread".to_owned(),
                    source,
                })?)
            }
            None => None,
        };
        // A checkpoint is otherwise signed after a batch is durable, so the last records before
        // a quiet spell would wait for the next exchange: this signs them `interval` later.
        let quiet = Arc::clone(&checkpointer);
        let tick = (options.checkpoint_interval / 2).max(Duration::from_millis(10));
        let quiet_checkpoints = Ticker::start("splpd-audit-checkpoint", tick, move || {
            let mut cp = quiet.lock().unwrap_or_else(PoisonError::into_inner);
            let durable = cp.durable;
            if cp.due(durable) {
                cp.checkpoint();
            }
        })
        .map_err(|source| AuditLogError::Io { what: "starting the audit checkpoint thread".to_owned(), source })?;
        let space = Arc::new(super::space::SpaceGauge::default());
        let needs =
            super::space::Needs { preallocate: options.segments.preallocate, retention: options.retention.is_some() };
        let space_watch = super::space::start_task(dir.clone(), Arc::clone(&space), needs)
            .map_err(|source| AuditLogError::Io { what: "starting the audit space thread".to_owned(), source })?;
        Ok(Self {
            segments,
            checkpointer,
            _retention: retention,
            space,
            _space_watch: space_watch,
            _quiet_checkpoints: quiet_checkpoints,
            recovered,
        })
    }

    /// Records in the log and the root of their tree.
    pub fn tree_head(&self) -> (u64, [u8; 32]) {
        let cp = self.checkpointer.lock().unwrap_or_else(PoisonError::into_inner);
        (cp.tree.size(), cp.tree.root())
    }
}

impl AuditSink for AuditLog {
    fn append(&self, record: ExchangeRecord, mode: AuditMode) -> AuditTicket {
        self.segments.append(record, mode)
    }

    fn flush(&self) -> AuditTicket {
        self.segments.flush()
    }

    fn health(&self) -> AuditHealth {
        self.segments.health()
    }

    fn taking_records(&self) -> bool {
        self.segments.taking_records()
    }

    fn recovered_at_open(&self) -> Option<String> {
        self.recovered.clone()
    }

    fn counters(&self) -> Option<super::AuditCounters> {
        let s = self.segments.stats();
        Some(super::AuditCounters {
            records: s.records,
            batches: s.batches,
            syncs: s.syncs,
            failed_batches: s.failed_batches,
            tree_size: self.tree_head().0,
            disk: self.space.get(),
        })
    }

    fn shutdown(&self) -> AuditTicket {
        let (ticket, resolver) = AuditTicket::channel();
        let done = self.segments.shutdown();
        let checkpointer = Arc::clone(&self.checkpointer);
        let finish = async move {
            let result = done.await;
            // Everything is durable now: the last records get their checkpoint.
            let mut cp = checkpointer.lock().unwrap_or_else(PoisonError::into_inner);
            if cp.tree.size() > cp.signed_size {
                cp.checkpoint();
            }
            resolver.resolve(result);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(finish);
            }
            // Outside a runtime (a tool's last act, a benchmark's end) a thread of its own waits
            // for the writer, so that the last checkpoint is still signed and the ticket still
            // says how the shutdown went; should even that thread fail to start, the ticket
            // fails as closed.
            Err(_) => {
                let _ = std::thread::Builder::new().name("splpd-audit-close".to_owned()).spawn(move || {
                    if let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() {
                        rt.block_on(finish);
                    }
                });
            }
        }
        ticket
    }
}

/// Writes `signer-<key sha256>.crt` into the audit directory once, so that the checkpoints signed
/// with that key can be verified from the directory alone, after the gateway's certificate is
/// renewed too.
fn keep_signer_certificate(dir: &Path, cert: &Path, key_sha256: &[u8; 32]) -> Result<(), AuditLogError> {
    let target = dir.join(format!("signer-{}.crt", hex::encode(key_sha256)));
    if target.exists() {
        let kept = splpd_certs::load::read_certificates(&target).ok().and_then(|certs| certs.into_iter().next());
        if kept.and_then(|der| super::verify::certificate_key_sha256(&der).ok()).as_ref() == Some(key_sha256) {
            return Ok(());
        }
        // Not the key's certificate: kept so by a gateway that signed with `[audit] signing_key`
        // before `signing_cert` existed, and no checkpoint of that key could be checked against it.
        // It is put aside, not removed, and the key's own takes its place.
        let aside = target.with_extension("crt.mismatched");
        std::fs::rename(&target, &aside).map_err(|source| AuditLogError::Io {
            what: format!("putting aside {}, which is not the signing key's certificate", target.display()),
            source,
        })?;
        tracing::warn!(
            "audit log: {} was not the certificate of the key that signs checkpoints; it is now {}, and the key's own \
             certificate ({}) takes its place",
            target.display(),
            aside.display(),
            cert.display()
        );
    }
    std::fs::copy(cert, &target).map(|_| ()).map_err(|source| AuditLogError::Io {
        what: format!("copying the signer's certificate {} into {}", cert.display(), dir.display()),
        source,
    })
}

/// Appends one frame (`u32` length, `u32` CRC32C, payload; little endian) and syncs it.
fn append_frame(file: &mut File, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| io::Error::other("checkpoint too large"))?;
    let mut buf = Vec::with_capacity(8 + payload.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    buf.extend_from_slice(payload);
    file.write_all(&buf)?;
    file.sync_data()
}

/// Reads every checkpoint of an audit directory, oldest first. A torn last frame (a crash while
/// writing it) is ignored; damage before it is an error naming the byte offset.
pub fn read_checkpoints(dir: &Path) -> io::Result<Vec<Checkpoint>> {
    let path = dir.join(CHECKPOINTS_FILE);
    let mut bytes = Vec::new();
    match super::open_log_file(&path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    scan_checkpoints(&bytes, &path).map(|(checkpoints, _)| checkpoints)
}

/// The largest checkpoint frame the log writes, with room to spare (one is about 200 bytes): a
/// length field past it is damage, not the start of a checkpoint whose write was cut short.
const MAX_CHECKPOINT_FRAME: usize = 4096;

/// The checkpoints in `bytes` (the file at `path`), and how many bytes their whole frames take.
/// What may follow them is the one checkpoint whose write a crash cut short, which is left out:
/// bytes to the end that are no longer than one frame (the last whole one's size, give or take
/// its signature's few bytes, or [`MAX_CHECKPOINT_FRAME`] with none before it) and start a frame
/// that does not fit or fails its CRC; or zeros to the end. Anything else is damage, an error
/// that says where: a tail longer than one frame would be whole checkpoints, lost to a damaged
/// length field if it were cut.
fn scan_checkpoints(bytes: &[u8], path: &Path) -> io::Result<(Vec<Checkpoint>, usize)> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let mut last_frame = 0usize;
    let damaged = |at: usize, what: &str| {
        io::Error::other(format!(
            "{}: the checkpoint at byte {at} {what}; the file was changed or damaged (`splpd audit verify` on the \
             folder says more)",
            path.display()
        ))
    };
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.iter().all(|b| *b == 0) {
            // Zeros to the end: space a crash left allocated but never written.
            break;
        }
        let one_frame = if last_frame == 0 { MAX_CHECKPOINT_FRAME } else { last_frame + 16 };
        // A torn write is the last thing written: no whole checkpoint follows it.
        let torn = || rest.len() <= one_frame && !holds_a_whole_frame(&rest[1..]);
        let Some(head) = rest.get(..8) else {
            if torn() {
                break;
            }
            return Err(damaged(at, "is cut short"));
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len == 0 || 8 + len > MAX_CHECKPOINT_FRAME {
            return Err(damaged(at, &format!("claims a length of {len} bytes, which no checkpoint has")));
        }
        let Some(payload) = rest.get(8..8 + len) else {
            if torn() {
                break;
            }
            return Err(damaged(at, "runs past the end of the file, with more than one checkpoint's bytes left"));
        };
        if crc32c::crc32c(payload) != crc {
            if 8 + len == rest.len() && torn() {
                break;
            }
            return Err(damaged(at, "fails its CRC"));
        }
        let cp = Checkpoint::decode(payload).map_err(|e| damaged(at, &format!("does not decode ({e})")))?;
        out.push(cp);
        last_frame = 8 + len;
        at += 8 + len;
    }
    Ok((out, at))
}

/// Whether a whole checkpoint frame (a plausible length, its CRC right) starts anywhere in
/// `bytes`: tails are at most one frame long, so trying every offset is cheap.
fn holds_a_whole_frame(bytes: &[u8]) -> bool {
    (0..bytes.len()).any(|at| {
        let Some(head) = bytes.get(at..at + 8) else { return false };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        len > 0
            && 8 + len <= MAX_CHECKPOINT_FRAME
            && bytes.get(at + 8..at + 8 + len).is_some_and(|payload| crc32c::crc32c(payload) == crc)
    })
}

/// Opens the checkpoint file for appending, and returns the number of records its last
/// checkpoint covers. A last checkpoint whose write a crash cut short is cut off, durably,
/// before anything is appended after it (which would leave it damaged inside the file for good);
/// damage before it stops the start, naming the place.
/// The file, and the size and time of its last checkpoint.
fn open_checkpoints(path: &Path) -> Result<(File, u64, i64), AuditLogError> {
    let io_err = |what: &str, source| AuditLogError::Io { what: format!("{what} {}", path.display()), source };
    let mut file = super::new_file(OpenOptions::new().create(true).read(true).append(true))
        .open(path)
        .map_err(|e| io_err("opening", e))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| io_err("reading", e))?;
    let (checkpoints, whole) = scan_checkpoints(&bytes, path).map_err(|e| AuditLogError::Io {
        what: "the audit log's checkpoint file is damaged, so the gateway does not start on it (appending would \
               hide the damage); keep a copy of the folder for the audit, then move the file aside to start with the \
               records signed again"
            .to_owned(),
        source: e,
    })?;
    if whole < bytes.len() {
        file.set_len(whole as u64)
            .and_then(|()| file.sync_data())
            .map_err(|e| io_err("cutting a torn checkpoint off", e))?;
        tracing::warn!(
            "audit log: cut off a torn checkpoint of {} bytes at the end of {}, left by a crash in the middle of its \
             write; the records it was to cover are signed again",
            bytes.len() - whole,
            path.display()
        );
    }
    Ok((file, checkpoints.last().map_or(0, |c| c.tree_size), checkpoints.last().map_or(0, |c| c.time_unix_nanos)))
}

/// A warning when the log's folder is open to every account on the host: new files are made
/// 0640 in a 0750 folder, but a folder made before (or by hand) keeps its mode.
fn open_to_others(dir: &Path, meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = meta.permissions().mode() & 0o777;
    (mode & 0o007 != 0).then(|| {
        format!(
            "the audit log's folder {} (mode {mode:o}) is open to every account on this host, and its records say \
             who called what: `chmod -R o-rwx {}` (the gateway makes its new files 0640, and leaves the modes of \
             those already there)",
            dir.display(),
            dir.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::checkpoint::verify_checkpoint;
    use crate::audit::merkle::{Tree, leaf_hash};
    use crate::audit::segment::SegmentReader;
    use splpd_certs::id::Identity;
    use splpd_certs::pki::{Ca, InitOptions, KeyType, LeafRequest};

    /// The options of a log in `dir/audit` signed by a gateway key issued in `dir`, a checkpoint
    /// every `checkpoint_every` records and never by time.
    fn options_in(dir: &Path, checkpoint_every: u64) -> AuditLogOptions {
        let now = time::OffsetDateTime::now_utc();
        let ca =
            Ca::init(&dir.join("ca"), &InitOptions::new("Test", vec!["ID/PEMDA/1602".parse().unwrap()]), now).unwrap();
        let (cert, key) = (dir.join("gw1.crt"), dir.join("gw1.key"));
        let id = Identity::Server("ID/PEMDA/1602/gw1".parse().unwrap());
        ca.issue(&LeafRequest::new(id), KeyType::default(), &cert, &key, false, now).unwrap();
        AuditLogOptions {
            segments: SegmentOptions::new(dir.join("audit")),
            gateway: "ID/PEMDA/1602/gw1".parse().unwrap(),
            signing_key: key,
            signing_cert: cert,
            checkpoint_every,
            checkpoint_interval: Duration::from_secs(3600),
            retention: None,
        }
    }

    fn record(i: u64) -> ExchangeRecord {
        ExchangeRecord { exchange_id: format!("ex-{i}"), status: 200, ..Default::default() }
    }

    /// A log checkpointed every 10 records, in a new folder, with 25 records appended `sync`
    /// (after `before` is done to it): each record waits for its own sync.
    async fn log_of_25(tmp: &Path, before: impl FnOnce(&AuditLog)) -> (AuditLogOptions, PathBuf, AuditLog) {
        let options = options_in(tmp, 10);
        let audit = options.segments.dir.clone();
        let log = AuditLog::open(&options).unwrap();
        before(&log);
        for i in 0..25 {
            log.append(record(i), AuditMode::Sync).await.unwrap();
        }
        (options, audit, log)
    }

    /// Waits for the checkpoint a shutdown signs over all 25 records.
    async fn last_checkpoint_of_25(audit: &Path) {
        for _ in 0..100 {
            if read_checkpoints(audit).unwrap().last().is_some_and(|c| c.tree_size == 25) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn checkpoints_sign_the_tree_of_the_records_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let (options, audit, log) = log_of_25(tmp.path(), |_| {}).await;
        // One after the other, each record waited for its own sync.
        let stats = log.stats();
        assert_eq!((stats.records, stats.batches, stats.syncs), (25, 25, 25), "{stats:?}");
        log.shutdown().await.unwrap();
        // Let the shutdown task write the last checkpoint.
        last_checkpoint_of_25(&audit).await;

        let mut reader = SegmentReader::open(&audit).unwrap();
        let mut tree = Tree::new();
        let mut roots = vec![tree.root()];
        while let Some((_, payload)) = reader.next_record().unwrap() {
            tree.push(leaf_hash(payload));
            roots.push(tree.root());
        }
        assert_eq!(tree.size(), 25);
        let cps = read_checkpoints(&audit).unwrap();
        let sizes: Vec<u64> = cps.iter().map(|c| c.tree_size).collect();
        assert_eq!(sizes, vec![10, 20, 25], "every 10 records, and one at shutdown");
        let signer_cert = std::fs::read_dir(&audit)
            .unwrap()
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().starts_with("signer-"))
            .expect("the signer's certificate is kept beside the log")
            .path();
        let der = splpd_certs::load::read_certificates(&signer_cert).unwrap().remove(0);
        for cp in &cps {
            assert_eq!(cp.root_hash, roots[usize::try_from(cp.tree_size).unwrap()].to_vec());
            verify_checkpoint(cp, &der).unwrap();
        }

        // Reopening rebuilds the tree from the segments.
        let log = AuditLog::open(&options).unwrap();
        assert_eq!(log.tree_head(), (25, tree.root()));
        log.shutdown().await.unwrap();

        assert_eq!(open_to_others(&audit, &std::fs::metadata(&audit).unwrap()), None);
        std::fs::set_permissions(&audit, std::fs::Permissions::from_mode(0o755)).unwrap();
        let warning = open_to_others(&audit, &std::fs::metadata(&audit).unwrap()).expect("a 0755 folder is told");
        assert!(warning.contains("(mode 755)") && warning.contains("chmod -R o-rwx"), "{warning}");
        std::fs::set_permissions(&audit, std::fs::Permissions::from_mode(0o750)).unwrap();

        // What the log wrote is not for every account on the host: it names who called what.
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&audit) & 0o007, 0, "the folder: {:o}", mode(&audit));
        for entry in std::fs::read_dir(&audit).unwrap().filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("signer-") {
                assert_eq!(mode(&entry.path()) & 0o007, 0, "{name}: {:o}", mode(&entry.path()));
            }
        }
    }

    /// A clock behind the last checkpoint (a host started with a wrong time) signs no checkpoint
    /// earlier than it, which verify would take for a rewritten log: the last time is kept.
    #[tokio::test]
    async fn a_clock_behind_the_last_checkpoint_does_not_sign_one_earlier() {
        let tmp = tempfile::tempdir().unwrap();
        // As if the last checkpoint had been signed an hour ahead of this clock.
        let ahead = now_nanos() + 3_600_000_000_000;
        let (_, audit, log) = log_of_25(tmp.path(), |log| log.checkpointer.lock().unwrap().last_time = ahead).await;
        log.shutdown().await.unwrap();
        last_checkpoint_of_25(&audit).await;
        let cps = read_checkpoints(&audit).unwrap();
        assert_eq!(cps.iter().map(|c| c.tree_size).collect::<Vec<_>>(), [10, 20, 25]);
        assert!(cps.iter().all(|c| c.time_unix_nanos == ahead), "{cps:?}");
    }

    /// The records before a quiet spell get their checkpoint `checkpoint_interval` later, with
    /// no exchange after them to prompt it, so that they can be proven without waiting for one.
    #[tokio::test]
    async fn records_before_a_quiet_spell_are_checkpointed_after_the_interval() {
        let tmp = tempfile::tempdir().unwrap();
        let mut options = options_in(tmp.path(), 1000);
        options.checkpoint_interval = Duration::from_millis(300);
        let audit = options.segments.dir.clone();
        let log = AuditLog::open(&options).unwrap();
        let tickets: Vec<_> = (0..5).map(|i| log.append(record(i), AuditMode::Sync)).collect();
        for ticket in tickets {
            ticket.await.unwrap();
        }
        let covered = || read_checkpoints(&audit).unwrap().last().map_or(0, |c| c.tree_size);
        let mut waited = Duration::ZERO;
        while covered() < 5 && waited < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += Duration::from_millis(20);
        }
        assert_eq!(covered(), 5, "the quiet log's records were checkpointed");
        let cps = read_checkpoints(&audit).unwrap();
        assert_eq!(cps.len(), 1, "one checkpoint, not one per tick: {cps:?}");
        // Nothing new: no further checkpoint.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(read_checkpoints(&audit).unwrap().len(), 1);
        log.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn the_log_runs_retention_on_its_own_thread() {
        let tmp = tempfile::tempdir().unwrap();
        let policy = RetentionPolicy { max_age: None, max_size: Some(1) };
        let mut options = options_in(tmp.path(), 10);
        options.segments.segment_size = 4096;
        options.retention = Some((policy, Duration::from_millis(20)));
        let audit = options.segments.dir.clone();
        let log = AuditLog::open(&options).unwrap();
        // Batches of 20 committed together; a segment is rotated between batches.
        for start in (0..2000).step_by(20) {
            let tickets: Vec<_> = (start..start + 20).map(|i| log.append(record(i), AuditMode::Sync)).collect();
            for ticket in tickets {
                ticket.await.unwrap();
            }
        }
        let segments = || crate::audit::segment::list_segments(&audit).unwrap();
        assert!(segments().len() > 3);
        // An export on record that holds the first 1000 records.
        let entry = crate::audit::retention::ExportEntry {
            archive: "a.tar".into(),
            sha256: String::new(),
            first_seq: 0,
            last_seq: 999,
            created: String::new(),
        };
        crate::audit::retention::record_export(&audit, &entry).unwrap();
        let mut first = 0;
        for _ in 0..500 {
            first = segments()[0].0;
            if first > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(first > 0 && first <= 1000, "the retention thread removed the held segments: first record {first}");
        log.shutdown().await.unwrap();
    }

    #[test]
    fn shutting_down_outside_a_runtime_still_signs_the_last_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let options = options_in(tmp.path(), 1000);
        let audit = options.segments.dir.clone();
        let log = AuditLog::open(&options).unwrap();
        for i in 0..7 {
            // Async tickets are answered when queued: no runtime needed to take them.
            futures_util::FutureExt::now_or_never(log.append(record(i), AuditMode::Async))
                .expect("an async record is answered at once")
                .unwrap();
        }
        let ticket = log.shutdown();
        let waiter = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        waiter.block_on(ticket).expect("the shutdown went well");
        assert_eq!(read_checkpoints(&audit).unwrap().last().map(|c| c.tree_size), Some(7));
    }

    #[tokio::test]
    async fn a_signing_key_of_its_own_signs_checkpoints_that_verify_against_its_certificate() {
        let tmp = tempfile::tempdir().unwrap();
        let mut options = options_in(tmp.path(), 2);
        let now = time::OffsetDateTime::now_utc();
        let ca = Ca::open(&tmp.path().join("ca")).unwrap();
        let (cert, key) = (tmp.path().join("sign.crt"), tmp.path().join("sign.key"));
        let id = Identity::Server("ID/PEMDA/1602/gw1".parse().unwrap());
        ca.issue(&LeafRequest::new(id), KeyType::default(), &cert, &key, false, now).unwrap();

        // The gateway's certificate for another key is refused at open, before anything is written.
        let gateway_cert = options.signing_cert.clone();
        options.signing_key = key;
        let err = AuditLog::open(&options).unwrap_err();
        assert!(matches!(err, AuditLogError::SignerMismatch { .. }), "{err}");
        assert!(!options.segments.dir.join(CHECKPOINTS_FILE).exists());
        assert!(gateway_cert.exists());

        options.signing_cert = cert;
        let log = AuditLog::open(&options).unwrap();
        let tickets: Vec<_> = (0..4).map(|i| log.append(record(i), AuditMode::Sync)).collect();
        for ticket in tickets {
            ticket.await.unwrap();
        }
        log.shutdown().await.unwrap();
        let ca_der = splpd_certs::load::read_certificates(&tmp.path().join("ca").join("ca.crt")).unwrap().remove(0);
        let report = crate::audit::verify::verify_log(&options.segments.dir, Some(&ca_der), &mut |_, _, _, _| {
            crate::audit::verify::Reading::On
        })
        .unwrap();
        assert!(report.is_ok() && report.checkpoints > 0, "{:?}", report.problems);
    }

    /// Opens the log again once the writer of the one dropped before has let its lock go.
    fn reopen(options: &AuditLogOptions) -> Result<AuditLog, AuditLogError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match AuditLog::open(options) {
                Err(AuditLogError::Segments(e))
                    if Instant::now() < deadline && e.to_string().contains("writer.lock") =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    #[tokio::test]
    async fn records_a_crash_left_unsigned_are_signed_when_the_log_opens_again() {
        let tmp = tempfile::tempdir().unwrap();
        let options = options_in(tmp.path(), 1000);
        let audit = options.segments.dir.clone();
        let log = AuditLog::open(&options).unwrap();
        let tickets: Vec<_> = (0..3).map(|i| log.append(record(i), AuditMode::Sync)).collect();
        for ticket in tickets {
            ticket.await.unwrap();
        }
        // Dropped without its shutdown, as a killed gateway's: no last checkpoint.
        drop(log);
        assert!(read_checkpoints(&audit).unwrap().is_empty());
        // And the crash came in the middle of a checkpoint's write.
        let path = audit.join(CHECKPOINTS_FILE);
        OpenOptions::new().append(true).open(&path).unwrap().write_all(&[40, 0, 0, 0, 1, 2]).unwrap();

        let log = reopen(&options).unwrap();
        let sizes = || read_checkpoints(&audit).unwrap().iter().map(|c| c.tree_size).collect::<Vec<_>>();
        assert_eq!(sizes(), [3], "the recovered records are signed at open, after the torn bytes were cut");
        drop(log);
        let log = reopen(&options).unwrap();
        assert_eq!(sizes(), [3], "nothing new to sign: no second checkpoint");
        log.shutdown().await.unwrap();

        // Damage before the last checkpoint stops the open, and says where.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_within(..);
        bytes[9] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let err = reopen(&options).unwrap_err().to_string();
        assert!(err.contains("is damaged") && err.contains("byte 0"), "{err}");
    }

    #[test]
    fn only_one_checkpoints_worth_of_tail_or_zeros_count_as_torn() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(CHECKPOINTS_FILE);
        let cp = Checkpoint { tree_size: 3, root_hash: vec![1; 32], ..Default::default() };
        let whole = |n: usize| {
            let mut f = File::create(&path).unwrap();
            for _ in 0..n {
                append_frame(&mut f, &cp.encode_to_vec()).unwrap();
            }
            std::fs::read(&path).unwrap()
        };
        let frame = whole(1).len();
        // Zeros a crash left to the end are not checkpoints.
        let mut bytes = whole(2);
        bytes.extend_from_slice(&[0; 64]);
        assert_eq!(scan_checkpoints(&bytes, &path).unwrap(), (vec![cp.clone(), cp.clone()], 2 * frame));
        // A damaged length in the first of three makes the rest look cut short: more than one
        // checkpoint's bytes, so it is damage, not a torn write to cut off.
        let mut bytes = whole(3);
        bytes[0] = bytes[0].wrapping_add(200);
        let err = scan_checkpoints(&bytes, &path).unwrap_err().to_string();
        assert!(err.contains("byte 0") && err.contains("more than one checkpoint"), "{err}");
        // A length no checkpoint has is damage too, wherever it is.
        let mut bytes = whole(2);
        bytes[frame + 3] = 0x7f;
        let err = scan_checkpoints(&bytes, &path).unwrap_err().to_string();
        assert!(err.contains(&format!("byte {frame}")) && err.contains("no checkpoint has"), "{err}");
        // A write cut short after two whole ones is the torn last one.
        let bytes = whole(3);
        let cut = &bytes[..3 * frame - 5];
        assert_eq!(scan_checkpoints(cut, &path).unwrap().1, 2 * frame);
    }

    #[tokio::test]
    async fn a_kept_certificate_that_is_not_the_signing_keys_is_put_aside_for_its_own() {
        let tmp = tempfile::tempdir().unwrap();
        let options = options_in(tmp.path(), 2);
        let audit = options.segments.dir.clone();
        std::fs::create_dir_all(&audit).unwrap();
        let key = CheckpointSigner::load(&options.signing_key).unwrap().key_sha256().to_owned();
        let kept = audit.join(format!("signer-{}.crt", hex::encode(key)));
        // Another key's certificate under this key's name, as an older gateway left it.
        let now = time::OffsetDateTime::now_utc();
        let ca = Ca::open(&tmp.path().join("ca")).unwrap();
        let other = (tmp.path().join("other.crt"), tmp.path().join("other.key"));
        let id = Identity::Server("ID/PEMDA/1602/gw1".parse().unwrap());
        ca.issue(&LeafRequest::new(id), KeyType::default(), &other.0, &other.1, false, now).unwrap();
        std::fs::copy(&other.0, &kept).unwrap();

        let log = AuditLog::open(&options).unwrap();
        assert_eq!(std::fs::read(&kept).unwrap(), std::fs::read(&options.signing_cert).unwrap());
        assert_eq!(std::fs::read(kept.with_extension("crt.mismatched")).unwrap(), std::fs::read(&other.0).unwrap());
        let tickets: Vec<_> = (0..2).map(|i| log.append(record(i), AuditMode::Sync)).collect();
        for ticket in tickets {
            ticket.await.unwrap();
        }
        log.shutdown().await.unwrap();
        let report =
            crate::audit::verify::verify_log(&audit, None, &mut |_, _, _, _| crate::audit::verify::Reading::On)
                .unwrap();
        assert!(report.is_ok() && report.checkpoints > 0, "{:?}", report.problems);
    }

    #[test]
    fn a_damaged_checkpoint_is_named_and_a_torn_last_one_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(CHECKPOINTS_FILE);
        let mut f = File::create(&path).unwrap();
        let cp = Checkpoint { tree_size: 3, root_hash: vec![1; 32], ..Default::default() };
        append_frame(&mut f, &cp.encode_to_vec()).unwrap();
        append_frame(&mut f, &cp.encode_to_vec()).unwrap();
        f.write_all(&[9, 0, 0]).unwrap();
        assert_eq!(read_checkpoints(tmp.path()).unwrap().len(), 2);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[9] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let err = read_checkpoints(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("byte 0") && err.to_string().contains("CRC"), "{err}");
    }
}
