//! The segment-file audit log (design §5): records framed with length and CRC32C in append-only
//! segment files, written by one thread with group commit, recovered and checked at open. A
//! record's sequence number is its index in the whole log, and so its Merkle leaf index.
//!
//! Layout: `<dir>/<first sequence number, 20 digits>.seg`, each file a 32-byte header (see
//! [`HEADER_LEN`]) followed by frames `u32 length | u32 CRC32C(payload) | payload`, little-endian,
//! the payload being the prost encoding of an [`ExchangeRecord`].

mod base;
mod error;
mod files;
mod format;
mod read;
mod writer;

#[cfg(test)]
mod tests;

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub use self::base::{BASE_FILE, LogBase, read_base, write_base};
pub use self::error::{Damage, SegmentError};
use self::files::{ActiveSegment, Faults};
pub(crate) use self::format::list_segments;
pub use self::format::{
    FORMAT_VERSION, FRAME_HEADER_LEN, HEADER_LEN, MAGIC, MAX_RECORD_LEN, MAX_STORED_BODY, segment_file_name,
};
pub use self::read::SegmentReader;
use self::writer::{Shared, Timing, Writer};
use super::merkle::{Hash, leaf_hash};
use super::{AuditHealth, AuditMode, AuditSink, AuditTicket, ExchangeRecord};
use crate::workers::Workers;

/// Sees every record of the log exactly once, in sequence order: at open, the records already on
/// disk; then, on the writer thread, each record once its batch is written. Meant for the Merkle
/// tree: `appended` feeds it the leaf, `durable` tells how far a checkpoint may reach.
///
/// Runs on the writer thread after the batch's tickets are answered, so it delays no answer, but
/// a slow hook slows the next batch. A log with a hook hashes each record's Merkle leaf on the
/// thread that appends it, right after framing it (its bytes still in that core's cache, and the
/// work spread over the runtime's workers instead of queued on the one writer).
pub trait CommitHook: Send + 'static {
    /// Record `seq` is in the log; `payload` is its encoding as stored (the Merkle leaf data) and
    /// `leaf` its RFC 6962 leaf hash.
    fn appended(&mut self, seq: u64, payload: &[u8], leaf: &Hash);

    /// The first `records` records are on disk for sure (synced). A checkpoint must not cover
    /// more: records past this point can still be lost in a crash.
    fn durable(&mut self, records: u64) {
        let _ = records;
    }
}

impl<F: FnMut(u64, &[u8]) + Send + 'static> CommitHook for F {
    fn appended(&mut self, seq: u64, payload: &[u8], _leaf: &Hash) {
        self(seq, payload);
    }
}

/// Where and how a [`SegmentLog`] writes.
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    /// The directory of the segment files; created if missing.
    pub dir: PathBuf,
    /// A segment that would grow past this starts a new one. A batch is never split, so a
    /// segment is larger only when it holds one batch larger than this.
    pub segment_size: u64,
    /// How long the writer waits to gather async records before it writes them.
    pub linger: Duration,
    /// Queued async records that make the writer write without waiting out its linger; also the
    /// records at which a held sync starts (see the `writer` module).
    pub wake_threshold: usize,
    /// Queued records past which appends wait for their write, whatever their mode.
    pub capacity: usize,
    /// Async records are synced to disk at least this often.
    pub sync_interval: Duration,
    /// Async records are synced once this many bytes of them are unsynced; bounds the copy kept
    /// to write them again after a failed sync.
    pub max_unsynced_bytes: usize,
    /// First pause before the writer tries again after a failure, doubling up to a second.
    pub retry_interval: Duration,
    /// How long the writer may hold a sync to take more records into it, when the batch before
    /// had more than one record waiting for its sync and no runtime worker is idle (see the
    /// `writer` module); zero syncs each batch at once.
    pub commit_delay: Duration,
    /// The runtime's idle workers, whose going idle ends a held sync; without them a held sync
    /// waits out its whole `commit_delay`.
    pub workers: Option<Arc<Workers>>,
    /// The runtime whose exchanges wait for the log's tickets: the writer hands it each batch's
    /// answers, to be given out by one of its tasks (see the `writer` module). Without it the
    /// writer gives them out itself.
    pub runtime: Option<tokio::runtime::Handle>,
    /// How far ahead of its records the last segment is filled with zeros (see the `files`
    /// module); 0 turns it off.
    pub preallocate: u64,
}

