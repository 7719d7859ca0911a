//! The HTTP upstream: a pooled, keep-alive hyper client towards one service's endpoints, plain or
//! TLS (with the gateway's own certificate when the upstream wants mutual TLS). Bodies stream
//! through it in both directions.
//!
//! A REST upstream is spoken to in HTTP/1.1, or in HTTP/2 when an `https://` upstream offers it
//! in ALPN. A gRPC upstream needs HTTP/2 whatever its scheme ([`UpstreamOptions::http2_only`]):
//! over `https://` only `h2` is offered in ALPN, and over `http://` the client speaks HTTP/2 with
//! prior knowledge (h2c), since hyper's client would otherwise send HTTP/1.1 to a plain URL.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ended::{EndingSlot, KeepEnding};

/// Interval of HTTP/2 pings on a connection with open streams, and how long an answer may take.
const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// The error type of bodies sent upstream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body as the gateway forwards it.
pub type UpstreamBody = BoxBody<Bytes, BoxError>;

/// How to reach one service's upstreams.
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    /// Time allowed to open a TCP connection.
    pub connect_timeout: Duration,
    /// How long an unused pooled connection is kept.
    pub idle_timeout: Duration,
    /// Most idle connections kept per upstream host.
    pub max_idle_per_host: usize,
    /// The name to verify on an `https://` upstream's certificate instead of the URL's host.
    pub server_name: Option<String>,
    /// Speak HTTP/2 only: h2c with prior knowledge to `http://`, ALPN `h2` alone to `https://`.
    /// gRPC upstreams need it.
    pub http2_only: bool,
    /// Most connections open to one endpoint at once; a further one waits up to
    /// `connect_timeout` for another to close (or for a pooled one to come free).
    pub max_connections_per_host: Option<u32>,
    /// HTTP/2 flow-control windows, per stream and per connection: how much the upstream may
    /// send ahead of what the gateway has passed on.
    pub http2_windows: (u32, u32),
}

impl Default for UpstreamOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(90),
            max_idle_per_host: 256,
            server_name: None,
            http2_only: false,
            max_connections_per_host: None,
            http2_windows: (1024 * 1024, 4 * 1024 * 1024),
        }
    }
}

/// Which side a failed connection points to: what an operator should look at first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFault {
    /// Nothing answered: nothing listens there, the name does not resolve, no route.
    Unreachable,
    /// The far side ended the TLS handshake with an alert: when about a certificate, it does
    /// not accept this gateway's (or wanted one and got none).
    RefusedByFarSide,
    /// This gateway did not accept the far side's certificate.
    TheirCertificate,
    /// The far side does not speak TLS there.
    NotTls,
}

/// The TLS alerts by which a server refuses the certificate it was shown, or the lack of one.
const CERTIFICATE_ALERTS: [rustls::AlertDescription; 8] = [
    rustls::AlertDescription::BadCertificate,
    rustls::AlertDescription::UnsupportedCertificate,
    rustls::AlertDescription::CertificateRevoked,
    rustls::AlertDescription::CertificateExpired,
    rustls::AlertDescription::CertificateUnknown,
    rustls::AlertDescription::UnknownCA,
    rustls::AlertDescription::AccessDenied,
    rustls::AlertDescription::CertificateRequired,
];

impl ConnectFault {
    /// Reads the fault from a connector's error, by the types in its chain of causes.
    pub fn of(err: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut cur = Some(err);
        while let Some(e) = cur {
            if let Some(tls) = tls_error(e) {
                return Self::of_tls(tls);
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind as K;
                if matches!(io.kind(), K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable)
                    || io.to_string().contains("lookup address")
                {
                    return Some(Self::Unreachable);
                }
                // h2 keeps an I/O error's kind and text only, not its type: an alert received on
                // an HTTP/2 connection is known by rustls's words for it.
                if io.kind() == K::InvalidData
                    && let Some(alert) = io.to_string().strip_prefix("received fatal alert: ")
                {
                    let certificate = CERTIFICATE_ALERTS.iter().any(|a| format!("{a:?}") == alert.trim());
                    return certificate.then_some(Self::RefusedByFarSide);
                }
            }
            cur = e.source();
        }
        None
    }

