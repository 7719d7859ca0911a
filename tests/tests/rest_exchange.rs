//! The REST exchange path end to end (design §2–§5, docs/design.md): a real gateway started
//! in-process from a TOML file, real mutual TLS on loopback with certificates from the region CA
//! tooling, a real upstream service that records what reached it, and the audit records read
//! back from the gateway's sink.

// Test fixtures fail loudly: a panic is the right report for a broken test setup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{StatusCode, Version};
use splpd_gateway::audit::ExchangeRecord;
use splpd_proto::v1::ConnectionType;
use splpd_tests::logs::Logs;
use splpd_tests::upstream::{FIXED_JSON, UPSTREAM_XROAD_HEADERS, large_body, status_body};
use splpd_tests::{
    Call, ClientCert, PUBLIC, Pki, Proto, Region, RegionBuilder, Reply, Upstream, closed_port, request_hash, sha256,
};

const SERVICE: &str = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify";
const SMALL: &str = "ID/PEMDA/1602/DISDUKCAPIL/upload";
const LIMITED: &str = "ID/PEMDA/1602/DISDUKCAPIL/limited";
const DOWN: &str = "ID/PEMDA/1602/DISDUKCAPIL/down";
const SLOW: &str = "ID/PEMDA/1602/DISDUKCAPIL/slow";

/// Holds a grant on every endpoint of every service.
const DINKES: &str = "ID/PEMDA/1602/DINKES";
/// Holds a grant on `GET /json/*` of [`SERVICE`] only.
const RSUD: &str = "ID/PEMDA/1602/RSUD";
/// Holds a grant on `GET /json/*` of [`SERVICE`] bound to purpose `pelayanan-kesehatan`.
const PUSKESMAS: &str = "ID/PEMDA/1602/PUSKESMAS";
/// Held a grant on [`SERVICE`] during 2020 only.
const DISPENDA: &str = "ID/PEMDA/1602/DISPENDA";
/// Holds no grant at all.
const BAPPEDA: &str = "ID/PEMDA/1602/BAPPEDA";
/// The legacy application opted in to plain HTTP on the intranet listener.
const LEGACY: &str = "ID/PEMDA/1602/LEGACY";

/// A query holding personal data: it must reach the audit log only as a hash.
const NIK: &str = "3201010101010001";
const NIK_QUERY: &str = "nik=3201010101010001";

const SMALL_LIMIT: usize = 64 * 1024;

fn target(service: &str, path: &str) -> String {
    format!("/r1/{service}{path}")
}

struct Setup {
    region: Region,
    upstream: Upstream,
    // Last: the gateway's files live in it.
    pki: Pki,
}

/// The region every test runs against: the services and grants described on the constants
/// above, tight header limits, an intranet listener for the legacy client, one upstream.
async fn setup() -> Setup {
    setup_with(Pki::new()).await
}

async fn setup_with(pki: Pki) -> Setup {
    let upstream = Upstream::start().await;
    let url = upstream.url();
    let down = format!("http://{}", closed_port().await);
    let everything = |service: &str| format!("service = \"{service}\"\nclient = \"{DINKES}\"");
    let region = RegionBuilder::new(&pki)
        .http_listener("intranet", &[LEGACY])
        .service(
            SERVICE,
            &url,
            "steward = { name = \"Kepala Bidang PDI Disdukcapil\", contact = \"pdi@example.go.id\" }",
        )
        .service(SMALL, &url, "max_request_body = \"64 KiB\"")
        .service(LIMITED, &url, "rate_limit = { per_second = 1, burst = 2 }")
        .service(DOWN, &down, "connect_timeout = \"1s\"")
        .service(SLOW, &url, "request_timeout = \"500ms\"")
        .grant(&everything(SERVICE))
        .grant(&everything(SMALL))
        .grant(&everything(LIMITED))
        .grant(&everything(DOWN))
        .grant(&everything(SLOW))
        .grant(&format!("service = \"{SERVICE}\"\nclient = \"{RSUD}\"\nendpoints = [\"GET /json/*\"]"))
        .grant(&format!(
            "service = \"{SERVICE}\"\nclient = \"{PUSKESMAS}\"\nendpoints = [\"GET /json/*\"]\npurposes = [\"pelayanan-kesehatan\"]"
        ))
        .grant(&format!(
            "service = \"{SERVICE}\"\nclient = \"{DISPENDA}\"\nvalid_from = 2020-01-01T00:00:00+07:00\nvalid_until = 2021-01-01T00:00:00+07:00"
        ))
        .grant(&format!("service = \"{SERVICE}\"\nclient = \"{LEGACY}\""))
        .toml("[limits]\nmax_header_bytes = \"16 KiB\"\nmax_headers = 50")
        .start()
        .await;
    Setup { region, upstream, pki }
}

/// A gateway error as design §3 has it: the status, `X-Road-Error`, and a JSON body
/// `{"type","message","detail"}` whose detail is the exchange id. Returns the message.
fn assert_gateway_error(reply: &Reply, status: u16, error_type: &str) -> String {
    assert_eq!(reply.status.as_u16(), status, "{reply:?}\n{}", reply.text());
    assert_eq!(reply.xroad_error(), Some(error_type), "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["type"], error_type, "{body}");
    assert_eq!(body["detail"], reply.exchange_id(), "{body}");
    let message = body["message"].as_str().expect("message").to_owned();
    assert!(!message.is_empty());
    message
}

/// What an exchange's audit record must say.
struct Expect<'a> {
    client: &'a str,
    service: &'a str,
    status: u16,
    error_type: &'a str,
    /// The record may leave `client` and `service` empty instead: the gateway fills each in only
    /// once the phase that establishes it has passed. It may never name anything else.
    may_omit: bool,
}

/// The one record of `reply`'s exchange, checked against `expect`; the query, if any, only as
/// its SHA-256.
async fn assert_record(region: &Region, reply: &Reply, query: Option<&str>, expect: &Expect<'_>) -> ExchangeRecord {
    let rec = region.record(reply.exchange_id()).await;
    let fits = |got: &str, want: &str| got == want || (expect.may_omit && got.is_empty());
    assert!(fits(&rec.client, expect.client), "client {:?}, expected {:?} in {rec:#?}", rec.client, expect.client);
    assert!(fits(&rec.service, expect.service), "service {:?}, expected {:?} in {rec:#?}", rec.service, expect.service);
    assert_eq!(rec.status, u32::from(expect.status), "status in {rec:#?}");
    assert_eq!(rec.error_type, expect.error_type, "error type in {rec:#?}");
    assert_eq!(rec.gateway, "ID/PEMDA/1602/gw1");
    assert_eq!(rec.client_address, "127.0.0.1", "the address the call came from, in {rec:#?}");
    assert!(rec.received_at_unix_nanos > 0 && rec.responded_at_unix_nanos >= rec.received_at_unix_nanos);
    assert!(!rec.path.contains('?'), "the path holds no query: {rec:#?}");
    match query {
        Some(q) => {
            assert_eq!(rec.query_sha256, sha256(q.as_bytes()), "query hash in {rec:#?}");
            for value in q.split('&').filter_map(|p| p.split_once('=').map(|(_, v)| v)).filter(|v| v.len() > 3) {
                assert!(!format!("{rec:?}").contains(value), "the raw query value {value:?} is in the record {rec:#?}");
            }
        }
        None => assert!(rec.query_sha256.is_empty(), "{rec:#?}"),
    }
    rec
}

/// Waits until the gateway has logged `n` exchanges in all and checks there are no more.
async fn assert_record_count(region: &Region, n: usize) {
    let records = region.wait_records(n).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let records = if records.len() == n { region.records() } else { records };
    assert_eq!(records.len(), n, "expected {n} audit records, one per exchange: {records:#?}");
}

fn decode_hash(b64: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(b64).expect("request hash is base64")
}

fn assert_uuid(id: &str) -> uuid::Uuid {
    let parsed = uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("X-Road-Id {id:?} is not a UUID: {e}"));
    assert_eq!(parsed.hyphenated().to_string(), id, "canonical lowercase hyphenated form");
    parsed
}

/// The X-Road headers of an answer the gateway forwarded: its own, never the service's.
fn assert_gateway_xroad_headers(reply: &Reply, client: &str, service: &str) {
    assert_uuid(reply.exchange_id());
    assert_eq!(reply.header("x-road-client"), Some(client));
    assert_eq!(reply.header("x-road-service"), Some(service));
    for (name, value) in UPSTREAM_XROAD_HEADERS {
        // The gateway's own error header only on its own refusals: none on a service's answer.
        let gateways = usize::from(name != "x-road-error");
        assert_eq!(reply.headers.get_all(name).iter().count(), gateways, "{name} appears {gateways}: {reply:?}");
        assert_ne!(reply.header(name), Some(value), "{name} from the service reached the client");
    }
}

/// The request hash of `reply` recomputed from what was sent.
fn expected_hash(call: &Call, reply: &Reply) -> String {
    request_hash(call.method.as_str(), &call.target, &reply.sent_headers, &call.body_bytes())
}

