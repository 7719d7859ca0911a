use std::collections::HashSet;
use std::fs;
use std::io::{self, Write as _};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use prost::Message as _;

use super::files::{ALWAYS, Gate};
use super::format::Header;
use super::*;
use crate::audit::AuditError;
use crate::workers::Workers;

fn record(id: &str) -> ExchangeRecord {
    ExchangeRecord {
        exchange_id: id.to_owned(),
        received_at_unix_nanos: 1_700_000_000_000_000_001,
        path: "/r1/ID/PEMDA/1602/DISDUKCAPIL/nik-verify/cek".to_owned(),
        ..ExchangeRecord::default()
    }
}

/// Options for tests: no timer-driven retries or syncs, so that what the files hold depends only
/// on what the test does.
fn options(dir: &Path) -> SegmentOptions {
    SegmentOptions {
        retry_interval: Duration::from_secs(3600),
        sync_interval: Duration::from_secs(3600),
        ..SegmentOptions::new(dir)
    }
}

/// Every record of the log, strictly read, as (sequence number, exchange id).
fn read_all(dir: &Path) -> Vec<(u64, String)> {
    SegmentReader::open(dir)
        .unwrap()
        .map(|item| {
            let (seq, payload) = item.unwrap();
            (seq, ExchangeRecord::decode(&payload[..]).unwrap().exchange_id)
        })
        .collect()
}

fn ids(dir: &Path) -> Vec<String> {
    read_all(dir).into_iter().map(|(_, id)| id).collect()
}

fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    format::list_segments(dir).unwrap().into_iter().map(|(_, path)| path).collect()
}

/// Offsets of the frames of a segment file, and the file's length.
fn frame_offsets(path: &Path) -> (Vec<u64>, u64) {
    let bytes = fs::read(path).unwrap();
    let mut offsets = Vec::new();
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        offsets.push(at as u64);
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += FRAME_HEADER_LEN + len;
    }
    (offsets, bytes.len() as u64)
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    fs::OpenOptions::new().append(true).open(path).unwrap().write_all(bytes).unwrap();
}

/// Writes `n` records (sync) and closes the log.
async fn write_log(opts: &SegmentOptions, n: usize) {
    let log = SegmentLog::open(opts).unwrap();
    for i in 0..n {
        log.append(record(&format!("r{i}")), AuditMode::Sync).await.unwrap();
    }
    log.shutdown().await.unwrap();
}

fn open_err(opts: &SegmentOptions) -> SegmentError {
    SegmentLog::open(opts).unwrap_err()
}

/// Deterministic garbage (xorshift), so that a failure reproduces.
fn garbage(n: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// Log output of the code run while the guard lives, on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let captured = Self::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn records_round_trip_across_rotated_segments() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SegmentOptions { segment_size: 1024, ..options(dir.path()) };
    let log = SegmentLog::open(&opts).unwrap();
    assert_eq!(log.recovered(), &Recovered { next_seq: 0, segments: 1, torn_bytes: 0 });
    const N: usize = 300;
    for i in 0..N {
        let mode = [AuditMode::Sync, AuditMode::Async, AuditMode::Strict][i % 3];
        log.append(record(&format!("r{i}")), mode).await.unwrap();
    }
    log.shutdown().await.unwrap();
    assert!(log.stats().segments_started >= 10, "{:?}", log.stats());

    let mut reader = SegmentReader::open(dir.path()).unwrap();
    let mut seen = 0;
    while let Some((seq, payload)) = reader.next_record().unwrap() {
        assert_eq!(seq, seen);
        assert_eq!(ExchangeRecord::decode(payload).unwrap(), record(&format!("r{seq}")));
        seen += 1;
    }
    assert_eq!(seen, N as u64);

    // Each segment is named by, and its header holds, the sequence number of its first record;
    // none grew past the segment size (every batch here is small).
    let mut expected_first = 0;
    let paths = segment_paths(dir.path());
    for path in &paths {
        let bytes = fs::read(path).unwrap();
        let header = Header::decode(bytes[..HEADER_LEN].try_into().unwrap()).unwrap();
        assert_eq!(header.first_seq, expected_first);
        assert!(header.created_unix_nanos > 0);
        assert_eq!(path.file_name().unwrap().to_str().unwrap(), segment_file_name(expected_first));
        assert!(bytes.len() <= 1024, "{} is {} bytes", path.display(), bytes.len());
        expected_first += frame_offsets(path).0.len() as u64;
    }
    assert_eq!(expected_first, N as u64);

    // Opening again goes on with the next sequence number, in the last segment.
    let log = SegmentLog::open(&opts).unwrap();
    assert_eq!(log.recovered(), &Recovered { next_seq: N as u64, segments: paths.len(), torn_bytes: 0 });
    log.append(record("after"), AuditMode::Sync).await.unwrap();
    log.shutdown().await.unwrap();
    assert_eq!(read_all(dir.path()).last(), Some(&(N as u64, "after".to_owned())));
}

#[tokio::test]
async fn sync_ticket_resolves_only_once_its_record_reads_back_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = SegmentLog::open(&options(dir.path())).unwrap();
    for i in 0..5 {
        let id = format!("sync-{i}");
        log.append(record(&id), AuditMode::Sync).await.unwrap();
        // A fresh reader, with its own file handle, finds it at once.
        let on_disk = read_all(dir.path());
        assert_eq!(on_disk.len(), i + 1);
        assert_eq!(on_disk.last(), Some(&(i as u64, id)));
    }
    let stats = log.stats();
    assert_eq!((stats.records, stats.batches, stats.syncs), (5, 5, 5), "{stats:?}");
}

#[tokio::test]
async fn async_tickets_answer_at_once_and_are_synced_by_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let log = SegmentLog::open(&options(dir.path())).unwrap();
    assert!(matches!(log.append(record("a"), AuditMode::Async).now_or_never(), Some(Ok(()))));
    // Written within the linger, without a sync.
    wait_until("the async record is written", || log.stats().records == 1).await;
    assert_eq!(ids(dir.path()), ["a"]);
    assert_eq!(log.stats().syncs, 0);
    log.flush().await.unwrap();
    assert_eq!(log.stats().syncs, 1);
}

