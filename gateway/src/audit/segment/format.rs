//! The bytes of a segment file, apart from any I/O, so that the writer, the recovery at open and
//! the reader agree on them by construction: a 32-byte header, then frames of
//! `u32 length | u32 CRC32C of the payload | payload`, all little-endian.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use prost::Message as _;

use super::error::Damage;
use crate::audit::ExchangeRecord;

/// The first eight bytes of every segment file.
pub const MAGIC: [u8; 8] = *b"SPLPDAUD";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Length of a segment header: magic (8), version (u16), header length (u16), first sequence
/// number (u64), creation time in Unix nanoseconds (i64), CRC32C of the 28 bytes before it (u32).
pub const HEADER_LEN: usize = 32;
/// Length of a frame's length and checksum, before its payload.
pub const FRAME_HEADER_LEN: usize = 8;
/// The largest payload a frame may hold. The gateway's header and URI limits keep records far
/// below it; the bound lets a reader size its buffer, and tells a damaged length from a real one.
pub const MAX_RECORD_LEN: u32 = 1 << 20;

/// The most of each body a record may keep (`[audit] max_stored_body`): two of them leave half of
/// [`MAX_RECORD_LEN`] for the rest of the record.
pub const MAX_STORED_BODY: u64 = 256 * 1024;

const EXTENSION: &str = "seg";
/// Digits of a segment's file name: enough for every u64.
const NAME_DIGITS: usize = 20;

/// The file name of the segment whose first record is `first_seq`, such as
/// `00000000000000000000.seg`: zero-padded so that names sort in log order.
pub fn segment_file_name(first_seq: u64) -> String {
    format!("{first_seq:0NAME_DIGITS$}.{EXTENSION}")
}

/// The first sequence number a segment file name stands for; `None` for any other file, which
/// the log leaves alone (checkpoints and exports may share the directory).
pub(super) fn parse_segment_name(name: &OsStr) -> Option<u64> {
    let stem = name.to_str()?.strip_suffix(".seg")?;
    if stem.len() != NAME_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The segment files of `dir`, in log order, each with the first sequence number of its name.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(seq) = parse_segment_name(&entry.file_name()) {
            segments.push((seq, entry.path()));
        }
    }
    segments.sort_unstable_by_key(|(seq, _)| *seq);
    Ok(segments)
}

/// A segment's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    /// Sequence number of the segment's first record.
    pub(super) first_seq: u64,
    /// When the segment was started.
    pub(super) created_unix_nanos: i64,
}

impl Header {
    pub(super) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..8].copy_from_slice(&MAGIC);
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        // The header's length, so that a later version can add fields and still be skipped over.
        out[10..12].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        out[12..20].copy_from_slice(&self.first_seq.to_le_bytes());
        out[20..28].copy_from_slice(&self.created_unix_nanos.to_le_bytes());
        let crc = crc32c::crc32c(&out[..28]);
        out[28..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub(super) fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Self, Damage> {
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
        if crc32c::crc32c(&bytes[..28]) != le_u32(&bytes[28..32]) {
            return Err(Damage::HeaderChecksum);
        }
        Ok(Self { first_seq: le_u64(&bytes[12..20]), created_unix_nanos: le_u64(&bytes[20..28]).cast_signed() })
    }
}

/// Appends `record` to `buf` as one frame.
///
/// Fails for a record that encodes to nothing (an empty record: a zero length is kept invalid so
/// that a run of zeros, which a crash can leave at the end of a file, never reads as records) or
/// to more than [`MAX_RECORD_LEN`]; `buf` is then as it was.
pub(super) fn push_frame(buf: &mut Vec<u8>, record: &ExchangeRecord) -> io::Result<()> {
    let start = buf.len();
    buf.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    // Encoding into a Vec cannot run out of room; the error is mapped all the same.
    if let Err(e) = record.encode(buf) {
        buf.truncate(start);
        return Err(io::Error::other(e));
    }
    let payload = &buf[start + FRAME_HEADER_LEN..];
    let len = match u32::try_from(payload.len()) {
        Ok(len) if (1..=MAX_RECORD_LEN).contains(&len) => len,
        _ => {
            let len = payload.len();
            buf.truncate(start);
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("an audit record must encode to 1..={MAX_RECORD_LEN} bytes, this one is {len}"),
            ));
        }
    };
    let crc = crc32c::crc32c(payload);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + FRAME_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// A frame's length and stored checksum, from its first eight bytes.
