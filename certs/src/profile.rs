//! The splpd certificate profile (design §2): what a region CA, a gateway, an agency application
//! and an operator certificate contain, how rcgen parameters for them are built, and a check that
//! lists every way a parsed certificate departs from the profile.
//!
//! The identity travels in exactly one URI SAN, `urn:splp:<kind>:...`; the subject CN repeats the
//! identifier for people and for tools that only show the subject.

use std::fmt;
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType, SerialNumber,
};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED448, OID_SIG_ED25519,
};
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::id::{IdError, IdKind, Identity, URN_PREFIX};

/// Validity of a region CA: ten years. The CA certificate is the trust anchor configured in every
/// gateway of the region, in peer regions and at the national SPLP; replacing it means
/// reconfiguring all of them at once, so it is long-lived and its key stays in the CA directory.
pub const CA_VALIDITY_DAYS: u32 = 3650;

/// Validity of gateway, agency and operator certificates: 825 days. That was the CA/Browser
/// Forum's ceiling for TLS server certificates from 2018 to 2020, and some TLS stacks (Apple's
/// among them) still refuse server certificates that live longer, whoever issued them. It lets an
/// agency renew once per two-year budget cycle with three months of overlap, and bounds how long a
/// lost key that was never reported stays usable.
pub const LEAF_VALIDITY_DAYS: u32 = 825;

/// Certificates start this far in the past so that a peer whose clock is a little behind accepts
/// a certificate issued a moment ago.
pub const BACKDATE: Duration = Duration::minutes(5);

/// The longest organisation name X.520 allows (`ub-organization-name`).
pub const MAX_ORGANISATION_LEN: usize = 64;

/// The shortest RSA modulus the profile accepts in certificates from outside CAs or CSRs.
pub const MIN_RSA_BITS: usize = 2048;

/// The identifier alone (`ID/PEMDA/1602/DINKES`), without the kind word that `Identity`'s
/// `Display` puts in front. This is the subject CN and the default file stem.
pub fn identifier(identity: &Identity) -> String {
    match identity {
        Identity::Subsystem(id) => id.to_string(),
        Identity::Server(id) => id.to_string(),
        Identity::Admin(id) => id.to_string(),
    }
}

/// The validity period of a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// First instant the certificate is valid.
    pub not_before: OffsetDateTime,
    /// Last instant the certificate is valid.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// `days` days from `now`, starting [`BACKDATE`] early, truncated to whole seconds (the
    /// precision certificates carry) so that what is recorded equals what is encoded.
    pub fn days_from(now: OffsetDateTime, days: u32) -> Self {
        let now = now.replace_nanosecond(0).unwrap_or(now);
        Self { not_before: now - BACKDATE, not_after: now + Duration::days(i64::from(days)) }
    }
}

/// What a certificate is for, which decides the checks that apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A certificate authority that signs certificates and CRLs.
    Ca,
    /// A gateway, agency application or operator certificate.
    Leaf,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ca => "certificate authority",
            Self::Leaf => "end-entity certificate",
        })
    }
}

/// Extra names a gateway's server certificate may carry besides its identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerNames {
    /// DNS names the gateway is reached by.
    pub dns: Vec<String>,
    /// IP addresses the gateway is reached by.
    pub ips: Vec<IpAddr>,
}

impl ServerNames {
    /// Whether no extra name is given.
    pub fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.ips.is_empty()
    }
}

/// Why certificate parameters could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// DNS names or IP addresses were asked for on a certificate that is not a gateway's.
    #[error(
        "DNS names and IP addresses belong only in server (gateway) certificates, not in a {kind} certificate; drop them, or issue a server certificate"
    )]
    NamesOnNonServer {
        /// The kind of certificate asked for.
        kind: IdKind,
    },
    /// A DNS name is not a valid host name.
    #[error("invalid DNS name {name:?}: {reason}")]
    BadDnsName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A name that must be ASCII (IA5String) is not.
    #[error("{value:?} must be ASCII to go into a certificate")]
    NotAscii {
        /// The text as given.
        value: String,
    },
    /// The organisation name is empty or too long.
    #[error("invalid organisation name {name:?}: {reason}")]
    BadOrganisation {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Checks an organisation name for the subject `O` attribute.
pub fn check_organisation(name: &str) -> Result<(), ProfileError> {
    let bad = |reason: String| ProfileError::BadOrganisation { name: name.to_owned(), reason };
    if name.trim().is_empty() {
        return Err(
            bad("it is empty; give the region's name, e.g. \"Pemerintah Kabupaten Ogan Komering Ilir\"".into()),
        );
    }
    if name.chars().count() > MAX_ORGANISATION_LEN {
        return Err(bad(format!("it is longer than {MAX_ORGANISATION_LEN} characters, the most X.509 allows")));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("it contains a control character".into()));
    }
    Ok(())
}

