//! The gRPC exchange path end to end (design §3, docs/design.md "gRPC"): a real gateway started
//! in-process from a TOML file, real mutual TLS on loopback, a tonic client presenting a client
//! certificate from the region CA, a real tonic-based service behind the gateway (h2c, or HTTP/2
//! over TLS), and the audit records read back from the gateway's sink.

// Test fixtures fail loudly: a panic is the right report for a broken test setup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use bytes::Bytes;
use http::StatusCode;
use splpd_gateway::audit::ExchangeRecord;
use splpd_proto::v1::{ConnectionType, Protocol};
use splpd_tests::grpc::pb::{Ask, Chunk};
use splpd_tests::grpc::{
    DETAIL, HEADER, ProbeUpstream, SERVICE_NAME, TAG, failure_message, frame, h2_server_config, method_path, payload,
    request,
};
use splpd_tests::{Call, Pki, Proto, Region, RegionBuilder, closed_port};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

/// A gRPC service found through the mapping `grpc_services = ["splpd.test.v1.Probe"]`.
const PROBE: &str = "ID/PEMDA/1602/DINKES/probe";
/// A gRPC service no mapping names, on an upstream of its own: reached by `x-road-service` only.
const NAMED: &str = "ID/PEMDA/1602/RSUD/probe-named";
/// A gRPC service on an `https://` upstream (HTTP/2 over TLS).
const SECURE: &str = "ID/PEMDA/1602/DINKES/probe-tls";
/// A gRPC service whose answer must start within 300 ms.
const SLOW: &str = "ID/PEMDA/1602/DINKES/probe-slow";
/// A gRPC service allowing one call per second, in bursts of one.
const LIMITED: &str = "ID/PEMDA/1602/DINKES/probe-limited";
/// A gRPC service taking at most 64 KiB of request stream.
const SMALL: &str = "ID/PEMDA/1602/DINKES/probe-small";
/// A REST service (never reached).
const REST: &str = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify";

/// Holds a grant on every method of every service.
const RSUD: &str = "ID/PEMDA/1602/RSUD";
/// Holds a grant on `Unary` of [`PROBE`] only.
const PUSKESMAS: &str = "ID/PEMDA/1602/PUSKESMAS";
/// Holds no grant at all.
const BAPPEDA: &str = "ID/PEMDA/1602/BAPPEDA";

const MIB: usize = 1024 * 1024;

struct Setup {
    region: Region,
    /// Behind [`PROBE`], [`SLOW`], [`LIMITED`] and [`SMALL`].
    probe: ProbeUpstream,
    /// Behind [`NAMED`].
    named: ProbeUpstream,
    /// Behind [`SECURE`].
    secure: ProbeUpstream,
    // Last: the gateway's files live in it.
    pki: Pki,
}

async fn setup() -> Setup {
    let pki = Pki::new();
    let probe = ProbeUpstream::start().await;
    let named = ProbeUpstream::start().await;
    let secure = ProbeUpstream::start_tls(h2_server_config(&pki.service_server_cert("ID/PEMDA/1602/dinkes-api"))).await;
    let rest = format!("http://{}", closed_port().await);
    let grpc = |extra: &str| format!("protocol = \"grpc\"\n{extra}");
    let all = |service: &str| format!("service = \"{service}\"\nclient = \"{RSUD}\"");
    let region = RegionBuilder::new(&pki)
        .service(PROBE, &probe.url(), &grpc(&format!("grpc_services = [\"{SERVICE_NAME}\"]")))
        .service(NAMED, &named.url(), &grpc(""))
        .service(SECURE, &secure.url(), &grpc(""))
        .service(SLOW, &probe.url(), &grpc("request_timeout = \"300ms\""))
        .service(LIMITED, &probe.url(), &grpc("rate_limit = { per_second = 1, burst = 1 }"))
        .service(SMALL, &probe.url(), &grpc("max_request_body = \"64 KiB\""))
        .service(REST, &rest, "")
        .grant(&format!("service = \"{PROBE}\"\nclient = \"{RSUD}\"\nendpoints = [\"/{SERVICE_NAME}/*\"]"))
        .grant(&all(NAMED))
        .grant(&all(SECURE))
        .grant(&all(SLOW))
        .grant(&all(LIMITED))
        .grant(&all(SMALL))
        .grant(&all(REST))
        .grant(&format!("service = \"{PROBE}\"\nclient = \"{PUSKESMAS}\"\nendpoints = [\"/{SERVICE_NAME}/Unary\"]"))
        .start()
        .await;
    Setup { region, probe, named, secure, pki }
}

