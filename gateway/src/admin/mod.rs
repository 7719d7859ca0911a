//! The operators' listener (design §6): mutual TLS with admin certificates of this gateway's
//! member only, serving liveness, readiness with a maintenance mode, Prometheus metrics, and the
//! API that changes the configuration file (`config_api`).
//!
//! | path | what |
//! |---|---|
//! | `GET /` | the dashboard: one page for operators, in Bahasa Indonesia or English |
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 when exchanges can be served and maintenance is off; 503 with the reasons |
//! | `GET /metrics` | Prometheus text: exchanges, the audit log, listeners, upstream endpoints |
//! | `GET /maintenance` | whether maintenance mode is on, since when, set by whom and why |
//! | `POST /maintenance/on`, `POST /maintenance/off` | turns it on or off; audit-logged |
//! | `GET /config`, `POST /config/check`, `PUT /config`, `POST /config/undo`, `GET /config/history` | the configuration file: read, check with a diff, change, undo; changes audit-logged |
//!
//! Maintenance mode takes the gateway out of load balancers' rotation without refusing anyone:
//! readiness and the gateway's gRPC health say it is not serving, while exchanges that still
//! arrive are served as usual.

mod config_api;
mod dashboard;
mod maintenance;
pub mod metrics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use splpd_certs::id::{AdminId, Identity};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use self::maintenance::{Maintenance, MaintenanceState};
use self::metrics::Exposition;
use crate::audit::{AuditMode, RecordBuilder};
use crate::config::ConnectionType;
use crate::edge::EdgeStats;
use crate::exchange::Gateway;
use crate::identify::{self, PeerIdentity};
use crate::server::stopped;

/// Time allowed for an operator's TLS handshake and request head.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Admin connections open at once; more are closed unanswered. Operators and a scraper need a
/// handful; the cap keeps a flood on the admin port from taking the gateway's file descriptors.
const MAX_CONNECTIONS: usize = 64;

/// Admin connections open at once from one address: an operator's browser and tools need a few;
/// more from one address is someone holding slots (handshakes left open) from the others.
const PER_ADDRESS: u32 = 8;

/// An admin connection is closed after this long, busy or not: an operator's requests are short,
/// and a browser showing the dashboard simply connects again.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// The admin listener as the server runs it: where it listens and whom it lets in.
#[derive(Debug)]
pub struct AdminListener {
    /// Where it listens.
    pub address: SocketAddr,
    /// mTLS, client certificate required, verified against every trust anchor with its CRLs.
    pub tls: Arc<rustls::ServerConfig>,
    /// The same verifier on its own, to check an open connection's certificate again after a
    /// reload.
    pub client_verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    /// The operators allowed in; empty: any admin certificate of the gateway's member.
    pub operators: Vec<AdminId>,
    /// Admin certificates that may only read (see [`READABLE`]).
    pub viewers: Vec<AdminId>,
}

/// What a viewer (`[admin] viewers`) may read: the state, never the configuration, and nothing
/// that changes anything.
const READABLE: [&str; 5] = ["/", "/healthz", "/readyz", "/metrics", "/maintenance"];

/// The admin listener's socket, bound at start so that a bad address fails then.
#[derive(Debug)]
pub struct BoundAdmin {
    socket: TcpListener,
}

impl BoundAdmin {
    /// Binds `admin`'s address.
    pub async fn bind(admin: &AdminListener) -> std::io::Result<Self> {
        let socket = TcpListener::bind(admin.address)
            .await
            .map_err(|e| crate::server::cannot_listen(admin.address, "the [admin] listener", &e))?;
        Ok(Self { socket })
    }

