//! The operators' listener end to end: a real gateway with `[admin]`, reached over mTLS by
//! operators holding admin certificates of the region CA; who is let in, the metrics of real
//! exchanges against their audit records, readiness as the audit log fails and recovers, and
//! maintenance mode, which takes the gateway out of rotation without refusing anyone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use http::{Method, StatusCode};
use splpd_proto::v1::RecordKind;
use splpd_tests::{Call, ClientCert, Pki, Proto, Region, RegionBuilder, Upstream, closed_port};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const NIK: &str = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify";
const DOWN: &str = "ID/PEMDA/1602/DISDUKCAPIL/down";
/// Logged in `strict` mode: a request record before forwarding, then the exchange's.
const STRICT: &str = "ID/PEMDA/1602/DISDUKCAPIL/strict";
const RSUD: &str = "ID/PEMDA/1602/RSUD";
const DISHUB: &str = "ID/PEMDA/1602/DISHUB";
const DINKES: &str = "ID/PEMDA/1602/DINKES";
const BUDI: &str = "ID/PEMDA/1602/budi";
const SITI: &str = "ID/PEMDA/1602/siti";
/// A scraper's certificate: it may read, and change nothing.
const PROMETHEUS: &str = "ID/PEMDA/1602/prometheus";

struct Setup {
    region: Region,
    pki: Pki,
    upstream: Upstream,
}

async fn setup() -> Setup {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let down = format!("http://{}", closed_port().await);
    let region = RegionBuilder::new(&pki)
        .service(NIK, &upstream.url(), "")
        .service(DOWN, &down, "connect_timeout = \"1s\"")
        .service(STRICT, &upstream.url(), "audit = \"strict\"")
        .grant(&format!("service = \"{NIK}\"\nclient = \"{RSUD}\""))
        .grant(&format!("service = \"{STRICT}\"\nclient = \"{RSUD}\""))
        .grant(&format!("service = \"{DOWN}\"\nclient = \"{RSUD}\""))
        .toml(&format!(
            "[admin]\naddress = \"127.0.0.1:0\"\noperators = [\"{BUDI}\", \"{SITI}\"]\nviewers = [\"{PROMETHEUS}\"]"
        ))
        .start()
        .await;
    Setup { region, pki, upstream }
}

async fn admin(region: &Region, cert: &ClientCert, method: Method, path: &str) -> splpd_tests::Reply {
    region.call_admin(Some(cert), Call::new(method, path)).await.unwrap()
}

/// The samples of one metric: each sample's labels, and its value.
fn samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (head, value) = line.rsplit_once(' ')?;
            let (metric, labels) = match head.split_once('{') {
                Some((m, rest)) => (m, rest.strip_suffix('}')?),
                None => (head, ""),
            };
            if metric != name {
                return None;
            }
            let labels = labels
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once("=\"").expect("label");
                    (k.to_owned(), v.trim_end_matches('"').to_owned())
                })
                .collect();
            Some((labels, value.parse().expect("a number")))
        })
        .collect()
}

/// The value of the sample of `name` whose labels include `labels`, summed over the others.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text, name)
        .into_iter()
        .filter(|(have, _)| labels.iter().all(|(k, v)| have.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, v)| v)
        .sum()
}

