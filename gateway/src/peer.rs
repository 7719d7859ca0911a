//! Federation (design §3, peering and the national SPLP): where a service that is not this
//! region's goes (the peer authoritative for the longest prefix of its identifier, or the
//! national SPLP), how a call is sent there, and how a call that a peer gateway sends in on behalf
//! of one of its clients is accepted. The exchange path calls in at three points: routing,
//! identifying a peer's call, and sending.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, Uri};
use hyper::body::{Body as _, Incoming};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use splpd_adapters::http::{HttpUpstream, UpstreamBody, UpstreamError, UpstreamOptions};
use splpd_adapters::national::{NationalConnector, NationalError, NationalSettings};
use splpd_adapters::oauth::{OAuthError, Secret};
use splpd_adapters::peer::{PeerAnswer, PeerEndpoints, PeerFailure};
use splpd_adapters::upstreams::{Attempt, Policy, ServiceUpstreams};
use splpd_certs::id::{ClientId, IdKind, IdPrefix, Identity, ServerId, ServiceId};
use splpd_certs::load;
use splpd_certs::profile::identity_of;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::{Config, ConnectionType, Peer, Protocol};
use crate::error::{Failure, GatewayError};
use crate::forward::{self, BodySummary, MeteredRequestBody, RequestHasher, xroad};
use crate::identify::{Caller, ConnectionAuth, PeerIdentity};
use crate::runtime::{Route, RuntimeError, Snapshot};
use crate::tls::{GatewayCert, TrustStore};

/// Time allowed for a peer gateway or the national SPLP to start answering. Their own services
/// have their own timeouts behind them; this only bounds a hop that hangs.
const REMOTE_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the sending gateway waits for its own request hash when the peer's answer carries
/// one: the peer has seen the whole body, so ours is final at once but for scheduling.
const OWN_HASH_WAIT: Duration = Duration::from_secs(5);

/// The X-Road error type of an answer that does not prove it answers the request sent: the
/// peer's `X-Road-Request-Hash` differs from the hash of what this gateway sent, or is missing.
pub const REQUEST_HASH_MISMATCH: &str = "Server.ClientProxy.RequestHashMismatch";

/// One configured peer gateway.
#[derive(Debug)]
pub struct PeerLink {
    /// Its server identifier.
    pub id: ServerId,
    /// The prefixes it is authoritative for.
    pub authoritative: Vec<IdPrefix>,
    /// The trust anchor that vouches for its certificate.
    pub anchor: String,
    /// Its endpoints, tried in order.
    pub endpoints: PeerEndpoints,
}

impl PeerLink {
    /// Accepts the client a peer asserts in `X-Road-Client` for one of its calls: only a client
    /// under the peer's authoritative prefixes, and only over a certificate from the peer's own
    /// trust anchor.
    pub fn accept(&self, cert: &PeerIdentity, claimed: Option<&str>) -> Result<Caller, GatewayError> {
        if *cert.anchor != *self.anchor {
            return Err(GatewayError::InvalidClientIdentity(format!(
                "the certificate of peer {} was issued by trust anchor {:?}, but [[peer]] names {:?}; a peer is only \
                 accepted with a certificate from its own trust anchor",
                self.id, cert.anchor, self.anchor
            )));
        }
        let header = claimed.ok_or_else(|| {
            GatewayError::Unauthenticated(format!(
                "peer {} sent no X-Road-Client; a peer gateway names the client it authenticated",
                self.id
            ))
        })?;
        let client: ClientId = header.parse().map_err(|e| {
            GatewayError::BadRequest(format!("X-Road-Client from peer {} is not a client identifier: {e}", self.id))
        })?;
        if !self.authoritative.iter().any(|p| client.is_within(p)) {
            return Err(GatewayError::InvalidClientIdentity(format!(
                "peer {} may only speak for clients under {}, not for {client}",
                self.id,
                prefix_list(&self.authoritative)
            )));
        }
        Ok(Caller { client, connection: ConnectionType::Mtls, cert_sha256: Some(cert.cert_sha256) })
    }
}