    /// Where it is bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Serves operators until `shutdown` turns true; open admin connections are then closed.
    /// `listeners` are the exchange listeners' counters, for the metrics.
    pub async fn serve(
        self,
        gateway: Arc<Gateway>,
        listeners: Vec<(String, Arc<EdgeStats>)>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let listeners = Arc::new(Shared {
            listeners,
            refusals_told: RateLimiter::keyed(Quota::per_minute(NonZeroU32::MIN)),
            refusals_recorded: RateLimiter::keyed(Quota::per_minute(REFUSED_CHANGES_RECORDED)),
        });
        let mut conns = JoinSet::new();
        // Open connections per address (an IPv6 one by its /64): one address, holding
        // handshakes open without a certificate, must not take every slot from the operators.
        let per_address = Arc::new(crate::edge::PerAddress::default());
        let mut last_warning = None;
        loop {
            tokio::select! {
                accepted = self.socket.accept() => match accepted {
                    Ok((tcp, remote)) => {
                        let slot = (conns.len() < MAX_CONNECTIONS).then(|| per_address.take(remote.ip(), PER_ADDRESS));
                        let Some(Ok(slot)) = slot else {
                            // Once a minute at most: a flood must not flood the log too.
                            if last_warning.is_none_or(|t: std::time::Instant| t.elapsed() > Duration::from_secs(60)) {
                                tracing::warn!(
                                    %remote,
                                    "admin listener: {} connections open (at most {MAX_CONNECTIONS}, and {PER_ADDRESS} \
                                     from one address); closing new ones",
                                    conns.len()
                                );
                                last_warning = Some(std::time::Instant::now());
                            }
                            continue;
                        };
                        let (gateway, listeners) = (Arc::clone(&gateway), Arc::clone(&listeners));
                        conns.spawn(async move {
                            serve_connection(gateway, listeners, tcp, remote).await;
                            drop(slot);
                        });
                    }
                    Err(e) => {
                        tracing::warn!("admin listener: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = stopped(&mut shutdown) => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        conns.shutdown().await;
    }
}

/// What the admin listener's connections share.
#[derive(Debug)]
struct Shared {
    /// The exchange listeners' counters, for the metrics.
    listeners: Vec<(String, Arc<EdgeStats>)>,
    /// Addresses (an IPv6 one by its /64) told of at `warn` for a refusal in the last minute.
    refusals_told: DefaultKeyedRateLimiter<std::net::IpAddr>,
    /// Refused changes written to the audit log, per certificate (by its SHA-256):
    /// [`REFUSED_CHANGES_RECORDED`] a minute, so that a certificate the listener accepts cannot
    /// fill the log with them, from however many addresses, nor spend another's budget.
    refusals_recorded: DefaultKeyedRateLimiter<[u8; 32]>,
}

/// How many refused changes of one certificate a minute go to the audit log; the rest are told
/// in the gateway's own log only.
const REFUSED_CHANGES_RECORDED: NonZeroU32 = NonZeroU32::new(10).expect("not zero");

async fn serve_connection(
    gateway: Arc<Gateway>,
    listeners: Arc<Shared>,
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
) {
    // The configuration in force when the operator connects: a reload's new CRLs and anchors
    // apply to the connections after it, and to this one from its first request after the
    // reload (its generation is read first, so that a reload in between is not missed).
    let generation = gateway.generation();
    let snap = gateway.snapshot();
    let Some(admin) = snap.admin.clone() else { return };
    // An operator's `http://` gets told to use https, not a TLS alert shown as garbage.
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    if crate::edge::opens_with_plain_text(&tcp, deadline).await {
        tracing::info!(%remote, "admin listener: plain HTTP answered 400, use https");
        crate::edge::answer_plain_text(tcp, deadline, crate::edge::PlainTextOn::Admin).await;
        return;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&admin.tls));
    let (outcome, refused) = crate::tls::naming_refused(tokio::time::timeout_at(deadline, acceptor.accept(tcp))).await;
    let tls = match outcome {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(%remote, "admin listener: {}", crate::tls::refusal(&e, refused));
            return;
        }
        Err(_) => {
            tracing::info!(%remote, "admin listener: TLS handshake timed out");
            return;
        }
    };
    let chain = tls.get_ref().1.peer_certificates().map(<[_]>::to_vec).unwrap_or_default();
    let peer = Arc::new(std::sync::Mutex::new(AdminPeer::new(&snap, generation, chain)));
    drop(snap);
    let service = service_fn(move |req| {
        let (gateway, listeners, peer) = (Arc::clone(&gateway), Arc::clone(&listeners), Arc::clone(&peer));
        async move {
            let now = peer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).current(&gateway, remote);
            Ok::<_, Infallible>(handle(&gateway, &listeners, &now, remote, req).await)
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HANDSHAKE_TIMEOUT);
    let served = builder.serve_connection(TokioIo::new(tls), service);
    if tokio::time::timeout(CONNECTION_LIFETIME, served).await.is_err() {
        tracing::debug!(%remote, "admin listener: connection closed after {CONNECTION_LIFETIME:?}");
    }
}

/// Who an admin connection's certificate is, as of the configuration last checked against: a
/// reload's new CRL (an operator's certificate revoked) applies to connections already open,
/// as on the exchange listeners.
struct AdminPeer {
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The identity, and the certificate's fingerprint, kept for a certificate that identifies
    /// no one here, whose refused changes are recorded by it.
    now: (Result<PeerIdentity, identify::IdentifyError>, Option<[u8; 32]>),
    /// The [`Gateway::generation`] it was checked at.
    generation: u64,
}

impl AdminPeer {
    /// Of a connection whose handshake `snap`'s configuration, of `generation`, verified.
    fn new(
        snap: &crate::runtime::Snapshot,
        generation: u64,
        chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    ) -> Self {
        let fingerprint = chain.first().map(|leaf| splpd_certs::load::sha256(leaf.as_ref()));
        let identity = identify::identify_peer(&snap.trust, &chain);
        Self { chain, now: (identity, fingerprint), generation }
    }

    /// The identity now: checked again, certificate and chain, when the configuration changed.
    fn current(
        &mut self,
        gateway: &Gateway,
        remote: SocketAddr,
    ) -> (Result<PeerIdentity, identify::IdentifyError>, Option<[u8; 32]>) {
        let generation = gateway.generation();
        if generation != self.generation {
            let snap = gateway.snapshot();
            // A reload cannot take `[admin]` away (`Reloader` refuses one that would).
            let identity = match &snap.admin {
                Some(admin) => crate::reload::verify_again(Some(&*admin.client_verifier), &snap, &self.chain),
                None => Err(identify::IdentifyError::NoLongerValid {
                    reason: "the configuration in force has no [admin] listener".to_owned(),
                }),
            };
            if let (Ok(_), Err(e)) = (&self.now.0, &identity) {
                tracing::warn!(%remote, "admin listener: a connection's certificate is no longer accepted: {e}");
            }
            self.now.0 = identity;
            self.generation = generation;
        }
        self.now.clone()
    }
}

/// Who may use the admin listener: an admin certificate of the gateway's own member, and one of
/// `[admin] operators` when that list is given; one of `[admin] viewers` only to read
/// ([`READABLE`]).
fn operator(
    gateway: &Gateway,
    peer: &Result<PeerIdentity, identify::IdentifyError>,
    method: &Method,
    path: &str,
) -> Result<(AdminId, [u8; 32]), String> {
    let peer = peer.as_ref().map_err(ToString::to_string)?;
    let snap = gateway.snapshot();
    let member = snap.gateway_id.member();
    let Identity::Admin(id) = &peer.identity else {
        return Err(format!(
            "the admin listener takes admin certificates only, and this one is for {}; issue one with \
             `splpd certs issue --ca CA admin {member}/NAME`",
            peer.identity
        ));
    };
    if id.member() != member {
        return Err(format!("{id} is an operator of {}, not of {member}, which runs this gateway", id.member()));
    }
    let viewers = snap.admin.as_ref().map(|a| a.viewers.as_slice()).unwrap_or_default();
    if viewers.contains(id) {
        let reading = matches!(*method, Method::GET | Method::HEAD) && READABLE.contains(&path);
        if !reading {
            return Err(format!(
                "{id} is among [admin] viewers, which may only read {}; changes and the configuration are for \
                 [admin] operators",
                READABLE.join(", ")
            ));
        }
        return Ok((id.clone(), peer.cert_sha256));
    }
    let operators = snap.admin.as_ref().map(|a| a.operators.as_slice()).unwrap_or_default();
    if !operators.is_empty() && !operators.contains(id) {
        return Err(format!("{id} is not among [admin] operators; add it there to let it in"));
    }
    Ok((id.clone(), peer.cert_sha256))
}

type AdminResponse = Response<Full<Bytes>>;

async fn handle(
    gateway: &Gateway,
    shared: &Shared,
    (peer, fingerprint): &(Result<PeerIdentity, identify::IdentifyError>, Option<[u8; 32]>),
    remote: SocketAddr,
    req: Request<Incoming>,
) -> AdminResponse {
    let allowed = operator(gateway, peer, req.method(), req.uri().path())
        .and_then(|op| from_another_site(&req).map_or(Ok(op), Err));
    let (operator, cert_sha256) = match allowed {
        Ok(op) => op,
        Err(message) => {
            // At `warn` once a minute per address: a client with a certificate must not flood the
            // log by asking again and again.
            if shared.refusals_told.len() > 4096 {
                shared.refusals_told.retain_recent();
            }
            if shared.refusals_told.check_key(&crate::refusals::counted_as(remote.ip())).is_ok() {
                tracing::warn!(%remote, path = %req.uri().path(), "admin listener: refused: {message}");
            } else {
                tracing::info!(%remote, path = %req.uri().path(), "admin listener: refused: {message}");
            }
            // By the certificate's identity, or, when it identifies no one here (another CA's
            // claiming one of ours, two identities in one), by its fingerprint alone.
            let tried = match peer {
                Ok(peer) => Some((Some(&peer.identity), peer.cert_sha256)),
                Err(_) => fingerprint.map(|sha| (None, sha)),
            };
            if let Some((identity, cert_sha256)) = tried
                && !matches!(*req.method(), Method::GET | Method::HEAD)
            {
                if shared.refusals_recorded.len() > 4096 {
                    shared.refusals_recorded.retain_recent();
                }
                if shared.refusals_recorded.check_key(&cert_sha256).is_ok() {
                    record_refused_change(gateway, identity, cert_sha256, remote, &req).await;
                } else {
                    tracing::info!(%remote, "admin listener: a refused change not written to the audit log: more than \
                        {REFUSED_CHANGES_RECORDED} a minute with this certificate");
                }
            }
            return error(StatusCode::FORBIDDEN, "Client.AccessDenied", &message);
        }
    };
    let path = req.uri().path();
    let allowed = match path {
        "/" | "/healthz" | "/readyz" | "/metrics" | "/maintenance" => "GET",
        "/maintenance/on" | "/maintenance/off" => "POST",
        _ => match config_api::PATHS.iter().find(|(p, _)| *p == path) {
            Some((_, methods)) => methods,
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    "Client.NotFound",
                    &format!(
                        "no {path} here; the admin listener serves GET / (the dashboard), /healthz, /readyz, \
                         /metrics, /maintenance, POST /maintenance/on, /maintenance/off, and the configuration \
                         API: GET and PUT /config, POST /config/check, POST /config/undo, GET /config/history, \
                         /config/previous and /config/in-force"
                    ),
                );
            }
        },
    };
    let method = req.method();
    if !allowed.split(", ").any(|m| m == method.as_str() || (m == "GET" && method == Method::HEAD)) {
        let mut resp =
            error(StatusCode::METHOD_NOT_ALLOWED, "Client.BadRequest", &format!("{path} takes {allowed} only"));
        resp.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allowed));
        return resp;
    }
    if path.starts_with("/config") {
        return config_api::handle(gateway, &operator, cert_sha256, remote, req).await;
    }
    match path {
        "/" => dashboard(gateway, &shared.listeners, &req),
        "/healthz" => text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".to_owned()),
        "/readyz" => readiness(gateway),
        "/metrics" => text(StatusCode::OK, Exposition::CONTENT_TYPE, render_metrics(gateway, &shared.listeners)),
        "/maintenance" => json_response(StatusCode::OK, &gateway.maintenance().json()),
        on_off => {
            let on = on_off == "/maintenance/on";
            set_maintenance(gateway, &operator, cert_sha256, remote, &req, on).await
        }
    }
}