async fn metrics(s: &Setup) -> String {
    let reply = admin(&s.region, &s.pki.admin(BUDI), Method::GET, "/metrics").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(reply.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"), "{reply:?}");
    reply.text()
}

#[tokio::test]
async fn the_admin_listener_lets_in_the_operators_of_the_gateways_member_only() {
    let logs = splpd_tests::logs::Logs::capture();
    let s = setup().await;
    let budi = s.pki.admin(BUDI);
    let reply = admin(&s.region, &budi, Method::GET, "/healthz").await;
    assert_eq!((reply.status, reply.text().as_str()), (StatusCode::OK, "ok\n"));
    assert_eq!(admin(&s.region, &s.pki.admin(SITI), Method::GET, "/healthz").await.status, StatusCode::OK);

    // An operator of the member who is not on the list, an agency's certificate, and an
    // operator of the neighbouring region: each refused, saying why.
    let refusals = [
        (s.pki.admin("ID/PEMDA/1602/joko"), "not among [admin] operators"),
        (s.pki.client(RSUD), "admin certificates only"),
        (s.pki.peer_admin("ID/PEMDA/1601/andi"), "is an operator of ID/PEMDA/1601, not of ID/PEMDA/1602"),
    ];
    for (cert, why) in &refusals {
        let reply = admin(&s.region, cert, Method::GET, "/metrics").await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}: {}", cert.identity, reply.text());
        assert_eq!(reply.json()["type"], "Client.AccessDenied");
        assert!(reply.json()["message"].as_str().unwrap().contains(why), "{}: {}", cert.identity, reply.text());
    }
    // Each refusal is logged; at `warn` once a minute per address, so that asking again and again
    // does not flood the log (the neighbour's operator came third from the same address).
    let andi = logs.lines_with("is an operator of ID/PEMDA/1601, not of ID/PEMDA/1602").await;
    assert!(andi.len() == 1 && andi[0].contains(" INFO "), "{andi:#?}");
    let joko = logs.lines_with("ID/PEMDA/1602/joko is not among [admin] operators").await;
    assert!(joko.len() == 1 && joko[0].contains(" WARN "), "the first, at warn: {joko:#?}");
    // A viewer reads the state, and nothing else: no change, not the configuration.
    let scraper = s.pki.admin(PROMETHEUS);
    for path in ["/metrics", "/healthz", "/readyz", "/maintenance", "/"] {
        let reply = admin(&s.region, &scraper, Method::GET, path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
    }
    for (method, path) in [(Method::POST, "/maintenance/on"), (Method::GET, "/config"), (Method::PUT, "/config")] {
        let reply = admin(&s.region, &scraper, method.clone(), path).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {path}: {}", reply.text());
        assert!(reply.json()["message"].as_str().unwrap().contains("[admin] viewers, which may only read"));
    }
    assert_eq!(admin(&s.region, &budi, Method::GET, "/maintenance").await.json()["maintenance"], false);

    // Without a certificate there is no TLS session at all.
    assert!(s.region.call_admin(None, Call::get("/healthz")).await.is_err());

    let reply = admin(&s.region, &budi, Method::GET, "/nope").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.text().contains("/readyz") && reply.text().contains("/maintenance/on"), "{}", reply.text());
    let reply = admin(&s.region, &budi, Method::POST, "/metrics").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("GET"));
    let reply = admin(&s.region, &budi, Method::GET, "/maintenance/on").await;
    assert_eq!((reply.status, reply.header("allow")), (StatusCode::METHOD_NOT_ALLOWED, Some("POST")));

    // Reading leaves the audit log alone; the viewer's refused changes are in it, each with
    // the certificate that tried it.
    let refused: Vec<_> = s.region.records().iter().map(|r| (r.method.clone(), r.path.clone(), r.status)).collect();
    let expected = [("POST", "/maintenance/on", 403), ("PUT", "/config", 403)];
    assert_eq!(refused, expected.map(|(m, p, c)| (m.to_owned(), p.to_owned(), c)), "{:#?}", s.region.records());
    for record in s.region.records() {
        assert_eq!((record.client.as_str(), record.error_type.as_str()), (PROMETHEUS, "Client.AccessDenied"));
        assert_eq!(record.client_cert_sha256.len(), 32);
    }
    // An operator's certificate on the exchange listener is refused there, and recorded under
    // the operator, whom a search by client then finds.
    let reply = s.region.call(Some(&budi), Proto::H1, Call::get(format!("/r1/{NIK}/json/a"))).await.unwrap();
    assert_eq!((reply.status, reply.xroad_error()), (StatusCode::FORBIDDEN, Some("Client.AccessDenied")));
    assert_eq!(s.region.record(reply.exchange_id()).await.client, BUDI);
    s.region.stop().await;
}

