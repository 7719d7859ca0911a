//! Tests of the CA operations against real files in a temporary directory.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use time::{Duration, OffsetDateTime};
use x509_parser::prelude::ParsedExtension;

use super::*;
use crate::id::{IdKind, Identity};
use crate::inspect::{self, ObjectKind};
use crate::profile::{self, Role};

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn id(kind: IdKind, s: &str) -> Identity {
    Identity::parse(kind, s).unwrap()
}

fn dinkes() -> Identity {
    id(IdKind::Subsystem, "ID/PEMDA/1602/DINKES")
}

fn new_ca(dir: &Path) -> Ca {
    let opts = InitOptions::new("Pemerintah Kabupaten Ogan Komering Ilir", vec!["ID/PEMDA/1602".parse().unwrap()]);
    Ca::init(&dir.join("ca"), &opts, now()).unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file under `dir`, relative, sorted: what a refused command must leave unchanged.
fn listing(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let contents = fs::read(&path).unwrap();
                out.push((path.strip_prefix(dir).unwrap().to_owned(), contents));
            }
        }
    }
    out.sort();
    out
}

fn read_der(path: &Path, kind: ObjectKind) -> Vec<u8> {
    inspect::decode_as(&fs::read(path).unwrap(), kind).unwrap()
}

fn issue(ca: &Ca, dir: &Path, identity: Identity) -> Issued {
    let stem = dir.join(profile::identifier(&identity).replace('/', "-"));
    ca.issue(
        &LeafRequest::new(identity),
        KeyType::EcdsaP256,
        &stem.with_extension("crt"),
        &stem.with_extension("key"),
        false,
        now(),
    )
    .unwrap()
}

/// Checks that `cert_path` verifies under the CA certificate and fits the leaf profile.
fn assert_issued_by(ca: &Ca, cert_path: &Path) -> Vec<u8> {
    let der = read_der(cert_path, ObjectKind::Certificate);
    let ca_der = read_der(&ca.dir().join(store::CA_CERT), ObjectKind::Certificate);
    let cert = inspect::parse_certificate(&der).unwrap();
    let ca_cert = inspect::parse_certificate(&ca_der).unwrap();
    cert.verify_signature(Some(ca_cert.public_key())).unwrap();
    assert_eq!(cert.issuer().as_raw(), ca_cert.subject().as_raw());
    assert_eq!(profile::check_as(&cert, Role::Leaf, now()), Vec::new(), "{}", cert_path.display());
    der
}

#[test]
fn init_writes_a_ca_that_fits_the_profile_with_a_private_key() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(tmp.path());
    let dir = ca.dir();
    for name in [store::CA_CERT, store::CA_KEY, store::CA_CONFIG, store::INDEX, store::CRL] {
        assert!(dir.join(name).is_file(), "{name}");
    }
    assert_eq!(mode(&dir.join(store::CA_KEY)), 0o600);
    assert_eq!(mode(dir), 0o700);
    let der = read_der(&dir.join(store::CA_CERT), ObjectKind::Certificate);
    let cert = inspect::parse_certificate(&der).unwrap();
    assert_eq!(profile::role_of(&cert), Role::Ca);
    assert_eq!(profile::check(&cert, now()), Vec::new());
    let bc = cert.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let days = (cert.validity().not_after.to_datetime() - now()).whole_days();
    assert!((3648..=3650).contains(&days), "{days}");
    assert_eq!(
        cert.subject().iter_organization().next().unwrap().as_str().unwrap(),
        "Pemerintah Kabupaten Ogan Komering Ilir"
    );

    let config: CaConfig = store::load_json(&dir.join(store::CA_CONFIG)).unwrap();
    assert_eq!(config.scopes, vec!["ID/PEMDA/1602".parse().unwrap()]);
    assert_eq!(config.crl_number, 1);
    assert_eq!(Ca::open(dir).unwrap().fingerprint_sha256(), ca.fingerprint_sha256());
}

