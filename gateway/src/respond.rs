//! The answer's way back to the client: the upstream's body streamed through [`AuditedBody`],
//! which completes and appends the exchange's record at its end, and [`settle`], which keeps a
//! small answer back whole until that record is as durable as the service's audit mode asks.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use splpd_adapters::circuit::Lease;
use splpd_adapters::http::BoxError;
use tokio::sync::oneshot;

use crate::audit::{AuditError, AuditSink, AuditTicket, BodyHasher, RecordBuilder};
use crate::config::AuditMode;
use crate::error::{GatewayError, GrpcCode};
use crate::exchange::{ABANDONED, SummaryRx};
use crate::forward::{BodyKeeper, BodySummary};
use crate::grpc;
use crate::runtime::Route;

/// The largest answer kept back whole until its record is durable; see [`settle`].
const SETTLE_LIMIT: usize = 64 * 1024;

/// How long [`settle`] waits for the rest of an answer that says it is small, before it lets
/// the head go and the rest stream.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What [`settle`] made of an answer.
// Returned and taken apart at once, and the body is boxed right after: boxing it here as well
// would be a second allocation per exchange.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Settled {
    /// Its body, to send as it comes: already read frames first, then the rest.
    Body(ReadyThenRest),
    /// The record could not be logged before anything of the answer was sent: the client gets
    /// the gateway's error instead.
    NotLogged(AuditError),
    /// The service broke the answer off before anything of it was sent: the client gets this
    /// error instead, which the record (now durable) holds.
    BrokeOff(GatewayError),
}

/// Reads the frames of the answer that are already here, and all of an answer whose length
/// says it is at most [`SETTLE_LIMIT`] bytes (within [`SETTLE_WAIT`]). When they are all of it (the common case for a
/// small answer), the record is appended and this waits until it is as durable as the mode
/// asks, so that the head, the body and any trailers leave together once the record is safe,
/// or the client is refused whole when it cannot be logged. Otherwise the body streams, and
/// only its end waits for the record.
///
/// Why: otherwise, in `sync` mode, the head leaves at once and the last bytes after the disk
/// sync: two writes, two TCP segments and two wake-ups of the client for each answer, and an
/// ACK back. Under `splpd-bench compare`'s HTTP/1.1 load that was 6.2 TCP segments per
/// exchange against 4.1 with this (see `benches/RESULTS.md`, "The audit log's modes").
pub(crate) async fn settle(mut body: AuditedBody) -> Settled {
    body.unsent = true;
    let mut ready = VecDeque::new();
    let mut bytes = 0;
    // An answer that says it is small is waited for whole even when its bytes lag its head: it
    // then leaves in one write, and should its record fail, nothing of it has left and the
    // client gets a clean refusal rather than a broken answer. Its end waits for the record
    // anyway, so the answer is complete no later for it.
    // For at most SETTLE_WAIT: a service that stalls after its head still has the head reach
    // the client, as it would stream.
    let small = body.size_hint().upper().is_some_and(|n| n <= SETTLE_LIMIT as u64);
    let mut waited: Option<Pin<Box<tokio::time::Sleep>>> = None;
    while bytes < SETTLE_LIMIT {
        let next = poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
            // Waiting for the record to be durable: every frame is here, so wait with them.
            Poll::Pending if body.ticket.is_some() => Poll::Pending,
            Poll::Pending if small => {
                let until = waited.get_or_insert_with(|| Box::pin(tokio::time::sleep(SETTLE_WAIT)));
                if until.as_mut().poll(cx).is_pending() { Poll::Pending } else { Poll::Ready(None) }
            }
            // Waiting for the upstream: the rest streams.
            Poll::Pending => Poll::Ready(None),
            Poll::Ready(frame) => Poll::Ready(Some(frame)),
        })
        .await;
        match next {
            None => break,
            Some(None) => {
                body.unsent = false;
                return Settled::Body(ReadyThenRest { ready, rest: None });
            }
            Some(Some(Ok(frame))) => {
                bytes += frame.data_ref().map_or(0, Bytes::len);
                ready.push_back(Ok(frame));
            }
            Some(Some(Err(e))) => {
                // Nothing has left yet: the frames read so far are dropped, and the client is
                // refused whole.
                let e = match e.downcast::<AuditError>() {
                    Ok(audit) => return Settled::NotLogged(*audit),
                    Err(e) => e,
                };
                if let Some((err, ticket)) = body.broke_off_unsent(&e) {
                    let logged = match ticket {
                        Some(ticket) => ticket.await,
                        None => Ok(()),
                    };
                    return match logged {
                        Ok(()) => Settled::BrokeOff(err),
                        Err(audit) => Settled::NotLogged(audit),
                    };
                }
                ready.push_back(Err(e));
                return Settled::Body(ReadyThenRest { ready, rest: None });
            }
        }
    }
    body.unsent = false;
    Settled::Body(ReadyThenRest { ready, rest: Some(body) })
}

