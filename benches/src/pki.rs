//! The benchmark's dev PKI, made with the project's `certs` crate: a region CA, the proxy's
//! server certificate (for `localhost` and 127.0.0.1, used by every proxy under test) and the
//! load generator's client certificate; and the rustls configurations built from them.

use std::path::PathBuf;
use std::sync::Arc;

use splpd_certs::id::Identity;
use splpd_certs::pki::{Ca, InitOptions, KeyType, LeafRequest};

/// A temporary folder holding the PKI and every proxy's configuration and logs.
#[derive(Debug)]
pub(crate) struct Sandbox {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) ca: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
    pub(crate) client_cert: PathBuf,
    pub(crate) client_key: PathBuf,
}

impl Sandbox {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let now = time::OffsetDateTime::now_utc();
        let ca =
            Ca::init(&dir.path().join("ca"), &InitOptions::new("Bench Region", vec!["ID/PEMDA/1602".parse()?]), now)?;
        let issue = |id: Identity, stem: &str, names: bool| -> anyhow::Result<(PathBuf, PathBuf)> {
            let (c, k) = (dir.path().join(format!("{stem}.crt")), dir.path().join(format!("{stem}.key")));
            let mut req = LeafRequest::new(id);
            if names {
                req = req.with_names(vec!["localhost".into()], vec![[127, 0, 0, 1].into()]);
            }
            ca.issue(&req, KeyType::default(), &c, &k, false, now)?;
            Ok((c, k))
        };
        let (server_cert, server_key) = issue(Identity::Server("ID/PEMDA/1602/gw1".parse()?), "gw1", true)?;
        let (client_cert, client_key) = issue(Identity::Subsystem("ID/PEMDA/1602/BENCH".parse()?), "client", false)?;
        let ca = dir.path().join("ca/ca.crt");
        Ok(Self { dir, ca, server_cert, server_key, client_cert, client_key })
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The server certificate and key in one PEM file, as haproxy's `crt` takes them.
    pub(crate) fn server_pem(&self) -> anyhow::Result<PathBuf> {
        let path = self.path("gw1.pem");
        let mut pem = std::fs::read(&self.server_cert)?;
        pem.extend(std::fs::read(&self.server_key)?);
        std::fs::write(&path, pem)?;
        Ok(path)
    }

    /// The load generator's TLS configuration offering `alpn`, with session resumption off so
    /// that every new connection is a full mTLS handshake.
    pub(crate) fn client_tls(&self, alpn: &[u8]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        for c in splpd_certs::load::read_certificates(&self.ca)? {
            roots.add(c)?;
        }
        let chain = splpd_certs::load::read_certificates(&self.client_cert)?;
        let key = splpd_certs::load::read_private_key(&self.client_key)?;
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        cfg.alpn_protocols = vec![alpn.to_vec()];
        cfg.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(cfg))
    }
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}