#[test]
fn a_ca_that_replaces_another_of_the_same_organisation_has_a_name_of_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = InitOptions::new("Pemerintah Kabupaten Ogan Komering Ilir", vec!["ID/PEMDA/1602".parse().unwrap()]);
    let name = |dir: &str| {
        let ca = Ca::init(&tmp.path().join(dir), &opts, now()).unwrap();
        let der = read_der(&ca.dir().join(store::CA_CERT), ObjectKind::Certificate);
        let cert = inspect::parse_certificate(&der).unwrap();
        cert.subject().iter_common_name().next().unwrap().as_str().unwrap().to_owned()
    };
    let (old, new) = (name("old"), name("new"));
    let year = now().year().to_string();
    assert!(old.starts_with("Pemerintah Kabupaten Ogan Komering Ilir SPLPD CA ") && old.contains(&year), "{old}");
    assert_ne!(old, new, "CRLs are matched to their CA by name");
}

#[test]
fn init_refuses_an_existing_ca_and_writes_nothing_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(tmp.path());
    let before = listing(ca.dir());
    let opts = InitOptions::new("Other", vec!["ID/PEMDA/1602".parse().unwrap()]);
    let err = Ca::init(ca.dir(), &opts, now()).unwrap_err();
    assert!(matches!(err, PkiError::CaExists { file: "ca.key", .. }), "{err:?}");
    assert_eq!(listing(ca.dir()), before);

    let forced = Ca::init(ca.dir(), &InitOptions { force: true, ..opts }, now()).unwrap();
    assert_ne!(forced.fingerprint_sha256(), ca.fingerprint_sha256());
    assert_eq!(Ca::open(ca.dir()).unwrap().config().organisation, "Other");
    assert_eq!(mode(&ca.dir().join(store::CA_KEY)), 0o600);
}

#[test]
fn init_refuses_bad_options_before_creating_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let err = Ca::init(&dir, &InitOptions::new("Pemda", vec![]), now()).unwrap_err();
    assert!(matches!(err, PkiError::NoScope), "{err:?}");
    let err = Ca::init(&dir, &InitOptions::new(" ", vec!["ID".parse().unwrap()]), now()).unwrap_err();
    assert!(err.to_string().contains("organisation"), "{err}");
    assert!(!dir.exists());
}

#[test]
fn every_key_type_makes_a_working_ca() {
    for key_type in KeyType::ALL {
        let tmp = tempfile::tempdir().unwrap();
        let opts = InitOptions { key_type, ..InitOptions::new("Pemda", vec!["ID/PEMDA/1602".parse().unwrap()]) };
        let ca = Ca::init(&tmp.path().join("ca"), &opts, now()).unwrap();
        let ca = Ca::open(ca.dir()).unwrap();
        assert_eq!(ca.config().key_type, key_type);
        let issued = ca
            .issue(
                &LeafRequest::new(dinkes()),
                key_type,
                &tmp.path().join("a.crt"),
                &tmp.path().join("a.key"),
                false,
                now(),
            )
            .unwrap();
        assert_issued_by(&ca, &issued.cert_path);
        ca.revoke(&RevokeTarget::Serial(issued.serial.clone()), RevocationReason::Superseded, now()).unwrap();
        assert_eq!(ca.crl(7, now()).unwrap().revoked, vec![issued.serial]);
    }
}

#[test]
fn issued_certificates_parse_and_fit_the_profile_for_each_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(tmp.path());
    for (identity, server) in [
        (dinkes(), false),
        (id(IdKind::Server, "ID/PEMDA/1602/gw1"), true),
        (id(IdKind::Admin, "ID/PEMDA/1602/budi"), false),
    ] {
        let issued = issue(&ca, tmp.path(), identity.clone());
        let der = assert_issued_by(&ca, &issued.cert_path);
        let cert = inspect::parse_certificate(&der).unwrap();
        assert_eq!(profile::identity_of(&cert).unwrap(), identity);
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth);
        assert_eq!(eku.server_auth, server);
        assert!(!cert.basic_constraints().unwrap().unwrap().value.ca);
        assert_eq!(inspect::serial_hex(cert.raw_serial()), issued.serial);
        assert_eq!(issued.serial.len(), 32, "16-byte serial");
        assert!(cert.raw_serial()[0] < 0x80, "positive serial");
        let cn = cert.subject().iter_common_name().next().unwrap().as_str().unwrap().to_owned();
        assert_eq!(cn, profile::identifier(&identity));
        let days = (issued.validity.not_after - now()).whole_days();
        assert!((823..=825).contains(&days), "{days}");

        let key_path = issued.key_path.unwrap();
        assert_eq!(mode(&key_path), 0o600);
        assert_eq!(mode(&issued.cert_path), 0o644);
        let key = rcgen::KeyPair::from_pem(&fs::read_to_string(&key_path).unwrap()).unwrap();
        assert_eq!(cert.public_key().raw, rcgen::PublicKeyData::subject_public_key_info(&key).as_slice());
    }
    let index = ca.index().unwrap();
    assert_eq!(index.certificates.len(), 3);
    assert_eq!(index.certificates[1].identity, "ID/PEMDA/1602/gw1");
    assert_eq!(index.certificates[1].kind, IdKind::Server);
    for entry in &index.certificates {
        assert!(ca.dir().join(store::ISSUED_DIR).join(format!("{}.pem", entry.serial)).is_file());
    }
}

