//! The load generator: hyper and rustls with a client certificate, over HTTP/1.1, HTTP/2 and
//! gRPC (tonic, unary and server streaming). Closed loop (a fixed number of calls in flight, for
//! saturation), open loop (calls sent at a fixed rate whatever the answers do, each latency
//! counted from when the call was due, so a stall is not hidden by the calls it delayed:
//! no coordinated omission), a new full mTLS handshake per call, and idle connections held
//! open for memory; every connection is opened by one function, whatever it is for.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use splpd_proto::kesehatan::v1::rujukan_client::RujukanClient;
use splpd_proto::kesehatan::v1::{KirimRequest, PantauRequest};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

/// What one call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub(crate) enum Load {
    /// GET of 1 KiB over HTTP/1.1.
    H1,
    /// GET of 1 KiB over HTTP/2.
    H2,
    /// GET of 64 KiB over HTTP/1.1.
    H1Large,
    /// GET of 64 KiB over HTTP/2.
    H2Large,
    /// `Rujukan.Kirim`, 1 KiB answer.
    Grpc,
    /// `Rujukan.Pantau`: a stream of ten 1 KiB messages; each message counts as one.
    GrpcStream,
}

impl Load {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::H1 => "HTTP/1.1",
            Self::H2 => "HTTP/2",
            Self::H1Large => "HTTP/1.1 64 KiB",
            Self::H2Large => "HTTP/2 64 KiB",
            Self::Grpc => "gRPC unary",
            Self::GrpcStream => "gRPC stream (msgs)",
        }
    }

    fn h2(self) -> bool {
        !matches!(self, Self::H1 | Self::H1Large)
    }

    fn grpc(self) -> bool {
        matches!(self, Self::Grpc | Self::GrpcStream)
    }

    fn size(self) -> &'static str {
        if matches!(self, Self::H1Large | Self::H2Large) { "64k" } else { "1k" }
    }

    /// What the load's connections speak.
    pub(crate) fn protocol(self) -> Protocol {
        match self {
            Self::H1 | Self::H1Large => Protocol::H1,
            Self::H2 | Self::H2Large => Protocol::H2,
            Self::Grpc | Self::GrpcStream => Protocol::Grpc,
        }
    }
}

/// What a connection speaks, for the figures measured per connection rather than per call:
/// handshakes per second and memory per idle connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub(crate) enum Protocol {
    /// HTTP/1.1 (ALPN `http/1.1`).
    H1,
    /// HTTP/2 (ALPN `h2`).
    H2,
    /// gRPC: HTTP/2 connections carrying gRPC calls.
    Grpc,
}

impl Protocol {
    pub(crate) const ALL: [Self; 3] = [Self::H1, Self::H2, Self::Grpc];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::H1 => "HTTP/1.1",
            Self::H2 => "HTTP/2",
            Self::Grpc => "gRPC",
        }
    }

    /// The one call a connection of this protocol makes: a 1 KiB GET, or a unary gRPC call.
    pub(crate) fn load(self) -> Load {
        match self {
            Self::H1 => Load::H1,
            Self::H2 => Load::H2,
            Self::Grpc => Load::Grpc,
        }
    }

    /// The protocols of `loads`, each once, in the order of [`Protocol::ALL`].
    pub(crate) fn of_loads(loads: &[Load]) -> Vec<Self> {
        Self::ALL.into_iter().filter(|p| loads.iter().any(|l| l.protocol() == *p)).collect()
    }

    /// The protocols whose idle connections differ among `protocols`: an idle gRPC connection
    /// is an idle HTTP/2 connection (the calls it made are gone), so HTTP/2 stands for gRPC.
    pub(crate) fn idle_of(protocols: &[Self]) -> Vec<Self> {
        let wanted: Vec<Self> = protocols.iter().map(|p| if *p == Self::Grpc { Self::H2 } else { *p }).collect();
        Self::ALL.into_iter().filter(|p| wanted.contains(p)).collect()
    }

    /// The protocols an idle figure of this protocol stands for.
    pub(crate) fn idle_covers(self) -> Vec<Self> {
        match self {
            Self::H2 | Self::Grpc => vec![Self::H2, Self::Grpc],
            Self::H1 => vec![Self::H1],
        }
    }
}

/// The client's TLS configurations; `None` in a [`Target`] for plain TCP (the direct row).
#[derive(Debug, Clone)]
pub(crate) struct Tls {
    pub(crate) h1: Arc<rustls::ClientConfig>,
    pub(crate) h2: Arc<rustls::ClientConfig>,
}

