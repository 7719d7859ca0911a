//! Federation end to end (design §3, peering and the national SPLP): three gateways' worth of
//! parties on loopback, each with its own CA: Kabupaten Ogan Komering Ilir (`ID/PEMDA/1602`,
//! gateway A), Kabupaten Ogan Komering Ulu (`ID/PEMDA/1601`, gateway B), and a stand-in for the
//! national SPLP's API manager. A reaches B through a relay that is killed mid-run, and B
//! directly; B reaches A through a relay. Calls are REST and gRPC, each side logs its own record.

// Test fixtures fail loudly: a panic is the right report for a broken test setup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::StatusCode;
use splpd_gateway::reload::Reloader;
use splpd_tests::grpc::pb::Ask;
use splpd_tests::grpc::{ProbeUpstream, request};
use splpd_tests::logs::Logs;
use splpd_tests::national::{CLIENT_ID, CLIENT_SECRET, NationalStandIn, TENANT};
use splpd_tests::relay::Relay;
use splpd_tests::{Call, Pki, Proto, Region, RegionBuilder, Upstream, closed_port};
use tonic::Code;

/// B's REST service.
const B_NIK: &str = "ID/PEMDA/1601/DISDUKCAPIL/nik-verify";
/// B's gRPC service.
const B_PROBE: &str = "ID/PEMDA/1601/DINKES/probe";
/// B's service whose upstream is down.
const B_DOWN: &str = "ID/PEMDA/1601/DISDUKCAPIL/down";
/// A's REST service.
const A_NIK: &str = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify";
/// A national API.
const NATIONAL_NIK: &str = "ID/KL/KEMENDAGRI/DUKCAPIL/nik-verify";

/// A's client granted B's services on both sides.
const RSUD: &str = "ID/PEMDA/1602/RSUD";
/// A's client granted B's services by A, but not by B.
const DINKES: &str = "ID/PEMDA/1602/DINKES";
/// A's client with no grant for anything of B.
const DISHUB: &str = "ID/PEMDA/1602/DISHUB";
/// B's client granted A's NIK check by both.
const OKU_RSUD: &str = "ID/PEMDA/1601/RSUD";
/// A's client granted by A only B's NIK check's GET endpoints.
const BAPPEDA: &str = "ID/PEMDA/1602/BAPPEDA";

/// The national SPLP's gateway, as its certificate names it.
const NATIONAL_GATEWAY: &str = "ID/KL/KOMDIGI/splp";
/// A national agency that calls A's service through the national SPLP.
const NATIONAL_CLIENT: &str = "ID/KL/KEMENDAGRI/DUKCAPIL";

/// The national token header, as the API manager of the national SPLP calls it.
const TOKEN_HEADER: &str = "AuthorizationSPLP";

struct Topology {
    a: Region,
    b: Region,
    /// A's first endpoint for B.
    relay_b: Relay,
    national: NationalStandIn,
    b_rest: Upstream,
    b_grpc: ProbeUpstream,
    _relay_a: Relay,
    _a_rest: Upstream,
    // Last: the gateways' files live in it.
    pki: Pki,
}

fn grant(service: &str, client: &str) -> String {
    format!("service = \"{service}\"\nclient = \"{client}\"")
}

