//! An [`AuditSink`] that keeps records in memory, for tests of the stages around the audit stage:
//! they can read back what was logged, switch the sink to failing to prove that they fail
//! closed, and hold its tickets back, as a slow disk would, to see what waits for them.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{AuditError, AuditHealth, AuditMode, AuditSink, AuditTicket, ExchangeRecord, TicketResolver};

/// Records kept in a `Vec`, each with the mode it was appended in. Never for production: nothing
/// survives the process.
#[derive(Debug, Default)]
pub struct MemorySink {
    appended: Mutex<Vec<(ExchangeRecord, AuditMode)>>,
    failing: AtomicBool,
    closed: AtomicBool,
    /// While holding, the tickets of the appends since; `None` when not holding.
    held: Mutex<Option<Vec<TicketResolver>>>,
}

impl MemorySink {
    /// An empty, working sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every following append fail as a broken disk would (or work again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// The records taken so far, in order.
    pub fn records(&self) -> Vec<ExchangeRecord> {
        self.lock().iter().map(|(record, _)| record.clone()).collect()
    }

    /// The records taken so far, each with the mode it was appended in.
    pub fn appended(&self) -> Vec<(ExchangeRecord, AuditMode)> {
        self.lock().clone()
    }

    /// Makes the tickets of the following appends wait, as for a slow disk, until
    /// [`release`](Self::release). The records are taken at once.
    pub fn hold(&self) {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert_with(Vec::new);
    }

    /// Answers the tickets held since [`hold`](Self::hold), and holds no more.
    pub fn release(&self) {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner).take();
        for done in held.into_iter().flatten() {
            done.resolve(Ok(()));
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(ExchangeRecord, AuditMode)>> {
        // A test that panicked while holding the lock leaves a usable Vec behind.
        self.appended.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn refusal(&self) -> Option<AuditError> {
        if self.closed.load(Ordering::SeqCst) {
            Some(AuditError::Closed)
        } else if self.failing.load(Ordering::SeqCst) {
            Some(AuditError::write(io::Error::other("MemorySink set to fail")))
        } else {
            None
        }
    }
}

impl AuditSink for MemorySink {
    fn append(&self, record: ExchangeRecord, mode: AuditMode) -> AuditTicket {
        if let Some(error) = self.refusal() {
            return AuditTicket::failed(error);
        }
        self.lock().push((record, mode));
        match self.held.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            Some(held) => {
                let (ticket, done) = AuditTicket::channel();
                held.push(done);
                ticket
            }
            None => AuditTicket::ok(),
        }
    }

    fn flush(&self) -> AuditTicket {
        self.refusal().map_or_else(AuditTicket::ok, AuditTicket::failed)
    }

    fn health(&self) -> AuditHealth {
        if self.closed.load(Ordering::SeqCst) {
            AuditHealth::Closed
        } else if self.failing.load(Ordering::SeqCst) {
            AuditHealth::Unavailable { reason: "MemorySink set to fail".to_owned(), since_unix_nanos: 0 }
        } else {
            AuditHealth::Available
        }
    }

    fn shutdown(&self) -> AuditTicket {
        self.closed.store(true, Ordering::SeqCst);
        AuditTicket::ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt as _;

    #[tokio::test]
    async fn keeps_records_and_fails_on_demand() {
        let sink = MemorySink::new();
        let record = ExchangeRecord { exchange_id: "a".to_owned(), ..ExchangeRecord::default() };
        sink.append(record.clone(), AuditMode::Strict).await.unwrap();
        sink.set_failing(true);
        assert!(matches!(sink.append(record.clone(), AuditMode::Async).await, Err(AuditError::Write(_))));
        assert!(!sink.health().is_available());
        sink.set_failing(false);
        sink.shutdown().await.unwrap();
        assert!(matches!(sink.append(record.clone(), AuditMode::Sync).await, Err(AuditError::Closed)));
        assert_eq!(sink.appended(), vec![(record, AuditMode::Strict)]);
    }

    #[tokio::test]
    async fn holds_tickets_until_released() {
        let sink = MemorySink::new();
        let record = |id: &str| ExchangeRecord { exchange_id: id.to_owned(), ..ExchangeRecord::default() };
        sink.hold();
        let mut first = sink.append(record("a"), AuditMode::Sync);
        let second = sink.append(record("b"), AuditMode::Sync);
        assert_eq!(sink.records().len(), 2, "held records are taken all the same");
        assert!((&mut first).now_or_never().is_none(), "a held ticket was answered");
        sink.release();
        first.await.unwrap();
        second.await.unwrap();
        sink.append(record("c"), AuditMode::Sync).await.unwrap();
    }
}
