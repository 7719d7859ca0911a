//! Certificate signing requests: reading an agency's CSR for the CA (verify its self-signature,
//! keep only its public key, note what identity it claims) and making one on the agency's side,
//! so that the agency's private key never leaves it.

use std::fmt;
use std::path::Path;

use rcgen::{CertificateParams, DistinguishedName, DnType, SanType, SubjectPublicKeyInfo};
use x509_parser::extensions::{GeneralName, ParsedExtension};

use crate::id::Identity;
use crate::inspect::{self, ObjectKind};
use crate::pki::PkiError;
use crate::pki::files::{self, OutputFile};
use crate::pki::keys::KeyType;
use crate::profile::{self, MIN_RSA_BITS};

/// An identity a CSR names, somewhere the CA could mistake for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsrClaim {
    /// A `urn:splp:` URI in the requested subject alternative names.
    Uri(Identity),
    /// A `urn:splp:` URI that does not parse.
    MalformedUri(String),
    /// A subject CN that looks like an identifier (it contains `/` or is a `urn:splp:` URI).
    CommonName(String),
    /// A requested extension that cannot be read, so what it claims is unknown.
    Unreadable(String),
}

impl CsrClaim {
    /// Whether the claim names exactly `requested`.
    pub fn names(&self, requested: &Identity) -> bool {
        match self {
            Self::Uri(id) => id == requested,
            Self::CommonName(cn) => match Identity::from_urn(cn) {
                Ok(Some(id)) => id == *requested,
                _ => *cn == profile::identifier(requested),
            },
            Self::MalformedUri(_) | Self::Unreadable(_) => false,
        }
    }
}

impl fmt::Display for CsrClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uri(id) => write!(f, "{id} (URI {} in its subject alternative name)", id.to_urn()),
            Self::MalformedUri(uri) => write!(f, "the malformed identity URI {uri:?}"),
            Self::CommonName(cn) => write!(f, "CN={cn} in its subject"),
            Self::Unreadable(reason) => write!(f, "something unreadable in its requested extensions ({reason})"),
        }
    }
}

/// A CSR whose signature verified: its public key and what it claims.
#[derive(Debug, Clone)]
pub struct VerifiedCsr {
    /// The public key, the only thing taken from the CSR into a certificate.
    pub public_key: SubjectPublicKeyInfo,
    /// The identities the CSR names.
    pub claims: Vec<CsrClaim>,
}

/// Reads a CSR (PEM or DER) from `path`, verifies its self-signature and extracts its key.
pub fn read_csr(path: &Path) -> Result<VerifiedCsr, PkiError> {
    let bytes = std::fs::read(path).map_err(PkiError::io("read", path))?;
    let read_err = |cause| PkiError::Read { path: path.to_owned(), cause };
    let der = inspect::decode_as(&bytes, ObjectKind::Csr).map_err(read_err)?;
    let csr = inspect::parse_csr(&der).map_err(read_err)?;
    csr.verify_signature().map_err(|e| PkiError::CsrSignature { reason: e.to_string() })?;

    let info = &csr.certification_request_info;
    let key_err = |reason: String| PkiError::CsrKey { reason };
    let key_type = profile::key_type_name(&info.subject_pki);
    if let Some(bits) = key_type.strip_prefix("RSA ").and_then(|b| b.parse::<usize>().ok())
        && bits < MIN_RSA_BITS
    {
        return Err(key_err(format!("the RSA key has {bits} bits; at least {MIN_RSA_BITS} are required")));
    }
    let public_key = SubjectPublicKeyInfo::from_der(info.subject_pki.raw).map_err(|_| {
        key_err(format!("{key_type} keys are not supported; use ECDSA P-256 or P-384, Ed25519, or RSA of {MIN_RSA_BITS} bits or more"))
    })?;

    let mut claims = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        match ext {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    if let GeneralName::URI(uri) = name {
                        match Identity::from_urn(uri) {
                            Ok(Some(id)) => claims.push(CsrClaim::Uri(id)),
                            Ok(None) => {}
                            Err(_) => claims.push(CsrClaim::MalformedUri((*uri).to_owned())),
                        }
                    }
                }
            }
            ParsedExtension::ParseError { error } => claims.push(CsrClaim::Unreadable(error.to_string())),
            _ => {}
        }
    }
    for cn in info.subject.iter_common_name() {
        let cn = cn.as_str().unwrap_or_default();
        let looks_like_identity = cn.contains('/') || matches!(Identity::from_urn(cn), Ok(Some(_)) | Err(_));
        if looks_like_identity {
            claims.push(CsrClaim::CommonName(cn.to_owned()));
        }
    }
    Ok(VerifiedCsr { public_key, claims })
}

/// A fresh key and a CSR for it, PEM.
#[derive(Debug)]
pub struct CsrBundle {
    /// The private key, PKCS#8 PEM. Keep it secret.
    pub key_pem: String,
    /// The CSR, PEM, to send to the CA.
    pub csr_pem: String,
}

/// Generates a key and a CSR naming `identity` (CN = identifier, URI SAN = its URN). The CA still
/// takes the identity from its operator; the names in the CSR let it notice a CSR sent for the
/// wrong identity.
pub fn make_csr(identity: &Identity, key_type: KeyType) -> Result<CsrBundle, PkiError> {
    let key = key_type.generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, profile::identifier(identity));
    params.distinguished_name = dn;
    let urn = identity.to_urn();
    let uri = urn.as_str().try_into().map_err(|_| profile::ProfileError::NotAscii { value: urn.clone() })?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    let csr = params.serialize_request(&key)?;
    Ok(CsrBundle { key_pem: key.serialize_pem(), csr_pem: csr.pem()? })
}

/// Generates a key and CSR for `identity` and writes them to `key_path` (mode 0600) and
/// `csr_path`. Both paths are checked before either is written.
pub fn write_csr(
    identity: &Identity,
    key_type: KeyType,
    key_path: &Path,
    csr_path: &Path,
    force: bool,
) -> Result<CsrBundle, PkiError> {
    files::check_outputs([key_path, csr_path], force)?;
    let bundle = make_csr(identity, key_type)?;
    files::write_outputs(
        &[
            OutputFile { path: key_path.to_owned(), contents: bundle.key_pem.clone().into_bytes(), secret: true },
            OutputFile { path: csr_path.to_owned(), contents: bundle.csr_pem.clone().into_bytes(), secret: false },
        ],
        force,
    )?;
    Ok(bundle)
}
