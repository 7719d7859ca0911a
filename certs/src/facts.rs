//! The facts about a certificate that the gateway acts on: the identities its URI SANs carry,
//! whether it is a CA, its validity window and its fingerprint. Parsed once with x509-parser.

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::id::Identity;
use crate::profile::{IdentityError, identity_of};

/// What the gateway needs to know about one certificate.
#[derive(Debug, Clone)]
pub struct CertFacts {
    /// The one identity of its `urn:splp:` URI SAN, or why there is not exactly one.
    pub identity: Result<Identity, IdentityError>,
    /// Whether basicConstraints says CA:TRUE.
    pub is_ca: bool,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// The subject, as text.
    pub subject: String,
    /// SHA-256 of the DER encoding.
    pub sha256: [u8; 32],
}

/// Parses a DER certificate into the facts the gateway uses.
pub fn facts(der: &[u8]) -> Result<CertFacts, String> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
    if !rest.is_empty() {
        return Err("trailing bytes after the certificate".to_owned());
    }
    Ok(CertFacts {
        identity: identity_of(&cert),
        is_ca: cert.basic_constraints().ok().flatten().is_some_and(|bc| bc.value.ca),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        subject: cert.subject().to_string(),
        sha256: crate::load::sha256(der),
    })
}
