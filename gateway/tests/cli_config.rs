//! `splpd config check`: the example configuration passes, and each kind of mistake an operator
//! can make fails with `file:line:column`, a message that names the mistake, and a hint.

// Test fixtures fail loudly: a panic is the right report for a broken test setup.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};

/// A folder holding the example configuration and the PKI files it names.
struct Fixture {
    dir: tempfile::TempDir,
    /// The region CA, which issued the gateway's certificate and signs the CRL.
    region: Issuer<'static, KeyPair>,
}

fn ca(dir: &Path, name: &str) -> (Issuer<'static, KeyPair>, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("ca.crt");
    std::fs::write(&path, cert.pem()).unwrap();
    (Issuer::new(params, key), path)
}

fn leaf(issuer: &Issuer<'_, KeyPair>, urn: &str, cert: &Path, key_path: &Path) {
    leaf_with(issuer, urn, cert, key_path, |_| {});
}

/// [`leaf`], its parameters changed by `change` first.
fn leaf_with(
    issuer: &Issuer<'_, KeyPair>,
    urn: &str,
    cert: &Path,
    key_path: &Path,
    change: impl FnOnce(&mut CertificateParams),
) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(urn.try_into().unwrap())];
    params.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    change(&mut params);
    let cert_pem = params.signed_by(&key, issuer).unwrap().pem();
    std::fs::write(cert, cert_pem).unwrap();
    std::fs::write(key_path, key.serialize_pem()).unwrap();
}

impl Fixture {
    fn new() -> Self {
        Self::with_crl_for(time::Duration::days(30))
    }

