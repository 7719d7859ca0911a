//! Accept → TLS handshake → identify the peer → serve HTTP/1.1 and HTTP/2 on the connection.
//! Each listener runs its own accept loop; each connection its own task, so a slow client holds
//! nothing but its own task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::coalesce::{Coalesce, Turns};
use crate::edge::{self, Activity, Admission, EdgeStats, HttpVersion};
use crate::exchange::{Connection, Gateway};
use crate::identify::{self, ConnectionAuth};
use crate::linger::Linger;
use crate::reload::LiveConnection;
use crate::runtime::{ListenerRuntime, Snapshot};
use crate::send_timeout::SendTimeout;

/// One bound listener: its configuration when bound, its socket and its edge counters.
#[derive(Debug)]
struct BoundListener {
    listener: Arc<ListenerRuntime>,
    socket: TcpListener,
    stats: Arc<EdgeStats>,
}

/// Why a listener (`what`, as the configuration names it) could not bind `address`, and what to
/// do about the two causes an operator meets.
pub(crate) fn cannot_listen(address: SocketAddr, what: &str, e: &std::io::Error) -> std::io::Error {
    let fix = match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "; another process listens there (`ss -ltnp 'sport = :{}'` names it): stop it, or give {what} another \
             address in the configuration",
            address.port()
        ),
        std::io::ErrorKind::PermissionDenied if address.port() < 1024 => format!(
            "; a port below 1024 needs the capability CAP_NET_BIND_SERVICE, which the systemd unit \
             (examples/splpd.service) gives, or a port of 1024 and above for {what}"
        ),
        std::io::ErrorKind::AddrNotAvailable => {
            "; no interface of this host has that address: check the address in the configuration".to_owned()
        }
        _ => String::new(),
    };
    std::io::Error::new(e.kind(), format!("cannot listen on {address} ({what}): {e}{fix}"))
}

/// Listening sockets, bound before serving so that a bad address fails at start.
#[derive(Debug)]
pub struct Bound {
    sockets: Vec<BoundListener>,
    admin: Option<crate::admin::BoundAdmin>,
}

impl Bound {
    /// Binds every listener of the gateway's configuration.
    pub async fn bind(gateway: &Gateway) -> std::io::Result<Self> {
        let snap = gateway.snapshot();
        let mut sockets = Vec::new();
        for l in &snap.listeners {
            let socket = TcpListener::bind(l.address)
                .await
                .map_err(|e| cannot_listen(l.address, &format!("[[listener]] {:?}", l.name), &e))?;
            sockets.push(BoundListener { listener: Arc::clone(l), socket, stats: EdgeStats::new() });
        }
        let admin = match &snap.admin {
            Some(admin) => Some(crate::admin::BoundAdmin::bind(admin).await?),
            None => None,
        };
        Ok(Self { sockets, admin })
    }

    /// Where the admin listener is bound, when `[admin]` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }

    /// The addresses actually bound (port 0 in the configuration becomes a real port).
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.sockets.iter().filter_map(|b| Some((b.listener.name.clone(), b.socket.local_addr().ok()?))).collect()
    }

    /// Each listener's edge counters, by name.
    pub fn stats(&self) -> Vec<(String, Arc<EdgeStats>)> {
        self.sockets.iter().map(|b| (b.listener.name.clone(), Arc::clone(&b.stats))).collect()
    }

    /// Serves until `shutdown` turns true, then stops accepting and lets open connections finish
    /// their exchanges, for at most `[limits] drain_timeout` of the configuration then in force.
    pub async fn serve(self, gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
        let mut loops = JoinSet::new();
        // Tasks that run as long as the server, aborted when `serve` returns: the timer below
        // and the admin listener, which so stays up for operators to watch the drain.
        let mut background = JoinSet::new();
        background.spawn(keep_a_timer_armed());
        let (force, forced) = watch::channel(false);
        let requests: Vec<_> = self.sockets.iter().map(|b| Arc::clone(&b.stats.requests)).collect();
        if let Some(admin) = self.admin {
            let stats = self.sockets.iter().map(|b| (b.listener.name.clone(), Arc::clone(&b.stats))).collect();
            background.spawn(admin.serve(Arc::clone(&gateway), stats, forced.clone()));
        }
        for bound in self.sockets {
            loops.spawn(accept_loop(Arc::clone(&gateway), bound, shutdown.clone(), forced.clone()));
        }
        stopped(&mut shutdown).await;
        let drain = gateway.snapshot().limits.drain_timeout.0;
        let drained = tokio::time::timeout(drain, async { while loops.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                "connections still open after the drain timeout ({drain:?}) are closed; their exchanges are logged \
                 as abandoned"
            );
            // The loops close their connections and wait until each is gone, so that every
            // abandoned exchange has handed its record to the audit log before it is flushed.
            let _ = force.send(true);
            while loops.join_next().await.is_some() {}
            // HTTP/2 streams run in tasks of their own, which end once their connection is gone.
            for r in &requests {
                let _ = tokio::time::timeout(edge::close_grace(), r.idle_for(Duration::ZERO)).await;
            }
        }
    }
}

