//! Signed checkpoints of the audit log (design §5): the gateway's signature over the Merkle tree
//! size and root at a moment, so that an auditor holding the gateway's certificate can later show
//! that a record was in the log then, and that the log has only been appended to since.

use std::fmt;
use std::fmt::Write as _;
use std::path::Path;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use rustls_pki_types::PrivateKeyDer;
use splpd_certs::id::ServerId;
use splpd_certs::load::{LoadError, read_private_key, sha256};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ED25519};
use x509_parser::x509::SubjectPublicKeyInfo;

use super::merkle::{Hash, Tree};
pub use splpd_proto::v1::Checkpoint;

/// The first line of the signed text. It names the format and its version, and keeps a
/// checkpoint signature from being taken for anything else the same key signs (TLS handshakes
/// above all, since the gateway's TLS key signs checkpoints unless the operator names another).
pub const CHECKPOINT_FORMAT: &str = "splpd-checkpoint/v1";

/// How a checkpoint is signed; the name goes into [`Checkpoint::signature_algorithm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    /// ECDSA on P-256 with SHA-256, the signature in ASN.1 DER (as X.509 and TLS carry it).
    EcdsaP256Sha256,
    /// ECDSA on P-384 with SHA-384, the signature in ASN.1 DER.
    EcdsaP384Sha384,
    /// Ed25519 (RFC 8032).
    Ed25519,
}

impl SignatureAlgorithm {
    /// Every algorithm, for messages.
    pub const ALL: [Self; 3] = [Self::EcdsaP256Sha256, Self::EcdsaP384Sha384, Self::Ed25519];

    /// The name in [`Checkpoint::signature_algorithm`], spelled as the proto's comment does.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcdsaP256Sha256 => "ECDSA_P256_SHA256",
            Self::EcdsaP384Sha384 => "ECDSA_P384_SHA384",
            Self::Ed25519 => "ED25519",
        }
    }

    /// The algorithm of a name, exactly as [`as_str`](Self::as_str) spells it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    fn verification(self) -> &'static dyn signature::VerificationAlgorithm {
        match self {
            Self::EcdsaP256Sha256 => &signature::ECDSA_P256_SHA256_ASN1,
            Self::EcdsaP384Sha384 => &signature::ECDSA_P384_SHA384_ASN1,
            Self::Ed25519 => &signature::ED25519,
        }
    }

    /// The algorithm a certificate's public key signs with, if it is one of ours.
    fn of_public_key(spki: &SubjectPublicKeyInfo<'_>) -> Option<Self> {
        let oid = &spki.algorithm.algorithm;
        if *oid == OID_SIG_ED25519 {
            return Some(Self::Ed25519);
        }
        if *oid != OID_KEY_TYPE_EC_PUBLIC_KEY {
            return None;
        }
        let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
        if curve == OID_EC_P256 {
            Some(Self::EcdsaP256Sha256)
        } else if curve == OID_NIST_EC_P384 {
            Some(Self::EcdsaP384Sha384)
        } else {
            None
        }
    }
}

impl fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a checkpoint could not be signed or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The signing key file could not be read.
    #[error("cannot read the checkpoint signing key")]
    Load(#[source] LoadError),
    /// The signing key is of a kind checkpoints are not signed with.
    #[error("the checkpoint signing key is {0}; use an ECDSA P-256, ECDSA P-384 or Ed25519 key")]
    UnsupportedKey(&'static str),
    /// The crypto library refused to sign.
    #[error("signing the checkpoint failed")]
    Sign,
    /// The certificate to verify with cannot be parsed.
    #[error("the certificate cannot be parsed: {0}")]
    Certificate(String),
    /// The checkpoint names a signature algorithm this gateway does not know.
    #[error("unknown checkpoint signature algorithm {0:?}; known are ECDSA_P256_SHA256, ECDSA_P384_SHA384 and ED25519")]
    UnknownAlgorithm(String),
    /// The checkpoint was signed by another key than the certificate's, for example one from
    /// before a key rotation: find the certificate whose key hash the checkpoint names.
    #[error(
        "the checkpoint was signed by the key with SHA-256 {checkpoint}, not by the certificate's key ({certificate})"
    )]
    KeyMismatch {
        /// The key hash the checkpoint names, hex.
        checkpoint: String,
        /// The hash of the certificate's public key, hex.
        certificate: String,
    },
    /// The certificate's key is not of the kind the checkpoint's algorithm names.
    #[error("the certificate's key cannot make {algorithm} signatures")]
    AlgorithmMismatch {
        /// The checkpoint's algorithm.
        algorithm: SignatureAlgorithm,
    },
    /// A field of the checkpoint cannot be what was signed.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// The signature does not match the checkpoint's content: the checkpoint or its signature
    /// was altered.
    #[error("the checkpoint's signature does not verify")]
    BadSignature,
}