#[tokio::test]
async fn metrics_count_each_exchange_as_its_audit_record_has_it() {
    let s = setup().await;
    let (rsud, dishub) = (s.pki.client(RSUD), s.pki.client(DISHUB));
    for i in 0..3 {
        let reply = s.region.call(Some(&rsud), Proto::H1, Call::get(format!("/r1/{NIK}/json/{i}"))).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    let reply = s.region.call(Some(&rsud), Proto::H2, Call::get(format!("/r1/{NIK}/status/404"))).await.unwrap();
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = s.region.call(Some(&dishub), Proto::H1, Call::get(format!("/r1/{NIK}/json/x"))).await.unwrap();
    assert_eq!(reply.xroad_error(), Some("Client.AccessDenied"));
    let reply = s.region.call(Some(&rsud), Proto::H1, Call::get(format!("/r1/{DOWN}/json/x"))).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    let reply = s.region.call(Some(&rsud), Proto::H1, Call::get(format!("/r1/{STRICT}/json/x"))).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    // A service nobody configured: counted, but under no service label of its own.
    let invented = "ID/PEMDA/1602/DISDUKCAPIL/invented-by-a-client";
    let reply = s.region.call(Some(&rsud), Proto::H1, Call::get(format!("/r1/{invented}/x"))).await.unwrap();
    assert_eq!(reply.xroad_error(), Some("Client.UnknownService"));

    let text = metrics(&s).await;
    let nik = [("service", NIK), ("peer", "")];
    let with = |extra: (&'static str, &'static str)| [nik[0], nik[1], extra];
    assert_eq!(value(&text, "splpd_exchanges_total", &with(("code", "200"))), 3.0, "{text}");
    assert_eq!(value(&text, "splpd_exchanges_total", &with(("code", "404"))), 1.0, "{text}");
    assert_eq!(value(&text, "splpd_exchanges_total", &with(("code", "403"))), 1.0, "{text}");
    assert_eq!(value(&text, "splpd_exchange_errors_total", &with(("type", "Client.AccessDenied"))), 1.0, "{text}");
    let down = [("service", DOWN), ("type", "Server.ServerProxy.ServiceFailed")];
    assert_eq!(value(&text, "splpd_exchange_errors_total", &down), 1.0, "{text}");
    let unrouted = [("service", ""), ("peer", ""), ("type", "Client.UnknownService")];
    assert_eq!(value(&text, "splpd_exchange_errors_total", &unrouted), 1.0, "{text}");
    assert!(!text.contains("invented-by-a-client"), "{text}");

    // The histogram: every one of NIK's five exchanges took under a minute, and the four that
    // reached the upstream have an upstream time too.
    assert_eq!(value(&text, "splpd_exchange_duration_seconds_count", &nik), 5.0, "{text}");
    assert_eq!(value(&text, "splpd_exchange_duration_seconds_bucket", &with(("le", "+Inf"))), 5.0, "{text}");
    assert_eq!(value(&text, "splpd_exchange_duration_seconds_bucket", &with(("le", "60"))), 5.0, "{text}");
    assert!(value(&text, "splpd_exchange_duration_seconds_sum", &nik) > 0.0, "{text}");
    assert_eq!(value(&text, "splpd_upstream_duration_seconds_count", &nik), 4.0, "{text}");

    // A strict exchange counts once, although it left two records.
    assert_eq!(value(&text, "splpd_exchanges_total", &[("service", STRICT)]), 1.0, "{text}");
    let strict_records = s.region.records().into_iter().filter(|r| r.service == STRICT).count();
    assert_eq!(strict_records, 2);

    // The figures and the log agree: as many exchanges counted as exchange records.
    let records = s.region.records().into_iter().filter(|r| r.kind() == RecordKind::Exchange).count();
    assert_eq!(value(&text, "splpd_exchanges_total", &[]), records as f64, "{text}");

    // The gateway's state beside them.
    assert_eq!(value(&text, "splpd_audit_available", &[]), 1.0);
    assert_eq!(value(&text, "splpd_maintenance", &[]), 0.0);
    let endpoint = s.upstream.url();
    let up = [("service", NIK), ("endpoint", endpoint.as_str())];
    assert_eq!(value(&text, "splpd_upstream_endpoint_up", &up), 1.0, "{text}");
    assert_eq!(samples(&text, "splpd_listener_connections").len(), 1, "{text}");
    assert_eq!(samples(&text, "splpd_build_info")[0].0["gateway"], "ID/PEMDA/1602/gw1");
    s.region.stop().await;
}

/// A CRL past its next update refuses every certificate of its CA on the exchange listeners.
/// Operators still reach the admin listener, which says so: `/readyz` names the CRL and what to
/// do, and `/metrics` has every CRL's next update for an alert before it comes to that.
#[tokio::test]
async fn an_expired_crl_makes_the_gateway_unready_and_operators_can_still_see_why() {
    let s = setup().await;
    let metrics_text = metrics(&s).await;
    let next = samples(&metrics_text, "splpd_crl_next_update_timestamp_seconds");
    let region_crl = next.iter().find(|(labels, _)| labels["anchor"] == "region").expect("the region's CRL");
    let in_days = (region_crl.1 - time::OffsetDateTime::now_utc().unix_timestamp() as f64) / 86_400.0;
    assert!(in_days > 7.0 && in_days <= 31.0, "the test PKI's CRL is fresh: next update in {in_days} days");
    // The gateway's certificate's end, for an alert before agencies refuse it.
    let cert_end = samples(&metrics_text, "splpd_gateway_certificate_expiry_timestamp_seconds");
    let cert_days = (cert_end[0].1 - time::OffsetDateTime::now_utc().unix_timestamp() as f64) / 86_400.0;
    assert!(cert_days > 30.0, "the test PKI's gateway certificate is fresh: {cert_days} days left");
    // Each trust anchor's CA's end: the region's, ten years off.
    let ca_end = samples(&metrics_text, "splpd_trust_anchor_ca_expiry_timestamp_seconds");
    let region_ca = ca_end.iter().find(|(labels, _)| labels["anchor"] == "region").expect("the region's CA");
    let ca_days = (region_ca.1 - time::OffsetDateTime::now_utc().unix_timestamp() as f64) / 86_400.0;
    assert!(ca_days > 180.0 && region_ca.0["ca"].contains("CA"), "{region_ca:?}, {ca_days} days left");
    s.region.stop().await;

    let pki = s.pki;
    let start = || {
        RegionBuilder::new(&pki)
            .service(NIK, &s.upstream.url(), "")
            .grant(&format!("service = \"{NIK}\"\nclient = \"{RSUD}\""))
            .toml(&format!("[admin]\naddress = \"127.0.0.1:0\"\noperators = [\"{BUDI}\"]"))
            .start()
    };
    let three_days_ago = time::OffsetDateTime::now_utc() - time::Duration::days(3);

    // The neighbouring region's CRL expired: its calls are refused, but the gateway serves its
    // own region and stays ready.
    pki.peer().crl(1, three_days_ago).unwrap();
    let region = start().await;
    let reply = admin(&region, &pki.admin(BUDI), Method::GET, "/readyz").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    region.stop().await;

    // The region's own CRL reaching its next update in five days: still ready, with a note.
    pki.region().crl(5, time::OffsetDateTime::now_utc()).unwrap();
    let region = start().await;
    let reply = admin(&region, &pki.admin(BUDI), Method::GET, "/readyz").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let notes = reply.json()["notes"].as_array().cloned().unwrap_or_default();
    assert!(notes.iter().any(|n| n.as_str().unwrap_or_default().contains("splpd certs crl")), "{}", reply.text());
    // The dashboard says it too, under the verdict.
    let page = admin(&region, &pki.admin(BUDI), Method::GET, "/?lang=en").await.text();
    let ready = page.find(">Ready<").expect("ready");
    let attention = page.find("Needs attention:").expect("the notes are shown");
    assert!(ready < attention && page[attention..].contains("splpd certs crl"), "{page}");
    region.stop().await;

    // The region's own CRL signed three days ago for one day.
    pki.region().crl(1, three_days_ago).unwrap();
    let region = start().await;
    let refused = region.call(Some(&pki.client(RSUD)), Proto::H1, Call::get(format!("/r1/{NIK}/x"))).await;
    assert!(refused.is_err(), "the exchange listener refuses the CA's certificates: {:?}", refused.map(|r| r.status));
    let reply = admin(&region, &pki.admin(BUDI), Method::GET, "/readyz").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.text());
    let reason = reply.json()["reasons"][0].as_str().unwrap().to_owned();
    assert!(reason.contains("passed its next update") && reason.contains("splpd certs crl"), "{reason}");
    region.stop().await;
}