/// Why a change came from a page in a browser, if it did: a browser that holds an operator's
/// certificate presents it for any page's request, so a page of another site could otherwise
/// turn maintenance on (a cross-site request forgery). Browsers say where a request comes from
/// (`Sec-Fetch-Site`, `Origin`); tools such as curl and `splpd config --admin` send neither, and
/// the dashboard changes nothing.
fn from_another_site(req: &Request<Incoming>) -> Option<String> {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return None;
    }
    let headers = req.headers();
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let host = text("host").or_else(|| req.uri().authority().map(http::uri::Authority::as_str));
    let origin = text("origin");
    let other_origin = origin.is_some_and(|o| o.split_once("://").map(|(_, authority)| authority) != host);
    let other_site = text("sec-fetch-site").is_some_and(|s| s != "same-origin" && s != "none");
    (other_origin || other_site).then(|| {
        format!(
            "a change sent by a web page (Origin {}) is refused: the admin listener takes changes from tools such as \
             curl or `splpd config --admin`, not from pages in a browser that holds an operator's certificate",
            origin.unwrap_or("not given")
        )
    })
}

/// Whether the gateway should be sent exchanges, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Empty when ready.
    pub reasons: Vec<String>,
    /// What an operator should know that does not stop exchanges yet, so not a reason: an edit
    /// of the configuration file that was refused, while the file still holds it; a change that
    /// waits for a restart; the gateway's certificate, a CRL or a CA of the region's own nearing
    /// its end.
    pub notes: Vec<String>,
}

