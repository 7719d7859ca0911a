//! The shape of the configuration file: every table and key an operator may write, with its
//! default. Parsing fixes types and identifiers; `validate` checks the file as a whole.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use splpd_certs::id::{AdminId, ClientId, IdKind, IdPrefix, ServerId, ServiceId};

use super::units::{ByteSize, EndpointPattern, Fingerprint, Instant, Span};

/// A whole gateway configuration: the source of truth for one splpd instance.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who this gateway is.
    pub gateway: Gateway,
    /// Where agency applications and peer gateways connect.
    #[serde(default, rename = "listener")]
    pub listeners: Vec<Listener>,
    /// The operators' listener.
    pub admin: Option<Admin>,
    /// Certificate authorities and the identifiers each may vouch for.
    #[serde(default, rename = "trust_anchor")]
    pub trust_anchors: Vec<TrustAnchor>,
    /// Certificates from outside CAs (such as BSrE) mapped to an identity by fingerprint.
    #[serde(default, rename = "identity")]
    pub identities: Vec<IdentityMapping>,
    /// Services of this region's agencies that the gateway routes to.
    #[serde(default, rename = "service")]
    pub services: Vec<Service>,
    /// Named sets of clients that grants may name.
    #[serde(default, rename = "group")]
    pub groups: Vec<Group>,
    /// Access rights: who may call what.
    #[serde(default, rename = "grant")]
    pub grants: Vec<Grant>,
    /// Per-client overrides of a service's rate limit.
    #[serde(default, rename = "quota")]
    pub quotas: Vec<Quota>,
    /// Other regions' gateways.
    #[serde(default, rename = "peer")]
    pub peers: Vec<Peer>,
    /// The national SPLP connector.
    pub national: Option<National>,
    /// The audit log.
    #[serde(default)]
    pub audit: Audit,
    /// Limits applied at the edge to every request.
    #[serde(default)]
    pub limits: Limits,
    /// OpenTelemetry export.
    pub telemetry: Option<Telemetry>,
}

/// `[gateway]`: this gateway's identity and key pair.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// The server identifier, e.g. `ID/PEMDA/1602/gw1`; its certificate must carry it.
    pub id: ServerId,
    /// A human name for dashboards and reports.
    pub name: Option<String>,
    /// The gateway's certificate (PEM, chain allowed), used as a server and towards upstreams.
    pub cert: PathBuf,
    /// The gateway's private key (PEM).
    pub key: PathBuf,
    /// The identifier prefixes whose services this gateway owns; defaults to its own member.
    #[serde(default)]
    pub serves: Vec<IdPrefix>,
}

impl Config {
    /// Whether trust anchor `name` may vouch for a server the gateway calls by URL (a service's
    /// `https://` upstream without `tls.ca`, the national API manager without `trust_anchor`): an
    /// anchor with no scopes (an outside CA, such as the national one), or one that vouches for
    /// this region by its scopes. A CA scoped to other regions' identifiers (a neighbour's)
    /// vouches for those identities alone, not for the hosts this gateway sends its calls and
    /// secrets to, even when one of its certificates is mapped into the region by `[[identity]]`.
    pub fn vouches_for_servers(&self, name: &str) -> bool {
        self.trust_anchors.iter().any(|a| a.name == name && a.scopes.is_empty()) || self.scoped_to_region(name)
    }

    /// Whether trust anchor `name` may vouch for the national API manager: the one `[national]
    /// trust_anchor` names, or without it any that may vouch for servers. Where the client secret
    /// goes depends on it (see the admin listener's guard on it).
    pub fn vouches_for_api_manager(&self, name: &str) -> bool {
        match self.national.as_ref().and_then(|n| n.trust_anchor.as_deref()) {
            Some(pinned) => pinned == name,
            None => self.vouches_for_servers(name),
        }
    }

