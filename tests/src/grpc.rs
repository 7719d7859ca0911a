//! gRPC through the gateway: a small test service, `splpd.test.v1.Probe`, with one method of each
//! call shape, served by tonic's server machinery over h2c ([`ProbeUpstream::start`]) or HTTP/2
//! over TLS ([`ProbeUpstream::start_tls`]); and a tonic client ([`ProbeClient`]) over rustls with
//! a client certificate.
//!
//! The service is written out by hand (prost messages, tonic's generic server and client) rather
//! than generated, so that the gateway's own proto crate and its reflection descriptor hold no
//! test package. Its methods:
//!
//! | method | shape | answer |
//! |---|---|---|
//! | `Unary(Ask) -> Reply` | unary | after `delay_ms`, `text` back and `size` bytes of [`payload`]; or the status `fail_code` |
//! | `Download(Ask) -> stream Reply` | server streaming | `count` replies of `size` bytes, `delay_ms` apart; then, if `fail_code`, that status |
//! | `Upload(stream Chunk) -> Reply` | client streaming | how many chunks and bytes arrived, and the SHA-256 of the bytes |
//! | `Chat(stream Chunk) -> stream Chunk` | bidirectional | each chunk echoed as soon as it arrives |
//!
//! It does not enforce `grpc-timeout` itself (it is served by hyper directly, without tonic's
//! timeout layer), so a deadline the client sees exceeded was enforced by the gateway. It records
//! the metadata of every call, and the tag (`Ask.tag`, or `x-probe-tag` metadata) of every call
//! it noticed being cancelled: a unary call dropped while it waited, or a stream whose reader
//! went away.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_lc_rs::digest;
use bytes::Bytes;
use http::HeaderMap;
use http::uri::PathAndQuery;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxFuture;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use crate::client::{self, BoxError, Proto};
use crate::pki::ClientCert;

/// The fully-qualified name of the test service.
pub const SERVICE_NAME: &str = "splpd.test.v1.Probe";

/// The messages of `splpd.test.v1`, as prost would generate them.
pub mod pb {
    /// What a unary or server-streaming call asks for.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Ask {
        /// Sent back in the reply.
        #[prost(string, tag = "1")]
        pub text: String,
        /// `Download`: how many replies.
        #[prost(uint32, tag = "2")]
        pub count: u32,
        /// Bytes of payload per reply.
        #[prost(uint32, tag = "3")]
        pub size: u32,
        /// `Unary`: wait before answering; `Download`: between two replies.
        #[prost(uint32, tag = "4")]
        pub delay_ms: u32,
        /// Answer (or end the stream) with this gRPC status code, when not 0.
        #[prost(int32, tag = "5")]
        pub fail_code: i32,
        /// Names the call in the service's record of cancellations.
        #[prost(string, tag = "6")]
        pub tag: String,
    }

    /// A unary or server-streaming reply.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Reply {
        /// `Ask.text`, or for `Upload` the hex SHA-256 of the bytes received.
        #[prost(string, tag = "1")]
        pub text: String,
        /// [`super::payload`] of `Ask.size` bytes for reply `seq`.
        #[prost(bytes = "bytes", tag = "2")]
        pub data: ::bytes::Bytes,
        /// Its position in the stream, from 0.
        #[prost(uint32, tag = "3")]
        pub seq: u32,
        /// `Upload`: how many chunks arrived.
        #[prost(uint32, tag = "4")]
        pub count: u32,
        /// `Upload`: how many bytes of data arrived.
        #[prost(uint64, tag = "5")]
        pub total_bytes: u64,
    }

    /// A piece of a client or bidirectional stream.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Chunk {
        /// Its position in the stream, from 0.
        #[prost(uint32, tag = "1")]
        pub seq: u32,
        /// Its bytes.
        #[prost(bytes = "bytes", tag = "2")]
        pub data: ::bytes::Bytes,
    }
}

use pb::{Ask, Chunk, Reply};

/// The path of a method of the test service, e.g. `/splpd.test.v1.Probe/Unary`.
pub fn method_path(method: &str) -> String {
    format!("/{SERVICE_NAME}/{method}")
}

/// The payload of reply `seq`: `size` bytes, byte `i` being `(i + 7·seq) % 251`, so that a reply
/// out of place or altered shows.
pub fn payload(seq: u32, size: usize) -> Bytes {
    let shift = (seq as usize).wrapping_mul(7);
    (0..size).map(|i| (i.wrapping_add(shift) % 251) as u8).collect::<Vec<u8>>().into()
}

/// The metadata key whose value names a call in the service's record of cancellations.
pub const TAG: &str = "x-probe-tag";
/// Metadata the service sets on each status it fails with (a custom trailer).
pub const DETAIL: &str = "x-probe-detail";
/// Metadata the service sets on each response's headers.
pub const HEADER: &str = "x-probe-header";

