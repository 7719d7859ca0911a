//! A region's gateway started in-process: a TOML configuration written beside the [`Pki`]
//! (listeners on `127.0.0.1:0`), loaded through `config::parse` exactly as `splpd serve` loads
//! its file, and served by `server::start` with a [`MemorySink`] audit log that tests read back.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use splpd_gateway::audit::{AuditSink, ExchangeRecord, MemorySink};
use splpd_gateway::server::{self, Running};
use splpd_proto::v1::RecordKind;

use crate::client::{self, BoxError, Call, Proto, Reply};
use crate::pki::{ClientCert, GATEWAY_ID, PEER_GATEWAY_ID, PEER_SCOPE, Pki, REGION_SCOPE};

/// The mTLS listener every region has.
pub const PUBLIC: &str = "public";

static CONFIGS: AtomicUsize = AtomicUsize::new(0);

/// Builds a region's configuration piece by piece.
#[derive(Debug)]
pub struct RegionBuilder<'p> {
    pki: &'p Pki,
    gateway: String,
    cert: String,
    anchors: String,
    roots: std::path::PathBuf,
    listeners: String,
    services: String,
    policy: String,
    extra: String,
}

impl<'p> RegionBuilder<'p> {
    /// A gateway `ID/PEMDA/1602/gw1` with an mTLS listener [`PUBLIC`] on `127.0.0.1:0` and two
    /// trust anchors: `region` (scope `ID/PEMDA/1602`, with its CRL) and `peer-1601` (scope
    /// `ID/PEMDA/1601`, with its CRL).
    pub fn new(pki: &'p Pki) -> Self {
        Self {
            pki,
            gateway: GATEWAY_ID.to_owned(),
            cert: "gw1".to_owned(),
            anchors: format!(
                "[[trust_anchor]]\nname = \"region\"\nca = \"region/ca.crt\"\nscopes = [\"{REGION_SCOPE}\"]\ncrls = [\"region/crl.pem\"]\n\n\
                 [[trust_anchor]]\nname = \"peer-1601\"\nca = \"peer-1601/ca.crt\"\nscopes = [\"{PEER_SCOPE}\"]\ncrls = [\"peer-1601/crl.pem\"]\n\n"
            ),
            roots: pki.region_ca_cert(),
            listeners: format!("[[listener]]\nname = \"{PUBLIC}\"\naddress = \"127.0.0.1:0\"\n\n"),
            services: String::new(),
            policy: String::new(),
            extra: String::new(),
        }
    }

    /// The neighbouring region's gateway `ID/PEMDA/1601/gw1` (see [`Pki::peer_gateway`]), with
    /// its own CA as trust anchor `region` (scope `ID/PEMDA/1601`) and this test's region CA as
    /// `peer-1602` (scope `ID/PEMDA/1602`); an mTLS listener [`PUBLIC`] as in [`Self::new`].
    pub fn peer_region(pki: &'p Pki) -> Self {
        pki.peer_gateway();
        Self {
            gateway: PEER_GATEWAY_ID.to_owned(),
            cert: "gw-1601".to_owned(),
            anchors: format!(
                "[[trust_anchor]]\nname = \"region\"\nca = \"peer-1601/ca.crt\"\nscopes = [\"{PEER_SCOPE}\"]\ncrls = [\"peer-1601/crl.pem\"]\n\n\
                 [[trust_anchor]]\nname = \"peer-1602\"\nca = \"region/ca.crt\"\nscopes = [\"{REGION_SCOPE}\"]\ncrls = [\"region/crl.pem\"]\n\n"
            ),
            roots: pki.peer_ca_cert(),
            ..Self::new(pki)
        }
    }

    /// A `[[service]]` with one upstream and further `key = value` lines.
    pub fn service(mut self, id: &str, upstream: &str, extra: &str) -> Self {
        let _ = write!(self.services, "[[service]]\nid = \"{id}\"\nupstreams = [\"{upstream}\"]\n{extra}\n\n");
        self
    }

    /// A `[[service]]` with several upstreams and further `key = value` lines.
    pub fn service_with(mut self, id: &str, upstreams: &[&str], extra: &str) -> Self {
        let list: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
        let _ = write!(self.services, "[[service]]\nid = \"{id}\"\nupstreams = [{}]\n{extra}\n\n", list.join(", "));
        self
    }

