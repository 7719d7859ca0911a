//! Upstream resilience end to end: services with several endpoints behind a real gateway (mTLS
//! from the client, real loopback upstreams, REST and gRPC), with endpoints killed, slowed and
//! brought back. Failover and retries of idempotent requests, ejection, the request timeout, the
//! circuit breaker's open and half-open states, POST never retried, gRPC retried only on a
//! refused connection, and active health checks; each outcome checked in the answer, the audit
//! record and the gateway's status of its endpoints.

// Test fixtures fail loudly: a panic is the right report for a broken test setup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use splpd_gateway::reload::Reloader;
use splpd_gateway::upstream::{CircuitStatus, EndpointStatus};
use splpd_tests::grpc::pb::Ask;
use splpd_tests::grpc::{HealthUpstream, ProbeUpstream, SERVICE_NAME, request};
use splpd_tests::logs::Logs;
use splpd_tests::{Call, ClientCert, Pki, Proto, Region, RegionBuilder, Reply, Upstream, closed_port};
use tonic_health::ServingStatus;

const SERVICE: &str = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify";
/// A service that opts in to retrying POST.
const OPT_IN: &str = "ID/PEMDA/1602/DISDUKCAPIL/nik-batch";
/// A service one of whose endpoints refuses connections.
const REFUSED: &str = "ID/PEMDA/1602/DISDUKCAPIL/nik-archive";
const DINKES: &str = "ID/PEMDA/1602/DINKES";
/// A gRPC service.
const PROBE: &str = "ID/PEMDA/1602/DINKES/probe";

fn target(service: &str, path: &str) -> String {
    format!("/r1/{service}{path}")
}

fn grant(service: &str) -> String {
    format!("service = \"{service}\"\nclient = \"{DINKES}\"")
}

/// The endpoints of `service` as the gateway reports them.
fn status(region: &Region, service: &str) -> Vec<EndpointStatus> {
    region
        .gateway()
        .upstream_status()
        .into_iter()
        .find(|s| s.service.to_string() == service)
        .expect("the service is reported")
        .endpoints
}

/// The status of the endpoint at `url`.
fn endpoint(region: &Region, service: &str, url: &str) -> EndpointStatus {
    status(region, service).into_iter().find(|e| e.url == url).expect("the endpoint is reported")
}

