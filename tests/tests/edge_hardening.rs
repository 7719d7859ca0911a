//! Edge hardening on real sockets (docs/design.md, "Edge limits"): an HTTP/2 rapid-reset flood
//! and slowloris clients while a normal client keeps being served, the per-listener connection
//! limit answering 503 `Server.Overloaded` and serving again once connections close, and header
//! lists too large for the configured limits refused on HTTP/2 and HTTP/1.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Request, StatusCode};
use rustls::pki_types::ServerName;
use splpd_tests::{Call, ClientCert, PUBLIC, Pki, Proto, Region, RegionBuilder, Upstream};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const SERVICE: &str = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify";
const DINKES: &str = "ID/PEMDA/1602/DINKES";

fn json_call() -> Call {
    Call::get(format!("/r1/{SERVICE}/json/x"))
}

async fn region(pki: &Pki, upstream: &Upstream, limits: &str) -> Region {
    RegionBuilder::new(pki)
        .service(SERVICE, &upstream.url(), "")
        .grant(&format!("service = \"{SERVICE}\"\nclient = \"{DINKES}\""))
        .toml(&format!("[limits]\n{limits}"))
        .start()
        .await
}

/// A TLS connection to the public listener, offering only `proto` in ALPN.
async fn tls_connect(region: &Region, cert: &ClientCert, proto: Proto) -> TlsStream<TcpStream> {
    let config = splpd_tests::client::tls_config(region.roots(), Some(cert), proto);
    let tcp = TcpStream::connect(region.addr(PUBLIC)).await.unwrap();
    TlsConnector::from(config).connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap()
}

/// `rounds` calls one after another, alternating HTTP/1.1 and HTTP/2, each on a new connection;
/// returns the statuses.
async fn normal_client(region: &Region, cert: &ClientCert, rounds: usize) -> Vec<Result<StatusCode, String>> {
    let mut statuses = Vec::new();
    for i in 0..rounds {
        let proto = if i % 2 == 0 { Proto::H1 } else { Proto::H2 };
        let reply = region.call(Some(cert), proto, json_call()).await;
        statuses.push(reply.map(|r| r.status).map_err(|e| e.to_string()));
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_does_not_keep_normal_clients_from_being_served() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let region = region(&pki, &upstream, "").await;
    let attacker = pki.client(DINKES);
    let normal = pki.client(DINKES);

    // The attacker opens streams and resets each at once, as fast as HTTP/2 lets it, in a
    // bounded loop; it stops early only if the gateway closes its connection.
    const FLOOD: usize = 3000;
    let tls = tls_connect(&region, &attacker, Proto::H2).await;
    let flood = tokio::spawn(async move {
        let (sender, conn) = h2::client::handshake(tls).await.unwrap();
        let conn = tokio::spawn(conn);
        let mut sender = Some(sender);
        let mut sent = 0;
        for _ in 0..FLOOD {
            let Some(Ok(mut ready)) = (match sender.take() {
                Some(s) => Some(s.ready().await),
                None => None,
            }) else {
                break;
            };
            let req = Request::get(format!("https://localhost/r1/{SERVICE}/json/flood")).body(()).unwrap();
            let Ok((_response, mut stream)) = ready.send_request(req, false) else { break };
            stream.send_reset(h2::Reason::CANCEL);
            sender = Some(ready);
            sent += 1;
        }
        conn.abort();
        sent
    });
    let served = normal_client(&region, &normal, 20).await;
    let sent = flood.await.unwrap();

    assert!(sent > 0, "the flood never got a stream out");
    eprintln!("the flood opened and reset {sent} streams; the normal client made {} calls beside it", served.len());
    assert!(
        served.iter().all(|s| matches!(s, Ok(StatusCode::OK))),
        "a normal client was not served during the flood ({sent} streams reset): {served:?}"
    );
    // And after it.
    assert_eq!(region.call(Some(&normal), Proto::H2, json_call()).await.unwrap().status, StatusCode::OK);
    region.stop().await;
}

/// How a slow client's connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The gateway closed it (end of stream, or a reset).
    ClosedByGateway,
    /// The client ran out of bytes to trickle before anything happened.
    StillOpen,
}

