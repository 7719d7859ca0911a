//! An exchange's span, made from its audit record.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use splpd_proto::v1::{ConnectionType, ExchangeRecord};
use tokio::sync::mpsc;

use super::{ExportStats, attribute, int_attribute};

/// Where the audit path hands exchange records to become spans: samples them, makes the span and
/// queues it for the exporter, never waiting.
#[derive(Debug)]
pub struct SpanSink {
    tx: mpsc::Sender<Span>,
    /// Traces whose id, its halves folded together by XOR and read as a number, is below this
    /// are sampled: decided on the trace id alone, so that every gateway a trace crosses keeps or
    /// drops it alike. Folded because an id made from an X-Road-Id (a UUID) has fixed version
    /// and variant bits in each half, which would skew either half read alone.
    threshold: u64,
    /// Every trace is sampled (a ratio of 1, which the threshold cannot express).
    all: bool,
    stats: Arc<ExportStats>,
}

impl SpanSink {
    pub(super) fn new(tx: mpsc::Sender<Span>, ratio: f64, stats: Arc<ExportStats>) -> Self {
        // The ratio is checked to be within 0..=1 at load; the product fits in u64.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let threshold = (ratio.clamp(0.0, 1.0) * u64::MAX as f64) as u64;
        Self { tx, threshold, all: ratio >= 1.0, stats }
    }

    /// The exporter's counters, which `/metrics` shows too.
    pub fn stats(&self) -> &Arc<ExportStats> {
        &self.stats
    }

