//! A real agency service for the gateway to call: hyper 1.x, HTTP/1.1, on `127.0.0.1:0`, in a
//! tokio task, in cleartext ([`Upstream::start`]) or over TLS ([`Upstream::start_tls`], with
//! [`tls_server_config`], which may require a client certificate). It records every request it
//! receives (method, path and query, headers, body, the client certificate of its connection),
//! every TLS handshake it refused, and answers by the first segment of the path:
//!
//! | path | answer |
//! |---|---|
//! | `/echo/…` | 200, the request body back, with the request's Content-Type, and `X-Road-*` headers of its own that the gateway must overwrite |
//! | `/json/…` | 200, a fixed JSON document ([`FIXED_JSON`]) |
//! | `/slow/{ms}/…` | 200 after sleeping `ms` milliseconds |
//! | `/large/{bytes}/…` | 200, a body of `bytes` bytes streamed in 64 KiB chunks, without Content-Length ([`large_body`]) |
//! | `/status/{code}/…` | that status, with a problem+json body of its own ([`status_body`]) |
//! | `/cut/{bytes}/…` | 200 with a Content-Length of twice `bytes`, then `bytes` bytes: an answer that breaks off |
//! | `/empty/…` | 204, no body |
//! | `/partial/{n}/…` | 200, `ok`, once `n` bytes of the request body are in; the rest is read and dropped half a second later |
//! | anything else | 200, `ok` |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::pki::ClientCert;

/// The body `/json/…` answers with.
pub const FIXED_JSON: &str = r#"{"nik":"valid","source":"disdukcapil"}"#;

/// Headers `/echo/…` sets on its response, which the gateway must replace with its own.
pub const UPSTREAM_XROAD_HEADERS: [(&str, &str); 5] = [
    ("x-road-id", "upstream-made-this-up"),
    ("x-road-client", "ID/PEMDA/9999/UPSTREAM"),
    ("x-road-service", "ID/PEMDA/9999/UPSTREAM/fake"),
    ("x-road-request-hash", "dXBzdHJlYW0="),
    // A service's own would pass for a refusal by the gateway.
    ("x-road-error", "Client.AccessDenied"),
];

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The method.
    pub method: Method,
    /// The HTTP version.
    pub version: Version,
    /// Path and query, exactly as received.
    pub path_and_query: String,
    /// The headers as received.
    pub headers: HeaderMap,
    /// The body bytes that arrived (all of them, or those before the stream broke).
    pub body: Bytes,
    /// Whether the body ended normally rather than breaking off.
    pub complete: bool,
    /// The end-entity certificate the client presented in the TLS handshake of this request's
    /// connection; `None` in cleartext or when it presented none.
    pub client_cert: Option<CertificateDer<'static>>,
}