/// A CA without scopes (BSrE) vouches only through `[[identity]]` mappings. When it maps one
/// of this region's agencies, its expired CRL stops that agency's calls, so the gateway is not
/// ready; when it maps only another region's gateway, the region is served and it stays ready.
#[tokio::test]
async fn an_expired_crl_of_a_ca_that_vouches_only_through_mappings_counts_when_it_maps_the_region() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let three_days_ago = time::OffsetDateTime::now_utc() - time::Duration::days(3);
    pki.outsider().crl(1, three_days_ago).unwrap();
    let mapped = pki.untrusted_client(DINKES);
    let fingerprint: Vec<String> = mapped.sha256().iter().map(|b| format!("{b:02X}")).collect();
    let start = |kind: &str, id: &str| {
        RegionBuilder::new(&pki)
            .service(NIK, &upstream.url(), "")
            .grant(&format!("service = \"{NIK}\"\nclient = \"{RSUD}\""))
            .toml(&format!(
                "[admin]\naddress = \"127.0.0.1:0\"\noperators = [\"{BUDI}\"]\n\n\
                 [[trust_anchor]]\nname = \"bsre\"\nca = \"{}\"\ncrls = [\"{}\"]\n\n\
                 [[identity]]\nfingerprint = \"sha256:{}\"\nkind = \"{kind}\"\nid = \"{id}\"\nanchor = \"bsre\"",
                pki.outsider_ca_cert().display(),
                pki.outsider_ca_cert().with_file_name("crl.pem").display(),
                fingerprint.join(":"),
            ))
            .start()
    };

    let region = start("server", "ID/PEMDA/1601/gw1").await;
    let reply = admin(&region, &pki.admin(BUDI), Method::GET, "/readyz").await;
    assert_eq!(reply.status, StatusCode::OK, "a mapping into another region only: {}", reply.text());
    region.stop().await;

    let region = start("subsystem", DINKES).await;
    let reply = admin(&region, &pki.admin(BUDI), Method::GET, "/readyz").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.text());
    let reason = reply.json()["reasons"][0].as_str().unwrap().to_owned();
    assert!(reason.contains("bsre") && reason.contains("passed its next update"), "{reason}");
    region.stop().await;
}