/// Checks a DNS name for a gateway certificate: letters, digits and hyphens in dot-separated
/// labels. Wildcards are refused: a gateway has concrete names.
pub fn check_dns_name(name: &str) -> Result<(), ProfileError> {
    let bad = |reason| ProfileError::BadDnsName { name: name.to_owned(), reason };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(bad("it is empty"));
    }
    if trimmed.len() > 253 {
        return Err(bad("it is longer than 253 characters"));
    }
    for label in trimmed.split('.') {
        if label == "*" {
            return Err(bad("wildcards are not allowed; list each host name of the gateway"));
        }
        if label.is_empty() {
            return Err(bad("it has an empty label (two dots in a row, or a leading dot)"));
        }
        if label.len() > 63 {
            return Err(bad("a label is longer than 63 characters"));
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(bad("only letters, digits, hyphens and dots are allowed"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label starts or ends with a hyphen"));
        }
    }
    Ok(())
}

fn ia5(value: &str) -> Result<rcgen::string::Ia5String, ProfileError> {
    value.try_into().map_err(|_| ProfileError::NotAscii { value: value.to_owned() })
}

fn subject(common_name: &str, organisation: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, organisation);
    dn
}

/// Parameters of a region CA certificate: `CA:TRUE, pathlen:0` (it signs only end-entity
/// certificates, never another CA), key usage keyCertSign and cRLSign. Its name is
/// `ORGANISATION SPLPD CA GENERATION`: a CA that replaces another (a new key, a longer life)
/// must not share the old one's name while both are trusted, since CRLs and chains are matched
/// to a CA by name.
pub fn ca_params(
    organisation: &str,
    generation: &str,
    validity: Validity,
    serial: SerialNumber,
) -> Result<CertificateParams, ProfileError> {
    check_organisation(organisation)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(&ca_common_name(organisation, generation), organisation);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.serial_number = Some(serial);
    Ok(params)
}

/// The CA's common name, `ORGANISATION SPLPD CA GENERATION`, within X.509's 64 characters: a long
/// organisation is cut at a word (it is whole in the O attribute beside it).
fn ca_common_name(organisation: &str, generation: &str) -> String {
    const MAX_COMMON_NAME: usize = 64;
    let suffix = format!(" SPLPD CA {generation}");
    let room = MAX_COMMON_NAME.saturating_sub(suffix.chars().count());
    let mut name: String = organisation.chars().take(room).collect();
    if name.len() < organisation.len()
        && let Some(space) = name.trim_end().rfind(' ')
    {
        name.truncate(space);
    }
    format!("{}{suffix}", name.trim_end())
}

/// Parameters of an end-entity certificate for `identity`: the URI SAN, CN = identifier, O = the
/// CA's organisation, key usage digitalSignature, and the extended key usages of its kind
/// (clientAuth; serverAuth too for a gateway).
pub fn leaf_params(
    identity: &Identity,
    organisation: &str,
    names: &ServerNames,
    validity: Validity,
    serial: SerialNumber,
) -> Result<CertificateParams, ProfileError> {
    check_organisation(organisation)?;
    let kind = identity.kind();
    if kind != IdKind::Server && !names.is_empty() {
        return Err(ProfileError::NamesOnNonServer { kind });
    }
    let mut sans = Vec::with_capacity(1 + names.dns.len() + names.ips.len());
    let urn = identity.to_urn();
    sans.push(SanType::URI(ia5(&urn)?));
    for name in &names.dns {
        check_dns_name(name)?;
        sans.push(SanType::DnsName(ia5(name)?));
    }
    sans.extend(names.ips.iter().copied().map(SanType::IpAddress));

    let mut params = CertificateParams::default();
    params.distinguished_name = subject(&identifier(identity), organisation);
    params.subject_alt_names = sans;
    // Explicit CA:FALSE also makes rcgen write a subject key identifier.
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match kind {
        IdKind::Server => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.serial_number = Some(serial);
    Ok(params)
}

/// Why no single identity could be read from a certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// No `urn:splp:` URI in the subject alternative names.
    #[error(
        "no {URN_PREFIX} identity in the subject alternative names; issue the certificate with `splpd certs`, or register its SHA-256 fingerprint in the gateway configuration"
    )]
    Missing,
    /// More than one `urn:splp:` URI: the certificate would speak for several parties.
    #[error("{} {URN_PREFIX} identities in the subject alternative names ({}); a certificate must carry exactly one", uris.len(), uris.join(", "))]
    Several {
        /// The URIs found.
        uris: Vec<String>,
    },
    /// A `urn:splp:` URI that does not parse.
    #[error("the identity URI is malformed: {0}")]
    Malformed(IdError),
    /// The subject alternative name extension itself is broken.
    #[error("the subject alternative name extension cannot be read: {0}")]
    BadExtension(String),
}

