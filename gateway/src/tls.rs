//! TLS setup (design §2, §3): the trust store, the listeners' server configurations and the
//! upstream client configurations, built once per configuration snapshot so that the exchange path
//! only ever clones an `Arc`. Who a verified peer is, is decided later by `identify`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use splpd_certs::id::{IdError, IdPrefix, Identity};
use splpd_certs::inspect::rfc3339;
use splpd_certs::load::{self, LoadError};
use x509_parser::oid_registry::OID_X509_EXT_ISSUER_DISTRIBUTION_POINT;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::config::units::Fingerprint;
use crate::config::{Config, ConnectionType, IdentityMapping, Listener, TrustAnchor, UpstreamTls};

/// TLS 1.3 and 1.2 only: the regulation's confidentiality requirement rules out anything older.
static VERSIONS: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];

/// ALPN, most preferred first. gRPC needs HTTP/2; REST clients may still speak HTTP/1.1.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why the TLS configuration of a snapshot could not be built. Each message names the file or
/// table at fault and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// There is no trust anchor, so no client certificate could ever verify.
    #[error(
        "there is no [[trust_anchor]], so no client certificate could ever be verified; add the region CA, e.g. \
         [[trust_anchor]] name = \"region\" ca = \"pki/ca.crt\" scopes = [\"ID/PEMDA/1602\"]"
    )]
    NoAnchors,
    /// An anchor's CA file could not be read.
    #[error(
        "trust anchor {anchor:?}: {cause}; point its `ca` at the CA's own certificate (ca.crt in the CA directory)"
    )]
    AnchorCa {
        /// The anchor's name.
        anchor: String,
        /// What went wrong reading the file.
        cause: LoadError,
    },
    /// A certificate in an anchor's CA file cannot serve as a trust anchor.
    #[error(
        "trust anchor {anchor:?}: certificate {number} in {} cannot be used ({reason}); the file must hold the CA's own certificate, PEM or DER",
        path.display()
    )]
    AnchorCaUnusable {
        /// The anchor's name.
        anchor: String,
        /// The CA file.
        path: PathBuf,
        /// Which certificate in the file, counted from 1.
        number: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// One CA is configured under two anchors, which would make its scope ambiguous.
    #[error(
        "the CA {subject} is in both trust anchor {first:?} and trust anchor {second:?}; a CA belongs to one anchor, \
         whose scopes decide what it may vouch for: remove it from one of them"
    )]
    CaInTwoAnchors {
        /// The CA's subject.
        subject: String,
        /// The first anchor that lists it.
        first: String,
        /// The second anchor that lists it.
        second: String,
    },
    /// Two CAs share a name and a CRL names it: rustls (webpki) takes a certificate's CRL by its
    /// issuer's name, so every certificate of the CA that did not sign the CRL would be refused.
    #[error(
        "trust anchor {anchor:?}: the CRL in {} was signed by the CA {subject}, and trust anchor {other:?} holds another CA \
         of that same name with another key; a CRL is matched to certificates by their issuer's name, so every \
         certificate of one of the two CAs would be refused as wrongly signed. A CA that replaces another needs a name \
         of its own: `splpd certs init-ca` puts its year and key in each CA's name, so create the new CA with it (or give \
         yours another subject), issue from it, and list both CAs until the old one's certificates are renewed",
        path.display()
    )]
    CaNameShared {
        /// The anchor of the CRL.
        anchor: String,
        /// The CRL file.
        path: PathBuf,
        /// The name the two CAs share.
        subject: String,
        /// The anchor of the other CA (may be the same).
        other: String,
    },
    /// An anchor's CRL file could not be read.
    #[error(
        "trust anchor {anchor:?}: {cause}; publish a fresh one with `splpd certs crl --ca DIR`, or remove it from `crls`"
    )]
    Crl {
        /// The anchor's name.
        anchor: String,
        /// What went wrong reading the file.
        cause: LoadError,
    },
    /// A CRL does not parse, or was not issued and signed by a CA of its anchor. Such a CRL would
    /// silently revoke nothing, so it is refused.
    #[error("trust anchor {anchor:?}: the CRL in {} {reason}", path.display())]
    CrlUnusable {
        /// The anchor's name.
        anchor: String,
        /// The CRL file.
        path: PathBuf,
        /// What is wrong, phrased to follow "the CRL in FILE", with the fix.
        reason: String,
    },
    /// An identity mapping names an anchor that does not exist.
    #[error(
        "[[identity]] {fingerprint} names trust anchor {anchor:?}, which is not configured; name one of the [[trust_anchor]] tables"
    )]
    MappingAnchor {
        /// The mapped certificate's fingerprint.
        fingerprint: Fingerprint,
        /// The anchor name given.
        anchor: String,
    },
    /// An identity mapping's identifier does not parse.
    #[error("[[identity]] {fingerprint}: {cause}")]
    MappingIdentity {
        /// The mapped certificate's fingerprint.
        fingerprint: Fingerprint,
        /// Why the identifier is invalid.
        cause: IdError,
    },
    /// The gateway's certificate could not be read.
    #[error("[gateway] cert: {cause}")]
    GatewayCert {
        /// What went wrong.
        cause: LoadError,
    },
    /// The gateway's private key could not be read.
    #[error("[gateway] key: {cause}")]
    GatewayKey {
        /// What went wrong.
        cause: LoadError,
    },
    /// The gateway's key cannot be used, or is not the certificate's.
    #[error(
        "the gateway key {} cannot be used with the certificate {}: {reason}; use the key file that was written with this certificate",
        key.display(),
        cert.display()
    )]
    GatewayKeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls reported.
        reason: String,
    },
    /// A service's `tls.ca` file could not be read or used.
    #[error("[service] tls.ca: {reason}; point it at the CA certificate that signs the upstream's certificate")]
    UpstreamCa {
        /// What went wrong, naming the file.
        reason: String,
    },
    /// No trust anchor may vouch for the servers the gateway calls by URL (see
    /// [`TrustStore::server_roots`]), and a service's `https://` upstream needs one.
    #[error(
        "service {service}: its https:// upstream's certificate could not be verified: no [[trust_anchor]] vouches \
         for this region's servers (each is scoped to other regions' identifiers); give the service `tls.ca`, or \
         add the CA that issued the upstream's certificate as a [[trust_anchor]] with no scopes"
    )]
    NoServerAnchors {
        /// The service.
        service: String,
    },
    /// rustls refused to build a certificate verifier.
    #[error("cannot build the certificate verifier: {reason}")]
    Verifier {
        /// What rustls reported.
        reason: String,
    },
    /// rustls refused the protocol settings (a build without TLS 1.2 support, for instance).
    #[error("rustls refused the TLS settings: {reason}")]
    Rustls {
        /// What rustls reported.
        reason: String,
    },
}

/// A trust anchor as the gateway uses it: its name and the identifier prefixes it may vouch for.
#[derive(Debug)]
pub struct Anchor {
    name: Arc<str>,
    scopes: Vec<IdPrefix>,
}

impl Anchor {
    /// The `name` of its `[[trust_anchor]]`.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The prefixes it may vouch for through URI SANs; empty for a CA whose certificates only
    /// count through `[[identity]]` mappings.
    pub fn scopes(&self) -> &[IdPrefix] {
        &self.scopes
    }

    /// Whether one of its scopes covers `identity`.
    pub fn covers(&self, identity: &Identity) -> bool {
        self.scopes.iter().any(|s| identity.is_within(s))
    }
}

/// A CA certificate of an anchor, kept in the form `identify` needs to tell which anchor issued
/// a certificate: the raw subject to match issuers against, and the raw public key to verify
/// signatures with.
#[derive(Debug)]
pub(crate) struct AnchorCa {
    /// Index into [`TrustStore::anchors`].
    pub(crate) anchor: usize,
    /// DER of the subject name.
    pub(crate) subject: Box<[u8]>,
    /// DER of the SubjectPublicKeyInfo.
    pub(crate) spki: Box<[u8]>,
    /// The certificate, for the roots of servers the anchor may vouch for.
    pub(crate) der: CertificateDer<'static>,
    /// Its basic constraints' path length: how many intermediate CAs may stand between it and a
    /// leaf. The TLS library does not apply a trust anchor's own constraints, so `identify` does.
    pub(crate) max_path_len: Option<u32>,
}

impl AnchorCa {
    /// The parsed public key; it parsed when the store was loaded.
    pub(crate) fn public_key(&self) -> Option<SubjectPublicKeyInfo<'_>> {
        SubjectPublicKeyInfo::from_der(&self.spki).ok().map(|(_, spki)| spki)
    }
}

/// An `[[identity]]` mapping, resolved.
#[derive(Debug)]
pub(crate) struct Mapping {
    pub(crate) identity: Identity,
    /// Index into [`TrustStore::anchors`].
    pub(crate) anchor: usize,
}

/// Everything the gateway trusts, as of one configuration snapshot: every anchor's CA
/// certificates and CRLs, and the fingerprint identity mappings.
#[derive(Debug)]
pub struct TrustStore {
    anchors: Vec<Anchor>,
    cas: Vec<AnchorCa>,
    roots: Arc<RootCertStore>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    crl_status: Vec<CrlStatus>,
    ca_status: Vec<CaStatus>,
    mappings: HashMap<[u8; 32], Mapping>,
    provider: Arc<CryptoProvider>,
}

/// When a CRL the gateway loaded is due to be replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlStatus {
    /// The anchor it belongs to.
    pub anchor: String,
    /// The file it came from.
    pub path: PathBuf,
    /// Its next update: past it, every certificate of the anchor's CA is refused. `None` when
    /// the CRL names none.
    pub next_update: Option<time::OffsetDateTime>,
    /// When it was issued.
    pub this_update: time::OffsetDateTime,
    /// Its CRL number, when it has one.
    pub number: Option<x509_parser::num_bigint::BigUint>,
    /// The SubjectPublicKeyInfo of the CA whose signature it carries, the issuer name it gives
    /// (DER), and its issuing distribution point (the extension's DER) if it has one: CRLs that
    /// share all three are one CA's list in successive issues, and webpki picks a CRL by the
    /// last two.
    pub signer: Box<[u8]>,
    /// See `signer`.
    pub issuer: Box<[u8]>,
    /// See `signer`.
    pub scope: Option<Box<[u8]>>,
    /// The SHA-256 of the CRL's DER: two issues alike in every field above still differ here.
    pub sha256: [u8; 32],
}

impl CrlStatus {
    /// Why this CRL, read on a reload, must not replace `in_force`: it is an older one of the
    /// same CA (an earlier issue, or of the same time a lower CRL number), which would let
    /// certificates revoked since back in. `None` when it may, or when the two are of different
    /// CAs.
    pub fn older_than(&self, in_force: &CrlStatus) -> Option<String> {
        if self.signer != in_force.signer {
            return None;
        }
        let older = self.issued_before(in_force);
        let describe = CrlStatus::issue;
        // Issued earlier but numbered higher: two tools (openssl's `crlnumber` file and splpd's
        // CA, say) number this CA's CRLs apart; the issue date decides, and the operator is told.
        let numbered_apart = matches!((&self.number, &in_force.number), (Some(a), Some(b)) if a > b);
        let apart = if numbered_apart {
            " (it was issued before it, though numbered higher: two tools seem to sign this CA's CRLs with numbers \
             of their own; sign them with one)"
        } else {
            ""
        };
        older.then(|| {
            format!(
                "trust anchor {:?}: CRL {} ({}) is older than the one in force ({}){apart}, so certificates its CA \
                 has revoked since would be let back in; put the CA's latest CRL there (`splpd certs crl --ca DIR` \
                 signs a fresh one)",
                self.anchor,
                self.path.display(),
                describe(self),
                describe(in_force)
            )
        })
    }
}

