//! The hand-off from the exchange path to the writer thread, and the writer's loop: group commit
//! of whole batches, one write and at most one `sync_data` each, tickets answered after that.
//!
//! The hand-off is a mutex-guarded queue of records, framed already by the exchanges that
//! appended them, which the writer swaps out whole, plus a condvar. Its point is to wake the
//! writer rarely. On a gateway with one core, every wake is a futex syscall
//! and a context switch paid for out of the request budget (an earlier JSON-lines sink's wake and write
//! per record cost about a third of a request's CPU). So an appender wakes the writer only when
//! the writer is asleep *and* needs to act:
//! - a record that waits for its ticket (sync, strict, or any record while the log is failing or
//!   the queue is full) wakes it at once: its client is waiting;
//! - an async record wakes it only if it is idle with nothing queued (to start its linger timer),
//!   or when the queue reaches `wake_threshold`. Otherwise the writer wakes by itself when its
//!   linger (2 ms by default) runs out, so under load one wake carries a whole burst of records.
//!   2 ms is well below the 1 s an async record may wait anyway, and long enough to gather
//!   hundreds of records at thousands of exchanges per second;
//! - while the writer is busy writing or syncing, no one wakes it: it looks at the queue again
//!   before it sleeps, which is what makes group commit out of concurrent sync records;
//! - after a batch of a busy gateway (async records, or more than one waiting for its sync)
//!   the writer does not sleep idle but waits out, with nothing queued yet, the linger or the
//!   hold that the next record would have started. That record then need not wake it: under
//!   async load this took the writer's wakes from two per batch to one.
//!
//! While the gateway is busy the writer also holds a sync back, for up to `commit_delay` (5 ms
//! by default), to take more records into it, as PostgreSQL's `commit_delay` and MySQL's
//! `binlog_group_commit_sync_delay` do. It does so only when the batch before had more than one
//! record waiting for its sync (so a lone exchange on a quiet gateway never waits), and only
//! while no runtime worker is idle: the moment one parks ([`Workers`]), the sync starts, since
//! the gateway then has nothing better to do with its CPU. Why: a sync costs far more than the
//! records in it. On the benchmark machine (a virtual machine) each one cost the gateway's core
//! 100–250 µs of CPU (more when the host was busy), mostly exits to the host for the disk's
//! doorbell and interrupts; at saturation the records a batch gathers are those the CPU
//! finishes during the hold and the sync, so the sync's share of the CPU is about its cost over
//! that time: with 1 ms, groups of 11-16 records and a sixth of the CPU; with 5 ms, 40-50
//! records and a twentieth. On a gateway that keeps up, workers park between bursts and no one
//! waits for the hold. The figures and commands are in `benches/RESULTS.md`.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::CommitHook;
use super::files::{ActiveSegment, Faults};
use super::format;
use crate::audit::merkle::{Hash, leaf_hash};
use crate::audit::{AuditError, AuditHealth, AuditMode, AuditTicket, ExchangeRecord, TicketResolver, now_nanos};
use crate::workers::{IdleWatcher, Workers};

thread_local! {
    /// Each appending thread's frame buffer, reused from record to record.
    static FRAME: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The longest pause between retries while writes fail.
const MAX_RETRY: Duration = Duration::from_secs(1);

/// When the writer acts; see [`SegmentOptions`](super::SegmentOptions).
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    pub(super) linger: Duration,
    pub(super) wake_threshold: usize,
    pub(super) capacity: usize,
    pub(super) sync_interval: Duration,
    pub(super) max_unsynced_bytes: usize,
    pub(super) retry_interval: Duration,
    pub(super) commit_delay: Duration,
}