#[test]
fn server_certificates_carry_dns_and_ip_names_and_others_refuse_them() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(tmp.path());
    let gw = LeafRequest::new(id(IdKind::Server, "ID/PEMDA/1602/gw1"))
        .with_names(vec!["splpd.okikab.go.id".into()], vec!["10.0.0.7".parse().unwrap()]);
    let issued = ca
        .issue(&gw, KeyType::EcdsaP256, &tmp.path().join("gw.crt"), &tmp.path().join("gw.key"), false, now())
        .unwrap();
    let der = assert_issued_by(&ca, &issued.cert_path);
    let report = inspect::certificate_report(&inspect::parse_certificate(&der).unwrap(), &der, now());
    assert_eq!(
        report.subject_alt_names,
        vec!["URI:urn:splp:server:ID:PEMDA:1602:gw1", "DNS:splpd.okikab.go.id", "IP:10.0.0.7"]
    );

    let before = listing(tmp.path());
    let sub = LeafRequest::new(dinkes()).with_names(vec!["dinkes.example".into()], vec![]);
    let err = ca
        .issue(&sub, KeyType::EcdsaP256, &tmp.path().join("s.crt"), &tmp.path().join("s.key"), false, now())
        .unwrap_err();
    assert!(matches!(err, PkiError::Profile(profile::ProfileError::NamesOnNonServer { .. })), "{err:?}");
    let bad =
        LeafRequest::new(id(IdKind::Server, "ID/PEMDA/1602/gw2")).with_names(vec!["*.okikab.go.id".into()], vec![]);
    let err = ca
        .issue(&bad, KeyType::EcdsaP256, &tmp.path().join("s.crt"), &tmp.path().join("s.key"), false, now())
        .unwrap_err();
    assert!(err.to_string().contains("wildcards"), "{err}");
    assert_eq!(listing(tmp.path()), before);
}

