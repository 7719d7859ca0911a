//! Reads any certificate, CRL or certificate signing request, PEM or DER, and reports what it
//! holds in a serialisable form: identity, names, dates, fingerprint, key, usages and how a
//! certificate fits the profile. Which of the three a file holds is told by its PEM label, or
//! for DER by which parser accepts it.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, KeyUsage, ParsedExtension};
use x509_parser::objects::{oid_registry, oid2sn};
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::x509::AlgorithmIdentifier;

use crate::id::{IdKind, Identity};
use crate::profile::{self, Problem, Role};

/// Formats a time as RFC 3339 (`2025-01-31T08:00:00Z`).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// The SHA-256 fingerprint of DER bytes as colon-separated uppercase hex, as
/// `openssl x509 -fingerprint -sha256` prints it.
pub fn sha256_fingerprint(der: &[u8]) -> String {
    let digest = crate::load::sha256(der);
    let mut out = String::with_capacity(digest.len() * 3);
    for (i, b) in digest.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02X}");
    }
    out
}

/// A serial number's DER integer bytes as lowercase hex without a sign byte or colons, the form
/// the CA index and the command line use.
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len().saturating_sub(1));
    hex::encode(&raw[start..])
}

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    /// An X.509 certificate.
    Certificate,
    /// A certificate revocation list.
    Crl,
    /// A PKCS#10 certificate signing request.
    Csr,
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Certificate => "certificate",
            Self::Crl => "certificate revocation list",
            Self::Csr => "certificate signing request",
        })
    }
}

/// Why a file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    /// The input is empty.
    #[error("the file is empty")]
    Empty,
    /// A PEM block is malformed.
    #[error("the PEM data cannot be decoded: {0}")]
    Pem(String),
    /// A private key was given where a public object was expected.
    #[error("this is a private key (PEM label {label:?}); keep it secret and inspect its certificate instead")]
    PrivateKey {
        /// The PEM label.
        label: String,
    },
    /// A PEM label of something else.
    #[error("the PEM block is labelled {label:?}, which is not a certificate, CRL or certificate signing request")]
    UnknownLabel {
        /// The PEM label.
        label: String,
    },
    /// DER that none of the parsers accept.
    #[error("the data is neither a certificate, a CRL nor a certificate signing request, in PEM or DER")]
    NotRecognised,
    /// The object has the expected label but does not parse.
    #[error("the {kind} cannot be parsed: {reason}")]
    Parse {
        /// What was being parsed.
        kind: ObjectKind,
        /// The parser's message.
        reason: String,
    },
    /// The file holds another kind of object than the one asked for.
    #[error("expected a {expected}, but this is a {found}")]
    WrongKind {
        /// What the caller wanted.
        expected: ObjectKind,
        /// What the file holds.
        found: ObjectKind,
    },
}

/// DER bytes, with what the PEM label said they are (DER input says nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The kind named by the PEM label, if the input was PEM.
    pub kind: Option<ObjectKind>,
    /// The DER encoding.
    pub der: Vec<u8>,
}

fn kind_of_label(label: &str) -> Result<ObjectKind, InspectError> {
    match label {
        "CERTIFICATE" | "X509 CERTIFICATE" | "TRUSTED CERTIFICATE" => Ok(ObjectKind::Certificate),
        "X509 CRL" => Ok(ObjectKind::Crl),
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => Ok(ObjectKind::Csr),
        l if l.contains("PRIVATE KEY") => Err(InspectError::PrivateKey { label: l.to_owned() }),
        l => Err(InspectError::UnknownLabel { label: l.to_owned() }),
    }
}

/// Decodes the first PEM block of `bytes`, or takes `bytes` as DER when there is no PEM header.
pub fn decode(bytes: &[u8]) -> Result<Decoded, InspectError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(InspectError::Empty);
    }
    if !contains(bytes, b"-----BEGIN ") {
        return Ok(Decoded { kind: None, der: bytes.to_vec() });
    }
    let (pem, _) = Pem::read(std::io::Cursor::new(bytes)).map_err(|e| InspectError::Pem(e.to_string()))?;
    let kind = kind_of_label(&pem.label)?;
    Ok(Decoded { kind: Some(kind), der: pem.contents })
}

