//! Clients of the gateway: HTTPS with or without a client certificate (HTTP/1.1 or HTTP/2,
//! chosen by ALPN) and plain HTTP/1.1. Each call opens its own connection, so a refused
//! handshake shows up as that call's error. Headers are set explicitly (`Host` for HTTP/1.1,
//! `Content-Length` for sized bodies), so that what the gateway receives is known exactly and
//! the request hash can be recomputed from it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;

use crate::pki::ClientCert;

/// Any error on the way: connect, handshake, HTTP, timeout.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Time allowed for one whole call.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The HTTP version to speak over TLS (offered alone in ALPN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1 (`http/1.1`).
    H1,
    /// HTTP/2 (`h2`).
    H2,
}

/// A request body.
#[derive(Debug, Clone)]
pub enum CallBody {
    /// No body.
    Empty,
    /// A body of known length, sent with `Content-Length`.
    Full(Bytes),
    /// A body streamed in these chunks without a declared length (chunked in HTTP/1.1).
    Chunked(Vec<Bytes>),
}

/// One request, as the test means to send it.
#[derive(Debug, Clone)]
pub struct Call {
    /// The method.
    pub method: Method,
    /// Path and query, e.g. `/r1/ID/PEMDA/1602/DISDUKCAPIL/nik-verify/nik?nik=1`.
    pub target: String,
    /// Headers in the order they are sent; a name may repeat.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body.
    pub body: CallBody,
}

impl Call {
    /// A request with `method` and no body.
    pub fn new(method: Method, target: impl Into<String>) -> Self {
        Self { method, target: target.into(), headers: Vec::new(), body: CallBody::Empty }
    }

    /// `GET target`.
    pub fn get(target: impl Into<String>) -> Self {
        Self::new(Method::GET, target)
    }

    /// `POST target` with a body of known length.
    pub fn post(target: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Self::new(Method::POST, target).body(body)
    }

    /// Adds a header (appended: sending a name twice sends it twice).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
        let value = HeaderValue::from_bytes(value.as_ref()).expect("header value");
        self.headers.push((name, value));
        self
    }

    /// Sets a body of known length.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = CallBody::Full(body.into());
        self
    }

    /// Sets a body streamed in `chunks`, without a declared length.
    pub fn chunked(mut self, chunks: Vec<Bytes>) -> Self {
        self.body = CallBody::Chunked(chunks);
        self
    }

    /// The whole body.
    pub fn body_bytes(&self) -> Bytes {
        match &self.body {
            CallBody::Empty => Bytes::new(),
            CallBody::Full(b) => b.clone(),
            CallBody::Chunked(chunks) => chunks.iter().flat_map(|c| c.iter().copied()).collect::<Vec<u8>>().into(),
        }
    }

    /// The headers exactly as they go on the wire for `proto`: those of the call, plus `Host`
    /// (HTTP/1.1 only; HTTP/2 carries `:authority`) and `Content-Length` for sized bodies (which
    /// hyper would otherwise add itself). A chunked HTTP/1.1 body adds `Transfer-Encoding`, which
    /// is hop-by-hop and left out here.
    pub fn wire_headers(&self, proto: Proto, authority: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        if proto == Proto::H1 && !headers.contains_key(header::HOST) {
            headers.insert(header::HOST, HeaderValue::from_str(authority).expect("authority"));
        }
        let sized = match &self.body {
            CallBody::Full(b) => Some(b.len()),
            // hyper declares an empty body only for methods whose body means something.
            CallBody::Empty if !matches!(self.method, Method::GET | Method::HEAD | Method::DELETE) => Some(0),
            _ => None,
        };
        if let Some(len) = sized
            && !headers.contains_key(header::CONTENT_LENGTH)
        {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        headers
    }

    fn into_request(
        self,
        proto: Proto,
        scheme: &str,
        authority: &str,
    ) -> (Request<BoxBody<Bytes, BoxError>>, HeaderMap) {
        let headers = self.wire_headers(proto, authority);
        let body: BoxBody<Bytes, BoxError> = match self.body {
            CallBody::Empty => Empty::new().map_err(|never| match never {}).boxed(),
            CallBody::Full(b) => Full::new(b).map_err(|never| match never {}).boxed(),
            CallBody::Chunked(chunks) => {
                let frames: Vec<Result<Frame<Bytes>, BoxError>> =
                    chunks.into_iter().map(|c| Ok(Frame::data(c))).collect();
                StreamBody::new(futures_util::stream::iter(frames)).boxed()
            }
        };
        let uri = match proto {
            // Origin form, as HTTP/1.1 clients send it.
            Proto::H1 => self.target.clone(),
            // HTTP/2 needs :scheme and :authority.
            Proto::H2 => format!("{scheme}://{authority}{}", self.target),
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method;
        *req.uri_mut() = uri.parse().expect("request URI");
        *req.version_mut() = match proto {
            Proto::H1 => Version::HTTP_11,
            Proto::H2 => Version::HTTP_2,
        };
        *req.headers_mut() = headers.clone();
        (req, headers)
    }
}

/// What came back.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The HTTP version spoken.
    pub version: Version,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole response body.
    pub body: Bytes,
    /// The request headers as sent on the wire.
    pub sent_headers: HeaderMap,
}

