//! Export over OpenTelemetry end to end: a gateway with `[telemetry]` sends a span for each
//! exchange and its metrics by OTLP/gRPC to a stand-in collector on loopback (the OTLP services
//! as the protocol defines them), and goes on serving when the collector is gone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;

use http::StatusCode;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use splpd_tests::otlp::OtlpCollector;
use splpd_tests::{Call, Pki, Proto, Region, RegionBuilder, Upstream, closed_port};

const NIK: &str = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify";
const DOWN: &str = "ID/PEMDA/1602/DISDUKCAPIL/down";
const RSUD: &str = "ID/PEMDA/1602/RSUD";
const DISHUB: &str = "ID/PEMDA/1602/DISHUB";
/// A client's W3C trace context: its trace id and its own span.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

async fn region(pki: &Pki, upstream: &Upstream, endpoint: &str) -> Region {
    let down = format!("http://{}", closed_port().await);
    RegionBuilder::new(pki)
        .service(NIK, &upstream.url(), "")
        .service(DOWN, &down, "connect_timeout = \"1s\"")
        .grant(&format!("service = \"{NIK}\"\nclient = \"{RSUD}\""))
        .grant(&format!("service = \"{DOWN}\"\nclient = \"{RSUD}\""))
        .toml(&format!(
            "[telemetry]\notlp_endpoint = \"{endpoint}\"\nmetrics_interval = \"200ms\"\n\n[admin]\naddress = \"127.0.0.1:0\""
        ))
        .start()
        .await
}

fn text(kv: &[KeyValue], key: &str) -> Option<String> {
    kv.iter().find(|a| a.key == key).and_then(|a| match &a.value {
        Some(AnyValue { value: Some(any_value::Value::StringValue(s)) }) => Some(s.clone()),
        Some(AnyValue { value: Some(any_value::Value::IntValue(i)) }) => Some(i.to_string()),
        _ => None,
    })
}

fn span_of<'s>(spans: &'s [Span], exchange_id: &str) -> &'s Span {
    spans
        .iter()
        .find(|s| text(&s.attributes, "splpd.exchange_id").as_deref() == Some(exchange_id))
        .unwrap_or_else(|| panic!("no span for {exchange_id}: {spans:#?}"))
}

/// The integer value of a sum's data point whose attributes include `attrs`.
fn sum_value(metrics: &[Metric], name: &str, attrs: &[(&str, &str)]) -> Option<i64> {
    let metric = metrics.iter().find(|m| m.name == name)?;
    let Some(metric::Data::Sum(sum)) = &metric.data else { panic!("{name} is not a sum: {metric:?}") };
    sum.data_points.iter().find(|p| attrs.iter().all(|(k, v)| text(&p.attributes, k).as_deref() == Some(*v))).and_then(
        |p| match p.value {
            Some(number_data_point::Value::AsInt(v)) => Some(v),
            _ => None,
        },
    )
}