#[tokio::test]
async fn a_burst_of_async_appends_wakes_the_writer_rarely() {
    const N: u64 = 10_000;
    let dir = tempfile::tempdir().unwrap();
    // Room for the whole burst, so that every ticket is answered at once however slow the disk.
    let opts = SegmentOptions { capacity: N as usize, ..options(dir.path()) };
    let log = SegmentLog::open(&opts).unwrap();
    for i in 0..N {
        assert!(matches!(log.append(record(&format!("r{i}")), AuditMode::Async).now_or_never(), Some(Ok(()))));
    }
    log.flush().await.unwrap();
    let stats = log.stats();
    assert_eq!(stats.records, N);
    // One wake per `wake_threshold` (64) records at most, and batches to match; a wake per
    // record would make both N.
    assert!(stats.wakeups <= N / 32, "{stats:?}");
    assert!(stats.batches <= N / 32, "{stats:?}");
    assert_eq!(read_all(dir.path()).len(), N as usize);
}

#[tokio::test]
async fn after_a_batch_of_async_records_the_next_ones_do_not_wake_the_writer_until_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    // A linger far longer than the test, so that only the threshold can end one.
    let opts = SegmentOptions { linger: Duration::from_secs(600), wake_threshold: 4, ..options(dir.path()) };
    let log = SegmentLog::open(&opts).unwrap();
    let burst = |from: usize| {
        for i in from..from + 4 {
            assert!(matches!(log.append(record(&format!("r{i}")), AuditMode::Async).now_or_never(), Some(Ok(()))));
        }
    };
    // The first record finds the writer idle and wakes it.
    wait_until("the writer sleeps", || log.asleep() == Some(false)).await;
    burst(0);
    wait_until("the first burst is written", || log.stats().records == 4).await;
    let before = log.stats().wakeups;
    assert!(before >= 1, "{:?}", log.stats());
    // Right after that batch the writer waits out its linger, for records it has not seen:
    // the next burst's first record does not wake it, only the threshold does.
    wait_until("the writer sleeps again", || log.asleep().is_some()).await;
    assert_eq!(log.asleep(), Some(true));
    burst(4);
    wait_until("the second burst is written", || log.stats().records == 8).await;
    let stats = log.stats();
    assert_eq!((stats.wakeups - before, stats.batches), (1, 2), "{stats:?}");
    assert_eq!(ids(dir.path()), (0..8).map(|i| format!("r{i}")).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sync_appends_share_one_write_and_one_sync() {
    const N: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SegmentLog::open(&options(dir.path())).unwrap());
    let (entered_tx, entered) = std_mpsc::channel();
    let (release, release_rx) = std_mpsc::channel();
    log.faults().hold_next_write(Gate { entered: entered_tx, release: release_rx });

    let first = log.append(record("first"), AuditMode::Sync);
    entered.recv().unwrap();
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let log = Arc::clone(&log);
            tokio::spawn(async move { log.append(record(&format!("r{i}")), AuditMode::Sync).await })
        })
        .collect();
    wait_until("all appends are queued", || log.queued() == N).await;
    release.send(()).unwrap();
    first.await.unwrap();
    for task in tasks {
        task.await.unwrap().unwrap();
    }

    let stats = log.stats();
    assert_eq!((stats.batches, stats.records, stats.syncs), (2, N as u64 + 1, 2), "{stats:?}");
    // Only the first append can have found the writer asleep; the rest queued while it wrote.
    assert!(stats.wakeups <= 1, "{stats:?}");
    let written = read_all(dir.path());
    assert_eq!(written[0], (0, "first".to_owned()));
    assert!(written.iter().enumerate().all(|(i, (seq, _))| *seq == i as u64));
    assert_eq!(written.iter().map(|(_, id)| id).collect::<HashSet<_>>().len(), N + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_land_exactly_once() {
    const N: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let opts = SegmentOptions { segment_size: 16 * 1024, ..options(dir.path()) };
    let log = Arc::new(SegmentLog::open(&opts).unwrap());
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let log = Arc::clone(&log);
            let mode = if i % 3 == 0 { AuditMode::Async } else { AuditMode::Sync };
            tokio::spawn(async move { log.append(record(&format!("r{i}")), mode).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    log.flush().await.unwrap();
    let written = read_all(dir.path());
    assert!(written.iter().enumerate().all(|(i, (seq, _))| *seq == i as u64));
    let unique: HashSet<_> = written.iter().map(|(_, id)| id).collect();
    assert_eq!((written.len(), unique.len()), (N, N));
    let stats = log.stats();
    assert_eq!(stats.records, N as u64);
    assert!(stats.batches < N as u64, "{stats:?}");
}

/// Two records that queue while the writer is busy with a third make a batch of two, as
/// concurrent exchanges do: the writer then holds its next sync. Two batches in all.
async fn batch_of_two(log: &SegmentLog, name: &str) {
    let (entered_tx, entered) = std_mpsc::channel();
    let (release, release_rx) = std_mpsc::channel();
    log.faults().hold_next_write(Gate { entered: entered_tx, release: release_rx });
    let held = log.append(record(&format!("{name}-held")), AuditMode::Sync);
    entered.recv().unwrap();
    let pair = [0, 1].map(|i| log.append(record(&format!("{name}{i}")), AuditMode::Sync));
    wait_until("both are queued", || log.queued() == 2).await;
    release.send(()).unwrap();
    held.await.unwrap();
    for ticket in pair {
        ticket.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_a_sync_is_held_to_gather_a_group_but_never_for_a_lone_exchange() {
    let dir = tempfile::tempdir().unwrap();
    // A delay long enough that a record that waited for it could not be mistaken for one that
    // did not, and that the test can place records inside it.
    let delay = Duration::from_secs(30);
    let log = Arc::new(SegmentLog::open(&SegmentOptions { commit_delay: delay, ..options(dir.path()) }).unwrap());
    let started = Instant::now();
    // Quiet: one record after another, each its own batch, none held.
    for i in 0..3 {
        log.append(record(&format!("alone{i}")), AuditMode::Sync).await.unwrap();
    }
    assert_eq!(log.stats().batches, 3);

    batch_of_two(&log, "pair").await;
    assert_eq!(log.stats().batches, 5);

    // So the next sync is held, and a record that comes during it joins the same batch.
    let first = tokio::spawn({
        let log = Arc::clone(&log);
        async move { log.append(record("grouped0"), AuditMode::Sync).await }
    });
    wait_until("the writer holds the sync", || log.queued() == 1).await;
    let second = log.append(record("grouped1"), AuditMode::Sync);
    // …and the group does not wait out the whole delay once it has 64 records.
    let more: Vec<_> = (0..62).map(|i| log.append(record(&format!("g{i}")), AuditMode::Sync)).collect();
    second.await.unwrap();
    first.await.unwrap().unwrap();
    for ticket in more {
        ticket.await.unwrap();
    }
    assert_eq!(log.stats().batches, 6, "{:?}", log.stats());
    assert!(started.elapsed() < delay, "a record waited out the commit delay");
    log.flush().await.unwrap();
    assert_eq!(ids(dir.path()).len(), 3 + 3 + 64);
}

#[test]
fn answers_are_given_out_by_a_task_of_the_runtime_and_by_the_writer_once_that_runtime_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let log =
        SegmentLog::open(&SegmentOptions { runtime: Some(runtime.handle().clone()), ..options(dir.path()) }).unwrap();

    // The runtime's only worker is kept busy: the record is synced, but its answer waits for
    // the runtime to run the task that gives it out.
    let (busy_tx, busy) = std_mpsc::channel();
    let (release, released) = std_mpsc::channel::<()>();
    runtime.spawn(async move {
        busy_tx.send(()).unwrap();
        released.recv().unwrap();
    });
    busy.recv().unwrap();
    let mut ticket = log.append(record("held"), AuditMode::Sync);
    let started = Instant::now();
    while log.stats().syncs == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "the record was never synced");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!((&mut ticket).now_or_never().is_none(), "answered while the runtime could run nothing");
    release.send(()).unwrap();
    runtime.block_on(ticket).unwrap();

    // With the runtime gone, the writer answers itself.
    drop(runtime);
    let quiet = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    quiet.block_on(log.append(record("after"), AuditMode::Sync)).unwrap();
    quiet.block_on(log.shutdown()).unwrap();
    assert_eq!(ids(dir.path()), ["held", "after"]);
}

#[test]
fn a_held_sync_waits_while_the_runtime_is_busy_and_starts_when_a_worker_goes_idle() {
    let dir = tempfile::tempdir().unwrap();
    let workers = Arc::new(Workers::default());
    let runtime = workers.runtime(Some(1)).unwrap();
    // Far longer than the test: a sync that waited it out would fail the test.
    let delay = Duration::from_secs(60);
    let opts = SegmentOptions { commit_delay: delay, workers: Some(Arc::clone(&workers)), ..options(dir.path()) };
    let log = Arc::new(SegmentLog::open(&opts).unwrap());
    let started = Instant::now();
    runtime.block_on(batch_of_two(&log, "pair"));
    let before = log.stats().batches;

    // The only worker stays busy for a while after its record: the sync is held, and a record
    // appended later in that busy spell joins the same batch. Once the task ends the worker
    // parks, and the sync starts.
    let busy = Duration::from_millis(200);
    let tickets = runtime.block_on({
        let log = Arc::clone(&log);
        runtime.spawn(async move {
            let first = log.append(record("busy0"), AuditMode::Sync);
            std::thread::sleep(busy);
            let second = log.append(record("busy1"), AuditMode::Sync);
            std::thread::sleep(busy);
            [first, second]
        })
    });
    for ticket in tickets.unwrap() {
        runtime.block_on(ticket).unwrap();
    }
    assert_eq!(log.stats().batches, before + 1, "the records of one busy spell were not synced together");

    // With the worker idle, the next record is synced at once, although the batch before had
    // two records waiting.
    runtime.block_on(log.append(record("idle"), AuditMode::Sync)).unwrap();
    assert_eq!(log.stats().batches, before + 2);
    assert!(started.elapsed() < delay / 2, "a sync waited out the commit delay");
    runtime.block_on(log.shutdown()).unwrap();
    assert_eq!(ids(dir.path())[3..], ["busy0", "busy1", "idle"]);
}

#[tokio::test]
async fn garbage_after_the_last_record_is_cut_at_open_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path());
    write_log(&opts, 10).await;
    let path = segment_paths(dir.path()).pop().unwrap();
    let len = fs::metadata(&path).unwrap().len();
    append_bytes(&path, &garbage(100));

    let (logs, _guard) = Captured::start();
    let log = SegmentLog::open(&opts).unwrap();
    assert_eq!(log.recovered(), &Recovered { next_seq: 10, segments: 1, torn_bytes: 100 });
    assert_eq!(fs::metadata(&path).unwrap().len(), len);
    let text = logs.text();
    assert!(text.contains("WARN") && text.contains("torn tail of 100 bytes"), "{text}");
    assert!(text.contains(&segment_file_name(0)), "{text}");

    log.append(record("after"), AuditMode::Sync).await.unwrap();
    log.shutdown().await.unwrap();
    assert_eq!(read_all(dir.path()).last(), Some(&(10, "after".to_owned())));
}

#[tokio::test]
async fn a_frame_cut_short_is_cut_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path());
    write_log(&opts, 10).await;
    let path = segment_paths(dir.path()).pop().unwrap();
    let (offsets, len) = frame_offsets(&path);
    let last = offsets[9];

    // Cut in the middle of the payload, then in the middle of the frame header.
    fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 3).unwrap();
    let log = SegmentLog::open(&opts).unwrap();
    assert_eq!(log.recovered(), &Recovered { next_seq: 9, segments: 1, torn_bytes: len - 3 - last });
    log.shutdown().await.unwrap();
    let (offsets, len) = frame_offsets(&path);
    assert_eq!((offsets.len(), len), (9, last));

    fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(offsets[8] + 4).unwrap();
    let log = SegmentLog::open(&opts).unwrap();
    assert_eq!(log.recovered(), &Recovered { next_seq: 8, segments: 1, torn_bytes: 4 });
    log.append(record("after"), AuditMode::Sync).await.unwrap();
    log.shutdown().await.unwrap();
    let written = ids(dir.path());
    assert_eq!(written.len(), 9);
    assert_eq!(written[7..], ["r7", "after"]);
}

