//! The identify stage (design §2, §3): who is calling. Once per connection, the verified client
//! certificate is attributed to the trust anchor whose CA signed it and turned into an identity
//! that anchor may vouch for; per request, that identity (or, on opted-in connections without a
//! certificate, the `X-Road-Client` header) becomes the calling client. No network, no disk.

use std::fmt;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use splpd_certs::id::{AdminId, ClientId, IdError, IdPrefix, Identity, ServerId};
use splpd_certs::load;
use splpd_certs::profile::{IdentityError, identity_of};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::units::Fingerprint;
use crate::config::{ClientOptIn, ConnectionType};
use crate::tls::TrustStore;

/// Who is at the other end of a connection with a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The identity the certificate stands for.
    pub identity: Identity,
    /// SHA-256 over the end-entity certificate's DER, for the audit log.
    pub cert_sha256: [u8; 32],
    /// The name of the trust anchor whose CA issued it.
    pub anchor: Arc<str>,
}

/// What a connection established about its client, once, after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionAuth {
    /// TLS with a verified client certificate.
    Mtls(PeerIdentity),
    /// TLS without a client certificate: served only for a client opted in to `tls` on the
    /// listener, refused with 401 otherwise.
    TlsNoCert,
    /// Cleartext HTTP, on a listener where some client is opted in to `http`.
    Plain,
}

/// The client an exchange is made for, and how it reached the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The calling subsystem.
    pub client: ClientId,
    /// The connection type the exchange used, recorded in the audit log.
    pub connection: ConnectionType,
    /// The client certificate's SHA-256, when there was one.
    pub cert_sha256: Option<[u8; 32]>,
}

/// Headers are quoted in messages only this far, so that a hostile header cannot flood a log line.
const QUOTE_LIMIT: usize = 120;

/// A header value as it may appear in a message: cut short, and Debug-quoted so that control
/// characters show as escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoted(String);

impl Quoted {
    fn new(s: &str) -> Self {
        if s.chars().count() <= QUOTE_LIMIT {
            Self(s.to_owned())
        } else {
            let mut cut: String = s.chars().take(QUOTE_LIMIT).collect();
            cut.push('…');
            Self(cut)
        }
    }
}

impl fmt::Display for Quoted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Identifiers print bare, as an operator would write them; anything else is quoted.
        if self.0.chars().all(|c| c.is_ascii_graphic()) { f.write_str(&self.0) } else { write!(f, "{:?}", self.0) }
    }
}

/// Why a certificate's identity is outside its anchor's scopes, and what to do: most often an
/// agency of a neighbouring region calling here directly, whose CA vouches here for that region's
/// gateway alone; it calls through that gateway.
fn out_of_scope(anchor: &str, identity: &Identity, scopes: &[IdPrefix]) -> String {
    let member = identity.member().to_string();
    let gateway = member
        .parse::<IdPrefix>()
        .ok()
        .and_then(|member| scopes.iter().find(|scope| scope.len() > member.len() && member.overlaps(scope)));
    match gateway {
        Some(gateway) => format!(
            "trust anchor {anchor:?} vouches here only for {gateway}, not for {identity}: when {gateway} is the \
             gateway of {member}, an agency of {member} calls this region's services through it, and it asserts the \
             agency's identity here; send the call there"
        ),
        None => format!(
            "trust anchor {anchor:?} tried to vouch for {identity}, outside its scopes ({}); a CA may only vouch for \
             identifiers under its scopes, so {identity} needs a certificate from the CA responsible for {member}",
            scope_list(scopes)
        ),
    }
}

fn scope_list(scopes: &[IdPrefix]) -> String {
    if scopes.is_empty() {
        "it has none: its certificates count only through [[identity]] fingerprint mappings".to_owned()
    } else {
        scopes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    }
}

fn connection_name(connection: ConnectionType) -> &'static str {
    match connection {
        ConnectionType::Mtls => "mTLS",
        ConnectionType::Tls => "TLS without a client certificate",
        ConnectionType::Http => "plain HTTP",
    }
}

fn connection_word(connection: ConnectionType) -> &'static str {
    match connection {
        ConnectionType::Mtls => "mtls",
        ConnectionType::Tls => "tls",
        ConnectionType::Http => "http",
    }
}