    /// Whether the scopes of trust anchor `name` overlap what the gateway serves or cover the
    /// gateway itself.
    fn scoped_to_region(&self, name: &str) -> bool {
        let own = splpd_certs::id::Identity::Server(self.gateway.id.clone());
        let served = self.gateway.served_prefixes();
        self.trust_anchors
            .iter()
            .filter(|a| a.name == name)
            .flat_map(|a| &a.scopes)
            .any(|scope| own.is_within(scope) || served.iter().any(|p| scope.overlaps(p)))
    }

    /// Whether the CA of trust anchor `name` vouches for this gateway's own region: its scopes
    /// overlap what the gateway serves or cover the gateway itself, or an `[[identity]]` maps
    /// one of its certificates into the region (as for BSrE). Its CRL then decides whether the
    /// region's own agencies, or the gateway, are let in: readiness and `config check` watch it.
    pub fn vouches_for_region(&self, name: &str) -> bool {
        let own = splpd_certs::id::Identity::Server(self.gateway.id.clone());
        let served = self.gateway.served_prefixes();
        let in_region = |id: &splpd_certs::id::Identity| *id == own || served.iter().any(|p| id.is_within(p));
        self.scoped_to_region(name)
            || self.identities.iter().any(|m| {
                m.anchor == name && splpd_certs::id::Identity::parse(m.kind, &m.id).is_ok_and(|id| in_region(&id))
            })
    }
}

impl Gateway {
    /// The prefixes this gateway owns: `serves`, or the gateway's member when that is empty.
    pub fn served_prefixes(&self) -> Vec<IdPrefix> {
        if self.serves.is_empty() {
            // A member identifier is always a valid prefix.
            self.id.member().to_string().parse().into_iter().collect()
        } else {
            self.serves.clone()
        }
    }
}

/// How a client reaches the gateway (design §3, connection types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionType {
    /// Mutual TLS: the identity comes from the client certificate. The default, and the only
    /// type on a listener that opts nobody in.
    Mtls,
    /// TLS without a client certificate; the identity comes from `X-Road-Client`.
    Tls,
    /// Plain HTTP; the identity comes from `X-Road-Client`.
    Http,
}

/// `[[listener]]`: an address where clients and peers connect.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// A name used in logs and metrics.
    pub name: String,
    /// `IP:port`, e.g. `0.0.0.0:8443`.
    pub address: String,
    /// Clients opted in to a weaker connection type on this listener.
    #[serde(default)]
    pub clients: Vec<ClientOptIn>,
    /// The most connections held open at once; defaults to `[limits] max_connections`. Beyond
    /// it a few more are answered `503 Server.Overloaded` and closed, and the rest closed at once.
    pub max_connections: Option<u32>,
}

/// A named client allowed to connect without a client certificate on one listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientOptIn {
    /// The client, e.g. `ID/PEMDA/1602/SIMPEG-LAMA`.
    pub client: ClientId,
    /// `tls` or `http`.
    pub connection: ConnectionType,
}

/// `[admin]`: the operators' listener (mTLS with admin certificates only).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `IP:port`, usually on loopback or the office network.
    pub address: String,
    /// The operators allowed in; when empty, any admin certificate of this gateway's member.
    #[serde(default)]
    pub operators: Vec<AdminId>,
    /// Admin certificates that may only read: health, readiness, metrics, the dashboard and
    /// whether maintenance mode is on. For a Prometheus scraper or a wall display, whose key, if
    /// taken, must not change the gateway.
    #[serde(default)]
    pub viewers: Vec<AdminId>,
}

/// `[[trust_anchor]]`: a CA and the identifiers it may vouch for.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrustAnchor {
    /// A name that identity mappings and peers refer to.
    pub name: String,
    /// The CA certificate(s), PEM.
    pub ca: PathBuf,
    /// Identifier prefixes this CA may vouch for through the URI SAN of the certificates it
    /// issues. Empty for a CA (such as BSrE) whose certificates only count through `[[identity]]`.
    #[serde(default)]
    pub scopes: Vec<IdPrefix>,
    /// Certificate revocation lists of this CA, PEM or DER.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
}