/// Where the load goes.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    /// Where gRPC calls go: the same as `addr` for a proxy, the gRPC port for the direct row.
    pub(crate) grpc_addr: SocketAddr,
    pub(crate) tls: Option<Tls>,
    /// Prepended to the upstream's path (`/1k`, `/64k`): splpd's service path, or nothing.
    pub(crate) prefix: String,
}

impl Target {
    fn path(&self, load: Load) -> String {
        format!("{}/{}", self.prefix, load.size())
    }

    fn origin(&self, load: Load) -> String {
        match self.tls {
            Some(_) => "https://localhost".to_owned(),
            None => format!("http://{}", self.addr_for(load)),
        }
    }

    fn addr_for(&self, load: Load) -> SocketAddr {
        if load.grpc() { self.grpc_addr } else { self.addr }
    }

    /// The request URI: origin-form for HTTP/1.1, absolute for HTTP/2 and gRPC.
    fn uri(&self, load: Load) -> anyhow::Result<hyper::Uri> {
        let uri = if load.h2() { format!("{}{}", self.origin(load), self.path(load)) } else { self.path(load) };
        Ok(uri.parse()?)
    }
}

/// A TCP or TLS stream, so that every protocol runs over either.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

async fn dial(addr: SocketAddr, tls: Option<&Tls>, h2: bool) -> anyhow::Result<Io> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(match tls {
        None => Io::Plain(tcp),
        Some(t) => {
            let config = Arc::clone(if h2 { &t.h2 } else { &t.h1 });
            let name = ServerName::try_from("localhost")?;
            Io::Tls(Box::new(tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?))
        }
    })
}

enum Conn {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
    Grpc(RujukanClient<Channel>),
}

impl Conn {
    /// Another handle on the same connection, for one more stream; none for HTTP/1.1.
    fn share(&self) -> Option<Self> {
        match self {
            Self::H1(_) => None,
            Self::H2(s) => Some(Self::H2(s.clone())),
            Self::Grpc(c) => Some(Self::Grpc(c.clone())),
        }
    }
}

/// A connection for `load`, with TLS and the protocol's handshake done: every connection the
/// load generator opens (for load, for handshakes, held idle) is made here. The task driving it
/// is returned where the caller can wait for it (tonic keeps gRPC's to itself).
async fn connect(target: &Target, load: Load) -> anyhow::Result<(Conn, Option<JoinHandle<()>>)> {
    let io = dial(target.addr_for(load), target.tls.as_ref(), load.h2()).await.context("connecting")?;
    if load.grpc() {
        let io = Mutex::new(Some(io));
        let connector = tower::service_fn(move |_: hyper::Uri| {
            let io = io.lock().unwrap_or_else(PoisonError::into_inner).take();
            async move { io.map(TokioIo::new).ok_or_else(|| io::Error::other("one connection per channel")) }
        });
        let channel = Endpoint::from_shared(target.origin(load))?.connect_with_connector(connector).await?;
        Ok((Conn::Grpc(RujukanClient::new(channel)), None))
    } else if load.h2() {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder.initial_stream_window_size(1 << 20).initial_connection_window_size(4 << 20);
        let (sender, conn) = builder.handshake(TokioIo::new(io)).await?;
        Ok((
            Conn::H2(sender),
            Some(tokio::spawn(async move {
                let _ = conn.await;
            })),
        ))
    } else {
        let (sender, conn) = http1::handshake(TokioIo::new(io)).await?;
        Ok((
            Conn::H1(sender),
            Some(tokio::spawn(async move {
                let _ = conn.await;
            })),
        ))
    }
}

/// One call in flight at a time: an HTTP/1.1 connection, or one stream of a shared HTTP/2 one.
pub(crate) struct Slot {
    conn: Conn,
    load: Load,
    uri: hyper::Uri,
    /// Ask the server to close the connection after the call (HTTP/1.1 `Connection: close`).
    last: bool,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("load", &self.load).field("uri", &self.uri).finish_non_exhaustive()
    }
}

impl Slot {
    fn new(target: &Target, load: Load, conn: Conn) -> anyhow::Result<Self> {
        Ok(Self { conn, load, uri: target.uri(load)?, last: false })
    }