/// Why a reload's CRLs must not replace those in force: a list of a CA in force (one
/// distribution point, or all) is read in an older issue (see [`CrlStatus::older_than`]), or is
/// missing while the CA is still trusted and no CRL of it covering everything, at least as
/// recent, takes its place. Either would let certificates the CA revoked back in. (A store
/// holds the latest issue of each list: [`TrustStore::new`].)
pub fn crl_step_back(new: &TrustStore, in_force: &[CrlStatus]) -> Option<String> {
    step_back(&new.crl_status, &|signer| new.cas.iter().any(|ca| *ca.spki == *signer), in_force)
}

/// [`crl_step_back`], of the CRLs read and whether a signing key is still a trusted CA's.
fn step_back(read: &[CrlStatus], trusted: &dyn Fn(&[u8]) -> bool, in_force: &[CrlStatus]) -> Option<String> {
    in_force.iter().find_map(|kept| {
        if let Some(issue) = read.iter().find(|c| c.same_list(kept)) {
            return issue.older_than(kept);
        }
        let covered = read.iter().any(|c| c.signer == kept.signer && c.scope.is_none() && !c.issued_before(kept));
        let trusted = trusted(&kept.signer);
        (trusted && !covered).then(|| {
            format!(
                "trust anchor {:?}: the CA's CRL {} is in force, and the new configuration lists no issue of it (nor \
                 one of that CA covering all its certificates), so certificates it has revoked would be let back in; \
                 list it in `crls` (or restart splpd, if the CA publishes it no more or has changed how it splits its \
                 CRLs)",
                kept.anchor,
                kept.path.display()
            )
        })
    })
}

impl CrlStatus {
    /// Which issue of its CA's list it is: "number N, issued T", or "issued T" without a number.
    pub fn issue(&self) -> String {
        match &self.number {
            Some(n) => format!("number {n}, issued {}", rfc3339(self.this_update)),
            None => format!("issued {}", rfc3339(self.this_update)),
        }
    }

    /// Whether the two are issues of one list (see `signer`).
    pub fn same_list(&self, other: &CrlStatus) -> bool {
        self.signer == other.signer && self.issuer == other.issuer && self.scope == other.scope
    }

    /// Whether this CRL was issued before `other`: by when, then by CRL number. A total order,
    /// so that of any set of CRLs one is the latest (CRL numbers alone leave out CRLs without).
    pub fn issued_before(&self, other: &CrlStatus) -> bool {
        (self.this_update, &self.number) < (other.this_update, &other.number)
    }
}

/// How long before a CRL's next update the gateway starts saying so.
pub const CRL_WARNING: time::Duration = time::Duration::days(7);

/// How long before a trust anchor's CA certificate expires the gateway starts saying so: no
/// certificate outlives the CA that issued it, and rolling over to a new CA means a new
/// certificate for every agency, which takes months.
pub const CA_WARNING: time::Duration = time::Duration::days(180);

/// Something to say about a trust anchor's CA ([`TrustStore::ca_concerns`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaConcern {
    /// The anchor's name.
    pub anchor: String,
    /// Whether the anchor vouches for no one any more: every CA of it has expired.
    pub stops: bool,
    /// When the CA ends (or ended).
    pub ends: time::OffsetDateTime,
    /// What to say, with what to do.
    pub text: String,
}

/// A trust anchor's CA certificate and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaStatus {
    /// The anchor's name.
    pub anchor: String,
    /// The CA's subject, as text.
    pub subject: String,
    /// The SHA-256 of its certificate, lowercase hex: two CAs may share a name.
    pub fingerprint: String,
    /// The end of its validity.
    pub not_after: time::OffsetDateTime,
}

impl CaStatus {
    /// Whether the CA certificate has expired at `now`: every certificate of it is then refused.
    pub fn expired(&self, now: time::OffsetDateTime) -> bool {
        now >= self.not_after
    }

    /// What an operator should hear about this CA at `now`: that it has expired, or expires
    /// within [`CA_WARNING`]; `None` while it is further off.
    pub fn concern(&self, now: time::OffsetDateTime) -> Option<String> {
        let when = rfc3339(self.not_after);
        let ca = format!("the CA {} of trust anchor {:?}", self.subject, self.anchor);
        let fix = "its holder rolls over to a new CA (for the region's own: `splpd certs init-ca` in a new folder, both \
                   CAs in the anchor's `ca` file and both CRLs in `crls`, every certificate issued again from the new \
                   one; README, step 9), and the new CA's certificate is listed beside this one";
        if self.expired(now) {
            Some(format!("{ca} expired at {when}: every certificate it issued is refused; {fix}"))
        } else if self.not_after - now <= CA_WARNING {
            Some(format!(
                "{ca} expires at {when}, in {} day(s), and every certificate it issued ends with it: {fix}",
                (self.not_after - now).whole_days()
            ))
        } else {
            None
        }
    }
}

impl CrlStatus {
    /// Whether the CRL has passed its next update at `now`.
    pub fn expired(&self, now: time::OffsetDateTime) -> bool {
        self.next_update.is_some_and(|next| next <= now)
    }

    /// What an operator should hear about this CRL at `now`: that it has expired, or expires
    /// within [`CRL_WARNING`]; `None` while it is fresh.
    pub fn concern(&self, now: time::OffsetDateTime) -> Option<String> {
        let next = self.next_update?;
        let when = rfc3339(next);
        let fix = "for this region's CA, sign a fresh one with `splpd certs crl --ca DIR` and copy it there (run \
                   that from cron or a systemd timer, e.g. weekly, well within the CRL's lifetime); for a \
                   neighbouring region's, copy in the latest CRL its operators publish";
        if next <= now {
            Some(format!(
                "the CRL {} of trust anchor {:?} passed its next update at {when}: every certificate of that CA is \
                 refused until a fresh CRL is loaded; {fix}",
                self.path.display(),
                self.anchor
            ))
        } else if next - now <= CRL_WARNING {
            let left = next - now;
            let hours = left.whole_hours();
            // Within the hour, in minutes: "0 day(s) 0 hour(s)" would read as already past.
            let within = if hours == 0 {
                format!("{} minute(s)", left.whole_minutes().max(1))
            } else {
                format!("{} day(s) {} hour(s)", hours / 24, hours % 24)
            };
            Some(format!(
                "the CRL {} of trust anchor {:?} reaches its next update at {when}, in {within}; after that every \
                 certificate of that CA is refused until a fresh CRL is loaded: {fix}",
                self.path.display(),
                self.anchor,
            ))
        } else {
            None
        }
    }
}

impl TrustStore {
    /// Loads the trust anchors, their CRLs and the identity mappings of a configuration.
    pub fn load(config: &Config) -> Result<Self, TlsSetupError> {
        Self::new(&config.trust_anchors, &config.identities)
    }

    /// Loads the given anchors and mappings (what [`TrustStore::load`] does with a whole
    /// configuration).
    pub fn new(anchors: &[TrustAnchor], mappings: &[IdentityMapping]) -> Result<Self, TlsSetupError> {
        if anchors.is_empty() {
            return Err(TlsSetupError::NoAnchors);
        }
        let mut store = Self {
            anchors: Vec::with_capacity(anchors.len()),
            cas: Vec::new(),
            roots: Arc::new(RootCertStore::empty()),
            crls: Vec::new(),
            crl_status: Vec::new(),
            ca_status: Vec::new(),
            mappings: HashMap::with_capacity(mappings.len()),
            provider: Arc::new(aws_lc_rs::default_provider()),
        };
        let mut roots = RootCertStore::empty();
        for (index, anchor) in anchors.iter().enumerate() {
            store.add_anchor(index, anchor, &mut roots)?;
        }
        store.refuse_crls_of_shared_names()?;
        store.keep_latest_crls();
        // Said, not refused, as for a CRL: the operator may be putting the new CA in place.
        for concern in store.ca_concerns(time::OffsetDateTime::now_utc()) {
            tracing::warn!("{}", concern.text);
        }
        store.roots = Arc::new(roots);
        for m in mappings {
            let anchor = anchors
                .iter()
                .position(|a| a.name == m.anchor)
                .ok_or_else(|| TlsSetupError::MappingAnchor { fingerprint: m.fingerprint, anchor: m.anchor.clone() })?;
            let identity = Identity::parse(m.kind, &m.id)
                .map_err(|cause| TlsSetupError::MappingIdentity { fingerprint: m.fingerprint, cause })?;
            store.mappings.insert(m.fingerprint.0, Mapping { identity, anchor });
        }
        Ok(store)
    }