/// `[[identity]]`: a certificate without our URI SAN, mapped to an identity by fingerprint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityMapping {
    /// The SHA-256 fingerprint of the certificate.
    pub fingerprint: Fingerprint,
    /// `subsystem` (default), `server` or `admin`.
    #[serde(default = "default_identity_kind")]
    pub kind: IdKind,
    /// The identifier the certificate stands for.
    pub id: String,
    /// The trust anchor the certificate must chain to.
    pub anchor: String,
}

fn default_identity_kind() -> IdKind {
    IdKind::Subsystem
}

/// The protocol a service speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// REST over HTTP/1.1 or HTTP/2 (X-Road r1).
    #[default]
    Rest,
    /// gRPC over HTTP/2.
    Grpc,
}

/// When an exchange's audit record must be on disk (design §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditMode {
    /// The response is released only after its record is durable (group commit).
    #[default]
    Sync,
    /// As `sync`, and the request record is durable before the call is forwarded.
    Strict,
    /// Records are written in the background; a crash may lose the last few.
    Async,
}

/// A service's rate limit per calling client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained calls per second.
    pub per_second: u32,
    /// Calls allowed in a burst above the sustained rate; defaults to `per_second`.
    pub burst: Option<u32>,
}

/// The official responsible for a service's data (the regulation's data steward).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Steward {
    /// Name and position.
    pub name: String,
    /// Where to reach them.
    pub contact: Option<String>,
}

/// How the gateway connects to an HTTPS upstream.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// CA certificate(s) that sign the upstream's certificate, PEM; defaults to the trust anchors
    /// that may vouch for servers ([`Config::vouches_for_servers`]).
    pub ca: Option<PathBuf>,
    /// Present the gateway's own certificate to the upstream (mutual TLS).
    #[serde(default)]
    pub client_cert: bool,
    /// The name to verify on the upstream's certificate, when not the URL's host.
    pub server_name: Option<String>,
}

/// `[[service]]`: an agency service the gateway routes to.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// `INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE`.
    pub id: ServiceId,
    /// What the service does, for the directory and dashboards.
    pub description: Option<String>,
    /// `rest` (default) or `grpc`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Base URLs of the service's endpoints, `http://` or `https://`.
    pub upstreams: Vec<String>,
    /// TLS towards `https://` upstreams.
    pub tls: Option<UpstreamTls>,
    /// Fully-qualified gRPC service names routed here when a call has no `x-road-service`.
    #[serde(default)]
    pub grpc_services: Vec<String>,
    /// Time allowed to open a connection to an upstream.
    pub connect_timeout: Option<Span>,
    /// Time allowed for the upstream's response to start.
    pub request_timeout: Option<Span>,
    /// How long an unused pooled connection is kept.
    pub idle_timeout: Option<Span>,
    /// Largest request body accepted; defaults to `[limits] max_request_body`.
    pub max_request_body: Option<ByteSize>,
    /// Calls per client; unlimited when absent.
    pub rate_limit: Option<RateLimit>,
    /// The service's OpenAPI document, served by `getOpenAPI`.
    pub openapi: Option<PathBuf>,
    /// The data steward.
    pub steward: Option<Steward>,
    /// Audit durability for this service; defaults to `[audit] mode`.
    pub audit: Option<AuditMode>,
    /// Keep request and response bodies in the audit log (off unless the service opts in).
    #[serde(default)]
    pub store_bodies: bool,
    /// Active health checks of the endpoints; off unless the table is present.
    pub health_check: Option<super::resilience::HealthCheck>,
    /// Passive ejection of endpoints that fail in a row.
    #[serde(default)]
    pub outlier: super::resilience::Outlier,
    /// Limits per endpoint and the circuit breaker.
    #[serde(default)]
    pub circuit: super::resilience::Circuit,
    /// Retries on another endpoint.
    #[serde(default)]
    pub retry: super::resilience::Retry,
}

