//! What the exchange path counts, and the Prometheus text the admin listener's `/metrics` makes of
//! it and of the gateway's other state.
//!
//! Exchanges are counted from their audit records, as they are handed to the log ([`Metered`]):
//! every exchange, allowed or denied, has exactly one, so the figures and the log agree by
//! construction. The counters are atomics, found per record by one map lookup; the text is made
//! only when scraped. The exposition format is a handful of line rules
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>), written here rather than
//! through a registry crate, whose labelled families would put a lock and a label allocation on
//! every exchange.

use std::collections::HashMap;
use std::fmt::{self, Display, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use splpd_proto::v1::{ExchangeRecord, RecordKind};

use crate::audit::{AuditCounters, AuditHealth, AuditMode, AuditSink, AuditTicket};
use crate::runtime::Snapshot;

/// Upper bounds of the duration histograms' buckets, in seconds: from a millisecond (a local service on the
/// same machine) to a minute (a slow national API).
pub const BOUNDS_SECS: [f64; 15] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The same bounds in nanoseconds, the unit of the record's times.
pub(crate) const BOUNDS_NANOS: [i64; 15] = [
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
];

/// The X-Road error types the gateway answers with itself. A peer gateway's answer may carry any
/// text; those count as `other`, so that a peer cannot add series without bound.
const ERROR_TYPES: [&str; 17] = [
    "Client.BadRequest",
    "Client.RequestTooLarge",
    "Client.RequestTimeout",
    "Client.DeadlineExceeded",
    "Client.Unauthenticated",
    "Client.InvalidClientIdentity",
    "Client.UnknownService",
    "Client.AccessDenied",
    "Client.RateLimited",
    "Client.ResponseAbandoned",
    "Server.ServerProxy.ServiceFailed",
    "Server.ServerProxy.ServiceTimeout",
    "Server.ServerProxy.ServiceUnavailable",
    "Server.ClientProxy.RequestHashMismatch",
    "Server.AuditUnavailable",
    "Server.Overloaded",
    "Server.InternalError",
];

/// Status codes are counted by value; anything outside HTTP's range counts under 0.
const CODES: usize = 600;

/// A histogram of durations with [`BOUNDS_SECS`].
#[derive(Debug, Default)]
struct Histogram {
    /// Observations per bucket (not cumulative); the last is above every bound.
    buckets: [AtomicU64; BOUNDS_NANOS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, nanos: i64) {
        let i = BOUNDS_NANOS.iter().position(|b| nanos <= *b).unwrap_or(BOUNDS_NANOS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(nanos).unwrap_or(0), Ordering::Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        #[allow(clippy::cast_precision_loss)] // Seconds to the nanosecond up to 104 days' worth.
        let sum_seconds = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        HistogramSnapshot { buckets: self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(), sum_seconds }
    }
}

/// The counters of one route: a local service, or a peer gateway that calls were routed to or came from.
#[derive(Debug)]
struct RouteMeter {
    service: Box<str>,
    peer: Box<str>,
    codes: Box<[AtomicU64]>,
    /// By [`ERROR_TYPES`], then `other`.
    errors: [AtomicU64; ERROR_TYPES.len() + 1],
    /// From the request head's arrival to the response's end.
    duration: Histogram,
    /// From forwarding to the upstream's answer, for exchanges that reached one.
    upstream: Histogram,
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
}

impl RouteMeter {
    fn new(service: &str, peer: &str) -> Self {
        Self {
            service: service.into(),
            peer: peer.into(),
            codes: (0..CODES).map(|_| AtomicU64::new(0)).collect(),
            errors: Default::default(),
            duration: Histogram::default(),
            upstream: Histogram::default(),
            request_bytes: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
        }
    }

    fn observe(&self, r: &ExchangeRecord) {
        let code = Some(usize::from(crate::audit::answered_status(r))).filter(|c| *c < CODES).unwrap_or(0);
        self.codes[code].fetch_add(1, Ordering::Relaxed);
        if !r.error_type.is_empty() {
            let i = ERROR_TYPES.iter().position(|t| *t == r.error_type).unwrap_or(ERROR_TYPES.len());
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
        if r.responded_at_unix_nanos > 0 && r.received_at_unix_nanos > 0 {
            self.duration.observe(r.responded_at_unix_nanos.saturating_sub(r.received_at_unix_nanos).max(0));
        }
        if r.forwarded_at_unix_nanos > 0 && r.upstream_answered_at_unix_nanos > 0 {
            self.upstream.observe(r.upstream_answered_at_unix_nanos.saturating_sub(r.forwarded_at_unix_nanos).max(0));
        }
        for (total, bytes) in
            [(&self.request_bytes, r.request_body_bytes), (&self.response_bytes, r.response_body_bytes)]
        {
            if bytes > 0 {
                total.fetch_add(bytes, Ordering::Relaxed);
            }
        }
    }

    /// `None` while the route has had no exchange.
    fn snapshot(&self) -> Option<RouteSnapshot> {
        let codes: Vec<(u16, u64)> = self
            .codes
            .iter()
            .enumerate()
            .filter_map(|(code, n)| Some((u16::try_from(code).ok()?, n.load(Ordering::Relaxed))))
            .filter(|(_, n)| *n > 0)
            .collect();
        if codes.is_empty() {
            return None;
        }
        let errors = self
            .errors
            .iter()
            .enumerate()
            .map(|(i, n)| (*ERROR_TYPES.get(i).unwrap_or(&"other"), n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        Some(RouteSnapshot {
            service: self.service.to_string(),
            peer: self.peer.to_string(),
            codes,
            errors,
            duration: self.duration.snapshot(),
            upstream: self.upstream.snapshot(),
            request_bytes: self.request_bytes.load(Ordering::Relaxed),
            response_bytes: self.response_bytes.load(Ordering::Relaxed),
        })
    }
}

/// Route meters by service or peer identifier.
type Routes = HashMap<Box<str>, Arc<RouteMeter>, foldhash::fast::RandomState>;

/// The key of the meter of calls that came from `peer` for the local `service` (a line break
/// is in no identifier).
fn inbound_key(service: &str, peer: &str) -> String {
    format!("{service}\n{peer}")
}

/// The exchange counters, one set per route that the configuration names.
///
/// Label values come only from the configuration (local services, national APIs, peer
/// gateways) and the gateway's own services: a call for a service nobody configured counts under
/// empty labels, so that no
/// client can grow the metrics by inventing identifiers.
#[derive(Debug)]
pub struct ExchangeMetrics {
    /// Local services, national APIs and the gateway's own services by service identifier;
    /// peers by gateway identifier.
    routes: ArcSwap<Routes>,
    /// Exchanges refused before a configured route was found.
    unrouted: Arc<RouteMeter>,
}

impl ExchangeMetrics {
    /// Counters for the routes of `snapshot`.
    pub fn new(snapshot: &Snapshot) -> Self {
        let metrics = Self::default();
        metrics.add_routes(snapshot);
        metrics
    }

    /// Counters for these services and peer gateways (by identifier), as a configuration would
    /// name them.
    pub fn for_routes(services: &[String], peers: &[String]) -> Self {
        let metrics = Self::default();
        metrics.add(services.iter().cloned(), peers.iter().cloned());
        metrics
    }

    /// Adds the routes a reloaded configuration names. Routes it no longer names keep their
    /// counters until the gateway stops: a counter that vanished would read as a reset.
    pub fn add_routes(&self, snapshot: &Snapshot) {
        let config = &snapshot.config;
        let own = crate::local::Own::all().filter_map(|own| own.service_id(&snapshot.gateway_id));
        let services = config
            .services
            .iter()
            .map(|s| s.id.to_string())
            .chain(config.national.iter().flat_map(|n| n.apis.iter().map(|a| a.service.to_string())))
            .chain(own.map(|id| id.to_string()));
        let peers = config.peers.iter().map(|p| p.id.to_string());
        self.add(services, peers);
    }

    fn add(&self, services: impl Iterator<Item = String>, peers: impl Iterator<Item = String>) {
        let (services, peers): (Vec<String>, Vec<String>) = (services.collect(), peers.collect());
        // `rcu`, as `add_inbound` does from exchanges: a meter one makes is not lost to the other.
        self.routes.rcu(|current| {
            let mut routes = Routes::clone(current);
            for service in &services {
                routes.entry(service.as_str().into()).or_insert_with(|| Arc::new(RouteMeter::new(service, "")));
            }
            for peer in &peers {
                routes.entry(peer.as_str().into()).or_insert_with(|| Arc::new(RouteMeter::new("", peer)));
            }
            routes
        });
    }

    /// Counts one exchange by its record.
    pub fn observe(&self, record: &ExchangeRecord) {
        self.observe_then(record, |_, _| {});
    }

    /// Counts one exchange by its record, then gives `then` the route labels it was counted
    /// under (service, peer).
    pub fn observe_then(&self, record: &ExchangeRecord, then: impl FnOnce(&str, &str)) {
        let routes = self.routes.load();
        // A call sent to a peer names the peer's service, which is not configured here: it counts
        // under the peer. A call that arrived from a peer for a service here counts under both,
        // the service and the peer it came from (a configured peer: labels stay the
        // configuration's).
        let local = routes.get(record.service.as_str()).filter(|m| !m.service.is_empty());
        let made;
        let meter: &RouteMeter = match local {
            Some(service) if !record.peer.is_empty() && routes.contains_key(record.peer.as_str()) => {
                let key = inbound_key(&record.service, &record.peer);
                match routes.get(key.as_str()) {
                    Some(meter) => meter,
                    None => {
                        made = self.add_inbound(&service.service, &record.peer, &key);
                        &made
                    }
                }
            }
            Some(service) => service,
            None => routes.get(record.peer.as_str()).unwrap_or(&self.unrouted),
        };
        meter.observe(record);
        then(&meter.service, &meter.peer);
    }

    /// The meter of calls from `peer` to `service`, made on its first call (rare: once per pair).
    fn add_inbound(&self, service: &str, peer: &str, key: &str) -> Arc<RouteMeter> {
        let mut made = None;
        self.routes.rcu(|current| {
            let mut routes = Routes::clone(current);
            let meter = routes.entry(key.into()).or_insert_with(|| Arc::new(RouteMeter::new(service, peer)));
            made = Some(Arc::clone(meter));
            routes
        });
        made.unwrap_or_else(|| Arc::clone(&self.unrouted))
    }

    /// Every route with exchanges, as its counters read now, sorted by service and peer.
    pub fn snapshot(&self) -> Vec<RouteSnapshot> {
        let routes = self.routes.load();
        let mut out: Vec<RouteSnapshot> =
            routes.values().chain([&self.unrouted]).filter_map(|m| m.snapshot()).collect();
        out.sort_by(|a, b| (&a.service, &a.peer).cmp(&(&b.service, &b.peer)));
        out
    }
}

/// One route's counters as read at one moment, for an exporter.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSnapshot {
    /// The local service, national API or own service; empty for a peer or for no route.
    pub service: String,
    /// The peer gateway calls were sent to, or came from for `service`; empty otherwise.
    pub peer: String,
    /// Exchanges by HTTP status (0: none was sent), statuses without any left out.
    pub codes: Vec<(u16, u64)>,
    /// Exchanges by X-Road error type (`other` for a peer's own), types without any left out.
    pub errors: Vec<(&'static str, u64)>,
    /// From a request's arrival to the end of its response.
    pub duration: HistogramSnapshot,
    /// From forwarding to the upstream's answer.
    pub upstream: HistogramSnapshot,
    /// Request body bytes received.
    pub request_bytes: u64,
    /// Response body bytes sent.
    pub response_bytes: u64,
}

/// A duration histogram as read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Observations per bucket of [`BOUNDS_SECS`], the last above every bound; not cumulative.
    pub buckets: Vec<u64>,
    /// The observations' sum, in seconds.
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// What the gateway reports of itself besides its exchanges, read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct StateSnapshot {
    /// The gateway's identifier.
    pub gateway: String,
    /// Whether maintenance mode is on.
    pub maintenance: bool,
    /// Configurations put in force since start.
    pub reloads: u64,
    /// Refusals of unidentified callers left unrecorded since start (closed unanswered, or a bare
    /// 401), past
    /// `[limits] refusals_per_address`.
    pub refusals_unrecorded: u64,
    /// Whether the audit log takes records.
    pub audit_available: bool,
    /// What the audit log has written, when it counts.
    pub audit: Option<AuditCounters>,
    /// Each exchange listener.
    pub listeners: Vec<ListenerSnapshot>,
    /// Each local service's endpoints.
    pub endpoints: Vec<EndpointSnapshot>,
    /// The OpenTelemetry exporter's counters, when it runs.
    pub telemetry: Option<TelemetrySnapshot>,
    /// The configuration file and its version in force, when the gateway runs from one.
    pub config: Option<ConfigSnapshot>,
    /// When each loaded CRL is due to be replaced.
    pub crls: Vec<crate::tls::CrlStatus>,
    /// The trust anchors' CA certificates and their ends.
    pub cas: Vec<crate::tls::CaStatus>,
    /// When the gateway's certificate expires.
    pub gateway_cert_not_after: time::OffsetDateTime,
}

/// The configuration file a gateway runs from, for the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSnapshot {
    /// The file.
    pub file: String,
    /// The version of its text in force, when known.
    pub version: Option<String>,
    /// The latest configuration put in force since start.
    pub last_change: Option<crate::reload::LastChange>,
    /// Reloads refused since start.
    pub refused: u64,
    /// The latest reload refused, unless a configuration went into force after it.
    pub last_refused: Option<crate::reload::RefusedReload>,
}

/// What the OpenTelemetry exporter has done since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelemetrySnapshot {
    /// Spans the collector took.
    pub spans_sent: u64,
    /// Spans dropped: the queue was full, or their export failed.
    pub spans_dropped: u64,
    /// Metric exports the collector took.
    pub metric_exports: u64,
    /// Exports of either kind that failed.
    pub failed_exports: u64,
}

/// One exchange listener's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSnapshot {
    /// Its name.
    pub name: String,
    /// Connections open.
    pub connections: u64,
    /// Requests in progress.
    pub in_flight: u64,
    /// Connections answered 503 because it was full, since start.
    pub shed: u64,
    /// TLS handshakes that failed or timed out, since start.
    pub handshakes_failed: u64,
}

/// One upstream endpoint of a local service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSnapshot {
    /// The service.
    pub service: String,
    /// The endpoint's base URL.
    pub endpoint: String,
    /// Passing its health checks and not ejected.
    pub up: bool,
    /// Whether health checks run on it; without them, `up` only means that calls have not
    /// failed enough to eject it.
    pub checked: bool,
    /// Requests in flight to it.
    pub in_flight: u64,
}

