//! A stand-in for the national SPLP's API manager, which tests cannot run: HTTPS with a
//! certificate from its own CA, an OAuth2 token endpoint (`POST /oauth2/token`, client
//! credentials in HTTP Basic, RFC 6749 §4.4) and tenant URLs `/t/<tenant>/<api>/<version>/…`
//! that answer only with a token it issued, presented as `Bearer` in the configured header.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use splpd_certs::id::{IdKind, Identity};
use splpd_certs::load;
use splpd_certs::pki::{Ca, InitOptions, KeyType, LeafRequest};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::pki::ClientCert;
use crate::upstream::tls_server_config;

/// The client id the stand-in knows.
pub const CLIENT_ID: &str = "splpd-okikab";
/// The client secret it expects (with characters that need form-encoding in HTTP Basic).
pub const CLIENT_SECRET: &str = "r4hasia:+/&sekali";
/// The tenant domain.
pub const TENANT: &str = "okikab.go.id";

/// An API call the stand-in received.
#[derive(Debug, Clone)]
pub struct ApiCall {
    /// The method.
    pub method: Method,
    /// Path and query as received.
    pub path_and_query: String,
    /// The headers as received.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// The status it answered with.
    pub status: StatusCode,
}

#[derive(Debug, Default)]
struct State {
    token_requests: usize,
    refused_token_requests: usize,
    issued: Vec<String>,
    revoked: Vec<String>,
    refuse_all: bool,
    calls: Vec<ApiCall>,
}

/// A running stand-in; stops when dropped.
#[derive(Debug)]
pub struct NationalStandIn {
    addr: SocketAddr,
    ca_cert: PathBuf,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

#[derive(Debug, Clone)]
struct Settings {
    header: String,
    token_life: u64,
}

impl NationalStandIn {
    /// Makes its CA (scope `ID/KL`) and server certificate under `dir/national`, and serves on
    /// `127.0.0.1:0`, expecting tokens in `header` and granting them for `token_life` seconds.
    pub async fn start(dir: &Path, header: &str, token_life: u64) -> Self {
        let ca_dir = dir.join("national");
        let opts = InitOptions::new("Kementerian Komunikasi dan Digital", vec!["ID/KL".parse().expect("scope")]);
        let now = time::OffsetDateTime::now_utc();
        let ca = Ca::init(&ca_dir, &opts, now - time::Duration::days(1)).expect("national CA");
        let req = LeafRequest::new(Identity::parse(IdKind::Server, "ID/KL/KOMDIGI/splp").expect("id"))
            .with_names(vec!["localhost".into()], vec![IpAddr::from([127, 0, 0, 1])]);
        let (cert, key) = (ca_dir.join("splp.crt"), ca_dir.join("splp.key"));
        ca.issue(&req, KeyType::default(), &cert, &key, false, now).expect("national server certificate");
        let server = ClientCert {
            identity: "ID/KL/KOMDIGI/splp".into(),
            chain: load::read_certificates(&cert).expect("certificate"),
            key: load::read_private_key(&key).expect("key"),
        };
        let acceptor = TlsAcceptor::from(tls_server_config(&server, None));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let state: Arc<Mutex<State>> = Arc::default();
        let settings = Settings { header: header.to_owned(), token_life };
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, state, settings) = (acceptor.clone(), Arc::clone(&shared), settings.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = service_fn(move |req| {
                        let (state, settings) = (Arc::clone(&state), settings.clone());
                        async move { Ok::<_, Infallible>(answer(req, &state, &settings).await) }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
                });
            }
        });
        Self { addr, ca_cert: ca_dir.join("ca.crt"), state, task }
    }

    /// `https://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Its CA certificate, for a trust anchor.
    pub fn ca_cert(&self) -> &Path {
        &self.ca_cert
    }

    /// Token requests it granted.
    pub fn tokens_issued(&self) -> usize {
        self.lock().issued.len()
    }

    /// Token requests it refused.
    pub fn token_refusals(&self) -> usize {
        self.lock().refused_token_requests
    }

    /// Every token request, granted or not.
    pub fn token_requests(&self) -> usize {
        self.lock().token_requests
    }

    /// Every API call received.
    pub fn calls(&self) -> Vec<ApiCall> {
        self.lock().calls.clone()
    }

    /// Refuses every token issued so far from now on, as an API manager that revoked them.
    pub fn revoke_all(&self) {
        let mut s = self.lock();
        let issued = s.issued.clone();
        s.revoked.extend(issued);
    }

    /// Refuses every token, old or new, while `on`.
    pub fn refuse_every_token(&self, on: bool) {
        self.lock().refuse_all = on;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for NationalStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}

async fn answer(req: Request<Incoming>, state: &Mutex<State>, settings: &Settings) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(http_body_util::Collected::to_bytes).unwrap_or_default();
    let lock = || state.lock().unwrap_or_else(PoisonError::into_inner);
    let path = parts.uri.path().to_owned();
    if path == "/oauth2/token" {
        lock().token_requests += 1;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", form(CLIENT_ID), form(CLIENT_SECRET)))
        );
        let authorized = parts.headers.get(header::AUTHORIZATION).is_some_and(|v| v.as_bytes() == expected.as_bytes());
        let form_ok = parts.method == Method::POST
            && parts.headers.get(header::CONTENT_TYPE).is_some_and(|v| v == "application/x-www-form-urlencoded")
            && body.as_ref() == b"grant_type=client_credentials";
        if !authorized || !form_ok {
            lock().refused_token_requests += 1;
            return json(
                StatusCode::UNAUTHORIZED,
                r#"{"error":"invalid_client","error_description":"Client authentication failed"}"#.into(),
            );
        }
        let mut s = lock();
        let token = format!("tok-{}", s.issued.len() + 1);
        s.issued.push(token.clone());
        return json(
            StatusCode::OK,
            format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{}}}"#, settings.token_life),
        );
    }
    if !path.starts_with(&format!("/t/{TENANT}/")) {
        return json(StatusCode::NOT_FOUND, r#"{"fault":"no such API"}"#.into());
    }
    let presented = parts.headers.get(settings.header.as_str()).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let valid = presented.strip_prefix("Bearer ").is_some_and(|t| {
        let s = lock();
        !s.refuse_all && s.issued.iter().any(|i| i == t) && !s.revoked.iter().any(|r| r == t)
    });
    let resp = if valid {
        json(StatusCode::OK, format!(r#"{{"api_path":"{path}","source":"splp-nasional"}}"#))
    } else {
        json(StatusCode::UNAUTHORIZED, r#"{"fault":"Invalid Credentials"}"#.into())
    };
    lock().calls.push(ApiCall {
        method: parts.method,
        path_and_query: parts.uri.path_and_query().map(ToString::to_string).unwrap_or_default(),
        headers: parts.headers,
        body,
        status: resp.status(),
    });
    resp
}

fn form(s: &str) -> String {
    url_encode(s)
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