    fn of_tls(err: &rustls::Error) -> Option<Self> {
        match err {
            rustls::Error::AlertReceived(alert) if CERTIFICATE_ALERTS.contains(alert) => Some(Self::RefusedByFarSide),
            rustls::Error::InvalidCertificate(_) => Some(Self::TheirCertificate),
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => Some(Self::NotTls),
            _ => None,
        }
    }
}

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be opened (refused, unreachable, TLS handshake failed, timed out).
    #[error("cannot connect to the service at {authority}: {reason}")]
    Connect {
        /// `host:port` of the upstream.
        authority: String,
        /// What the connector said.
        reason: String,
        /// Which side the failure points to, when the cause tells.
        fault: Option<ConnectFault>,
    },
    /// The upstream did not start its response in time.
    #[error("the service at {authority} did not answer within {after:?}")]
    Timeout {
        /// `host:port` of the upstream.
        authority: String,
        /// The time allowed.
        after: Duration,
    },
    /// No connection could be had within `connect_timeout` because the endpoint has as many as
    /// its circuit allows (`max_connections`) and none came free. Nothing was sent.
    #[error(
        "the service at {authority} has {max} connections open, its limit (max_connections), and none came free in time"
    )]
    Saturated {
        /// `host:port` of the upstream.
        authority: String,
        /// The limit.
        max: u32,
    },
    /// The connection broke during the exchange, or the upstream spoke broken HTTP.
    #[error("the exchange with the service at {authority} failed: {reason}")]
    Broken {
        /// `host:port` of the upstream.
        authority: String,
        /// What went wrong.
        reason: String,
        /// Which side the failure points to, when the cause tells: under TLS 1.3 a server that
        /// refuses the gateway's certificate says so after the handshake, as the request goes.
        fault: Option<ConnectFault>,
    },
}

/// A `server_name` that cannot be verified on a certificate.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is neither a DNS name nor an IP address, so no certificate can be checked against it")]
pub struct InvalidServerName(pub String);

/// A pooled HTTP/1.1 and HTTP/2 client for one service.
#[derive(Debug, Clone)]
pub struct HttpUpstream {
    client: Client<KeepEnding<HttpsConnector<LimitedConnector>>, UpstreamBody>,
}

/// The TCP connector with a cap on connections per endpoint (the circuit breaker's connection
/// limit). Each connection holds a slot of its endpoint's semaphore until it closes. The map of
/// semaphores is locked only while a new connection is being opened, never per request.
#[derive(Debug, Clone)]
pub struct LimitedConnector {
    inner: HttpConnector,
    limit: Option<(u32, Duration)>,
    hosts: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

/// A TCP connection that gives its slot back when it closes.
#[derive(Debug)]
pub struct CountedConnection {
    io: TokioIo<TcpStream>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl hyper::rt::Read for CountedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for CountedConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

impl Connection for CountedConnection {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl tower::Service<http::Uri> for LimitedConnector {
    type Response = CountedConnection;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<CountedConnection, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower::Service::<http::Uri>::poll_ready(&mut self.inner, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let mut inner = self.inner.clone();
        let slots = self.limit.map(|(max, wait)| {
            let host = uri.authority().map(ToString::to_string).unwrap_or_default();
            let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
            (Arc::clone(hosts.entry(host).or_insert_with(|| Arc::new(Semaphore::new(max as usize)))), max, wait)
        });
        Box::pin(async move {
            let slot = match slots {
                Some((sem, max, wait)) => match tokio::time::timeout(wait, sem.acquire_owned()).await {
                    Ok(Ok(slot)) => Some(slot),
                    _ => return Err(Box::new(ConnectionLimit { max }) as BoxError),
                },
                None => None,
            };
            let io = inner.call(uri).await.map_err(|e| Box::new(e) as BoxError)?;
            Ok(CountedConnection { io, _slot: slot })
        })
    }
}

/// The connector's refusal when an endpoint has all the connections its limit allows.
#[derive(Debug, thiserror::Error)]
#[error("{max} connections are open to it, its limit (max_connections), and none closed in time")]
pub struct ConnectionLimit {
    max: u32,
}

/// The connection limit somewhere in an error's chain of causes.
fn connection_limit(err: &(dyn std::error::Error + 'static)) -> Option<u32> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(limit) = e.downcast_ref::<ConnectionLimit>() {
            return Some(limit.max);
        }
        cur = e.source();
    }
    None
}

/// rustls's error, as such or inside `io::Error`s: tokio-rustls hands it over in one, and
/// hyper-rustls's connector wraps that in another. (`io::Error::source` skips the error it
/// wraps, so a chain of causes never reaches it.)
fn tls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = err;
    loop {
        if let Some(tls) = cur.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        cur = cur.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}

/// Whether a request's error says only that its connection went away before it could be sent
/// or answered, not why (hyper's "connection was not ready", "connection closed").
fn connection_gone(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            return hyper.is_canceled() || hyper.is_closed();
        }
        cur = e.source();
    }
    false
}