fn ask(text: &str) -> Ask {
    Ask { text: text.to_owned(), ..Ask::default() }
}

fn text(metadata: &tonic::metadata::MetadataMap, key: &str) -> Option<String> {
    metadata.get(key).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn sha256_hex(bytes: &[u8]) -> String {
    digest::digest(&digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A `grpc-timeout` value as a duration.
fn grpc_timeout(value: &str) -> Duration {
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().unwrap_or_else(|_| panic!("grpc-timeout {value:?}"));
    match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => panic!("grpc-timeout {value:?}"),
    }
}

/// The exchange id the gateway put in the answer's headers.
fn exchange_id(metadata: &tonic::metadata::MetadataMap) -> String {
    let id = text(metadata, "x-road-id").expect("the answer carries x-road-id");
    uuid::Uuid::parse_str(&id).unwrap_or_else(|e| panic!("x-road-id {id:?} is not a UUID: {e}"));
    id
}

/// A gateway error as a gRPC status: the code, `x-road-error` with the X-Road type, a message,
/// and the exchange id. Returns the exchange id.
fn assert_gateway_status(status: &Status, code: Code, error_type: &str) -> String {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(text(status.metadata(), "x-road-error").as_deref(), Some(error_type), "{status:?}");
    assert!(!status.message().is_empty(), "{status:?}");
    exchange_id(status.metadata())
}

/// The one audit record of exchange `id`, checked as a gRPC exchange: protocol GRPC, HTTP 200,
/// POST of the method path, and the given client, service, gRPC status and error type.
async fn assert_grpc_record(
    region: &Region,
    id: &str,
    (client, service, path): (&str, &str, &str),
    grpc_status: u32,
    error_type: &str,
) -> ExchangeRecord {
    let rec = region.record(id).await;
    assert_eq!(rec.protocol(), Protocol::Grpc, "{rec:#?}");
    assert_eq!(rec.grpc_status, Some(grpc_status), "{rec:#?}");
    assert_eq!(rec.error_type, error_type, "{rec:#?}");
    assert_eq!(rec.client, client, "{rec:#?}");
    assert_eq!(rec.service, service, "{rec:#?}");
    assert_eq!((rec.method.as_str(), rec.path.as_str()), ("POST", path), "{rec:#?}");
    assert_eq!(rec.connection_type(), ConnectionType::Mtls);
    assert_eq!(rec.gateway, "ID/PEMDA/1602/gw1");
    assert!(rec.responded_at_unix_nanos >= rec.received_at_unix_nanos);
    if grpc_status != 1 {
        // A call the client abandoned got no answer at all.
        assert_eq!(rec.status, 200, "{rec:#?}");
    }
    rec
}

/// Waits until the gateway has logged `n` exchanges in all and checks there are no more.
async fn assert_record_count(region: &Region, n: usize) {
    let records = region.wait_records(n).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let records = if records.len() == n { region.records() } else { records };
    assert_eq!(records.len(), n, "expected {n} audit records, one per exchange: {records:#?}");
}

// ---------------------------------------------------------------------------------------------
// Every call shape through the gateway
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_goes_through_with_metadata_both_ways() {
    let Setup { region, probe, pki, .. } = setup().await;
    let rsud = pki.client(RSUD);
    let mut client = region.grpc_client(Some(&rsud)).await;

    let mut req = request(Ask { size: 1000, ..ask("halo") }, &[("x-agency-trace", "abc-123")]);
    req.set_timeout(Duration::from_secs(20));
    let resp = client.unary(req).await.unwrap();
    let id = exchange_id(resp.metadata());
    assert_eq!(text(resp.metadata(), HEADER).as_deref(), Some("unary"), "the service's headers pass");
    assert_eq!(text(resp.metadata(), "x-road-client").as_deref(), Some(RSUD));
    assert_eq!(text(resp.metadata(), "x-road-service").as_deref(), Some(PROBE));
    let reply = resp.into_inner();
    assert_eq!(reply.text, "halo");
    assert!(reply.data == payload(0, 1000));

    // What the service received: the gateway's X-Road metadata, the caller's own, gRPC's, and a
    // deadline reduced by the time spent in the gateway.
    let seen = probe.seen();
    assert_eq!(seen.len(), 1);
    let got = &seen[0];
    assert_eq!(got.path, method_path("Unary"));
    assert_eq!(got.header("content-type"), Some("application/grpc"));
    assert_eq!(got.header("te"), Some("trailers"));
    assert_eq!(got.header("x-road-client"), Some(RSUD));
    assert_eq!(got.header("x-road-service"), Some(PROBE));
    assert_eq!(got.header("x-road-id"), Some(id.as_str()));
    assert_eq!(got.header("x-agency-trace"), Some("abc-123"));
    let timeout = grpc_timeout(got.header("grpc-timeout").expect("the deadline travels upstream"));
    assert!(
        timeout < Duration::from_secs(20) && timeout > Duration::from_secs(15),
        "grpc-timeout {timeout:?} is 20 s less the time spent"
    );

    let rec = assert_grpc_record(&region, &id, (RSUD, PROBE, &method_path("Unary")), 0, "").await;
    assert_eq!(rec.client_cert_sha256, rsud.sha256());
    assert_eq!(rec.upstream, probe.url());
    assert_eq!(rec.request_body_bytes, frame(&Ask { size: 1000, ..ask("halo") }).len() as u64);
    assert!(rec.response_body_bytes > 1000, "{rec:#?}");
    assert!(rec.forwarded_at_unix_nanos > 0 && rec.upstream_answered_at_unix_nanos >= rec.forwarded_at_unix_nanos);
    assert_record_count(&region, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_server_stream_arrives_intact_with_the_gateways_memory_bounded() {
    let Setup { region, probe: _probe, pki, .. } = setup().await;
    let rsud = pki.client(RSUD);
    let mut client = region.grpc_client(Some(&rsud)).await;
    const SIZE: usize = 64 * 1024;
    const COUNT: u32 = 800;

    // The gateway, the upstream and the client share this process: its peak resident memory,
    // reset here, shows whether anything on the way held the stream instead of passing it on.
    let baseline = reset_peak_rss_kib();
    let started = Instant::now();
    let resp = client.download(request(Ask { count: COUNT, size: SIZE as u32, ..ask("") }, &[])).await.unwrap();
    let id = exchange_id(resp.metadata());
    assert_eq!(text(resp.metadata(), HEADER).as_deref(), Some("download"));
    let mut stream = resp.into_inner();
    let (mut n, mut bytes) = (0u32, 0usize);
    while let Some(reply) = stream.message().await.unwrap() {
        assert_eq!(reply.seq, n, "replies arrive in order");
        assert!(reply.data == payload(n, SIZE), "reply {n} differs");
        n += 1;
        bytes += reply.data.len();
    }
    assert_eq!((n, bytes), (COUNT, 50 * MIB));
    let trailers = stream.trailers().await.unwrap().expect("trailers");
    assert_eq!(text(&trailers, "grpc-status").as_deref(), Some("0"));
    let grown_kib = peak_rss_kib().saturating_sub(baseline);
    eprintln!(
        "50 MiB in {COUNT} messages through the gateway in {:?}; peak memory grew by {grown_kib} KiB",
        started.elapsed()
    );
    assert!(grown_kib < 24 * 1024, "the stream was held in memory on the way: peak grew by {grown_kib} KiB");

    let rec = assert_grpc_record(&region, &id, (RSUD, PROBE, &method_path("Download")), 0, "").await;
    assert!(rec.response_body_bytes >= (50 * MIB) as u64, "{rec:#?}");
    assert_record_count(&region, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_small_messages_reaches_a_client_that_reads_slowly_whole() {
    let Setup { region, probe: _probe, pki, .. } = setup().await;
    let rsud = pki.client(RSUD);
    // The client lets the gateway send 1 KiB ahead of its reading, and pauses: the service's
    // replies, each in a DATA frame of its own under 256 bytes, pile up unread in the gateway
    // meanwhile. The gateway must keep them (flow control bounds them), not take them for a
    // flood of small frames and end its connection to the service.
    let mut client = region.grpc_client_with_window(Some(&rsud), 1024).await;
    const COUNT: u32 = 600;
    let resp = client.download(request(Ask { count: COUNT, size: 100, delay_ms: 1, ..ask("") }, &[])).await.unwrap();
    let mut stream = resp.into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().seq, 0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut n = 1;
    while let Some(reply) = stream.message().await.unwrap() {
        assert_eq!(reply.seq, n, "replies arrive in order");
        n += 1;
    }
    assert_eq!(n, COUNT);
    let trailers = stream.trailers().await.unwrap().expect("trailers");
    assert_eq!(text(&trailers, "grpc-status").as_deref(), Some("0"));
}

/// Resets this process's peak resident set size to the current one (`/proc/self/clear_refs`,
/// value 5) and returns it, in KiB.
fn reset_peak_rss_kib() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak RSS needs Linux 4.0 or later");
    peak_rss_kib()
}

/// This process's peak resident set size since the last reset (`VmHWM`), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_streaming_and_bidirectional_calls_go_through() {
    let Setup { region, probe, pki, .. } = setup().await;
    let rsud = pki.client(RSUD);
    let mut client = region.grpc_client(Some(&rsud)).await;

    // Client streaming: 64 chunks of 16 KiB.
    let chunks: Vec<Chunk> = (0..64).map(|seq| Chunk { seq, data: payload(seq, 16 * 1024) }).collect();
    let all: Vec<u8> = chunks.iter().flat_map(|c| c.data.iter().copied()).collect();
    let resp = client.upload(request(tokio_stream::iter(chunks), &[])).await.unwrap();
    let upload_id = exchange_id(resp.metadata());
    let reply = resp.into_inner();
    assert_eq!((reply.count, reply.total_bytes), (64, MIB as u64));
    assert_eq!(reply.text, sha256_hex(&all), "the service got the bytes sent");

    // Bidirectional: each chunk is sent only once the previous one came back, so the call
    // works only if both directions stream through the gateway, neither buffered to its end.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(Chunk { seq: 0, data: Bytes::from_static(b"satu") }).await.unwrap();
    let resp = client.chat(request(ReceiverStream::new(rx), &[])).await.unwrap();
    let chat_id = exchange_id(resp.metadata());
    let mut echoes = resp.into_inner();
    for seq in 0..10u32 {
        let echo = tokio::time::timeout(Duration::from_secs(5), echoes.message())
            .await
            .expect("each chunk comes back while the call is open")
            .unwrap()
            .expect("an echo");
        assert_eq!(echo.seq, seq);
        if seq + 1 < 10 {
            tx.send(Chunk { seq: seq + 1, data: payload(seq + 1, 100) }).await.unwrap();
        }
    }
    drop(tx);
    assert!(echoes.message().await.unwrap().is_none(), "the answer ends once the client half-closes");

    let rec = assert_grpc_record(&region, &upload_id, (RSUD, PROBE, &method_path("Upload")), 0, "").await;
    assert!(rec.request_body_bytes > MIB as u64, "{rec:#?}");
    let rec = assert_grpc_record(&region, &chat_id, (RSUD, PROBE, &method_path("Chat")), 0, "").await;
    assert!(rec.request_body_bytes > 900 && rec.response_body_bytes > 900, "{rec:#?}");
    assert_eq!(probe.seen().len(), 2);
    assert_record_count(&region, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_spoken_to_in_http2_over_tls() {
    let Setup { region, secure, pki, .. } = setup().await;
    let rsud = pki.client(RSUD);
    let mut client = region.grpc_client(Some(&rsud)).await;
    let resp = client.unary(request(ask("lewat TLS"), &[("x-road-service", SECURE)])).await.unwrap();
    let id = exchange_id(resp.metadata());
    assert_eq!(resp.into_inner().text, "lewat TLS");
    assert_eq!(secure.seen().len(), 1);
    let rec = assert_grpc_record(&region, &id, (RSUD, SECURE, &method_path("Unary")), 0, "").await;
    assert_eq!(rec.upstream, secure.url());
    assert!(rec.upstream.starts_with("https://"));
}

// ---------------------------------------------------------------------------------------------
// The service's own statuses and trailers
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_own_errors_pass_through_untouched() {
    let Setup { region, probe, pki, .. } = setup().await;
    let rsud = pki.client(RSUD);
    let mut client = region.grpc_client(Some(&rsud)).await;

    // Unary: a trailers-only answer from the service.
    let status = client.unary(request(Ask { fail_code: 5, ..ask("rujukan RJK-1") }, &[])).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), failure_message("rujukan RJK-1"), "the message passes untouched");
    assert_eq!(text(status.metadata(), DETAIL).as_deref(), Some("from-the-service"), "custom trailers pass");
    assert_eq!(text(status.metadata(), "x-road-error"), None, "not the gateway's error, nor the service's");
    let id = exchange_id(status.metadata());
    assert_grpc_record(&region, &id, (RSUD, PROBE, &method_path("Unary")), 5, "").await;

    // Server streaming: three replies, then the status in real trailers.
    let resp = client.download(request(Ask { count: 3, size: 10, fail_code: 9, ..ask("tahap") }, &[])).await.unwrap();
    let id = exchange_id(resp.metadata());
    let mut stream = resp.into_inner();
    for seq in 0..3 {
        assert_eq!(stream.message().await.unwrap().unwrap().seq, seq);
    }
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), failure_message("tahap"));
    assert_eq!(text(status.metadata(), DETAIL).as_deref(), Some("from-the-service"));
    assert_eq!(text(status.metadata(), "x-road-error"), None, "the service's own, in its trailers, is dropped");
    assert_grpc_record(&region, &id, (RSUD, PROBE, &method_path("Download")), 9, "").await;

    assert_eq!(probe.seen().len(), 2);
    assert_record_count(&region, 2).await;
}

// ---------------------------------------------------------------------------------------------
// The gateway's own errors as gRPC statuses
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_grant_is_permission_denied() {
    let Setup { region, probe, pki, .. } = setup().await;
    let bappeda = pki.client(BAPPEDA);
    let mut client = region.grpc_client(Some(&bappeda)).await;
    let status = client.unary(request(ask("boleh?"), &[])).await.unwrap_err();
    let id = assert_gateway_status(&status, Code::PermissionDenied, "Client.AccessDenied");
    assert!(status.message().contains(PROBE), "{status:?}");
    assert_eq!(text(status.metadata(), "x-road-client").as_deref(), Some(BAPPEDA));
    assert_grpc_record(&region, &id, (BAPPEDA, PROBE, &method_path("Unary")), 7, "Client.AccessDenied").await;

    // A grant on one method opens that method only.
    let puskesmas = pki.client(PUSKESMAS);
    let mut client = region.grpc_client(Some(&puskesmas)).await;
    let resp = client.unary(request(ask("boleh"), &[])).await.unwrap();
    let allowed = exchange_id(resp.metadata());
    let status = client.download(request(Ask { count: 1, ..ask("") }, &[])).await.unwrap_err();
    let denied = assert_gateway_status(&status, Code::PermissionDenied, "Client.AccessDenied");
    assert_grpc_record(&region, &allowed, (PUSKESMAS, PROBE, &method_path("Unary")), 0, "").await;
    let download = method_path("Download");
    assert_grpc_record(&region, &denied, (PUSKESMAS, PROBE, &download), 7, "Client.AccessDenied").await;

    // On the wire: a trailers-only answer, HTTP 200, no body.
    let call = Call::post(method_path("Unary"), frame(&ask("boleh?")))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    let reply = region.call(Some(&bappeda), Proto::H2, call).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/grpc"));
    assert_eq!(reply.header("grpc-status"), Some("7"));
    assert_eq!(reply.xroad_error(), Some("Client.AccessDenied"));
    assert!(reply.header("grpc-message").is_some_and(|m| m.contains("ID/PEMDA/1602/DINKES/probe")), "{reply:?}");
    assert!(reply.body.is_empty());
    assert_grpc_record(&region, reply.exchange_id(), (BAPPEDA, PROBE, &method_path("Unary")), 7, "Client.AccessDenied")
        .await;

    assert_eq!(probe.seen().len(), 1, "only the allowed call reached the service");
    assert_record_count(&region, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_routed_by_x_road_service_or_else_by_the_grpc_service_name() {
    let Setup { region, probe, named, pki, .. } = setup().await;
    let rsud = pki.client(RSUD);
    let mut client = region.grpc_client(Some(&rsud)).await;
    let unary = method_path("Unary");

    // No metadata: the mapping of splpd.test.v1.Probe.
    let resp = client.unary(request(ask("peta"), &[])).await.unwrap();
    assert_eq!(text(resp.metadata(), "x-road-service").as_deref(), Some(PROBE));
    assert_grpc_record(&region, &exchange_id(resp.metadata()), (RSUD, PROBE, &unary), 0, "").await;
    // The metadata names another service: it wins over the mapping.
    let resp = client.unary(request(ask("nama"), &[("x-road-service", NAMED)])).await.unwrap();
    assert_eq!(text(resp.metadata(), "x-road-service").as_deref(), Some(NAMED));
    assert_grpc_record(&region, &exchange_id(resp.metadata()), (RSUD, NAMED, &unary), 0, "").await;
    assert_eq!(probe.seen().len(), 1);
    assert_eq!(named.seen().len(), 1);
    assert_eq!(named.seen()[0].header("x-road-service"), Some(NAMED));

    // A gRPC service no mapping names, without metadata.
    let other = "/splpd.test.v1.Other/Unary";
    let status = client.unary_at(other, request(ask(""), &[])).await.unwrap_err();
    let id = assert_gateway_status(&status, Code::NotFound, "Client.UnknownService");
    assert!(status.message().contains("splpd.test.v1.Other"), "{status:?}");
    let rec = region.record(&id).await;
    assert_eq!((rec.grpc_status, rec.service.as_str(), rec.path.as_str()), (Some(5), "", other));

    // Metadata naming no service, something that is not a service identifier, a REST service.
    let status = client.unary(request(ask(""), &[("x-road-service", "ID/PEMDA/1602/RSUD/nothing")])).await.unwrap_err();
    let id = assert_gateway_status(&status, Code::NotFound, "Client.UnknownService");
    assert_grpc_record(&region, &id, (RSUD, "ID/PEMDA/1602/RSUD/nothing", &unary), 5, "Client.UnknownService").await;
    let status = client.unary(request(ask(""), &[("x-road-service", "ID/PEMDA/1602/RSUD")])).await.unwrap_err();
    let id = assert_gateway_status(&status, Code::InvalidArgument, "Client.BadRequest");
    assert!(status.message().contains("x-road-service"), "{status:?}");
    assert_eq!(region.record(&id).await.grpc_status, Some(3));
    let status = client.unary(request(ask(""), &[("x-road-service", REST)])).await.unwrap_err();
    let id = assert_gateway_status(&status, Code::InvalidArgument, "Client.BadRequest");
    assert!(status.message().contains("REST service"), "{status:?}");
    assert_eq!(region.record(&id).await.grpc_status, Some(3));

    // A REST call to a gRPC service is refused as a REST call.
    let reply = region.call(Some(&rsud), Proto::H1, Call::get(format!("/r1/{PROBE}/x"))).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert_eq!(reply.xroad_error(), Some("Client.BadRequest"));
    assert!(reply.text().contains("gRPC service"), "{}", reply.text());

    // A gRPC client that fell back to HTTP/1.1 is told what is wrong.
    let call = Call::post(method_path("Unary"), frame(&ask(""))).header("content-type", "application/grpc");
    let reply = region.call(Some(&rsud), Proto::H1, call).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert!(reply.text().contains("gRPC needs HTTP/2"), "{}", reply.text());

    // A browser's gRPC-Web is told that it is not spoken here, over either version.
    for proto in [Proto::H1, Proto::H2] {
        let call =
            Call::post(method_path("Unary"), frame(&ask(""))).header("content-type", "application/grpc-web+proto");
        let reply = region.call(Some(&rsud), proto, call).await.unwrap();
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
        assert!(reply.text().contains("gRPC-Web is not taken here"), "{}", reply.text());
    }

    assert_eq!((probe.seen().len(), named.seen().len()), (1, 1), "nothing else reached a service");
    assert_record_count(&region, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_quota_is_resource_exhausted_with_a_pushback() {
    let Setup { region, probe: _probe, pki, .. } = setup().await;
    let rsud = pki.client(RSUD);
    let mut client = region.grpc_client(Some(&rsud)).await;
    let limited = [("x-road-service", LIMITED)];
    client.unary(request(ask("1"), &limited)).await.unwrap();
    let status = client.unary(request(ask("2"), &limited)).await.unwrap_err();
    let id = assert_gateway_status(&status, Code::ResourceExhausted, "Client.RateLimited");
    let pushback: u64 = text(status.metadata(), "grpc-retry-pushback-ms").expect("pushback").parse().unwrap();
    assert!((1..=2000).contains(&pushback), "{pushback}");
    assert_grpc_record(&region, &id, (RSUD, LIMITED, &method_path("Unary")), 8, "Client.RateLimited").await;
}

// ---------------------------------------------------------------------------------------------
// Deadlines and cancellation
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exceeded_grpc_timeout_is_deadline_exceeded() {
    let Setup { region, probe, pki, .. } = setup().await;
    let rsud = pki.client(RSUD);
    // A raw HTTP/2 call: tonic's client would enforce the deadline itself, first.
    let tagged = Ask { delay_ms: 5000, tag: "deadline".into(), ..ask("lambat") };
    let call = Call::post(method_path("Unary"), frame(&tagged))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "300m");
    let started = Instant::now();
    let reply = region.call(Some(&rsud), Proto::H2, call).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("grpc-status"), Some("4"), "{reply:?}");
    // The caller's own deadline, not the service's failure, and said so.
    assert_eq!(reply.xroad_error(), Some("Client.DeadlineExceeded"));
    let message = reply.header("grpc-message").unwrap_or_default().to_owned();
    assert!(message.contains("own deadline of 300ms") && message.contains("up to 30s"), "{message}");
    assert!(elapsed >= Duration::from_millis(280) && elapsed < Duration::from_secs(2), "answered after {elapsed:?}");
    // The service was told the deadline, less the time spent in the gateway, and the gateway
    // gave up on the call when the deadline passed.
    let seen = probe.seen();
    let timeout = grpc_timeout(seen[0].header("grpc-timeout").expect("grpc-timeout upstream"));
    assert!(timeout < Duration::from_millis(300) && timeout > Duration::from_millis(150), "{timeout:?}");
    assert!(probe.wait_cancelled("deadline", Duration::from_secs(5)).await, "the service saw the call cancelled");
    let id = reply.exchange_id().to_owned();
    let unary = method_path("Unary");
    let rec = assert_grpc_record(&region, &id, (RSUD, PROBE, &unary), 4, "Client.DeadlineExceeded").await;
    assert_eq!(rec.attempts[0].outcome, "the caller's deadline passed first", "{rec:#?}");

    // Callers whose deadlines are too short do not count against the service: more of them than
    // the failures in a row that eject an endpoint, and the service still takes calls.
    for _ in 0..6 {
        let call = Call::post(method_path("Unary"), frame(&Ask { delay_ms: 5000, ..ask("lambat") }))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", "50m");
        let reply = region.call(Some(&rsud), Proto::H2, call).await.unwrap();
        assert_eq!(reply.xroad_error(), Some("Client.DeadlineExceeded"), "{reply:?}");
    }
    let mut client = region.grpc_client(Some(&rsud)).await;
    let resp = client.unary(request(ask("masih"), &[])).await.unwrap();
    assert_eq!(resp.into_inner().text, "masih");

    // The service's request_timeout bounds the wait too, whatever the caller allows.
    let started = Instant::now();
    let status =
        client.unary(request(Ask { delay_ms: 5000, ..ask("") }, &[("x-road-service", SLOW)])).await.unwrap_err();
    let id = assert_gateway_status(&status, Code::DeadlineExceeded, "Server.ServerProxy.ServiceTimeout");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_grpc_record(&region, &id, (RSUD, SLOW, &unary), 4, "Server.ServerProxy.ServiceTimeout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cancel_reaches_the_service() {
    let Setup { region, probe, pki, .. } = setup().await;
    let rsud = pki.client(RSUD);
    let mut client = region.grpc_client(Some(&rsud)).await;

    // While the service streams: the client reads two replies and drops the stream.
    let stream_id = uuid::Uuid::new_v4().to_string();
    let long = Ask { count: 100_000, size: 100, delay_ms: 20, tag: "stream".into(), ..ask("") };
    let resp = client.download(request(long, &[("x-road-id", &stream_id)])).await.unwrap();
    let mut stream = resp.into_inner();
    for _ in 0..2 {
        stream.message().await.unwrap().unwrap();
    }
    drop(stream);
    assert!(probe.wait_cancelled("stream", Duration::from_secs(5)).await, "the service noticed the cancel");
    let download = method_path("Download");
    assert_grpc_record(&region, &stream_id, (RSUD, PROBE, &download), 1, "Client.ResponseAbandoned").await;

    // Before the service answers at all: the client gives up on a unary call.
    let unary_id = uuid::Uuid::new_v4().to_string();
    let slow = Ask { delay_ms: 30_000, tag: "unary".into(), ..ask("") };
    let mut call = Box::pin(client.unary(request(slow, &[("x-road-id", &unary_id)])));
    let reached = async {
        while !probe.seen().iter().any(|s| s.header("x-road-id") == Some(unary_id.as_str())) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Let the service start waiting.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::select! {
        answer = &mut call => panic!("the call was answered: {answer:?}"),
        () = reached => {}
    }
    drop(call);
    assert!(probe.wait_cancelled("unary", Duration::from_secs(5)).await, "the service noticed the cancel");
    let rec =
        assert_grpc_record(&region, &unary_id, (RSUD, PROBE, &method_path("Unary")), 1, "Client.ResponseAbandoned")
            .await;
    assert_eq!(rec.status, 0, "no answer was sent");

    // The client's connection still works.
    let resp = client.unary(request(ask("masih"), &[(TAG, "after")])).await.unwrap();
    assert_eq!(resp.into_inner().text, "masih");
    assert_record_count(&region, 3).await;
}

// ---------------------------------------------------------------------------------------------
// Limits and the audit log's hold on the answer
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_stream_over_the_limit_is_cut_off() {
    let Setup { region, probe, pki, .. } = setup().await;
    let rsud = pki.client(RSUD);
    let mut client = region.grpc_client(Some(&rsud)).await;
    // 40 chunks of 4 KiB: 160 KiB against a 64 KiB limit.
    let chunks: Vec<Chunk> = (0..40).map(|seq| Chunk { seq, data: payload(seq, 4096) }).collect();
    let status = client.upload(request(tokio_stream::iter(chunks), &[("x-road-service", SMALL)])).await.unwrap_err();
    let id = assert_gateway_status(&status, Code::ResourceExhausted, "Client.RequestTooLarge");
    assert!(status.message().contains("65536"), "{status:?}");
    let upload = method_path("Upload");
    let rec = assert_grpc_record(&region, &id, (RSUD, SMALL, &upload), 8, "Client.RequestTooLarge").await;
    assert_eq!(probe.seen().len(), 1, "the service saw the call start, then cut off");
    // The attempt broke because the gateway cut the body off, which its record says, and which
    // does not count against the service: more such calls than the failures in a row that eject
    // an endpoint, and the service still takes calls.
    assert_eq!(rec.attempts[0].outcome, "the request body broke off on the caller's side", "{rec:#?}");
    assert!(!rec.upstream_note.contains("broke off ("), "{rec:#?}");
    for _ in 0..6 {
        let chunks: Vec<Chunk> = (0..40).map(|seq| Chunk { seq, data: payload(seq, 4096) }).collect();
        let status =
            client.upload(request(tokio_stream::iter(chunks), &[("x-road-service", SMALL)])).await.unwrap_err();
        assert_gateway_status(&status, Code::ResourceExhausted, "Client.RequestTooLarge");
    }
    let chunks: Vec<Chunk> = (0..4).map(|seq| Chunk { seq, data: payload(seq, 4096) }).collect();
    let resp = client.upload(request(tokio_stream::iter(chunks), &[("x-road-service", SMALL)])).await;
    assert!(resp.is_ok(), "the service was taken out: {resp:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_record_cannot_be_logged_ends_unavailable() {
    let Setup { region, probe: _probe, pki, .. } = setup().await;
    let rsud = pki.client(RSUD);
    let mut client = region.grpc_client(Some(&rsud)).await;
    let resp = client.download(request(Ask { count: 3, size: 10, delay_ms: 200, ..ask("") }, &[])).await.unwrap();
    let mut stream = resp.into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().seq, 0);
    // The log breaks while the answer streams: its end, the service's OK, is not released.
    region.audit().set_failing(true);
    let mut seqs = Vec::new();
    let status = loop {
        match stream.message().await {
            Ok(Some(reply)) => seqs.push(reply.seq),
            Ok(None) => panic!("the stream ended OK although its record was not logged"),
            Err(status) => break status,
        }
    };
    assert_eq!(seqs, [1, 2]);
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(text(status.metadata(), "x-road-error").as_deref(), Some("Server.AuditUnavailable"));
}
