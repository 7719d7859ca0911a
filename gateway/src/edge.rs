//! Edge hardening: what a connection lives under before and beside the exchange path. The
//! HTTP/1.1 and HTTP/2 settings taken from `[limits]`, the per-listener connection limit with
//! load shedding, and the idle watchdog that closes connections with nothing in progress.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::audit::RecordBuilder;
use crate::config::{AuditMode, ConnectionType, Limits};
use crate::error::GatewayError;
use crate::exchange::ResponseBody;
use crate::identify::ConnectionAuth;
use crate::runtime::ListenerRuntime;

/// Connections answered `503 Server.Overloaded` at once, per listener, beyond its limit. Past
/// these the gateway closes new connections without a word: answering costs a TLS handshake,
/// and under a flood the answer must not become the overload.
const SHED_ANSWERS: usize = 64;

/// Time a shed connection is given for its handshake, its request and the 503.
const SHED_TIMEOUT: Duration = Duration::from_secs(5);

/// How long after an answer that closes an HTTP/2 connection its GOAWAY is sent. hyper's client
/// drops an answer it has received but not yet handed over when a GOAWAY leaving it no open
/// stream ends the connection first (hyper issue 2500).
pub const GOAWAY_AFTER_REFUSAL: Duration = Duration::from_millis(250);

/// Time a connection closed for idleness, or shed, is given to finish what it is writing.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The hyper builder for one connection, with every limit `[limits]` sets.
///
/// Headers a little over `max_header_bytes` or `max_headers` still reach the exchange path, which
/// answers 431 with an X-Road error and logs it; hyper cuts off those more than twice over (for
/// HTTP/1.1 the connection's error is then logged by [`log_connection_error`]; HTTP/2 answers 431
/// on the stream, and closes the connection past four times its list size).
pub fn http_builder(limits: &Limits, version: HttpVersion) -> auto::Builder<TokioExecutor> {
    let header_room = usize::try_from(limits.max_header_bytes.bytes()).unwrap_or(usize::MAX).saturating_mul(2);
    let (stream_window, connection_window) = limits.http2_windows();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.0)
        // hyper's read buffer also holds the request line: room for the longest URI allowed.
        .max_buf_size(header_room.saturating_add(limits.max_uri_length as usize).max(8192))
        .max_headers((limits.max_headers as usize).saturating_mul(2));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(header_room).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .initial_stream_window_size(stream_window)
        .initial_connection_window_size(connection_window)
        .max_pending_accept_reset_streams(limits.http2_max_pending_resets as usize)
        .max_local_error_reset_streams(limits.http2_max_local_error_resets as usize)
        // Pings find peers that vanished without closing; an unanswered one closes the connection.
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    match version {
        HttpVersion::Http1 => builder.http1_only(),
        HttpVersion::Http2 => builder.http2_only(),
        HttpVersion::Detect => builder,
    }
}

/// How a connection's HTTP version is known.
///
/// A TLS client names it by ALPN, and the connection is then served as that version at once.
/// Telling HTTP/1.1 from HTTP/2 by reading the first bytes instead leaves them in front of
/// hyper's HTTP/1.1 read buffer, which then doubles to 16 KiB for the connection's whole life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/1.1, chosen by ALPN.
    Http1,
    /// HTTP/2, chosen by ALPN.
    Http2,
    /// Told by the connection preface: cleartext, or a TLS client that offered no ALPN (HTTP/2
    /// with prior knowledge).
    Detect,
}

impl HttpVersion {
    /// The version the ALPN protocol a TLS handshake settled on stands for.
    pub fn from_alpn(alpn: Option<&[u8]>) -> Self {
        match alpn {
            Some(b"h2") => Self::Http2,
            Some(b"http/1.1") => Self::Http1,
            _ => Self::Detect,
        }
    }
}