impl StateSnapshot {
    /// Reads `gateway`'s state, with the counters of its exchange `listeners`.
    pub fn read(gateway: &crate::exchange::Gateway, listeners: &[(String, Arc<crate::edge::EdgeStats>)]) -> Self {
        let snap = gateway.snapshot();
        let audit = gateway.audit();
        let mut routes: Vec<_> = snap.routes.values().collect();
        routes.sort_by(|a, b| a.id.cmp(&b.id));
        let endpoints = routes
            .iter()
            .flat_map(|r| {
                let service = r.id.to_string();
                r.upstreams.status().into_iter().map(move |e| EndpointSnapshot {
                    service: service.clone(),
                    endpoint: e.url,
                    up: e.healthy && e.ejected_until.is_none(),
                    checked: e.checked,
                    in_flight: u64::from(e.active),
                })
            })
            .collect();
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Self {
            crls: snap.trust.crl_status().to_vec(),
            cas: snap.trust.ca_status().to_vec(),
            gateway_cert_not_after: snap.gateway_cert.not_after(),
            gateway: snap.gateway_id.to_string(),
            maintenance: gateway.maintenance().is_on(),
            refusals_unrecorded: gateway.refusals().unrecorded(),
            reloads: gateway.generation(),
            audit_available: audit.health().is_available(),
            audit: audit.counters(),
            listeners: listeners
                .iter()
                .map(|(name, s)| ListenerSnapshot {
                    name: name.clone(),
                    connections: count(s.open.load(Ordering::Relaxed)),
                    in_flight: count(s.requests.in_flight()),
                    shed: s.shed.load(Ordering::Relaxed),
                    handshakes_failed: s.handshakes_failed.load(Ordering::Relaxed),
                })
                .collect(),
            endpoints,
            config: gateway.reloader().map(|r| ConfigSnapshot {
                file: r.path().display().to_string(),
                version: r.version_in_force(),
                last_change: r.last_change(),
                refused: r.refused(),
                last_refused: r.last_refused(),
            }),
            telemetry: gateway.telemetry().map(|t| TelemetrySnapshot {
                spans_sent: t.spans_sent.load(Ordering::Relaxed),
                spans_dropped: t.spans_dropped.load(Ordering::Relaxed),
                metric_exports: t.metric_exports.load(Ordering::Relaxed),
                failed_exports: t.failed_exports.load(Ordering::Relaxed),
            }),
        }
    }
}