impl Reply {
    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON; panics when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text, lossily.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `X-Road-Error`, if the gateway answered with its own error.
    pub fn xroad_error(&self) -> Option<&str> {
        self.header("x-road-error")
    }

    /// `X-Road-Id`; panics when absent.
    pub fn exchange_id(&self) -> &str {
        self.header("x-road-id").expect("the response carries X-Road-Id")
    }
}

/// The certificates of a CA file, to trust.
pub fn read_roots(ca_file: &Path) -> Vec<CertificateDer<'static>> {
    splpd_certs::load::read_certificates(ca_file).expect("CA certificate")
}

/// A rustls client configuration that trusts `roots`, presents `cert` (if any) and offers only
/// the ALPN protocol of `proto`.
pub fn tls_config(roots: &[CertificateDer<'static>], cert: Option<&ClientCert>, proto: Proto) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for der in roots {
        store.add(der.clone()).expect("trust anchor");
    }
    let roots = store;
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let mut config = match cert {
        Some(c) => builder.with_client_auth_cert(c.chain.clone(), c.key.clone_key()).expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![match proto {
        Proto::H1 => b"http/1.1".to_vec(),
        Proto::H2 => b"h2".to_vec(),
    }];
    Arc::new(config)
}

/// One call over a new TLS connection to `addr` (server name `localhost`).
pub async fn send_tls(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    proto: Proto,
    call: Call,
) -> Result<Reply, BoxError> {
    let attempt = async move {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost")?;
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
        let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let expected: &[u8] = match proto {
            Proto::H1 => b"http/1.1",
            Proto::H2 => b"h2",
        };
        if negotiated.as_deref() != Some(expected) {
            return Err(format!("ALPN negotiated {negotiated:?}, not {:?}", String::from_utf8_lossy(expected)).into());
        }
        exchange(TokioIo::new(tls), proto, "https", &format!("localhost:{}", addr.port()), call).await
    };
    tokio::time::timeout(CALL_TIMEOUT, attempt).await.map_err(|_| "the call timed out")?
}

/// One call over a new cleartext HTTP/1.1 connection to `addr`.
pub async fn send_plain(addr: SocketAddr, call: Call) -> Result<Reply, BoxError> {
    let attempt = async move {
        let tcp = TcpStream::connect(addr).await?;
        exchange(TokioIo::new(tcp), Proto::H1, "http", &addr.to_string(), call).await
    };
    tokio::time::timeout(CALL_TIMEOUT, attempt).await.map_err(|_| "the call timed out")?
}

async fn exchange<I>(io: I, proto: Proto, scheme: &str, authority: &str, call: Call) -> Result<Reply, BoxError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (req, sent_headers) = call.into_request(proto, scheme, authority);
    let resp = match proto {
        Proto::H1 => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            sender.send_request(req).await?
        }
        Proto::H2 => {
            let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            sender.send_request(req).await?
        }
    };
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply { status: parts.status, version: parts.version, headers: parts.headers, body, sent_headers })
}

/// Headers that never take part in the request hash (docs/design.md, "The request hash"): the
/// hop-by-hop ones, and those a `Connection` header names.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// `X-Road-Request-Hash` recomputed as docs/design.md defines it, from what was sent: base64 of
/// SHA-512 over `METHOD SP request-target LF`, the headers (lower-case names, sorted by name,
/// values of one name in the order sent; hop-by-hop headers and `X-Road-Request-Hash` left out)
/// as `name: value LF`, an empty line, and the body.
pub fn request_hash(method: &str, target: &str, headers: &HeaderMap, body: &[u8]) -> String {
    let named_by_connection: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    let mut lines: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .filter(|(n, _)| {
            !HOP_BY_HOP.contains(n) && *n != "x-road-request-hash" && !named_by_connection.iter().any(|c| c == n)
        })
        .collect();
    // Stable: values of one name keep their order.
    lines.sort_by(|a, b| a.0.cmp(b.0));
    let mut text = format!("{method} {target}\n").into_bytes();
    for (name, value) in lines {
        text.extend_from_slice(name.as_bytes());
        text.extend_from_slice(b": ");
        text.extend_from_slice(value);
        text.push(b'\n');
    }
    text.push(b'\n');
    text.extend_from_slice(body);
    base64::engine::general_purpose::STANDARD.encode(digest::digest(&digest::SHA512, &text))
}

/// SHA-256 of `bytes`, as the audit log keeps query strings and bodies.
pub fn sha256(bytes: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, bytes).as_ref().to_vec()
}
