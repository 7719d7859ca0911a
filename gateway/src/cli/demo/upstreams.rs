//! The sample region's agency services, served in process on loopback so that the demo's calls
//! reach real servers:
//!
//! - Disdukcapil's NIK check, `ID/PEMDA/1602/DISDUKCAPIL/nik-verify`: REST over HTTP/1.1 and
//!   h2c (hyper), `GET /nik/{nik}[?nama=...]` answering JSON as `examples/openapi/nik-verify.json`
//!   describes. A few fixed sample NIKs are known; any other is 404.
//! - Dinkes's referrals, `ID/PEMDA/1602/DINKES/rujukan`: gRPC `kesehatan.v1.Rujukan` (tonic),
//!   with a unary `Kirim` and a server-streaming `Pantau`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::Stream;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use serde_json::json;
use splpd_proto::kesehatan::v1::rujukan_server::{Rujukan, RujukanServer};
use splpd_proto::kesehatan::v1::{KirimRequest, KirimResponse, PantauRequest, StatusRujukan, Tahap};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The residents the sample NIK check knows: NIK and name. The NIKs follow the real layout
/// (region code 16 02 xx, birth date with 40 added to the day for women, serial number) but
/// belong to no one.
pub(super) const RESIDENTS: [(&str, &str); 3] =
    [("1602015708900001", "Siti Aminah"), ("1602021503850002", "Ahmad Fauzi"), ("1602036112000003", "Dewi Lestari")];

/// A well-formed NIK that the sample registry does not hold.
pub(super) const UNKNOWN_NIK: &str = "1602010101990099";

/// The sockets of the sample services, bound before the configuration is written so that it can
/// name their ports.
#[derive(Debug)]
pub(super) struct Sockets {
    nik: std::net::TcpListener,
    rujukan: std::net::TcpListener,
}

impl Sockets {
    /// Binds both services on loopback ports of the system's choosing.
    pub(super) fn bind() -> anyhow::Result<Self> {
        let bind = || {
            let socket = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
                .context("binding a loopback port for a sample service")?;
            socket.set_nonblocking(true)?;
            anyhow::Ok(socket)
        };
        Ok(Self { nik: bind()?, rujukan: bind()? })
    }

    /// Where the NIK check listens.
    pub(super) fn nik_addr(&self) -> std::io::Result<SocketAddr> {
        self.nik.local_addr()
    }

    /// Where the referral service listens.
    pub(super) fn rujukan_addr(&self) -> std::io::Result<SocketAddr> {
        self.rujukan.local_addr()
    }

    /// Starts serving both; must be called inside the tokio runtime.
    pub(super) fn serve(self) -> anyhow::Result<Upstreams> {
        let nik = TcpListener::from_std(self.nik)?;
        let rujukan = TcpListener::from_std(self.rujukan)?;
        let tasks = vec![
            tokio::spawn(serve_nik(nik)),
            tokio::spawn(async move {
                let incoming = tonic::transport::server::TcpIncoming::from(rujukan);
                let served = tonic::transport::Server::builder()
                    .serve_with_incoming(RujukanServer::new(RujukanDemo::default()), incoming)
                    .await;
                if let Err(e) = served {
                    tracing::warn!("the sample referral service stopped: {e}");
                }
            }),
        ];
        Ok(Upstreams { tasks })
    }
}

/// The running sample services.
#[derive(Debug)]
pub(super) struct Upstreams {
    tasks: Vec<JoinHandle<()>>,
}

