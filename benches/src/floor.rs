//! The floor: the least a proxy doing this job must do, with no features. It terminates mTLS
//! (client certificates verified against the CA), and forwards each request as it is to the
//! upstream over pooled keep-alive connections (HTTP/1.1 for HTTP, h2c for gRPC), streaming
//! bodies both ways. No routing, no identity, no log: what any feature costs shows against it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Body = BoxBody<Bytes, hyper::Error>;

struct Floor {
    http: SocketAddr,
    grpc: SocketAddr,
    h1: Client<HttpConnector, Incoming>,
    h2: Client<HttpConnector, Incoming>,
}

/// Serves on `listen` until the process is killed (the harness's `floor` child).
pub(crate) async fn serve(
    listen: SocketAddr,
    http: SocketAddr,
    grpc: SocketAddr,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> anyhow::Result<()> {
    let mut roots = rustls::RootCertStore::empty();
    for c in splpd_certs::load::read_certificates(ca)? {
        roots.add(c)?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crate::pki::provider()).build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(crate::pki::provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(splpd_certs::load::read_certificates(cert)?, splpd_certs::load::read_private_key(key)?)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let floor = Arc::new(Floor {
        http,
        grpc,
        h1: Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1024).build(connector.clone()),
        h2: Client::builder(TokioExecutor::new()).http2_only(true).build(connector),
    });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (acceptor, floor) = (acceptor.clone(), Arc::clone(&floor));
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let svc = service_fn(move |req| {
                let floor = Arc::clone(&floor);
                async move { Ok::<_, std::convert::Infallible>(floor.forward(req).await) }
            });
            let io = TokioIo::new(tls);
            if h2 {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(io, svc).await;
            } else {
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
            }
        });
    }
}

impl Floor {
    async fn forward(&self, mut req: Request<Incoming>) -> Response<Body> {
        let grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let (addr, version, client) =
            if grpc { (self.grpc, Version::HTTP_2, &self.h2) } else { (self.http, Version::HTTP_11, &self.h1) };
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let Ok(uri) = format!("http://{addr}{path}").parse() else { return status(StatusCode::BAD_REQUEST) };
        *req.uri_mut() = uri;
        *req.version_mut() = version;
        match client.request(req).await {
            Ok(resp) => resp.map(|b| b.boxed()),
            Err(_) => status(StatusCode::BAD_GATEWAY),
        }
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *resp.status_mut() = code;
    resp
}