/// Keeps a timer armed in the runtime's timer wheel while the server runs.
///
/// Why: tokio wakes its parked driver (an eventfd write) for each timer armed while the wheel
/// was empty when the worker last parked, until it parks again. Under `sync` load every
/// exchange waits on the disk at once, the wheel empties, and then each answer armed hyper's
/// header-read timer and the edge's idle timer that way: about one `write` syscall for every
/// two requests (`perf stat -e syscalls:sys_enter_write -p PID` during `splpd-bench compare`).
/// With a timer a second away always armed, later timers change nothing.
async fn keep_a_timer_armed() {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn accept_loop(
    gateway: Arc<Gateway>,
    bound: BoundListener,
    mut shutdown: watch::Receiver<bool>,
    mut forced: watch::Receiver<bool>,
) {
    let BoundListener { listener: first, socket, stats } = bound;
    let mut conns = JoinSet::new();
    // Connections open per client address (`[limits] connections_per_address`).
    let per_address = Arc::new(edge::PerAddress::default());
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok((tcp, remote)) => {
                    // Each connection takes the configuration in force when it arrives: a reload
                    // changes the certificates, CRLs and limits of the connections after it.
                    // Listeners themselves are fixed at start, so this one is always found.
                    let generation = gateway.generation();
                    let snap = gateway.snapshot();
                    let listener = Arc::clone(snap.listener(&first.name).unwrap_or(&first));
                    let most = snap.limits.connections_per_address;
                    let address_slot = match per_address.take(remote.ip(), most) {
                        Ok(slot) => slot,
                        Err(address) => {
                            if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                                let shown = crate::refusals::shown(address);
                                tracing::warn!(
                                    listener = %listener.name,
                                    %remote,
                                    "{shown} holds {most} connections to this listener, the most one address may \
                                     ([limits] connections_per_address); its new ones are answered 503 \
                                     Server.Overloaded"
                                );
                                last_warning = Some(std::time::Instant::now());
                            }
                            if let Admission::Shed(slot) = stats.shed_or_drop() {
                                conns.spawn(async move {
                                    edge::shed(listener, tcp, edge::Shed::Address).await;
                                    drop(slot);
                                });
                            }
                            continue;
                        }
                    };
                    match stats.admit(listener.max_connections, &listener.name) {
                        Admission::Serve(slot) => {
                            let _ = tcp.set_nodelay(true);
                            let (gateway, shutdown) = (Arc::clone(&gateway), shutdown.clone());
                            let activity = Activity::child_of(&stats.requests);
                            let stats = Arc::clone(&stats);
                            conns.spawn(async move {
                                let accepted = Accepted { snap, generation, listener, tcp, remote, activity, stats };
                                serve_connection(gateway, accepted, shutdown).await;
                                drop((slot, address_slot));
                            });
                        }
                        Admission::Shed(slot) => {
                            conns.spawn(async move {
                                edge::shed(listener, tcp, edge::Shed::Listener).await;
                                drop(slot);
                            });
                        }
                        Admission::Drop => drop(tcp),
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = %first.name, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = stopped(&mut shutdown) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(socket);
    tokio::select! {
        () = async { while conns.join_next().await.is_some() {} } => {}
        () = stopped(&mut forced) => conns.shutdown().await,
    }
}

/// Whether a connection may go on to be served: one that can only be refused must be within its
/// address's budget of refusals answered and recorded (`refusals`), or it is closed unanswered.
fn within_refusal_budget(gateway: &Gateway, conn: &LiveConnection) -> bool {
    let current = conn.current(gateway);
    !current.can_only_be_refused() || gateway.may_record_refusal(current.remote.ip())
}

/// A connection just accepted, and the configuration it is served under.
struct Accepted {
    snap: Arc<Snapshot>,
    /// The [`Gateway::generation`] of `snap`.
    generation: u64,
    listener: Arc<ListenerRuntime>,
    tcp: TcpStream,
    remote: SocketAddr,
    /// Its requests in progress, counted into its listener's.
    activity: Arc<Activity>,
    /// Its listener's counters.
    stats: Arc<EdgeStats>,
}

async fn serve_connection(gateway: Arc<Gateway>, accepted: Accepted, shutdown: watch::Receiver<bool>) {
    let Accepted { snap, generation, listener, tcp, remote, activity, stats } = accepted;
    let send_timeout = snap.limits.send_timeout.0;
    match &listener.tls {
        Some(config) => {
            // A plain HTTP request on this TLS port is answered in plain HTTP, saying so. The look
            // at its first byte waits for nothing the handshake would not wait for, and counts in
            // its time.
            let deadline = tokio::time::Instant::now() + snap.limits.handshake_timeout.0;
            if edge::opens_with_plain_text(&tcp, deadline).await {
                stats.handshakes_failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(listener = %listener.name, %remote, "plain HTTP on a TLS listener: answered 400, use https");
                edge::answer_plain_text(tcp, deadline, edge::PlainTextOn::Exchanges).await;
                return;
            }
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(config));
            let handshake = tokio::time::timeout_at(deadline, acceptor.accept(tcp));
            let (outcome, refused) = crate::tls::naming_refused(handshake).await;
            let tls = match outcome {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    // A connection closed without a word (a load balancer's TCP health check, a
                    // port scan) is not a failed handshake.
                    if matches!(e.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset) {
                        tracing::debug!(listener = %listener.name, %remote, "closed before its TLS handshake: {e}");
                    } else {
                        stats.handshakes_failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        // A few a minute per listener: a CRL past its next update refuses every one.
                        let kind = format!("TLS handshake {}", listener.name);
                        // Worded only where said: past the budget, at debug, mostly not at all.
                        match gateway.log_budget().take(&kind, std::time::Instant::now()) {
                            Some(left_out) => tracing::info!(
                                listener = %listener.name, %remote, "{}{}", crate::tls::refusal(&e, refused),
                                crate::log_budget::left_out_note(left_out)
                            ),
                            None => {
                                tracing::debug!(listener = %listener.name, %remote, "{}", crate::tls::refusal(&e, refused));
                            }
                        }
                    }
                    return;
                }
                Err(_) => {
                    stats.handshakes_failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(listener = %listener.name, %remote, "TLS handshake timed out");
                    return;
                }
            };
            let chain = tls.get_ref().1.peer_certificates().filter(|c| !c.is_empty()).map(<[_]>::to_vec);
            let auth = match &chain {
                Some(chain) => identify::identify_peer(&snap.trust, chain).map(ConnectionAuth::Mtls),
                None => Ok(ConnectionAuth::TlsNoCert),
            };
            let version = HttpVersion::from_alpn(tls.get_ref().1.alpn_protocol());
            let cert_sha256 = chain.as_ref().and_then(|c| c.first()).map(|der| splpd_certs::load::sha256(der));
            let conn = LiveConnection::new(Connection { listener, auth, remote, cert_sha256 }, chain, generation);
            if !within_refusal_budget(&gateway, &conn) {
                let mut tls = tls;
                let _ = tokio::time::timeout(edge::close_grace(), tokio::io::AsyncWriteExt::shutdown(&mut tls)).await;
                return;
            }
            if version == HttpVersion::Http2 {
                let turns = Turns::default();
                let io = TokioIo::new(Coalesce::new(Linger::new(SendTimeout::new(tls, send_timeout)), turns.clone()));
                turns.count(run_http(gateway, &snap, conn, version, io, activity, shutdown)).await;
            } else {
                let io = TokioIo::new(Linger::new(SendTimeout::new(tls, send_timeout)));
                run_http(gateway, &snap, conn, version, io, activity, shutdown).await;
            }
        }
        None => {
            let conn = Connection { listener, auth: Ok(ConnectionAuth::Plain), remote, cert_sha256: None };
            let conn = LiveConnection::new(conn, None, generation);
            if !within_refusal_budget(&gateway, &conn) {
                return;
            }
            run_http(
                gateway,
                &snap,
                conn,
                HttpVersion::Detect,
                TokioIo::new(Linger::new(SendTimeout::new(tcp, send_timeout))),
                activity,
                shutdown,
            )
            .await;
        }
    }
}