#[tokio::test]
async fn each_exchange_becomes_a_span_and_the_metrics_follow_over_otlp() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let collector = OtlpCollector::start().await;
    let region = region(&pki, &upstream, &collector.endpoint()).await;
    let (rsud, dishub) = (pki.client(RSUD), pki.client(DISHUB));

    let nik_path = format!("/r1/{NIK}/json/1602015708900001");
    let traced = Call::get(&nik_path).header("traceparent", TRACEPARENT);
    let ok = region.call(Some(&rsud), Proto::H2, traced).await.unwrap();
    assert_eq!(ok.status, StatusCode::OK);
    let denied = region.call(Some(&dishub), Proto::H1, Call::get(&nik_path)).await.unwrap();
    assert_eq!(denied.xroad_error(), Some("Client.AccessDenied"));
    let failed = region.call(Some(&rsud), Proto::H1, Call::get(format!("/r1/{DOWN}/x"))).await.unwrap();
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);

    collector.wait_for("three spans", |c| c.spans().len() >= 3).await;
    let received = collector.spans();
    let (resource, _) = &received[0];
    assert_eq!(text(&resource.attributes, "service.name").as_deref(), Some("splpd"));
    assert_eq!(text(&resource.attributes, "service.instance.id").as_deref(), Some("ID/PEMDA/1602/gw1"));
    let spans: Vec<Span> = received.into_iter().map(|(_, s)| s).collect();
    assert_eq!(spans.len(), 3, "{spans:#?}");

    // The client's trace goes on through the gateway.
    let span = span_of(&spans, ok.exchange_id());
    assert_eq!(hex::encode(&span.trace_id), TRACE_ID);
    assert_eq!(span.name, format!("GET {NIK}"));
    assert_eq!(text(&span.attributes, "splpd.client").as_deref(), Some(RSUD));
    assert_eq!(text(&span.attributes, "http.response.status_code").as_deref(), Some("200"));
    assert!(span.end_time_unix_nano > span.start_time_unix_nano, "{span:?}");
    assert!(span.status.is_none(), "{span:?}");
    let record = region.record(ok.exchange_id()).await;
    assert_eq!(span.start_time_unix_nano, u64::try_from(record.received_at_unix_nanos).unwrap());

    // Without a trace context, the trace is named by the X-Road-Id.
    let span = span_of(&spans, denied.exchange_id());
    assert_eq!(hex::encode(&span.trace_id), denied.exchange_id().replace('-', ""));
    assert_eq!(text(&span.attributes, "error.type").as_deref(), Some("Client.AccessDenied"));
    assert!(span.status.is_none(), "a refusal is the client's mistake: {span:?}");
    let span = span_of(&spans, failed.exchange_id());
    assert_eq!(span.status.as_ref().map(|s| s.code), Some(SpanStatus::Error as i32), "{span:?}");

    // No path, query or user leaves the audit log: the NIK in the path is nowhere in a span.
    assert!(!format!("{spans:?}").contains("1602015708900001"), "{spans:#?}");

    // The metrics: the same counters as /metrics, cumulative since start.
    collector
        .wait_for("metrics with the three exchanges", |c| {
            c.latest_metrics().is_some_and(|m| {
                sum_value(&m, "splpd.exchanges", &[("service", DOWN), ("http.response.status_code", "502")]) == Some(1)
            })
        })
        .await;
    let metrics = collector.latest_metrics().unwrap();
    let nik_200 = [("service", NIK), ("http.response.status_code", "200")];
    assert_eq!(sum_value(&metrics, "splpd.exchanges", &nik_200), Some(1));
    let denials = [("service", NIK), ("error.type", "Client.AccessDenied")];
    assert_eq!(sum_value(&metrics, "splpd.exchange.errors", &denials), Some(1));
    let duration = metrics.iter().find(|m| m.name == "splpd.exchange.duration").expect("the duration histogram");
    let Some(metric::Data::Histogram(h)) = &duration.data else { panic!("{duration:?}") };
    let nik = h.data_points.iter().find(|p| text(&p.attributes, "service").as_deref() == Some(NIK)).unwrap();
    assert_eq!(nik.count, 2);
    assert_eq!(nik.bucket_counts.iter().sum::<u64>(), 2);
    assert_eq!(nik.bucket_counts.len(), nik.explicit_bounds.len() + 1);
    assert!(metrics.iter().any(|m| m.name == "splpd.audit.available"), "{metrics:#?}");

    // The collector goes away: exchanges go on as before, and the exporter counts its failures.
    collector.stop();
    let stats = region.telemetry();
    let sent = stats.spans_sent.load(Ordering::Relaxed);
    assert_eq!(sent, 3);
    for _ in 0..3 {
        let reply = region.call(Some(&rsud), Proto::H1, Call::get(&nik_path)).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    for _ in 0..500 {
        if stats.spans_dropped.load(Ordering::Relaxed) >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(stats.spans_dropped.load(Ordering::Relaxed), 3, "the spans that could not be sent are counted");
    assert!(stats.failed_exports.load(Ordering::Relaxed) >= 1);
    region.stop().await;
}

#[tokio::test]
async fn a_gateway_starts_and_serves_while_its_collector_is_not_there() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let nowhere = format!("http://{}", closed_port().await);
    let region = region(&pki, &upstream, &nowhere).await;
    let reply = region.call(Some(&pki.client(RSUD)), Proto::H1, Call::get(format!("/r1/{NIK}/json/a"))).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let records = region.records();
    assert_eq!(records.len(), 1, "the exchange is logged as any other");
    let stats = region.telemetry();
    for _ in 0..500 {
        if stats.failed_exports.load(Ordering::Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(stats.failed_exports.load(Ordering::Relaxed) > 0, "the exporter knows it cannot reach the collector");
    // And operators see it on /metrics.
    let budi = pki.admin("ID/PEMDA/1602/budi");
    let metrics = region.call_admin(Some(&budi), Call::get("/metrics")).await.unwrap().text();
    let sample = |name: &str| -> u64 {
        let line =
            metrics.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(sample("splpd_telemetry_failed_exports_total") >= 1, "{metrics}");
    assert_eq!(sample("splpd_telemetry_spans_sent_total"), 0, "{metrics}");
    assert!(metrics.contains("# TYPE splpd_telemetry_spans_dropped_total counter"), "{metrics}");
    region.stop().await;
    assert_eq!(stats.spans_dropped.load(Ordering::Relaxed), 1, "the exchange's span, sent at the stop, failed");
}