/// The length of the header and frames of a segment file, read along the frame lengths until
/// the file or its frames end (a zero length).
fn records_len(path: &Path) -> u64 {
    let bytes = fs::read(path).unwrap();
    let mut at = HEADER_LEN;
    while let Some(head) = bytes.get(at..at + 4) {
        let len = u32::from_le_bytes(head.try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        at += FRAME_HEADER_LEN + len;
    }
    at as u64
}

#[tokio::test]
async fn the_last_segment_keeps_zeros_ahead_of_its_records_and_a_shut_down_log_holds_only_records() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SegmentOptions { segment_size: 1024, ..options(dir.path()) };
    let log = SegmentLog::open(&opts).unwrap();
    for i in 0..60 {
        log.append(record(&format!("r{i}")), AuditMode::Sync).await.unwrap();
    }
    let paths = segment_paths(dir.path());
    assert!(paths.len() >= 3, "{paths:?}");
    // Full segments were cut to their records before the next one started…
    for path in &paths[..paths.len() - 1] {
        assert_eq!(fs::metadata(path).unwrap().len(), records_len(path), "{}", path.display());
    }
    // …and the last one is zeros after its records, as far as its first batch plus a whole
    // extension.
    let last = paths.last().unwrap();
    let (len, records) = (fs::metadata(last).unwrap().len(), records_len(last));
    assert!(len > records && len >= HEADER_LEN as u64 + files::PREALLOCATE, "{len} bytes, {records} of records");
    assert!(fs::read(last).unwrap()[records as usize..].iter().all(|b| *b == 0));
    // Readers of the live log take the zeros for its end.
    assert_eq!(ids(dir.path()).len(), 60);

    log.shutdown().await.unwrap();
    assert_eq!(fs::metadata(last).unwrap().len(), records_len(last));
    assert_eq!(ids(dir.path()).len(), 60);
}

