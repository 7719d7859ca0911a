//! An [`AuditSink`] that writes each record as one JSON object per line to a file: readable with
//! `jq`, and the log the gateway runs on until the segment-file Merkle log replaces it behind the
//! same trait. Records go over a bounded channel to one writer thread that commits them in groups.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::runtime::Handle;
use tokio::sync::mpsc::{self, error::TrySendError};

use super::verify::RecordJson;
use super::{AuditError, AuditHealth, AuditMode, AuditSink, AuditTicket, ExchangeRecord, TicketResolver, now_nanos};

/// Records that may wait for the writer before appends start waiting for room.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;

/// Writes audit records as JSON lines, with group commit.
///
/// The writer is a dedicated OS thread rather than a tokio task: it spends its life in `write`
/// and `fsync`, which must never run on a runtime thread, and a thread of its own saves a
/// `spawn_blocking` hop per batch. While it syncs one batch the next one queues up, so under load
/// one `fsync` covers many records.
#[derive(Debug)]
pub struct JsonLinesSink {
    tx: mpsc::Sender<Message>,
    shared: Arc<Shared>,
}

/// Counters of a [`JsonLinesSink`]'s writer, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonLinesStats {
    /// Batches written in full.
    pub batches: u64,
    /// Batches that failed to be written or synced.
    pub failed_batches: u64,
    /// Records written.
    pub records: u64,
    /// `sync_data` calls that succeeded.
    pub syncs: u64,
}

impl JsonLinesSink {
    /// Opens (creating it and its directory if missing) the file at `path` for appending, and
    /// starts the writer. Up to `capacity` records queue for the writer before appends wait for
    /// room.
    ///
    /// Does blocking file I/O: call it at startup, not on the request path. Failing here, rather
    /// than at the first exchange, tells the operator at once that the log is misconfigured.
    pub fn open(path: &Path, capacity: usize) -> io::Result<Self> {
        let target = FileTarget::open(path.to_owned())?;
        Self::start(target, capacity, path.display().to_string())
    }

    fn start(target: impl LogTarget, capacity: usize, name: String) -> io::Result<Self> {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let shared = Arc::new(Shared::default());
        let writer = Writer { rx, target, shared: Arc::clone(&shared), max_batch: capacity, name };
        std::thread::Builder::new().name("splpd-audit".to_owned()).spawn(move || writer.run())?;
        Ok(Self { tx, shared })
    }

    /// The writer's counters so far.
    pub fn stats(&self) -> JsonLinesStats {
        let s = &self.shared;
        JsonLinesStats {
            batches: s.batches.load(Ordering::Relaxed),
            failed_batches: s.failed_batches.load(Ordering::Relaxed),
            records: s.records.load(Ordering::Relaxed),
            syncs: s.syncs.load(Ordering::Relaxed),
        }
    }

    /// Queues a message; `ticket` is what the caller gets when the message went in at once.
    fn send(&self, message: Message, ticket: AuditTicket) -> AuditTicket {
        match self.tx.try_send(message) {
            Ok(()) => ticket,
            Err(TrySendError::Closed(_)) => AuditTicket::failed(AuditError::Closed),
            Err(TrySendError::Full(message)) => self.send_when_room(message, ticket),
        }
    }

    /// A full queue means the disk is behind. Refusing the exchange then would turn a short
    /// stall into errors for clients, so instead the record waits for room, and its caller with
    /// it: back-pressure reaches the clients as latency, and the queue stays bounded.
    ///
    /// The wait runs in a task of its own rather than inside the ticket, so that once `append`
    /// has returned the record reaches the log even if the caller drops its ticket.
    fn send_when_room(&self, message: Message, ticket: AuditTicket) -> AuditTicket {
        let tx = self.tx.clone();
        let resolves_itself = message.resolves_its_ticket();
        let Ok(runtime) = Handle::try_current() else {
            // Not on a runtime thread, so blocking here holds up no async work.
            return match tx.blocking_send(message) {
                Ok(()) => ticket,
                Err(_) => AuditTicket::failed(AuditError::Closed),
            };
        };
        if resolves_itself {
            // The writer resolves the ticket; if the channel closes first, the resolver is
            // dropped with the message and the ticket fails closed.
            runtime.spawn(async move {
                let _ = tx.send(message).await;
            });
            ticket
        } else {
            // An async record is answered once queued; that point is now in the task.
            let (queued, resolver) = AuditTicket::channel();
            runtime.spawn(async move {
                resolver.resolve(tx.send(message).await.map_err(|_| AuditError::Closed));
            });
            queued
        }
    }
}

