//! Export over OpenTelemetry (design §6): a span for each exchange and the gateway's metrics,
//! sent by OTLP/gRPC to `[telemetry] otlp_endpoint`, such as an OpenTelemetry Collector.
//!
//! Both come from what the gateway already keeps: a span is made from an exchange's audit record
//! as it is handed to the log (as the `/metrics` counters are), and the metrics are the same
//! counters and state the admin listener's `/metrics` shows, read every `metrics_interval`. So
//! the exchange path gains no instrumentation of its own, and the three views cannot disagree.
//!
//! Telemetry is best effort, unlike the audit log: spans wait in a bounded queue and are dropped
//! (and counted) when it is full or the collector cannot be reached, and no exchange ever waits
//! for the collector. A span carries no path, query or user: personal data stays in the audit
//! log, which is access-controlled and tamper-evident; the span's `splpd.exchange_id` finds the
//! record.

mod otlp_metrics;
mod spans;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tokio::sync::{mpsc, watch};
use tonic::transport::{Channel, Endpoint};

pub use self::spans::SpanSink;
use crate::edge::EdgeStats;
use crate::exchange::Gateway;

/// Spans waiting to be sent; beyond this they are dropped (a collector down for a while must not
/// grow the gateway's memory).
const QUEUE: usize = 8192;

/// Spans per export request.
const BATCH: usize = 512;

/// A span waits at most this long for its batch to fill.
const LINGER: Duration = Duration::from_secs(1);

/// Time allowed for one export request.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// A failing collector is reported at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
#[error("[telemetry] otlp_endpoint {endpoint:?}: {reason}")]
pub struct TelemetryError {
    endpoint: String,
    reason: String,
}

/// What the exporter has done since start, for tests and the logs.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans sent to the collector.
    pub spans_sent: AtomicU64,
    /// Spans dropped: the queue was full, or their export failed.
    pub spans_dropped: AtomicU64,
    /// Metric exports that reached the collector.
    pub metric_exports: AtomicU64,
    /// Exports of either kind that failed.
    pub failed_exports: AtomicU64,
}

/// The exporter of one gateway, made before the gateway so that its span sink can be handed to
/// the gateway's audit path, and started once the gateway runs.
#[derive(Debug)]
pub struct Telemetry {
    channel: Channel,
    resource: Resource,
    interval: Duration,
    sink: Arc<SpanSink>,
    queue: mpsc::Receiver<Span>,
    stats: Arc<ExportStats>,
    endpoint: String,
}

impl Telemetry {
    /// An exporter to `config`'s collector for gateway `gateway`. Nothing connects yet: the
    /// collector may come up after the gateway.
    pub fn new(config: &crate::config::Telemetry, gateway: &splpd_certs::id::ServerId) -> Result<Self, TelemetryError> {
        let endpoint = config.otlp_endpoint.clone();
        let channel = Endpoint::from_shared(endpoint.clone())
            .map_err(|e| TelemetryError { endpoint: endpoint.clone(), reason: e.to_string() })?
            .connect_timeout(Duration::from_secs(5))
            .timeout(EXPORT_TIMEOUT)
            .connect_lazy();
        let resource = Resource {
            attributes: vec![
                attribute("service.name", config.service_name()),
                attribute("service.version", env!("CARGO_PKG_VERSION")),
                attribute("service.instance.id", &gateway.to_string()),
            ],
            ..Resource::default()
        };
        let stats = Arc::new(ExportStats::default());
        let (tx, queue) = mpsc::channel(QUEUE);
        let sink = Arc::new(SpanSink::new(tx, config.sample_ratio(), Arc::clone(&stats)));
        Ok(Self { channel, resource, interval: config.metrics_interval(), sink, queue, stats, endpoint })
    }

    /// Where the gateway's audit path hands each exchange's record to be made a span.
    pub fn span_sink(&self) -> Arc<SpanSink> {
        Arc::clone(&self.sink)
    }

    /// Starts sending, on the current runtime: spans as they come, and `gateway`'s metrics (with
    /// its exchange `listeners`' counters) every interval, until [`Exporting::finish`].
    pub fn start(self, gateway: Arc<Gateway>, listeners: Vec<(String, Arc<EdgeStats>)>) -> Exporting {
        let (stop, stopped) = watch::channel(false);
        let stats = Arc::clone(&self.stats);
        let shared = Shared { resource: self.resource, stats: Arc::clone(&self.stats), endpoint: self.endpoint };
        let shared = Arc::new(shared);
        let spans = tokio::spawn(send_spans(
            TraceServiceClient::new(self.channel.clone()),
            self.queue,
            Arc::clone(&shared),
            stopped.clone(),
        ));
        let metrics = tokio::spawn(send_metrics(
            MetricsServiceClient::new(self.channel),
            gateway,
            listeners,
            self.interval,
            shared,
            stopped,
        ));
        Exporting { stop, spans, metrics, stats }
    }
}