impl Readiness {
    /// Ready when the gateway is not stopping, the audit log takes records (without it every
    /// exchange is refused), maintenance mode is off, the gateway's certificate has not expired
    /// (agencies and peers would refuse it), and the CRL of the gateway's own region has not
    /// expired (every certificate of its CA would be refused).
    pub fn of(gateway: &Gateway) -> Self {
        let mut reasons = Vec::new();
        if gateway.is_stopping() {
            reasons.push(
                "the gateway is stopping: it takes no new connections and finishes the exchanges in flight".to_owned(),
            );
        }
        let health = gateway.audit().health();
        if !health.is_available() {
            reasons.push(format!("{health}; every exchange is refused until it is written again"));
        }
        if let Some(m) = gateway.maintenance().state() {
            reasons.push(format!("maintenance mode is on: {}", m.describe()));
        }
        let reloader = gateway.reloader();
        let in_force = reloader.as_ref().and_then(|r| r.text_in_force()).map(|(_, version)| version);
        let waiting = reloader.as_ref().map(|r| r.waiting_for_restart()).unwrap_or_default();
        let mut notes: Vec<String> = reloader
            .and_then(|r| r.last_refused())
            .map(|r| {
                let at = r.at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
                if in_force.as_deref() == Some(r.version.as_str()) {
                    // The text is the one in force: what failed is a file it names.
                    format!(
                        "the configuration in force (version {}) could not be loaded again at {at} (a certificate, key \
                         or CRL it names, or the audit log, which must record every change first), and what was loaded \
                         before stays in force; mend what the reason names before splpd next starts: {}",
                        r.version,
                        r.why_on_one_line()
                    )
                } else {
                    format!(
                        "the configuration file's version {} was refused at {at}, and the configuration before it \
                         stays in force; correct the file (or put back the text in force, GET /config/in-force) before \
                         splpd next starts, which it may not do with the file as it is: {}",
                        r.version,
                        r.why_on_one_line()
                    )
                }
            })
            .into_iter()
            .chain(waiting)
            .collect();
        // A concern is a reason once past its date, a note before. Only CAs that vouch for this
        // gateway's own region (`Config::vouches_for_region`): a peer region's expired CRL stops
        // that region's calls, not the gateway (the log and /metrics say so).
        let snap = gateway.snapshot();
        let ours = |a: &crate::tls::Anchor| snap.config.vouches_for_region(a.name());
        let now = time::OffsetDateTime::now_utc();
        let mut tell = |expired: bool, concern: Option<String>| {
            if expired { reasons.extend(concern) } else { notes.extend(concern) }
        };
        tell(snap.gateway_cert.expired(now), snap.gateway_cert.concern(now));
        for crl in snap.trust.crl_status() {
            if snap.trust.anchor(&crl.anchor).is_some_and(ours) {
                tell(crl.expired(now), crl.concern(now));
            }
        }
        for ca in snap.trust.ca_concerns(now) {
            if snap.trust.anchor(&ca.anchor).is_some_and(ours) {
                tell(ca.stops, Some(ca.text));
            }
        }
        Self { reasons, notes }
    }
}