/// A call as the service received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `/splpd.test.v1.Probe/Method`.
    pub path: String,
    /// The request headers (the call's metadata).
    pub headers: HeaderMap,
}

impl Seen {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Debug, Default)]
struct State {
    seen: Mutex<Vec<Seen>>,
    cancelled: Mutex<Vec<String>>,
    notify: Notify,
}

impl State {
    fn cancelled(&self, tag: &str) {
        self.cancelled.lock().unwrap_or_else(PoisonError::into_inner).push(tag.to_owned());
        self.notify.notify_waiters();
    }
}

/// Records the call as cancelled when dropped before [`Self::done`].
struct CancelGuard {
    state: Arc<State>,
    tag: String,
    done: bool,
}

impl CancelGuard {
    fn done(mut self) {
        self.done = true;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.done {
            self.state.cancelled(&self.tag);
        }
    }
}

fn tag_of(metadata: &MetadataMap, ask: Option<&Ask>) -> String {
    match ask.map(|a| a.tag.as_str()).filter(|t| !t.is_empty()) {
        Some(tag) => tag.to_owned(),
        None => metadata.get(TAG).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned(),
    }
}

/// The status `fail_code` with a message the gateway must pass untouched (it needs
/// percent-encoding), a custom trailer, and an `x-road-error` of the service's own, which the
/// gateway must not pass (it would pass for the gateway's refusal).
fn failure(code: i32, text: &str) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert(DETAIL, MetadataValue::from_static("from-the-service"));
    metadata.insert("x-road-error", MetadataValue::from_static("Client.AccessDenied"));
    Status::with_metadata(Code::from_i32(code), failure_message(text), metadata)
}

/// The message the service fails with for `text`.
pub fn failure_message(text: &str) -> String {
    format!("layanan menolak: {text} — 100% miliknya")
}

async fn unary(state: Arc<State>, req: Request<Ask>) -> Result<Response<Reply>, Status> {
    let tag = tag_of(req.metadata(), Some(req.get_ref()));
    let ask = req.into_inner();
    let guard = CancelGuard { state, tag, done: false };
    if ask.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(u64::from(ask.delay_ms))).await;
    }
    guard.done();
    if ask.fail_code != 0 {
        return Err(failure(ask.fail_code, &ask.text));
    }
    let mut resp = Response::new(Reply { data: payload(0, ask.size as usize), text: ask.text, ..Reply::default() });
    resp.metadata_mut().insert(HEADER, MetadataValue::from_static("unary"));
    Ok(resp)
}

type ReplyStream = ReceiverStream<Result<Reply, Status>>;
type ChunkStream = ReceiverStream<Result<Chunk, Status>>;

async fn download(state: Arc<State>, req: Request<Ask>) -> Result<Response<ReplyStream>, Status> {
    let tag = tag_of(req.metadata(), Some(req.get_ref()));
    let ask = req.into_inner();
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let base = payload(0, ask.size as usize + 251);
        for seq in 0..ask.count {
            if ask.delay_ms > 0 && seq > 0 {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(u64::from(ask.delay_ms))) => {}
                    () = tx.closed() => return state.cancelled(&tag),
                }
            }
            // payload(seq, size) is a window of the base pattern.
            let start = (seq as usize).wrapping_mul(7) % 251;
            let data = base.slice(start..start + ask.size as usize);
            if tx.send(Ok(Reply { seq, data, ..Reply::default() })).await.is_err() {
                return state.cancelled(&tag);
            }
        }
        if ask.fail_code != 0 {
            let _ = tx.send(Err(failure(ask.fail_code, &ask.text))).await;
        }
    });
    let mut resp = Response::new(ReceiverStream::new(rx));
    resp.metadata_mut().insert(HEADER, MetadataValue::from_static("download"));
    Ok(resp)
}

async fn upload(req: Request<Streaming<Chunk>>) -> Result<Response<Reply>, Status> {
    let mut inbound = req.into_inner();
    let mut sha = digest::Context::new(&digest::SHA256);
    let (mut count, mut total_bytes) = (0u32, 0u64);
    while let Some(chunk) = inbound.message().await? {
        if chunk.seq != count {
            return Err(Status::invalid_argument(format!("chunk {} arrived as number {count}", chunk.seq)));
        }
        sha.update(&chunk.data);
        count += 1;
        total_bytes += chunk.data.len() as u64;
    }
    let text = sha.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Response::new(Reply { text, count, total_bytes, ..Reply::default() }))
}

