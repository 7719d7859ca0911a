//! The exchange path (design §4), as named phases over one per-request context: identify →
//! parse target → route → authorize → rate-limit → forward → respond, with the audit record
//! filled along the way. REST and gRPC calls take the same phases; a gRPC call (`grpc`) differs
//! in its target (`/package.Service/Method` and `x-road-service`), its deadline, and the shape of
//! the gateway's errors. Denials and failures are exchanges too: each is answered with an X-Road
//! error (for gRPC, a gRPC status with `x-road-error`) and logged, and no answer leaves before its
//! record is as durable as asked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body, Incoming};
use splpd_adapters::circuit::Lease;
use splpd_adapters::http::{BoxError, UpstreamError};
use splpd_adapters::upstreams::{Attempt, Deadline, DispatchError, Forwarded, Outgoing, endpoint_uri};
use splpd_certs::id::{ClientId, ServiceId};
use uuid::Uuid;

use crate::admin::Maintenance;
use crate::admin::metrics::{ExchangeMetrics, Metered};
use crate::audit::{AuditSink, BodyHasher, MAX_RECORDED_HEADER, RecordBuilder};
use crate::authorize::AccessRequest;
use crate::config::{AuditMode, Protocol};
use crate::error::{Failure, GatewayError, GrpcCode};
use crate::forward::{self, MeteredRequestBody, RequestHasher, xroad};
use crate::grpc;
use crate::identify::{self, ConnectionAuth};
use crate::local;
use crate::peer::{self, NotSent, SendError, Sent, Via};
use crate::respond::{self, AuditedBody, Settled};
use crate::runtime::{ListenerRuntime, Route, Snapshot};

/// The body of every response the gateway sends.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// What the exchange path shares across requests: the current configuration and the audit log.
#[derive(Debug)]
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    /// The log, behind the counters that every exchange's record passes through.
    audit: Arc<dyn AuditSink>,
    /// The log itself, for records that are not exchanges.
    log: Arc<dyn AuditSink>,
    /// Counts [`Gateway::replace`] calls, so that a connection can tell a reload happened.
    generation: std::sync::atomic::AtomicU64,
    /// Told of every [`Gateway::replace`], for what waits on the configuration's dates (the CRL
    /// watch); an `Arc` so that a waiter does not keep the gateway alive.
    replaced: Arc<tokio::sync::Notify>,
    metrics: Arc<ExchangeMetrics>,
    maintenance: Arc<Maintenance>,
    /// What changes the configuration file for the admin listener, when the gateway runs from
    /// one (`splpd serve`); weak, since it holds the gateway.
    reloader: std::sync::OnceLock<std::sync::Weak<crate::reload::Reloader>>,
    /// The OpenTelemetry exporter's counters, when it runs.
    telemetry: Option<Arc<crate::telemetry::ExportStats>>,
    /// Refusals of unidentified callers answered and recorded per address (`refusals`).
    refusals: crate::refusals::RefusalBudget,
    /// Lines of each kind of refusal said a minute: an outage refuses every exchange alike.
    log_budget: crate::log_budget::LogBudget,
    /// Set once the gateway stops taking connections (`Running::stop`), so that readiness says
    /// so while the exchanges in flight finish.
    stopping: std::sync::atomic::AtomicBool,
}

/// What is known about a connection before its first request.
#[derive(Debug)]
pub struct Connection {
    /// The listener it arrived on.
    pub listener: Arc<ListenerRuntime>,
    /// Its authentication: the certificate's identity, none, or why the certificate, although
    /// verified, cannot stand for anyone here (its requests are refused and logged).
    pub auth: Result<ConnectionAuth, identify::IdentifyError>,
    /// The client's address.
    pub remote: SocketAddr,
    /// The SHA-256 of the client certificate presented, whether or not it identifies anyone:
    /// the record of a refused exchange names it.
    pub cert_sha256: Option<[u8; 32]>,
}

impl Connection {
    /// Whether each refusal of an unidentified caller on this connection counts against its
    /// address's refusal budget (`refusals`): a caller without a certificate on a connection that
    /// may also serve opted-in callers. One that can only be refused was counted when accepted.
    pub fn counts_refusals_per_request(&self) -> bool {
        matches!(self.auth, Ok(ConnectionAuth::TlsNoCert | ConnectionAuth::Plain)) && !self.can_only_be_refused()
    }

    /// Whether every request on this connection can only be refused, whatever it asks: it has no
    /// certificate where one is required, or its certificate identifies no one here (or no
    /// longer verifies since a reload). Such a connection gets one HTTP/2 stream at a time and is
    /// closed after its first refusal (`server::run_http`): each refusal, and its record, costs
    /// the caller a new TLS handshake, as a refused handshake did before the gateway answered;
    /// and a client that pools connections, such as a peer gateway, connects again and meets
    /// the new configuration in the handshake rather than being refused on its old connection.
    pub fn can_only_be_refused(&self) -> bool {
        match &self.auth {
            Ok(auth) => identify::require_certificate(auth, &self.listener.opt_ins).is_err(),
            Err(_) => true,
        }
    }
}

/// The per-request context carried through the phases.
struct Ctx {
    record: RecordBuilder,
    exchange_id: String,
    client: Option<ClientId>,
    service: Option<ServiceId>,
    mode: AuditMode,
    /// A gRPC call: errors are answered as gRPC statuses.
    grpc: bool,
    /// When the request head arrived, from which a gRPC deadline counts.
    received: Instant,
    /// A header the log keeps that is over [`MAX_RECORDED_HEADER`]: its name and length, from
    /// [`RecordBuilder::set_client_headers`]; the call is refused once its caller is known.
    oversized: Option<(&'static str, usize)>,
    /// For a caller without a certificate on a connection that may also serve opted-in callers:
    /// its address, whose refusal budget a refusal before it is identified counts against
    /// (`refusals`). A connection that can only be refused was counted when it was accepted.
    budget: Option<std::net::IpAddr>,
}

/// What the checks established about an allowed call.
struct Admitted {
    route: Arc<Route>,
    path_and_query: String,
    /// The caller's gRPC deadline (`grpc-timeout`), counted from [`Ctx::received`].
    deadline: Option<Duration>,
    /// This gateway's service, a peer gateway, or the national SPLP.
    via: Via,
}

/// What a call names: a REST resource under a service, or a gRPC method.
enum Called<'a> {
    Rest(crate::target::Target<'a>),
    Grpc(grpc::GrpcTarget<'a>),
}

impl Called<'_> {
    fn service(&self) -> &ServiceId {
        match self {
            Self::Rest(t) => &t.service,
            Self::Grpc(t) => &t.service,
        }
    }
}

/// Marks an answer after which the connection is to close (HTTP/1.1 without keep-alive, an
/// HTTP/2 GOAWAY): the caller must connect again to call again.
#[derive(Debug, Clone, Copy)]
pub struct CloseConnection;

/// The body summary of a request on its way upstream, once its last byte has been forwarded.
pub(crate) type SummaryRx = crate::forward::RequestBodyWatch;

impl Gateway {
    /// A gateway serving `snapshot` and logging to `audit`.
    pub fn new(snapshot: Snapshot, audit: Arc<dyn AuditSink>) -> Self {
        Self::with_spans(snapshot, audit, None)
    }

