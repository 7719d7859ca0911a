//! An HTTPS client with a CA to trust and, when given, a client certificate: the demo's sample
//! calls and `splpd config apply --admin` (an operator's certificate) both use it.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// An HTTPS (or plain HTTP) client.
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client trusting the CA certificates in `ca_file` and, when given, presenting a client
/// certificate (`credentials`: its certificate and key files).
pub(crate) fn client(ca_file: &Path, credentials: Option<(&Path, &Path)>) -> anyhow::Result<HttpClient> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(ca_file, credentials)?)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

pub(crate) fn tls_config(ca_file: &Path, credentials: Option<(&Path, &Path)>) -> anyhow::Result<rustls::ClientConfig> {
    use splpd_certs::load::{read_certificates, read_private_key};
    let mut roots = rustls::RootCertStore::empty();
    for ca in read_certificates(ca_file)? {
        roots.add(ca).with_context(|| format!("adding {} as a CA to trust", ca_file.display()))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match credentials {
        Some((cert, key)) => builder
            .with_client_auth_cert(read_certificates(cert)?, read_private_key(key)?)
            .with_context(|| format!("using {} as a client certificate", cert.display()))?,
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}