/// Why a caller could not be identified. Each message says what was presented and what would make
/// it acceptable; [`IdentifyError::xroad_type`] gives the X-Road error type to answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentifyError {
    /// The connection carries no client certificate where one was expected.
    #[error("the connection presented no client certificate; connect with the certificate issued to the application")]
    NoCertificate,
    /// The certificate verified when the connection opened, but not against the configuration
    /// reloaded since (a new CRL revokes it, its CA was removed, or it has expired).
    #[error(
        "the client certificate is no longer accepted ({reason}); it was checked again after the gateway reloaded \
         its configuration, certificates and CRLs"
    )]
    NoLongerValid {
        /// What the verifier reported.
        reason: String,
    },
    /// The verified certificate cannot be parsed (which webpki would not normally let through).
    #[error("the client certificate cannot be read: {reason}")]
    UnreadableCertificate {
        /// The parser's complaint.
        reason: String,
    },
    /// The anchor's CA signed the certificate through more intermediate CAs than its path length
    /// constraint allows: an intermediate the CA was never meant to have made.
    #[error(
        "the client certificate reaches trust anchor {anchor:?} through {below} intermediate CA(s), but that anchor's \
         CA allows {max} (its path length constraint): a CA under it that it was not meant to have issued the \
         certificate; certificates are issued by the anchor's CA itself"
    )]
    PathTooLong {
        /// The anchor.
        anchor: Arc<str>,
        /// Its CA's path length constraint.
        max: u32,
        /// The intermediates the chain had.
        below: u32,
    },
    /// No configured anchor's CA signed the certificate (or the intermediates it was sent with).
    #[error(
        "the client certificate {fingerprint} (issuer {issuer}) was not signed by the CA of any trust anchor; check that \
         each [[trust_anchor]] `ca` holds the CA certificate itself, and that the client sends its intermediates"
    )]
    UnknownAnchor {
        /// The certificate's fingerprint.
        fingerprint: Fingerprint,
        /// The issuer named in the certificate.
        issuer: String,
    },
    /// The certificate is mapped in `[[identity]]`, but under another anchor than the one whose
    /// CA issued it.
    #[error(
        "the client certificate {fingerprint} is registered as {identity} under trust anchor {mapped:?}, but it was issued \
         by a CA of trust anchor {issued_by:?}; a mapping holds only for certificates of its own anchor, so correct \
         `anchor` in that [[identity]] if this CA is the right one"
    )]
    MappedUnderOtherAnchor {
        /// The certificate's fingerprint.
        fingerprint: Fingerprint,
        /// The identity the mapping gives (boxed to keep the error small on the success path).
        identity: Box<Identity>,
        /// The anchor the mapping names.
        mapped: Arc<str>,
        /// The anchor that issued the certificate.
        issued_by: Arc<str>,
    },
    /// The certificate has no extended key usage, so it is not issued for TLS clients as such.
    #[error(
        "the client certificate {fingerprint} from trust anchor {anchor:?} has no extended key usage, so it was not \
         issued for calling services: the profile requires clientAuth (TLS Web Client Authentication); have the CA \
         issue one with it (`splpd certs issue` does), or register this one in [[identity]] if it must serve as it is"
    )]
    NotForClients {
        /// The certificate's fingerprint.
        fingerprint: Fingerprint,
        /// The anchor that issued it.
        anchor: Arc<str>,
    },
    /// The certificate carries no `urn:splp:` identity and is not mapped.
    #[error(
        "the client certificate {fingerprint} from trust anchor {anchor:?} carries no identity: {cause}; e.g. \
         [[identity]] fingerprint = \"{fingerprint}\" id = \"ID/PEMDA/1602/DINKES\" anchor = \"{anchor}\""
    )]
    NoIdentity {
        /// The certificate's fingerprint.
        fingerprint: Fingerprint,
        /// The anchor that issued it.
        anchor: Arc<str>,
        /// Why no identity was found.
        cause: IdentityError,
    },
    /// The certificate's identity SAN is malformed or not unique.
    #[error("the client certificate {fingerprint} from trust anchor {anchor:?} is unusable: {cause}")]
    MalformedIdentity {
        /// The certificate's fingerprint.
        fingerprint: Fingerprint,
        /// The anchor that issued it.
        anchor: Arc<str>,
        /// What is wrong with its identity.
        cause: IdentityError,
    },
    /// The anchor that issued the certificate may not vouch for the identity it carries.
    #[error("{}", out_of_scope(anchor, identity, scopes))]
    OutOfScope {
        /// The anchor that issued the certificate.
        anchor: Arc<str>,
        /// The identity the certificate claims.
        identity: Identity,
        /// The anchor's scopes.
        scopes: Vec<IdPrefix>,
    },
    /// A gateway's server certificate was used to call a service as a client.
    #[error(
        "the certificate identifies gateway {server}, not a client subsystem, and {server} is not a configured \
         [[peer]]; a gateway calls services here only as a peer, asserting the client it authenticated, so add a \
         [[peer]] table for it (its id, endpoints, authoritative prefixes and trust anchor)"
    )]
    ServerAsClient {
        /// The gateway's identifier.
        server: ServerId,
    },
    /// An operator's certificate was used to call a service.
    #[error(
        "the certificate identifies operator {admin}; operator certificates are for the admin listener and may not make \
         exchanges: call services with the application's subsystem certificate"
    )]
    AdminAsClient {
        /// The operator's identifier.
        admin: AdminId,
    },
    /// `X-Road-Client` names another client than the certificate does.
    #[error(
        "the certificate identifies {certificate}; X-Road-Client names {header}. The client is always the one the \
         certificate names: send X-Road-Client: {certificate}, or leave the header out"
    )]
    ClientHeaderMismatch {
        /// The client the certificate identifies.
        certificate: ClientId,
        /// The header as sent.
        header: Quoted,
    },
    /// A connection without a certificate, on a listener where no client is opted in to `tls`.
    #[error(
        "no client certificate was presented, and this listener serves only clients that present one (mTLS): \
         connect with the certificate and key issued to the application (curl --cert app.crt --key app.key; grpcurl \
         -cert app.crt -key app.key). An application without one makes a key and a certificate request \
         (`splpd certs csr` or openssl) and asks the region's ICT office, which runs its CA, to sign it. A client \
         sends only a certificate of a CA this gateway names in its handshake: one from another CA is not sent at all"
    )]
    CertificateRequired,
    /// A connection without a certificate carries no `X-Road-Client`.
    #[error(
        "this {} connection carries no X-Road-Client header; without a client certificate the caller must name \
         itself, e.g. X-Road-Client: ID/PEMDA/1602/DINKES",
        connection_name(*connection)
    )]
    MissingClientHeader {
        /// How the client connected.
        connection: ConnectionType,
    },
    /// `X-Road-Client` is not a subsystem identifier.
    #[error("X-Road-Client is not a client subsystem identifier: {cause}")]
    BadClientHeader {
        /// Why it does not parse.
        cause: IdError,
    },
    /// `X-Road-Client` was sent empty (a variable left unset in the caller's code, often).
    #[error(
        "X-Road-Client is empty: give the client's identifier, e.g. ID/PEMDA/1602/DINKES, or leave the header out \
         when calling with the application's certificate, which names the client"
    )]
    EmptyClientHeader,
    /// A client named by `X-Road-Client` is not opted in to this connection type on this listener.
    #[error(
        "{client} connected over {} but is {}; every client uses mTLS unless the gateway's operator opts it in: \
         call with the application's certificate (the region's ICT office signs one from the application's request, \
         `splpd certs csr`), or ask the operator to add {{ client = \"{client}\", connection = \"{}\" }} to this \
         listener's `clients` (intranet listeners only)",
        connection_name(*connection),
        match opted { Some(other) => format!("opted in to {} on this listener", connection_word(*other)), None => "not opted in on this listener".to_owned() },
        connection_word(*connection)
    )]
    NotOptedIn {
        /// The client the header names.
        client: ClientId,
        /// How it connected.
        connection: ConnectionType,
        /// The connection type it is opted in to here, if another.
        opted: Option<ConnectionType>,
    },
}