/// What the log handle and its writer share.
#[derive(Debug)]
pub(super) struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Read on every append, so an atomic; the reason is in `failure`.
    pub(super) failing: AtomicBool,
    /// Why and since when writes fail.
    failure: Mutex<Option<(String, i64)>>,
    pub(super) counters: Counters,
    pub(super) faults: Faults,
    timing: Timing,
    /// The runtime's idle workers; one going idle ends a held sync.
    workers: Option<Arc<Workers>>,
    /// The writer is holding a sync and wants to hear when a worker goes idle.
    holding: AtomicBool,
    /// Appenders hash each record's Merkle leaf (the log has a hook to take them).
    hash_leaves: bool,
}

/// The writer's counters.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) batches: AtomicU64,
    pub(super) failed_batches: AtomicU64,
    pub(super) records: AtomicU64,
    pub(super) syncs: AtomicU64,
    pub(super) wakeups: AtomicU64,
    pub(super) segments_started: AtomicU64,
}

#[derive(Debug, Default)]
struct Queue {
    entries: Vec<Entry>,
    /// The queued records, already framed, in the order of `entries`.
    frames: Vec<u8>,
    /// An entry waits for its write: the writer must not linger.
    urgent: bool,
    /// A flush or shutdown waits: the writer must not hold the sync either.
    flushing: bool,
    writer: WriterState,
    /// No more entries are taken; the writer drains the queue and stops.
    closed: bool,
}

/// What the writer is doing, as far as appenders need to know to decide whether to wake it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum WriterState {
    /// Working, or woken and about to look at the queue: no wake needed.
    #[default]
    Busy,
    /// Asleep with an empty queue.
    Idle,
    /// Asleep with async records queued, until its linger runs out.
    Lingering,
    /// Asleep with records that wait for their sync, gathering more into the group.
    Delaying,
}

#[derive(Debug)]
enum Entry {
    Record {
        /// Its frame in the queue's `frames`.
        span: Range<usize>,
        /// Its Merkle leaf hash, when the log has a hook.
        leaf: Option<Hash>,
        /// `sync_data` before `done` resolves.
        sync: bool,
        /// `None` for an async record answered when queued.
        done: Option<TicketResolver>,
    },
    Flush(TicketResolver),
    Shutdown(TicketResolver),
}

impl Queue {
    /// Called by an appender after pushing: whether it must wake the writer. A wake is owed
    /// once; the writer is marked busy so that the appenders after it do not wake it again
    /// before it has run. `worker_idle` is asked only about a record that waits while the
    /// writer holds a sync: with a worker idle there is no reason to hold it.
    fn owes_wake(&mut self, wake_threshold: usize, worker_idle: impl FnOnce() -> bool) -> bool {
        let wake = match self.writer {
            WriterState::Busy => false,
            WriterState::Idle => true,
            WriterState::Lingering => self.urgent || self.entries.len() >= wake_threshold,
            WriterState::Delaying => {
                self.flushing || self.entries.len() >= wake_threshold || (self.urgent && worker_idle())
            }
        };
        if wake {
            self.writer = WriterState::Busy;
        }
        wake
    }
}

impl Shared {
    pub(super) fn new(timing: Timing, workers: Option<Arc<Workers>>, hash_leaves: bool) -> Self {
        Self {
            queue: Mutex::default(),
            wake: Condvar::new(),
            failing: AtomicBool::new(false),
            failure: Mutex::default(),
            counters: Counters::default(),
            faults: Faults::default(),
            timing,
            workers,
            holding: AtomicBool::new(false),
            hash_leaves,
        }
    }