/// Sends `head` one byte every `every`, never finishing the headers, until the gateway closes
/// the connection or `max_bytes` have gone out.
async fn trickle(mut tls: TlsStream<TcpStream>, head: &'static [u8], every: Duration, max_bytes: usize) -> Ended {
    let mut buf = [0u8; 1024];
    for i in 0..max_bytes {
        tokio::select! {
            read = tls.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Ended::ClosedByGateway,
                // Whatever the gateway answers (hyper may send a 408), the connection must end.
                Ok(_) => continue,
            },
            () = tokio::time::sleep(every) => {
                let byte = head.get(i).copied().unwrap_or(b'a');
                if tls.write_all(&[byte]).await.is_err() || tls.flush().await.is_err() {
                    return Ended::ClosedByGateway;
                }
            }
        }
    }
    Ended::StillOpen
}

/// Reads until the gateway closes the connection, for at most `limit`.
async fn wait_closed(mut tls: TlsStream<TcpStream>, limit: Duration) -> Ended {
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // HTTP/2: the gateway's SETTINGS, then its GOAWAY.
                Ok(_) => {}
            }
        }
    })
    .await;
    if closed.is_ok() { Ended::ClosedByGateway } else { Ended::StillOpen }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_closed_after_the_header_timeout_while_others_are_served() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let region = region(&pki, &upstream, "header_read_timeout = \"2s\"\nidle_timeout = \"3s\"").await;
    let slow = pki.client(DINKES);
    let normal = pki.client(DINKES);

    // Thirty HTTP/1.1 clients trickle a request head that never ends, a byte every 200 ms: at
    // 300 bytes each would take a minute. Six HTTP/2 clients finish the handshake and say nothing.
    let head: &'static [u8] =
        b"GET /r1/ID/PEMDA/1602/DISDUKCAPIL/nik-verify/json/x HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
    let mut slow_clients = Vec::new();
    for _ in 0..30 {
        let tls = tls_connect(&region, &slow, Proto::H1).await;
        slow_clients.push(tokio::spawn(trickle(tls, head, Duration::from_millis(200), 300)));
    }
    let mut silent_clients = Vec::new();
    for _ in 0..6 {
        let tls = tls_connect(&region, &slow, Proto::H2).await;
        silent_clients.push(tokio::spawn(wait_closed(tls, Duration::from_secs(60))));
    }
    assert!(region.edge_stats(PUBLIC).open.load(Ordering::Relaxed) >= 36);

    let served = normal_client(&region, &normal, 20).await;
    assert!(
        served.iter().all(|s| matches!(s, Ok(StatusCode::OK))),
        "a normal client was not served beside the slow ones: {served:?}"
    );
    for client in slow_clients {
        assert_eq!(client.await.unwrap(), Ended::ClosedByGateway, "a slow header sender was left open");
    }
    for client in silent_clients {
        assert_eq!(client.await.unwrap(), Ended::ClosedByGateway, "a silent HTTP/2 connection was left open");
    }
    // None of them ever became an exchange.
    assert!(upstream.received().iter().all(|r| r.path_and_query == "/json/x"));
    assert_eq!(region.wait_records(20).await.len(), 20, "one record per normal call, none for the slow ones");
    region.stop().await;
}

