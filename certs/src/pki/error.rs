//! What can go wrong running the CA. Each message says what was wrong and, where there is one,
//! what to do about it; nothing is written when an operation is refused.

use std::io;
use std::path::PathBuf;

use time::OffsetDateTime;

use crate::id::IdPrefix;
use crate::inspect::{InspectError, rfc3339};
use crate::pki::store::RevocationReason;
use crate::profile::ProfileError;

/// An error from a CA operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A file or directory could not be read or written.
    // The cause is part of the message rather than a `source`, so that printing the error
    // chain does not repeat it.
    #[error("cannot {action} {}: {cause}", path.display())]
    Io {
        /// What was being done ("read", "create", ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        cause: io::Error,
    },
    /// An output file exists and replacing it was not asked for.
    #[error("{} already exists; nothing was written", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// Two outputs of one command name the same file.
    #[error("two of the files to write are both {}; give each its own path", path.display())]
    SamePath {
        /// The path given twice.
        path: PathBuf,
    },
    /// `init` found a CA already in the directory.
    #[error("{file} already exists in {}; nothing was written", dir.display())]
    CaExists {
        /// The CA directory.
        dir: PathBuf,
        /// The first CA file found.
        file: &'static str,
    },
    /// The directory holds no CA.
    #[error("{} is not a CA directory: {} is missing; create a CA there with `splpd certs init-ca`", dir.display(), missing.display())]
    NoCa {
        /// The directory given.
        dir: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// A CA file does not parse or is inconsistent.
    #[error("{} is damaged: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another command holds the CA's lock.
    #[error(
        "another `splpd certs` command is using the CA ({} exists); wait for it to finish, or remove that file if no such command is running",
        path.display()
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// `init` was given no scope.
    #[error("a CA needs at least one scope: the identifier prefixes it may vouch for, e.g. ID/PEMDA/1602")]
    NoScope,
    /// The identity is outside every scope of the CA.
    #[error(
        "{identity} is outside the scope of this CA, which may only vouch for identifiers under {}; a certificate for it must come from the CA responsible for it",
        scopes_list(scopes)
    )]
    OutOfScope {
        /// The identity asked for (kind and identifier).
        identity: String,
        /// The CA's scopes.
        scopes: Vec<IdPrefix>,
    },
    /// Building the certificate's contents failed.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The validity asked for does not work.
    #[error("{0}")]
    Validity(String),
    /// A CSR, certificate or CRL file could not be read.
    #[error("{}: {cause}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What is wrong with its contents.
        cause: InspectError,
    },
    /// A CSR's self-signature does not verify.
    #[error(
        "the CSR's signature does not verify ({reason}); it was altered or damaged on the way, so ask the agency to send it again"
    )]
    CsrSignature {
        /// The verifier's message.
        reason: String,
    },
    /// A CSR's public key type cannot be used.
    #[error("the CSR's public key cannot be used: {reason}")]
    CsrKey {
        /// What is wrong with it.
        reason: String,
    },
    /// A CSR names a different identity than the operator asked for.
    #[error(
        "the CSR claims {}, but the certificate was requested for {requested}; nothing was issued. The identity always comes from the operator, never from the CSR: check that this is the agency's CSR for {requested}",
        claimed.join(" and ")
    )]
    CsrIdentityMismatch {
        /// What the CSR claims, each with where it was found.
        claimed: Vec<String>,
        /// What the operator asked for (kind and identifier).
        requested: String,
    },
    /// A certificate was already revoked.
    #[error("certificate {serial} was already revoked at {} (reason: {reason})", rfc3339(*at))]
    AlreadyRevoked {
        /// The serial, hex.
        serial: String,
        /// When it was revoked.
        at: OffsetDateTime,
        /// Why.
        reason: RevocationReason,
    },
    /// No certificate with that serial in the index.
    #[error("no certificate with serial {serial} was issued by the CA in {}; check the serial (`splpd certs inspect FILE` shows it)", dir.display())]
    UnknownSerial {
        /// The serial as given.
        serial: String,
        /// The CA directory.
        dir: PathBuf,
    },
    /// A serial number that is not hex.
    #[error(
        "invalid serial number {serial:?}: write it in hex, as `splpd certs inspect` or `openssl x509 -serial` show it"
    )]
    BadSerial {
        /// The serial as given.
        serial: String,
    },
    /// A certificate given for revocation was not issued by this CA.
    #[error("{} was not issued by the CA in {} ({reason})", path.display(), dir.display())]
    NotIssuedHere {
        /// The certificate file.
        path: PathBuf,
        /// The CA directory.
        dir: PathBuf,
        /// Why it is not this CA's.
        reason: String,
    },
    /// The CA key does not belong to the CA certificate, or cannot be loaded.
    #[error("{}: {reason}", path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rcgen refused to build or sign something.
    #[error("signing failed: {0}")]
    Sign(rcgen::Error),
    /// State could not be serialised.
    #[error("cannot encode the CA state: {0}")]
    Encode(String),
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

impl From<rcgen::Error> for PkiError {
    fn from(e: rcgen::Error) -> Self {
        Self::Sign(e)
    }
}

fn scopes_list(scopes: &[IdPrefix]) -> String {
    scopes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

impl PkiError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |cause| Self::Io { action, path, cause }
    }
}