async fn topology() -> Topology {
    let pki = Pki::new();
    let national = NationalStandIn::start(pki.dir(), TOKEN_HEADER, 3600).await;
    std::fs::write(pki.dir().join("national.secret"), format!("{CLIENT_SECRET}\n")).unwrap();
    let (relay_a, relay_b) = (Relay::start().await, Relay::start().await);
    let (a_rest, b_rest, b_grpc) = (Upstream::start().await, Upstream::start().await, ProbeUpstream::start().await);

    let b = RegionBuilder::peer_region(&pki)
        .service(B_NIK, &b_rest.url(), "")
        .service(B_PROBE, &b_grpc.url(), "protocol = \"grpc\"")
        .service(B_DOWN, &format!("http://{}", closed_port().await), "connect_timeout = \"1s\"")
        .grant(&grant(B_DOWN, RSUD))
        .grant(&grant(B_NIK, RSUD))
        .grant(&grant(B_PROBE, RSUD))
        .toml(&format!("[[quota]]\nservice = \"{B_DOWN}\"\nclient = \"{RSUD}\"\nper_second = 1\nburst = 1\n"))
        .toml(&format!(
            "[[peer]]\nid = \"ID/PEMDA/1602/gw1\"\nendpoints = [\"{}\"]\nauthoritative = [\"ID/PEMDA/1602\"]\n\
             trust_anchor = \"peer-1602\"",
            relay_a.https_url()
        ))
        .grant(&grant(A_NIK, OKU_RSUD))
        .start()
        .await;

    let a = RegionBuilder::new(&pki)
        .service(A_NIK, &a_rest.url(), "")
        .grant(&grant(A_NIK, OKU_RSUD))
        // Outbound grants: who of this region may call out to B and to the national SPLP.
        .grant(&grant(B_NIK, RSUD))
        .grant(&grant(B_PROBE, RSUD))
        .grant(&grant(B_DOWN, RSUD))
        .grant(&grant(B_NIK, DINKES))
        .grant(&grant(NATIONAL_NIK, RSUD))
        .grant(&grant(A_NIK, NATIONAL_CLIENT))
        .grant(&format!("{}\nendpoints = [\"GET /nik/*\"]", grant(B_NIK, BAPPEDA)))
        .toml(&format!(
            "[[trust_anchor]]\nname = \"national\"\nca = \"{}\"\nscopes = [\"{NATIONAL_GATEWAY}\"]\n\n\
             [[peer]]\nid = \"{NATIONAL_GATEWAY}\"\nauthoritative = [\"ID/KL\"]\ntrust_anchor = \"national\"\n\n\
             [[peer]]\nid = \"ID/PEMDA/1601/gw1\"\nendpoints = [\"{}\", \"https://{}\"]\n\
             authoritative = [\"ID/PEMDA/1601\"]\ntrust_anchor = \"peer-1601\"\n\n\
             [national]\nprefixes = [\"ID/KL\"]\nbase_url = \"{url}\"\ntenant = \"{TENANT}\"\n\
             token_url = \"{url}/oauth2/token\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_file = \"national.secret\"\n\
             token_header = \"{TOKEN_HEADER}\"\ntrust_anchor = \"national\"\n\n\
             [[national.api]]\nservice = \"{NATIONAL_NIK}\"\napi = \"dukcapil-nik\"\nversion = \"v1\"",
            national.ca_cert().display(),
            relay_b.https_url(),
            b.addr(splpd_tests::PUBLIC),
            url = national.url(),
        ))
        .start()
        .await;
    relay_b.set_target(b.addr(splpd_tests::PUBLIC));
    relay_a.set_target(a.addr(splpd_tests::PUBLIC));
    Topology { a, b, relay_b, national, b_rest, b_grpc, _relay_a: relay_a, _a_rest: a_rest, pki }
}