fn prefix_list(prefixes: &[IdPrefix]) -> String {
    prefixes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Where a call goes.
#[derive(Debug, Clone)]
pub enum Via {
    /// A service of this gateway.
    Local,
    /// Another region's gateway.
    Peer(Arc<PeerLink>),
    /// The national SPLP.
    National(Arc<NationalConnector>),
}

#[derive(Debug, Clone)]
enum Hop {
    Peer(Arc<PeerLink>),
    National,
}

/// The peers and the national connector of one configuration.
#[derive(Debug, Default)]
pub struct Federation {
    peers: Vec<Arc<PeerLink>>,
    /// Every routed prefix, longest first, so that the first match is the most specific.
    table: Vec<(IdPrefix, Hop)>,
    national: Option<Arc<NationalConnector>>,
}

/// Who serves identifiers of other regions, by the configuration: a peer gateway, or the
/// national SPLP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Elsewhere {
    /// The peer gateway with this identifier.
    Peer(ServerId),
    /// The national SPLP.
    National,
}

/// Every prefix routed to another gateway, longest first, so that the first match is the most
/// specific: the one table routing ([`Federation`]) and the directory's messages both read.
pub fn elsewhere(config: &Config) -> Vec<(IdPrefix, Elsewhere)> {
    // A peer without endpoints only calls here (the national SPLP, whose services `[national]` routes).
    let peers = config
        .peers
        .iter()
        .filter(|p| p.routes_calls())
        .flat_map(|p| p.authoritative.iter().map(|a| (a.clone(), Elsewhere::Peer(p.id.clone()))));
    let national = config.national.iter().flat_map(|n| n.prefixes.iter().map(|p| (p.clone(), Elsewhere::National)));
    let mut table: Vec<_> = peers.chain(national).collect();
    table.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
    table
}

/// What to tell a caller about an identifier of a region this gateway has no route to.
pub const UNCONNECTED: &str = "it is not of this region, and this gateway has no [[peer]] or [national] route to the \
                               region it names: ask the gateway's operator whether that region is connected";

impl Federation {
    /// Builds the peers' clients and the national connector of `config`.
    pub fn build(config: &Config, trust: &TrustStore, gateway: &GatewayCert) -> Result<Self, RuntimeError> {
        let mut fed = Self::default();
        for p in &config.peers {
            fed.peers.push(Arc::new(peer_link(config, trust, gateway, p)?));
        }
        if config.national.is_some() {
            fed.national = Some(Arc::new(national(config, trust, gateway)?));
        }
        for (prefix, by) in elsewhere(config) {
            let hop = match by {
                Elsewhere::Peer(id) => match fed.peer(&id) {
                    Some(link) => Hop::Peer(Arc::clone(link)),
                    None => continue,
                },
                Elsewhere::National => Hop::National,
            };
            fed.table.push((prefix, hop));
        }
        Ok(fed)
    }

    /// The configured peer with this server identifier.
    pub fn peer(&self, id: &ServerId) -> Option<&Arc<PeerLink>> {
        self.peers.iter().find(|p| p.id == *id)
    }

    fn hop(&self, service: &ServiceId) -> Option<&Hop> {
        self.table.iter().find(|(prefix, _)| service.is_within(prefix)).map(|(_, hop)| hop)
    }
}

/// The route of a REST metadata call (`listMethods`, `allowedMethods`, `getOpenAPI`) about a
/// provider of a peer's region: to that peer's gateway, which alone knows the provider's
/// services, documents and grants, as X-Road's security server asks the provider's. The call is
/// named, as the peer logs it, by the peer's own meta-service (`ID/PEMDA/1601/gw1/listMethods`),
/// with the provider in the path. `None` for every other call: `listClients`, the gRPC
/// directory, providers of this region or of none of its peers, and a method other than GET or
/// HEAD (refused here, as for the gateway's own directory) are answered here.
pub fn route_directory(
    snap: &Snapshot,
    own: crate::local::Own,
    method: &Method,
    path: &str,
) -> Option<(Arc<Route>, Via)> {
    use crate::local::{Meta, Own};
    if !matches!(own, Own::Rest(Meta::ListMethods | Meta::AllowedMethods | Meta::GetOpenApi))
        || !(method == Method::GET || method == Method::HEAD)
    {
        return None;
    }
    let asked = path.strip_prefix("/r1/").map(ServiceId::from_url_path)?.ok()?;
    if snap.config.gateway.served_prefixes().iter().any(|p| asked.subsystem().is_within(p)) {
        return None;
    }
    let Some(Hop::Peer(link)) = snap.federation.hop(&asked) else { return None };
    let first = link.endpoints.endpoints().first().cloned()?;
    let id = own.service_id(&link.id)?;
    let route = remote_route(&snap.config, id, Protocol::Rest, first, link.endpoints.client().clone());
    Some((route, Via::Peer(Arc::clone(link))))
}