/// What one listener's edge has counted since start.
#[derive(Debug, Default)]
pub struct EdgeStats {
    /// Connections open now.
    pub open: AtomicUsize,
    /// Connections answered `503 Server.Overloaded` because the listener was full.
    pub shed: AtomicU64,
    /// Connections closed unanswered because the listener was full and already shedding.
    pub dropped: AtomicU64,
    /// TLS handshakes that failed or timed out: a client certificate the gateway does not trust
    /// (or revoked, or expired), a client that trusts not the gateway's, or no TLS at all; not a
    /// connection closed without a word (a TCP health check). They leave no audit record, and are
    /// logged at `info`; this count is what an operator sees.
    pub handshakes_failed: AtomicU64,
    /// Requests in progress on all of the listener's connections.
    pub requests: Arc<Activity>,
    shedding: AtomicUsize,
    /// Seconds since `started` of the last overload warning, so a flood logs once a second.
    last_warning: AtomicU64,
    started: Option<Instant>,
}

/// What the connection limit decided for a new connection.
#[derive(Debug)]
pub enum Admission {
    /// Serve it; the slot is freed when the guard drops.
    Serve(Slot),
    /// Answer it `503 Server.Overloaded`, then close it.
    Shed(Slot),
    /// Close it at once.
    Drop,
}

/// A connection's place in its listener's count; released on drop.
#[derive(Debug)]
pub struct Slot {
    stats: Arc<EdgeStats>,
    shed: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let counter = if self.shed { &self.stats.shedding } else { &self.stats.open };
        counter.fetch_sub(1, Ordering::AcqRel);
    }
}

impl EdgeStats {
    /// Counters for a listener starting now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self { started: Some(Instant::now()), ..Self::default() })
    }

    /// Admits a connection under a limit of `max` open at once. A counter rather than a
    /// semaphore, so that a reload may change the limit under running connections.
    pub fn admit(self: &Arc<Self>, max: usize, listener: &str) -> Admission {
        if self.open.fetch_add(1, Ordering::AcqRel) < max {
            return Admission::Serve(Slot { stats: Arc::clone(self), shed: false });
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.warn_overloaded(listener, max);
        self.shed_or_drop()
    }

    /// A connection not to be served (its listener full, or its address's share taken): answered
    /// `503 Server.Overloaded` while at most [`SHED_ANSWERS`] such answers are under way, else
    /// closed at once, so that shedding itself costs a bounded amount.
    pub fn shed_or_drop(self: &Arc<Self>) -> Admission {
        if self.shedding.fetch_add(1, Ordering::AcqRel) < SHED_ANSWERS {
            self.shed.fetch_add(1, Ordering::Relaxed);
            return Admission::Shed(Slot { stats: Arc::clone(self), shed: true });
        }
        self.shedding.fetch_sub(1, Ordering::AcqRel);
        self.dropped.fetch_add(1, Ordering::Relaxed);
        Admission::Drop
    }

    fn warn_overloaded(&self, listener: &str, max: usize) {
        let now = self.started.map_or(0, |s| s.elapsed().as_secs()) + 1;
        let last = self.last_warning.load(Ordering::Relaxed);
        if now > last && self.last_warning.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            tracing::warn!(
                listener,
                max_connections = max,
                shed = self.shed.load(Ordering::Relaxed),
                dropped = self.dropped.load(Ordering::Relaxed),
                "listener is full: new connections are answered 503 Server.Overloaded or closed; raise \
                 max_connections if the host can take more"
            );
        }
    }
}

/// Answers whatever a shed connection asks with `503 Server.Overloaded` and closes it, all
/// within [`SHED_TIMEOUT`]. Nothing of the request is looked at, so nothing is audited: the
/// connection never entered the exchange path.
pub async fn shed(listener: Arc<ListenerRuntime>, tcp: TcpStream, why: Shed) {
    let respond = match why {
        Shed::Listener => overloaded_response,
        Shed::Address => address_overloaded_response,
    };
    let answer = async {
        match &listener.tls {
            Some(config) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(config));
                if let Ok(tls) = acceptor.accept(tcp).await {
                    answer_once(TokioIo::new(tls), respond).await;
                }
            }
            None => answer_once(TokioIo::new(tcp), respond).await,
        }
    };
    let _ = tokio::time::timeout(SHED_TIMEOUT, answer).await;
}

