//! Accept → TLS handshake → identify the peer → serve HTTP/1.1 and HTTP/2 on the connection.
//! Each listener runs its own accept loop; each connection its own task, so a slow client holds
//! nothing but its own task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::exchange::{Connection, Gateway};
use crate::identify::{self, ConnectionAuth};
use crate::runtime::ListenerRuntime;

/// Time allowed for a TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Listening sockets, bound before serving so that a bad address fails at start.
#[derive(Debug)]
pub struct Bound {
    sockets: Vec<(Arc<ListenerRuntime>, TcpListener)>,
}

impl Bound {
    /// Binds every listener of the gateway's configuration.
    pub async fn bind(gateway: &Gateway) -> std::io::Result<Self> {
        let snap = gateway.snapshot();
        let mut sockets = Vec::new();
        for l in &snap.listeners {
            let socket = TcpListener::bind(l.address).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {} (listener {:?}): {e}", l.address, l.name))
            })?;
            sockets.push((Arc::clone(l), socket));
        }
        Ok(Self { sockets })
    }

    /// The addresses actually bound (port 0 in the configuration becomes a real port).
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.sockets.iter().filter_map(|(l, s)| Some((l.name.clone(), s.local_addr().ok()?))).collect()
    }

    /// Serves until `shutdown` turns true, then stops accepting and lets open connections finish
    /// their exchanges, for at most `drain`.
    pub async fn serve(self, gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>, drain: Duration) {
        let mut loops = JoinSet::new();
        for (listener, socket) in self.sockets {
            loops.spawn(accept_loop(Arc::clone(&gateway), listener, socket, shutdown.clone()));
        }
        stopped(&mut shutdown).await;
        let _ = tokio::time::timeout(drain, async { while loops.join_next().await.is_some() {} }).await;
    }
}

async fn accept_loop(
    gateway: Arc<Gateway>,
    listener: Arc<ListenerRuntime>,
    socket: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok((tcp, remote)) => {
                    let _ = tcp.set_nodelay(true);
                    conns.spawn(serve_connection(Arc::clone(&gateway), Arc::clone(&listener), tcp, remote, shutdown.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = %listener.name, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = stopped(&mut shutdown) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(socket);
    while conns.join_next().await.is_some() {}
}

async fn serve_connection(
    gateway: Arc<Gateway>,
    listener: Arc<ListenerRuntime>,
    tcp: TcpStream,
    remote: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    match &listener.tls {
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(config));
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(listener = %listener.name, %remote, "TLS handshake refused: {e}");
                    return;
                }
                Err(_) => {
                    tracing::info!(listener = %listener.name, %remote, "TLS handshake timed out");
                    return;
                }
            };
            let auth = match tls.get_ref().1.peer_certificates() {
                Some(chain) if !chain.is_empty() => {
                    identify::identify_peer(&gateway.snapshot().trust, chain).map(ConnectionAuth::Mtls)
                }
                _ => Ok(ConnectionAuth::TlsNoCert),
            };
            let conn = Connection { listener, auth, remote };
            run_http(gateway, conn, TokioIo::new(tls), shutdown).await;
        }
        None => {
            let conn = Connection { listener, auth: Ok(ConnectionAuth::Plain), remote };
            run_http(gateway, conn, TokioIo::new(tcp), shutdown).await;
        }
    }
}

async fn run_http<I>(gateway: Arc<Gateway>, conn: Connection, io: I, mut shutdown: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let snap = gateway.snapshot();
    let limits = &snap.limits;
    let conn = Arc::new(conn);
    let service = {
        let gateway = Arc::clone(&gateway);
        let conn = Arc::clone(&conn);
        service_fn(move |req| {
            let gateway = Arc::clone(&gateway);
            let conn = Arc::clone(&conn);
            async move { Ok::<_, std::convert::Infallible>(gateway.handle(&conn, req).await) }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Headers a little over the limit still reach the exchange path, which answers 431 with an
    // X-Road error and logs it; far larger ones are cut off by hyper itself.
    let header_room = usize::try_from(limits.max_header_bytes.bytes()).unwrap_or(usize::MAX).saturating_mul(2);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.0)
        .max_buf_size(header_room.max(8192))
        .max_headers(limits.max_headers as usize * 2);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(header_room).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    let served = builder.serve_connection(io, service);
    tokio::pin!(served);
    tokio::select! {
        result = served.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(remote = %conn.remote, "connection ended: {e}");
            }
        }
        () = stopped(&mut shutdown) => {
            served.as_mut().graceful_shutdown();
            let _ = served.await;
        }
    }
}

/// Resolves once a stop has been asked for (or the sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// A gateway serving in the background of the current runtime: what `splpd serve`, the demo and
/// the end-to-end tests all run.
#[derive(Debug)]
pub struct Running {
    gateway: Arc<Gateway>,
    addrs: Vec<(String, SocketAddr)>,
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
}

/// Compiles `config`, binds its listeners and starts serving, logging to `audit`.
pub async fn start(
    config: crate::config::Config,
    audit: Arc<dyn crate::audit::AuditSink>,
) -> Result<Running, StartError> {
    let snapshot = crate::runtime::Snapshot::build(config)?;
    let gateway = Arc::new(Gateway::new(snapshot, audit));
    let bound = Bound::bind(&gateway).await?;
    let addrs = bound.local_addrs();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(bound.serve(Arc::clone(&gateway), stopped, Duration::from_secs(10)));
    Ok(Running { gateway, addrs, stop, task })
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

    /// Where the named listener is bound.
    pub fn addr(&self, listener: &str) -> Option<SocketAddr> {
        self.addrs.iter().find(|(n, _)| n == listener).map(|(_, a)| *a)
    }

    /// Stops accepting, lets open exchanges finish, and flushes the audit log.
    pub async fn stop(self) -> Result<(), crate::audit::AuditError> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.gateway.audit().shutdown().await
    }
}