/// Writes the gateway's state in Prometheus text.
pub fn encode_state(out: &mut Exposition, s: &StateSnapshot) {
    out.family("splpd_build_info", "gauge", "The gateway's identifier and version.");
    out.sample("splpd_build_info", &[("gateway", &s.gateway), ("version", env!("CARGO_PKG_VERSION"))], 1);
    out.single("splpd_maintenance", "gauge", "1 while maintenance mode is on.", u8::from(s.maintenance));
    out.single("splpd_config_reloads_total", "counter", "Configurations put in force since start.", s.reloads);
    out.single(
        "splpd_refusals_unrecorded_total",
        "counter",
        "Refusals of callers the gateway could not identify left unrecorded (closed unanswered, a bare 401, or hyper's own 400), past [limits] \
         refusals_per_address.",
        s.refusals_unrecorded,
    );
    if let Some(c) = &s.config {
        out.single(
            "splpd_config_reloads_refused_total",
            "counter",
            "Reloads refused since start: the configuration file, or a certificate, key or CRL it names, could \
             not be put in force.",
            c.refused,
        );
    }
    out.single(
        "splpd_audit_available",
        "gauge",
        "1 while the audit log takes records; 0 while exchanges are refused for want of it.",
        u8::from(s.audit_available),
    );
    if let Some(c) = &s.audit {
        out.single("splpd_audit_records_total", "counter", "Records written to the audit log.", c.records);
        out.single("splpd_audit_batches_total", "counter", "Batches (one write each) written.", c.batches);
        out.single("splpd_audit_syncs_total", "counter", "Batches made durable with fdatasync.", c.syncs);
        out.single(
            "splpd_audit_failed_batches_total",
            "counter",
            "Batches whose write or sync failed.",
            c.failed_batches,
        );
        out.single("splpd_audit_tree_size", "gauge", "Records in the audit log's Merkle tree.", c.tree_size);
        if let Some(disk) = c.disk {
            let free = "Bytes the gateway may still write on the audit log's filesystem; with less than [audit] \
                        preallocate left, every exchange is refused.";
            out.single("splpd_audit_disk_free_bytes", "gauge", free, disk.free);
            out.single("splpd_audit_disk_size_bytes", "gauge", "Size of the audit log's filesystem.", disk.size);
        }
    }
    if let Some(t) = &s.telemetry {
        let sent = "Spans the OpenTelemetry collector took.";
        out.single("splpd_telemetry_spans_sent_total", "counter", sent, t.spans_sent);
        let dropped = "Spans dropped: the export queue was full, or the collector did not take them.";
        out.single("splpd_telemetry_spans_dropped_total", "counter", dropped, t.spans_dropped);
        let exports = "Metric exports the OpenTelemetry collector took.";
        out.single("splpd_telemetry_metric_exports_total", "counter", exports, t.metric_exports);
        let failed = "Exports to the OpenTelemetry collector that failed, spans or metrics.";
        out.single("splpd_telemetry_failed_exports_total", "counter", failed, t.failed_exports);
    }
    out.family("splpd_listener_connections", "gauge", "Connections open, by listener.");
    for l in &s.listeners {
        out.sample("splpd_listener_connections", &[("listener", &l.name)], l.connections);
    }
    out.family("splpd_listener_requests_in_flight", "gauge", "Requests in progress, by listener.");
    for l in &s.listeners {
        out.sample("splpd_listener_requests_in_flight", &[("listener", &l.name)], l.in_flight);
    }
    out.family(
        "splpd_listener_shed_total",
        "counter",
        "Connections answered 503 Server.Overloaded because the listener was full, by listener.",
    );
    for l in &s.listeners {
        out.sample("splpd_listener_shed_total", &[("listener", &l.name)], l.shed);
    }
    out.family(
        "splpd_listener_handshakes_failed_total",
        "counter",
        "TLS handshakes that failed or timed out (a client certificate not trusted, revoked or expired, and the \
         like), by listener; they leave no audit record.",
    );
    for l in &s.listeners {
        out.sample("splpd_listener_handshakes_failed_total", &[("listener", &l.name)], l.handshakes_failed);
    }

    out.family(
        "splpd_upstream_endpoint_up",
        "gauge",
        "1 when an endpoint passes its health checks (without a health_check: until calls to it fail) and is not \
         ejected, by service and endpoint.",
    );
    for e in &s.endpoints {
        out.sample("splpd_upstream_endpoint_up", &[("service", &e.service), ("endpoint", &e.endpoint)], u8::from(e.up));
    }
    out.family(
        "splpd_crl_next_update_timestamp_seconds",
        "gauge",
        "When each loaded CRL reaches its next update (Unix time), by trust anchor and file: past it, every \
         certificate of that CA is refused until a fresh CRL is loaded.",
    );
    for c in &s.crls {
        if let Some(next) = c.next_update {
            let file = c.path.display().to_string();
            let labels = [("anchor", c.anchor.as_str()), ("file", file.as_str())];
            out.sample("splpd_crl_next_update_timestamp_seconds", &labels, next.unix_timestamp());
        }
    }
    out.family(
        "splpd_trust_anchor_ca_expiry_timestamp_seconds",
        "gauge",
        "When each trust anchor's CA certificate expires (Unix time), by anchor, CA name and certificate SHA-256 \
         (two CAs may share a name): every certificate it issued ends with it.",
    );
    for c in &s.cas {
        let labels = [("anchor", c.anchor.as_str()), ("ca", c.subject.as_str()), ("sha256", c.fingerprint.as_str())];
        out.sample("splpd_trust_anchor_ca_expiry_timestamp_seconds", &labels, c.not_after.unix_timestamp());
    }
    out.family(
        "splpd_gateway_certificate_expiry_timestamp_seconds",
        "gauge",
        "When the gateway's certificate expires (Unix time): past it, agencies and peer gateways refuse it.",
    );
    out.sample("splpd_gateway_certificate_expiry_timestamp_seconds", &[], s.gateway_cert_not_after.unix_timestamp());
    out.family("splpd_upstream_endpoint_in_flight", "gauge", "Requests in flight to an endpoint.");
    for e in &s.endpoints {
        out.sample(
            "splpd_upstream_endpoint_in_flight",
            &[("service", &e.service), ("endpoint", &e.endpoint)],
            e.in_flight,
        );
    }
}