impl IdentifyError {
    /// The X-Road error type (design §3) the gateway answers with.
    pub fn xroad_type(&self) -> &'static str {
        match self {
            Self::NoCertificate
            | Self::CertificateRequired
            | Self::NoLongerValid { .. }
            | Self::UnreadableCertificate { .. }
            | Self::UnknownAnchor { .. }
            | Self::PathTooLong { .. }
            | Self::NoIdentity { .. }
            | Self::NotForClients { .. }
            | Self::MissingClientHeader { .. }
            | Self::NotOptedIn { .. } => "Client.Unauthenticated",
            Self::MappedUnderOtherAnchor { .. }
            | Self::MalformedIdentity { .. }
            | Self::OutOfScope { .. }
            | Self::ClientHeaderMismatch { .. } => "Client.InvalidClientIdentity",
            Self::ServerAsClient { .. } | Self::AdminAsClient { .. } => "Client.AccessDenied",
            Self::BadClientHeader { .. } | Self::EmptyClientHeader => "Client.BadRequest",
        }
    }
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, IdentifyError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(IdentifyError::UnreadableCertificate { reason: "trailing data after the certificate".into() }),
        Err(e) => Err(IdentifyError::UnreadableCertificate { reason: e.to_string() }),
    }
}

/// Identifies the peer of a connection from the certificate chain it presented, which the TLS
/// handshake has already verified against *some* trust anchor (chain, validity, clientAuth,
/// revocation). Here it is decided which anchor — by issuer name and by signature, so that a CA
/// that copies another's name gains nothing — and whether that anchor may vouch for the identity
/// the certificate carries: a `[[identity]]` mapping of this very certificate under that anchor,
/// or else the certificate's single `urn:splp:` identity within one of the anchor's scopes.
pub fn identify_peer(trust: &TrustStore, chain: &[CertificateDer<'_>]) -> Result<PeerIdentity, IdentifyError> {
    let (leaf_der, intermediates) = chain.split_first().ok_or(IdentifyError::NoCertificate)?;
    let leaf = parse(leaf_der)?;
    let cert_sha256 = load::sha256(leaf_der);
    let anchor_index = issuing_anchor(trust, &leaf, intermediates).ok_or_else(|| IdentifyError::UnknownAnchor {
        fingerprint: Fingerprint(cert_sha256),
        issuer: leaf.issuer().to_string(),
    })??;
    let anchor = &trust.anchors()[anchor_index];

    if let Some(mapping) = trust.mapping(&cert_sha256) {
        if mapping.anchor != anchor_index {
            return Err(IdentifyError::MappedUnderOtherAnchor {
                fingerprint: Fingerprint(cert_sha256),
                identity: Box::new(mapping.identity.clone()),
                mapped: Arc::clone(trust.anchors()[mapping.anchor].name()),
                issued_by: Arc::clone(anchor.name()),
            });
        }
        return Ok(PeerIdentity { identity: mapping.identity.clone(), cert_sha256, anchor: Arc::clone(anchor.name()) });
    }

    // webpki refuses an extended key usage without clientAuth; with none at all a certificate is
    // good for any purpose, which the profile does not allow for callers. (A certificate
    // registered in [[identity]] is vouched for by the operator as it is.)
    if !matches!(leaf.extended_key_usage(), Ok(Some(eku)) if eku.value.client_auth) {
        return Err(IdentifyError::NotForClients {
            fingerprint: Fingerprint(cert_sha256),
            anchor: Arc::clone(anchor.name()),
        });
    }
    let identity = identity_of(&leaf).map_err(|cause| {
        let (fingerprint, anchor) = (Fingerprint(cert_sha256), Arc::clone(anchor.name()));
        match cause {
            IdentityError::Missing => IdentifyError::NoIdentity { fingerprint, anchor, cause },
            _ => IdentifyError::MalformedIdentity { fingerprint, anchor, cause },
        }
    })?;
    if !anchor.covers(&identity) {
        return Err(IdentifyError::OutOfScope {
            anchor: Arc::clone(anchor.name()),
            identity,
            scopes: anchor.scopes().to_vec(),
        });
    }
    Ok(PeerIdentity { identity, cert_sha256, anchor: Arc::clone(anchor.name()) })
}

/// The index of the anchor whose CA signed `leaf`, directly or through the `intermediates` the
/// client sent, or why that CA may not have: more intermediates than its path length allows.
/// Each step needs both the name match and a verifying signature.
fn issuing_anchor(
    trust: &TrustStore,
    leaf: &X509Certificate<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Option<Result<usize, IdentifyError>> {
    // `below`: the intermediate CAs between the anchor's CA and the leaf, which its path length
    // constraint bounds (the region's CA, made with path length 0, signs leaves alone).
    let signed_by_anchor = |cert: &X509Certificate<'_>, below: u32| {
        let issuer = cert.issuer().as_raw();
        let ca = trust
            .anchor_cas()
            .iter()
            .filter(|ca| *ca.subject == *issuer)
            .find(|ca| ca.public_key().is_some_and(|key| cert.verify_signature(Some(&key)).is_ok()))?;
        Some(match ca.max_path_len {
            Some(max) if below > max => {
                Err(IdentifyError::PathTooLong { anchor: Arc::clone(trust.anchors()[ca.anchor].name()), max, below })
            }
            _ => Ok(ca.anchor),
        })
    };
    if let Some(anchor) = signed_by_anchor(leaf, 0) {
        return Some(anchor);
    }
    // Rare (region CAs sign leaves directly), so parsed only when needed.
    let parsed: Vec<X509Certificate<'_>> = intermediates.iter().filter_map(|der| parse(der).ok()).collect();
    let mut current = leaf;
    // Each step moves to a different certificate of the chain, so this many steps suffice.
    for below in 1..=parsed.len() {
        let issuer = current.issuer().as_raw();
        current = parsed
            .iter()
            .filter(|c| c.subject().as_raw() == issuer)
            .find(|c| current.verify_signature(Some(c.public_key())).is_ok())?;
        if let Some(anchor) = signed_by_anchor(current, u32::try_from(below).unwrap_or(u32::MAX)) {
            return Some(anchor);
        }
    }
    None
}

/// Identifies the client of one request. With a certificate, the client is the certificate's
/// subsystem, and an `X-Road-Client` header may only repeat it. Without one, the header names the
/// client, which must be opted in to exactly this connection type on this listener.
pub fn identify_client(
    conn: &ConnectionAuth,
    listener_opt_ins: &[ClientOptIn],
    x_road_client: Option<&str>,
) -> Result<Caller, IdentifyError> {
    let connection = match conn {
        ConnectionAuth::Mtls(peer) => return identify_mtls(peer, x_road_client),
        ConnectionAuth::TlsNoCert => ConnectionType::Tls,
        ConnectionAuth::Plain => ConnectionType::Http,
    };
    require_certificate(conn, listener_opt_ins)?;
    let header = x_road_client.ok_or(IdentifyError::MissingClientHeader { connection })?;
    let client: ClientId = parse_client_header(header)?;
    match listener_opt_ins.iter().find(|o| o.client == client) {
        Some(opt) if opt.connection == connection => Ok(Caller { client, connection, cert_sha256: None }),
        other => Err(IdentifyError::NotOptedIn { client, connection, opted: other.map(|o| o.connection) }),
    }
}

/// The client `X-Road-Client` names.
fn parse_client_header(header: &str) -> Result<ClientId, IdentifyError> {
    if header.trim().is_empty() {
        return Err(IdentifyError::EmptyClientHeader);
    }
    header.parse().map_err(|cause| IdentifyError::BadClientHeader { cause })
}

/// Refuses a TLS connection without a certificate on a listener where no client is opted in to
/// `tls`: such a caller is nobody, whatever its headers say.
pub fn require_certificate(conn: &ConnectionAuth, listener_opt_ins: &[ClientOptIn]) -> Result<(), IdentifyError> {
    let opted_in = || listener_opt_ins.iter().any(|o| o.connection == ConnectionType::Tls);
    match conn {
        ConnectionAuth::TlsNoCert if !opted_in() => Err(IdentifyError::CertificateRequired),
        _ => Ok(()),
    }
}

fn identify_mtls(peer: &PeerIdentity, x_road_client: Option<&str>) -> Result<Caller, IdentifyError> {
    let client = match &peer.identity {
        Identity::Subsystem(id) => id,
        Identity::Server(server) => return Err(IdentifyError::ServerAsClient { server: server.clone() }),
        Identity::Admin(admin) => return Err(IdentifyError::AdminAsClient { admin: admin.clone() }),
    };
    if let Some(header) = x_road_client
        // Compared part by part, without parsing: the header must be this identifier exactly.
        && !header.split('/').eq(client.part_strs())
    {
        // A header that is not even an identifier is a malformed request; a well-formed one that
        // names someone else is an attempt to act for another client.
        return Err(match parse_client_header(header) {
            Err(e) => e,
            Ok(_) => IdentifyError::ClientHeaderMismatch { certificate: client.clone(), header: Quoted::new(header) },
        });
    }
    Ok(Caller { client: client.clone(), connection: ConnectionType::Mtls, cert_sha256: Some(peer.cert_sha256) })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    use splpd_certs::id::IdKind;
    use splpd_certs::pki::keys::random_serial;
    use splpd_certs::profile::Validity;

    use super::*;
    use crate::config::{IdentityMapping, TrustAnchor};
    use crate::tls::tests::{
        BOTH_VERSIONS, Leaf, Pki, REGION_ORG, client_config, handshake, identity, leaf_params, now,
    };
    use crate::tls::{ClientAuth, TrustStore, server_config};

    const DINKES: &str = "ID/PEMDA/1602/DINKES";

    fn dinkes_peer() -> PeerIdentity {
        PeerIdentity {
            identity: identity(IdKind::Subsystem, DINKES),
            cert_sha256: [9; 32],
            anchor: Arc::from("region"),
        }
    }

    fn opt_in(client: &str, connection: ConnectionType) -> ClientOptIn {
        ClientOptIn { client: client.parse().unwrap(), connection }
    }

    #[test]
    fn an_identity_within_the_anchor_scope_is_accepted() {
        let pki = Pki::new();
        let leaf = pki.region.issue(IdKind::Subsystem, DINKES);
        let peer = identify_peer(&pki.region_trust(), &leaf.chain).unwrap();
        assert_eq!(peer.identity, identity(IdKind::Subsystem, DINKES));
        assert_eq!(&*peer.anchor, "region");
        assert_eq!(peer.cert_sha256, load::sha256(leaf.der()));
    }

    #[test]
    fn a_neighbours_agency_calling_here_directly_is_told_to_call_through_its_gateway() {
        let pki = Pki::new();
        let peer_ca = pki.ca("peer", "Pemerintah Kabupaten Ogan Komering Ulu", "ID/PEMDA/1601");
        let gateway_only = peer_ca.anchor("peer-1601", &["ID/PEMDA/1601/gw1"]);
        let trust = TrustStore::new(&[pki.region_anchor(), gateway_only], &[]).unwrap();
        let agency = peer_ca.issue(IdKind::Subsystem, "ID/PEMDA/1601/RSUD");
        let err = identify_peer(&trust, &agency.chain).unwrap_err();
        assert_eq!(err.xroad_type(), "Client.InvalidClientIdentity");
        let msg = err.to_string();
        assert!(
            msg.contains("vouches here only for ID/PEMDA/1601/gw1")
                && msg.contains("calls this region's services through it"),
            "{msg}"
        );
        assert!(!msg.contains("needs a certificate from the CA"), "it has one: {msg}");
    }

    #[tokio::test]
    async fn a_peer_region_ca_cannot_mint_an_identity_of_this_region() {
        let pki = Pki::new();
        let peer_ca = pki.ca("peer", "Pemerintah Kabupaten Ogan Komering Ulu", "ID/PEMDA/1601");
        let trust =
            TrustStore::new(&[pki.region_anchor(), peer_ca.anchor("sumsel-1601", &["ID/PEMDA/1601"])], &[]).unwrap();

        // Its own agencies are fine.
        let own = peer_ca.issue(IdKind::Subsystem, "ID/PEMDA/1601/DINKES");
        let peer = identify_peer(&trust, &own.chain).unwrap();
        assert_eq!(&*peer.anchor, "sumsel-1601");

        // The CA tooling refuses to issue outside the scope, so the rogue certificate is signed
        // with the CA's key directly. TLS accepts it: the chain is sound.
        let rogue = peer_ca.mint(&leaf_params(&identity(IdKind::Subsystem, DINKES)));
        let server = server_config(&trust, &pki.gateway, ClientAuth::Required).unwrap();
        let accepted = handshake(server, client_config(&pki.region.cert_path(), Some(&rogue), BOTH_VERSIONS))
            .await
            .server()
            .unwrap();
        let chain = accepted.peer.unwrap();

        let err = identify_peer(&trust, &chain).unwrap_err();
        assert!(matches!(err, IdentifyError::OutOfScope { .. }), "{err:?}");
        assert_eq!(err.xroad_type(), "Client.InvalidClientIdentity");
        let msg = err.to_string();
        assert!(
            msg.contains("trust anchor \"sumsel-1601\" tried to vouch for subsystem ID/PEMDA/1602/DINKES")
                && msg.contains("outside its scopes (ID/PEMDA/1601)"),
            "{msg}"
        );
    }

    #[test]
    fn a_ca_that_copies_the_region_ca_name_is_told_apart_by_its_signature() {
        let pki = Pki::new();
        // Same organisation, hence the same subject as the region CA, but its own key.
        let imposter = pki.ca("imposter", REGION_ORG, "ID/PEMDA/1601");
        let trust =
            TrustStore::new(&[pki.region_anchor(), imposter.anchor("imposter", &["ID/PEMDA/1601"])], &[]).unwrap();
        let rogue = imposter.mint(&leaf_params(&identity(IdKind::Subsystem, DINKES)));
        let err = identify_peer(&trust, &rogue.chain).unwrap_err();
        assert!(
            matches!(&err, IdentifyError::OutOfScope { anchor, .. } if &**anchor == "imposter"),
            "attributed to the wrong anchor: {err:?}"
        );
        // And the genuine one is still the region's.
        let genuine = pki.region.issue(IdKind::Subsystem, DINKES);
        assert_eq!(&*identify_peer(&trust, &genuine.chain).unwrap().anchor, "region");
    }

    /// A certificate such as an outside CA issues: no `urn:splp:` SAN.
    fn without_san() -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "simpus.okikab.go.id");
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let validity = Validity::days_from(now(), 30);
        (params.not_before, params.not_after) = (validity.not_before, validity.not_after);
        params.serial_number = Some(random_serial().unwrap());
        params
    }

    fn mapping(leaf: &Leaf, anchor: &str) -> IdentityMapping {
        IdentityMapping {
            fingerprint: Fingerprint(load::sha256(leaf.der())),
            kind: IdKind::Subsystem,
            id: "ID/PEMDA/1602/SIMPUS".into(),
            anchor: anchor.into(),
        }
    }

    #[tokio::test]
    async fn a_fingerprint_mapping_gives_a_certificate_without_san_its_identity() {
        let pki = Pki::new();
        let bsre = pki.ca("bsre", "Balai Sertifikasi Elektronik", "ID/KL/BSSN");
        // BSrE vouches for nobody by SAN: its certificates count only through mappings.
        let anchors = [pki.region_anchor(), bsre.anchor("bsre", &[])];
        let leaf = bsre.mint(&without_san());

        let trust = TrustStore::new(&anchors, &[mapping(&leaf, "bsre")]).unwrap();
        let server = server_config(&trust, &pki.gateway, ClientAuth::Required).unwrap();
        let accepted = handshake(server, client_config(&pki.region.cert_path(), Some(&leaf), BOTH_VERSIONS))
            .await
            .server()
            .unwrap();
        let peer = identify_peer(&trust, &accepted.peer.unwrap()).unwrap();
        assert_eq!(peer.identity, identity(IdKind::Subsystem, "ID/PEMDA/1602/SIMPUS"));
        assert_eq!(&*peer.anchor, "bsre");

        // Unmapped, it is nobody, and the message says how to register it.
        let unmapped = TrustStore::new(&anchors, &[]).unwrap();
        let err = identify_peer(&unmapped, &leaf.chain).unwrap_err();
        assert!(matches!(err, IdentifyError::NoIdentity { .. }), "{err:?}");
        assert_eq!(err.xroad_type(), "Client.Unauthenticated");
        let fp = Fingerprint(load::sha256(leaf.der())).to_string();
        assert!(err.to_string().contains(&format!("fingerprint = \"{fp}\"")), "{err}");

        // And its SAN identities count for nothing, since the anchor has no scope.
        let with_san = bsre.issue(IdKind::Subsystem, "ID/KL/BSSN/SIGN");
        let err = identify_peer(&unmapped, &with_san.chain).unwrap_err();
        assert!(err.to_string().contains("it has none"), "{err}");
    }

    #[test]
    fn a_fingerprint_mapping_holds_only_under_its_own_anchor() {
        let pki = Pki::new();
        let bsre = pki.ca("bsre", "Balai Sertifikasi Elektronik", "ID/KL/BSSN");
        let leaf = bsre.mint(&without_san());
        let anchors = [pki.region_anchor(), bsre.anchor("bsre", &[])];
        let trust = TrustStore::new(&anchors, &[mapping(&leaf, "region")]).unwrap();
        let err = identify_peer(&trust, &leaf.chain).unwrap_err();
        assert!(
            matches!(&err, IdentifyError::MappedUnderOtherAnchor { mapped, issued_by, .. }
                if &**mapped == "region" && &**issued_by == "bsre"),
            "{err:?}"
        );
        assert!(err.to_string().contains("correct `anchor` in that [[identity]]"), "{err}");
    }

    #[test]
    fn intermediates_sent_by_the_client_are_walked_to_the_anchor() {
        let tmp = tempfile::tempdir().unwrap();
        let validity = Validity::days_from(now(), 30);
        let ca = |cn: &str, constraint| {
            let mut p = CertificateParams::default();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.is_ca = IsCa::Ca(constraint);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            (p.not_before, p.not_after) = (validity.not_before, validity.not_after);
            p
        };
        let root_key = KeyPair::generate().unwrap();
        let root_params = ca("BSrE Root", BasicConstraints::Unconstrained);
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);
        let sub_key = KeyPair::generate().unwrap();
        let sub_params = ca("BSrE Issuing CA", BasicConstraints::Constrained(0));
        let sub = sub_params.signed_by(&sub_key, &root_issuer).unwrap();
        let sub_issuer = Issuer::new(sub_params, sub_key);
        let leaf = leaf_params(&identity(IdKind::Subsystem, "ID/KL/BSSN/SIGN"))
            .signed_by(&KeyPair::generate().unwrap(), &sub_issuer)
            .unwrap();

        let root_path = tmp.path().join("bsre-root.crt");
        std::fs::write(&root_path, root.pem()).unwrap();
        let anchor = TrustAnchor {
            name: "bsre".into(),
            ca: root_path,
            scopes: vec!["ID/KL/BSSN".parse().unwrap()],
            crls: vec![],
        };
        let trust = TrustStore::new(&[anchor], &[]).unwrap();

        let chain = [leaf.der().clone(), sub.der().clone()];
        let peer = identify_peer(&trust, &chain).unwrap();
        assert_eq!(&*peer.anchor, "bsre");
        assert_eq!(peer.cert_sha256, load::sha256(leaf.der()));
        let err = identify_peer(&trust, &chain[..1]).unwrap_err();
        assert!(matches!(err, IdentifyError::UnknownAnchor { .. }), "{err:?}");
        assert!(err.to_string().contains("issuer CN=BSrE Issuing CA"), "{err}");

        // A root that allows no intermediate (path length 0, as `init-ca` makes the region's) is
        // held to it, which the TLS library does not do for a trust anchor.
        let strict_key = KeyPair::generate().unwrap();
        let strict_params = ca("BSrE Root", BasicConstraints::Constrained(0));
        let strict = strict_params.self_signed(&strict_key).unwrap();
        let strict_issuer = Issuer::new(strict_params, strict_key);
        let rogue_sub = ca("BSrE Issuing CA", BasicConstraints::Constrained(0));
        let rogue_key = KeyPair::generate().unwrap();
        let rogue_sub_cert = rogue_sub.signed_by(&rogue_key, &strict_issuer).unwrap();
        let rogue_leaf = leaf_params(&identity(IdKind::Subsystem, "ID/KL/BSSN/SIGN"))
            .signed_by(&KeyPair::generate().unwrap(), &Issuer::new(rogue_sub, rogue_key))
            .unwrap();
        let strict_path = tmp.path().join("strict-root.crt");
        std::fs::write(&strict_path, strict.pem()).unwrap();
        let anchor = TrustAnchor {
            name: "strict".into(),
            ca: strict_path,
            scopes: vec!["ID/KL/BSSN".parse().unwrap()],
            crls: vec![],
        };
        let trust = TrustStore::new(&[anchor], &[]).unwrap();
        let err = identify_peer(&trust, &[rogue_leaf.der().clone(), rogue_sub_cert.der().clone()]).unwrap_err();
        assert!(matches!(err, IdentifyError::PathTooLong { max: 0, below: 1, .. }), "{err:?}");
        assert_eq!(err.xroad_type(), "Client.Unauthenticated");
    }

    #[test]
    fn an_empty_or_unreadable_chain_is_refused() {
        let pki = Pki::new();
        let trust = pki.region_trust();
        assert_eq!(identify_peer(&trust, &[]), Err(IdentifyError::NoCertificate));
        let junk = [CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00])];
        assert!(matches!(identify_peer(&trust, &junk), Err(IdentifyError::UnreadableCertificate { .. })));
    }

    #[test]
    fn with_a_certificate_the_client_is_the_certificates_subsystem() {
        let conn = ConnectionAuth::Mtls(dinkes_peer());
        let expected =
            Caller { client: DINKES.parse().unwrap(), connection: ConnectionType::Mtls, cert_sha256: Some([9; 32]) };
        assert_eq!(identify_client(&conn, &[], None).unwrap(), expected);
        assert_eq!(identify_client(&conn, &[], Some(DINKES)).unwrap(), expected);
    }

    #[test]
    fn a_spoofed_x_road_client_is_refused() {
        let conn = ConnectionAuth::Mtls(dinkes_peer());
        // Even a client opted in on this listener cannot be named by someone else's certificate.
        let opt_ins = [opt_in("ID/PEMDA/1602/DISDUKCAPIL", ConnectionType::Tls)];
        let err = identify_client(&conn, &opt_ins, Some("ID/PEMDA/1602/DISDUKCAPIL")).unwrap_err();
        assert_eq!(err.xroad_type(), "Client.InvalidClientIdentity");
        assert!(
            err.to_string().starts_with(
                "the certificate identifies ID/PEMDA/1602/DINKES; X-Road-Client names ID/PEMDA/1602/DISDUKCAPIL."
            ),
            "{err}"
        );
        for near in ["ID/PEMDA/1602/DINKES/", "ID/PEMDA/1602/dinkes", "ID/PEMDA/1602", "ID/PEMDA/1602/DINKES/x"] {
            assert!(identify_client(&conn, &[], Some(near)).is_err(), "{near}");
        }
        let err = identify_client(&conn, &[], Some("ID/PEMDA/1602/DIN KES")).unwrap_err();
        assert_eq!(err.xroad_type(), "Client.BadRequest");
    }

    #[test]
    fn server_and_admin_certificates_cannot_make_exchanges() {
        let mut peer = dinkes_peer();
        peer.identity = identity(IdKind::Server, "ID/PEMDA/1601/gw1");
        let err = identify_client(&ConnectionAuth::Mtls(peer.clone()), &[], None).unwrap_err();
        assert!(matches!(err, IdentifyError::ServerAsClient { .. }), "{err:?}");
        assert!(err.to_string().contains("not a configured [[peer]]"), "{err}");
        peer.identity = identity(IdKind::Admin, "ID/PEMDA/1602/budi");
        let err = identify_client(&ConnectionAuth::Mtls(peer), &[], None).unwrap_err();
        assert!(matches!(err, IdentifyError::AdminAsClient { .. }), "{err:?}");
        assert_eq!(err.xroad_type(), "Client.AccessDenied");
    }

    #[test]
    fn without_a_certificate_the_client_must_be_opted_in_with_exactly_that_connection_type() {
        let opt_ins = [
            opt_in("ID/PEMDA/1602/SIMPEG", ConnectionType::Tls),
            opt_in("ID/PEMDA/1602/SIMPEG-LAMA", ConnectionType::Http),
        ];
        let caller = identify_client(&ConnectionAuth::TlsNoCert, &opt_ins, Some("ID/PEMDA/1602/SIMPEG")).unwrap();
        assert_eq!((caller.connection, caller.cert_sha256), (ConnectionType::Tls, None));
        assert_eq!(caller.client.to_string(), "ID/PEMDA/1602/SIMPEG");
        let caller = identify_client(&ConnectionAuth::Plain, &opt_ins, Some("ID/PEMDA/1602/SIMPEG-LAMA")).unwrap();
        assert_eq!(caller.connection, ConnectionType::Http);

        // Opted in, but to the other type.
        let err = identify_client(&ConnectionAuth::Plain, &opt_ins, Some("ID/PEMDA/1602/SIMPEG")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("connected over plain HTTP but is opted in to tls on this listener"), "{msg}");
        assert!(msg.contains(r#"{ client = "ID/PEMDA/1602/SIMPEG", connection = "http" }"#), "{msg}");
        // Said to the application's developer: what they do, and what they ask the operator for.
        assert!(msg.contains("call with the application's certificate") && msg.contains("ask the operator"), "{msg}");
        assert!(!msg.contains("splpd certs issue"), "the CA's own command is the ICT office's: {msg}");
        let required = IdentifyError::CertificateRequired.to_string();
        assert!(required.contains("splpd certs csr") && !required.contains("certs issue"), "{required}");
        assert_eq!(err.xroad_type(), "Client.Unauthenticated");

        // Not opted in at all: naming a client is not enough.
        let err = identify_client(&ConnectionAuth::TlsNoCert, &opt_ins, Some(DINKES)).unwrap_err();
        assert!(
            matches!(&err, IdentifyError::NotOptedIn { opted: None, connection: ConnectionType::Tls, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("not opted in on this listener"), "{err}");

        let err = identify_client(&ConnectionAuth::TlsNoCert, &opt_ins, None).unwrap_err();
        assert_eq!(err, IdentifyError::MissingClientHeader { connection: ConnectionType::Tls });
        let err = identify_client(&ConnectionAuth::Plain, &opt_ins, Some("ID/PEMDA/1602/SIMPEG/x")).unwrap_err();
        assert!(matches!(err, IdentifyError::BadClientHeader { .. }), "{err:?}");
        assert!(err.to_string().contains("INSTANCE/CLASS/MEMBER/SUBSYSTEM"), "{err}");
        // Empty, with or without a certificate: said so, not as an identifier of one part.
        let err = identify_client(&ConnectionAuth::Plain, &opt_ins, Some(" ")).unwrap_err();
        assert_eq!(err, IdentifyError::EmptyClientHeader);
        assert!(err.to_string().contains("X-Road-Client is empty"), "{err}");
    }

    #[tokio::test]
    async fn a_client_certificate_on_an_optional_listener_still_decides_the_identity() {
        let pki = Pki::new();
        let trust = pki.region_trust();
        let leaf = pki.region.issue(IdKind::Subsystem, DINKES);
        let server = server_config(&trust, &pki.gateway, ClientAuth::Optional).unwrap();
        let accepted = handshake(server, client_config(&pki.region.cert_path(), Some(&leaf), BOTH_VERSIONS))
            .await
            .server()
            .unwrap();
        let conn = ConnectionAuth::Mtls(identify_peer(&trust, &accepted.peer.unwrap()).unwrap());
        let opt_ins = [opt_in("ID/PEMDA/1602/SIMPEG", ConnectionType::Tls)];
        let err = identify_client(&conn, &opt_ins, Some("ID/PEMDA/1602/SIMPEG")).unwrap_err();
        assert!(matches!(err, IdentifyError::ClientHeaderMismatch { .. }), "{err:?}");
        assert_eq!(identify_client(&conn, &opt_ins, None).unwrap().client.to_string(), DINKES);
    }

    #[test]
    fn a_long_or_odd_header_is_quoted_short_and_escaped() {
        let conn = ConnectionAuth::Mtls(dinkes_peer());
        assert_eq!(identify_client(&conn, &[], Some("")).unwrap_err(), IdentifyError::EmptyClientHeader);
        let long = format!("ID/PEMDA/1602/{}", "A".repeat(60));
        let err = identify_client(&conn, &[], Some(&long)).unwrap_err();
        assert!(matches!(err, IdentifyError::ClientHeaderMismatch { .. }), "{err:?}");
        let long = format!("ID/PEMDA/{}/X", "9".repeat(60));
        let err = identify_client(&conn, &[], Some(&long)).unwrap_err();
        assert!(err.to_string().contains(&long), "{err}");
        // Cut to the limit, with an ellipsis, inside quotes.
        assert_eq!(Quoted::new(&"x".repeat(500)).to_string().chars().count(), QUOTE_LIMIT + 3);
        assert_eq!(Quoted::new("a\nb").to_string(), r#""a\nb""#);
    }

    proptest! {
        #[test]
        fn with_a_certificate_only_its_own_identifier_passes_as_header(header in "[A-Za-z0-9/ .?-]{0,30}") {
            let conn = ConnectionAuth::Mtls(dinkes_peer());
            let result = identify_client(&conn, &[], Some(&header));
            prop_assert_eq!(result.is_ok(), header == DINKES);
        }

        #[test]
        fn the_header_is_checked_as_an_identifier_near_the_real_one(suffix in "[A-Za-z0-9/]{0,8}") {
            let conn = ConnectionAuth::Mtls(dinkes_peer());
            let header = format!("{DINKES}{suffix}");
            prop_assert_eq!(identify_client(&conn, &[], Some(&header)).is_ok(), suffix.is_empty());
        }
    }
}