/// An answer's body: the frames [`settle`] read, then whatever of the [`AuditedBody`] is left.
pub(crate) struct ReadyThenRest {
    ready: VecDeque<Result<Frame<Bytes>, BoxError>>,
    rest: Option<AuditedBody>,
}

impl Body for ReadyThenRest {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(frame) = this.ready.pop_front() {
            return Poll::Ready(Some(frame));
        }
        match &mut this.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_empty() && self.rest.as_ref().is_none_or(AuditedBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let ready: usize = self.ready.iter().filter_map(|f| f.as_ref().ok()?.data_ref().map(Bytes::len)).sum();
        match &self.rest {
            None => SizeHint::with_exact(ready as u64),
            Some(rest) => {
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + ready as u64);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + ready as u64);
                }
                hint
            }
        }
    }
}

/// A response body streaming from the upstream to the client. When it ends, the exchange's
/// record is completed and appended, and the end of the stream is held back until the record is
/// as durable as the service's audit mode asks; a body the client abandons is logged on drop.
///
/// For a gRPC call the trailers pass through as the service sent them, and their `grpc-status`
/// goes into the record. Where a REST answer can only break off, a gRPC answer ends with the
/// gateway's status in its trailers: `UNAVAILABLE` when the service broke the stream off or the
/// log could not take the record.
pub(crate) struct AuditedBody {
    inner: Incoming,
    tally: Option<BodyHasher>,
    /// The body's first bytes, for a service that keeps bodies in its records.
    keeper: Option<BodyKeeper>,
    record: Option<RecordBuilder>,
    audit: Arc<dyn AuditSink>,
    mode: AuditMode,
    ticket: Option<AuditTicket>,
    trailers: Option<http::HeaderMap>,
    /// The last bytes of a body of known length, held until the record is durable.
    held: Option<Bytes>,
    grpc: bool,
    /// The service answering, for the gateway's own errors.
    route: Arc<Route>,
    /// The request body's summary, when it was not final by the time the answer started.
    summary: Option<SummaryRx>,
    /// What the request body's summary said, once it said it.
    request: Option<Result<BodySummary, String>>,
    /// The endpoint's request slot, held until the answer has streamed.
    pub(crate) lease: Option<Lease>,
    /// The answer is a local service's, whose `X-Road-Error` trailer would pass for the
    /// gateway's own (see [`AuditedBody::for_local_service`]).
    local: bool,
    /// [`settle`] is reading the answer and nothing of it has left: should the service break it
    /// off now, the client can still be answered 502 in its place ([`AuditedBody::broke_off_unsent`]).
    unsent: bool,
}

impl std::fmt::Debug for AuditedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditedBody").field("mode", &self.mode).field("grpc", &self.grpc).finish()
    }
}

impl AuditedBody {
    pub(crate) fn new(
        inner: Incoming,
        record: RecordBuilder,
        audit: Arc<dyn AuditSink>,
        mode: AuditMode,
        grpc: bool,
        route: Arc<Route>,
        summary: Option<SummaryRx>,
    ) -> Self {
        Self {
            inner,
            tally: Some(BodyHasher::new()),
            keeper: route.stored_body.map(BodyKeeper::new),
            record: Some(record),
            audit,
            mode,
            ticket: None,
            trailers: None,
            held: None,
            grpc,
            route,
            summary,
            request: None,
            lease: None,
            local: false,
            unsent: false,
        }
    }