/// The innermost cause of an error, which is what tells an operator what happened (under
/// hyper's general "connection error" or "error reading a body").
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    // rustls shows a verifier's own reason for refusing a certificate by its debug form
    // (`Other(OtherError(..))`); the reason's words are what the operator needs.
    if let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) = tls_error(cur) {
        return format!("invalid peer certificate: {}", other.0);
    }
    cur.to_string()
}

impl HttpUpstream {
    /// A client that speaks plain HTTP to `http://` upstreams and TLS with `tls` to `https://`,
    /// HTTP/2 only when `opts.http2_only` is set.
    /// Fails only when `opts.server_name` is neither a DNS name nor an IP address.
    pub fn new(mut tls: rustls::ClientConfig, opts: &UpstreamOptions) -> Result<Self, InvalidServerName> {
        // The connector offers ALPN itself, for the HTTP versions it enables.
        tls.alpn_protocols.clear();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(opts.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let http = LimitedConnector {
            inner: http,
            limit: opts.max_connections_per_host.map(|max| (max.max(1), opts.connect_timeout)),
            hosts: Arc::default(),
        };
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
        let builder = match &opts.server_name {
            Some(name) => {
                let name = ServerName::try_from(name.clone()).map_err(|_| InvalidServerName(name.clone()))?;
                builder.with_server_name_resolver(FixedServerNameResolver::new(name))
            }
            None => builder,
        };
        let connector = KeepEnding(if opts.http2_only {
            builder.enable_http2().wrap_connector(http)
        } else {
            builder.enable_all_versions().wrap_connector(http)
        });
        let mut client = Client::builder(TokioExecutor::new());
        client.pool_idle_timeout(opts.idle_timeout).pool_max_idle_per_host(opts.max_idle_per_host);
        if opts.http2_only {
            // One multiplexed connection carries many long-lived streams: pings find a dead one
            // (a NAT or firewall that dropped it) instead of leaving its calls hanging.
            //
            // Fixed windows, not hyper's adaptive one: h2 ends a connection on which more small
            // DATA frames (under 256 bytes) wait unread than half its connection window allows,
            // and the adaptive window starts at 64 KiB. There, about 170 small gRPC replies
            // waiting for a slow client, or for a busy core, ended every call on the connection.
            client
                .http2_only(true)
                .timer(TokioTimer::new())
                .http2_keep_alive_interval(HTTP2_KEEP_ALIVE)
                .http2_keep_alive_timeout(HTTP2_KEEP_ALIVE)
                .http2_keep_alive_while_idle(false)
                .http2_initial_stream_window_size(opts.http2_windows.0)
                .http2_initial_connection_window_size(opts.http2_windows.1);
        }
        let client = client.build(connector);
        Ok(Self { client })
    }

    /// Sends `req` (its URI absolute) and waits at most `timeout` for the response to start.
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let authority = req.uri().authority().map(ToString::to_string).unwrap_or_default();
        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout { authority, after: timeout }),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_connect() => match connection_limit(&e) {
                Some(max) => Err(UpstreamError::Saturated { authority, max }),
                None => Err(UpstreamError::Connect { authority, reason: root_cause(&e), fault: ConnectFault::of(&e) }),
            },
            Ok(Err(e)) => {
                let kept = EndingSlot::of_error(&e).filter(|_| connection_gone(&e));
                let (reason, fault) = match (ConnectFault::of(&e), kept.as_ref().and_then(EndingSlot::get)) {
                    // The request's own error says only that its connection went away ("connection
                    // was not ready"); the connection kept why.
                    (None, Some(ending)) => (ending.reason.clone(), ending.fault),
                    (fault, _) => (root_cause(&e), fault),
                };
                Err(UpstreamError::Broken { authority, reason, fault })
            }
        }
    }
}