impl SegmentOptions {
    /// Defaults for a log in `dir`: 64 MiB segments, 2 ms linger, syncs of async records at
    /// least every second.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_size: 64 * 1024 * 1024,
            linger: Duration::from_millis(2),
            wake_threshold: 64,
            capacity: 4096,
            sync_interval: Duration::from_secs(1),
            max_unsynced_bytes: 1024 * 1024,
            retry_interval: Duration::from_millis(50),
            commit_delay: Duration::from_millis(5),
            workers: None,
            runtime: None,
            preallocate: files::PREALLOCATE,
        }
    }

    /// The options of the `[audit]` section.
    pub fn from_config(audit: &crate::config::Audit) -> Self {
        Self {
            segment_size: audit.segment_size.bytes(),
            commit_delay: audit.commit_delay.0,
            preallocate: audit.preallocate.bytes(),
            ..Self::new(&audit.dir)
        }
    }

    fn timing(&self) -> Timing {
        Timing {
            linger: self.linger,
            wake_threshold: self.wake_threshold.max(1),
            capacity: self.capacity.max(1),
            sync_interval: self.sync_interval,
            max_unsynced_bytes: self.max_unsynced_bytes,
            retry_interval: self.retry_interval,
            commit_delay: self.commit_delay,
        }
    }
}

/// What opening the log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The sequence number the next record gets: how many records the log holds.
    pub next_seq: u64,
    /// Segment files in the log.
    pub segments: usize,
    /// Bytes of a torn tail cut off the last segment; 0 when there was none.
    pub torn_bytes: u64,
}

/// Counters of a [`SegmentLog`]'s writer, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentStats {
    /// Batches written in full (a batch is one write, and at most one sync).
    pub batches: u64,
    /// Batches that failed to be written or synced.
    pub failed_batches: u64,
    /// Records written.
    pub records: u64,
    /// Batches that were synced.
    pub syncs: u64,
    /// Times an appender woke the writer.
    pub wakeups: u64,
    /// Segments started since open (not counting the one the log went on with).
    pub segments_started: u64,
}

/// The segment-file audit log, as an [`AuditSink`].
///
/// One dedicated OS thread writes, never a runtime worker: it spends its life in `write` and
/// `fsync`. It takes everything queued as one batch, writes the batch in one `write`, syncs once
/// if any record in it asked for it, and only then answers the batch's tickets. The hand-off is
/// built to wake it rarely (see the `writer` module). A failed write or sync fails the batch's
/// tickets, cuts the file back, marks the log unavailable and is retried until it works.
#[derive(Debug)]
pub struct SegmentLog {
    shared: Arc<Shared>,
    recovered: Recovered,
}

impl SegmentLog {
    /// Opens the log in `options.dir` (creating it if missing), checks every segment and frame,
    /// cuts off a torn tail, and starts the writer.
    ///
    /// Damage anywhere but at the tail (a bad checksum, a missing segment, a bad header) stops
    /// the open with an error that names the file, byte offset and record: the log is evidence,
    /// and starting over it would bury the damage. Blocking I/O that reads the whole log: call it
    /// at startup.
    pub fn open(options: &SegmentOptions) -> Result<Self, SegmentError> {
        Self::start(options, None, None)
    }

    /// As [`open`](Self::open), with a hook that first sees every record already in the log,
    /// then every record written (to rebuild and grow the Merkle tree).
    pub fn open_with_hook(options: &SegmentOptions, hook: impl CommitHook) -> Result<Self, SegmentError> {
        Self::start(options, None, Some(Box::new(hook)))
    }

    /// As [`open_with_hook`](Self::open_with_hook), with the writer lock the caller took first,
    /// so that it could write files of its own beside the log once it held it.
    pub fn open_locked_with_hook(
        options: &SegmentOptions,
        lock: WriterLock,
        hook: impl CommitHook,
    ) -> Result<Self, SegmentError> {
        debug_assert_eq!(lock.dir, options.dir, "the writer lock is of another directory");
        Self::start(options, Some(lock), Some(Box::new(hook)))
    }