#[tokio::test]
async fn readiness_follows_the_audit_log_and_maintenance_mode_which_is_itself_logged() {
    let s = setup().await;
    let (budi, rsud) = (s.pki.admin(BUDI), s.pki.client(RSUD));
    let ready = |reply: &splpd_tests::Reply| (reply.status, reply.json()["ready"].as_bool().unwrap());
    assert_eq!(ready(&admin(&s.region, &budi, Method::GET, "/readyz").await), (StatusCode::OK, true));

    // The log fails: every exchange would be refused, so the gateway is not ready.
    s.region.audit().set_failing(true);
    let reply = admin(&s.region, &budi, Method::GET, "/readyz").await;
    assert_eq!(ready(&reply), (StatusCode::SERVICE_UNAVAILABLE, false));
    assert!(reply.json()["reasons"][0].as_str().unwrap().contains("audit log"), "{}", reply.text());
    assert_eq!(value(&metrics(&s).await, "splpd_audit_available", &[]), 0.0);
    // Nor can maintenance mode change while its change cannot be logged.
    let refused = admin(&s.region, &budi, Method::POST, "/maintenance/on").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{}", refused.text());
    assert_eq!(refused.json()["type"], "Server.AuditUnavailable");
    assert_eq!(admin(&s.region, &budi, Method::GET, "/maintenance").await.json()["maintenance"], false);
    s.region.audit().set_failing(false);
    assert_eq!(ready(&admin(&s.region, &budi, Method::GET, "/readyz").await), (StatusCode::OK, true));

    // Maintenance on, with the change's ticket as the reason.
    let on = Call::new(Method::POST, "/maintenance/on").header("x-road-issue", "CHG-9 kernel update");
    let reply = s.region.call_admin(Some(&budi), on).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!((reply.json()["maintenance"].as_bool(), reply.json()["by"].as_str()), (Some(true), Some(BUDI)));
    let reply = admin(&s.region, &budi, Method::GET, "/readyz").await;
    assert_eq!(ready(&reply), (StatusCode::SERVICE_UNAVAILABLE, false));
    let reason = reply.json()["reasons"][0].as_str().unwrap().to_owned();
    assert!(reason.contains("maintenance mode is on") && reason.contains(BUDI) && reason.contains("CHG-9"), "{reason}");
    // The gateway's gRPC health says so too, for gRPC-aware balancers; exchanges still work.
    let mut health = HealthClient::new(s.region.grpc_channel(Some(&rsud)).await);
    let status = health.check(HealthCheckRequest::default()).await.unwrap().into_inner().status;
    assert_eq!(status, ServingStatus::NotServing as i32);
    let call = s.region.call(Some(&rsud), Proto::H1, Call::get(format!("/r1/{NIK}/json/a"))).await.unwrap();
    assert_eq!(call.status, StatusCode::OK);
    assert_eq!(value(&metrics(&s).await, "splpd_maintenance", &[]), 1.0);

    // The change is in the audit log, by the operator's certificate.
    let changes: Vec<_> = s.region.records().into_iter().filter(|r| r.path.starts_with("/maintenance")).collect();
    assert_eq!(changes.len(), 1, "{changes:#?}");
    let change = &changes[0];
    assert_eq!(
        (change.client.as_str(), change.method.as_str(), change.path.as_str()),
        (BUDI, "POST", "/maintenance/on")
    );
    assert_eq!((change.status, change.issue.as_str()), (200, "CHG-9 kernel update"));
    assert_eq!(change.client_cert_sha256, budi.sha256().to_vec());
    assert_eq!(change.client_address, "127.0.0.1", "the operator's address");
    assert_eq!(
        s.region.audit().appended().iter().find(|(r, _)| r.path == "/maintenance/on").unwrap().1,
        splpd_gateway::audit::AuditMode::Sync
    );

    // Another operator ends it.
    let siti = s.pki.admin(SITI);
    let reply = admin(&s.region, &siti, Method::POST, "/maintenance/off").await;
    assert_eq!((reply.status, reply.json()["maintenance"].as_bool()), (StatusCode::OK, Some(false)));
    assert_eq!(ready(&admin(&s.region, &budi, Method::GET, "/readyz").await), (StatusCode::OK, true));
    let status = health.check(HealthCheckRequest::default()).await.unwrap().into_inner().status;
    assert_eq!(status, ServingStatus::Serving as i32);
    let off = s.region.records().into_iter().find(|r| r.path == "/maintenance/off").expect("the change is logged");
    assert_eq!(off.client, SITI);
    // An operator's change is in the log, but it is not an exchange: the counters leave it out.
    let text = metrics(&s).await;
    let exchanges = s.region.records().into_iter().filter(|r| !r.path.starts_with("/maintenance")).count();
    assert_eq!(value(&text, "splpd_exchanges_total", &[]), exchanges as f64, "{text}");
    s.region.stop().await;
}