    /// A gateway that also hands each exchange's record to `spans`, for OpenTelemetry.
    pub fn with_spans(
        snapshot: Snapshot,
        audit: Arc<dyn AuditSink>,
        spans: Option<Arc<crate::telemetry::SpanSink>>,
    ) -> Self {
        let metrics = Arc::new(ExchangeMetrics::new(&snapshot));
        let telemetry = spans.as_ref().map(|s| Arc::clone(s.stats()));
        Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            audit: Arc::new(Metered::new(Arc::clone(&audit), Arc::clone(&metrics)).with_spans(spans)),
            log: audit,
            generation: std::sync::atomic::AtomicU64::new(0),
            replaced: Arc::default(),
            metrics,
            maintenance: Arc::default(),
            reloader: std::sync::OnceLock::new(),
            telemetry,
            refusals: crate::refusals::RefusalBudget::default(),
            log_budget: crate::log_budget::LogBudget::default(),
            stopping: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The configuration in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Puts a new configuration in force; exchanges already running finish on the old one.
    /// Rate-limit buckets whose limit did not change carry over, so that a reload neither hands
    /// every client a fresh burst nor forgets one that is over its quota; so does what is known
    /// of each service's endpoints (health verdicts, ejections), so that it neither sends calls
    /// to an endpoint known to be down nor lets an ejected one back early.
    pub fn replace(&self, mut snapshot: Snapshot) {
        let current = self.snapshot.load();
        snapshot.limiter = current.limiter.reconfigure(&snapshot.config);
        for (id, route) in &snapshot.routes {
            if let Some(before) = current.routes.get(id) {
                route.upstreams.take_over(&before.upstreams);
            }
        }
        drop(current);
        self.metrics.add_routes(&snapshot);
        self.snapshot.store(Arc::new(snapshot));
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
        self.replaced.notify_waiters();
    }

    /// Notified of each new configuration put in force (waiters registered before it only).
    pub fn replacements(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.replaced)
    }

    /// How many times the configuration has been replaced since start.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The audit log.
    pub fn audit(&self) -> &Arc<dyn AuditSink> {
        &self.audit
    }

    /// The audit log without the exchange counters, for the records of operators' changes.
    pub fn operations_log(&self) -> &Arc<dyn AuditSink> {
        &self.log
    }

    /// The exchange counters, by route.
    pub fn metrics(&self) -> &ExchangeMetrics {
        &self.metrics
    }

    /// Maintenance mode, which the admin listener sets.
    pub fn maintenance(&self) -> &Arc<Maintenance> {
        &self.maintenance
    }

    /// Marks the gateway as stopping: its listeners take no new connections from now on.
    pub fn begin_stopping(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the gateway is stopping ([`Gateway::begin_stopping`]).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Lets the admin listener change the configuration file through `reloader`. Once only: a
    /// second call is ignored.
    pub fn attach_reloader(&self, reloader: &Arc<crate::reload::Reloader>) {
        let _ = self.reloader.set(Arc::downgrade(reloader));
    }

    /// How many lines of each kind of refusal the log takes a minute (`log_budget`).
    pub fn log_budget(&self) -> &crate::log_budget::LogBudget {
        &self.log_budget
    }

    /// The budget of refusals of unidentified callers answered and recorded per address.
    pub fn refusals(&self) -> &crate::refusals::RefusalBudget {
        &self.refusals
    }

    /// Whether one more refusal of an unidentified caller at `address` may be answered and
    /// recorded, under the `[limits] refusals_per_address` in force; counts it either way.
    pub fn may_record_refusal(&self, address: std::net::IpAddr) -> bool {
        self.refusals.allows(self.snapshot().limits.refusals_per_address, address)
    }

    /// The OpenTelemetry exporter's counters, when `[telemetry]` is set.
    pub fn telemetry(&self) -> Option<&Arc<crate::telemetry::ExportStats>> {
        self.telemetry.as_ref()
    }

    /// What changes the configuration file, when the gateway runs from one.
    pub fn reloader(&self) -> Option<Arc<crate::reload::Reloader>> {
        self.reloader.get().and_then(std::sync::Weak::upgrade)
    }

    /// Handles one request end to end. Never fails: every outcome is a response.
    pub async fn handle(&self, conn: &Connection, req: Request<Incoming>) -> Response<ResponseBody> {
        let received = Instant::now();
        let snap = self.snapshot.load_full();
        let mut record = RecordBuilder::received_now(&snap.gateway_id);
        let exchange_id = req
            .headers()
            .get(&xroad::ID)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Uuid::parse_str(v).ok())
            .unwrap_or_else(Uuid::new_v4);
        record.set_exchange_id(exchange_id);
        record.set_client_address(conn.remote.ip());
        record.set_request(req.method(), req.uri(), snap.limits.max_uri_length as usize);
        let oversized = record.set_client_headers(req.headers());
        if let Some(trace_id) = req.headers().get("traceparent").and_then(|v| trace_id(v.as_bytes())) {
            record.set_trace_id(trace_id);
        }
        let refused_for_good = conn.can_only_be_refused();
        let ctx = Ctx {
            record,
            exchange_id: exchange_id.hyphenated().to_string(),
            client: None,
            service: None,
            mode: snap.config.audit.mode,
            grpc: grpc::is_grpc(&req),
            received,
            budget: conn.counts_refusals_per_request().then(|| conn.remote.ip()),
            oversized,
        };
        let mut resp = self.answer(&snap, conn, req, ctx).await;
        if refused_for_good {
            resp.extensions_mut().insert(CloseConnection);
        }
        resp
    }

    /// The answer to one request: from the gateway's own services, or forwarded, or refused.
    async fn answer(
        &self,
        snap: &Arc<Snapshot>,
        conn: &Connection,
        req: Request<Incoming>,
        mut ctx: Ctx,
    ) -> Response<ResponseBody> {
        // The gateway's own services (health, reflection, the directory) are answered here,
        // except the directory of a peer region's provider, which that region's gateway answers.
        let mut directory = None;
        if let Some(own) = local::recognise(&req, ctx.grpc) {
            match peer::route_directory(snap, own, req.method(), req.uri().path()) {
                Some(routed) => directory = Some(routed),
                None => return self.own(own, snap, conn, req, ctx).await,
            }
        }
        match self.admit(snap, conn, &req, &mut ctx, directory) {
            Ok(admitted) => self.forward(admitted, ctx, req).await,
            Err(err) => {
                set_aside(req);
                self.refuse(ctx, &err).await
            }
        }
    }