fn nik_call(service: &str, client: &str) -> Call {
    Call::get(format!("/r1/{service}/nik/1601015708900001?detail=ringkas"))
        .header("x-road-client", client)
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_region_rest_call_is_authorised_and_logged_on_both_sides() {
    let t = topology().await;
    let rsud = t.pki.client(RSUD);
    let reply = t.a.call(Some(&rsud), Proto::H1, nik_call(B_NIK, RSUD).header("x-agency", "rs-1")).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let id = reply.exchange_id().to_owned();
    assert_eq!(reply.header("x-road-client"), Some(RSUD));
    assert_eq!(reply.header("x-road-service"), Some(B_NIK));

    // B's service saw the client A authenticated, A's exchange id and the caller's trace.
    let got = t.b_rest.wait_received(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path_and_query, "/nik/1601015708900001?detail=ringkas");
    assert_eq!(got[0].header("x-road-client"), Some(RSUD));
    assert_eq!(got[0].header("x-road-id"), Some(id.as_str()));
    assert_eq!(got[0].header("x-agency"), Some("rs-1"));
    assert_eq!(got[0].header("traceparent"), Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));

    // Each side holds its record of the one exchange, with the same id and trace.
    let (ra, rb) = (t.a.record(&id).await, t.b.record(&id).await);
    assert_eq!(ra.client, RSUD);
    assert_eq!(ra.service, B_NIK);
    assert_eq!(ra.peer, "ID/PEMDA/1601/gw1", "A notes the peer it sent to");
    assert_eq!(ra.status, 200);
    assert!(ra.error_type.is_empty(), "{}", ra.error_type);
    assert_eq!(ra.client_cert_sha256, rsud.sha256().to_vec());
    assert_eq!((ra.client_address.as_str(), rb.client_address.as_str()), ("127.0.0.1", "127.0.0.1"));
    assert_eq!(rb.client, RSUD, "B logs the client A asserted");
    assert_eq!(rb.peer, "ID/PEMDA/1602/gw1", "B notes the peer the call came from");
    assert_eq!(rb.service, B_NIK);
    assert_eq!(rb.status, 200);
    assert_eq!(rb.upstream, t.b_rest.url());
    assert_eq!(rb.client_cert_sha256, splpd_certs::load::sha256(t.pki.gateway_chain()[0].as_ref()).to_vec());
    assert_eq!(ra.trace_id, rb.trace_id);
    assert_eq!(hex(&rb.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    // B hashed what A sent and A checked it; both records hold a request hash.
    assert_eq!(rb.request_hash.len(), 64);
    assert_eq!(ra.request_hash.len(), 64);

    // A POST with a body: hashed and checked across the hop too.
    let post = Call::post(format!("/r1/{B_NIK}/echo/batch"), &b"{\"nik\":[\"1601015708900001\"]}"[..])
        .header("x-road-client", RSUD)
        .header("content-type", "application/json");
    let reply = t.a.call(Some(&rsud), Proto::H2, post).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), "{\"nik\":[\"1601015708900001\"]}");
    t.a.stop().await;
    t.b.stop().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_region_call_without_a_grant_is_refused_where_the_grant_is_missing() {
    let t = topology().await;

    // No grant at A: A refuses, and B never sees the call.
    let dishub = t.pki.client(DISHUB);
    let reply = t.a.call(Some(&dishub), Proto::H1, nik_call(B_NIK, DISHUB)).await.unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.xroad_error(), Some("Client.AccessDenied"));
    // A says that it refused, for want of its own grant for calling out, and that it cannot know
    // whether B has such a service, with where B's services are listed.
    let message = reply.json()["message"].as_str().unwrap().to_owned();
    for said in [
        "has no grant here for calling",
        "Refused by ID/PEMDA/1602/gw1 before the call was sent to gateway ID/PEMDA/1601/gw1",
        "ask this region's gateway operator",
        "served by gateway ID/PEMDA/1601/gw1, which alone knows whether it exists",
        "GET /r1/ID/PEMDA/1601/DISDUKCAPIL/listMethods through this gateway",
    ] {
        assert!(message.contains(said), "{said:?} in {message}");
    }
    let ra = t.a.record(reply.exchange_id()).await;
    assert_eq!(ra.error_type, "Client.AccessDenied");
    assert_eq!(ra.peer, "ID/PEMDA/1601/gw1");

    // A grants it, B does not: B refuses, A passes B's refusal on, both log it.
    let dinkes = t.pki.client(DINKES);
    let reply = t.a.call(Some(&dinkes), Proto::H1, nik_call(B_NIK, DINKES)).await.unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.xroad_error(), Some("Client.AccessDenied"));
    assert!(reply.text().contains(DINKES), "B says who was refused: {}", reply.text());
    assert!(
        reply.text().contains("refused by ID/PEMDA/1601/gw1, the service's own gateway"),
        "B says it refused: {}",
        reply.text()
    );
    let id = reply.exchange_id().to_owned();
    let (ra, rb) = (t.a.record(&id).await, t.b.record(&id).await);
    assert_eq!(rb.error_type, "Client.AccessDenied");
    assert_eq!(rb.client, DINKES);
    assert_eq!(ra.error_type, "Client.AccessDenied", "A notes the peer's refusal");
    assert_eq!(ra.status, 403);
    assert!(t.b_rest.received().is_empty(), "no service was called");

    // gRPC without B's grant: PERMISSION_DENIED from B.
    let mut grpc = t.a.grpc_client(Some(&dinkes)).await;
    let status = grpc
        .unary(request(Ask { text: "boleh?".into(), ..Ask::default() }, &[("x-road-service", B_PROBE)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(t.b_grpc.seen().is_empty());

    // A REST service of B called over gRPC, against A's grant of its REST endpoints: A cannot
    // know B's service is REST, but says what the grant suggests.
    let mut grpc = t.a.grpc_client(Some(&t.pki.client(BAPPEDA))).await;
    let status = grpc
        .unary(request(Ask { text: "nik?".into(), ..Ask::default() }, &[("x-road-service", B_NIK)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("The grant opens REST endpoints"), "{status:?}");
    t.a.stop().await;
    t.b.stop().await;
}

/// An agency asks its own gateway about another region's provider, as it would about one of its
/// own region: the call goes to that region's gateway, which answers from its configuration and
/// its grants (A's own grants for calling out are not asked: the directory is open to every
/// identified caller), and each side logs it under the peer's meta-service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_of_another_regions_provider_is_answered_by_that_regions_gateway() {
    let t = topology().await;
    let dishub = t.pki.client(DISHUB);
    let provider = "ID/PEMDA/1601/DISDUKCAPIL";
    let ask = |client: &str, call: &str| Call::get(format!("/r1/{provider}/{call}")).header("x-road-client", client);

    let reply = t.a.call(Some(&dishub), Proto::H1, ask(DISHUB, "listMethods")).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let json = reply.json();
    let listed: Vec<&str> =
        json["service"].as_array().unwrap().iter().map(|s| s["service_code"].as_str().unwrap()).collect();
    assert_eq!(listed, ["down", "nik-verify"], "{}", reply.text());
    assert_eq!(reply.header("x-road-service"), Some("ID/PEMDA/1601/gw1/listMethods"));
    let id = reply.exchange_id().to_owned();
    let (ra, rb) = (t.a.record(&id).await, t.b.record(&id).await);
    for (side, record) in [("A", &ra), ("B", &rb)] {
        assert_eq!(record.service, "ID/PEMDA/1601/gw1/listMethods", "{side}");
        assert_eq!(record.path, format!("/r1/{provider}/listMethods"), "{side}");
        assert_eq!((record.status, record.client.as_str()), (200, DISHUB), "{side}");
    }
    assert_eq!((ra.peer.as_str(), rb.peer.as_str()), ("ID/PEMDA/1601/gw1", "ID/PEMDA/1602/gw1"));

    // allowedMethods is the peer's answer for the caller A names: B grants RSUD, not DINKES.
    let allowed = |client: &'static str| {
        let t = &t;
        async move {
            let reply = t.a.call(Some(&t.pki.client(client)), Proto::H2, ask(client, "allowedMethods")).await.unwrap();
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            let codes: Vec<String> = reply.json()["service"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["service_code"].as_str().unwrap().to_owned())
                .collect();
            codes
        }
    };
    assert_eq!(allowed(RSUD).await, ["down", "nik-verify"]);
    assert_eq!(allowed(DINKES).await, Vec::<String>::new());

    // The peer's refusal comes back as the peer gave it: B has no OpenAPI document of the service.
    let reply = t.a.call(Some(&dishub), Proto::H1, ask(DISHUB, "getOpenAPI?serviceCode=nik-verify")).await.unwrap();
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text());
    let message = reply.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("no OpenAPI document registered at gateway ID/PEMDA/1601/gw1"), "{message}");

    // A method the directory does not answer is refused here, not sent on.
    let before = t.b.records().len();
    let post = Call::post(format!("/r1/{provider}/listMethods"), &b"{}"[..]).header("x-road-client", DISHUB);
    let reply = t.a.call(Some(&dishub), Proto::H1, post).await.unwrap();
    assert_eq!(
        (reply.status, reply.xroad_error()),
        (StatusCode::BAD_REQUEST, Some("Client.BadRequest")),
        "{}",
        reply.text()
    );
    assert_eq!(t.b.records().len(), before, "B never saw it");

    // A national provider's services are not listed: the national SPLP has no metadata services.
    let national = Call::get("/r1/ID/KL/KEMENDAGRI/DUKCAPIL/listMethods").header("x-road-client", DISHUB);
    let reply = t.a.call(Some(&dishub), Proto::H1, national).await.unwrap();
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text());
    assert!(reply.text().contains("reached through the national SPLP"), "{}", reply.text());

    // A provider of a region with no peer is still answered by A itself, with what to do.
    let reply =
        t.a.call(
            Some(&dishub),
            Proto::H1,
            Call::get("/r1/ID/PEMDA/1603/DINKES/listMethods").header("x-road-client", DISHUB),
        )
        .await
        .unwrap();
    assert_eq!(
        (reply.status, reply.xroad_error()),
        (StatusCode::NOT_FOUND, Some("Client.UnknownService")),
        "{}",
        reply.text()
    );
    t.a.stop().await;
    t.b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_region_grpc_call_goes_through_and_both_sides_log_it() {
    let t = topology().await;
    let rsud = t.pki.client(RSUD);
    let mut grpc = t.a.grpc_client(Some(&rsud)).await;
    let resp = grpc
        .unary(request(
            Ask { text: "rujukan lintas daerah".into(), ..Ask::default() },
            &[("x-road-service", B_PROBE), ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")],
        ))
        .await
        .unwrap();
    let id = resp.metadata().get("x-road-id").unwrap().to_str().unwrap().to_owned();
    assert_eq!(resp.into_inner().text, "rujukan lintas daerah");
    let seen = t.b_grpc.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-road-client"), Some(RSUD));
    assert_eq!(seen[0].header("x-road-service"), Some(B_PROBE));
    assert_eq!(seen[0].header("x-road-id"), Some(id.as_str()));
    let (ra, rb) = (t.a.record(&id).await, t.b.record(&id).await);
    assert_eq!((ra.grpc_status, rb.grpc_status), (Some(0), Some(0)));
    assert_eq!((ra.peer.as_str(), rb.peer.as_str()), ("ID/PEMDA/1601/gw1", "ID/PEMDA/1602/gw1"));
    assert_eq!((ra.client.as_str(), rb.client.as_str()), (RSUD, RSUD));
    assert_eq!(hex(&ra.trace_id), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(ra.trace_id, rb.trace_id);
    t.a.stop().await;
    t.b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_both_ways_and_a_peer_speaks_only_for_its_own_region() {
    let t = topology().await;
    // B's client calls A's service through B (B → relay → A).
    let oku = t.pki.peer_client(OKU_RSUD);
    let reply = t.b.call(Some(&oku), Proto::H2, nik_call(A_NIK, OKU_RSUD)).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let ra = t.a.record(reply.exchange_id()).await;
    assert_eq!((ra.client.as_str(), ra.peer.as_str()), (OKU_RSUD, "ID/PEMDA/1601/gw1"));

    // B's gateway certificate asserting a client of A's region: refused by A, however B's
    // certificate is genuine. (The call is made directly with B's certificate, as a B that
    // tried it would.)
    let b_cert = b_gateway_cert(&t.pki);
    let reply = t.a.call(Some(&b_cert), Proto::H2, nik_call(A_NIK, "ID/PEMDA/1602/RSUD")).await.unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.xroad_error(), Some("Client.InvalidClientIdentity"));
    assert!(reply.text().contains("may only speak for clients under ID/PEMDA/1601"), "{}", reply.text());

    // A peer does not get A to relay its calls onward, even to a service A could reach.
    let reply = t.a.call(Some(&b_cert), Proto::H2, nik_call(NATIONAL_NIK, OKU_RSUD)).await.unwrap();
    assert_eq!(reply.xroad_error(), Some("Client.UnknownService"), "{}", reply.text());

    // B's CA minting a client of A's region: refused at identify, whoever presents it.
    let rogue_client = t.pki.rogue_peer_client("ID/PEMDA/1602/RSUD");
    let reply = t.a.call(Some(&rogue_client), Proto::H2, nik_call(A_NIK, "ID/PEMDA/1602/RSUD")).await.unwrap();
    assert_eq!(reply.xroad_error(), Some("Client.InvalidClientIdentity"), "{}", reply.text());

    // B's CA minting a server certificate for a gateway of A's region: refused at identify.
    let rogue = t.pki.rogue_peer_server("ID/PEMDA/1602/gw9");
    let reply = t.a.call(Some(&rogue), Proto::H2, nik_call(A_NIK, "ID/PEMDA/1602/RSUD")).await.unwrap();
    assert_eq!(reply.xroad_error(), Some("Client.InvalidClientIdentity"), "{}", reply.text());
    assert!(reply.text().contains("outside its scopes"), "{}", reply.text());
    t.a.stop().await;
    t.b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_peer_endpoint_fails_over_to_the_next() {
    let mut t = topology().await;
    let rsud = t.pki.client(RSUD);
    let mut ids = Vec::new();
    for i in 0..6 {
        if i == 3 {
            assert!(t.relay_b.connections() > 0, "the first calls went through the first endpoint");
            t.relay_b.kill().await;
        }
        let reply = t.a.call(Some(&rsud), Proto::H1, nik_call(B_NIK, RSUD)).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "call {i}: {}", reply.text());
        ids.push(reply.exchange_id().to_owned());
    }
    let first = t.a.record(&ids[0]).await;
    assert_eq!(first.upstream, t.relay_b.https_url());
    let last = t.a.record(&ids[5]).await;
    let second = format!("https://{}", t.b.addr(splpd_tests::PUBLIC));
    assert_eq!(last.upstream, second, "A moved to B's second endpoint");
    // The call that met the killed endpoint says so in A's record: both attempts, one retry.
    let moved = t.a.record(&ids[3]).await;
    let tried: Vec<(&str, &str)> = moved.attempts.iter().map(|a| (a.endpoint.as_str(), a.outcome.as_str())).collect();
    assert_eq!(tried.len(), 2, "{tried:?}");
    assert_eq!(tried[0].0, t.relay_b.https_url().trim_end_matches('/'));
    assert!(tried[0].1.starts_with("no connection") || tried[0].1.starts_with("broke off"), "{tried:?}");
    assert_eq!(tried[1], (second.as_str(), "answered 200"));
    assert_eq!(moved.retries, 1);
    for id in &ids {
        t.b.record(id).await;
    }
    t.a.stop().await;
    t.b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_behind_a_peer_names_the_gateway_whose_operator_has_its_cause() {
    Logs::capture();
    let mut t = topology().await;
    let rsud = t.pki.client(RSUD);
    let message = |reply: &splpd_tests::Reply| reply.json()["message"].as_str().unwrap_or_default().to_owned();

    // B's own service is down: B's refusal reaches RSUD through A, and names B, whose operator
    // alone can look it up.
    let reply = t.a.call(Some(&rsud), Proto::H1, nik_call(B_DOWN, RSUD)).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert_eq!(reply.xroad_error(), Some("Server.ServerProxy.ServiceFailed"));
    let told = message(&reply);
    assert!(told.contains("the operator of gateway ID/PEMDA/1601/gw1 finds the cause"), "{told}");
    let b_side = t.b.record(reply.exchange_id()).await;
    assert!(!b_side.upstream.is_empty() && !told.contains(b_side.upstream.trim_start_matches("http://")), "{told}");
    // A's record tells it from an unreachable peer: B answered, with its refusal.
    let a_side = t.a.record(reply.exchange_id()).await;
    let outcomes: Vec<&str> = a_side.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["answered 502"], "{a_side:#?}");
    assert_eq!(a_side.error_type, "Server.ServerProxy.ServiceFailed");
    // A's operator is told that the error is the peer's, and which peer.
    let logged = Logs::capture().lines_with(reply.exchange_id()).await;
    assert!(
        logged
            .iter()
            .any(|l| l.contains("the peer gateway answered with its own error Server.ServerProxy.ServiceFailed")
                && l.contains("ID/PEMDA/1601/gw1")),
        "{logged:#?}"
    );

    // B cannot be reached at all: A's own refusal names A.
    t.relay_b.kill().await;
    let b = t.b;
    b.stop().await;
    let reply = t.a.call(Some(&rsud), Proto::H1, nik_call(B_NIK, RSUD)).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    let told = message(&reply);
    assert!(told.contains("could not reach peer gateway ID/PEMDA/1601/gw1"), "{told}");
    assert!(told.contains("the operator of gateway ID/PEMDA/1602/gw1 finds the cause"), "{told}");
    let a_side = t.a.record(reply.exchange_id()).await;
    let outcomes: Vec<&str> = a_side.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes.len(), 2, "both of B's endpoints were tried: {a_side:#?}");
    assert!(outcomes.iter().all(|o| o.starts_with("no connection") || o.starts_with("broke off")), "{outcomes:?}");
    t.a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn national_services_are_called_at_tenant_urls_with_a_cached_token() {
    let t = topology().await;
    let rsud = t.pki.client(RSUD);
    for _ in 0..3 {
        let reply = t.a.call(Some(&rsud), Proto::H1, nik_call(NATIONAL_NIK, RSUD)).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.json()["api_path"], format!("/t/{TENANT}/dukcapil-nik/v1/nik/1601015708900001"));
        let record = t.a.record(reply.exchange_id()).await;
        assert_eq!(record.client, RSUD);
        assert_eq!(record.upstream, t.national.url());
    }
    assert_eq!(t.national.tokens_issued(), 1, "one token serves every call until it is due");
    let calls = t.national.calls();
    assert_eq!(calls.len(), 3);
    for c in &calls {
        assert_eq!(c.path_and_query, format!("/t/{TENANT}/dukcapil-nik/v1/nik/1601015708900001?detail=ringkas"));
        assert_eq!(c.headers.get(TOKEN_HEADER).unwrap(), "Bearer tok-1");
        assert!(c.headers.get("authorization").is_none(), "the token goes in the configured header only");
        assert_eq!(c.headers.get("x-road-client").unwrap(), RSUD);
    }

    // The API manager revokes the token: the next call is refused once, then sent again with a
    // fresh token, and succeeds.
    t.national.revoke_all();
    let reply = t.a.call(Some(&rsud), Proto::H1, nik_call(NATIONAL_NIK, RSUD)).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(t.national.tokens_issued(), 2);
    let statuses: Vec<u16> = t.national.calls()[3..].iter().map(|c| c.status.as_u16()).collect();
    assert_eq!(statuses, [401, 200]);
    assert_eq!(t.national.calls()[4].headers.get(TOKEN_HEADER).unwrap(), "Bearer tok-2");

    // Refused again with the fresh token: the refusal is passed on, with no further retry.
    let before = (t.national.calls().len(), t.national.tokens_issued());
    t.national.refuse_every_token(true);
    let reply = t.a.call(Some(&rsud), Proto::H1, nik_call(NATIONAL_NIK, RSUD)).await.unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "the API manager's answer passes through");
    assert_eq!(t.national.calls().len(), before.0 + 2, "one retry, no more");
    assert_eq!(t.national.tokens_issued(), before.1 + 1, "one fresh token for the retry");

    // The secret never reached a record or an answer.
    for r in t.a.records() {
        let text = format!("{r:?}");
        assert!(!text.contains(CLIENT_SECRET) && !text.contains("tok-"), "{text}");
    }
    assert_eq!(t.national.token_refusals(), 0, "the client credentials were right every time");

    // gRPC to a national (REST) API is a clear refusal.
    let mut grpc = t.a.grpc_client(Some(&rsud)).await;
    let status = grpc.unary(request(Ask::default(), &[("x-road-service", NATIONAL_NIK)])).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    t.a.stop().await;
    t.b.stop().await;
}