    /// The fixture with the region CA's CRL reaching its next update `next_update` from now.
    fn with_crl_for(next_update: time::Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let pki = root.join("pki");
        let (region, _) = ca(&pki.join("ca"), "Region 1602 CA");
        let (peer, _) = ca(&pki.join("peer-1601"), "Region 1601 CA");
        leaf(&region, "urn:splp:server:ID:PEMDA:1602:gw1", &pki.join("gw1.crt"), &pki.join("gw1.key"));
        let crl = CertificateRevocationListParams {
            // A CRL past its next update was signed before it.
            this_update: time::OffsetDateTime::now_utc() + next_update.min(time::Duration::ZERO)
                - time::Duration::days(1),
            next_update: time::OffsetDateTime::now_utc() + next_update,
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![],
            key_identifier_method: KeyIdMethod::Sha256,
        };
        std::fs::write(pki.join("ca").join("crl.pem"), crl.signed_by(&region).unwrap().pem().unwrap()).unwrap();
        let peer_crl = CertificateRevocationListParams {
            this_update: time::OffsetDateTime::now_utc() - time::Duration::days(1),
            next_update: time::OffsetDateTime::now_utc() + time::Duration::days(30),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![],
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let peer_crl = peer_crl.signed_by(&peer).unwrap().pem().unwrap();
        std::fs::write(pki.join("peer-1601").join("crl.pem"), peer_crl).unwrap();
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        std::fs::create_dir_all(root.join("openapi")).unwrap();
        std::fs::copy(examples.join("openapi/nik-verify.json"), root.join("openapi/nik-verify.json")).unwrap();
        std::fs::copy(examples.join("region-1602.toml"), root.join("splpd.toml")).unwrap();
        Self { dir, region }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("splpd.toml")
    }

    fn text(&self) -> String {
        std::fs::read_to_string(self.config()).unwrap()
    }

    /// Replaces the one occurrence of `from` in the configuration with `to`.
    fn edit(&self, from: &str, to: &str) {
        let text = self.text();
        assert_eq!(text.matches(from).count(), 1, "fixture edit must be unambiguous: {from:?}");
        std::fs::write(self.config(), text.replacen(from, to, 1)).unwrap();
    }

    fn append(&self, extra: &str) {
        std::fs::write(self.config(), format!("{}\n{extra}", self.text())).unwrap();
    }

    /// 1-based line of the first line containing `needle`.
    fn line_of(&self, needle: &str) -> usize {
        self.text().lines().position(|l| l.contains(needle)).expect("needle in config") + 1
    }

    fn check(&self) -> (bool, String, String) {
        let out =
            Command::new(env!("CARGO_BIN_EXE_splpd")).args(["config", "check"]).arg(self.config()).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs the check, expects failure, and returns stderr after asserting that it points at
    /// `line` of the file, says `message` and gives a hint.
    fn fails_at(&self, line: usize, message: &str) -> String {
        let (ok, _, err) = self.check();
        assert!(!ok, "config check should fail; stderr: {err}");
        let place = format!("{}:{line}:", self.config().display());
        let diag = err.lines().position(|l| l.starts_with(&place) && l.contains(message));
        let Some(i) = diag else { panic!("expected a diagnostic at {place} containing {message:?}, got:\n{err}") };
        let next = err.lines().nth(i + 1).unwrap_or_default();
        assert!(next.trim_start().starts_with("hint: "), "diagnostic without a hint:\n{err}");
        err
    }
}

#[test]
fn the_example_configuration_passes() {
    let f = Fixture::new();
    let (ok, out, err) = f.check();
    assert!(ok, "stderr: {err}");
    assert!(!err.contains("warning: a grant names"), "every client the example grants to can be identified: {err}");
    assert!(out.contains(": ok: gateway ID/PEMDA/1602/gw1"), "{out}");
    assert!(out.contains("2 service(s), 4 grant(s), 1 peer(s)"), "{out}");
    // Its legacy application without a certificate is said, with what it opens.
    let opted: Vec<&str> = err.lines().filter(|l| l.contains("known by its X-Road-Client header alone")).collect();
    assert_eq!(opted.len(), 1, "{err}");
    assert!(
        opted[0].starts_with(
            "warning: listener \"intranet\" (127.0.0.1:8080) lets ID/PEMDA/1602/SIMPEG-LAMA call over \
             plain HTTP"
        ) && opted[0].contains("with its 1 grant(s)"),
        "{err}"
    );
    // Without the opt-in, nothing is said of it.
    let text = f.text();
    let without = text.replace("clients = [{ client = \"ID/PEMDA/1602/SIMPEG-LAMA\", connection = \"http\" }]", "");
    assert_ne!(without, text);
    std::fs::write(f.config(), without).unwrap();
    let (_, _, err) = f.check();
    assert!(!err.contains("X-Road-Client header alone"), "{err}");
}

/// `splpd config example` prints the example a host without the repository starts from, and
/// what it prints passes the check as the file does; the hints point at it.
#[test]
fn the_printed_example_is_the_example_and_passes() {
    let f = Fixture::new();
    let printed = Command::new(env!("CARGO_BIN_EXE_splpd")).args(["config", "example"]).output().unwrap();
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    let printed = String::from_utf8(printed.stdout).unwrap();
    assert_eq!(printed, f.text(), "config example prints examples/region-1602.toml");
    std::fs::write(f.config(), &printed).unwrap();
    let (ok, _, err) = f.check();
    assert!(ok, "stderr: {err}");
    // A hint that sends the operator to the example names the command that prints it.
    f.edit("[gateway]", "[gateway\n");
    let (ok, _, err) = f.check();
    assert!(!ok && err.contains("`splpd config example`"), "{err}");
}

/// A peer's anchor scoped to the peer's whole region lets that region's agencies in directly,
/// past their gateway: allowed, and said.
#[test]
fn a_peer_anchor_scoped_wider_than_the_peer_gateway_is_warned_of() {
    let (ok, _, err) = Fixture::new().check();
    assert!(ok && !err.contains("not only for the peer gateway"), "the example scopes the peer's gateway: {err}");
    let f = Fixture::new();
    f.edit("scopes = [\"ID/PEMDA/1601/gw1\"]", "scopes = [\"ID/PEMDA/1601\"]");
    let (ok, _, err) = f.check();
    assert!(ok, "a warning, not an error: {err}");
    assert!(
        err.contains("warning: trust anchor \"peer-1601\" vouches for ID/PEMDA/1601, not only for the peer gateway")
            && err.contains("scope it to `[\"ID/PEMDA/1601/gw1\"]`"),
        "{err}"
    );
    // One agency of theirs is the same hazard, for that agency.
    let f = Fixture::new();
    f.edit("scopes = [\"ID/PEMDA/1601/gw1\"]", "scopes = [\"ID/PEMDA/1601/gw1\", \"ID/PEMDA/1601/DINKES\"]");
    let (ok, _, err) = f.check();
    assert!(ok && err.contains("vouches for ID/PEMDA/1601/DINKES, not only for the peer gateway"), "{err}");
}

#[test]
fn a_crl_near_or_past_its_next_update_is_warned_of_with_what_to_do() {
    let (ok, _, err) = Fixture::new().check();
    assert!(ok && !err.contains("warning: the CRL"), "a fresh CRL: {err}");
    assert!(!err.contains("has no `crls`"), "every anchor of the region names its CRL: {err}");

    // The region's CA without its CRL: revocations would not count, which is said.
    let f = Fixture::new();
    f.edit("crls = [\"pki/ca/crl.pem\"]", "");
    let (ok, _, err) = f.check();
    assert!(ok && err.contains("warning: trust anchor \"region\" has no `crls`"), "{err}");
    // So is a peer's without the neighbour's.
    let f = Fixture::new();
    f.edit("crls = [\"pki/peer-1601/crl.pem\"]", "");
    let (ok, _, err) = f.check();
    assert!(ok && err.contains("trust anchor \"peer-1601\" of [[peer]] ID/PEMDA/1601/gw1 has no `crls`"), "{err}");

    let (ok, out, err) = Fixture::with_crl_for(time::Duration::days(3) + time::Duration::hours(1)).check();
    assert!(ok && out.contains(": ok:"), "a warning, not an error: {err}");
    assert!(err.contains("warning: the CRL") && err.contains("in 3 day(s)"), "{err}");
    assert!(err.contains("splpd certs crl --ca DIR"), "{err}");

    let (ok, _, err) = Fixture::with_crl_for(-time::Duration::days(1)).check();
    assert!(ok, "the gateway still starts (a fresh CRL may be on its way): {err}");
    assert!(err.contains("passed its next update") && err.contains("every certificate of that CA is refused"), "{err}");
}

#[test]
fn a_crl_listed_under_another_ca_s_anchor_is_told_at_its_line() {
    let f = Fixture::new();
    f.edit("crls = [\"pki/peer-1601/crl.pem\"]", "crls = [\"pki/ca/crl.pem\"]");
    // The peer anchor's `crls`, four lines below its `ca`.
    let err = f.fails_at(f.line_of("ca = \"pki/peer-1601/ca.crt\"") + 4, "which is not a CA of this anchor");
    assert!(err.contains("hint: list each CRL under the anchor of the CA that signed it"), "{err}");
}

/// What the file cannot show but `splpd serve` depends on is said as a warning: a gateway key
/// other accounts may read, a secret's environment variable that is not set.
#[test]
fn a_readable_key_and_an_unset_secret_variable_are_warned_of() {
    use std::os::unix::fs::PermissionsExt as _;
    let f = Fixture::new();
    let key = f.dir.path().join("pki/gw1.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_splpd"))
        .args(["config", "check"])
        .arg(f.config())
        .env_remove("SPLPD_NATIONAL_CLIENT_SECRET")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "warnings, not errors: {err}");
    assert!(
        err.contains("may be read by other accounts") && err.contains("mode 0644") && err.contains("chmod 600"),
        "{err}"
    );
    assert!(err.contains("SPLPD_NATIONAL_CLIENT_SECRET, which is not set here"), "{err}");

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_splpd"))
        .args(["config", "check"])
        .arg(f.config())
        .env("SPLPD_NATIONAL_CLIENT_SECRET", "rahasia")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("other accounts") && !err.contains("not set here"), "{err}");

    // The national client secret in a file others may read is said too.
    let secret = f.dir.path().join("national.secret");
    std::fs::write(&secret, "rahasia\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    f.edit("client_secret_env = \"SPLPD_NATIONAL_CLIENT_SECRET\"", "client_secret_file = \"national.secret\"");
    let (ok, _, err) = f.check();
    assert!(ok, "a warning, not an error: {err}");
    assert!(err.contains("the national client secret") && err.contains("may be read by other accounts"), "{err}");
}

#[test]
fn unknown_key_is_named_with_the_accepted_ones() {
    let f = Fixture::new();
    f.edit("request_timeout = \"10s\"", "request_timout = \"10s\"");
    let err = f.fails_at(f.line_of("request_timout"), "unknown field `request_timout`");
    assert!(err.contains("request_timeout"), "should list the accepted keys: {err}");
}

