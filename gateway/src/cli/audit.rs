//! `splpd audit`: verify an audit log directory, query its records, print and check inclusion
//! proofs, and export signed archives. The work is done by `splpd_gateway::audit::verify`; this
//! module parses arguments and prints. Every command streams the log, so memory stays bounded
//! however many records it holds.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use splpd_gateway::audit::ExchangeRecord;
use splpd_gateway::audit::checkpoint::Checkpoint;
use splpd_gateway::audit::verify::{
    self, AddressMatch, ExportOptions, Filter, Pattern, ProofError, QueryError, RecordJson, StatusMatch, VerifyReport,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::out;

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Check a whole audit log: every segment, frame and checksum, the record sequence, the
    /// Merkle tree, and every signed checkpoint against it.
    ///
    /// Each checkpoint's signature is checked against signer-<key sha256>.crt in DIR, its root
    /// against the tree recomputed at its size, and checkpoints must never go backwards. Any
    /// problem is reported with its place (file, byte offset, record, checkpoint) and the command
    /// exits with status 1. A torn tail after the last checkpoint (a crash in the middle of a
    /// write) is only a warning. An extracted export archive is checked against its signed
    /// MANIFEST.json too.
    #[command(after_help = "\
Examples:
  splpd audit verify /var/lib/splpd/audit
  splpd audit verify /var/lib/splpd/audit --ca /etc/splpd/ca.crt")]
    Verify(VerifyArgs),

    /// Print the records that match every filter given, as JSON lines or a table.
    ///
    /// JSON lines carry the proto's field names, bytes as lowercase hex and each time both as
    /// RFC 3339 (e.g. "received_at") and as nanoseconds ("received_at_unix_nanos"). --client,
    /// --service, --peer, --address, --host-user, --issue, --user-id, --error-type, --method and
    /// --path match exactly, or as a prefix when they end with '*'.
    ///
    /// The log is checked as it is read, as `splpd audit verify` checks it (with --ca, the
    /// signers too): the query exits 1, after the records, when the log does not match its signed
    /// checkpoints. Records past the last checkpoint are shown with a warning: nothing proves
    /// them yet. At --limit, the log is read on to the checkpoint that covers the last record
    /// shown. --unchecked only reads.
    #[command(after_help = "\
Examples:
  splpd audit query /var/lib/splpd/audit --client ID/PEMDA/1602/DINKES --status 4xx
  splpd audit query /var/lib/splpd/audit --service 'ID/PEMDA/1602/DISDUKCAPIL/*' \\
      --since 2025-03-01T00:00:00+07:00 --until 2025-03-02T00:00:00+07:00 --format table
  splpd audit query /var/lib/splpd/audit --error-type 'Server.*' --limit 20
  splpd audit query /var/lib/splpd/audit --issue 'SPT/2025/0417' --format table   # every exchange of one case
  splpd audit query /var/lib/splpd/audit --address 10.20.0.7 --status 401   # who tried without a certificate
  splpd audit query /var/lib/splpd/audit --method RELOAD --format table   # configuration changes, and by whom
  splpd audit query /var/lib/splpd/audit --host-user budi   # changes made on the host by budi (sudo included)")]
    Query(Box<QueryArgs>),

    /// Print a proof that an exchange's record is in the log, checkable offline.
    ///
    /// The proof is a JSON document: the record (as JSON and as its stored bytes in base64), its
    /// leaf index, the latest checkpoint (which covers it), the Merkle audit path from the record
    /// to the checkpoint's root, and the certificate that signed the checkpoint. Check it with
    /// `splpd audit check-proof`, or by hand as docs/audit-log.md describes.
    #[command(after_help = "\
Examples:
  splpd audit proof /var/lib/splpd/audit 0b7e5a2c-6f1d-4e8a-9c3b-2d5f7a9e1c40 --out proof.json")]
    Proof(ProofArgs),

    /// Print a proof that the log under a later checkpoint extends the log under an earlier one.
    ///
    /// Both ends are signed checkpoints in DIR's checkpoints.log, named by the number of records
    /// they cover (--to defaults to the latest). An auditor who kept the earlier checkpoint, from
    /// an earlier proof or export, checks with `splpd audit check-proof` that no record before it
    /// was changed or removed since.
    #[command(after_help = "\
Examples:
  splpd audit consistency /var/lib/splpd/audit --from 120000 --out consistency.json
  splpd audit consistency /var/lib/splpd/audit --from 120000 --to 180000
  splpd audit consistency /var/lib/splpd/audit --kept proof-kept-in-march.json --out consistency.json")]
    Consistency(ConsistencyArgs),

    /// Check an inclusion or consistency proof made by `splpd audit proof` or `consistency`,
    /// without the log.
    ///
    /// Checks that the record shown is the record stored, that its leaf hash leads along the audit
    /// path to the checkpoint's root, and that the checkpoint is signed by the embedded
    /// certificate, whose identity must be the checkpoint's gateway, issued by the region's CA
    /// (--ca) and valid when it signed. With --kept, a consistency proof must start from the
    /// checkpoint kept from earlier, and an inclusion proof under a checkpoint of the same size
    /// must have its root: the same size with another root means the log was rewritten. Exits 1
    /// when the proof does not hold.
    #[command(after_help = "\
Examples:
  splpd audit check-proof proof.json --ca ca.crt
  splpd audit check-proof consistency.json --ca ca.crt --kept proof-kept-in-march.json")]
    CheckProof(CheckProofArgs),

    /// Write a signed archive of the log for the national disaster-recovery centre.
    ///
    /// The log is verified first. The archive (tar) holds the whole segment files holding the
    /// records asked for, the checkpoints over them, the signer certificates, and MANIFEST.json
    /// (gateway, range, each file's SHA-256, the latest checkpoint, the Merkle frontier before the
    /// first record) with MANIFEST.sig, its signature by the gateway key. Extracted into an
    /// empty directory, it passes `splpd audit verify`. A range that no checkpoint would cover is
    /// refused, naming the ranges that would be; so is a certificate that is not the gateway's
    /// own current server certificate, and a key other than the one that signs the log now.
    #[command(after_help = "\
Examples:
  splpd audit export /var/lib/splpd/audit --to audit-2025-03.tar --key /etc/splpd/gw1.key
  splpd audit export /var/lib/splpd/audit --to part.tar --from-seq 1000000 --to-seq 1999999 \\
      --key gw1.key --cert gw1.crt
  splpd audit export /var/lib/splpd/audit --to march.tar --since 2025-03-01T00:00:00+07:00 \\
      --until 2025-04-01T00:00:00+07:00 --key gw1.key
Then: mkdir x && tar -xf audit-2025-03.tar -C x && splpd audit verify x")]
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ConsistencyArgs {
    /// The audit log directory.
    dir: PathBuf,
    /// The record count of the earlier checkpoint (default: the kept checkpoint's, with --kept).
    #[arg(long, value_name = "RECORDS", required_unless_present = "kept")]
    from: Option<u64>,
    /// The checkpoint kept from earlier (an inclusion or consistency proof, an export's
    /// MANIFEST.json, or the checkpoint alone): the proof starts from it, and is refused when the
    /// log's checkpoint of that size is not that one, or when the log no longer holds or reaches
    /// a checkpoint of that size (evidence that it was cut short or rewritten).
    #[arg(long, value_name = "FILE")]
    kept: Option<PathBuf>,
    /// The record count of the later checkpoint; the latest checkpoint when not given.
    #[arg(long, value_name = "RECORDS")]
    to: Option<u64>,
    /// Write the proof to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The audit log directory.
    dir: PathBuf,
    /// Also check that every signer certificate was issued by this CA (PEM or DER) and was valid
    /// when it signed.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
enum Format {
    /// One JSON object per line.
    #[default]
    Jsonl,
    /// An aligned table: time, exchange id, client, address, service, method, status, error type,
    /// issue, path.
    Table,
}

#[derive(Debug, Args)]
pub(crate) struct QueryArgs {
    /// The audit log directory.
    dir: PathBuf,
    /// The client subsystem (a trailing '*' matches a prefix).
    #[arg(long, value_name = "ID")]
    client: Option<String>,
    /// The service (a trailing '*' matches a prefix).
    #[arg(long, value_name = "ID")]
    service: Option<String>,
    /// The peer gateway the exchange was routed to or came from (a trailing '*' matches a
    /// prefix: 'ID/PEMDA/1601/*' for every gateway of that member); calls refused here before
    /// they were sent are among them, with no forwarded_at.
    #[arg(long, value_name = "ID")]
    peer: Option<String>,
    /// The IP address the client connected from: one (10.20.0.7), a network (10.20.0.0/16,
    /// 2001:db8:1:2::/64, as the gateway's warnings name them), or a beginning with '*' (10.20.*).
    #[arg(long, value_name = "IP|NETWORK")]
    address: Option<AddressMatch>,
    /// The host account that changed the configuration on the gateway's host (`splpd config
    /// apply --config`): a name or uid of the account logged in or run as ('budi', 'root',
    /// 'uid 1000'), or the record's whole text; a trailing '*' matches a prefix. Changes made
    /// through the admin listener name their operator in --client instead.
    #[arg(long, value_name = "ACCOUNT")]
    host_user: Option<String>,
    /// The case or document number the client sent in X-Road-Issue (a trailing '*' matches a
    /// prefix: 'SPT/2025/*').
    #[arg(long, value_name = "ISSUE")]
    issue: Option<String>,
    /// The end user the client called for, as sent in X-Road-UserId (a trailing '*' matches a
    /// prefix).
    #[arg(long, value_name = "USER")]
    user_id: Option<String>,
    /// The HTTP status: a code (404) or a class (4xx, 5xx). A gRPC call, whose HTTP status is 200
    /// whatever happened, is matched by the status the gateway's own error has over REST (a
    /// message too large 413, over quota 429), else by the one its gRPC status stands for
    /// (PERMISSION_DENIED 403, UNAVAILABLE 503, ...).
    #[arg(long, value_name = "N|4xx|5xx", value_parser = parse_status)]
    status: Option<StatusMatch>,
    /// The X-Road error type (a trailing '*' matches a prefix, e.g. 'Server.*').
    #[arg(long, value_name = "T")]
    error_type: Option<String>,
    /// The request's method; RELOAD and START select the configurations put in force, and who
    /// put them there (a trailing '*' matches a prefix).
    #[arg(long, value_name = "M")]
    method: Option<String>,
    /// The request's path (a trailing '*' matches a prefix, e.g. '/maintenance/*' for maintenance
    /// mode turned on and off).
    #[arg(long, value_name = "P")]
    path: Option<String>,
    /// Received at or after this time (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    since: Option<i64>,
    /// Received before this time (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    until: Option<i64>,
    /// The exchange id.
    #[arg(long, value_name = "UUID")]
    exchange_id: Option<String>,
    /// How to print the records.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    /// The time zone of the table's times: UTC (the default), WIB, WITA, WIT, or an offset such
    /// as +07:00. JSON lines keep UTC.
    #[arg(long, value_name = "ZONE", default_value = "UTC", value_parser = parse_zone)]
    tz: Zone,
    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Check the checkpoints' signer certificates against this CA (the region's ca.crt) as the
    /// log is read, as `splpd audit verify --ca` does.
    #[arg(long, value_name = "FILE", conflicts_with = "unchecked")]
    ca: Option<PathBuf>,
    /// Show the records as stored, without checking the log against its signed checkpoints as it
    /// is read: a record changed and given a fresh checksum then shows like any other.
    #[arg(long)]
    unchecked: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ProofArgs {
    /// The audit log directory.
    dir: PathBuf,
    /// The exchange id (X-Road-Id) of the record to prove.
    exchange_id: String,
    /// When several exchanges carry the id (callers choose their ids): the one of this client.
    #[arg(long, value_name = "CLIENT")]
    client: Option<String>,
    /// When several exchanges carry the id: the one at this record number.
    #[arg(long, value_name = "SEQ")]
    record: Option<u64>,
    /// Write the proof to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct CheckProofArgs {
    /// The proof document.
    file: PathBuf,
    /// The region's CA certificate (PEM or DER): the signer certificate must have been issued by
    /// it and valid when the checkpoint was signed. Needed unless --no-ca: without it, anyone
    /// who makes a key and a certificate naming the gateway can sign a proof that checks.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Check without a CA: the proof then shows only that nothing changed since it was signed,
    /// not who signed it, and the output says so.
    #[arg(long, conflicts_with = "ca")]
    no_ca: bool,
    /// For an inclusion proof: a file that must be the request body the record's digest was
    /// taken of (the bytes the client sent; for gRPC the framed messages as sent, each with its
    /// 5-byte prefix).
    #[arg(long, value_name = "FILE")]
    request_body: Option<PathBuf>,
    /// For an inclusion proof: a file that must be the response body the record's digest was
    /// taken of (the bytes sent to the client).
    #[arg(long, value_name = "FILE")]
    response_body: Option<PathBuf>,
    /// The checkpoint kept from earlier (an inclusion or consistency proof, an export's
    /// MANIFEST.json, or the checkpoint alone). A consistency proof must start from it; an
    /// inclusion proof under a checkpoint of the same size must have its root, or the gateway
    /// signed two different logs of that size.
    #[arg(long, value_name = "FILE")]
    kept: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The audit log directory.
    dir: PathBuf,
    /// The archive to write (a tar file; must not exist).
    #[arg(long, value_name = "FILE")]
    to: PathBuf,
    /// The first record to export (default: the first).
    #[arg(long, value_name = "N")]
    from_seq: Option<u64>,
    /// The last record to export (default: the last).
    #[arg(long, value_name = "M")]
    to_seq: Option<u64>,
    /// Export the records received at or after this time (RFC 3339): from the first such record
    /// in the log on.
    #[arg(long, value_name = "RFC3339", value_parser = parse_time, conflicts_with = "from_seq")]
    since: Option<i64>,
    /// Export the records received before this time (RFC 3339): up to the last such record.
    #[arg(long, value_name = "RFC3339", value_parser = parse_time, conflicts_with = "to_seq")]
    until: Option<i64>,
    /// The gateway's private key (PEM), to sign the manifest.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The key's certificate (default: the signer certificate kept in the log directory).
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
}

fn parse_status(s: &str) -> Result<StatusMatch, String> {
    s.parse()
}

fn parse_time(s: &str) -> Result<i64, String> {
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| {
        // A time without its zone is the likeliest slip: say that, not the parser's words.
        let zoned =
            s.ends_with(['Z', 'z']) || s.get(s.len().saturating_sub(6)..).is_some_and(|t| t.starts_with(['+', '-']));
        if s.len() >= 19 && !zoned {
            format!(
                "{s:?} has no time zone: add it, e.g. {s}+07:00 for WIB, +08:00 for WITA, +09:00 for WIT, or Z for UTC"
            )
        } else {
            format!("{s:?} is not an RFC 3339 time such as 2025-03-01T08:00:00+07:00: {e}")
        }
    })?;
    i64::try_from(t.unix_timestamp_nanos()).map_err(|_| format!("{s:?} is out of range"))
}

/// A time zone for the table: its name as shown in the head, and its offset.
#[derive(Debug, Clone)]
struct Zone {
    name: String,
    offset: time::UtcOffset,
}

/// Indonesia's three zones by name, UTC, or an offset.
fn parse_zone(s: &str) -> Result<Zone, String> {
    let hours = match s.to_ascii_uppercase().as_str() {
        "UTC" | "Z" => Some(0),
        "WIB" => Some(7),
        "WITA" => Some(8),
        "WIT" => Some(9),
        _ => None,
    };
    let offset = match hours {
        Some(h) => time::UtcOffset::from_hms(h, 0, 0).map_err(|e| e.to_string())?,
        None => time::UtcOffset::parse(s, time::macros::format_description!("[offset_hour sign:mandatory]:[offset_minute]"))
            .map_err(|_| format!("{s:?} is not a time zone: give UTC, WIB (+07:00), WITA (+08:00), WIT (+09:00) or an offset such as +07:00"))?,
    };
    let name = if hours.is_some() { s.to_ascii_uppercase() } else { s.to_owned() };
    Ok(Zone { name: if name == "Z" { "UTC".to_owned() } else { name }, offset })
}

pub(crate) fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Verify(args) => verify_cmd(&args),
        AuditCommand::Query(args) => query_cmd(*args),
        AuditCommand::Proof(args) => proof_cmd(&args),
        AuditCommand::Consistency(args) => consistency_cmd(&args),
        AuditCommand::CheckProof(args) => check_proof_cmd(&args),
        AuditCommand::Export(args) => export_cmd(args),
    }
}

