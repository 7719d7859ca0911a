//! The region CA and its operations: create it, issue certificates (with a key made here, or for
//! an agency's CSR), revoke them and sign CRLs.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    CertificateRevocationListParams, Issuer, KeyIdMethod, KeyPair, PublicKeyData, RevokedCertParams, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::ParsedExtension;

use crate::id::{IdPrefix, Identity};
use crate::inspect::{self, ObjectKind, serial_hex, sha256_fingerprint};
use crate::pki::PkiError;
use crate::pki::csr::{self, CsrClaim};
use crate::pki::files::{self, CaLock, OutputFile};
use crate::pki::keys::{KeyType, random_serial};
use crate::pki::store::{self, CaConfig, Index, IndexEntry, RevocationReason};
use crate::profile::{self, CA_VALIDITY_DAYS, LEAF_VALIDITY_DAYS, ServerNames, Validity};

/// How long a CRL is valid unless told otherwise: 30 days. Operators regenerate it by hand or
/// from a monthly job (revoking regenerates it at once); a gateway refuses certificates once its
/// CRL is past its next update, so the period must comfortably cover the gap between runs.
pub const CRL_VALIDITY_DAYS: u32 = 30;

/// What `init` needs.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The organisation name, e.g. `Pemerintah Kabupaten Ogan Komering Ilir`.
    pub organisation: String,
    /// The identifier prefixes the CA may vouch for.
    pub scopes: Vec<IdPrefix>,
    /// The CA key's type.
    pub key_type: KeyType,
    /// Validity in days.
    pub days: u32,
    /// Replace an existing CA in the directory.
    pub force: bool,
}

impl InitOptions {
    /// Options with the defaults: ECDSA P-256, ten years, no replacing.
    pub fn new(organisation: impl Into<String>, scopes: Vec<IdPrefix>) -> Self {
        Self {
            organisation: organisation.into(),
            scopes,
            key_type: KeyType::default(),
            days: CA_VALIDITY_DAYS,
            force: false,
        }
    }
}

/// What to put in an end-entity certificate.
#[derive(Debug, Clone)]
pub struct LeafRequest {
    /// Who the certificate is for; always the operator's choice.
    pub identity: Identity,
    /// Extra names for a gateway certificate.
    pub names: ServerNames,
    /// Validity in days; `None` means [`LEAF_VALIDITY_DAYS`], shortened to the CA's own expiry.
    pub days: Option<u32>,
}

impl LeafRequest {
    /// A request with default validity and no extra names.
    pub fn new(identity: Identity) -> Self {
        Self { identity, names: ServerNames::default(), days: None }
    }

    /// Adds DNS names and IP addresses (gateway certificates only).
    pub fn with_names(mut self, dns: Vec<String>, ips: Vec<IpAddr>) -> Self {
        self.names = ServerNames { dns, ips };
        self
    }
}

/// A certificate the CA issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The identity it carries.
    pub identity: Identity,
    /// The serial, lowercase hex.
    pub serial: String,
    /// SHA-256 over the DER, colon hex.
    pub fingerprint_sha256: String,
    /// Its validity.
    pub validity: Validity,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Where the certificate was written.
    pub cert_path: PathBuf,
    /// Where its private key was written, when the CA generated it.
    pub key_path: Option<PathBuf>,
}

/// Which certificate to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget {
    /// By serial number, hex (case, colons and leading zeros do not matter).
    Serial(String),
    /// By the certificate file, PEM or DER.
    Certificate(PathBuf),
}

/// A CRL the CA signed.
#[derive(Debug, Clone)]
pub struct CrlInfo {
    /// Its CRL number.
    pub number: u64,
    /// When it was made.
    pub this_update: OffsetDateTime,
    /// When the next one is due.
    pub next_update: OffsetDateTime,
    /// The serials it lists.
    pub revoked: Vec<String>,
    /// The CRL, PEM.
    pub pem: String,
    /// Where it was written in the CA directory.
    pub path: PathBuf,
}

/// A region CA kept in a directory.
#[derive(Debug)]
pub struct Ca {
    dir: PathBuf,
    config: CaConfig,
    cert_der: Vec<u8>,
    cert_pem: String,
    key: KeyPair,
    key_id: Vec<u8>,
    not_after: OffsetDateTime,
}

fn seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