#[tokio::test]
async fn the_dashboard_shows_operators_the_gateway_in_bahasa_indonesia_or_english() {
    let s = setup().await;
    let (budi, rsud) = (s.pki.admin(BUDI), s.pki.client(RSUD));
    let reply = s.region.call(Some(&rsud), Proto::H1, Call::get(format!("/r1/{NIK}/json/a"))).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);

    let page = admin(&s.region, &budi, Method::GET, "/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let html = page.text();
    assert!(html.contains("Siap melayani") && html.contains("Log audit"), "{html}");
    // NIK's row: one exchange, a 2xx, its median under a bucket bound.
    let row = html.lines().find(|l| l.contains(&format!("<td>{NIK}</td>"))).unwrap_or_else(|| panic!("{html}"));
    assert!(row.contains("<td class=\"num\">1</td><td class=\"num\">1</td>") && row.contains("≤ "), "{row}");
    assert!(html.contains(&s.upstream.url()), "the endpoint is listed: {html}");
    // Its services have no health_check: their endpoints are not called "up", since nothing
    // has looked (the unreachable one included, until calls to it fail).
    let rows: Vec<&str> = html.lines().filter(|l| l.contains(&s.upstream.url()) || l.contains("127.0.0.1:")).collect();
    assert!(rows.iter().any(|l| l.contains("tidak diperiksa (tanpa health_check")), "{rows:#?}");
    assert!(!rows.iter().any(|l| l.contains(">sehat<")), "{rows:#?}");

    let english = s.region.call_admin(Some(&budi), Call::get("/").header("accept-language", "en-GB,en;q=0.9")).await;
    let english = english.unwrap().text();
    assert!(english.contains("Ready") && english.contains("Exchanges since start"), "{english}");
    assert!(admin(&s.region, &budi, Method::GET, "/?lang=en").await.text().contains("Audit log"));

    // Maintenance shows, with the operator's words escaped.
    let on = Call::new(Method::POST, "/maintenance/on").header("x-road-issue", "<b>CHG-3</b> ganti disk");
    assert_eq!(s.region.call_admin(Some(&budi), on).await.unwrap().status, StatusCode::OK);
    let html = admin(&s.region, &budi, Method::GET, "/").await.text();
    assert!(html.contains("Tidak siap") && html.contains("Mode pemeliharaan aktif"), "{html}");
    assert!(html.contains("&lt;b&gt;CHG-3&lt;/b&gt; ganti disk") && !html.contains("<b>CHG-3"), "{html}");

    // An agency's certificate does not get the page.
    assert_eq!(admin(&s.region, &rsud, Method::GET, "/").await.status, StatusCode::FORBIDDEN);
    s.region.stop().await;
}