    /// Called by the writer, queue locked, before it holds a sync: whether a worker is idle
    /// now, so the sync should start at once. Until `holding` is cleared, a worker going idle
    /// wakes the writer ([`IdleWatcher`]).
    fn worker_idle_now(&self) -> bool {
        let Some(workers) = &self.workers else {
            return false;
        };
        // SeqCst on both sides: either this sees the worker's count, or the worker's hook
        // sees `holding` and, once the writer waits, wakes it.
        self.holding.store(true, Ordering::SeqCst);
        workers.any_idle()
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves a queue that is still consistent: pushes and
        // swaps are single operations.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn append(&self, record: &ExchangeRecord, mode: AuditMode) -> AuditTicket {
        // Framed and hashed here, on the exchange's thread and before the lock is taken: a record
        // that cannot be framed is refused at once, its allocations are freed by the thread that
        // made them, the leaf is hashed while the bytes are in this core's cache (and on every
        // worker at once rather than in turn on the writer), and the lock is held only to copy
        // the frame in.
        FRAME.with_borrow_mut(|frame| {
            frame.clear();
            if let Err(e) = format::push_frame(frame, record) {
                tracing::error!(error = %e, exchange_id = %record.exchange_id, "audit record cannot be framed");
                return AuditTicket::failed(AuditError::write(e));
            }
            let leaf = self.hash_leaves.then(|| leaf_hash(frame.get(format::FRAME_HEADER_LEN..).unwrap_or_default()));
            self.queue_frame(frame, leaf, mode)
        })
    }

    fn queue_frame(&self, frame: &[u8], leaf: Option<Hash>, mode: AuditMode) -> AuditTicket {
        let sync = mode != AuditMode::Async;
        // While writes fail, an async record answered at once could be answered and then lost;
        // waiting for its write keeps the log fail-closed in every mode.
        let mut waiter = (sync || self.failing.load(Ordering::Acquire)).then(AuditTicket::channel);
        let mut queue = self.lock();
        if queue.closed {
            return AuditTicket::failed(AuditError::Closed);
        }
        if waiter.is_none() && queue.entries.len() >= self.timing.capacity {
            // The disk is behind. Refusing would turn a stall into errors for clients, so the
            // record is taken, and its caller waits for its write: back-pressure reaches clients
            // as latency, and the queue holds at most one more record per waiting exchange.
            waiter = Some(AuditTicket::channel());
        }
        let start = queue.frames.len();
        queue.frames.extend_from_slice(frame);
        let span = start..queue.frames.len();
        let (ticket, done) = match waiter {
            Some((ticket, done)) => (ticket, Some(done)),
            None => (AuditTicket::ok(), None),
        };
        queue.urgent |= done.is_some();
        queue.entries.push(Entry::Record { span, leaf, sync, done });
        self.wake_if_owed(queue);
        ticket
    }

    /// Queues a flush or shutdown marker, which the writer answers after a sync.
    pub(super) fn control(&self, shutdown: bool) -> AuditTicket {
        let (ticket, done) = AuditTicket::channel();
        let mut queue = self.lock();
        if queue.closed {
            return AuditTicket::failed(AuditError::Closed);
        }
        queue.urgent = true;
        queue.flushing = true;
        if shutdown {
            queue.entries.push(Entry::Shutdown(done));
            queue.closed = true;
        } else {
            queue.entries.push(Entry::Flush(done));
        }
        self.wake_if_owed(queue);
        ticket
    }

    /// Stops taking entries; the writer writes what is queued, syncs and stops.
    pub(super) fn close(&self) {
        let mut queue = self.lock();
        queue.closed = true;
        queue.urgent = true;
        self.wake_if_owed(queue);
    }

    fn wake_if_owed(&self, mut queue: MutexGuard<'_, Queue>) {
        let worker_idle = || self.workers.as_ref().is_some_and(|w| w.any_idle());
        let wake = queue.owes_wake(self.timing.wake_threshold, worker_idle)
            || (queue.closed && queue.writer != WriterState::Busy);
        // Notify after unlocking, so that the woken writer does not block on the lock at once.
        drop(queue);
        if wake {
            self.counters.wakeups.fetch_add(1, Ordering::Relaxed);
            self.wake.notify_one();
        }
    }