impl AuditSink for JsonLinesSink {
    fn append(&self, record: ExchangeRecord, mode: AuditMode) -> AuditTicket {
        if self.shared.closed.load(Ordering::Acquire) {
            return AuditTicket::failed(AuditError::Closed);
        }
        let sync = mode != AuditMode::Async;
        // While writes fail, an async record acknowledged at once could be answered and then
        // lost; making it wait for its write keeps the log fail-closed in every mode.
        let wait = sync || self.shared.failing.load(Ordering::Acquire);
        let (ticket, done) = if wait {
            let (ticket, resolver) = AuditTicket::channel();
            (ticket, Some(resolver))
        } else {
            (AuditTicket::ok(), None)
        };
        self.send(Message::Record { record, sync, done }, ticket)
    }

    fn flush(&self) -> AuditTicket {
        if self.shared.closed.load(Ordering::Acquire) {
            return AuditTicket::failed(AuditError::Closed);
        }
        let (ticket, resolver) = AuditTicket::channel();
        self.send(Message::Flush(resolver), ticket)
    }

    fn health(&self) -> AuditHealth {
        if self.shared.closed.load(Ordering::Acquire) || self.tx.is_closed() {
            return AuditHealth::Closed;
        }
        if !self.shared.failing.load(Ordering::Acquire) {
            return AuditHealth::Available;
        }
        let failure = self.shared.failure.lock().unwrap_or_else(PoisonError::into_inner);
        match &*failure {
            Some((reason, since_unix_nanos)) => {
                AuditHealth::Unavailable { reason: reason.clone(), since_unix_nanos: *since_unix_nanos }
            }
            // The writer recovered between the two reads.
            None => AuditHealth::Available,
        }
    }

    fn shutdown(&self) -> AuditTicket {
        self.shared.closed.store(true, Ordering::Release);
        let (ticket, resolver) = AuditTicket::channel();
        self.send(Message::Shutdown(resolver), ticket)
    }
}

/// State the sink and its writer share. Flags are atomics because `append` reads them on every
/// exchange; the mutex is for the readiness probe only.
#[derive(Debug, Default)]
struct Shared {
    closed: AtomicBool,
    failing: AtomicBool,
    /// Why and since when writes fail.
    failure: Mutex<Option<(String, i64)>>,
    batches: AtomicU64,
    failed_batches: AtomicU64,
    records: AtomicU64,
    syncs: AtomicU64,
}

// Records are by far the common message; boxing them to shrink the rare flush and shutdown would
// cost an allocation per exchange.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Message {
    Record {
        record: ExchangeRecord,
        /// `sync_data` before `done` resolves.
        sync: bool,
        /// `None` for an async record acknowledged when queued.
        done: Option<TicketResolver>,
    },
    Flush(TicketResolver),
    Shutdown(TicketResolver),
}

impl Message {
    fn resolves_its_ticket(&self) -> bool {
        !matches!(self, Self::Record { done: None, .. })
    }
}

/// Where the writer puts its batches: the file in production, a fake in tests.
trait LogTarget: Send + 'static {
    /// Writes `lines` in full and, if `sync`, makes them durable; on error the batch counts as
    /// not written, and the target makes sure none of it shows in the log.
    fn write_batch(&mut self, lines: &[u8], sync: bool) -> io::Result<()>;
}

struct Writer<T> {
    rx: mpsc::Receiver<Message>,
    target: T,
    shared: Arc<Shared>,
    max_batch: usize,
    name: String,
}

