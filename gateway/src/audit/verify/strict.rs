//! Reading the segments of an exported archive that starts past record 0.
//!
//! The log's own [`SegmentReader`](crate::audit::segment::SegmentReader) insists that a log
//! starts at record 0, as a live log must. An archive of records `N..` holds the segments from
//! the one containing `N` on, and its signed manifest stands for the records before (by the
//! Merkle tree's frontier at the first segment's start). This reader reads such segments, as
//! strictly as the log's reader but without its torn-tail leniency: the exporter copied only
//! whole, checked frames, so anything incomplete is damage.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::audit::segment::{
    Damage, FORMAT_VERSION, FRAME_HEADER_LEN, HEADER_LEN, MAGIC, MAX_RECORD_LEN, SegmentError,
};

/// Digits of a segment file name.
const NAME_DIGITS: usize = 20;

/// The segment files of `dir` in log order, each with the first sequence number of its name
/// (`<20 digits>.seg`; other files are not segments).
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else { continue };
        if stem.len() != NAME_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(seq) = stem.parse::<u64>() {
            segments.push((seq, entry.path()));
        }
    }
    segments.sort_unstable_by_key(|(seq, _)| *seq);
    Ok(segments)
}

/// Iterates the records of segments that start at a given sequence number.
#[derive(Debug)]
pub(crate) struct StrictReader {
    segments: std::vec::IntoIter<(u64, PathBuf)>,
    current: Option<(PathBuf, BufReader<File>, u64)>,
    next_seq: u64,
    payload: Vec<u8>,
    done: bool,
}

impl StrictReader {
    /// Reads the segments of `dir`, the first of which must start at `first_seq`.
    pub(crate) fn open(dir: &Path, first_seq: u64) -> Result<Self, SegmentError> {
        let segments = list_segments(dir).map_err(|source| SegmentError::Io { path: dir.to_owned(), source })?;
        Ok(Self {
            segments: segments.into_iter(),
            current: None,
            next_seq: first_seq,
            payload: Vec::new(),
            done: false,
        })
    }

    /// The next record and its sequence number; `Ok(None)` at the end and after an error.
    pub(crate) fn next_record(&mut self) -> Result<Option<(u64, &[u8])>, SegmentError> {
        if self.done {
            return Ok(None);
        }
        match self.advance() {
            Ok(Some(seq)) => Ok(Some((seq, &self.payload))),
            Ok(None) => {
                self.done = true;
                Ok(None)
            }
            Err(e) => {
                self.done = true;
                Err(e)
            }
        }
    }

    fn advance(&mut self) -> Result<Option<u64>, SegmentError> {
        loop {
            let Some((path, reader, offset)) = self.current.as_mut() else {
                let Some((name_seq, path)) = self.segments.next() else { return Ok(None) };
                self.current = Some(self.open_segment(name_seq, path)?);
                continue;
            };
            let seq = self.next_seq;
            let at = *offset;
            let damaged = |damage| SegmentError::Damaged { path: path.clone(), offset: at, seq, damage };
            let io_err = |source| SegmentError::Io { path: path.clone(), source };
            let mut head = [0u8; FRAME_HEADER_LEN];
            let read = read_full(reader, &mut head).map_err(io_err)?;
            if read == 0 {
                self.current = None;
                continue;
            }
            if read < FRAME_HEADER_LEN {
                return Err(damaged(Damage::Truncated { missing: (FRAME_HEADER_LEN - read) as u64 }));
            }
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            let stored = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            if len == 0 || len > MAX_RECORD_LEN {
                return Err(damaged(Damage::BadLength { len }));
            }
            self.payload.resize(len as usize, 0);
            let read = read_full(reader, &mut self.payload).map_err(io_err)?;
            if read < len as usize {
                return Err(damaged(Damage::Truncated { missing: (len as usize - read) as u64 }));
            }
            let computed = crc32c::crc32c(&self.payload);
            if computed != stored {
                return Err(damaged(Damage::BadChecksum { stored, computed }));
            }
            *offset += (FRAME_HEADER_LEN + len as usize) as u64;
            self.next_seq += 1;
            return Ok(Some(seq));
        }
    }

    fn open_segment(&mut self, name_seq: u64, path: PathBuf) -> Result<(PathBuf, BufReader<File>, u64), SegmentError> {
        let seq = self.next_seq;
        let damaged = |path: &Path, damage| SegmentError::Damaged { path: path.to_owned(), offset: 0, seq, damage };
        let mut file = File::open(&path).map_err(|source| SegmentError::Io { path: path.clone(), source })?;
        let mut head = [0u8; HEADER_LEN];
        let read = read_full(&mut file, &mut head).map_err(|source| SegmentError::Io { path: path.clone(), source })?;
        if read < HEADER_LEN {
            return Err(damaged(&path, Damage::ShortHeader { len: read as u64 }));
        }
        let first_seq = decode_header(&head).map_err(|damage| damaged(&path, damage))?;
        if first_seq != name_seq {
            return Err(damaged(&path, Damage::NameMismatch { header: first_seq, name: name_seq }));
        }
        match first_seq.cmp(&seq) {
            std::cmp::Ordering::Equal => {}
            std::cmp::Ordering::Greater => {
                return Err(damaged(&path, Damage::MissingRecords { expected: seq, found: first_seq }));
            }
            std::cmp::Ordering::Less => {
                return Err(damaged(&path, Damage::Overlap { expected: seq, found: first_seq }));
            }
        }
        Ok((path, BufReader::with_capacity(64 * 1024, file), HEADER_LEN as u64))
    }
}

/// A segment header's first sequence number, once its magic, version, length and checksum are
/// right (the layout is in `segment::format`).
fn decode_header(bytes: &[u8; HEADER_LEN]) -> Result<u64, Damage> {
    if bytes.iter().all(|b| *b == 0) {
        return Err(Damage::BlankHeader);
    }
    if bytes[..8] != MAGIC {
        return Err(Damage::BadMagic);
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    let header_len = u16::from_le_bytes([bytes[10], bytes[11]]);
    if version != FORMAT_VERSION || usize::from(header_len) != HEADER_LEN {
        return Err(Damage::UnsupportedVersion { version });
    }
    let stored = u32::from_le_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]);
    if crc32c::crc32c(&bytes[..28]) != stored {
        return Err(Damage::HeaderChecksum);
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[12..20]);
    Ok(u64::from_le_bytes(first))
}

/// Reads until `buf` is full or the file ends; how many bytes were read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