    /// Entries waiting for the writer.
    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the writer sleeps, and whether it would wait for records it has yet to see
    /// (lingering or holding a sync) rather than simply be idle.
    #[cfg(test)]
    pub(super) fn asleep(&self) -> Option<bool> {
        match self.lock().writer {
            WriterState::Busy => None,
            WriterState::Idle => Some(false),
            WriterState::Lingering | WriterState::Delaying => Some(true),
        }
    }

    pub(super) fn health(&self) -> AuditHealth {
        if self.lock().closed {
            return AuditHealth::Closed;
        }
        if !self.failing.load(Ordering::Acquire) {
            return AuditHealth::Available;
        }
        match &*self.failure.lock().unwrap_or_else(PoisonError::into_inner) {
            Some((reason, since_unix_nanos)) => {
                AuditHealth::Unavailable { reason: reason.clone(), since_unix_nanos: *since_unix_nanos }
            }
            // The writer recovered between the two reads.
            None => AuditHealth::Available,
        }
    }
}

impl IdleWatcher for Shared {
    fn worker_idle(&self) {
        if !self.holding.load(Ordering::SeqCst) {
            return;
        }
        let mut queue = self.lock();
        // With nothing queued yet there is nothing to sync: the writer keeps waiting.
        if queue.writer == WriterState::Delaying && !queue.entries.is_empty() {
            queue.writer = WriterState::Busy;
            drop(queue);
            self.counters.wakeups.fetch_add(1, Ordering::Relaxed);
            self.wake.notify_one();
        }
    }
}

/// Where the writer sends a batch's answers: a task on the exchanges' runtime that gives them out.
pub(super) type Answers = tokio::sync::mpsc::UnboundedSender<Vec<TicketResolver>>;

/// Starts the task on `runtime` that gives out the answers the writer sends it, and returns
/// where to send them. The task ends when the writer does.
///
/// Why: a ticket answered from the writer thread wakes its exchange from outside the runtime,
/// through the runtime's shared queue, once per exchange. Answered by a task of the runtime, the
/// exchanges are woken from inside, into the worker's own queue, and the writer wakes the runtime
/// once per batch. Measured with 1 KiB HTTP/2 answers held and given out in batches of about 64
/// (a stand-in log with no disk), the answers from outside cost 0.90x of the throughput without a
/// log, and the same answers handed to a task 0.98x (`benches/RESULTS.md`, "Eighth round").
pub(super) fn answer_on(runtime: &tokio::runtime::Handle) -> Answers {
    let (answers, mut batches) = tokio::sync::mpsc::unbounded_channel::<Vec<TicketResolver>>();
    runtime.spawn(async move {
        while let Some(batch) = batches.recv().await {
            for done in batch {
                done.resolve(Ok(()));
            }
        }
    });
    answers
}

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) segment: ActiveSegment,
    /// Where this batch's answers go, when the log serves a runtime.
    pub(super) answers: Option<Answers>,
    pub(super) hook: Option<Box<dyn CommitHook>>,
    /// The sequence number the hook sees next.
    pub(super) hooked: u64,
    pub(super) name: String,
    /// The log's writer lock, let go when the writer stops.
    pub(super) _lock: super::WriterLock,
}

/// What the loop keeps between batches, reused so that a batch allocates nothing in the steady
/// state.
#[derive(Default)]
struct Buffers {
    /// The frames of the batch being written.
    frames: Vec<u8>,
    /// Spans in `frames` of records already answered (async ones), to keep if the batch fails.
    answered: Vec<Range<usize>>,
    /// Tickets to answer once the batch is written.
    waiting: Vec<TicketResolver>,
    /// Flushes and shutdowns to answer once the batch is written and the hook has seen it.
    controls: Vec<TicketResolver>,
    /// Frames of answered records from failed batches: their exchanges went on, so they are
    /// written with the next batch rather than lost. Not yet seen by the hook.
    carry: Vec<u8>,
    carry_records: u64,
    /// The entries taken from the queue; swapped with the queue's empty `Vec`.
    entries: Vec<Entry>,
    /// The frames taken with them, likewise.
    taken: Vec<u8>,
    /// The leaf hashes of the batch's records, in order; `None` for the carried ones and when
    /// the log has no hook.
    leaves: Vec<Option<Hash>>,
}