/// The peer gateway a connection comes from: a server certificate of a configured peer.
pub fn inbound<'s>(snap: &'s Snapshot, auth: &'s ConnectionAuth) -> Option<(&'s PeerLink, &'s PeerIdentity)> {
    match auth {
        ConnectionAuth::Mtls(cert @ PeerIdentity { identity: Identity::Server(id), .. }) => {
            snap.federation.peer(id).map(|p| (&**p, cert))
        }
        _ => None,
    }
}

/// Routes a service this gateway does not own: to the peer authoritative for the longest prefix
/// of its identifier, or to the national SPLP. The route it returns carries what the exchange
/// path needs of a service (its identifier, protocol, limits); its client is the hop's.
pub fn route_remote(snap: &Snapshot, service: &ServiceId, grpc: bool) -> Result<(Arc<Route>, Via), GatewayError> {
    let unknown = || {
        let provider = service.subsystem();
        let ours = snap.config.gateway.served_prefixes().iter().any(|p| provider.is_within(p));
        let listing = match (ours, grpc) {
            (true, true) => "the gateway's splpd.v1.Directory service lists the provider's services".to_owned(),
            (true, false) => format!("GET /r1/{}/listMethods lists the provider's services", provider.to_url_path()),
            (false, _) => UNCONNECTED.to_owned(),
        };
        GatewayError::UnknownService(format!(
            "no service {service} is known to gateway {}; check the identifier (identifiers are case-sensitive): \
             {listing}",
            snap.gateway_id
        ))
    };
    let config = &snap.config;
    let protocol = if grpc { Protocol::Grpc } else { Protocol::Rest };
    let (upstream, client, via) = match snap.federation.hop(service).ok_or_else(unknown)? {
        Hop::Peer(link) => {
            let first = link.endpoints.endpoints().first().cloned().ok_or_else(unknown)?;
            (first, link.endpoints.client().clone(), Via::Peer(Arc::clone(link)))
        }
        Hop::National => {
            let connector = snap.federation.national.as_ref().ok_or_else(unknown)?;
            let base = connector.api_base(service).cloned().ok_or_else(|| {
                GatewayError::UnknownService(format!(
                    "{service} is a national service, but no [[national.api]] maps it to an API of the national SPLP"
                ))
            })?;
            if grpc {
                return Err(GatewayError::BadRequest(format!(
                    "{service} is a national SPLP API, which is REST; call it at /r1/{}/…",
                    service.to_url_path()
                )));
            }
            (base, connector.client().clone(), Via::National(Arc::clone(connector)))
        }
    };
    Ok((remote_route(config, service.clone(), protocol, upstream, client), via))
}

/// What the exchange path needs of a service another gateway owns: its identifier, protocol and
/// limits, and the hop's one endpoint and client.
fn remote_route(config: &Config, id: ServiceId, protocol: Protocol, upstream: Uri, client: HttpUpstream) -> Arc<Route> {
    Arc::new(Route {
        id,
        protocol,
        upstreams: ServiceUpstreams::new(vec![upstream], client, Policy::default()),
        request_timeout: REMOTE_REQUEST_TIMEOUT,
        max_request_body: config.limits.max_request_body.bytes(),
        audit_mode: config.audit.mode,
        // Bodies are kept by the gateway that owns the service.
        stored_body: None,
    })
}

/// A hop's answer, with the endpoints tried for it (a peer's; none recorded for the national
/// SPLP's one endpoint).
#[derive(Debug)]
pub struct Sent {
    /// The answer, its body still to stream.
    pub response: Response<Incoming>,
    /// The URL it came from, when not the route's first.
    pub endpoint: Option<Uri>,
    /// Each endpoint tried, in order.
    pub attempts: Vec<Attempt>,
}

/// Why a hop gave no answer, with the endpoints tried.
#[derive(Debug)]
pub struct NotSent {
    /// Why.
    pub error: SendError,
    /// The URL of the last attempt, when known.
    pub endpoint: Option<Uri>,
    /// Each endpoint tried, in order.
    pub attempts: Vec<Attempt>,
}

