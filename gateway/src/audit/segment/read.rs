//! Reading a segment log back, one frame at a time with one reused buffer, so that memory stays
//! bounded however large the log: for the recovery at open, and for `splpd audit verify/query`.
//! Every frame is checked; what is wrong is told with its file, offset and sequence number.

use std::fs::File;
use std::io::{self, BufRead as _, BufReader, Read, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use super::base::{BASE_FILE, read_base};
use super::error::{Damage, SegmentError};
use super::format::{self, FRAME_HEADER_LEN, HEADER_LEN, Header, MAX_RECORD_LEN};

/// Times a frame at the end of a live log is read again, when zeros are followed by something or
/// a frame fails its checks, before it is called damage (see `advance`).
const MAX_REREADS: u32 = 3;

/// The pause before such a reread, for a writer caught in the middle of its `write` to finish it.
const REREAD_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// Read-ahead per segment: enough for a syscall to bring in many records.
const READ_BUFFER: usize = 64 * 1024;

/// Iterates the records of a segment log directory, in order: `(sequence number, payload)`,
/// where the payload is the prost encoding of an [`ExchangeRecord`](crate::audit::ExchangeRecord).
///
/// Strict: a missing segment, a bad header or a frame whose length or CRC is wrong ends the
/// iteration with a [`SegmentError`] naming the file, offset and sequence number. A torn tail
/// (see [`SegmentError::is_torn_tail`]) is reported too, as what a crash leaves and what the
/// next open of the log cuts off; a reader following a live log can take it as the end.
///
/// Memory is one read buffer and one payload buffer of at most [`MAX_RECORD_LEN`] bytes.
#[derive(Debug)]
pub struct SegmentReader {
    segments: std::vec::IntoIter<(u64, PathBuf)>,
    current: Option<SegmentFile>,
    /// Whether `current` is the log's last segment, where a torn tail may be.
    current_is_last: bool,
    /// The segment opened last, with its first sequence number.
    last: Option<(u64, PathBuf)>,
    /// Where the records of the segment read to its end last ended.
    records_end: u64,
    next_seq: u64,
    payload: Vec<u8>,
    done: bool,
}

impl SegmentReader {
    /// Starts reading the segments in `dir`. A log starts at record 0, or where retention left
    /// it (its `base.json`): a first segment that starts later means segments are missing, and
    /// is reported as damage when reached.
    pub fn open(dir: &Path) -> Result<Self, SegmentError> {
        let first_seq =
            read_base(dir).map_err(|e| SegmentError::io(dir.join(BASE_FILE), e))?.map_or(0, |b| b.first_seq);
        Self::open_from(dir, first_seq)
    }

    /// Starts reading the segments in `dir` at record `first_seq`, which a segment must start
    /// with (an extracted export archive, a retained log). Segments that end before it are
    /// skipped: retention writes the base before it deletes them.
    pub fn open_from(dir: &Path, first_seq: u64) -> Result<Self, SegmentError> {
        let mut segments = format::list_segments(dir).map_err(|e| SegmentError::io(dir, e))?;
        let behind = segments.windows(2).take_while(|pair| pair[1].0 <= first_seq).count();
        segments.drain(..behind);
        Ok(Self {
            segments: segments.into_iter(),
            current: None,
            current_is_last: false,
            last: None,
            payload: Vec::new(),
            records_end: 0,
            done: false,
            next_seq: first_seq,
        })
    }

    /// The next record without copying it: its sequence number and payload, valid until the
    /// next call. `Ok(None)` at the end of the log, and after an error.
    pub fn next_record(&mut self) -> Result<Option<(u64, &[u8])>, SegmentError> {
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

    /// The sequence number the next record should have: how many records were read so far.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The last segment opened so far, with its first sequence number: once the reader is at
    /// the end, the log's last segment, where the writer goes on.
    pub(super) fn last_segment(&self) -> Option<&(u64, PathBuf)> {
        self.last.as_ref()
    }

    /// Once the reader is at the end: the length of the last segment's header and records, which
    /// only zeros may follow (the room the writer keeps ahead of its records).
    pub(super) fn records_end(&self) -> u64 {
        self.records_end
    }

    fn advance(&mut self) -> Result<Option<u64>, SegmentError> {
        loop {
            if self.current.is_none() {
                let Some((name_seq, path)) = self.segments.next() else { return Ok(None) };
                self.current_is_last = self.segments.len() == 0;
                self.current = Some(self.open_segment(name_seq, path)?);
            }
            let Some(segment) = self.current.as_mut() else { continue };
            match segment.next(&mut self.payload)? {
                Frame::Record { seq } => {
                    self.next_seq = seq + 1;
                    return Ok(Some(seq));
                }
                Frame::End => {
                    self.records_end = segment.offset;
                    self.current = None;
                }
                // Zeros to the end of the last segment are the room the writer keeps ahead of
                // its records (see `files`); anywhere else, a zero length is damage.
                Frame::Zeros if self.current_is_last => {
                    let offset = segment.offset;
                    let rest_is_zero = segment.rest_is_zero().map_err(|e| SegmentError::io(&segment.path, e))?;
                    if rest_is_zero {
                        self.records_end = offset;
                        self.current = None;
                    } else if segment.rereads < MAX_REREADS {
                        // A running writer may have put records there since the zeros were
                        // read: read the place again before calling it damage.
                        segment.reread(offset, std::time::Duration::ZERO)?;
                    } else {
                        let (path, seq) = (segment.path.clone(), segment.seq);
                        return Err(self.bad_frame(path, offset, seq, Damage::BadLength { len: 0 }));
                    }
                }
                Frame::Zeros => {
                    let (path, offset, seq) = (segment.path.clone(), segment.offset, segment.seq);
                    return Err(self.bad_frame(path, offset, seq, Damage::BadLength { len: 0 }));
                }
                Frame::Bad { offset, .. } if self.current_is_last && segment.rereads < MAX_REREADS => {
                    // A frame of the last segment read while a running writer was copying it in
                    // (a read can see part of a write, and what follows it whole): read the place
                    // again before calling it damage. Bytes the writer has written never change.
                    segment.reread(offset, REREAD_PAUSE)?;
                }
                Frame::Bad { offset, seq, damage } => {
                    let path = segment.path.clone();
                    return Err(self.bad_frame(path, offset, seq, damage));
                }
            }
        }
    }

    fn open_segment(&mut self, name_seq: u64, path: PathBuf) -> Result<SegmentFile, SegmentError> {
        let mut file = crate::audit::open_log_file(&path).map_err(|e| SegmentError::io(&path, e))?;
        let mut head = [0u8; HEADER_LEN];
        let read = read_full(&mut file, &mut head).map_err(|e| SegmentError::io(&path, e))?;
        let header =
            if read < HEADER_LEN { Err(Damage::ShortHeader { len: read as u64 }) } else { Header::decode(&head) };
        let header = match header {
            Ok(header) => header,
            // A crash while a segment was being started leaves it empty or blank; only the last
            // segment can be in that state, since records go to a segment only once its header
            // is on disk.
            Err(damage @ (Damage::ShortHeader { .. } | Damage::BlankHeader)) if self.current_is_last => {
                self.check_sequence(&path, name_seq)?;
                return Err(self.bad_frame(path, 0, name_seq, damage));
            }
            Err(damage) => return Err(SegmentError::Damaged { path, offset: 0, seq: self.next_seq, damage }),
        };
        if header.first_seq != name_seq {
            let damage = Damage::NameMismatch { header: header.first_seq, name: name_seq };
            return Err(SegmentError::Damaged { path, offset: 0, seq: self.next_seq, damage });
        }
        self.check_sequence(&path, header.first_seq)?;
        self.last = Some((name_seq, path.clone()));
        Ok(SegmentFile {
            path,
            reader: BufReader::with_capacity(READ_BUFFER, file),
            offset: HEADER_LEN as u64,
            seq: header.first_seq,
            rereads: 0,
        })
    }

    /// A segment must start where the one before it ended, and the first one at record 0.
    fn check_sequence(&self, path: &Path, first_seq: u64) -> Result<(), SegmentError> {
        let expected = self.next_seq;
        let damage = match first_seq.cmp(&expected) {
            std::cmp::Ordering::Equal => return Ok(()),
            std::cmp::Ordering::Greater => {
                Damage::MissingRecords { expected, found: first_seq, first: self.last.is_none() }
            }
            std::cmp::Ordering::Less => Damage::Overlap { expected, found: first_seq },
        };
        Err(SegmentError::Damaged { path: path.to_owned(), offset: 0, seq: expected, damage })
    }

    /// Damage at `offset`. In the last segment it is a torn tail if nothing intact follows it;
    /// anywhere else, or with an intact record after it, it is real damage.
    fn bad_frame(&self, path: PathBuf, offset: u64, seq: u64, damage: Damage) -> SegmentError {
        if !self.current_is_last {
            return SegmentError::Damaged { path, offset, seq, damage };
        }
        let damage = match intact_frame_after(&path, offset) {
            Ok((Some(intact_at), _)) => Damage::BeforeIntactRecord { damage: Box::new(damage), intact_at },
            Ok((None, len)) => Damage::TornTail { bytes: len.saturating_sub(offset), damage: Box::new(damage) },
            Err(e) => return SegmentError::io(path, e),
        };
        SegmentError::Damaged { path, offset, seq, damage }
    }
}

impl Iterator for SegmentReader {
    type Item = Result<(u64, Vec<u8>), SegmentError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().map(|next| next.map(|(seq, payload)| (seq, payload.to_vec()))).transpose()
    }
}

/// One segment file being read.
#[derive(Debug)]
struct SegmentFile {
    path: PathBuf,
    reader: BufReader<File>,
    /// Offset of the next frame.
    offset: u64,
    /// Sequence number of the next frame.
    seq: u64,
    /// Times the frame at `offset` was read again.
    rereads: u32,
}

enum Frame {
    /// A whole frame whose payload is now in the buffer.
    Record {
        seq: u64,
    },
    /// The file ends cleanly after the last frame.
    End,
    /// Zero bytes where the next frame would start, up to eight of them or to the end of the
    /// file: the end of the records, if only zeros follow.
    Zeros,
    Bad {
        offset: u64,
        seq: u64,
        damage: Damage,
    },
}

impl SegmentFile {
    fn next(&mut self, payload: &mut Vec<u8>) -> Result<Frame, SegmentError> {
        let (offset, seq) = (self.offset, self.seq);
        let bad = |damage| Ok(Frame::Bad { offset, seq, damage });
        let mut head = [0u8; FRAME_HEADER_LEN];
        let read = read_full(&mut self.reader, &mut head).map_err(|e| SegmentError::io(&self.path, e))?;
        if read == 0 {
            return Ok(Frame::End);
        }
        if head[..read].iter().all(|b| *b == 0) {
            return Ok(Frame::Zeros);
        }
        if read < FRAME_HEADER_LEN {
            return bad(Damage::Truncated { missing: (FRAME_HEADER_LEN - read) as u64 });
        }
        let (len, stored) = format::frame_header(&head);
        let len = match format::check_len(len) {
            Ok(len) => len,
            Err(damage) => return bad(damage),
        };
        payload.resize(len, 0);
        let read = read_full(&mut self.reader, payload).map_err(|e| SegmentError::io(&self.path, e))?;
        if read < len {
            return bad(Damage::Truncated { missing: (len - read) as u64 });
        }
        let computed = crc32c::crc32c(payload);
        if computed != stored {
            return bad(Damage::BadChecksum { stored, computed });
        }
        self.offset += (FRAME_HEADER_LEN + len) as u64;
        self.seq += 1;
        self.rereads = 0;
        Ok(Frame::Record { seq })
    }
}

impl SegmentFile {
    /// Goes back to the frame at `offset` after `pause`, to read it again; counts the reread.
    fn reread(&mut self, offset: u64, pause: std::time::Duration) -> Result<(), SegmentError> {
        self.rereads += 1;
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
        self.reader.seek(SeekFrom::Start(offset)).map_err(|e| SegmentError::io(&self.path, e))?;
        Ok(())
    }

    /// Whether everything after the frame header just read is zeros. Reads on to the end of the
    /// file, a buffer at a time.
    fn rest_is_zero(&mut self) -> io::Result<bool> {
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Ok(true);
            }
            if buf.iter().any(|b| *b != 0) {
                return Ok(false);
            }
            let n = buf.len();
            self.reader.consume(n);
        }
    }
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