impl Buffers {
    /// Puts the taken frames after the carried ones; returns the records in the batch, how many
    /// of them are already answered, and whether an entry asked for a sync.
    fn gather(&mut self) -> (u64, u64, bool) {
        let Self { frames, answered, waiting, controls, carry, carry_records, entries, taken, leaves } = self;
        frames.clear();
        answered.clear();
        leaves.clear();
        leaves.resize(usize::try_from(*carry_records).unwrap_or(0), None);
        let offset = carry.len();
        if carry.is_empty() {
            // The common case: the taken frames are the batch, without a copy.
            std::mem::swap(frames, taken);
        } else {
            frames.extend_from_slice(carry);
            frames.extend_from_slice(taken);
            answered.push(0..offset);
        }
        taken.clear();
        let mut records = *carry_records;
        let mut answered_records = *carry_records;
        let mut sync = false;
        for entry in entries.drain(..) {
            match entry {
                Entry::Record { span, leaf, sync: wants_sync, done } => {
                    records += 1;
                    leaves.push(leaf);
                    sync |= wants_sync;
                    match done {
                        Some(done) => waiting.push(done),
                        None => {
                            answered.push(span.start + offset..span.end + offset);
                            answered_records += 1;
                        }
                    }
                }
                Entry::Flush(done) | Entry::Shutdown(done) => {
                    sync = true;
                    controls.push(done);
                }
            }
        }
        (records, answered_records, sync)
    }
}