    /// A `[[grant]]` with these `key = value` lines.
    pub fn grant(mut self, body: &str) -> Self {
        let _ = write!(self.policy, "[[grant]]\n{body}\n\n");
        self
    }

    /// A cleartext listener on `127.0.0.1:0` where `clients` are opted in to `http`.
    pub fn http_listener(self, name: &str, clients: &[&str]) -> Self {
        self.listener(name, "http", clients)
    }

    /// A TLS listener on `127.0.0.1:0` where `clients` are opted in to `tls` (TLS without a client
    /// certificate); every other client still needs one.
    pub fn tls_listener(self, name: &str, clients: &[&str]) -> Self {
        self.listener(name, "tls", clients)
    }

    fn listener(mut self, name: &str, connection: &str, clients: &[&str]) -> Self {
        let opt_ins: Vec<String> =
            clients.iter().map(|c| format!("{{ client = \"{c}\", connection = \"{connection}\" }}")).collect();
        let _ = write!(
            self.listeners,
            "[[listener]]\nname = \"{name}\"\naddress = \"127.0.0.1:0\"\nclients = [{}]\n\n",
            opt_ins.join(", ")
        );
        self
    }

    /// Any further TOML (groups, quotas, `[limits]`…).
    pub fn toml(mut self, text: &str) -> Self {
        self.extra.push_str(text);
        self.extra.push_str("\n\n");
        self
    }

    /// The configuration file's text.
    pub fn text(&self) -> String {
        format!(
            r#"[gateway]
id = "{gateway}"
cert = "{cert}.crt"
key = "{cert}.key"

{listeners}{anchors}{services}{policy}{extra}"#,
            gateway = self.gateway,
            cert = self.cert,
            anchors = self.anchors,
            listeners = self.listeners,
            services = self.services,
            policy = self.policy,
            extra = self.extra,
        )
    }

    /// Writes the configuration beside the PKI, validates it as `splpd` does, and starts the
    /// gateway on the current runtime. Panics with the validator's report when it is refused.
    pub async fn start(self) -> Region {
        let n = CONFIGS.fetch_add(1, Ordering::Relaxed);
        let path = self.pki.dir().join(format!("splpd-{n}.toml"));
        let text = self.text();
        std::fs::write(&path, &text).expect("write configuration");
        let config = match splpd_gateway::config::parse(&path, &text) {
            Ok(config) => config,
            Err(e) => panic!("the configuration was refused:\n{e}\n--- {}\n{text}", path.display()),
        };
        let audit = Arc::new(MemorySink::new());
        let sink: Arc<dyn AuditSink> = Arc::clone(&audit) as Arc<dyn AuditSink>;
        let running = server::start(config, sink).await.expect("start the gateway");
        let roots = client::read_roots(&self.roots);
        Region { running: Some(running), audit, roots, config_path: path }
    }
}

/// A running gateway.
#[derive(Debug)]
pub struct Region {
    running: Option<Running>,
    audit: Arc<MemorySink>,
    roots: Vec<CertificateDer<'static>>,
    config_path: std::path::PathBuf,
}

impl Region {
    fn running(&self) -> &Running {
        self.running.as_ref().expect("the gateway is running")
    }

    /// The gateway object, for what it reports of itself (such as its upstreams' status), and to
    /// reload its configuration.
    pub fn gateway(&self) -> &Arc<splpd_gateway::exchange::Gateway> {
        self.running().gateway()
    }