    /// The checks before anything is sent upstream. `directory`: the route of a metadata call
    /// about a peer region's provider (`peer::route_directory`), which, as the gateway's own
    /// directory, is open to every identified caller: the peer answers it under its own grants.
    fn admit(
        &self,
        snap: &Snapshot,
        conn: &Connection,
        req: &Request<Incoming>,
        ctx: &mut Ctx,
        directory: Option<(Arc<Route>, Via)>,
    ) -> Result<Admitted, GatewayError> {
        // parse target, recorded even when the call is refused, so that a refused exchange's
        // record says who tried what.
        let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let max_uri = snap.limits.max_uri_length as usize;
        let target = if ctx.grpc {
            grpc::target(path_and_query, req.headers(), &snap.grpc_services, max_uri).map(Called::Grpc)
        } else {
            crate::target::parse(path_and_query, max_uri).map(Called::Rest)
        };
        if let Ok(t) = &target {
            if ctx.grpc {
                ctx.record.set_service(t.service(), Protocol::Grpc);
            } else {
                ctx.record.set_service_id(t.service());
            }
            ctx.service = Some(t.service().clone());
        }
        let (caller, from_peer) = identify(snap, conn, req, ctx)?;
        if req.method() == Method::CONNECT {
            return Err(GatewayError::BadRequest(format!(
                "CONNECT {} is not taken: the gateway is no forward proxy; call a service at /r1/{{serviceId}}/… with \
                 GET, POST or another method the service takes",
                crate::target::clip(&req.uri().to_string())
            )));
        }
        check_header_limits(req, snap)?;
        check_host(req)?;

        // parse target
        let target = target.map_err(|e| match e {
            // A gRPC client that fell back to HTTP/1.1 (no ALPN, or a proxy in between).
            GatewayError::BadRequest(_) if !ctx.grpc && grpc::has_grpc_content_type(req.headers()) => {
                GatewayError::BadRequest(
                    "gRPC needs HTTP/2; this call came over HTTP/1.1 (check that the client offers h2 in ALPN)".into(),
                )
            }
            // A browser's gRPC-Web, which needs a translating proxy in front.
            GatewayError::BadRequest(_) if grpc::is_grpc_web(req.headers()) => GatewayError::BadRequest(
                "gRPC-Web is not taken here: the gateway speaks gRPC over HTTP/2 and X-Road REST; put a gRPC-Web \
                 proxy (such as Envoy's grpc_web filter) in front of the application, or call the service in gRPC"
                    .into(),
            ),
            e => e,
        })?;
        let deadline = if ctx.grpc {
            if req.method() != Method::POST {
                return Err(GatewayError::BadRequest(format!("a gRPC call is a POST, not a {}", req.method())));
            }
            grpc::timeout(req.headers())?
        } else {
            None
        };

        // route: a service of this gateway, else the peer or national SPLP its prefix names. A
        // peer's call is for this gateway's services only: gateways do not relay for each other.
        // `open`: a peer's directory, which the peer alone checks (and only such a route is).
        let ((route, via), open) = match (snap.routes.get(target.service()), directory) {
            // Metadata service codes are reserved: no service of this gateway has one.
            (Some(route), _) => ((Arc::clone(route), Via::Local), false),
            (None, _) if from_peer => {
                return Err(GatewayError::UnknownService(format!(
                    "gateway {} has no service {}, and does not relay a peer's calls onward",
                    snap.gateway_id,
                    target.service()
                )));
            }
            (None, Some(routed)) => {
                // Named, in its answer's X-Road-Service whatever it is, as the peer names it.
                ctx.service = Some(routed.0.id.clone());
                (routed, true)
            }
            (None, None) => (peer::route_remote(snap, target.service(), ctx.grpc)?, false),
        };
        if let Some(peer) = via.peer() {
            ctx.record.set_peer(peer);
        }
        ctx.record.set_service(&route.id, route.protocol);
        ctx.mode = route.audit_mode;
        let (method, path) = match (&target, route.protocol) {
            (Called::Rest(t), Protocol::Rest) => (req.method().as_str(), t.path),
            (Called::Grpc(t), Protocol::Grpc) => ("POST", t.path),
            (Called::Rest(_), Protocol::Grpc) => {
                return Err(GatewayError::BadRequest(format!(
                    "{} is a gRPC service; call its methods over HTTP/2 with content-type application/grpc at \
                     /package.Service/Method, naming it in the metadata x-road-service",
                    route.id
                )));
            }
            (Called::Grpc(_), Protocol::Rest) => {
                return Err(GatewayError::BadRequest(format!(
                    "{} is a REST service, not a gRPC one; call it at /r1/{}/…",
                    route.id,
                    route.id.to_url_path()
                )));
            }
        };

        // authorize
        let purpose = match req.headers().get(&xroad::PURPOSE).map(|v| v.to_str()) {
            None => None,
            Some(Ok(purpose)) => Some(purpose),
            Some(Err(_)) => {
                return Err(GatewayError::BadRequest(
                    "X-SPLP-Purpose holds characters other than visible ASCII; it names a purpose code of the \
                     grant, such as pelayanan-kesehatan"
                        .into(),
                ));
            }
        };
        let access = AccessRequest { client: &caller.client, service: &route.id, method, path, purpose };
        if !open {
            snap.policy.check(&access, time::OffsetDateTime::now_utc()).map_err(|d| {
                GatewayError::AccessDenied(denial_message(&d, snap, &route.id, &via, from_peer, ctx.grpc))
            })?;
        }

        // rate-limit
        snap.limiter.check(&caller.client, &route.id).map_err(|limited| {
            // Relayed by the caller's own gateway, whose quotas it may think of first.
            let message = if from_peer {
                format!("{limited} (refused by {}, the service's own gateway, by its own quota)", snap.gateway_id)
            } else {
                limited.to_string()
            };
            GatewayError::RateLimited { message, retry_after_secs: limited.retry_after_secs() }
        })?;

        // A declared length over the limit is refused before a byte is forwarded.
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > route.max_request_body) {
            return Err(GatewayError::BodyTooLarge { limit: route.max_request_body, service: route.id.to_string() });
        }

        self.audit_available()?;
        let path_and_query = match &target {
            // A peer gateway is sent the request target as it was received.
            Called::Rest(_) if matches!(via, Via::Peer(_)) => path_and_query.to_owned(),
            Called::Rest(t) => match t.query {
                Some(q) => format!("{}?{q}", t.path),
                None => t.path.to_owned(),
            },
            Called::Grpc(t) => t.path.to_owned(),
        };
        Ok(Admitted { route, path_and_query, deadline, via })
    }

    /// Fail closed: while the log cannot be written, nothing is forwarded or answered.
    fn audit_available(&self) -> Result<(), GatewayError> {
        let health = self.audit.health();
        if health.is_available() {
            return Ok(());
        }
        let when = match health {
            crate::audit::AuditHealth::Closed => "the gateway is stopping",
            _ => "exchanges resume once it can be written again",
        };
        Err(GatewayError::AuditUnavailable(format!("{health}; {when}")))
    }

    /// A call to the gateway's own services (`local`): identified, checked and logged as any
    /// exchange, then answered by the gateway itself instead of an upstream.
    async fn own(
        &self,
        own: local::Own,
        snap: &Arc<Snapshot>,
        conn: &Connection,
        req: Request<Incoming>,
        mut ctx: Ctx,
    ) -> Response<ResponseBody> {
        if let Some(service) = own.service_id(&snap.gateway_id) {
            ctx.record.set_service(&service, own.protocol());
            ctx.service = Some(service);
        }
        let checked = identify(snap, conn, &req, &mut ctx).and_then(|(caller, _)| {
            let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
            let max_uri = snap.limits.max_uri_length as usize;
            if uri_len > max_uri {
                return Err(GatewayError::UriTooLong { len: uri_len, max: max_uri });
            }
            check_header_limits(&req, snap)?;
            self.audit_available()?;
            Ok(caller)
        });
        let caller = match checked {
            Ok(caller) => caller,
            Err(err) => {
                set_aside(req);
                return self.refuse(ctx, &err).await;
            }
        };
        let call = local::Call {
            snapshot: Arc::clone(snap),
            client: caller.client,
            audit: Arc::clone(&self.audit),
            mode: ctx.mode,
            exchange_id: ctx.exchange_id.clone(),
            service: ctx.service.clone(),
            maintenance: Arc::clone(&self.maintenance),
        };
        match local::serve(own, call, ctx.record, req).await {
            Ok(resp) => resp,
            Err((record, err)) => {
                ctx.record = record;
                self.refuse(ctx, &err).await
            }
        }
    }