#[test]
fn resilience_settings_are_checked_where_they_are_written() {
    let f = Fixture::new();
    f.edit("max_attempts = 3", "max_attempts = 0");
    f.edit("path = \"/health\"", "path = \"health\"");
    f.edit("max_requests = 1024", "max_requests = 0");
    f.edit("max_ejection = \"5m\"", "max_ejection = \"10s\"");
    let err = f.fails_at(f.line_of("max_attempts = 0"), "max_attempts is 0");
    assert!(err.contains("give 1 (no retries) to 10 attempts"), "{err}");
    f.fails_at(f.line_of("path = \"health\""), "\"health\" is not a path");
    f.fails_at(f.line_of("max_requests = 0"), "max_requests is 0, which would refuse every call");
    f.fails_at(f.line_of("max_ejection = \"10s\""), "max_ejection is shorter than base_ejection");
}

#[test]
fn a_grpc_health_service_named_for_a_rest_service_is_refused() {
    let f = Fixture::new();
    // The example's health check belongs to the REST service nik-verify.
    f.edit("path = \"/health\"", "path = \"/health\"\ngrpc_service = \"kesehatan.v1.Rujukan\"");
    let err = f.fails_at(f.line_of("grpc_service = "), "grpc_service is set on a REST service");
    assert!(err.contains("checked at `path`"), "{err}");
}

#[test]
fn an_unknown_resilience_key_is_named() {
    let f = Fixture::new();
    f.edit("open_for = \"5s\"", "open_four = \"5s\"");
    let err = f.fails_at(f.line_of("open_four"), "unknown field `open_four`");
    assert!(err.contains("open_for"), "should list the accepted keys: {err}");
}

#[test]
fn grant_naming_an_unknown_service_is_a_dangling_reference() {
    let f = Fixture::new();
    f.append("[[grant]]\nservice = \"ID/PEMDA/1602/DISDUKCAPIL/nik-verfy\"\nclient = \"ID/PEMDA/1602/DINKES\"\n");
    let err =
        f.fails_at(f.line_of("nik-verfy"), "names service ID/PEMDA/1602/DISDUKCAPIL/nik-verfy, which is not defined");
    assert!(err.contains("did you mean \"ID/PEMDA/1602/DISDUKCAPIL/nik-verify\"?"), "{err}");
}

#[test]
fn grant_naming_an_unknown_group_is_a_dangling_reference() {
    let f = Fixture::new();
    f.edit("group = \"layanan-kesehatan\"", "group = \"layanan-kesehatn\"");
    let err = f.fails_at(f.line_of("group = \"layanan-kesehatn\""), "group \"layanan-kesehatn\", which is not defined");
    assert!(err.contains("did you mean \"layanan-kesehatan\"?"), "{err}");
}

#[test]
fn quota_and_peer_references_are_checked_too() {
    let f = Fixture::new();
    f.edit("trust_anchor = \"peer-1601\"", "trust_anchor = \"peer-1610\"");
    f.fails_at(
        f.line_of("trust_anchor = \"peer-1610\""),
        "peer names trust anchor \"peer-1610\", which is not defined",
    );
}

#[test]
fn a_peer_anchor_that_does_not_cover_the_peer_is_refused_with_the_narrow_scope_to_give() {
    let f = Fixture::new();
    f.edit("scopes = [\"ID/PEMDA/1601/gw1\"]", "scopes = [\"ID/PEMDA/1601/gw2\"]");
    let err = f.fails_at(
        f.line_of("trust_anchor = \"peer-1601\""),
        "trust anchor \"peer-1601\" may not vouch for ID/PEMDA/1601/gw1",
    );
    assert!(err.contains("add \"ID/PEMDA/1601/gw1\" to that anchor's scopes (the peer gateway alone"), "{err}");
    // Naming the region's own CA for the peer is answered with what a peer's anchor is.
    f.edit("trust_anchor = \"peer-1601\"", "trust_anchor = \"region\"");
    let err = f.fails_at(f.line_of("trust_anchor = \"region\""), "trust anchor \"region\" may not vouch for");
    assert!(err.contains("\"region\" vouches for this gateway's own identity (ID/PEMDA/1602/gw1)"), "{err}");
    // So is a peer's anchor whose scope was mistyped as this gateway's: it is not called ours.
    f.edit("trust_anchor = \"region\"", "trust_anchor = \"peer-1601\"");
    f.edit("scopes = [\"ID/PEMDA/1601/gw2\"]", "scopes = [\"ID/PEMDA/1602/gw1\"]");
    let err = f.fails_at(f.line_of("trust_anchor = \"peer-1601\""), "trust anchor \"peer-1601\" may not vouch for");
    assert!(err.contains("\"peer-1601\" vouches for this gateway's own identity"), "{err}");
    assert!(!err.contains("own region"), "{err}");
}

#[test]
fn only_a_peer_for_national_prefixes_may_go_without_endpoints() {
    let f = Fixture::new();
    ca(&f.dir.path().join("pki/splp"), "Kementerian Komunikasi dan Digital SPLP CA");
    f.append(
        "[[trust_anchor]]\nname = \"splp-nasional\"\nca = \"pki/splp/ca.crt\"\nscopes = [\"ID/KL/KOMDIGI/splp\"]\n\n\
         [[peer]]\nid = \"ID/KL/KOMDIGI/splp\"\nauthoritative = [\"ID/KL\"]\ntrust_anchor = \"splp-nasional\"\n",
    );
    let (ok, _, err) = f.check();
    assert!(ok, "{err}");
    // Its anchor, scoped to its gateway, vouches for no server: the API manager's pin is advised.
    assert!(err.contains("warning: [[peer]] ID/KL/KOMDIGI/splp (the national SPLP calling in)"), "{err}");
    assert!(err.contains("add trust_anchor = \"splp-nasional\" to [national]"), "{err}");
    f.edit("# trust_anchor = \"splp-nasional\"", "trust_anchor = \"splp-nasional\"");
    let (ok, _, err) = f.check();
    assert!(ok && !err.contains("the national SPLP calling in"), "pinned: {err}");
    f.edit("authoritative = [\"ID/KL\"]\ntrust_anchor", "authoritative = [\"ID/KL\", \"ID/PEMDA/1603\"]\ntrust_anchor");
    // Told at the table, where the key is missing.
    f.fails_at(f.line_of("id = \"ID/KL/KOMDIGI/splp\"") - 1, "peer ID/KL/KOMDIGI/splp has no endpoint");
}