    /// The answer is a local service's: an `X-Road-Error` in its trailers is dropped, as in its
    /// headers, since callers tell the gateway's refusals by it.
    pub(crate) fn for_local_service(mut self) -> Self {
        self.local = true;
        self
    }

    /// The request body failed (`why`, e.g. "body over N bytes") before the answer started.
    pub(crate) fn request_failed(&mut self, why: String) {
        self.request = Some(Err(why));
    }

    /// The request body's summary, if it has arrived by now.
    fn request_summary(&mut self) -> Option<&Result<BodySummary, String>> {
        if self.request.is_none()
            && let Some(rx) = &mut self.summary
        {
            match rx.try_recv() {
                Ok(summary) => {
                    // A failed body's watch is kept: it still says how much of the body passed.
                    if summary.is_ok() {
                        self.summary = None;
                    }
                    self.request = Some(summary);
                }
                // Kept: it still says how much of the body passed.
                Err(oneshot::error::TryRecvError::Closed | oneshot::error::TryRecvError::Empty) => {}
            }
        }
        self.request.as_ref()
    }

    /// Completes and appends the record, once.
    fn close(&mut self, error_type: Option<&str>, grpc_status: Option<u32>) -> Option<AuditTicket> {
        self.lease = None;
        self.record.as_ref()?;
        // Taken, not cloned: the kept request body goes with the record, not stays here too.
        self.request_summary();
        let mut record = self.record.take()?;
        match (self.request.take(), &self.summary) {
            (Some(Ok(mut s)), _) => s.record_into(&mut record),
            // The answer ended before the request body did (or the body failed): as much as
            // passed, and no hash, since the body was not read whole.
            (_, Some(watch)) => record.set_request_body_unfinished(watch.passed()),
            (Some(Err(_)), None) | (None, None) => {}
        }
        if let Some(tally) = self.tally.take() {
            record.set_response_body(tally.finish());
        }
        if let Some(keeper) = self.keeper.take() {
            record.set_response_content(keeper.finish());
        }
        if let Some(e) = error_type {
            record.set_error_type(e);
        }
        if let Some(code) = grpc_status {
            record.set_grpc_status(code);
        }
        Some(self.audit.append(record.finish(), self.mode))
    }

    /// Whether the request body was cut at its size limit: the client's doing, not the service's.
    fn request_over_limit(&mut self) -> bool {
        matches!(self.request_summary(), Some(Err(why)) if crate::forward::over_limit(why))
    }

    /// Logs an answer that broke off after it started, under its exchange id: the client sees
    /// only a cut stream, and the operator looks the exchange up by its id.
    fn log_broken(&self, what: &str) {
        let exchange = self.record.as_ref().map_or("", RecordBuilder::exchange_id);
        tracing::warn!(exchange = %exchange, "{what}");
    }

    /// The service broke its answer off while [`settle`] held all of it back (`e`, its cause):
    /// the client is answered the gateway's 502 instead, and the record says so. `None` when the
    /// record was already completed (the request's own body over its limit cut the answer).
    fn broke_off_unsent(&mut self, e: &BoxError) -> Option<(GatewayError, Option<AuditTicket>)> {
        let record = self.record.as_mut()?;
        let id = &self.route.id;
        let why = splpd_adapters::http::root_cause(&**e);
        let err = GatewayError::ServiceFailed(crate::error::Failure::hidden(
            format!("{id}: the service's answer broke off before its end; none of it was passed on"),
            format!("{id}: the service's answer broke off before its end: {why}"),
        ));
        record.set_status(err.status());
        self.log_broken(&err.for_operator());
        // What the client gets is the gateway's error, not the service's body in part.
        self.tally = None;
        self.keeper = None;
        let ticket = self.close(Some(err.xroad_type()), None);
        Some((err, ticket))
    }

