//! The fixed upstream every row calls: plain HTTP (HTTP/1.1, and HTTP/2 with prior knowledge
//! for the direct row) answering `/1k` and `/64k` with that many bytes, and the gRPC service
//! `kesehatan.v1.Rujukan` over h2c, whose answers carry 1 KiB of text. It does no work beyond
//! that, so that every difference between rows is the proxy's.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use splpd_proto::kesehatan::v1::rujukan_server::{Rujukan, RujukanServer};
use splpd_proto::kesehatan::v1::{KirimRequest, KirimResponse, PantauRequest, StatusRujukan, Tahap};

/// Messages of one `Pantau` stream.
pub(crate) const STREAM_MESSAGES: usize = 10;
/// Size of the text in each gRPC answer.
const GRPC_TEXT: usize = 1024;

/// Where the upstream listens.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Upstream {
    pub(crate) http: SocketAddr,
    pub(crate) grpc: SocketAddr,
}

/// Starts both servers on the current runtime.
pub(crate) async fn start() -> anyhow::Result<Upstream> {
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addrs = Upstream { http: http.local_addr()?, grpc: grpc.local_addr()? };
    tokio::spawn(serve_http(http));
    tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
        let served = tonic::transport::Server::builder()
            .serve_with_incoming(RujukanServer::new(FixedRujukan::new()), incoming)
            .await;
        if let Err(e) = served {
            eprintln!("the benchmark's gRPC upstream stopped: {e}");
        }
    });
    Ok(addrs)
}

async fn serve_http(listener: tokio::net::TcpListener) {
    let small = Bytes::from(vec![b'x'; 1024]);
    let large = Bytes::from(vec![b'y'; 64 * 1024]);
    while let Ok((tcp, _)) = listener.accept().await {
        let _ = tcp.set_nodelay(true);
        let (small, large) = (small.clone(), large.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let body = if req.uri().path().ends_with("/64k") { large.clone() } else { small.clone() };
                async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(body))) }
            });
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tcp), svc).await;
        });
    }
}

/// `Kirim` answers with a 1 KiB referral number; `Pantau` streams [`STREAM_MESSAGES`] updates of
/// 1 KiB each.
#[derive(Debug)]
struct FixedRujukan {
    text: String,
}

impl FixedRujukan {
    fn new() -> Self {
        Self { text: "r".repeat(GRPC_TEXT) }
    }
}

#[tonic::async_trait]
impl Rujukan for FixedRujukan {
    async fn kirim(
        &self,
        _request: tonic::Request<KirimRequest>,
    ) -> Result<tonic::Response<KirimResponse>, tonic::Status> {
        Ok(tonic::Response::new(KirimResponse { nomor_rujukan: self.text.clone(), tahap: Tahap::Dikirim.into() }))
    }

    type PantauStream = Pin<Box<dyn Stream<Item = Result<StatusRujukan, tonic::Status>> + Send>>;

    async fn pantau(
        &self,
        request: tonic::Request<PantauRequest>,
    ) -> Result<tonic::Response<Self::PantauStream>, tonic::Status> {
        let nomor = request.into_inner().nomor_rujukan;
        let update = StatusRujukan {
            nomor_rujukan: nomor,
            tahap: Tahap::Diterima.into(),
            keterangan: self.text.clone(),
            waktu_unix_nanos: 0,
        };
        let updates = futures_util::stream::iter((0..STREAM_MESSAGES).map(move |_| Ok(update.clone())));
        Ok(tonic::Response::new(Box::pin(updates)))
    }
}
