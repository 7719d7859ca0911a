//! The demo's calls to the admin listener, as the region's operator Budi makes them: readiness,
//! the Prometheus metrics of the exchanges just made, the dashboard, and the configuration file.

use std::path::Path;

use super::calls::{Outcome, SampleCall};
use super::out;

/// The demo's operator (an admin certificate of the region's member).
pub(super) const OPERATOR: &str = "ID/PEMDA/1602/budi";

/// The admin calls, made with the operator's `credentials` to the admin listener at `base`.
pub(super) fn calls(credentials: (&Path, &Path), base: &str, ca_file: &Path) -> Vec<SampleCall> {
    let call = |name: &'static str, path: &str, note: &str| {
        SampleCall::get(name, OPERATOR, Some(credentials), format!("{base}{path}")).explained(note, ca_file)
    };
    vec![
        call("readiness", "/readyz", "ready while the audit log takes records and maintenance mode is off"),
        call("metrics", "/metrics", "Prometheus text: exchanges by service and status, the audit log, endpoints"),
        call("dashboard", "/?lang=en", "the operators' page, in Bahasa Indonesia (the default) or English"),
        call("configuration", "/config", "the file in force; POST /config/check and PUT /config change it"),
    ]
}

/// The maintenance commands an operator would type, for the "call it yourself" list.
pub(super) fn maintenance_commands(credentials: (&Path, &Path), base: &str, ca_file: &Path) -> [String; 2] {
    let cmd = |switch: &str, issue: &str| {
        let mut call =
            SampleCall::get("maintenance", OPERATOR, Some(credentials), format!("{base}/maintenance/{switch}"));
        call.method = "POST";
        if !issue.is_empty() {
            call = call.header("X-Road-Issue", issue);
        }
        call.curl_command(ca_file, &[])
    };
    [cmd("on", "CHG-1 planned restart"), cmd("off", "")]
}

/// `splpd config apply --admin` and `undo --admin` as Budi would type them.
pub(super) fn config_commands(credentials: (&Path, &Path), base: &str, ca_file: &Path) -> [String; 2] {
    let remote = format!(
        "--admin {base} --ca {} --cert {} --key {}",
        ca_file.display(),
        credentials.0.display(),
        credentials.1.display()
    );
    [
        format!("splpd config apply {remote} --issue 'CHG-2 quota for RSUD' splpd-new.toml"),
        format!("splpd config undo {remote}"),
    ]
}

/// What an answer of the admin listener holds, in a few words.
fn gist(call: &SampleCall, body: &str) -> String {
    if call.name == "readiness" {
        return match serde_json::from_str::<serde_json::Value>(body) {
            Ok(v) if v["ready"] == true => "ready".to_owned(),
            Ok(v) => format!("not ready: {}", v["reasons"]),
            Err(_) => format!("{} bytes", body.len()),
        };
    }
    if call.name == "configuration" {
        return format!("{} lines of TOML: the configuration in force", body.lines().count());
    }
    if call.name == "dashboard" {
        let ready = if body.contains("<h2 class=\"ok\">") { "ready" } else { "not ready" };
        return format!("an HTML page ({} bytes): {ready}", body.len());
    }
    // The sum over every splpd_exchanges_total sample, and the audit log's state.
    let exchanges: u64 =
        body.lines().filter_map(|l| sample(l, "splpd_exchanges_total")).filter_map(|v| v.parse::<u64>().ok()).sum();
    let records = body.lines().find_map(|l| sample(l, "splpd_audit_records_total")).unwrap_or("?");
    format!("{exchanges} exchanges counted so far; {records} audit records written, the configuration's among them")
}

/// The value of a sample line of metric `name`, if `line` is one.
fn sample<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.strip_prefix(name).filter(|rest| rest.starts_with(['{', ' '])).and_then(|rest| rest.rsplit(' ').next())
}

/// Prints one admin call and what it got; returns whether that was what the sample expects.
pub(super) fn print_row(n: usize, call: &SampleCall, outcome: &Outcome) -> bool {
    let path = call.url.split_once("://").and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..])).unwrap_or(&call.url);
    out::line(&format!("  {n:<2} {:<15} {:<12} {} {path} (admin listener)", call.name, "budi", call.method));
    out::line(&format!("     {:<15}    ({})", "", call.note));
    let ok = outcome.matches(call);
    let got = if outcome.status.is_success() {
        format!("{} {}", outcome.status.as_u16(), gist(call, &outcome.body))
    } else {
        format!("{} {}", outcome.status.as_u16(), outcome.message())
    };
    let flag = if ok { "" } else { "   !! expected 200" };
    out::line(&format!("     {:<15} -> {got}{flag}", ""));
    ok
}