    /// The CA certificates of the anchors `admit` picks: what a server the gateway calls by URL
    /// (a service's `https://` upstream, the national API manager) may chain to. A CA trusted to
    /// vouch for a neighbour's gateway alone must not vouch for those too.
    pub fn server_roots(&self, admit: impl Fn(&Anchor) -> bool) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for ca in self.cas.iter().filter(|ca| self.anchors.get(ca.anchor).is_some_and(&admit)) {
            // Each was added to `roots` when the anchor was loaded.
            let _ = roots.add(ca.der.clone());
        }
        Arc::new(roots)
    }

    /// Refuses a CRL whose issuer's name another CA with another key also has (a CA rolled over
    /// to a new key under its old name): see [`TlsSetupError::CaNameShared`].
    fn refuse_crls_of_shared_names(&self) -> Result<(), TlsSetupError> {
        for status in &self.crl_status {
            let other = self.cas.iter().find(|ca| *ca.subject == *status.issuer && ca.spki != status.signer);
            if let Some(other) = other {
                let subject = x509_parser::x509::X509Name::from_der(&status.issuer)
                    .map_or_else(|_| "(unreadable name)".to_owned(), |(_, name)| name.to_string());
                return Err(TlsSetupError::CaNameShared {
                    anchor: status.anchor.clone(),
                    path: status.path.clone(),
                    subject,
                    other: self.anchors.get(other.anchor).map_or_else(String::new, |a| a.name.to_string()),
                });
            }
        }
        Ok(())
    }

    /// Of several CRLs of one CA, keeps the latest alone: webpki checks a certificate against the
    /// first CRL of its issuer it is given, which an older one listed first would be.
    fn keep_latest_crls(&mut self) {
        // Of two issued alike (neither before the other), the first listed is kept.
        let latest: Vec<bool> = (0..self.crl_status.len())
            .map(|i| {
                let c = &self.crl_status[i];
                !self.crl_status.iter().enumerate().any(|(j, other)| {
                    other.same_list(c) && (c.issued_before(other) || (j < i && !other.issued_before(c)))
                })
            })
            .collect();
        let mut keep = latest.iter();
        for (status, &kept) in self.crl_status.iter().zip(&latest) {
            if !kept {
                tracing::warn!(
                    "CRL {} of trust anchor {:?} is not used: a later CRL of the same CA is listed too, and only the \
                     latest counts; take the older one out of `crls`",
                    status.path.display(),
                    status.anchor
                );
            }
        }
        self.crls.retain(|_| *keep.next().unwrap_or(&true));
        let mut keep = latest.iter();
        self.crl_status.retain(|_| *keep.next().unwrap_or(&true));
        // A CA that splits its revocations over several lists (distribution points): webpki
        // takes the first that covers a certificate, so each CA's are given newest first.
        let status = &self.crl_status;
        let first_of_signer = |c: &CrlStatus| status.iter().position(|o| o.signer == c.signer).unwrap_or(0);
        let mut order: Vec<usize> = (0..status.len()).collect();
        order.sort_by_key(|&i| {
            let c = &status[i];
            (first_of_signer(c), std::cmp::Reverse((c.this_update, c.number.clone())))
        });
        self.crls = order.iter().map(|&i| self.crls[i].clone()).collect();
        self.crl_status = order.iter().map(|&i| self.crl_status[i].clone()).collect();
    }

    fn add_anchor(
        &mut self,
        index: usize,
        anchor: &TrustAnchor,
        roots: &mut RootCertStore,
    ) -> Result<(), TlsSetupError> {
        let name = &anchor.name;
        let certs = load::read_certificates(&anchor.ca)
            .map_err(|cause| TlsSetupError::AnchorCa { anchor: name.clone(), cause })?;
        let first_ca = self.cas.len();
        for (i, der) in certs.iter().enumerate() {
            let unusable = |reason: String| TlsSetupError::AnchorCaUnusable {
                anchor: name.clone(),
                path: anchor.ca.clone(),
                number: i + 1,
                reason,
            };
            let cert = parse_certificate(der).map_err(unusable)?;
            let (subject, spki) = (cert.subject().as_raw(), cert.public_key().raw);
            if let Some(other) = self.cas[..first_ca].iter().find(|ca| *ca.subject == *subject && *ca.spki == *spki) {
                return Err(TlsSetupError::CaInTwoAnchors {
                    subject: cert.subject().to_string(),
                    first: self.anchors[other.anchor].name.to_string(),
                    second: name.clone(),
                });
            }
            roots.add(der.clone()).map_err(|e| unusable(e.to_string()))?;
            let max_path_len = cert.basic_constraints().ok().flatten().and_then(|bc| bc.value.path_len_constraint);
            let ca =
                AnchorCa { anchor: index, subject: subject.into(), spki: spki.into(), der: der.clone(), max_path_len };
            self.cas.push(ca);
            let status = CaStatus {
                anchor: name.clone(),
                subject: cert.subject().to_string(),
                fingerprint: hex::encode(splpd_certs::load::sha256(der)),
                not_after: cert.validity().not_after.to_datetime(),
            };
            self.ca_status.push(status);
        }
        for path in &anchor.crls {
            let crls = load::read_crls(path).map_err(|cause| TlsSetupError::Crl { anchor: name.clone(), cause })?;
            for crl in crls {
                let status = self.check_crl(name, path, &crl, first_ca)?;
                self.crl_status.push(status);
                self.crls.push(crl);
            }
        }
        self.anchors.push(Anchor { name: name.as_str().into(), scopes: anchor.scopes.clone() });
        Ok(())
    }

    /// Checks that a CRL was issued and signed by one of the anchor's CAs (`self.cas[first_ca..]`).
    /// webpki would otherwise ignore it, and the operator would believe revocation enforced.
    fn check_crl(
        &self,
        anchor: &str,
        path: &Path,
        der: &CertificateRevocationListDer<'_>,
        first_ca: usize,
    ) -> Result<CrlStatus, TlsSetupError> {
        let unusable =
            |reason: String| TlsSetupError::CrlUnusable { anchor: anchor.to_owned(), path: path.to_owned(), reason };
        let (_, crl) = CertificateRevocationList::from_der(der)
            .map_err(|e| unusable(format!("cannot be parsed ({e}); check that the file holds a CRL")))?;
        // What rustls's verifier will make of it: it takes only the profile of RFC 5280 (version
        // 2, a CRL number, a next update), and would otherwise refuse it at start with no name.
        if let Err(e) = webpki::OwnedCertRevocationList::from_der(der) {
            // webpki says BadDer of a version 1 CRL, which has no version field to read.
            let v1 = crl.version().is_none_or(|v| v.0 < 1);
            return Err(unusable(webpki_refusal(&e, v1)));
        }
        let issuer = crl.issuer();
        let mut same_name = self.cas[first_ca..].iter().filter(|ca| *ca.subject == *issuer.as_raw()).peekable();
        if same_name.peek().is_none() {
            return Err(unusable(format!(
                "was issued by {issuer}, which is not a CA of this anchor; list each CRL under the anchor of the CA that signed it"
            )));
        }
        let Some(signer) = same_name.find(|ca| ca.public_key().is_some_and(|key| crl.verify_signature(&key).is_ok()))
        else {
            return Err(unusable(format!(
                "names {issuer} as its issuer, but its signature does not verify with that CA's key; fetch it again from the CA"
            )));
        };
        let status = CrlStatus {
            anchor: anchor.to_owned(),
            path: path.to_owned(),
            next_update: crl.next_update().map(|t| t.to_datetime()),
            this_update: crl.last_update().to_datetime(),
            number: crl.crl_number().cloned(),
            signer: signer.spki.clone(),
            issuer: issuer.as_raw().into(),
            scope: crl
                .extensions()
                .iter()
                .find(|e| e.oid == OID_X509_EXT_ISSUER_DISTRIBUTION_POINT)
                .map(|e| e.value.into()),
            sha256: splpd_certs::load::sha256(der),
        };
        // Not fatal: the operator may be about to replace it, and reloading must not fail
        // because of it. But every certificate of this CA is refused once it has expired.
        if let Some(concern) = status.concern(time::OffsetDateTime::now_utc()) {
            tracing::warn!("{concern}");
        }
        Ok(status)
    }

    /// When each loaded CRL is due to be replaced: each CA's newest first, the CAs in
    /// configuration order.
    pub fn crl_status(&self) -> &[CrlStatus] {
        &self.crl_status
    }

    /// When each anchor's CA certificates expire, in configuration order.
    pub fn ca_status(&self) -> &[CaStatus] {
        &self.ca_status
    }

    /// What to say at `now` about the anchors' CAs, anchor by anchor: a CA near its end, unless a
    /// CA of the same anchor that outlives the warning stands beside it (a rollover under way);
    /// one past its end, which stops the anchor only when no CA of it is left in force (during a
    /// rollover the old one's end refuses only what was not renewed).
    pub fn ca_concerns(&self, now: time::OffsetDateTime) -> Vec<CaConcern> {
        let mut concerns = Vec::new();
        for ca in &self.ca_status {
            let Some(text) = ca.concern(now) else { continue };
            let mut others = self.ca_status.iter().filter(|o| o.anchor == ca.anchor && !std::ptr::eq(*o, ca));
            let (stops, text) = if ca.expired(now) {
                if others.any(|o| !o.expired(now)) {
                    let cleanup = format!(
                        "the CA {} of trust anchor {:?} expired at {}: its certificates are refused, and the anchor's \
                         other CA is in force; take the expired one out of the anchor's `ca` file (and its CRL out of \
                         `crls`)",
                        ca.subject,
                        ca.anchor,
                        rfc3339(ca.not_after)
                    );
                    (false, cleanup)
                } else {
                    (true, text)
                }
            } else if others.any(|o| o.not_after - now > CA_WARNING) {
                continue;
            } else {
                (false, text)
            };
            concerns.push(CaConcern { anchor: ca.anchor.clone(), stops, ends: ca.not_after, text });
        }
        concerns
    }

    /// The trust anchors, in configuration order.
    pub fn anchors(&self) -> &[Anchor] {
        &self.anchors
    }

    /// The anchor with this name.
    pub fn anchor(&self, name: &str) -> Option<&Anchor> {
        self.anchors.iter().find(|a| &*a.name == name)
    }

    /// The CA certificates of all anchors, in configuration order.
    pub(crate) fn anchor_cas(&self) -> &[AnchorCa] {
        &self.cas
    }

    /// The `[[identity]]` mapping of a certificate, by its SHA-256 fingerprint.
    pub(crate) fn mapping(&self, fingerprint: &[u8; 32]) -> Option<&Mapping> {
        self.mappings.get(fingerprint)
    }

    /// The CA certificates of all anchors.
    pub(crate) fn all_roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }

    /// The CRLs of all anchors; see [`server_config`] for how they are applied.
    pub(crate) fn crls(&self) -> impl Iterator<Item = CertificateRevocationListDer<'static>> + '_ {
        self.crls.iter().cloned()
    }
}

fn parse_certificate<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, String> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(format!("{} bytes of trailing data after the certificate", rest.len())),
        Err(e) => Err(format!("not a valid X.509 certificate: {e}")),
    }
}

/// The gateway's own certificate chain and key, loaded once and shared by every listener and
/// every upstream connection that presents it.
#[derive(Debug, Clone)]
pub struct GatewayCert {
    certified: Arc<CertifiedKey>,
    /// The end of its end-entity certificate's validity.
    not_after: time::OffsetDateTime,
}

/// How long before the gateway's certificate expires the gateway starts saying so.
pub const GATEWAY_CERT_WARNING: time::Duration = time::Duration::days(30);

impl GatewayCert {
    /// Loads the chain (end-entity certificate first) and its private key, checking they match.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsSetupError> {
        let chain = load::read_certificates(cert).map_err(|cause| TlsSetupError::GatewayCert { cause })?;
        let key_der: PrivateKeyDer<'static> =
            load::read_private_key(key).map_err(|cause| TlsSetupError::GatewayKey { cause })?;
        let not_after = match chain.first().map(|der| parse_certificate(der)) {
            Some(Ok(leaf)) => leaf.validity().not_after.to_datetime(),
            Some(Err(reason)) => {
                return Err(TlsSetupError::GatewayCert {
                    cause: load::LoadError::Pem { path: cert.to_owned(), reason },
                });
            }
            None => {
                let cause = load::LoadError::Missing { path: cert.to_owned(), wanted: "certificate", found: None };
                return Err(TlsSetupError::GatewayCert { cause });
            }
        };
        let certified = CertifiedKey::from_der(chain, key_der, &aws_lc_rs::default_provider()).map_err(|e| {
            TlsSetupError::GatewayKeyMismatch { cert: cert.to_owned(), key: key.to_owned(), reason: e.to_string() }
        })?;
        Ok(Self { certified: Arc::new(certified), not_after })
    }

    /// Loads `[gateway] cert` and `key` of a configuration.
    pub fn from_config(config: &Config) -> Result<Self, TlsSetupError> {
        for concern in secret_file_concerns(config) {
            tracing::warn!("{concern}");
        }
        let loaded = Self::load(&config.gateway.cert, &config.gateway.key)?;
        if let Some(concern) = loaded.concern(time::OffsetDateTime::now_utc()) {
            tracing::warn!("{concern}");
        }
        Ok(loaded)
    }

    /// Why this certificate may not replace `in_force` (an end-entity DER) at `now`: it has
    /// expired and is another. The one in force may lapse while the gateway runs, and a reload
    /// must still go through; none may be put in place expired.
    pub fn expired_replacement(&self, in_force: &[u8], now: time::OffsetDateTime) -> Option<String> {
        let other = self.chain().first().is_none_or(|leaf| leaf.as_ref() != in_force);
        (self.expired(now) && other).then(|| self.concern(now).unwrap_or_default())
    }

    /// The end of its validity.
    pub fn not_after(&self) -> time::OffsetDateTime {
        self.not_after
    }

    /// Whether the certificate has expired at `now`: agencies and peers then refuse it.
    pub fn expired(&self, now: time::OffsetDateTime) -> bool {
        now >= self.not_after
    }

    /// What to say about the certificate's end at `now`: that it has passed, or is within
    /// [`GATEWAY_CERT_WARNING`]; `None` when it is further off.
    pub fn concern(&self, now: time::OffsetDateTime) -> Option<String> {
        let when = rfc3339(self.not_after);
        let renew = "issue a new one with `splpd certs issue --ca CA server ID` (or from the CA that issued it), put it \
                     in place of [gateway] cert and key, and reload";
        if self.expired(now) {
            Some(format!("the gateway's certificate expired at {when}: agencies and peer gateways refuse it; {renew}"))
        } else if self.not_after - now <= GATEWAY_CERT_WARNING {
            Some(format!(
                "the gateway's certificate expires at {when}, in {} day(s); after that agencies and peer gateways \
                 refuse it: {renew}",
                (self.not_after - now).whole_days()
            ))
        } else {
            None
        }
    }

    /// The certificate chain, end-entity first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }

    pub(crate) fn resolver(&self) -> Arc<SingleCertAndKey> {
        Arc::new(SingleCertAndKey::from(Arc::clone(&self.certified)))
    }
}