/// Refused changes go to the audit log, ten a minute per certificate: one the admin listener
/// accepts cannot fill the log with them, nor spend another's budget from the same address.
#[tokio::test]
async fn refused_changes_are_recorded_within_a_budget_per_certificate() {
    let s = setup().await;
    let rsud = s.pki.client(RSUD);
    for _ in 0..12 {
        let reply = admin(&s.region, &rsud, Method::POST, "/maintenance/on").await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
    }
    let records = s.region.records();
    assert_eq!(records.len(), 10, "{records:#?}");
    assert!(records.iter().all(|r| r.client == RSUD && r.status == 403 && r.path == "/maintenance/on"));
    // Another certificate from the same address is recorded all the same.
    let reply = admin(&s.region, &s.pki.admin("ID/PEMDA/1602/joko"), Method::POST, "/maintenance/on").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(s.region.records().last().map(|r| r.client.clone()), Some("ID/PEMDA/1602/joko".to_owned()));
    s.region.stop().await;
}

/// An operator's `http://` on the admin port is told to use https with an admin certificate,
/// in plain HTTP, instead of a TLS alert that curl shows as "Received HTTP/0.9".
#[tokio::test]
async fn plain_http_on_the_admin_port_is_told_to_use_https() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let s = setup().await;
    let mut tcp = tokio::net::TcpStream::connect(s.region.admin_addr()).await.unwrap();
    tcp.write_all(b"GET /readyz HTTP/1.1\r\nHost: gw\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("admin listener") && answer.contains("call https://"), "{answer}");
    // Operators still get in over TLS.
    let budi = s.pki.admin(BUDI);
    assert_eq!(admin(&s.region, &budi, Method::GET, "/healthz").await.status, StatusCode::OK);
    s.region.stop().await;
}

#[tokio::test]
async fn a_flood_of_connections_on_the_admin_port_is_capped_and_operators_get_in_once_it_ends() {
    use tokio::io::AsyncReadExt as _;
    let s = setup().await;
    let addr = s.region.admin_addr();
    // 64 connections that never start TLS hold every slot (each for up to its handshake timeout).
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // Time for the accept loop to take them all, on a busy machine too.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), extra.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "the 65th connection is closed at once: {read:?}");
    drop(held);
    let budi = s.pki.admin(BUDI);
    let mut status = None;
    for _ in 0..100 {
        if let Ok(reply) = s.region.call_admin(Some(&budi), Call::get("/healthz")).await {
            status = Some(reply.status);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, Some(StatusCode::OK));
    s.region.stop().await;
}

#[tokio::test]
async fn a_reload_changes_who_may_use_the_admin_listener() {
    let s = setup().await;
    let (budi, siti) = (s.pki.admin(BUDI), s.pki.admin(SITI));
    assert_eq!(admin(&s.region, &siti, Method::GET, "/healthz").await.status, StatusCode::OK);

    // Siti leaves the operators' list.
    let path = s.region.config_path().to_owned();
    let text = std::fs::read_to_string(&path).unwrap();
    let fewer =
        text.replacen(&format!("operators = [\"{BUDI}\", \"{SITI}\"]"), &format!("operators = [\"{BUDI}\"]"), 1);
    assert_ne!(fewer, text);
    std::fs::write(&path, fewer).unwrap();
    let reloader = splpd_gateway::reload::Reloader::new(&path, std::sync::Arc::clone(s.region.gateway()));
    reloader.reload().await.unwrap();

    let refused = admin(&s.region, &siti, Method::GET, "/healthz").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.text().contains("not among [admin] operators"), "{}", refused.text());
    assert_eq!(admin(&s.region, &budi, Method::GET, "/healthz").await.status, StatusCode::OK);
    // The reload itself is in the audit log; the gateway's counters for /metrics go on.
    assert_eq!(s.region.records().iter().filter(|r| r.method == "RELOAD").count(), 1);
    assert_eq!(value(&metrics(&s).await, "splpd_config_reloads_total", &[]), 1.0);
    s.region.stop().await;
}

