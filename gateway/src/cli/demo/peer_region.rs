//! The demo's second region: Kabupaten Ogan Komering Ulu (`ID/PEMDA/1601`), whose gateway runs
//! beside the sample region's in the same process, with its own CA, configuration and audit log.
//! The two are configured as each other's `[[peer]]`, so that an agency of the sample region can
//! call a service of the neighbour through both gateways, and each logs its side of the call.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use serde::Serialize;
use splpd_certs::id::Identity;
use splpd_certs::pki::{Ca, KeyType, LeafRequest};
use splpd_gateway::workers::Workers;
use time::OffsetDateTime;

use crate::cli::serve::Served;

/// The neighbour's gateway.
pub(super) const GATEWAY: &str = "ID/PEMDA/1601/gw1";
/// The neighbour's NIK check, which sample-region clients call across.
pub(super) const NIK_VERIFY: &str = "ID/PEMDA/1601/DISDUKCAPIL/nik-verify";
/// The sample region's gateway, the neighbour's peer.
const SAMPLE_GATEWAY: &str = "ID/PEMDA/1602/gw1";
/// The sample-region client the neighbour grants its NIK check.
const GRANTED: &str = "ID/PEMDA/1602/RSUD";

/// The neighbour's gateway certificate, issued by its own CA (made beside the region CA in `pki/`).
pub(super) fn issue_gateway_cert(pki: &Path, now: OffsetDateTime) -> anyhow::Result<()> {
    let ca = Ca::open(&pki.join("peer-1601")).context("opening the demo peer-region CA")?;
    let req = LeafRequest::new(Identity::Server(GATEWAY.parse()?))
        .with_names(vec!["localhost".to_owned()], vec![[127, 0, 0, 1].into()]);
    ca.issue(&req, KeyType::default(), &pki.join("gw-1601.crt"), &pki.join("gw-1601.key"), false, now)
        .context("issuing the demo peer region's gateway certificate")?;
    Ok(())
}

/// The neighbour's configuration: its listener at `public`, the sample NIK check at `nik` as its
/// own service (the demo has one NIK registry for both), a grant for the sample region's RSUD,
/// and the sample region's gateway at `sample` as its peer.
pub(super) fn config_text(public: SocketAddr, sample: SocketAddr, nik: SocketAddr) -> String {
    format!(
        r#"# Written by `splpd demo`: the neighbouring region of the sandbox, Kabupaten Ogan Komering Ulu,
# whose gateway the demo runs beside the sample region's. The two are each other's [[peer]].

[gateway]
id = "{GATEWAY}"
name = "SPLPD Kabupaten Ogan Komering Ulu (demo)"
cert = "pki/gw-1601.crt"
key = "pki/gw-1601.key"

[[listener]]
name = "public"
address = "{public}"

# Its own CA vouches for its own region only…
[[trust_anchor]]
name = "region"
ca = "pki/peer-1601/ca.crt"
scopes = ["ID/PEMDA/1601"]
crls = ["pki/peer-1601/crl.pem"]

# …and the sample region's CA for that region's gateway alone: its agencies call here through it,
# and it names them ([[peer]] authoritative).
[[trust_anchor]]
name = "peer-1602"
ca = "pki/ca/ca.crt"
scopes = ["ID/PEMDA/1602/gw1"]
crls = ["pki/ca/crl.pem"]

[[service]]
id = "{NIK_VERIFY}"
description = "Verifikasi NIK (demo: the sample region's registry stands in)"
upstreams = ["http://{nik}"]

# A call from the sample region is authorised here too, by this region's own grants.
[[grant]]
service = "{NIK_VERIFY}"
client = "{GRANTED}"
endpoints = ["GET /nik/*"]

[[peer]]
id = "{SAMPLE_GATEWAY}"
endpoints = ["https://{sample}"]
authoritative = ["ID/PEMDA/1602"]
trust_anchor = "peer-1602"

[audit]
dir = "audit-1601"
"#
    )
}

/// The running neighbour.
pub(super) struct PeerRegion {
    served: Served,
    /// Its mTLS listener.
    pub(super) url: String,
    /// Its audit log.
    pub(super) audit_dir: PathBuf,
}

impl std::fmt::Debug for PeerRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerRegion").field("url", &self.url).finish_non_exhaustive()
    }
}

/// What `demo.json` says of the neighbour.
#[derive(Debug, Serialize)]
pub(super) struct DemoPeerRegion {
    pub(super) gateway: &'static str,
    pub(super) gateway_url: String,
    pub(super) config: PathBuf,
    pub(super) ca_file: PathBuf,
    pub(super) audit_log: PathBuf,
    pub(super) service: &'static str,
    pub(super) note: &'static str,
}

impl PeerRegion {
    /// Starts the neighbour's gateway from the configuration at `config_path`.
    pub(super) async fn start(config_path: &Path, workers: &Arc<Workers>) -> anyhow::Result<Self> {
        let (config, text) = splpd_gateway::config::load_with_text(config_path)?;
        let audit_dir = config.audit.dir.clone();
        // As under `splpd serve`: an edit of its file is checked, logged and put in force.
        let served = Served::start(config_path, config, &text, workers, "the peer region's gateway").await?;
        let public = served.running.addr("public").context("the peer region's gateway has no listener \"public\"")?;
        Ok(Self { served, url: format!("https://{public}"), audit_dir })
    }

    /// Stops it and flushes its audit log.
    pub(super) async fn stop(self) -> anyhow::Result<()> {
        self.served.stop().await.context("flushing the peer region's audit log")
    }
}