#[test]
fn an_https_upstream_no_anchor_may_vouch_for_is_refused() {
    let f = Fixture::new();
    f.edit("upstreams = [\"http://127.0.0.1:9101\"]", "upstreams = [\"https://127.0.0.1:9101\"]");
    // The region's own anchor scoped away from the region: only the neighbour's is left.
    f.edit("scopes = [\"ID/PEMDA/1602\"]", "scopes = [\"ID/PEMDA/1699\"]");
    let err = f.fails_at(f.line_of("https://127.0.0.1:9101"), "no [[trust_anchor]] may vouch for its certificate");
    assert!(err.contains("set the service's tls.ca"), "{err}");
}

#[test]
fn a_peer_endpoint_with_a_path_is_refused() {
    let f = Fixture::new();
    f.edit("endpoints = [\"https://127.0.0.1:18443\"]", "endpoints = [\"https://127.0.0.1:18443/splpd\"]");
    let err = f.fails_at(f.line_of("https://127.0.0.1:18443/splpd"), "has a path (/splpd)");
    assert!(err.contains("e.g. \"https://127.0.0.1:18443\""), "{err}");
}

#[test]
fn the_national_api_managers_anchor_must_be_defined() {
    let f = Fixture::new();
    f.edit("# trust_anchor = \"splp-nasional\"", "trust_anchor = \"regoin\"");
    let err = f.fails_at(
        f.line_of("trust_anchor = \"regoin\""),
        "[national] names trust anchor \"regoin\", which is not defined",
    );
    assert!(err.contains("did you mean \"region\"?"), "{err}");
}

#[test]
fn overlapping_trust_scopes_are_refused() {
    let f = Fixture::new();
    f.edit("scopes = [\"ID/PEMDA/1601/gw1\"]", "scopes = [\"ID/PEMDA/1601/gw1\", \"ID/PEMDA/1602/DINKES\"]");
    let err = f.fails_at(
        f.line_of("ID/PEMDA/1602/DINKES\"]"),
        "scope ID/PEMDA/1602/DINKES overlaps ID/PEMDA/1602 of trust anchor \"region\"",
    );
    assert!(err.contains("one CA only"), "{err}");
}

#[test]
fn unreadable_certificate_file_is_named() {
    let f = Fixture::new();
    f.edit("ca = \"pki/peer-1601/ca.crt\"", "ca = \"pki/peer-1601/missing.crt\"");
    let err = f.fails_at(f.line_of("missing.crt"), "cannot read");
    assert!(err.contains("missing.crt"), "{err}");
}

#[test]
fn an_openapi_setting_naming_anything_but_an_openapi_document_is_refused() {
    // The document is served to every caller: a slip of the path must not publish a key.
    let f = Fixture::new();
    f.edit("openapi = \"openapi/nik-verify.json\"", "openapi = \"pki/gw1.key\"");
    let err = f.fails_at(f.line_of("openapi = \"pki/gw1.key\""), "is not an OpenAPI document");
    assert!(err.contains("private key"), "{err}");
    let f = Fixture::new();
    std::fs::write(f.dir.path().join("notes.txt"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    f.edit("openapi = \"openapi/nik-verify.json\"", "openapi = \"notes.txt\"");
    let err = f.fails_at(f.line_of("openapi = \"notes.txt\""), "is not an OpenAPI document");
    assert!(err.contains("top-level `openapi:`"), "{err}");
}

#[test]
fn a_certificate_file_holding_a_key_is_refused() {
    let f = Fixture::new();
    f.edit("ca = \"pki/peer-1601/ca.crt\"", "ca = \"pki/gw1.key\"");
    f.fails_at(f.line_of("ca = \"pki/gw1.key\""), "holds no certificate");
}

#[test]
fn a_leaf_certificate_is_not_a_trust_anchor() {
    let f = Fixture::new();
    f.edit("ca = \"pki/peer-1601/ca.crt\"", "ca = \"pki/gw1.crt\"");
    f.fails_at(f.line_of("ca = \"pki/gw1.crt\""), "is not a CA certificate");
}

#[test]
fn gateway_certificate_must_carry_the_gateway_identity() {
    let f = Fixture::new();
    f.edit("id = \"ID/PEMDA/1602/gw1\"", "id = \"ID/PEMDA/1602/gw2\"");
    f.fails_at(
        f.line_of("cert = \"pki/gw1.crt\""),
        "the gateway certificate is for server ID/PEMDA/1602/gw1, but [gateway] id is ID/PEMDA/1602/gw2",
    );
}

#[test]
fn a_gateway_certificate_of_the_wrong_kind_is_named_as_such() {
    let f = Fixture::new();
    let pki = f.dir.path().join("pki");
    let (other, _) = ca(&f.dir.path().join("other-ca"), "Another CA");
    leaf(&other, "urn:splp:subsystem:ID:PEMDA:1602:gw1", &pki.join("gw1.crt"), &pki.join("gw1.key"));
    let err = f.fails_at(
        f.line_of("cert = \"pki/gw1.crt\""),
        "the gateway certificate is an agency's (subsystem) certificate",
    );
    assert!(err.contains("a gateway needs a server certificate for ID/PEMDA/1602/gw1"), "{err}");
    assert!(err.contains("splpd certs issue --ca CA server ID/PEMDA/1602/gw1"), "{err}");
}

/// The fixture with its gateway certificate reissued, by the region CA when `ca_dir` is `None`,
/// else by a new CA whose certificate is written to `ca_dir` (replacing any there), with
/// `change` applied to its parameters.
fn reissued_gateway(ca_dir: Option<&str>, change: impl FnOnce(&mut CertificateParams)) -> Fixture {
    let f = Fixture::new();
    let pki = f.dir.path().join("pki");
    let (cert, key) = (pki.join("gw1.crt"), pki.join("gw1.key"));
    let urn = "urn:splp:server:ID:PEMDA:1602:gw1";
    match ca_dir {
        None => leaf_with(&f.region, urn, &cert, &key, change),
        Some(dir) => leaf_with(&ca(&f.dir.path().join(dir), "Another CA").0, urn, &cert, &key, change),
    }
    f
}

#[test]
fn a_gateway_certificate_agencies_and_peers_would_refuse_is_refused() {
    let now = time::OffsetDateTime::now_utc();
    let line = |f: &Fixture| f.line_of("cert = \"pki/gw1.crt\"");
    // Expired.
    let f = reissued_gateway(None, |p| {
        p.not_before = now - time::Duration::days(60);
        p.not_after = now - time::Duration::days(1);
    });
    f.fails_at(line(&f), "the gateway certificate cannot serve: expired at");
    // Not yet valid.
    let f = reissued_gateway(None, |p| p.not_before = now + time::Duration::days(2));
    let err = f.fails_at(line(&f), "the gateway certificate cannot serve: not valid before");
    // It may be this host's clock that is wrong: the hint says what it reads.
    assert!(err.contains("check this host's clock, which reads 20"), "{err}");
    // Not for TLS servers.
    let f = reissued_gateway(None, |p| p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth]);
    f.fails_at(line(&f), "needs serverAuth");
    // Not for TLS clients, which it is to the peers the example has.
    let f = reissued_gateway(None, |p| p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth]);
    f.fails_at(line(&f), "lacks clientAuth");
    let f = reissued_gateway(None, |p| p.extended_key_usages.clear());
    f.fails_at(line(&f), "no extended key usage");
    // From the peer region's CA (its anchor vouches for the peer's gateway alone).
    let f = reissued_gateway(Some("pki/peer-1601"), |_| {});
    let err = f.fails_at(line(&f), "whose scopes do not include ID/PEMDA/1602/gw1");
    assert!(err.contains("trust anchor \"peer-1601\""), "{err}");
    // From a CA no anchor names.
    let f = reissued_gateway(Some("other-ca"), |_| {});
    let err = f.fails_at(line(&f), "which is not the CA of any [[trust_anchor]]");
    assert!(err.contains("splpd certs issue --ca CA server ID/PEMDA/1602/gw1"), "{err}");
    // The region's CA file missing: that is the error, not a certificate "from no anchor's CA".
    let f = Fixture::new();
    f.edit("ca = \"pki/ca/ca.crt\"", "ca = \"pki/ca/missing-ca.crt\"");
    let err = f.fails_at(f.line_of("missing-ca.crt"), "pki/ca/missing-ca.crt: No such file");
    assert!(!err.contains("not the CA of any"), "{err}");
}