/// What is wrong with how the configuration's secret files are kept, if anything: the gateway's
/// private key, the audit log's signing key and the national client secret, where other accounts
/// may read them (`splpd certs` writes keys 0600, but a copy, an unpacked archive or a file
/// written by hand may not be).
pub fn secret_file_concerns(config: &Config) -> Vec<String> {
    let mut files = vec![(config.gateway.key.as_path(), "the gateway's private key")];
    if let Some(key) = &config.audit.signing_key {
        files.push((key, "the audit log's signing key"));
    }
    if let Some(secret) = config.national.as_ref().and_then(|n| n.client_secret_file.as_deref()) {
        files.push((secret, "the national client secret"));
    }
    files.into_iter().filter_map(|(path, what)| secret_file_concern(path, what)).collect()
}

/// What is wrong with how `what`, kept in `path`, is kept: other accounts may read it.
fn secret_file_concern(path: &Path, what: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "{what} {} may be read by other accounts on this host (mode {mode:04o}): `chmod 600 {}`, and make it \
             owned by the account splpd runs as",
            path.display(),
            path.display()
        )
    })
}

/// Whether a TLS listener insists on a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client presents a certificate that verifies. No listener of the gateway uses it
    /// (see [`listener_transport`]); tests use it to stand for services that demand one.
    Required,
    /// Every client presents a certificate that verifies, checked against the CRLs even once
    /// they are past their next update (revocations they list still count): the admin listener,
    /// so that operators can still reach the dashboard and `/readyz` that say a CRL expired,
    /// while every exchange listener refuses that CA's certificates.
    Operators,
    /// A client may connect without a certificate, to be refused per request unless it is opted
    /// in to `tls` on the listener (see [`listener_transport`]). A certificate, when presented,
    /// must verify.
    Optional,
}

/// How a listener speaks to its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TLS 1.2 or 1.3.
    Tls {
        /// Whether a client certificate is mandatory.
        client_auth: ClientAuth,
    },
    /// Cleartext HTTP. Only clients opted in to `http` on this listener are served; the identity
    /// comes from `X-Road-Client`, so validation allows this on intranet addresses only.
    Plain,
}

/// How `listener` must be served: cleartext when any client is opted in to `http` (one socket
/// cannot tell a TLS client from a cleartext one before reading, and a listener meant for
/// cleartext legacy clients should not half-serve TLS); otherwise TLS, where a client certificate
/// is asked for but not demanded by the handshake. A client without one is refused by `identify`
/// with `401 Client.Unauthenticated` saying what to present, and the refusal is logged, where a
/// failed handshake would leave the caller a bare TLS alert and the operator nothing; only a
/// client opted in to `tls` on the listener is served without one. A certificate that is
/// presented must still verify in the handshake.
pub fn listener_transport(listener: &Listener) -> Transport {
    if listener.clients.iter().any(|c| c.connection == ConnectionType::Http) {
        Transport::Plain
    } else {
        Transport::Tls { client_auth: ClientAuth::Optional }
    }
}

/// The rustls server configuration of a TLS listener: TLS 1.3 and 1.2 with aws-lc-rs, ALPN `h2`
/// then `http/1.1`, the gateway's certificate, and client certificates verified against every
/// anchor with their CRLs. webpki enforces the chain, validity at the time of the handshake and
/// the clientAuth extended key usage; which anchor vouched, and for whom, is `identify`'s job.
pub fn server_config(
    trust: &TrustStore,
    gateway: &GatewayCert,
    client_auth: ClientAuth,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    // Only the end-entity certificate is checked against CRLs: region CAs sign leaves directly
    // (pathlen 0), and an outside CA's intermediates would need its root's CRL, which operators do
    // not load. Unknown status is allowed because some anchors (BSrE, a peer region) publish no
    // CRL that we load, and webpki would otherwise refuse every certificate of theirs. An expired
    // CRL, on the other hand, fails closed, as `splpd certs crl` promises operators: a stale list
    // must not keep a revoked certificate working.
    let verifier = client_verifier(trust, client_auth)?;
    let mut config = ServerConfig::builder_with_provider(Arc::clone(&trust.provider))
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsSetupError::Rustls { reason: e.to_string() })?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(gateway.resolver());
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The client certificate verifier of a TLS listener (see [`server_config`]); also used to check
/// the certificates of connections opened before a reload against the new trust store.
pub fn client_verifier(
    trust: &TrustStore,
    client_auth: ClientAuth,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsSetupError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&trust.roots), Arc::clone(&trust.provider))
        .with_crls(trust.crls())
        .only_check_end_entity_revocation()
        .allow_unknown_revocation_status();
    let verifier = match client_auth {
        ClientAuth::Required => verifier.enforce_revocation_expiration(),
        ClientAuth::Optional => verifier.enforce_revocation_expiration().allow_unauthenticated(),
        ClientAuth::Operators => verifier,
    };
    let verifier = verifier.build().map_err(|e| TlsSetupError::Verifier { reason: e.to_string() })?;
    Ok(Arc::new(NamingVerifier(verifier)))
}

tokio::task_local! {
    /// The client certificate the handshake in progress on this task refused, described.
    static REFUSED: std::cell::RefCell<Option<String>>;
}

/// Runs a TLS handshake, and returns with its outcome the client certificate it refused, if it
/// refused one, described for the operator's log ("who was that?"): the refusal itself, sent as
/// a TLS alert, names no certificate.
pub async fn naming_refused<F: std::future::Future>(handshake: F) -> (F::Output, Option<String>) {
    REFUSED
        .scope(std::cell::RefCell::new(None), async {
            let outcome = handshake.await;
            (outcome, REFUSED.with(|r| r.borrow_mut().take()))
        })
        .await
}

/// The log line of a refused handshake: why, and the certificate refused when one was.
pub fn refusal(err: &std::io::Error, refused: Option<String>) -> String {
    let why = why_refused(err);
    match refused {
        Some(cert) => format!("TLS handshake refused: {why}: the client certificate {cert}"),
        None => format!("TLS handshake refused: {why}"),
    }
}

/// rustls's reason, with the times it gives in seconds since 1970 written as dates, so that an
/// operator reads at a glance that a certificate expired, and when.
fn why_refused(err: &std::io::Error) -> String {
    use rustls::CertificateError as C;
    let date = |t: &rustls_pki_types::UnixTime| {
        i64::try_from(t.as_secs())
            .ok()
            .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
            .map_or_else(|| format!("{} s after 1970", t.as_secs()), splpd_certs::inspect::rfc3339)
    };
    match err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(C::ExpiredContext { time, not_after })) => {
            format!("the client certificate expired at {} (it is now {})", date(not_after), date(time))
        }
        Some(rustls::Error::InvalidCertificate(C::NotValidYetContext { time, not_before })) => {
            format!("the client certificate is not valid before {} (it is now {})", date(not_before), date(time))
        }
        Some(rustls::Error::InvalidCertificate(C::Revoked)) => {
            "the client certificate is revoked (its serial is on its CA's CRL)".to_owned()
        }
        _ => err.to_string(),
    }
}

/// The certificate as an operator would look for it: its identity, subject, issuer and SHA-256.
fn describe_refused(der: &CertificateDer<'_>) -> String {
    let fingerprint = hex::encode(load::sha256(der));
    match X509Certificate::from_der(der) {
        Ok((_, cert)) => {
            let identity = match splpd_certs::facts::facts(der).map(|f| f.identity) {
                Ok(Ok(id)) => id.to_string(),
                _ => "no urn:splp: identity".to_owned(),
            };
            // The names are the client's to choose, and go into a log read line by line: escaped
            // (no line breaks or control characters) and cut short.
            let shown = |name: String| name.chars().take(200).flat_map(char::escape_debug).collect::<String>();
            let date = |t: x509_parser::time::ASN1Time| splpd_certs::inspect::rfc3339(t.to_datetime());
            // The serial as `splpd certs revoke --serial` and `list` write it.
            format!(
                "{identity} (serial {}, subject {}, issuer {}, valid {} to {}, sha256 {fingerprint})",
                splpd_certs::inspect::serial_hex(cert.raw_serial()),
                shown(cert.subject().to_string()),
                shown(cert.issuer().to_string()),
                date(cert.validity().not_before),
                date(cert.validity().not_after)
            )
        }
        Err(_) => format!("an unreadable certificate (sha256 {fingerprint})"),
    }
}

/// A client certificate verifier that notes, for [`naming_refused`], which certificate it
/// refused; otherwise the verifier it wraps, unchanged (the same alerts go to the client).
#[derive(Debug)]
struct NamingVerifier(Arc<dyn rustls::server::danger::ClientCertVerifier>);

impl rustls::server::danger::ClientCertVerifier for NamingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.0.verify_client_cert(end_entity, intermediates, now).inspect_err(|_| {
            // Outside a handshake (a connection checked again after a reload) there is no one to
            // tell, and nothing is lost.
            let _ = REFUSED.try_with(|r| *r.borrow_mut() = Some(describe_refused(end_entity)));
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.0.requires_raw_public_keys()
    }
}