/// Whether the first byte a client sent on a TLS listener is plain text: a TLS connection opens
/// with a handshake record (byte 0x16), an HTTP request with its method's capital letters (an
/// `http://` URL given for the `https://` port; HTTP/2 without TLS opens with `PRI`).
pub fn plain_text_on_tls(first: u8) -> bool {
    first.is_ascii_uppercase()
}

/// Whether a connection to a TLS listener opens with plain text ([`plain_text_on_tls`]), by a
/// look at its first byte that waits for nothing the handshake would not wait for, and counts
/// in its time (`deadline`).
pub async fn opens_with_plain_text(tcp: &TcpStream, deadline: tokio::time::Instant) -> bool {
    let mut first = [0u8; 1];
    matches!(tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await, Ok(Ok(1))) && plain_text_on_tls(first[0])
}

/// Which listener a plain-text request came to, for what its answer tells the caller to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainTextOn {
    /// An exchange listener: an agency application.
    Exchanges,
    /// The admin listener: an operator.
    Admin,
}

/// Answers a plain HTTP request sent to a TLS listener `400 Client.BadRequest`, saying to call
/// it over HTTPS, and closes, all within [`SHED_TIMEOUT`]: the client would otherwise get a TLS
/// alert, which it shows as garbage, an empty reply or a hang. Not an exchange: no TLS, no
/// identity, no record.
pub async fn answer_plain_text(tcp: TcpStream, handshake_deadline: tokio::time::Instant, on: PlainTextOn) {
    // Within the time its handshake had, and a second to answer: no longer than a TLS client.
    let until = (handshake_deadline + Duration::from_secs(1)).min(tokio::time::Instant::now() + SHED_TIMEOUT);
    let respond = match on {
        PlainTextOn::Exchanges => plain_text_response,
        PlainTextOn::Admin => admin_plain_text_response,
    };
    let _ = tokio::time::timeout_at(until, answer_once(TokioIo::new(tcp), respond)).await;
}

fn admin_plain_text_response(req: &Request<Incoming>) -> Response<ResponseBody> {
    let err = GatewayError::BadRequest(
        "this is the gateway's admin listener, which speaks HTTPS with an operator's certificate (mutual TLS), and \
         this request came as plain HTTP: call https:// (not http://) with your admin certificate, e.g. curl --cert \
         operator.crt --key operator.key --cacert ca.crt https://HOST:PORT/readyz"
            .to_owned(),
    );
    unrecorded_refusal(req, &err)
}

fn plain_text_response(req: &Request<Incoming>) -> Response<ResponseBody> {
    // A gRPC client is told in its own tool's words: it came without TLS (grpcurl -plaintext).
    let message = if crate::grpc::is_grpc(req) {
        "this port speaks TLS with client certificates (mutual TLS), and this call came without TLS: call with TLS \
         and the application's certificate, e.g. grpcurl -cacert ca.crt -cert app.crt -key app.key HOST:PORT \
         (without -plaintext)"
    } else {
        "this port speaks HTTPS with client certificates (mutual TLS), and this request came as plain HTTP: call \
         https:// (not http://) with the application's certificate, e.g. curl --cert app.crt --key app.key \
         --cacert ca.crt https://HOST:PORT/r1/..."
    };
    unrecorded_refusal(req, &GatewayError::BadRequest(message.to_owned()))
}