/// A connection's "close after this answer": the signal to `run_http`, and the mark its later
/// requests see.
#[derive(Debug, Default)]
struct Closing {
    notify: tokio::sync::Notify,
    set: std::sync::atomic::AtomicBool,
}

async fn run_http<I>(
    gateway: Arc<Gateway>,
    snap: &Snapshot,
    conn: LiveConnection,
    version: HttpVersion,
    io: I,
    activity: Arc<Activity>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    // Notified, and set, when an answer asks for the connection to close after it. Once set,
    // whatever else arrives on the connection before it is closed (HTTP/2 streams until the
    // client acknowledges the GOAWAY, say) gets a bare refusal (`edge::closing_answer`: 401, or
    // a gRPC UNAUTHENTICATED), unlogged, as a refused handshake was, so that one connection
    // yields one refusal to log.
    let close = Arc::new(Closing::default());
    let service = {
        let gateway = Arc::clone(&gateway);
        let conn = Arc::clone(&conn);
        let activity = Arc::clone(&activity);
        let close = Arc::clone(&close);
        service_fn(move |req| {
            let gateway = Arc::clone(&gateway);
            let conn = conn.current(&gateway);
            let active = activity.begin();
            let close = Arc::clone(&close);
            // The exchange path's future is about 10 KiB. Boxed, it exists only while a request
            // is in progress: hyper's HTTP/1.1 connection keeps room for its service's future
            // inline for the connection's whole life, busy or idle.
            let head = req.method() == http::Method::HEAD;
            let http1 = req.version() < http::Version::HTTP_2;
            let exchange = Box::pin(async move {
                if close.set.load(std::sync::atomic::Ordering::Acquire) {
                    return edge::closing_answer(crate::grpc::is_grpc(&req));
                }
                let mut resp = gateway.handle(&conn, req).await;
                if resp.extensions().get::<crate::exchange::CloseConnection>().is_some() {
                    close.set.store(true, std::sync::atomic::Ordering::Release);
                    // HTTP/1.1 must also be told in the answer, or requests already read behind
                    // this one would still be served.
                    if http1 {
                        resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                        close.notify.notify_one();
                    } else {
                        // HTTP/2's GOAWAY comes a moment after the answer, not with it (see
                        // GOAWAY_AFTER_REFUSAL).
                        let close = Arc::clone(&close);
                        tokio::spawn(async move {
                            tokio::time::sleep(edge::GOAWAY_AFTER_REFUSAL).await;
                            close.notify.notify_one();
                        });
                    }
                }
                if head { edge::answer_head(resp, || gateway.audit().health().is_available()).await } else { resp }
            });
            async move { Ok::<_, std::convert::Infallible>(edge::hold_while_streaming(exchange.await, active)) }
        })
    };
    let mut builder = edge::http_builder(&snap.limits, version);
    // A connection that can only be refused gets one stream at a time.
    if conn.current(&gateway).can_only_be_refused() {
        builder.http2().max_concurrent_streams(1);
    }
    let served = builder.serve_connection(io, service);
    tokio::pin!(served);
    tokio::select! {
        result = served.as_mut() => {
            if let Err(e) = result {
                edge::log_connection_error(&*e, &gateway, &conn.current(&gateway));
            }
        }
        () = stopped(&mut shutdown) => {
            served.as_mut().graceful_shutdown();
            let _ = served.await;
        }
        () = close.notify.notified() => {
            // Keep-alive off (HTTP/1.1) or a GOAWAY (HTTP/2): the answer in progress still goes out.
            served.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(edge::close_grace(), served).await;
        }
        () = activity.idle_for(snap.limits.idle_timeout.0) => {
            tracing::debug!(remote = %conn.current(&gateway).remote, "closing a connection idle for {:?}", snap.limits.idle_timeout.0);
            served.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(edge::close_grace(), served).await;
        }
    }
}

