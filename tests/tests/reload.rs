//! Hot reload in process (docs/design.md, "Reload"): a new grant takes effect, an exchange in
//! flight finishes on the configuration it started with, a broken file is refused with its
//! position and the running configuration kept, changed listeners are refused, and `[audit]`
//! settings that only apply at start are reported; on stop, open exchanges are drained until
//! `drain_timeout`. `gateway/tests/cli_reload.rs` does the same to a real `splpd serve` under
//! load, by SIGHUP and by file change.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use splpd_gateway::reload::{ReloadError, Reloader};
use splpd_tests::{Call, PUBLIC, Pki, Proto, RegionBuilder, Upstream};

const SERVICE: &str = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify";
const DINKES: &str = "ID/PEMDA/1602/DINKES";
const RSUD: &str = "ID/PEMDA/1602/RSUD";

fn builder<'p>(pki: &'p Pki, upstream: &Upstream, grants: &[&str]) -> RegionBuilder<'p> {
    let mut b = RegionBuilder::new(pki).service(SERVICE, &upstream.url(), "");
    for client in grants {
        b = b.grant(&format!("service = \"{SERVICE}\"\nclient = \"{client}\""));
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_grants_for_new_exchanges_while_one_in_flight_finishes_on_its_own() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let region = builder(&pki, &upstream, &[DINKES]).start().await;
    let path = region.config_path().to_owned();
    let reloader = Reloader::new(&path, std::sync::Arc::clone(region.gateway()));
    let (dinkes, rsud) = (pki.client(DINKES), pki.client(RSUD));
    let slow = Call::get(format!("/r1/{SERVICE}/slow/3000"));
    let quick = || Call::get(format!("/r1/{SERVICE}/json/x"));

    assert_eq!(region.call(Some(&rsud), Proto::H1, quick()).await.unwrap().xroad_error(), Some("Client.AccessDenied"));

    // DINKES's slow call is under way when a configuration without its grant (and with one for
    // RSUD) is put in force.
    let in_flight = {
        let config = splpd_tests::client::tls_config(region.roots(), Some(&dinkes), Proto::H2);
        let addr = region.addr(splpd_tests::PUBLIC);
        tokio::spawn(splpd_tests::client::send_tls(addr, config, Proto::H2, slow))
    };
    upstream.wait_received(1).await;
    std::fs::write(&path, builder(&pki, &upstream, &[RSUD]).text()).unwrap();
    reloader.reload().await.unwrap();

    let finished = in_flight.await.unwrap().unwrap();
    assert_eq!(finished.status, StatusCode::OK, "the exchange in flight keeps the grant it started with");
    assert_eq!(region.call(Some(&rsud), Proto::H2, quick()).await.unwrap().status, StatusCode::OK);
    let refused = region.call(Some(&dinkes), Proto::H1, quick()).await.unwrap();
    assert_eq!(refused.xroad_error(), Some("Client.AccessDenied"));
    region.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_rate_limit_buckets_of_unchanged_limits() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let limited = |grants: &[&str]| {
        let mut b =
            RegionBuilder::new(&pki).service(SERVICE, &upstream.url(), "rate_limit = { per_second = 1, burst = 1 }");
        for client in grants {
            b = b.grant(&format!("service = \"{SERVICE}\"\nclient = \"{client}\""));
        }
        b
    };
    let region = limited(&[DINKES]).start().await;
    let path = region.config_path().to_owned();
    let reloader = Reloader::new(&path, std::sync::Arc::clone(region.gateway()));
    let dinkes = pki.client(DINKES);
    let call = || Call::get(format!("/r1/{SERVICE}/json/x"));

    let started = std::time::Instant::now();
    assert_eq!(region.call(Some(&dinkes), Proto::H1, call()).await.unwrap().status, StatusCode::OK);
    // An edit elsewhere in the file (a grant for RSUD) leaves the service's limit as it was.
    std::fs::write(&path, limited(&[DINKES, RSUD]).text()).unwrap();
    reloader.reload().await.unwrap();
    let after = region.call(Some(&dinkes), Proto::H1, call()).await.unwrap();
    assert!(started.elapsed() < std::time::Duration::from_millis(900), "too slow to test a 1/s limit");
    assert_eq!(after.status, StatusCode::TOO_MANY_REQUESTS, "the reload handed DINKES a fresh burst");

    // A changed limit starts with a full bucket of its own.
    let raised = limited(&[DINKES, RSUD]).text().replace("per_second = 1, burst = 1", "per_second = 1, burst = 5");
    std::fs::write(&path, raised).unwrap();
    reloader.reload().await.unwrap();
    assert_eq!(region.call(Some(&dinkes), Proto::H1, call()).await.unwrap().status, StatusCode::OK);
    region.stop().await;
}