fn read_ca(path: Option<&Path>) -> anyhow::Result<Option<Vec<u8>>> {
    let Some(path) = path else { return Ok(None) };
    let ders =
        splpd_certs::load::read_certificates(path).with_context(|| format!("reading the CA {}", path.display()))?;
    let der = ders.into_iter().next().with_context(|| format!("{} holds no certificate", path.display()))?;
    Ok(Some(der.to_vec()))
}

fn verify_cmd(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let ca = read_ca(args.ca.as_deref())?;
    let report = verify::verify_log(&args.dir, ca.as_deref(), &mut |_, _, _, _| verify::Reading::On)?;
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    for problem in &report.problems {
        eprintln!("error: {problem}");
    }
    if report.problems_omitted > 0 {
        eprintln!("error: … and {} more problem(s)", report.problems_omitted);
    }
    let dir = args.dir.display();
    if report.is_ok() {
        out::line(&format!("{dir}: ok: {}", summary_of(&report)));
        if ca.is_none() && (report.checkpoints > 0 || report.manifest.is_some()) {
            out::line(&not_checked_against_ca("the signer certificates were", "they were"));
        }
    } else {
        let problems = report.problems.len() as u64 + report.problems_omitted;
        out::line(&format!("{dir}: FAILED: {problems} problem(s); {}", summary_of(&report)));
    }
    out::line(&format!(
        "read {} records ({:.1} MB) in {:.3} s: {:.0} records/s",
        report.records_read,
        report.bytes as f64 / 1e6,
        report.elapsed.as_secs_f64(),
        report.records_per_second()
    ));
    Ok(if report.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// What a check without `--ca` leaves open: anyone can make a key and a certificate naming the
/// gateway, and sign with them.
fn not_checked_against_ca(what_was: &str, they_were: &str) -> String {
    format!(
        "{what_was} not checked against any CA: the signatures show that nothing was changed since signing, not who \
         signed; give --ca with the region's CA certificate (ca.crt) to check {they_were} the gateway's"
    )
}

fn summary_of(report: &VerifyReport) -> String {
    let mut text = match (report.first_seq, &report.manifest) {
        (0, _) => format!("{} records", report.tree_size),
        (first, Some(_)) => format!("records {first}..{} (an archive starting at record {first})", report.tree_size),
        (first, None) => {
            format!("records {first}..{} (those before {first} removed by retention)", report.tree_size)
        }
    };
    // Checkpoints of the records before the first one here cannot be compared with them, only
    // checked by their signatures.
    let uncompared = report.checkpoints.saturating_sub(report.checkpoints_matched);
    let compared = if report.first_seq > 0 && report.problems.is_empty() && uncompared > 0 {
        format!(
            "{} checkpoint(s) match, and {uncompared} checkpoint(s) of the removed records were checked by their \
             signatures only",
            report.checkpoints_matched
        )
    } else {
        format!("{} of {} checkpoint(s) match", report.checkpoints_matched, report.checkpoints)
    };
    text.push_str(&format!(" in {} segment(s), root {}; {compared}", report.segments, hex::encode(report.root)));
    if let Some(from) = report.unproven_from {
        text.push_str(&format!(
            "; records {from}..{} ({} of them) are not covered by a signed checkpoint yet, so nothing proves them",
            report.tree_size,
            report.tree_size - from
        ));
    }
    if let Some(latest) = &report.latest {
        text.push_str(&format!("; latest: {}", verify::describe_checkpoint(&latest.checkpoint)));
    }
    if let Some(manifest) = &report.manifest {
        text.push_str(&format!("; manifest of {}, naming signer key {}", manifest.gateway, manifest.signer.key_sha256));
    }
    text
}

fn query_cmd(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let filter = Filter {
        client: args.client.map(pattern),
        service: args.service.map(pattern),
        status: args.status,
        error_type: args.error_type.map(pattern),
        method: args.method.map(pattern),
        path: args.path.map(pattern),
        peer: args.peer.map(pattern),
        address: args.address,
        host_user: args.host_user.map(pattern),
        issue: args.issue.map(pattern),
        user_id: args.user_id.map(pattern),
        since_unix_nanos: args.since,
        until_unix_nanos: args.until,
        exchange_id: args.exchange_id,
    };
    anyhow::ensure!(args.dir.is_dir(), "{}: no such directory", args.dir.display());
    if let (Some(since), Some(until)) = (args.since, args.until) {
        anyhow::ensure!(
            since < until,
            "the time range is empty: --since {} is not before --until {}; give the earlier time with --since",
            verify::rfc3339_nanos(since).unwrap_or_default(),
            verify::rfc3339_nanos(until).unwrap_or_default()
        );
    }
    let mut table = Table::in_zone(args.tz.clone());
    let ca = read_ca(args.ca.as_deref())?;
    let check = (!args.unchecked).then_some(ca.as_deref());
    let result = verify::query(&args.dir, &filter, args.limit, check, &mut |seq, record| {
        match args.format {
            Format::Jsonl => {
                // The record's number comes first: `proof --record` and verify's messages use it.
                let line = serde_json::to_string(&QueryLine { record: seq, fields: RecordJson(record) })
                    .map_err(|e| e.to_string())?;
                out::line(&line);
            }
            Format::Table => table.push(record),
        }
        Ok(())
    });
    // Rows read before damage are printed; a folder that holds no log gets no table at all.
    if matches!(args.format, Format::Table) && !matches!(result, Err(QueryError::NotALog(_))) {
        table.flush();
    }
    match result {
        Ok(summary) => {
            if let Some(torn) = &summary.torn_tail {
                eprintln!("warning: {torn}: the log ends with a torn tail (a write cut short or still in progress)");
            }
            // On standard error for JSON lines too: no output at all would not tell "nothing
            // matched" from "nothing ran".
            let limited = if summary.limited { " (stopped at --limit)" } else { "" };
            eprintln!("{} of {} record(s) read match{limited}", summary.matched, summary.scanned);
            if summary.matched == 0 {
                let named = [("--client", &filter.client), ("--service", &filter.service), ("--peer", &filter.peer)];
                for (flag, pattern) in named {
                    if let Some(Pattern::Exact(given)) = pattern
                        && !given.contains('/')
                    {
                        eprintln!(
                            "note: {flag} {given} names no whole identifier: records carry them whole, such as \
                             ID/PEMDA/1602/RSUD; end it with '*' to match a beginning"
                        );
                    }
                }
            }
            let Some(report) = &summary.checked else {
                // A log that retention trimmed: the query did not see the removed records.
                if let Some(removed) = verify::removed_note(&args.dir).strip_prefix("; ") {
                    eprintln!("note: {removed}");
                }
                eprintln!(
                    "note: not checked (--unchecked): the records are shown as stored; `splpd audit verify {}` checks \
                     them against the log's signed checkpoints",
                    args.dir.display()
                );
                return Ok(ExitCode::SUCCESS);
            };
            for note in &report.notes {
                eprintln!("note: {note}");
            }
            for warning in &report.warnings {
                eprintln!("warning: {warning}");
            }
            if report.is_ok() {
                eprintln!("checked as read: {}", summary_of(report));
                if ca.is_none() && (report.checkpoints > 0 || report.manifest.is_some()) {
                    eprintln!("{}", not_checked_against_ca("the signers were", "they were"));
                }
                return Ok(ExitCode::SUCCESS);
            }
            for problem in &report.problems {
                eprintln!("error: {problem}");
            }
            eprintln!(
                "error: the log does not check out against its signed checkpoints, so the records shown may not be as \
                 the gateway wrote them; `splpd audit verify {}` says the same, and `--unchecked` shows the records \
                 without checking",
                args.dir.display()
            );
            Ok(ExitCode::FAILURE)
        }
        Err(e @ (QueryError::Segments(_) | QueryError::Decode { .. })) => {
            eprintln!("error: {e}");
            eprintln!("error: the query stopped there; run `splpd audit verify` on the log");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

/// One line of `query`'s JSON: the record's number in the log, then the record.
#[derive(serde::Serialize)]
struct QueryLine<'a> {
    record: u64,
    #[serde(flatten)]
    fields: RecordJson<'a>,
}

fn pattern(text: String) -> Pattern {
    match text.strip_suffix('*') {
        Some(prefix) => Pattern::Prefix(prefix.to_owned()),
        None => Pattern::Exact(text),
    }
}

/// The table output: the first rows are held to size the columns, the rest stream with those
/// widths (a longer value widens only its own row).
#[derive(Debug, Default)]
struct Table {
    held: Vec<[String; COLUMNS]>,
    widths: Option<[usize; COLUMNS]>,
    zone: Option<Zone>,
}

/// The path comes last: it is the longest, and left unpadded it does not push the columns apart.
const TABLE_HEAD: [&str; COLUMNS] =
    ["TIME", "EXCHANGE ID", "CLIENT", "ADDRESS", "SERVICE", "METHOD", "STATUS", "ERROR TYPE", "ISSUE", "PATH"];
const COLUMNS: usize = 10;
const TABLE_SIZING_ROWS: usize = 200;

impl Table {
    fn in_zone(zone: Zone) -> Self {
        Self { zone: Some(zone), ..Self::default() }
    }

    /// The head, with the zone its times are in.
    fn head(&self) -> [String; COLUMNS] {
        let zone = self.zone.as_ref().map_or("UTC", |z| z.name.as_str());
        TABLE_HEAD.map(|h| if h == "TIME" { format!("TIME ({zone})") } else { h.to_owned() })
    }

    fn push(&mut self, r: &ExchangeRecord) {
        let offset = self.zone.as_ref().map_or(time::UtcOffset::UTC, |z| z.offset);
        let time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(r.received_at_unix_nanos))
            .ok()
            .filter(|_| r.received_at_unix_nanos != 0)
            .map(|t| t.to_offset(offset))
            .and_then(|t| t.format(table_time_format(offset.is_utc())).ok())
            .unwrap_or_else(|| "-".to_owned());
        let dash = |s: &str| if s.is_empty() { "-".to_owned() } else { s.to_owned() };
        let row = [
            time,
            dash(&r.exchange_id),
            // A change made on the gateway's host has no client, but a host account.
            if r.client.is_empty() && !r.host_user.is_empty() {
                format!("host: {}", r.host_user)
            } else {
                dash(&r.client)
            },
            dash(&r.client_address),
            dash(&r.service),
            dash(&r.method),
            status_text(r),
            dash(&r.error_type),
            dash(&r.issue),
            dash(&r.path),
        ];
        match &self.widths {
            Some(widths) => print_row(&row, widths),
            None => {
                self.held.push(row);
                if self.held.len() >= TABLE_SIZING_ROWS {
                    self.flush();
                }
            }
        }
    }

    fn flush(&mut self) {
        if self.widths.is_some() {
            return;
        }
        let head = self.head();
        let mut widths = head.clone().map(|h| h.chars().count());
        for row in &self.held {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        print_row(&head, &widths);
        for row in self.held.drain(..) {
            print_row(&row, &widths);
        }
        self.widths = Some(widths);
    }
}

/// Milliseconds, and the offset (`Z` for UTC), as RFC 3339 has them.
fn table_time_format(utc: bool) -> &'static [time::format_description::BorrowedFormatItem<'static>] {
    if utc {
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z")
    } else {
        time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3][offset_hour sign:mandatory]:[offset_minute]"
        )
    }
}

fn print_row(row: &[String; COLUMNS], widths: &[usize; COLUMNS]) {
    let mut line = String::new();
    for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
        if i + 1 == row.len() {
            line.push_str(cell);
        } else {
            // Status is a number: right-aligned.
            let padded =
                if TABLE_HEAD[i] == "STATUS" { format!("{cell:>width$}  ") } else { format!("{cell:<width$}  ") };
            line.push_str(&padded);
        }
    }
    out::line(line.trim_end());
}