#[test]
fn identities_outside_the_scope_are_refused_naming_the_scope_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(tmp.path());
    let before = listing(tmp.path());
    let other_region = id(IdKind::Subsystem, "ID/PEMDA/1601/DINKES");
    let err = ca
        .issue(
            &LeafRequest::new(other_region),
            KeyType::EcdsaP256,
            &tmp.path().join("x.crt"),
            &tmp.path().join("x.key"),
            false,
            now(),
        )
        .unwrap_err();
    assert!(matches!(err, PkiError::OutOfScope { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("ID/PEMDA/1601/DINKES") && msg.contains("ID/PEMDA/1602"), "{msg}");
    // A prefix matches whole parts: 16021 is not under 1602.
    let err = ca
        .issue(
            &LeafRequest::new(id(IdKind::Subsystem, "ID/PEMDA/16021/DINKES")),
            KeyType::EcdsaP256,
            &tmp.path().join("x.crt"),
            &tmp.path().join("x.key"),
            false,
            now(),
        )
        .unwrap_err();
    assert!(matches!(err, PkiError::OutOfScope { .. }), "{err:?}");
    assert_eq!(listing(tmp.path()), before);
}

#[test]
fn existing_outputs_are_not_overwritten_unless_forced_and_all_are_checked_first() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(tmp.path());
    let (cert, key) = (tmp.path().join("a.crt"), tmp.path().join("a.key"));
    fs::write(&key, "precious").unwrap();
    let before = listing(tmp.path());
    let req = LeafRequest::new(dinkes());
    let err = ca.issue(&req, KeyType::EcdsaP256, &cert, &key, false, now()).unwrap_err();
    assert!(matches!(&err, PkiError::Exists { path } if *path == key), "{err:?}");
    // The certificate, which did not exist, was not written either, and the index is unchanged.
    assert_eq!(listing(tmp.path()), before);

    let issued = ca.issue(&req, KeyType::EcdsaP256, &cert, &key, true, now()).unwrap();
    assert_ne!(fs::read(&key).unwrap(), b"precious");
    assert_eq!(mode(&key), 0o600);
    assert_issued_by(&ca, &issued.cert_path);

    let err = ca.issue(&req, KeyType::EcdsaP256, &cert, &cert, true, now()).unwrap_err();
    assert!(matches!(err, PkiError::SamePath { .. }), "{err:?}");
    let err = ca.issue(&req, KeyType::EcdsaP256, &tmp.path().join("no/such/dir.crt"), &key, true, now()).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn validity_is_bounded_by_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = InitOptions { days: 100, ..InitOptions::new("Pemda", vec!["ID/PEMDA/1602".parse().unwrap()]) };
    let ca = Ca::init(&tmp.path().join("ca"), &opts, now()).unwrap();
    let (cert, key) = (tmp.path().join("a.crt"), tmp.path().join("a.key"));
    // The default shrinks to the CA's lifetime...
    let issued = ca.issue(&LeafRequest::new(dinkes()), KeyType::EcdsaP256, &cert, &key, false, now()).unwrap();
    assert!(issued.validity.not_after <= ca.not_after());
    // ...but an explicit request beyond it is refused with the limit.
    let req = LeafRequest { days: Some(200), ..LeafRequest::new(dinkes()) };
    let err = ca.issue(&req, KeyType::EcdsaP256, &cert, &key, true, now()).unwrap_err();
    assert!(err.to_string().contains("outlive the CA"), "{err}");
    let req = LeafRequest { days: Some(0), ..LeafRequest::new(dinkes()) };
    assert!(matches!(ca.issue(&req, KeyType::EcdsaP256, &cert, &key, true, now()), Err(PkiError::Validity(_))));
}

fn write_csr_for(dir: &Path, identity: &Identity) -> PathBuf {
    let csr = dir.join("req.csr");
    csr::write_csr(identity, KeyType::EcdsaP256, &dir.join("req.key"), &csr, true).unwrap();
    csr
}

fn csr_public_key(path: &Path) -> Vec<u8> {
    let der = read_der(path, ObjectKind::Csr);
    inspect::parse_csr(&der).unwrap().certification_request_info.subject_pki.raw.to_vec()
}

#[test]
fn csr_for_the_same_identity_is_signed_with_its_public_key() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(tmp.path());
    let csr = write_csr_for(tmp.path(), &dinkes());
    assert_eq!(mode(&tmp.path().join("req.key")), 0o600);
    let out = tmp.path().join("dinkes.crt");
    let issued = ca.sign_csr(&csr, &LeafRequest::new(dinkes()), false, &out, false, now()).unwrap();
    assert!(issued.key_path.is_none());
    let der = assert_issued_by(&ca, &out);
    let cert = inspect::parse_certificate(&der).unwrap();
    assert_eq!(cert.public_key().raw, csr_public_key(&csr).as_slice());
    assert_eq!(ca.index().unwrap().certificates.len(), 1);
}