#[test]
fn a_gateway_certificate_near_its_end_is_warned_of() {
    let now = time::OffsetDateTime::now_utc();
    let f = reissued_gateway(None, |p| p.not_after = now + time::Duration::days(10));
    let (ok, _, err) = f.check();
    assert!(ok, "{err}");
    assert!(err.contains("warning: the gateway's certificate expires at") && err.contains("in 9 day(s)"), "{err}");
    let (ok, _, err) = Fixture::new().check();
    assert!(ok && !err.contains("the gateway's certificate expires"), "{err}");
}

#[test]
fn an_audit_folder_this_account_cannot_write_is_warned_of() {
    let f = Fixture::new();
    let (ok, _, err) = f.check();
    // (A warning of low space on this host's disk may be there.)
    assert!(ok && !err.contains("cannot write"), "{err}");
    // A folder that does not exist yet is made by the gateway, where its parent can be written
    // (a configuration in the current folder, named without one, too).
    f.edit("dir = \"audit\"", "dir = \"fresh/a/audit\"");
    let run = Command::new(env!("CARGO_BIN_EXE_splpd"))
        .args(["config", "check", "splpd.toml"])
        .current_dir(f.dir.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success() && !said.contains("cannot write"), "{said}");
    f.edit("dir = \"fresh/a/audit\"", "dir = \"audit\"");
    // /proc takes no new files, whoever asks (root included).
    f.edit("dir = \"audit\"", "dir = \"/proc/splpd-audit\"");
    let (ok, _, err) = f.check();
    assert!(ok, "said, not failed: the check may run as another account: {err}");
    assert!(err.contains("warning: [audit] dir /proc/splpd-audit: this account cannot write /proc"), "{err}");
}

#[test]
fn a_grant_for_another_regions_service_without_a_peer_says_a_peer_is_needed() {
    let f = Fixture::new();
    f.edit("service = \"ID/PEMDA/1601/DISDUKCAPIL/nik-verify\"", "service = \"ID/PEMDA/1603/DISDUKCAPIL/nik-verify\"");
    let err = f.fails_at(
        f.line_of("ID/PEMDA/1603/DISDUKCAPIL"),
        "ID/PEMDA/1603/DISDUKCAPIL/nik-verify, which this gateway does not serve, and no [[peer]]",
    );
    assert!(err.contains("authoritative = [\"ID/PEMDA/1603\"]"), "{err}");
}

#[test]
fn a_grant_for_a_national_service_no_api_maps_is_warned_of() {
    let f = Fixture::new();
    f.append("[[grant]]\nservice = \"ID/KL/KEMENKES/SATUSEHAT/pasien\"\nclient = \"ID/PEMDA/1602/RSUD\"\n");
    let (ok, _, err) = f.check();
    assert!(ok, "a warning, not a failure: {err}");
    let warned: Vec<&str> = err.lines().filter(|l| l.contains("no [[national.api]] maps")).collect();
    assert_eq!(warned.len(), 1, "{err}");
    assert!(warned[0].contains("ID/KL/KEMENKES/SATUSEHAT/pasien"), "{err}");
}

#[test]
fn a_grant_to_a_client_no_one_can_identify_is_warned_of() {
    let f = Fixture::new();
    f.append("[[grant]]\nservice = \"ID/PEMDA/1602/DISDUKCAPIL/nik-verify\"\nclient = \"ID/PEMDA/1699/RSUD\"\n");
    let (ok, _, err) = f.check();
    assert!(ok, "a warning, not a failure: {err}");
    let warned: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: a grant names")).collect();
    assert_eq!(warned.len(), 1, "{err}");
    assert!(warned[0].contains("ID/PEMDA/1699/RSUD") && warned[0].contains("region code"), "{err}");
}