/// The `urn:splp:` URIs in a list of general names, as written.
fn identity_uris<'a>(names: impl IntoIterator<Item = &'a GeneralName<'a>>) -> Vec<&'a str> {
    names
        .into_iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) if is_splp_urn(uri) => Some(*uri),
            _ => None,
        })
        .collect()
}

fn is_splp_urn(uri: &str) -> bool {
    uri.get(..URN_PREFIX.len()).is_some_and(|head| head.eq_ignore_ascii_case(URN_PREFIX))
}

/// Reads the single identity from a list of general names (a certificate's or a CSR's SAN).
pub fn identity_in<'a>(names: impl IntoIterator<Item = &'a GeneralName<'a>>) -> Result<Identity, IdentityError> {
    let uris = identity_uris(names);
    match uris.as_slice() {
        [] => Err(IdentityError::Missing),
        [uri] => match Identity::from_urn(uri) {
            Ok(Some(id)) => Ok(id),
            Ok(None) => Err(IdentityError::Missing),
            Err(e) => Err(IdentityError::Malformed(e)),
        },
        many => Err(IdentityError::Several { uris: many.iter().map(|s| (*s).to_owned()).collect() }),
    }
}

/// Reads the identity a certificate carries in its subject alternative names.
pub fn identity_of(cert: &X509Certificate<'_>) -> Result<Identity, IdentityError> {
    match cert.subject_alternative_name() {
        Ok(Some(san)) => identity_in(&san.value.general_names),
        Ok(None) => Err(IdentityError::Missing),
        Err(e) => Err(IdentityError::BadExtension(e.to_string())),
    }
}

/// A way in which a certificate departs from the profile. `Display` says what is wrong and how
/// to put it right.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// No usable identity.
    Identity(IdentityError),
    /// The subject CN is not the identifier of the SAN identity.
    SubjectMismatch {
        /// The CN(s) found, if any.
        common_names: Vec<String>,
        /// The identifier from the SAN.
        identifier: String,
    },
    /// An extension the checks need cannot be parsed.
    BadExtension {
        /// Which extension.
        name: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// No extended key usage extension: the certificate would be good for any purpose.
    NoExtendedKeyUsage,
    /// The `anyExtendedKeyUsage` purpose is present.
    AnyExtendedKeyUsage,
    /// clientAuth is missing, so the certificate cannot authenticate to a gateway.
    MissingClientAuth,
    /// A gateway certificate without serverAuth.
    MissingServerAuth,
    /// serverAuth on a subsystem or admin certificate, which must never act as a server.
    UnexpectedServerAuth {
        /// The kind of the identity.
        kind: IdKind,
    },
    /// DNS names or IP addresses on a certificate that is not a gateway's.
    UnexpectedNames {
        /// The kind of the identity.
        kind: IdKind,
    },
    /// The key usage does not allow digital signatures (or there is no key usage extension).
    MissingDigitalSignature,
    /// A leaf certificate's key usage allows signing certificates or CRLs.
    LeafCanSignCertificates,
    /// A leaf certificate has `CA:TRUE`.
    LeafIsCa,
    /// A CA certificate lacks `CA:TRUE`.
    NotCa,
    /// A CA certificate carries a `urn:splp:` identity.
    CaHasIdentity,
    /// A CA certificate's path length is not limited to 0.
    CaPathLength {
        /// The constraint found (`None` when absent).
        found: Option<u32>,
    },
    /// A CA certificate's key usage lacks keyCertSign or cRLSign.
    CaKeyUsage {
        /// The missing bit.
        missing: &'static str,
    },
    /// The certificate is not valid yet.
    NotYetValid {
        /// When it becomes valid.
        not_before: OffsetDateTime,
    },
    /// The certificate has expired.
    Expired {
        /// When it expired.
        not_after: OffsetDateTime,
    },
    /// An RSA key shorter than [`MIN_RSA_BITS`].
    WeakKey {
        /// The modulus length.
        bits: usize,
    },
}

