//! The facts about a certificate that the gateway acts on: the identities its URI SANs carry,
//! whether it is a CA, its validity window and its fingerprint. Parsed once with x509-parser.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::id::{IdError, Identity};

/// What the gateway needs to know about one certificate.
#[derive(Debug, Clone)]
pub struct CertFacts {
    /// Identities from `urn:splp:` URI SANs, each parsed (a malformed one is kept as its error).
    pub identities: Vec<Result<Identity, IdError>>,
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

impl CertFacts {
    /// The one well-formed identity the certificate carries, or why there is not exactly one.
    pub fn identity(&self) -> Result<&Identity, String> {
        let mut good = self.identities.iter().filter_map(|r| r.as_ref().ok());
        match (good.next(), good.next()) {
            (Some(id), None) => Ok(id),
            (Some(_), Some(_)) => Err("it carries more than one urn:splp: identity".to_owned()),
            (None, _) => match self.identities.iter().find_map(|r| r.as_ref().err()) {
                Some(err) => Err(format!("its identity URI is malformed: {err}")),
                None => Err("it carries no urn:splp: identity in its subject alternative names".to_owned()),
            },
        }
    }
}

/// Parses a DER certificate into the facts the gateway uses.
pub fn facts(der: &[u8]) -> Result<CertFacts, String> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
    if !rest.is_empty() {
        return Err("trailing bytes after the certificate".to_owned());
    }
    let mut identities = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                if let Some(parsed) = Identity::from_urn(uri).transpose() {
                    identities.push(parsed);
                }
            }
        }
    }
    let is_ca = cert.basic_constraints().ok().flatten().is_some_and(|bc| bc.value.ca);
    Ok(CertFacts {
        identities,
        is_ca,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        subject: cert.subject().to_string(),
        sha256: crate::load::sha256(der),
    })
}