/// The bytes a checkpoint's signature is over: every field but the signature, one per line.
///
/// ```text
/// splpd-checkpoint/v1
/// <gateway>
/// <tree_size, decimal>
/// <root_hash, lowercase hex>
/// <time_unix_nanos, decimal>
/// <signature_algorithm>
/// <key_sha256, lowercase hex>
/// ```
///
/// Text rather than the protobuf encoding: protobuf does not promise one encoding per message
/// (field order, unknown fields and encoders differ), and a signature must be over bytes that
/// any verifier rebuilds exactly. A fixed text form has one spelling per checkpoint, carries its
/// version in its first line, and an auditor can rebuild it with `printf` and check the
/// signature with `openssl`, without our code. The algorithm and key hash are signed too, so
/// neither can be swapped after the fact.
pub fn signed_bytes(cp: &Checkpoint) -> Result<Vec<u8>, CheckpointError> {
    // Every line but the gateway's holds only digits, hex or a known name, so a gateway without
    // line breaks makes the text unambiguous.
    if cp.gateway.is_empty() || cp.gateway.contains(['\n', '\r']) {
        return Err(CheckpointError::Malformed("the gateway identifier is empty or holds a line break"));
    }
    if cp.root_hash.len() != 32 {
        return Err(CheckpointError::Malformed("the root hash is not 32 bytes"));
    }
    if cp.key_sha256.len() != 32 {
        return Err(CheckpointError::Malformed("the key hash is not 32 bytes"));
    }
    let mut text = String::with_capacity(256);
    // Writing to a String cannot fail.
    let _ = write!(
        text,
        "{CHECKPOINT_FORMAT}\n{}\n{}\n{}\n{}\n{}\n{}\n",
        cp.gateway,
        cp.tree_size,
        hex::encode(&cp.root_hash),
        cp.time_unix_nanos,
        cp.signature_algorithm,
        hex::encode(&cp.key_sha256),
    );
    Ok(text.into_bytes())
}

enum SigningKey {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// The gateway's checkpoint signing key: loaded once, signs every checkpoint after.
pub struct CheckpointSigner {
    key: SigningKey,
    algorithm: SignatureAlgorithm,
    /// The DER SubjectPublicKeyInfo of the key.
    spki: Vec<u8>,
    key_sha256: [u8; 32],
}

impl fmt::Debug for CheckpointSigner {
    // Names the key without showing any of it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("algorithm", &self.algorithm)
            .field("key_sha256", &hex::encode(self.key_sha256))
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// Loads the private key from a PEM file (PKCS#8, or SEC1 for ECDSA), as written by
    /// `splpd certs` or openssl.
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let key = read_private_key(path).map_err(CheckpointError::Load)?;
        Self::from_private_key(&key)
    }

