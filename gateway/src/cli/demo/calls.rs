//! The demo's sample calls: what each one is, how to make it (in process with hyper and rustls,
//! or with curl), and what it answered.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use serde::Serialize;
use splpd_proto::kesehatan::v1::rujukan_client::RujukanClient;
use splpd_proto::kesehatan::v1::{KirimRequest, PantauRequest};

/// Time allowed for any one sample call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One sample call, as the demo makes it and as `demo.json` lists it.
#[derive(Debug, Clone, Serialize)]
pub(super) struct SampleCall {
    /// A short name of what it shows.
    pub(super) name: &'static str,
    /// The client making it.
    pub(super) client: &'static str,
    /// `mtls`, or `http` for the opted-in legacy application.
    pub(super) connection: &'static str,
    /// The client's certificate and key (`mtls` only).
    pub(super) cert: Option<PathBuf>,
    pub(super) key: Option<PathBuf>,
    pub(super) method: &'static str,
    pub(super) url: String,
    pub(super) headers: BTreeMap<&'static str, String>,
    /// The status it gets while the demo serves.
    pub(super) expected_status: u16,
    /// The `X-Road-Error` it gets, when the gateway refuses it.
    pub(super) expected_error: Option<&'static str>,
    /// What it shows, for people.
    pub(super) note: String,
    /// The same call as a curl command line.
    pub(super) curl: String,
}

impl SampleCall {
    /// A `GET` of `url` by `client`; `credentials` are its certificate and key for mTLS, none for
    /// plain HTTP. It expects 200 until told otherwise.
    pub(super) fn get(
        name: &'static str,
        client: &'static str,
        credentials: Option<(&Path, &Path)>,
        url: String,
    ) -> Self {
        Self {
            name,
            client,
            connection: if credentials.is_some() { "mtls" } else { "http" },
            cert: credentials.map(|(c, _)| c.to_owned()),
            key: credentials.map(|(_, k)| k.to_owned()),
            method: "GET",
            url,
            headers: BTreeMap::new(),
            expected_status: 200,
            expected_error: None,
            note: String::new(),
            curl: String::new(),
        }
    }

    /// Adds a request header.
    pub(super) fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.insert(name, value.to_owned());
        self
    }

    /// Sets the answer expected: a status and, for the gateway's own refusals, the X-Road error.
    pub(super) fn expect(mut self, status: u16, error: Option<&'static str>) -> Self {
        self.expected_status = status;
        self.expected_error = error;
        self
    }

    /// Says what the call shows, and fills in its curl command line.
    pub(super) fn explained(mut self, note: impl Into<String>, ca_file: &Path) -> Self {
        self.note = note.into();
        self.curl = self.curl_command(ca_file, &["-i"]);
        self
    }

    /// The call as a curl command line, ready to paste into a POSIX shell, with `extra` options
    /// after `curl`.
    pub(super) fn curl_command(&self, ca_file: &Path, extra: &[&str]) -> String {
        let mut cmd = String::from("curl -sS");
        for e in extra {
            let _ = write!(cmd, " {e}");
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let _ = write!(
                cmd,
                " --cacert {} --cert {} --key {}",
                sh_quote(&ca_file.display().to_string()),
                sh_quote(&cert.display().to_string()),
                sh_quote(&key.display().to_string())
            );
        }
        if self.method != "GET" {
            let _ = write!(cmd, " -X {}", self.method);
        }
        for (name, value) in &self.headers {
            let _ = write!(cmd, " -H {}", sh_quote(&format!("{name}: {value}")));
        }
        let _ = write!(cmd, " {}", sh_quote(&self.url));
        cmd
    }

    /// What `client` and the call look like in the table, e.g. `RSUD  GET .../nik/1602...`.
    pub(super) fn summary(&self) -> String {
        let short = self.client.rsplit('/').next().unwrap_or(self.client);
        let path = self.url.split_once("/r1/").map_or(self.url.as_str(), |(_, p)| p);
        let path = path.strip_prefix("ID/PEMDA/1602/").unwrap_or(path);
        format!("{short:<12} {} {path}", self.method)
    }
}

/// Quotes `s` for a POSIX shell when it holds anything but plainly safe characters.
pub(super) fn sh_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-:=@,+%".contains(c);
    if !s.is_empty() && s.chars().all(safe) { s.to_owned() } else { format!("'{}'", s.replace('\'', r"'\''")) }
}

/// What a call answered.
#[derive(Debug, Clone)]
pub(super) struct Outcome {
    pub(super) status: StatusCode,
    pub(super) x_road_id: Option<String>,
    pub(super) x_road_error: Option<String>,
    pub(super) retry_after: Option<String>,
    pub(super) body: String,
}

impl Outcome {
    /// Whether it is what the sample says it should be.
    pub(super) fn matches(&self, call: &SampleCall) -> bool {
        self.status.as_u16() == call.expected_status && self.x_road_error.as_deref() == call.expected_error
    }

    /// `message` of an X-Road error body, or the body itself.
    pub(super) fn message(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| self.body.clone())
    }
}

