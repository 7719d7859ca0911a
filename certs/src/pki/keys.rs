//! Key types the CA offers, key generation and random serial numbers.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use rcgen::{KeyPair, SerialNumber, SignatureAlgorithm};
use serde::{Deserialize, Serialize};

use crate::pki::PkiError;

/// The key algorithms the CA generates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256: the default, understood by every TLS stack in use.
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519. Fine between splpd gateways; some older agency TLS stacks do not support it.
    Ed25519,
}

impl KeyType {
    /// Every key type, for help texts.
    pub const ALL: [Self; 3] = [Self::EcdsaP256, Self::EcdsaP384, Self::Ed25519];

    /// The command-line and `ca.json` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::EcdsaP384 => "ecdsa-p384",
            Self::Ed25519 => "ed25519",
        }
    }

    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }

    /// Generates a fresh key pair of this type.
    pub fn generate(self) -> Result<KeyPair, PkiError> {
        Ok(KeyPair::generate_for(self.algorithm())?)
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown key type {s:?}; use ecdsa-p256, ecdsa-p384 or ed25519"))
    }
}

/// A random positive 16-byte serial number. The top bit is cleared so the DER integer is
/// positive, and the next one set so it always encodes to exactly 16 bytes; the remaining 126
/// random bits are far beyond the 64 the CA/Browser Forum asks for against collision attacks.
pub fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).map_err(|_| PkiError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// A few random bytes as hex, for temporary file names.
pub(crate) fn random_suffix() -> String {
    let mut bytes = [0u8; 6];
    // A failed generator only makes a name collision likelier, which create_new then reports.
    let _ = SystemRandom::new().fill(&mut bytes);
    hex::encode(bytes)
}