#[tokio::test]
async fn zeros_after_the_last_record_are_the_end_of_the_log_and_written_over() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path());
    write_log(&opts, 3).await;
    let path = segment_paths(dir.path()).pop().unwrap();
    let records = fs::metadata(&path).unwrap().len();
    // As a gateway killed while running leaves its last segment; a run shorter than a frame
    // header too.
    for zeros in [4096, 5] {
        append_bytes(&path, &vec![0; zeros]);
        let (logs, _guard) = Captured::start();
        let log = SegmentLog::open(&opts).unwrap();
        assert_eq!(log.recovered(), &Recovered { next_seq: 3, segments: 1, torn_bytes: 0 });
        assert!(!logs.text().contains("torn"), "{}", logs.text());
        // Waited for: a writer still running would cut the file under the next one.
        log.shutdown().await.unwrap();
        fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(records).unwrap();
    }
    append_bytes(&path, &[0; 4096]);
    let log = SegmentLog::open(&opts).unwrap();
    log.append(record("r3"), AuditMode::Sync).await.unwrap();
    log.shutdown().await.unwrap();
    assert_eq!(ids(dir.path()), ["r0", "r1", "r2", "r3"]);
    let (offsets, len) = frame_offsets(&path);
    assert_eq!((offsets[3], len), (records, records_len(&path)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_of_a_log_being_written_sees_whole_records_and_never_damage() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SegmentLog::open(&SegmentOptions { segment_size: 64 * 1024, ..options(dir.path()) }).unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = std::thread::spawn({
        let (dir, stop) = (dir.path().to_owned(), Arc::clone(&stop));
        move || {
            let mut passes = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut reader = SegmentReader::open(&dir).unwrap();
                loop {
                    match reader.next_record() {
                        Ok(Some((seq, payload))) => {
                            let id = ExchangeRecord::decode(payload).unwrap().exchange_id;
                            assert_eq!(id, format!("r{seq}"));
                        }
                        Ok(None) => break,
                        // A batch caught in the middle of its write: the end, for a follower.
                        Err(e) if e.is_torn_tail() => break,
                        Err(e) => panic!("pass {passes}: {e}"),
                    }
                }
                passes += 1;
            }
            passes
        }
    });
    // Records are appended in order, each batch of them at once, across several segments.
    for batch in 0..100 {
        let tickets: Vec<_> =
            (batch * 50..(batch + 1) * 50).map(|i| log.append(record(&format!("r{i}")), AuditMode::Sync)).collect();
        for ticket in tickets {
            ticket.await.unwrap();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    assert!(segment_paths(dir.path()).len() > 2);
    assert_eq!(ids(dir.path()).len(), 5000);
}

#[tokio::test]
async fn zeros_are_the_end_only_when_nothing_but_zeros_follows_in_the_last_segment() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path());
    write_log(&opts, 3).await;
    let path = segment_paths(dir.path()).pop().unwrap();
    let records = fs::metadata(&path).unwrap().len();

    // Zeros, then garbage: a torn write into the zeros, cut off whole.
    append_bytes(&path, &[0; 100]);
    append_bytes(&path, &garbage(10));
    let log = SegmentLog::open(&opts).unwrap();
    assert_eq!(log.recovered(), &Recovered { next_seq: 3, segments: 1, torn_bytes: 110 });
    log.shutdown().await.unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), records);

    // Zeros, then an intact record: records lost in the middle, which no start may paper over.
    let frame = fs::read(&path).unwrap()[frame_offsets(&path).0[2] as usize..].to_vec();
    append_bytes(&path, &[0; 100]);
    append_bytes(&path, &frame);
    match open_err(&opts) {
        SegmentError::Damaged { offset, seq: 3, damage: Damage::BeforeIntactRecord { damage, intact_at }, .. } => {
            assert_eq!((offset, intact_at), (records, records + 100));
            assert_eq!(*damage, Damage::BadLength { len: 0 });
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn zeros_after_the_records_of_an_earlier_segment_are_damage() {
    let dir = tempfile::tempdir().unwrap();
    let (opts, paths) = small_segments(dir.path(), 20).await;
    let earlier = &paths[1];
    let end = fs::metadata(earlier).unwrap().len();
    append_bytes(earlier, &[0; 64]);
    match open_err(&opts) {
        SegmentError::Damaged { path, offset, damage: Damage::BadLength { len: 0 }, .. } => {
            assert_eq!((&path, offset), (earlier, end));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_segment_torn_at_its_start_is_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path());
    write_log(&opts, 4).await;
    let next = dir.path().join(segment_file_name(4));
    for torn in [&b"SPLPDAU"[..], &[0; HEADER_LEN][..], &[][..]] {
        fs::write(&next, torn).unwrap();
        let log = SegmentLog::open(&opts).unwrap();
        assert_eq!(log.recovered(), &Recovered { next_seq: 4, segments: 2, torn_bytes: torn.len() as u64 });
        log.shutdown().await.unwrap();
        let bytes = fs::read(&next).unwrap();
        assert_eq!(Header::decode(bytes[..].try_into().unwrap()).unwrap().first_seq, 4);
    }
    let log = SegmentLog::open(&opts).unwrap();
    log.append(record("r4"), AuditMode::Sync).await.unwrap();
    log.shutdown().await.unwrap();
    assert_eq!(read_all(dir.path()).last(), Some(&(4, "r4".to_owned())));
    assert_eq!(frame_offsets(&next).0.len(), 1);
}

#[tokio::test]
async fn a_reader_reports_a_torn_tail_and_leaves_it() {
    let dir = tempfile::tempdir().unwrap();
    write_log(&options(dir.path()), 3).await;
    let path = segment_paths(dir.path()).pop().unwrap();
    append_bytes(&path, &garbage(10));
    let len = fs::metadata(&path).unwrap().len();
    let items: Vec<_> = SegmentReader::open(dir.path()).unwrap().collect();
    assert_eq!(items.len(), 4);
    assert!(items[..3].iter().all(Result::is_ok));
    let err = items[3].as_ref().unwrap_err();
    assert!(err.is_torn_tail(), "{err}");
    assert_eq!(fs::metadata(&path).unwrap().len(), len);
}

/// A log of `n` records in segments of a few records each.
async fn small_segments(dir: &Path, n: usize) -> (SegmentOptions, Vec<PathBuf>) {
    let opts = SegmentOptions { segment_size: 400, ..options(dir) };
    write_log(&opts, n).await;
    let paths = segment_paths(dir);
    assert!(paths.len() >= 4, "{paths:?}");
    (opts, paths)
}

fn first_seq_of(path: &Path) -> u64 {
    format::parse_segment_name(path.file_name().unwrap()).unwrap()
}

#[tokio::test]
async fn a_flipped_byte_in_an_earlier_segment_stops_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let (opts, paths) = small_segments(dir.path(), 20).await;
    let damaged = &paths[1];
    let offset = frame_offsets(damaged).0[2];
    flip_byte(damaged, offset + FRAME_HEADER_LEN as u64 + 3);

    let err = open_err(&opts);
    let seq = first_seq_of(damaged) + 2;
    match &err {
        SegmentError::Damaged { path, offset: at, seq: s, damage: Damage::BadChecksum { .. } } => {
            assert_eq!((path, *at, *s), (damaged, offset, seq));
        }
        other => panic!("{other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains(&segment_file_name(first_seq_of(damaged))), "{message}");
    assert!(message.contains(&format!("byte {offset}, record {seq}: checksum mismatch")), "{message}");
    // The reader refuses it just the same, once it gets there.
    let read: Vec<_> = SegmentReader::open(dir.path()).unwrap().collect();
    assert_eq!(read.len() as u64, seq + 1);
    assert!(read.last().unwrap().as_ref().is_err_and(|e| !e.is_torn_tail()));
}

#[tokio::test]
async fn damage_in_the_middle_of_the_last_segment_is_not_taken_for_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path());
    write_log(&opts, 10).await;
    let path = segment_paths(dir.path()).pop().unwrap();
    let (offsets, len) = frame_offsets(&path);

    // A flipped payload byte: the chain of lengths still leads to the next record.
    flip_byte(&path, offsets[3] + 12);
    match open_err(&opts) {
        SegmentError::Damaged { offset, seq, damage: Damage::BeforeIntactRecord { damage, intact_at }, .. } => {
            assert_eq!((offset, seq, intact_at), (offsets[3], 3, offsets[4]));
            assert!(matches!(*damage, Damage::BadChecksum { .. }), "{damage:?}");
        }
        other => panic!("{other:?}"),
    }
    flip_byte(&path, offsets[3] + 12);

    // A damaged length sends the chain astray; the intact record after it is found all the same.
    flip_byte(&path, offsets[5] + 3);
    let err = open_err(&opts);
    match &err {
        SegmentError::Damaged { offset, seq, damage: Damage::BeforeIntactRecord { damage, intact_at }, .. } => {
            assert_eq!((*offset, *seq, *intact_at), (offsets[5], 5, offsets[6]));
            assert!(matches!(**damage, Damage::BadLength { .. }), "{damage:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("not a torn write"), "{err}");
    // Nothing was cut.
    assert_eq!(fs::metadata(&path).unwrap().len(), len);
}

#[tokio::test]
async fn a_missing_segment_stops_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let (opts, paths) = small_segments(dir.path(), 20).await;
    fs::remove_file(&paths[1]).unwrap();
    let (expected, found) = (first_seq_of(&paths[1]), first_seq_of(&paths[2]));
    match open_err(&opts) {
        SegmentError::Damaged {
            path,
            offset: 0,
            seq,
            damage: Damage::MissingRecords { expected: e, found: f, .. },
        } => {
            assert_eq!((path, seq, e, f), (paths[2].clone(), expected, expected, found));
        }
        other => panic!("{other:?}"),
    }
    assert!(open_err(&opts).to_string().contains("the segment before this one ends short"));

    // The first segment too: a log starts at record 0, and there is no segment before it.
    fs::remove_file(&paths[0]).unwrap();
    let err = open_err(&opts);
    assert!(matches!(err, SegmentError::Damaged { damage: Damage::MissingRecords { expected: 0, .. }, .. }), "{err}");
    let told = err.to_string();
    assert!(told.contains("the log's first segment starts at record") && !told.contains("before this one"), "{told}");
}

#[tokio::test]
async fn a_bad_header_stops_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let (opts, paths) = small_segments(dir.path(), 20).await;
    flip_byte(&paths[0], 0);
    let err = open_err(&opts);
    assert!(matches!(&err, SegmentError::Damaged { offset: 0, seq: 0, damage: Damage::BadMagic, .. }), "{err}");
    assert!(err.to_string().contains(&segment_file_name(0)), "{err}");
    flip_byte(&paths[0], 0);

    // A header that names another first record than the file name does.
    let renamed = dir.path().join(segment_file_name(first_seq_of(&paths[1]) + 1));
    fs::rename(&paths[1], &renamed).unwrap();
    let err = open_err(&opts);
    assert!(matches!(&err, SegmentError::Damaged { damage: Damage::NameMismatch { .. }, .. }), "{err}");
}

#[tokio::test]
async fn failing_writes_fail_tickets_and_refuse_records_until_writing_works_again() {
    let dir = tempfile::tempdir().unwrap();
    // The hook checks every leaf it is given, the carried record's among them.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hook = Hook { seen: Arc::clone(&seen), durable: Arc::new(Mutex::new(Vec::new())) };
    let log = SegmentLog::open_with_hook(&options(dir.path()), hook).unwrap();
    log.append(record("before"), AuditMode::Sync).await.unwrap();
    assert_eq!(log.health(), AuditHealth::Available);

    log.fail_next_writes(ALWAYS);
    // Answered at once: the log does not know yet that the disk is full.
    assert!(matches!(log.append(record("async-in-failed-batch"), AuditMode::Async).now_or_never(), Some(Ok(()))));
    let err = log.append(record("refused"), AuditMode::Sync).await.unwrap_err();
    assert!(matches!(&err, AuditError::Write(e) if e.kind() == io::ErrorKind::StorageFull), "{err:?}");
    match log.health() {
        AuditHealth::Unavailable { reason, since_unix_nanos } => {
            assert!(reason.contains("no space left"), "{reason}");
            assert!(since_unix_nanos > 0);
        }
        other => panic!("health {other:?}"),
    }
    // Now that it knows, an async record waits for its write, and fails with it.
    let (entered_tx, entered) = std_mpsc::channel();
    let (release, release_rx) = std_mpsc::channel();
    log.faults().hold_next_write(Gate { entered: entered_tx, release: release_rx });
    let mut waiting = log.append(record("async-refused"), AuditMode::Async);
    entered.recv().unwrap();
    assert!((&mut waiting).now_or_never().is_none());
    release.send(()).unwrap();
    assert!(matches!(waiting.await, Err(AuditError::Write(_))));
    assert!(log.flush().await.is_err());
    // Every failed batch was half written, then cut off again: the file holds whole records only.
    assert_eq!(ids(dir.path()), ["before"]);

    log.fail_next_writes(0);
    log.append(record("after"), AuditMode::Sync).await.unwrap();
    assert_eq!(log.health(), AuditHealth::Available);
    // The answered async record was written late but not lost; refused ones never appear.
    assert_eq!(
        read_all(dir.path()),
        [(0, "before".to_owned()), (1, "async-in-failed-batch".to_owned()), (2, "after".to_owned())]
    );
    let stats = log.stats();
    assert!(stats.failed_batches >= 3, "{stats:?}");
    assert_eq!(stats.records, 3, "{stats:?}");
    wait_until("the hook has seen the three records", || seen.lock().unwrap().len() == 3).await;
    let expected: Vec<_> = ["before", "async-in-failed-batch", "after"].iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(seen.lock().unwrap().iter().map(|(_, id)| id.clone()).collect::<Vec<_>>(), expected);
}

#[tokio::test]
async fn the_writer_retries_by_itself_and_becomes_available_again() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SegmentOptions { retry_interval: Duration::from_millis(5), ..options(dir.path()) };
    let log = SegmentLog::open(&opts).unwrap();
    log.fail_next_writes(1);
    assert!(log.append(record("refused"), AuditMode::Sync).await.is_err());
    // No traffic needed: a readiness probe that keeps clients away must not keep the log down.
    wait_until("the log is available again", || log.health().is_available()).await;
    log.append(record("after"), AuditMode::Sync).await.unwrap();
    assert_eq!(read_all(dir.path()), [(0, "after".to_owned())]);
}

/// A disk with less room free than the log sets aside at a time is still full to the log: the
/// reason says so, so that an operator who sees some room free knows how much more is needed.
#[tokio::test]
async fn a_full_disk_names_the_room_the_log_needs() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SegmentOptions { retry_interval: Duration::from_millis(5), ..options(dir.path()) };
    let log = SegmentLog::open(&opts).unwrap();
    log.fail_next_writes(ALWAYS);
    assert!(log.append(record("refused"), AuditMode::Sync).await.is_err());
    // The writer's probes set room aside; theirs is the reason health gives.
    let reason = || match log.health() {
        AuditHealth::Unavailable { reason, .. } => reason,
        other => panic!("health {other:?}"),
    };
    wait_until("a probe failed", || reason().contains("preallocate")).await;
    let said = reason();
    assert!(said.contains("no space left") && said.contains("1 MiB at a time ([audit] preallocate)"), "{said}");
    log.fail_next_writes(0);
    wait_until("the log is available again", || log.health().is_available()).await;
}

#[tokio::test]
async fn a_failed_sync_writes_the_unsynced_records_again() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let durable = Arc::new(Mutex::new(Vec::new()));
    let hook = Hook { seen: Arc::clone(&seen), durable: Arc::clone(&durable) };
    let log = SegmentLog::open_with_hook(&options(dir.path()), hook).unwrap();

    log.append(record("a"), AuditMode::Async).await.unwrap();
    wait_until("the async record is written", || log.stats().records == 1).await;
    log.fail_next_syncs(1);
    // The sync fails after its batch was written: neither the handle nor the page cache can be
    // trusted, so the file goes back to its last sync, and "a" (answered) is written again.
    assert!(log.append(record("b"), AuditMode::Sync).await.is_err());
    log.append(record("c"), AuditMode::Sync).await.unwrap();
    assert_eq!(read_all(dir.path()), [(0, "a".to_owned()), (1, "c".to_owned())]);
    wait_until("the hook has seen both", || seen.lock().unwrap().len() == 2).await;
    assert_eq!(*seen.lock().unwrap(), [(0, "a".to_owned()), (1, "c".to_owned())]);
    wait_until("the hook knows both are durable", || durable.lock().unwrap().last() == Some(&2)).await;
    assert_eq!(*durable.lock().unwrap(), [0, 2], "the unsynced record counted as durable only after its sync");
}