    async fn forward(&self, admitted: Admitted, mut ctx: Ctx, req: Request<Incoming>) -> Response<ResponseBody> {
        let Admitted { route, path_and_query, deadline, via } = admitted;
        if ctx.mode == AuditMode::Strict {
            // Strict: the request is on disk before anything reaches the service, so that a
            // crash in flight still leaves proof that the call was made.
            if let Err(audit_err) = self.audit.append(ctx.record.request_record(), AuditMode::Strict).await {
                let err = GatewayError::AuditUnavailable(format!(
                    "the request could not be logged before forwarding, as the service's strict audit mode \
                     requires: {audit_err}"
                ));
                return self.refuse(ctx, &err).await;
            }
        }
        let (parts, body) = req.into_parts();
        let body = forward::look_ahead(&parts.method, body).await;
        let received_target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let hasher = RequestHasher::new(parts.method.as_str(), received_target, &parts.headers);
        let mut headers = parts.headers;
        forward::strip_hop_by_hop(&mut headers);
        forward::keep_streamed_body(&parts.method, &body, &mut headers);
        headers.remove(header::HOST);
        headers.remove(&xroad::REQUEST_HASH);
        let client = ctx.client.as_ref().map(ToString::to_string).unwrap_or_default();
        forward::set(&mut headers, xroad::CLIENT, &client);
        forward::set(&mut headers, xroad::SERVICE, &route.id.to_string());
        forward::set(&mut headers, xroad::ID, &ctx.exchange_id);

        // The wait for the answer to start: the service's request_timeout, or less when the
        // caller's gRPC deadline is nearer. The service learns of the deadline too, less the time
        // spent here.
        let mut wait = route.request_timeout;
        let mut whose = Deadline::Service;
        if ctx.grpc {
            // gRPC's way of telling a proxy that does not understand trailers from one that does.
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
            if let Some(deadline) = deadline {
                let left = deadline.saturating_sub(ctx.received.elapsed());
                if left.is_zero() {
                    let err = callers_deadline(&route, Some(deadline), "before it could be forwarded");
                    return self.refuse(ctx, &err).await;
                }
                headers.insert(grpc::GRPC_TIMEOUT, grpc::encode_timeout(left));
                if left < wait {
                    (wait, whose) = (left, Deadline::Caller);
                }
            }
        }

        let (metered, summary) = MeteredRequestBody::new(body, route.max_request_body, hasher, route.stored_body);
        let outgoing = Outgoing {
            method: parts.method,
            path_and_query: path_and_query.clone(),
            headers,
            body: forward::boxed(metered),
        };

        ctx.record.mark_forwarded();
        // From here until the answer starts, a client that goes away (a dropped connection, an
        // HTTP/2 RST_STREAM) drops this future, and with it the upstream request, which resets
        // the upstream stream; the guard logs the exchange as abandoned. The upstream side picks
        // the endpoint and retries on another when the request allows it (`adapters::upstreams`).
        let grpc = ctx.grpc;
        let mut pending = Pending { ctx: Some(ctx), audit: &*self.audit };
        let sent = match &via {
            Via::Local => route.upstreams.dispatch(outgoing, wait, whose).await.map(Answered::from).map_err(|failed| {
                let tls = failed.uri.as_ref().is_some_and(|u| u.scheme_str() == Some("https"));
                NotAnswered {
                    error: dispatch_error(&route, failed.error, tls, deadline),
                    uri: failed.uri,
                    attempts: failed.attempts,
                    note: failed.note,
                }
            }),
            hop => send_via(hop, &route, outgoing, &path_and_query, wait).await.map_err(|mut failed| {
                // No answer yet from the peer when the caller's own deadline passed.
                if whose == Deadline::Caller && matches!(failed.error, GatewayError::ServiceTimeout(_)) {
                    failed.error = callers_deadline(&route, deadline, "before the service answered");
                }
                failed
            }),
        };
        let Some(mut ctx) = pending.ctx.take() else {
            let lost = GatewayError::Internal("the exchange lost its context".into());
            return answer(grpc, "", None, None, &lost);
        };
        let mut summary = Some(summary);
        let (resp, lease) = match sent {
            Ok(answered) => {
                ctx.record.mark_upstream_answered();
                crate::upstream::record(&mut ctx.record, answered.uri.as_ref(), &answered.attempts, &answered.note);
                (answered.response, answered.lease)
            }
            Err(failed) => {
                crate::upstream::record(&mut ctx.record, failed.uri.as_ref(), &failed.attempts, &failed.note);
                // A body over the limit shows up as a broken upstream exchange; say what it was.
                let over = match summary.take() {
                    Some(mut rx) => match (&mut rx).await {
                        Ok(Ok(mut s)) => {
                            s.record_into(&mut ctx.record);
                            false
                        }
                        Ok(Err(why)) => {
                            ctx.record.set_request_body_unfinished(rx.passed());
                            crate::forward::over_limit(&why)
                        }
                        Err(_) => {
                            ctx.record.set_request_body_unfinished(rx.passed());
                            false
                        }
                    },
                    None => false,
                };
                let gw_err = if over {
                    GatewayError::BodyTooLarge { limit: route.max_request_body, service: route.id.to_string() }
                } else {
                    failed.error
                };
                return self.refuse(ctx, &gw_err).await;
            }
        };
        // The request hash is final once the upstream has read the whole body, which it has for
        // almost every REST service by the time it answers; otherwise the header is left out
        // rather than the response held back, and the record takes the hash when the body ends.
        // A gRPC answer is never held back: its request may be a stream still flowing.
        let mut failed = None;
        let ready = match summary.as_mut() {
            Some(rx) if ctx.grpc => rx.try_recv().ok(),
            Some(rx) => tokio::time::timeout(Duration::from_millis(100), rx).await.ok().and_then(Result::ok),
            None => None,
        };
        let request_hash = match ready {
            Some(Ok(mut s)) => {
                summary = None;
                s.record_into(&mut ctx.record);
                Some(s.request_hash)
            }
            // The watch is kept, so that the record says how much of the body passed; why the
            // body failed goes to the answer's body, which tells a cut-off stream by it.
            Some(Err(why)) => {
                failed = Some(why);
                None
            }
            None => None,
        };

        let (mut parts, body) = resp.into_parts();
        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            // The caller's `Upgrade` is stripped (hop by hop), so the service was never asked to
            // switch: passed on, a 101 would leave the caller's connection in neither protocol,
            // and HTTP/2 has no 101 at all.
            let id = &route.id;
            let err = GatewayError::ServiceFailed(Failure::hidden(
                format!("{id}: the service answered 101 Switching Protocols, which the gateway never asked for"),
                format!("{id}: the service answered 101 Switching Protocols to a request without Upgrade"),
            ));
            return self.refuse(ctx, &err).await;
        }
        // The client's connection speaks its own version: a service answering in HTTP/1.0 must
        // not make the answer to an HTTP/1.1 client a 1.0 one, which closes its connection.
        parts.version = http::Version::default();
        ctx.record.set_status(parts.status);
        if let Some(refused) = peer::peer_error(&via, &parts.headers) {
            if refused == "Client.Unauthenticated" {
                // The caller was identified here; the peer, which takes its identity from this
                // gateway, can only have refused this gateway's own connection (a certificate
                // it no longer trusts): not the caller's doing, nor to be told as such.
                let peer = via.peer().map_or_else(String::new, ToString::to_string);
                let err = GatewayError::ServiceFailed(Failure::hidden(
                    format!("{}: peer gateway {peer} refused this gateway's certificate", route.id),
                    format!(
                        "{}: peer gateway {peer} answered {} Client.Unauthenticated: it does not accept this \
                         gateway's certificate; its operator finds why in its log under this exchange id (check that \
                         its [[trust_anchor]] for this region holds our CA and current CRL)",
                        route.id,
                        parts.status.as_u16()
                    ),
                ));
                return self.refuse(ctx, &err).await;
            }
            // The peer's own error (a refusal, or its service failing): its log has why; this one
            // says whose it is.
            tracing::info!(
                exchange = %ctx.exchange_id, peer = %via.peer().map_or_else(String::new, ToString::to_string), status = parts.status.as_u16(),
                "the peer gateway answered with its own error {refused}; its operator finds the call in its audit log under this \
                 exchange id"
            );
            ctx.record.set_error_type(&refused);
        }
        if ctx.grpc
            && let Some(code) = grpc::status_in(&parts.headers)
        {
            // A trailers-only answer: the status is in the headers.
            ctx.record.set_grpc_status(code);
        }
        if parts.headers.contains_key(header::TRANSFER_ENCODING) {
            // Framed both ways, the answer was read by its chunks: its length, which says
            // otherwise, must not go on (RFC 9112 §6.3), or the caller waits for bytes never sent.
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        forward::strip_hop_by_hop(&mut parts.headers);
        forward::strip_service_software(&mut parts.headers);
        // A service's own X-Road-Error would pass for a refusal by the gateway, which callers tell
        // by it; a peer gateway's or the national SPLP's is their refusal, passed on as given.
        if matches!(via, Via::Local) {
            parts.headers.remove(&xroad::ERROR);
        }
        forward::set(&mut parts.headers, xroad::CLIENT, &client);
        forward::set(&mut parts.headers, xroad::SERVICE, &route.id.to_string());
        forward::set(&mut parts.headers, xroad::ID, &ctx.exchange_id);
        match &request_hash {
            Some((b64, _)) => forward::set(&mut parts.headers, xroad::REQUEST_HASH, b64),
            None => {
                parts.headers.remove(&xroad::REQUEST_HASH);
            }
        }
        if body.is_end_stream() {
            // No body to stream (204, HEAD, Content-Length: 0, a gRPC trailers-only answer):
            // hyper would never poll one, so the record is completed here and the answer waits
            // for it.
            ctx.record.set_response_body(BodyHasher::new().finish());
            if let Some(watch) = summary.as_mut() {
                match watch.try_recv() {
                    Ok(Ok(mut s)) => s.record_into(&mut ctx.record),
                    // Not ended, or broken off: as much as passed (a 204 before the body was read).
                    _ => ctx.record.set_request_body_unfinished(watch.passed()),
                }
            }
            return match self.audit.append(ctx.record.finish(), ctx.mode).await {
                Ok(()) => {
                    Response::from_parts(parts, Full::new(Bytes::new()).map_err(|never| match never {}).boxed_unsync())
                }
                Err(audit_err) => {
                    let unavailable =
                        GatewayError::AuditUnavailable(format!("the exchange could not be logged: {audit_err}"));
                    answer(ctx.grpc, &ctx.exchange_id, ctx.client.as_ref(), ctx.service.as_ref(), &unavailable)
                }
            };
        }
        let mut body = AuditedBody::new(body, ctx.record, Arc::clone(&self.audit), ctx.mode, ctx.grpc, route, summary);
        if matches!(via, Via::Local) {
            body = body.for_local_service();
        }
        body.lease = lease;
        if let Some(why) = failed {
            body.request_failed(why);
        }
        match respond::settle(body).await {
            Settled::Body(body) => Response::from_parts(parts, UnsyncBoxBody::new(body)),
            Settled::NotLogged(audit_err) => {
                let unavailable =
                    GatewayError::AuditUnavailable(format!("the exchange could not be logged: {audit_err}"));
                answer(ctx.grpc, &ctx.exchange_id, ctx.client.as_ref(), ctx.service.as_ref(), &unavailable)
            }
            Settled::BrokeOff(err) => {
                let named = err.told_by(&self.snapshot().gateway_id);
                let err = named.as_ref().unwrap_or(&err);
                answer(ctx.grpc, &ctx.exchange_id, ctx.client.as_ref(), ctx.service.as_ref(), err)
            }
        }
    }