/// Resolves once a stop has been asked for (or the sender is gone). The server, the admin
/// listener, the reload watcher and the telemetry exporter all stop on it.
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// A gateway serving in the background of the current runtime: what `splpd serve`, the demo and
/// the end-to-end tests all run.
#[derive(Debug)]
pub struct Running {
    gateway: Arc<Gateway>,
    addrs: Vec<(String, SocketAddr)>,
    admin_addr: Option<SocketAddr>,
    stats: Vec<(String, Arc<EdgeStats>)>,
    telemetry: Option<crate::telemetry::Exporting>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Certificates, keys or CRLs could not be loaded.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// A listener could not bind.
    #[error(transparent)]
    Bind(#[from] std::io::Error),
    /// The OpenTelemetry exporter could not be set up.
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
}

/// Compiles `config`, binds its listeners and starts serving, logging to `audit`.
pub async fn start(
    config: crate::config::Config,
    audit: Arc<dyn crate::audit::AuditSink>,
) -> Result<Running, StartError> {
    let telemetry = match &config.telemetry {
        Some(t) => Some(crate::telemetry::Telemetry::new(t, &config.gateway.id)?),
        None => None,
    };
    let snapshot = crate::runtime::Snapshot::build(config)?;
    let spans = telemetry.as_ref().map(crate::telemetry::Telemetry::span_sink);
    let gateway = Arc::new(Gateway::with_spans(snapshot, audit, spans));
    let bound = Bound::bind(&gateway).await?;
    let addrs = bound.local_addrs();
    let admin_addr = bound.admin_addr();
    let stats = bound.stats();
    let telemetry = telemetry.map(|t| t.start(Arc::clone(&gateway), stats.clone()));
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(watch_crls(Arc::downgrade(&gateway), stopped.clone()));
    let task = tokio::spawn(bound.serve(Arc::clone(&gateway), stopped));
    Ok(Running { gateway, addrs, admin_addr, stats, telemetry, stop, task })
}

/// How often a running gateway looks at its CRLs' next updates.
const CRL_WATCH: Duration = Duration::from_secs(3600);

/// How close to its end a trust anchor's CA is said every hour too.
const CA_HOURLY: time::Duration = time::Duration::days(30);

/// Says, every hour while the gateway runs, which CRLs are within a week of their next update or
/// past it: a CRL signed once at `certs init-ca` and never again would otherwise stop every
/// exchange a month later with no word beforehand. (Loading one says so too; this covers a CRL
/// that ages while loaded.) `/readyz` and `splpd_crl_next_update_timestamp_seconds` say it too.
/// Trust anchors' CAs within [`CA_HOURLY`] of their end, or past it, are said with them.
async fn watch_crls(gateway: std::sync::Weak<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let Some(replacements) = gateway.upgrade().map(|g| g.replacements()) else { return };
    // The hourly look keeps its time across reloads: a CRL fetched by cron every half hour must
    // not put it off for ever.
    let mut hourly = tokio::time::Instant::now() + CRL_WATCH;
    loop {
        // Registered before the CRLs are read, so that a reload in between is not missed: a CRL
        // it loads that passes its next update before the hour is out is then told when it does.
        let replaced = replacements.notified();
        let left = hourly.saturating_duration_since(tokio::time::Instant::now());
        let wait = match gateway.upgrade() {
            Some(gateway) => {
                let now = time::OffsetDateTime::now_utc();
                until_next_look(moments_to_tell(&gateway.snapshot().trust, now), now, left)
            }
            None => return,
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            // Loading the new CRLs said what was wrong with them already; only the wait changes.
            () = replaced => continue,
            () = stopped(&mut shutdown) => return,
        }
        hourly = tokio::time::Instant::now() + CRL_WATCH;
        let Some(gateway) = gateway.upgrade() else { return };
        let now = time::OffsetDateTime::now_utc();
        let snap = gateway.snapshot();
        let crls = snap.trust.crl_status().iter().map(|c| (c.expired(now), c.concern(now)));
        // A CA's end is said at every load from half a year ahead, and every hour in its last
        // month or once it stops its anchor.
        let cas =
            snap.trust.ca_concerns(now).into_iter().filter(|c| c.stops || (c.ends > now && c.ends - now <= CA_HOURLY));
        for (expired, concern) in crls.chain(cas.map(|c| (c.stops, Some(c.text)))) {
            match concern {
                Some(concern) if expired => tracing::error!("{concern}"),
                Some(concern) => tracing::warn!("{concern}"),
                None => {}
            }
        }
    }
}

/// When something of the trust store changes what the log should say: a CRL passing its next
/// update, a CA (of those said at all) ending.
fn moments_to_tell(trust: &crate::tls::TrustStore, now: time::OffsetDateTime) -> Vec<time::OffsetDateTime> {
    let crls = trust.crl_status().iter().filter_map(|c| c.next_update);
    crls.chain(trust.ca_concerns(now).into_iter().map(|c| c.ends)).collect()
}

/// Until the next look at the CRLs and CAs: [`CRL_WATCH`], or the first of `moments` (a CRL's
/// next update, a CA's end) when that comes sooner, so that the log says so then, not up to an
/// hour later.
fn until_next_look(
    moments: impl IntoIterator<Item = time::OffsetDateTime>,
    now: time::OffsetDateTime,
    hourly: Duration,
) -> Duration {
    moments
        .into_iter()
        .filter(|next| *next > now)
        .filter_map(|next| Duration::try_from(next - now).ok())
        .map(|left| left + Duration::from_secs(1))
        .fold(hourly, Duration::min)
}

impl Running {
    /// The gateway, for its configuration and audit log.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Where each listener is bound, by name.
    pub fn addrs(&self) -> &[(String, SocketAddr)] {
        &self.addrs
    }