/// Waits (at most 30 s) until the endpoint at `url` satisfies `ready`; panics with its last
/// status otherwise.
async fn wait_endpoint(region: &Region, service: &str, url: &str, what: &str, ready: impl Fn(&EndpointStatus) -> bool) {
    for _ in 0..600 {
        if ready(&endpoint(region, service, url)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never became {what}: {:#?}", endpoint(region, service, url));
}

/// Makes `n` calls to [`SERVICE`] as `client`; each is answered by the endpoint at `url` at the
/// first attempt.
async fn calls_reach_only(region: &Region, client: &ClientCert, url: &str, n: usize) {
    for _ in 0..n {
        let reply = region.call(Some(client), Proto::H1, Call::get(target(SERVICE, "/json/x"))).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let rec = region.record(reply.exchange_id()).await;
        assert_eq!((rec.retries, rec.upstream.as_str()), (0, url), "{rec:#?}");
    }
}

fn assert_gateway_error(reply: &Reply, status: u16, error_type: &str) -> String {
    assert_eq!(reply.status.as_u16(), status, "{reply:?}\n{}", reply.text());
    assert_eq!(reply.xroad_error(), Some(error_type), "{reply:?}");
    let body = reply.json();
    assert_eq!(body["type"], error_type, "{body}");
    body["message"].as_str().expect("message").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_endpoints_killed_under_load_fails_no_idempotent_request() {
    Logs::capture();
    let pki = Pki::new();
    let (mut a, b) = (Upstream::start().await, Upstream::start().await);
    let region = RegionBuilder::new(&pki)
        .service_with(
            SERVICE,
            &[&a.url(), &b.url()],
            // A long ejection, so that the killed endpoint stays out for the rest of the test; a
            // retry floor high enough that the budget is not what this test measures.
            "outlier = { consecutive_failures = 3, base_ejection = \"10m\", max_ejection = \"10m\" }\n\
             retry = { min_per_second = 1000 }",
        )
        .grant(&grant(SERVICE))
        .start()
        .await;
    let region = Arc::new(region);
    let dinkes = Arc::new(pki.client(DINKES));

    // Concurrent clients call in a bounded loop; endpoint A is killed once a quarter of the calls
    // are done, while the others are in flight.
    const WORKERS: usize = 6;
    const CALLS: usize = 30;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let (region, dinkes, done) = (Arc::clone(&region), Arc::clone(&dinkes), Arc::clone(&done));
        workers.spawn(async move {
            let mut replies = Vec::new();
            for i in 0..CALLS {
                let proto = if (w + i) % 2 == 0 { Proto::H1 } else { Proto::H2 };
                let reply = region.call(Some(&dinkes), proto, Call::get(target(SERVICE, "/json/x"))).await.unwrap();
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                replies.push(reply);
            }
            replies
        });
    }
    while done.load(std::sync::atomic::Ordering::Relaxed) < WORKERS * CALLS / 4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.kill().await;
    let mut replies = Vec::new();
    while let Some(r) = workers.join_next().await {
        replies.extend(r.unwrap());
    }

    // Not one failed: the calls that met the dead endpoint were retried on the other.
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}\n{}", reply.text());
    }
    let mut retried = 0;
    for reply in &replies {
        let rec = region.record(reply.exchange_id()).await;
        assert_eq!(rec.status, 200);
        assert_eq!(rec.attempts.len() as u32, rec.retries + 1, "{rec:#?}");
        if rec.retries > 0 {
            retried += 1;
            assert_eq!(rec.attempts[0].endpoint, a.url(), "{rec:#?}");
            assert_eq!(rec.upstream, b.url(), "the retry went to the live endpoint: {rec:#?}");
            assert_eq!(rec.attempts.last().unwrap().outcome, "answered 200");
            assert!(rec.upstream_note.contains(&format!("retried after {}", a.url())), "{}", rec.upstream_note);
        }
    }
    // Ejection takes three failures in a row, each of them retried.
    assert!(retried >= 3, "only {retried} calls were retried");

    // A is ejected now; calls go to B alone, first time, with nothing to retry.
    let a_status = endpoint(&region, SERVICE, &a.url());
    assert!(a_status.ejected_until.is_some() && !a_status.available, "{a_status:#?}");
    // The operator's log names the service as well as the endpoint, which services may share.
    let logged = Logs::capture().lines_with("endpoint ejected after").await;
    let named = |l: &String| l.contains(&a.url()) && l.contains(&format!("service={SERVICE}"));
    assert!(logged.iter().any(named), "{logged:#?}");
    assert!(endpoint(&region, SERVICE, &b.url()).available);
    for i in 0..20 {
        let proto = if i % 2 == 0 { Proto::H1 } else { Proto::H2 };
        let reply = region.call(Some(&dinkes), proto, Call::get(target(SERVICE, "/json/x"))).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let rec = region.record(reply.exchange_id()).await;
        assert_eq!((rec.retries, rec.upstream.as_str()), (0, b.url().as_str()), "{rec:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_is_answered_504_within_the_request_timeout_and_not_retried() {
    let pki = Pki::new();
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let region = RegionBuilder::new(&pki)
        .service_with(SERVICE, &[&a.url(), &b.url()], "request_timeout = \"500ms\"")
        .grant(&grant(SERVICE))
        .start()
        .await;
    let dinkes = pki.client(DINKES);
    let started = Instant::now();
    let reply = region.call(Some(&dinkes), Proto::H1, Call::get(target(SERVICE, "/slow/8000/x"))).await.unwrap();
    // Far sooner than the upstream's 8 s: the gateway gave up at its timeout.
    assert!(started.elapsed() < Duration::from_secs(6), "answered after {:?}", started.elapsed());
    let message = assert_gateway_error(&reply, 504, "Server.ServerProxy.ServiceTimeout");
    assert!(message.contains("500ms"), "{message}");
    let rec = region.record(reply.exchange_id()).await;
    assert_eq!((rec.status, rec.error_type.as_str()), (504, "Server.ServerProxy.ServiceTimeout"));
    // The timeout covers the whole exchange: a timed-out call is not sent again.
    assert_eq!((rec.retries, rec.attempts.len()), (0, 1), "{rec:#?}");
    assert_eq!(rec.attempts[0].outcome, "no answer within 500ms");
    assert!(rec.upstream_note.contains("the request timeout is spent"), "{}", rec.upstream_note);
    assert_eq!(a.received().len() + b.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_opens_at_its_limit_then_half_opens_and_closes_on_success() {
    Logs::capture();
    let pki = Pki::new();
    let up = Upstream::start().await;
    let region = RegionBuilder::new(&pki)
        .service(SERVICE, &up.url(), "circuit = { max_requests = 2, max_pending = 0, open_for = \"1s\" }")
        .grant(&grant(SERVICE))
        .start()
        .await;
    let region = Arc::new(region);
    let dinkes = Arc::new(pki.client(DINKES));
    let url = up.url();

    // Two slow calls take both slots.
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let (region, dinkes) = (Arc::clone(&region), Arc::clone(&dinkes));
        slow.spawn(async move {
            region.call(Some(&dinkes), Proto::H2, Call::get(target(SERVICE, "/slow/3000/x"))).await.unwrap()
        });
    }
    wait_endpoint(&region, SERVICE, &url, "busy with two calls", |e| e.active == 2).await;

    // A third overflows the limits: refused at once, and the circuit opens.
    let reply = region.call(Some(&dinkes), Proto::H1, Call::get(target(SERVICE, "/json/x"))).await.unwrap();
    let message = assert_gateway_error(&reply, 503, "Server.ServerProxy.ServiceUnavailable");
    assert!(message.contains("try again later") && !message.contains(&url), "{message}");
    assert_eq!(reply.header("retry-after"), Some("1"), "the circuit opens for its 1 s");
    // While it is open, a call is refused at once, told the same (as it is once it half-opens:
    // the two slow calls still hold both slots, so its probe overflows them again).
    let again = region.call(Some(&dinkes), Proto::H2, Call::get(target(SERVICE, "/json/x"))).await.unwrap();
    assert_gateway_error(&again, 503, "Server.ServerProxy.ServiceUnavailable");
    assert_eq!(again.header("retry-after"), Some("1"), "{}", again.text());
    // Why is the operator's to see, in the log and the record.
    let logged = Logs::capture().lines_with(reply.exchange_id()).await;
    assert!(logged.iter().any(|l| l.contains("2 requests in flight") && l.contains("circuit opens")), "{logged:#?}");
    let rec = region.record(reply.exchange_id()).await;
    assert_eq!((rec.status, rec.error_type.as_str()), (503, "Server.ServerProxy.ServiceUnavailable"));
    assert!(rec.attempts.is_empty() && rec.forwarded_at_unix_nanos == 0, "nothing was forwarded: {rec:#?}");
    assert!(rec.upstream_note.contains("circuit opens"), "{}", rec.upstream_note);
    let opened = endpoint(&region, SERVICE, &url);
    assert!(matches!(opened.circuit, CircuitStatus::Open { .. } | CircuitStatus::HalfOpen), "{opened:#?}");

    // The slow calls finish; after its interval the circuit half-opens and lets a probe through,
    // whose success closes it.
    while let Some(r) = slow.join_next().await {
        assert_eq!(r.unwrap().status, StatusCode::OK);
    }
    wait_endpoint(&region, SERVICE, &url, "half-open", |e| e.circuit == CircuitStatus::HalfOpen).await;
    let received = up.received().len();
    let reply = region.call(Some(&dinkes), Proto::H1, Call::get(target(SERVICE, "/json/x"))).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(up.received().len(), received + 1, "the probe reached the service");
    assert_eq!(endpoint(&region, SERVICE, &url).circuit, CircuitStatus::Closed);
    let reply = region.call(Some(&dinkes), Proto::H2, Call::get(target(SERVICE, "/json/x"))).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "closed again, calls pass");
}

/// An endpoint that takes connections, reads what it is sent and closes without answering: a
/// request sent to it is lost on the way, and may have been acted on.
async fn dropping_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_retried_only_when_nothing_was_sent_unless_the_service_opts_in() {
    let pki = Pki::new();
    let live = Upstream::start().await;
    let dropping = dropping_endpoint().await;
    let refusing = format!("http://{}", closed_port().await);
    // Failures never eject here, so every call has an even chance of meeting the bad endpoint.
    let never_eject = "outlier = { consecutive_failures = 100000 }";
    let region = RegionBuilder::new(&pki)
        .service_with(SERVICE, &[&dropping, &live.url()], never_eject)
        .service_with(OPT_IN, &[&dropping, &live.url()], &format!("{never_eject}\nretry = {{ non_idempotent = true }}"))
        .service_with(REFUSED, &[&refusing, &live.url()], never_eject)
        .grant(&grant(SERVICE))
        .grant(&grant(OPT_IN))
        .grant(&grant(REFUSED))
        .start()
        .await;
    let dinkes = pki.client(DINKES);

    // POSTs until one is lost at the dropping endpoint: it fails, and is not sent again, since
    // the service may have acted on it.
    let mut failed = None;
    for _ in 0..60 {
        let reply =
            region.call(Some(&dinkes), Proto::H1, Call::post(target(SERVICE, "/echo/x"), "{\"n\":1}")).await.unwrap();
        if reply.status != StatusCode::OK {
            failed = Some(reply);
            break;
        }
    }
    let reply = failed.expect("some POST met the dropping endpoint");
    assert_gateway_error(&reply, 502, "Server.ServerProxy.ServiceFailed");
    let rec = region.record(reply.exchange_id()).await;
    assert_eq!((rec.retries, rec.attempts.len()), (0, 1), "{rec:#?}");
    assert_eq!(rec.attempts[0].endpoint, dropping);
    assert!(rec.upstream_note.contains("POST is not idempotent"), "{}", rec.upstream_note);
    assert!(
        !live.received().iter().any(|r| r.header("x-road-id") == Some(reply.exchange_id())),
        "the failed POST never reached the live endpoint"
    );

    // GETs, the opted-in service's POSTs, and POSTs whose connection was refused (nothing sent)
    // all succeed; those that met the bad endpoint first were retried on the live one, the body
    // sent again whole.
    for (call, service, outcome) in [
        (Call::get(target(SERVICE, "/json/x")), SERVICE, "broke off"),
        (Call::post(target(OPT_IN, "/echo/x"), "{\"n\":2}"), OPT_IN, "broke off"),
        (Call::post(target(REFUSED, "/echo/x"), "{\"n\":2}"), REFUSED, "no connection"),
    ] {
        let mut retried = 0;
        for _ in 0..30 {
            let reply = region.call(Some(&dinkes), Proto::H2, call.clone()).await.unwrap();
            assert_eq!(reply.status, StatusCode::OK, "{service}: {}", reply.text());
            let rec = region.record(reply.exchange_id()).await;
            if rec.retries == 1 {
                retried += 1;
                assert!(rec.attempts[0].outcome.starts_with(outcome), "{rec:#?}");
                assert_eq!(rec.upstream, live.url());
            }
            if service != SERVICE {
                assert_eq!(reply.body.as_ref(), b"{\"n\":2}");
            }
        }
        assert!(retried > 0, "{service}: no call met the bad endpoint first in 30");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_take_a_dead_endpoint_out_and_bring_it_back() {
    let pki = Pki::new();
    let (a, mut b) = (Upstream::start().await, Upstream::start().await);
    let region = RegionBuilder::new(&pki)
        .service_with(
            SERVICE,
            &[&a.url(), &b.url()],
            "health_check = { path = \"/json/health\", interval = \"100ms\", timeout = \"1s\", \
             healthy_threshold = 2, unhealthy_threshold = 2 }",
        )
        .grant(&grant(SERVICE))
        .start()
        .await;
    let dinkes = pki.client(DINKES);
    let url = b.url();
    // The checks reach both endpoints at their path.
    let seen = b.wait_received(1).await;
    assert_eq!(seen[0].path_and_query, "/json/health");
    assert_eq!(seen[0].header("user-agent"), Some("splpd-health-check"));

    b.kill().await;
    wait_endpoint(&region, SERVICE, &url, "unhealthy", |e| !e.healthy && !e.available).await;
    // Out of the rotation: no call even tries it.
    calls_reach_only(&region, &dinkes, &a.url(), 10).await;

    b.restart().await;
    wait_endpoint(&region, SERVICE, &url, "healthy again", |e| e.healthy && e.available).await;
    let before = b.received().iter().filter(|r| r.path_and_query == "/json/x").count();
    let mut reached = false;
    for _ in 0..40 {
        let reply = region.call(Some(&dinkes), Proto::H1, Call::get(target(SERVICE, "/json/x"))).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        if region.record(reply.exchange_id()).await.upstream == url {
            reached = true;
            break;
        }
    }
    assert!(reached, "no call reached the endpoint that came back");
    assert!(b.received().iter().filter(|r| r.path_and_query == "/json/x").count() > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_what_the_health_checks_know_of_each_endpoint() {
    const RSUD: &str = "ID/PEMDA/1602/RSUD";
    let pki = Pki::new();
    let (a, mut b) = (Upstream::start().await, Upstream::start().await);
    let urls = [a.url(), b.url()];
    let builder = |clients: &[&str]| {
        let mut builder = RegionBuilder::new(&pki).service_with(
            SERVICE,
            &[&urls[0], &urls[1]],
            "health_check = { path = \"/json/health\", interval = \"100ms\", timeout = \"1s\", \
             healthy_threshold = 2, unhealthy_threshold = 2 }",
        );
        for client in clients {
            builder = builder.grant(&format!("service = \"{SERVICE}\"\nclient = \"{client}\""));
        }
        builder
    };
    let region = builder(&[DINKES]).start().await;
    let dinkes = pki.client(DINKES);
    let url = b.url();
    b.kill().await;
    wait_endpoint(&region, SERVICE, &url, "unhealthy", |e| !e.healthy && !e.available).await;

    // An edit elsewhere in the file (a grant more) is put in force.
    let path = region.config_path().to_owned();
    std::fs::write(&path, builder(&[DINKES, RSUD]).text()).unwrap();
    Reloader::new(&path, Arc::clone(region.gateway())).reload().await.unwrap();
    assert_eq!(region.gateway().generation(), 1);
    // The new configuration knows at once that B is down: no call goes to it.
    let after = endpoint(&region, SERVICE, &url);
    assert!(!after.healthy && !after.available, "{after:#?}");
    calls_reach_only(&region, &dinkes, &a.url(), 3).await;
    // And the new configuration's checks bring B back once it answers again, starting from the
    // verdict they took over: B is back before they could have seen it fail twice themselves.
    b.restart().await;
    wait_endpoint(&region, SERVICE, &url, "healthy again", |e| e.healthy && e.available).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_endpoint_is_never_ejected_so_one_paths_failures_do_not_close_the_others() {
    let pki = Pki::new();
    let up = Upstream::start().await;
    let region = RegionBuilder::new(&pki)
        .service(SERVICE, &up.url(), "outlier = { consecutive_failures = 2, base_ejection = \"30s\" }")
        .grant(&grant(SERVICE))
        .start()
        .await;
    // The service's own 503s on one path, more than enough in a row to eject an endpoint that
    // had another beside it.
    stays_in_despite_its_503s(&region, &pki.client(DINKES), &up.url()).await;
}

/// Calls one path of [`SERVICE`] that `url` answers 503, more often in a row than the service's
/// outlier rule (2 failures) allows: each 503 is passed on as the service's own, `url` stays in,
/// and the service's other paths are still answered.
async fn stays_in_despite_its_503s(region: &Region, dinkes: &ClientCert, url: &str) {
    for _ in 0..4 {
        let reply = region.call(Some(dinkes), Proto::H1, Call::get(target(SERVICE, "/status/503/x"))).await.unwrap();
        assert_eq!((reply.status.as_u16(), reply.xroad_error()), (503, None), "{}", reply.text());
    }
    let kept = endpoint(region, SERVICE, url);
    assert!(kept.ejected_until.is_none() && kept.available, "{kept:#?}");
    let reply = region.call(Some(dinkes), Proto::H1, Call::get(target(SERVICE, "/json/x"))).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_endpoint_that_can_take_calls_is_not_ejected() {
    let pki = Pki::new();
    let (mut a, b) = (Upstream::start().await, Upstream::start().await);
    let region = RegionBuilder::new(&pki)
        .service_with(
            SERVICE,
            &[&a.url(), &b.url()],
            "outlier = { consecutive_failures = 2, base_ejection = \"30s\" }\n\
             health_check = { path = \"/json/health\", interval = \"100ms\", unhealthy_threshold = 1 }",
        )
        .grant(&grant(SERVICE))
        .start()
        .await;
    // A fails its health checks: B alone takes calls, and is not ejected for its 503s, as it
    // would be had A been up.
    let a_url = a.url();
    a.kill().await;
    wait_endpoint(&region, SERVICE, &a_url, "failing its checks", |e| !e.healthy).await;
    stays_in_despite_its_503s(&region, &pki.client(DINKES), &b.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_health_check_ends_an_ejection_early() {
    let pki = Pki::new();
    let (a, mut b) = (Upstream::start().await, Upstream::start().await);
    let region = RegionBuilder::new(&pki)
        .service_with(
            SERVICE,
            &[&a.url(), &b.url()],
            // Ejected at the first failure for ten minutes; checks alone would never take it out.
            "outlier = { consecutive_failures = 1, base_ejection = \"10m\", max_ejection = \"10m\" }\n\
             health_check = { path = \"/json/health\", interval = \"100ms\", unhealthy_threshold = 1000000 }",
        )
        .grant(&grant(SERVICE))
        .start()
        .await;
    let dinkes = pki.client(DINKES);
    let url = b.url();
    b.kill().await;
    // Calls until one meets the dead endpoint, which ejects it; that call is retried on A.
    for _ in 0..60 {
        let reply = region.call(Some(&dinkes), Proto::H1, Call::get(target(SERVICE, "/json/x"))).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        if endpoint(&region, SERVICE, &url).ejected_until.is_some() {
            break;
        }
    }
    let ejected = endpoint(&region, SERVICE, &url);
    let until = ejected.ejected_until.expect("ejected");
    assert!(until > std::time::SystemTime::now() + Duration::from_secs(60), "{ejected:#?}");

    b.restart().await;
    wait_endpoint(&region, SERVICE, &url, "back from ejection", |e| e.ejected_until.is_none() && e.available).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_endpoints_are_checked_with_the_grpc_health_protocol() {
    let pki = Pki::new();
    let mut health = HealthUpstream::start().await;
    // Only the named service's status decides: the whole server stays SERVING throughout.
    health.reporter.set_service_status(SERVICE_NAME, ServingStatus::Serving).await;
    // An endpoint without a health service answers UNIMPLEMENTED: it stays in while it answers.
    let bare = ProbeUpstream::start().await;
    let region = RegionBuilder::new(&pki)
        .service_with(
            PROBE,
            &[&health.url(), &bare.url()],
            &format!(
                "protocol = \"grpc\"\ngrpc_services = [\"{SERVICE_NAME}\"]\n\
                 health_check = {{ grpc_service = \"{SERVICE_NAME}\", interval = \"100ms\", timeout = \"1s\", \
                 healthy_threshold = 2, unhealthy_threshold = 2 }}"
            ),
        )
        .grant(&grant(PROBE))
        .start()
        .await;
    // The bare endpoint is asked the health protocol's Check, as gRPC.
    for _ in 0..200 {
        if bare.seen().iter().any(|s| s.path == "/grpc.health.v1.Health/Check") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let asked = bare.seen().into_iter().find(|s| s.path == "/grpc.health.v1.Health/Check").expect("a health check");
    assert_eq!(asked.headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/grpc"));
    assert_eq!(asked.headers.get("user-agent").and_then(|v| v.to_str().ok()), Some("splpd-health-check"));

    health.reporter.set_service_status(SERVICE_NAME, ServingStatus::NotServing).await;
    wait_endpoint(&region, PROBE, &health.url(), "unhealthy", |e| !e.healthy && !e.available).await;
    let bare_now = endpoint(&region, PROBE, &bare.url());
    assert!(bare_now.healthy && bare_now.available, "{bare_now:#?}");

    health.reporter.set_service_status(SERVICE_NAME, ServingStatus::Serving).await;
    wait_endpoint(&region, PROBE, &health.url(), "healthy again", |e| e.healthy && e.available).await;

    // A service the server does not know (NOT_FOUND) fails too.
    health.reporter.clear_service_status(SERVICE_NAME).await;
    wait_endpoint(&region, PROBE, &health.url(), "unhealthy once its service is unknown", |e| !e.healthy).await;
    assert!(endpoint(&region, PROBE, &bare.url()).healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_is_retried_on_another_endpoint_when_its_connection_was_refused() {
    let pki = Pki::new();
    let probe = ProbeUpstream::start().await;
    let dead = format!("http://{}", closed_port().await);
    let region = RegionBuilder::new(&pki)
        .service_with(
            PROBE,
            &[&dead, &probe.url()],
            &format!(
                "protocol = \"grpc\"\ngrpc_services = [\"{SERVICE_NAME}\"]\n\
                 outlier = {{ consecutive_failures = 100000 }}\n\
                 retry = {{ budget_percent = 100 }}"
            ),
        )
        .grant(&grant(PROBE))
        .start()
        .await;
    let dinkes = pki.client(DINKES);
    let mut client = region.grpc_client(Some(&dinkes)).await;
    // About half the calls meet the dead endpoint first, more than the default budget's share of
    // retries (20% plus 10 a second); a full budget keeps this test about retrying, not budgets.
    let mut retried = 0;
    for i in 0..30 {
        let ask = Ask { text: format!("halo {i}"), ..Ask::default() };
        let resp = match client.unary(request(ask, &[])).await {
            Ok(resp) => resp,
            Err(status) => {
                let id = status.metadata().get("x-road-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
                panic!("call {i} was not answered: {status:?}\nits record: {:#?}", region.record(id).await);
            }
        };
        let id = resp.metadata().get("x-road-id").and_then(|v| v.to_str().ok()).expect("x-road-id").to_owned();
        assert_eq!(resp.into_inner().text, format!("halo {i}"));
        let rec = region.record(&id).await;
        assert_eq!(rec.grpc_status, Some(0), "{rec:#?}");
        if rec.retries == 1 {
            retried += 1;
            assert_eq!(rec.attempts[0].endpoint, dead);
            assert!(rec.attempts[0].outcome.starts_with("no connection"), "{rec:#?}");
            assert_eq!(rec.upstream, probe.url());
        }
    }
    // Nothing had reached the dead endpoint, so the stream could go to the live one.
    assert!(retried > 0, "no call met the refused endpoint first in 30");
    assert_eq!(probe.seen().len(), 30, "each call reached the service once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_would_need_a_connection_over_the_limit_is_refused_503() {
    Logs::capture();
    let pki = Pki::new();
    let up = Upstream::start().await;
    let region = RegionBuilder::new(&pki)
        .service(SERVICE, &up.url(), "connect_timeout = \"300ms\"\ncircuit = { max_connections = 1 }")
        .grant(&grant(SERVICE))
        .start()
        .await;
    let region = Arc::new(region);
    let dinkes = Arc::new(pki.client(DINKES));
    // A slow call holds the one connection (HTTP/1.1: one exchange at a time).
    let slow = {
        let (region, dinkes) = (Arc::clone(&region), Arc::clone(&dinkes));
        tokio::spawn(async move {
            region.call(Some(&dinkes), Proto::H1, Call::get(target(SERVICE, "/slow/3000/x"))).await.unwrap()
        })
    };
    up.wait_received(1).await;
    let reply = region.call(Some(&dinkes), Proto::H1, Call::get(target(SERVICE, "/json/x"))).await.unwrap();
    let message = assert_gateway_error(&reply, 503, "Server.ServerProxy.ServiceUnavailable");
    assert!(message.contains("try again later") && !message.contains("max_connections"), "{message}");
    assert_eq!(reply.header("retry-after"), None, "when a connection frees is not known");
    let logged = Logs::capture().lines_with(reply.exchange_id()).await;
    assert!(logged.iter().any(|l| l.contains("max_connections")), "the operator is told the limit: {logged:#?}");
    let rec = region.record(reply.exchange_id()).await;
    assert_eq!(rec.attempts.len(), 1, "{rec:#?}");
    assert_eq!(rec.attempts[0].outcome, "no connection free (1 open, its limit)");
    assert_eq!(up.received().len(), 1, "the refused call never reached the service");
    // The limit is the gateway's own: it counts nothing against the endpoint.
    assert_eq!(endpoint(&region, SERVICE, &up.url()).consecutive_failures, 0);
    // Once the slow call is done its connection serves the next one.
    assert_eq!(slow.await.unwrap().status, StatusCode::OK);
    let reply = region.call(Some(&dinkes), Proto::H1, Call::get(target(SERVICE, "/json/x"))).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}