struct Hook {
    seen: Arc<Mutex<Vec<(u64, String)>>>,
    durable: Arc<Mutex<Vec<u64>>>,
}

impl CommitHook for Hook {
    fn appended(&mut self, seq: u64, payload: &[u8], leaf: &crate::audit::merkle::Hash) {
        // Hashed on the appender's thread for new records, at open for those already on disk,
        // on the writer for records written again after a failure: the same hash every way.
        assert_eq!(*leaf, crate::audit::merkle::leaf_hash(payload), "record {seq}");
        let id = ExchangeRecord::decode(payload).unwrap().exchange_id;
        self.seen.lock().unwrap().push((seq, id));
    }
    fn durable(&mut self, records: u64) {
        self.durable.lock().unwrap().push(records);
    }
}

#[tokio::test]
async fn the_hook_sees_the_log_at_open_then_each_new_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SegmentOptions { segment_size: 400, ..options(dir.path()) };
    write_log(&opts, 12).await;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let durable = Arc::new(Mutex::new(Vec::new()));
    let hook = Hook { seen: Arc::clone(&seen), durable: Arc::clone(&durable) };
    let log = SegmentLog::open_with_hook(&opts, hook).unwrap();
    // Before `open` returns, the hook has the whole log, as a Merkle tree rebuilt at open needs.
    let expected: Vec<_> = (0..12).map(|i| (i, format!("r{i}"))).collect();
    assert_eq!(*seen.lock().unwrap(), expected);
    assert_eq!(*durable.lock().unwrap(), [12]);

    for id in ["n0", "n1"] {
        log.append(record(id), AuditMode::Sync).await.unwrap();
    }
    wait_until("the hook has seen the new records", || seen.lock().unwrap().len() == 14).await;
    assert_eq!(seen.lock().unwrap()[12..], [(12, "n0".to_owned()), (13, "n1".to_owned())]);
    wait_until("the hook knows they are durable", || durable.lock().unwrap().last() == Some(&14)).await;

    // The payload the hook gets is the record's encoding as stored: the Merkle leaf data.
    let payloads = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&payloads);
    log.shutdown().await.unwrap();
    drop(log);
    let _log = SegmentLog::open_with_hook(&opts, move |seq: u64, payload: &[u8]| {
        sink.lock().unwrap().push((seq, payload.to_vec()));
    })
    .unwrap();
    let read: Vec<_> = SegmentReader::open(dir.path()).unwrap().map(Result::unwrap).collect();
    assert_eq!(*payloads.lock().unwrap(), read);
    assert_eq!(read[13].1, record("n1").encode_to_vec());
}

