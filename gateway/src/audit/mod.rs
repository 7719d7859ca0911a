//! The audit stage of the exchange path (design §5): every exchange, allowed or denied, leaves an
//! [`ExchangeRecord`], and is answered only once its record is as durable as its [`AuditMode`]
//! asks. The path talks to an [`AuditSink`]; which log sits behind it is the binary's choice.
//!
//! Fail closed: when a sink cannot take a record, the ticket says so and the caller refuses the
//! exchange with `Server.AuditUnavailable`, so no exchange is ever answered without its record.

pub mod checkpoint;
pub mod log;
mod memory;
pub mod merkle;
mod record;
pub mod retention;
pub mod segment;
pub mod space;
mod ticker;
pub mod verify;

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

pub use self::memory::MemorySink;
pub use self::record::{BodyDigest, BodyHasher, MAX_RECORDED_HEADER, RecordBuilder, answered_status, now_nanos};
pub use crate::config::AuditMode;
pub use splpd_proto::v1::ExchangeRecord;

/// Where the exchange path sends its records.
///
/// Object safe, so that the gateway holds an `Arc<dyn AuditSink>` and the log behind it (JSON
/// lines today, the segment-file Merkle log later) changes without touching callers.
///
/// No method blocks or waits: disk work belongs to the sink's own writer, and callers wait by
/// awaiting the [`AuditTicket`] they get back.
pub trait AuditSink: Send + Sync + fmt::Debug + 'static {
    /// Hands a record to the log.
    ///
    /// The ticket resolves with `Ok` once the record is as durable as `mode` asks: on disk for
    /// [`AuditMode::Sync`] and [`AuditMode::Strict`] (which differ only in how often the caller
    /// appends, not here), accepted for [`AuditMode::Async`], usually at once. It resolves with an
    /// error when the log cannot take the record; the exchange must then be refused. Once
    /// `append` has returned, the record's fate no longer depends on the ticket: dropping it
    /// loses the answer, not the record.
    fn append(&self, record: ExchangeRecord, mode: AuditMode) -> AuditTicket;

    /// Resolves once every record appended before the call is durable, whatever its mode.
    fn flush(&self) -> AuditTicket;

    /// Whether the log is taking records, for readiness checks and the admin dashboard.
    fn health(&self) -> AuditHealth;

    /// Whether a record appended now would be taken, as cheaply as the sink can say it: asked
    /// for every exchange (see `metrics::Metered`). A race with the log failing or recovering
    /// is possible and harmless to the caller, which still learns the record's fate from its
    /// ticket.
    fn taking_records(&self) -> bool {
        self.health().is_available()
    }

    /// Stops taking records: appends after this fail with [`AuditError::Closed`]; the ticket
    /// resolves once everything accepted before it is durable, for a graceful shutdown.
    fn shutdown(&self) -> AuditTicket;

    /// What opening the log did after an unclean stop of the gateway before (records signed
    /// only now, a torn tail cut), in words, for the `START` record; `None` after a clean stop.
    fn recovered_at_open(&self) -> Option<String> {
        None
    }

    /// What the log has written since it opened, for metrics; `None` for a sink that does not
    /// count.
    fn counters(&self) -> Option<AuditCounters> {
        None
    }
}

/// What an audit log has written since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditCounters {
    /// Records written.
    pub records: u64,
    /// Batches written (one write each).
    pub batches: u64,
    /// Batches made durable with a sync.
    pub syncs: u64,
    /// Batches whose write or sync failed.
    pub failed_batches: u64,
    /// Records in the Merkle tree, those of earlier runs included.
    pub tree_size: u64,
    /// The space of the log's filesystem, once measured.
    pub disk: Option<space::DiskSpace>,
}

/// Whether an [`AuditSink`] is taking records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditHealth {
    /// Records are being written.
    Available,
    /// The last write failed, so exchanges are being refused; the sink keeps trying and becomes
    /// available again with the first write that succeeds.
    Unavailable {
        /// What went wrong, for operators.
        reason: String,
        /// When writes started failing, in nanoseconds since the Unix epoch.
        since_unix_nanos: i64,
    },
    /// The sink has been shut down or its writer has stopped.
    Closed,
}

impl fmt::Display for AuditHealth {
    /// For operators: what is wrong and since when.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Available => f.write_str("the audit log is taking records"),
            Self::Unavailable { reason, since_unix_nanos } => {
                let since = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(*since_unix_nanos))
                    .ok()
                    .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                    .unwrap_or_else(|| "an unknown time".to_owned());
                write!(f, "the audit log cannot be written since {since}: {reason}")
            }
            Self::Closed => f.write_str("the audit log is closed"),
        }
    }
}

impl AuditHealth {
    /// Whether records are being written.
    pub fn is_available(&self) -> bool {
        matches!(self, Self::Available)
    }
}

/// The mode of the files the audit log writes (before the umask): its records say who called
/// what, with paths that may hold a NIK, so they are not for every account on the host; the
/// owner writes, its group (an auditors' group, say) reads.
pub(crate) const FILE_MODE: u32 = 0o640;

/// Opens the audit log's folder, making it (and its parents) when missing with the mode its
/// files have, plus search: 0750 before the umask.
pub(crate) fn make_dir(dir: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new().recursive(true).mode(0o750).create(dir)
}