impl<T: LogTarget> Writer<T> {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut lines = Vec::new();
        // Lines of async records from failed batches: their exchanges were answered, so they
        // are written again with the next batch instead of being lost.
        let mut carry: Vec<u8> = Vec::new();
        let mut carried_records = 0u64;
        let mut unsynced = false;
        let mut closing = false;
        loop {
            let Some(mut message) = self.rx.blocking_recv() else { break };
            // Group commit: take whatever else is queued, so that one write and one sync serve
            // it all. Once shutdown is seen, new messages are refused and the queue drained.
            loop {
                if !closing && matches!(message, Message::Shutdown(_)) {
                    closing = true;
                    self.rx.close();
                }
                batch.push(message);
                if !closing && batch.len() >= self.max_batch {
                    break;
                }
                match self.rx.try_recv() {
                    Ok(next) => message = next,
                    Err(_) => break,
                }
            }

            lines.clear();
            lines.extend_from_slice(&carry);
            let mut async_lines: Vec<Range<usize>> = Vec::new();
            let mut waiting = Vec::new();
            let mut sync = closing;
            let mut records = carried_records;
            let mut async_records = 0u64;
            for message in batch.drain(..) {
                match message {
                    Message::Record { record, sync: wants_sync, done } => {
                        let start = lines.len();
                        if let Err(e) = encode(&record, &mut lines) {
                            lines.truncate(start);
                            tracing::error!(
                                error = %e,
                                exchange_id = %record.exchange_id,
                                "audit record cannot be encoded"
                            );
                            if let Some(done) = done {
                                done.resolve(Err(AuditError::write(e)));
                            }
                            continue;
                        }
                        records += 1;
                        sync |= wants_sync;
                        match done {
                            Some(done) => waiting.push(done),
                            None => {
                                async_lines.push(start..lines.len());
                                async_records += 1;
                            }
                        }
                    }
                    Message::Flush(done) | Message::Shutdown(done) => {
                        sync = true;
                        waiting.push(done);
                    }
                }
            }

            match self.target.write_batch(&lines, sync) {
                Ok(()) => {
                    carry.clear();
                    carried_records = 0;
                    unsynced = !sync;
                    self.succeeded(records, sync);
                    for done in waiting {
                        done.resolve(Ok(()));
                    }
                }
                Err(e) => {
                    let mut next = lines[..carry.len()].to_vec();
                    for range in async_lines {
                        next.extend_from_slice(&lines[range]);
                    }
                    carry = next;
                    carried_records += async_records;
                    self.failed(e.to_string());
                    let error = AuditError::write(e);
                    for done in waiting {
                        done.resolve(Err(error.clone()));
                    }
                }
            }
            if closing {
                break;
            }
        }
        // Every sender is gone (or shutdown drained the queue): leave nothing unwritten or
        // unsynced that a last attempt can still save.
        self.shared.closed.store(true, Ordering::Release);
        if (unsynced || !carry.is_empty()) && self.target.write_batch(&carry, true).is_err() {
            tracing::error!(log = %self.name, lost = carried_records, "audit log closed with async records unwritten");
        }
    }

    fn succeeded(&self, records: u64, synced: bool) {
        let s = &self.shared;
        s.batches.fetch_add(1, Ordering::Relaxed);
        s.records.fetch_add(records, Ordering::Relaxed);
        if synced {
            s.syncs.fetch_add(1, Ordering::Relaxed);
        }
        if s.failing.swap(false, Ordering::AcqRel) {
            *s.failure.lock().unwrap_or_else(PoisonError::into_inner) = None;
            tracing::info!(log = %self.name, "audit log writable again; exchanges resume");
        }
    }

    fn failed(&self, reason: String) {
        let s = &self.shared;
        s.failed_batches.fetch_add(1, Ordering::Relaxed);
        // Logged on the change only: a failing disk under load would otherwise flood the log.
        if !s.failing.load(Ordering::Acquire) {
            tracing::error!(log = %self.name, error = %reason, "audit log cannot be written; refusing exchanges");
        }
        // The reason goes in before the flag, so that a health check never sees the flag alone.
        {
            let mut failure = s.failure.lock().unwrap_or_else(PoisonError::into_inner);
            let since = failure.as_ref().map_or_else(now_nanos, |(_, since)| *since);
            *failure = Some((reason, since));
        }
        s.failing.store(true, Ordering::Release);
    }
}

/// The log file. Each batch is all or nothing: a failed one is cut off again, so that the file
/// holds only whole lines of records whose tickets succeeded (or async ones).
struct FileTarget {
    path: PathBuf,
    file: Option<File>,
    /// Length of the file up to the end of the last batch written in full.
    good_len: u64,
    /// A failed batch could not be cut off; that must happen before anything else is written.
    cut_pending: bool,
    /// Only a regular file can be cut; a device or FIFO (`/dev/full`, a shipping pipe) cannot,
    /// and must not stay failed forever for trying.
    regular: bool,
}

impl FileTarget {
    fn open(path: PathBuf) -> io::Result<Self> {
        let mut target = Self { path, file: None, good_len: 0, cut_pending: false, regular: true };
        target.ensure_open()?;
        Ok(target)
    }