#[tokio::test]
async fn a_full_queue_makes_async_appends_wait_for_their_write() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SegmentOptions { capacity: 2, ..options(dir.path()) };
    let log = SegmentLog::open(&opts).unwrap();
    let (entered_tx, entered) = std_mpsc::channel();
    let (release, release_rx) = std_mpsc::channel();
    log.faults().hold_next_write(Gate { entered: entered_tx, release: release_rx });
    let held = log.append(record("held"), AuditMode::Sync);
    entered.recv().unwrap();

    let queued: Vec<_> = ["q1", "q2"].iter().map(|id| log.append(record(id), AuditMode::Async)).collect();
    let mut over = log.append(record("over"), AuditMode::Async);
    assert!((&mut over).now_or_never().is_none(), "past capacity, an async record waits for its write");

    release.send(()).unwrap();
    held.await.unwrap();
    for ticket in queued {
        ticket.await.unwrap();
    }
    over.await.unwrap();
    assert_eq!(ids(dir.path()), ["held", "q1", "q2", "over"]);
}

#[tokio::test]
async fn shutdown_writes_what_was_queued_then_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let log = SegmentLog::open(&options(dir.path())).unwrap();
    for i in 0..10 {
        log.append(record(&format!("r{i}")), AuditMode::Async).await.unwrap();
    }
    log.shutdown().await.unwrap();
    assert_eq!(ids(dir.path()).len(), 10);
    assert!(log.stats().syncs >= 1);
    assert!(matches!(log.append(record("late"), AuditMode::Async).await, Err(AuditError::Closed)));
    assert!(matches!(log.flush().await, Err(AuditError::Closed)));
    assert_eq!(log.health(), AuditHealth::Closed);
}