fn labels(r: &RouteSnapshot) -> [(&'static str, &str); 2] {
    [("service", r.service.as_str()), ("peer", r.peer.as_str())]
}

/// Writes the exchange families of `routes` in Prometheus text.
pub fn encode_exchanges(out: &mut Exposition, routes: &[RouteSnapshot]) {
    out.family("splpd_exchanges_total", "counter", "Exchanges answered, by route and HTTP status.");
    for r in routes {
        for (code, n) in &r.codes {
            let [s, p] = labels(r);
            out.sample("splpd_exchanges_total", &[s, p, ("code", &code.to_string())], n);
        }
    }
    out.family(
        "splpd_exchange_errors_total",
        "counter",
        "Exchanges answered with an X-Road error, by route and error type.",
    );
    for r in routes {
        for (kind, n) in &r.errors {
            let [s, p] = labels(r);
            out.sample("splpd_exchange_errors_total", &[s, p, ("type", kind)], n);
        }
    }
    out.family(
        "splpd_exchange_duration_seconds",
        "histogram",
        "Time from a request's arrival to the end of its response, by route.",
    );
    for r in routes.iter().filter(|r| r.duration.count() > 0) {
        out.histogram("splpd_exchange_duration_seconds", &labels(r), &r.duration);
    }
    out.family(
        "splpd_upstream_duration_seconds",
        "histogram",
        "Time from forwarding a request to the upstream's answer, by route.",
    );
    for r in routes.iter().filter(|r| r.upstream.count() > 0) {
        out.histogram("splpd_upstream_duration_seconds", &labels(r), &r.upstream);
    }
    out.family("splpd_request_body_bytes_total", "counter", "Request body bytes received, by route.");
    for r in routes {
        out.sample("splpd_request_body_bytes_total", &labels(r), r.request_bytes);
    }
    out.family("splpd_response_body_bytes_total", "counter", "Response body bytes sent, by route.");
    for r in routes {
        out.sample("splpd_response_body_bytes_total", &labels(r), r.response_bytes);
    }
}

impl Default for ExchangeMetrics {
    /// No routes yet: everything counts as unrouted.
    fn default() -> Self {
        Self { routes: ArcSwap::from_pointee(Routes::default()), unrouted: Arc::new(RouteMeter::new("", "")) }
    }
}

/// An [`AuditSink`] that counts each exchange record into [`ExchangeMetrics`] (and, with
/// `[telemetry]`, makes it a span) on its way to the log. Request records (`strict` mode's first record) are not counted: their exchange is counted
/// once, by its final record.
///
/// An exchange is counted by the status its record holds, except while the log is not taking
/// records: its record is then refused and the exchange answered `503 Server.AuditUnavailable`
/// (gRPC's `UNAVAILABLE`), which is how it is counted, not by the status it was about to get.
/// The few exchanges whose records reach the log just as it fails are counted by that status.
#[derive(Debug)]
pub struct Metered {
    inner: Arc<dyn AuditSink>,
    metrics: Arc<ExchangeMetrics>,
    spans: Option<Arc<crate::telemetry::SpanSink>>,
}

impl Metered {
    /// Counts into `metrics` what goes to `inner`.
    pub fn new(inner: Arc<dyn AuditSink>, metrics: Arc<ExchangeMetrics>) -> Self {
        Self { inner, metrics, spans: None }
    }

    /// Also makes each exchange a span for OpenTelemetry.
    pub fn with_spans(mut self, spans: Option<Arc<crate::telemetry::SpanSink>>) -> Self {
        self.spans = spans;
        self
    }
}

/// The record as its exchange is answered when the log refuses it: `503
/// Server.AuditUnavailable`, or for a gRPC call answered over HTTP 200 the status `UNAVAILABLE`.
fn as_refused_unlogged(record: &ExchangeRecord) -> ExchangeRecord {
    let mut refused = record.clone();
    match refused.grpc_status {
        Some(_) if refused.status == 200 => refused.grpc_status = Some(14),
        _ => refused.status = 503,
    }
    "Server.AuditUnavailable".clone_into(&mut refused.error_type);
    refused
}

impl AuditSink for Metered {
    fn append(&self, record: ExchangeRecord, mode: AuditMode) -> AuditTicket {
        if record.kind != RecordKind::Request as i32 {
            let refused;
            let seen = if self.inner.taking_records() {
                &record
            } else {
                refused = as_refused_unlogged(&record);
                &refused
            };
            match &self.spans {
                Some(spans) => {
                    self.metrics.observe_then(seen, |service, peer| spans.exchange(seen, service, peer));
                }
                None => self.metrics.observe(seen),
            }
        }
        self.inner.append(record, mode)
    }

    fn flush(&self) -> AuditTicket {
        self.inner.flush()
    }

    fn health(&self) -> AuditHealth {
        self.inner.health()
    }

    fn taking_records(&self) -> bool {
        self.inner.taking_records()
    }

    fn shutdown(&self) -> AuditTicket {
        self.inner.shutdown()
    }

    fn counters(&self) -> Option<AuditCounters> {
        self.inner.counters()
    }

    fn recovered_at_open(&self) -> Option<String> {
        self.inner.recovered_at_open()
    }
}

/// Prometheus text exposition (format 0.0.4), written family by family.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// The content type of the text.
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";

    /// Starts a family: its help and type lines. Its samples must follow before the next family.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.text, " {value}");
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let mut cumulative = 0;
        for (i, n) in h.buckets.iter().enumerate() {
            cumulative += n;
            let le = BOUNDS_SECS.get(i).map_or_else(|| "+Inf".to_owned(), ToString::to_string);
            let _ = write!(self.text, "{name}_bucket");
            self.labels(labels, Some(&le));
            let _ = writeln!(self.text, " {cumulative}");
        }
        let _ = write!(self.text, "{name}_sum");
        self.labels(labels, None);
        let _ = writeln!(self.text, " {}", h.sum_seconds);
        let _ = write!(self.text, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.text, " {cumulative}");
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
        let mut first = true;
        for (key, value) in all {
            self.text.push(if first { '{' } else { ',' });
            first = false;
            let _ = write!(self.text, "{key}=\"{}\"", Escaped(value));
        }
        if !first {
            self.text.push('}');
        }
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        self.text
    }
}

