//! The writer's side of the segment files: appending whole batches to the last segment, starting
//! a new one when it is full, and undoing a failed batch so that the files only ever hold whole
//! frames of records that were written in full.
//!
//! The last segment is kept zero-filled ahead of its records, [`PREALLOCATE`] bytes at a time,
//! and records overwrite those zeros. A sync that does not change the file's length only has to
//! write the data: measured on the ext4 disk of the benchmark machine, a write and `fdatasync`
//! of a few KiB took 0.33 ms inside zeros already on disk against 0.73 ms at the end of the
//! file, whose new length is a second write (the inode). `fallocate` does not help: its extents
//! are marked unwritten, and their conversion is the same second write. A zero length is never a
//! frame, so readers take the zeros for the end of the log (see `read`). A segment is cut to its
//! records when the next one starts and when the log is shut down.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::format::{self, HEADER_LEN, Header};
use crate::audit::now_nanos;

/// Zeros written ahead of the records when the last segment needs more room. Each extension
/// costs one slower sync and writes that many zeros, so about one in every few thousand batches.
pub(super) const PREALLOCATE: u64 = 1024 * 1024;

/// Zeros a probe writes when the room ahead is there already (see [`ActiveSegment::write`]).
const PROBE_LEN: u64 = 4096;

/// A run of zeros to write from.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Creates the segment for `first_seq` in `dir` with its header, and makes both the file and its
/// directory entry durable before any record goes in: a record synced into a segment whose name
/// is not yet on disk could vanish with it.
///
/// An existing file of that name is overwritten: the writer only starts a segment for records
/// that are not in the log yet, so such a file is a leftover of a start that failed.
pub(super) fn create_segment(dir: &Path, first_seq: u64, faults: &Faults) -> io::Result<(PathBuf, File)> {
    let path = dir.join(format::segment_file_name(first_seq));
    match start_segment(dir, &path, first_seq, faults) {
        Ok(file) => Ok((path, file)),
        Err(e) => {
            // Best effort: a leftover is overwritten by the next try, or, after a crash, cut
            // off by recovery as a torn start.
            let _ = fs::remove_file(&path);
            Err(e)
        }
    }
}

fn start_segment(dir: &Path, path: &Path, first_seq: u64, faults: &Faults) -> io::Result<File> {
    let file = crate::audit::new_file(OpenOptions::new().write(true).create(true).truncate(false)).open(path)?;
    file.set_len(0)?;
    let header = Header { first_seq, created_unix_nanos: now_nanos() };
    faults.write_all_at(&file, &header.encode(), 0)?;
    faults.sync_data(&file)?;
    sync_dir(dir)?;
    Ok(file)
}

/// Makes the directory's entries (a new segment's name) durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The segment being appended to.
///
/// The bytes written since the last `sync_data` are also kept in memory: after a failed write or
/// fsync, neither the file handle nor the page cache can be trusted (Linux may drop the dirty
/// pages and report the error only once), so the file is cut back to its last synced length and
/// those bytes are written again. They are records whose tickets were already answered, so they
/// must not be lost; their sequence numbers stay the same.
#[derive(Debug)]
pub(super) struct ActiveSegment {
    dir: PathBuf,
    segment_size: u64,
    /// Zeros written ahead of the records at a time (see [`PREALLOCATE`]).
    preallocate: u64,
    path: PathBuf,
    /// Sequence number of the segment's first record.
    first_seq: u64,
    /// `None` after a failure, until the file is reopened.
    file: Option<File>,
    /// Length of the records (and header) that are on disk for sure.
    synced_len: u64,
    /// Length of the file: past the records, zeros written ahead of them (see [`PREALLOCATE`]).
    allocated: u64,
    /// Records in the log up to `synced_len`.
    synced_seq: u64,
    /// The frames after `synced_len`.
    unsynced: Vec<u8>,
    unsynced_records: u64,
    /// The file must be cut back to `synced_len`, and `unsynced` written again, before anything
    /// else goes in.
    cut_back: bool,
    /// Segments started by this writer.
    started: u64,
    /// A batch needed the next segment and it could not be started: a probe must start it too
    /// before the log counts as writable, or the log would resume only to fail at the next batch
    /// (the segment folder made read-only, say, while the current file still takes writes).
    rotation_due: bool,
}

impl ActiveSegment {
    /// Goes on with the existing segment at `path`, which holds records up to `next_seq` in its
    /// first `records_len` bytes, followed only by zeros, and has been synced.
    pub(super) fn resume(
        dir: PathBuf,
        segment_size: u64,
        preallocate: u64,
        path: PathBuf,
        first_seq: u64,
        next_seq: u64,
        records_len: u64,
    ) -> io::Result<Self> {
        let file = OpenOptions::new().write(true).open(&path)?;
        let len = file.metadata()?.len();
        if len < records_len {
            return Err(io::Error::other(format!(
                "{} is {len} bytes, shorter than its {records_len} bytes of records",
                path.display()
            )));
        }
        Ok(Self {
            dir,
            segment_size,
            preallocate,
            path,
            first_seq,
            file: Some(file),
            synced_len: records_len,
            allocated: len,
            synced_seq: next_seq,
            unsynced: Vec::new(),
            unsynced_records: 0,
            cut_back: false,
            started: 0,
            rotation_due: false,
        })
    }