#[tokio::test]
async fn dropping_the_log_writes_its_async_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = SegmentLog::open(&options(dir.path())).unwrap();
    log.append(record("a"), AuditMode::Async).await.unwrap();
    drop(log);
    wait_until("the writer has written the record", || ids(dir.path()) == ["a"]).await;
}

#[tokio::test]
async fn empty_and_oversized_records_are_refused_at_once_and_the_next_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = SegmentLog::open(&options(dir.path())).unwrap();
    let ticket = log.append(ExchangeRecord::default(), AuditMode::Async);
    assert!(matches!(ticket.now_or_never(), Some(Err(AuditError::Write(_)))));
    let huge = ExchangeRecord { path: "p".repeat(super::format::MAX_RECORD_LEN as usize), ..record("huge") };
    let ticket = log.append(huge, AuditMode::Sync);
    assert!(matches!(ticket.now_or_never(), Some(Err(AuditError::Write(_)))));
    assert!(log.health().is_available());
    log.append(record("a"), AuditMode::Sync).await.unwrap();
    assert_eq!(ids(dir.path()), ["a"]);
}

#[test]
fn options_follow_the_audit_section() {
    let audit = crate::config::Audit::default();
    let opts = SegmentOptions::from_config(&audit);
    assert_eq!((opts.dir, opts.segment_size), (audit.dir, audit.segment_size.bytes()));
}

