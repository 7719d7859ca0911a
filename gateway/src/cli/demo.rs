//! `splpd demo`: the local sandbox. It builds a dev PKI for the sample region of
//! `examples/region-1602.toml` (Kabupaten Ogan Komering Ilir, `ID/PEMDA/1602`), writes that
//! configuration beside it, checks it, and describes what it made in `demo.json`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use splpd_certs::id::{IdPrefix, Identity};
use splpd_certs::pki::{Ca, InitOptions, KeyType, LeafRequest};
use time::OffsetDateTime;

use super::out;

/// The sample configuration; the demo writes it verbatim, so the example is what users run.
const EXAMPLE_CONFIG: &str = include_str!("../../../examples/region-1602.toml");
const EXAMPLE_OPENAPI: &str = include_str!("../../../examples/openapi/nik-verify.json");

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  splpd demo\n  splpd demo --dir /tmp/splpd-demo")]
pub(crate) struct DemoArgs {
    /// Where to build the sandbox. A folder left by an earlier demo is rebuilt; any other
    /// non-empty folder is refused.
    #[arg(long, default_value = "splpd-demo")]
    dir: PathBuf,
}

/// A sample client of the demo, as `demo.json` lists it.
#[derive(Debug, Serialize)]
struct DemoClient {
    identity: String,
    kind: &'static str,
    role: &'static str,
    cert: PathBuf,
    key: PathBuf,
}

/// `demo.json`: what the sandbox holds, for people and for scripts.
#[derive(Debug, Serialize)]
struct DemoManifest {
    config: PathBuf,
    ca_file: PathBuf,
    crl_file: PathBuf,
    audit_dir: PathBuf,
    gateway: String,
    clients: Vec<DemoClient>,
}

const MANIFEST: &str = "demo.json";

pub(crate) fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let dir = prepare(&args.dir)?;
    let now = OffsetDateTime::now_utc();
    let pki = dir.join("pki");
    let prefix = |s: &str| -> anyhow::Result<IdPrefix> { Ok(s.parse()?) };

    let region = InitOptions::new("Dinas Kominfo Kabupaten Ogan Komering Ilir (demo)", vec![prefix("ID/PEMDA/1602")?]);
    let ca = Ca::init(&pki.join("ca"), &region, now).context("creating the demo region CA")?;
    let peer = InitOptions::new("Dinas Kominfo Kabupaten Ogan Komering Ulu (demo)", vec![prefix("ID/PEMDA/1601")?]);
    Ca::init(&pki.join("peer-1601"), &peer, now).context("creating the demo peer-region CA")?;

    let issue = |id: Identity, stem: &str| -> anyhow::Result<(PathBuf, PathBuf)> {
        let (cert, key) = (pki.join(format!("{stem}.crt")), pki.join(format!("{stem}.key")));
        let mut req = LeafRequest::new(id);
        if matches!(req.identity, Identity::Server(_)) {
            req = req.with_names(vec!["localhost".to_owned()], vec![[127, 0, 0, 1].into()]);
        }
        ca.issue(&req, KeyType::default(), &cert, &key, false, now)
            .with_context(|| format!("issuing the demo certificate {stem}"))?;
        Ok((cert, key))
    };
    let gateway: Identity = Identity::Server("ID/PEMDA/1602/gw1".parse()?);
    issue(gateway.clone(), "gw1")?;
    let samples = [
        ("ID/PEMDA/1602/RSUD", "rsud", "client granted the NIK check and referrals"),
        ("ID/PEMDA/1602/DINKES", "dinkes", "client granted the NIK check for health services"),
        ("ID/PEMDA/1602/DISHUB", "dishub", "client with no grant"),
        ("ID/PEMDA/1602/DISDUKCAPIL", "disdukcapil", "provider of the NIK check"),
    ];
    let mut clients = Vec::new();
    for (id, stem, role) in samples {
        let (cert, key) = issue(Identity::Subsystem(id.parse()?), stem)?;
        clients.push(DemoClient { identity: id.to_owned(), kind: "subsystem", role, cert, key });
    }
    let (cert, key) = issue(Identity::Admin("ID/PEMDA/1602/budi".parse()?), "admin-budi")?;
    clients.push(DemoClient { identity: "ID/PEMDA/1602/budi".to_owned(), kind: "admin", role: "operator", cert, key });

    std::fs::create_dir_all(dir.join("openapi"))?;
    std::fs::write(dir.join("openapi/nik-verify.json"), EXAMPLE_OPENAPI)?;
    let config_path = dir.join("splpd.toml");
    std::fs::write(&config_path, EXAMPLE_CONFIG)?;
    let config = splpd_gateway::config::load(&config_path)?;

    let manifest = DemoManifest {
        config: config_path.clone(),
        ca_file: pki.join("ca/ca.crt"),
        crl_file: pki.join("ca/crl.pem"),
        audit_dir: config.audit.dir.clone(),
        gateway: gateway.id_string(),
        clients,
    };
    std::fs::write(dir.join(MANIFEST), serde_json::to_vec_pretty(&manifest)?)?;

    out::line(&format!("splpd demo: a sandbox for the sample region ID/PEMDA/1602 in {}", dir.display()));
    out::line(&format!("  region CA       {} (scope ID/PEMDA/1602)", manifest.ca_file.display()));
    out::line(&format!("  gateway         {} -> {}", manifest.gateway, pki.join("gw1.crt").display()));
    for c in &manifest.clients {
        out::line(&format!("  {:<15} {} -> {} ({})", c.kind, c.identity, c.cert.display(), c.role));
    }
    out::line(&format!(
        "  configuration   {}: ok, {} services, {} grants, {} peer",
        config_path.display(),
        config.services.len(),
        config.grants.len(),
        config.peers.len()
    ));
    out::line(&format!("  manifest        {}", dir.join(MANIFEST).display()));
    out::line("");
    out::line("Try:");
    out::line(&format!("  splpd certs inspect {}", pki.join("rsud.crt").display()));
    out::line(&format!("  splpd config check {}", config_path.display()));
    out::line("The gateway itself (splpd serve) and sample exchanges join the demo with the exchange path.");
    Ok(ExitCode::SUCCESS)
}

/// Makes `dir` ready: created when missing, cleared when it holds an earlier demo, refused when it
/// holds anything else, so that the demo never deletes a user's files.
fn prepare(dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        if entries.next().is_some() {
            if !dir.join(MANIFEST).is_file() {
                bail!(
                    "{} is not empty and holds no earlier demo ({MANIFEST}); choose another folder with --dir",
                    dir.display()
                );
            }
            std::fs::remove_dir_all(dir).with_context(|| format!("clearing the earlier demo in {}", dir.display()))?;
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))
}