impl Problem {
    /// A short stable code for machine-readable reports.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Identity(IdentityError::Missing) => "no_identity",
            Self::Identity(IdentityError::Several { .. }) => "several_identities",
            Self::Identity(IdentityError::Malformed(_)) => "malformed_identity",
            Self::Identity(IdentityError::BadExtension(_)) => "bad_san_extension",
            Self::SubjectMismatch { .. } => "subject_mismatch",
            Self::BadExtension { .. } => "bad_extension",
            Self::NoExtendedKeyUsage => "no_extended_key_usage",
            Self::AnyExtendedKeyUsage => "any_extended_key_usage",
            Self::MissingClientAuth => "missing_client_auth",
            Self::MissingServerAuth => "missing_server_auth",
            Self::UnexpectedServerAuth { .. } => "unexpected_server_auth",
            Self::UnexpectedNames { .. } => "unexpected_names",
            Self::MissingDigitalSignature => "missing_digital_signature",
            Self::LeafCanSignCertificates => "leaf_can_sign_certificates",
            Self::LeafIsCa => "leaf_is_ca",
            Self::NotCa => "not_ca",
            Self::CaHasIdentity => "ca_has_identity",
            Self::CaPathLength { .. } => "ca_path_length",
            Self::CaKeyUsage { .. } => "ca_key_usage",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::Expired { .. } => "expired",
            Self::WeakKey { .. } => "weak_key",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Identity(e) => write!(f, "{e}"),
            Self::SubjectMismatch { common_names, identifier } if common_names.is_empty() => {
                write!(f, "the subject has no CN; the profile puts the identifier {identifier} there")
            }
            Self::SubjectMismatch { common_names, identifier } => write!(
                f,
                "the subject CN {} differs from the SAN identity {identifier}; the profile puts the identifier there",
                common_names.join(", ")
            ),
            Self::BadExtension { name, reason } => write!(f, "the {name} extension cannot be read: {reason}"),
            Self::NoExtendedKeyUsage => f.write_str(
                "no extended key usage extension, so the certificate is good for any purpose; the profile requires clientAuth (and serverAuth for gateways)",
            ),
            Self::AnyExtendedKeyUsage => {
                f.write_str("the extended key usage includes anyExtendedKeyUsage; list only clientAuth (and serverAuth for gateways)")
            }
            Self::MissingClientAuth => f.write_str(
                "the extended key usage lacks clientAuth (TLS Web Client Authentication), so the certificate cannot authenticate to a gateway",
            ),
            Self::MissingServerAuth => f.write_str(
                "a server (gateway) certificate needs serverAuth (TLS Web Server Authentication) in its extended key usage",
            ),
            Self::UnexpectedServerAuth { kind } => write!(
                f,
                "a {kind} certificate has serverAuth; only gateway (server) certificates may act as TLS servers"
            ),
            Self::UnexpectedNames { kind } => write!(
                f,
                "a {kind} certificate carries DNS names or IP addresses; only gateway (server) certificates may"
            ),
            Self::MissingDigitalSignature => {
                f.write_str("the key usage does not include digitalSignature (or is absent); TLS authentication needs it")
            }
            Self::LeafCanSignCertificates => f.write_str(
                "the key usage of an end-entity certificate allows signing certificates or CRLs (keyCertSign/cRLSign)",
            ),
            Self::LeafIsCa => {
                f.write_str("an end-entity certificate has the CA flag (basicConstraints CA:TRUE); it must be CA:FALSE")
            }
            Self::NotCa => f.write_str("a CA certificate lacks basicConstraints CA:TRUE"),
            Self::CaHasIdentity => f.write_str(
                "a CA certificate carries a urn:splp: identity; a CA vouches for identities and must not hold one itself",
            ),
            Self::CaPathLength { found: None } => {
                f.write_str("the CA's path length is unlimited; the profile limits it to 0 (no intermediate CAs)")
            }
            Self::CaPathLength { found: Some(n) } => {
                write!(f, "the CA's path length is {n}; the profile limits it to 0 (no intermediate CAs)")
            }
            Self::CaKeyUsage { missing } => write!(f, "the CA's key usage lacks {missing}"),
            Self::NotYetValid { not_before } => write!(f, "not valid before {}", crate::inspect::rfc3339(*not_before)),
            Self::Expired { not_after } => write!(f, "expired at {}; issue a new certificate", crate::inspect::rfc3339(*not_after)),
            Self::WeakKey { bits } => write!(f, "the RSA key has {bits} bits; at least {MIN_RSA_BITS} are required"),
        }
    }
}