#[tokio::test]
async fn a_failed_start_of_a_segment_is_tried_again() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SegmentOptions { segment_size: 400, ..options(dir.path()) };
    let log = SegmentLog::open(&opts).unwrap();
    for i in 0..5 {
        log.append(record(&format!("r{i}")), AuditMode::Sync).await.unwrap();
    }
    assert_eq!(log.stats().segments_started, 0);
    // The sixth record needs a new segment; writing its header fails.
    log.fail_next_writes(1);
    assert!(log.append(record("refused"), AuditMode::Sync).await.is_err());
    assert_eq!(segment_paths(dir.path()).len(), 1, "the half-started segment is removed");
    log.append(record("r5"), AuditMode::Sync).await.unwrap();
    log.shutdown().await.unwrap();
    assert_eq!(
        segment_paths(dir.path()),
        [dir.path().join(segment_file_name(0)), dir.path().join(segment_file_name(5))]
    );
    assert_eq!(read_all(dir.path()).last(), Some(&(5, "r5".to_owned())));
}

/// A log that cannot start its next segment (its folder made read-only, say) stays unavailable
/// until it can: the current file still taking a probe's write must not make it resume only to
/// refuse the next exchange again.
#[tokio::test]
async fn a_log_that_cannot_start_its_next_segment_stays_unavailable_until_it_can() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SegmentOptions { segment_size: 400, retry_interval: Duration::from_millis(5), ..options(dir.path()) };
    let log = SegmentLog::open(&opts).unwrap();
    for i in 0..5 {
        log.append(record(&format!("r{i}")), AuditMode::Sync).await.unwrap();
    }
    // The next segment's name is taken by a folder: it cannot be created (as root, whom a
    // read-only folder would not stop, this is how a test makes the creation fail).
    let next = dir.path().join(segment_file_name(5));
    fs::create_dir(&next).unwrap();
    assert!(log.append(record("refused"), AuditMode::Sync).await.is_err());
    // The writer probes again and again; none of its probes may count as writing working again.
    let failed = log.stats().failed_batches;
    wait_until("the writer probed several times", || log.stats().failed_batches >= failed + 3).await;
    assert!(!log.health().is_available(), "{:?}", log.health());

    fs::remove_dir(&next).unwrap();
    wait_until("the log is available again", || log.health().is_available()).await;
    log.append(record("r5"), AuditMode::Sync).await.unwrap();
    assert_eq!(read_all(dir.path()).last(), Some(&(5, "r5".to_owned())));
    assert_eq!(segment_paths(dir.path()).len(), 2);
}

#[tokio::test]
async fn a_second_writer_of_the_same_log_is_refused_until_the_first_stops() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path());
    let first = SegmentLog::open(&opts).unwrap();
    first.append(record("r0"), AuditMode::Sync).await.unwrap();

    let err = open_err(&opts);
    let text = err.to_string();
    assert!(text.contains(LOCK_FILE) && text.contains("being written by process"), "{text}");
    assert!(text.contains(&std::process::id().to_string()), "{text}");

    // Once the first has stopped, the log is the next one's, with nothing lost.
    first.shutdown().await.unwrap();
    let second = SegmentLog::open(&opts).unwrap();
    second.append(record("r1"), AuditMode::Sync).await.unwrap();
    second.shutdown().await.unwrap();
    assert_eq!(ids(dir.path()), ["r0", "r1"]);
}

/// A folder the gateway's account may not write is told with what to do (made here: as root,
/// whom permissions do not stop, a test cannot meet it on disk).
#[test]
fn a_folder_the_account_may_not_write_is_told_with_its_fix() {
    let denied = super::with_permission_hint(io::Error::from(io::ErrorKind::PermissionDenied), Path::new("/var/lib/x"));
    assert_eq!(denied.kind(), io::ErrorKind::PermissionDenied);
    assert!(denied.to_string().contains("`chown -R splpd: /var/lib/x`"), "{denied}");
    let other = super::with_permission_hint(io::Error::from(io::ErrorKind::NotFound), Path::new("/var/lib/x"));
    assert!(!other.to_string().contains("chown"), "{other}");
}