    /// Makes one call; returns how many answers it counts as (messages for a stream).
    async fn call(&mut self) -> anyhow::Result<u64> {
        match &mut self.conn {
            Conn::H1(sender) => {
                sender.ready().await?;
                let mut req = hyper::Request::get(self.uri.clone()).header("host", "localhost");
                if self.last {
                    req = req.header("connection", "close");
                }
                let resp = sender.send_request(req.body(Empty::new())?).await?;
                let status = resp.status();
                resp.into_body().collect().await?;
                anyhow::ensure!(status.is_success(), "status {status}");
                Ok(1)
            }
            Conn::H2(sender) => {
                sender.ready().await?;
                let req = hyper::Request::get(self.uri.clone()).body(Empty::new())?;
                let resp = sender.send_request(req).await?;
                let status = resp.status();
                resp.into_body().collect().await?;
                anyhow::ensure!(status.is_success(), "status {status}");
                Ok(1)
            }
            Conn::Grpc(client) if self.load == Load::GrpcStream => {
                let req = PantauRequest { nomor_rujukan: "RJK-1602-000001".to_owned() };
                let mut stream = client.pantau(req).await?.into_inner();
                let mut n = 0;
                while stream.message().await?.is_some() {
                    n += 1;
                }
                Ok(n)
            }
            Conn::Grpc(client) => {
                let req = KirimRequest {
                    nik: "1602015708900001".to_owned(),
                    faskes_asal: "RSUD-KAYUAGUNG".to_owned(),
                    faskes_tujuan: "RSUP-MOHAMMAD-HOESIN".to_owned(),
                    diagnosis_icd10: "I21.9".to_owned(),
                    catatan: String::new(),
                };
                client.kirim(req).await?;
                Ok(1)
            }
        }
    }
}

/// Opens `conns` connections for `load`; an HTTP/2 or gRPC connection carries `streams` slots.
pub(crate) async fn open_slots(target: &Target, load: Load, conns: usize, streams: usize) -> anyhow::Result<Vec<Slot>> {
    let mut slots = Vec::new();
    for _ in 0..conns {
        // The driver runs on by itself; the connection ends when its slots are dropped.
        let (conn, _driver) = connect(target, load).await?;
        for _ in 1..streams {
            if let Some(shared) = conn.share() {
                slots.push(Slot::new(target, load, shared)?);
            }
        }
        slots.push(Slot::new(target, load, conn)?);
    }
    Ok(slots)
}

/// What a run measured.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Answers counted in the window (messages, for a stream).
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) window: Duration,
    /// Latency of each call in µs.
    pub(crate) latency: Histogram<u64>,
    /// CPU seconds the proxy process used in the window.
    pub(crate) cpu: Option<f64>,
    /// Of that, CPU seconds of splpd's audit log writer thread.
    pub(crate) audit_cpu: Option<f64>,
    /// Batches the audit log's writer wrote in the window, and of them those it synced.
    pub(crate) audit_batches: Option<(u64, u64)>,
}

impl Outcome {
    fn new(window: Duration) -> Self {
        Self {
            ok: 0,
            errors: 0,
            first_error: None,
            window,
            latency: new_histogram(),
            cpu: None,
            audit_cpu: None,
            audit_batches: None,
        }
    }

    pub(crate) fn rate(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }

    /// CPU milliseconds of the proxy per answer, i.e. CPU seconds per 1000 answers.
    pub(crate) fn cpu_ms_per_answer(&self) -> Option<f64> {
        self.cpu.filter(|_| self.ok > 0).map(|c| c * 1000.0 / self.ok as f64)
    }

    /// The same for splpd's audit log writer thread alone.
    pub(crate) fn audit_cpu_ms_per_answer(&self) -> Option<f64> {
        self.audit_cpu.filter(|_| self.ok > 0).map(|c| c * 1000.0 / self.ok as f64)
    }

    /// The audit log's batches and syncs per 1000 answers.
    pub(crate) fn audit_batches_per_1000(&self) -> Option<(f64, f64)> {
        let per_1000 = |n: u64| n as f64 * 1000.0 / self.ok as f64;
        self.audit_batches.filter(|_| self.ok > 0).map(|(b, s)| (per_1000(b), per_1000(s)))
    }

    pub(crate) fn quantile_us(&self, q: f64) -> u64 {
        self.latency.value_at_quantile(q)
    }

    fn merge(&mut self, other: Self) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        let _ = self.latency.add(other.latency);
    }

    fn error(&mut self, e: &anyhow::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{e:#}"));
        }
    }
}

/// Latencies in µs, 1 µs to 60 s, three significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid")
}

fn micros(d: Duration) -> u64 {
    d.as_micros().try_into().unwrap_or(u64::MAX)
}

/// The proxy's CPU seconds, if there is a proxy process.
fn cpu_of(pid: Option<u32>) -> Option<f64> {
    pid.and_then(crate::procs::cpu_seconds)
}

/// CPU seconds of splpd's audit log writer thread, and its batches and syncs so far, if the
/// proxy has one.
fn audit_of(pid: Option<u32>) -> (Option<f64>, Option<(u64, u64)>) {
    pid.map_or((None, None), |pid| (crate::procs::thread_cpu_seconds(pid, "splpd-audit"), writer_counts(pid)))
}