    /// Makes and queues the span of the exchange `record`, counted under `service` and `peer`
    /// (the route labels of the metrics), if its trace is sampled.
    pub fn exchange(&self, record: &ExchangeRecord, service: &str, peer: &str) {
        let trace_id = trace_id(record);
        let half = |range: std::ops::Range<usize>| u64::from_be_bytes(trace_id[range].try_into().unwrap_or_default());
        if !self.all && half(0..8) ^ half(8..16) >= self.threshold {
            return;
        }
        if self.tx.try_send(span(record, trace_id, service, peer)).is_err() {
            self.stats.spans_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The trace the exchange belongs to: the client's, from its `traceparent`, or else one named by
/// the exchange's X-Road-Id (a UUID is 16 bytes, as a trace id), so that either finds the other.
fn trace_id(record: &ExchangeRecord) -> [u8; 16] {
    if let Ok(id) = <[u8; 16]>::try_from(record.trace_id.as_slice())
        && id != [0; 16]
    {
        return id;
    }
    uuid::Uuid::parse_str(&record.exchange_id).map_or_else(|_| *uuid::Uuid::new_v4().as_bytes(), |u| *u.as_bytes())
}

fn span(record: &ExchangeRecord, trace_id: [u8; 16], service: &str, peer: &str) -> Span {
    let r = record;
    let route = match (service, peer) {
        ("", "") => "unrouted",
        ("", peer) => peer,
        (service, _) => service,
    };
    let mut attributes = vec![
        attribute("splpd.exchange_id", &r.exchange_id),
        attribute("splpd.client", &r.client),
        attribute("splpd.service", service),
        attribute("http.request.method", &r.method),
        int_attribute("http.response.status_code", i64::from(r.status)),
        int_attribute("http.request.body.size", i64::try_from(r.request_body_bytes).unwrap_or(i64::MAX)),
        int_attribute("http.response.body.size", i64::try_from(r.response_body_bytes).unwrap_or(i64::MAX)),
        attribute("splpd.connection", connection(r.connection_type())),
    ];
    if !peer.is_empty() {
        attributes.push(attribute("splpd.peer", peer));
    }
    if let Some(code) = r.grpc_status {
        attributes.push(int_attribute("rpc.grpc.status_code", i64::from(code)));
    }
    if !r.error_type.is_empty() {
        attributes.push(attribute("error.type", &r.error_type));
    }
    if !r.upstream.is_empty() {
        attributes.push(attribute("splpd.upstream", &r.upstream));
        attributes.push(int_attribute("splpd.retries", i64::from(r.retries)));
    }
    // A server span is in error when the fault is on the server's side: 5xx (for gRPC, what its
    // status stands for), or an X-Road `Server.*` type (a 4xx is the client's mistake, which the
    // span records without an error).
    let failed = crate::audit::answered_status(r) >= 500 || r.error_type.starts_with("Server.");
    let status = failed.then(|| Status { message: r.error_type.clone(), code: StatusCode::Error as i32 });
    let start = u64::try_from(r.received_at_unix_nanos).unwrap_or(0);
    let end = u64::try_from(r.responded_at_unix_nanos).unwrap_or(0).max(start);
    Span {
        trace_id: trace_id.to_vec(),
        span_id: uuid::Uuid::new_v4().as_bytes()[..8].to_vec(),
        name: format!("{} {route}", r.method),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        status,
        ..Span::default()
    }
}

fn connection(c: ConnectionType) -> &'static str {
    match c {
        ConnectionType::Mtls => "mtls",
        ConnectionType::Tls => "tls",
        ConnectionType::Http => "http",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(ratio: f64) -> (SpanSink, mpsc::Receiver<Span>) {
        let (tx, rx) = mpsc::channel(16);
        (SpanSink::new(tx, ratio, Arc::default()), rx)
    }

    #[test]
    fn a_span_keeps_the_clients_trace_or_takes_the_exchange_id_and_carries_no_personal_data() {
        let (sink, mut rx) = sink(1.0);
        let exchange_id = "6f1c2e0a-8d4b-4c3e-9f00-1a2b3c4d5e6f";
        let mut record = ExchangeRecord {
            exchange_id: exchange_id.to_owned(),
            method: "GET".to_owned(),
            path: "/r1/ID/PEMDA/1602/DISDUKCAPIL/nik-verify/nik/1602015708900001".to_owned(),
            user_id: "ID1602015708900001".to_owned(),
            status: 503,
            error_type: "Server.ServerProxy.ServiceUnavailable".to_owned(),
            received_at_unix_nanos: 10,
            responded_at_unix_nanos: 25,
            ..ExchangeRecord::default()
        };
        sink.exchange(&record, "ID/PEMDA/1602/DISDUKCAPIL/nik-verify", "");
        let span = rx.try_recv().unwrap();
        assert_eq!(span.trace_id, uuid::Uuid::parse_str(exchange_id).unwrap().as_bytes().to_vec());
        assert_eq!(span.name, "GET ID/PEMDA/1602/DISDUKCAPIL/nik-verify");
        assert_eq!((span.start_time_unix_nano, span.end_time_unix_nano), (10, 25));
        assert_eq!(span.status.as_ref().map(|s| s.code), Some(StatusCode::Error as i32));
        let text = format!("{span:?}");
        assert!(!text.contains("1602015708900001"), "personal data left the audit log: {text}");

        record.trace_id = (1..=16).collect();
        record.status = 404;
        record.error_type.clear();
        sink.exchange(&record, "", "ID/PEMDA/1601/gw1");
        let span = rx.try_recv().unwrap();
        assert_eq!(span.trace_id, (1..=16).collect::<Vec<u8>>());
        assert_eq!(span.name, "GET ID/PEMDA/1601/gw1");
        assert!(span.status.is_none(), "a 404 is the client's mistake, not the server's error");

        // A gRPC answer is HTTP 200 whatever happened: its gRPC status says whose fault it was.
        record.status = 200;
        for (grpc, failed) in [(14, true), (7, false), (0, false)] {
            record.grpc_status = Some(grpc);
            sink.exchange(&record, "", "");
            assert_eq!(rx.try_recv().unwrap().status.is_some(), failed, "grpc-status {grpc}");
        }
    }

    #[test]
    fn sampling_keeps_about_the_configured_share_and_none_at_zero() {
        let records: Vec<ExchangeRecord> = (0..2000)
            .map(|_| ExchangeRecord { exchange_id: uuid::Uuid::new_v4().to_string(), ..ExchangeRecord::default() })
            .collect();
        for (ratio, low, high) in [(0.0, 0, 0), (0.25, 400, 600), (1.0, 2000, 2000)] {
            let (tx, mut rx) = mpsc::channel(4096);
            let sink = SpanSink::new(tx, ratio, Arc::default());
            for r in &records {
                sink.exchange(r, "", "");
            }
            let mut kept = 0;
            while rx.try_recv().is_ok() {
                kept += 1;
            }
            assert!((low..=high).contains(&kept), "ratio {ratio}: {kept} of 2000 kept");
        }
    }
}
