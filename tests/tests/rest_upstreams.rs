//! The edges of the REST exchange path end to end (docs/design.md): `https://` upstreams that
//! verify the gateway and are verified by it (`[service.tls]`), a listener where a client is
//! opted in to TLS without a certificate, W3C trace context, and the audit log's hold on the
//! answer (`sync` mode, fail closed). Real TLS on loopback, a real gateway started from a TOML
//! file, real upstream services, and the audit records read back from the gateway's sink.

// Test fixtures fail loudly: a panic is the right report for a broken test setup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use splpd_certs::facts::facts;
use splpd_certs::id::{IdKind, Identity};
use splpd_gateway::audit::AuditMode;
use splpd_proto::v1::{ConnectionType, RecordKind};
use splpd_tests::client::read_roots;
use splpd_tests::logs::Logs;
use splpd_tests::pki::GATEWAY_ID;
use splpd_tests::upstream::{FIXED_JSON, large_body, tls_server_config};
use splpd_tests::{Call, PUBLIC, Pki, Proto, Region, RegionBuilder, Reply, Upstream};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A plain `http://` service.
const SERVICE: &str = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify";
/// On the upstream that requires a client certificate, with `client_cert = true`.
const MTLS: &str = "ID/PEMDA/1602/DISDUKCAPIL/mtls";
/// On the same upstream, with `client_cert = false`.
const NO_CERT: &str = "ID/PEMDA/1602/DISDUKCAPIL/no-cert";
/// On the same upstream, with `client_cert = true` and `ca` naming a CA that did not sign it.
const WRONG_CA: &str = "ID/PEMDA/1602/DISDUKCAPIL/wrong-ca";
/// On the same upstream, with `client_cert = true` and `ca` naming the region CA that signed it.
const PINNED: &str = "ID/PEMDA/1602/DISDUKCAPIL/pinned";
/// On an `https://` upstream that asks for no client certificate, with `client_cert = false`.
const OPEN_TLS: &str = "ID/PEMDA/1602/DISDUKCAPIL/open-tls";
/// On the open upstream, verifying the name `localhost`, which its certificate carries.
const NAMED: &str = "ID/PEMDA/1602/DISDUKCAPIL/named";
/// On the open upstream, verifying a name its certificate does not carry.
const MISNAMED: &str = "ID/PEMDA/1602/DISDUKCAPIL/misnamed";
/// The identity of the agencies' HTTPS endpoints (a server certificate from the region CA).
const SERVICE_SERVER: &str = "ID/PEMDA/1602/disdukcapil-api";
/// The gateway's own identity as its certificate carries it.
const GATEWAY_URN: &str = "urn:splp:server:ID:PEMDA:1602:gw1";

/// Holds a grant on every service.
const DINKES: &str = "ID/PEMDA/1602/DINKES";
/// Holds no grant at all.
const BAPPEDA: &str = "ID/PEMDA/1602/BAPPEDA";
/// Opted in to `tls` (TLS without a client certificate) on the [`INTRANET_TLS`] listener.
const SIMPEG: &str = "ID/PEMDA/1602/SIMPEG";
/// A listener on 127.0.0.1 where [`SIMPEG`] is opted in to `tls`.
const INTRANET_TLS: &str = "intranet-tls";

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn target(service: &str, path: &str) -> String {
    format!("/r1/{service}{path}")
}

fn grant_all(service: &str, client: &str) -> String {
    format!("service = \"{service}\"\nclient = \"{client}\"")
}