/// B's genuine gateway certificate.
fn b_gateway_cert(pki: &Pki) -> splpd_tests::ClientCert {
    splpd_tests::ClientCert {
        identity: "ID/PEMDA/1601/gw1".into(),
        chain: pki.peer_gateway(),
        key: splpd_certs::load::read_private_key(&pki.dir().join("gw-1601.key")).unwrap(),
    }
}

/// A server holding `cert` that answers every call with 200 and the given
/// `X-Road-Request-Hash` (or none), counting the calls it answers: with B's genuine
/// certificate, a peer whose answer does not belong to the request.
async fn forged_peer(
    cert: &splpd_tests::ClientCert,
    hash: Option<&'static str>,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let acceptor = tokio_rustls::TlsAcceptor::from(splpd_tests::grpc::h2_server_config(cert));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&answered);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, count) = (acceptor.clone(), Arc::clone(&count));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    count.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let mut resp = http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")));
                        if let Some(h) = hash {
                            resp.headers_mut().insert("x-road-request-hash", http::HeaderValue::from_static(h));
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_does_not_prove_its_request_is_not_passed_on() {
    let pki = Pki::new();
    let (wrong, _) = forged_peer(&b_gateway_cert(&pki), Some("dGhpcyBpcyBub3QgdGhlIGhhc2g=")).await;
    let (missing, _) = forged_peer(&b_gateway_cert(&pki), None).await;
    let peer = |addr: std::net::SocketAddr, prefix: &str| {
        format!(
            "[[peer]]\nid = \"ID/PEMDA/1601/gw1\"\nendpoints = [\"https://{addr}\"]\nauthoritative = [\"{prefix}\"]\n\
             trust_anchor = \"peer-1601\"\n"
        )
    };
    // Two gateways of A, each with the one peer pointing at a different forged server.
    let a_wrong = RegionBuilder::new(&pki).grant(&grant(B_NIK, RSUD)).toml(&peer(wrong, "ID/PEMDA/1601")).start().await;
    let a_missing =
        RegionBuilder::new(&pki).grant(&grant(B_NIK, RSUD)).toml(&peer(missing, "ID/PEMDA/1601")).start().await;
    let rsud = pki.client(RSUD);
    for (a, what) in [(&a_wrong, "differs"), (&a_missing, "is missing")] {
        let reply = a.call(Some(&rsud), Proto::H1, nik_call(B_NIK, RSUD)).await.unwrap();
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "the hash {what}: {}", reply.text());
        assert_eq!(reply.xroad_error(), Some("Server.ClientProxy.RequestHashMismatch"), "the hash {what}");
        let record = a.record(reply.exchange_id()).await;
        assert_eq!(record.error_type, "Server.ClientProxy.RequestHashMismatch");
        assert_eq!(record.peer, "ID/PEMDA/1601/gw1");
    }
    a_wrong.stop().await;
    a_missing.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_endpoint_showing_another_gateways_certificate_gets_no_call() {
    Logs::capture();
    let pki = Pki::new();
    // A certificate of B's own CA, for the endpoint's address, but for another gateway of B's
    // region: whoever holds it may not answer for B's gateway.
    let (other, answered) = forged_peer(&pki.rogue_peer_server("ID/PEMDA/1601/gw2"), Some("x")).await;
    let a = RegionBuilder::new(&pki)
        .grant(&grant(B_NIK, RSUD))
        .toml(&format!(
            "[[peer]]\nid = \"ID/PEMDA/1601/gw1\"\nendpoints = [\"https://{other}\"]\n\
             authoritative = [\"ID/PEMDA/1601\"]\ntrust_anchor = \"peer-1601\"\n"
        ))
        .start()
        .await;
    let reply = a.call(Some(&pki.client(RSUD)), Proto::H1, nik_call(B_NIK, RSUD)).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert!(reply.text().contains("could not reach peer gateway ID/PEMDA/1601/gw1"), "{}", reply.text());
    assert_eq!(answered.load(Ordering::SeqCst), 0, "the call went to a gateway that is not the peer");
    let record = a.record(reply.exchange_id()).await;
    assert!(record.attempts.iter().all(|a| a.outcome.starts_with("no connection")), "{record:#?}");
    // The operator is told whose certificate answered and what the peer's must carry.
    let logged = Logs::capture().lines_with(reply.exchange_id()).await;
    let line = logged.iter().find(|l| l.contains("identifies")).unwrap_or_else(|| panic!("{logged:#?}"));
    assert!(line.contains("identifies server ID/PEMDA/1601/gw2, not peer ID/PEMDA/1601/gw1"), "{line}");
    assert!(line.contains("carries urn:splp:server:ID:PEMDA:1601:gw1"), "{line}");
    assert!(!line.contains("unexpected error") && !line.contains("OtherError"), "{line}");
    a.stop().await;
}

/// A region whose only anchor for the national SPLP's CA is scoped to identifiers, as a
/// neighbour's CA is: whether `[national]` pins it with `trust_anchor`.
async fn national_region(pki: &Pki, national: &NationalStandIn, pinned: bool) -> Region {
    std::fs::write(pki.dir().join("national.secret"), format!("{CLIENT_SECRET}\n")).unwrap();
    RegionBuilder::new(pki)
        .grant(&grant(NATIONAL_NIK, RSUD))
        .toml(&format!(
            "[[trust_anchor]]\nname = \"kl-gateway\"\nca = \"{}\"\nscopes = [\"ID/KL/KOMDIGI/splp\"]\n\n\
             [national]\nprefixes = [\"ID/KL\"]\nbase_url = \"{url}\"\ntenant = \"{TENANT}\"\n\
             token_url = \"{url}/oauth2/token\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_file = \"national.secret\"\n\
             token_header = \"{TOKEN_HEADER}\"\n{}\n\
             [[national.api]]\nservice = \"{NATIONAL_NIK}\"\napi = \"dukcapil-nik\"\nversion = \"v1\"",
            national.ca_cert().display(),
            if pinned { "trust_anchor = \"kl-gateway\"\n" } else { "" },
            url = national.url(),
        ))
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_manager_is_not_vouched_for_by_a_ca_scoped_to_other_identities() {
    Logs::capture();
    let pki = Pki::new();
    let national = NationalStandIn::start(pki.dir(), TOKEN_HEADER, 3600).await;
    let rsud = pki.client(RSUD);

    // A CA trusted to vouch for one gateway's identity (as a neighbour's is) does not vouch for
    // the host the client secret goes to: the handshake fails before the secret is sent.
    let unpinned = national_region(&pki, &national, false).await;
    let reply = unpinned.call(Some(&rsud), Proto::H1, nik_call(NATIONAL_NIK, RSUD)).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert_eq!(national.token_requests(), 0, "no token was asked for: the secret stayed home");
    // The operator is told what the API manager's certificate must chain to.
    let logged = Logs::capture().lines_with(reply.exchange_id()).await;
    assert!(logged.iter().any(|l| l.contains("[national] trust_anchor names")), "{logged:#?}");
    assert!(national.calls().is_empty());
    unpinned.stop().await;

    // Named in `[national] trust_anchor`, the same CA is the API manager's.
    let pinned = national_region(&pki, &national, true).await;
    let reply = pinned.call(Some(&rsud), Proto::H1, nik_call(NATIONAL_NIK, RSUD)).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(national.tokens_issued(), 1);
    pinned.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_quota_refusal_says_it_is_the_peers() {
    let t = topology().await;
    let rsud = t.pki.client(RSUD);
    // B's quota for RSUD on its service: one call a second, the first spent here.
    let first = t.a.call(Some(&rsud), Proto::H1, nik_call(B_DOWN, RSUD)).await.unwrap();
    assert_ne!(first.status, StatusCode::TOO_MANY_REQUESTS, "{}", first.text());
    let reply = t.a.call(Some(&rsud), Proto::H1, nik_call(B_DOWN, RSUD)).await.unwrap();
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{}", reply.text());
    assert_eq!(reply.xroad_error(), Some("Client.RateLimited"));
    let told = reply.json()["message"].as_str().unwrap().to_owned();
    assert!(told.contains("refused by ID/PEMDA/1601/gw1, the service's own gateway, by its own quota"), "{told}");
    assert!(reply.header("retry-after").is_some(), "B's wait is passed on");
    t.a.stop().await;
    t.b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_no_longer_accepts_this_gateway_is_not_told_to_the_caller_as_its_own_fault() {
    let t = topology().await;
    let rsud = t.pki.client(RSUD);
    // One call opens A's connection to B.
    let reply = t.a.call(Some(&rsud), Proto::H2, nik_call(B_NIK, RSUD)).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    // B's operator revokes A's gateway certificate and B reloads: on the connection A keeps, B
    // refuses A itself with 401 Client.Unauthenticated.
    t.pki.revoke_gateway();
    let reloader = Reloader::new(t.b.config_path(), Arc::clone(t.b.gateway()));
    reloader.reload().await.unwrap();
    let reply = t.a.call(Some(&rsud), Proto::H2, nik_call(B_NIK, RSUD)).await.unwrap();
    // RSUD's own certificate is fine: it is told that the hop failed, not that it is unknown.
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert_eq!(reply.xroad_error(), Some("Server.ServerProxy.ServiceFailed"));
    let told = reply.json()["message"].as_str().unwrap().to_owned();
    assert!(told.contains("peer gateway ID/PEMDA/1601/gw1 refused this gateway's certificate"), "{told}");
    let ra = t.a.record(reply.exchange_id()).await;
    assert_eq!((ra.status, ra.error_type.as_str()), (502, "Server.ServerProxy.ServiceFailed"), "{ra:#?}");
    t.a.stop().await;
    t.b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_national_splp_calls_in_as_a_peer_while_its_services_go_through_the_national_connector() {
    let t = topology().await;
    // The national SPLP's gateway, asserting a national agency, calls A's service: its [[peer]]
    // has no endpoints, so it speaks for ID/KL inbound while calls to ID/KL still go out through
    // [national].
    let national_gateway = splpd_tests::ClientCert {
        identity: NATIONAL_GATEWAY.into(),
        chain: splpd_certs::load::read_certificates(&t.pki.dir().join("national/splp.crt")).unwrap(),
        key: splpd_certs::load::read_private_key(&t.pki.dir().join("national/splp.key")).unwrap(),
    };
    let reply = t.a.call(Some(&national_gateway), Proto::H2, nik_call(A_NIK, NATIONAL_CLIENT)).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let rec = t.a.record(reply.exchange_id()).await;
    assert_eq!((rec.client.as_str(), rec.peer.as_str()), (NATIONAL_CLIENT, NATIONAL_GATEWAY), "{rec:#?}");
    // It speaks for national identifiers alone.
    let reply = t.a.call(Some(&national_gateway), Proto::H2, nik_call(A_NIK, RSUD)).await.unwrap();
    assert_eq!(reply.xroad_error(), Some("Client.InvalidClientIdentity"), "{}", reply.text());

    // And a national service is still called at the API manager.
    let rsud = t.pki.client(RSUD);
    let reply = t.a.call(Some(&rsud), Proto::H1, nik_call(NATIONAL_NIK, RSUD)).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(t.a.record(reply.exchange_id()).await.upstream, t.national.url());
    t.a.stop().await;
    t.b.stop().await;
}