/// Makes `call` with `client`.
pub(super) async fn make(client: &super::super::https::HttpClient, call: &SampleCall) -> anyhow::Result<Outcome> {
    let mut req = Request::builder().method(call.method).uri(&call.url);
    for (name, value) in &call.headers {
        req = req.header(*name, value);
    }
    let req = req.body(Full::new(Bytes::new()))?;
    let exchange = async {
        let resp = client.request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        anyhow::Ok((parts, body))
    };
    let (parts, body) = tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .with_context(|| format!("{} {} took longer than {CALL_TIMEOUT:?}", call.method, call.url))?
        .with_context(|| format!("{} {}", call.method, call.url))?;
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    Ok(Outcome {
        status: parts.status,
        x_road_id: header("x-road-id"),
        x_road_error: header("x-road-error"),
        retry_after: header("retry-after"),
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// What the gRPC calls through the gateway answered.
#[derive(Debug)]
pub(super) struct GrpcOutcome {
    pub(super) nomor_rujukan: String,
    /// The exchange id the gateway gave `Kirim`.
    pub(super) x_road_id: String,
    /// Each update `Pantau` streamed: stage and description.
    pub(super) updates: Vec<(String, String)>,
    /// What the client without a grant got: code, `x-road-error` and message.
    pub(super) refused: (tonic::Code, String, String),
}

/// A gRPC channel to the gateway at `gateway_url` over HTTP/2 and TLS, trusting the demo CA and
/// presenting the client certificate `credentials`.
async fn grpc_channel(
    gateway_url: &str,
    ca_file: &Path,
    credentials: (&Path, &Path),
) -> anyhow::Result<tonic::transport::Channel> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(super::super::https::tls_config(ca_file, Some(credentials))?)
        .https_only()
        .enable_http2()
        .build();
    let channel = tonic::transport::Endpoint::from_shared(gateway_url.to_owned())?
        .connect_timeout(CALL_TIMEOUT)
        .connect_with_connector(https)
        .await
        .with_context(|| format!("connecting to the gateway at {gateway_url} for gRPC"))?;
    Ok(channel)
}

/// Through the gateway, as the client `caller`: sends a referral with `Kirim` (naming the service
/// in `x-road-service` metadata), then follows it with the server-streaming `Pantau` (routed by
/// the gRPC service name, which the configuration maps to the service). Then the client
/// `outsider`, holding no grant, tries `Kirim` too.
pub(super) async fn grpc_through_gateway(
    gateway_url: &str,
    ca_file: &Path,
    caller: (&Path, &Path),
    outsider: (&Path, &Path),
    nik: &str,
) -> anyhow::Result<GrpcOutcome> {
    let referral = || KirimRequest {
        nik: nik.to_owned(),
        faskes_asal: "PKM-KAYUAGUNG".to_owned(),
        faskes_tujuan: "RSUD-KAYUAGUNG".to_owned(),
        diagnosis_icd10: "J18.9".to_owned(),
        catatan: "perlu foto toraks".to_owned(),
    };
    let calls = async {
        let mut client = RujukanClient::new(grpc_channel(gateway_url, ca_file, caller).await?);
        let mut kirim = tonic::Request::new(referral());
        kirim.metadata_mut().insert("x-road-service", tonic::metadata::MetadataValue::from_static(RUJUKAN));
        let sent = client.kirim(kirim).await.context("Kirim")?;
        let x_road_id = sent.metadata().get("x-road-id").and_then(|v| v.to_str().ok()).unwrap_or("(none)").to_owned();
        let sent = sent.into_inner();
        let mut stream = client
            .pantau(PantauRequest { nomor_rujukan: sent.nomor_rujukan.clone() })
            .await
            .context("Pantau")?
            .into_inner();
        let mut updates = Vec::new();
        while let Some(update) = stream.message().await.context("Pantau")? {
            let stage = update.tahap();
            let stage = stage.as_str_name().strip_prefix("TAHAP_").unwrap_or(stage.as_str_name());
            updates.push((stage.to_owned(), update.keterangan));
        }

        let mut outsider = RujukanClient::new(grpc_channel(gateway_url, ca_file, outsider).await?);
        let refused = match outsider.kirim(referral()).await {
            Ok(_) => anyhow::bail!("a client without a grant got its referral through"),
            Err(status) => {
                let error = status.metadata().get("x-road-error").and_then(|v| v.to_str().ok()).unwrap_or("");
                (status.code(), error.to_owned(), status.message().to_owned())
            }
        };
        anyhow::Ok(GrpcOutcome { nomor_rujukan: sent.nomor_rujukan, x_road_id, updates, refused })
    };
    tokio::time::timeout(CALL_TIMEOUT, calls).await.context("the gRPC calls took too long")?
}

/// `grpcurl` with the demo CA and a client's certificate and key, ready for a target.
fn grpcurl_with(ca_file: &Path, credentials: (&Path, &Path)) -> String {
    let path = |p: &Path| sh_quote(&p.display().to_string());
    format!("grpcurl -cacert {} -cert {} -key {}", path(ca_file), path(credentials.0), path(credentials.1))
}

/// The `Kirim` call as a grpcurl command line for the gateway at `authority` (`host:port`), with
/// the proto file under `proto_root`: the gateway's server reflection describes its own services
/// only, so a client of an agency's service brings that service's proto file.
pub(super) fn grpcurl_command(
    authority: &str,
    ca_file: &Path,
    credentials: (&Path, &Path),
    proto_root: &Path,
    nik: &str,
) -> String {
    let data = format!(r#"{{"nik":"{nik}","faskes_asal":"PKM-KAYUAGUNG","faskes_tujuan":"RSUD-KAYUAGUNG"}}"#);
    format!(
        "{} -import-path {} -proto kesehatan/v1/rujukan.proto -H {} -d {} {authority} kesehatan.v1.Rujukan/Kirim",
        grpcurl_with(ca_file, credentials),
        sh_quote(&proto_root.display().to_string()),
        sh_quote(&format!("x-road-service: {RUJUKAN}")),
        sh_quote(&data),
    )
}

/// The gateway's own health check as a grpcurl command line: grpcurl learns the message types
/// from the gateway's server reflection.
pub(super) fn grpcurl_health_command(authority: &str, ca_file: &Path, credentials: (&Path, &Path)) -> String {
    format!("{} {authority} grpc.health.v1.Health/Check", grpcurl_with(ca_file, credentials))
}

/// The gateway's own gRPC services, listed by server reflection, as a grpcurl command line.
pub(super) fn grpcurl_list_command(authority: &str, ca_file: &Path, credentials: (&Path, &Path)) -> String {
    format!("{} {authority} list", grpcurl_with(ca_file, credentials))
}

/// Whether a program of this name is on the `PATH`.
pub(super) fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// The referral service's identifier.
pub(super) const RUJUKAN: &str = "ID/PEMDA/1602/DINKES/rujukan";

/// A stage name as the table prints it.
pub(super) fn stage_names(updates: &[(String, String)]) -> String {
    updates.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>().join(" -> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(sh_quote("/tmp/a-b/c.crt"), "/tmp/a-b/c.crt");
        assert_eq!(sh_quote("X-Road-Client: ID/PEMDA/1602/RSUD"), "'X-Road-Client: ID/PEMDA/1602/RSUD'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(
            sh_quote("https://127.0.0.1:1/r1/x?nama=Siti+Aminah"),
            "'https://127.0.0.1:1/r1/x?nama=Siti+Aminah'"
        );
    }

    #[test]
    fn grpcurl_command_names_the_proto_certificates_service_and_method() {
        let cmd = grpcurl_command(
            "127.0.0.1:8443",
            Path::new("/d/ca.crt"),
            (Path::new("/d/rsud.crt"), Path::new("/d/rsud.key")),
            Path::new("/d/proto"),
            "1602021503850002",
        );
        assert_eq!(
            cmd,
            "grpcurl -cacert /d/ca.crt -cert /d/rsud.crt -key /d/rsud.key -import-path /d/proto \
             -proto kesehatan/v1/rujukan.proto -H 'x-road-service: ID/PEMDA/1602/DINKES/rujukan' \
             -d '{\"nik\":\"1602021503850002\",\"faskes_asal\":\"PKM-KAYUAGUNG\",\"faskes_tujuan\":\"RSUD-KAYUAGUNG\"}' \
             127.0.0.1:8443 kesehatan.v1.Rujukan/Kirim"
        );
        assert_eq!(
            grpcurl_health_command(
                "127.0.0.1:8443",
                Path::new("/d/ca.crt"),
                (Path::new("/d/rsud.crt"), Path::new("/d/rsud.key"))
            ),
            "grpcurl -cacert /d/ca.crt -cert /d/rsud.crt -key /d/rsud.key 127.0.0.1:8443 grpc.health.v1.Health/Check"
        );
        assert!(on_path("sh"));
        assert!(!on_path("surely-no-such-program-splpd"));
    }

    #[test]
    fn curl_command_carries_certificates_headers_and_url() {
        let call = SampleCall::get(
            "allowed",
            "ID/PEMDA/1602/RSUD",
            Some((Path::new("/d/rsud.crt"), Path::new("/d/rsud.key"))),
            "https://127.0.0.1:1/r1/ID/PEMDA/1602/DISDUKCAPIL/nik-verify/nik/1".to_owned(),
        )
        .header("X-Road-Client", "ID/PEMDA/1602/RSUD")
        .explained("", Path::new("/d/ca.crt"));
        assert_eq!(
            call.curl,
            "curl -sS -i --cacert /d/ca.crt --cert /d/rsud.crt --key /d/rsud.key -H 'X-Road-Client: ID/PEMDA/1602/RSUD' \
             https://127.0.0.1:1/r1/ID/PEMDA/1602/DISDUKCAPIL/nik-verify/nik/1"
        );
        assert_eq!(call.summary(), "RSUD         GET DISDUKCAPIL/nik-verify/nik/1");
    }
}