/// `[[group]]`: a named set of clients.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// The name grants use.
    pub name: String,
    /// What the group is.
    pub description: Option<String>,
    /// Its member subsystems.
    pub members: Vec<ClientId>,
}

/// `[[grant]]`: an access right.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The service opened.
    pub service: ServiceId,
    /// The client it is opened to (or `group`).
    pub client: Option<ClientId>,
    /// The group it is opened to (or `client`).
    pub group: Option<String>,
    /// Which endpoints; every endpoint when empty.
    #[serde(default)]
    pub endpoints: Vec<EndpointPattern>,
    /// Declared purposes (`X-SPLP-Purpose`) the grant is bound to; any when empty.
    #[serde(default)]
    pub purposes: Vec<String>,
    /// The grant holds from this instant.
    pub valid_from: Option<Instant>,
    /// The grant holds until this instant.
    pub valid_until: Option<Instant>,
}

/// `[[quota]]`: a per-client override of a service's rate limit.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// The service.
    pub service: ServiceId,
    /// The client.
    pub client: ClientId,
    /// Sustained calls per second.
    pub per_second: u32,
    /// Burst above the sustained rate; defaults to `per_second`.
    pub burst: Option<u32>,
}

/// `[[peer]]`: another region's gateway.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// The peer's server identifier; its certificate must carry it.
    pub id: ServerId,
    /// `https://` URLs of its endpoints, tried in turn. Empty for a peer that only calls this
    /// gateway, as the national SPLP does, whose services go through `[national]` instead: then
    /// nothing is routed to it.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Identifier prefixes the peer is authoritative for: services routed to it (when it has
    /// endpoints), and client identities it may assert.
    pub authoritative: Vec<IdPrefix>,
    /// The trust anchor that vouches for the peer's server certificate.
    pub trust_anchor: String,
}

impl Peer {
    /// Whether calls are sent to it: a peer without endpoints only calls this gateway.
    pub fn routes_calls(&self) -> bool {
        !self.endpoints.is_empty()
    }
}

/// `[national]`: the national SPLP connector.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct National {
    /// Service identifiers under these prefixes are sent to the national SPLP.
    pub prefixes: Vec<IdPrefix>,
    /// The API manager's base URL.
    pub base_url: String,
    /// The tenant domain in `/t/<tenant>/…`.
    pub tenant: String,
    /// The OAuth2 token endpoint.
    pub token_url: String,
    /// The OAuth2 client id.
    pub client_id: String,
    /// A file holding the client secret (preferred).
    pub client_secret_file: Option<PathBuf>,
    /// An environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    /// The header that carries the token: `Authorization` or e.g. `AuthorizationSPLP`.
    #[serde(default = "default_token_header")]
    pub token_header: String,
    /// The `[[trust_anchor]]` whose CA the API manager's certificate must chain to. Without it,
    /// any anchor that may vouch for servers ([`Config::vouches_for_servers`]).
    pub trust_anchor: Option<String>,
    /// National APIs by service identifier.
    #[serde(default, rename = "api")]
    pub apis: Vec<NationalApi>,
}

fn default_token_header() -> String {
    "Authorization".to_owned()
}

/// `[[national.api]]`: one national API and the service identifier it is called by.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NationalApi {
    /// The service identifier agencies use.
    pub service: ServiceId,
    /// The API's context name in the API manager.
    pub api: String,
    /// The API's version.
    pub version: String,
}