    fn ensure_open(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            if let Some(parent) = self.path.parent()
                && !parent.as_os_str().is_empty()
            {
                fs::create_dir_all(parent)?;
            }
            let mut file = OpenOptions::new().read(true).append(true).create(true).open(&self.path)?;
            let metadata = file.metadata()?;
            self.regular = metadata.is_file();
            if !self.regular {
                self.cut_pending = false;
            } else if self.cut_pending {
                file.set_len(self.good_len)?;
                self.cut_pending = false;
            } else {
                self.good_len = metadata.len();
                // A crash mid-write leaves a torn last line; end it so that the next record
                // starts a line of its own instead of being glued to the torn one.
                if self.good_len > 0 {
                    let mut last = [0u8; 1];
                    file.seek(SeekFrom::End(-1))?;
                    file.read_exact(&mut last)?;
                    if last[0] != b'\n' {
                        file.write_all(b"\n")?;
                        self.good_len += 1;
                    }
                }
            }
            self.file = Some(file);
        }
        // Just set when it was missing.
        self.file.as_mut().ok_or_else(|| io::Error::other("audit log file not open"))
    }

    fn try_write(&mut self, lines: &[u8], sync: bool) -> io::Result<()> {
        let file = self.ensure_open()?;
        // One write for the whole batch: `lines` is the buffer, so there is nothing to flush.
        file.write_all(lines)?;
        if sync {
            file.sync_data()?;
        }
        self.good_len += lines.len() as u64;
        Ok(())
    }
}

impl LogTarget for FileTarget {
    fn write_batch(&mut self, lines: &[u8], sync: bool) -> io::Result<()> {
        let result = self.try_write(lines, sync);
        if result.is_err() {
            // After a failed write or fsync the handle cannot be trusted (Linux may have dropped
            // the dirty pages and cleared the error), so cut the batch off and reopen next time.
            if let Some(file) = self.file.take()
                && self.regular
                && file.set_len(self.good_len).is_err()
            {
                self.cut_pending = true;
            }
        }
        result
    }
}