fn proof_cmd(args: &ProofArgs) -> anyhow::Result<ExitCode> {
    let pick = verify::Pick { client: args.client.as_deref(), record: args.record };
    match verify::make_proof(&args.dir, &args.exchange_id, pick) {
        Ok((text, index, cp)) => {
            match &args.out {
                Some(path) => {
                    std::fs::write(path, format!("{text}\n")).with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "wrote the proof that exchange {} is record {index}, under the checkpoint of {} records, to {}",
                        args.exchange_id,
                        cp.tree_size,
                        path.display()
                    );
                }
                None => out::line(&text),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(
            e @ (ProofError::NotFound { .. }
            | ProofError::NotCovered { .. }
            | ProofError::Ambiguous { .. }
            | ProofError::Log(_)),
        ) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

/// The checkpoint an auditor kept, from the file given with `--kept`.
fn read_kept(path: &Path) -> anyhow::Result<Checkpoint> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    verify::read_kept_checkpoint(&text).map_err(|e| anyhow::anyhow!("{} (given with --kept): {e}", path.display()))
}

fn consistency_cmd(args: &ConsistencyArgs) -> anyhow::Result<ExitCode> {
    let kept = args.kept.as_deref().map(read_kept).transpose()?;
    if let (Some(from), Some(kept)) = (args.from, &kept)
        && from != kept.tree_size
    {
        anyhow::bail!(
            "--from {from} is not the size of the kept checkpoint ({} records): leave --from out with --kept",
            kept.tree_size
        );
    }
    // `--from` is `required_unless_present = "kept"`: clap refuses a command line with neither.
    let Some(from) = args.from.or(kept.as_ref().map(|k| k.tree_size)) else {
        unreachable!("clap requires --from unless --kept is given")
    };
    // With --kept, the log's checkpoint of the kept size must be the kept one (the same check as
    // check-proof's), and a log whose checkpoints no longer reach it is told as cut short.
    let made = match &kept {
        Some(kept) => verify::make_kept_consistency_proof(&args.dir, kept, args.to),
        None => verify::make_consistency_proof(&args.dir, from, args.to),
    };
    match made {
        Ok(text) => write_consistency(args, from, &text),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn write_consistency(args: &ConsistencyArgs, from: u64, text: &str) -> anyhow::Result<ExitCode> {
    match &args.out {
        Some(path) => {
            std::fs::write(path, format!("{text}\n")).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote the consistency proof from {from} records to {}", path.display());
        }
        None => out::line(text),
    }
    Ok(ExitCode::SUCCESS)
}

/// The `format` a proof document names, to pick its checker.
fn proof_format(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Format {
        format: String,
    }
    serde_json::from_str::<Format>(text).ok().map(|f| f.format)
}

fn check_proof_cmd(args: &CheckProofArgs) -> anyhow::Result<ExitCode> {
    if args.ca.is_none() && !args.no_ca {
        anyhow::bail!(
            "give --ca with the region's CA certificate (ca.crt): without it the signature shows that nothing changed \
             since signing, not who signed, since anyone can make a key and a certificate naming the gateway; \
             --no-ca checks without it"
        );
    }
    let ca = read_ca(args.ca.as_deref())?;
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let kept = args.kept.as_deref().map(read_kept).transpose()?;
    if proof_format(&text).as_deref() == Some(verify::CONSISTENCY_PROOF_FORMAT) {
        anyhow::ensure!(
            args.request_body.is_none() && args.response_body.is_none(),
            "--request-body and --response-body go with an inclusion proof (`splpd audit proof`), which holds a \
             record; a consistency proof holds none"
        );
        return check_consistency_cmd(args, &text, ca.as_deref(), kept.as_ref());
    }
    match verify::check_proof(&text, ca.as_deref()) {
        Ok(checked) => {
            let cp = &checked.checkpoint;
            if let Some(kept) = &kept {
                let kept_file = args.kept.as_deref().unwrap_or(Path::new("")).display();
                if kept.tree_size != cp.tree_size {
                    anyhow::bail!(
                        "the proof's checkpoint covers {} records and the kept one {}: only a consistency proof \
                         joins the two; make one with `splpd audit consistency DIR --kept {kept_file}` and check that",
                        cp.tree_size,
                        kept.tree_size
                    );
                }
                if kept.root_hash != cp.root_hash {
                    eprintln!(
                        "error: {}: the proof's checkpoint and the kept one ({kept_file}) both cover {} records, but \
                         their roots differ ({} against {}): two different logs of that size were signed, so the \
                         log was rewritten, unless the kept checkpoint was not the gateway's",
                        args.file.display(),
                        cp.tree_size,
                        hex::encode(&cp.root_hash),
                        hex::encode(&kept.root_hash)
                    );
                    return Ok(ExitCode::FAILURE);
                }
            }
            // The documents first: a proof that holds of another body is no "ok".
            let r = &checked.record;
            let bodies = [
                ("request", &args.request_body, &r.request_body_sha256, r.request_body_bytes),
                ("response", &args.response_body, &r.response_body_sha256, r.response_body_bytes),
            ];
            let mut matched = Vec::new();
            let mut mismatched = Vec::new();
            for (which, file, recorded, bytes) in bodies {
                let Some(file) = file else { continue };
                match body_verdict(which, file, recorded, bytes)? {
                    Ok(line) => matched.push(line),
                    Err(line) => mismatched.push(line),
                }
            }
            if !mismatched.is_empty() {
                for line in &mismatched {
                    eprintln!("error: {line}");
                }
                eprintln!(
                    "error: {}: the proof holds for exchange {} (record {}), but not of the document given",
                    args.file.display(),
                    checked.exchange_id,
                    checked.leaf_index
                );
                return Ok(ExitCode::FAILURE);
            }
            out::line(&format!(
                "{}: ok: exchange {} is record {} of gateway {}'s audit log, under the checkpoint of {} records \
                 (root {}) signed at {}",
                args.file.display(),
                checked.exchange_id,
                checked.leaf_index,
                cp.gateway,
                cp.tree_size,
                hex::encode(&cp.root_hash),
                verify::rfc3339_nanos(cp.time_unix_nanos).unwrap_or_default()
            ));
            out::line(&format!(
                "signer certificate: {} (SHA-256 {}), key {}",
                checked.signer_identity.as_deref().unwrap_or("no splpd identity"),
                checked.signer_fingerprint,
                hex::encode(&cp.key_sha256)
            ));
            out::line(&format!("the record: {}", describe_record(&checked.record)));
            for line in matched {
                out::line(&line);
            }
            if ca.is_none() {
                out::line(&not_checked_against_ca("the signer certificate was", "it was"));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {}: the proof does not hold: {e}", args.file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// A record's status as the table and `check-proof` show it: a gRPC answer is HTTP 200 whatever
/// happened, so its gRPC status says what; a strict exchange's request record has no status yet,
/// said so rather than shown as 0.
fn status_text(r: &ExchangeRecord) -> String {
    match r.grpc_status {
        _ if r.kind() == splpd_proto::v1::RecordKind::Request => "request".to_owned(),
        Some(grpc) => format!("{} gRPC {grpc}", r.status),
        None => r.status.to_string(),
    }
}

/// A record in one line: when, who asked what of whom, and how it ended.
fn describe_record(r: &ExchangeRecord) -> String {
    let at = verify::rfc3339_nanos(r.received_at_unix_nanos).unwrap_or_else(|| "-".to_owned());
    let client = if r.client.is_empty() { "an unidentified client".to_owned() } else { r.client.clone() };
    let service = if r.service.is_empty() { "no known service".to_owned() } else { r.service.clone() };
    let status = status_text(r);
    let error = if r.error_type.is_empty() { String::new() } else { format!(", {}", r.error_type) };
    let sent = if r.forwarded_at_unix_nanos == 0 { "not sent on to the service" } else { "sent on to the service" };
    format!("received {at} from {client} for {service}: {} {}; answered {status}{error}; {sent}", r.method, r.path)
}

/// Whether `file` is the body whose digest the record holds (`recorded`, of `bytes` bytes): the
/// line to say either way, `Err` when it is not. Hashed as the gateway hashes bodies.
fn body_verdict(which: &str, file: &Path, recorded: &[u8], bytes: u64) -> anyhow::Result<Result<String, String>> {
    use std::io::Read as _;
    let mut reader = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut hasher = splpd_gateway::audit::BodyHasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).with_context(|| format!("reading {}", file.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let digest = hasher.finish();
    Ok(if recorded.is_empty() {
        let how = if which == "request" { "received: the body was not read whole" } else { "sent" };
        Err(format!(
            "the record holds no {which} body digest ({bytes} bytes {how}), so no file can be shown to be its {which} body"
        ))
    } else if recorded == digest.sha256.as_slice() {
        Ok(format!(
            "the {which} body: {} is the one recorded ({} bytes, SHA-256 {})",
            file.display(),
            digest.bytes,
            hex::encode(digest.sha256)
        ))
    } else {
        Err(format!(
            "{} is not the {which} body recorded: it has {} bytes with SHA-256 {}, the record {bytes} bytes with \
             SHA-256 {}",
            file.display(),
            digest.bytes,
            hex::encode(digest.sha256),
            hex::encode(recorded)
        ))
    })
}

fn check_consistency_cmd(
    args: &CheckProofArgs,
    text: &str,
    ca: Option<&[u8]>,
    kept: Option<&Checkpoint>,
) -> anyhow::Result<ExitCode> {
    match verify::check_consistency_proof(text, ca, kept) {
        Ok(checked) => {
            let (old, new) = (&checked.old, &checked.new);
            let at = |nanos| verify::rfc3339_nanos(nanos).unwrap_or_default();
            out::line(&format!(
                "{}: ok: gateway {}'s audit log of {} records (root {}, signed at {}) extends its log of {} records \
                 (root {}, signed at {}) unchanged",
                args.file.display(),
                new.gateway,
                new.tree_size,
                hex::encode(&new.root_hash),
                at(new.time_unix_nanos),
                old.tree_size,
                hex::encode(&old.root_hash),
                at(old.time_unix_nanos)
            ));
            if let Some(path) = &args.kept {
                // Offline, this shows no more than that the log under the new checkpoint extends
                // the kept one: whether it was rewritten after the new one is for the next check,
                // from the new one.
                out::line(&format!(
                    "it starts from the checkpoint kept in {}: the log under the new checkpoint extends the kept one, \
                     so the {} records the kept one covers are unchanged in it; keep the new checkpoint (this proof) \
                     to check the next proof against",
                    path.display(),
                    old.tree_size
                ));
            } else {
                // The old end came from the log itself: a log rewritten and signed again with the
                // gateway's key has a matching old checkpoint of its own.
                out::line(&format!(
                    "its old checkpoint was taken from the log, not from one you kept: a log rewritten and signed again \
                     with the gateway's key would pass too; give --kept with the checkpoint you kept of {} records (a \
                     proof or archive of then) to show that the log was not rewritten since",
                    old.tree_size
                ));
            }
            if ca.is_none() {
                out::line(&not_checked_against_ca("the signer certificates were", "they were"));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {}: the proof does not hold: {e}", args.file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The records received in `[since, until)` as a range of record numbers: from the first to the
/// last such record. Records are written as exchanges end, so one received inside the window
/// may sit after one received outside it; the range holds them all (and those between).
fn seqs_received_between(dir: &Path, since: Option<i64>, until: Option<i64>) -> anyhow::Result<(u64, u64)> {
    let filter = Filter { since_unix_nanos: since, until_unix_nanos: until, ..Filter::default() };
    let mut range: Option<(u64, u64)> = None;
    let read = verify::query(dir, &filter, None, None, &mut |seq, _| {
        range = Some(range.map_or((seq, seq), |(first, _)| (first, seq)));
        Ok(())
    });
    read.map_err(|e| anyhow::anyhow!("{e}; the log must be readable to find the records of a time range"))?;
    let at = |nanos: Option<i64>| nanos.and_then(verify::rfc3339_nanos).unwrap_or_else(|| "-".to_owned());
    range.with_context(|| {
        format!(
            "no record in {} was received between {} and {}: `splpd audit query {0} --since … --format table` shows \
             what is there",
            dir.display(),
            at(since),
            at(until)
        )
    })
}

fn export_cmd(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let (mut from_seq, mut to_seq) = (args.from_seq, args.to_seq);
    if args.since.is_some() || args.until.is_some() {
        if let (Some(since), Some(until)) = (args.since, args.until) {
            anyhow::ensure!(since < until, "the time range is empty: give the earlier time with --since");
        }
        let (first, last) = seqs_received_between(&args.dir, args.since, args.until)?;
        if args.since.is_some() {
            from_seq = Some(first);
        }
        if args.until.is_some() {
            to_seq = Some(last);
        }
    }
    let options = ExportOptions { dir: args.dir, to: args.to, from_seq, to_seq, key: args.key, cert: args.cert };
    match verify::export(&options) {
        Ok(summary) => {
            for warning in &summary.warnings {
                eprintln!("warning: {warning}");
            }
            let m = &summary.manifest;
            out::line(&format!(
                "wrote {} ({} bytes): records {}..={} of {} (asked for {}..={}) in {} segment(s), {} checkpoint(s), \
                 manifest signed by key {}",
                options.to.display(),
                summary.bytes,
                m.records.first_seq,
                m.records.last_seq,
                m.gateway,
                m.requested.first_seq,
                m.requested.last_seq,
                summary.segments,
                summary.checkpoints,
                m.signer.key_sha256
            ));
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ verify::ExportError::Damaged(_)) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}