/// A browser that holds an operator's certificate presents it for any page's request: a page of
/// another site must not be able to turn maintenance on (a cross-site request forgery). Tools
/// send no `Origin`, and a page of the admin listener itself may.
#[tokio::test]
async fn a_change_sent_by_a_page_of_another_site_is_refused() {
    let s = setup().await;
    let budi = s.pki.admin(BUDI);
    let own = format!("https://localhost:{}", s.region.admin_addr().port());
    for (header, value) in [("origin", "https://evil.example"), ("origin", "null"), ("sec-fetch-site", "cross-site")] {
        let forged = Call::new(Method::POST, "/maintenance/on").header(header, value);
        let reply = s.region.call_admin(Some(&budi), forged).await.unwrap();
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{header}: {value}: {}", reply.text());
        assert!(reply.json()["message"].as_str().unwrap().contains("sent by a web page"), "{}", reply.text());
        assert_eq!(admin(&s.region, &budi, Method::GET, "/maintenance").await.json()["maintenance"], false);
    }
    // Recorded as refused changes, under the operator whose certificate the browser presented.
    let refused: Vec<_> = s.region.records().into_iter().filter(|r| r.path == "/maintenance/on").collect();
    assert_eq!(refused.len(), 3, "{refused:#?}");
    assert!(refused.iter().all(|r| r.status == 403 && r.client == BUDI), "{refused:#?}");
    // Reading stays open to a browser, and a change from the listener's own origin is taken.
    let read = s.region.call_admin(Some(&budi), Call::get("/maintenance").header("origin", "https://evil.example"));
    assert_eq!(read.await.unwrap().status, StatusCode::OK);
    let own_page =
        Call::new(Method::POST, "/maintenance/on").header("origin", &own).header("sec-fetch-site", "same-origin");
    let reply = s.region.call_admin(Some(&budi), own_page).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    s.region.stop().await;
}

/// A certificate that identifies no one here (the neighbouring region's CA claiming one of our
/// operators) is refused, and its attempted change recorded by the certificate's fingerprint.
#[tokio::test]
async fn a_change_tried_with_a_certificate_that_identifies_no_one_is_recorded_by_its_fingerprint() {
    let s = setup().await;
    let forged = s.pki.rogue_peer_admin(BUDI);
    let reply = admin(&s.region, &forged, Method::POST, "/maintenance/on").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    let tried: Vec<_> = s.region.records().into_iter().filter(|r| r.path == "/maintenance/on").collect();
    assert_eq!(tried.len(), 1, "{tried:#?}");
    assert_eq!((tried[0].status, tried[0].client.as_str()), (403, ""), "{tried:#?}");
    assert_eq!(tried[0].client_cert_sha256, forged.sha256().to_vec());
    assert_eq!(admin(&s.region, &s.pki.admin(BUDI), Method::GET, "/maintenance").await.json()["maintenance"], false);
    s.region.stop().await;
}

/// One address holding admin connections open without a handshake cannot take every slot: past
/// a few per address its connections are closed, and an operator elsewhere still gets in.
#[tokio::test]
async fn one_address_cannot_hold_every_admin_slot() {
    use tokio::io::AsyncReadExt as _;
    let s = setup().await;
    let from = |ip: [u8; 4]| {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(std::net::SocketAddr::from((ip, 0))).unwrap();
        socket.connect(s.region.admin_addr())
    };
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(from([127, 0, 0, 2]).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // The ninth from that address is closed at once, unanswered.
    let mut ninth = from([127, 0, 0, 2]).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), ninth.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the ninth connection was kept: {read:?}");
    // An operator from another address is served meanwhile.
    let reply = admin(&s.region, &s.pki.admin(BUDI), Method::GET, "/healthz").await;
    assert_eq!(reply.status, StatusCode::OK);
    drop(held);
    s.region.stop().await;
}