    /// Where the admin listener is bound, when `[admin]` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Where the named listener is bound.
    pub fn addr(&self, listener: &str) -> Option<SocketAddr> {
        self.addrs.iter().find(|(n, _)| n == listener).map(|(_, a)| *a)
    }

    /// The edge counters of the named listener (connections open, shed, closed for idleness).
    pub fn edge_stats(&self, listener: &str) -> Option<&Arc<EdgeStats>> {
        self.stats.iter().find(|(n, _)| n == listener).map(|(_, s)| s)
    }

    /// What the OpenTelemetry exporter has sent, with `[telemetry]`.
    pub fn telemetry(&self) -> Option<&Arc<crate::telemetry::ExportStats>> {
        self.telemetry.as_ref().map(crate::telemetry::Exporting::stats)
    }

    /// Stops accepting, lets open exchanges finish, flushes the audit log, and sends the last
    /// spans and metrics.
    pub async fn stop(self) -> Result<(), crate::audit::AuditError> {
        self.gateway.begin_stopping();
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let flushed = self.gateway.audit().shutdown().await;
        if let Some(telemetry) = self.telemetry {
            telemetry.finish().await;
        }
        flushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port another process holds is told with how to find that process and what to change.
    #[tokio::test]
    async fn a_listener_whose_port_is_taken_says_who_to_look_for_and_what_to_change() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = taken.local_addr().unwrap();
        let e = TcpListener::bind(address).await.unwrap_err();
        let said = cannot_listen(address, "[[listener]] \"public\"", &e).to_string();
        assert!(said.starts_with(&format!("cannot listen on {address} ([[listener]] \"public\")")), "{said}");
        assert!(said.contains(&format!("`ss -ltnp 'sport = :{}'`", address.port())), "{said}");
        assert!(said.contains("give [[listener]] \"public\" another address"), "{said}");
    }