fn readiness(gateway: &Gateway) -> AdminResponse {
    let Readiness { reasons, notes } = Readiness::of(gateway);
    let status = if reasons.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json_response(status, &json!({ "ready": reasons.is_empty(), "reasons": reasons, "notes": notes }))
}

fn dashboard(gateway: &Gateway, listeners: &[(String, Arc<EdgeStats>)], req: &Request<Incoming>) -> AdminResponse {
    let accept = req.headers().get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok());
    let lang = dashboard::Lang::choose(req.uri().query(), accept);
    let state = metrics::StateSnapshot::read(gateway, listeners);
    let maintenance = gateway.maintenance().state();
    let page =
        dashboard::render(lang, &state, &gateway.metrics().snapshot(), &Readiness::of(gateway), maintenance.as_ref());
    text(StatusCode::OK, "text/html; charset=utf-8", page)
}

/// The longest path an admin record keeps whole: the admin listener's paths are short.
const ADMIN_MAX_PATH: usize = 256;

/// A change refused on the admin listener, in the audit log as the changes operators make are:
/// which certificate tried what, from where. Reads refused are not (reading is not logged).
async fn record_refused_change(
    gateway: &Gateway,
    identity: Option<&Identity>,
    cert_sha256: [u8; 32],
    remote: SocketAddr,
    req: &Request<Incoming>,
) {
    let mut record = admin_record(gateway, cert_sha256, remote, req);
    match identity {
        Some(Identity::Admin(id)) => record.set_operator(id),
        Some(Identity::Subsystem(client)) => record.set_client(client),
        // A server certificate (a peer gateway's), or one that identifies no one here, is told
        // by its fingerprint.
        Some(Identity::Server(_)) | None => {}
    }
    record.set_status(StatusCode::FORBIDDEN);
    record.set_error_type("Client.AccessDenied");
    if let Err(e) = gateway.operations_log().append(record.finish(), AuditMode::Sync).await {
        tracing::warn!(%remote, "admin listener: the refused change could not be written to the audit log: {e}");
    }
}

