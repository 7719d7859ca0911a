//! Retention (`[audit] retain_for`, `retain_size`): the oldest segments of the log are removed
//! once they are older than `retain_for` or the log is larger than `retain_size`, and only when an
//! export archive holds them, as `exports.log` in the audit directory records. Removing a segment
//! first writes the log's base (`base.json`: the first record left and the Merkle frontier before
//! it), so that the tree, checkpoints, proofs and `verify` go on over what is left.
//!
//! The writer only ever appends to the last segment, which retention never touches, so the two
//! need no coordination.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::merkle::{Tree, leaf_hash};
use super::segment::{LogBase, SegmentReader, list_segments, read_base, write_base};
use super::ticker::Ticker;
use super::verify::rfc3339_nanos;

/// The list of exports in the audit directory: one JSON object per line, appended by
/// `splpd audit export`.
pub const EXPORTS_FILE: &str = "exports.log";

/// One export archive, as `exports.log` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportEntry {
    /// The archive's path, made whole by the exporter.
    pub archive: String,
    /// SHA-256 of the archive file, lowercase hex.
    pub sha256: String,
    /// The first record the archive holds.
    pub first_seq: u64,
    /// The last record the archive holds that a checkpoint in it covers.
    pub last_seq: u64,
    /// When it was written (RFC 3339).
    pub created: String,
}

impl ExportEntry {
    fn describe(&self) -> String {
        format!("{} (records {}..={}, SHA-256 {})", self.archive, self.first_seq, self.last_seq, self.sha256)
    }
}

/// Adds an export to `exports.log` in `dir`, durably.
pub fn record_export(dir: &Path, entry: &ExportEntry) -> io::Result<()> {
    let mut line = serde_json::to_string(entry).map_err(io::Error::other)?;
    line.push('\n');
    let mut file = super::new_file(OpenOptions::new().create(true).append(true)).open(dir.join(EXPORTS_FILE))?;
    file.write_all(line.as_bytes())?;
    file.sync_data()
}

/// The exports recorded in `dir`, oldest first.
pub fn read_exports(dir: &Path) -> io::Result<Vec<ExportEntry>> {
    let path = dir.join(EXPORTS_FILE);
    let file = match super::open_log_file(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut entries = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let entry = serde_json::from_str(&line)
            .map_err(|e| io::Error::other(format!("{}:{}: not an export entry: {e}", path.display(), n + 1)))?;
        entries.push(entry);
    }
    Ok(entries)
}

/// The Merkle tree over the records before the first one the log in `dir` holds: empty, or the
/// one its base records when retention has removed segments.
pub fn base_tree(dir: &Path) -> Result<Tree, String> {
    match read_base(dir).map_err(|e| e.to_string())? {
        None => Ok(Tree::new()),
        Some(b) => b.frontier_hashes().and_then(|f| Tree::from_frontier(b.first_seq, f).map_err(|e| e.to_string())),
    }
}

/// When segments may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionPolicy {
    /// A segment whose last write is older than this is due.
    pub max_age: Option<Duration>,
    /// While the segments together are larger than this, the oldest is due.
    pub max_size: Option<u64>,
}

