//! The runtime view of one configuration: everything the exchange path needs, compiled once
//! (trust store, TLS configurations, routes with their pooled upstream clients, access policy,
//! quotas) and swapped whole when the configuration changes, so no request ever takes a lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use splpd_adapters::http::{HttpUpstream, UpstreamOptions};
use splpd_adapters::upstreams::ServiceUpstreams;
use splpd_certs::id::{ServerId, ServiceId};

use crate::authorize::AccessPolicy;
use crate::config::{AuditMode, ClientOptIn, Config, Limits, Protocol};
use crate::limit::Limiter;
use crate::tls::{GatewayCert, TlsSetupError, Transport, TrustStore};

/// Default time for an upstream's response to start, when a service sets none.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A local service and how to reach it.
#[derive(Debug)]
pub struct Route {
    /// The service.
    pub id: ServiceId,
    /// REST or gRPC.
    pub protocol: Protocol,
    /// Its endpoints (base URLs; the path under the service is appended), the pooled client
    /// towards them, and their balancing, health, ejection, circuits and retries.
    pub upstreams: ServiceUpstreams,
    /// Time allowed for the response to start.
    pub request_timeout: Duration,
    /// Largest request body accepted.
    pub max_request_body: u64,
    /// Audit durability for its exchanges.
    pub audit_mode: AuditMode,
    /// How much of each body its records keep (`store_bodies`); `None` keeps none.
    pub stored_body: Option<usize>,
}

/// One listener as the server runs it.
#[derive(Debug)]
pub struct ListenerRuntime {
    /// Its name, for logs.
    pub name: String,
    /// Where it listens.
    pub address: std::net::SocketAddr,
    /// TLS or cleartext, and whether a client certificate is required.
    pub transport: Transport,
    /// The rustls configuration for TLS listeners.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Its client certificate verifier, to check connections opened before a reload again.
    pub client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    /// Clients opted in to a weaker connection type here.
    pub opt_ins: Vec<ClientOptIn>,
    /// Connections held open at once; beyond it new ones are shed.
    pub max_connections: usize,
}

/// Why a configuration could not be made ready to serve.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Certificates, keys or CRLs could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// Something the validator should have caught.
    #[error("{0}")]
    Invalid(String),
}

/// Everything compiled from one configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// The configuration it came from.
    pub config: Arc<Config>,
    /// This gateway's identifier.
    pub gateway_id: ServerId,
    /// Trust anchors, CRLs and identity mappings.
    pub trust: TrustStore,
    /// The gateway's own certificate and key.
    pub gateway_cert: GatewayCert,
    /// The listeners.
    pub listeners: Vec<Arc<ListenerRuntime>>,
    /// Local services by identifier.
    pub routes: HashMap<ServiceId, Arc<Route>>,
    /// Fully-qualified gRPC service names (`kesehatan.v1.Rujukan`) to the local service they are
    /// routed to when a call names none in `x-road-service`.
    pub grpc_services: HashMap<String, ServiceId>,
    /// Access rights.
    pub policy: AccessPolicy,
    /// Quotas.
    pub limiter: Limiter,
    /// Edge limits.
    pub limits: Limits,
    /// Peer gateways and the national SPLP.
    pub federation: crate::peer::Federation,
    /// Members, subsystems, services and OpenAPI documents, for the gateway's own directory.
    pub directory: crate::local::Directory,
    /// The operators' listener, when `[admin]` is set.
    pub admin: Option<Arc<crate::admin::AdminListener>>,
}