#[test]
fn csr_claiming_another_identity_is_refused_unless_overridden() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(tmp.path());
    let csr = write_csr_for(tmp.path(), &dinkes());
    let before = listing(tmp.path());
    let asked = id(IdKind::Subsystem, "ID/PEMDA/1602/DISDUKCAPIL");
    let out = tmp.path().join("out.crt");
    let err = ca.sign_csr(&csr, &LeafRequest::new(asked.clone()), false, &out, false, now()).unwrap_err();
    assert!(matches!(err, PkiError::CsrIdentityMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("ID/PEMDA/1602/DINKES") && msg.contains("ID/PEMDA/1602/DISDUKCAPIL"), "{msg}");
    assert_eq!(listing(tmp.path()), before);

    // Same identifier, other kind: still another identity.
    let as_admin = id(IdKind::Admin, "ID/PEMDA/1602/DINKES");
    let err = ca.sign_csr(&csr, &LeafRequest::new(as_admin), false, &out, false, now()).unwrap_err();
    assert!(err.to_string().contains("URI urn:splp:subsystem"), "{err}");

    let issued = ca.sign_csr(&csr, &LeafRequest::new(asked.clone()), true, &out, false, now()).unwrap();
    assert_eq!(issued.identity, asked);
    let der = assert_issued_by(&ca, &out);
    let cert = inspect::parse_certificate(&der).unwrap();
    assert_eq!(profile::identity_of(&cert).unwrap(), asked);
    let report = inspect::certificate_report(&cert, &der, now());
    assert_eq!(report.subject_alt_names, vec!["URI:urn:splp:subsystem:ID:PEMDA:1602:DISDUKCAPIL"]);
    assert!(!report.subject.contains("DINKES"), "{}", report.subject);
}

#[test]
fn csr_whose_cn_names_another_identity_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(tmp.path());
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, "ID/PEMDA/1602/BAPPEDA");
    let csr = tmp.path().join("cn.csr");
    fs::write(&csr, params.serialize_request(&key).unwrap().pem().unwrap()).unwrap();
    let err =
        ca.sign_csr(&csr, &LeafRequest::new(dinkes()), false, &tmp.path().join("o.crt"), false, now()).unwrap_err();
    assert!(err.to_string().contains("CN=ID/PEMDA/1602/BAPPEDA"), "{err}");

    // A CN that is a plain name, not an identifier, claims nothing.
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, "Dinas Kesehatan");
    fs::write(&csr, params.serialize_request(&key).unwrap().pem().unwrap()).unwrap();
    ca.sign_csr(&csr, &LeafRequest::new(dinkes()), false, &tmp.path().join("o.crt"), false, now()).unwrap();
}

#[test]
fn csr_with_a_broken_signature_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(tmp.path());
    let csr = write_csr_for(tmp.path(), &dinkes());
    let mut der = read_der(&csr, ObjectKind::Csr);
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let broken = tmp.path().join("broken.der");
    fs::write(&broken, &der).unwrap();
    let before = listing(tmp.path());
    let out = tmp.path().join("out.crt");
    let err = ca.sign_csr(&broken, &LeafRequest::new(dinkes()), true, &out, false, now()).unwrap_err();
    assert!(matches!(err, PkiError::CsrSignature { .. }), "{err:?}");
    assert_eq!(listing(tmp.path()), before);

    // A certificate given as a CSR is refused by its label.
    let issued = issue(&ca, tmp.path(), dinkes());
    let err = ca.sign_csr(&issued.cert_path, &LeafRequest::new(dinkes()), false, &out, false, now()).unwrap_err();
    assert!(err.to_string().contains("expected a certificate signing request"), "{err}");
}