/// Waits (bounded) until the listener counts `n` open connections.
async fn wait_open(region: &Region, n: usize) {
    let stats = region.edge_stats(PUBLIC);
    for _ in 0..1000 {
        if stats.open.load(Ordering::Relaxed) == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the listener has {} connections open, not {n}", stats.open.load(Ordering::Relaxed));
}

/// Three connections of `client` held open (HTTP/1.1, HTTP/2, HTTP/1.1), once the listener
/// counts them.
async fn hold_three(region: &Region, client: &ClientCert) -> Vec<TlsStream<TcpStream>> {
    let held = vec![
        tls_connect(region, client, Proto::H1).await,
        tls_connect(region, client, Proto::H2).await,
        tls_connect(region, client, Proto::H1).await,
    ];
    wait_open(region, 3).await;
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_connection_limit_clients_get_503_overloaded_and_are_served_once_it_frees() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let region = region(&pki, &upstream, "max_connections = 3").await;
    let client = pki.client(DINKES);

    let held = hold_three(&region, &client).await;

    for proto in [Proto::H1, Proto::H2] {
        let reply = region.call(Some(&client), proto, json_call()).await.unwrap();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{proto:?}: {}", reply.text());
        assert_eq!(reply.xroad_error(), Some("Server.Overloaded"));
        assert_eq!(reply.json()["type"], "Server.Overloaded");
        assert!(reply.header("retry-after").is_some());
    }
    let stats = region.edge_stats(PUBLIC);
    assert_eq!(stats.shed.load(Ordering::Relaxed), 2);
    assert!(upstream.received().is_empty(), "a shed call must not reach the service");

    drop(held);
    wait_open(&region, 0).await;
    let reply = region.call(Some(&client), Proto::H1, json_call()).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    region.stop().await;
}

/// One address may hold `connections_per_address` connections to a listener; past it its new
/// ones are answered 503 saying so, while another address is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_share_of_connections() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let region = region(&pki, &upstream, "connections_per_address = 3").await;
    let client = pki.client(DINKES);
    let held = hold_three(&region, &client).await;
    let reply = region.call(Some(&client), Proto::H1, json_call()).await.unwrap();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.text());
    assert_eq!(reply.xroad_error(), Some("Server.Overloaded"));
    assert!(reply.json()["message"].as_str().unwrap().contains("connections_per_address"), "{}", reply.text());
    // Another address is served meanwhile.
    let config = splpd_tests::client::tls_config(region.roots(), Some(&client), Proto::H1);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from(([127, 0, 0, 2], 0))).unwrap();
    let tcp = socket.connect(region.addr(PUBLIC)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let get = http::Request::get(format!("/r1/{SERVICE}/json/x"))
        .header("host", "localhost")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(get).await.unwrap().status(), StatusCode::OK);
    // And once the first address's connections close, it is served again.
    drop(held);
    wait_open(&region, 1).await;
    let reply = region.call(Some(&client), Proto::H1, json_call()).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    region.stop().await;
}