// ---------------------------------------------------------------------------------------------
// Allowed calls
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_http1_call_returns_the_service_answer_with_the_gateways_xroad_headers() {
    let Setup { region, upstream, pki } = setup().await;
    let dinkes = pki.client(DINKES);
    let body = r#"{"nama":"Budi Santoso","tanggal_lahir":"1980-01-01"}"#;
    let call = Call::post(target(SERVICE, &format!("/echo/verify?{NIK_QUERY}")), body)
        .header("content-type", "application/json; charset=utf-8")
        .header("accept", "application/json")
        .header("x-agency-trace", "abc-123")
        .header("x-multi", "first")
        .header("x-multi", "second")
        // Repeating the certificate's identity is allowed.
        .header("x-road-client", DINKES)
        // The gateway's to set, whatever the client says.
        .header("x-road-service", "ID/PEMDA/1602/OTHER/fake")
        .header("x-road-request-hash", "Y2xpZW50LW1hZGU=")
        .header("x-road-userid", "ID1234567890")
        .header("x-road-issue", "SPT-17/2026")
        .header("x-road-represented-party", "ID/PEMDA/1602")
        .header("x-splp-purpose", "verifikasi")
        // Hop-by-hop: none of it may reach the service.
        .header("connection", "keep-alive, x-private")
        .header("x-private", "for-this-hop-only")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("te", "trailers");
    let reply = region.call(Some(&dinkes), Proto::H1, call.clone()).await.unwrap();

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.version, Version::HTTP_11);
    assert_eq!(reply.body, body.as_bytes());
    assert_eq!(reply.header("content-type"), Some("application/json; charset=utf-8"));
    assert_eq!(reply.xroad_error(), None);
    assert_eq!(reply.header("x-upstream-saw"), Some("echo"));
    assert!(reply.header("keep-alive").is_none(), "hop-by-hop header of the service reached the client");
    for name in ["server", "x-powered-by"] {
        assert!(reply.header(name).is_none(), "the service's software reached the client in {name}: {reply:?}");
    }
    assert_gateway_xroad_headers(&reply, DINKES, SERVICE);
    let hash = reply.header("x-road-request-hash").expect("X-Road-Request-Hash");
    assert_eq!(decode_hash(hash).len(), 64, "SHA-512");
    assert_eq!(hash, expected_hash(&call, &reply), "request hash over {:?}", reply.sent_headers);

    // What the service received.
    let received = upstream.received();
    assert_eq!(received.len(), 1);
    let got = &received[0];
    assert_eq!(got.method, "POST");
    assert_eq!(got.path_and_query, format!("/echo/verify?{NIK_QUERY}"));
    assert!(got.complete);
    assert_eq!(got.body, body.as_bytes());
    assert_eq!(got.header("x-road-client"), Some(DINKES));
    assert_eq!(got.header("x-road-service"), Some(SERVICE));
    assert_eq!(got.header("x-road-id"), Some(reply.exchange_id()));
    assert_eq!(got.header("content-type"), Some("application/json; charset=utf-8"));
    assert_eq!(got.header("accept"), Some("application/json"));
    assert_eq!(got.header("x-agency-trace"), Some("abc-123"));
    let multi: Vec<&str> = got.headers.get_all("x-multi").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(multi, ["first", "second"]);
    assert_eq!(got.header("x-road-userid"), Some("ID1234567890"));
    assert_eq!(got.header("x-splp-purpose"), Some("verifikasi"));
    assert_eq!(got.header("host"), Some(upstream.addr().to_string().as_str()), "the client's Host never goes upstream");
    for name in ["x-private", "keep-alive", "proxy-authorization", "te", "x-road-request-hash"] {
        assert!(got.headers.get(name).is_none(), "{name} reached the service: {:?}", got.headers);
    }
    for value in got.headers.get_all("connection") {
        assert!(!value.to_str().unwrap().contains("x-private"), "the client's Connection header was forwarded");
    }

    let rec = assert_record(
        &region,
        &reply,
        Some(NIK_QUERY),
        &Expect { client: DINKES, service: SERVICE, status: 200, error_type: "", may_omit: false },
    )
    .await;
    assert_eq!(rec.connection_type(), ConnectionType::Mtls);
    assert_eq!(rec.client_cert_sha256, dinkes.sha256());
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.path, target(SERVICE, "/echo/verify"));
    assert_eq!(
        (rec.user_id.as_str(), rec.issue.as_str(), rec.represented_party.as_str(), rec.purpose.as_str()),
        ("ID1234567890", "SPT-17/2026", "ID/PEMDA/1602", "verifikasi")
    );
    assert_eq!(rec.request_hash, decode_hash(hash));
    assert_eq!(rec.request_body_bytes, body.len() as u64);
    assert_eq!(rec.request_body_sha256, sha256(body.as_bytes()));
    assert_eq!(rec.response_body_bytes, body.len() as u64);
    assert_eq!(rec.upstream, upstream.url());
    assert!(rec.forwarded_at_unix_nanos > 0 && rec.upstream_answered_at_unix_nanos >= rec.forwarded_at_unix_nanos);
    assert_record_count(&region, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_http2_calls_are_negotiated_by_alpn() {
    let Setup { region, upstream, pki } = setup().await;
    let dinkes = pki.client(DINKES);

    let get = Call::get(target(SERVICE, &format!("/json/cek?{NIK_QUERY}"))).header("accept", "application/json");
    let reply = region.call(Some(&dinkes), Proto::H2, get.clone()).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.version, Version::HTTP_2);
    assert_eq!(reply.body, FIXED_JSON.as_bytes());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let id = assert_uuid(reply.exchange_id());
    assert_eq!(id.get_version_num(), 4, "a generated X-Road-Id is a random UUID");
    assert_eq!(reply.header("x-road-client"), Some(DINKES));
    assert_eq!(reply.header("x-road-service"), Some(SERVICE));
    assert_eq!(reply.header("x-road-request-hash"), Some(expected_hash(&get, &reply).as_str()));

    let body = Bytes::from_static(b"{\"nama\":\"Siti\"}");
    let post = Call::post(target(SERVICE, "/echo/h2"), body.clone())
        .header("content-type", "application/json")
        .header("x-agency-trace", "h2-trace");
    let reply2 = region.call(Some(&dinkes), Proto::H2, post.clone()).await.unwrap();
    assert_eq!(reply2.status, StatusCode::OK);
    assert_eq!(reply2.version, Version::HTTP_2);
    assert_eq!(reply2.body, body);
    assert_gateway_xroad_headers(&reply2, DINKES, SERVICE);
    assert_eq!(reply2.header("x-road-request-hash"), Some(expected_hash(&post, &reply2).as_str()));

    let received = upstream.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].path_and_query, format!("/json/cek?{NIK_QUERY}"));
    assert_eq!(received[0].header("x-road-client"), Some(DINKES));
    assert_eq!(received[1].body, body);
    assert_eq!(received[1].header("x-agency-trace"), Some("h2-trace"));

    let expect = Expect { client: DINKES, service: SERVICE, status: 200, error_type: "", may_omit: false };
    let rec = assert_record(&region, &reply, Some(NIK_QUERY), &expect).await;
    assert_eq!(rec.request_hash, decode_hash(reply.header("x-road-request-hash").unwrap()));
    assert_eq!(rec.method, "GET");
    assert_eq!(rec.response_body_bytes, FIXED_JSON.len() as u64);
    assert_record(&region, &reply2, None, &expect).await;
    assert_record_count(&region, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_incoming_x_road_id_is_kept_and_anything_else_replaced() {
    let Setup { region, upstream, pki } = setup().await;
    let dinkes = pki.client(DINKES);
    let mine = uuid::Uuid::new_v4().hyphenated().to_string();

    let reply = region
        .call(Some(&dinkes), Proto::H1, Call::get(target(SERVICE, "/json/a")).header("x-road-id", &mine))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.exchange_id(), mine);

    let reply2 = region
        .call(Some(&dinkes), Proto::H2, Call::get(target(SERVICE, "/json/b")).header("x-road-id", "not-a-uuid"))
        .await
        .unwrap();
    assert_eq!(reply2.status, StatusCode::OK);
    assert_ne!(reply2.exchange_id(), "not-a-uuid");
    assert_ne!(reply2.exchange_id(), mine);
    assert_uuid(reply2.exchange_id());

    let received = upstream.received();
    assert_eq!(received[0].header("x-road-id"), Some(mine.as_str()));
    assert_eq!(received[1].header("x-road-id"), Some(reply2.exchange_id()));
    let expect = Expect { client: DINKES, service: SERVICE, status: 200, error_type: "", may_omit: false };
    assert_record(&region, &reply, None, &expect).await;
    assert_record(&region, &reply2, None, &expect).await;
    assert_record_count(&region, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_through_intact_both_ways() {
    let Setup { region, upstream, pki } = setup().await;
    let dinkes = pki.client(DINKES);
    let mib = Bytes::from(large_body(1024 * 1024));

    // 1 MiB streamed without a declared length (chunked) over HTTP/1.1…
    let chunks: Vec<Bytes> = mib.chunks(32 * 1024).map(|c| mib.slice_ref(c)).collect();
    let chunked = Call::post(target(SERVICE, "/echo/upload"), Bytes::new())
        .header("content-type", "application/octet-stream")
        .chunked(chunks);
    let reply = region.call(Some(&dinkes), Proto::H1, chunked.clone()).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body == mib, "the echoed body differs ({} bytes)", reply.body.len());
    assert_eq!(reply.header("x-road-request-hash"), Some(expected_hash(&chunked, &reply).as_str()));

    // …and with Content-Length over HTTP/2.
    let sized =
        Call::post(target(SERVICE, "/echo/upload"), mib.clone()).header("content-type", "application/octet-stream");
    let reply2 = region.call(Some(&dinkes), Proto::H2, sized.clone()).await.unwrap();
    assert_eq!(reply2.status, StatusCode::OK);
    assert!(reply2.body == mib, "the echoed body differs ({} bytes)", reply2.body.len());
    assert_eq!(reply2.header("x-road-request-hash"), Some(expected_hash(&sized, &reply2).as_str()));

    // A 3 MiB answer streamed by the service without Content-Length.
    let n = 3 * 1024 * 1024;
    let reply3 =
        region.call(Some(&dinkes), Proto::H2, Call::get(target(SERVICE, &format!("/large/{n}")))).await.unwrap();
    assert_eq!(reply3.status, StatusCode::OK);
    assert!(reply3.body == large_body(n), "the streamed answer differs ({} bytes)", reply3.body.len());

    let received = upstream.received();
    assert_eq!(received.len(), 3);
    for got in &received[..2] {
        assert!(got.complete && got.body == mib, "the service got {} bytes", got.body.len());
    }
    let expect = Expect { client: DINKES, service: SERVICE, status: 200, error_type: "", may_omit: false };
    for r in [&reply, &reply2] {
        let rec = assert_record(&region, r, None, &expect).await;
        assert_eq!(rec.request_body_bytes, mib.len() as u64);
        assert_eq!(rec.request_body_sha256, sha256(&mib));
        assert_eq!(rec.response_body_bytes, mib.len() as u64);
    }
    let rec = assert_record(&region, &reply3, None, &expect).await;
    assert_eq!(rec.response_body_bytes, n as u64);
    assert_eq!(rec.response_body_sha256, sha256(&large_body(n)));
    assert_record_count(&region, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_of_the_service_itself_pass_through_untouched() {
    let Setup { region, upstream, pki } = setup().await;
    let dinkes = pki.client(DINKES);
    for (code, proto) in [(404u16, Proto::H1), (500, Proto::H2), (503, Proto::H1)] {
        let call = Call::get(target(SERVICE, &format!("/status/{code}?{NIK_QUERY}")));
        let reply = region.call(Some(&dinkes), proto, call).await.unwrap();
        assert_eq!(reply.status.as_u16(), code);
        assert_eq!(reply.xroad_error(), None, "a service error is not the gateway's: {reply:?}");
        assert_eq!(reply.text(), status_body(code));
        assert_eq!(reply.header("content-type"), Some("application/problem+json"));
        assert_eq!(reply.header("x-upstream"), Some("status"));
        assert_eq!(reply.header("x-road-client"), Some(DINKES));
        assert_eq!(reply.header("x-road-service"), Some(SERVICE));
        assert_uuid(reply.exchange_id());
        let expect = Expect { client: DINKES, service: SERVICE, status: code, error_type: "", may_omit: false };
        assert_record(&region, &reply, Some(NIK_QUERY), &expect).await;
    }
    assert_eq!(upstream.received().len(), 3);
    assert_record_count(&region, 3).await;
}

/// A service may answer before it has read the request body. The record then says how much of
/// the body had passed when the exchange ended, and gives no hash for a body not read whole (it
/// said nothing of the body before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_the_service_did_not_read_whole_is_logged_as_far_as_it_passed() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    // More than the sockets between client, gateway and service hold while the service is not
    // reading, so that the body is still on its way when the answer ends.
    let region = RegionBuilder::new(&pki)
        .service(SERVICE, &upstream.url(), "max_request_body = \"256 MiB\"")
        .grant(&format!("service = \"{SERVICE}\"\nclient = \"{DINKES}\""))
        .start()
        .await;
    let dinkes = pki.client(DINKES);
    let chunk = Bytes::from(vec![7u8; 64 * 1024]);
    let chunks = 48 * 16;
    let total = chunks * chunk.len();
    for proto in [Proto::H1, Proto::H2] {
        let call = Call::new(http::Method::PUT, target(SERVICE, "/partial/1000")).chunked(vec![chunk.clone(); chunks]);
        let reply = region.call(Some(&dinkes), proto, call).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{proto:?}: {}", reply.text());
        let rec = region.record(reply.exchange_id()).await;
        let passed = usize::try_from(rec.request_body_bytes).unwrap();
        assert!((1000..total).contains(&passed), "{proto:?}: {passed} bytes of {total} passed");
        assert!(rec.request_body_sha256.is_empty(), "{proto:?}: no digest of a body not read whole");
        assert!(rec.request_hash.is_empty(), "{proto:?}: no hash of a body not read whole");
    }
    assert_eq!(upstream.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_without_a_body_is_logged_as_complete() {
    let Setup { region, upstream, pki } = setup().await;
    let dinkes = pki.client(DINKES);
    let mut replies = Vec::new();
    for proto in [Proto::H1, Proto::H2] {
        let reply = region.call(Some(&dinkes), proto, Call::get(target(SERVICE, "/empty"))).await.unwrap();
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert!(reply.body.is_empty());
        assert_eq!(reply.header("x-road-client"), Some(DINKES));
        replies.push(reply);
    }
    for reply in &replies {
        let expect = Expect { client: DINKES, service: SERVICE, status: 204, error_type: "", may_omit: false };
        let rec = assert_record(&region, reply, None, &expect).await;
        assert_eq!(rec.response_body_bytes, 0);
    }
    assert_eq!(upstream.received().len(), 2);
    assert_record_count(&region, 2).await;
}

// ---------------------------------------------------------------------------------------------
// Refused at the TLS handshake (a certificate that does not verify): no HTTP request exists, so
// no audit record either
// ---------------------------------------------------------------------------------------------

/// The certificate is refused by the handshake, over HTTP/1.1 and HTTP/2: the client
/// gets an error, never an answer; nothing reaches the service or the audit log. A valid
/// certificate on the same gateway works, so the refusal is the certificate's.
async fn assert_refused_at_tls(cert: &ClientCert, setup: &Setup) {
    let Setup { region, upstream, pki } = setup;
    for proto in [Proto::H1, Proto::H2] {
        let call = Call::get(target(SERVICE, &format!("/json/x?{NIK_QUERY}")));
        let result = region.call(Some(cert), proto, call).await;
        assert!(result.is_err(), "{proto:?}: expected the handshake to fail, got {:?}", result.map(|r| r.status));
    }
    assert!(upstream.received().is_empty());
    assert!(region.records().is_empty(), "no HTTP request was made, so nothing is logged: {:#?}", region.records());
    // ... but the operator can count them.
    let failed = &region.edge_stats(splpd_tests::PUBLIC).handshakes_failed;
    for _ in 0..100 {
        if failed.load(std::sync::atomic::Ordering::Relaxed) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(failed.load(std::sync::atomic::Ordering::Relaxed), 2, "both failed handshakes are counted");

    let ok = region.call(Some(&pki.client(DINKES)), Proto::H1, Call::get(target(SERVICE, "/json/x"))).await.unwrap();
    assert_eq!(ok.status, StatusCode::OK);
    assert_record_count(region, 1).await;
}

/// Without a certificate the handshake succeeds, so that the caller hears why it is refused (a
/// bare TLS alert would tell it nothing) and the refusal is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_client_certificate_the_call_is_refused_401_saying_what_to_present() {
    let Setup { region, upstream, .. } = setup().await;
    let expect =
        Expect { client: "", service: SERVICE, status: 401, error_type: "Client.Unauthenticated", may_omit: true };
    for proto in [Proto::H1, Proto::H2] {
        let call = Call::get(target(SERVICE, &format!("/json/x?{NIK_QUERY}")));
        let reply = region.call(None, proto, call).await.unwrap();
        let message = assert_gateway_error(&reply, 401, "Client.Unauthenticated");
        assert!(message.contains("no client certificate was presented") && message.contains("--cert"), "{message}");
        let rec = assert_record(&region, &reply, Some(NIK_QUERY), &expect).await;
        assert_eq!(rec.connection_type(), ConnectionType::Tls);
        assert!(rec.client_cert_sha256.is_empty());
    }
    assert!(upstream.received().is_empty());
    assert_record_count(&region, 2).await;

    // One answer per connection: each refusal costs the caller a new handshake. Two requests
    // sent together on one connection get one answer, then the connection closes.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let config = splpd_tests::client::tls_config(region.roots(), None, Proto::H1);
    let tcp = tokio::net::TcpStream::connect(region.addr(splpd_tests::PUBLIC)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
    // The gateway's own directory first, then a service: the same for both.
    let ask = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
    tls.write_all(format!("{}{}", ask("/listClients"), ask(&target(SERVICE, "/json/x"))).as_bytes()).await.unwrap();
    let mut answers = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answers)).await;
    assert!(read.is_ok(), "the connection was not closed");
    let answers = String::from_utf8_lossy(&answers);
    assert_eq!(answers.matches("HTTP/1.1 401").count(), 1, "{answers}");
    assert_record_count(&region, 3).await;

    // Over HTTP/2 the connection is closed with a GOAWAY after the refusal: the next call on it
    // does not get through.
    let config = splpd_tests::client::tls_config(region.roots(), None, Proto::H2);
    let tcp = tokio::net::TcpStream::connect(region.addr(splpd_tests::PUBLIC)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    let connection = tokio::spawn(conn);
    let get = || {
        let uri = format!("https://localhost{}", target(SERVICE, "/json/x"));
        http::Request::get(uri).body(http_body_util::Empty::<Bytes>::new()).unwrap()
    };
    // Five streams at once: whatever gets through before the connection ends is refused, and
    // only one refusal is logged.
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let mut sender = sender.clone();
            tokio::spawn(async move { sender.send_request(get()).await.map(|r| r.status()) })
        })
        .collect();
    let mut answered = Vec::new();
    for call in calls {
        answered.extend(call.await.unwrap().ok());
    }
    // (A stream the GOAWAY overtakes fails at the client instead; none gets anything but 401.)
    assert!(answered.iter().all(|s| *s == StatusCode::UNAUTHORIZED), "{answered:?}");
    let ended = tokio::time::timeout(Duration::from_secs(10), connection).await;
    assert!(ended.is_ok(), "the gateway ended the HTTP/2 connection");
    assert!(sender.send_request(get()).await.is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_record_count(&region, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_untrusted_ca_is_refused() {
    Logs::capture();
    let setup = setup().await;
    let stranger = setup.pki.untrusted_client(DINKES);
    // A TCP health check (connect, close) is no failed handshake: the count below stays at two.
    drop(tokio::net::TcpStream::connect(setup.region.addr(splpd_tests::PUBLIC)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_refused_at_tls(&stranger, &setup).await;
    // The operator's log names the certificate refused, which the TLS alert does not.
    let logged = Logs::capture().lines_with("TLS handshake refused").await;
    assert!(
        logged.iter().any(|l| l.contains("the client certificate subsystem ID/PEMDA/1602/DINKES")
            && l.contains("Entah Dimana")
            && l.contains("sha256 ")),
        "{logged:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused() {
    Logs::capture();
    let pki = Pki::new();
    // Revoked, and the CRL regenerated, before the gateway loads it.
    let revoked = pki.revoked_client(DINKES);
    let setup = setup_with(pki).await;
    assert_refused_at_tls(&revoked, &setup).await;
    // The operator's log says why in words, with the serial `certs revoke` was given.
    let logged = Logs::capture().lines_with("TLS handshake refused").await;
    assert!(
        logged.iter().any(|l| l.contains("the client certificate is revoked")
            && l.contains("subsystem ID/PEMDA/1602/DINKES (serial ")
            && l.contains(" to ")),
        "{logged:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused() {
    Logs::capture();
    let setup = setup().await;
    let expired = setup.pki.expired_client(DINKES);
    assert_refused_at_tls(&expired, &setup).await;
    // Dates, not seconds since 1970.
    let logged = Logs::capture().lines_with("TLS handshake refused").await;
    assert!(
        logged.iter().any(|l| l.contains("the client certificate expired at 20") && l.contains("Z (it is now 20")),
        "{logged:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_not_yet_valid_is_refused() {
    let setup = setup().await;
    let early = setup.pki.not_yet_valid_client(DINKES);
    assert_refused_at_tls(&early, &setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_without_client_auth_usage_is_refused() {
    let setup = setup().await;
    let server_only = setup.pki.server_auth_only_client(DINKES);
    assert_refused_at_tls(&server_only, &setup).await;
}

// ---------------------------------------------------------------------------------------------
// Refused by identify: the handshake verifies, the identity does not hold
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_with_no_extended_key_usage_is_not_taken_for_a_caller() {
    let Setup { region, upstream, pki } = setup().await;
    let any_purpose = pki.any_purpose_client(DINKES);
    let reply = region.call(Some(&any_purpose), Proto::H1, Call::get(target(SERVICE, "/json/x"))).await.unwrap();
    let message = assert_gateway_error(&reply, 401, "Client.Unauthenticated");
    assert!(message.contains("no extended key usage") && message.contains("clientAuth"), "{message}");
    let rec = region.record(reply.exchange_id()).await;
    assert_eq!((rec.client.as_str(), rec.client_cert_sha256.clone()), ("", any_purpose.sha256().to_vec()));
    assert!(upstream.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_region_ca_cannot_mint_an_identity_of_this_region() {
    let Setup { region, upstream, pki } = setup().await;
    // Signed with the peer CA's key (a trust anchor, so the handshake verifies) for DINKES of 1602.
    let rogue = pki.rogue_peer_client(DINKES);
    let call = Call::get(target(SERVICE, &format!("/json/x?{NIK_QUERY}")));
    let reply = region.call(Some(&rogue), Proto::H1, call).await.unwrap();
    let message = assert_gateway_error(&reply, 403, "Client.InvalidClientIdentity");
    assert!(
        message.contains("peer-1601") && message.contains(DINKES) && message.contains("outside its scopes"),
        "{message}"
    );
    assert_ne!(reply.header("x-road-client"), Some(DINKES), "the rogue identity is not echoed as the client");
    let rec = assert_record(
        &region,
        &reply,
        Some(NIK_QUERY),
        &Expect {
            client: "",
            service: SERVICE,
            status: 403,
            error_type: "Client.InvalidClientIdentity",
            may_omit: true,
        },
    )
    .await;
    assert_eq!(rec.client, "", "an identity its CA may not vouch for is never logged as the client");
    assert_eq!(rec.forwarded_at_unix_nanos, 0);
    // Which certificate tried is in the record, for the auditor to trace.
    assert_eq!(rec.client_cert_sha256, rogue.sha256().to_vec());
    assert_eq!(rec.connection_type(), ConnectionType::Mtls);

    // The same CA vouching for its own region's client gets past identify (and then has no grant).
    let own = pki.peer_client("ID/PEMDA/1601/DINKES");
    let reply2 = region.call(Some(&own), Proto::H2, Call::get(target(SERVICE, "/json/x"))).await.unwrap();
    assert_gateway_error(&reply2, 403, "Client.AccessDenied");
    let expect = Expect {
        client: "ID/PEMDA/1601/DINKES",
        service: SERVICE,
        status: 403,
        error_type: "Client.AccessDenied",
        may_omit: false,
    };
    assert_record(&region, &reply2, None, &expect).await;

    assert!(upstream.received().is_empty());
    assert_record_count(&region, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_x_road_client_is_refused() {
    let Setup { region, upstream, pki } = setup().await;
    let dinkes = pki.client(DINKES);
    for (proto, claimed) in [(Proto::H1, RSUD), (Proto::H2, "ID/PEMDA/1601/DINKES")] {
        let call = Call::get(target(SERVICE, &format!("/json/x?{NIK_QUERY}"))).header("x-road-client", claimed);
        let reply = region.call(Some(&dinkes), proto, call).await.unwrap();
        let message = assert_gateway_error(&reply, 403, "Client.InvalidClientIdentity");
        assert!(message.contains(DINKES) && message.contains(claimed), "{message}");
        assert_ne!(reply.header("x-road-client"), Some(claimed));
        let rec = assert_record(
            &region,
            &reply,
            Some(NIK_QUERY),
            &Expect {
                client: DINKES,
                service: SERVICE,
                status: 403,
                error_type: "Client.InvalidClientIdentity",
                may_omit: true,
            },
        )
        .await;
        assert_ne!(rec.client, claimed, "the claimed identity is never logged as the client");
    }
    assert!(upstream.received().is_empty());
    assert_record_count(&region, 2).await;
}

/// A header the gateway checks or records, sent twice, is refused: otherwise the gateway would
/// check the first value while the service might act on the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_or_purpose_header_sent_twice_is_refused() {
    let Setup { region, upstream, pki } = setup().await;
    let puskesmas = pki.client(PUSKESMAS);
    let call = || Call::get(target(SERVICE, &format!("/json/x?{NIK_QUERY}")));
    let twice = [
        (Proto::H1, "x-road-client", PUSKESMAS, DINKES, "X-Road-Client"),
        (Proto::H2, "x-splp-purpose", "pelayanan-kesehatan", "pemasaran", "X-SPLP-Purpose"),
        (Proto::H1, "x-road-userid", "ID1234", "ID9999", "X-Road-UserId"),
    ];
    let expect =
        Expect { client: PUSKESMAS, service: SERVICE, status: 400, error_type: "Client.BadRequest", may_omit: true };
    for (proto, name, first, second, shown) in twice {
        let sent = call().header("x-splp-purpose", "pelayanan-kesehatan");
        let sent = if name == "x-splp-purpose" { call() } else { sent };
        let reply = region.call(Some(&puskesmas), proto, sent.header(name, first).header(name, second)).await.unwrap();
        let message = assert_gateway_error(&reply, 400, "Client.BadRequest");
        assert!(message.contains(&format!("{shown} is sent more than once")), "{message}");
        let rec = assert_record(&region, &reply, Some(NIK_QUERY), &expect).await;
        assert_eq!(rec.client, PUSKESMAS, "the certificate's client is recorded");
    }
    assert!(upstream.received().is_empty(), "nothing reached the service");

    // Each sent once, the same call goes through.
    let once = call().header("x-splp-purpose", "pelayanan-kesehatan").header("x-road-client", PUSKESMAS);
    assert_eq!(region.call(Some(&puskesmas), Proto::H2, once).await.unwrap().status, StatusCode::OK);
    assert_eq!(upstream.received().len(), 1);
}

/// A refusal's message quotes the request back to its caller, but the process log keeps no
/// personal data from it: no path, no query, no identity or purpose header. The audit record has
/// the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_logged_without_the_personal_data_of_the_request() {
    Logs::capture();
    let Setup { region, upstream: _upstream, pki } = setup().await;
    let puskesmas = pki.client(PUSKESMAS);
    const NIK: &str = "3201015708900001";
    let refused = [
        // A purpose the grant does not allow: the message quotes the method and path.
        Call::get(target(SERVICE, &format!("/nik/{NIK}?nik={NIK}"))).header("x-splp-purpose", "penagihan"),
        // A bad escape in the query: the message quotes the value.
        Call::get(target(SERVICE, &format!("/json/x?nik={NIK}%zz"))),
        // Another's identity claimed, naming the NIK.
        Call::get(target(SERVICE, "/json/x")).header("x-road-client", format!("ID/PEMDA/1602/{NIK}")),
    ];
    for call in refused {
        let reply = region.call(Some(&puskesmas), Proto::H1, call).await.unwrap();
        assert!(reply.status.is_client_error(), "{}", reply.text());
        assert!(reply.text().contains(NIK), "the caller is told what was wrong: {}", reply.text());
        let logged = Logs::capture().lines_with(reply.exchange_id()).await;
        assert!(!logged.is_empty(), "the refusal is logged");
        assert!(logged.iter().all(|l| !l.contains(NIK)), "{logged:#?}");
        assert!(logged.iter().any(|l| l.contains("audit query --exchange-id")), "{logged:#?}");
    }
    // A refusal about the caller's certificate quotes none of the request: it is logged whole,
    // for the operator to see why.
    let reply = region.call(None, Proto::H1, Call::get(target(SERVICE, &format!("/nik/{NIK}")))).await.unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    let logged = Logs::capture().lines_with(reply.exchange_id()).await;
    assert!(logged.iter().any(|l| l.contains("certificate") && !l.contains(NIK)), "{logged:#?}");
}

/// A header that reads as an X-Road header with `_` taken for `-`, as CGI-style servers take it,
/// is refused: the service would see a client, purpose or user the gateway never checked or logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xroad_header_spelt_with_underscores_is_refused() {
    let Setup { region, upstream, pki } = setup().await;
    let puskesmas = pki.client(PUSKESMAS);
    let expect =
        Expect { client: PUSKESMAS, service: SERVICE, status: 400, error_type: "Client.BadRequest", may_omit: true };
    for (proto, name, value, read_as) in [
        (Proto::H1, "X_Road_Client", DINKES, "x-road-client"),
        (Proto::H2, "x_splp_purpose", "pemasaran", "x-splp-purpose"),
        (Proto::H1, "X-Road_UserId", "someone-else", "x-road-userid"),
    ] {
        let call = Call::get(target(SERVICE, &format!("/json/x?{NIK_QUERY}")))
            .header("x-splp-purpose", "pelayanan-kesehatan")
            .header(name, value);
        let reply = region.call(Some(&puskesmas), proto, call).await.unwrap();
        let message = assert_gateway_error(&reply, 400, "Client.BadRequest");
        assert!(message.contains(&format!("reads as {read_as}")), "{message}");
        assert_record(&region, &reply, Some(NIK_QUERY), &expect).await;
    }
    assert!(upstream.received().is_empty(), "nothing reached the service");
    // Other names with underscores pass as they are.
    let call = Call::get(target(SERVICE, &format!("/json/x?{NIK_QUERY}")))
        .header("x-splp-purpose", "pelayanan-kesehatan")
        .header("x_agency_ref", "rs-1");
    let reply = region.call(Some(&puskesmas), Proto::H1, call).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(upstream.received()[0].header("x_agency_ref"), Some("rs-1"));
}

/// The headers the log keeps with every record are refused over 512 bytes, so that a caller
/// cannot fill the log's disk with one header; the refusal's record keeps the value's beginning
/// and its length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_header_over_its_limit_is_refused_and_kept_short() {
    let Setup { region, upstream, pki } = setup().await;
    let bappeda = pki.client(BAPPEDA);
    let expect =
        Expect { client: BAPPEDA, service: SERVICE, status: 400, error_type: "Client.BadRequest", may_omit: true };
    for (proto, name, shown) in [
        (Proto::H1, "x-road-issue", "X-Road-Issue"),
        (Proto::H2, "x-road-userid", "X-Road-UserId"),
        (Proto::H1, "x-splp-purpose", "X-SPLP-Purpose"),
        (Proto::H2, "x-road-represented-party", "X-Road-Represented-Party"),
    ] {
        // BAPPEDA has no grant: the long header is refused before the grant is looked at.
        let call = Call::get(target(SERVICE, "/json/x")).header(name, "A".repeat(20_000));
        let reply = region.call(Some(&bappeda), proto, call).await.unwrap();
        let message = assert_gateway_error(&reply, 400, "Client.BadRequest");
        assert!(message.contains(&format!("{shown} is 20000 bytes long; at most 512 are accepted")), "{message}");
        let rec = assert_record(&region, &reply, None, &expect).await;
        let kept = [&rec.issue, &rec.user_id, &rec.purpose, &rec.represented_party];
        let kept = kept.iter().find(|v| !v.is_empty()).expect("the header's beginning is kept");
        assert!(kept.starts_with(&"A".repeat(64)) && kept.ends_with("… (20000 bytes in all)"), "{kept}");
        assert!(kept.len() < 100, "{}", kept.len());
    }
    // At the limit, it is taken (and the call goes on to be refused for want of a grant).
    let call = Call::get(target(SERVICE, "/json/x")).header("x-road-issue", "A".repeat(512));
    let reply = region.call(Some(&bappeda), Proto::H1, call).await.unwrap();
    assert_gateway_error(&reply, 403, "Client.AccessDenied");
    assert!(upstream.received().is_empty());
}

/// A client that asks for `100 Continue` before sending its body, and is refused, gets the
/// refusal instead of a `100 Continue`, so that it never uploads what would be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_call_that_expects_100_continue_gets_the_refusal_first() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Setup { region, upstream, .. } = setup().await;
    for (client, service, status) in [(LEGACY, SMALL, "403"), (LEGACY, SERVICE, "413")] {
        let mut tcp = tokio::net::TcpStream::connect(region.addr("intranet")).await.unwrap();
        let head = format!(
            "POST {} HTTP/1.1\r\nhost: gw\r\nx-road-client: {client}\r\ncontent-length: 200000000\r\n\
             expect: 100-continue\r\n\r\n",
            target(service, "/echo")
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        // The connection is closed after the refusal: nothing waits for the body the client
        // was told not to send (reading it would have waited the discard's 2 s for nothing).
        let closed = tokio::time::timeout(Duration::from_millis(1500), tcp.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{service}: {answer}");
        assert!(!answer.contains("100 Continue"), "{answer}");
        assert!(closed.is_ok(), "the gateway waited for a body it had refused: {answer}");
    }
    assert!(upstream.received().is_empty());
}

/// A CONNECT, and an `X-Road-Client` that is not ASCII, are told as what they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_and_a_client_name_outside_ascii_are_told_as_such() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Setup { region, upstream, .. } = setup().await;
    let addr = region.addr("intranet");
    let ask = |head: Vec<u8>| async move {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&head).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    let connect = format!(
        "CONNECT 127.0.0.1:443 HTTP/1.1\r\nhost: 127.0.0.1:443\r\nconnection: close\r\nx-road-client: {LEGACY}\r\n\r\n"
    );
    let answer = ask(connect.into_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("CONNECT 127.0.0.1:443 is not taken") && answer.contains("no forward proxy"), "{answer}");
    // Refused once the caller is known: its record names it.
    let records = region.wait_records(1).await;
    let connect = records.iter().find(|r| r.method == "CONNECT").expect("the CONNECT is recorded");
    assert_eq!((connect.client.as_str(), connect.status), (LEGACY, 400));

    let mut head =
        format!("GET {} HTTP/1.1\r\nhost: gw\r\nconnection: close\r\nx-road-client: ", target(SERVICE, "/json/x"))
            .into_bytes();
    head.extend_from_slice("ID/PEMDA/1602/RSÜD\r\n\r\n".as_bytes());
    let answer = ask(head).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("other than visible ASCII"), "{answer}");
    assert!(upstream.received().is_empty());
}

/// HEAD answers carry no body, whoever makes them: the service, or the gateway itself (its
/// errors, its directory). Over HTTP/2 a body after a HEAD is a protocol error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_calls_get_the_status_and_headers_without_a_body() {
    let Setup { region, upstream, pki } = setup().await;
    let bappeda = pki.client(BAPPEDA);
    let dinkes = pki.client(DINKES);
    let head = |target: String| Call::new(http::Method::HEAD, target);
    for proto in [Proto::H1, Proto::H2] {
        let refused = region.call(Some(&bappeda), proto, head(target(SERVICE, "/json/x"))).await.unwrap();
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{proto:?}");
        assert_eq!(refused.header("x-road-error"), Some("Client.AccessDenied"), "{proto:?}");
        assert!(refused.body.is_empty(), "{proto:?}: {:?}", refused.body);

        let directory = region.call(Some(&dinkes), proto, head("/listClients".into())).await.unwrap();
        assert_eq!(directory.status, StatusCode::OK, "{proto:?}");
        assert!(directory.body.is_empty(), "{proto:?}");

        let answered = region.call(Some(&dinkes), proto, head(target(SERVICE, "/json/x"))).await.unwrap();
        assert_eq!(answered.status, StatusCode::OK, "{proto:?}");
        assert!(answered.body.is_empty(), "{proto:?}");
        // Logged as a whole exchange, not as one the client abandoned.
        let expect = Expect { client: DINKES, service: SERVICE, status: 200, error_type: "", may_omit: false };
        let rec = assert_record(&region, &answered, None, &expect).await;
        assert_eq!(rec.method, "HEAD");
    }
    assert_eq!(upstream.received().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Refused by authorize and rate-limit
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_grant_is_refused_with_what_is_missing() {
    let Setup { region, upstream, pki } = setup().await;
    let bappeda = pki.client(BAPPEDA);
    let reply = region
        .call(Some(&bappeda), Proto::H1, Call::get(target(SERVICE, &format!("/json/x?{NIK_QUERY}"))))
        .await
        .unwrap();
    let message = assert_gateway_error(&reply, 403, "Client.AccessDenied");
    assert!(message.contains(&format!("{BAPPEDA} has no grant on {SERVICE}")), "{message}");
    assert!(message.contains("Kepala Bidang PDI Disdukcapil"), "the data steward is named: {message}");
    assert_eq!(reply.header("x-road-client"), Some(BAPPEDA));
    assert_eq!(reply.header("x-road-service"), Some(SERVICE));
    let expect =
        Expect { client: BAPPEDA, service: SERVICE, status: 403, error_type: "Client.AccessDenied", may_omit: false };
    let rec = assert_record(&region, &reply, Some(NIK_QUERY), &expect).await;
    assert_eq!(rec.client_cert_sha256, bappeda.sha256());
    assert_eq!(rec.forwarded_at_unix_nanos, 0);
    assert!(upstream.received().is_empty());
    assert_record_count(&region, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_outside_the_grant_is_refused() {
    let Setup { region, upstream, pki } = setup().await;
    let rsud = pki.client(RSUD);
    let ok = region.call(Some(&rsud), Proto::H1, Call::get(target(SERVICE, "/json/x"))).await.unwrap();
    assert_eq!(ok.status, StatusCode::OK);

    let denied = [
        (Call::post(target(SERVICE, "/json/x"), "{}"), "POST /json/x"),
        (Call::get(target(SERVICE, &format!("/echo/x?{NIK_QUERY}"))), "GET /echo/x"),
        (Call::get(target(SERVICE, "/json/x/y")), "GET /json/x/y"),
    ];
    let expect =
        Expect { client: RSUD, service: SERVICE, status: 403, error_type: "Client.AccessDenied", may_omit: false };
    for (call, what) in denied {
        let query = call.target.split_once('?').map(|(_, q)| q.to_owned());
        let reply = region.call(Some(&rsud), Proto::H2, call).await.unwrap();
        let message = assert_gateway_error(&reply, 403, "Client.AccessDenied");
        assert!(message.contains(what) && message.contains("GET /json/*"), "{message}");
        assert_record(&region, &reply, query.as_deref(), &expect).await;
    }
    assert_eq!(upstream.received().len(), 1);
    assert_record_count(&region, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purpose_bound_grant_needs_the_declared_purpose() {
    let Setup { region, upstream, pki } = setup().await;
    let puskesmas = pki.client(PUSKESMAS);
    let call = || Call::get(target(SERVICE, &format!("/json/x?{NIK_QUERY}")));
    let denied =
        Expect { client: PUSKESMAS, service: SERVICE, status: 403, error_type: "Client.AccessDenied", may_omit: false };

    let missing = region.call(Some(&puskesmas), Proto::H1, call()).await.unwrap();
    let message = assert_gateway_error(&missing, 403, "Client.AccessDenied");
    assert!(message.contains("without X-SPLP-Purpose") && message.contains("pelayanan-kesehatan"), "{message}");
    assert_record(&region, &missing, Some(NIK_QUERY), &denied).await;

    let wrong = region.call(Some(&puskesmas), Proto::H1, call().header("x-splp-purpose", "pemasaran")).await.unwrap();
    let message = assert_gateway_error(&wrong, 403, "Client.AccessDenied");
    assert!(message.contains("\"pemasaran\"") && message.contains("pelayanan-kesehatan"), "{message}");
    let rec = assert_record(&region, &wrong, Some(NIK_QUERY), &denied).await;
    assert_eq!(rec.purpose, "pemasaran");

    // Not a purpose code at all: told as such, not as a missing purpose.
    let garbled = call().header("x-splp-purpose", "pelayanan-kesehatan-\u{e9}".as_bytes());
    let garbled = region.call(Some(&puskesmas), Proto::H1, garbled).await.unwrap();
    let message = assert_gateway_error(&garbled, 400, "Client.BadRequest");
    assert!(message.contains("X-SPLP-Purpose") && message.contains("visible ASCII"), "{message}");

    let right =
        region.call(Some(&puskesmas), Proto::H2, call().header("x-splp-purpose", "pelayanan-kesehatan")).await.unwrap();
    assert_eq!(right.status, StatusCode::OK);
    let allowed = Expect { client: PUSKESMAS, service: SERVICE, status: 200, error_type: "", may_omit: false };
    let rec = assert_record(&region, &right, Some(NIK_QUERY), &allowed).await;
    assert_eq!(rec.purpose, "pelayanan-kesehatan");
    assert_eq!(upstream.received().len(), 1);
    assert_record_count(&region, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_grant_is_refused() {
    let Setup { region, upstream, pki } = setup().await;
    let dispenda = pki.client(DISPENDA);
    let reply = region.call(Some(&dispenda), Proto::H1, Call::get(target(SERVICE, "/json/x"))).await.unwrap();
    let message = assert_gateway_error(&reply, 403, "Client.AccessDenied");
    assert!(message.contains("expired at 2021-01-01T00:00:00+07:00"), "{message}");
    let expect =
        Expect { client: DISPENDA, service: SERVICE, status: 403, error_type: "Client.AccessDenied", may_omit: false };
    assert_record(&region, &reply, None, &expect).await;
    assert!(upstream.received().is_empty());
    assert_record_count(&region, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_quota_get_429_with_retry_after() {
    let Setup { region, upstream, pki } = setup().await;
    let dinkes = pki.client(DINKES);
    // per_second = 1, burst = 2: two pass at once, the third (well within a second) does not.
    let started = Instant::now();
    let mut replies = Vec::new();
    for _ in 0..3 {
        let call = Call::get(target(LIMITED, &format!("/json/x?{NIK_QUERY}")));
        replies.push(region.call(Some(&dinkes), Proto::H1, call).await.unwrap());
    }
    assert!(started.elapsed() < Duration::from_millis(900), "too slow to test a 1/s quota: {:?}", started.elapsed());
    assert_eq!(replies[0].status, StatusCode::OK);
    assert_eq!(replies[1].status, StatusCode::OK);
    let message = assert_gateway_error(&replies[2], 429, "Client.RateLimited");
    assert!(message.contains("rate limit") && message.contains(LIMITED), "{message}");
    let retry: u64 = replies[2].header("retry-after").expect("Retry-After").parse().expect("whole seconds");
    assert!((1..=2).contains(&retry), "Retry-After: {retry}");

    let ok = Expect { client: DINKES, service: LIMITED, status: 200, error_type: "", may_omit: false };
    assert_record(&region, &replies[0], Some(NIK_QUERY), &ok).await;
    assert_record(&region, &replies[1], Some(NIK_QUERY), &ok).await;
    let limited =
        Expect { client: DINKES, service: LIMITED, status: 429, error_type: "Client.RateLimited", may_omit: false };
    assert_record(&region, &replies[2], Some(NIK_QUERY), &limited).await;
    assert_eq!(upstream.received().len(), 2);
    assert_record_count(&region, 3).await;
}

// ---------------------------------------------------------------------------------------------
// Malformed requests and limits
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_and_malformed_uris_are_bad_requests() {
    let Setup { region, upstream, pki } = setup().await;
    let dinkes = pki.client(DINKES);
    let targets = [
        target(SERVICE, "/json/../x"),
        target(SERVICE, "/json/%2e%2e/x"),
        target(SERVICE, "/json/.%2E/x"),
        target(SERVICE, "/json/./x"),
        target(SERVICE, "/json/a%2Fb"),
        target(SERVICE, "/json//x"),
        "/r1/ID/PEMDA/1602/../DISDUKCAPIL/nik-verify/json/x".to_owned(),
        "/r1/ID/PEMDA/1602/DIS%20DUK/nik-verify/json/x".to_owned(),
        "/r1/ID/PEMDA/1602/DISDUKCAPIL".to_owned(),
        "/rest/ID/PEMDA/1602/DISDUKCAPIL/nik-verify".to_owned(),
        target(SERVICE, "/json/x?nik=1&nik=2"),
        target(SERVICE, &format!("/json/x?{NIK_QUERY}&n%69k=3201010101010002")),
        target(SERVICE, "/json/x?a=%zz"),
    ];
    for (i, t) in targets.iter().enumerate() {
        let proto = if i % 2 == 0 { Proto::H1 } else { Proto::H2 };
        let reply = region.call(Some(&dinkes), proto, Call::get(t.clone())).await.unwrap();
        let message = assert_gateway_error(&reply, 400, "Client.BadRequest");
        assert!(!message.is_empty(), "{t}");
        let query = t.split_once('?').map(|(_, q)| q);
        let rec = region.record(reply.exchange_id()).await;
        assert_eq!(
            (rec.client.as_str(), rec.status, rec.error_type.as_str()),
            (DINKES, 400, "Client.BadRequest"),
            "{t}"
        );
        assert_eq!(rec.path, t.split('?').next().unwrap(), "the path as sent");
        match query {
            Some(q) => assert_eq!(rec.query_sha256, sha256(q.as_bytes()), "{t}"),
            None => assert!(rec.query_sha256.is_empty()),
        }
        assert!(!format!("{rec:?}").contains(NIK), "{rec:#?}");
        assert_eq!(rec.forwarded_at_unix_nanos, 0);
    }
    assert!(upstream.received().is_empty(), "{:#?}", upstream.received());
    assert_record_count(&region, targets.len()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_and_uris_are_refused() {
    let Setup { region, upstream, pki } = setup().await;
    let dinkes = pki.client(DINKES);
    let get = || Call::get(target(SERVICE, &format!("/json/x?{NIK_QUERY}")));
    let mut replies = Vec::new();

    // Over max_header_bytes = 16 KiB, by one header or by many.
    for proto in [Proto::H1, Proto::H2] {
        let reply = region.call(Some(&dinkes), proto, get().header("x-big", "a".repeat(20 * 1024))).await.unwrap();
        let message = assert_gateway_error(&reply, 431, "Client.BadRequest");
        assert!(message.contains("16384"), "{message}");
        replies.push(reply);
    }
    let mut many = get();
    for i in 0..60 {
        many = many.header(&format!("x-h{i}"), "v");
    }
    let reply = region.call(Some(&dinkes), Proto::H1, many).await.unwrap();
    let message = assert_gateway_error(&reply, 431, "Client.BadRequest");
    assert!(message.contains("at most 50"), "{message}");
    replies.push(reply);
    for reply in &replies {
        let rec = region.record(reply.exchange_id()).await;
        assert_eq!((rec.status, rec.error_type.as_str()), (431, "Client.BadRequest"));
        // Header limits are checked before identify, so the client may not be known yet.
        assert!(rec.client.is_empty() || rec.client == DINKES, "{rec:#?}");
        assert_eq!(rec.query_sha256, sha256(NIK_QUERY.as_bytes()));
        assert!(!format!("{rec:?}").contains(NIK));
    }

    // Over max_uri_length (8192 by default).
    let long = Call::get(target(SERVICE, &format!("/json/{}", "x".repeat(9000))));
    let reply = region.call(Some(&dinkes), Proto::H2, long).await.unwrap();
    assert_gateway_error(&reply, 414, "Client.BadRequest");
    let rec = region.record(reply.exchange_id()).await;
    assert_eq!((rec.client.as_str(), rec.status, rec.error_type.as_str()), (DINKES, 414, "Client.BadRequest"));
    // Its record keeps the path's beginning and its length, not the whole line.
    assert!(rec.path.starts_with(&format!("/r1/{SERVICE}/json/xxx")), "{}", rec.path);
    assert!(rec.path.ends_with(&format!("… ({} bytes in all)", SERVICE.len() + 4 + 6 + 9000)), "{}", rec.path);
    assert!(rec.path.len() < 300, "{}", rec.path.len());

    assert!(upstream.received().is_empty());
    assert_record_count(&region, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_over_the_limit_is_refused_before_forwarding() {
    let Setup { region, upstream, pki } = setup().await;
    let dinkes = pki.client(DINKES);
    let expect =
        Expect { client: DINKES, service: SMALL, status: 413, error_type: "Client.RequestTooLarge", may_omit: false };
    for proto in [Proto::H1, Proto::H2] {
        let call = Call::post(target(SMALL, &format!("/echo/x?{NIK_QUERY}")), vec![7u8; 100 * 1024]);
        let reply = region.call(Some(&dinkes), proto, call).await.unwrap();
        let message = assert_gateway_error(&reply, 413, "Client.RequestTooLarge");
        assert!(message.contains(&SMALL_LIMIT.to_string()) && message.contains(SMALL), "{message}");
        let rec = assert_record(&region, &reply, Some(NIK_QUERY), &expect).await;
        assert_eq!(rec.forwarded_at_unix_nanos, 0);
    }
    // Just under the limit passes.
    let fits = Call::post(target(SMALL, "/echo/x"), vec![7u8; SMALL_LIMIT]);
    let reply = region.call(Some(&dinkes), Proto::H1, fits).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), SMALL_LIMIT);
    assert_eq!(upstream.received().len(), 1, "only the call within the limit reached the service");
    assert_record_count(&region, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_with_a_streamed_body_passes_it_on_hashed_and_within_the_limit() {
    let Setup { region, upstream, pki } = setup().await;
    let dinkes = pki.client(DINKES);
    let body = Bytes::from_static(b"AAAA");
    for proto in [Proto::H1, Proto::H2] {
        // Chunked over HTTP/1.1 (which hyper's client too sends for a GET only when told to),
        // DATA without Content-Length over HTTP/2.
        let mut call = Call::new(http::Method::GET, target(SERVICE, "/echo/x")).chunked(vec![body.clone()]);
        if proto == Proto::H1 {
            call = call.header("transfer-encoding", "chunked");
        }
        let reply = region.call(Some(&dinkes), proto, call.clone()).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.body, body, "the service did not get the body over {proto:?}");
        assert_eq!(reply.header("x-road-request-hash"), Some(expected_hash(&call, &reply).as_str()));
        let rec = region.record(reply.exchange_id()).await;
        assert_eq!((rec.request_body_bytes, rec.request_body_sha256.clone()), (4, sha256(&body)));
    }
    assert!(upstream.received().iter().all(|r| r.body == body && r.complete));
    // The size limit holds for such a body too.
    let chunks: Vec<Bytes> = (0..16).map(|_| Bytes::from(vec![9u8; 16 * 1024])).collect();
    let over =
        Call::new(http::Method::GET, target(SMALL, "/echo/x")).header("transfer-encoding", "chunked").chunked(chunks);
    if let Ok(reply) = region.call(Some(&dinkes), Proto::H1, over).await {
        assert_gateway_error(&reply, 413, "Client.RequestTooLarge");
    }
    for got in upstream.wait_received(3).await.iter().skip(2) {
        assert!(!got.complete && got.body.len() <= SMALL_LIMIT, "{} bytes reached the service", got.body.len());
    }
}

/// A GET over HTTP/2 whose HEADERS leave the stream open and whose end comes in an empty DATA
/// frame, as some clients send one, has no body: the service gets a plain GET, not an empty
/// chunked body, which some servers refuse for a GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_get_ended_by_an_empty_data_frame_reaches_the_service_without_a_body() {
    let Setup { region, upstream, pki } = setup().await;
    let config = splpd_tests::client::tls_config(region.roots(), Some(&pki.client(DINKES)), Proto::H2);
    let tcp = tokio::net::TcpStream::connect(region.addr(PUBLIC)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
    let (sender, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let mut sender = sender.ready().await.unwrap();
    let req = http::Request::get(format!("https://localhost{}", target(SERVICE, "/echo/x"))).body(()).unwrap();
    let (answer, mut stream) = sender.send_request(req, false).unwrap();
    stream.send_data(Bytes::new(), true).unwrap();
    let answer = answer.await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let got = upstream.wait_received(1).await;
    assert_eq!(got[0].method, http::Method::GET);
    assert!(got[0].headers.get("transfer-encoding").is_none(), "a GET with a body: {:?}", got[0].headers);
    assert!(got[0].body.is_empty() && got[0].complete);
    let id = answer.headers().get("x-road-id").unwrap().to_str().unwrap().to_owned();
    let rec = region.record(&id).await;
    assert_eq!((rec.status, rec.request_body_bytes), (200, 0));
}

/// A POST whose body's first bytes come at once and the rest never, over its own connection:
/// the answer's status and headers, read while the body is still open.
async fn post_stalled_body(region: &Region, cert: &ClientCert, target: String) -> http::response::Parts {
    use hyper_util::rt::TokioIo;
    let config = splpd_tests::client::tls_config(region.roots(), Some(cert), Proto::H1);
    let tcp = tokio::net::TcpStream::connect(region.addr(PUBLIC)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>(1);
    let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let req = http::Request::post(target).header("host", "localhost").body(body).unwrap();
    tx.send(Ok(hyper::body::Frame::data(Bytes::from_static(b"the first bytes")))).await.unwrap();
    let answer = sender.send_request(req).await.unwrap().into_parts().0;
    drop(tx);
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_too_slow_with_its_body_is_told_so_and_the_service_is_not_blamed() {
    let Setup { region, upstream, pki } = setup().await;
    let dinkes = pki.client(DINKES);
    // More stalled calls at once than the failures in a row that eject an endpoint.
    let stalled = (0..6).map(|_| post_stalled_body(&region, &dinkes, format!("/r1/{SLOW}/echo/x")));
    for answer in futures_util::future::join_all(stalled).await {
        assert_eq!(answer.status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(answer.headers["x-road-error"], "Client.RequestTimeout");
        let id = answer.headers["x-road-id"].to_str().unwrap();
        let record = region.record(id).await;
        assert_eq!(record.error_type, "Client.RequestTimeout");
        assert!(record.attempts.iter().all(|a| a.outcome.contains("still arriving from the caller")), "{record:#?}");
    }
    assert_eq!(upstream.wait_received(6).await.len(), 6);
    // The service answers the next caller: the slow ones did not count against it.
    let reply = region.call(Some(&dinkes), Proto::H1, Call::get(target(SLOW, "/json/x"))).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    // A service that does not answer in time is still the service's timeout.
    let reply = region.call(Some(&dinkes), Proto::H1, Call::get(target(SLOW, "/slow/2000/x"))).await.unwrap();
    assert_gateway_error(&reply, 504, "Server.ServerProxy.ServiceTimeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_over_the_limit_is_cut_off() {
    let Setup { region, upstream, pki } = setup().await;
    let dinkes = pki.client(DINKES);
    for (n, proto) in [(1, Proto::H1), (2, Proto::H2)] {
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        let chunks: Vec<Bytes> = (0..16).map(|_| Bytes::from(vec![9u8; 16 * 1024])).collect();
        let call = Call::post(target(SMALL, "/echo/x"), Bytes::new()).header("x-road-id", &id).chunked(chunks);
        match region.call(Some(&dinkes), proto, call).await {
            Ok(reply) => {
                assert_gateway_error(&reply, 413, "Client.RequestTooLarge");
                assert_eq!(reply.exchange_id(), id);
                let expect = Expect {
                    client: DINKES,
                    service: SMALL,
                    status: 413,
                    error_type: "Client.RequestTooLarge",
                    may_omit: false,
                };
                assert_record(&region, &reply, None, &expect).await;
            }
            // Also acceptable: the gateway broke the exchange off. It is logged all the same.
            Err(_) => {
                let rec = region.record(&id).await;
                assert_eq!((rec.client.as_str(), rec.service.as_str()), (DINKES, SMALL));
                assert_ne!(rec.status, 200);
            }
        }
        // The service may have seen the start of the body, never more than the limit, never whole.
        for got in upstream.wait_received(n).await {
            assert!(got.body.len() <= SMALL_LIMIT, "{} bytes reached the service", got.body.len());
            assert!(!got.complete, "the service got a body over the limit as complete");
        }
        assert_record_count(&region, n).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Upstream failures and unknown services
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_refusing_connections_is_service_failed() {
    Logs::capture();
    let Setup { region, pki, upstream: _upstream } = setup().await;
    let dinkes = pki.client(DINKES);
    let reply =
        region.call(Some(&dinkes), Proto::H1, Call::get(target(DOWN, &format!("/json/x?{NIK_QUERY}")))).await.unwrap();
    let message = assert_gateway_error(&reply, 502, "Server.ServerProxy.ServiceFailed");
    assert!(message.contains(DOWN), "{message}");
    assert_eq!(reply.header("x-road-service"), Some(DOWN));
    let expect = Expect {
        client: DINKES,
        service: DOWN,
        status: 502,
        error_type: "Server.ServerProxy.ServiceFailed",
        may_omit: false,
    };
    let rec = assert_record(&region, &reply, Some(NIK_QUERY), &expect).await;
    assert_record_count(&region, 1).await;
    // The record keeps the endpoint for the operator; the calling agency is not shown it.
    let authority = rec.upstream.trim_start_matches("http://").trim_end_matches('/');
    assert!(authority.contains(':'), "the record names the endpoint: {:?}", rec.upstream);
    assert!(!message.contains(authority) && message.contains("operator"), "{message}");
    let logged = Logs::capture().lines_with(reply.exchange_id()).await;
    assert!(
        logged.iter().any(|l| l.contains(authority) && l.contains("check that the service runs and listens there")),
        "{logged:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_answer_that_breaks_off_is_answered_502_and_recorded_so() {
    Logs::capture();
    let Setup { region, upstream: _upstream, pki } = setup().await;
    let dinkes = pki.client(DINKES);
    // 8 KiB announced, 4 KiB sent: held back whole, nothing of it has left when it breaks, so
    // the client gets the gateway's clean 502 rather than a status and a cut body.
    for proto in [Proto::H1, Proto::H2] {
        let reply = region.call(Some(&dinkes), proto, Call::get(target(SERVICE, "/cut/4096"))).await.unwrap();
        let message = assert_gateway_error(&reply, 502, "Server.ServerProxy.ServiceFailed");
        assert!(message.contains("broke off before its end"), "{message}");
        let rec = region.record(reply.exchange_id()).await;
        assert_eq!((rec.status, rec.error_type.as_str()), (502, "Server.ServerProxy.ServiceFailed"), "{rec:#?}");
        assert_eq!(rec.response_body_bytes, 0, "the service's part answer is not what the client got: {rec:#?}");
        let logged = Logs::capture().lines_with(reply.exchange_id()).await;
        assert!(
            logged.iter().any(|l| l.contains(" WARN ") && l.contains("the service's answer broke off before its end")),
            "{logged:#?}"
        );
    }
    // The connection the client used still serves.
    let reply = region.call(Some(&dinkes), Proto::H1, Call::get(target(SERVICE, "/json/x"))).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
}

/// An HTTP/1.1 request without `Host`, or with two, is refused with 400 as HTTP/1.1 asks, not
/// passed on for intermediaries to read two ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http11_request_without_one_host_is_refused() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Setup { region, upstream, pki: _pki } = setup().await;
    let request = |hosts: &str| {
        format!("GET /r1/{SERVICE}/json/x HTTP/1.1\r\n{hosts}X-Road-Client: {LEGACY}\r\nConnection: close\r\n\r\n")
    };
    for (hosts, said) in [("", "no Host header"), ("Host: a\r\nHost: b\r\n", "more than one Host header")] {
        let mut tcp = tokio::net::TcpStream::connect(region.addr("intranet")).await.unwrap();
        tcp.write_all(request(hosts).as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("Client.BadRequest") && answer.contains(said), "{answer}");
    }
    assert!(upstream.received().is_empty(), "nothing reached the service");
    // With one, the same call goes through.
    let mut tcp = tokio::net::TcpStream::connect(region.addr("intranet")).await.unwrap();
    tcp.write_all(request("Host: gw\r\n").as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
}

/// A service's answer with both `Content-Length` and `Transfer-Encoding: chunked` is read
/// chunked, as HTTP/1.1 says; its `Content-Length` is dropped before the answer goes on (RFC 9112
/// §6.3), or the caller would wait for bytes that never come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_framed_both_ways_goes_on_chunked_without_its_length() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let mut buf = vec![0u8; 8192];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let Ok(n @ 1..) = tcp.read(&mut buf).await else { return };
                    head.extend_from_slice(&buf[..n]);
                }
                let answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\
                               Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
                let _ = tcp.write_all(answer).await;
            });
        }
    });
    let pki = Pki::new();
    let region = RegionBuilder::new(&pki)
        .service(SERVICE, &format!("http://{addr}"), "")
        .grant(&format!("service = \"{SERVICE}\"\nclient = \"{DINKES}\""))
        .start()
        .await;
    let dinkes = pki.client(DINKES);
    for proto in [Proto::H1, Proto::H2] {
        let reply = region.call(Some(&dinkes), proto, Call::get(target(SERVICE, "/x"))).await.unwrap();
        assert_eq!((reply.status, reply.body.as_ref()), (StatusCode::OK, &b"ok"[..]), "{proto:?}");
        assert_ne!(reply.header("content-length"), Some("100"), "{proto:?}");
        let rec = region.record(reply.exchange_id()).await;
        assert_eq!((rec.status, rec.error_type.as_str(), rec.response_body_bytes), (200, "", 2), "{rec:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_switch_the_gateway_never_asked_for_is_answered_502() {
    let Setup { region, upstream: _upstream, pki } = setup().await;
    let dinkes = pki.client(DINKES);
    for proto in [Proto::H1, Proto::H2] {
        let reply = region.call(Some(&dinkes), proto, Call::get(target(SERVICE, "/status/101/x"))).await.unwrap();
        let message = assert_gateway_error(&reply, 502, "Server.ServerProxy.ServiceFailed");
        assert!(message.contains("101 Switching Protocols"), "{message}");
        let rec = region.record(reply.exchange_id()).await;
        assert_eq!((rec.status, rec.error_type.as_str()), (502, "Server.ServerProxy.ServiceFailed"), "{rec:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_breaks_off_after_it_started_is_logged_under_its_exchange_id() {
    Logs::capture();
    let Setup { region, upstream: _upstream, pki } = setup().await;
    let dinkes = pki.client(DINKES);
    // Past what the gateway holds back (64 KiB), the answer streams: the client sees the status,
    // then a body cut short; it may not see the whole of either.
    let _ = region.call(Some(&dinkes), Proto::H1, Call::get(target(SERVICE, "/cut/98304"))).await;
    let records = region.wait_records(1).await;
    let rec = records.iter().find(|r| r.path.ends_with("/cut/98304")).expect("the exchange is logged");
    assert_eq!((rec.status, rec.error_type.as_str()), (200, "Server.ServerProxy.ServiceFailed"), "{rec:#?}");
    let logged = Logs::capture().lines_with(&rec.exchange_id).await;
    assert!(
        logged.iter().any(|l| l.contains(" WARN ") && l.contains("the service's answer broke off after it started")),
        "{logged:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_slow_upstream_is_service_timeout() {
    let Setup { region, upstream, pki } = setup().await;
    let dinkes = pki.client(DINKES);
    let started = Instant::now();
    // request_timeout = 500ms; the service takes 3 s.
    let reply = region.call(Some(&dinkes), Proto::H2, Call::get(target(SLOW, "/slow/3000"))).await.unwrap();
    let elapsed = started.elapsed();
    let message = assert_gateway_error(&reply, 504, "Server.ServerProxy.ServiceTimeout");
    assert!(message.contains(SLOW) && message.contains("did not answer within 500ms"), "{message}");
    assert!(!message.contains(&upstream.addr().to_string()), "{message}");
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_millis(2500),
        "answered after {elapsed:?}"
    );
    let expect = Expect {
        client: DINKES,
        service: SLOW,
        status: 504,
        error_type: "Server.ServerProxy.ServiceTimeout",
        may_omit: false,
    };
    let rec = assert_record(&region, &reply, None, &expect).await;
    assert!(rec.forwarded_at_unix_nanos > 0, "it was forwarded");
    assert_eq!(upstream.wait_received(1).await.len(), 1);
    assert_record_count(&region, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_service_is_404() {
    let Setup { region, upstream, pki } = setup().await;
    let dinkes = pki.client(DINKES);
    for unknown in ["ID/PEMDA/1602/DISDUKCAPIL/nope", "ID/PEMDA/1601/DINKES/rujukan"] {
        let reply = region
            .call(Some(&dinkes), Proto::H1, Call::get(target(unknown, &format!("/json/x?{NIK_QUERY}"))))
            .await
            .unwrap();
        let message = assert_gateway_error(&reply, 404, "Client.UnknownService");
        assert!(message.contains(unknown), "{message}");
        let expect = Expect {
            client: DINKES,
            service: unknown,
            status: 404,
            error_type: "Client.UnknownService",
            may_omit: true,
        };
        assert_record(&region, &reply, Some(NIK_QUERY), &expect).await;
    }
    assert!(upstream.received().is_empty());
    assert_record_count(&region, 2).await;
}

// ---------------------------------------------------------------------------------------------
// Connection types
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_listener_serves_only_the_opted_in_client() {
    let Setup { region, upstream, pki: _pki } = setup().await;
    // Both listeners were configured on 127.0.0.1:0 and got ports of their own.
    let (public, intranet) = (region.addr(PUBLIC), region.addr("intranet"));
    assert!(public.port() != 0 && intranet.port() != 0 && public != intranet, "{public} {intranet}");
    let call = || Call::get(target(SERVICE, &format!("/json/x?{NIK_QUERY}")));

    let reply = region.call_plain("intranet", call().header("x-road-client", LEGACY)).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.body, FIXED_JSON.as_bytes());
    assert_eq!(reply.header("x-road-client"), Some(LEGACY));
    assert_eq!(reply.header("x-road-service"), Some(SERVICE));
    assert_uuid(reply.exchange_id());
    let received = upstream.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].header("x-road-client"), Some(LEGACY));
    let expect = Expect { client: LEGACY, service: SERVICE, status: 200, error_type: "", may_omit: false };
    let rec = assert_record(&region, &reply, Some(NIK_QUERY), &expect).await;
    assert_eq!(rec.connection_type(), ConnectionType::Http);
    assert!(rec.client_cert_sha256.is_empty());

    // Another client may not name itself here, even one that holds grants.
    let other = region.call_plain("intranet", call().header("x-road-client", DINKES)).await.unwrap();
    let message = assert_gateway_error(&other, 401, "Client.Unauthenticated");
    assert!(message.contains(DINKES) && message.contains("not opted in"), "{message}");
    // Nobody was established: the name in the header is not logged as the client.
    let expect =
        Expect { client: "", service: SERVICE, status: 401, error_type: "Client.Unauthenticated", may_omit: true };
    assert_record(&region, &other, Some(NIK_QUERY), &expect).await;

    // Without the header nobody is named.
    let anonymous = region.call_plain("intranet", call()).await.unwrap();
    let message = assert_gateway_error(&anonymous, 401, "Client.Unauthenticated");
    assert!(message.contains("X-Road-Client"), "{message}");
    assert_record(&region, &anonymous, Some(NIK_QUERY), &expect).await;

    // The opt-in holds on its listener only: the mTLS listener asks for a certificate.
    let mtls = region.call(None, Proto::H1, call().header("x-road-client", LEGACY)).await.unwrap();
    let message = assert_gateway_error(&mtls, 401, "Client.Unauthenticated");
    assert!(message.contains("no client certificate was presented"), "{message}");
    assert_record(&region, &mtls, Some(NIK_QUERY), &expect).await;

    assert_eq!(upstream.received().len(), 1);
    assert_record_count(&region, 4).await;
}