#[test]
fn revoke_then_crl_lists_the_serial_with_an_increasing_number_and_the_ca_key_id() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(tmp.path());
    let a = issue(&ca, tmp.path(), dinkes());
    let b = issue(&ca, tmp.path(), id(IdKind::Server, "ID/PEMDA/1602/gw1"));
    let first = ca.crl(CRL_VALIDITY_DAYS, now()).unwrap();
    assert!(first.revoked.is_empty());

    let entry =
        ca.revoke(&RevokeTarget::Serial(a.serial.to_uppercase()), RevocationReason::KeyCompromise, now()).unwrap();
    assert_eq!(entry.serial, a.serial);
    assert_eq!(entry.reason, Some(RevocationReason::KeyCompromise));
    let crl = ca.crl(CRL_VALIDITY_DAYS, now()).unwrap();
    assert_eq!(crl.number, first.number + 1);
    assert_eq!(crl.revoked, vec![a.serial.clone()]);

    let der = read_der(&ca.dir().join(store::CRL), ObjectKind::Crl);
    let parsed = inspect::parse_crl(&der).unwrap();
    let ca_der = read_der(&ca.dir().join(store::CA_CERT), ObjectKind::Certificate);
    let ca_cert = inspect::parse_certificate(&ca_der).unwrap();
    parsed.verify_signature(ca_cert.public_key()).unwrap();
    let serials: Vec<String> =
        parsed.iter_revoked_certificates().map(|r| inspect::serial_hex(r.raw_serial())).collect();
    assert_eq!(serials, vec![a.serial.clone()]);
    assert_eq!(parsed.crl_number().unwrap().to_string(), crl.number.to_string());
    let ski = ca_cert.iter_extensions().find_map(|e| match e.parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
        _ => None,
    });
    let aki = parsed.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(k) => k.key_identifier.as_ref().map(|k| k.0.to_vec()),
        _ => None,
    });
    assert!(ski.is_some());
    assert_eq!(aki, ski);
    assert_eq!(parsed.next_update().unwrap().to_datetime() - parsed.last_update().to_datetime(), Duration::days(30));

    // Revoking again says when it was done; by certificate file it is found too.
    let err =
        ca.revoke(&RevokeTarget::Certificate(a.cert_path.clone()), RevocationReason::Superseded, now()).unwrap_err();
    assert!(matches!(err, PkiError::AlreadyRevoked { .. }), "{err:?}");
    assert!(err.to_string().contains("already revoked at 20"), "{err}");
    ca.revoke(&RevokeTarget::Certificate(b.cert_path.clone()), RevocationReason::Unspecified, now()).unwrap();
    let crl = ca.crl(1, now()).unwrap();
    assert_eq!(crl.revoked, vec![a.serial, b.serial]);
}

#[test]
fn revoke_refuses_unknown_serials_and_foreign_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(tmp.path());
    let err = ca.revoke(&RevokeTarget::Serial("00ff".into()), RevocationReason::Superseded, now()).unwrap_err();
    assert!(matches!(err, PkiError::UnknownSerial { .. }), "{err:?}");
    let err = ca.revoke(&RevokeTarget::Serial("xyz".into()), RevocationReason::Superseded, now()).unwrap_err();
    assert!(matches!(err, PkiError::BadSerial { .. }), "{err:?}");

    let other_tmp = tempfile::tempdir().unwrap();
    let other = new_ca(other_tmp.path());
    let foreign = issue(&other, other_tmp.path(), dinkes());
    let err =
        ca.revoke(&RevokeTarget::Certificate(foreign.cert_path), RevocationReason::Superseded, now()).unwrap_err();
    assert!(matches!(err, PkiError::NotIssuedHere { .. }), "{err:?}");
}

#[test]
fn a_held_lock_or_a_readable_ca_key_stops_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(tmp.path());
    let lock = files::CaLock::acquire(ca.dir().join(store::LOCK)).unwrap();
    let err = ca.crl(1, now()).unwrap_err();
    assert!(matches!(err, PkiError::Locked { .. }), "{err:?}");
    drop(lock);
    ca.crl(1, now()).unwrap();

    let key = ca.dir().join(store::CA_KEY);
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let err = Ca::open(ca.dir()).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[test]
fn open_reports_a_missing_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Ca::open(tmp.path()).unwrap_err();
    assert!(matches!(err, PkiError::NoCa { .. }), "{err:?}");
    assert!(err.to_string().contains("init-ca"), "{err}");
}

#[test]
fn agency_csr_carries_the_identity_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, csr) = (tmp.path().join("a.key"), tmp.path().join("a.csr"));
    csr::write_csr(&dinkes(), KeyType::Ed25519, &key, &csr, false).unwrap();
    let report = match inspect::inspect(&fs::read(&csr).unwrap(), now()).unwrap() {
        inspect::Report::Csr(r) => r,
        other => panic!("{other:?}"),
    };
    assert!(report.signature_valid);
    assert_eq!(report.identity.unwrap().urn, "urn:splp:subsystem:ID:PEMDA:1602:DINKES");
    assert_eq!(report.key_type, "Ed25519");
    assert!(report.subject.contains("CN=ID/PEMDA/1602/DINKES"), "{}", report.subject);

    fs::remove_file(&key).unwrap();
    let before = listing(tmp.path());
    let err = csr::write_csr(&dinkes(), KeyType::EcdsaP256, &key, &csr, false).unwrap_err();
    assert!(matches!(err, PkiError::Exists { .. }), "{err:?}");
    assert_eq!(listing(tmp.path()), before, "the key must not be written when the CSR path is taken");
}
