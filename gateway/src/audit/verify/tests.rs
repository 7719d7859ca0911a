//! Unit tests of the pieces of the verifier that the command-line tests do not reach directly:
//! reading `checkpoints.log` frame by frame, and the strict reader of archives.

use std::fs;

use prost::Message as _;

use super::*;
use crate::audit::segment::Damage;

fn frame(cp: &Checkpoint) -> Vec<u8> {
    let payload = cp.encode_to_vec();
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

fn checkpoint(size: u64) -> Checkpoint {
    Checkpoint {
        tree_size: size,
        root_hash: vec![7; 32],
        gateway: "ID/PEMDA/1602/gw1".to_owned(),
        ..Default::default()
    }
}

/// The sizes read (or the error met) and the torn tail told.
type ReadAll = (Result<Vec<u64>, CheckpointFileError>, Option<(u64, u64)>);

fn read_all(dir: &Path) -> ReadAll {
    let mut reader = CheckpointReader::open(dir).unwrap();
    let mut sizes = Vec::new();
    loop {
        match reader.next_checkpoint() {
            Ok(Some(located)) => sizes.push(located.checkpoint.tree_size),
            Ok(None) => return (Ok(sizes), reader.torn()),
            Err(e) => return (Err(e), reader.torn()),
        }
    }
}

#[test]
fn checkpoint_frames_are_read_with_their_place_and_a_torn_last_one_is_told() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(CHECKPOINTS_FILE);
    assert!(!CheckpointReader::open(tmp.path()).unwrap().exists());

    let (a, b) = (frame(&checkpoint(10)), frame(&checkpoint(20)));
    let whole = [a.clone(), b.clone()].concat();
    fs::write(&path, &whole).unwrap();
    let mut reader = CheckpointReader::open(tmp.path()).unwrap();
    let first = reader.next_checkpoint().unwrap().unwrap();
    assert_eq!((first.index, first.offset, first.checkpoint.tree_size), (0, 0, 10));
    assert_eq!(reader.payload(), &a[8..]);
    let second = reader.next_checkpoint().unwrap().unwrap();
    assert_eq!((second.index, second.offset), (1, a.len() as u64));
    assert!(reader.next_checkpoint().unwrap().is_none());
    assert_eq!(reader.torn(), None);

    // Cut short, or zeros after the last frame, or a last frame failing its CRC: torn.
    for tail in [b[..b.len() - 3].to_vec(), vec![0; 8], vec![0; 40], vec![1, 2, 3]] {
        fs::write(&path, [a.clone(), tail.clone()].concat()).unwrap();
        let (sizes, torn) = read_all(tmp.path());
        assert_eq!((sizes.unwrap(), torn), (vec![10], Some((a.len() as u64, tail.len() as u64))), "{tail:?}");
    }
    let mut bad_last = whole.clone();
    *bad_last.last_mut().unwrap() ^= 1;
    fs::write(&path, &bad_last).unwrap();
    assert_eq!(read_all(tmp.path()).0.unwrap(), vec![10]);

    // The same damage with a frame after it is damage, named by offset and index.
    let mut bad_first = whole.clone();
    bad_first[a.len() - 1] ^= 1;
    fs::write(&path, &bad_first).unwrap();
    let err = read_all(tmp.path()).0.unwrap_err();
    assert!(err.to_string().contains("byte 0, checkpoint 0: checksum mismatch"), "{err}");
    let mut huge = whole;
    huge[a.len() + 3] = 0x7f;
    fs::write(&path, &huge).unwrap();
    let err = read_all(tmp.path()).0.unwrap_err();
    assert!(err.to_string().contains(&format!("byte {}, checkpoint 1: frame length", a.len())), "{err}");
}

#[test]
fn a_directory_without_a_log_is_no_log() {
    let tmp = tempfile::tempdir().unwrap();
    let err = verify_log(tmp.path(), None, &mut |_, _, _, _| Reading::On).unwrap_err();
    assert!(matches!(err, VerifyError::NotALog(_)), "{err}");
}

#[test]
fn a_reader_from_a_later_record_starts_where_it_is_told_and_names_damage() {
    use crate::audit::segment::{HEADER_LEN, MAGIC, segment_file_name};

    let tmp = tempfile::tempdir().unwrap();
    let header = |first: u64| {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(&MAGIC);
        h[8..10].copy_from_slice(&1u16.to_le_bytes());
        h[10..12].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        h[12..20].copy_from_slice(&first.to_le_bytes());
        let crc = crc32c::crc32c(&h[..28]);
        h[28..].copy_from_slice(&crc.to_le_bytes());
        h.to_vec()
    };
    let record = |payload: &[u8]| {
        let mut out = (payload.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        out.extend_from_slice(payload);
        out
    };
    fs::write(tmp.path().join(segment_file_name(40)), [header(40), record(b"a"), record(b"bb")].concat()).unwrap();
    fs::write(tmp.path().join(segment_file_name(42)), [header(42), record(b"c")].concat()).unwrap();
    let mut reader = SegmentReader::open_from(tmp.path(), 40).unwrap();
    let mut seen = Vec::new();
    while let Some((seq, payload)) = reader.next_record().unwrap() {
        seen.push((seq, payload.to_vec()));
    }
    assert_eq!(seen, vec![(40, b"a".to_vec()), (41, b"bb".to_vec()), (42, b"c".to_vec())]);

    // Starting elsewhere is missing records; a cut-short last frame reads as a torn tail, which
    // verify counts as damage in an archive (the exporter copies whole frames only).
    let err = SegmentReader::open_from(tmp.path(), 30).unwrap().next_record().unwrap_err();
    assert!(matches!(
        err,
        SegmentError::Damaged { damage: Damage::MissingRecords { expected: 30, found: 40, .. }, .. }
    ));
    fs::write(tmp.path().join(segment_file_name(42)), [header(42), record(b"cc")[..5].to_vec()].concat()).unwrap();
    let mut reader = SegmentReader::open_from(tmp.path(), 40).unwrap();
    let err = loop {
        match reader.next_record() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("no error"),
            Err(e) => break e,
        }
    };
    assert!(err.is_torn_tail() && matches!(err, SegmentError::Damaged { offset: 32, seq: 42, .. }), "{err}");
}
