//! A TCP relay on `127.0.0.1:0` in front of another socket: an endpoint that can be given an
//! address before its target exists, and killed mid-run, closing its port and every connection
//! through it, as a crashed host would.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running relay; killed when dropped.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    target: watch::Sender<Option<SocketAddr>>,
    accept: JoinHandle<()>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    /// Binds `127.0.0.1:0`. Connections wait for a target ([`Relay::set_target`]).
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let (target, watch) = watch::channel(None);
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let tasks = Arc::clone(&conns);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                let mut watch = watch.clone();
                let task = tokio::spawn(async move {
                    let Ok(to) = watch.wait_for(Option::is_some).await.map(|t| t.expect("a target")) else { return };
                    let Ok(mut outbound) = TcpStream::connect(to).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                tasks.lock().unwrap_or_else(PoisonError::into_inner).push(task);
            }
        });
        Self { addr, target, accept, conns }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:port`.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Relays to `to` from now on.
    pub fn set_target(&self, to: SocketAddr) {
        self.target.send_replace(Some(to));
    }

    /// Closes the port and every relayed connection, and returns once they are closed.
    pub async fn kill(&mut self) {
        self.accept.abort();
        let _ = (&mut self.accept).await;
        let tasks: Vec<JoinHandle<()>> = self.conns.lock().unwrap_or_else(PoisonError::into_inner).drain(..).collect();
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }

    /// Connections relayed so far (open or closed).
    pub fn connections(&self) -> usize {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.conns.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
            task.abort();
        }
    }
}
