//! `splpd certs`: run the region's certificate authority (create it, issue certificates, sign
//! agencies' CSRs, revoke, publish CRLs), make an agency's key and CSR, and inspect any
//! certificate, CRL or CSR. The work is done by `splpd_certs`; this module parses arguments,
//! turns library errors into advice for the operator and prints results.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use splpd_certs::id::{IdKind, IdPrefix, Identity};
use splpd_certs::inspect::{self, CertificateReport, CrlReport, CsrReport, Report, rfc3339};
use splpd_certs::pki::{
    self, CRL_VALIDITY_DAYS, Ca, InitOptions, Issued, KeyType, LeafRequest, PkiError, RevocationReason, RevokeTarget,
};
use splpd_certs::profile::{self, CA_VALIDITY_DAYS, Role};
use time::OffsetDateTime;

use super::out;

#[derive(Debug, Subcommand)]
pub(crate) enum CertsCommand {
    /// Create the region's certificate authority in a directory.
    ///
    /// Writes ca.crt (the trust anchor every gateway and peer configures), ca.key (mode 0600),
    /// ca.json (organisation, scope, CRL number), index.json (issued certificates) and an empty
    /// crl.pem. The scope is the identifier prefixes the CA may vouch for; it refuses to issue
    /// anything outside them.
    #[command(after_help = "\
Examples:
  splpd certs init-ca --dir /etc/splpd/ca --scope ID/PEMDA/1602 \\
      --org \"Pemerintah Kabupaten Ogan Komering Ilir\"
  splpd certs init-ca --dir ca --org \"Pemda OKI\" --scope ID/PEMDA/1602 --key-type ecdsa-p384")]
    InitCa(InitCaArgs),

    /// Issue a certificate and a new private key for a subsystem, gateway server or operator.
    ///
    /// The key is generated here and written with mode 0600; hand it over securely. When the
    /// agency should keep its key to itself, have it run `splpd certs csr` and use `sign-csr`.
    #[command(after_help = "\
Examples:
  splpd certs issue --ca ca subsystem ID/PEMDA/1602/DINKES
      writes ID-PEMDA-1602-DINKES.crt and ID-PEMDA-1602-DINKES.key in the current directory
  splpd certs issue --ca ca server ID/PEMDA/1602/gw1 --dns splpd.okikab.go.id --ip 10.16.2.1 \\
      --out /etc/splpd/gw1
  splpd certs issue --ca ca admin ID/PEMDA/1602/budi --cert budi.crt --key budi.key --days 365")]
    Issue(IssueArgs),

    /// Issue a certificate for the public key in an agency's certificate signing request.
    ///
    /// Only the CSR's public key is used: the identity is the one given here, never the CSR's.
    /// A CSR that names a different identity (in a urn:splp: SAN or its CN) is refused unless
    /// --ignore-csr-identity is given.
    #[command(after_help = "\
Examples:
  splpd certs sign-csr --ca ca --csr dinkes.csr subsystem ID/PEMDA/1602/DINKES
  splpd certs sign-csr --ca ca --csr gw1.csr server ID/PEMDA/1602/gw1 \\
      --dns splpd.okikab.go.id --cert gw1.crt")]
    SignCsr(SignCsrArgs),

    /// Make a private key and a certificate signing request for an identity (the agency's side).
    ///
    /// Send the CSR to the regional CA; the key never leaves the agency.
    #[command(after_help = "\
Examples:
  splpd certs csr subsystem ID/PEMDA/1602/DINKES --key dinkes.key --out dinkes.csr
  splpd certs csr server ID/PEMDA/1602/gw1 --key gw1.key --out gw1.csr --key-type ecdsa-p384")]
    Csr(CsrArgs),

    /// Revoke a certificate, and regenerate the CRL in the CA directory.
    #[command(after_help = "\
Examples:
  splpd certs revoke --ca ca --cert ID-PEMDA-1602-DINKES.crt --reason key-compromise
  splpd certs revoke --ca ca --serial 5f3a...e1 --reason superseded
Then publish the new crl.pem to every gateway that trusts this CA.")]
    Revoke(RevokeArgs),

    /// Sign a fresh CRL listing every revoked certificate.
    ///
    /// Always written to crl.pem in the CA directory; --out also writes a copy elsewhere (an
    /// existing CRL there is replaced; any other existing file needs --force). Run it before the
    /// previous CRL's next update, e.g. weekly from cron, and copy crl.pem to the gateway.
    #[command(after_help = "\