#[test]
fn a_signing_key_comes_with_its_own_certificate_for_the_gateway() {
    let f = Fixture::new();
    let pki = f.dir.path().join("pki");
    let (other, _) = ca(&f.dir.path().join("signing-ca"), "Signing CA");
    leaf(&other, "urn:splp:server:ID:PEMDA:1602:gw1", &pki.join("sign.crt"), &pki.join("sign.key"));
    // The example with these lines first in its [audit] section, and no others of the kind.
    let original = f.text();
    assert!(original.contains("\n[audit]\n"), "the example has an [audit] section");
    let with = |extra: &str| {
        let text = original.replacen("\n[audit]\n", &format!("\n[audit]\n{extra}"), 1);
        std::fs::write(f.config(), text).unwrap();
    };
    // Without its certificate, its checkpoints could never be checked.
    with("signing_key = \"pki/sign.key\"\n");
    let err = f.fails_at(f.line_of("signing_key"), "signing_key is set without signing_cert");
    assert!(err.contains("splpd certs issue --ca CA server ID/PEMDA/1602/gw1"), "{err}");
    // With another key's certificate.
    with("signing_key = \"pki/sign.key\"\nsigning_cert = \"pki/gw1.crt\"\n");
    f.fails_at(f.line_of("signing_cert"), "the signing certificate is not signing_key's");
    // With its own.
    with("signing_key = \"pki/sign.key\"\nsigning_cert = \"pki/sign.crt\"\n");
    let (ok, _, err) = f.check();
    assert!(ok, "{err}");
    // Both are taken from the configuration's folder, as `serve` reads them from wherever it runs.
    let cfg = splpd_gateway::config::load(&f.config()).unwrap();
    assert_eq!(cfg.audit.signing_key, Some(pki.join("sign.key")));
    assert_eq!(cfg.audit.signing_cert, Some(pki.join("sign.crt")));
}

#[test]
fn a_quota_that_would_refuse_every_call_is_refused_at_its_key() {
    let example = std::fs::read_to_string(Fixture::new().config()).unwrap();
    let line_of = |text: &str| example.lines().position(|l| l == text).unwrap() + 1;
    let f = Fixture::new();
    f.edit("per_second = 200", "per_second = 0");
    f.fails_at(line_of("per_second = 200"), "per_second = 0 would refuse every call");
    let f = Fixture::new();
    f.edit("burst = 400", "burst = 0");
    f.fails_at(line_of("burst = 400"), "burst = 0 would refuse every call");
}

#[test]
fn bad_listener_address_is_refused() {
    let f = Fixture::new();
    f.edit("address = \"0.0.0.0:8443\"", "address = \"gateway.local:8443\"");
    let err = f.fails_at(f.line_of("gateway.local"), "\"gateway.local:8443\" is not an address to listen on");
    assert!(err.contains("IP:port"), "{err}");
}

#[test]
fn an_address_on_the_port_of_a_listener_on_every_address_is_refused() {
    let f = Fixture::new();
    // The public listener is on 0.0.0.0:8443, which takes port 8443 on loopback too.
    f.edit("address = \"127.0.0.1:9443\"", "address = \"127.0.0.1:8443\"");
    let err = f.fails_at(
        f.line_of("127.0.0.1:8443"),
        "127.0.0.1:8443 cannot be bound beside listener \"public\"'s 0.0.0.0:8443: both take port 8443",
    );
    assert!(err.contains("admin listener its own address"), "{err}");
}

#[test]
fn bad_upstream_url_is_refused() {
    let f = Fixture::new();
    f.edit("upstreams = [\"http://127.0.0.1:9101\"]", "upstreams = [\"ftp://127.0.0.1:9101\"]");
    f.fails_at(f.line_of("ftp://"), "uses the ftp scheme");
}

#[test]
fn malformed_identifier_in_the_file_names_the_part() {
    let f = Fixture::new();
    f.edit("client = \"ID/PEMDA/1602/RSUD\"\nendpoints", "client = \"ID/PEMDA/1602/RS UD\"\nendpoints");
    let (ok, _, err) = f.check();
    assert!(!ok);
    let line = f.line_of("RS UD");
    assert!(err.contains(&format!("splpd.toml:{line}:")), "{err}");
    assert!(err.contains("the subsystem code \"RS UD\" contains ' '"), "{err}");
}

#[test]
fn http_opt_in_on_a_public_address_is_refused() {
    let f = Fixture::new();
    f.edit("address = \"127.0.0.1:8080\"", "address = \"0.0.0.0:8080\"");
    f.fails_at(f.line_of("connection = \"http\""), "not a loopback or intranet address");
}

#[test]
fn a_peer_cannot_claim_this_regions_identifiers() {
    let f = Fixture::new();
    f.edit("authoritative = [\"ID/PEMDA/1601\"]", "authoritative = [\"ID/PEMDA/1601\", \"ID/PEMDA\"]");
    f.fails_at(f.line_of("authoritative = "), "overlaps ID/PEMDA/1602 that this gateway serves");
}

#[test]
fn syntax_errors_point_at_the_place() {
    let f = Fixture::new();
    f.edit("name = \"public\"", "name = public\"");
    f.fails_at(f.line_of("name = public"), "TOML syntax error");
}

/// A misspelt `[[service]]` header leaves the sub-tables below it (`[service.health_check]`)
/// without their entry; the message is TOML's or serde's, about another line, so the hint names
/// the likely cause.
#[test]
fn a_misspelt_list_of_tables_header_is_named_as_the_likely_cause() {
    let f = Fixture::new();
    let text = f.text();
    // Every entry misspelt: `service` is then a table where a list was expected.
    std::fs::write(f.config(), text.replace("[[service]]\n", "[[services]]\n")).unwrap();
    let header = f.text().lines().position(|l| l == "[service.health_check]").unwrap() + 1;
    let err = f.fails_at(header, "invalid type: map, expected a sequence");
    assert!(err.contains("belongs to the `[[service]]` right above it; check the spelling"), "{err}");
    // The first only: the next `[[service]]` then repeats the key the sub-tables made.
    let first = text.find("[[service]]\n").unwrap();
    let mut one = text.clone();
    one.replace_range(first..first + "[[service]]".len(), "[[services]]");
    std::fs::write(f.config(), one).unwrap();
    let (ok, _, err) = f.check();
    assert!(!ok && err.contains("duplicate key"), "{err}");
    assert!(err.contains("a `[name.part]` table with no `[[name]]` right above it"), "{err}");
}