/// Convenience for configurations shared across upstreams.
pub type SharedUpstream = Arc<HttpUpstream>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_failure_is_read_for_the_side_it_points_to() {
        let io = |kind| std::io::Error::from(kind);
        assert_eq!(ConnectFault::of(&io(std::io::ErrorKind::ConnectionRefused)), Some(ConnectFault::Unreachable));
        // rustls's errors reach the connector inside an io::Error, as tokio-rustls hands them over.
        let tls = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let alert = tls(rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired));
        assert_eq!(ConnectFault::of(&alert), Some(ConnectFault::RefusedByFarSide));
        let theirs = tls(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer));
        assert_eq!(ConnectFault::of(&theirs), Some(ConnectFault::TheirCertificate));
        let plain = tls(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType));
        assert_eq!(ConnectFault::of(&plain), Some(ConnectFault::NotTls));
        // hyper-rustls's connector wraps tokio-rustls's io::Error in one of its own.
        let wrapped = std::io::Error::other(tls(rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)));
        assert_eq!(ConnectFault::of(&wrapped), Some(ConnectFault::TheirCertificate));
        // Over HTTP/2 the alert arrives as words only (h2 keeps an I/O error's kind and text).
        let flattened = std::io::Error::new(std::io::ErrorKind::InvalidData, "received fatal alert: UnknownCA");
        assert_eq!(ConnectFault::of(&flattened), Some(ConnectFault::RefusedByFarSide));
        // An alert about something else than a certificate is not a refused certificate.
        let alpn = tls(rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol));
        assert_eq!(ConnectFault::of(&alpn), None);
        let words = std::io::Error::new(std::io::ErrorKind::InvalidData, "received fatal alert: HandshakeFailure");
        assert_eq!(ConnectFault::of(&words), None);
        // Anything else is not guessed at.
        assert_eq!(ConnectFault::of(&io(std::io::ErrorKind::PermissionDenied)), None);
        assert_eq!(ConnectFault::of(&tls(rustls::Error::DecryptError)), None);
    }

    #[test]
    fn a_verifiers_own_reason_for_refusing_a_certificate_is_told_in_its_words() {
        #[derive(Debug)]
        struct Reason;
        impl std::fmt::Display for Reason {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("it identifies someone else")
            }
        }
        impl std::error::Error for Reason {}
        let refused =
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(Reason))));
        let wrapped = std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, refused));
        assert_eq!(root_cause(&wrapped), "invalid peer certificate: it identifies someone else");
        assert_eq!(ConnectFault::of(&wrapped), Some(ConnectFault::TheirCertificate));
        // Any other error keeps its own words.
        let other =
            std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::DecryptError));
        assert_eq!(root_cause(&other), "cannot decrypt peer's message");
    }
}