/// What the gateway child last published of its writer's counters (see
/// [`crate::gateway::writer_counts_file`]): batches and syncs.
fn writer_counts(pid: u32) -> Option<(u64, u64)> {
    let path = format!("/proc/{pid}/cwd/{}", crate::gateway::writer_counts_file(pid));
    parse_writer_counts(&std::fs::read_to_string(path).ok()?)
}

fn parse_writer_counts(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    Some((fields.next()?.ok()?, fields.next()?.ok()?))
}

/// Waits out the warm-up and the window of `tasks` (loops that run until `stop`), reading the
/// proxy's CPU time at both ends, then stops them and adds up what they counted.
async fn measure_window(
    tasks: Vec<JoinHandle<Outcome>>,
    stop: &AtomicBool,
    from: Instant,
    until: Instant,
    pid: Option<u32>,
) -> Outcome {
    tokio::time::sleep_until(from.into()).await;
    let before = cpu_of(pid);
    let audit_before = audit_of(pid);
    tokio::time::sleep_until(until.into()).await;
    let after = cpu_of(pid);
    let audit_after = audit_of(pid);
    stop.store(true, Ordering::Relaxed);
    let mut total = Outcome::new(until - from);
    total.cpu = before.zip(after).map(|(b, a)| a - b);
    total.audit_cpu = audit_before.0.zip(audit_after.0).map(|(b, a)| a - b);
    total.audit_batches =
        audit_before.1.zip(audit_after.1).map(|((b0, s0), (b1, s1))| (b1.saturating_sub(b0), s1.saturating_sub(s0)));
    for t in tasks {
        if let Ok(out) = t.await {
            total.merge(out);
        }
    }
    total
}

/// Closed loop: every slot calls again as soon as its answer is in. Counts calls started after
/// `warm` and before the window ends.
pub(crate) async fn closed(slots: Vec<Slot>, warm: Duration, window: Duration, pid: Option<u32>) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let from = Instant::now() + warm;
    let until = from + window;
    let tasks: Vec<_> = slots
        .into_iter()
        .map(|mut slot| {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut out = Outcome::new(window);
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let result = slot.call().await;
                    let counted = t0 >= from && t0 < until;
                    match result {
                        Ok(n) if counted => {
                            out.ok += n;
                            let _ = out.latency.record(micros(t0.elapsed()));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            out.error(&e);
                            // A broken connection stays broken; do not spin on it.
                            if slot_is_closed(&slot) {
                                break;
                            }
                        }
                    }
                }
                out
            })
        })
        .collect();
    measure_window(tasks, &stop, from, until, pid).await
}

fn slot_is_closed(slot: &Slot) -> bool {
    match &slot.conn {
        Conn::H1(s) => s.is_closed(),
        Conn::H2(s) => s.is_closed(),
        Conn::Grpc(_) => false,
    }
}

/// Open loop: calls become due at `rate` per second; each waits for a free slot and its latency
/// runs from when it was due. A pacing thread (microsecond sleeps, where tokio's timer has
/// millisecond ticks) releases calls; calls due in the warm-up are made but not counted.
pub(crate) async fn open(slots: Vec<Slot>, rate: f64, warm: Duration, window: Duration) -> Outcome {
    let n_slots = slots.len();
    let (idle_tx, mut idle_rx) = tokio::sync::mpsc::channel::<Slot>(n_slots.max(1));
    for s in slots {
        let _ = idle_tx.try_send(s);
    }
    let (due_tx, mut due_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let start = Instant::now();
    let from = start + warm;
    let until = from + window;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let pacer = std::thread::spawn(move || {
        let mut due = start;
        while due < until {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if due_tx.send(due).is_err() {
                return;
            }
            due += interval;
        }
    });
    let result = Arc::new(Mutex::new(Outcome::new(window)));
    while let Some(due) = due_rx.recv().await {
        let Some(mut slot) = idle_rx.recv().await else { break };
        let (idle_tx, result) = (idle_tx.clone(), Arc::clone(&result));
        tokio::spawn(async move {
            let r = slot.call().await;
            let latency = due.elapsed();
            {
                let mut out = result.lock().unwrap_or_else(PoisonError::into_inner);
                match r {
                    Ok(n) if due >= from => {
                        out.ok += n;
                        let _ = out.latency.record(micros(latency));
                    }
                    Ok(_) => {}
                    Err(e) => out.error(&e),
                }
            }
            let _ = idle_tx.send(slot).await;
        });
    }
    let _ = pacer.join();
    // Wait for the calls still in flight (every slot back), up to a limit.
    let mut back = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while back < n_slots {
        match tokio::time::timeout_at(deadline, idle_rx.recv()).await {
            Ok(Some(_)) => back += 1,
            _ => break,
        }
    }
    let mut out = std::mem::replace(&mut *result.lock().unwrap_or_else(PoisonError::into_inner), Outcome::new(window));
    out.errors += (n_slots - back) as u64;
    out
}

/// A new connection, with a full mTLS handshake (resumption is off), for every call of
/// `protocol` (an HTTP/1.1 or HTTP/2 GET, a unary gRPC call), from `concurrency` loops at once.
pub(crate) async fn handshakes(
    target: &Target,
    protocol: Protocol,
    concurrency: usize,
    warm: Duration,
    window: Duration,
    pid: Option<u32>,
) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let from = Instant::now() + warm;
    let until = from + window;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (stop, target) = (Arc::clone(&stop), target.clone());
            tokio::spawn(async move {
                let mut out = Outcome::new(window);
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    match one_call_connection(&target, protocol.load()).await {
                        Ok(()) if t0 >= from && t0 < until => {
                            out.ok += 1;
                            let _ = out.latency.record(micros(t0.elapsed()));
                        }
                        Ok(()) => {}
                        Err(e) => out.error(&e),
                    }
                }
                out
            })
        })
        .collect();
    measure_window(tasks, &stop, from, until, pid).await
}