/// Decodes `bytes` (PEM or DER) that must hold an object of the given kind, returning its DER.
/// A PEM label of another kind is refused; DER is checked by the caller's parser.
pub fn decode_as(bytes: &[u8], expected: ObjectKind) -> Result<Vec<u8>, InspectError> {
    let decoded = decode(bytes)?;
    match decoded.kind {
        Some(found) if found != expected => Err(InspectError::WrongKind { expected, found }),
        _ => Ok(decoded.der),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Parses a certificate from DER, refusing trailing data.
pub fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>, InspectError> {
    let parse_err = |reason: String| InspectError::Parse { kind: ObjectKind::Certificate, reason };
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| parse_err(e.to_string()))?;
    if !rest.is_empty() {
        return Err(parse_err(format!("{} bytes of trailing data", rest.len())));
    }
    Ok(cert)
}

/// Parses a CSR from DER, refusing trailing data. The signature is not checked here.
pub fn parse_csr(der: &[u8]) -> Result<X509CertificationRequest<'_>, InspectError> {
    let parse_err = |reason: String| InspectError::Parse { kind: ObjectKind::Csr, reason };
    let (rest, csr) = X509CertificationRequest::from_der(der).map_err(|e| parse_err(e.to_string()))?;
    if !rest.is_empty() {
        return Err(parse_err(format!("{} bytes of trailing data", rest.len())));
    }
    Ok(csr)
}

/// Parses a CRL from DER, refusing trailing data.
pub fn parse_crl(der: &[u8]) -> Result<CertificateRevocationList<'_>, InspectError> {
    let parse_err = |reason: String| InspectError::Parse { kind: ObjectKind::Crl, reason };
    let (rest, crl) = CertificateRevocationList::from_der(der).map_err(|e| parse_err(e.to_string()))?;
    if !rest.is_empty() {
        return Err(parse_err(format!("{} bytes of trailing data", rest.len())));
    }
    Ok(crl)
}

/// What a file holds, described.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Report {
    /// A certificate.
    Certificate(CertificateReport),
    /// A certificate revocation list.
    Crl(CrlReport),
    /// A certificate signing request.
    Csr(CsrReport),
}

/// An identity read from a certificate or CSR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityReport {
    /// subsystem, server or admin.
    pub kind: IdKind,
    /// The identifier, e.g. `ID/PEMDA/1602/DINKES`.
    pub id: String,
    /// The SAN URI, e.g. `urn:splp:subsystem:ID:PEMDA:1602:DINKES`.
    pub urn: String,
}

impl IdentityReport {
    fn new(identity: &Identity) -> Self {
        Self { kind: identity.kind(), id: profile::identifier(identity), urn: identity.to_urn() }
    }
}

/// A certificate, described.
#[derive(Debug, Clone, Serialize)]
pub struct CertificateReport {
    /// The identity from the SAN, if there is exactly one valid one.
    pub identity: Option<IdentityReport>,
    /// Why there is no identity, otherwise.
    pub identity_error: Option<String>,
    /// Whether the certificate is judged as a CA or a leaf.
    pub role: Role,
    /// The subject distinguished name.
    pub subject: String,
    /// The issuer distinguished name.
    pub issuer: String,
    /// Whether subject and issuer are the same name.
    pub self_issued: bool,
    /// The serial number, lowercase hex.
    pub serial: String,
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// SHA-256 over the DER, colon-separated uppercase hex.
    pub fingerprint_sha256: String,
    /// The public key type, e.g. `ECDSA P-256`.
    pub key_type: String,
    /// The signature algorithm.
    pub signature_algorithm: String,
    /// Key usage bits, RFC 5280 names.
    pub key_usage: Vec<String>,
    /// Extended key usages.
    pub extended_key_usage: Vec<String>,
    /// basicConstraints CA flag.
    pub is_ca: bool,
    /// basicConstraints path length, if any.
    pub path_len: Option<u32>,
    /// Subject alternative names, `URI:...`, `DNS:...`, `IP:...`.
    pub subject_alt_names: Vec<String>,
    /// How the certificate departs from the profile; empty when it fits.
    pub problems: Vec<Problem>,
}

/// One revoked certificate in a CRL.
#[derive(Debug, Clone, Serialize)]
pub struct RevokedReport {
    /// The serial number, lowercase hex.
    pub serial: String,
    /// When it was revoked.
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    /// The reason code, if given.
    pub reason: Option<String>,
}