impl Serialize for Problem {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Problem", 2)?;
        st.serialize_field("code", self.code())?;
        st.serialize_field("message", &self.to_string())?;
        st.end()
    }
}

/// Decides whether a certificate is meant as a CA or a leaf: a CA has `CA:TRUE`, may sign
/// certificates (keyCertSign) and carries no identity. A self-signed certificate that openssl
/// made with its defaults (`CA:TRUE`, no key usage) is judged as the leaf it is used as.
pub fn role_of(cert: &X509Certificate<'_>) -> Role {
    let ca_flag = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    let cert_sign = matches!(cert.key_usage(), Ok(Some(ku)) if ku.value.key_cert_sign());
    let has_identity = !matches!(identity_of(cert), Err(IdentityError::Missing));
    if ca_flag && cert_sign && !has_identity { Role::Ca } else { Role::Leaf }
}

/// Checks a certificate against the profile at time `at`, judging it by [`role_of`]. An empty
/// list means it fits.
pub fn check(cert: &X509Certificate<'_>, at: OffsetDateTime) -> Vec<Problem> {
    check_as(cert, role_of(cert), at)
}

/// Checks a certificate against the profile for the given role at time `at`.
pub fn check_as(cert: &X509Certificate<'_>, role: Role, at: OffsetDateTime) -> Vec<Problem> {
    let mut problems = Vec::new();
    match role {
        Role::Leaf => check_leaf(cert, &mut problems),
        Role::Ca => check_ca(cert, &mut problems),
    }
    if let Some(bits) = rsa_bits(cert.public_key()).filter(|b| *b < MIN_RSA_BITS) {
        problems.push(Problem::WeakKey { bits });
    }
    let validity = cert.validity();
    let (not_before, not_after) = (validity.not_before.to_datetime(), validity.not_after.to_datetime());
    if at < not_before {
        problems.push(Problem::NotYetValid { not_before });
    }
    if at > not_after {
        problems.push(Problem::Expired { not_after });
    }
    problems
}

fn check_leaf(cert: &X509Certificate<'_>, problems: &mut Vec<Problem>) {
    let identity = identity_of(cert);
    let kind = identity.as_ref().ok().map(Identity::kind);
    match &identity {
        Ok(id) => {
            let ident = identifier(id);
            let cns: Vec<String> =
                cert.subject().iter_common_name().map(|cn| cn.as_str().unwrap_or("(unreadable)").to_owned()).collect();
            if cns.as_slice() != [ident.as_str()] {
                problems.push(Problem::SubjectMismatch { common_names: cns, identifier: ident });
            }
        }
        Err(e) => problems.push(Problem::Identity(e.clone())),
    }

    match cert.extended_key_usage() {
        Ok(Some(eku)) => {
            let eku = eku.value;
            if eku.any {
                problems.push(Problem::AnyExtendedKeyUsage);
            }
            if !eku.client_auth {
                problems.push(Problem::MissingClientAuth);
            }
            match kind {
                Some(IdKind::Server) if !eku.server_auth => problems.push(Problem::MissingServerAuth),
                Some(kind @ (IdKind::Subsystem | IdKind::Admin)) if eku.server_auth => {
                    problems.push(Problem::UnexpectedServerAuth { kind });
                }
                _ => {}
            }
        }
        Ok(None) => problems.push(Problem::NoExtendedKeyUsage),
        Err(e) => problems.push(Problem::BadExtension { name: "extended key usage", reason: e.to_string() }),
    }

    if let Some(kind) = kind.filter(|k| *k != IdKind::Server) {
        let has_names = matches!(cert.subject_alternative_name(), Ok(Some(san))
            if san.value.general_names.iter().any(|n| matches!(n, GeneralName::DNSName(_) | GeneralName::IPAddress(_))));
        if has_names {
            problems.push(Problem::UnexpectedNames { kind });
        }
    }

    match cert.key_usage() {
        Ok(Some(ku)) => {
            if !ku.value.digital_signature() {
                problems.push(Problem::MissingDigitalSignature);
            }
            if ku.value.key_cert_sign() || ku.value.crl_sign() {
                problems.push(Problem::LeafCanSignCertificates);
            }
        }
        Ok(None) => problems.push(Problem::MissingDigitalSignature),
        Err(e) => problems.push(Problem::BadExtension { name: "key usage", reason: e.to_string() }),
    }

    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => problems.push(Problem::LeafIsCa),
        Ok(_) => {}
        Err(e) => problems.push(Problem::BadExtension { name: "basic constraints", reason: e.to_string() }),
    }
}