/// Opens a connection, makes one call on it and closes it. HTTP/1.1 asks the server to close
/// (as a client without keep-alive does); HTTP/2 and gRPC close from the client's side (GOAWAY)
/// when the last handle on the connection goes.
async fn one_call_connection(target: &Target, load: Load) -> anyhow::Result<()> {
    let (conn, driver) = connect(target, load).await?;
    let mut slot = Slot::new(target, load, conn)?;
    slot.last = true;
    let answered = slot.call().await;
    drop(slot);
    if let Some(driver) = driver {
        let _ = driver.await;
    }
    answered.map(|_| ())
}

/// Idle keep-alive connections, each after one mTLS handshake and one call (so an HTTP/2
/// connection has exchanged its SETTINGS), held until dropped.
#[derive(Debug)]
pub(crate) struct Idle {
    pub(crate) opened: usize,
    pub(crate) errors: usize,
    held: Vec<Slot>,
}

impl Idle {
    pub(crate) fn close(self) {
        drop(self.held);
    }
}

pub(crate) async fn idle(target: &Target, protocol: Protocol, n: usize, concurrency: usize) -> Idle {
    let load = protocol.load();
    let results: Vec<anyhow::Result<Slot>> = futures_util::stream::iter(0..n)
        .map(|_| async {
            let (conn, _driver) = connect(target, load).await?;
            let mut slot = Slot::new(target, load, conn)?;
            slot.call().await?;
            Ok(slot)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let errors = results.iter().filter(|r| r.is_err()).count();
    let held: Vec<_> = results.into_iter().filter_map(Result::ok).collect();
    Idle { opened: held.len(), errors, held }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_counts_are_batches_then_syncs() {
        assert_eq!(parse_writer_counts("120 118 7000\n"), Some((120, 118)));
        assert_eq!(parse_writer_counts("120\n"), None);
        assert_eq!(parse_writer_counts(""), None);
    }

    #[test]
    fn each_load_runs_on_its_protocol() {
        assert_eq!(Protocol::of_loads(&[Load::H1Large, Load::GrpcStream]), vec![Protocol::H1, Protocol::Grpc]);
        assert_eq!(
            Protocol::of_loads(&[Load::Grpc, Load::H2, Load::H1, Load::H2Large]),
            vec![Protocol::H1, Protocol::H2, Protocol::Grpc]
        );
        assert!(Protocol::of_loads(&[]).is_empty());
        for p in Protocol::ALL {
            assert_eq!(p.load().protocol(), p);
        }
    }

    #[test]
    fn idle_grpc_connections_are_measured_as_http2_ones() {
        assert_eq!(Protocol::idle_of(&Protocol::ALL), vec![Protocol::H1, Protocol::H2]);
        assert_eq!(Protocol::idle_of(&[Protocol::Grpc]), vec![Protocol::H2]);
        assert_eq!(Protocol::idle_of(&[Protocol::H1]), vec![Protocol::H1]);
        assert_eq!(Protocol::H2.idle_covers(), vec![Protocol::H2, Protocol::Grpc]);
        assert_eq!(Protocol::H1.idle_covers(), vec![Protocol::H1]);
    }
}