/// The audit record of a request to the admin listener: the certificate and address it came from
/// and what it asked; who it is and how it ended are the caller's to add.
fn admin_record(
    gateway: &Gateway,
    cert_sha256: [u8; 32],
    remote: SocketAddr,
    req: &Request<Incoming>,
) -> RecordBuilder {
    let mut record = RecordBuilder::received_now(&gateway.snapshot().gateway_id);
    record.set_exchange_id(uuid::Uuid::new_v4());
    record.set_client_cert_sha256(cert_sha256);
    record.set_client_address(remote.ip());
    record.set_connection_type(ConnectionType::Mtls);
    record.set_request(req.method(), req.uri(), ADMIN_MAX_PATH);
    record.set_client_headers(req.headers());
    record
}

/// Turns maintenance mode on or off once the change is in the audit log, as every change made
/// through the admin listener is. When the log cannot take the record, nothing changes.
async fn set_maintenance(
    gateway: &Gateway,
    operator: &AdminId,
    cert_sha256: [u8; 32],
    remote: SocketAddr,
    req: &Request<Incoming>,
    on: bool,
) -> AdminResponse {
    let mut record = admin_record(gateway, cert_sha256, remote, req);
    record.set_operator(operator);
    record.set_status(StatusCode::OK);
    let reason = req.headers().get("x-road-issue").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    if let Err(e) = gateway.operations_log().append(record.finish(), AuditMode::Sync).await {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Server.AuditUnavailable",
            &format!("maintenance mode is unchanged: the change could not be written to the audit log ({e})"),
        );
    }
    let state = if on {
        gateway.maintenance().turn_on(operator, &reason)
    } else {
        gateway.maintenance().turn_off();
        None
    };
    match &state {
        Some(s) => tracing::warn!("maintenance mode on: {}", s.describe()),
        None => tracing::warn!(%operator, "maintenance mode off"),
    }
    json_response(StatusCode::OK, &gateway.maintenance().json())
}

/// The Prometheus text of the gateway's state and exchanges.
pub fn render_metrics(gateway: &Gateway, listeners: &[(String, Arc<EdgeStats>)]) -> String {
    let mut out = Exposition::default();
    metrics::encode_state(&mut out, &metrics::StateSnapshot::read(gateway, listeners));
    metrics::encode_exchanges(&mut out, &gateway.metrics().snapshot());
    out.finish()
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> AdminResponse {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    resp.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    resp
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> AdminResponse {
    let mut body = value.to_string();
    body.push('\n');
    text(status, "application/json", body)
}

fn error(status: StatusCode, kind: &str, message: &str) -> AdminResponse {
    json_response(status, &json!({ "type": kind, "message": message }))
}