Examples:
  splpd certs crl --ca ca
  splpd certs crl --ca ca --out /var/www/pki/okikab.crl --days 7")]
    Crl(CrlArgs),

    /// Show what a certificate, CRL or CSR holds (PEM or DER), and whether a certificate fits
    /// the splpd profile.
    ///
    /// Exits 0 whenever the file can be read; profile problems are listed, not treated as errors.
    #[command(after_help = "\
Examples:
  splpd certs inspect ID-PEMDA-1602-DINKES.crt
  splpd certs inspect ca/crl.pem
  splpd certs inspect dinkes.csr --json")]
    Inspect(InspectArgs),
}

/// The kind of identity a certificate is for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Kind {
    /// An agency application: TLS client (and the identity of a service it provides).
    Subsystem,
    /// A gateway: TLS server and client.
    Server,
    /// An operator at the regional ICT office.
    Admin,
}

impl From<Kind> for IdKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Subsystem => Self::Subsystem,
            Kind::Server => Self::Server,
            Kind::Admin => Self::Admin,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum KeyTypeArg {
    /// ECDSA P-256 (the default; every TLS stack supports it).
    EcdsaP256,
    /// ECDSA P-384.
    EcdsaP384,
    /// Ed25519 (some older agency TLS stacks lack it).
    Ed25519,
}