    /// A signer for a private key already read: ECDSA P-256 or P-384 (PKCS#8 or SEC1), or
    /// Ed25519 (PKCS#8).
    pub fn from_private_key(key: &PrivateKeyDer<'_>) -> Result<Self, CheckpointError> {
        if let PrivateKeyDer::Pkcs1(_) = key {
            return Err(CheckpointError::UnsupportedKey("an RSA key"));
        }
        let der = key.secret_der();
        // The DER does not say its curve up front; trying each is cheap and happens once.
        let ecdsa = [
            (SignatureAlgorithm::EcdsaP256Sha256, &signature::ECDSA_P256_SHA256_ASN1_SIGNING),
            (SignatureAlgorithm::EcdsaP384Sha384, &signature::ECDSA_P384_SHA384_ASN1_SIGNING),
        ];
        for (algorithm, signing) in ecdsa {
            if let Ok(pair) = EcdsaKeyPair::from_private_key_der(signing, der) {
                let spki = pair.public_key().as_der().map_err(|_| CheckpointError::Sign)?.as_ref().to_vec();
                return Ok(Self::new(SigningKey::Ecdsa(pair), algorithm, spki));
            }
        }
        if let PrivateKeyDer::Pkcs8(_) = key
            && let Ok(pair) = Ed25519KeyPair::from_pkcs8(der)
        {
            let spki = pair.public_key().as_der().map_err(|_| CheckpointError::Sign)?.as_ref().to_vec();
            return Ok(Self::new(SigningKey::Ed25519(pair), SignatureAlgorithm::Ed25519, spki));
        }
        Err(CheckpointError::UnsupportedKey("neither ECDSA P-256, ECDSA P-384 nor Ed25519"))
    }