    fn start(
        options: &SegmentOptions,
        lock: Option<WriterLock>,
        mut hook: Option<Box<dyn CommitHook>>,
    ) -> Result<Self, SegmentError> {
        let dir = &options.dir;
        let lock = match lock {
            Some(lock) => lock,
            None => {
                crate::audit::make_dir(dir).map_err(|e| SegmentError::io(dir, e))?;
                WriterLock::take(dir)?
            }
        };
        let (recovered, last_first_seq, last_path, records_len) = recover(dir, hook.as_deref_mut())?;
        if let Some(hook) = hook.as_deref_mut() {
            hook.durable(recovered.next_seq);
        }
        let segment = ActiveSegment::resume(
            dir.clone(),
            options.segment_size,
            options.preallocate,
            last_path.clone(),
            last_first_seq,
            recovered.next_seq,
            records_len,
        )
        .map_err(|e| SegmentError::io(&last_path, e))?;
        let shared = Arc::new(Shared::new(options.timing(), options.workers.clone(), hook.is_some()));
        if let Some(workers) = &options.workers {
            let watcher: std::sync::Weak<Shared> = Arc::downgrade(&shared);
            workers.watch(watcher);
        }
        let writer = Writer {
            shared: Arc::clone(&shared),
            segment,
            answers: options.runtime.as_ref().map(writer::answer_on),
            hook,
            hooked: recovered.next_seq,
            name: dir.display().to_string(),
            _lock: lock,
        };
        std::thread::Builder::new()
            .name("splpd-audit".to_owned())
            .spawn(move || writer.run())
            .map_err(|e| SegmentError::io(dir, e))?;
        Ok(Self { shared, recovered })
    }

    /// What the open found.
    pub fn recovered(&self) -> &Recovered {
        &self.recovered
    }

    /// The writer's counters so far.
    pub fn stats(&self) -> SegmentStats {
        let c = &self.shared.counters;
        SegmentStats {
            batches: c.batches.load(Ordering::Relaxed),
            failed_batches: c.failed_batches.load(Ordering::Relaxed),
            records: c.records.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            wakeups: c.wakeups.load(Ordering::Relaxed),
            segments_started: c.segments_started.load(Ordering::Relaxed),
        }
    }

    /// Makes the next `n` writes fail (half written, then "no space left"); `u64::MAX` for all
    /// of them until called again with 0.
    #[cfg(test)]
    pub(crate) fn fail_next_writes(&self, n: u64) {
        self.shared.faults.fail_writes(n);
    }

    /// Makes the next `n` syncs fail; `u64::MAX` for all of them until called again with 0.
    #[cfg(test)]
    pub(crate) fn fail_next_syncs(&self, n: u64) {
        self.shared.faults.fail_syncs(n);
    }

    #[cfg(test)]
    fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        self.shared.queued()
    }

    #[cfg(test)]
    fn asleep(&self) -> Option<bool> {
        self.shared.asleep()
    }
}

impl AuditSink for SegmentLog {
    fn append(&self, record: ExchangeRecord, mode: AuditMode) -> AuditTicket {
        // A record that cannot be framed (an empty one, which would encode to no bytes, or one
        // over the frame limit) is refused here, at once; see `format::push_frame`.
        self.shared.append(&record, mode)
    }

    fn flush(&self) -> AuditTicket {
        self.shared.control(false)
    }

    fn health(&self) -> AuditHealth {
        self.shared.health()
    }

    /// One atomic load: a closed log is left to `health`, since it refuses only at shutdown.
    fn taking_records(&self) -> bool {
        !self.shared.failing.load(std::sync::atomic::Ordering::Acquire)
    }

    fn shutdown(&self) -> AuditTicket {
        self.shared.control(true)
    }
}