/// A refusal of the one request [`answer_once`] reads: the gateway's error as any refusal carries
/// it (JSON, or a gRPC status to a gRPC client without TLS), with no `X-Road-Id`, since no
/// record goes by it, and the connection closed after it.
fn unrecorded_refusal(req: &Request<Incoming>, err: &GatewayError) -> Response<ResponseBody> {
    // No exchange id in `detail` either: a caller would look for a record of it in vain.
    let mut resp = crate::exchange::answer(crate::grpc::is_grpc(req), "", None, None, err);
    let h = resp.headers_mut();
    h.remove(crate::forward::xroad::ID);
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Answers the first request of a connection with `respond`'s answer, then closes it.
async fn answer_once<I>(io: I, respond: fn(&Request<Incoming>) -> Response<ResponseBody>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let answered = Arc::new(Notify::new());
    let service = {
        let answered = Arc::clone(&answered);
        service_fn(move |req| {
            answered.notify_one();
            let resp = respond(&req);
            async move { Ok::<_, std::convert::Infallible>(resp) }
        })
    };
    // One small request is all that is read: tight limits, since a connection gets here before
    // anything is known of it (a shed one, or plain text on a TLS port).
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(false)
        .max_buf_size(16 * 1024)
        .timer(TokioTimer::new())
        .header_read_timeout(SHED_TIMEOUT);
    builder.http2().max_concurrent_streams(1).max_header_list_size(16 * 1024);
    let served = builder.serve_connection(io, service);
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => {}
        () = answered.notified() => {
            // HTTP/2: the stream in progress is answered, then, a moment later, the connection
            // goes away (see GOAWAY_AFTER_REFUSAL). HTTP/1.1 ends on its own after the answer.
            if tokio::time::timeout(GOAWAY_AFTER_REFUSAL, served.as_mut()).await.is_err() {
                served.as_mut().graceful_shutdown();
                let _ = served.await;
            }
        }
    }
}

/// Connections open per client address (an IPv6 one by its /64, as [`crate::refusals`] counts
/// them), for a limit per address: each counts while its [`AddressSlot`] lives, so that whatever
/// ends a connection, a panic included, gives its place back.
#[derive(Debug, Default)]
pub struct PerAddress(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>);

/// One connection's place in its address's count.
#[derive(Debug)]
pub struct AddressSlot {
    owner: Arc<PerAddress>,
    address: std::net::IpAddr,
}

impl PerAddress {
    /// A place for a connection from `remote`, or, when its address holds `most` already, the
    /// address as counted (a /64 for IPv6), to be told.
    pub fn take(self: &Arc<Self>, remote: std::net::IpAddr, most: u32) -> Result<AddressSlot, std::net::IpAddr> {
        let address = crate::refusals::counted_as(remote);
        let mut counts = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let held = counts.entry(address).or_default();
        if *held >= most {
            return Err(address);
        }
        *held += 1;
        Ok(AddressSlot { owner: Arc::clone(self), address })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(held) = counts.get_mut(&self.address) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

/// Why a connection is shed.
#[derive(Debug, Clone, Copy)]
pub enum Shed {
    /// Its listener holds `max_connections`.
    Listener,
    /// Its address holds `[limits] connections_per_address`.
    Address,
}

fn address_overloaded_response(req: &Request<Incoming>) -> Response<ResponseBody> {
    let err = GatewayError::Overloaded(
        "this address holds as many connections to the gateway as one address may ([limits] \
         connections_per_address); reuse the ones open (HTTP/2 carries many calls on one), or retry once some close"
            .to_owned(),
    );
    let mut resp = unrecorded_refusal(req, &err);
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    resp
}

fn overloaded_response(req: &Request<Incoming>) -> Response<ResponseBody> {
    let err = GatewayError::Overloaded(
        "the gateway is at its connection limit; retry in a few seconds, with backoff".to_owned(),
    );
    let mut resp = unrecorded_refusal(req, &err);
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    resp
}

/// Requests in progress on one connection, for the idle watchdog. A request counts from the
/// moment its head is read until its response body is done or dropped.
#[derive(Debug, Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    changed: Notify,
    /// The listener's count, which every request of the connection counts in too.
    parent: Option<Arc<Activity>>,
}

/// One request in progress; dropping it ends the request for the watchdog.
#[derive(Debug)]
pub struct Active(Arc<Activity>);

impl Activity {
    /// A connection's count, whose requests count in `parent` too.
    pub fn child_of(parent: &Arc<Self>) -> Arc<Self> {
        Arc::new(Self { parent: Some(Arc::clone(parent)), ..Self::default() })
    }

    /// Requests in progress now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Marks a request as begun.
    pub fn begin(self: &Arc<Self>) -> Active {
        self.count(true);
        Active(Arc::clone(self))
    }