#[test]
fn every_mistake_is_reported_not_only_the_first() {
    let f = Fixture::new();
    f.edit("address = \"0.0.0.0:8443\"", "address = \"0.0.0.0:99999\"");
    f.edit("group = \"layanan-kesehatan\"", "group = \"nobody\"");
    let (ok, _, err) = f.check();
    assert!(!ok);
    assert!(err.contains("0.0.0.0:99999") && err.contains("\"nobody\""), "{err}");
    assert!(err.trim_end().ends_with("2 errors in the configuration"), "{err}");
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_splpd"))
        .args(["config", "check", "/nonexistent/splpd.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read configuration file /nonexistent/splpd.toml"), "{err}");
}

#[test]
fn names_the_gateway_answers_itself_are_refused_for_agency_services() {
    let f = Fixture::new();
    f.append(
        "[[service]]\nid = \"ID/PEMDA/1602/DISDUKCAPIL/listMethods\"\nupstreams = [\"http://127.0.0.1:9103\"]\n\n\
         [[service]]\nid = \"ID/PEMDA/1602/DINKES/sehat\"\nprotocol = \"grpc\"\nupstreams = [\"http://127.0.0.1:9104\"]\n\
         grpc_services = [\"grpc.health.v1.Health\"]\n",
    );
    f.fails_at(f.line_of("DISDUKCAPIL/listMethods"), "service code listMethods is reserved");
    f.fails_at(
        f.line_of("grpc_services = [\"grpc.health.v1.Health\"]"),
        "grpc.health.v1.Health is answered by the gateway itself",
    );
}

#[test]
fn edge_limits_outside_what_http2_and_the_gateway_allow_are_refused() {
    let f = Fixture::new();
    f.edit("http2_stream_window = \"1 MiB\"", "http2_stream_window = \"4 KiB\"");
    f.edit("max_connections = 10000\n# Connections one client", "max_connections = 0\n# Connections one client");
    f.edit("connections_per_address = 256", "connections_per_address = 0");
    f.edit("refusals_per_address = 60", "refusals_per_address = 0");
    let err = f.fails_at(f.line_of("http2_stream_window = \"4 KiB\""), "outside what HTTP/2 allows");
    assert!(err.contains("max_connections is zero"), "{err}");
    assert!(err.contains("connections_per_address is zero, which would refuse every connection"), "{err}");
    let line = f.line_of("refusals_per_address = 0");
    assert!(
        err.contains(&format!(":{line}:")) && err.contains("refusals_per_address is zero") && err.contains("default"),
        "{err}"
    );
}

#[test]
fn a_value_of_the_wrong_type_is_told_in_plain_words() {
    let f = Fixture::new();
    f.edit("refusals_per_address = 60", "refusals_per_address = \"60\"");
    let err = f.fails_at(f.line_of("refusals_per_address = \"60\""), "expected a whole number from 0 to 4294967295");
    assert!(!err.contains("u32"), "{err}");
    f.edit("refusals_per_address = \"60\"", "refusals_per_address = -1");
    f.fails_at(f.line_of("refusals_per_address = -1"), "expected a whole number from 0 to 4294967295");
}

#[test]
fn a_duration_without_its_unit_says_how_to_write_one() {
    let f = Fixture::new();
    f.edit("commit_delay = \"5ms\"", "commit_delay = 5");
    f.fails_at(
        f.line_of("commit_delay = 5"),
        "5 has no unit: a duration is written in quotes with its unit, e.g. \"5s\"",
    );
}

#[test]
fn a_commit_delay_that_would_hold_every_exchange_is_refused() {
    let f = Fixture::new();
    f.edit("commit_delay = \"5ms\"", "commit_delay = \"250ms\"");
    f.fails_at(f.line_of("commit_delay = \"250ms\""), "commit_delay 250ms is above 100ms");
}

