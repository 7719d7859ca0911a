//! The base of a log whose oldest segments retention has removed (`base.json`): the first record
//! the directory still holds and the Merkle tree's frontier before it, so that the tree, proofs
//! and verification go on from there, and which exports hold what was removed.
//!
//! Written before any segment is deleted, atomically (a temporary file renamed over it), so that
//! a crash between the two leaves a base and a segment that is already behind it, which readers
//! skip and the next retention pass deletes.

use std::fs;
use std::io::{self, Write as _};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The base file in the audit directory.
pub const BASE_FILE: &str = "base.json";
const FORMAT: &str = "splpd-audit-base/v1";

/// Where a retained log starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogBase {
    /// Always `splpd-audit-base/v1`.
    pub format: String,
    /// The first record the directory holds; the records before it were removed.
    pub first_seq: u64,
    /// The Merkle tree over records `0..first_seq` as its frontier (the roots of its perfect
    /// subtrees, left to right), lowercase hex.
    pub frontier: Vec<String>,
    /// When the last segment was removed (RFC 3339).
    pub removed_at: String,
    /// The exports that hold the removed records, as `exports.log` lists them.
    pub held_by: Vec<String>,
}

impl LogBase {
    /// A base at `first_seq` with the tree's frontier there.
    pub fn new(first_seq: u64, frontier: &[[u8; 32]], removed_at: String, held_by: Vec<String>) -> Self {
        Self {
            format: FORMAT.to_owned(),
            first_seq,
            frontier: frontier.iter().map(hex::encode).collect(),
            removed_at,
            held_by,
        }
    }

    /// The frontier as hashes.
    pub fn frontier_hashes(&self) -> Result<Vec<[u8; 32]>, String> {
        self.frontier
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let bytes = hex::decode(h).map_err(|e| format!("{BASE_FILE}: frontier[{i}]: {e}"))?;
                <[u8; 32]>::try_from(bytes).map_err(|_| format!("{BASE_FILE}: frontier[{i}] is not 32 bytes"))
            })
            .collect()
    }
}

/// The base of the log in `dir`; `None` when no segment was ever removed.
pub fn read_base(dir: &Path) -> io::Result<Option<LogBase>> {
    let path = dir.join(BASE_FILE);
    let text = match crate::audit::read_log_file(&path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| io::Error::other(format!("{}: not a log base: not UTF-8", path.display())))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let base: LogBase = serde_json::from_str(&text)
        .map_err(|e| io::Error::other(format!("{}: not a log base: {e}", path.display())))?;
    if base.format != FORMAT {
        return Err(io::Error::other(format!(
            "{}: unknown format {:?}, expected {FORMAT}",
            path.display(),
            base.format
        )));
    }
    Ok(Some(base))
}

/// Replaces the base of the log in `dir`, durably.
pub fn write_base(dir: &Path, base: &LogBase) -> io::Result<()> {
    let tmp = dir.join(format!("{BASE_FILE}.tmp"));
    let mut file = crate::audit::new_file(fs::OpenOptions::new().write(true).create(true).truncate(true)).open(&tmp)?;
    let text = serde_json::to_string_pretty(base).map_err(io::Error::other)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(BASE_FILE))?;
    super::files::sync_dir(dir)
}