/// A label value with `\`, `"` and line feeds escaped, as the format asks.
struct Escaped<'a>(&'a str);

impl Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter_text(observe: impl FnOnce(&RouteMeter)) -> String {
        let meter = RouteMeter::new("ID/PEMDA/1602/X/svc", "");
        observe(&meter);
        let mut out = Exposition::default();
        out.family("t", "histogram", "h");
        out.histogram("t", &[("service", "ID/PEMDA/1602/X/svc"), ("peer", "")], &meter.duration.snapshot());
        out.finish()
    }

    fn record(received: i64, responded: i64) -> ExchangeRecord {
        ExchangeRecord {
            received_at_unix_nanos: received,
            responded_at_unix_nanos: responded,
            status: 200,
            ..ExchangeRecord::default()
        }
    }

    #[test]
    fn durations_fall_in_cumulative_buckets_with_a_bound_counting_as_within() {
        let text = meter_text(|m| {
            m.observe(&record(1, 1 + 1_000_000)); // exactly 1 ms: within the first bucket
            m.observe(&record(1, 1 + 1_000_001)); // just over
            m.observe(&record(1, 1 + 120_000_000_000)); // two minutes: above every bound
            m.observe(&record(0, 5)); // no arrival time: not a duration at all
        });
        let bucket = |le: &str| {
            let prefix = format!("t_bucket{{service=\"ID/PEMDA/1602/X/svc\",peer=\"\",le=\"{le}\"}} ");
            text.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {le} in {text}")).to_owned()
        };
        assert_eq!(bucket("0.001"), "1");
        assert_eq!(bucket("0.0025"), "2");
        assert_eq!(bucket("60"), "2");
        assert_eq!(bucket("+Inf"), "3");
        assert!(text.contains("t_count{service=\"ID/PEMDA/1602/X/svc\",peer=\"\"} 3\n"), "{text}");
        assert!(text.contains("t_sum{service=\"ID/PEMDA/1602/X/svc\",peer=\"\"} 120.002000001\n"), "{text}");
    }

    #[test]
    fn label_values_and_help_are_escaped_and_unknown_error_types_count_as_other() {
        let mut out = Exposition::default();
        out.family("x_total", "counter", "a \\ and\na line");
        out.sample("x_total", &[("v", "quote \" back \\ nl \n end")], 1);
        let text = out.finish();
        assert_eq!(
            text,
            "# HELP x_total a \\\\ and\\na line\n# TYPE x_total counter\nx_total{v=\"quote \\\" back \\\\ nl \\n end\"} 1\n"
        );

        let meter = RouteMeter::new("", "ID/PEMDA/1601/gw1");
        for error in ["Client.AccessDenied", "Peer.Made.This.Up", "Another.Invention"] {
            meter.observe(&ExchangeRecord { status: 403, error_type: error.to_owned(), ..ExchangeRecord::default() });
        }
        assert_eq!(meter.errors[ERROR_TYPES.len()].load(Ordering::Relaxed), 2);
        let denied = ERROR_TYPES.iter().position(|t| *t == "Client.AccessDenied").unwrap();
        assert_eq!(meter.errors[denied].load(Ordering::Relaxed), 1);
        assert_eq!(meter.codes[403].load(Ordering::Relaxed), 3);
    }

    /// A call that came from a peer gateway for a service here counts under the service and that
    /// peer; one from a gateway not configured as a peer, under the service alone.
    #[test]
    fn calls_from_a_peer_count_under_the_service_and_the_peer() {
        let (svc, peer) = ("ID/PEMDA/1602/DISDUKCAPIL/nik-verify", "ID/PEMDA/1601/gw1");
        let metrics = ExchangeMetrics::for_routes(&[svc.to_owned()], &[peer.to_owned()]);
        let call = |from: &str| ExchangeRecord {
            service: svc.to_owned(),
            peer: from.to_owned(),
            status: 200,
            ..ExchangeRecord::default()
        };
        metrics.observe(&call(peer));
        metrics.observe(&call(peer));
        metrics.observe(&call(""));
        metrics.observe(&call("ID/PEMDA/9999/gw1"));
        let counted: Vec<_> = metrics.snapshot().into_iter().map(|r| (r.service, r.peer, r.codes)).collect();
        let expected = [("", vec![(200, 2)]), (peer, vec![(200, 2)])].map(|(p, c)| (svc.to_owned(), p.to_owned(), c));
        assert_eq!(counted, expected);
    }

    /// While the log refuses records, exchanges are answered `503 Server.AuditUnavailable`
    /// (gRPC's `UNAVAILABLE`), and counted so: not by the refusal or answer they were about to get.
    #[test]
    fn while_the_log_refuses_records_exchanges_count_as_the_503_they_get() {
        let sink = Arc::new(crate::audit::MemorySink::new());
        let metrics = Arc::new(ExchangeMetrics::default());
        let metered = Metered::new(Arc::clone(&sink) as Arc<dyn AuditSink>, Arc::clone(&metrics));
        let codes = |code: usize| metrics.unrouted.codes[code].load(Ordering::Relaxed);
        let rest = |status: u32| ExchangeRecord { status, ..ExchangeRecord::default() };
        let grpc = ExchangeRecord { status: 200, grpc_status: Some(8), ..ExchangeRecord::default() };

        drop(metered.append(rest(429), AuditMode::Sync));
        drop(metered.append(grpc.clone(), AuditMode::Sync));
        assert_eq!((codes(429), codes(503)), (2, 0), "taken records count by their status");

        sink.set_failing(true);
        drop(metered.append(rest(429), AuditMode::Sync));
        drop(metered.append(rest(200), AuditMode::Sync));
        drop(metered.append(grpc, AuditMode::Sync));
        assert_eq!((codes(429), codes(200), codes(503)), (2, 0, 3));
        let unavailable = ERROR_TYPES.iter().position(|t| *t == "Server.AuditUnavailable").unwrap();
        assert_eq!(metrics.unrouted.errors[unavailable].load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_grpc_answer_counts_under_the_status_its_grpc_status_stands_for() {
        let meter = RouteMeter::new("ID/PEMDA/1602/DINKES/rujukan", "");
        let grpc =
            |status: u32, grpc: Option<u32>| ExchangeRecord { status, grpc_status: grpc, ..ExchangeRecord::default() };
        for (record, counted) in [
            (grpc(200, Some(0)), 200),
            (grpc(200, Some(7)), 403),
            (grpc(200, Some(16)), 401),
            (grpc(200, Some(8)), 429),
            (grpc(200, Some(14)), 503),
            (grpc(200, Some(4)), 504),
            (grpc(200, Some(2)), 500),
            // An answer that is not gRPC's 200 (a refusal before the call, over HTTP) keeps its own.
            (grpc(415, Some(3)), 415),
            (grpc(404, None), 404),
        ] {
            let before = meter.codes[counted].load(Ordering::Relaxed);
            meter.observe(&record);
            assert_eq!(meter.codes[counted].load(Ordering::Relaxed), before + 1, "{record:?}");
        }
    }
}