impl From<KeyTypeArg> for KeyType {
    fn from(k: KeyTypeArg) -> Self {
        match k {
            KeyTypeArg::EcdsaP256 => Self::EcdsaP256,
            KeyTypeArg::EcdsaP384 => Self::EcdsaP384,
            KeyTypeArg::Ed25519 => Self::Ed25519,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ReasonArg {
    /// The private key was lost, stolen or exposed.
    KeyCompromise,
    /// Replaced by a newer certificate.
    Superseded,
    /// The application or gateway was shut down.
    CessationOfOperation,
    /// The holder changed (agency merged, renamed or left).
    AffiliationChanged,
    /// No reason given.
    Unspecified,
}

impl From<ReasonArg> for RevocationReason {
    fn from(r: ReasonArg) -> Self {
        match r {
            ReasonArg::KeyCompromise => Self::KeyCompromise,
            ReasonArg::Superseded => Self::Superseded,
            ReasonArg::CessationOfOperation => Self::CessationOfOperation,
            ReasonArg::AffiliationChanged => Self::AffiliationChanged,
            ReasonArg::Unspecified => Self::Unspecified,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct InitCaArgs {
    /// Directory to keep the CA in (created with mode 0700 if missing).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Organisation name, put in the subject (O) of every certificate.
    #[arg(long, value_name = "NAME")]
    org: String,
    /// An identifier prefix the CA may vouch for, e.g. ID/PEMDA/1602; repeat for several.
    #[arg(long = "scope", value_name = "PREFIX", required = true)]
    scopes: Vec<IdPrefix>,
    /// Key type of the CA.
    #[arg(long, value_enum, default_value_t = KeyTypeArg::EcdsaP256)]
    key_type: KeyTypeArg,
    /// Validity of the CA certificate in days.
    #[arg(long, value_name = "N", default_value_t = CA_VALIDITY_DAYS, value_parser = clap::value_parser!(u32).range(1..))]
    days: u32,
    /// Replace an existing CA in DIR. Every certificate it issued stops verifying.
    #[arg(long)]
    force: bool,
}

/// The identity a certificate is for.
#[derive(Debug, Args)]
pub(crate) struct IdentityArgs {
    /// subsystem, server or admin.
    #[arg(value_enum)]
    kind: Kind,
    /// The identifier, e.g. ID/PEMDA/1602/DINKES, ID/PEMDA/1602/gw1 or ID/PEMDA/1602/budi.
    #[arg(value_name = "ID")]
    id: String,
}

impl IdentityArgs {
    fn parse(&self) -> anyhow::Result<Identity> {
        Ok(Identity::parse(self.kind.into(), &self.id)?)
    }
}

/// Validity and extra names of a new certificate.
#[derive(Debug, Args)]
pub(crate) struct LeafArgs {
    /// A DNS name of the gateway (server certificates only); repeat for several.
    #[arg(long = "dns", value_name = "NAME")]
    dns: Vec<String>,
    /// An IP address of the gateway (server certificates only); repeat for several.
    #[arg(long = "ip", value_name = "ADDR")]
    ips: Vec<IpAddr>,
    /// Validity in days [default: 825, or up to the CA's expiry if that is sooner].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    days: Option<u32>,
}

impl LeafArgs {
    fn request(self, identity: Identity) -> LeafRequest {
        LeafRequest { days: self.days, ..LeafRequest::new(identity).with_names(self.dns, self.ips) }
    }
}

#[derive(Debug, Args)]
pub(crate) struct IssueArgs {
    /// The CA directory.
    #[arg(long, value_name = "DIR")]
    ca: PathBuf,
    #[command(flatten)]
    identity: IdentityArgs,
    /// Write STEM.crt and STEM.key [default: the identifier with / as -, in the current directory].
    /// Missing folders are created, mode 0700.
    #[arg(long, value_name = "STEM", conflicts_with_all = ["cert", "key"])]
    out: Option<PathBuf>,
    /// Write the certificate to FILE (with --key).
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Write the private key to FILE, mode 0600 (with --cert). Missing folders are created: mode
    /// 0700 above the key.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    #[command(flatten)]
    leaf: LeafArgs,
    /// Key type of the new key.
    #[arg(long, value_enum, default_value_t = KeyTypeArg::EcdsaP256)]
    key_type: KeyTypeArg,
    /// Replace existing output files.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct SignCsrArgs {
    /// The CA directory.
    #[arg(long, value_name = "DIR")]
    ca: PathBuf,
    /// The agency's certificate signing request, PEM or DER.
    #[arg(long, value_name = "FILE")]
    csr: PathBuf,
    #[command(flatten)]
    identity: IdentityArgs,
    /// Where to write the certificate [default: the identifier with / as -, plus .crt]; missing
    /// folders are created.
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Issue for the identity given here even when the CSR names another one.
    #[arg(long)]
    ignore_csr_identity: bool,
    #[command(flatten)]
    leaf: LeafArgs,
    /// Replace an existing certificate file.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CsrArgs {
    #[command(flatten)]
    identity: IdentityArgs,
    /// Where to write the new private key (mode 0600; missing folders are created, mode 0700). Keep
    /// it on the machine that uses it.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Where to write the CSR to send to the CA.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Key type of the new key.
    #[arg(long, value_enum, default_value_t = KeyTypeArg::EcdsaP256)]
    key_type: KeyTypeArg,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["serial", "cert"]))]
pub(crate) struct RevokeArgs {
    /// The CA directory.
    #[arg(long, value_name = "DIR")]
    ca: PathBuf,
    /// Serial number of the certificate, hex (colons and case do not matter).
    #[arg(long, value_name = "HEX")]
    serial: Option<String>,
    /// The certificate file to revoke, PEM or DER.
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Why it is revoked.
    #[arg(long, value_enum, default_value_t = ReasonArg::Unspecified)]
    reason: ReasonArg,
}

#[derive(Debug, Args)]
pub(crate) struct CrlArgs {
    /// The CA directory.
    #[arg(long, value_name = "DIR")]
    ca: PathBuf,
    /// Also write the CRL to FILE; missing folders are created.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Days until the next update.
    #[arg(long, value_name = "N", default_value_t = CRL_VALIDITY_DAYS, value_parser = clap::value_parser!(u32).range(1..))]
    days: u32,
    /// Replace FILE even when it is not a CRL.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// A certificate, CRL or certificate signing request, PEM or DER.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(cmd: CertsCommand) -> anyhow::Result<ExitCode> {
    let now = OffsetDateTime::now_utc();
    match cmd {
        CertsCommand::InitCa(args) => init_ca(args, now),
        CertsCommand::Issue(args) => issue(args, now),
        CertsCommand::SignCsr(args) => sign_csr(args, now),
        CertsCommand::Csr(args) => csr(&args),
        CertsCommand::Revoke(args) => revoke(args, now),
        CertsCommand::Crl(args) => crl(&args, now),
        CertsCommand::Inspect(args) => inspect_file(&args, now),
    }?;
    Ok(ExitCode::SUCCESS)
}

fn init_ca(args: InitCaArgs, now: OffsetDateTime) -> anyhow::Result<()> {
    let opts = InitOptions {
        organisation: args.org,
        scopes: args.scopes,
        key_type: args.key_type.into(),
        days: args.days,
        force: args.force,
    };
    let ca = Ca::init(&args.dir, &opts, now).map_err(advise)?;
    let dir = ca.dir();
    let config = ca.config();
    out::line(&format!("created a CA in {}", dir.display()));
    fields(&[
        ("organisation", config.organisation.clone()),
        ("scope", config.scopes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
        ("key type", config.key_type.to_string()),
        ("valid until", rfc3339(ca.not_after())),
        ("fingerprint", ca.fingerprint_sha256()),
        (
            "certificate",
            format!(
                "{} (the trust anchor: give it to every gateway and peer)",
                dir.join(pki::store::CA_CERT).display()
            ),
        ),
        ("private key", format!("{} (mode 0600; back it up offline)", dir.join(pki::store::CA_KEY).display())),
        ("CRL", dir.join(pki::store::CRL).display().to_string()),
    ]);
    Ok(())
}

/// `ID/PEMDA/1602/DINKES` becomes `ID-PEMDA-1602-DINKES`, a file name stem in the current
/// directory.
fn default_stem(identity: &Identity) -> PathBuf {
    PathBuf::from(profile::identifier(identity).replace('/', "-"))
}

/// `STEM` + `.ext`, keeping any dots already in the stem.
fn with_suffix(stem: &Path, ext: &str) -> PathBuf {
    let mut s = OsString::from(stem.as_os_str());
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn issue(args: IssueArgs, now: OffsetDateTime) -> anyhow::Result<()> {
    let identity = args.identity.parse()?;
    let (cert, key) = match (args.cert, args.key, args.out) {
        (Some(cert), Some(key), _) => (cert, key),
        (_, _, out) => {
            let stem = out.unwrap_or_else(|| default_stem(&identity));
            (with_suffix(&stem, "crt"), with_suffix(&stem, "key"))
        }
    };
    let ca = Ca::open(&args.ca).map_err(advise)?;
    let req = args.leaf.request(identity);
    let dirs = pki::files::create_parents([(key.as_path(), true), (cert.as_path(), false)]).map_err(advise)?;
    let issued = ca.issue(&req, args.key_type.into(), &cert, &key, args.force, now).map_err(advise)?;
    dirs.keep();
    print_issued(&issued, req.days.is_none());
    Ok(())
}

fn sign_csr(args: SignCsrArgs, now: OffsetDateTime) -> anyhow::Result<()> {
    let identity = args.identity.parse()?;
    let cert = args.cert.unwrap_or_else(|| with_suffix(&default_stem(&identity), "crt"));
    let ca = Ca::open(&args.ca).map_err(advise)?;
    let req = args.leaf.request(identity);
    let dirs = pki::files::create_parents([(cert.as_path(), false)]).map_err(advise)?;
    let issued = ca.sign_csr(&args.csr, &req, args.ignore_csr_identity, &cert, args.force, now).map_err(advise)?;
    dirs.keep();
    print_issued(&issued, req.days.is_none());
    Ok(())
}

/// `default_days`: the validity was not asked for, so it is the default unless the CA's own end
/// came sooner.
fn print_issued(issued: &Issued, default_days: bool) {
    out::line(&format!("issued a certificate for {}", issued.identity));
    let mut until = rfc3339(issued.validity.not_after);
    let days = (issued.validity.not_after - issued.validity.not_before).whole_days();
    if default_days && days < i64::from(splpd_certs::profile::LEAF_VALIDITY_DAYS) {
        until.push_str(
            " (cut short to the CA's own end: no certificate outlives its CA; roll the CA over, README step 9)",
        );
    }
    let mut rows = vec![
        ("identity", issued.identity.to_urn()),
        ("serial", issued.serial.clone()),
        ("fingerprint", issued.fingerprint_sha256.clone()),
        ("valid until", until),
        ("certificate", issued.cert_path.display().to_string()),
    ];
    if let Some(key) = &issued.key_path {
        rows.push(("private key", format!("{} (mode 0600; hand it over securely)", key.display())));
    }
    fields(&rows);
}

fn csr(args: &CsrArgs) -> anyhow::Result<()> {
    let identity = args.identity.parse()?;
    let dirs = pki::files::create_parents([(args.key.as_path(), true), (args.out.as_path(), false)]).map_err(advise)?;
    pki::csr::write_csr(&identity, args.key_type.into(), &args.key, &args.out, args.force).map_err(advise)?;
    dirs.keep();
    out::line(&format!("made a key and a certificate signing request for {identity}"));
    fields(&[
        ("identity", identity.to_urn()),
        ("private key", format!("{} (mode 0600; keep it here, never send it)", args.key.display())),
        ("request", format!("{} (send this to the regional CA)", args.out.display())),
    ]);
    Ok(())
}

fn revoke(args: RevokeArgs, now: OffsetDateTime) -> anyhow::Result<()> {
    let target = match (args.serial, args.cert) {
        (Some(serial), _) => RevokeTarget::Serial(serial),
        (None, Some(cert)) => RevokeTarget::Certificate(cert),
        (None, None) => anyhow::bail!("give the certificate to revoke with --serial HEX or --cert FILE"),
    };
    let ca = Ca::open(&args.ca).map_err(advise)?;
    let entry = ca.revoke(&target, args.reason.into(), now).map_err(advise)?;
    out::line(&format!("revoked the certificate of {} {}", entry.kind, entry.identity));
    fields(&[
        ("serial", entry.serial.clone()),
        ("revoked at", entry.revoked_at.map(rfc3339).unwrap_or_default()),
        ("reason", entry.reason.map(|r| r.to_string()).unwrap_or_default()),
    ]);
    let crl = ca
        .crl(CRL_VALIDITY_DAYS, now)
        .map_err(advise)
        .context("the revocation is recorded, but the CRL could not be regenerated; run `splpd certs crl` once the problem is fixed")?;
    print_crl(&crl);
    Ok(())
}

fn crl(args: &CrlArgs, now: OffsetDateTime) -> anyhow::Result<()> {
    let dirs = pki::files::create_parents(args.out.iter().map(|out| (out.as_path(), false))).map_err(advise)?;
    if let Some(out) = &args.out {
        check_crl_copy(out, args.force)?;
    }
    let ca = Ca::open(&args.ca).map_err(advise)?;
    let crl = ca.crl(args.days, now).map_err(advise)?;
    if let Some(path) = &args.out {
        pki::files::replace_atomically(path, crl.pem.as_bytes(), false).map_err(advise)?;
    }
    dirs.keep();
    print_crl(&crl);
    if let Some(path) = &args.out {
        fields(&[("copy", path.display().to_string())]);
    }
    Ok(())
}

/// A CRL copy may replace an older CRL (that is its job) but nothing else without --force.
fn check_crl_copy(path: &Path, force: bool) -> anyhow::Result<()> {
    pki::files::check_outputs([path], true).map_err(advise)?;
    if force || !path.exists() {
        return Ok(());
    }
    let existing = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    match inspect::decode(&existing) {
        Ok(inspect::Decoded { kind: Some(inspect::ObjectKind::Crl), .. }) => Ok(()),
        Ok(d) if d.kind.is_none() && inspect::parse_crl(&d.der).is_ok() => Ok(()),
        _ => anyhow::bail!(
            "{} exists and is not a CRL; nothing was written. Choose another --out, or pass --force to replace it",
            path.display()
        ),
    }
}

fn print_crl(crl: &pki::CrlInfo) {
    out::line(&format!("signed CRL number {} listing {} revoked certificate(s)", crl.number, crl.revoked.len()));
    fields(&[
        ("CRL", crl.path.display().to_string()),
        ("this update", rfc3339(crl.this_update)),
        ("next update", format!("{} (sign a new CRL before then)", rfc3339(crl.next_update))),
    ]);
}

fn inspect_file(args: &InspectArgs, now: OffsetDateTime) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let report = inspect::inspect(&bytes, now).with_context(|| format!("{}", args.file.display()))?;
    if args.json {
        out::line(&serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    match &report {
        Report::Certificate(r) => print_certificate(r),
        Report::Crl(r) => print_crl_report(r),
        Report::Csr(r) => print_csr_report(r),
    }
    Ok(())
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "(none)".to_owned() } else { items.join(", ") }
}

fn identity_field(identity: Option<&inspect::IdentityReport>, error: Option<&String>) -> String {
    match (identity, error) {
        (Some(id), _) => format!("{} {} ({})", id.kind, id.id, id.urn),
        (None, Some(e)) => format!("none: {e}"),
        (None, None) => "none".to_owned(),
    }
}

fn print_certificate(r: &CertificateReport) {
    let path_len = r.path_len.map(|n| format!(", path length {n}")).unwrap_or_default();
    fields(&[
        ("type", format!("certificate ({})", r.role)),
        (
            "identity",
            match (&r.identity, r.role) {
                (None, Role::Ca) => "none (a CA carries no identity)".to_owned(),
                _ => identity_field(r.identity.as_ref(), r.identity_error.as_ref()),
            },
        ),
        ("subject", r.subject.clone()),
        ("issuer", if r.self_issued { format!("{} (self-issued)", r.issuer) } else { r.issuer.clone() }),
        ("serial", r.serial.clone()),
        ("not before", rfc3339(r.not_before)),
        ("not after", rfc3339(r.not_after)),
        ("sha256 fingerprint", r.fingerprint_sha256.clone()),
        ("key type", r.key_type.clone()),
        ("signature", r.signature_algorithm.clone()),
        ("key usage", list(&r.key_usage)),
        ("extended key usage", list(&r.extended_key_usage)),
        ("CA", format!("{}{path_len}", yes_no(r.is_ca))),
        ("alt names", list(&r.subject_alt_names)),
    ]);
    if r.problems.is_empty() {
        out::line("profile: ok");
    } else {
        out::line(&format!("profile: {} problem(s):", r.problems.len()));
        for p in &r.problems {
            out::line(&format!("  - {p}"));
        }
    }
}

fn print_crl_report(r: &CrlReport) {
    let next = match r.next_update {
        Some(t) if r.stale => format!("{} (out of date: sign a new CRL with `splpd certs crl`)", rfc3339(t)),
        Some(t) => rfc3339(t),
        None => "(none)".to_owned(),
    };
    fields(&[
        ("type", "certificate revocation list".to_owned()),
        ("issuer", r.issuer.clone()),
        ("CRL number", r.crl_number.clone().unwrap_or_else(|| "(none)".to_owned())),
        ("this update", rfc3339(r.this_update)),
        ("next update", next),
        ("authority key id", r.authority_key_id.clone().unwrap_or_else(|| "(none)".to_owned())),
        ("signature", r.signature_algorithm.clone()),
        ("sha256 fingerprint", r.fingerprint_sha256.clone()),
        ("revoked", r.revoked.len().to_string()),
    ]);
    for entry in &r.revoked {
        let reason = entry.reason.as_deref().map(|s| format!(" ({s})")).unwrap_or_default();
        out::line(&format!("  {} revoked at {}{reason}", entry.serial, rfc3339(entry.revoked_at)));
    }
}

fn print_csr_report(r: &CsrReport) {
    fields(&[
        ("type", "certificate signing request".to_owned()),
        ("claimed identity", identity_field(r.identity.as_ref(), r.identity_error.as_ref())),
        ("subject", r.subject.clone()),
        ("key type", r.key_type.clone()),
        ("signature", r.signature_algorithm.clone()),
        ("signature valid", yes_no(r.signature_valid)),
        ("alt names", list(&r.subject_alt_names)),
        ("sha256 fingerprint", r.fingerprint_sha256.clone()),
    ]);
}

/// Prints `key: value` lines with the values aligned.
fn fields(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    for (key, value) in rows {
        out::line(&format!("{:<width$} {value}", format!("{key}:")));
    }
}

/// Turns a library error into one that tells the operator what to do on this command line.
fn advise(err: PkiError) -> anyhow::Error {
    match err {
        PkiError::Exists { path } => anyhow::anyhow!(
            "{} already exists; nothing was written. Choose another path, or pass --force to replace it",
            path.display()
        ),
        PkiError::CaExists { dir, file } => anyhow::anyhow!(
            "{file} already exists in {}; nothing was written. Pass --force to replace the CA (every certificate it issued will stop verifying)",
            dir.display()
        ),
        PkiError::CsrIdentityMismatch { claimed, requested } => {
            let err = PkiError::CsrIdentityMismatch { claimed, requested: requested.clone() };
            anyhow::anyhow!(
                "{err}. If the CSR is the right one and only the names in it are wrong, pass --ignore-csr-identity: the certificate will carry {requested}"
            )
        }
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Wrapper {
        #[command(subcommand)]
        cmd: CertsCommand,
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Wrapper::command().debug_assert();
    }

    #[test]
    fn default_file_names_follow_the_identifier() {
        let id = Identity::parse(IdKind::Subsystem, "ID/PEMDA/1602/DINKES").unwrap();
        assert_eq!(with_suffix(&default_stem(&id), "crt"), PathBuf::from("ID-PEMDA-1602-DINKES.crt"));
        assert_eq!(with_suffix(Path::new("out/gw1.v2"), "key"), PathBuf::from("out/gw1.v2.key"));
    }
}