fn check_ca(cert: &X509Certificate<'_>, problems: &mut Vec<Problem>) {
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {
            if bc.value.path_len_constraint != Some(0) {
                problems.push(Problem::CaPathLength { found: bc.value.path_len_constraint });
            }
        }
        Ok(_) => problems.push(Problem::NotCa),
        Err(e) => problems.push(Problem::BadExtension { name: "basic constraints", reason: e.to_string() }),
    }
    match cert.key_usage() {
        Ok(Some(ku)) => {
            if !ku.value.key_cert_sign() {
                problems.push(Problem::CaKeyUsage { missing: "keyCertSign" });
            }
            if !ku.value.crl_sign() {
                problems.push(Problem::CaKeyUsage { missing: "cRLSign" });
            }
        }
        Ok(None) => {
            problems.push(Problem::CaKeyUsage { missing: "keyCertSign" });
            problems.push(Problem::CaKeyUsage { missing: "cRLSign" });
        }
        Err(e) => problems.push(Problem::BadExtension { name: "key usage", reason: e.to_string() }),
    }
    // An identity on a CA certificate would let the CA itself call services.
    if let Ok(Some(san)) = cert.subject_alternative_name()
        && !identity_uris(&san.value.general_names).is_empty()
    {
        problems.push(Problem::CaHasIdentity);
    }
}

/// The modulus length of an RSA key, `None` for other key types.
fn rsa_bits(spki: &SubjectPublicKeyInfo<'_>) -> Option<usize> {
    if spki.algorithm.algorithm != OID_PKCS1_RSAENCRYPTION {
        return None;
    }
    match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => Some(rsa.key_size()),
        _ => Some(0),
    }
}

/// A human name for a public key's type: `ECDSA P-256`, `Ed25519`, `RSA 2048`, ...
pub fn key_type_name(spki: &SubjectPublicKeyInfo<'_>) -> String {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 => "ECDSA P-256".to_owned(),
            Some(c) if c == OID_NIST_EC_P384 => "ECDSA P-384".to_owned(),
            Some(c) if c == OID_NIST_EC_P521 => "ECDSA P-521".to_owned(),
            Some(c) => format!("ECDSA (curve {c})"),
            None => "ECDSA (unknown curve)".to_owned(),
        }
    } else if *alg == OID_SIG_ED25519 {
        "Ed25519".to_owned()
    } else if *alg == OID_SIG_ED448 {
        "Ed448".to_owned()
    } else if let Some(bits) = rsa_bits(spki) {
        format!("RSA {bits}")
    } else {
        format!("unknown ({alg})")
    }
}

