//! The audit side of an own call: a guard that logs the call if its client goes away before the
//! answer is ready, and the body of a streamed gRPC answer, which appends the record when the
//! answer ends and holds its trailers back until the record is as durable as asked.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};

use crate::audit::{AuditMode, AuditSink, AuditTicket, BodyHasher, RecordBuilder};
use crate::config::Protocol;
use crate::error::{GatewayError, GrpcCode};
use crate::exchange::ABANDONED;
use crate::forward::xroad;
use crate::grpc;

/// The request body's summary, once its last byte has been read.
pub(super) use crate::exchange::SummaryRx;

/// Puts the request body's size, digest and request hash into the record; for a body that has
/// not ended, its size so far.
pub(super) fn add_request(record: &mut RecordBuilder, summary: &mut SummaryRx) {
    match summary.try_recv() {
        Ok(Ok(mut s)) => s.record_into(record),
        // Not ended, or broken off: as much as passed, with no hash.
        _ => record.set_request_body_unfinished(summary.passed()),
    }
}

/// The record of an own call while its answer is being made. Dropped with the record inside,
/// the client went away first: the call is logged as abandoned.
#[derive(Debug)]
pub(super) struct Pending {
    record: Option<RecordBuilder>,
    audit: Arc<dyn AuditSink>,
    mode: AuditMode,
    grpc: bool,
}

impl Pending {
    pub(super) fn new(record: RecordBuilder, audit: Arc<dyn AuditSink>, mode: AuditMode, protocol: Protocol) -> Self {
        Self { record: Some(record), audit, mode, grpc: protocol == Protocol::Grpc }
    }

    /// The record, now that the answer is in hand.
    pub(super) fn take(mut self) -> RecordBuilder {
        // Only `take`, which consumes the guard, ever removes the record `new` put in.
        self.record.take().expect("a pending own call holds its record until taken")
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            record.set_error_type(ABANDONED);
            if self.grpc {
                record.set_grpc_status(GrpcCode::Cancelled.as_u32());
            }
            drop(self.audit.append(record.finish(), self.mode));
        }
    }
}

/// A streamed answer of one of the gateway's gRPC services. Data frames pass at once; when the
/// answer ends, its `grpc-status` (and `x-road-error`, for the gateway's refusals) go into the
/// record, the record is appended, and the trailers wait until it is durable. If the log cannot
/// take it, the answer ends with `UNAVAILABLE` and `Server.AuditUnavailable` instead.
pub(super) struct OwnBody {
    inner: tonic::body::Body,
    tally: Option<BodyHasher>,
    record: Option<RecordBuilder>,
    summary: SummaryRx,
    audit: Arc<dyn AuditSink>,
    mode: AuditMode,
    ticket: Option<AuditTicket>,
    trailers: Option<HeaderMap>,
}

impl std::fmt::Debug for OwnBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnBody").field("mode", &self.mode).finish()
    }
}

impl OwnBody {
    pub(super) fn new(
        inner: tonic::body::Body,
        record: RecordBuilder,
        summary: SummaryRx,
        audit: Arc<dyn AuditSink>,
        mode: AuditMode,
    ) -> Self {
        Self {
            inner,
            tally: Some(BodyHasher::new()),
            record: Some(record),
            summary,
            audit,
            mode,
            ticket: None,
            trailers: None,
        }
    }

    /// Completes and appends the record, once.
    fn close(&mut self, trailers: Option<&HeaderMap>, error_type: Option<&str>, code: Option<u32>) {
        let Some(mut record) = self.record.take() else { return };
        add_request(&mut record, &mut self.summary);
        if let Some(tally) = self.tally.take() {
            record.set_response_body(tally.finish());
        }
        let from_trailers = trailers.and_then(|t| t.get(&xroad::ERROR)).and_then(|v| v.to_str().ok());
        if let Some(e) = error_type.or(from_trailers) {
            record.set_error_type(e);
        }
        if let Some(code) = code.or_else(|| trailers.and_then(grpc::status_in)) {
            record.set_grpc_status(code);
        }
        self.ticket = Some(self.audit.append(record.finish(), self.mode));
    }
}

impl Body for OwnBody {
    type Data = Bytes;
    type Error = splpd_adapters::http::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(ticket) = &mut this.ticket {
                return match Pin::new(ticket).poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Ok(())) => {
                        this.ticket = None;
                        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
                    }
                    // Fail closed: the caller does not get the status of an answer that was not
                    // logged.
                    Poll::Ready(Err(e)) => {
                        this.ticket = None;
                        this.trailers = None;
                        let err = GatewayError::AuditUnavailable(format!("the exchange could not be logged: {e}"));
                        Poll::Ready(Some(Ok(Frame::trailers(grpc::error_trailers(&err)))))
                    }
                };
            }
            if this.record.is_none() {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if let Some(t) = &mut this.tally {
                            t.update(&data);
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Err(frame) => {
                        let trailers = frame.into_trailers().ok();
                        this.close(trailers.as_ref(), None, None);
                        this.trailers = trailers;
                    }
                },
                Poll::Ready(None) => this.close(None, None, None),
                Poll::Ready(Some(Err(e))) => {
                    let err = GatewayError::Internal(format!("the gateway's own service failed: {e}").into());
                    this.close(None, Some(err.xroad_type()), Some(err.grpc_code().as_u32()));
                    this.trailers = Some(grpc::error_trailers(&err));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.record.is_none() && self.ticket.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for OwnBody {
    fn drop(&mut self) {
        // The client went away before the end (a Watch it stopped reading, a reset stream): the
        // call is logged all the same.
        self.close(None, Some(ABANDONED), Some(GrpcCode::Cancelled.as_u32()));
        // Nobody waits for this ticket: the record's fate no longer depends on it.
        self.ticket = None;
    }
}