impl Ca {
    /// Creates a CA in `dir` (made if missing, mode 0700): key, certificate, `ca.json`, an empty
    /// index and a first, empty CRL. Refuses when a CA is already there, unless `force`.
    pub fn init(dir: &Path, opts: &InitOptions, now: OffsetDateTime) -> Result<Self, PkiError> {
        profile::check_organisation(&opts.organisation)?;
        if opts.scopes.is_empty() {
            return Err(PkiError::NoScope);
        }
        if opts.days == 0 {
            return Err(PkiError::Validity("a CA must be valid for at least one day".into()));
        }
        let names = [store::CA_KEY, store::CA_CERT, store::CA_CONFIG, store::INDEX, store::CRL];
        if !opts.force
            && let Some(file) = names.into_iter().find(|n| dir.join(n).exists())
        {
            return Err(PkiError::CaExists { dir: dir.to_owned(), file });
        }

        let key = opts.key_type.generate()?;
        let validity = Validity::days_from(now, opts.days);
        // The year and the start of the key's identifier tell this CA from one it replaces.
        let key_id = rcgen::CertificateParams::default().key_identifier(&key);
        let generation = format!("{} {}", now.year(), hex::encode_upper(key_id.get(..4).unwrap_or_default()));
        let params = profile::ca_params(&opts.organisation, &generation, validity, random_serial()?)?;
        let cert = params.self_signed(&key)?;
        let config = CaConfig {
            organisation: opts.organisation.clone(),
            scopes: opts.scopes.clone(),
            key_type: opts.key_type,
            // The first CRL, written below, is number 1.
            crl_number: 1,
            created: seconds(now),
        };
        let key_id = params.key_identifier(&key);
        let ca = Self {
            dir: dir.to_owned(),
            config,
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key,
            key_id,
            not_after: validity.not_after,
        };

        if !dir.exists() {
            files::create_private_dir(dir)?;
        }
        let _lock = CaLock::acquire(dir.join(store::LOCK))?;
        let crl = ca.sign_crl(&Index::default(), ca.config.crl_number, CRL_VALIDITY_DAYS, now)?;
        files::write_outputs(
            &[
                OutputFile {
                    path: dir.join(store::CA_KEY),
                    contents: ca.key.serialize_pem().into_bytes(),
                    secret: true,
                },
                OutputFile {
                    path: dir.join(store::CA_CERT),
                    contents: ca.cert_pem.clone().into_bytes(),
                    secret: false,
                },
                OutputFile { path: dir.join(store::CA_CONFIG), contents: store::to_json(&ca.config)?, secret: false },
                OutputFile {
                    path: dir.join(store::INDEX),
                    contents: store::to_json(&Index::default())?,
                    secret: false,
                },
                OutputFile { path: dir.join(store::CRL), contents: crl.pem.clone().into_bytes(), secret: false },
            ],
            opts.force,
        )?;
        Ok(ca)
    }