/// `[audit]`: the tamper-evident audit log.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Audit {
    /// Where segment files are written.
    pub dir: PathBuf,
    /// Default durability mode.
    pub mode: AuditMode,
    /// Size at which a segment file is closed and a new one started.
    pub segment_size: ByteSize,
    /// While the gateway is busy, how long the writer may hold a sync to take more records
    /// into it.
    pub commit_delay: Span,
    /// How far ahead of its records the last segment is filled with zeros, so that syncs do
    /// not change the file's length; 0 turns it off.
    pub preallocate: ByteSize,
    /// A signed checkpoint after this many records…
    pub checkpoint_every: u64,
    /// …or after this much time, whichever comes first.
    pub checkpoint_interval: Span,
    /// The key that signs checkpoints; defaults to the gateway's key.
    pub signing_key: Option<PathBuf>,
    /// The certificate of `signing_key`, a server certificate for the gateway's id, kept beside
    /// the log so that its checkpoints can be checked; required with `signing_key`.
    pub signing_cert: Option<PathBuf>,
    /// Delete segments older than this, once exported.
    pub retain_for: Option<Span>,
    /// Delete the oldest exported segments once the log is larger than this.
    pub retain_size: Option<ByteSize>,
    /// For a service that keeps bodies (`store_bodies`), how much of each body its records keep.
    pub max_stored_body: ByteSize,
}

impl Default for Audit {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("audit"),
            mode: AuditMode::Sync,
            segment_size: ByteSize::mib(64),
            commit_delay: Span(std::time::Duration::from_millis(5)),
            preallocate: ByteSize::mib(1),
            checkpoint_every: 10_000,
            checkpoint_interval: Span(std::time::Duration::from_secs(1)),
            signing_key: None,
            signing_cert: None,
            retain_for: None,
            retain_size: None,
            max_stored_body: ByteSize::kib(64),
        }
    }
}

/// `[limits]`: defaults applied at the edge to every request.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest total size of a request's headers.
    pub max_header_bytes: ByteSize,
    /// Most headers in one request.
    pub max_headers: u32,
    /// Longest request URI.
    pub max_uri_length: u32,
    /// Largest request body, unless the service says otherwise.
    pub max_request_body: ByteSize,
    /// Time allowed for a client to send its request headers.
    pub header_read_timeout: Span,
    /// Time allowed for a TLS handshake.
    pub handshake_timeout: Span,
    /// Time a connection may stay open with no request in progress (HTTP/1.1 keep-alive, an
    /// HTTP/2 connection with no open stream, or one that never sends its first request).
    pub idle_timeout: Span,
    /// Time the gateway's writes to a client may make no progress (the client reads nothing of
    /// its answer) before the connection is closed.
    pub send_timeout: Span,
    /// Connections held open at once per listener, unless the listener says otherwise.
    pub max_connections: u32,
    /// Connections one client address (an IPv6 one by its /64) may hold open at once on one
    /// listener: one client must not take the slots, and the memory, of all the others.
    pub connections_per_address: u32,
    /// Connections that can only be refused (no client certificate the gateway accepts)
    /// answered and recorded per client address and minute; past it they are closed unanswered.
    pub refusals_per_address: u32,
    /// HTTP/2: streams a client may have open at once on one connection.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2: the flow-control window of each stream (how much a client, or a gRPC upstream
    /// or peer gateway answering, may send ahead).
    pub http2_stream_window: ByteSize,
    /// HTTP/2: the flow-control window of a whole connection, the gateway's own to upstreams
    /// and peers included.
    pub http2_connection_window: ByteSize,
    /// HTTP/2: streams a client may open and reset before the gateway has accepted them; beyond
    /// it the connection is closed (the "rapid reset" attack).
    pub http2_max_pending_resets: u32,
    /// HTTP/2: streams the gateway may reset for a client's protocol errors before it closes the
    /// connection.
    pub http2_max_local_error_resets: u32,
    /// Time open exchanges are given to finish on shutdown (SIGTERM).
    pub drain_timeout: Span,
}