/// Where the first intact frame that starts after `from` is, if any, and the file's length.
///
/// This is what tells a torn write from damage: a crash mid-write leaves nothing intact after
/// the first bad byte, while a flipped bit or a cut-out piece in the middle of the log leaves
/// intact records behind it. Every offset is tried, not only the ones the bad frame's length
/// points to, since that length may be the damaged part. Memory stays at two frames' worth.
fn intact_frame_after(path: &Path, from: u64) -> io::Result<(Option<u64>, u64)> {
    const WINDOW: usize = MAX_RECORD_LEN as usize;
    const SPAN: usize = WINDOW + FRAME_HEADER_LEN + MAX_RECORD_LEN as usize;
    let mut file = crate::audit::open_log_file(path)?;
    let end = file.metadata()?.len();
    let mut buf = Vec::new();
    let mut start = from + 1;
    // The smallest frame is a header and one byte.
    while start + (FRAME_HEADER_LEN as u64) < end {
        // Within a u64 difference that is at most SPAN, so the cast cannot truncate.
        let want = (end - start).min(SPAN as u64) as usize;
        buf.resize(want, 0);
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf)?;
        // Every candidate of this window has its whole largest possible frame in `buf`, or
        // `buf` reaches the end of the file.
        let candidates = want.min(WINDOW);
        if let Some(i) = (0..candidates).find(|&i| format::is_intact_frame(&buf[i..])) {
            return Ok((Some(start + i as u64), end));
        }
        start += candidates as u64;
    }
    Ok((None, end))
}
