//! Reading certificates, private keys and CRLs from the files an operator names, PEM or DER,
//! with errors that say which file and what was found instead.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::{self, PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

/// What went wrong reading a certificate, key or CRL file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no object of the wanted kind.
    #[error("{} holds no {wanted}{}; check the path, or convert it with openssl", path.display(), found.as_deref().map(|f| format!(" (it holds {f})")).unwrap_or_default())]
    Missing {
        /// The file.
        path: PathBuf,
        /// What was wanted: "certificate", "private key", "CRL".
        wanted: &'static str,
        /// What the file holds instead, if that can be told.
        found: Option<String>,
    },
    /// The PEM text is malformed.
    #[error("{} is not valid PEM: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        reason: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError::Read { path: path.to_owned(), source })
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// The PEM labels in a file, for saying what it holds when it lacks what was wanted.
fn labels(bytes: &[u8]) -> Option<String> {
    let mut kinds = Vec::new();
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
        match item {
            Ok((kind, _)) => kinds.push(format!("{kind:?}")),
            Err(_) => break,
        }
    }
    (!kinds.is_empty()).then(|| kinds.join(", "))
}

fn pem_error(path: &Path, e: &pem::Error) -> LoadError {
    LoadError::Pem { path: path.to_owned(), reason: e.to_string() }
}

/// Reads every certificate in a PEM file (in order), or the one certificate of a DER file.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let bytes = read(path)?;
    if !looks_like_pem(&bytes) {
        return if bytes.first() == Some(&0x30) {
            Ok(vec![CertificateDer::from(bytes)])
        } else {
            Err(LoadError::Missing { path: path.to_owned(), wanted: "certificate", found: None })
        };
    }
    let certs =
        CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>().map_err(|e| pem_error(path, &e))?;
    if certs.is_empty() {
        return Err(LoadError::Missing { path: path.to_owned(), wanted: "certificate", found: labels(&bytes) });
    }
    Ok(certs)
}

/// Reads the private key of a PEM file (PKCS#8, SEC1 or PKCS#1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, LoadError> {
    let bytes = read(path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => {
            Err(LoadError::Missing { path: path.to_owned(), wanted: "private key", found: labels(&bytes) })
        }
        Err(e) => Err(pem_error(path, &e)),
    }
}

/// Reads every CRL in a PEM file, or the one CRL of a DER file.
pub fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, LoadError> {
    let bytes = read(path)?;
    if !looks_like_pem(&bytes) {
        return if bytes.first() == Some(&0x30) {
            Ok(vec![CertificateRevocationListDer::from(bytes)])
        } else {
            Err(LoadError::Missing { path: path.to_owned(), wanted: "CRL", found: None })
        };
    }
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, &e))?;
    if crls.is_empty() {
        return Err(LoadError::Missing { path: path.to_owned(), wanted: "CRL", found: labels(&bytes) });
    }
    Ok(crls)
}

/// Checks that `key` is the private key of the first certificate of `chain`.
pub fn check_key_pair(chain: &[CertificateDer<'static>], key: &PrivateKeyDer<'_>) -> Result<(), String> {
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(key)
        .map_err(|e| format!("the private key is of no supported type ({e}); use ECDSA P-256/P-384, Ed25519 or RSA"))?;
    rustls::sign::CertifiedKey::new(chain.to_vec(), signer)
        .keys_match()
        .map_err(|_| "the private key does not belong to the certificate".to_owned())
}

/// The SHA-256 fingerprint of a DER object, the form identity mappings use.
pub fn sha256(der: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_what_a_file_holds_when_it_is_the_wrong_kind() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, key.serialize_pem()).unwrap();
        let err = read_certificates(&path).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("holds no certificate") && text.contains("PrivateKey"), "{text}");
        assert!(read_private_key(&path).is_ok());
        let missing = dir.path().join("nope.pem");
        assert!(matches!(read_crls(&missing), Err(LoadError::Read { .. })));
    }

    #[test]
    fn reads_pem_and_der_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap().self_signed(&key).unwrap();
        let pem_path = dir.path().join("c.pem");
        std::fs::write(&pem_path, format!("{}{}", cert.pem(), cert.pem())).unwrap();
        assert_eq!(read_certificates(&pem_path).unwrap().len(), 2);
        let der_path = dir.path().join("c.der");
        std::fs::write(&der_path, cert.der()).unwrap();
        let certs = read_certificates(&der_path).unwrap();
        assert_eq!(certs[0].as_ref(), cert.der().as_ref());
        assert_eq!(sha256(&certs[0]), sha256(cert.der()));
    }
}
