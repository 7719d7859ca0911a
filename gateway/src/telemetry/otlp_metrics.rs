//! The gateway's metrics as an OTLP request: the same snapshot `/metrics` renders, as cumulative
//! sums, gauges and explicit-bucket histograms.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, metric, number_data_point,
};

use super::{Shared, attribute, int_attribute};
use crate::admin::metrics::{BOUNDS_SECS, RouteSnapshot, StateSnapshot};
use crate::edge::EdgeStats;
use crate::exchange::Gateway;

/// Builds one export of everything, at the present time; `started` is when counting began.
pub(super) fn request(
    gateway: &Gateway,
    listeners: &[(String, Arc<EdgeStats>)],
    shared: &Shared,
    started: i64,
) -> ExportMetricsServiceRequest {
    let state = StateSnapshot::read(gateway, listeners);
    let routes = gateway.metrics().snapshot();
    let now = u64::try_from(crate::audit::now_nanos()).unwrap_or(0);
    let mut m = Metrics { now, start: u64::try_from(started).unwrap_or(0), out: Vec::new() };
    m.state(&state);
    m.exchanges(&routes);
    m.sum(
        "splpd.telemetry.spans_dropped",
        "{span}",
        "Spans dropped: the queue was full or their export failed.",
        vec![(Vec::new(), shared.stats.spans_dropped.load(Ordering::Relaxed))],
    );
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(shared.resource.clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(Shared::scope()),
                metrics: m.out,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

struct Metrics {
    now: u64,
    start: u64,
    out: Vec<Metric>,
}

type Points = Vec<(Vec<KeyValue>, u64)>;

impl Metrics {
    fn point(&self, attributes: Vec<KeyValue>, value: u64, cumulative: bool) -> NumberDataPoint {
        NumberDataPoint {
            attributes,
            start_time_unix_nano: if cumulative { self.start } else { 0 },
            time_unix_nano: self.now,
            value: Some(number_data_point::Value::AsInt(i64::try_from(value).unwrap_or(i64::MAX))),
            ..NumberDataPoint::default()
        }
    }

    fn metric(&mut self, name: &str, unit: &str, description: &str, data: metric::Data) {
        self.out.push(Metric {
            name: name.to_owned(),
            unit: unit.to_owned(),
            description: description.to_owned(),
            data: Some(data),
            ..Metric::default()
        });
    }

    /// A monotonic cumulative sum (a counter since start).
    fn sum(&mut self, name: &str, unit: &str, description: &str, points: Points) {
        let data_points = points.into_iter().map(|(a, v)| self.point(a, v, true)).collect();
        let sum =
            Sum { data_points, aggregation_temporality: AggregationTemporality::Cumulative as i32, is_monotonic: true };
        self.metric(name, unit, description, metric::Data::Sum(sum));
    }

    fn gauge(&mut self, name: &str, unit: &str, description: &str, points: Points) {
        let data_points = points.into_iter().map(|(a, v)| self.point(a, v, false)).collect();
        self.metric(name, unit, description, metric::Data::Gauge(Gauge { data_points }));
    }

    fn state(&mut self, s: &StateSnapshot) {
        self.gauge(
            "splpd.maintenance",
            "1",
            "1 while maintenance mode is on.",
            vec![(Vec::new(), u64::from(s.maintenance))],
        );
        self.sum(
            "splpd.config.reloads",
            "{reload}",
            "Configurations put in force since start.",
            vec![(Vec::new(), s.reloads)],
        );
        self.sum(
            "splpd.refusals_unrecorded",
            "{refusal}",
            "Refusals of callers the gateway could not identify left unrecorded (closed unanswered, a bare 401, or hyper's own 400), past [limits] \
             refusals_per_address.",
            vec![(Vec::new(), s.refusals_unrecorded)],
        );
        self.gauge(
            "splpd.audit.available",
            "1",
            "1 while the audit log takes records; 0 while exchanges are refused for want of it.",
            vec![(Vec::new(), u64::from(s.audit_available))],
        );
        if let Some(c) = &s.audit {
            self.sum(
                "splpd.audit.records",
                "{record}",
                "Records written to the audit log.",
                vec![(Vec::new(), c.records)],
            );
            self.sum(
                "splpd.audit.syncs",
                "{sync}",
                "Batches made durable with fdatasync.",
                vec![(Vec::new(), c.syncs)],
            );
            let failed = vec![(Vec::new(), c.failed_batches)];
            self.sum("splpd.audit.failed_batches", "{batch}", "Batches whose write or sync failed.", failed);
            self.gauge(
                "splpd.audit.tree_size",
                "{record}",
                "Records in the audit log's Merkle tree.",
                vec![(Vec::new(), c.tree_size)],
            );
            if let Some(disk) = c.disk {
                self.gauge(
                    "splpd.audit.disk.free",
                    "By",
                    "Bytes the gateway may still write on the audit log's filesystem; when none are left, every \
                     exchange is refused.",
                    vec![(Vec::new(), disk.free)],
                );
                self.gauge(
                    "splpd.audit.disk.size",
                    "By",
                    "Size of the audit log's filesystem.",
                    vec![(Vec::new(), disk.size)],
                );
            }
        }
        let by_listener = |pick: fn(&crate::admin::metrics::ListenerSnapshot) -> u64| -> Points {
            s.listeners.iter().map(|l| (vec![attribute("listener", &l.name)], pick(l))).collect()
        };
        self.gauge(
            "splpd.listener.connections",
            "{connection}",
            "Connections open, by listener.",
            by_listener(|l| l.connections),
        );
        self.gauge(
            "splpd.listener.requests_in_flight",
            "{request}",
            "Requests in progress, by listener.",
            by_listener(|l| l.in_flight),
        );
        self.sum(
            "splpd.listener.shed",
            "{connection}",
            "Connections answered 503 Server.Overloaded because the listener was full.",
            by_listener(|l| l.shed),
        );
        self.sum(
            "splpd.listener.handshakes_failed",
            "{handshake}",
            "TLS handshakes that failed or timed out (a client certificate not trusted, revoked or expired, and the \
             like); they leave no audit record.",
            by_listener(|l| l.handshakes_failed),
        );

        let endpoint = |e: &crate::admin::metrics::EndpointSnapshot| {
            vec![attribute("service", &e.service), attribute("endpoint", &e.endpoint)]
        };
        let up = s.endpoints.iter().map(|e| (endpoint(e), u64::from(e.up))).collect();
        self.gauge(
            "splpd.upstream.endpoint.up",
            "1",
            "1 when an endpoint passes its health checks and is not ejected.",
            up,
        );
        let busy = s.endpoints.iter().map(|e| (endpoint(e), e.in_flight)).collect();
        self.gauge("splpd.upstream.endpoint.in_flight", "{request}", "Requests in flight to an endpoint.", busy);
    }

    fn exchanges(&mut self, routes: &[RouteSnapshot]) {
        let route = |r: &RouteSnapshot| vec![attribute("service", &r.service), attribute("peer", &r.peer)];
        let with = |r: &RouteSnapshot, extra: KeyValue| {
            let mut a = route(r);
            a.push(extra);
            a
        };
        let codes = routes
            .iter()
            .flat_map(|r| {
                r.codes
                    .iter()
                    .map(move |(c, n)| (with(r, int_attribute("http.response.status_code", i64::from(*c))), *n))
            })
            .collect();
        self.sum("splpd.exchanges", "{exchange}", "Exchanges answered, by route and HTTP status.", codes);
        let errors = routes
            .iter()
            .flat_map(|r| r.errors.iter().map(move |(t, n)| (with(r, attribute("error.type", t)), *n)))
            .collect();
        self.sum("splpd.exchange.errors", "{exchange}", "Exchanges answered with an X-Road error, by type.", errors);
        for (name, description, pick) in [
            (
                "splpd.exchange.duration",
                "Time from a request's arrival to the end of its response.",
                (|r: &RouteSnapshot| &r.duration) as fn(&RouteSnapshot) -> &crate::admin::metrics::HistogramSnapshot,
            ),
            ("splpd.upstream.duration", "Time from forwarding a request to the upstream's answer.", |r| &r.upstream),
        ] {
            let data_points = routes
                .iter()
                .filter(|r| pick(r).count() > 0)
                .map(|r| {
                    let h = pick(r);
                    HistogramDataPoint {
                        attributes: route(r),
                        start_time_unix_nano: self.start,
                        time_unix_nano: self.now,
                        count: h.count(),
                        sum: Some(h.sum_seconds),
                        bucket_counts: h.buckets.clone(),
                        explicit_bounds: BOUNDS_SECS.to_vec(),
                        ..HistogramDataPoint::default()
                    }
                })
                .collect();
            let histogram =
                Histogram { data_points, aggregation_temporality: AggregationTemporality::Cumulative as i32 };
            self.metric(name, "s", description, metric::Data::Histogram(histogram));
        }
        let bytes =
            |pick: fn(&RouteSnapshot) -> u64| -> Points { routes.iter().map(|r| (route(r), pick(r))).collect() };
        self.sum("splpd.request.body.size", "By", "Request body bytes received, by route.", bytes(|r| r.request_bytes));
        self.sum("splpd.response.body.size", "By", "Response body bytes sent, by route.", bytes(|r| r.response_bytes));
    }
}