impl Limits {
    /// The HTTP/2 flow-control windows in bytes, per stream and per connection (validation keeps
    /// them within HTTP/2's 2^31 - 1).
    pub fn http2_windows(&self) -> (u32, u32) {
        let window = |size: ByteSize| u32::try_from(size.bytes()).unwrap_or(u32::MAX);
        (window(self.http2_stream_window), window(self.http2_connection_window))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: ByteSize::kib(64),
            max_headers: 100,
            max_uri_length: 8192,
            max_request_body: ByteSize::mib(10),
            header_read_timeout: Span(std::time::Duration::from_secs(10)),
            handshake_timeout: Span(std::time::Duration::from_secs(10)),
            idle_timeout: Span(std::time::Duration::from_secs(120)),
            send_timeout: Span(std::time::Duration::from_secs(60)),
            max_connections: 10_000,
            connections_per_address: 256,
            refusals_per_address: 60,
            http2_max_concurrent_streams: 256,
            http2_stream_window: ByteSize::mib(1),
            http2_connection_window: ByteSize::mib(4),
            http2_max_pending_resets: 20,
            http2_max_local_error_resets: 1024,
            drain_timeout: Span(std::time::Duration::from_secs(30)),
        }
    }
}

/// `[telemetry]`: OpenTelemetry export.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// The OpenTelemetry collector's OTLP/gRPC endpoint, e.g. `http://127.0.0.1:4317`.
    pub otlp_endpoint: String,
    /// The service name reported; defaults to `splpd`.
    pub service_name: Option<String>,
    /// The share of exchanges sent as spans, from 0 to 1; defaults to 1 (every exchange).
    pub traces_sample_ratio: Option<f64>,
    /// How often the metrics are sent; defaults to 15 s.
    pub metrics_interval: Option<Span>,
}

impl Telemetry {
    /// The service name reported.
    pub fn service_name(&self) -> &str {
        self.service_name.as_deref().unwrap_or("splpd")
    }

    /// The share of exchanges sent as spans.
    pub fn sample_ratio(&self) -> f64 {
        self.traces_sample_ratio.unwrap_or(1.0)
    }

    /// How often the metrics are sent.
    pub fn metrics_interval(&self) -> std::time::Duration {
        self.metrics_interval.map_or(std::time::Duration::from_secs(15), |s| s.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_overlap_when_one_lies_within_the_other_by_whole_parts() {
        let p = |s: &str| s.parse::<IdPrefix>().unwrap();
        assert!(p("ID/PEMDA/1602").overlaps(&p("ID/PEMDA/1602")));
        assert!(p("ID/PEMDA").overlaps(&p("ID/PEMDA/1602")));
        assert!(p("ID/PEMDA/1602").overlaps(&p("ID/PEMDA")));
        assert!(!p("ID/PEMDA/1601").overlaps(&p("ID/PEMDA/1602")));
        assert!(!p("ID/PEMDA/160").overlaps(&p("ID/PEMDA/1602")), "whole parts only");
    }

    #[test]
    fn servers_are_vouched_for_by_the_region_and_unscoped_anchors_not_by_a_neighbours() {
        let text = format!(
            "{}\n[[trust_anchor]]\nname = \"splp-nasional\"\nca = \"pki/splp/ca.crt\"\n",
            include_str!("../../../examples/region-1602.toml")
        );
        let config = crate::config::parse_shape(std::path::Path::new("splpd.toml"), &text).unwrap();
        assert!(config.vouches_for_servers("region"));
        assert!(config.vouches_for_servers("splp-nasional"));
        assert!(!config.vouches_for_servers("peer-1601"), "a neighbour's CA vouches for its gateway alone");
        assert!(!config.vouches_for_servers("no-such-anchor"));
        // A neighbour's certificate mapped into the region does not make its CA one for servers.
        let mapped = format!(
            "{text}\n[[identity]]\nfingerprint = \"sha256:{}\"\nid = \"ID/PEMDA/1602/BAPPEDA\"\nanchor = \"peer-1601\"\n",
            "AB".repeat(32)
        );
        let config = crate::config::parse_shape(std::path::Path::new("splpd.toml"), &mapped).unwrap();
        assert!(config.vouches_for_region("peer-1601") && !config.vouches_for_servers("peer-1601"));
    }
}
