//! The CA directory: its file names, `ca.json` (organisation, scope, CRL number) and `index.json`
//! (every certificate issued, and its revocation).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::id::{IdKind, IdPrefix, Identity};
use crate::pki::PkiError;
use crate::pki::files;
use crate::pki::keys::KeyType;

/// The CA certificate, PEM.
pub const CA_CERT: &str = "ca.crt";
/// The CA private key, PEM, mode 0600.
pub const CA_KEY: &str = "ca.key";
/// The CA's settings and counters.
pub const CA_CONFIG: &str = "ca.json";
/// The list of issued certificates.
pub const INDEX: &str = "index.json";
/// The current CRL, PEM.
pub const CRL: &str = "crl.pem";
/// A copy of every issued certificate, named by serial.
pub const ISSUED_DIR: &str = "issued";
/// Held while a command changes the CA.
pub const LOCK: &str = ".lock";

/// `ca.json`: what the CA is and may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// The organisation name put in the subject `O` of every certificate.
    pub organisation: String,
    /// The identifier prefixes this CA may vouch for (its trust scope, design §2).
    pub scopes: Vec<IdPrefix>,
    /// The CA key's type.
    pub key_type: KeyType,
    /// The number of the last CRL issued (0 before the first).
    pub crl_number: u64,
    /// When the CA was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
}

impl CaConfig {
    /// Whether one of the scopes covers `identity`.
    pub fn covers(&self, identity: &Identity) -> bool {
        self.scopes.iter().any(|s| identity.is_within(s))
    }
}

/// Why a certificate was revoked (RFC 5280 §5.3.1), the reasons an operator chooses from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationReason {
    /// No reason given; the CRL then carries no reason code, as RFC 5280 advises.
    Unspecified,
    /// The private key was lost, stolen or exposed.
    KeyCompromise,
    /// The holder changed (an agency merged, renamed or left the region).
    AffiliationChanged,
    /// Replaced by a newer certificate.
    Superseded,
    /// The application or gateway was shut down.
    CessationOfOperation,
}

impl RevocationReason {
    /// Every reason, for help texts.
    pub const ALL: [Self; 5] = [
        Self::Unspecified,
        Self::KeyCompromise,
        Self::AffiliationChanged,
        Self::Superseded,
        Self::CessationOfOperation,
    ];

    /// The command-line and index spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "key-compromise",
            Self::AffiliationChanged => "affiliation-changed",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessation-of-operation",
        }
    }

    /// The CRL reason code; `None` for unspecified.
    pub(crate) fn crl_code(self) -> Option<rcgen::RevocationReason> {
        match self {
            Self::Unspecified => None,
            Self::KeyCompromise => Some(rcgen::RevocationReason::KeyCompromise),
            Self::AffiliationChanged => Some(rcgen::RevocationReason::AffiliationChanged),
            Self::Superseded => Some(rcgen::RevocationReason::Superseded),
            Self::CessationOfOperation => Some(rcgen::RevocationReason::CessationOfOperation),
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RevocationReason {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            format!("unknown revocation reason {s:?}; use one of {}", Self::ALL.map(Self::as_str).join(", "))
        })
    }
}

/// One issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexEntry {
    /// The serial number, lowercase hex.
    pub serial: String,
    /// subsystem, server or admin.
    pub kind: IdKind,
    /// The identifier, e.g. `ID/PEMDA/1602/DINKES`.
    pub identity: String,
    /// SHA-256 of the certificate, colon hex.
    pub fingerprint_sha256: String,
    /// When it was issued.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// When it expires.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// When it was revoked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Why it was revoked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RevocationReason>,
}

/// `index.json`: every certificate the CA issued, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// The certificates.
    pub certificates: Vec<IndexEntry>,
}

impl Index {
    /// The entry with this serial (any case, colons and leading zeros ignored).
    pub fn find_mut(&mut self, serial: &str) -> Option<&mut IndexEntry> {
        let wanted = normalise_serial(serial)?;
        self.certificates.iter_mut().find(|e| normalise_serial(&e.serial).as_deref() == Some(wanted.as_str()))
    }

    /// The revoked entries.
    pub fn revoked(&self) -> impl Iterator<Item = &IndexEntry> {
        self.certificates.iter().filter(|e| e.revoked_at.is_some())
    }
}

/// A serial in canonical form (lowercase hex, no colons or leading zeros), or `None` when it is
/// not hex.
pub fn normalise_serial(serial: &str) -> Option<String> {
    let digits: String = serial.trim().chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
    let digits = digits.strip_prefix("0x").unwrap_or(&digits);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let trimmed = digits.trim_start_matches('0');
    Some(if trimmed.is_empty() { "0".to_owned() } else { trimmed.to_owned() })
}

/// Reads and parses a JSON state file.
pub(crate) fn load_json<T: DeserializeOwned>(path: &Path) -> Result<T, PkiError> {
    let text = std::fs::read_to_string(path).map_err(PkiError::io("read", path))?;
    serde_json::from_str(&text).map_err(|e| PkiError::Corrupt { path: path.to_owned(), reason: e.to_string() })
}

/// A state file's contents: pretty JSON with a final newline, for people who read it.
pub(crate) fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, PkiError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| PkiError::Encode(e.to_string()))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Writes a JSON state file atomically.
pub(crate) fn save_json<T: Serialize>(path: &Path, value: &T) -> Result<(), PkiError> {
    files::replace_atomically(path, &to_json(value)?, false)
}