impl Upstreams {
    /// Stops both services, dropping any call still open.
    pub(super) fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

async fn serve_nik(socket: TcpListener) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok((tcp, _)) => {
                    conns.spawn(async move {
                        let served = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tcp), service_fn(nik_check))
                            .await;
                        if let Err(e) = served {
                            tracing::debug!("sample NIK check: connection ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("sample NIK check: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// `GET /nik/{nik}[?nama=...]`: whether the NIK is registered and, when a name is given, whether
/// it matches. The name itself is never returned.
async fn nik_check(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(nik_answer(req.method(), req.uri().path(), req.uri().query()))
}

fn nik_answer(method: &Method, path: &str, query: Option<&str>) -> Response<Full<Bytes>> {
    // What the gateway's health checks ask for ([service.health_check] in the example).
    if path == "/health" {
        return json_response(StatusCode::OK, &json!({"status": "ok"}));
    }
    let Some(nik) = path.strip_prefix("/nik/") else {
        return json_response(StatusCode::NOT_FOUND, &json!({"pesan": "tidak ada: layanan ini hanya GET /nik/{nik}"}));
    };
    if method != Method::GET {
        return json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({"pesan": "hanya GET"}));
    }
    if nik.len() != 16 || !nik.bytes().all(|b| b.is_ascii_digit()) {
        return json_response(StatusCode::BAD_REQUEST, &json!({"pesan": "NIK harus 16 angka"}));
    }
    let nama = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "nama").map(|(_, v)| v.into_owned())
    });
    match RESIDENTS.iter().find(|(n, _)| *n == nik) {
        Some((_, registered)) => {
            let nama_cocok = nama.map(|n| n.trim().eq_ignore_ascii_case(registered));
            json_response(StatusCode::OK, &Verified { nik, valid: true, nama_cocok })
        }
        None => json_response(
            StatusCode::NOT_FOUND,
            &json!({"nik": nik, "valid": false, "pesan": "NIK tidak terdaftar di Disdukcapil Kabupaten Ogan Komering Ilir"}),
        ),
    }
}

/// The answer for a registered NIK, in the order the OpenAPI document lists its fields.
#[derive(Debug, Serialize)]
struct Verified<'a> {
    nik: &'a str,
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    nama_cocok: Option<bool>,
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    let text = serde_json::to_string(body).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The sample referral service: referrals live in memory for the demo's lifetime.
#[derive(Debug, Default)]
struct RujukanDemo {
    next: AtomicU32,
    sent: Mutex<HashMap<String, KirimRequest>>,
}

/// Time between two updates of `Pantau`, so the stream is visibly a stream.
const PANTAU_STEP: Duration = Duration::from_millis(150);

#[tonic::async_trait]
impl Rujukan for RujukanDemo {
    async fn kirim(
        &self,
        request: tonic::Request<KirimRequest>,
    ) -> Result<tonic::Response<KirimResponse>, tonic::Status> {
        let req = request.into_inner();
        if req.nik.len() != 16 || !req.nik.bytes().all(|b| b.is_ascii_digit()) {
            return Err(tonic::Status::invalid_argument("nik harus 16 angka"));
        }
        if req.faskes_asal.is_empty() || req.faskes_tujuan.is_empty() {
            return Err(tonic::Status::invalid_argument("faskes_asal dan faskes_tujuan wajib diisi"));
        }
        let nomor = format!("RJK-1602-{:06}", self.next.fetch_add(1, Ordering::Relaxed) + 1);
        self.sent.lock().unwrap_or_else(PoisonError::into_inner).insert(nomor.clone(), req);
        Ok(tonic::Response::new(KirimResponse { nomor_rujukan: nomor, tahap: Tahap::Dikirim.into() }))
    }

    type PantauStream = Pin<Box<dyn Stream<Item = Result<StatusRujukan, tonic::Status>> + Send>>;