/// A CRL, described.
#[derive(Debug, Clone, Serialize)]
pub struct CrlReport {
    /// The issuer distinguished name.
    pub issuer: String,
    /// When the CRL was made.
    #[serde(with = "time::serde::rfc3339")]
    pub this_update: OffsetDateTime,
    /// When the next CRL is due.
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_update: Option<OffsetDateTime>,
    /// Whether the next update is past at inspection time.
    pub stale: bool,
    /// The CRL number, decimal.
    pub crl_number: Option<String>,
    /// The authority key identifier, colon hex.
    pub authority_key_id: Option<String>,
    /// The signature algorithm.
    pub signature_algorithm: String,
    /// SHA-256 over the DER.
    pub fingerprint_sha256: String,
    /// The revoked certificates.
    pub revoked: Vec<RevokedReport>,
}

/// A certificate signing request, described.
#[derive(Debug, Clone, Serialize)]
pub struct CsrReport {
    /// The identity the CSR claims in its SAN, if exactly one.
    pub identity: Option<IdentityReport>,
    /// Why there is no identity claim, otherwise.
    pub identity_error: Option<String>,
    /// The subject distinguished name.
    pub subject: String,
    /// The public key type.
    pub key_type: String,
    /// The signature algorithm.
    pub signature_algorithm: String,
    /// Whether the self-signature verifies (proof the requester holds the key).
    pub signature_valid: bool,
    /// Requested subject alternative names.
    pub subject_alt_names: Vec<String>,
    /// SHA-256 over the DER.
    pub fingerprint_sha256: String,
}

/// Inspects a certificate, CRL or CSR, PEM or DER, at time `at` (for validity checks).
pub fn inspect(bytes: &[u8], at: OffsetDateTime) -> Result<Report, InspectError> {
    let decoded = decode(bytes)?;
    let der = decoded.der.as_slice();
    match decoded.kind {
        Some(ObjectKind::Certificate) => Ok(Report::Certificate(certificate_report(&parse_certificate(der)?, der, at))),
        Some(ObjectKind::Crl) => Ok(Report::Crl(crl_report(&parse_crl(der)?, der, at))),
        Some(ObjectKind::Csr) => Ok(Report::Csr(csr_report(&parse_csr(der)?, der))),
        None => {
            if let Ok(cert) = parse_certificate(der) {
                Ok(Report::Certificate(certificate_report(&cert, der, at)))
            } else if let Ok(crl) = parse_crl(der) {
                Ok(Report::Crl(crl_report(&crl, der, at)))
            } else if let Ok(csr) = parse_csr(der) {
                Ok(Report::Csr(csr_report(&csr, der)))
            } else {
                Err(InspectError::NotRecognised)
            }
        }
    }
}

/// Describes a parsed certificate whose DER is `der`.
pub fn certificate_report(cert: &X509Certificate<'_>, der: &[u8], at: OffsetDateTime) -> CertificateReport {
    let (identity, identity_error) = match profile::identity_of(cert) {
        Ok(id) => (Some(IdentityReport::new(&id)), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let (is_ca, path_len) = match cert.basic_constraints() {
        Ok(Some(bc)) => (bc.value.ca, bc.value.path_len_constraint),
        _ => (false, None),
    };
    let key_usage = match cert.key_usage() {
        Ok(Some(ku)) => key_usage_names(ku.value),
        _ => Vec::new(),
    };
    let extended_key_usage = match cert.extended_key_usage() {
        Ok(Some(eku)) => {
            let e = eku.value;
            let mut names: Vec<String> = [
                (e.any, "anyExtendedKeyUsage"),
                (e.server_auth, "serverAuth"),
                (e.client_auth, "clientAuth"),
                (e.code_signing, "codeSigning"),
                (e.email_protection, "emailProtection"),
                (e.time_stamping, "timeStamping"),
                (e.ocsp_signing, "OCSPSigning"),
            ]
            .into_iter()
            .filter(|(set, _)| *set)
            .map(|(_, name)| name.to_owned())
            .collect();
            names.extend(e.other.iter().map(|oid| oid.to_id_string()));
            names
        }
        _ => Vec::new(),
    };
    let subject_alt_names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.iter().map(general_name).collect(),
        _ => Vec::new(),
    };
    let validity = cert.validity();
    CertificateReport {
        identity,
        identity_error,
        role: profile::role_of(cert),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        self_issued: cert.subject().as_raw() == cert.issuer().as_raw(),
        serial: serial_hex(cert.raw_serial()),
        not_before: validity.not_before.to_datetime(),
        not_after: validity.not_after.to_datetime(),
        fingerprint_sha256: sha256_fingerprint(der),
        key_type: profile::key_type_name(cert.public_key()),
        signature_algorithm: algorithm_name(&cert.signature_algorithm),
        key_usage,
        extended_key_usage,
        is_ca,
        path_len,
        subject_alt_names,
        problems: profile::check(cert, at),
    }
}

fn crl_report(crl: &CertificateRevocationList<'_>, der: &[u8], at: OffsetDateTime) -> CrlReport {
    let next_update = crl.next_update().map(|t| t.to_datetime());
    let authority_key_id = crl.extensions().iter().find_map(|ext| match ext.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref().map(|k| colon_hex(k.0)),
        _ => None,
    });
    CrlReport {
        issuer: crl.issuer().to_string(),
        this_update: crl.last_update().to_datetime(),
        next_update,
        stale: next_update.is_some_and(|n| n < at),
        crl_number: crl.crl_number().map(ToString::to_string),
        authority_key_id,
        signature_algorithm: algorithm_name(&crl.signature_algorithm),
        fingerprint_sha256: sha256_fingerprint(der),
        revoked: crl
            .iter_revoked_certificates()
            .map(|r| RevokedReport {
                serial: serial_hex(r.raw_serial()),
                revoked_at: r.revocation_date.to_datetime(),
                reason: r.reason_code().map(|(_, code)| reason_name(code.0)),
            })
            .collect(),
    }
}