impl RetentionPolicy {
    /// Whether the policy ever removes anything.
    pub fn is_active(&self) -> bool {
        self.max_age.is_some() || self.max_size.is_some()
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPass {
    /// The segments removed, by first record.
    pub removed: Vec<u64>,
    /// The log's first record after the pass.
    pub first_seq: u64,
    /// A segment that is due but that no export holds, with what to do about it.
    pub waiting_for_export: Option<String>,
}

/// Why a pass could not run.
#[derive(Debug, thiserror::Error)]
#[error("audit retention in {dir}: {what}")]
pub struct RetentionError {
    dir: PathBuf,
    what: String,
}

/// Runs one retention pass over the log in `dir`, as of `now`.
pub fn apply(dir: &Path, policy: &RetentionPolicy, now: SystemTime) -> Result<RetentionPass, RetentionError> {
    let fail = |what: String| RetentionError { dir: dir.to_owned(), what };
    let base = read_base(dir).map_err(|e| fail(e.to_string()))?;
    let first = base.as_ref().map_or(0, |b| b.first_seq);
    let mut segments = list_segments(dir).map_err(|e| fail(e.to_string()))?;
    // Segments already behind the base: a pass that stopped between writing the base and deleting.
    let behind = segments.windows(2).take_while(|pair| pair[1].0 <= first).count();
    for (_, path) in segments.drain(..behind) {
        fs::remove_file(&path).map_err(|e| fail(format!("removing {}: {e}", path.display())))?;
    }
    let mut pass = RetentionPass { first_seq: first, ..RetentionPass::default() };
    if !policy.is_active() || segments.len() < 2 {
        return Ok(pass);
    }

    let mut sizes = Vec::with_capacity(segments.len());
    for (_, path) in &segments {
        let meta = fs::metadata(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        sizes.push((meta.len(), meta.modified().unwrap_or(now)));
    }
    let mut total: u64 = sizes.iter().map(|(len, _)| len).sum();
    let exports = read_exports(dir).map_err(|e| fail(e.to_string()))?;
    let mut held_by: Vec<String> = base.as_ref().map(|b| b.held_by.clone()).unwrap_or_default();
    let mut new_first = first;
    // Never the last segment: the writer appends to it.
    for k in 0..segments.len() - 1 {
        let (seg_first, path) = &segments[k];
        let seg_end = segments[k + 1].0;
        let (len, modified) = sizes[k];
        let old = policy.max_age.is_some_and(|age| now.duration_since(modified).is_ok_and(|d| d >= age));
        let big = policy.max_size.is_some_and(|max| total > max);
        if !(old || big) {
            break;
        }
        let Some(export) = exports.iter().find(|e| e.first_seq <= *seg_first && e.last_seq + 1 >= seg_end) else {
            pass.waiting_for_export = Some(format!(
                "segment {} (records {seg_first}..{seg_end}) is due for removal ({}) but no export holds it: \
                 run `splpd audit export {} --to FILE --key KEY --from-seq {seg_first}` and keep the archive safe",
                path.display(),
                if old { "older than retain_for" } else { "the log is larger than retain_size" },
                dir.display()
            ));
            break;
        };
        let held = export.describe();
        if !held_by.contains(&held) {
            held_by.push(held);
        }
        new_first = seg_end;
        total -= len;
        pass.removed.push(*seg_first);
    }
    if new_first == first {
        return Ok(pass);
    }

    // The frontier at the new first record: the old base's tree plus the records going away.
    let mut tree = base_tree(dir).map_err(fail)?;
    let mut reader = SegmentReader::open_from(dir, first).map_err(|e| fail(e.to_string()))?;
    while tree.size() < new_first {
        match reader.next_record() {
            Ok(Some((_, payload))) => tree.push(leaf_hash(payload)),
            Ok(None) => return Err(fail(format!("the log ends before record {new_first}"))),
            Err(e) => return Err(fail(e.to_string())),
        }
    }
    let removed_at = rfc3339_nanos(super::now_nanos()).unwrap_or_default();
    write_base(dir, &LogBase::new(new_first, tree.frontier(), removed_at, held_by))
        .map_err(|e| fail(format!("writing the base: {e}")))?;
    for (seg_first, path) in &segments {
        if *seg_first < new_first {
            fs::remove_file(path).map_err(|e| fail(format!("removing {}: {e}", path.display())))?;
        }
    }
    pass.first_seq = new_first;
    Ok(pass)
}

/// Runs [`apply`] every `interval` on its own thread until the ticker is dropped.
pub(crate) fn start_task(dir: PathBuf, policy: RetentionPolicy, interval: Duration) -> io::Result<Ticker> {
    let mut told = None;
    Ticker::start("splpd-audit-retention", interval, move || match apply(&dir, &policy, SystemTime::now()) {
        Ok(pass) => {
            if !pass.removed.is_empty() {
                tracing::info!(
                    segments = pass.removed.len(),
                    first_record = pass.first_seq,
                    "audit retention removed segments held by exports"
                );
            }
            // Said once per segment, not every pass.
            if pass.waiting_for_export != told {
                if let Some(why) = &pass.waiting_for_export {
                    tracing::warn!("{why}");
                }
                told = pass.waiting_for_export;
            }
        }
        Err(e) => tracing::error!("{e}"),
    })
}