/// A caller the gateway cannot identify costs a record per refusal; past `refusals_per_address`
/// a minute, counted across listeners, its refusals get no record: a connection without a
/// certificate is closed unanswered, and a request on a listener that lets callers without one
/// in gets a bare 401 and its connection closed. The operator is told which address. Identified
/// callers, from the same address, are served all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_refusal_budget_an_unidentified_caller_is_refused_unrecorded() {
    const LEGACY: &str = "ID/PEMDA/1602/SIMPEG";
    let logs = splpd_tests::logs::Logs::capture();
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let region = RegionBuilder::new(&pki)
        .service(SERVICE, &upstream.url(), "")
        .grant(&format!("service = \"{SERVICE}\"\nclient = \"{DINKES}\""))
        .grant(&format!("service = \"{SERVICE}\"\nclient = \"{LEGACY}\""))
        .http_listener("intranet", &[LEGACY])
        .toml("[limits]\nrefusals_per_address = 3")
        .start()
        .await;

    for proto in [Proto::H1, Proto::H2] {
        let reply = region.call(None, proto, json_call()).await.unwrap();
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{proto:?}: {}", reply.text());
        let record = region.record(reply.exchange_id()).await;
        assert_eq!((record.status, record.client_address.as_str()), (401, "127.0.0.1"));
    }
    let reply = region.call_plain("intranet", json_call()).await.unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    assert_eq!(region.record(reply.exchange_id()).await.status, 401);
    assert_eq!(region.gateway().refusals().unrecorded(), 0);

    // Past the budget: on the listener that serves callers without a certificate, a bare 401
    // with no record, and hyper's own 400 to a malformed head with no record either; where a
    // certificate is required, no answer.
    let bare = region.call_plain("intranet", json_call()).await.unwrap();
    assert_eq!(bare.status, StatusCode::UNAUTHORIZED);
    assert_eq!(bare.header("x-road-id"), None, "no exchange was recorded: {bare:?}");
    let mut tcp = TcpStream::connect(region.addr("intranet")).await.unwrap();
    tcp.write_all(b"GET /r1/x HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    assert!(answer.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&answer));
    drop(tcp);
    for proto in [Proto::H2, Proto::H1] {
        let closed = region.call(None, proto, json_call()).await;
        assert!(closed.is_err(), "{proto:?}: past the budget the connection is closed unanswered: {closed:?}");
    }
    // (The malformed head is counted once hyper has closed its connection.)
    for _ in 0..100 {
        if region.gateway().refusals().unrecorded() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(region.gateway().refusals().unrecorded(), 4);
    let warned = logs.lines_with("refusals_per_address allows a minute").await;
    assert_eq!(warned.len(), 1, "warned once a minute per address, not per refusal: {warned:#?}");
    assert!(warned[0].contains("127.0.0.1") && warned[0].contains("WARN"), "{warned:#?}");

    // Callers that are identified are not held to the budget of their address, when served or
    // when refused.
    let reply = region.call(Some(&pki.client(DINKES)), Proto::H2, json_call()).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let reply = region.call_plain("intranet", json_call().header("x-road-client", LEGACY)).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let elsewhere = Call::get("/r1/ID/PEMDA/1602/DISDUKCAPIL/unknown/x").header("x-road-client", LEGACY);
    let refused = region.call_plain("intranet", elsewhere).await.unwrap();
    assert!(refused.status.is_client_error(), "{}", refused.text());
    let record = region.record(refused.exchange_id()).await;
    assert_eq!((record.client.as_str(), record.status), (LEGACY, u32::from(refused.status.as_u16())));
    let records = region.wait_records(6).await;
    assert_eq!(records.iter().filter(|r| r.status == 401).count(), 3, "no record of the refusals past the budget");
    assert!(records.iter().all(|r| r.status != 400), "no record of the malformed head past the budget");
    region.stop().await;
}

/// `http://` given for the `https://` port: the plain request is answered in plain HTTP, 400 with
/// what to do, instead of a TLS alert the client would show as garbage or an empty reply. A
/// gRPC client without TLS gets a gRPC status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_request_on_the_tls_port_is_told_to_use_https() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let region = region(&pki, &upstream, "").await;
    let mut tcp = TcpStream::connect(region.addr(PUBLIC)).await.unwrap();
    tcp.write_all(format!("GET /r1/{SERVICE}/json/x HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("Client.BadRequest") && answer.contains("call https://"), "{answer}");
    // Nothing is recorded of it, so no exchange id is given that would name a record.
    assert!(answer.contains("\"detail\":\"\"") && !answer.to_lowercase().contains("x-road-id"), "{answer}");

    // HTTP/2 without TLS, as grpcurl -plaintext speaks it.
    let tcp = TcpStream::connect(region.addr(PUBLIC)).await.unwrap();
    let (sender, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut sender = sender.ready().await.unwrap();
    let req = Request::post("http://gw/kesehatan.v1.Rujukan/Kirim")
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let (answer, _) = sender.send_request(req, true).unwrap();
    let answer = answer.await.unwrap();
    assert_eq!(answer.headers()["grpc-status"], "3", "{answer:?}");
    // In the words of its own tool.
    let message = answer.headers()["grpc-message"].to_str().unwrap();
    assert!(message.contains("came without TLS") && message.contains("(without -plaintext)"), "{answer:?}");
    assert!(!message.contains("https://"), "{answer:?}");
    region.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_lists_over_the_limit_are_refused_on_http2_and_http1() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let region = region(&pki, &upstream, "max_header_bytes = \"8 KiB\"").await;
    let client = pki.client(DINKES);

    // A little over: the exchange path answers with its X-Road error, and logs it.
    for proto in [Proto::H1, Proto::H2] {
        let reply =
            region.call(Some(&client), proto, json_call().header("x-padding", "p".repeat(10 * 1024))).await.unwrap();
        assert_eq!(reply.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "{proto:?}");
        assert_eq!(reply.xroad_error(), Some("Client.BadRequest"), "{proto:?}");
        let record = region.record(reply.exchange_id()).await;
        assert_eq!(record.status, 431);
    }

    // Far over, on HTTP/2: the protocol layer refuses the stream before the gateway reads it.
    let far = || json_call().header("x-padding", "p".repeat(24 * 1024));
    match region.call(Some(&client), Proto::H2, far()).await {
        Ok(reply) => assert_eq!(reply.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Err(e) => assert!(e.to_string().contains("refused") || e.to_string().contains("stream"), "{e}"),
    }

    // Far over, on HTTP/1.1: hyper answers 431 itself, and the refusal is logged all the same.
    let before = region.records().len();
    let reply = region.call(Some(&client), Proto::H1, far()).await.unwrap();
    assert_eq!(reply.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let records = region.wait_records(before + 1).await;
    let logged = records.last().unwrap();
    assert_eq!((logged.status, logged.error_type.as_str()), (431, "Client.BadRequest"));
    assert_eq!(logged.client, DINKES);

    assert!(upstream.received().is_empty(), "no oversized request may reach the service");
    // The connection-level refusals leave the gateway serving.
    let ok = region.call(Some(&client), Proto::H2, json_call()).await.unwrap();
    assert_eq!(ok.status, StatusCode::OK);
    region.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_its_answer_is_cut_off_and_the_exchange_logged_abandoned() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let region = region(&pki, &upstream, "send_timeout = \"1s\"").await;
    let dinkes = pki.client(DINKES);
    // Asks over HTTP/1.1 for an answer far larger than the sockets' buffers, and reads nothing.
    let id = uuid::Uuid::new_v4().hyphenated().to_string();
    let mut tls = tls_connect(&region, &dinkes, Proto::H1).await;
    let head = format!("GET /r1/{SERVICE}/large/200000000/x HTTP/1.1\r\nhost: localhost\r\nx-road-id: {id}\r\n\r\n");
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    // The exchange ends as abandoned, though the client keeps its connection open.
    let record = region.record(&id).await;
    assert_eq!(record.error_type, "Client.ResponseAbandoned", "{record:#?}");
    assert!(record.response_body_bytes < 200_000_000, "{record:#?}");
    // And the connection is closed: what the client reads now ends.
    assert!(matches!(wait_closed(tls, Duration::from_secs(20)).await, Ended::ClosedByGateway));
    // The service is free for the next call.
    let reply = region.call(Some(&dinkes), Proto::H1, json_call()).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    region.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_http1_request_is_answered_400_and_logged() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let region = region(&pki, &upstream, "").await;
    let dinkes = pki.client(DINKES);
    let heads: [&[u8]; 3] = [
        b"GET /r1/x HTTP/1.1\r\nhost: localhost\r\na header line without a colon\r\n\r\n",
        b"POST /r1/x HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
        b"GET /r1/x HTTP/1.1\r\nhost: localhost\r\nx-a: 1\r\n folded\r\n\r\n",
    ];
    for (n, head) in heads.into_iter().enumerate() {
        let before = region.records().len();
        let mut tls = tls_connect(&region, &dinkes, Proto::H1).await;
        tls.write_all(head).await.unwrap();
        tls.flush().await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "head {n}: {answer}");
        let records = region.wait_records(before + 1).await;
        let logged = records.last().unwrap();
        assert_eq!((logged.status, logged.error_type.as_str()), (400, "Client.BadRequest"), "head {n}");
        assert_eq!((logged.client.as_str(), logged.client_cert_sha256.clone()), (DINKES, dinkes.sha256().to_vec()));
        assert_eq!(logged.client_address, "127.0.0.1");
    }
    // An HTTP/2 preface on a connection that chose HTTP/1.1 gets no answer from hyper, and so no
    // record of an answer that was never given.
    let before = region.records().len();
    let mut tls = tls_connect(&region, &dinkes, Proto::H1).await;
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(region.records().len(), before);
    assert!(upstream.received().is_empty());
    region.stop().await;
}
