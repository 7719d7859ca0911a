//! A region's certificate authority, kept in a directory (design §2, §7): `ca.crt`, `ca.key`
//! (mode 0600), `ca.json` (organisation, scope, CRL number), `index.json` (every certificate
//! issued and its revocation), `crl.pem` and a copy of each certificate under `issued/`.
//!
//! The CA only vouches for identifiers within its scope, and takes every identity from its
//! operator, never from a CSR. Operations that would overwrite a file refuse unless forced, and
//! check every output before writing any.

mod ca;
pub mod csr;
mod error;
pub mod files;
pub mod keys;
pub mod store;

pub use ca::{CRL_VALIDITY_DAYS, Ca, CrlInfo, InitOptions, Issued, LeafRequest, RevokeTarget};
pub use error::PkiError;
pub use keys::KeyType;
pub use store::{CaConfig, Index, IndexEntry, RevocationReason};

#[cfg(test)]
mod tests;
