//! `splpd certs`: the real binary, run in a temporary directory, checked with openssl. These tests
//! prove that what the CA issues verifies and carries the profile, that revocation reaches the
//! CRL, that a CSR never chooses its own identity, and that refused commands write nothing.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test by panicking")]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Command, Output};

const DINKES: &str = "ID/PEMDA/1602/DINKES";
const DINKES_URN: &str = "URI:urn:splp:subsystem:ID:PEMDA:1602:DINKES";
const CLIENT_AUTH: &str = "TLS Web Client Authentication";
const SERVER_AUTH: &str = "TLS Web Server Authentication";

/// A temporary working directory with a CA in `ca/`.
struct Env {
    dir: tempfile::TempDir,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Env {
    fn new() -> Self {
        let env = Self { dir: tempfile::tempdir().unwrap() };
        env.ok(&[
            "certs",
            "init-ca",
            "--dir",
            "ca",
            "--org",
            "Pemerintah Kabupaten Ogan Komering Ilir",
            "--scope",
            "ID/PEMDA/1602",
        ]);
        env
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new(program).args(args).current_dir(self.dir.path()).output().unwrap()
    }

    fn splpd(&self, args: &[&str]) -> Output {
        self.run(env!("CARGO_BIN_EXE_splpd"), args)
    }

    /// Runs splpd, expects success, returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.splpd(args);
        assert!(out.status.success(), "splpd {args:?} failed: {}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }

    /// Runs splpd, expects it to refuse (exit status 1), returns stderr.
    fn refused(&self, args: &[&str]) -> String {
        let out = self.splpd(args);
        assert_eq!(out.status.code(), Some(1), "splpd {args:?}: {}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stderr)
    }

    /// Runs openssl, expects success, returns stdout.
    fn openssl(&self, args: &[&str]) -> String {
        let out = self.run("openssl", args);
        assert!(out.status.success(), "openssl {args:?} failed: {}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }

    fn x509_text(&self, cert: &str) -> String {
        self.openssl(&["x509", "-in", cert, "-text", "-noout"])
    }

    fn verify(&self, cert: &str) {
        let out = self.openssl(&["verify", "-CAfile", "ca/ca.crt", cert]);
        assert_eq!(out.trim(), format!("{cert}: OK"));
    }

    /// An agency CSR made by openssl, CN and URI SAN naming `ID/PEMDA/1602/DINKES`.
    fn openssl_csr(&self, name: &str) {
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            // openssl splits -subj on unescaped slashes, so the identifier's slashes are escaped.
            "-subj",
            "/CN=ID\\/PEMDA\\/1602\\/DINKES",
            "-addext",
            "subjectAltName=URI:urn:splp:subsystem:ID:PEMDA:1602:DINKES",
        ]);
    }

    /// Every file under the directory with its contents.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.dir.path().to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let contents = fs::read(&path).unwrap();
                    out.insert(path.strip_prefix(self.dir.path()).unwrap().to_owned(), contents);
                }
            }
        }
        out
    }

    fn mode(&self, name: &str) -> u32 {
        fs::metadata(self.path(name)).unwrap().permissions().mode() & 0o777
    }

    /// The serial openssl reads from a certificate, uppercase hex.
    fn serial(&self, cert: &str) -> String {
        let out = self.openssl(&["x509", "-in", cert, "-serial", "-noout"]);
        out.trim().strip_prefix("serial=").unwrap().to_owned()
    }
}