    fn count(&self, begun: bool) {
        if begun {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
        } else {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        self.changed.notify_waiters();
        if let Some(parent) = &self.parent {
            parent.count(begun);
        }
    }

    /// Resolves once nothing has been in progress for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the count is read, so no change between the two is missed.
            changed.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) > 0 {
                changed.await;
                continue;
            }
            if tokio::time::timeout(idle, changed).await.is_err() && self.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.count(false);
    }
}

/// A response whose body holds `active` until it is done, so that a long stream counts as work.
pub fn hold_while_streaming(resp: Response<ResponseBody>, active: Active) -> Response<ResponseBody> {
    resp.map(|body| {
        body.map_frame(move |frame| {
            let _ = &active;
            frame
        })
        .boxed_unsync()
    })
}

/// The answer to a HEAD request: the status and headers the GET would get, and no body. Over
/// HTTP/2 a body after a HEAD breaks the stream, and the gateway's own answers (its errors, its
/// directory) have one. The body is read to its end here, not sent, so that the exchange's record
/// is complete, and as durable as its mode asks, before the answer goes, as with any other answer.
/// If the body then breaks off, or has not ended within [`HEAD_DRAIN`], the status it began with
/// no longer holds: the answer is 502 `Server.ServerProxy.ServiceFailed`, or 503
/// `Server.AuditUnavailable` when `audit_available` says the log cannot take records.
pub async fn answer_head(resp: Response<ResponseBody>, audit_available: impl Fn() -> bool) -> Response<ResponseBody> {
    let (mut parts, mut body) = resp.into_parts();
    if let Some(length) = body.size_hint().exact().filter(|n| *n > 0)
        && !parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    let drain = async {
        while let Some(frame) = body.frame().await {
            frame?;
        }
        Ok::<_, splpd_adapters::http::BoxError>(())
    };
    if !matches!(tokio::time::timeout(HEAD_DRAIN, drain).await, Ok(Ok(()))) {
        let (status, kind) = if audit_available() {
            (StatusCode::BAD_GATEWAY, "Server.ServerProxy.ServiceFailed")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "Server.AuditUnavailable")
        };
        parts.status = status;
        // Only the gateway's own headers: the service's (validators, caching) described an
        // answer that did not come.
        let mut kept = http::HeaderMap::new();
        for (name, value) in &parts.headers {
            if name.as_str().starts_with("x-road-") || name == header::CONNECTION {
                kept.append(name.clone(), value.clone());
            }
        }
        kept.insert("x-road-error", HeaderValue::from_static(kind));
        parts.headers = kept;
    }
    let empty = http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync();
    Response::from_parts(parts, empty)
}

/// The bare refusal: 401, no body, no record. For a request on a connection that is closing
/// after its refusal (see `server::run_http`), and for an unidentified caller past its address's
/// refusal budget (`refusals`). To a gRPC call (`grpc`), the same as a gRPC status,
/// `UNAUTHENTICATED` with a line of what to present: a gRPC client reads no HTTP status, and
/// grpcurl, which tries a second reflection service on the same connection, would show only
/// "unexpected HTTP status code".
pub fn closing_answer(grpc: bool) -> Response<ResponseBody> {
    let mut resp = Response::new(http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync());
    let h = resp.headers_mut();
    h.insert("x-road-error", HeaderValue::from_static("Client.Unauthenticated"));
    if grpc {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from(crate::error::GrpcCode::Unauthenticated.as_u32()));
        h.insert(
            "grpc-message",
            HeaderValue::from_static(
                "this connection's client certificate was refused or absent: present the application's certificate \
                 (grpcurl -cert app.crt -key app.key)",
            ),
        );
    } else {
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
    }
    resp
}

/// How long a HEAD answer's body may take to end (the gateway's own end at once; a service's
/// answer to a HEAD has none).
const HEAD_DRAIN: Duration = Duration::from_secs(10);

/// Time allowed, once a connection is to close, for what it is sending to finish.
pub const fn close_grace() -> Duration {
    CLOSE_GRACE
}

