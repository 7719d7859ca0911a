//! What can be wrong with a segment log on disk, worded for the operator who has to look at it:
//! every damage names the file, the byte offset and the record's sequence number.

use std::io;
use std::path::PathBuf;

use super::format::{HEADER_LEN, MAX_RECORD_LEN};

/// Why a segment log could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// A file or the directory could not be read or written.
    // The system's error is in the message and deliberately not a `source`: printed as a chain
    // (`{:#}`), it would be said twice.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        error: io::Error,
    },
    /// The log on disk is damaged, or a part of it is missing.
    #[error("{}: byte {offset}, record {seq}: {damage}", path.display())]
    Damaged {
        /// The segment file where the damage was found.
        path: PathBuf,
        /// Where in the file: the start of the bad frame, or 0 for the header.
        offset: u64,
        /// The sequence number of the record that should be at `offset`.
        seq: u64,
        /// What is wrong.
        damage: Damage,
    },
}

impl SegmentError {
    pub(super) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io { path: path.into(), error: source }
    }

    /// Whether this is only a torn tail: incomplete or unreadable bytes at the very end of the
    /// log, as a crash in the middle of a write leaves them, with no intact record after them.
    /// Opening the log cuts such a tail off; a reader of a live log may meet one where the
    /// writer is still writing, and can treat it as the end.
    pub fn is_torn_tail(&self) -> bool {
        matches!(self, Self::Damaged { damage: Damage::TornTail { .. }, .. })
    }
}

/// What is wrong at a place in a segment file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    /// The file ends inside its header.
    #[error("the segment header is cut short: {len} of {HEADER_LEN} bytes")]
    ShortHeader {
        /// How long the file is.
        len: u64,
    },
    /// The header holds only zeros: the file was created but its header never reached the disk.
    #[error("the segment header is blank (all zeros)")]
    BlankHeader,
    /// The file does not start with the segment magic.
    #[error("not an audit segment: the file does not start with SPLPDAUD")]
    BadMagic,
    /// A format version this build cannot read.
    #[error("unsupported segment format version {version}")]
    UnsupportedVersion {
        /// The version in the header.
        version: u16,
    },
    /// The header's own checksum does not match.
    #[error("the segment header fails its checksum")]
    HeaderChecksum,
    /// The header and the file name disagree on the segment's first record.
    #[error("the header says the segment starts at record {header}, the file name says {name}")]
    NameMismatch {
        /// First sequence number in the header.
        header: u64,
        /// First sequence number in the file name.
        name: u64,
    },
    /// A segment starts later than the previous one ends: records are missing.
    #[error("records {expected}..{found} are missing: {}", missing_why(*found, *first))]
    MissingRecords {
        /// The record that should have come next.
        expected: u64,
        /// The record this segment starts at.
        found: u64,
        /// Whether this is the first segment read (none before it to end short).
        first: bool,
    },
    /// A segment starts earlier than the previous one ends: two segments overlap.
    #[error("the segment starts at record {found}, but the previous segments already hold records up to {expected}")]
    Overlap {
        /// The record that should have come next.
        expected: u64,
        /// The record this segment starts at.
        found: u64,
    },
    /// A frame's length is 0 or larger than any record.
    #[error("frame length {len} is out of range (1..={MAX_RECORD_LEN})")]
    BadLength {
        /// The length read.
        len: u32,
    },
    /// The file ends inside a frame.
    #[error("the frame is cut short: {missing} bytes missing at the end of the file")]
    Truncated {
        /// How many bytes the frame still needed.
        missing: u64,
    },
    /// A frame's payload does not match its checksum.
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    BadChecksum {
        /// CRC32C stored in the frame.
        stored: u32,
        /// CRC32C of the payload as read.
        computed: u32,
    },
    /// Damage at the end of the last segment that cannot be a torn write, because an intact
    /// record follows it.
    #[error("{damage}, and an intact record follows at byte {intact_at}, so this is not a torn write")]
    BeforeIntactRecord {
        /// The damage itself.
        damage: Box<Damage>,
        /// Where the next intact frame starts.
        intact_at: u64,
    },
    /// Incomplete or unreadable bytes at the end of the last segment, with no intact record after
    /// them: what a crash in the middle of a write leaves. Opening the log cuts them off.
    #[error("torn tail of {bytes} bytes at the end of the log ({damage})")]
    TornTail {
        /// How many bytes, from the offset to the end of the file.
        bytes: u64,
        /// What made the first of them unreadable.
        damage: Box<Damage>,
    },
}

/// Why records before segment `found` are missing: segments removed before the first, or a gap
/// between two.
fn missing_why(found: u64, first: bool) -> String {
    if first {
        format!(
            "the log's first segment starts at record {found}: the segments before it were removed (retention notes \
             what it removes in base.json, which is missing or was replaced), or this is a part of a log"
        )
    } else {
        "the segment before this one ends short of it (a record removed from it), or a whole segment is missing \
         between them"
            .to_owned()
    }
}