#[test]
fn openssl_verifies_every_issued_certificate_and_sees_the_profile() {
    let env = Env::new();
    let ca = env.x509_text("ca/ca.crt");
    assert!(ca.contains("CA:TRUE, pathlen:0"), "{ca}");
    assert!(ca.contains("Certificate Sign, CRL Sign"), "{ca}");

    let out = env.ok(&["certs", "issue", "--ca", "ca", "subsystem", DINKES]);
    assert!(out.contains("ID-PEMDA-1602-DINKES.crt"), "{out}");
    env.ok(&[
        "certs",
        "issue",
        "--ca",
        "ca",
        "server",
        "ID/PEMDA/1602/gw1",
        "--dns",
        "splpd.okikab.go.id",
        "--ip",
        "10.16.2.1",
        "--out",
        "gw1",
    ]);
    env.ok(&["certs", "issue", "--ca", "ca", "admin", "ID/PEMDA/1602/budi", "--cert", "budi.crt", "--key", "budi.key"]);
    env.openssl_csr("agency");
    env.ok(&["certs", "sign-csr", "--ca", "ca", "--csr", "agency.csr", "subsystem", DINKES, "--cert", "agency.crt"]);

    for cert in ["ID-PEMDA-1602-DINKES.crt", "gw1.crt", "budi.crt", "agency.crt"] {
        env.verify(cert);
        let text = env.x509_text(cert);
        assert!(text.contains(CLIENT_AUTH), "{cert}: {text}");
        assert!(text.contains("CA:FALSE"), "{cert}: {text}");
        assert!(text.contains("Digital Signature"), "{cert}: {text}");
        assert!(text.contains("O = Pemerintah Kabupaten Ogan Komering Ilir"), "{cert}: {text}");
    }

    let subsystem = env.x509_text("ID-PEMDA-1602-DINKES.crt");
    assert!(subsystem.contains(DINKES_URN), "{subsystem}");
    assert!(subsystem.contains("CN = ID/PEMDA/1602/DINKES"), "{subsystem}");
    assert!(!subsystem.contains(SERVER_AUTH), "a subsystem certificate must not act as a server: {subsystem}");

    let server = env.x509_text("gw1.crt");
    assert!(server.contains("URI:urn:splp:server:ID:PEMDA:1602:gw1"), "{server}");
    assert!(server.contains(SERVER_AUTH), "{server}");
    assert!(server.contains("DNS:splpd.okikab.go.id") && server.contains("IP Address:10.16.2.1"), "{server}");

    let admin = env.x509_text("budi.crt");
    assert!(admin.contains("URI:urn:splp:admin:ID:PEMDA:1602:budi"), "{admin}");
    assert!(!admin.contains(SERVER_AUTH), "{admin}");

    let agency = env.x509_text("agency.crt");
    assert!(agency.contains(DINKES_URN), "{agency}");
    assert!(!agency.contains(SERVER_AUTH), "{agency}");
}

#[test]
fn a_revoked_certificate_is_listed_in_the_crl_and_refused_by_openssl() {
    let env = Env::new();
    env.ok(&["certs", "issue", "--ca", "ca", "subsystem", DINKES, "--out", "dinkes"]);
    env.ok(&["certs", "issue", "--ca", "ca", "subsystem", "ID/PEMDA/1602/BAPPEDA", "--out", "bappeda"]);
    let crl_check = |cert: &str| {
        env.run("openssl", &["verify", "-crl_check", "-CAfile", "ca/ca.crt", "-CRLfile", "ca/crl.pem", cert])
    };
    // The CRL written by init-ca is empty and valid, so both verify with CRL checking on.
    for cert in ["dinkes.crt", "bappeda.crt"] {
        let out = crl_check(cert);
        assert!(out.status.success(), "{cert}: {}{}", text(&out.stdout), text(&out.stderr));
    }
    let first_number = crl_number(&env.openssl(&["crl", "-in", "ca/crl.pem", "-text", "-noout"]));

    let out = env.ok(&["certs", "revoke", "--ca", "ca", "--cert", "dinkes.crt", "--reason", "key-compromise"]);
    let serial = env.serial("dinkes.crt");
    assert!(out.to_uppercase().contains(&serial), "{out}");

    let crl = env.openssl(&["crl", "-in", "ca/crl.pem", "-text", "-noout"]);
    let listed: Vec<String> =
        crl.lines().filter_map(|l| l.trim().strip_prefix("Serial Number:")).map(|s| s.trim().to_uppercase()).collect();
    assert_eq!(listed, vec![serial.clone()], "{crl}");
    assert!(crl.contains("Key Compromise"), "{crl}");
    assert!(crl.contains("X509v3 Authority Key Identifier"), "{crl}");
    assert!(crl_number(&crl) > first_number, "{crl}");

    let out = crl_check("dinkes.crt");
    assert!(!out.status.success());
    assert!(text(&out.stdout).contains("certificate revoked") || text(&out.stderr).contains("certificate revoked"));
    assert!(crl_check("bappeda.crt").status.success(), "the other certificate is still good");

    let err = env.refused(&["certs", "revoke", "--ca", "ca", "--serial", &serial.to_lowercase()]);
    assert!(err.contains("already revoked at"), "{err}");

    // Revoking by serial (any case, with colons) and publishing a copy with a higher number.
    let colons: Vec<String> =
        env.serial("bappeda.crt").as_bytes().chunks(2).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    env.ok(&["certs", "revoke", "--ca", "ca", "--serial", &colons.join(":"), "--reason", "superseded"]);
    let before = crl_number(&env.openssl(&["crl", "-in", "ca/crl.pem", "-text", "-noout"]));
    env.ok(&["certs", "crl", "--ca", "ca", "--out", "published.crl", "--days", "7"]);
    let published = env.openssl(&["crl", "-in", "published.crl", "-text", "-noout"]);
    assert_eq!(crl_number(&published), before + 1);
    assert_eq!(published.matches("Serial Number:").count(), 2, "{published}");
    assert!(!crl_check("bappeda.crt").status.success());
}