    /// The sequence number the next record written gets.
    pub(super) fn next_seq(&self) -> u64 {
        self.synced_seq + self.unsynced_records
    }

    /// Bytes written but not yet synced.
    pub(super) fn unsynced_len(&self) -> usize {
        self.unsynced.len()
    }

    /// Segments this writer started (not counting the one it resumed).
    pub(super) fn started(&self) -> u64 {
        self.started
    }

    /// Appends `frames` (holding `records` records) in one write, and syncs if `sync`. With
    /// `probe` and nothing to write, checks that the disk takes writes again: that the zeros
    /// ahead of the records reach a whole [`PREALLOCATE`] (the room the next batches need, and
    /// what a full disk refuses), and that a sync works.
    ///
    /// All or nothing: on error the file is cut back to its last synced length, and the
    /// unsynced frames before this batch are written again with the next one, so that the file
    /// never shows a part of a failed batch. The records of a failed batch are not in the log.
    pub(super) fn write(
        &mut self,
        frames: &[u8],
        records: u64,
        sync: bool,
        probe: bool,
        faults: &Faults,
    ) -> io::Result<()> {
        let result = self.try_write(frames, records, sync, probe, faults);
        if result.is_err() {
            self.cut_back = true;
            // Zeros are written ahead again after the cut: the failed batch may have left a part
            // of itself in them.
            self.allocated = self.synced_len;
            if let Some(file) = self.file.take() {
                // If this fails too, the cut happens at the reopen.
                let _ = file.set_len(self.synced_len);
            }
        }
        result
    }

    fn try_write(&mut self, frames: &[u8], records: u64, sync: bool, probe: bool, faults: &Faults) -> io::Result<()> {
        let holds_records = self.next_seq() > self.first_seq;
        let len_after = self.synced_len + (self.unsynced.len() + frames.len()) as u64;
        // A batch is never split across segments, so a segment overshoots only when one batch is
        // larger than a whole segment.
        let full = !frames.is_empty() && len_after > self.segment_size;
        if holds_records && (full || (probe && self.rotation_due)) {
            self.rotation_due = true;
            self.rotate(faults)?;
            self.rotation_due = false;
        }
        let rewrote = self.ensure_open(faults)?;
        let file = self.file.as_ref().ok_or_else(|| io::Error::other("audit segment not open"))?;
        let at = self.synced_len + self.unsynced.len() as u64;
        let end = at + frames.len() as u64;
        faults.write_all_at(file, frames, at)?;
        let probing = probe && frames.is_empty() && !rewrote;
        // A probe asks for room even when nothing is preallocated: a full disk must refuse it.
        let ahead = if probing { self.preallocate.max(PROBE_LEN) } else { self.preallocate };
        if end > self.allocated || (probing && end + ahead > self.allocated) {
            let to = end + ahead;
            write_zeros(file, self.allocated.max(end), to, faults).map_err(|e| {
                if e.kind() != io::ErrorKind::StorageFull {
                    return e;
                }
                // The operator sees the disk with room, and must be told that it is not enough.
                let room = crate::config::units::ByteSize(ahead).approx();
                let why = if self.preallocate > 0 {
                    format!("the log sets aside room for its next records {room} at a time ([audit] preallocate)")
                } else {
                    format!("the log checks that {room} can be written before it takes records again")
                };
                io::Error::new(e.kind(), format!("{e}: {why}, so at least that much must be free on its filesystem"))
            })?;
            self.allocated = to;
        } else if probing {
            // The room is there: what is left to check is that writes and syncs work.
            faults.write_all_at(file, &ZEROS[..PROBE_LEN as usize], end)?;
        }
        if sync || probe {
            faults.sync_data(file)?;
        }
        // Only now, with everything done, does the batch count.
        if sync || probe {
            self.synced_len += (self.unsynced.len() + frames.len()) as u64;
            self.synced_seq += self.unsynced_records + records;
            self.unsynced.clear();
            self.unsynced_records = 0;
        } else {
            self.unsynced.extend_from_slice(frames);
            self.unsynced_records += records;
        }
        Ok(())
    }