    /// Answers with the gateway's own error, once its record is logged. If the log cannot take
    /// the record, the answer becomes `Server.AuditUnavailable`.
    async fn refuse(&self, mut ctx: Ctx, err: &GatewayError) -> Response<ResponseBody> {
        // A caller without a certificate, refused before it was identified, past its address's
        // budget: a bare refusal (`edge::closing_answer`), and no record. The connection stays open: others may be calling
        // on it (a proxy's HTTP/2 connection), and further refusals on it cost no record either.
        if let Some(address) = ctx.budget
            && ctx.client.is_none()
            && !self.may_record_refusal(address)
        {
            return crate::edge::closing_answer(ctx.grpc);
        }
        let snap = self.snapshot();
        let named = err.told_by(&snap.gateway_id);
        let err = named.as_ref().unwrap_or(err);
        // Of each kind (its type, and the service when it is one of ours), a few a minute: an
        // outage refuses every exchange alike, and each is in the audit log under its id.
        let service = ctx.service.as_ref().filter(|s| snap.routes.contains_key(*s));
        let kind = format!("{} {}", err.xroad_type(), service.map(ToString::to_string).unwrap_or_default());
        drop(snap);
        let (id, kind_of, grpc) = (&ctx.exchange_id, err.xroad_type(), ctx.grpc);
        match self.log_budget.take(&kind, std::time::Instant::now()) {
            // The caller was told to ask the operator, so this must reach the log at the levels
            // an operator runs with (warn and above, as the demo does).
            Some(left_out) if named.is_some() => {
                let note = crate::log_budget::left_out_note(left_out);
                tracing::warn!(exchange = %id, error = kind_of, grpc, "{}{note}", err.for_log());
            }
            Some(left_out) => {
                let note = crate::log_budget::left_out_note(left_out);
                tracing::info!(exchange = %id, error = kind_of, grpc, "{}{note}", err.for_log());
            }
            None => tracing::debug!(exchange = %id, error = kind_of, grpc, "{}", err.for_log()),
        }
        if ctx.grpc {
            ctx.record.set_status(StatusCode::OK);
            ctx.record.set_grpc_status(err.grpc_code().as_u32());
        } else {
            ctx.record.set_status(err.status());
        }
        ctx.record.set_error_type(err.xroad_type());
        let ticket = self.audit.append(ctx.record.finish(), ctx.mode);
        let respond =
            |e: &GatewayError| answer(ctx.grpc, &ctx.exchange_id, ctx.client.as_ref(), ctx.service.as_ref(), e);
        match ticket.await {
            Ok(()) => respond(err),
            Err(audit_err) => {
                respond(&GatewayError::AuditUnavailable(format!("the exchange could not be logged: {audit_err}")))
            }
        }
    }
}