impl NotSent {
    fn plain(error: SendError) -> Self {
        Self { error, endpoint: None, attempts: Vec::new() }
    }
}

/// Why a call could not be sent.
#[derive(Debug)]
pub enum SendError {
    /// A local upstream failed; the exchange path says so with the service's hints.
    Upstream(UpstreamError),
    /// A peer or the national SPLP failed, or a peer's answer did not prove itself.
    Gateway(GatewayError),
}

impl Via {
    /// Sends `req` (its URI built from the route's first upstream) on its way, and returns the
    /// answer with the endpoint that gave it. `target` is the request target as received, which
    /// a peer is sent as it is.
    pub async fn send(
        &self,
        route: &Route,
        req: Request<UpstreamBody>,
        target: &str,
        timeout: Duration,
    ) -> Result<Sent, NotSent> {
        let sent = |response| Sent { response, endpoint: None, attempts: Vec::new() };
        match self {
            Self::Local => route
                .upstreams
                .client()
                .send(req, timeout)
                .await
                .map(sent)
                .map_err(|e| NotSent::plain(SendError::Upstream(e))),
            Self::Peer(link) => send_to_peer(link, route, req, target, timeout).await,
            Self::National(connector) => connector.send(req, timeout).await.map(sent).map_err(|e| {
                NotSent::plain(SendError::Gateway(match e {
                    NationalError::Upstream(UpstreamError::Timeout { after, .. }) => {
                        GatewayError::ServiceTimeout(Failure::hidden(
                            format!("{}: the national SPLP did not answer within {after:?}", route.id),
                            format!("{}: the national SPLP: {e}", route.id),
                        ))
                    }
                    // The caller's own body: nothing of the gateway's in it.
                    NationalError::Body(_) => {
                        GatewayError::ServiceFailed(format!("{}: the national SPLP: {e}", route.id).into())
                    }
                    e => {
                        let fault = match &e {
                            NationalError::Upstream(
                                UpstreamError::Connect { fault, .. } | UpstreamError::Broken { fault, .. },
                            )
                            | NationalError::Token(OAuthError::Unreachable { fault, .. }) => *fault,
                            _ => None,
                        };
                        let hint =
                            crate::upstream::national_hint(fault).map_or_else(String::new, |h| format!(" ({h})"));
                        GatewayError::ServiceFailed(Failure::hidden(
                            format!("{}: the call to the national SPLP failed", route.id),
                            format!("{}: the national SPLP: {e}{hint}", route.id),
                        ))
                    }
                }))
            }),
        }
    }

    /// The peer this call went to, for the record.
    pub fn peer(&self) -> Option<&ServerId> {
        match self {
            Self::Peer(link) => Some(&link.id),
            _ => None,
        }
    }
}