    fn new(key: SigningKey, algorithm: SignatureAlgorithm, spki: Vec<u8>) -> Self {
        let key_sha256 = sha256(&spki);
        Self { key, algorithm, spki, key_sha256 }
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    /// SHA-256 of the key's DER SubjectPublicKeyInfo, as checkpoints name it.
    pub fn key_sha256(&self) -> &[u8; 32] {
        &self.key_sha256
    }

    /// The key's DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    /// Signs a checkpoint of `gateway`'s log: `tree_size` records with root `root_hash`, at
    /// `time_unix_nanos`.
    pub fn sign(
        &self,
        gateway: &ServerId,
        tree_size: u64,
        root_hash: &Hash,
        time_unix_nanos: i64,
    ) -> Result<Checkpoint, CheckpointError> {
        let mut cp = Checkpoint {
            tree_size,
            root_hash: root_hash.to_vec(),
            time_unix_nanos,
            gateway: gateway.to_string(),
            signature: Vec::new(),
            signature_algorithm: self.algorithm.as_str().to_owned(),
            key_sha256: self.key_sha256.to_vec(),
        };
        let message = signed_bytes(&cp)?;
        cp.signature = match &self.key {
            SigningKey::Ecdsa(pair) => {
                pair.sign(&SystemRandom::new(), &message).map_err(|_| CheckpointError::Sign)?.as_ref().to_vec()
            }
            SigningKey::Ed25519(pair) => pair.try_sign(&message).map_err(|_| CheckpointError::Sign)?.as_ref().to_vec(),
        };
        Ok(cp)
    }

    /// Signs a checkpoint of `tree` as it stands.
    pub fn sign_tree(
        &self,
        gateway: &ServerId,
        tree: &Tree,
        time_unix_nanos: i64,
    ) -> Result<Checkpoint, CheckpointError> {
        self.sign(gateway, tree.size(), &tree.root(), time_unix_nanos)
    }
}

/// Checks that `cp` was signed by the key of the certificate `cert_der` (DER; read a PEM or DER
/// file with [`splpd_certs::load::read_certificates`]).
///
/// Only the signature is checked: whether the certificate is the gateway's, and was valid when
/// the checkpoint was made, is for the caller to decide against its trust anchors.
pub fn verify_checkpoint(cp: &Checkpoint, cert_der: &[u8]) -> Result<(), CheckpointError> {
    let algorithm = SignatureAlgorithm::from_name(&cp.signature_algorithm)
        .ok_or_else(|| CheckpointError::UnknownAlgorithm(cp.signature_algorithm.clone()))?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| CheckpointError::Certificate(e.to_string()))?;
    let spki = cert.public_key();
    let cert_key_sha256 = sha256(spki.raw);
    if cp.key_sha256 != cert_key_sha256 {
        return Err(CheckpointError::KeyMismatch {
            checkpoint: hex::encode(&cp.key_sha256),
            certificate: hex::encode(cert_key_sha256),
        });
    }
    if SignatureAlgorithm::of_public_key(spki) != Some(algorithm) {
        return Err(CheckpointError::AlgorithmMismatch { algorithm });
    }
    let message = signed_bytes(cp)?;
    UnparsedPublicKey::new(algorithm.verification(), &spki.subject_public_key.data)
        .verify(&message, &cp.signature)
        .map_err(|_| CheckpointError::BadSignature)
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519};
    use rustls_pki_types::PrivatePkcs8KeyDer;
    use splpd_certs::id::{IdKind, Identity};
    use splpd_certs::load::read_certificates;
    use splpd_certs::pki::{Ca, InitOptions, KeyType, LeafRequest};
    use time::OffsetDateTime;

    use super::*;
    use crate::audit::merkle::leaf_hash;

    fn gateway() -> ServerId {
        "ID/PEMDA/1602/gw1".parse().unwrap()
    }

    /// A signer and a self-signed certificate (DER) for a fresh key of `alg`.
    fn key_and_cert(alg: &'static rcgen::SignatureAlgorithm) -> (CheckpointSigner, Vec<u8>) {
        let key = KeyPair::generate_for(alg).unwrap();
        let cert = CertificateParams::new(vec!["gw1.test".to_owned()]).unwrap().self_signed(&key).unwrap();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (CheckpointSigner::from_private_key(&der).unwrap(), cert.der().to_vec())
    }

    fn tree() -> Tree {
        (0..10u8).map(|i| leaf_hash(&[i])).collect()
    }

    #[test]
    fn signed_text_is_the_documented_form() {
        let cp = Checkpoint {
            tree_size: 10,
            root_hash: vec![0xab; 32],
            time_unix_nanos: 1_700_000_000_000_000_001,
            gateway: "ID/PEMDA/1602/gw1".to_owned(),
            signature: vec![1, 2, 3],
            signature_algorithm: "ED25519".to_owned(),
            key_sha256: vec![0x01; 32],
        };
        let expected = format!(
            "splpd-checkpoint/v1\nID/PEMDA/1602/gw1\n10\n{}\n1700000000000000001\nED25519\n{}\n",
            "ab".repeat(32),
            "01".repeat(32)
        );
        assert_eq!(String::from_utf8(signed_bytes(&cp).unwrap()).unwrap(), expected);
        // The signature itself is not part of what is signed.
        assert_eq!(signed_bytes(&Checkpoint { signature: Vec::new(), ..cp }).unwrap(), expected.into_bytes());
    }

    #[test]
    fn checkpoints_round_trip_for_every_key_type() {
        let cases = [
            (&PKCS_ECDSA_P256_SHA256, SignatureAlgorithm::EcdsaP256Sha256),
            (&PKCS_ECDSA_P384_SHA384, SignatureAlgorithm::EcdsaP384Sha384),
            (&PKCS_ED25519, SignatureAlgorithm::Ed25519),
        ];
        for (alg, expected) in cases {
            let (signer, cert) = key_and_cert(alg);
            assert_eq!(signer.algorithm(), expected);
            let tree = tree();
            let cp = signer.sign_tree(&gateway(), &tree, 1_700_000_000_123_456_789).unwrap();
            assert_eq!(cp.tree_size, 10);
            assert_eq!(cp.root_hash, tree.root());
            assert_eq!(cp.gateway, "ID/PEMDA/1602/gw1");
            assert_eq!(cp.signature_algorithm, expected.as_str());
            assert_eq!(cp.key_sha256, signer.key_sha256());
            verify_checkpoint(&cp, &cert).unwrap_or_else(|e| panic!("{expected}: {e}"));
        }
    }

    #[test]
    fn the_key_hash_is_that_of_the_certificates_public_key() {
        for alg in [&PKCS_ECDSA_P256_SHA256, &PKCS_ECDSA_P384_SHA384, &PKCS_ED25519] {
            let (signer, cert) = key_and_cert(alg);
            let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
            assert_eq!(signer.public_key_der(), parsed.public_key().raw);
            assert_eq!(*signer.key_sha256(), sha256(parsed.public_key().raw));
        }
    }

    #[test]
    fn any_altered_field_or_signature_fails_to_verify() {
        for alg in [&PKCS_ECDSA_P256_SHA256, &PKCS_ED25519] {
            let (signer, cert) = key_and_cert(alg);
            let cp = signer.sign(&gateway(), 42, &leaf_hash(b"root"), 1_700_000_000_000_000_000).unwrap();
            verify_checkpoint(&cp, &cert).unwrap();

            let mut altered = Vec::new();
            for i in 0..32 {
                let mut c = cp.clone();
                c.root_hash[i] ^= 0x01;
                altered.push(("root", c));
            }
            for i in 0..cp.signature.len() {
                let mut c = cp.clone();
                c.signature[i] ^= 0x01;
                altered.push(("signature", c));
            }
            altered.push(("size", Checkpoint { tree_size: 43, ..cp.clone() }));
            altered.push(("size", Checkpoint { tree_size: 42 ^ (1 << 40), ..cp.clone() }));
            altered.push(("time", Checkpoint { time_unix_nanos: cp.time_unix_nanos + 1, ..cp.clone() }));
            altered.push(("time", Checkpoint { time_unix_nanos: -cp.time_unix_nanos, ..cp.clone() }));
            altered.push(("gateway", Checkpoint { gateway: "ID/PEMDA/1602/gw2".to_owned(), ..cp.clone() }));
            let mut truncated = cp.clone();
            truncated.signature.pop();
            altered.push(("signature", truncated));
            altered.push(("signature", Checkpoint { signature: Vec::new(), ..cp.clone() }));
            for (what, c) in altered {
                let err = verify_checkpoint(&c, &cert).unwrap_err();
                assert!(matches!(err, CheckpointError::BadSignature), "{what}: {err}");
            }
        }
    }

    #[test]
    fn another_keys_certificate_is_a_key_mismatch() {
        let (signer, _) = key_and_cert(&PKCS_ECDSA_P256_SHA256);
        let (_, other_cert) = key_and_cert(&PKCS_ECDSA_P256_SHA256);
        let cp = signer.sign(&gateway(), 1, &leaf_hash(b""), 0).unwrap();
        let err = verify_checkpoint(&cp, &other_cert).unwrap_err();
        assert!(matches!(err, CheckpointError::KeyMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&hex::encode(signer.key_sha256())), "{err}");

        // Pointing the checkpoint at the other key does not help: the key hash is signed too.
        let (_, parsed) = x509_parser::parse_x509_certificate(&other_cert).unwrap();
        let claimed = Checkpoint { key_sha256: sha256(parsed.public_key().raw).to_vec(), ..cp };
        assert!(matches!(verify_checkpoint(&claimed, &other_cert), Err(CheckpointError::BadSignature)));
    }

    #[test]
    fn unknown_or_mismatched_algorithms_are_refused_by_name() {
        let (signer, cert) = key_and_cert(&PKCS_ECDSA_P256_SHA256);
        let cp = signer.sign(&gateway(), 1, &leaf_hash(b""), 0).unwrap();
        let unknown = Checkpoint { signature_algorithm: "ecdsa-p256-sha256".to_owned(), ..cp.clone() };
        let err = verify_checkpoint(&unknown, &cert).unwrap_err();
        assert!(matches!(&err, CheckpointError::UnknownAlgorithm(name) if name == "ecdsa-p256-sha256"), "{err}");
        let other = Checkpoint { signature_algorithm: "ED25519".to_owned(), ..cp };
        let err = verify_checkpoint(&other, &cert).unwrap_err();
        assert!(matches!(err, CheckpointError::AlgorithmMismatch { algorithm: SignatureAlgorithm::Ed25519 }), "{err}");
    }

    #[test]
    fn malformed_checkpoints_and_certificates_are_refused() {
        let (signer, cert) = key_and_cert(&PKCS_ED25519);
        let cp = signer.sign(&gateway(), 1, &leaf_hash(b""), 0).unwrap();
        let short_root = Checkpoint { root_hash: vec![0; 31], ..cp.clone() };
        assert!(matches!(verify_checkpoint(&short_root, &cert), Err(CheckpointError::Malformed(_))));
        let two_lines = Checkpoint { gateway: "ID/PEMDA/1602/gw1\n2".to_owned(), ..cp.clone() };
        assert!(matches!(verify_checkpoint(&two_lines, &cert), Err(CheckpointError::Malformed(_))));
        assert!(matches!(verify_checkpoint(&cp, b"not a certificate"), Err(CheckpointError::Certificate(_))));
    }

    #[test]
    fn sec1_ecdsa_keys_load_like_their_pkcs8_form() {
        use aws_lc_rs::encoding::{AsDer as _, EcPrivateKeyRfc5915Der};
        for alg in [&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &signature::ECDSA_P384_SHA384_ASN1_SIGNING] {
            let pair = EcdsaKeyPair::generate(alg).unwrap();
            let pkcs8 = PrivateKeyDer::Pkcs8(pair.to_pkcs8v1().unwrap().as_ref().to_vec().into());
            let sec1_der: EcPrivateKeyRfc5915Der<'_> = pair.private_key().as_der().unwrap();
            let sec1 = PrivateKeyDer::Sec1(sec1_der.as_ref().to_vec().into());
            let (a, b) = (
                CheckpointSigner::from_private_key(&pkcs8).unwrap(),
                CheckpointSigner::from_private_key(&sec1).unwrap(),
            );
            assert_eq!(a.algorithm(), b.algorithm());
            assert_eq!(a.key_sha256(), b.key_sha256());
        }
    }

    #[test]
    fn rsa_keys_are_refused_with_a_clear_error() {
        let rsa = PrivateKeyDer::Pkcs1(vec![0x30, 0x00].into());
        let err = CheckpointSigner::from_private_key(&rsa).unwrap_err();
        assert!(err.to_string().contains("RSA"), "{err}");
        let garbage = PrivateKeyDer::Pkcs8(vec![0x30, 0x00].into());
        assert!(matches!(CheckpointSigner::from_private_key(&garbage), Err(CheckpointError::UnsupportedKey(_))));
    }

    #[test]
    fn a_gateway_key_from_the_ca_signs_checkpoints_its_certificate_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let opts = InitOptions::new("Pemerintah Kabupaten Ogan Komering Ilir", vec!["ID/PEMDA/1602".parse().unwrap()]);
        let ca = Ca::init(&dir.path().join("ca"), &opts, now).unwrap();
        let identity = Identity::parse(IdKind::Server, "ID/PEMDA/1602/gw1").unwrap();
        let mut certs = Vec::new();
        for (name, key_type) in [("p256", KeyType::EcdsaP256), ("p384", KeyType::EcdsaP384), ("ed", KeyType::Ed25519)] {
            let (cert_path, key_path) =
                (dir.path().join(format!("{name}.crt")), dir.path().join(format!("{name}.key")));
            ca.issue(&LeafRequest::new(identity.clone()), key_type, &cert_path, &key_path, true, now).unwrap();
            let signer = CheckpointSigner::load(&key_path).unwrap();
            let cert = read_certificates(&cert_path).unwrap().remove(0);
            let cp = signer.sign_tree(&gateway(), &tree(), 7).unwrap();
            verify_checkpoint(&cp, &cert).unwrap_or_else(|e| panic!("{key_type}: {e}"));
            certs.push((cp, cert));
        }
        // Each certificate verifies only its own key's checkpoints.
        assert!(matches!(verify_checkpoint(&certs[0].0, &certs[1].1), Err(CheckpointError::KeyMismatch { .. })));
        assert!(matches!(verify_checkpoint(&certs[2].0, &certs[0].1), Err(CheckpointError::KeyMismatch { .. })));
        let missing = CheckpointSigner::load(&dir.path().join("nope.key")).unwrap_err();
        assert!(matches!(missing, CheckpointError::Load(LoadError::Read { .. })), "{missing}");
    }
}