impl Received {
    /// A header as text; `None` when absent or not text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The body `/large/{n}` sends: byte `i` is `i % 251`.
pub fn large_body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// The body `/status/{code}` answers with.
pub fn status_body(code: u16) -> String {
    format!(r#"{{"upstream_error":{code},"detail":"the service's own answer"}}"#)
}

type UpBody = BoxBody<Bytes, Infallible>;

/// A running upstream service; stops when dropped, and with it every connection it holds.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    tls: Option<Arc<ServerConfig>>,
    received: Arc<Mutex<Vec<Received>>>,
    refused: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

/// The TLS configuration of an HTTPS upstream: `cert` as its server certificate, HTTP/1.1 by
/// ALPN, and, when `client_roots` is given, a client certificate required that chains to one of
/// them (webpki: chain, validity, clientAuth usage); a client without one is refused at the
/// handshake.
pub fn tls_server_config(cert: &ClientCert, client_roots: Option<&[CertificateDer<'static>]>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let builder = match client_roots {
        Some(roots) => {
            let mut store = rustls::RootCertStore::empty();
            for der in roots {
                store.add(der.clone()).expect("client CA");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(cert.chain.clone(), cert.key.clone_key()).expect("server certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

impl Upstream {
    /// Binds `127.0.0.1:0` and starts serving cleartext HTTP/1.1.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Binds `127.0.0.1:0` and starts serving HTTPS with `config` (see [`tls_server_config`]).
    pub async fn start_tls(config: Arc<ServerConfig>) -> Self {
        Self::start_with(Some(config)).await
    }

    async fn start_with(tls: Option<Arc<ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let task = Self::serve_on(listener, tls.clone(), Arc::clone(&received), Arc::clone(&refused));
        Self { addr, tls, received, refused, task }
    }

    /// Kills the service as a crash would: it stops listening and every open connection is
    /// dropped. [`restart`](Self::restart) brings it back on the same address.
    pub async fn kill(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// Starts serving again on the same address after [`kill`](Self::kill), keeping what it
    /// received before.
    pub async fn restart(&mut self) {
        let mut listener = None;
        for _ in 0..100 {
            match TcpListener::bind(self.addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let listener = listener.expect("rebind the upstream's address");
        self.task = Self::serve_on(listener, self.tls.clone(), Arc::clone(&self.received), Arc::clone(&self.refused));
    }

    fn serve_on(
        listener: TcpListener,
        tls: Option<Arc<ServerConfig>>,
        log: Arc<Mutex<Vec<Received>>>,
        refusals: Arc<Mutex<Vec<String>>>,
    ) -> JoinHandle<()> {
        let acceptor = tls.map(TlsAcceptor::from);
        tokio::spawn(async move {
            // The connections belong to this task: aborting it drops them all.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                while conns.try_join_next().is_some() {}
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (log, refusals, acceptor) = (Arc::clone(&log), Arc::clone(&refusals), acceptor.clone());
                conns.spawn(async move {
                    match acceptor {
                        None => serve(TokioIo::new(tcp), log, None).await,
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(tls) => {
                                let peer = tls.get_ref().1.peer_certificates().and_then(|c| c.first().cloned());
                                serve(TokioIo::new(tls), log, peer).await;
                            }
                            Err(e) => refusals.lock().unwrap_or_else(PoisonError::into_inner).push(e.to_string()),
                        },
                    }
                });
            }
        })
    }

    /// `http://127.0.0.1:port` (or `https://` for a TLS upstream), for a service's `upstreams`.
    pub fn url(&self) -> String {
        format!("{}://{}", if self.tls.is_some() { "https" } else { "http" }, self.addr)
    }

    /// Why each TLS handshake it refused failed, in order (rustls' words).
    pub fn refused_handshakes(&self) -> Vec<String> {
        self.refused.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The refused handshakes, once there are at least `n` (waits at most 5 s, then returns what
    /// there is): the server side of a handshake may end a moment after the client's.
    pub async fn wait_refused_handshakes(&self, n: usize) -> Vec<String> {
        for _ in 0..500 {
            let got = self.refused_handshakes();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.refused_handshakes()
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in order of completion.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The requests received, once there are at least `n` (waits at most 5 s, then returns what
    /// there is).
    pub async fn wait_received(&self, n: usize) -> Vec<Received> {
        for _ in 0..500 {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.received()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address on which nothing listens: bound, then released.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("address")
}

fn full(body: impl Into<Bytes>) -> UpBody {
    Full::new(body.into()).boxed()
}

/// Serves HTTP/1.1 on one connection whose client presented `peer`.
async fn serve<I>(io: I, log: Arc<Mutex<Vec<Received>>>, peer: Option<CertificateDer<'static>>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(Arc::clone(&log), peer.clone(), req));
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
}

async fn handle(
    log: Arc<Mutex<Vec<Received>>>,
    client_cert: Option<CertificateDer<'static>>,
    req: Request<Incoming>,
) -> Result<Response<UpBody>, Infallible> {
    let (parts, mut body) = req.into_parts();
    // `/partial/N`: the answer comes once N bytes of the body are in, the rest left unread.
    let read_at_most = parts
        .uri
        .path()
        .strip_prefix("/partial/")
        .and_then(|n| n.split('/').next())
        .and_then(|n| n.parse::<usize>().ok());
    let mut bytes = Vec::new();
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        if read_at_most.is_some_and(|n| bytes.len() >= n) {
            // The rest is read and dropped after the answer, as a server that answers early
            // does to keep its connection (closing it would fail the client's upload).
            complete = false;
            // Half a second later: long after the gateway has given up waiting for the body's end
            // before answering.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                while body.frame().await.is_some() {}
            });
            break;
        }
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    bytes.extend_from_slice(data);
                }
            }
            Err(_) => {
                complete = false;
                break;
            }
        }
    }
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
    let body = Bytes::from(bytes);
    log.lock().unwrap_or_else(PoisonError::into_inner).push(Received {
        method: parts.method,
        version: parts.version,
        path_and_query: path_and_query.clone(),
        headers: parts.headers,
        body: body.clone(),
        complete,
        client_cert,
    });

    let path = path_and_query.split('?').next().unwrap_or("/");
    let mut segments = path.trim_start_matches('/').split('/');
    let first = segments.next().unwrap_or("");
    let arg = segments.next().and_then(|s| s.parse::<u64>().ok());
    let mut resp = match (first, arg) {
        ("echo", _) => {
            let mut resp = Response::new(full(body));
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                content_type.unwrap_or_else(|| HeaderValue::from_static("application/octet-stream")),
            );
            for (name, value) in UPSTREAM_XROAD_HEADERS {
                h.insert(name, HeaderValue::from_static(value));
            }
            // Hop-by-hop on the way back: the gateway must not pass it to the client.
            h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
            // What the service runs on: not for callers in other agencies or regions.
            h.insert(header::SERVER, HeaderValue::from_static("Apache/2.4.41 (Ubuntu)"));
            h.insert("x-powered-by", HeaderValue::from_static("PHP/7.4.3"));
            resp
        }
        ("json", _) => {
            let mut resp = Response::new(full(FIXED_JSON));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        ("slow", Some(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(full("slow"))
        }
        ("late", Some(ms)) => {
            // The head at once, with its length; the body `ms` later.
            let body = futures_util::stream::once(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"late")))
            });
            let mut resp = Response::new(StreamBody::new(body).boxed());
            resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(4));
            resp
        }
        ("large", Some(n)) => {
            let data = Bytes::from(large_body(usize::try_from(n).unwrap_or(0)));
            let chunks: Vec<Result<Frame<Bytes>, Infallible>> =
                data.chunks(64 * 1024).map(|c| Ok(Frame::data(data.slice_ref(c)))).collect();
            Response::new(StreamBody::new(futures_util::stream::iter(chunks)).boxed())
        }
        ("status", Some(code)) => {
            let code = u16::try_from(code).unwrap_or(500);
            let mut resp = Response::new(full(status_body(code)));
            *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
            resp.headers_mut().insert("x-upstream", HeaderValue::from_static("status"));
            resp
        }
        ("cut", Some(n)) => {
            // Promises twice the bytes it sends: the answer breaks off after it started.
            // A stream, so that hyper takes the length from the header rather than the body; its
            // end comes a moment later, so that the head and the first bytes have gone out.
            let data = Bytes::from(large_body(usize::try_from(n).unwrap_or(0)));
            let first = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(data))]);
            let end = futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(Frame::data(Bytes::new()))
            });
            let mut resp = Response::new(StreamBody::new(futures_util::StreamExt::chain(first, end)).boxed());
            resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(n * 2));
            resp
        }
        ("empty", _) => {
            let mut resp = Response::new(full(Bytes::new()));
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp
        }
        _ => Response::new(full("ok")),
    };
    resp.headers_mut().insert("x-upstream-saw", HeaderValue::from_str(first).unwrap_or(HeaderValue::from_static("?")));
    Ok(resp)
}