/// Sends to a peer and checks that its answer is for this request: the peer's
/// `X-Road-Request-Hash` must be the hash of the request as this gateway sent it.
async fn send_to_peer(
    link: &PeerLink,
    route: &Route,
    req: Request<UpstreamBody>,
    target: &str,
    timeout: Duration,
) -> Result<Sent, NotSent> {
    let (mut parts, body) = req.into_parts();
    settle_content_length(&parts.method, &mut parts.headers, body.size_hint().exact());
    let hasher = RequestHasher::new(parts.method.as_str(), target, &parts.headers);
    let (body, sent) = MeteredRequestBody::new(body, u64::MAX, hasher, None);
    let req = Request::from_parts(parts, forward::boxed(body));
    let answer = link.endpoints.send(req, target, timeout).await.map_err(|failed| {
        let PeerFailure { error, endpoint, attempts, waiting_on_caller } = failed;
        let error = match (&error, waiting_on_caller) {
            (UpstreamError::Timeout { .. }, true) => crate::exchange::caller_too_slow(&route.id, timeout),
            _ => peer_failure(link, route, error),
        };
        NotSent { error: SendError::Gateway(error), endpoint, attempts }
    })?;
    let PeerAnswer { response: resp, endpoint, attempts } = answer;
    let refuse = |error: GatewayError| NotSent {
        error: SendError::Gateway(error),
        endpoint: Some(endpoint.clone()),
        attempts: attempts.clone(),
    };
    let theirs = resp.headers().get(&xroad::REQUEST_HASH).cloned();
    let refused_by_peer = resp.headers().contains_key(&xroad::ERROR);
    match theirs {
        Some(theirs) => {
            let ours = tokio::time::timeout(OWN_HASH_WAIT, sent).await.ok().and_then(Result::ok);
            match ours {
                Some(Ok(BodySummary { request_hash: (ours, _), .. })) if theirs.as_bytes() == ours.as_bytes() => {}
                Some(Ok(BodySummary { request_hash: (ours, _), .. })) => {
                    return Err(refuse(GatewayError::RequestHashMismatch(
                        format!(
                            "peer {} answered with X-Road-Request-Hash {}, but the request sent to it hashes to \
                             {ours}: the answer is not proven to answer this request, so it is not passed on",
                            link.id,
                            String::from_utf8_lossy(theirs.as_bytes())
                        )
                        .into(),
                    )));
                }
                _ => {
                    return Err(refuse(GatewayError::RequestHashMismatch(
                        format!(
                            "peer {} answered with X-Road-Request-Hash, but the request sent to it was not complete, \
                             so the hash cannot match",
                            link.id
                        )
                        .into(),
                    )));
                }
            }
        }
        // A REST answer that the peer's service gave must say which request it answers; a peer's
        // own refusal need not, and a gRPC answer may start before its request stream has ended.
        None if route.protocol == Protocol::Rest && !refused_by_peer => {
            let why = format!(
                "peer {} answered {} without X-Road-Request-Hash, so the answer is not proven to answer this request",
                link.id,
                resp.status().as_u16()
            );
            let operator = format!("{why} (is the endpoint {endpoint} the peer's exchange listener?)");
            return Err(refuse(GatewayError::RequestHashMismatch(Failure::hidden(why, operator))));
        }
        None => {}
    }
    Ok(Sent { response: resp, endpoint: Some(endpoint), attempts })
}

/// Why no endpoint of a peer answered, as the gateway's error: told to the caller without the
/// peer's addresses, and to the operator with what to check.
fn peer_failure(link: &PeerLink, route: &Route, e: UpstreamError) -> GatewayError {
    match e {
        UpstreamError::Timeout { after, .. } => GatewayError::ServiceTimeout(Failure::hidden(
            format!("{}: peer gateway {} did not answer within {after:?}", route.id, link.id),
            format!("{}: peer {}: {e}", route.id, link.id),
        )),
        e => {
            let side = crate::upstream::Side::Peer { anchor: &link.anchor, id: &link.id };
            let hint = crate::upstream::connect_hint(&e, &side).unwrap_or_default();
            GatewayError::ServiceFailed(Failure::hidden(
                format!("{}: the gateway could not reach peer gateway {}", route.id, link.id),
                format!("{}: peer {}: {e} (every endpoint of the peer was tried; {hint})", route.id, link.id),
            ))
        }
    }
}

/// The `Content-Length` hyper's HTTP/2 client would add to a body of known size, added before
/// the request is hashed, so that the hash covers the headers the peer receives.
fn settle_content_length(method: &Method, headers: &mut http::HeaderMap, exact: Option<u64>) {
    let Some(len) = exact else { return };
    let no_payload_semantics = [Method::GET, Method::HEAD, Method::DELETE, Method::CONNECT].contains(method);
    if (len != 0 || !no_payload_semantics) && !headers.contains_key(header::CONTENT_LENGTH) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
}

/// The X-Road error a peer answered with, to be noted in this side's record.
pub fn peer_error(via: &Via, headers: &http::HeaderMap) -> Option<String> {
    match via {
        Via::Peer(_) => headers.get(&xroad::ERROR).and_then(|v| v.to_str().ok()).map(str::to_owned),
        _ => None,
    }
}