impl Writer {
    pub(super) fn run(mut self) {
        // However the loop ends, even by a panic in the hook, the log closes and the tickets
        // still queued fail instead of hanging.
        let _close = CloseOnExit(Arc::clone(&self.shared));
        let timing = self.shared.timing;
        let mut buffers = Buffers::default();
        let mut linger_until: Option<Instant> = None;
        let mut delay_until: Option<Instant> = None;
        // Records that waited for the last batch's sync: more than one means concurrent exchanges,
        // and a reason to hold the next sync for `commit_delay`.
        let mut last_group: usize = 0;
        // After a batch of a busy gateway: the state in which the writer waits for the next
        // records, until `delay_until` or `linger_until`, before it sleeps for good (see below).
        let mut armed: Option<WriterState> = None;
        let mut unsynced_since: Option<Instant> = None;
        let mut retry_at: Option<Instant> = None;
        let mut backoff = timing.retry_interval;
        loop {
            let closing = {
                let mut queue = self.shared.lock();
                let closing = loop {
                    if queue.closed {
                        break true;
                    }
                    let now = Instant::now();
                    if !queue.entries.is_empty() {
                        if queue.flushing || queue.entries.len() >= timing.wake_threshold {
                            break false;
                        }
                        let until = if queue.urgent {
                            if last_group < 2 || timing.commit_delay.is_zero() || self.shared.worker_idle_now() {
                                break false;
                            }
                            *delay_until.get_or_insert(now + timing.commit_delay)
                        } else {
                            *linger_until.get_or_insert(now + timing.linger)
                        };
                        if now >= until {
                            break false;
                        }
                        queue.writer = if queue.urgent { WriterState::Delaying } else { WriterState::Lingering };
                        queue = self.wait(queue, Some(until - now));
                        continue;
                    }
                    // Nothing queued; still due: a retry while failing, or a sync of async
                    // records written a while ago.
                    let due = if self.shared.failing.load(Ordering::Acquire) {
                        retry_at
                    } else {
                        unsynced_since.map(|since| since + timing.sync_interval)
                    };
                    if due.is_some_and(|due| now >= due) {
                        break false;
                    }
                    // Right after a batch of a busy gateway the writer waits out, with nothing
                    // queued yet, the linger or the hold that the next record would start anyway,
                    // so that this record need not wake it: that halves the writer's wakes under
                    // load, each a context switch on the exchanges' core.
                    let armed_until = match armed {
                        Some(WriterState::Delaying) => delay_until,
                        Some(_) => linger_until,
                        None => None,
                    };
                    if let (Some(state), Some(until)) = (armed, armed_until) {
                        let until = due.map_or(until, |due| due.min(until));
                        if now < until {
                            if state == WriterState::Delaying {
                                // A worker going idle ends the hold once records are queued.
                                self.shared.holding.store(true, Ordering::SeqCst);
                            }
                            queue.writer = state;
                            queue = self.wait(queue, Some(until - now));
                            continue;
                        }
                        armed = None;
                        self.shared.holding.store(false, Ordering::Relaxed);
                    }
                    queue.writer = WriterState::Idle;
                    queue = self.wait(queue, due.map(|due| due - now));
                };
                queue.writer = WriterState::Busy;
                self.shared.holding.store(false, Ordering::Relaxed);
                queue.urgent = false;
                queue.flushing = false;
                std::mem::swap(&mut queue.entries, &mut buffers.entries);
                std::mem::swap(&mut queue.frames, &mut buffers.taken);
                closing
            };
            linger_until = None;
            delay_until = None;

            let failing = self.shared.failing.load(Ordering::Acquire);
            let (records, answered_records, mut sync) = buffers.gather();
            last_group = buffers.waiting.len();
            // What the writer waits for after this batch; nothing after a lone exchange's.
            let now = Instant::now();
            armed = if last_group >= 2 && !timing.commit_delay.is_zero() {
                delay_until = Some(now + timing.commit_delay);
                Some(WriterState::Delaying)
            } else if last_group == 0 && records > 0 {
                linger_until = Some(now + timing.linger);
                Some(WriterState::Lingering)
            } else {
                None
            };
            sync |= closing
                || failing
                || self.segment.unsynced_len() + buffers.frames.len() >= timing.max_unsynced_bytes
                || unsynced_since.is_some_and(|since| since.elapsed() >= timing.sync_interval);
            if buffers.frames.is_empty() && buffers.waiting.is_empty() && buffers.controls.is_empty() && !sync {
                continue;
            }
            let faults = &self.shared.faults;
            match self.segment.write(&buffers.frames, records, sync, failing, faults) {
                Ok(()) => {
                    if closing {
                        // The records are synced; a stopped log's files hold nothing else. A
                        // failure costs nothing but the zeros left, which readers skip.
                        if let Err(e) = self.segment.trim(faults) {
                            tracing::warn!(log = %self.name, error = %e, "cannot cut the audit segment to its records");
                        }
                    }
                    self.committed(&mut buffers, records, sync);
                    retry_at = None;
                    backoff = timing.retry_interval;
                    if sync {
                        unsynced_since = None;
                    } else if records > 0 {
                        unsynced_since.get_or_insert_with(Instant::now);
                    }
                }
                Err(e) => {
                    self.failed(&mut buffers, answered_records, e);
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(MAX_RETRY.max(timing.retry_interval));
                }
            }
            if closing {
                break;
            }
        }
        if buffers.carry_records > 0 || self.segment.unsynced_len() > 0 {
            tracing::error!(
                log = %self.name,
                lost = buffers.carry_records,
                "audit log closed with answered async records that could not be written"
            );
        }
    }