async fn chat(state: Arc<State>, req: Request<Streaming<Chunk>>) -> Result<Response<ChunkStream>, Status> {
    let tag = tag_of(req.metadata(), None);
    let mut inbound = req.into_inner();
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                next = inbound.message() => match next {
                    Ok(Some(chunk)) => {
                        if tx.send(Ok(chunk)).await.is_err() {
                            return state.cancelled(&tag);
                        }
                    }
                    // The client half-closed: the answer ends too.
                    Ok(None) => return,
                    Err(_) => return state.cancelled(&tag),
                },
                () = tx.closed() => return state.cancelled(&tag),
            }
        }
    });
    Ok(Response::new(ReceiverStream::new(rx)))
}

/// The service as an HTTP service: tonic's server-side gRPC handling per method.
#[derive(Debug, Clone)]
struct ProbeService {
    state: Arc<State>,
}

impl tower::Service<http::Request<Incoming>> for ProbeService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Incoming>) -> Self::Future {
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            let path = req.uri().path().to_owned();
            state
                .seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Seen { path: path.clone(), headers: req.headers().clone() });
            let method = path.strip_prefix(&format!("/{SERVICE_NAME}/")).unwrap_or("").to_owned();
            let resp = match method.as_str() {
                "Unary" => {
                    let svc = tower::service_fn(move |r| unary(Arc::clone(&state), r));
                    tonic::server::Grpc::new(ProstCodec::default()).unary(svc, req).await
                }
                "Download" => {
                    let svc = tower::service_fn(move |r| download(Arc::clone(&state), r));
                    tonic::server::Grpc::new(ProstCodec::default()).server_streaming(svc, req).await
                }
                "Upload" => {
                    tonic::server::Grpc::new(ProstCodec::default())
                        .client_streaming(tower::service_fn(upload), req)
                        .await
                }
                "Chat" => {
                    let svc = tower::service_fn(move |r| chat(Arc::clone(&state), r));
                    tonic::server::Grpc::new(ProstCodec::default()).streaming(svc, req).await
                }
                _ => Status::unimplemented(format!("no method {path}")).into_http(),
            };
            Ok(resp)
        })
    }
}

/// The TLS configuration of an HTTPS gRPC upstream: `cert` as its server certificate, `h2`
/// alone in ALPN, no client certificate asked.
pub fn h2_server_config(cert: &ClientCert) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(cert.chain.clone(), cert.key.clone_key())
        .expect("server certificate");
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// A running test service; stops when dropped.
#[derive(Debug)]
pub struct ProbeUpstream {
    addr: SocketAddr,
    tls: bool,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl ProbeUpstream {
    /// Binds `127.0.0.1:0` and serves HTTP/2 in cleartext (h2c with prior knowledge).
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Binds `127.0.0.1:0` and serves HTTP/2 over TLS with `config` (see [`h2_server_config`]).
    pub async fn start_tls(config: Arc<ServerConfig>) -> Self {
        Self::start_with(Some(config)).await
    }

    async fn start_with(tls: Option<Arc<ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream address");
        let state = Arc::new(State::default());
        let service = ProbeService { state: Arc::clone(&state) };
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let is_tls = acceptor.is_some();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let _ = tcp.set_nodelay(true);
                let (service, acceptor) = (service.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let mut builder = auto::Builder::new(TokioExecutor::new()).http2_only();
                    builder.http2().max_concurrent_streams(1024);
                    let service = TowerToHyperService::new(service);
                    let _ = match acceptor {
                        None => builder.serve_connection(TokioIo::new(tcp), service).await,
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(tls) => builder.serve_connection(TokioIo::new(tls), service).await,
                            Err(_) => return,
                        },
                    };
                });
            }
        });
        Self { addr, tls: is_tls, state, task }
    }

    /// `http://127.0.0.1:port` (or `https://` over TLS), for a service's `upstreams`.
    pub fn url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.addr)
    }

    /// Every call received so far, in order of arrival.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The tags of the calls noticed cancelled so far.
    pub fn cancelled(&self) -> Vec<String> {
        self.state.cancelled.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Whether the call tagged `tag` is noticed cancelled within `within`.
    pub async fn wait_cancelled(&self, tag: &str, within: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.state.notify.notified();
                if self.cancelled().iter().any(|t| t == tag) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(within, wait).await.is_ok()
    }
}

impl Drop for ProbeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A tonic client of the test service, on one HTTP/2 connection over rustls.
#[derive(Debug, Clone)]
pub struct ProbeClient {
    inner: tonic::client::Grpc<Channel>,
}