/// The gateway's error, answered as the call's protocol has it: an X-Road error, or for a gRPC
/// call a gRPC status.
pub(crate) fn answer(
    grpc: bool,
    exchange_id: &str,
    client: Option<&ClientId>,
    service: Option<&ServiceId>,
    err: &GatewayError,
) -> Response<ResponseBody> {
    if grpc {
        grpc::error_response(err, exchange_id, client, service)
    } else {
        error_response(err, exchange_id, client, service)
    }
}

/// An exchange waiting for the upstream's answer to start. Dropped with its context still inside,
/// the client went away first: the exchange is logged as abandoned.
struct Pending<'a> {
    ctx: Option<Ctx>,
    audit: &'a dyn AuditSink,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(mut ctx) = self.ctx.take() {
            tracing::debug!(exchange = %ctx.exchange_id, "the client went away before the service answered");
            ctx.record.set_error_type(ABANDONED);
            if ctx.grpc {
                ctx.record.set_grpc_status(GrpcCode::Cancelled.as_u32());
            }
            drop(self.audit.append(ctx.record.finish(), ctx.mode));
        }
    }
}

/// The error type recorded for an exchange whose client went away before its answer was complete.
pub(crate) const ABANDONED: &str = "Client.ResponseAbandoned";

/// What becomes of a refused request's body. A client that waits for `100 Continue` has not sent
/// it: reading it would make hyper send one, and the client would upload what is refused anyway;
/// dropped unread, the refusal goes out alone and the connection is closed. Any other is read
/// and dropped ([`discard`]).
fn set_aside(req: Request<Incoming>) {
    let expects_continue =
        req.headers().get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let body = req.into_body();
    if !body.is_end_stream() && !expects_continue {
        tokio::spawn(discard(body));
    }
}

/// Most of a refused request's body read and dropped, so that the client, still sending it, gets
/// to read the refusal: closing a socket with unread data resets the connection, and the client
/// may then lose the answer. Bounded in bytes and time, so a refused client cannot hold it open.
async fn discard(mut body: Incoming) {
    const MAX_BYTES: u64 = 1 << 20;
    const MAX_TIME: std::time::Duration = std::time::Duration::from_secs(2);
    let _ = tokio::time::timeout(MAX_TIME, async {
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen > MAX_BYTES {
                break;
            }
        }
    })
    .await;
}

/// The trace id of a W3C `traceparent` header (`00-<32 hex trace id>-<16 hex span id>-<2 hex
/// flags>`), which passes through to the upstream untouched and is kept in the audit record so
/// that an exchange can be found from a trace.
fn trace_id(value: &[u8]) -> Option<[u8; 16]> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let mut id = [0u8; 16];
    hex::decode_to_slice(trace, &mut id).ok()?;
    // An all-zero trace id is invalid by the specification.
    (id != [0u8; 16]).then_some(id)
}

/// What a refused caller is told: the denial, and for a call between regions, which gateway
/// refused it and whose grant is missing, since either side's may be.
fn denial_message(
    d: &crate::authorize::Denial,
    snap: &Snapshot,
    service: &ServiceId,
    via: &Via,
    from_peer: bool,
    grpc: bool,
) -> String {
    use crate::authorize::Denial;
    let here = &snap.gateway_id;
    let (to, listing) = match via {
        Via::Local if from_peer => {
            return format!("{d} (refused by {here}, the service's own gateway, by its own grants)");
        }
        Via::Local => return d.to_string(),
        Via::Peer(link) => (
            format!("gateway {}", link.id),
            format!(
                "; GET /r1/{}/listMethods through this gateway lists its services",
                service.subsystem().to_url_path()
            ),
        ),
        Via::National(_) => ("the national SPLP".to_owned(), String::new()),
    };
    // The remedy, by what is missing: a grant here is this region's operator's to give; a
    // purpose the caller sends, and a grant's dates it waits for, as the denial says.
    let (what, remedy, unknown) = match d {
        // Of another region's service this gateway cannot tell whether it exists at all: a
        // mistyped identifier is refused here for want of a grant, so say that too.
        Denial::NoGrant { call, .. } => (
            format!("{} has no grant here for calling {} out of the region", call.client, call.service),
            "; ask this region's gateway operator for one",
            format!(
                " {service} is served by {to}, which alone knows whether it exists, so check the identifier too{listing}."
            ),
        ),
        // A gRPC call against a grant of REST endpoints: most likely a REST service called over
        // gRPC, which this gateway cannot tell of another region's service.
        Denial::EndpointNotCovered { allowed, .. } if grpc && allowed.iter().any(|e| names_rest_method(e)) => (
            d.to_string(),
            "; ask this region's gateway operator to widen it",
            format!(
                " The grant opens REST endpoints: if {service} is a REST service, call it at /r1/{}/… over HTTP, not \
                 over gRPC.",
                service.to_url_path()
            ),
        ),
        Denial::EndpointNotCovered { .. } => {
            (d.to_string(), "; ask this region's gateway operator to widen it", String::new())
        }
        other => (other.to_string(), "", String::new()),
    };
    format!(
        "{what}. Refused by {here} before the call was sent to {to}, by its grants for calling out of the region: a \
         call out needs a grant at this gateway as well as at {to}{remedy}.{unknown}"
    )
}

/// Whether a grant's endpoint, as a denial lists it, names an HTTP method only REST calls use
/// (`GET /nik/*`): gRPC calls are all POSTs, and a gRPC grant's endpoint names none.
fn names_rest_method(endpoint: &str) -> bool {
    endpoint
        .split_once(' ')
        .is_some_and(|(method, _)| method != "POST" && method.bytes().all(|b| b.is_ascii_uppercase()))
}