    /// Where the named listener is bound.
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.running().addr(listener).unwrap_or_else(|| panic!("no listener {listener:?}"))
    }

    /// The edge counters of the named listener.
    pub fn edge_stats(&self, listener: &str) -> Arc<splpd_gateway::edge::EdgeStats> {
        Arc::clone(self.running().edge_stats(listener).unwrap_or_else(|| panic!("no listener {listener:?}")))
    }

    /// The configuration file it was started from.
    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    /// The CA certificates a client trusts for the gateway's server certificate.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// A gRPC client of the test service on a new HTTP/2 connection to the [`PUBLIC`] listener,
    /// presenting `cert`.
    pub async fn grpc_client(&self, cert: Option<&ClientCert>) -> crate::grpc::ProbeClient {
        crate::grpc::ProbeClient::connect(self.addr(PUBLIC), &self.roots, cert).await.expect("gRPC connection")
    }

    /// The same, for a client that reads slowly: the gateway may send at most `window` bytes of
    /// a stream ahead of what it has read.
    pub async fn grpc_client_with_window(&self, cert: Option<&ClientCert>, window: u32) -> crate::grpc::ProbeClient {
        let channel = crate::grpc::channel_with_window(self.addr(PUBLIC), &self.roots, cert, Some(window)).await;
        crate::grpc::ProbeClient::new(channel.expect("gRPC connection"))
    }

    /// A tonic channel on a new HTTP/2 connection to the [`PUBLIC`] listener, presenting `cert`,
    /// for any generated gRPC client.
    pub async fn grpc_channel(&self, cert: Option<&ClientCert>) -> tonic::transport::Channel {
        crate::grpc::channel(self.addr(PUBLIC), &self.roots, cert).await.expect("gRPC connection")
    }

    /// One call over HTTPS to the [`PUBLIC`] listener, presenting `cert`.
    pub async fn call(&self, cert: Option<&ClientCert>, proto: Proto, call: Call) -> Result<Reply, BoxError> {
        self.call_on(PUBLIC, cert, proto, call).await
    }

    /// One call over HTTPS to the named listener, presenting `cert`.
    pub async fn call_on(
        &self,
        listener: &str,
        cert: Option<&ClientCert>,
        proto: Proto,
        call: Call,
    ) -> Result<Reply, BoxError> {
        let config = client::tls_config(&self.roots, cert, proto);
        client::send_tls(self.addr(listener), config, proto, call).await
    }

    /// What the OpenTelemetry exporter has done; panics without `[telemetry]`.
    pub fn telemetry(&self) -> Arc<splpd_gateway::telemetry::ExportStats> {
        Arc::clone(self.running().telemetry().expect("the configuration has [telemetry]"))
    }

    /// Where the admin listener is bound; panics without `[admin]`.
    pub fn admin_addr(&self) -> SocketAddr {
        self.running().admin_addr().expect("the configuration has an [admin] listener")
    }

    /// One call over HTTPS/1.1 to the admin listener, presenting `cert`.
    pub async fn call_admin(&self, cert: Option<&ClientCert>, call: Call) -> Result<Reply, BoxError> {
        let config = client::tls_config(&self.roots, cert, Proto::H1);
        client::send_tls(self.admin_addr(), config, Proto::H1, call).await
    }

    /// One call over cleartext HTTP/1.1 to the named listener.
    pub async fn call_plain(&self, listener: &str, call: Call) -> Result<Reply, BoxError> {
        client::send_plain(self.addr(listener), call).await
    }

    /// Every audit record so far.
    pub fn records(&self) -> Vec<ExchangeRecord> {
        self.audit.records()
    }

    /// The audit sink itself: to read the mode each record was appended in, or to make it fail.
    pub fn audit(&self) -> &MemorySink {
        &self.audit
    }

    /// The audit records, once there are at least `n` (waits at most 5 s, then returns what
    /// there is), for exchanges whose client went away early or broke off.
    pub async fn wait_records(&self, n: usize) -> Vec<ExchangeRecord> {
        for _ in 0..500 {
            let records = self.records();
            if records.len() >= n {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.records()
    }

    /// The one exchange record of exchange `id`; panics unless there is exactly one (waits at
    /// most 5 s for it to appear, and a little longer for a duplicate that would follow).
    pub async fn record(&self, id: &str) -> ExchangeRecord {
        // A strict exchange also has a request record; this is the exchange's own.
        let matching = || {
            self.records()
                .into_iter()
                .filter(|r| r.exchange_id == id && r.kind() == RecordKind::Exchange)
                .collect::<Vec<_>>()
        };
        for _ in 0..500 {
            if !matching().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let found = matching();
        assert_eq!(found.len(), 1, "exchange {id} should have exactly one audit record: {found:#?}");
        found.into_iter().next().expect("one record")
    }

    /// Stops the gateway as SIGTERM does (at most 5 s for open exchanges), flushes the audit log,
    /// and returns every audit record.
    pub async fn stop_with_records(mut self) -> Vec<ExchangeRecord> {
        if let Some(running) = self.running.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), running.stop()).await;
        }
        self.audit.records()
    }

    /// Stops the gateway (at most 5 s for open exchanges) and flushes the audit log.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), running.stop()).await;
        }
    }
}