/// The general names of a subject alternative name extension, for reading CSRs.
pub(crate) fn san_names<'a, 'b>(ext: &'b ParsedExtension<'a>) -> Option<&'b [GeneralName<'a>]> {
    match ext {
        ParsedExtension::SubjectAlternativeName(san) => Some(&san.general_names),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair};

    use super::*;
    use crate::inspect::parse_certificate;

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn serial() -> SerialNumber {
        SerialNumber::from_slice(&[0x42; 16])
    }

    fn dinkes() -> Identity {
        Identity::parse(IdKind::Subsystem, "ID/PEMDA/1602/DINKES").unwrap()
    }

    /// Self-signs `params` and returns the DER; the checks do not look at the issuer.
    fn der(params: &CertificateParams) -> Vec<u8> {
        params.self_signed(&KeyPair::generate().unwrap()).unwrap().der().to_vec()
    }

    fn problems(params: &CertificateParams) -> Vec<Problem> {
        let der = der(params);
        check(&parse_certificate(&der).unwrap(), now())
    }

    fn leaf(identity: &Identity) -> CertificateParams {
        leaf_params(identity, "Pemda OKI", &ServerNames::default(), Validity::days_from(now(), 10), serial()).unwrap()
    }

    #[test]
    fn leaf_params_fit_the_profile_for_every_kind() {
        for (kind, s) in [
            (IdKind::Subsystem, "ID/PEMDA/1602/DINKES"),
            (IdKind::Server, "ID/PEMDA/1602/gw1"),
            (IdKind::Admin, "ID/PEMDA/1602/budi"),
        ] {
            let identity = Identity::parse(kind, s).unwrap();
            let der = der(&leaf(&identity));
            let cert = parse_certificate(&der).unwrap();
            assert_eq!(role_of(&cert), Role::Leaf);
            assert_eq!(check(&cert, now()), Vec::new(), "{identity}");
            assert_eq!(identity_of(&cert).unwrap(), identity);
        }
    }

    #[test]
    fn a_cas_common_name_stays_within_64_characters() {
        assert_eq!(ca_common_name("Pemda OKI", "2026 0A1B2C3D"), "Pemda OKI SPLPD CA 2026 0A1B2C3D");
        let long = ca_common_name("Pemerintah Provinsi Kepulauan Bangka Belitung", "2026 0A1B2C3D");
        assert_eq!(long, "Pemerintah Provinsi Kepulauan Bangka SPLPD CA 2026 0A1B2C3D");
        let longest = ca_common_name(&"Dinas ".repeat(10), "2026 0A1B2C3D");
        assert!(longest.chars().count() <= 64 && longest.ends_with(" SPLPD CA 2026 0A1B2C3D"), "{longest}");
    }

    #[test]
    fn ca_params_fit_the_ca_profile() {
        let der = der(&ca_params("Pemda OKI", "2026 0A1B2C3D", Validity::days_from(now(), 10), serial()).unwrap());
        let cert = parse_certificate(&der).unwrap();
        assert_eq!(role_of(&cert), Role::Ca);
        assert_eq!(check(&cert, now()), Vec::new());
        // Judged as a leaf, a CA certificate fails for lack of identity and for its CA flag.
        let as_leaf = check_as(&cert, Role::Leaf, now());
        assert!(as_leaf.contains(&Problem::Identity(IdentityError::Missing)), "{as_leaf:?}");
        assert!(as_leaf.contains(&Problem::LeafIsCa), "{as_leaf:?}");

        let mut with_identity =
            ca_params("Pemda OKI", "2026 0A1B2C3D", Validity::days_from(now(), 10), serial()).unwrap();
        with_identity.subject_alt_names = vec![SanType::URI(dinkes().to_urn().as_str().try_into().unwrap())];
        let ca_der = self::tests::der(&with_identity);
        let cert = parse_certificate(&ca_der).unwrap();
        assert_eq!(check_as(&cert, Role::Ca, now()), vec![Problem::CaHasIdentity]);
    }

    #[test]
    fn a_certificate_without_identity_is_reported() {
        let mut params = leaf(&dinkes());
        params.subject_alt_names = vec![SanType::DnsName("dinkes.example".try_into().unwrap())];
        let found = problems(&params);
        assert!(found.contains(&Problem::Identity(IdentityError::Missing)), "{found:?}");
        assert!(found[0].to_string().contains("register its SHA-256 fingerprint"), "{}", found[0]);
    }

    #[test]
    fn two_identities_are_reported() {
        let mut params = leaf(&dinkes());
        params.subject_alt_names.push(SanType::URI("urn:splp:subsystem:ID:PEMDA:1602:BAPPEDA".try_into().unwrap()));
        let found = problems(&params);
        assert!(
            matches!(found.as_slice(), [Problem::Identity(IdentityError::Several { uris })] if uris.len() == 2),
            "{found:?}"
        );
    }

    #[test]
    fn a_malformed_identity_uri_is_reported() {
        let mut params = leaf(&dinkes());
        params.subject_alt_names = vec![SanType::URI("urn:splp:subsystem:ID:PEMDA:1602".try_into().unwrap())];
        let found = problems(&params);
        assert!(matches!(found.first(), Some(Problem::Identity(IdentityError::Malformed(_)))), "{found:?}");
    }

    #[test]
    fn wrong_extended_key_usages_are_reported_per_kind() {
        let mut params = leaf(&dinkes());
        params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        assert_eq!(problems(&params), vec![Problem::UnexpectedServerAuth { kind: IdKind::Subsystem }]);

        let gw = Identity::parse(IdKind::Server, "ID/PEMDA/1602/gw1").unwrap();
        let mut params = leaf(&gw);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        assert_eq!(problems(&params), vec![Problem::MissingServerAuth]);

        let mut params = leaf(&dinkes());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        assert_eq!(problems(&params), vec![Problem::MissingClientAuth]);

        let mut params = leaf(&dinkes());
        params.extended_key_usages.clear();
        assert_eq!(problems(&params), vec![Problem::NoExtendedKeyUsage]);
    }

    #[test]
    fn a_ca_flag_or_signing_usage_on_a_leaf_is_reported() {
        let mut params = leaf(&dinkes());
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        assert_eq!(problems(&params), vec![Problem::LeafIsCa]);
        params.key_usages.push(KeyUsagePurpose::KeyCertSign);
        assert_eq!(problems(&params), vec![Problem::LeafCanSignCertificates, Problem::LeafIsCa]);
    }

    #[test]
    fn key_usage_and_subject_mismatches_are_reported() {
        let mut params = leaf(&dinkes());
        params.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
        assert_eq!(problems(&params), vec![Problem::MissingDigitalSignature]);
        let mut params = leaf(&dinkes());
        params.distinguished_name = subject("ID/PEMDA/1602/BAPPEDA", "Pemda OKI");
        let found = problems(&params);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].to_string().contains("ID/PEMDA/1602/BAPPEDA differs from the SAN identity ID/PEMDA/1602/DINKES"),
            "{}",
            found[0]
        );
    }

    #[test]
    fn validity_is_checked_at_the_given_time() {
        let params = leaf(&dinkes());
        let der = der(&params);
        let cert = parse_certificate(&der).unwrap();
        assert_eq!(check(&cert, now()), Vec::new());
        let later = now() + Duration::days(11);
        assert!(matches!(check(&cert, later).as_slice(), [Problem::Expired { .. }]), "{:?}", check(&cert, later));
        let earlier = now() - Duration::hours(1);
        assert!(matches!(check(&cert, earlier).as_slice(), [Problem::NotYetValid { .. }]));
    }

    #[test]
    fn names_are_allowed_only_on_server_certificates() {
        let names = ServerNames { dns: vec!["gw.example".into()], ips: vec![] };
        let err = leaf_params(&dinkes(), "Pemda", &names, Validity::days_from(now(), 1), serial()).unwrap_err();
        assert_eq!(err, ProfileError::NamesOnNonServer { kind: IdKind::Subsystem });
        let gw = Identity::parse(IdKind::Server, "ID/PEMDA/1602/gw1").unwrap();
        assert!(leaf_params(&gw, "Pemda", &names, Validity::days_from(now(), 1), serial()).is_ok());

        let mut params = leaf(&dinkes());
        params.subject_alt_names.push(SanType::IpAddress("10.0.0.1".parse().unwrap()));
        assert_eq!(problems(&params), vec![Problem::UnexpectedNames { kind: IdKind::Subsystem }]);
    }

    #[test]
    fn dns_names_and_organisations_are_validated() {
        for ok in ["gw1.okikab.go.id", "localhost", "a-b.example.", "x1"] {
            assert!(check_dns_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "*.example", "a..b", "-a.example", "a_b.example", "é.example", &"a".repeat(64)] {
            assert!(check_dns_name(bad).is_err(), "{bad}");
        }
        assert!(check_organisation("Pemerintah Kabupaten Ogan Komering Ilir").is_ok());
        assert!(check_organisation("").is_err());
        assert!(check_organisation(&"x".repeat(65)).is_err());
        assert!(check_organisation("a\nb").is_err());
    }

    #[test]
    fn problems_serialise_with_a_code_and_a_message() {
        let json = serde_json::to_value(Problem::MissingClientAuth).unwrap();
        assert_eq!(json["code"], "missing_client_auth");
        assert!(json["message"].as_str().unwrap().contains("clientAuth"));
    }
}