/// A gateway error as the design has it: the status, `X-Road-Error`, and a JSON body
/// `{"type","message","detail"}` whose detail is the exchange id. Returns the message.
fn assert_gateway_error(reply: &Reply, status: u16, error_type: &str) -> String {
    assert_eq!(reply.status.as_u16(), status, "{reply:?}\n{}", reply.text());
    assert_eq!(reply.xroad_error(), Some(error_type), "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["type"], error_type, "{body}");
    assert_eq!(body["detail"], reply.exchange_id(), "{body}");
    body["message"].as_str().expect("message").to_owned()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
}

// ---------------------------------------------------------------------------------------------
// https:// upstreams
// ---------------------------------------------------------------------------------------------

struct TlsSetup {
    region: Region,
    /// Requires a client certificate from the region CA.
    mtls: Upstream,
    /// TLS without client authentication.
    open: Upstream,
    // Last: the gateway's files live in it.
    pki: Pki,
}

async fn tls_setup() -> TlsSetup {
    // Before any gateway logs: the tests read what the operator is told.
    Logs::capture();
    let pki = Pki::new();
    let server_cert = pki.service_server_cert(SERVICE_SERVER);
    let region_ca = read_roots(&pki.region_ca_cert());
    let mtls = Upstream::start_tls(tls_server_config(&server_cert, Some(&region_ca))).await;
    let open = Upstream::start_tls(tls_server_config(&server_cert, None)).await;
    let outsider = pki.outsider_ca_cert();
    let region = RegionBuilder::new(&pki)
        .service(MTLS, &mtls.url(), "tls = { client_cert = true }\nconnect_timeout = \"2s\"")
        .service(
            NO_CERT,
            &mtls.url(),
            "tls = { client_cert = false }\nconnect_timeout = \"2s\"\noutlier = { consecutive_failures = 100 }",
        )
        .service(
            WRONG_CA,
            &mtls.url(),
            &format!("tls = {{ ca = \"{}\", client_cert = true }}\nconnect_timeout = \"2s\"", outsider.display()),
        )
        .service(PINNED, &mtls.url(), "tls = { ca = \"region/ca.crt\", client_cert = true }\nconnect_timeout = \"2s\"")
        .service(OPEN_TLS, &open.url(), "tls = { client_cert = false }\nconnect_timeout = \"2s\"")
        .service(NAMED, &open.url(), "tls = { server_name = \"localhost\" }\nconnect_timeout = \"2s\"")
        .service(MISNAMED, &open.url(), "tls = { server_name = \"nik.disdukcapil.local\" }\nconnect_timeout = \"2s\"")
        .grant(&grant_all(MTLS, DINKES))
        .grant(&grant_all(NO_CERT, DINKES))
        .grant(&grant_all(WRONG_CA, DINKES))
        .grant(&grant_all(PINNED, DINKES))
        .grant(&grant_all(OPEN_TLS, DINKES))
        .grant(&grant_all(NAMED, DINKES))
        .grant(&grant_all(MISNAMED, DINKES))
        .start()
        .await;
    TlsSetup { region, mtls, open, pki }
}

/// The upstream saw exactly the gateway's own certificate, which carries its server identity.
fn assert_gateway_certificate(pki: &Pki, seen: Option<&rustls::pki_types::CertificateDer<'static>>) {
    let seen = seen.expect("the upstream saw a client certificate");
    assert_eq!(seen, &pki.gateway_chain()[0], "the certificate presented is gw1.crt");
    let identity = facts(seen.as_ref()).expect("certificate").identity.expect("an identity");
    assert_eq!(identity, Identity::parse(IdKind::Server, GATEWAY_ID).unwrap());
    assert!(
        seen.as_ref().windows(GATEWAY_URN.len()).any(|w| w == GATEWAY_URN.as_bytes()),
        "the certificate carries the URI {GATEWAY_URN}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_requiring_a_client_certificate_gets_the_gateways_own() {
    let TlsSetup { region, mtls, open: _open, pki } = tls_setup().await;
    let dinkes = pki.client(DINKES);

    for (n, proto) in [(1, Proto::H1), (2, Proto::H2)] {
        let reply = region.call(Some(&dinkes), proto, Call::get(target(MTLS, "/json/cek?nik=1"))).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.body, FIXED_JSON.as_bytes());
        assert_eq!(reply.header("x-road-client"), Some(DINKES));
        assert_eq!(reply.header("x-road-service"), Some(MTLS));

        let received = mtls.received();
        assert_eq!(received.len(), n);
        let got = &received[n - 1];
        assert_eq!(got.path_and_query, "/json/cek?nik=1");
        assert_eq!(got.header("x-road-client"), Some(DINKES));
        assert_eq!(got.header("x-road-id"), Some(reply.exchange_id()));
        assert_gateway_certificate(&pki, got.client_cert.as_ref());

        let rec = region.record(reply.exchange_id()).await;
        assert_eq!((rec.client.as_str(), rec.service.as_str(), rec.status), (DINKES, MTLS, 200));
        assert_eq!(rec.error_type, "");
        assert_eq!(rec.upstream, mtls.url());
        assert!(rec.upstream.starts_with("https://127.0.0.1:"), "{}", rec.upstream);
    }

    // `tls.ca` naming the region CA that did sign the upstream works as well as the anchors do.
    let reply = region.call(Some(&dinkes), Proto::H1, Call::get(target(PINNED, "/json/x"))).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let received = mtls.received();
    assert_eq!(received.len(), 3);
    assert_gateway_certificate(&pki, received[2].client_cert.as_ref());
    assert!(mtls.refused_handshakes().is_empty(), "{:?}", mtls.refused_handshakes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_client_cert_an_upstream_requiring_one_refuses_the_gateway() {
    let TlsSetup { region, mtls, open, pki } = tls_setup().await;
    let dinkes = pki.client(DINKES);

    // The same setting towards an upstream that asks for no certificate works: HTTPS itself is
    // fine, and the gateway indeed presents nothing.
    let reply = region.call(Some(&dinkes), Proto::H1, Call::get(target(OPEN_TLS, "/json/x"))).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let received = open.received();
    assert_eq!(received.len(), 1);
    assert!(received[0].client_cert.is_none(), "client_cert = false, yet a certificate was presented");
    assert!(open.refused_handshakes().is_empty());

    // The operator is told which side refused, and what to set. Under TLS 1.3 the refusal comes
    // after the gateway's side of the handshake, sometimes before the request could go, sometimes
    // after: each call tells it all the same (as many as the log takes of one kind a minute).
    let mut reply = None;
    for _ in 0..splpd_gateway::log_budget::PER_MINUTE {
        let call = region.call(Some(&dinkes), Proto::H1, Call::get(target(NO_CERT, "/json/x?nik=1"))).await.unwrap();
        let message = assert_gateway_error(&call, 502, "Server.ServerProxy.ServiceFailed");
        assert!(message.contains(NO_CERT), "{message}");
        let logged = Logs::capture().lines_with(call.exchange_id()).await;
        assert!(
            logged.iter().any(|l| l.contains("the service refused the gateway's certificate in the TLS handshake")
                && l.contains("client_cert = true")),
            "{logged:#?}"
        );
        reply = Some(call);
    }
    let reply = reply.unwrap();
    // One more of the same kind within the minute is left to `debug`, not lost: its record is
    // in the audit log, under the id its caller has.
    let more = region.call(Some(&dinkes), Proto::H1, Call::get(target(NO_CERT, "/json/x?nik=1"))).await.unwrap();
    assert_gateway_error(&more, 502, "Server.ServerProxy.ServiceFailed");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(Logs::capture().lines_with(more.exchange_id()).await.is_empty(), "an eleventh line of one kind");
    let rec = region.record(more.exchange_id()).await;
    assert_eq!((rec.status, rec.error_type.as_str()), (502, "Server.ServerProxy.ServiceFailed"), "{rec:#?}");
    assert_eq!(reply.header("x-road-service"), Some(NO_CERT));
    // The upstream refused the handshake for want of a certificate; no request reached it.
    let refused = mtls.wait_refused_handshakes(1).await;
    assert!(!refused.is_empty() && refused.iter().all(|e| e.contains("no certificate")), "{refused:?}");
    assert!(mtls.received().is_empty(), "{:#?}", mtls.received());

    let rec = region.record(reply.exchange_id()).await;
    assert_eq!((rec.client.as_str(), rec.service.as_str(), rec.status), (DINKES, NO_CERT, 502));
    assert_eq!(rec.error_type, "Server.ServerProxy.ServiceFailed");
    assert_eq!(rec.upstream, mtls.url());
}

/// Without `tls.ca`, an `https://` upstream is verified against the anchors that may vouch for
/// servers: the region's, not a neighbour's, whose CA the gateway trusts for that neighbour's
/// gateway alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_with_a_certificate_from_a_neighbours_ca_is_refused() {
    let pki = Pki::new();
    let impostor =
        Upstream::start_tls(tls_server_config(&pki.server_cert_from(pki.peer(), "ID/PEMDA/1601/gw1"), None)).await;
    let genuine = Upstream::start_tls(tls_server_config(&pki.service_server_cert(SERVICE_SERVER), None)).await;
    let region = RegionBuilder::new(&pki)
        .service(OPEN_TLS, &impostor.url(), "tls = { client_cert = false }\nconnect_timeout = \"2s\"")
        .service(NAMED, &genuine.url(), "tls = { client_cert = false }\nconnect_timeout = \"2s\"")
        .grant(&grant_all(OPEN_TLS, DINKES))
        .grant(&grant_all(NAMED, DINKES))
        .start()
        .await;
    let dinkes = pki.client(DINKES);
    let reply = region.call(Some(&dinkes), Proto::H1, Call::get(target(OPEN_TLS, "/json/x"))).await.unwrap();
    assert_gateway_error(&reply, 502, "Server.ServerProxy.ServiceFailed");
    assert!(impostor.received().is_empty(), "nothing was sent to it");
    // The region's CA vouches for its own services' hosts.
    let reply = region.call(Some(&dinkes), Proto::H1, Call::get(target(NAMED, "/json/x"))).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_whose_certificate_the_configured_ca_did_not_sign_is_refused_by_the_gateway() {
    let TlsSetup { region, mtls, open: _open, pki } = tls_setup().await;
    let dinkes = pki.client(DINKES);

    let address = mtls.addr().to_string();
    for proto in [Proto::H1, Proto::H2] {
        let reply = region.call(Some(&dinkes), proto, Call::get(target(WRONG_CA, "/json/x"))).await.unwrap();
        let message = assert_gateway_error(&reply, 502, "Server.ServerProxy.ServiceFailed");
        assert!(message.contains(WRONG_CA) && message.contains("could not connect"), "{message}");
        // The calling agency is not shown the service's address, nor the gateway's
        // configuration; the operator is, in the gateway's log under the exchange's id.
        assert!(message.contains("operator") && !message.contains(&address), "{message}");
        assert!(!message.contains("[service.tls]"), "{message}");
        let logged = Logs::capture().lines_with(reply.exchange_id()).await;
        assert!(
            logged.iter().any(|l| l.contains(&address) && l.contains("certificate") && l.contains("[service.tls]")),
            "the operator's log names the address, the certificate and what to check: {logged:#?}"
        );
        let rec = region.record(reply.exchange_id()).await;
        assert_eq!((rec.service.as_str(), rec.status), (WRONG_CA, 502));
        assert_eq!(rec.error_type, "Server.ServerProxy.ServiceFailed");
    }
    // It was the gateway that broke the handshake off (with an alert), before sending anything.
    let refused = mtls.wait_refused_handshakes(2).await;
    assert!(refused.len() >= 2 && refused.iter().all(|e| e.contains("alert")), "{refused:?}");
    assert!(mtls.received().is_empty(), "{:#?}", mtls.received());

    // The same upstream through a service without the wrong `ca` works, so it was the CA.
    let reply = region.call(Some(&dinkes), Proto::H1, Call::get(target(MTLS, "/json/x"))).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(mtls.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_name_sets_the_name_verified_on_the_upstreams_certificate() {
    let TlsSetup { region, mtls: _mtls, open, pki } = tls_setup().await;
    let dinkes = pki.client(DINKES);
    let reply = region.call(Some(&dinkes), Proto::H1, Call::get(target(NAMED, "/json/x"))).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(open.received().len(), 1);

    let reply = region.call(Some(&dinkes), Proto::H1, Call::get(target(MISNAMED, "/json/x"))).await.unwrap();
    let message = assert_gateway_error(&reply, 502, "Server.ServerProxy.ServiceFailed");
    assert!(message.contains(MISNAMED) && !message.contains("server_name"), "{message}");
    let logged = Logs::capture().lines_with(reply.exchange_id()).await;
    assert!(
        logged.iter().any(|l| l.contains("certificate") && l.contains("server_name")),
        "the operator's log says to check server_name: {logged:#?}"
    );
    assert_eq!(open.received().len(), 1, "nothing reached the upstream whose name did not match");
}

// ---------------------------------------------------------------------------------------------
// A listener with a client opted in to TLS without a certificate
// ---------------------------------------------------------------------------------------------

struct Setup {
    region: Region,
    upstream: Upstream,
    // Last: the gateway's files live in it.
    pki: Pki,
}

/// One plain upstream behind [`SERVICE`], granted to [`DINKES`] and [`SIMPEG`], an
/// [`INTRANET_TLS`] listener, and `extra` TOML.
async fn setup(extra: &str) -> Setup {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let region = RegionBuilder::new(&pki)
        .tls_listener(INTRANET_TLS, &[SIMPEG])
        .service(SERVICE, &upstream.url(), extra)
        .grant(&grant_all(SERVICE, DINKES))
        .grant(&grant_all(SERVICE, SIMPEG))
        .start()
        .await;
    Setup { region, upstream, pki }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_serves_the_opted_in_client_by_name_and_everyone_else_by_certificate() {
    let Setup { region, upstream, pki } = setup("").await;
    let call = || Call::get(target(SERVICE, "/json/x?nik=1"));

    // The opted-in client, without a certificate, naming itself: served, over either HTTP version.
    for (n, proto) in [(1, Proto::H1), (2, Proto::H2)] {
        let reply = region.call_on(INTRANET_TLS, None, proto, call().header("x-road-client", SIMPEG)).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.body, FIXED_JSON.as_bytes());
        assert_eq!(reply.header("x-road-client"), Some(SIMPEG));
        let received = upstream.received();
        assert_eq!(received.len(), n);
        assert_eq!(received[n - 1].header("x-road-client"), Some(SIMPEG));
        let rec = region.record(reply.exchange_id()).await;
        assert_eq!((rec.client.as_str(), rec.service.as_str(), rec.status), (SIMPEG, SERVICE, 200));
        assert_eq!(rec.connection_type(), ConnectionType::Tls);
        assert!(rec.client_cert_sha256.is_empty(), "{rec:#?}");
    }

    // Another client without a certificate may not name itself here, even one holding grants.
    let reply = region.call_on(INTRANET_TLS, None, Proto::H1, call().header("x-road-client", DINKES)).await.unwrap();
    let message = assert_gateway_error(&reply, 401, "Client.Unauthenticated");
    assert!(message.contains(DINKES) && message.contains("not opted in"), "{message}");
    assert_ne!(reply.header("x-road-client"), Some(DINKES));
    let rec = region.record(reply.exchange_id()).await;
    assert_eq!((rec.client.as_str(), rec.status), ("", 401), "the named client is not logged as the caller");
    assert_eq!(rec.error_type, "Client.Unauthenticated");

    // Without the header nobody is named.
    let reply = region.call_on(INTRANET_TLS, None, Proto::H2, call()).await.unwrap();
    let message = assert_gateway_error(&reply, 401, "Client.Unauthenticated");
    assert!(message.contains("X-Road-Client"), "{message}");
    let rec = region.record(reply.exchange_id()).await;
    assert_eq!((rec.client.as_str(), rec.status, rec.error_type.as_str()), ("", 401, "Client.Unauthenticated"));

    // A client with a valid certificate on the same listener is identified by it (mTLS)…
    let dinkes = pki.client(DINKES);
    let reply = region.call_on(INTRANET_TLS, Some(&dinkes), Proto::H1, call()).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("x-road-client"), Some(DINKES));
    let rec = region.record(reply.exchange_id()).await;
    assert_eq!((rec.client.as_str(), rec.status), (DINKES, 200));
    assert_eq!(rec.connection_type(), ConnectionType::Mtls);
    assert_eq!(rec.client_cert_sha256, dinkes.sha256());
    assert_eq!(upstream.received().len(), 3);
    assert_eq!(upstream.received()[2].header("x-road-client"), Some(DINKES));

    // …and may not name someone else, not even the client opted in here.
    let reply =
        region.call_on(INTRANET_TLS, Some(&dinkes), Proto::H2, call().header("x-road-client", SIMPEG)).await.unwrap();
    let message = assert_gateway_error(&reply, 403, "Client.InvalidClientIdentity");
    assert!(message.contains(DINKES) && message.contains(SIMPEG), "{message}");
    assert_ne!(reply.header("x-road-client"), Some(SIMPEG));
    let rec = region.record(reply.exchange_id()).await;
    assert_ne!(rec.client, SIMPEG, "the named client is never logged as the caller");
    assert_eq!((rec.status, rec.error_type.as_str()), (403, "Client.InvalidClientIdentity"));

    // A certificate, when presented, must still verify: an untrusted one fails the handshake.
    let stranger = pki.untrusted_client(SIMPEG);
    let result = region.call_on(INTRANET_TLS, Some(&stranger), Proto::H1, call().header("x-road-client", SIMPEG)).await;
    assert!(result.is_err(), "{:?}", result.map(|r| r.status));
    // The opt-in holds on its own listener only: the mTLS listener asks it for a certificate.
    let reply = region.call_on(PUBLIC, None, Proto::H1, call().header("x-road-client", SIMPEG)).await.unwrap();
    let message = assert_gateway_error(&reply, 401, "Client.Unauthenticated");
    assert!(message.contains("no client certificate was presented"), "{message}");
    let rec = region.record(reply.exchange_id()).await;
    assert_eq!((rec.client.as_str(), rec.connection_type()), ("", ConnectionType::Tls));

    assert_eq!(upstream.received().len(), 3);
    assert_eq!(region.records().len(), 7, "{:#?}", region.records());
}

// ---------------------------------------------------------------------------------------------
// Trace context
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_passes_through_untouched_and_names_the_trace_in_the_record() {
    let Setup { region, upstream, pki } = setup("").await;
    let dinkes = pki.client(DINKES);

    let call = Call::get(target(SERVICE, "/json/x"))
        .header("traceparent", TRACEPARENT)
        .header("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    let reply = region.call(Some(&dinkes), Proto::H1, call).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let got = &upstream.received()[0];
    assert_eq!(got.header("traceparent"), Some(TRACEPARENT));
    assert_eq!(got.headers.get_all("traceparent").iter().count(), 1);
    assert_eq!(got.header("tracestate"), Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"));
    let rec = region.record(reply.exchange_id()).await;
    assert_eq!(rec.trace_id, unhex(TRACE_ID), "{rec:#?}");

    // Malformed ones pass through all the same, and name no trace.
    let malformed = [
        // A trace id one byte short.
        "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        // The all-zero trace id, invalid by the specification.
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        // Version ff is forbidden.
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        // Not hex.
        "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
        "not a traceparent",
    ];
    for (i, value) in malformed.into_iter().enumerate() {
        let proto = if i % 2 == 0 { Proto::H2 } else { Proto::H1 };
        let call = Call::get(target(SERVICE, "/json/x")).header("traceparent", value);
        let reply = region.call(Some(&dinkes), proto, call).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{value}: {}", reply.text());
        let received = upstream.received();
        assert_eq!(received.len(), i + 2);
        assert_eq!(received[i + 1].header("traceparent"), Some(value), "passed through untouched");
        let rec = region.record(reply.exchange_id()).await;
        assert!(rec.trace_id.is_empty(), "{value}: {rec:#?}");
    }

    // Without a traceparent there is no trace id either.
    let reply = region.call(Some(&dinkes), Proto::H1, Call::get(target(SERVICE, "/json/x"))).await.unwrap();
    assert!(upstream.received().last().unwrap().header("traceparent").is_none());
    assert!(region.record(reply.exchange_id()).await.trace_id.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Audit: the answer waits for its record; a failing log refuses calls
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_sync_mode_an_answer_is_complete_only_once_its_record_is_in_the_log() {
    // The gateway's default is async; the service asks for sync.
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let region = RegionBuilder::new(&pki)
        .service(SERVICE, &upstream.url(), "audit = \"sync\"")
        .grant(&grant_all(SERVICE, DINKES))
        .toml("[audit]\nmode = \"async\"")
        .start()
        .await;
    let dinkes = pki.client(DINKES);
    let body = Bytes::from_static(b"{\"nama\":\"Budi\"}");
    let n = 300 * 1024;
    let calls = [
        // A sized answer, a streamed one without Content-Length, an echoed one, none at all.
        (Proto::H1, Call::get(target(SERVICE, "/json/x")), FIXED_JSON.as_bytes().to_vec()),
        (Proto::H2, Call::get(target(SERVICE, "/json/x")), FIXED_JSON.as_bytes().to_vec()),
        (Proto::H1, Call::get(target(SERVICE, &format!("/large/{n}"))), large_body(n)),
        (Proto::H2, Call::get(target(SERVICE, &format!("/large/{n}"))), large_body(n)),
        (Proto::H2, Call::post(target(SERVICE, "/echo/x"), body.clone()), body.to_vec()),
        (Proto::H1, Call::get(target(SERVICE, "/empty")), Vec::new()),
    ];
    for (i, (proto, call, expected)) in calls.into_iter().enumerate() {
        let what = format!("{proto:?} {}", call.target);
        // `call` returns once the whole body has been read.
        let reply = region.call(Some(&dinkes), proto, call).await.unwrap();
        assert!(reply.status.is_success(), "{what}: {}", reply.text());
        assert!(reply.body == expected, "{what}: {} bytes", reply.body.len());
        // No waiting: the record is there by the time the answer is.
        let appended = region.audit().appended();
        let mine: Vec<_> = appended.iter().filter(|(r, _)| r.exchange_id == reply.exchange_id()).collect();
        assert_eq!(mine.len(), 1, "{what}: the record is in the log when the answer is complete: {appended:#?}");
        let (rec, mode) = mine[0];
        assert_eq!(*mode, AuditMode::Sync, "{what}: appended in the service's mode");
        assert_eq!((rec.client.as_str(), rec.service.as_str()), (DINKES, SERVICE));
        assert_eq!(rec.status, u32::from(reply.status.as_u16()));
        assert_eq!(rec.response_body_bytes, expected.len() as u64, "{what}: the record counts the whole answer");
        assert_eq!(appended.len(), i + 1);
    }
    assert_eq!(upstream.received().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_audit_log_refuses_calls_before_anything_reaches_the_upstream() {
    let Setup { region, upstream, pki } = setup("audit = \"sync\"").await;
    let dinkes = pki.client(DINKES);
    let call = || Call::post(target(SERVICE, "/echo/x?nik=1"), "{\"nama\":\"Budi\"}");

    let ok = region.call(Some(&dinkes), Proto::H1, call()).await.unwrap();
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    assert_eq!(upstream.received().len(), 1);
    assert_eq!(region.records().len(), 1);

    region.audit().set_failing(true);
    for proto in [Proto::H1, Proto::H2] {
        let reply = region.call(Some(&dinkes), proto, call()).await.unwrap();
        let message = assert_gateway_error(&reply, 503, "Server.AuditUnavailable");
        assert!(message.contains("audit"), "{message}");
        assert_eq!(upstream.received().len(), 1, "{proto:?}: a call reached the service while the log was down");
    }
    // A call that would be refused anyway is answered with the log's failure too: no answer
    // leaves without its record.
    let bappeda = pki.client(BAPPEDA);
    let reply = region.call(Some(&bappeda), Proto::H1, call()).await.unwrap();
    assert_gateway_error(&reply, 503, "Server.AuditUnavailable");
    let reply = region.call_on(INTRANET_TLS, None, Proto::H1, call().header("x-road-client", SIMPEG)).await.unwrap();
    assert_gateway_error(&reply, 503, "Server.AuditUnavailable");
    assert_eq!(upstream.received().len(), 1);
    assert_eq!(region.records().len(), 1, "the failing log took nothing");

    // Once the log takes records again, so does the gateway take calls.
    region.audit().set_failing(false);
    let reply = region.call(Some(&dinkes), Proto::H2, call()).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(upstream.received().len(), 2);
    assert!(region.records().iter().any(|r| r.exchange_id == reply.exchange_id()));
}

/// A region whose intranet listener takes SIMPEG in plain HTTP, `before` done to it, and a GET
/// of `path` of the service sent on a raw connection, for a test to read the answer byte by byte.
async fn intranet_call(path: &str, before: &dyn Fn(&Region)) -> (Region, Upstream, tokio::net::TcpStream) {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let region = RegionBuilder::new(&pki)
        .http_listener("intranet", &[SIMPEG])
        .service(SERVICE, &upstream.url(), "")
        .grant(&grant_all(SERVICE, SIMPEG))
        .start()
        .await;
    before(&region);
    let mut tcp = tokio::net::TcpStream::connect(region.addr("intranet")).await.unwrap();
    let request = format!("GET {} HTTP/1.1\r\nhost: gw\r\nx-road-client: {SIMPEG}\r\n\r\n", target(SERVICE, path));
    tcp.write_all(request.as_bytes()).await.unwrap();
    (region, upstream, tcp)
}

/// A service that answers in HTTP/1.0 (`python3 -m http.server`, say): its answers reach an
/// HTTP/1.1 client as HTTP/1.1, on a connection kept open for the next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_0_service_answers_an_http_1_1_client_in_http_1_1_on_a_kept_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    if tcp.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let _ =
                    tcp.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok").await;
            });
        }
    });
    let pki = Pki::new();
    let region = RegionBuilder::new(&pki)
        .http_listener("intranet", &[SIMPEG])
        .service(SERVICE, &format!("http://{addr}"), "")
        .grant(&grant_all(SERVICE, SIMPEG))
        .start()
        .await;
    let mut tcp = tokio::net::TcpStream::connect(region.addr("intranet")).await.unwrap();
    for n in 0..2 {
        let request = format!("GET {} HTTP/1.1\r\nhost: gw\r\nx-road-client: {SIMPEG}\r\n\r\n", target(SERVICE, "/x"));
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        while !answer.ends_with(b"\r\n\r\nok") {
            let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_buf(&mut answer)).await;
            let read =
                read.unwrap_or_else(|_| panic!("call {n}: no whole answer: {}", String::from_utf8_lossy(&answer)));
            assert!(read.unwrap() > 0, "call {n}: the connection was closed: {}", String::from_utf8_lossy(&answer));
        }
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200"), "call {n}: {text}");
        assert!(!text.to_ascii_lowercase().contains("connection: close"), "call {n}: {text}");
    }
    region.stop().await;
}

/// A small answer is waited for whole, but not for ever: a service that stalls after its head
/// still has the head reach the client within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_answer_whose_body_stalls_has_its_head_released() {
    let (region, _upstream, mut tcp) = intranet_call("/late/4000", &|_| {}).await;
    // The body comes four seconds after the head; the head is let go after one.
    let mut answer = Vec::new();
    let head = tokio::time::timeout(Duration::from_millis(3000), tcp.read_buf(&mut answer)).await;
    assert!(head.is_ok(), "nothing reached the client while the service stalled");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!text.ends_with("late"), "the body was not there yet: {text}");
    region.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_answer_leaves_whole_and_only_once_its_record_is_durable() {
    // The log takes the record but is slow to make it durable.
    let (region, _upstream, mut tcp) = intranet_call("/json/x", &|region| region.audit().hold()).await;
    assert_eq!(region.wait_records(1).await.len(), 1);
    // The service has answered and the record is in the log, but not durable: not a byte of
    // the answer, not even its head, reaches the client.
    let mut answer = Vec::new();
    let early = tokio::time::timeout(Duration::from_millis(300), tcp.read_buf(&mut answer)).await;
    assert!(early.is_err(), "{:?} left before the record was durable", String::from_utf8_lossy(&answer));

    region.audit().release();
    let text = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read_buf(&mut answer)).await.unwrap().unwrap();
        assert!(n > 0, "the connection closed before the whole answer came");
        let text = String::from_utf8_lossy(&answer).into_owned();
        if text.ends_with(FIXED_JSON) {
            break text;
        }
    };
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    region.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_whose_record_cannot_be_logged_is_refused_whole() {
    let Setup { region, upstream, pki } = setup("").await;
    let dinkes = pki.client(DINKES);
    // An answer of known length; one whose head comes at once and its body later (small, by
    // its length: waited for whole, so that nothing of it has left when its record fails).
    let paths = ["/slow/300/x", "/late/300"];
    let calls = paths.iter().flat_map(|path| [Proto::H1, Proto::H2].map(|proto| (*path, proto)));
    for (n, (path, proto)) in (1..).zip(calls) {
        // The log breaks while the service works on the call: its record cannot be written, so
        // the client gets the log's failure instead of an answer that was not logged.
        let call = region.call(Some(&dinkes), proto, Call::get(target(SERVICE, path)));
        let breaking = async {
            upstream.wait_received(n).await;
            region.audit().set_failing(true);
        };
        let (reply, ()) = tokio::join!(call, breaking);
        let reply = reply.unwrap_or_else(|e| panic!("{path} {proto:?}: the answer broke off: {e}"));
        let message = assert_gateway_error(&reply, 503, "Server.AuditUnavailable");
        assert!(message.contains("could not be logged"), "{path} {proto:?}: {message}");
        region.audit().set_failing(false);
    }
    assert!(region.records().is_empty(), "{:?}", region.records());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_makes_the_request_record_durable_before_the_service_sees_the_call() {
    let Setup { region, upstream, pki } = setup("audit = \"strict\"").await;
    let dinkes = pki.client(DINKES);
    // The service holds its answer for a while, so the log can be read mid-exchange.
    let call = region.call(Some(&dinkes), Proto::H1, Call::get(target(SERVICE, "/slow/1500?nik=1")));
    let mid_exchange = async {
        let received = upstream.wait_received(1).await;
        (received, region.audit().appended())
    };
    let (reply, (received, then)) = tokio::join!(call, mid_exchange);
    let reply = reply.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(received.len(), 1);
    let id = reply.exchange_id();
    assert_eq!(received[0].header("x-road-id"), Some(id));

    // When the service had the call, its request record was already in the log.
    assert_eq!(then.len(), 1, "exactly the request record while the call was with the service: {then:#?}");
    let (request, mode) = &then[0];
    assert_eq!(*mode, AuditMode::Strict);
    assert_eq!(request.kind(), RecordKind::Request);
    assert_eq!(request.exchange_id, id);
    assert_eq!((request.client.as_str(), request.service.as_str()), (DINKES, SERVICE));
    assert_eq!((request.method.as_str(), request.path.as_str()), ("GET", format!("/r1/{SERVICE}/slow/1500").as_str()));
    assert_eq!(request.query_sha256.len(), 32, "the query is recorded as its hash");
    assert_eq!((request.status, request.forwarded_at_unix_nanos, request.responded_at_unix_nanos), (0, 0, 0));

    // Then the exchange's own record, with the same id, in the same mode.
    let all = region.audit().appended();
    assert_eq!(all.len(), 2, "{all:#?}");
    let (exchange, mode) = &all[1];
    assert_eq!(*mode, AuditMode::Strict);
    assert_eq!(exchange.kind(), RecordKind::Exchange);
    assert_eq!(exchange.exchange_id, id);
    assert_eq!(exchange.status, 200);
    assert!(exchange.forwarded_at_unix_nanos >= request.received_at_unix_nanos);
    assert_eq!(region.record(id).await.status, 200, "one exchange record per exchange");
}