impl ProbeClient {
    /// Connects over TLS to `addr` (server name `localhost`), trusting `roots` and presenting
    /// `cert`, offering `h2` alone in ALPN.
    pub async fn connect(
        addr: SocketAddr,
        roots: &[CertificateDer<'static>],
        cert: Option<&ClientCert>,
    ) -> Result<Self, BoxError> {
        Ok(Self::new(channel(addr, roots, cert).await?))
    }

    /// A client on `channel`.
    pub fn new(channel: Channel) -> Self {
        Self { inner: tonic::client::Grpc::new(channel) }
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.inner.ready().await.map_err(|e| Status::unavailable(format!("the channel is not ready: {e}")))
    }

    fn path(path: &str) -> PathAndQuery {
        path.parse().expect("gRPC method path")
    }

    /// `Unary`.
    pub async fn unary(&mut self, req: Request<Ask>) -> Result<Response<Reply>, Status> {
        self.unary_at(&method_path("Unary"), req).await
    }

    /// A unary call of `Ask` and `Reply` at any path, e.g. of a service no mapping names.
    pub async fn unary_at(&mut self, path: &str, req: Request<Ask>) -> Result<Response<Reply>, Status> {
        self.ready().await?;
        self.inner.unary(req, Self::path(path), ProstCodec::default()).await
    }

    /// `Download`.
    pub async fn download(&mut self, req: Request<Ask>) -> Result<Response<Streaming<Reply>>, Status> {
        self.ready().await?;
        self.inner.server_streaming(req, Self::path(&method_path("Download")), ProstCodec::default()).await
    }

    /// `Upload`.
    pub async fn upload<S>(&mut self, req: Request<S>) -> Result<Response<Reply>, Status>
    where
        S: Stream<Item = Chunk> + Send + 'static,
    {
        self.ready().await?;
        self.inner.client_streaming(req, Self::path(&method_path("Upload")), ProstCodec::default()).await
    }

    /// `Chat`.
    pub async fn chat<S>(&mut self, req: Request<S>) -> Result<Response<Streaming<Chunk>>, Status>
    where
        S: Stream<Item = Chunk> + Send + 'static,
    {
        self.ready().await?;
        self.inner.streaming(req, Self::path(&method_path("Chat")), ProstCodec::default()).await
    }
}

/// A tonic channel on one HTTP/2 connection over TLS to `addr` (server name `localhost`),
/// trusting `roots` and presenting `cert`, offering `h2` alone in ALPN: for any generated client.
pub async fn channel(
    addr: SocketAddr,
    roots: &[CertificateDer<'static>],
    cert: Option<&ClientCert>,
) -> Result<Channel, BoxError> {
    channel_with_window(addr, roots, cert, None).await
}

/// The same, with `window` as its streams' HTTP/2 flow-control window when given: the bytes of
/// a stream the server may send ahead of what the client has read.
pub async fn channel_with_window(
    addr: SocketAddr,
    roots: &[CertificateDer<'static>],
    cert: Option<&ClientCert>,
    window: Option<u32>,
) -> Result<Channel, BoxError> {
    let config = client::tls_config(roots, cert, Proto::H2);
    let connector = tower::service_fn(move |_: http::Uri| {
        let config = Arc::clone(&config);
        async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from("localhost")?;
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
            Ok::<_, BoxError>(TokioIo::new(tls))
        }
    });
    let channel = Endpoint::from_shared(format!("https://localhost:{}", addr.port()))?
        .connect_timeout(Duration::from_secs(5))
        .initial_stream_window_size(window)
        .connect_with_connector(connector)
        .await?;
    Ok(channel)
}

/// A request carrying `message` and each `(key, value)` as metadata.
pub fn request<T>(message: T, metadata: &[(&'static str, &str)]) -> Request<T> {
    let mut req = Request::new(message);
    for (key, value) in metadata {
        req.metadata_mut().insert(*key, value.parse().expect("metadata value"));
    }
    req
}

/// A gRPC message framed for the wire (uncompressed): a zero flag byte, the length in four
/// bytes big-endian, the encoded message.
pub fn frame(message: &impl prost::Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(0);
    out.extend_from_slice(&u32::try_from(body.len()).expect("message size").to_be_bytes());
    out.extend_from_slice(&body);
    out.into()
}

/// A gRPC upstream that speaks only the standard health protocol (`grpc.health.v1.Health`),
/// served by tonic-health over h2c, whose answers the test sets through [`Self::reporter`].
#[allow(missing_debug_implementations)] // tonic-health's reporter is not Debug.
pub struct HealthUpstream {
    addr: SocketAddr,
    /// Sets what the upstream says of each service; the server as a whole ("") starts `SERVING`.
    pub reporter: tonic_health::server::HealthReporter,
    task: JoinHandle<()>,
}

impl HealthUpstream {
    /// Binds `127.0.0.1:0` and serves HTTP/2 in cleartext (h2c with prior knowledge).
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream address");
        let (reporter, service) = tonic_health::server::health_reporter();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let service = service.clone();
                tokio::spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new()).http2_only();
                    let _ = builder.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service)).await;
                });
            }
        });
        Self { addr, reporter, task }
    }

    /// The base URL to configure as the service's upstream.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for HealthUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