    fn wait<'a>(&self, queue: MutexGuard<'a, Queue>, timeout: Option<Duration>) -> MutexGuard<'a, Queue> {
        match timeout {
            Some(timeout) => self.shared.wake.wait_timeout(queue, timeout).unwrap_or_else(PoisonError::into_inner).0,
            None => self.shared.wake.wait(queue).unwrap_or_else(PoisonError::into_inner),
        }
    }

    fn committed(&mut self, buffers: &mut Buffers, records: u64, synced: bool) {
        let counters = &self.shared.counters;
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters.records.fetch_add(records, Ordering::Relaxed);
        counters.segments_started.store(self.segment.started(), Ordering::Relaxed);
        if synced {
            counters.syncs.fetch_add(1, Ordering::Relaxed);
        }
        buffers.carry.clear();
        buffers.carry_records = 0;
        if self.shared.failing.load(Ordering::Acquire) {
            *self.shared.failure.lock().unwrap_or_else(PoisonError::into_inner) = None;
            self.shared.failing.store(false, Ordering::Release);
            tracing::info!(log = %self.name, "audit log writable again; exchanges resume");
        }
        self.answer(&mut buffers.waiting);
        // The hook runs after the tickets are answered, so that hashing never delays an answer.
        if let Some(hook) = self.hook.as_mut() {
            let leaves = buffers.leaves.iter().copied().chain(std::iter::repeat(None));
            for ((seq, payload), leaf) in (self.hooked..).zip(format::payloads(&buffers.frames)).zip(leaves) {
                // Records carried over from a failed batch are hashed here.
                hook.appended(seq, payload, &leaf.unwrap_or_else(|| leaf_hash(payload)));
            }
        }
        self.hooked += records;
        debug_assert_eq!(self.hooked, self.segment.next_seq(), "the hook and the files disagree on the log's length");
        if synced && let Some(hook) = self.hook.as_mut() {
            hook.durable(self.hooked);
        }
        // A flush or shutdown is answered last: everything before it is durable and in the
        // hook's hands (the Merkle tree a last checkpoint signs).
        for done in buffers.controls.drain(..) {
            done.resolve(Ok(()));
        }
    }

    /// Answers `waiting` with success: through the runtime's task when there is one (and it
    /// still runs), else here.
    fn answer(&self, waiting: &mut Vec<TicketResolver>) {
        if waiting.is_empty() {
            return;
        }
        if let Some(answers) = &self.answers {
            match answers.send(std::mem::take(waiting)) {
                Ok(()) => return,
                Err(unsent) => *waiting = unsent.0,
            }
        }
        for done in waiting.drain(..) {
            done.resolve(Ok(()));
        }
    }

    fn failed(&mut self, buffers: &mut Buffers, answered_records: u64, error: std::io::Error) {
        let mut carry = Vec::new();
        for span in &buffers.answered {
            carry.extend_from_slice(buffers.frames.get(span.clone()).unwrap_or_default());
        }
        buffers.carry = carry;
        buffers.carry_records = answered_records;
        self.shared.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
        let reason = error.to_string();
        // Logged on the change only: a failing disk under load would flood the log otherwise.
        if !self.shared.failing.load(Ordering::Acquire) {
            tracing::error!(log = %self.name, error = %reason, "audit log cannot be written; refusing exchanges");
        }
        {
            // The reason goes in before the flag, so that a health check never sees the flag alone.
            let mut failure = self.shared.failure.lock().unwrap_or_else(PoisonError::into_inner);
            let since = failure.as_ref().map_or_else(now_nanos, |(_, since)| *since);
            *failure = Some((reason, since));
        }
        self.shared.failing.store(true, Ordering::Release);
        let error = AuditError::write(error);
        for done in buffers.waiting.drain(..).chain(buffers.controls.drain(..)) {
            done.resolve(Err(error.clone()));
        }
    }
}

/// Closes the log when the writer stops, however it stops: tickets still queued fail with
/// [`AuditError::Closed`] as their resolvers are dropped, and later appends are refused.
struct CloseOnExit(Arc<Shared>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        let mut queue = self.0.lock();
        queue.closed = true;
        let entries = std::mem::take(&mut queue.entries);
        queue.frames = Vec::new();
        drop(queue);
        drop(entries);
    }
}