fn crl_number(crl_text: &str) -> u64 {
    let mut lines = crl_text.lines();
    lines.by_ref().find(|l| l.contains("X509v3 CRL Number"));
    lines.next().unwrap().trim().parse().unwrap()
}

#[test]
fn a_csr_naming_another_identity_is_refused_unless_overridden_and_then_carries_the_operators() {
    let env = Env::new();
    env.openssl_csr("agency");
    let before = env.snapshot();
    let err = env.refused(&[
        "certs",
        "sign-csr",
        "--ca",
        "ca",
        "--csr",
        "agency.csr",
        "subsystem",
        "ID/PEMDA/1602/DISDUKCAPIL",
    ]);
    assert!(err.contains("ID/PEMDA/1602/DINKES") && err.contains("ID/PEMDA/1602/DISDUKCAPIL"), "{err}");
    assert!(err.contains("--ignore-csr-identity"), "{err}");
    assert_eq!(env.snapshot(), before, "nothing may be written, not even in the CA directory");
    assert!(!env.path("ID-PEMDA-1602-DISDUKCAPIL.crt").exists());

    env.ok(&[
        "certs",
        "sign-csr",
        "--ca",
        "ca",
        "--csr",
        "agency.csr",
        "subsystem",
        "ID/PEMDA/1602/DISDUKCAPIL",
        "--ignore-csr-identity",
    ]);
    let cert = "ID-PEMDA-1602-DISDUKCAPIL.crt";
    env.verify(cert);
    let text = env.x509_text(cert);
    assert!(text.contains("URI:urn:splp:subsystem:ID:PEMDA:1602:DISDUKCAPIL"), "{text}");
    assert!(!text.contains("DINKES"), "the CSR's identity must not reach the certificate: {text}");
    assert!(text.contains("CN = ID/PEMDA/1602/DISDUKCAPIL"), "{text}");
}

#[test]
fn a_csr_for_the_same_identity_is_signed_over_its_own_public_key() {
    let env = Env::new();
    env.openssl_csr("agency");
    env.ok(&["certs", "sign-csr", "--ca", "ca", "--csr", "agency.csr", "subsystem", DINKES]);
    let cert = "ID-PEMDA-1602-DINKES.crt";
    env.verify(cert);
    let cert_key = env.openssl(&["x509", "-in", cert, "-pubkey", "-noout"]);
    let csr_key = env.openssl(&["req", "-in", "agency.csr", "-pubkey", "-noout"]);
    assert!(cert_key.contains("BEGIN PUBLIC KEY"), "{cert_key}");
    assert_eq!(cert_key, csr_key);

    // The agency-side command makes a key only the agency holds, and a CSR openssl accepts.
    env.ok(&["certs", "csr", "server", "ID/PEMDA/1602/gw1", "--key", "gw1.key", "--out", "gw1.csr"]);
    assert_eq!(env.mode("gw1.key"), 0o600);
    env.openssl(&["req", "-in", "gw1.csr", "-verify", "-noout"]);
    env.ok(&[
        "certs",
        "sign-csr",
        "--ca",
        "ca",
        "--csr",
        "gw1.csr",
        "server",
        "ID/PEMDA/1602/gw1",
        "--dns",
        "gw1.okikab.go.id",
        "--cert",
        "gw1.crt",
    ]);
    env.verify("gw1.crt");
    assert_eq!(
        env.openssl(&["x509", "-in", "gw1.crt", "-pubkey", "-noout"]),
        env.openssl(&["pkey", "-in", "gw1.key", "-pubout"])
    );
    assert!(env.x509_text("gw1.crt").contains(SERVER_AUTH));
}