/// The rustls client configuration for a service's `https://` upstreams: TLS 1.3 and 1.2, ALPN
/// `h2` then `http/1.1`, the upstream's certificate verified against `tls.ca` when given or else
/// `roots` (from [`TrustStore::server_roots`]) with the anchors' CRLs, and the gateway's own
/// certificate presented when `tls.client_cert` is set. The name to verify (`tls.server_name` or
/// the URL's host) is the connector's business.
pub fn upstream_client_config(
    trust: &TrustStore,
    gateway: &GatewayCert,
    tls: Option<&UpstreamTls>,
    roots: &Arc<RootCertStore>,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let provider = Arc::clone(&trust.provider);
    let verifier = match tls.and_then(|t| t.ca.as_deref()) {
        Some(path) => {
            rustls::client::WebPkiServerVerifier::builder_with_provider(upstream_roots(path)?, provider.clone())
        }
        None => rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::clone(roots), provider.clone())
            .with_crls(trust.crls())
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status()
            .enforce_revocation_expiration(),
    }
    .build()
    .map_err(|e| TlsSetupError::Verifier { reason: e.to_string() })?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsSetupError::Rustls { reason: e.to_string() })?
        .with_webpki_verifier(verifier);
    let mut config = if tls.is_some_and(|t| t.client_cert) {
        builder.with_client_cert_resolver(gateway.resolver())
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

pub(crate) fn upstream_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsSetupError> {
    let certs = load::read_certificates(path).map_err(|e| TlsSetupError::UpstreamCa { reason: e.to_string() })?;
    let mut roots = RootCertStore::empty();
    for (i, der) in certs.into_iter().enumerate() {
        roots.add(der).map_err(|e| TlsSetupError::UpstreamCa {
            reason: format!("certificate {} in {} cannot be used as a trust anchor ({e})", i + 1, path.display()),
        })?;
    }
    Ok(Arc::new(roots))
}

/// Why the TLS verifier (rustls-webpki) cannot use a CRL, and how such CRLs are made.
fn webpki_refusal(e: &webpki::Error, v1: bool) -> String {
    let how = "make it with `splpd certs revoke`, or with `openssl ca -gencrl` given a `crlnumber` file and \
               `crl_extensions` (an authority key identifier) in its configuration";
    match e {
        _ if v1 => format!("is a version 1 CRL, without extensions; the TLS verifier takes version 2 CRLs only: {how}"),
        webpki::Error::UnsupportedCrlVersion => {
            format!("is not a version 2 CRL; the TLS verifier takes version 2 CRLs only: {how}")
        }
        webpki::Error::UnsupportedDeltaCrl => {
            format!("is a delta CRL, which the TLS verifier does not take; list the CA's full CRL: {how}")
        }
        webpki::Error::UnsupportedIndirectCrl => {
            format!("is an indirect CRL, which the TLS verifier does not take; list the CA's own CRL: {how}")
        }
        other => format!(
            "cannot be used by the TLS verifier ({other:?}): it takes CRLs of RFC 5280's profile (version 2, with a \
             CRL number and a next update): {how}"
        ),
    }
}

/// Test fixtures shared with `identify`: real CAs from the project's own PKI tooling in a
/// temporary directory, and real handshakes on loopback.
#[cfg(test)]
pub(crate) mod tests {
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair};
    use rustls::{CertificateError, Error as TlsError, PeerIncompatible, ProtocolVersion};
    use rustls_pki_types::{PrivatePkcs8KeyDer, ServerName};
    use splpd_certs::id::{IdKind, Identity};
    use splpd_certs::pki::keys::random_serial;
    use splpd_certs::pki::{Ca, InitOptions, KeyType, LeafRequest, RevocationReason, RevokeTarget};
    use splpd_certs::profile::{self, ServerNames, Validity};
    use tempfile::TempDir;
    use time::{Duration, OffsetDateTime};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;
    use crate::config::ClientOptIn;

    pub(crate) const REGION_ORG: &str = "Pemerintah Kabupaten Ogan Komering Ilir";

    #[test]
    fn a_refused_certificate_is_described_on_one_line_whatever_its_names_hold() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, "evil\nINFO exchange=forged");
        let der = params.self_signed(&key).unwrap().der().clone();
        let told = describe_refused(&der);
        assert!(!told.contains('\n') && told.contains("evil\\nINFO"), "{told}");
        assert!(told.starts_with("no urn:splp: identity (serial ") && told.contains("sha256 "), "{told}");
        assert!(told.contains(", subject ") && told.contains(", valid 1975-01-01T00:00:00Z to 4096-01-01"), "{told}");
    }

    pub(crate) fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    pub(crate) fn identity(kind: IdKind, id: &str) -> Identity {
        Identity::parse(kind, id).unwrap()
    }

    /// A certificate chain and its key, as a client presents them.
    #[derive(Debug)]
    pub(crate) struct Leaf {
        pub(crate) chain: Vec<CertificateDer<'static>>,
        pub(crate) key: PrivateKeyDer<'static>,
    }

    impl Leaf {
        pub(crate) fn der(&self) -> &CertificateDer<'static> {
            &self.chain[0]
        }
    }

    /// A CA made with `splpd_certs::pki`, in its own directory.
    #[derive(Debug)]
    pub(crate) struct TestCa {
        pub(crate) ca: Ca,
        pub(crate) dir: PathBuf,
        issued: AtomicUsize,
    }

    impl TestCa {
        /// A CA created ten days ago, so that certificates can be issued in the past; its first
        /// CRL is still current.
        pub(crate) fn new(root: &Path, name: &str, org: &str, scope: &str) -> Self {
            let dir = root.join(name);
            let opts = InitOptions::new(org, vec![scope.parse().unwrap()]);
            let ca = Ca::init(&dir, &opts, now() - Duration::days(10)).unwrap();
            Self { ca, dir, issued: AtomicUsize::new(0) }
        }

        pub(crate) fn cert_path(&self) -> PathBuf {
            self.dir.join("ca.crt")
        }

        /// This CA as a `[[trust_anchor]]`, with its CRL.
        pub(crate) fn anchor(&self, name: &str, scopes: &[&str]) -> TrustAnchor {
            TrustAnchor {
                name: name.to_owned(),
                ca: self.cert_path(),
                scopes: scopes.iter().map(|s| s.parse().unwrap()).collect(),
                crls: vec![self.dir.join("crl.pem")],
            }
        }

        /// Issues through the CA tooling, as an operator would.
        pub(crate) fn issue_at(&self, req: &LeafRequest, at: OffsetDateTime) -> (Leaf, String) {
            let n = self.issued.fetch_add(1, Ordering::Relaxed);
            let (cert, key) = (self.dir.join(format!("leaf{n}.crt")), self.dir.join(format!("leaf{n}.key")));
            let issued = self.ca.issue(req, KeyType::default(), &cert, &key, false, at).unwrap();
            let leaf =
                Leaf { chain: load::read_certificates(&cert).unwrap(), key: load::read_private_key(&key).unwrap() };
            (leaf, issued.serial)
        }

        pub(crate) fn issue(&self, kind: IdKind, id: &str) -> Leaf {
            self.issue_at(&LeafRequest::new(identity(kind, id)), now()).0
        }

        /// Another CA under this one's very name, with a key of its own and a current CRL of its
        /// own, in `root/name` (`ca.crt`, `crl.pem`): a CA rolled over to a new key by hand,
        /// or an imposter.
        pub(crate) fn namesake(&self, root: &Path, name: &str) -> PathBuf {
            // rcgen writes both names as UTF8String, as it wrote this CA's: the same bytes.
            let der = load::read_certificates(&self.cert_path()).unwrap().remove(0);
            let ours = parse_certificate(&der).unwrap();
            let text = |value: &x509_parser::x509::AttributeTypeAndValue<'_>| value.as_str().unwrap().to_owned();
            let mut params = CertificateParams::default();
            let dn = &mut params.distinguished_name;
            dn.push(rcgen::DnType::CommonName, text(ours.subject().iter_common_name().next().unwrap()));
            dn.push(rcgen::DnType::OrganizationName, text(ours.subject().iter_organization().next().unwrap()));
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
            params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            let crl = rcgen::CertificateRevocationListParams {
                this_update: now() - Duration::days(1),
                next_update: now() + Duration::days(30),
                crl_number: rcgen::SerialNumber::from(1u64),
                issuing_distribution_point: None,
                revoked_certs: vec![],
                key_identifier_method: rcgen::KeyIdMethod::Sha256,
            };
            let crl = crl.signed_by(&Issuer::new(params, key)).unwrap();
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("ca.crt"), cert.pem()).unwrap();
            std::fs::write(dir.join("crl.pem"), crl.pem().unwrap()).unwrap();
            dir
        }

        /// Signs `params` with this CA's key file directly, bypassing the tooling's checks: what
        /// a careless or hostile holder of the key could do.
        pub(crate) fn mint(&self, params: &CertificateParams) -> Leaf {
            let key = KeyPair::from_pem(&std::fs::read_to_string(self.dir.join("ca.key")).unwrap()).unwrap();
            let issuer = Issuer::from_ca_cert_pem(&std::fs::read_to_string(self.cert_path()).unwrap(), key).unwrap();
            let leaf_key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&leaf_key, &issuer).unwrap();
            Leaf {
                chain: vec![cert.der().clone()],
                key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            }
        }
    }

    /// The status of a CRL of anchor "region" with only its file and dates set, for tests of
    /// what is said of its dates.
    pub(crate) fn crl_status(
        path: &str,
        next_update: Option<OffsetDateTime>,
        this_update: OffsetDateTime,
    ) -> CrlStatus {
        CrlStatus {
            anchor: "region".into(),
            path: path.into(),
            next_update,
            this_update,
            number: None,
            signer: Box::default(),
            issuer: Box::default(),
            scope: None,
            sha256: [0; 32],
        }
    }

    /// Profile-conforming parameters for `identity`, valid for a month.
    pub(crate) fn leaf_params(identity: &Identity) -> CertificateParams {
        profile::leaf_params(
            identity,
            "Somewhere",
            &ServerNames::default(),
            Validity::days_from(now(), 30),
            random_serial().unwrap(),
        )
        .unwrap()
    }

    /// The region CA (scope `ID/PEMDA/1602`) and this gateway's certificate from it.
    #[derive(Debug)]
    pub(crate) struct Pki {
        pub(crate) tmp: TempDir,
        pub(crate) region: TestCa,
        pub(crate) gateway: GatewayCert,
    }

    impl Pki {
        pub(crate) fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let region = TestCa::new(tmp.path(), "region", REGION_ORG, "ID/PEMDA/1602");
            let gateway = server_cert(&region, tmp.path(), "ID/PEMDA/1602/gw1");
            Self { tmp, region, gateway }
        }

        pub(crate) fn ca(&self, name: &str, org: &str, scope: &str) -> TestCa {
            TestCa::new(self.tmp.path(), name, org, scope)
        }

        pub(crate) fn region_anchor(&self) -> TrustAnchor {
            self.region.anchor("region", &["ID/PEMDA/1602"])
        }

        pub(crate) fn region_trust(&self) -> TrustStore {
            TrustStore::new(&[self.region_anchor()], &[]).unwrap()
        }
    }

    /// A server certificate for `id`, valid for `localhost`, written beside the CA.
    pub(crate) fn server_cert(ca: &TestCa, root: &Path, id: &str) -> GatewayCert {
        let req = LeafRequest::new(identity(IdKind::Server, id))
            .with_names(vec!["localhost".into()], vec!["127.0.0.1".parse().unwrap()]);
        let stem = id.replace('/', "-");
        let (cert, key) = (root.join(format!("{stem}.crt")), root.join(format!("{stem}.key")));
        ca.ca.issue(&req, KeyType::default(), &cert, &key, false, now()).unwrap();
        GatewayCert::load(&cert, &key).unwrap()
    }

    /// A client that trusts `ca_file` and presents `leaf`, speaking `versions`.
    pub(crate) fn client_config(
        ca_file: &Path,
        leaf: Option<&Leaf>,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for der in load::read_certificates(ca_file).unwrap() {
            roots.add(der).unwrap();
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match leaf {
            Some(leaf) => builder.with_client_auth_cert(leaf.chain.clone(), leaf.key.clone_key()).unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// What the server saw of a completed handshake.
    #[derive(Debug)]
    pub(crate) struct Accepted {
        pub(crate) peer: Option<Vec<CertificateDer<'static>>>,
        pub(crate) alpn: Option<Vec<u8>>,
        pub(crate) version: Option<ProtocolVersion>,
    }

    /// Both sides of one handshake.
    #[derive(Debug)]
    pub(crate) struct Outcome {
        pub(crate) server: Result<Accepted, TlsError>,
        pub(crate) client: Result<(), io::Error>,
    }

    impl Outcome {
        /// The server's verdict, checked against the client's: a refused client must not be able
        /// to read a byte.
        pub(crate) fn server(self) -> Result<Accepted, TlsError> {
            assert_eq!(self.server.is_ok(), self.client.is_ok(), "server {:?}, client {:?}", self.server, self.client);
            self.server
        }
    }

    fn tls_error(e: &io::Error) -> Option<&TlsError> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<TlsError>())
    }

    /// The rustls error behind a failed client side.
    pub(crate) fn client_tls_error(outcome: &Outcome) -> Option<&TlsError> {
        outcome.client.as_ref().err().and_then(tls_error)
    }

    /// One real handshake on 127.0.0.1; after it the server writes two bytes that the client
    /// must read, so that a client refused after its Finished (TLS 1.3) sees the refusal.
    pub(crate) async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Outcome {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server_side = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            match TlsAcceptor::from(server).accept(tcp).await {
                Ok(mut tls) => {
                    let conn = tls.get_ref().1;
                    let accepted = Accepted {
                        peer: conn.peer_certificates().map(<[_]>::to_vec),
                        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                        version: conn.protocol_version(),
                    };
                    tls.write_all(b"ok").await.unwrap();
                    tls.shutdown().await.unwrap();
                    Ok(accepted)
                }
                Err(e) => Err(tls_error(&e).cloned().unwrap_or_else(|| panic!("not a TLS error: {e}"))),
            }
        });
        let client_side = async {
            let tcp = TcpStream::connect(addr).await?;
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = TlsConnector::from(client).connect(name, tcp).await?;
            let mut buf = [0u8; 2];
            tls.read_exact(&mut buf).await?;
            assert_eq!(&buf, b"ok");
            Ok(())
        };
        let deadline = std::time::Duration::from_secs(20);
        let client = tokio::time::timeout(deadline, client_side).await.unwrap();
        let server = tokio::time::timeout(deadline, server_side).await.unwrap().unwrap();
        Outcome { server, client }
    }

    pub(crate) const BOTH_VERSIONS: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];

    async fn mtls(pki: &Pki, trust: &TrustStore, leaf: Option<&Leaf>) -> Result<Accepted, TlsError> {
        let server = server_config(trust, &pki.gateway, ClientAuth::Required).unwrap();
        handshake(server, client_config(&pki.region.cert_path(), leaf, BOTH_VERSIONS)).await.server()
    }

    fn invalid(err: &Result<Accepted, TlsError>) -> &CertificateError {
        match err {
            Err(TlsError::InvalidCertificate(e)) => e,
            other => panic!("expected an invalid-certificate error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_client_certificate_from_the_region_ca_is_accepted() {
        let pki = Pki::new();
        let leaf = pki.region.issue(IdKind::Subsystem, "ID/PEMDA/1602/DINKES");
        let accepted = mtls(&pki, &pki.region_trust(), Some(&leaf)).await.unwrap();
        assert_eq!(accepted.peer.unwrap()[0], *leaf.der());
        assert_eq!(accepted.alpn.as_deref(), Some(&b"h2"[..]));
        assert_eq!(accepted.version, Some(ProtocolVersion::TLSv1_3));
    }

    #[tokio::test]
    async fn without_a_client_certificate_mtls_is_refused() {
        let pki = Pki::new();
        let err = mtls(&pki, &pki.region_trust(), None).await.unwrap_err();
        assert_eq!(err, TlsError::NoCertificatesPresented);
    }

    #[tokio::test]
    async fn a_certificate_from_an_unknown_ca_is_refused() {
        let pki = Pki::new();
        let stranger = pki.ca("stranger", "Somewhere Else", "ID/PEMDA/1602");
        let leaf = stranger.issue(IdKind::Subsystem, "ID/PEMDA/1602/DINKES");
        let result = mtls(&pki, &pki.region_trust(), Some(&leaf)).await;
        assert_eq!(invalid(&result), &CertificateError::UnknownIssuer);
    }

    #[tokio::test]
    async fn a_certificate_is_refused_once_a_loaded_crl_revokes_it() {
        let pki = Pki::new();
        let (leaf, serial) =
            pki.region.issue_at(&LeafRequest::new(identity(IdKind::Subsystem, "ID/PEMDA/1602/DINKES")), now());
        assert!(mtls(&pki, &pki.region_trust(), Some(&leaf)).await.is_ok());

        pki.region.ca.revoke(&RevokeTarget::Serial(serial), RevocationReason::KeyCompromise, now()).unwrap();
        pki.region.ca.crl(30, now()).unwrap();
        // The next snapshot loads the new CRL.
        let result = mtls(&pki, &pki.region_trust(), Some(&leaf)).await;
        assert_eq!(invalid(&result), &CertificateError::Revoked);
        // Revocation is per certificate: the agency's replacement works.
        let renewed = pki.region.issue(IdKind::Subsystem, "ID/PEMDA/1602/DINKES");
        assert!(mtls(&pki, &pki.region_trust(), Some(&renewed)).await.is_ok());
    }

    /// The admin listener still lets operators in past a CRL's next update, so that they can see
    /// what is wrong; a revocation the stale CRL lists still counts there.
    #[tokio::test]
    async fn operators_get_in_past_a_crls_next_update_unless_it_revokes_them() {
        let pki = Pki::new();
        let request = LeafRequest::new(identity(IdKind::Admin, "ID/PEMDA/1602/budi"));
        let (budi, _) = pki.region.issue_at(&request, now());
        let (ani, ani_serial) =
            pki.region.issue_at(&LeafRequest::new(identity(IdKind::Admin, "ID/PEMDA/1602/ani")), now());
        pki.region.ca.revoke(&RevokeTarget::Serial(ani_serial), RevocationReason::KeyCompromise, now()).unwrap();
        pki.region.ca.crl(1, now() - Duration::days(3)).unwrap();
        let trust = pki.region_trust();
        let admin = |leaf| {
            let server = server_config(&trust, &pki.gateway, ClientAuth::Operators).unwrap();
            handshake(server, client_config(&pki.region.cert_path(), Some(leaf), BOTH_VERSIONS))
        };
        assert!(admin(&budi).await.server().is_ok());
        assert_eq!(invalid(&admin(&ani).await.server()), &CertificateError::Revoked);
        // The exchange listeners refuse the same certificate.
        assert!(mtls(&pki, &trust, Some(&budi)).await.is_err());
    }

    #[test]
    fn only_an_older_crl_of_the_same_ca_is_taken_for_a_step_back() {
        let now = time::OffsetDateTime::now_utc();
        let crl = |signer: &[u8], number: Option<u32>, age: i64| CrlStatus {
            anchor: "region".into(),
            path: "crl.pem".into(),
            next_update: None,
            this_update: now - Duration::days(age),
            number: number.map(Into::into),
            signer: signer.into(),
            issuer: b"CN=CA".as_slice().into(),
            scope: None,
            sha256: [0; 32],
        };
        // By when they were issued.
        let why = crl(b"ca", Some(2), 5).older_than(&crl(b"ca", Some(3), 0)).expect("issued earlier");
        assert!(why.contains("number 2") && why.contains("number 3") && why.contains("older than the one in force"));
        assert!(!why.contains("numbered higher"), "{why}");
        // Issued earlier though numbered higher: two tools number the CA's CRLs apart, and the
        // operator is told so rather than left to wonder how 16 is older than 3.
        let why = crl(b"ca", Some(16), 5).older_than(&crl(b"ca", Some(3), 0)).expect("issued earlier");
        assert!(why.contains("though numbered higher") && why.contains("sign them with one"), "{why}");
        assert_eq!(crl(b"ca", Some(3), 0).older_than(&crl(b"ca", Some(3), 0)), None);
        assert_eq!(crl(b"ca", Some(4), 0).older_than(&crl(b"ca", Some(3), 5)), None);
        assert!(crl(b"ca", None, 2).older_than(&crl(b"ca", None, 1)).is_some());
        assert_eq!(crl(b"ca", None, 1).older_than(&crl(b"ca", None, 2)), None);
        // Issued the same second, by number.
        assert!(crl(b"ca", Some(2), 1).older_than(&crl(b"ca", Some(3), 1)).is_some());
        // Another CA's (a new key under the same name) starts a sequence of its own; another list
        // of the same CA (another distribution point) is still its CA's.
        assert_eq!(crl(b"new", Some(1), 0).older_than(&crl(b"ca", Some(9), 0)), None);
        let other_list = CrlStatus { scope: Some(b"part 2".as_slice().into()), ..crl(b"ca", Some(1), 3) };
        assert!(other_list.older_than(&crl(b"ca", Some(9), 0)).is_some());
        // A CA with two lists (distribution points): each must go on, unless a full one as
        // recent stands for a missing one.
        let part = |name: &[u8], number, age| CrlStatus { scope: Some(name.into()), ..crl(b"ca", Some(number), age) };
        let trusted = |_: &[u8]| true;
        let in_force = [part(b"p1", 5, 1), part(b"p2", 5, 1)];
        assert_eq!(step_back(&[part(b"p1", 6, 0), part(b"p2", 6, 0)], &trusted, &in_force), None);
        assert!(step_back(&[part(b"p1", 6, 0)], &trusted, &in_force).is_some(), "p2 dropped");
        assert!(step_back(&[part(b"p1", 6, 0), part(b"p2", 4, 2)], &trusted, &in_force).is_some(), "p2 older");
        assert_eq!(step_back(&[crl(b"ca", Some(6), 0)], &trusted, &in_force), None, "one full list instead");
        assert!(step_back(&[crl(b"ca", Some(4), 2)], &trusted, &in_force).is_some(), "an older full list");
        assert_eq!(step_back(&[], &|_: &[u8]| false, &in_force), None, "the CA no longer trusted");
        // One total order, numbered or not: of any three one is the latest.
        let (a, b, c) = (crl(b"ca", Some(1), 0), crl(b"ca", Some(2), 4), crl(b"ca", None, 2));
        assert!(b.issued_before(&c) && c.issued_before(&a) && b.issued_before(&a));
    }

    #[test]
    fn of_several_crls_of_one_ca_the_latest_alone_is_used_and_one_cannot_go_missing_on_reload() {
        let pki = Pki::new();
        pki.region.ca.crl(30, now()).unwrap();
        let dir = &pki.region.dir;
        std::fs::copy(dir.join("crl.pem"), dir.join("older.pem")).unwrap();
        pki.region.ca.crl(30, now()).unwrap();
        // The older listed first, where webpki would take it.
        let mut anchor = pki.region_anchor();
        anchor.crls = vec![dir.join("older.pem"), dir.join("crl.pem")];
        let both = TrustStore::new(std::slice::from_ref(&anchor), &[]).unwrap();
        assert_eq!((both.crls.len(), both.crl_status().len()), (1, 1));
        assert_eq!(both.crl_status()[0].path, dir.join("crl.pem"));
        let latest = TrustStore::new(&[pki.region_anchor()], &[]).unwrap();
        assert_eq!(crl_step_back(&both, latest.crl_status()), None);
        // The older one alone, or none at all, would let revoked certificates back in.
        anchor.crls = vec![dir.join("older.pem")];
        let older = TrustStore::new(std::slice::from_ref(&anchor), &[]).unwrap();
        assert!(
            crl_step_back(&older, latest.crl_status()).is_some_and(|why| why.contains("older than the one in force"))
        );
        anchor.crls.clear();
        let none = TrustStore::new(&[anchor], &[]).unwrap();
        let why = crl_step_back(&none, latest.crl_status()).expect("no CRL where one was in force");
        assert!(why.contains("lists no issue of it"), "{why}");
        // A CA no longer trusted at all takes its CRL with it.
        let other = pki.ca("other", "Other", "ID/PEMDA/1699");
        let without = TrustStore::new(&[other.anchor("other", &["ID/PEMDA/1699"])], &[]).unwrap();
        assert_eq!(crl_step_back(&without, latest.crl_status()), None);
    }

    #[test]
    fn a_crl_near_or_past_its_next_update_is_a_concern_saying_what_to_do() {
        let now = time::OffsetDateTime::now_utc();
        let status = |days: i64| crl_status("/etc/splpd/pki/crl.pem", Some(now + Duration::days(days)), now);
        assert_eq!(status(8).concern(now), None);
        let soon = status(3).concern(now).expect("three days ahead");
        assert!(soon.contains("in 3 day(s)") && soon.contains("splpd certs crl --ca DIR"), "{soon}");
        assert!(soon.contains("the latest CRL its operators publish"), "a neighbour's CRL is theirs to sign: {soon}");
        assert!(!status(3).expired(now));
        let past = status(-1).concern(now).expect("a day past");
        assert!(past.contains("passed its next update") && past.contains("every certificate of that CA is refused"));
        assert!(status(-1).expired(now));
        assert_eq!(CrlStatus { next_update: None, ..status(1) }.concern(now), None);
        let minutes = CrlStatus { next_update: Some(now + Duration::seconds(90)), ..status(1) }.concern(now).unwrap();
        assert!(minutes.contains("in 1 minute(s)"), "within the hour, in minutes: {minutes}");
    }

    #[test]
    fn a_trust_anchors_ca_is_told_half_a_year_before_its_end() {
        let pki = Pki::new();
        // A CA made ten days ago for a hundred days: 90 left, within the half year.
        let dir = pki.tmp.path().join("short");
        let opts =
            InitOptions { days: 100, ..InitOptions::new("Pemda Singkat", vec!["ID/PEMDA/1699".parse().unwrap()]) };
        Ca::init(&dir, &opts, now() - Duration::days(10)).unwrap();
        let short = TrustAnchor {
            name: "short".into(),
            ca: dir.join("ca.crt"),
            scopes: vec!["ID/PEMDA/1699".parse().unwrap()],
            crls: vec![dir.join("crl.pem")],
        };
        let trust = TrustStore::new(&[pki.region_anchor(), short], &[]).unwrap();
        let [region, short] = trust.ca_status() else { panic!("{:?}", trust.ca_status()) };
        assert_eq!(region.anchor, "region");
        assert_eq!(region.concern(now()), None, "ten years ahead");
        assert!(region.subject.contains("SPLPD CA"), "{}", region.subject);
        let told = short.concern(now()).expect("90 days ahead");
        assert!(told.contains("trust anchor \"short\" expires at") && told.contains("in 89 day(s)"), "{told}");
        assert!(
            told.contains("every certificate it issued ends with it") && told.contains("splpd certs init-ca"),
            "{told}"
        );
        assert!(!short.expired(now()));
        let later = short.not_after + Duration::days(1);
        assert!(short.expired(later));
        let past = short.concern(later).unwrap();
        assert!(past.contains("expired at") && past.contains("every certificate it issued is refused"), "{past}");
    }

    /// During a rollover the old CA's end is neither a warning nor, once past, a reason the
    /// anchor stops: the new CA stands beside it. Alone, it is both.
    #[test]
    fn a_cas_end_counts_for_its_anchor_only_when_no_other_ca_of_it_outlives_it() {
        let pki = Pki::new();
        let make = |name: &str, from: OffsetDateTime, days: u32| {
            let dir = pki.tmp.path().join(name);
            let opts = InitOptions { days, ..InitOptions::new("Pemda Lama", vec!["ID/PEMDA/1699".parse().unwrap()]) };
            Ca::init(&dir, &opts, from).unwrap();
            std::fs::read_to_string(dir.join("ca.crt")).unwrap()
        };
        // The old CA has 90 days left; the new one, ten years.
        let old = make("old", now() - Duration::days(3560), 3650);
        let new = make("new", now(), 3650);
        let anchor = |pem: String| {
            let path = pki.tmp.path().join(format!("bundle-{}.crt", pem.len()));
            std::fs::write(&path, pem).unwrap();
            TrustAnchor { name: "lama".into(), ca: path, scopes: vec!["ID/PEMDA/1699".parse().unwrap()], crls: vec![] }
        };
        let alone = TrustStore::new(&[anchor(old.clone())], &[]).unwrap();
        let both = TrustStore::new(&[anchor(format!("{old}{new}"))], &[]).unwrap();
        let [soon] = &alone.ca_concerns(now())[..] else { panic!("{:?}", alone.ca_concerns(now())) };
        assert!(!soon.stops && soon.text.contains("expires at"), "{soon:?}");
        assert_eq!(both.ca_concerns(now()), vec![], "a rollover under way");

        let later = now() + Duration::days(100);
        let [ended] = &alone.ca_concerns(later)[..] else { panic!() };
        assert!(ended.stops && ended.text.contains("every certificate it issued is refused"), "{ended:?}");
        let [left] = &both.ca_concerns(later)[..] else { panic!() };
        assert!(!left.stops && left.text.contains("take the expired one out"), "{left:?}");
    }

    #[tokio::test]
    async fn a_crl_past_its_next_update_fails_closed() {
        let pki = Pki::new();
        let leaf = pki.region.issue(IdKind::Subsystem, "ID/PEMDA/1602/DINKES");
        pki.region.ca.crl(1, now() - Duration::days(3)).unwrap();
        let result = mtls(&pki, &pki.region_trust(), Some(&leaf)).await;
        assert!(
            matches!(
                invalid(&result),
                CertificateError::ExpiredRevocationList | CertificateError::ExpiredRevocationListContext { .. }
            ),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn an_anchor_without_a_crl_still_admits_its_certificates() {
        let pki = Pki::new();
        let peer = pki.ca("peer", "Pemerintah Kabupaten Ogan Komering Ulu", "ID/PEMDA/1601");
        let mut peer_anchor = peer.anchor("peer-1601", &["ID/PEMDA/1601"]);
        peer_anchor.crls.clear();
        let trust = TrustStore::new(&[pki.region_anchor(), peer_anchor], &[]).unwrap();
        let leaf = peer.issue(IdKind::Subsystem, "ID/PEMDA/1601/DINKES");
        let server = server_config(&trust, &pki.gateway, ClientAuth::Required).unwrap();
        let outcome = handshake(server, client_config(&pki.region.cert_path(), Some(&leaf), BOTH_VERSIONS)).await;
        assert!(outcome.server().is_ok());
    }

    #[tokio::test]
    async fn expired_and_not_yet_valid_certificates_are_refused() {
        let pki = Pki::new();
        let dinkes = identity(IdKind::Subsystem, "ID/PEMDA/1602/DINKES");
        let mut req = LeafRequest::new(dinkes);
        req.days = Some(1);
        let (expired, _) = pki.region.issue_at(&req, now() - Duration::days(3));
        let result = mtls(&pki, &pki.region_trust(), Some(&expired)).await;
        assert!(
            matches!(invalid(&result), CertificateError::Expired | CertificateError::ExpiredContext { .. }),
            "{result:?}"
        );

        let (early, _) = pki.region.issue_at(&req, now() + Duration::hours(2));
        let result = mtls(&pki, &pki.region_trust(), Some(&early)).await;
        assert!(
            matches!(invalid(&result), CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_certificate_without_the_client_auth_usage_is_refused() {
        let pki = Pki::new();
        let mut params = leaf_params(&identity(IdKind::Subsystem, "ID/PEMDA/1602/DINKES"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = pki.region.mint(&params);
        let result = mtls(&pki, &pki.region_trust(), Some(&leaf)).await;
        assert!(
            matches!(
                invalid(&result),
                CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. }
            ),
            "{result:?}"
        );
        // The same certificate with clientAuth passes: the usage alone made the difference.
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        assert!(mtls(&pki, &pki.region_trust(), Some(&pki.region.mint(&params))).await.is_ok());
    }

    #[tokio::test]
    async fn an_optional_listener_admits_a_client_without_certificate_but_verifies_any_it_gets() {
        let pki = Pki::new();
        let server = server_config(&pki.region_trust(), &pki.gateway, ClientAuth::Optional).unwrap();
        let ca = pki.region.cert_path();
        let anonymous = handshake(Arc::clone(&server), client_config(&ca, None, BOTH_VERSIONS)).await.server().unwrap();
        assert!(anonymous.peer.is_none());

        let stranger = pki.ca("stranger", "Somewhere Else", "ID/PEMDA/1602");
        let leaf = stranger.issue(IdKind::Subsystem, "ID/PEMDA/1602/DINKES");
        let result = handshake(server, client_config(&ca, Some(&leaf), BOTH_VERSIONS)).await.server();
        assert_eq!(invalid(&result), &CertificateError::UnknownIssuer);
    }

    #[tokio::test]
    async fn tls_1_2_and_1_3_are_spoken_and_nothing_older() {
        let pki = Pki::new();
        let leaf = pki.region.issue(IdKind::Subsystem, "ID/PEMDA/1602/DINKES");
        let server = server_config(&pki.region_trust(), &pki.gateway, ClientAuth::Required).unwrap();
        let ca = pki.region.cert_path();
        for (version, expected) in [(&TLS12, ProtocolVersion::TLSv1_2), (&TLS13, ProtocolVersion::TLSv1_3)] {
            let client = client_config(&ca, Some(&leaf), &[version]);
            let accepted = handshake(Arc::clone(&server), client).await.server().unwrap();
            assert_eq!(accepted.version, Some(expected));
            assert_eq!(accepted.alpn.as_deref(), Some(&b"h2"[..]));
        }

        // rustls cannot even offer TLS 1.1, so a ClientHello is written by hand: version 3.2, two
        // CBC suites and an ECDHE suite, and the extensions a TLS 1.1 client sends along (P-256
        // ECDSA signatures, X25519 and P-256 groups, uncompressed points).
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(server);
        let server_side = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            acceptor.accept(tcp).await.map(drop)
        });
        let mut body = vec![0x03, 0x02];
        body.extend_from_slice(&[0x5a; 32]);
        body.extend_from_slice(&[0x00, 0x00, 0x06, 0xc0, 0x13, 0x00, 0x2f, 0xc0, 0x2b, 0x01, 0x00]);
        body.extend_from_slice(&[0x00, 0x18]);
        body.extend_from_slice(&[0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03]);
        body.extend_from_slice(&[0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]);
        body.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
        let mut hello = vec![0x16, 0x03, 0x01, 0x00, 4 + body.len() as u8, 0x01, 0x00, 0x00, body.len() as u8];
        hello.extend_from_slice(&body);
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&hello).await.unwrap();
        let mut reply = Vec::new();
        tcp.read_to_end(&mut reply).await.unwrap();
        // An alert record (21) carrying a fatal protocol_version alert (2, 70), not a ServerHello.
        assert_eq!(reply.first(), Some(&0x15), "{reply:02x?}");
        assert_eq!(reply.get(5..7), Some(&[0x02, 0x46][..]), "{reply:02x?}");
        let err = server_side.await.unwrap().unwrap_err();
        assert!(
            matches!(tls_error(&err), Some(TlsError::PeerIncompatible(PeerIncompatible::Tls12NotOffered))),
            "{err}"
        );
    }

    #[tokio::test]
    async fn upstream_connections_verify_the_service_and_present_the_gateway_certificate() {
        let pki = Pki::new();
        let trust = pki.region_trust();
        // An agency service with a certificate from the region CA, requiring mTLS.
        let service = server_cert(&pki.region, pki.tmp.path(), "ID/PEMDA/1602/svc1");
        let upstream = server_config(&trust, &service, ClientAuth::Required).unwrap();

        let mtls = UpstreamTls { ca: None, client_cert: true, server_name: None };
        let client = upstream_client_config(&trust, &pki.gateway, Some(&mtls), trust.all_roots()).unwrap();
        assert_eq!(client.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        let accepted = handshake(Arc::clone(&upstream), client).await.server().unwrap();
        assert_eq!(accepted.peer.unwrap(), pki.gateway.chain());

        // Without client_cert the gateway presents nothing, and this upstream refuses it.
        let client = upstream_client_config(&trust, &pki.gateway, None, trust.all_roots()).unwrap();
        let err = handshake(Arc::clone(&upstream), client).await.server().unwrap_err();
        assert_eq!(err, TlsError::NoCertificatesPresented);

        // With `ca` naming another CA, the region-issued service certificate is not trusted.
        let other = pki.ca("other", "Somewhere Else", "ID/PEMDA/1602");
        let pinned = UpstreamTls { ca: Some(other.cert_path()), client_cert: true, server_name: None };
        let client = upstream_client_config(&trust, &pki.gateway, Some(&pinned), trust.all_roots()).unwrap();
        let outcome = handshake(upstream, client).await;
        assert!(
            matches!(client_tls_error(&outcome), Some(TlsError::InvalidCertificate(CertificateError::UnknownIssuer))),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn an_upstream_is_verified_only_against_the_anchors_picked_for_servers() {
        let pki = Pki::new();
        let peer = pki.ca("peer", "Kabupaten Tetangga", "ID/PEMDA/1601");
        let trust =
            TrustStore::new(&[pki.region_anchor(), peer.anchor("peer-1601", &["ID/PEMDA/1601/gw1"])], &[]).unwrap();
        // A host answering with a certificate from the neighbour's CA, which vouches for the
        // neighbour's gateway alone.
        let impostor = server_cert(&peer, pki.tmp.path(), "ID/PEMDA/1601/gw1");
        let impostor = server_config(&trust, &impostor, ClientAuth::Optional).unwrap();
        let region_only = trust.server_roots(|a| &**a.name() == "region");
        assert_eq!(region_only.len(), 1);
        let client = upstream_client_config(&trust, &pki.gateway, None, &region_only).unwrap();
        let outcome = handshake(Arc::clone(&impostor), client).await;
        assert!(
            matches!(client_tls_error(&outcome), Some(TlsError::InvalidCertificate(CertificateError::UnknownIssuer))),
            "{outcome:?}"
        );
        // Picked, the same anchor's certificate is taken.
        let peer_only = trust.server_roots(|a| &**a.name() == "peer-1601");
        let client = upstream_client_config(&trust, &pki.gateway, None, &peer_only).unwrap();
        handshake(impostor, client).await.server().unwrap();
    }

    fn listener(opt_ins: &[(&str, ConnectionType)]) -> Listener {
        Listener {
            name: "intranet".into(),
            address: "127.0.0.1:8080".into(),
            clients: opt_ins
                .iter()
                .map(|(client, connection)| ClientOptIn { client: client.parse().unwrap(), connection: *connection })
                .collect(),
            max_connections: None,
        }
    }

    #[test]
    fn a_listener_is_tls_unless_clients_are_opted_in_to_cleartext() {
        assert_eq!(listener_transport(&listener(&[])), Transport::Tls { client_auth: ClientAuth::Optional });
        let tls = [("ID/PEMDA/1602/SIMPEG", ConnectionType::Tls)];
        assert_eq!(listener_transport(&listener(&tls)), Transport::Tls { client_auth: ClientAuth::Optional });
        let http = [("ID/PEMDA/1602/SIMPEG", ConnectionType::Http)];
        assert_eq!(listener_transport(&listener(&http)), Transport::Plain);
        let both = [("ID/PEMDA/1602/SIMPEG", ConnectionType::Tls), ("ID/PEMDA/1602/LAMA", ConnectionType::Http)];
        assert_eq!(listener_transport(&listener(&both)), Transport::Plain);
    }

    #[test]
    fn the_trust_store_loads_anchors_and_mappings_from_a_configuration_file() {
        let pki = Pki::new();
        let dir = pki.tmp.path();
        let gw = dir.join("ID-PEMDA-1602-gw1");
        let fingerprint = Fingerprint(load::sha256(pki.gateway.chain()[0].as_ref()));
        let text = format!(
            r#"
[gateway]
id = "ID/PEMDA/1602/gw1"
cert = "{cert}"
key = "{key}"

[[listener]]
name = "public"
address = "127.0.0.1:8443"

[[trust_anchor]]
name = "region"
ca = "region/ca.crt"
scopes = ["ID/PEMDA/1602"]
crls = ["region/crl.pem"]

[[identity]]
fingerprint = "{fingerprint}"
kind = "server"
id = "ID/PEMDA/1602/gw9"
anchor = "region"
"#,
            cert = gw.with_extension("crt").display(),
            key = gw.with_extension("key").display(),
        );
        let config = crate::config::parse(&dir.join("splpd.toml"), &text).unwrap();
        let trust = TrustStore::load(&config).unwrap();
        assert_eq!(trust.anchors().len(), 1);
        assert_eq!(&**trust.anchors()[0].name(), "region");
        assert!(trust.anchor("region").unwrap().covers(&identity(IdKind::Subsystem, "ID/PEMDA/1602/DINKES")));
        assert_eq!(trust.anchor_cas().len(), 1);
        assert_eq!(trust.crls.len(), 1);
        let mapped = trust.mapping(&fingerprint.0).unwrap();
        assert_eq!(mapped.identity, identity(IdKind::Server, "ID/PEMDA/1602/gw9"));
        assert!(GatewayCert::from_config(&config).is_ok());
    }

    fn load_error(anchors: &[TrustAnchor], mappings: &[IdentityMapping]) -> String {
        TrustStore::new(anchors, mappings).unwrap_err().to_string()
    }

    #[test]
    fn trust_store_errors_name_the_anchor_the_file_and_the_fix() {
        let pki = Pki::new();
        let region = pki.region_anchor();

        assert!(load_error(&[], &[]).contains("add the region CA"));

        let mut missing = region.clone();
        missing.ca = pki.tmp.path().join("nope.crt");
        let msg = load_error(&[missing], &[]);
        assert!(msg.contains("trust anchor \"region\"") && msg.contains("nope.crt"), "{msg}");

        // The same CA under two names would make its scope ambiguous.
        let mut twice = region.clone();
        twice.name = "again".into();
        twice.scopes = vec!["ID/PEMDA/1699".parse().unwrap()];
        let msg = load_error(&[region.clone(), twice], &[]);
        assert!(msg.contains("both trust anchor \"region\" and trust anchor \"again\""), "{msg}");

        // A CRL of another CA would revoke nothing: refused, naming the file.
        let other = pki.ca("other", "Somewhere Else", "ID/PEMDA/1601");
        let mut wrong_crl = region.clone();
        wrong_crl.crls = vec![other.dir.join("crl.pem")];
        let msg = load_error(&[wrong_crl], &[]);
        assert!(msg.contains("other/crl.pem") && msg.contains("not a CA of this anchor"), "{msg}");

        // A CRL that x509-parser reads but the TLS verifier does not take: a version 1 CRL, as
        // `openssl ca -gencrl` makes without a `crlnumber` file.
        let v1 = pki.tmp.path().join("v1");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("index.txt"), "").unwrap();
        let conf = format!(
            "[ca]\ndefault_ca = d\n[d]\ndatabase = {}\ndefault_md = sha256\ndefault_crl_days = 30\n",
            v1.join("index.txt").display()
        );
        std::fs::write(v1.join("ca.cnf"), conf).unwrap();
        let made = std::process::Command::new("openssl")
            .args(["ca", "-gencrl", "-batch", "-config"])
            .arg(v1.join("ca.cnf"))
            .arg("-keyfile")
            .arg(pki.region.dir.join("ca.key"))
            .arg("-cert")
            .arg(pki.region.cert_path())
            .arg("-out")
            .arg(v1.join("crl.pem"))
            .output()
            .expect("openssl runs (Debian package openssl)");
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        let mut v1_crl = region.clone();
        v1_crl.crls = vec![v1.join("crl.pem")];
        let msg = load_error(&[v1_crl], &[]);
        assert!(
            msg.contains("v1/crl.pem") && msg.contains("is a version 1 CRL") && msg.contains("`crlnumber` file"),
            "{msg}"
        );

        // A CRL under this CA's name but signed by another key.
        let imposter = pki.region.namesake(pki.tmp.path(), "imposter");
        let mut forged_crl = region.clone();
        forged_crl.crls = vec![imposter.join("crl.pem")];
        let msg = load_error(&[forged_crl], &[]);
        assert!(msg.contains("signature does not verify"), "{msg}");

        let mapping = IdentityMapping {
            fingerprint: Fingerprint([7; 32]),
            kind: IdKind::Subsystem,
            id: "ID/PEMDA/1602/SIMPUS".into(),
            anchor: "bsre".into(),
        };
        let msg = load_error(std::slice::from_ref(&region), std::slice::from_ref(&mapping));
        assert!(msg.contains("names trust anchor \"bsre\", which is not configured"), "{msg}");
        let bad_id = IdentityMapping { id: "ID/PEMDA/1602".into(), anchor: "region".into(), ..mapping };
        let msg = load_error(&[region], &[bad_id]);
        assert!(msg.contains("INSTANCE/CLASS/MEMBER/SUBSYSTEM"), "{msg}");
    }

    /// Two CAs of one name and a CRL of either: webpki takes a certificate's CRL by its issuer's
    /// name, so one CA's certificates would all fail as wrongly signed. Refused at load, in
    /// one anchor (a CA rolled over by hand, both in its `ca` bundle) or across two.
    #[test]
    fn two_cas_of_one_name_with_a_crl_are_refused_saying_the_new_ca_needs_a_name_of_its_own() {
        let pki = Pki::new();
        let rolled = pki.region.namesake(pki.tmp.path(), "rolled");
        let bundle = pki.tmp.path().join("both.crt");
        let both = std::fs::read_to_string(pki.region.cert_path()).unwrap()
            + &std::fs::read_to_string(rolled.join("ca.crt")).unwrap();
        std::fs::write(&bundle, both).unwrap();
        let mut anchor = pki.region_anchor();
        anchor.ca = bundle;
        for crls in [vec![pki.region.dir.join("crl.pem"), rolled.join("crl.pem")], vec![rolled.join("crl.pem")]] {
            let msg = load_error(&[TrustAnchor { crls, ..anchor.clone() }], &[]);
            assert!(msg.contains("another CA of that same name with another key"), "{msg}");
            assert!(msg.contains("needs a name of its own") && msg.contains("splpd certs init-ca"), "{msg}");
        }
        // Without CRLs the two are told apart by their keys: nothing to refuse.
        assert!(TrustStore::new(&[TrustAnchor { crls: vec![], ..anchor }], &[]).is_ok());
        // Across two anchors too.
        let other = TrustAnchor {
            name: "other".into(),
            ca: rolled.join("ca.crt"),
            scopes: vec!["ID/PEMDA/1601".parse().unwrap()],
            crls: vec![],
        };
        let msg = load_error(&[pki.region_anchor(), other], &[]);
        assert!(msg.contains("trust anchor \"other\" holds another CA of that same name"), "{msg}");
    }

    /// A CA rollover done with the tooling: a new CA of the same organisation, listed beside the
    /// old one in the anchor's bundle with both CRLs, and certificates of both accepted.
    #[tokio::test]
    async fn during_a_rollover_certificates_of_the_old_and_the_new_ca_are_both_accepted() {
        let pki = Pki::new();
        let new = pki.ca("new-ca", REGION_ORG, "ID/PEMDA/1602");
        let bundle = pki.tmp.path().join("both.crt");
        let both = std::fs::read_to_string(pki.region.cert_path()).unwrap()
            + &std::fs::read_to_string(new.cert_path()).unwrap();
        std::fs::write(&bundle, both).unwrap();
        let anchor = TrustAnchor {
            ca: bundle,
            crls: vec![pki.region.dir.join("crl.pem"), new.dir.join("crl.pem")],
            ..pki.region_anchor()
        };
        let trust = TrustStore::new(&[anchor], &[]).unwrap();
        for ca in [&pki.region, &new] {
            let leaf = ca.issue(IdKind::Subsystem, "ID/PEMDA/1602/DINKES");
            let accepted = mtls(&pki, &trust, Some(&leaf)).await;
            assert!(accepted.is_ok(), "a certificate of {}: {accepted:?}", ca.dir.display());
        }
    }

    #[test]
    fn the_end_of_the_gateways_certificate_is_told_before_and_after_it() {
        let pki = Pki::new();
        let cert = server_cert(&pki.region, pki.tmp.path(), "ID/PEMDA/1602/gw7");
        let end = cert.not_after;
        assert!(end > now() + Duration::days(60), "the test CA issues for longer");
        assert_eq!(cert.concern(end - Duration::days(31)), None);
        let soon = cert.concern(end - Duration::days(5)).expect("five days before");
        assert!(soon.contains("expires at") && soon.contains("in 5 day(s)") && soon.contains("splpd certs issue"));
        assert!(!cert.expired(end - Duration::seconds(1)));
        let past = cert.concern(end).expect("at its end");
        assert!(past.contains("expired at") && past.contains("refuse it"), "{past}");
        assert!(cert.expired(end));
    }

    #[test]
    fn a_gateway_key_that_is_not_the_certificates_is_refused() {
        let pki = Pki::new();
        let dir = pki.tmp.path();
        let err = GatewayCert::load(&dir.join("ID-PEMDA-1602-gw1.crt"), &pki.region.dir.join("ca.key")).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, TlsSetupError::GatewayKeyMismatch { .. }), "{msg}");
        assert!(
            msg.contains("ca.key") && msg.contains("use the key file that was written with this certificate"),
            "{msg}"
        );
    }
}