fn csr_report(csr: &X509CertificationRequest<'_>, der: &[u8]) -> CsrReport {
    let names: Vec<&GeneralName<'_>> =
        csr.requested_extensions().into_iter().flatten().filter_map(profile::san_names).flatten().collect();
    let (identity, identity_error) = match profile::identity_in(names.iter().copied()) {
        Ok(id) => (Some(IdentityReport::new(&id)), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let info = &csr.certification_request_info;
    CsrReport {
        identity,
        identity_error,
        subject: info.subject.to_string(),
        key_type: profile::key_type_name(&info.subject_pki),
        signature_algorithm: algorithm_name(&csr.signature_algorithm),
        signature_valid: csr.verify_signature().is_ok(),
        subject_alt_names: names.into_iter().map(general_name).collect(),
        fingerprint_sha256: sha256_fingerprint(der),
    }
}

/// RFC 5280 reason codes in the spelling `splpd certs revoke --reason` uses.
fn reason_name(code: u8) -> String {
    match code {
        0 => "unspecified",
        1 => "key-compromise",
        2 => "ca-compromise",
        3 => "affiliation-changed",
        4 => "superseded",
        5 => "cessation-of-operation",
        6 => "certificate-hold",
        8 => "remove-from-crl",
        9 => "privilege-withdrawn",
        10 => "aa-compromise",
        other => return format!("reason code {other}"),
    }
    .to_owned()
}

fn key_usage_names(ku: &KeyUsage) -> Vec<String> {
    [
        (ku.digital_signature(), "digitalSignature"),
        (ku.non_repudiation(), "nonRepudiation"),
        (ku.key_encipherment(), "keyEncipherment"),
        (ku.data_encipherment(), "dataEncipherment"),
        (ku.key_agreement(), "keyAgreement"),
        (ku.key_cert_sign(), "keyCertSign"),
        (ku.crl_sign(), "cRLSign"),
        (ku.encipher_only(), "encipherOnly"),
        (ku.decipher_only(), "decipherOnly"),
    ]
    .into_iter()
    .filter(|(set, _)| *set)
    .map(|(_, name)| name.to_owned())
    .collect()
}

/// A general name in openssl's style: `URI:...`, `DNS:...`, `IP:...`.
fn general_name(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::URI(u) => format!("URI:{u}"),
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::RFC822Name(e) => format!("email:{e}"),
        GeneralName::IPAddress(bytes) => match <[u8; 4]>::try_from(*bytes) {
            Ok(v4) => format!("IP:{}", IpAddr::V4(Ipv4Addr::from(v4))),
            Err(_) => match <[u8; 16]>::try_from(*bytes) {
                Ok(v6) => format!("IP:{}", IpAddr::V6(Ipv6Addr::from(v6))),
                Err(_) => format!("IP:(malformed, {} bytes)", bytes.len()),
            },
        },
        GeneralName::DirectoryName(dn) => format!("DirName:{dn}"),
        GeneralName::RegisteredID(oid) => format!("RID:{oid}"),
        GeneralName::OtherName(oid, _) => format!("othername:{oid}"),
        GeneralName::X400Address(_) => "X400Name:(not shown)".to_owned(),
        GeneralName::EDIPartyName(_) => "EdiPartyName:(not shown)".to_owned(),
        GeneralName::Invalid(_, _) => "(invalid name)".to_owned(),
    }
}

fn algorithm_name(alg: &AlgorithmIdentifier<'_>) -> String {
    oid2sn(&alg.algorithm, oid_registry()).map_or_else(|_| alg.algorithm.to_id_string(), str::to_owned)
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, CertificateRevocationListParams, Issuer, KeyIdMethod, KeyPair, SerialNumber};

    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    #[test]
    fn fingerprints_and_serials_have_the_openssl_shapes() {
        let fp = sha256_fingerprint(b"abc");
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(fp.starts_with("BA:78:16:BF:8F:01:CF:EA"), "{fp}");
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8f01");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[0x42, 0x00]), "4200");
    }

    #[test]
    fn each_kind_is_recognised_in_pem_and_in_der() {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["x.example".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let csr = params.serialize_request(&key).unwrap();
        let mut ca = CertificateParams::default();
        ca.key_usages = vec![rcgen::KeyUsagePurpose::CrlSign];
        let issuer = Issuer::new(ca, &key);
        let crl = CertificateRevocationListParams {
            this_update: now(),
            next_update: now() + time::Duration::days(1),
            crl_number: SerialNumber::from(7u64),
            issuing_distribution_point: None,
            revoked_certs: vec![],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)
        .unwrap();

        let cases: [(Vec<u8>, Vec<u8>, ObjectKind); 3] = [
            (cert.pem().into_bytes(), cert.der().to_vec(), ObjectKind::Certificate),
            (csr.pem().unwrap().into_bytes(), csr.der().to_vec(), ObjectKind::Csr),
            (crl.pem().unwrap().into_bytes(), crl.der().to_vec(), ObjectKind::Crl),
        ];
        for (pem, der, kind) in cases {
            for bytes in [pem, der] {
                let found = match inspect(&bytes, now()).unwrap() {
                    Report::Certificate(_) => ObjectKind::Certificate,
                    Report::Csr(_) => ObjectKind::Csr,
                    Report::Crl(r) => {
                        assert_eq!(r.crl_number.as_deref(), Some("7"));
                        ObjectKind::Crl
                    }
                };
                assert_eq!(found, kind);
            }
        }
    }

    #[test]
    fn text_before_the_pem_block_is_skipped_and_keys_are_refused() {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::default().self_signed(&key).unwrap();
        let text = format!("Certificate:\n    Data: ...\n{}", cert.pem());
        assert!(matches!(inspect(text.as_bytes(), now()).unwrap(), Report::Certificate(_)));
        let err = inspect(key.serialize_pem().as_bytes(), now()).unwrap_err();
        assert!(matches!(err, InspectError::PrivateKey { .. }), "{err:?}");
        assert!(err.to_string().contains("keep it secret"));
        assert_eq!(inspect(b"", now()).unwrap_err(), InspectError::Empty);
        assert_eq!(inspect(b"\x30\x03\x02\x01\x01", now()).unwrap_err(), InspectError::NotRecognised);
        let err = decode_as(cert.pem().as_bytes(), ObjectKind::Csr).unwrap_err();
        assert_eq!(err, InspectError::WrongKind { expected: ObjectKind::Csr, found: ObjectKind::Certificate });
    }

    #[test]
    fn certificate_reports_carry_names_usages_and_problems() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["x.example".to_owned(), "192.0.2.1".to_owned()]).unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).unwrap();
        let Report::Certificate(report) = inspect(cert.der(), now()).unwrap() else { panic!("not a certificate") };
        assert_eq!(report.subject_alt_names, vec!["DNS:x.example", "IP:192.0.2.1"]);
        assert_eq!(report.extended_key_usage, vec!["serverAuth"]);
        assert_eq!(report.key_usage, vec!["digitalSignature"]);
        assert_eq!(report.key_type, "ECDSA P-256");
        assert_eq!(report.signature_algorithm, "ecdsa-with-SHA256");
        assert!(report.identity.is_none());
        assert!(report.identity_error.as_deref().unwrap_or_default().contains("no urn:splp: identity"));
        let codes: Vec<&str> = report.problems.iter().map(Problem::code).collect();
        assert_eq!(codes, vec!["no_identity", "missing_client_auth"]);
        assert_eq!(report.fingerprint_sha256, sha256_fingerprint(cert.der()));
        let json = serde_json::to_value(Report::Certificate(report)).unwrap();
        assert_eq!(json["type"], "certificate");
        assert_eq!(json["problems"][0]["code"], "no_identity");
    }
}