/// A new key for the gateway goes into TLS at once, but not into the audit log, which signs its
/// checkpoints with the key it was opened with: the reload says so, for a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_gateway_key_is_reported_as_not_yet_signing_the_audit_log() {
    splpd_tests::logs::Logs::capture();
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let region = builder(&pki, &upstream, &[DINKES]).start().await;
    let reloader = std::sync::Arc::new(Reloader::new(region.config_path(), std::sync::Arc::clone(region.gateway())));
    region.gateway().attach_reloader(&reloader);
    assert!(!reloader.reload().await.unwrap().signing_key_changed, "the same key");
    let notes = || splpd_gateway::admin::Readiness::of(region.gateway()).notes;
    assert!(reloader.waiting_for_restart().is_empty() && notes().is_empty(), "{:?}", notes());

    let id = splpd_certs::id::Identity::parse(splpd_certs::id::IdKind::Server, "ID/PEMDA/1602/gw1").unwrap();
    let req = splpd_certs::pki::LeafRequest::new(id)
        .with_names(vec!["localhost".into()], vec![std::net::IpAddr::from([127, 0, 0, 1])]);
    let (cert, key) = (pki.dir().join("gw1.crt"), pki.dir().join("gw1.key"));
    let now = time::OffsetDateTime::now_utc();
    pki.region().issue(&req, splpd_certs::pki::KeyType::default(), &cert, &key, true, now).unwrap();
    assert!(reloader.reload().await.unwrap().signing_key_changed, "a new key");
    // Still so at the next reload, but the operator is warned once.
    assert!(reloader.reload().await.unwrap().signing_key_changed);
    let config = region.config_path().display().to_string();
    let warned = splpd_tests::logs::Logs::capture().lines_with(&config).await;
    let warnings =
        warned.iter().filter(|l| l.contains("the key that signs the audit log's checkpoints changed")).count();
    assert_eq!(warnings, 1, "{warned:#?}");
    // The renewed certificate is said once, by the reload that loaded it.
    let renewed = warned.iter().filter(|l| l.contains("loaded anew: the gateway's certificate")).count();
    assert_eq!(renewed, 1, "{warned:#?}");
    // Readiness keeps saying it, for as long as it lasts.
    let waiting = reloader.waiting_for_restart();
    assert!(waiting.len() == 1 && waiting[0].contains("until splpd is restarted"), "{waiting:?}");
    assert!(
        notes().iter().any(|n| n.contains("the key that signs the audit log's checkpoints changed")),
        "{:?}",
        notes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_or_unappliable_configuration_is_refused_and_the_running_one_kept() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let region = builder(&pki, &upstream, &[DINKES]).start().await;
    let path = region.config_path().to_owned();
    let good = builder(&pki, &upstream, &[DINKES]).text();
    let reloader = Reloader::new(&path, std::sync::Arc::clone(region.gateway()));
    let dinkes = pki.client(DINKES);
    let call = || Call::get(format!("/r1/{SERVICE}/json/x"));

    // A grant naming a service that does not exist: refused, with the line and column.
    let broken =
        good.replace(&format!("[[grant]]\nservice = \"{SERVICE}\""), "[[grant]]\nservice = \"ID/PEMDA/1602/X/nope\"");
    assert_ne!(broken, good);
    std::fs::write(&path, &broken).unwrap();
    let err = reloader.reload().await.unwrap_err();
    let line = broken.lines().position(|l| l.contains("X/nope")).unwrap() + 1;
    let at = format!("{}:{line}:", path.display());
    assert!(matches!(err, ReloadError::Config(_)), "{err:?}");
    assert!(err.to_string().contains(&at), "the error names {at}: {err}");
    assert_eq!(region.call(Some(&dinkes), Proto::H1, call()).await.unwrap().status, StatusCode::OK);

    // A listener added: listeners are bound at start, so the whole reload is refused.
    let more = format!("{good}\n[[listener]]\nname = \"extra\"\naddress = \"127.0.0.1:0\"\n");
    std::fs::write(&path, more).unwrap();
    let err = reloader.reload().await.unwrap_err();
    assert!(matches!(err, ReloadError::Listeners(_)), "{err:?}");
    assert!(err.to_string().contains("\"extra\"") && err.to_string().contains("restart"), "{err}");

    // So is an admin listener added after start.
    let admin = format!("{good}\n[admin]\naddress = \"127.0.0.1:0\"\n");
    std::fs::write(&path, admin).unwrap();
    let err = reloader.reload().await.unwrap_err();
    assert!(matches!(err, ReloadError::Listeners(_)), "{err:?}");
    assert!(err.to_string().contains("\"[admin]\" (127.0.0.1:0) was added"), "{err}");

    // A certificate file that cannot be read: refused.
    let missing = good.replace("cert = \"gw1.crt\"", "cert = \"gone.crt\"");
    std::fs::write(&path, missing).unwrap();
    assert!(reloader.reload().await.is_err());
    assert_eq!(region.call(Some(&dinkes), Proto::H2, call()).await.unwrap().status, StatusCode::OK);

    // [audit] settings other than the mode apply only at start, and say so.
    let audit = format!("{good}\n[audit]\nmode = \"async\"\ncheckpoint_every = 5\n");
    std::fs::write(&path, audit).unwrap();
    let report = reloader.reload().await.unwrap();
    assert_eq!(report.audit_needs_restart, vec!["checkpoint_every".to_owned()]);
    assert!(!report.telemetry_needs_restart);
    assert_eq!(region.gateway().snapshot().config.audit.mode, splpd_gateway::config::AuditMode::Async);

    // So does [telemetry]: the exporter runs with what it started with.
    let telemetry = format!("{good}\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:4317\"\n");
    std::fs::write(&path, telemetry).unwrap();
    assert!(reloader.reload().await.unwrap().telemetry_needs_restart);
    region.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_opened_before_a_reload_is_refused_once_a_new_crl_revokes_its_certificate() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let region = builder(&pki, &upstream, &[DINKES]).start().await;
    let reloader = Reloader::new(region.config_path(), std::sync::Arc::clone(region.gateway()));
    let (cert, serial) = pki.revocable_client(DINKES);

    // One HTTP/2 connection, kept open across the reload.
    let config = splpd_tests::client::tls_config(region.roots(), Some(&cert), Proto::H2);
    let tcp = tokio::net::TcpStream::connect(region.addr(PUBLIC)).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    let connection = tokio::spawn(conn);
    let get = || Request::get(format!("https://localhost/r1/{SERVICE}/json/x")).body(Empty::<Bytes>::new()).unwrap();
    assert_eq!(sender.send_request(get()).await.unwrap().status(), StatusCode::OK);

    // A reload without a change of trust leaves it working.
    reloader.reload().await.unwrap();
    assert_eq!(sender.send_request(get()).await.unwrap().status(), StatusCode::OK);

    pki.revoke(&serial);
    reloader.reload().await.unwrap();
    let refused = sender.send_request(get()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(refused.headers()["x-road-error"], "Client.Unauthenticated");
    // The connection is closed after the refusal (GOAWAY), so that a client that pools
    // connections, such as a peer gateway, connects again instead of being refused on it for ever.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), connection).await;
    assert!(closed.is_ok(), "the connection stayed open after its certificate was refused");
    assert!(sender.send_request(get()).await.is_err(), "the closed connection took another request");
    // A new connection does not get past the handshake.
    assert!(region.call(Some(&cert), Proto::H1, Call::get(format!("/r1/{SERVICE}/json/x"))).await.is_err());
    assert_eq!(upstream.received().len(), 2, "nothing after the revocation reached the service");
    region.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_crl_put_back_is_refused_and_the_revocation_stays_in_force() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let region = builder(&pki, &upstream, &[DINKES]).start().await;
    let reloader = std::sync::Arc::new(Reloader::new(region.config_path(), std::sync::Arc::clone(region.gateway())));
    region.gateway().attach_reloader(&reloader);
    let (cert, serial) = pki.revocable_client(DINKES);
    let crl = pki.dir().join("region/crl.pem");
    let before = std::fs::read(&crl).unwrap();
    pki.revoke(&serial);
    reloader.reload().await.unwrap();
    let call = || region.call(Some(&cert), Proto::H1, Call::get(format!("/r1/{SERVICE}/json/x")));
    assert!(call().await.is_err(), "the revoked certificate got past the handshake");

    // The CRL from before the revocation, genuine and still within its validity, put back (a
    // backup restored, a stale copy from the CA's host): the reload is refused.
    std::fs::write(&crl, &before).unwrap();
    let err = reloader.reload().await.unwrap_err();
    assert!(matches!(err, ReloadError::OlderCrl(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("is older than the one in force") && text.contains("splpd certs crl"), "{text}");
    assert!(call().await.is_err(), "the older CRL let a revoked certificate back in");
    assert!(upstream.received().is_empty());
    // Readiness notes it as the file it is, not as the configuration's text, which is in force.
    let notes = splpd_gateway::admin::Readiness::of(region.gateway()).notes;
    assert!(notes.len() == 1 && notes[0].starts_with("the configuration in force (version "), "{notes:#?}");

    // A CRL of the same age as the one in force, or newer, is taken.
    pki.revoke(&pki.revocable_client(RSUD).1);
    reloader.reload().await.unwrap();
    reloader.reload().await.unwrap();
    region.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_put_back_as_in_force_after_a_refused_edit_clears_the_refusal() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let region = builder(&pki, &upstream, &[DINKES]).start().await;
    let reloader = std::sync::Arc::new(Reloader::new(region.config_path(), std::sync::Arc::clone(region.gateway())));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let watching = tokio::spawn(std::sync::Arc::clone(&reloader).run(None, stopped));
    let good = std::fs::read_to_string(region.config_path()).unwrap();
    // Writes `text` (again, each second, in case the watcher started after a write) until `done`.
    let write_until = async |text: &str, done: &dyn Fn() -> bool| {
        for _ in 0..20 {
            std::fs::write(region.config_path(), text).unwrap();
            for _ in 0..20 {
                if done() {
                    return true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        false
    };
    let broken = format!("{good}\noops = \n");
    assert!(write_until(&broken, &|| reloader.last_refused().is_some()).await, "the broken edit was not refused");
    assert!(
        write_until(&good, &|| reloader.last_refused().is_none()).await,
        "the refusal stayed after the file was put back"
    );

    // A refusal of the version in force itself (an older CRL put back) is not cleared by
    // saving the configuration file again.
    let crl = pki.dir().join("region/crl.pem");
    let older = std::fs::read(&crl).unwrap();
    let (_, serial) = pki.revocable_client(RSUD);
    pki.revoke(&serial);
    reloader.reload().await.unwrap();
    std::fs::write(&crl, &older).unwrap();
    let mut refused = false;
    for _ in 0..200 {
        refused = reloader.last_refused().is_some();
        if refused {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(refused, "the older CRL was not refused");
    std::fs::write(region.config_path(), &good).unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(reloader.last_refused().is_some(), "saving the file in force cleared a refusal that still stands");
    stop.send(true).unwrap();
    watching.await.unwrap();
    region.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_certificate_that_lapsed_while_running_does_not_block_reloads() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    // The gateway starts with a certificate that ends a few seconds later.
    let now = time::OffsetDateTime::now_utc();
    let ends = now + time::Duration::seconds(6);
    pki.reissue_gateway(1, ends - time::Duration::days(1));
    let region = builder(&pki, &upstream, &[DINKES]).start().await;
    let reloader = Reloader::new(region.config_path(), std::sync::Arc::clone(region.gateway()));
    let left = ends - time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    tokio::time::sleep(left.try_into().unwrap_or_default()).await;
    // Lapsed while running: a new CRL or grant must still go in force meanwhile.
    reloader.reload().await.expect("the certificate in force lapsing is no mistake in the file");
    // Starting with it is refused, as config check does.
    let err = splpd_gateway::config::load(region.config_path()).unwrap_err().to_string();
    assert!(err.contains("the gateway certificate cannot serve: expired at"), "{err}");
    // Another certificate, expired already, put in its place is refused on reload.
    pki.reissue_gateway(1, now - time::Duration::days(3));
    let err = reloader.reload().await.unwrap_err();
    assert!(matches!(err, ReloadError::ExpiredGatewayCert(_)), "{err:?}");
    assert!(err.to_string().contains("a new certificate put in place") && err.to_string().contains("expired at"));
    // And one not valid yet, even with the old one in force.
    pki.reissue_gateway(30, now + time::Duration::days(1));
    let err = reloader.reload().await.unwrap_err().to_string();
    assert!(err.contains("not valid before"), "{err}");
    region.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_stop_open_exchanges_finish_within_the_drain_timeout_and_later_ones_are_logged_abandoned() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let region = builder(&pki, &upstream, &[DINKES]).toml("[limits]\ndrain_timeout = \"2s\"").start().await;
    let dinkes = pki.client(DINKES);
    let addr = region.addr(PUBLIC);
    let call = |ms: u32, proto: Proto| {
        let config = splpd_tests::client::tls_config(region.roots(), Some(&dinkes), proto);
        let call = Call::get(format!("/r1/{SERVICE}/slow/{ms}")).header("x-road-id", uuid::Uuid::new_v4().to_string());
        let id = call.headers[0].1.to_str().unwrap().to_owned();
        (id, tokio::spawn(splpd_tests::client::send_tls(addr, config, proto, call)))
    };
    let (quick_id, quick) = call(800, Proto::H1);
    let (long_id, long) = call(20_000, Proto::H1);
    let (long_h2_id, long_h2) = call(20_000, Proto::H2);
    upstream.wait_received(3).await;

    // Readiness says the gateway is stopping while the exchanges in flight finish, so that a
    // balancer asking the admin listener sends nothing more.
    let gateway = std::sync::Arc::clone(region.gateway());
    let readiness = || splpd_gateway::admin::Readiness::of(&gateway).reasons;
    assert_eq!(readiness(), Vec::<String>::new());
    let stopping = tokio::spawn(region.stop_with_records());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    while readiness().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let reasons = readiness();
    assert!(reasons.iter().any(|r| r.contains("the gateway is stopping")), "{reasons:?}");
    assert!(!quick.is_finished(), "the reason is given while exchanges are still in flight");
    let records = stopping.await.unwrap();
    assert_eq!(quick.await.unwrap().unwrap().status, StatusCode::OK, "an exchange within the drain finishes");
    assert!(long.await.unwrap().is_err(), "an exchange past the drain is cut off");
    assert!(long_h2.await.unwrap().is_err(), "an HTTP/2 exchange past the drain is cut off");
    // Nothing is accepted any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let find = |id: &str| records.iter().find(|r| r.exchange_id == id).unwrap_or_else(|| panic!("no record of {id}"));
    assert_eq!(find(&quick_id).status, 200);
    assert_eq!(find(&long_id).error_type, "Client.ResponseAbandoned");
    assert_eq!(find(&long_h2_id).error_type, "Client.ResponseAbandoned");
}

#[tokio::test]
async fn a_configuration_is_in_the_audit_log_before_it_is_in_force() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let region = builder(&pki, &upstream, &[DINKES]).start().await;
    let path = region.config_path().to_owned();
    let reloader = Reloader::new(&path, std::sync::Arc::clone(region.gateway()));
    let rsud = pki.client(RSUD);
    let call = || Call::get(format!("/r1/{SERVICE}/json/x"));
    let sha256 = |text: &str| splpd_tests::sha256(text.as_bytes());

    // A grant for RSUD: the change is recorded, naming the file and its text's hash.
    let granted = builder(&pki, &upstream, &[DINKES, RSUD]).text();
    std::fs::write(&path, &granted).unwrap();
    reloader.reload().await.unwrap();
    let reloads: Vec<_> = region.records().into_iter().filter(|r| r.method == "RELOAD").collect();
    assert_eq!(reloads.len(), 1, "{reloads:#?}");
    assert_eq!(reloads[0].path, path.display().to_string());
    assert_eq!(reloads[0].request_body_sha256, sha256(&granted));
    assert_eq!(reloads[0].request_body_bytes, granted.len() as u64);
    assert_eq!(region.call(Some(&rsud), Proto::H1, call()).await.unwrap().status, StatusCode::OK);

    // While the log cannot be written, a change is refused and the one in force stays.
    region.audit().set_failing(true);
    std::fs::write(&path, builder(&pki, &upstream, &[DINKES]).text()).unwrap();
    let err = reloader.reload().await.unwrap_err();
    assert!(matches!(err, ReloadError::Unlogged(_)), "{err:?}");
    assert!(err.to_string().contains("the change was not made"), "{err}");
    region.audit().set_failing(false);
    assert_eq!(region.call(Some(&rsud), Proto::H1, call()).await.unwrap().status, StatusCode::OK);
    assert_eq!(region.records().iter().filter(|r| r.method == "RELOAD").count(), 1);

    // A refused file changes nothing, and so records nothing either.
    std::fs::write(&path, "[gateway]\nid = \"nonsense").unwrap();
    assert!(reloader.reload().await.is_err());
    assert_eq!(region.records().iter().filter(|r| r.method == "RELOAD").count(), 1);
    region.stop().await;
}

/// An OpenAPI document edited in place is served anew without a SIGHUP: the reloader watches
/// every file the configuration names, not only certificates and CRLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_openapi_document_is_served_anew() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let document = pki.dir().join("nik.json");
    let text = |title: &str| {
        format!("{{\"openapi\": \"3.0.3\", \"info\": {{\"title\": \"{title}\", \"version\": \"1\"}}, \"paths\": {{}}}}")
    };
    std::fs::write(&document, text("Verifikasi NIK")).unwrap();
    let region = RegionBuilder::new(&pki)
        .service(SERVICE, &upstream.url(), "openapi = \"nik.json\"")
        .grant(&format!("service = \"{SERVICE}\"\nclient = \"{RSUD}\""))
        .start()
        .await;
    let reloader = std::sync::Arc::new(Reloader::new(region.config_path(), std::sync::Arc::clone(region.gateway())));
    assert!(reloader.watched_files().contains(&std::path::absolute(&document).unwrap()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(std::sync::Arc::clone(&reloader).run(None, stopped));
    let rsud = pki.client(RSUD);
    let get = || Call::get("/r1/ID/PEMDA/1602/DISDUKCAPIL/getOpenAPI?serviceCode=nik-verify");
    let served = region.call(Some(&rsud), Proto::H1, get()).await.unwrap();
    assert!(served.text().contains("Verifikasi NIK"), "{}", served.text());

    // Give the watch a moment to be in place, then edit the document.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    std::fs::write(&document, text("Verifikasi NIK v2")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let served = region.call(Some(&rsud), Proto::H1, get()).await.unwrap();
        if served.text().contains("Verifikasi NIK v2") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still the old document: {}", served.text());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = stop.send(true);
    region.stop().await;
}