fn peer_link(config: &Config, trust: &TrustStore, gateway: &GatewayCert, p: &Peer) -> Result<PeerLink, RuntimeError> {
    let invalid = |why: String| RuntimeError::Invalid(format!("peer {}: {why}", p.id));
    let anchor = config
        .trust_anchors
        .iter()
        .find(|a| a.name == p.trust_anchor)
        .ok_or_else(|| invalid(format!("trust anchor {:?} is not defined", p.trust_anchor)))?;
    let roots = crate::tls::upstream_roots(&anchor.ca)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
        .with_crls(trust.crls())
        .only_check_end_entity_revocation()
        .allow_unknown_revocation_status()
        .build()
        .map_err(|e| invalid(format!("cannot verify its certificates: {e}")))?;
    let mapped = config
        .identities
        .iter()
        .filter(|m| m.kind == IdKind::Server && m.id == p.id.to_string() && m.anchor == p.trust_anchor)
        .map(|m| m.fingerprint.0)
        .collect();
    let verifier = Arc::new(PeerVerifier { webpki, expected: p.id.clone(), mapped });
    let tls = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| invalid(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(gateway.resolver());
    // Gateway to gateway is HTTP/2 only: REST and gRPC calls share one multiplexed connection.
    let opts = UpstreamOptions {
        http2_only: true,
        http2_windows: config.limits.http2_windows(),
        ..UpstreamOptions::default()
    };
    let client = HttpUpstream::new(tls, &opts).map_err(|e| invalid(e.to_string()))?;
    let endpoints = p
        .endpoints
        .iter()
        .map(|e| e.trim_end_matches('/').parse::<Uri>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("bad endpoint URL: {e}")))?;
    Ok(PeerLink {
        id: p.id.clone(),
        authoritative: p.authoritative.clone(),
        anchor: p.trust_anchor.clone(),
        endpoints: PeerEndpoints::new(client, endpoints),
    })
}