/// Puts how the caller connected into its record, and the client its certificate proves, which
/// is returned; recorded even when the call is then refused, so that the record says who tried.
pub fn record_connection(
    record: &mut RecordBuilder,
    auth: Option<&ConnectionAuth>,
) -> Option<splpd_certs::id::ClientId> {
    match auth {
        Some(ConnectionAuth::Mtls(peer)) => {
            record.set_client_cert_sha256(peer.cert_sha256);
            record.set_connection_type(ConnectionType::Mtls);
            match &peer.identity {
                splpd_certs::id::Identity::Subsystem(client) => {
                    record.set_client(client);
                    return Some(client.clone());
                }
                // An operator's certificate used where an application's belongs: refused, and
                // recorded under the operator, whom `audit query --client` then finds.
                splpd_certs::id::Identity::Admin(operator) => record.set_operator(operator),
                splpd_certs::id::Identity::Server(_) => {}
            }
        }
        Some(ConnectionAuth::TlsNoCert) => record.set_connection_type(ConnectionType::Tls),
        Some(ConnectionAuth::Plain) => record.set_connection_type(ConnectionType::Http),
        None => {}
    }
    None
}

/// Logs what ended a connection. An HTTP/1.1 request head hyper cannot take, too large for its
/// buffer (more than twice `[limits] max_header_bytes`) or malformed (a header line without a
/// colon, two Content-Lengths, folded lines), is answered by hyper with a bare 431 or 400 before
/// the exchange path sees it; it gets an audit record here all the same, since every refusal is
/// an exchange (for a caller not identified, within its address's refusal budget).
pub fn log_connection_error(
    err: &(dyn std::error::Error + 'static),
    gateway: &crate::exchange::Gateway,
    conn: &crate::exchange::Connection,
) {
    let remote = conn.remote;
    let hyper_err = err.downcast_ref::<hyper::Error>();
    // The parse errors hyper answers itself (its `on_error`): not an HTTP/2 preface on an
    // HTTP/1.1 connection, nor its internal ones, which get no answer.
    let refused = match hyper_err {
        Some(e) if e.is_parse_too_large() && e.to_string().contains("URI") => {
            tracing::info!(%remote, "request URI too long for hyper: answered 414");
            Some(StatusCode::URI_TOO_LONG)
        }
        Some(e) if e.is_parse_too_large() => {
            tracing::info!(%remote, "request head over twice the configured header limits: answered 431");
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        }
        Some(e)
            if e.is_parse()
                && !e.is_parse_version_h2()
                && !e.is_parse_status()
                && !e.to_string().contains("internal error") =>
        {
            tracing::info!(%remote, "malformed HTTP/1.1 request: answered 400 ({err})");
            Some(StatusCode::BAD_REQUEST)
        }
        _ => None,
    };
    if let Some(status) = refused {
        // From a caller not identified, where callers without a certificate are served: within
        // its address's refusal budget only (`refusals`).
        if conn.counts_refusals_per_request() && !gateway.may_record_refusal(remote.ip()) {
            return;
        }
        let snap = gateway.snapshot();
        let mut record = RecordBuilder::received_now(&snap.gateway_id);
        record.set_exchange_id(uuid::Uuid::new_v4());
        record.set_client_address(remote.ip());
        record_connection(&mut record, conn.auth.as_ref().ok());
        record.set_status(status);
        record.set_error_type("Client.BadRequest");
        // The answer has gone already; the record is written in the background.
        drop(gateway.audit().append(record.finish(), AuditMode::Async));
    } else if hyper_err.is_some_and(hyper::Error::is_timeout) {
        tracing::info!(%remote, "closed a connection that did not send its request headers in time");
    } else {
        tracing::debug!(%remote, "connection ended: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;

    #[test]
    fn the_closing_refusal_is_a_grpc_status_to_a_grpc_call_and_a_bare_401_otherwise() {
        let grpc = closing_answer(true);
        let h = grpc.headers();
        assert_eq!(grpc.status(), StatusCode::OK, "gRPC's statuses travel in a 200");
        assert_eq!((h["content-type"].as_bytes(), h["grpc-status"].as_bytes()), (&b"application/grpc"[..], &b"16"[..]));
        let message = h["grpc-message"].to_str().unwrap();
        assert!(message.contains("grpcurl -cert") && !message.contains('%'), "{message}");
        assert_eq!(h["x-road-error"], "Client.Unauthenticated");
        let rest = closing_answer(false);
        assert_eq!(rest.status(), StatusCode::UNAUTHORIZED);
        assert!(rest.headers().get("grpc-status").is_none());
        assert_eq!(rest.headers()["x-road-error"], "Client.Unauthenticated");
    }

    fn answer(body: ResponseBody) -> Response<ResponseBody> {
        let mut resp = Response::new(body);
        *resp.status_mut() = StatusCode::OK;
        resp
    }

    #[tokio::test]
    async fn a_head_answer_keeps_its_status_and_length_and_loses_its_body() {
        let full = Full::new(Bytes::from_static(b"{\"service\": []}")).map_err(|never| match never {}).boxed_unsync();
        let resp = answer_head(answer(full), || true).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_LENGTH], "15");
        assert!(resp.into_body().is_end_stream());
    }

    #[tokio::test]
    async fn a_head_answer_whose_body_breaks_off_is_not_the_status_it_began_with() {
        let broken = || {
            let frames =
                futures_util::stream::iter([Err::<hyper::body::Frame<Bytes>, splpd_adapters::http::BoxError>(
                    "the service broke off".into(),
                )]);
            http_body_util::StreamBody::new(frames).boxed_unsync()
        };
        let mut began = answer(broken());
        began.headers_mut().insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        began.headers_mut().insert("x-road-id", HeaderValue::from_static("ex-1"));
        let resp = answer_head(began, || true).await;
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        assert!(resp.headers().get(header::ETAG).is_none(), "the service's headers are not the error's");
        assert_eq!(resp.headers()["x-road-id"], "ex-1");
        assert_eq!(resp.headers()["x-road-error"], "Server.ServerProxy.ServiceFailed");
        let resp = answer_head(answer(broken()), || false).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["x-road-error"], "Server.AuditUnavailable");
    }

    #[test]
    fn the_limit_serves_then_sheds_then_drops_and_frees_slots() {
        let stats = EdgeStats::new();
        let served: Vec<_> = (0..3).map(|_| stats.admit(3, "t")).collect();
        assert!(served.iter().all(|a| matches!(a, Admission::Serve(_))));
        let shed: Vec<_> = (0..SHED_ANSWERS).map(|_| stats.admit(3, "t")).collect();
        assert!(shed.iter().all(|a| matches!(a, Admission::Shed(_))));
        assert!(matches!(stats.admit(3, "t"), Admission::Drop));
        assert_eq!(stats.shed.load(Ordering::Relaxed), SHED_ANSWERS as u64);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 1);
        drop(served);
        assert_eq!(stats.open.load(Ordering::Relaxed), 0);
        assert!(matches!(stats.admit(3, "t"), Admission::Serve(_)));
        drop(shed);
        assert_eq!(stats.shedding.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn alpn_picks_the_version_and_anything_else_is_detected_from_the_preface() {
        assert_eq!(HttpVersion::from_alpn(Some(b"h2")), HttpVersion::Http2);
        assert_eq!(HttpVersion::from_alpn(Some(b"http/1.1")), HttpVersion::Http1);
        assert_eq!(HttpVersion::from_alpn(None), HttpVersion::Detect);
        assert_eq!(HttpVersion::from_alpn(Some(b"h3")), HttpVersion::Detect);
    }

    #[tokio::test]
    async fn idleness_counts_only_while_nothing_is_in_progress() {
        let activity = Arc::new(Activity::default());
        let busy = activity.begin();
        // With a request in progress, waiting many idle periods is not idleness.
        let waited =
            tokio::time::timeout(Duration::from_millis(300), activity.idle_for(Duration::from_millis(10))).await;
        assert!(waited.is_err());
        drop(busy);
        let waited = tokio::time::timeout(Duration::from_secs(30), activity.idle_for(Duration::from_millis(10))).await;
        assert!(waited.is_ok());
    }
}