impl Snapshot {
    /// The listener of this name.
    pub fn listener(&self, name: &str) -> Option<&Arc<ListenerRuntime>> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// Compiles a validated configuration.
    pub fn build(config: Config) -> Result<Self, RuntimeError> {
        let trust = TrustStore::load(&config)?;
        let gateway = GatewayCert::from_config(&config)?;
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let address = l.address.parse().map_err(|_| RuntimeError::Invalid(format!("bad address {}", l.address)))?;
            let transport = crate::tls::listener_transport(l);
            let (tls, client_verifier) = match transport {
                Transport::Tls { client_auth } => (
                    Some(crate::tls::server_config(&trust, &gateway, client_auth)?),
                    Some(crate::tls::client_verifier(&trust, client_auth)?),
                ),
                Transport::Plain => (None, None),
            };
            listeners.push(Arc::new(ListenerRuntime {
                name: l.name.clone(),
                address,
                transport,
                tls,
                client_verifier,
                opt_ins: l.clients.clone(),
                max_connections: l.max_connections.unwrap_or(config.limits.max_connections) as usize,
            }));
        }
        let admin = match &config.admin {
            Some(a) => Some(Arc::new(crate::admin::AdminListener {
                address: a
                    .address
                    .parse()
                    .map_err(|_| RuntimeError::Invalid(format!("bad [admin] address {}", a.address)))?,
                tls: crate::tls::server_config(&trust, &gateway, crate::tls::ClientAuth::Operators)?,
                client_verifier: crate::tls::client_verifier(&trust, crate::tls::ClientAuth::Operators)?,
                operators: a.operators.clone(),
                viewers: a.viewers.clone(),
            })),
            None => None,
        };
        let mut routes = HashMap::new();
        let mut grpc_services = HashMap::new();
        let server_roots = trust.server_roots(|a| config.vouches_for_servers(a.name()));
        for s in &config.services {
            let roots = if server_roots.is_empty() {
                let https = s.upstreams.iter().any(|u| u.starts_with("https://"));
                if https && s.tls.as_ref().is_none_or(|t| t.ca.is_none()) {
                    return Err(crate::tls::TlsSetupError::NoServerAnchors { service: s.id.to_string() }.into());
                }
                // Never asked: the service has no https:// upstream, or pins its own CA.
                trust.all_roots()
            } else {
                &server_roots
            };
            let tls = crate::tls::upstream_client_config(&trust, &gateway, s.tls.as_ref(), roots)?;
            let mut opts = UpstreamOptions::default();
            if let Some(t) = s.connect_timeout {
                opts.connect_timeout = t.0;
            }
            if let Some(t) = s.idle_timeout {
                opts.idle_timeout = t.0;
            }
            opts.server_name = s.tls.as_ref().and_then(|t| t.server_name.clone());
            opts.http2_only = s.protocol == Protocol::Grpc;
            opts.http2_windows = config.limits.http2_windows();
            opts.max_connections_per_host = Some(s.circuit.max_connections);
            if s.protocol == Protocol::Grpc {
                for name in &s.grpc_services {
                    if let Some(other) = grpc_services.insert(name.clone(), s.id.clone()) {
                        return Err(RuntimeError::Invalid(format!(
                            "gRPC service {name} is mapped to both {other} and {}",
                            s.id
                        )));
                    }
                }
            }
            let upstreams = s
                .upstreams
                .iter()
                .map(|u| u.trim_end_matches('/').parse::<Uri>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| RuntimeError::Invalid(format!("service {}: bad upstream URL: {e}", s.id)))?;
            let client = HttpUpstream::new((*tls).clone(), &opts)
                .map_err(|e| RuntimeError::Invalid(format!("service {}: {e}", s.id)))?;
            routes.insert(
                s.id.clone(),
                Arc::new(Route {
                    id: s.id.clone(),
                    protocol: s.protocol,
                    upstreams: ServiceUpstreams::new(upstreams, client, crate::config::resilience::policy(s)),
                    request_timeout: s.request_timeout.map_or(DEFAULT_REQUEST_TIMEOUT, |t| t.0),
                    max_request_body: s.max_request_body.unwrap_or(config.limits.max_request_body).bytes(),
                    audit_mode: s.audit.unwrap_or(config.audit.mode),
                    stored_body: s
                        .store_bodies
                        .then(|| usize::try_from(config.audit.max_stored_body.bytes()).unwrap_or(usize::MAX)),
                }),
            );
        }
        let federation = crate::peer::Federation::build(&config, &trust, &gateway)?;
        let directory = crate::local::Directory::build(&config).map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        Ok(Self {
            federation,
            directory,
            admin,
            gateway_id: config.gateway.id.clone(),
            policy: AccessPolicy::new(&config),
            limiter: Limiter::new(&config),
            limits: config.limits.clone(),
            trust,
            gateway_cert: gateway,
            listeners,
            routes,
            grpc_services,
            config: Arc::new(config),
        })
    }
}