/// identify: who the call is for, and whether a peer gateway asserts it. What the certificate
/// proves is recorded even when the call is refused, so that a refused exchange's record says who
/// tried.
fn identify(
    snap: &Snapshot,
    conn: &Connection,
    req: &Request<Incoming>,
    ctx: &mut Ctx,
) -> Result<(identify::Caller, bool), GatewayError> {
    if let Some(proven) = crate::edge::record_connection(&mut ctx.record, conn.auth.as_ref().ok()) {
        ctx.client = Some(proven);
    }
    // A certificate that identifies no one here: the record still says which one tried.
    if let (Err(_), Some(sha)) = (&conn.auth, conn.cert_sha256) {
        ctx.record.set_client_cert_sha256(sha);
        ctx.record.set_connection_type(crate::config::ConnectionType::Mtls);
    }
    // Who is calling is settled before what the call says: a caller with no identity hears that
    // first.
    let auth = conn.auth.as_ref().map_err(identify_error)?;
    identify::require_certificate(auth, &conn.listener.opt_ins).map_err(|e| identify_error(&e))?;
    check_single_valued(req.headers(), ctx.oversized)?;
    let claimed = match req.headers().get(&xroad::CLIENT) {
        Some(v) => Some(v.to_str().map_err(|_| {
            GatewayError::BadRequest(
                "X-Road-Client holds characters other than visible ASCII; identifiers are ASCII, e.g. \
                 ID/PEMDA/1602/DINKES"
                    .into(),
            )
        })?),
        None => None,
    };
    // A peer gateway's call is made for the client it asserts, within the peer's authority.
    let from_peer = peer::inbound(snap, auth);
    let via_peer = from_peer.is_some();
    let caller = match from_peer {
        Some((link, cert)) => {
            ctx.record.set_peer(&link.id);
            link.accept(cert, claimed)?
        }
        None => identify::identify_client(auth, &conn.listener.opt_ins, claimed).map_err(|e| identify_error(&e))?,
    };
    ctx.record.set_connection_type(caller.connection);
    if let Some(fp) = caller.cert_sha256 {
        ctx.record.set_client_cert_sha256(fp);
    }
    ctx.record.set_client(&caller.client);
    ctx.client = Some(caller.client.clone());
    Ok((caller, via_peer))
}

fn identify_error(e: &identify::IdentifyError) -> GatewayError {
    let message = e.to_string();
    match e.xroad_type() {
        "Client.InvalidClientIdentity" => GatewayError::InvalidClientIdentity(message),
        "Client.Unauthenticated" => GatewayError::Unauthenticated(message),
        "Client.AccessDenied" => GatewayError::AccessDenied(message),
        _ => GatewayError::BadRequest(message),
    }
}

/// An answer that started, from a local service's endpoints or over a peer or national hop.
struct Answered {
    response: Response<Incoming>,
    /// The endpoint's request slot (local services only), held until the answer has streamed.
    lease: Option<Lease>,
    uri: Option<Uri>,
    attempts: Vec<Attempt>,
    note: String,
}

impl From<Forwarded> for Answered {
    fn from(f: Forwarded) -> Self {
        Self { response: f.response, lease: Some(f.lease), uri: Some(f.uri), attempts: f.attempts, note: f.note }
    }
}

/// No answer, and why, as the gateway's error.
struct NotAnswered {
    error: GatewayError,
    uri: Option<Uri>,
    attempts: Vec<Attempt>,
    note: String,
}

/// Sends a call over a peer or national hop, which choose their own endpoint.
async fn send_via(
    via: &Via,
    route: &Route,
    outgoing: Outgoing,
    target: &str,
    wait: Duration,
) -> Result<Answered, NotAnswered> {
    let not_answered = |error, uri| NotAnswered { error, uri, attempts: Vec::new(), note: String::new() };
    let built = route.upstreams.urls().next().map(|base| endpoint_uri(base, target));
    let uri = match built {
        Some(Ok(uri)) => uri,
        Some(Err(e)) => {
            let failure = Failure::hidden(
                format!("{}: the gateway could not build the URL to send to", route.id),
                format!("{}: cannot build the upstream URL: {e}", route.id),
            );
            return Err(not_answered(GatewayError::Internal(failure), None));
        }
        None => {
            return Err(not_answered(
                GatewayError::Internal(format!("{}: no endpoint to send to", route.id).into()),
                None,
            ));
        }
    };
    let mut req = Request::new(outgoing.body);
    *req.method_mut() = outgoing.method;
    *req.uri_mut() = uri.clone();
    *req.headers_mut() = outgoing.headers;
    match via.send(route, req, target, wait).await {
        Ok(Sent { response, endpoint, attempts }) => {
            Ok(Answered { response, lease: None, uri: Some(endpoint.unwrap_or(uri)), attempts, note: String::new() })
        }
        Err(NotSent { error, endpoint, attempts }) => {
            let error = match error {
                SendError::Upstream(e) => upstream_error(&route.id, &e, uri.scheme_str() == Some("https")),
                SendError::Gateway(e) => e,
            };
            Err(NotAnswered { error, uri: Some(endpoint.unwrap_or(uri)), attempts, note: String::new() })
        }
    }
}

/// Why no answer came from the service, as the gateway's error (`error` has the one mapping).
/// The caller is told what failed; the endpoints' addresses and what in the configuration to
/// check are for the operator ([`Failure`]).
fn dispatch_error(route: &Route, err: DispatchError, tls: bool, deadline: Option<Duration>) -> GatewayError {
    let service = &route.id;
    match err {
        DispatchError::Upstream(e) => upstream_error(service, &e, tls),
        DispatchError::Unavailable { why, retry_after } => GatewayError::ServiceUnavailable(
            Failure::hidden(
                format!("{service}: no endpoint of the service can take calls now; try again later"),
                format!("{service}: {why}"),
            ),
            retry_after.map(crate::error::retry_after_secs),
        ),
        DispatchError::QueueTimeout(why) => GatewayError::ServiceTimeout(Failure::hidden(
            format!("{service}: the service stayed busy until the call's deadline; try again later"),
            format!("{service}: {why}"),
        )),
        DispatchError::BodyTimeout(after) => caller_too_slow(service, after),
        DispatchError::Body(e) => GatewayError::BadRequest(format!("reading the request body failed: {e}")),
        // Told as a body over the limit where it was one (see `forward`).
        DispatchError::CallerBody => {
            GatewayError::BadRequest(format!("{service}: the request body broke off before its end"))
        }
        DispatchError::CallerDeadline(_) => callers_deadline(route, deadline, "before the service answered"),
        DispatchError::BadUri(why) => GatewayError::Internal(Failure::hidden(
            format!("{service}: the gateway could not build the service's URL"),
            format!("{service}: {why}"),
        )),
    }
}

/// The caller's own deadline (`grpc-timeout`, `deadline`) passed `when`: its limit, shorter than
/// the service's, and no failure of the service's.
fn callers_deadline(route: &Route, deadline: Option<Duration>, when: &str) -> GatewayError {
    let given = deadline.map_or_else(String::new, |d| format!(" of {d:?}"));
    GatewayError::DeadlineExceeded(format!(
        "{}: the call's own deadline{given} (grpc-timeout) passed {when}; the gateway waits up to {:?} for this \
         service: give the call a longer deadline if it needs one",
        route.id, route.request_timeout
    ))
}

/// The caller did not send its request body within `after`, the wait for the service's answer.
pub(crate) fn caller_too_slow(service: &ServiceId, after: std::time::Duration) -> GatewayError {
    GatewayError::RequestTimeout(format!(
        "{service}: the request body did not arrive from the caller within {after:?}, the time the service's answer \
         is waited for; send the body at once, or ask the operator for a longer request_timeout"
    ))
}