pub(super) fn frame_header(bytes: &[u8; FRAME_HEADER_LEN]) -> (u32, u32) {
    (le_u32(&bytes[..4]), le_u32(&bytes[4..]))
}

/// Checks a frame length read from disk.
pub(super) fn check_len(len: u32) -> Result<usize, Damage> {
    if (1..=MAX_RECORD_LEN).contains(&len) {
        // At most 1 MiB, which fits every usize this code runs on.
        Ok(len as usize)
    } else {
        Err(Damage::BadLength { len })
    }
}

/// Whether `bytes` starts with a whole frame whose payload matches its checksum.
pub(super) fn is_intact_frame(bytes: &[u8]) -> bool {
    let Some(head) = bytes.first_chunk::<FRAME_HEADER_LEN>() else { return false };
    let (len, stored) = frame_header(head);
    let Ok(len) = check_len(len) else { return false };
    bytes.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len).is_some_and(|payload| crc32c::crc32c(payload) == stored)
}

/// The payloads of frames this process encoded itself (with [`push_frame`]), in order.
pub(super) fn payloads(mut frames: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let head = frames.first_chunk::<FRAME_HEADER_LEN>()?;
        let len = frame_header(head).0 as usize;
        let payload = frames.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len)?;
        frames = frames.get(FRAME_HEADER_LEN + len..)?;
        Some(payload)
    })
}

fn le_u32(bytes: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(bytes);
    u32::from_le_bytes(b)
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(bytes);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_sort_in_log_order_and_parse_back() {
        assert_eq!(segment_file_name(0), "00000000000000000000.seg");
        assert_eq!(segment_file_name(u64::MAX), "18446744073709551615.seg");
        assert!(segment_file_name(9) < segment_file_name(10));
        for seq in [0, 1, 12_345, u64::MAX] {
            assert_eq!(parse_segment_name(OsStr::new(&segment_file_name(seq))), Some(seq));
        }
        for other in ["checkpoints.log", "0.seg", "0000000000000000000a.seg", "00000000000000000000.seg.tmp"] {
            assert_eq!(parse_segment_name(OsStr::new(other)), None, "{other}");
        }
    }

    #[test]
    fn header_round_trips_and_detects_damage() {
        let header = Header { first_seq: 42, created_unix_nanos: 1_700_000_000_000_000_000 };
        let bytes = header.encode();
        assert_eq!(&bytes[..8], b"SPLPDAUD");
        assert_eq!(Header::decode(&bytes), Ok(header));

        let mut flipped = bytes;
        flipped[13] ^= 1;
        assert_eq!(Header::decode(&flipped), Err(Damage::HeaderChecksum));
        let mut magic = bytes;
        magic[0] = b'X';
        assert_eq!(Header::decode(&magic), Err(Damage::BadMagic));
        let mut version = bytes;
        version[8] = 9;
        assert_eq!(Header::decode(&version), Err(Damage::UnsupportedVersion { version: 9 }));
        assert_eq!(Header::decode(&[0; HEADER_LEN]), Err(Damage::BlankHeader));
    }

    #[test]
    fn frames_carry_length_and_crc32c_of_the_payload() {
        let record = ExchangeRecord { exchange_id: "x".to_owned(), ..ExchangeRecord::default() };
        let mut buf = vec![0xEE];
        push_frame(&mut buf, &record).unwrap();
        let frame = &buf[1..];
        let payload = record.encode_to_vec();
        assert_eq!(frame_header(frame.first_chunk().unwrap()), (payload.len() as u32, crc32c::crc32c(&payload)));
        assert_eq!(&frame[FRAME_HEADER_LEN..], payload);
        assert!(is_intact_frame(frame));
        assert_eq!(payloads(frame).collect::<Vec<_>>(), [&payload[..]]);
        // CRC32C, not CRC32: the check value of "123456789" is e3069283.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn empty_and_oversized_records_are_refused_without_leaving_bytes() {
        let mut buf = Vec::new();
        assert!(push_frame(&mut buf, &ExchangeRecord::default()).is_err());
        let huge = ExchangeRecord { path: "p".repeat(MAX_RECORD_LEN as usize), ..ExchangeRecord::default() };
        assert!(push_frame(&mut buf, &huge).is_err());
        assert!(buf.is_empty());
        // Zeros never read as a frame.
        assert!(!is_intact_frame(&[0; 64]));
    }
}