    /// Opens the CA in `dir`, checking that its key belongs to its certificate.
    pub fn open(dir: &Path) -> Result<Self, PkiError> {
        let path = |name: &str| dir.join(name);
        for name in [store::CA_CONFIG, store::CA_CERT, store::CA_KEY] {
            if !path(name).exists() {
                return Err(PkiError::NoCa { dir: dir.to_owned(), missing: path(name) });
            }
        }
        let config: CaConfig = store::load_json(&path(store::CA_CONFIG))?;
        if config.scopes.is_empty() {
            return Err(PkiError::Corrupt {
                path: path(store::CA_CONFIG),
                reason: "it lists no scope, so the CA may vouch for nothing; add the region's prefix, e.g. \"ID/PEMDA/1602\"".into(),
            });
        }

        let key_path = path(store::CA_KEY);
        check_key_mode(&key_path)?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(PkiError::io("read", &key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::BadKey {
            path: key_path.clone(),
            reason: format!("not a usable private key ({e})"),
        })?;

        let cert_path = path(store::CA_CERT);
        let cert_bytes = std::fs::read(&cert_path).map_err(PkiError::io("read", &cert_path))?;
        let read_err = |cause| PkiError::Read { path: cert_path.clone(), cause };
        let cert_der = inspect::decode_as(&cert_bytes, ObjectKind::Certificate).map_err(read_err)?;
        let cert = inspect::parse_certificate(&cert_der).map_err(read_err)?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(PkiError::BadKey {
                path: key_path,
                reason: format!(
                    "this key does not belong to {}; restore the matching pair from backup",
                    cert_path.display()
                ),
            });
        }
        let key_id = cert
            .iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(ki) => Some(ki.0.to_vec()),
                _ => None,
            })
            .unwrap_or_else(|| rcgen::CertificateParams::default().key_identifier(&key));
        let not_after = cert.validity().not_after.to_datetime();
        let cert_pem = String::from_utf8(cert_bytes)
            .map_err(|_| PkiError::Corrupt { path: cert_path.clone(), reason: "it is not PEM text".into() })?;
        Ok(Self { dir: dir.to_owned(), config, cert_der, cert_pem, key, key_id, not_after })
    }

    /// The CA directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA's settings as read when it was opened.
    pub fn config(&self) -> &CaConfig {
        &self.config
    }

    /// The CA certificate, PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    /// SHA-256 fingerprint of the CA certificate.
    pub fn fingerprint_sha256(&self) -> String {
        sha256_fingerprint(&self.cert_der)
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The index of issued certificates.
    pub fn index(&self) -> Result<Index, PkiError> {
        store::load_json(&self.dir.join(store::INDEX))
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, PkiError> {
        Ok(Issuer::from_ca_cert_der(&CertificateDer::from(self.cert_der.as_slice()), &self.key)?)
    }

    fn check_scope(&self, identity: &Identity) -> Result<(), PkiError> {
        if self.config.covers(identity) {
            Ok(())
        } else {
            Err(PkiError::OutOfScope { identity: identity.to_string(), scopes: self.config.scopes.clone() })
        }
    }

    /// The validity of a new leaf: as asked, or the default shortened to the CA's expiry; never
    /// past the CA's own expiry, which would leave a certificate that stops verifying early.
    fn leaf_validity(&self, days: Option<u32>, now: OffsetDateTime) -> Result<Validity, PkiError> {
        let left = (self.not_after - now).whole_days();
        if left < 1 {
            return Err(PkiError::Validity(format!(
                "the CA certificate expires at {}, less than a day from now; create a new CA before issuing",
                inspect::rfc3339(self.not_after)
            )));
        }
        let left = u32::try_from(left).unwrap_or(u32::MAX);
        let days = match days {
            Some(0) => return Err(PkiError::Validity("a certificate must be valid for at least one day".into())),
            Some(d) if d > left => {
                return Err(PkiError::Validity(format!(
                    "a {d}-day certificate would outlive the CA, which expires at {}; ask for at most {left} days, or renew the CA first",
                    inspect::rfc3339(self.not_after)
                )));
            }
            Some(d) => d,
            None => LEAF_VALIDITY_DAYS.min(left),
        };
        Ok(Validity::days_from(now, days))
    }

    /// Generates a key and a certificate for `req.identity` and writes them to `cert_path` and
    /// `key_path` (mode 0600). Refuses identities outside the CA's scope, and existing files
    /// unless `force`; when it refuses, nothing is written.
    pub fn issue(
        &self,
        req: &LeafRequest,
        key_type: KeyType,
        cert_path: &Path,
        key_path: &Path,
        force: bool,
        now: OffsetDateTime,
    ) -> Result<Issued, PkiError> {
        self.check_scope(&req.identity)?;
        let validity = self.leaf_validity(req.days, now)?;
        let serial = random_serial()?;
        let params =
            profile::leaf_params(&req.identity, &self.config.organisation, &req.names, validity, serial.clone())?;
        files::check_outputs([cert_path, key_path], force)?;

        let key = key_type.generate()?;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        let issued = self.record(req, &serial, &cert, validity, now, cert_path, Some(key_path))?;
        files::write_outputs(
            &[
                OutputFile { path: key_path.to_owned(), contents: key.serialize_pem().into_bytes(), secret: true },
                OutputFile {
                    path: cert_path.to_owned(),
                    contents: issued.cert_pem.clone().into_bytes(),
                    secret: false,
                },
            ],
            force,
        )?;
        Ok(issued)
    }

    /// Issues a certificate for `req.identity` over the public key of the CSR in `csr_path`, and
    /// writes it to `cert_path`. Only the CSR's key is used. A CSR that names another identity
    /// is refused unless `ignore_csr_identity`, and then the certificate still carries
    /// `req.identity`.
    pub fn sign_csr(
        &self,
        csr_path: &Path,
        req: &LeafRequest,
        ignore_csr_identity: bool,
        cert_path: &Path,
        force: bool,
        now: OffsetDateTime,
    ) -> Result<Issued, PkiError> {
        let csr = csr::read_csr(csr_path)?;
        if !ignore_csr_identity {
            let others: Vec<&CsrClaim> = csr.claims.iter().filter(|c| !c.names(&req.identity)).collect();
            if !others.is_empty() {
                return Err(PkiError::CsrIdentityMismatch {
                    claimed: others.iter().map(ToString::to_string).collect(),
                    requested: req.identity.to_string(),
                });
            }
        }
        self.check_scope(&req.identity)?;
        let validity = self.leaf_validity(req.days, now)?;
        let serial = random_serial()?;
        let params =
            profile::leaf_params(&req.identity, &self.config.organisation, &req.names, validity, serial.clone())?;
        files::check_outputs([cert_path], force)?;

        let cert = params.signed_by(&csr.public_key, &self.issuer()?)?;
        let issued = self.record(req, &serial, &cert, validity, now, cert_path, None)?;
        files::write_outputs(
            &[OutputFile { path: cert_path.to_owned(), contents: issued.cert_pem.clone().into_bytes(), secret: false }],
            force,
        )?;
        Ok(issued)
    }

    /// Adds a new certificate to the index and keeps a copy under `issued/`.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        req: &LeafRequest,
        serial: &SerialNumber,
        cert: &rcgen::Certificate,
        validity: Validity,
        now: OffsetDateTime,
        cert_path: &Path,
        key_path: Option<&Path>,
    ) -> Result<Issued, PkiError> {
        let serial = serial_hex(serial.as_ref());
        let fingerprint = sha256_fingerprint(cert.der());
        let pem = cert.pem();

        let _lock = CaLock::acquire(self.dir.join(store::LOCK))?;
        let issued_dir = self.dir.join(store::ISSUED_DIR);
        if !issued_dir.exists() {
            files::create_private_dir(&issued_dir)?;
        }
        files::create_new(&issued_dir.join(format!("{serial}.pem")), pem.as_bytes(), false)?;
        let index_path = self.dir.join(store::INDEX);
        let mut index: Index = store::load_json(&index_path)?;
        index.certificates.push(IndexEntry {
            serial: serial.clone(),
            kind: req.identity.kind(),
            identity: profile::identifier(&req.identity),
            fingerprint_sha256: fingerprint.clone(),
            issued_at: seconds(now),
            not_after: validity.not_after,
            revoked_at: None,
            reason: None,
        });
        store::save_json(&index_path, &index)?;
        Ok(Issued {
            identity: req.identity.clone(),
            serial,
            fingerprint_sha256: fingerprint,
            validity,
            cert_pem: pem,
            cert_path: cert_path.to_owned(),
            key_path: key_path.map(Path::to_owned),
        })
    }

    /// Marks a certificate revoked in the index. Revoking twice is refused, naming when it was
    /// revoked. The CRL is not regenerated here; call [`Ca::crl`] next.
    pub fn revoke(
        &self,
        target: &RevokeTarget,
        reason: RevocationReason,
        now: OffsetDateTime,
    ) -> Result<IndexEntry, PkiError> {
        let serial = match target {
            RevokeTarget::Serial(s) => {
                store::normalise_serial(s).ok_or_else(|| PkiError::BadSerial { serial: s.clone() })?;
                s.clone()
            }
            RevokeTarget::Certificate(path) => self.serial_of_own_certificate(path)?,
        };
        let _lock = CaLock::acquire(self.dir.join(store::LOCK))?;
        let index_path = self.dir.join(store::INDEX);
        let mut index: Index = store::load_json(&index_path)?;
        let entry = index
            .find_mut(&serial)
            .ok_or_else(|| PkiError::UnknownSerial { serial: serial.clone(), dir: self.dir.clone() })?;
        if let Some(at) = entry.revoked_at {
            return Err(PkiError::AlreadyRevoked {
                serial: entry.serial.clone(),
                at,
                reason: entry.reason.unwrap_or(RevocationReason::Unspecified),
            });
        }
        entry.revoked_at = Some(seconds(now));
        entry.reason = Some(reason);
        let entry = entry.clone();
        store::save_json(&index_path, &index)?;
        Ok(entry)
    }

    /// The serial of a certificate file, after checking this CA signed it.
    fn serial_of_own_certificate(&self, path: &Path) -> Result<String, PkiError> {
        let bytes = std::fs::read(path).map_err(PkiError::io("read", path))?;
        let read_err = |cause| PkiError::Read { path: path.to_owned(), cause };
        let der = inspect::decode_as(&bytes, ObjectKind::Certificate).map_err(read_err)?;
        let cert = inspect::parse_certificate(&der).map_err(read_err)?;
        let ca_der = &self.cert_der;
        let ca = inspect::parse_certificate(ca_der)
            .map_err(|cause| PkiError::Read { path: self.dir.join(store::CA_CERT), cause })?;
        let not_here =
            |reason: String| PkiError::NotIssuedHere { path: path.to_owned(), dir: self.dir.clone(), reason };
        if cert.issuer().as_raw() != ca.subject().as_raw() {
            return Err(not_here(format!("its issuer is {}", cert.issuer())));
        }
        cert.verify_signature(Some(ca.public_key()))
            .map_err(|_| not_here("its signature does not verify with this CA's key".into()))?;
        Ok(serial_hex(cert.raw_serial()))
    }

    /// Signs a new CRL listing every revoked certificate, with the next CRL number, and writes it
    /// to `crl.pem` in the CA directory.
    pub fn crl(&self, days: u32, now: OffsetDateTime) -> Result<CrlInfo, PkiError> {
        if days == 0 {
            return Err(PkiError::Validity("a CRL must be valid for at least one day".into()));
        }
        let _lock = CaLock::acquire(self.dir.join(store::LOCK))?;
        let config_path = self.dir.join(store::CA_CONFIG);
        let mut config: CaConfig = store::load_json(&config_path)?;
        let index = self.index()?;
        config.crl_number += 1;
        // The number is saved before the CRL is written: a crash in between skips a number,
        // which is allowed, but never issues two different CRLs under one number.
        store::save_json(&config_path, &config)?;
        let info = self.sign_crl(&index, config.crl_number, days, now)?;
        files::replace_atomically(&info.path, info.pem.as_bytes(), false)?;
        Ok(info)
    }

    fn sign_crl(&self, index: &Index, number: u64, days: u32, now: OffsetDateTime) -> Result<CrlInfo, PkiError> {
        let this_update = seconds(now);
        let next_update = this_update + Duration::days(i64::from(days));
        let mut revoked = Vec::new();
        let mut serials = Vec::new();
        for entry in index.revoked() {
            let corrupt = || PkiError::Corrupt {
                path: self.dir.join(store::INDEX),
                reason: format!("serial {:?} is not hex", entry.serial),
            };
            let canonical = store::normalise_serial(&entry.serial).ok_or_else(corrupt)?;
            let padded = if canonical.len() % 2 == 1 { format!("0{canonical}") } else { canonical.clone() };
            let bytes = hex::decode(&padded).map_err(|_| corrupt())?;
            revoked.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&bytes),
                revocation_time: entry.revoked_at.unwrap_or(this_update),
                reason_code: entry.reason.and_then(RevocationReason::crl_code),
                invalidity_date: None,
            });
            serials.push(entry.serial.clone());
        }
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            // The authority key identifier must equal the CA certificate's subject key identifier.
            key_identifier_method: KeyIdMethod::PreSpecified(self.key_id.clone()),
        };
        let crl = params.signed_by(&self.issuer()?)?;
        Ok(CrlInfo {
            number,
            this_update,
            next_update,
            revoked: serials,
            pem: crl.pem()?,
            path: self.dir.join(store::CRL),
        })
    }
}

/// The CA key must be readable by its owner only: refuse to use one that others can read, the
/// way ssh refuses such keys, rather than sign with a key that may already be copied.
fn check_key_mode(path: &Path) -> Result<(), PkiError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).map_err(PkiError::io("read", path))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(PkiError::BadKey {
                path: path.to_owned(),
                reason: format!(
                    "the CA key is readable by other users (mode {:o}); run `chmod 600 {}` and check who may have copied it",
                    mode & 0o777,
                    path.display()
                ),
            });
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