    /// The gateway's error ends a gRPC answer: its status goes into the trailers and the record.
    fn fail_grpc(&mut self, err: &GatewayError) {
        self.trailers = Some(grpc::error_trailers(err));
        self.ticket = self.close(Some(err.xroad_type()), Some(err.grpc_code().as_u32()));
    }
}

impl Body for AuditedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        // A loop rather than a self-wake: when the record is durable at once (async mode, or a
        // quick group commit) the last bytes go out with the headers in one write.
        loop {
            if let Some(ticket) = &mut this.ticket {
                return match Pin::new(ticket).poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Ok(())) => {
                        this.ticket = None;
                        if let Some(data) = this.held.take() {
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
                    }
                    // Fail closed: the client does not get a complete answer that was not logged.
                    // A gRPC client gets UNAVAILABLE instead of the service's status.
                    Poll::Ready(Err(e)) if this.grpc => {
                        this.ticket = None;
                        this.held = None;
                        let err = GatewayError::AuditUnavailable(format!("the exchange could not be logged: {e}"));
                        this.trailers = None;
                        Poll::Ready(Some(Ok(Frame::trailers(grpc::error_trailers(&err)))))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Some(Err(Box::new(e)))),
                };
            }
            if this.record.is_none() {
                return Poll::Ready(this.held.take().map(|d| Ok(Frame::data(d))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if let Some(t) = &mut this.tally {
                            t.update(&data);
                        }
                        if let Some(k) = &mut this.keeper {
                            k.update(&data);
                        }
                        // hyper stops polling a body of known length once that length is sent,
                        // so its end may never be seen as `None`: the last bytes wait for the
                        // record.
                        if !this.inner.is_end_stream() {
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        this.held = Some(data);
                        this.ticket = this.close(None, None);
                    }
                    Err(frame) => {
                        let mut trailers = frame.into_trailers().ok();
                        if this.local
                            && let Some(t) = trailers.as_mut()
                        {
                            t.remove(&crate::forward::xroad::ERROR);
                        }
                        let code = if this.grpc { trailers.as_ref().and_then(grpc::status_in) } else { None };
                        this.trailers = trailers;
                        this.ticket = this.close(None, code);
                    }
                },
                Poll::Ready(None) => this.ticket = this.close(None, None),
                Poll::Ready(Some(Err(e))) if this.grpc => {
                    // The stream broke off: because the request went over its size limit (the
                    // gateway cut it off), or on the service's side.
                    let over = this.request_over_limit();
                    let route = &this.route;
                    let err = if over {
                        GatewayError::BodyTooLarge { limit: route.max_request_body, service: route.id.to_string() }
                    } else {
                        let why = splpd_adapters::http::root_cause(&e);
                        GatewayError::ServiceFailed(
                            format!("{}: the service broke the call off: {why}", route.id).into(),
                        )
                    };
                    if !over {
                        this.log_broken(&err.to_string());
                    }
                    this.fail_grpc(&err);
                }
                Poll::Ready(Some(Err(e))) => {
                    // The client's own body over its limit can cut a streaming answer too: that is
                    // the client's doing, and its record says so.
                    let over = this.request_over_limit();
                    if this.unsent && !over {
                        // `settle` answers in its place, and completes the record.
                        return Poll::Ready(Some(Err(Box::new(e))));
                    }
                    if !over {
                        let why = splpd_adapters::http::root_cause(&e);
                        this.log_broken(&format!(
                            "{}: the service's answer broke off after it started: {why}",
                            this.route.id
                        ));
                    }
                    drop(this.close(Some("Server.ServerProxy.ServiceFailed"), None));
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.record.is_none() && self.ticket.is_none() && self.held.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AuditedBody {
    fn drop(&mut self) {
        // The client went away before the end: the exchange is logged all the same.
        let cancelled = self.grpc.then_some(GrpcCode::Cancelled.as_u32());
        drop(self.close(Some(ABANDONED), cancelled));
    }
}