    async fn pantau(
        &self,
        request: tonic::Request<PantauRequest>,
    ) -> Result<tonic::Response<Self::PantauStream>, tonic::Status> {
        let nomor = request.into_inner().nomor_rujukan;
        let sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner).get(&nomor).cloned();
        let Some(sent) = sent else {
            return Err(tonic::Status::not_found(format!("rujukan {nomor} tidak ada")));
        };
        let (asal, tujuan) = (sent.faskes_asal, sent.faskes_tujuan);
        let stages = vec![
            (Tahap::Dikirim, format!("dikirim oleh {asal} ke {tujuan}")),
            (Tahap::Diterima, format!("diterima oleh {tujuan}")),
            (Tahap::PasienTiba, format!("pasien tiba di {tujuan}")),
            (Tahap::Selesai, "pasien sudah dilayani; rujukan ditutup".to_owned()),
        ];
        let updates = futures_util::stream::unfold((stages.into_iter(), true), move |(mut rest, first)| {
            let nomor = nomor.clone();
            async move {
                let (tahap, keterangan) = rest.next()?;
                if !first {
                    tokio::time::sleep(PANTAU_STEP).await;
                }
                let update = StatusRujukan {
                    nomor_rujukan: nomor,
                    tahap: tahap.into(),
                    keterangan,
                    waktu_unix_nanos: splpd_gateway::audit::now_nanos(),
                };
                Some((Ok(update), (rest, false)))
            }
        });
        Ok(tonic::Response::new(Box::pin(updates)))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;

    use super::*;

    fn body_of(resp: Response<Full<Bytes>>) -> (StatusCode, serde_json::Value) {
        use http_body_util::BodyExt as _;
        let status = resp.status();
        let bytes = futures_util::FutureExt::now_or_never(resp.into_body().collect()).unwrap().unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn known_nik_is_valid_and_the_name_is_compared_not_returned() {
        let (nik, nama) = RESIDENTS[0];
        let (status, body) = body_of(nik_answer(&Method::GET, &format!("/nik/{nik}"), None));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({"nik": nik, "valid": true}));
        let query = format!("nama={}", nama.replace(' ', "+"));
        let (_, body) = body_of(nik_answer(&Method::GET, &format!("/nik/{nik}"), Some(&query)));
        assert_eq!(body["nama_cocok"], true);
        assert!(!body.to_string().contains(nama));
        let (_, body) = body_of(nik_answer(&Method::GET, &format!("/nik/{nik}"), Some("nama=Budi")));
        assert_eq!(body["nama_cocok"], false);
    }

    #[test]
    fn unknown_and_malformed_niks() {
        let (status, body) = body_of(nik_answer(&Method::GET, &format!("/nik/{UNKNOWN_NIK}"), None));
        assert_eq!((status, &body["valid"]), (StatusCode::NOT_FOUND, &json!(false)));
        assert_eq!(nik_answer(&Method::GET, "/nik/12ab", None).status(), StatusCode::BAD_REQUEST);
        assert_eq!(nik_answer(&Method::GET, "/health", None).status(), StatusCode::OK);
        assert_eq!(nik_answer(&Method::POST, "/nik/1602015708900001", None).status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(nik_answer(&Method::GET, "/other", None).status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_referral_is_sent_then_followed_to_the_end() {
        let svc = RujukanDemo::default();
        let sent = svc
            .kirim(tonic::Request::new(KirimRequest {
                nik: RESIDENTS[1].0.to_owned(),
                faskes_asal: "PKM-KAYUAGUNG".to_owned(),
                faskes_tujuan: "RSUD-KAYUAGUNG".to_owned(),
                ..KirimRequest::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(sent.nomor_rujukan, "RJK-1602-000001");
        let stream = svc
            .pantau(tonic::Request::new(PantauRequest { nomor_rujukan: sent.nomor_rujukan.clone() }))
            .await
            .unwrap()
            .into_inner();
        let stages: Vec<Tahap> = stream.map(|u| u.unwrap().tahap()).collect().await;
        assert_eq!(stages, [Tahap::Dikirim, Tahap::Diterima, Tahap::PasienTiba, Tahap::Selesai]);

        let missing = svc.pantau(tonic::Request::new(PantauRequest { nomor_rujukan: "RJK-X".to_owned() })).await;
        assert_eq!(missing.err().map(|s| s.code()), Some(tonic::Code::NotFound));
        let bad = svc.kirim(tonic::Request::new(KirimRequest { nik: "1".to_owned(), ..KirimRequest::default() })).await;
        assert_eq!(bad.err().map(|s| s.code()), Some(tonic::Code::InvalidArgument));
    }
}