/// Runs `splpd config ARGS` in the fixture's folder with `input` on standard input.
fn config_cmd(f: &Fixture, args: &[&str], input: &str) -> (bool, String, String) {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_splpd"))
        .arg("config")
        .args(args)
        .current_dir(f.dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn history(f: &Fixture) -> Vec<PathBuf> {
    let mut kept: Vec<PathBuf> = std::fs::read_dir(f.dir.path().join("splpd-history"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    // The note a change leaves for the running gateway's reload is not a kept version.
    kept.retain(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'));
    kept.sort();
    kept
}

#[test]
fn apply_shows_the_change_asks_keeps_the_old_version_and_undo_puts_it_back() {
    let f = Fixture::new();
    let original = f.text();
    let changed = original.replacen("request_timeout = \"10s\"", "request_timeout = \"20s\"", 1);
    assert_ne!(changed, original);
    std::fs::write(f.dir.path().join("new.toml"), &changed).unwrap();

    // Declined (or no answer, as from a script without --yes): nothing changes.
    for answer in ["n\n", ""] {
        let (ok, out, _) = config_cmd(&f, &["apply", "--config", "splpd.toml", "new.toml"], answer);
        assert!(!ok);
        assert!(out.contains("-request_timeout = \"10s\"") && out.contains("+request_timeout = \"20s\""), "{out}");
        assert!(out.contains("Nothing changed"), "{out}");
        assert_eq!(f.text(), original);
        assert!(history(&f).is_empty());
    }

    // Confirmed: in place, and the old version kept.
    let (ok, out, err) = config_cmd(&f, &["apply", "--config", "splpd.toml", "new.toml", "--issue", "CHG-7"], "y\n");
    assert!(ok, "{out}{err}");
    assert_eq!(f.text(), changed);
    let kept = history(&f);
    assert_eq!(kept.len(), 1);
    assert_eq!(std::fs::read_to_string(&kept[0]).unwrap(), original);
    let version = splpd_gateway::reload::version_of(&changed);
    // Left for the running gateway, whose reload of this very text names the account and reason.
    let kept_by = splpd_gateway::config::history::History::of(&f.config());
    let note = kept_by.note_for(&splpd_certs::load::sha256(changed.as_bytes())).expect("a note");
    assert_eq!(note.replaces, hex::encode(splpd_certs::load::sha256(original.as_bytes())));
    assert_eq!(
        (note.issue.as_str(), note.host_user.as_str()),
        ("CHG-7", splpd_gateway::config::history::host_account().as_str())
    );
    assert!(out.contains(&format!("now holds version {version}")) && out.contains("splpd config undo"), "{out}");

    // Undo puts the old version back, after showing the way back as a diff.
    let (ok, out, err) = config_cmd(&f, &["undo", "--config", "splpd.toml", "--yes"], "");
    assert!(ok, "{out}{err}");
    assert!(out.contains("+request_timeout = \"10s\""), "{out}");
    assert_eq!(f.text(), original);
    assert_eq!(history(&f).len(), 2, "the undone version is kept too, so undo again redoes it");
    // The history lists both, oldest first, the one undo puts back last.
    let (ok, out, _) = config_cmd(&f, &["history", "--config", "splpd.toml"], "");
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[1].contains(&splpd_gateway::reload::version_of(&original)), "{out}");
    assert!(lines[2].contains(&version) && lines[3].contains(&format!("the last ({version})")), "{out}");
    let (ok, _, _) = config_cmd(&f, &["undo", "--config", "splpd.toml", "--yes"], "");
    assert!(ok);
    assert_eq!(f.text(), changed);

    // An edit by hand that a running gateway would refuse: the version before it is still in
    // force, and undo would drop that one too, so it is refused and the file left alone.
    let broken = format!("{changed}\n[gateway\n");
    std::fs::write(f.config(), &broken).unwrap();
    let (ok, _, err) = config_cmd(&f, &["undo", "--config", "splpd.toml", "--yes"], "");
    assert!(!ok);
    assert!(err.contains("which a running gateway refuses") && err.contains("correct the file"), "{err}");
    assert_eq!(f.text(), broken);
    // A change over it is made, and says what undo would then put back.
    let (ok, out, err) = config_cmd(&f, &["apply", "--config", "splpd.toml", "new.toml", "--yes"], "");
    assert!(ok, "{out}{err}");
    assert_eq!(f.text(), changed);
    let version = splpd_gateway::reload::version_of(&broken);
    assert!(out.contains(&format!("held version {version}, which a running gateway refuses")), "{out}");
    assert!(out.contains("GET /config/in-force"), "{out}");
    assert!(out.contains("`splpd config undo` will not put it back"), "{out}");
    // Undo will not put back that refused version: the file would then fail the gateway's next start.
    let (ok, _, err) = config_cmd(&f, &["undo", "--config", "splpd.toml", "--yes"], "");
    assert!(!ok);
    assert!(err.contains(&format!("({version}, kept in ")) && err.contains("would not start with it"), "{err}");
    assert!(err.contains("expected") || err.contains("invalid"), "the mistakes in it are shown: {err}");
    assert_eq!(f.text(), changed, "the file is left as it was");
}

#[test]
fn a_change_without_a_target_names_both_ways_to_give_one() {
    let f = Fixture::new();
    let (ok, _, err) = config_cmd(&f, &["apply", "new.toml"], "");
    assert!(!ok && err.contains("--config <CONFIG>|--admin <ADMIN>"), "{err}");
}

#[test]
fn apply_refuses_a_new_version_with_mistakes_and_names_them_in_its_own_file() {
    let f = Fixture::new();
    let original = f.text();
    let broken = original.replacen("request_timeout = \"10s\"", "request_timout = \"10s\"", 1);
    std::fs::write(f.dir.path().join("new.toml"), &broken).unwrap();
    let (ok, out, err) = config_cmd(&f, &["apply", "--config", "splpd.toml", "new.toml", "--yes"], "");
    assert!(!ok);
    let line = broken.lines().position(|l| l.contains("request_timout")).unwrap() + 1;
    assert!(err.contains(&format!("new.toml:{line}:")) && err.contains("unknown field `request_timout`"), "{err}");
    assert!(err.contains("splpd.toml is unchanged"), "{err}");
    assert!(out.is_empty(), "no diff for a version that cannot be put in force: {out}");
    assert_eq!(f.text(), original);
    assert!(history(&f).is_empty());

    // A listener moved: the running gateway would refuse to reload it, so it is refused here.
    let moved = original.replacen("address = \"0.0.0.0:8443\"", "address = \"0.0.0.0:9444\"", 1);
    assert_ne!(moved, original);
    std::fs::write(f.dir.path().join("moved.toml"), &moved).unwrap();
    let (ok, _, err) = config_cmd(&f, &["apply", "--config", "splpd.toml", "moved.toml", "--yes"], "");
    assert!(
        !ok && err.contains("listeners are bound at start")
            && err.contains("by hand and restart splpd")
            && err.contains("splpd.toml is unchanged"),
        "{err}"
    );
    assert_eq!(f.text(), original);

    // Its relative file names are those of the configuration's folder, where it will run.
    let elsewhere = f.dir.path().join("drafts");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("new.toml"), original.replacen("\"10s\"", "\"11s\"", 1)).unwrap();
    let (ok, _, err) = config_cmd(&f, &["apply", "--config", "splpd.toml", "drafts/new.toml", "--yes"], "");
    assert!(ok, "{err}");

    // Undo with nothing kept says so.
    let g = Fixture::new();
    let (ok, _, err) = config_cmd(&g, &["undo", "--config", "splpd.toml", "--yes"], "");
    assert!(!ok && err.contains("only changes made with `splpd config apply` or the admin listener"), "{err}");
}

#[test]
fn an_admin_viewer_must_be_of_this_member_and_not_an_operator_too() {
    let f = Fixture::new();
    f.edit("viewers = [\"ID/PEMDA/1602/prometheus\"]", "viewers = [\"ID/PEMDA/1601/andi\", \"ID/PEMDA/1602/budi\"]");
    let line = f.line_of("viewers = ");
    let err = f.fails_at(line, "viewer ID/PEMDA/1601/andi belongs to another member than this gateway");
    assert!(err.contains("ID/PEMDA/1602/budi is both an operator and a viewer"), "{err}");
}

#[test]
fn a_stored_body_limit_an_audit_record_cannot_hold_is_refused() {
    let f = Fixture::new();
    f.edit("max_stored_body = \"64 KiB\"", "max_stored_body = \"1 MiB\"");
    let err =
        f.fails_at(f.line_of("max_stored_body = "), "max_stored_body 1 MiB is more than an audit record can hold");
    assert!(err.contains("at most 256 KiB"), "{err}");
}