/// Verifies a peer gateway's server certificate: the chain to the peer's own trust anchor and
/// the endpoint's name (webpki), then the identity: the certificate must be the peer's server
/// certificate, so that another gateway of the same CA cannot answer in its place.
#[derive(Debug)]
struct PeerVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    expected: ServerId,
    /// Fingerprints of certificates mapped to the peer in `[[identity]]`.
    mapped: Vec<[u8; 32]>,
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        if self.mapped.contains(&load::sha256(end_entity)) {
            return Ok(ServerCertVerified::assertion());
        }
        let cert = match X509Certificate::from_der(end_entity) {
            Ok((_, cert)) => cert,
            Err(e) => return Err(not_the_peer(format!("the peer's certificate cannot be read: {e}"))),
        };
        match identity_of(&cert) {
            Ok(Identity::Server(id)) if id == self.expected => Ok(ServerCertVerified::assertion()),
            Ok(other) => Err(not_the_peer(format!(
                "the certificate at this endpoint identifies {other}, not peer {}",
                self.expected
            ))),
            Err(e) => Err(not_the_peer(format!(
                "the certificate at this endpoint carries no identity of peer {}: {e}",
                self.expected
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// A peer's certificate that verifies but is not the peer's, as rustls's error for a bad
/// certificate: the connector then tells it as the far side's certificate (not as rustls's
/// "unexpected error"), and the peer is sent `certificate_unknown` rather than `internal_error`.
fn not_the_peer(why: String) -> rustls::Error {
    #[derive(Debug)]
    struct NotThePeer(String);
    impl std::fmt::Display for NotThePeer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for NotThePeer {}
    rustls::CertificateError::Other(rustls::OtherError(Arc::new(NotThePeer(why)))).into()
}

/// The national client secret, from `client_secret_file` (a trailing newline, which editors
/// add, dropped) or the environment variable `client_secret_env` names.
fn client_secret(n: &crate::config::National) -> Result<Secret, RuntimeError> {
    let invalid = |why: String| RuntimeError::Invalid(format!("[national]: {why}"));
    let secret = match (&n.client_secret_file, &n.client_secret_env) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| invalid(format!("cannot read client_secret_file {}: {e}", file.display())))?;
            text.trim_end_matches(['\r', '\n']).to_owned()
        }
        (None, Some(var)) => std::env::var(var).map_err(|_| {
            invalid(format!(
                "client_secret_env names {var}, which is not set in splpd's environment; set it, or use \
                 client_secret_file"
            ))
        })?,
        (None, None) => return Err(invalid("no client secret is configured".into())),
    };
    if secret.is_empty() {
        return Err(invalid("the client secret is empty".into()));
    }
    Ok(Secret::new(secret))
}

/// The national connector of `config`, its client secret read now from the file or the
/// environment variable the configuration names.
fn national(config: &Config, trust: &TrustStore, gateway: &GatewayCert) -> Result<NationalConnector, RuntimeError> {
    let Some(n) = &config.national else {
        return Err(RuntimeError::Invalid("no [national] table".into()));
    };
    let invalid = |why: String| RuntimeError::Invalid(format!("[national]: {why}"));
    let secret = client_secret(n)?;
    // The API manager's certificate is verified against its own anchor when `trust_anchor` names
    // one, else against those that may vouch for servers: never a neighbour's CA, which would
    // otherwise be handed the client secret by a host that answers for the API manager's name.
    let roots = trust.server_roots(|a| config.vouches_for_api_manager(a.name()));
    if roots.is_empty() {
        return Err(invalid(format!(
            "no [[trust_anchor]] may vouch for the API manager's certificate{}; name the anchor of the national \
             SPLP's CA in trust_anchor",
            n.trust_anchor.as_ref().map_or_else(String::new, |a| format!(" ({a:?} is not defined)"))
        )));
    }
    let tls = crate::tls::upstream_client_config(trust, gateway, None, &roots)?;
    let client = HttpUpstream::new((*tls).clone(), &UpstreamOptions::default()).map_err(|e| invalid(e.to_string()))?;
    let parse = |what: &str, text: &str| {
        text.trim_end_matches('/').parse::<Uri>().map_err(|e| invalid(format!("{what} {text:?}: {e}")))
    };
    let settings = NationalSettings {
        base_url: parse("base_url", &n.base_url)?,
        tenant: n.tenant.clone(),
        token_url: parse("token_url", &n.token_url)?,
        client_id: n.client_id.clone(),
        token_header: n.token_header.parse().map_err(|_| invalid(format!("bad token_header {:?}", n.token_header)))?,
        apis: n.apis.iter().map(|a| (a.service.clone(), a.api.clone(), a.version.clone())).collect(),
    };
    NationalConnector::new(client, settings, &secret).map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(s: &str) -> IdPrefix {
        s.parse().unwrap()
    }

    fn link(id: &str, prefixes: &[&str]) -> Arc<PeerLink> {
        let tls = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let client = HttpUpstream::new(tls, &UpstreamOptions::default()).unwrap();
        Arc::new(PeerLink {
            id: id.parse().unwrap(),
            authoritative: prefixes.iter().map(|p| prefix(p)).collect(),
            anchor: "peer".into(),
            endpoints: PeerEndpoints::new(client, vec!["https://127.0.0.1:1".parse().unwrap()]),
        })
    }

    fn federation(links: &[Arc<PeerLink>], national: &[&str]) -> Federation {
        let mut fed = Federation::default();
        for l in links {
            fed.peers.push(Arc::clone(l));
            for p in &l.authoritative {
                fed.table.push((p.clone(), Hop::Peer(Arc::clone(l))));
            }
        }
        for p in national {
            fed.table.push((prefix(p), Hop::National));
        }
        fed.table.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        fed
    }

    fn routed_to(fed: &Federation, service: &str) -> Option<String> {
        fed.hop(&service.parse().unwrap()).map(|h| match h {
            Hop::Peer(l) => l.id.to_string(),
            Hop::National => "national".into(),
        })
    }

    #[test]
    fn a_service_routes_to_the_longest_prefix_that_covers_it() {
        let province = link("ID/PEMDA/16/gw1", &["ID/PEMDA/16"]);
        let oku = link("ID/PEMDA/1601/gw1", &["ID/PEMDA/1601"]);
        let fed = federation(&[province, oku], &["ID/KL"]);
        assert_eq!(routed_to(&fed, "ID/PEMDA/1601/DINKES/rujukan").as_deref(), Some("ID/PEMDA/1601/gw1"));
        assert_eq!(routed_to(&fed, "ID/PEMDA/16/BAPPEDA/rencana").as_deref(), Some("ID/PEMDA/16/gw1"));
        // Part by part: 16011 is not under 1601.
        assert_eq!(routed_to(&fed, "ID/PEMDA/16011/X/y"), None);
        assert_eq!(routed_to(&fed, "ID/KL/KEMENDAGRI/DUKCAPIL/nik").as_deref(), Some("national"));
        assert_eq!(routed_to(&fed, "ID/PEMDA/1701/X/y"), None);
    }

    #[test]
    fn a_longer_prefix_wins_whatever_order_it_was_configured_in() {
        let specific = link("ID/PEMDA/1601/gw2", &["ID/PEMDA/1601/RSUD"]);
        let general = link("ID/PEMDA/1601/gw1", &["ID/PEMDA/1601"]);
        for links in [[Arc::clone(&specific), Arc::clone(&general)], [Arc::clone(&general), Arc::clone(&specific)]] {
            let fed = federation(&links, &[]);
            assert_eq!(routed_to(&fed, "ID/PEMDA/1601/RSUD/rekam").as_deref(), Some("ID/PEMDA/1601/gw2"));
            assert_eq!(routed_to(&fed, "ID/PEMDA/1601/DINKES/rekam").as_deref(), Some("ID/PEMDA/1601/gw1"));
        }
    }

    fn cert_of(anchor: &str) -> PeerIdentity {
        PeerIdentity {
            identity: Identity::parse(IdKind::Server, "ID/PEMDA/1601/gw1").unwrap(),
            cert_sha256: [7; 32],
            anchor: anchor.into(),
        }
    }

    #[test]
    fn a_peer_may_assert_only_clients_under_its_prefixes_and_only_with_its_anchor() {
        let oku = link("ID/PEMDA/1601/gw1", &["ID/PEMDA/1601"]);
        let caller = oku.accept(&cert_of("peer"), Some("ID/PEMDA/1601/DINKES")).unwrap();
        assert_eq!(caller.client.to_string(), "ID/PEMDA/1601/DINKES");
        assert_eq!(caller.cert_sha256, Some([7; 32]));

        let err = oku.accept(&cert_of("peer"), Some("ID/PEMDA/1602/DINKES")).unwrap_err();
        assert_eq!(err.xroad_type(), "Client.InvalidClientIdentity", "{err}");
        let err = oku.accept(&cert_of("region"), Some("ID/PEMDA/1601/DINKES")).unwrap_err();
        assert_eq!(err.xroad_type(), "Client.InvalidClientIdentity", "{err}");
        let err = oku.accept(&cert_of("peer"), None).unwrap_err();
        assert_eq!(err.xroad_type(), "Client.Unauthenticated", "{err}");
        let err = oku.accept(&cert_of("peer"), Some("not/an id")).unwrap_err();
        assert_eq!(err.xroad_type(), "Client.BadRequest", "{err}");
    }

    fn national(file: Option<std::path::PathBuf>, env: Option<&str>) -> crate::config::National {
        crate::config::National {
            prefixes: vec![prefix("ID/KL")],
            base_url: "https://splp.example.go.id".into(),
            tenant: "okikab.go.id".into(),
            token_url: "https://splp.example.go.id/oauth2/token".into(),
            client_id: "splpd-okikab".into(),
            client_secret_file: file,
            client_secret_env: env.map(str::to_owned),
            token_header: "Authorization".into(),
            trust_anchor: None,
            apis: Vec::new(),
        }
    }

    #[test]
    fn the_client_secret_comes_from_its_file_without_the_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "r4hasia sekali\n").unwrap();
        assert_eq!(client_secret(&national(Some(file.clone()), None)).unwrap().expose(), "r4hasia sekali");
        std::fs::write(&file, "\n").unwrap();
        let err = client_secret(&national(Some(file), None)).unwrap_err().to_string();
        assert!(err.contains("the client secret is empty"), "{err}");
        let err = client_secret(&national(Some(dir.path().join("missing")), None)).unwrap_err().to_string();
        assert!(err.contains("cannot read client_secret_file"), "{err}");
    }

    #[test]
    fn a_missing_secret_variable_is_named() {
        let err = client_secret(&national(None, Some("SPLPD_TEST_SECRET_THAT_IS_NEVER_SET"))).unwrap_err().to_string();
        assert!(err.contains("SPLPD_TEST_SECRET_THAT_IS_NEVER_SET, which is not set"), "{err}");
        assert!(!format!("{:?}", Secret::new("x")).contains('x'));
    }

    #[test]
    fn content_length_is_settled_as_hyper_would_send_it() {
        let mut h = http::HeaderMap::new();
        settle_content_length(&Method::GET, &mut h, Some(0));
        assert!(h.get(header::CONTENT_LENGTH).is_none());
        settle_content_length(&Method::POST, &mut h, Some(0));
        assert_eq!(h.get(header::CONTENT_LENGTH).unwrap(), "0");
        let mut h = http::HeaderMap::new();
        settle_content_length(&Method::POST, &mut h, None);
        assert!(h.get(header::CONTENT_LENGTH).is_none());
        settle_content_length(&Method::PUT, &mut h, Some(12));
        assert_eq!(h.get(header::CONTENT_LENGTH).unwrap(), "12");
    }
}