    /// The CRLs are looked at hourly, and also as one passes its next update.
    #[test]
    fn the_next_look_is_at_the_first_moment_to_come_within_the_hour() {
        let now = time::OffsetDateTime::now_utc();
        let at = |d: time::Duration| now + d;
        assert_eq!(until_next_look([], now, CRL_WATCH), CRL_WATCH);
        // The hourly look's own time left, when nothing comes sooner.
        assert_eq!(until_next_look([], now, Duration::from_secs(600)), Duration::from_secs(600));
        let soon = [at(time::Duration::days(3)), at(time::Duration::seconds(90))];
        assert_eq!(until_next_look(soon, now, CRL_WATCH), Duration::from_secs(91));
        // One already past is said at every look; it does not make the looks come faster.
        assert_eq!(until_next_look([at(time::Duration::seconds(-5))], now, CRL_WATCH), CRL_WATCH);
    }

    #[test]
    fn the_next_look_comes_when_a_crl_or_a_ca_ends_within_the_hour() {
        use splpd_certs::pki::{Ca, InitOptions};
        let tmp = tempfile::tempdir().unwrap();
        let now = time::OffsetDateTime::now_utc();
        // A one-day CA of the anchor that ends in ten minutes, with its CRL.
        let opts = InitOptions { days: 1, ..InitOptions::new("Pemda Singkat", vec!["ID/PEMDA/1699".parse().unwrap()]) };
        Ca::init(tmp.path(), &opts, now - time::Duration::days(1) + time::Duration::minutes(10)).unwrap();
        let anchor = crate::config::TrustAnchor {
            name: "short".into(),
            ca: tmp.path().join("ca.crt"),
            scopes: vec!["ID/PEMDA/1699".parse().unwrap()],
            crls: vec![tmp.path().join("crl.pem")],
        };
        let trust = crate::tls::TrustStore::new(&[anchor], &[]).unwrap();
        let wait = until_next_look(moments_to_tell(&trust, now), now, CRL_WATCH);
        assert!(wait <= Duration::from_secs(601) && wait > Duration::from_secs(590), "{wait:?}");
    }
}
