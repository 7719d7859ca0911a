//! A region PKI in a temporary directory, made with the project's own CA tooling
//! (`splpd_certs::pki`), plus the certificates an attacker or a careless operator could produce:
//! minted directly with rcgen from a CA's key file, bypassing the tooling's checks.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{ExtendedKeyUsagePurpose, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use splpd_certs::id::{IdKind, Identity};
use splpd_certs::load;
use splpd_certs::pki::keys::random_serial;
use splpd_certs::pki::{Ca, InitOptions, KeyType, LeafRequest, RevocationReason, RevokeTarget};
use splpd_certs::profile::{self, ServerNames, Validity};
use tempfile::TempDir;
use time::{Duration, OffsetDateTime};

/// The organisation of the region CA (Kabupaten Ogan Komering Ilir, 1602).
pub const REGION_ORG: &str = "Pemerintah Kabupaten Ogan Komering Ilir";
/// The organisation of the neighbouring region's CA (Kabupaten Ogan Komering Ulu, 1601).
pub const PEER_ORG: &str = "Pemerintah Kabupaten Ogan Komering Ulu";
/// The gateway under test.
pub const GATEWAY_ID: &str = "ID/PEMDA/1602/gw1";
/// The neighbouring region's gateway, with a certificate from its own CA ([`Pki::peer_gateway`]).
pub const PEER_GATEWAY_ID: &str = "ID/PEMDA/1601/gw1";
/// The region's own scope.
pub const REGION_SCOPE: &str = "ID/PEMDA/1602";
/// The peer region's scope.
pub const PEER_SCOPE: &str = "ID/PEMDA/1601";

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// A certificate chain and its private key, as a client presents them.
#[derive(Debug)]
pub struct ClientCert {
    /// The identifier the certificate was made for (what it claims, not necessarily what the
    /// gateway accepts).
    pub identity: String,
    /// End-entity certificate first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for ClientCert {
    fn clone(&self) -> Self {
        Self { identity: self.identity.clone(), chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

impl ClientCert {
    /// SHA-256 over the end-entity certificate's DER, as the audit log records it.
    pub fn sha256(&self) -> [u8; 32] {
        load::sha256(self.chain[0].as_ref())
    }
}

/// The region CA (scope `ID/PEMDA/1602`) with the gateway's server certificate, the peer
/// region's CA (scope `ID/PEMDA/1601`), and an outside CA that no gateway trusts. The CAs are
/// created ten days in the past so that certificates can be issued in the past too.
#[derive(Debug)]
pub struct Pki {
    dir: TempDir,
    region: Ca,
    peer: Ca,
    outsider: Ca,
    issued: AtomicUsize,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    /// Creates the CAs and the gateway certificate (`gw1.crt`, valid for `localhost` and
    /// `127.0.0.1`) in a fresh temporary directory.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let ca = |name: &str, org: &str, scope: &str| {
            let opts = InitOptions::new(org, vec![scope.parse().expect("scope")]);
            Ca::init(&dir.path().join(name), &opts, now() - Duration::days(10)).expect("CA init")
        };
        let region = ca("region", REGION_ORG, REGION_SCOPE);
        let peer = ca("peer-1601", PEER_ORG, PEER_SCOPE);
        let outsider = ca("outsider", "Pemerintah Kabupaten Entah Dimana", REGION_SCOPE);
        let req = LeafRequest::new(Identity::parse(IdKind::Server, GATEWAY_ID).expect("gateway id"))
            .with_names(vec!["localhost".into()], vec![IpAddr::from([127, 0, 0, 1])]);
        region
            .issue(&req, KeyType::default(), &dir.path().join("gw1.crt"), &dir.path().join("gw1.key"), false, now())
            .expect("gateway certificate");
        Self { dir, region, peer, outsider, issued: AtomicUsize::new(0) }
    }

    /// The directory holding every file (the gateway configuration is written here too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The region CA's certificate, which clients trust for the gateway's server certificate.
    pub fn region_ca_cert(&self) -> PathBuf {
        self.region.dir().join("ca.crt")
    }

    /// The region CA.
    pub fn region(&self) -> &Ca {
        &self.region
    }

    /// The peer region's CA.
    pub fn peer(&self) -> &Ca {
        &self.peer
    }

    /// The peer region CA's certificate, which clients of the peer region trust.
    pub fn peer_ca_cert(&self) -> PathBuf {
        self.peer.dir().join("ca.crt")
    }

    /// Issues (once) the peer region's gateway certificate `gw-1601.crt` from the peer CA, valid
    /// for `localhost` and `127.0.0.1`, and returns its chain.
    pub fn peer_gateway(&self) -> Vec<CertificateDer<'static>> {
        let (cert, key) = (self.dir().join("gw-1601.crt"), self.dir().join("gw-1601.key"));
        if !cert.exists() {
            let req = LeafRequest::new(Identity::parse(IdKind::Server, PEER_GATEWAY_ID).expect("gateway id"))
                .with_names(vec!["localhost".into()], vec![IpAddr::from([127, 0, 0, 1])]);
            self.peer.issue(&req, KeyType::default(), &cert, &key, false, now()).expect("peer gateway certificate");
        }
        load::read_certificates(&cert).expect("peer gateway certificate")
    }