/// The exporter at work.
#[derive(Debug)]
pub struct Exporting {
    stop: watch::Sender<bool>,
    spans: tokio::task::JoinHandle<()>,
    metrics: tokio::task::JoinHandle<()>,
    stats: Arc<ExportStats>,
}

impl Exporting {
    /// What it has done so far.
    pub fn stats(&self) -> &Arc<ExportStats> {
        &self.stats
    }

    /// Sends what is queued and the metrics once more, then stops (within the export timeout).
    pub async fn finish(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(EXPORT_TIMEOUT + Duration::from_secs(1), async {
            let _ = self.spans.await;
            let _ = self.metrics.await;
        })
        .await;
    }
}

/// What both export loops share.
#[derive(Debug)]
struct Shared {
    resource: Resource,
    stats: Arc<ExportStats>,
    endpoint: String,
}

impl Shared {
    fn scope() -> InstrumentationScope {
        InstrumentationScope {
            name: "splpd".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..InstrumentationScope::default()
        }
    }
}

/// Reports a failed export: the first, then at most one a minute, saying how many failed since.
#[derive(Debug, Default)]
struct FailureLog {
    last: Option<Instant>,
    since: u64,
}

impl FailureLog {
    fn failed(&mut self, what: &str, endpoint: &str, error: &dyn std::fmt::Display) {
        self.since += 1;
        if self.last.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return;
        }
        tracing::warn!(
            "[telemetry] sending {what} to {endpoint} failed ({} since the last report): {error}; exchanges are not \
             affected, and the {what} are dropped",
            self.since
        );
        self.last = Some(Instant::now());
        self.since = 0;
    }
}

async fn send_spans(
    mut client: TraceServiceClient<Channel>,
    mut queue: mpsc::Receiver<Span>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut failures = FailureLog::default();
    let mut linger = tokio::time::interval(LINGER);
    linger.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // A batch goes out when full, at the linger tick, or at the stop.
        let (due, stopping) = tokio::select! {
            n = queue.recv_many(&mut batch, BATCH) => (batch.len() >= BATCH, n == 0),
            _ = linger.tick() => (true, false),
            () = crate::server::stopped(&mut stop) => (true, true),
        };
        if stopping {
            while let Ok(span) = queue.try_recv() {
                batch.push(span);
            }
        }
        if due || stopping {
            while !batch.is_empty() {
                let rest = batch.split_off(batch.len().min(BATCH));
                let spans = std::mem::replace(&mut batch, rest);
                export_spans(&mut client, spans, &shared, &mut failures).await;
            }
        }
        if stopping {
            return;
        }
    }
}

async fn export_spans(
    client: &mut TraceServiceClient<Channel>,
    spans: Vec<Span>,
    shared: &Shared,
    failures: &mut FailureLog,
) {
    let n = u64::try_from(spans.len()).unwrap_or(u64::MAX);
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(shared.resource.clone()),
            scope_spans: vec![ScopeSpans { scope: Some(Shared::scope()), spans, schema_url: String::new() }],
            schema_url: String::new(),
        }],
    };
    match client.export(request).await {
        Ok(_) => {
            shared.stats.spans_sent.fetch_add(n, Ordering::Relaxed);
        }
        Err(status) => {
            shared.stats.spans_dropped.fetch_add(n, Ordering::Relaxed);
            shared.stats.failed_exports.fetch_add(1, Ordering::Relaxed);
            failures.failed("spans", &shared.endpoint, &status);
        }
    }
}

async fn send_metrics(
    mut client: MetricsServiceClient<Channel>,
    gateway: Arc<Gateway>,
    listeners: Vec<(String, Arc<EdgeStats>)>,
    interval: Duration,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let started = crate::audit::now_nanos();
    let mut failures = FailureLog::default();
    let mut tick = tokio::time::interval(interval);
    // After an export that waited on a slow collector, the next one comes an interval later, not
    // at once to catch up.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            () = crate::server::stopped(&mut stop) => true,
        };
        let request = otlp_metrics::request(&gateway, &listeners, &shared, started);
        match client.export(request).await {
            Ok(_) => {
                shared.stats.metric_exports.fetch_add(1, Ordering::Relaxed);
            }
            Err(status) => {
                shared.stats.failed_exports.fetch_add(1, Ordering::Relaxed);
                failures.failed("metrics", &shared.endpoint, &status);
            }
        }
        if stopping {
            return;
        }
    }
}

/// A string attribute.
fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_owned())) }),
        ..KeyValue::default()
    }
}

/// An integer attribute.
fn int_attribute(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }),
        ..KeyValue::default()
    }
}