    /// Reopens the file after a failure, cutting it back and writing the unsynced frames again;
    /// whether it did write them.
    fn ensure_open(&mut self, faults: &Faults) -> io::Result<bool> {
        if self.file.is_some() {
            return Ok(false);
        }
        // Not `create`: a segment that vanished under the writer is an error to report, not a
        // hole to paper over with a fresh file.
        let file = OpenOptions::new().write(true).open(&self.path)?;
        let mut rewrote = false;
        if self.cut_back {
            let len = file.metadata()?.len();
            if len < self.synced_len {
                // Extending it with zeros would hide the loss; stay failed so that it is seen.
                return Err(io::Error::other(format!(
                    "{} is {len} bytes, shorter than the {} bytes already synced to it",
                    self.path.display(),
                    self.synced_len
                )));
            }
            file.set_len(self.synced_len)?;
            faults.write_all_at(&file, &self.unsynced, self.synced_len)?;
            rewrote = !self.unsynced.is_empty();
            self.allocated = self.synced_len + self.unsynced.len() as u64;
            self.cut_back = false;
        }
        self.file = Some(file);
        Ok(rewrote)
    }

    /// Closes the full segment and starts the next. The old one is synced first: records synced
    /// into a later segment while earlier ones were still only in the page cache could, after a
    /// crash, leave a hole in the middle of the log, which recovery rightly refuses.
    fn rotate(&mut self, faults: &Faults) -> io::Result<()> {
        self.ensure_open(faults)?;
        let file = self.file.as_ref().ok_or_else(|| io::Error::other("audit segment not open"))?;
        faults.sync_data(file)?;
        self.synced_len += self.unsynced.len() as u64;
        self.synced_seq += self.unsynced_records;
        self.unsynced.clear();
        self.unsynced_records = 0;
        // Only the last segment has zeros after its records; the cut is durable before the next
        // segment exists.
        self.trim(faults)?;

        let first_seq = self.synced_seq;
        let (path, file) = create_segment(&self.dir, first_seq, faults)?;
        tracing::debug!(segment = %path.display(), first_seq, "audit log started a new segment");
        self.path = path;
        self.first_seq = first_seq;
        self.file = Some(file);
        self.synced_len = HEADER_LEN as u64;
        self.allocated = HEADER_LEN as u64;
        self.started += 1;
        Ok(())
    }

    /// Cuts the zeros off after the records, durably, when everything written is synced: when the
    /// segment is full, and when the log shuts down, so that a stopped log's files hold only
    /// records. Does nothing otherwise.
    pub(super) fn trim(&mut self, faults: &Faults) -> io::Result<()> {
        if !self.unsynced.is_empty() || self.allocated == self.synced_len {
            return Ok(());
        }
        let Some(file) = self.file.as_ref() else { return Ok(()) };
        file.set_len(self.synced_len)?;
        faults.sync_data(file)?;
        self.allocated = self.synced_len;
        Ok(())
    }
}

/// Writes zeros over `from..to` of `file`.
fn write_zeros(file: &File, from: u64, to: u64, faults: &Faults) -> io::Result<()> {
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64);
        // At most the length of ZEROS, so the cast cannot truncate.
        faults.write_all_at(file, &ZEROS[..n as usize], at)?;
        at += n;
    }
    Ok(())
}

/// Faults injected into the writes and syncs, so that tests can prove the log fails closed and
/// recovers without a broken disk. Production code never arms them; checking costs an atomic
/// load per write.
#[derive(Debug, Default)]
pub(super) struct Faults {
    writes: AtomicU64,
    syncs: AtomicU64,
    #[cfg(test)]
    gate: std::sync::Mutex<Option<Gate>>,
}

/// Holds the next write until the test lets it go: `entered` tells the test the writer is inside.
#[cfg(test)]
#[derive(Debug)]
pub(super) struct Gate {
    pub(super) entered: std::sync::mpsc::Sender<()>,
    pub(super) release: std::sync::mpsc::Receiver<()>,
}

/// Arms a fault "forever".
pub(super) const ALWAYS: u64 = u64::MAX;

impl Faults {
    #[cfg(test)]
    pub(super) fn fail_writes(&self, n: u64) {
        self.writes.store(n, Ordering::SeqCst);
    }

    #[cfg(test)]
    pub(super) fn fail_syncs(&self, n: u64) {
        self.syncs.store(n, Ordering::SeqCst);
    }

    #[cfg(test)]
    pub(super) fn hold_next_write(&self, gate: Gate) {
        *self.gate.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(gate);
    }

    fn take(counter: &AtomicU64) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n > 0).then(|| if n == ALWAYS { n } else { n - 1 }))
            .is_ok()
    }

    fn write_all_at(&self, file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        #[cfg(test)]
        if let Some(gate) = self.gate.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            let _ = gate.entered.send(());
            let _ = gate.release.recv();
        }
        if Self::take(&self.writes) {
            // Half the batch reaches the file first, as when a disk fills up in the middle of
            // it, so that tests see the partial batch cut off again.
            file.write_all_at(&bytes[..bytes.len() / 2], offset)?;
            return Err(io::Error::new(io::ErrorKind::StorageFull, "no space left on device (injected)"));
        }
        file.write_all_at(bytes, offset)
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        if Self::take(&self.syncs) {
            return Err(io::Error::other("fsync failed (injected)"));
        }
        file.sync_data()
    }
}