impl Drop for SegmentLog {
    /// The writer writes and syncs what is queued, then stops; nothing waits for it here, so
    /// that dropping the log never blocks a runtime thread. Use [`AuditSink::shutdown`] to wait.
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// The file in the log's directory that the one process writing the log holds locked, with its
/// process id in it.
pub const LOCK_FILE: &str = "writer.lock";

/// The log's writer lock (`flock` on [`LOCK_FILE`]), held until dropped: two writers would
/// interleave records and cut each other's files.
#[derive(Debug)]
pub struct WriterLock {
    dir: PathBuf,
    _file: fs::File,
}

impl WriterLock {
    /// Takes the lock of the log in `dir`, which must exist. A writer that is stopping (a log
    /// shut down in this process a moment ago, a gateway finishing its drain) lets go within
    /// moments, so the lock is tried for a few seconds before giving up.
    pub fn take(dir: &Path) -> Result<Self, SegmentError> {
        Ok(Self { dir: dir.to_owned(), _file: lock_dir(dir)? })
    }
}

/// The lock is the first file the log opens: a folder the gateway's account may not write is
/// told there, with what to do.
fn with_permission_hint(e: std::io::Error, dir: &Path) -> std::io::Error {
    if e.kind() != std::io::ErrorKind::PermissionDenied {
        return e;
    }
    std::io::Error::new(
        e.kind(),
        format!(
            "{e}: the account splpd runs as must own the audit log's folder and what is in it, e.g. `chown -R \
             splpd: {}` (`splpd config check`, run as that account, checks it)",
            dir.display()
        ),
    )
}

fn lock_dir(dir: &Path) -> Result<fs::File, SegmentError> {
    use std::io::Write as _;
    let path = dir.join(LOCK_FILE);
    let mut file = crate::audit::new_file(OpenOptions::new().create(true).truncate(false).read(true).write(true))
        .open(&path)
        .map_err(|e| SegmentError::io(&path, with_permission_hint(e, dir)))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                let who = if holder.is_empty() { "another process".to_owned() } else { format!("process {holder}") };
                let e = std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "the audit log is being written by {who}; stop it first, or give this gateway its own \
                         [audit] dir: two writers would interleave their records"
                    ),
                );
                return Err(SegmentError::io(&path, e));
            }
            Err(fs::TryLockError::Error(e)) => return Err(SegmentError::io(&path, e)),
        }
    }
    // Only a help to the operator; the lock is what counts.
    let _ = file.set_len(0).and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(file)
}

/// Reads the whole log, feeding `hook`, and cuts a torn tail off; returns what it found and the
/// last segment (its first sequence number, path and the length of its header and records),
/// where the writer goes on. An empty directory gets its first segment.
fn recover(dir: &Path, mut hook: Option<&mut dyn CommitHook>) -> Result<(Recovered, u64, PathBuf, u64), SegmentError> {
    let mut reader = SegmentReader::open(dir)?;
    let torn = loop {
        match reader.next_record() {
            Ok(Some((seq, payload))) => {
                if let Some(hook) = hook.as_deref_mut() {
                    hook.appended(seq, payload, &leaf_hash(payload));
                }
            }
            Ok(None) => break None,
            Err(SegmentError::Damaged { path, offset, seq, damage: Damage::TornTail { bytes, damage } }) => {
                break Some((path, offset, seq, bytes, damage));
            }
            Err(e) => return Err(e),
        }
    };
    let next_seq = reader.next_seq();
    let mut torn_bytes = 0;
    let (first_seq, path, records_len) = match torn {
        Some((path, offset, seq, bytes, damage)) => {
            tracing::warn!(
                segment = %path.display(),
                offset,
                seq,
                dropped_bytes = bytes,
                cause = %damage,
                "audit log: cut off a torn tail of {bytes} bytes at the end of the last segment, left by a crash in \
                 the middle of a write; records from {seq} on were never completely written"
            );
            torn_bytes = bytes;
            if offset < HEADER_LEN as u64 {
                // The segment's start was torn: start it again.
                let (path, _) =
                    files::create_segment(dir, seq, &Faults::default()).map_err(|e| SegmentError::io(&path, e))?;
                (seq, path, HEADER_LEN as u64)
            } else {
                let first_seq = reader.last_segment().map_or(0, |(first_seq, _)| *first_seq);
                let file = OpenOptions::new().write(true).open(&path).map_err(|e| SegmentError::io(&path, e))?;
                file.set_len(offset).and_then(|()| file.sync_data()).map_err(|e| SegmentError::io(&path, e))?;
                (first_seq, path, offset)
            }
        }
        None => match reader.last_segment() {
            Some((first_seq, path)) => {
                // What the last process wrote may still be only in the page cache (it died, the
                // machine did not): make it durable before building on it.
                let file = OpenOptions::new().append(true).open(path).map_err(|e| SegmentError::io(path, e))?;
                file.sync_data().map_err(|e| SegmentError::io(path, e))?;
                (*first_seq, path.clone(), reader.records_end())
            }
            None => {
                let (path, _) =
                    files::create_segment(dir, 0, &Faults::default()).map_err(|e| SegmentError::io(dir, e))?;
                tracing::info!(segment = %path.display(), "audit log started");
                (0, path, HEADER_LEN as u64)
            }
        },
    };
    let segments = format::list_segments(dir).map_err(|e| SegmentError::io(dir, e))?.len();
    Ok((Recovered { next_seq, segments, torn_bytes }, first_seq, path, records_len))
}