/// `options` creating a file of the audit log: with [`FILE_MODE`], and never through a
/// symbolic link ([`open_log_file`]).
pub(crate) fn new_file(options: &mut std::fs::OpenOptions) -> &mut std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt as _;
    options.mode(FILE_MODE).custom_flags(NO_FOLLOW)
}

const NO_FOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits().cast_signed();

/// Opens a file of an audit folder (or of an extracted export) for reading, refusing a symbolic
/// link or anything but a plain file: the tools often run as root on a folder the gateway's
/// account can write, and a link planted there would point them at any file of the host, which
/// an export would then ship (the gateway's key as a signer's certificate).
pub(crate) fn open_log_file(path: &std::path::Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let not_ours = || {
        io::Error::other(format!(
            "{} is a symbolic link or not a plain file; an audit folder holds only the files the gateway wrote: \
             remove it (and find out who put it there)",
            path.display()
        ))
    };
    // Without blocking: a FIFO planted there would hold `open` until someone writes to it.
    let flags = NO_FOLLOW | rustix::fs::OFlags::NONBLOCK.bits().cast_signed();
    let file =
        std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path).map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) { not_ours() } else { e }
        })?;
    if !file.metadata()?.is_file() {
        return Err(not_ours());
    }
    Ok(file)
}

/// The whole of a file of an audit folder, as [`open_log_file`] opens it.
pub(crate) fn read_log_file(path: &std::path::Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut open_log_file(path)?, &mut bytes)?;
    Ok(bytes)
}

/// Why a record could not be taken. Every variant means the same to a client:
/// `Server.AuditUnavailable`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// Writing or syncing the log failed.
    #[error("the audit log cannot be written")]
    Write(#[source] Arc<io::Error>),
    /// The log has been shut down, or its writer has stopped.
    #[error("the audit log is closed")]
    Closed,
}

impl AuditError {
    /// A write failure, shared by every record of the failed batch.
    pub fn write(error: io::Error) -> Self {
        Self::Write(Arc::new(error))
    }
}

/// The answer to an [`AuditSink::append`]: a future that resolves when the record is as durable
/// as asked, or with the reason it cannot be.
#[must_use = "an exchange may be answered only after its audit ticket resolved with Ok"]
#[derive(Debug)]
pub struct AuditTicket(Ticket);

#[derive(Debug)]
enum Ticket {
    /// Taken out (`None`) once polled to completion.
    Ready(Option<Result<(), AuditError>>),
    Waiting(oneshot::Receiver<Result<(), AuditError>>),
}

impl AuditTicket {
    /// A ticket that has already succeeded.
    pub fn ok() -> Self {
        Self(Ticket::Ready(Some(Ok(()))))
    }

    /// A ticket that has already failed.
    pub fn failed(error: AuditError) -> Self {
        Self(Ticket::Ready(Some(Err(error))))
    }

    /// A ticket that a sink's writer resolves later through the [`TicketResolver`]. Should the
    /// resolver be dropped unresolved (the writer died), the ticket fails with
    /// [`AuditError::Closed`] rather than hanging.
    pub fn channel() -> (Self, TicketResolver) {
        let (tx, rx) = oneshot::channel();
        (Self(Ticket::Waiting(rx)), TicketResolver(tx))
    }
}

impl Future for AuditTicket {
    type Output = Result<(), AuditError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let result = match &mut this.0 {
            // Polling again after completion is a caller bug; answering Closed fails closed.
            Ticket::Ready(result) => result.take().unwrap_or(Err(AuditError::Closed)),
            Ticket::Waiting(rx) => match Pin::new(rx).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => result.unwrap_or(Err(AuditError::Closed)),
            },
        };
        this.0 = Ticket::Ready(None);
        Poll::Ready(result)
    }
}

/// The writer's end of a pending [`AuditTicket`].
#[derive(Debug)]
pub struct TicketResolver(oneshot::Sender<Result<(), AuditError>>);

impl TicketResolver {
    /// Resolves the ticket. A caller that has stopped waiting (its client went away) is no
    /// error: the record stays in the log all the same.
    pub fn resolve(self, result: Result<(), AuditError>) {
        let _ = self.0.send(result);
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt as _;

    use super::*;

    #[test]
    fn sink_is_object_safe() {
        let sink: Arc<dyn AuditSink> = Arc::new(MemorySink::new());
        assert!(sink.health().is_available());
    }

    #[test]
    fn ready_tickets_resolve_without_waiting() {
        assert!(matches!(AuditTicket::ok().now_or_never(), Some(Ok(()))));
        assert!(matches!(AuditTicket::failed(AuditError::Closed).now_or_never(), Some(Err(AuditError::Closed))));
    }

    #[tokio::test]
    async fn ticket_waits_for_its_resolver_and_fails_closed_if_dropped() {
        let (mut ticket, resolver) = AuditTicket::channel();
        assert!((&mut ticket).now_or_never().is_none());
        resolver.resolve(Ok(()));
        assert!(ticket.await.is_ok());

        let (ticket, resolver) = AuditTicket::channel();
        drop(resolver);
        assert!(matches!(ticket.await, Err(AuditError::Closed)));
    }
}