#[test]
fn a_csr_with_a_broken_signature_is_refused() {
    let env = Env::new();
    env.openssl_csr("agency");
    env.openssl(&["req", "-in", "agency.csr", "-outform", "DER", "-out", "agency.der"]);
    let mut der = fs::read(env.path("agency.der")).unwrap();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    fs::write(env.path("agency.der"), der).unwrap();
    let before = env.snapshot();
    let err = env.refused(&[
        "certs",
        "sign-csr",
        "--ca",
        "ca",
        "--csr",
        "agency.der",
        "subsystem",
        DINKES,
        "--ignore-csr-identity",
    ]);
    assert!(err.contains("signature does not verify"), "{err}");
    assert_eq!(env.snapshot(), before);
}

#[test]
fn malformed_identifiers_are_refused_naming_the_part_and_nothing_is_written() {
    let env = Env::new();
    env.openssl_csr("agency");
    let long = format!("ID/PEMDA/1602/{}", "A".repeat(65));
    let cases: [(&str, &str, &str); 7] = [
        ("subsystem", "ID/PEMDA/1602/", "the subsystem code is empty"),
        ("subsystem", "ID//1602/DINKES", "the member class is empty"),
        ("subsystem", "ID/PEMDA/1602", "needs 4"),
        ("subsystem", "ID/PEMDA/1602/DINKES/extra", "needs 4"),
        ("subsystem", "ID/PEMDA/1602/DIN KES", "the subsystem code \"DIN KES\" contains ' '"),
        ("server", "ID/PEMDA/16#02/gw1", "the member code \"16#02\" contains '#'"),
        ("subsystem", &long, "the subsystem code is 65 characters long"),
    ];
    let before = env.snapshot();
    for (kind, id, expected) in cases {
        for args in [
            vec!["certs", "issue", "--ca", "ca", kind, id],
            vec!["certs", "sign-csr", "--ca", "ca", "--csr", "agency.csr", kind, id, "--ignore-csr-identity"],
            vec!["certs", "csr", kind, id, "--key", "new.key", "--out", "new.csr"],
        ] {
            let err = env.refused(&args);
            assert!(err.contains(expected), "{args:?}: {err}");
            assert_eq!(env.snapshot(), before, "{args:?} wrote something");
        }
    }
    let err = env.refused(&["certs", "issue", "--ca", "ca", "admin", "ID/PEMDA/1602/bu?di!"]);
    assert!(err.contains("operator name"), "{err}");

    // A bad scope is a usage error caught while parsing the command line; no CA is created.
    let out = env.splpd(&["certs", "init-ca", "--dir", "ca2", "--org", "X", "--scope", "ID/PE MDA"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("member class"), "{}", text(&out.stderr));
    assert!(!env.path("ca2").exists());
}

#[test]
fn identities_outside_the_scope_are_refused_naming_the_scope() {
    let env = Env::new();
    let before = env.snapshot();
    let err = env.refused(&["certs", "issue", "--ca", "ca", "subsystem", "ID/PEMDA/1601/DINKES"]);
    assert!(
        err.contains("ID/PEMDA/1601/DINKES") && err.contains("only vouch for identifiers under ID/PEMDA/1602"),
        "{err}"
    );
    assert_eq!(env.snapshot(), before);
}

#[test]
fn a_certificate_cut_short_to_its_cas_end_says_so() {
    let env = Env::new();
    env.ok(&[
        "certs",
        "init-ca",
        "--dir",
        "short",
        "--org",
        "Pemda Singkat",
        "--scope",
        "ID/PEMDA/1699",
        "--days",
        "20",
    ]);
    let out = env.ok(&["certs", "issue", "--ca", "short", "subsystem", "ID/PEMDA/1699/DINKES"]);
    assert!(out.contains("cut short to the CA's own end") && out.contains("roll the CA over"), "{out}");
    let out = env.ok(&["certs", "issue", "--ca", "ca", "subsystem", "ID/PEMDA/1602/DINKES"]);
    assert!(out.contains("valid until") && !out.contains("cut short"), "{out}");
}

#[test]
fn keys_are_private_and_existing_files_are_kept_unless_forced() {
    let env = Env::new();
    assert_eq!(env.mode("ca/ca.key"), 0o600);
    env.ok(&["certs", "issue", "--ca", "ca", "subsystem", DINKES]);
    assert_eq!(env.mode("ID-PEMDA-1602-DINKES.key"), 0o600);
    assert_eq!(env.mode("ID-PEMDA-1602-DINKES.crt"), 0o644);

    // Only the key exists: the certificate is not written either.
    fs::write(env.path("ID-PEMDA-1602-BAPPEDA.key"), "precious").unwrap();
    let before = env.snapshot();
    let err = env.refused(&["certs", "issue", "--ca", "ca", "subsystem", "ID/PEMDA/1602/BAPPEDA"]);
    assert!(err.contains("ID-PEMDA-1602-BAPPEDA.key already exists") && err.contains("--force"), "{err}");
    assert_eq!(env.snapshot(), before);
    assert_eq!(fs::read(env.path("ID-PEMDA-1602-BAPPEDA.key")).unwrap(), b"precious");

    env.ok(&["certs", "issue", "--ca", "ca", "subsystem", "ID/PEMDA/1602/BAPPEDA", "--force"]);
    let key = fs::read_to_string(env.path("ID-PEMDA-1602-BAPPEDA.key")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
    assert_eq!(env.mode("ID-PEMDA-1602-BAPPEDA.key"), 0o600);
    env.verify("ID-PEMDA-1602-BAPPEDA.crt");

    // The CA itself.
    let ca_key = fs::read(env.path("ca/ca.key")).unwrap();
    let err = env.refused(&["certs", "init-ca", "--dir", "ca", "--org", "Other", "--scope", "ID/PEMDA/1602"]);
    assert!(err.contains("ca.key already exists") && err.contains("--force"), "{err}");
    assert!(err.contains("stop verifying"), "{err}");
    assert_eq!(fs::read(env.path("ca/ca.key")).unwrap(), ca_key);
    env.ok(&["certs", "init-ca", "--dir", "ca", "--org", "Other", "--scope", "ID/PEMDA/1602", "--force"]);
    assert_ne!(fs::read(env.path("ca/ca.key")).unwrap(), ca_key);
    assert_eq!(env.mode("ca/ca.key"), 0o600);

    // sign-csr and csr refuse existing outputs as well.
    fs::write(env.path("taken.crt"), "old").unwrap();
    env.ok(&["certs", "csr", "subsystem", DINKES, "--key", "a.key", "--out", "a.csr"]);
    let err =
        env.refused(&["certs", "sign-csr", "--ca", "ca", "--csr", "a.csr", "subsystem", DINKES, "--cert", "taken.crt"]);
    assert!(err.contains("taken.crt already exists"), "{err}");
    assert_eq!(fs::read(env.path("taken.crt")).unwrap(), b"old");
    let a_key = fs::read(env.path("a.key")).unwrap();
    let err = env.refused(&["certs", "csr", "subsystem", DINKES, "--key", "a.key", "--out", "fresh.csr"]);
    assert!(err.contains("a.key already exists"), "{err}");
    assert_eq!(fs::read(env.path("a.key")).unwrap(), a_key);
    assert!(!env.path("fresh.csr").exists());
}

#[test]
fn missing_output_folders_are_made_private_above_keys_and_not_left_by_a_refusal() {
    let env = Env::new();
    env.ok(&["certs", "issue", "--ca", "ca", "subsystem", DINKES, "--out", "agencies/dinkes/app"]);
    assert_eq!((env.mode("agencies"), env.mode("agencies/dinkes")), (0o700, 0o700));
    assert_eq!((env.mode("agencies/dinkes/app.key"), env.mode("agencies/dinkes/app.crt")), (0o600, 0o644));
    env.verify("agencies/dinkes/app.crt");

    env.ok(&["certs", "csr", "subsystem", DINKES, "--key", "keys/a.key", "--out", "requests/a.csr"]);
    assert_eq!(env.mode("keys"), 0o700);
    env.ok(&[
        "certs",
        "sign-csr",
        "--ca",
        "ca",
        "--csr",
        "requests/a.csr",
        "subsystem",
        DINKES,
        "--cert",
        "signed/a.crt",
    ]);
    env.verify("signed/a.crt");
    env.ok(&["certs", "crl", "--ca", "ca", "--out", "public/crl.pem"]);
    assert!(env.path("public/crl.pem").is_file());

    // Refused, for the identity or for an existing output: no folder is left behind either.
    env.refused(&["certs", "issue", "--ca", "ca", "subsystem", "ID/PEMDA/1601/DINKES", "--out", "outside/x"]);
    let err = env.refused(&[
        "certs",
        "issue",
        "--ca",
        "ca",
        "subsystem",
        DINKES,
        "--cert",
        "new/deeper/x.crt",
        "--key",
        "keys/a.key",
    ]);
    assert!(err.contains("keys/a.key already exists"), "{err}");
    assert!(!env.path("outside").exists() && !env.path("new").exists());
}

/// openssl's fingerprint line, `sha256 Fingerprint=AB:CD:...`, as the bare colon hex.
fn openssl_fingerprint(env: &Env, cert: &str, form: &str) -> String {
    let out = env.openssl(&["x509", "-in", cert, "-inform", form, "-fingerprint", "-sha256", "-noout"]);
    out.trim().rsplit_once('=').unwrap().1.to_uppercase()
}

/// The value of a `key: value` line of human output.
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines().find_map(|l| l.strip_prefix(&format!("{key}:"))).unwrap_or_else(|| panic!("no {key} in {out}")).trim()
}

#[test]
fn inspect_shows_identity_fingerprint_and_profile() {
    let env = Env::new();
    env.ok(&["certs", "issue", "--ca", "ca", "subsystem", DINKES, "--out", "dinkes"]);
    let out = env.ok(&["certs", "inspect", "dinkes.crt"]);
    assert!(field(&out, "identity").starts_with("subsystem ID/PEMDA/1602/DINKES"), "{out}");
    assert_eq!(field(&out, "sha256 fingerprint"), openssl_fingerprint(&env, "dinkes.crt", "PEM"));
    assert_eq!(field(&out, "serial").to_uppercase(), env.serial("dinkes.crt"));
    assert!(out.lines().any(|l| l == "profile: ok"), "{out}");

    // DER is read as well, and --json carries the same facts.
    env.openssl(&["x509", "-in", "dinkes.crt", "-outform", "DER", "-out", "dinkes.der"]);
    let json: serde_json::Value = serde_json::from_str(&env.ok(&["certs", "inspect", "dinkes.der", "--json"])).unwrap();
    assert_eq!(json["type"], "certificate");
    assert_eq!(json["identity"]["urn"], "urn:splp:subsystem:ID:PEMDA:1602:DINKES");
    assert_eq!(json["fingerprint_sha256"], openssl_fingerprint(&env, "dinkes.der", "DER"));
    assert_eq!(json["problems"], serde_json::json!([]));

    // A plain openssl self-signed certificate has no identity, and inspect says so.
    env.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "plain.key",
        "-out",
        "plain.crt",
        "-subj",
        "/CN=plain",
        "-days",
        "1",
    ]);
    let out = env.ok(&["certs", "inspect", "plain.crt"]);
    assert!(!out.contains("profile: ok"), "{out}");
    let problems = out.split_once("profile:").unwrap().1;
    assert!(problems.contains("no urn:splp: identity"), "{out}");
    assert!(problems.contains("CA flag"), "{out}");
    assert!(field(&out, "identity").starts_with("none"), "{out}");

    // CRLs and CSRs are recognised by their labels.
    let crl = env.ok(&["certs", "inspect", "ca/crl.pem"]);
    assert_eq!(field(&crl, "type"), "certificate revocation list");
    env.openssl_csr("agency");
    let csr = env.ok(&["certs", "inspect", "agency.csr"]);
    assert!(field(&csr, "claimed identity").starts_with("subsystem ID/PEMDA/1602/DINKES"), "{csr}");
    assert_eq!(field(&csr, "signature valid"), "yes");

    let err = env.refused(&["certs", "inspect", "dinkes.key"]);
    assert!(err.contains("private key"), "{err}");
}

#[test]
fn every_subcommand_explains_itself_with_examples() {
    let env = Env::new();
    for cmd in ["init-ca", "issue", "sign-csr", "csr", "revoke", "crl", "inspect"] {
        let out = env.ok(&["certs", cmd, "--help"]);
        assert!(out.contains("Examples:") && out.contains(&format!("splpd certs {cmd}")), "{cmd}: {out}");
    }
}