fn upstream_error(service: &ServiceId, err: &UpstreamError, tls: bool) -> GatewayError {
    let operator = format!("{service}: {err}");
    match err {
        UpstreamError::Timeout { after, .. } => GatewayError::ServiceTimeout(Failure::hidden(
            format!("{service}: the service did not answer within {after:?}"),
            operator,
        )),
        UpstreamError::Saturated { .. } => GatewayError::ServiceUnavailable(
            Failure::hidden(
                format!("{service}: the service has as many calls open as the gateway allows it; try again later"),
                operator,
            ),
            None,
        ),
        UpstreamError::Connect { .. } | UpstreamError::Broken { .. } => {
            let caller = if matches!(err, UpstreamError::Connect { .. }) {
                format!("{service}: the gateway could not connect to the service")
            } else {
                format!("{service}: the exchange with the service broke off")
            };
            let hint = crate::upstream::connect_hint(err, &crate::upstream::Side::Service { tls });
            let operator = match hint {
                Some(hint) => format!("{operator} ({hint})"),
                None => operator,
            };
            GatewayError::ServiceFailed(Failure::hidden(caller, operator))
        }
    }
}

/// The headers the gateway checks or records as one value. Sent twice, the gateway would check or
/// log one value while the service might act on the other, so such a request is refused.
const SINGLE_VALUED: [(HeaderName, &str); 6] = [
    (xroad::CLIENT, "X-Road-Client"),
    (xroad::ID, "X-Road-Id"),
    (xroad::PURPOSE, "X-SPLP-Purpose"),
    (xroad::USER_ID, "X-Road-UserId"),
    (xroad::ISSUE, "X-Road-Issue"),
    (xroad::REPRESENTED_PARTY, "X-Road-Represented-Party"),
];

/// Whether a header name with an underscore is, read with `_` as `-`, one of the X-Road or SPLP
/// headers the gateway checks, sets or records. Such a name is not one of them to the gateway, and
/// is one to a service whose server folds the two (as nginx refuses underscores by default for).
fn reads_as_xroad(name: &str) -> bool {
    let dashed = |prefix: &str| {
        name.len() > prefix.len() && name.bytes().zip(prefix.bytes()).all(|(n, p)| n == p || (n == b'_' && p == b'-'))
    };
    name.contains('_') && (dashed("x-road-") || dashed("x-splp-"))
}

/// Refuses a header the log keeps that was found over [`MAX_RECORDED_HEADER`] (`oversized`, as
/// the record saw it), a header that a service may read as an X-Road header ([`reads_as_xroad`]),
/// and one of [`SINGLE_VALUED`] sent twice.
fn check_single_valued(headers: &HeaderMap, oversized: Option<(&str, usize)>) -> Result<(), GatewayError> {
    if let Some((shown, len)) = oversized {
        return Err(GatewayError::BadRequest(format!(
            "{shown} is {len} bytes long; at most {MAX_RECORDED_HEADER} are accepted, since the audit log keeps it with \
             the exchange: send a shorter value (a reference, not a document)"
        )));
    }
    if let Some(name) = headers.keys().find(|n| reads_as_xroad(n.as_str())) {
        return Err(GatewayError::BadRequest(format!(
            "header {name} reads as {} to services that take `_` for `-` (CGI, WSGI, Rack and PHP servers do), which \
             would see a value the gateway neither checked nor recorded; leave it out, and send the X-Road header \
             with dashes, once",
            name.as_str().replace('_', "-")
        )));
    }
    // Most requests repeat no header at all: then there is nothing to look up.
    if headers.len() == headers.keys_len() {
        return Ok(());
    }
    match SINGLE_VALUED.iter().find(|(name, _)| headers.get_all(name).iter().nth(1).is_some()) {
        Some((_, shown)) => Err(GatewayError::BadRequest(format!(
            "{shown} is sent more than once; send it once, since the gateway checks and records one value and the \
             service must see that same one"
        ))),
        None => Ok(()),
    }
}

/// An HTTP/1.1 request names its host once (RFC 9112 §3.2): a server answers 400 to one
/// without `Host` or with two, which intermediaries before and after it may read differently.
fn check_host<B>(req: &Request<B>) -> Result<(), GatewayError> {
    if req.version() != http::Version::HTTP_11 {
        return Ok(());
    }
    match req.headers().get_all(header::HOST).iter().count() {
        1 => Ok(()),
        0 => Err(GatewayError::BadRequest("the HTTP/1.1 request has no Host header; send one".into())),
        _ => Err(GatewayError::BadRequest("the HTTP/1.1 request has more than one Host header; send one".into())),
    }
}

/// Headers beyond the configured count or size are refused with 431 before anything else.
fn check_header_limits(req: &Request<Incoming>, snap: &Snapshot) -> Result<(), GatewayError> {
    let headers = req.headers();
    let max_count = snap.limits.max_headers as usize;
    if headers.len() > max_count {
        return Err(GatewayError::HeadersTooLarge(format!(
            "the request has {} headers; at most {max_count} are accepted",
            headers.len()
        )));
    }
    let size: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    let max_size = snap.limits.max_header_bytes.bytes();
    if size as u64 > max_size {
        return Err(GatewayError::HeadersTooLarge(format!(
            "the request headers take {size} bytes; at most {max_size} are accepted"
        )));
    }
    Ok(())
}

/// The gateway's error as an X-Road response.
pub fn error_response(
    err: &GatewayError,
    exchange_id: &str,
    client: Option<&ClientId>,
    service: Option<&ServiceId>,
) -> Response<ResponseBody> {
    let body = Full::new(Bytes::from(err.json_body(exchange_id))).map_err(|never| match never {}).boxed_unsync();
    let mut resp = Response::new(body);
    *resp.status_mut() = err.status();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    forward::set(h, xroad::ERROR, err.xroad_type());
    forward::set(h, xroad::ID, exchange_id);
    if let Some(c) = client {
        forward::set(h, xroad::CLIENT, &c.to_string());
    }
    if let Some(s) = service {
        forward::set(h, xroad::SERVICE, &s.to_string());
    }
    if let Some(secs) = err.retry_after_secs() {
        forward::set(h, header::RETRY_AFTER, &secs.to_string());
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_with_underscores_reads_as_xroad_where_dashes_would_make_one() {
        for name in ["x_road_client", "x-road_client", "x_road-userid", "x_splp_purpose", "x-road-represented_party"] {
            assert!(reads_as_xroad(name), "{name}");
        }
        for name in ["x-road-client", "x_roads", "x_road_", "my_header", "x-splp", "xx_road_client", "x_forwarded_for"]
        {
            assert!(!reads_as_xroad(name), "{name}");
        }
    }

    #[test]
    fn a_grants_endpoint_names_a_rest_method_only_with_one_other_than_post() {
        assert!(names_rest_method("GET /nik/*") && names_rest_method("DELETE /x"));
        assert!(!names_rest_method("POST /kesehatan.v1.Rujukan/*"));
        assert!(!names_rest_method("/kesehatan.v1.Rujukan/*"), "a gRPC grant's endpoint names no method");
        assert!(!names_rest_method("*"));
    }

    #[test]
    fn trace_ids_come_from_valid_traceparent_headers_only() {
        let id = trace_id(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(hex::encode(id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(trace_id(b"00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
        assert!(trace_id(b"00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01").is_none());
        assert!(trace_id(b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_none());
        assert!(trace_id(b"garbage").is_none());
    }
}