    /// A server certificate for `id` minted with the peer region CA's key file directly: the
    /// peer CA vouching for a gateway of this region, which no gateway may accept.
    pub fn rogue_peer_server(&self, id: &str) -> ClientCert {
        let params = profile::leaf_params(
            &Identity::parse(IdKind::Server, id).expect("identifier"),
            PEER_ORG,
            &ServerNames { dns: vec!["localhost".into()], ips: vec![IpAddr::from([127, 0, 0, 1])] },
            Validity::days_from(now(), 30),
            random_serial().expect("serial"),
        )
        .expect("leaf parameters");
        mint(&self.peer, id, &params)
    }

    /// The outside CA itself, for tests that trust it after all, as a region trusts BSrE:
    /// with no scopes, its certificates counting only through `[[identity]]` mappings.
    pub fn outsider(&self) -> &Ca {
        &self.outsider
    }

    /// The outside CA's certificate: a CA that no gateway trusts.
    pub fn outsider_ca_cert(&self) -> PathBuf {
        self.outsider.dir().join("ca.crt")
    }

    /// The gateway's own certificate chain (`gw1.crt`), as it presents it.
    pub fn gateway_chain(&self) -> Vec<CertificateDer<'static>> {
        load::read_certificates(&self.dir().join("gw1.crt")).expect("gateway certificate")
    }

    /// A server certificate from the region CA for an agency service's own HTTPS endpoint
    /// (server identity `id`, valid for `localhost` and `127.0.0.1`), issued through the CA
    /// tooling. It is a chain and a key like a client's, so it comes as a [`ClientCert`].
    pub fn service_server_cert(&self, id: &str) -> ClientCert {
        self.server_cert_from(&self.region, id)
    }

    /// A server certificate as [`Self::service_server_cert`], from `ca` (the peer region's, say,
    /// for a host a neighbour's CA would vouch for).
    pub fn server_cert_from(&self, ca: &Ca, id: &str) -> ClientCert {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let (cert, key) = (self.dir().join(format!("service{n}.crt")), self.dir().join(format!("service{n}.key")));
        let req = LeafRequest::new(Identity::parse(IdKind::Server, id).expect("server identifier"))
            .with_names(vec!["localhost".into()], vec![IpAddr::from([127, 0, 0, 1])]);
        ca.issue(&req, KeyType::default(), &cert, &key, false, now()).expect("service certificate");
        ClientCert {
            identity: id.to_owned(),
            chain: load::read_certificates(&cert).expect("issued certificate"),
            key: load::read_private_key(&key).expect("issued key"),
        }
    }

    /// Issues through the CA tooling, as an operator would, at `at`, valid for `days`.
    pub fn issue_with(&self, ca: &Ca, kind: IdKind, id: &str, days: Option<u32>, at: OffsetDateTime) -> ClientCert {
        self.issue_recorded(ca, kind, id, days, at).0
    }

    fn issue_recorded(
        &self,
        ca: &Ca,
        kind: IdKind,
        id: &str,
        days: Option<u32>,
        at: OffsetDateTime,
    ) -> (ClientCert, String) {
        let (leaf, serial, _) = self.issue_files(ca, kind, id, days, at);
        (leaf, serial)
    }

    /// Issues as [`Self::issue_with`] does; also returns the serial and the files written.
    fn issue_files(
        &self,
        ca: &Ca,
        kind: IdKind,
        id: &str,
        days: Option<u32>,
        at: OffsetDateTime,
    ) -> (ClientCert, String, (PathBuf, PathBuf)) {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let (cert, key) = (self.dir().join(format!("leaf{n}.crt")), self.dir().join(format!("leaf{n}.key")));
        let mut req = LeafRequest::new(Identity::parse(kind, id).expect("identifier"));
        req.days = days;
        let issued = ca.issue(&req, KeyType::default(), &cert, &key, false, at).expect("issue");
        let leaf = ClientCert {
            identity: id.to_owned(),
            chain: load::read_certificates(&cert).expect("issued certificate"),
            key: load::read_private_key(&key).expect("issued key"),
        };
        (leaf, issued.serial, (cert, key))
    }

    /// Replaces the gateway's certificate and key (`gw1.crt`, `gw1.key`) with ones issued at `at`
    /// for `days`, as an operator putting a new certificate in place would.
    pub fn reissue_gateway(&self, days: u32, at: OffsetDateTime) {
        let (_, _, (cert, key)) = self.issue_files(&self.region, IdKind::Server, "ID/PEMDA/1602/gw1", Some(days), at);
        std::fs::copy(cert, self.dir().join("gw1.crt")).expect("gateway certificate");
        std::fs::copy(key, self.dir().join("gw1.key")).expect("gateway key");
    }

    /// A subsystem certificate from the region CA, valid now, with the PEM files it was written
    /// to (certificate, key), for command-line clients such as curl and grpcurl.
    pub fn client_files(&self, id: &str) -> (ClientCert, PathBuf, PathBuf) {
        let (leaf, _, files) = self.issue_files(&self.region, IdKind::Subsystem, id, None, now());
        (leaf, files.0, files.1)
    }

    /// A subsystem certificate from the region CA, valid now.
    pub fn client(&self, id: &str) -> ClientCert {
        self.issue_with(&self.region, IdKind::Subsystem, id, None, now())
    }

    /// An admin (operator) certificate from the region CA, valid now.
    pub fn admin(&self, id: &str) -> ClientCert {
        self.issue_with(&self.region, IdKind::Admin, id, None, now())
    }

    /// An admin certificate of the peer region, from its CA.
    pub fn peer_admin(&self, id: &str) -> ClientCert {
        self.issue_with(&self.peer, IdKind::Admin, id, None, now())
    }

    /// A subsystem certificate from the peer region's CA, within its scope.
    pub fn peer_client(&self, id: &str) -> ClientCert {
        self.issue_with(&self.peer, IdKind::Subsystem, id, None, now())
    }

    /// A certificate from a CA the gateway does not trust, naming an identity of this region.
    pub fn untrusted_client(&self, id: &str) -> ClientCert {
        self.issue_with(&self.outsider, IdKind::Subsystem, id, None, now())
    }

    /// A one-day certificate from the region CA that expired two days ago.
    pub fn expired_client(&self, id: &str) -> ClientCert {
        self.issue_with(&self.region, IdKind::Subsystem, id, Some(1), now() - Duration::days(3))
    }

    /// A certificate from the region CA that only becomes valid in about two hours.
    pub fn not_yet_valid_client(&self, id: &str) -> ClientCert {
        self.issue_with(&self.region, IdKind::Subsystem, id, Some(1), now() + Duration::hours(2))
    }

    /// A subsystem certificate from the region CA, valid now, with its serial for [`Pki::revoke`].
    pub fn revocable_client(&self, id: &str) -> (ClientCert, String) {
        self.issue_recorded(&self.region, IdKind::Subsystem, id, None, now())
    }

    /// An admin certificate from the region CA, valid now, with its serial for [`Pki::revoke`].
    pub fn revocable_admin(&self, id: &str) -> (ClientCert, String) {
        self.issue_recorded(&self.region, IdKind::Admin, id, None, now())
    }

    /// Revokes a region certificate by serial and publishes a fresh CRL (`region/crl.pem`), as an
    /// operator would with `splpd certs revoke` and `splpd certs crl`.
    pub fn revoke(&self, serial: &str) {
        self.region
            .revoke(&RevokeTarget::Serial(serial.to_owned()), RevocationReason::KeyCompromise, now())
            .expect("revoke");
        self.region.crl(30, now()).expect("CRL");
    }

    /// Revokes the gateway's own certificate (`gw1.crt`) and publishes a fresh CRL
    /// (`region/crl.pem`): what a peer region that loads that CRL then refuses.
    pub fn revoke_gateway(&self) {
        self.region
            .revoke(&RevokeTarget::Certificate(self.dir().join("gw1.crt")), RevocationReason::KeyCompromise, now())
            .expect("revoke");
        self.region.crl(30, now()).expect("CRL");
    }

    /// A certificate from the region CA, revoked, with a fresh CRL (`region/crl.pem`) listing it.
    /// Call before starting a gateway: CRLs are loaded at start.
    pub fn revoked_client(&self, id: &str) -> ClientCert {
        let (leaf, serial) = self.issue_recorded(&self.region, IdKind::Subsystem, id, None, now());
        self.region.revoke(&RevokeTarget::Serial(serial), RevocationReason::KeyCompromise, now()).expect("revoke");
        self.region.crl(30, now()).expect("CRL");
        leaf
    }

    /// A subsystem certificate for `id` minted with the peer region CA's key file directly,
    /// bypassing the tooling's scope check: the peer CA vouching for an identity of this region.
    pub fn rogue_peer_client(&self, id: &str) -> ClientCert {
        self.rogue_peer(IdKind::Subsystem, id)
    }

    /// An admin certificate for `id` minted as [`Self::rogue_peer_client`] is: the peer CA
    /// claiming one of this region's operators.
    pub fn rogue_peer_admin(&self, id: &str) -> ClientCert {
        self.rogue_peer(IdKind::Admin, id)
    }

    fn rogue_peer(&self, kind: IdKind, id: &str) -> ClientCert {
        let params = profile::leaf_params(
            &Identity::parse(kind, id).expect("identifier"),
            PEER_ORG,
            &ServerNames::default(),
            Validity::days_from(now(), 30),
            random_serial().expect("serial"),
        )
        .expect("leaf parameters");
        mint(&self.peer, id, &params)
    }

    /// A profile-conforming subsystem certificate from the region CA's key, except that its only
    /// extended key usage is serverAuth.
    pub fn server_auth_only_client(&self, id: &str) -> ClientCert {
        self.region_client_with_usages(id, vec![ExtendedKeyUsagePurpose::ServerAuth])
    }

    /// A subsystem certificate from the region CA's key with the profile's identity but no
    /// extended key usage at all: good for any purpose, which TLS itself lets through.
    pub fn any_purpose_client(&self, id: &str) -> ClientCert {
        self.region_client_with_usages(id, Vec::new())
    }

    /// A profile-conforming subsystem certificate from the region CA's key, with `usages` for its
    /// extended key usages.
    fn region_client_with_usages(&self, id: &str, usages: Vec<ExtendedKeyUsagePurpose>) -> ClientCert {
        let mut params = profile::leaf_params(
            &Identity::parse(IdKind::Subsystem, id).expect("identifier"),
            REGION_ORG,
            &ServerNames::default(),
            Validity::days_from(now(), 30),
            random_serial().expect("serial"),
        )
        .expect("leaf parameters");
        params.extended_key_usages = usages;
        mint(&self.region, id, &params)
    }
}

/// Signs `params` with the key file of `ca`, as a holder of that file could.
fn mint(ca: &Ca, id: &str, params: &rcgen::CertificateParams) -> ClientCert {
    let key_pem = std::fs::read_to_string(ca.dir().join("ca.key")).expect("CA key file");
    let ca_key = KeyPair::from_pem(&key_pem).expect("CA key");
    let issuer = Issuer::from_ca_cert_pem(ca.certificate_pem(), ca_key).expect("CA certificate");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&leaf_key, &issuer).expect("mint");
    ClientCert {
        identity: id.to_owned(),
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    }
}