/// Appends `record` to `out` as one JSON line.
fn encode(record: &ExchangeRecord, out: &mut Vec<u8>) -> io::Result<()> {
    serde_json::to_writer(&mut *out, &RecordJson(record))?;
    out.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::mpsc as std_mpsc;

    use futures_util::FutureExt as _;
    use http::{Method, Uri};
    use serde_json::Value;

    use super::*;
    use crate::audit::RecordBuilder;
    use crate::config::{ConnectionType as ConfigConnection, Protocol as ConfigProtocol};

    const NIK: &str = "3201234567890001";

    fn record(id: &str) -> ExchangeRecord {
        ExchangeRecord { exchange_id: id.to_owned(), received_at_unix_nanos: 1, ..ExchangeRecord::default() }
    }

    fn parse_lines(bytes: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(bytes).unwrap();
        text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }

    fn ids(bytes: &[u8]) -> Vec<String> {
        parse_lines(bytes).iter().map(|v| v["exchange_id"].as_str().unwrap().to_owned()).collect()
    }

    /// A target in memory that can be made to fail, and to hold its first batch until released.
    #[derive(Clone, Default)]
    struct Fake(Arc<FakeState>);

    #[derive(Default)]
    struct FakeState {
        written: Mutex<Vec<u8>>,
        /// (records, synced) of each batch written.
        batches: Mutex<Vec<(usize, bool)>>,
        fail: AtomicBool,
        gate: Mutex<Option<(std_mpsc::Sender<()>, std_mpsc::Receiver<()>)>>,
    }

    /// The test's side of a gate: learns that the first batch is being written, then lets it go.
    struct Gate {
        entered: std_mpsc::Receiver<()>,
        release: std_mpsc::Sender<()>,
    }

    impl Fake {
        fn gated() -> (Self, Gate) {
            let fake = Self::default();
            let (entered_tx, entered) = std_mpsc::channel();
            let (release, release_rx) = std_mpsc::channel();
            *fake.0.gate.lock().unwrap() = Some((entered_tx, release_rx));
            (fake, Gate { entered, release })
        }
        fn written(&self) -> Vec<u8> {
            self.0.written.lock().unwrap().clone()
        }
        fn batches(&self) -> Vec<(usize, bool)> {
            self.0.batches.lock().unwrap().clone()
        }
        fn set_failing(&self, fail: bool) {
            self.0.fail.store(fail, Ordering::SeqCst);
        }
    }

    impl LogTarget for Fake {
        fn write_batch(&mut self, lines: &[u8], sync: bool) -> io::Result<()> {
            let gate = self.0.gate.lock().unwrap().take();
            if let Some((entered, release)) = gate {
                entered.send(()).unwrap();
                release.recv().unwrap();
            }
            if self.0.fail.load(Ordering::SeqCst) {
                return Err(io::Error::other("disk on fire"));
            }
            self.0.written.lock().unwrap().extend_from_slice(lines);
            let records = lines.iter().filter(|b| **b == b'\n').count();
            self.0.batches.lock().unwrap().push((records, sync));
            Ok(())
        }
    }

    impl JsonLinesSink {
        fn queued(&self) -> usize {
            self.tx.max_capacity() - self.tx.capacity()
        }
    }

    fn fake_sink(fake: &Fake, capacity: usize) -> JsonLinesSink {
        JsonLinesSink::start(fake.clone(), capacity, "fake".to_owned()).unwrap()
    }

    #[tokio::test]
    async fn lines_are_json_with_readable_fields_and_no_raw_query() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/audit.jsonl");
        let sink = JsonLinesSink::open(&path, 16).unwrap();

        let mut b = RecordBuilder::new(&"ID/PEMDA/1602/gw1".parse().unwrap(), 1_700_000_000_000_000_001);
        b.set_exchange_id(uuid::Uuid::nil());
        b.set_client(&"ID/PEMDA/1602/DINKES".parse().unwrap());
        b.set_client_cert_sha256([0xAB; 32]);
        b.set_connection_type(ConfigConnection::Mtls);
        b.set_service(&"ID/PEMDA/1602/DISDUKCAPIL/nik-verify".parse().unwrap(), ConfigProtocol::Rest);
        let uri: Uri = format!("/r1/ID/PEMDA/1602/DISDUKCAPIL/nik-verify/cek?nik={NIK}").parse().unwrap();
        b.set_request(&Method::GET, &uri);
        b.set_status(http::StatusCode::FORBIDDEN);
        b.set_error_type("Client.AccessDenied");
        sink.append(b.finish_at(1_700_000_000_500_000_000), AuditMode::Sync).await.unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(NIK), "the raw query reached the log: {text}");
        assert!(text.ends_with('\n'));
        let lines = parse_lines(text.as_bytes());
        assert_eq!(lines.len(), 1);
        let v = &lines[0];
        assert_eq!(v["exchange_id"], "00000000-0000-0000-0000-000000000000");
        assert_eq!(v["received_at"], "2023-11-14T22:13:20.000000001Z");
        assert_eq!(v["received_at_unix_nanos"], 1_700_000_000_000_000_001_i64);
        assert_eq!(v["responded_at"], "2023-11-14T22:13:20.500000000Z");
        assert_eq!(v["forwarded_at"], Value::Null);
        assert_eq!(v["forwarded_at_unix_nanos"], 0);
        assert_eq!(v["client"], "ID/PEMDA/1602/DINKES");
        assert_eq!(v["client_cert_sha256"], "ab".repeat(32));
        assert_eq!(v["connection_type"], "mtls");
        assert_eq!(v["protocol"], "rest");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/r1/ID/PEMDA/1602/DISDUKCAPIL/nik-verify/cek");
        let query_hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, format!("nik={NIK}").as_bytes());
        assert_eq!(v["query_sha256"], hex::encode(query_hash));
        assert_eq!(v["status"], 403);
        assert_eq!(v["grpc_status"], Value::Null);
        assert_eq!(v["error_type"], "Client.AccessDenied");
        assert_eq!(v["request_hash"], "");
        assert_eq!(v["gateway"], "ID/PEMDA/1602/gw1");
        assert_eq!(v.as_object().unwrap().len(), 34);
    }

    #[tokio::test]
    async fn sync_ticket_resolves_only_once_its_line_is_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = JsonLinesSink::open(&path, 16).unwrap();
        for i in 0..5 {
            let id = format!("sync-{i}");
            sink.append(record(&id), AuditMode::Sync).await.unwrap();
            let on_disk = ids(&std::fs::read(&path).unwrap());
            assert_eq!(on_disk.last(), Some(&id));
            assert_eq!(on_disk.len(), i + 1);
        }
        let stats = sink.stats();
        assert_eq!(stats.records, 5);
        assert!(stats.syncs >= 1 && stats.syncs == stats.batches, "{stats:?}");
    }

    #[tokio::test]
    async fn async_ticket_resolves_at_once_while_a_sync_one_waits_for_the_write() {
        let (fake, gate) = Fake::gated();
        let sink = fake_sink(&fake, 16);
        let mut first = sink.append(record("held"), AuditMode::Sync);
        gate.entered.recv().unwrap();

        assert!(matches!(sink.append(record("async"), AuditMode::Async).now_or_never(), Some(Ok(()))));
        let mut strict = sink.append(record("strict"), AuditMode::Strict);
        assert!((&mut first).now_or_never().is_none());
        assert!((&mut strict).now_or_never().is_none());

        gate.release.send(()).unwrap();
        first.await.unwrap();
        strict.await.unwrap();
        assert_eq!(ids(&fake.written()), ["held", "async", "strict"]);
        // The async record rode in the strict one's batch, synced with it.
        assert_eq!(fake.batches(), [(1, true), (2, true)]);
    }

    #[tokio::test]
    async fn async_only_batches_are_not_synced_until_a_flush() {
        let fake = Fake::default();
        let sink = fake_sink(&fake, 16);
        sink.append(record("a"), AuditMode::Async).await.unwrap();
        while fake.batches().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(fake.batches(), [(1, false)]);
        sink.flush().await.unwrap();
        assert_eq!(fake.batches(), [(1, false), (0, true)]);
        assert_eq!(ids(&fake.written()), ["a"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_land_once_each_in_one_group_commit() {
        const N: usize = 200;
        let (fake, gate) = Fake::gated();
        let sink = Arc::new(fake_sink(&fake, 256));
        let first = sink.append(record("first"), AuditMode::Sync);
        gate.entered.recv().unwrap();

        let tasks: Vec<_> = (0..N)
            .map(|i| {
                let sink = Arc::clone(&sink);
                tokio::spawn(async move { sink.append(record(&format!("r{i}")), AuditMode::Sync).await })
            })
            .collect();
        while sink.queued() < N {
            tokio::task::yield_now().await;
        }
        gate.release.send(()).unwrap();
        first.await.unwrap();
        for task in tasks {
            task.await.unwrap().unwrap();
        }

        let written = ids(&fake.written());
        assert_eq!(written.len(), N + 1);
        let unique: HashSet<_> = written.iter().collect();
        assert_eq!(unique.len(), N + 1);
        assert_eq!(fake.batches(), [(1, true), (N, true)]);
        assert_eq!(sink.stats(), JsonLinesStats { batches: 2, failed_batches: 0, records: N as u64 + 1, syncs: 2 });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_to_a_file_land_exactly_once() {
        const N: usize = 500;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = Arc::new(JsonLinesSink::open(&path, 64).unwrap());
        let tasks: Vec<_> = (0..N)
            .map(|i| {
                let sink = Arc::clone(&sink);
                let mode = if i % 3 == 0 { AuditMode::Async } else { AuditMode::Sync };
                tokio::spawn(async move { sink.append(record(&format!("r{i}")), mode).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        sink.flush().await.unwrap();
        let written = ids(&std::fs::read(&path).unwrap());
        let unique: HashSet<_> = written.iter().cloned().collect();
        assert_eq!((written.len(), unique.len()), (N, N));
        assert_eq!(sink.stats().records, N as u64);
    }

    #[tokio::test]
    async fn a_full_queue_makes_appends_wait_rather_than_fail() {
        let (fake, gate) = Fake::gated();
        let sink = fake_sink(&fake, 2);
        let held = sink.append(record("held"), AuditMode::Sync);
        gate.entered.recv().unwrap();
        let queued: Vec<_> = ["q1", "q2"].iter().map(|id| sink.append(record(id), AuditMode::Async)).collect();
        assert_eq!(sink.queued(), 2);

        // No room: the async record is acknowledged only once it is in the queue.
        let mut waiting_async = sink.append(record("w1"), AuditMode::Async);
        let waiting_sync = sink.append(record("w2"), AuditMode::Sync);
        tokio::task::yield_now().await;
        assert!((&mut waiting_async).now_or_never().is_none());

        gate.release.send(()).unwrap();
        held.await.unwrap();
        for ticket in queued {
            ticket.await.unwrap();
        }
        waiting_async.await.unwrap();
        waiting_sync.await.unwrap();
        let mut written = ids(&fake.written());
        written.sort();
        assert_eq!(written, ["held", "q1", "q2", "w1", "w2"]);
    }

    #[tokio::test]
    async fn failing_writes_refuse_records_until_writing_works_again() {
        let fake = Fake::default();
        let sink = fake_sink(&fake, 16);
        sink.append(record("before"), AuditMode::Sync).await.unwrap();
        assert_eq!(sink.health(), AuditHealth::Available);

        fake.set_failing(true);
        // Acknowledged at once: the sink does not know yet that the disk is gone.
        sink.append(record("async-in-failed-batch"), AuditMode::Async).await.unwrap();
        let err = sink.append(record("refused"), AuditMode::Sync).await.unwrap_err();
        assert!(matches!(&err, AuditError::Write(e) if e.to_string() == "disk on fire"), "{err:?}");
        match sink.health() {
            AuditHealth::Unavailable { reason, since_unix_nanos } => {
                assert_eq!(reason, "disk on fire");
                assert!(since_unix_nanos > 0);
            }
            other => panic!("health {other:?}"),
        }
        // Now that it knows, an async record waits for its write, and is refused with it.
        let async_while_failing = sink.append(record("async-refused"), AuditMode::Async);
        assert!(matches!(async_while_failing.await, Err(AuditError::Write(_))));
        assert!(sink.flush().await.is_err());

        fake.set_failing(false);
        sink.append(record("after"), AuditMode::Sync).await.unwrap();
        assert_eq!(sink.health(), AuditHealth::Available);
        // The answered async record was written late but not lost; refused ones never appear.
        assert_eq!(ids(&fake.written()), ["before", "async-in-failed-batch", "after"]);
        let stats = sink.stats();
        assert!(stats.failed_batches >= 2, "{stats:?}");
        assert_eq!(stats.records, 3, "{stats:?}");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_full_disk_fails_tickets_and_marks_the_log_unavailable() {
        // /dev/full accepts the open and fails every write with ENOSPC, as a full disk does.
        let path = Path::new("/dev/full");
        if !path.exists() {
            return;
        }
        let sink = JsonLinesSink::open(path, 16).unwrap();
        for _ in 0..2 {
            let err = sink.append(record("x"), AuditMode::Sync).await.unwrap_err();
            let AuditError::Write(io) = err else { panic!("{err:?}") };
            assert_eq!(io.raw_os_error(), Some(28), "{io}");
        }
        assert!(matches!(sink.health(), AuditHealth::Unavailable { .. }));
    }

    #[test]
    fn a_directory_as_the_log_path_fails_at_open() {
        let dir = tempfile::tempdir().unwrap();
        assert!(JsonLinesSink::open(dir.path(), 16).is_err());
    }

    #[tokio::test]
    async fn shutdown_writes_what_was_queued_then_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = JsonLinesSink::open(&path, 16).unwrap();
        for i in 0..10 {
            sink.append(record(&format!("r{i}")), AuditMode::Async).await.unwrap();
        }
        sink.shutdown().await.unwrap();
        assert_eq!(ids(&std::fs::read(&path).unwrap()).len(), 10);
        assert!(matches!(sink.append(record("late"), AuditMode::Async).await, Err(AuditError::Closed)));
        assert_eq!(sink.health(), AuditHealth::Closed);
        assert!(sink.stats().syncs >= 1);
    }

    #[tokio::test]
    async fn a_torn_last_line_is_ended_before_new_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, "{\"exchange_id\":\"whole\"}\n{\"exchange_id\":\"to").unwrap();
        let sink = JsonLinesSink::open(&path, 16).unwrap();
        sink.append(record("new"), AuditMode::Sync).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1], "{\"exchange_id\":\"to");
        assert_eq!(ids(lines[2].as_bytes()), ["new"]);
    }

    #[tokio::test]
    async fn dropping_the_sink_makes_async_records_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = JsonLinesSink::open(&path, 16).unwrap();
        sink.append(record("a"), AuditMode::Async).await.unwrap();
        drop(sink);
        // The writer finishes on its own thread; wait for it without a fixed sleep's guess.
        for _ in 0..500 {
            if std::fs::read(&path).is_ok_and(|b| !b.is_empty()) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(ids(&std::fs::read(&path).unwrap()), ["a"]);
    }
}
