//! Selecting records of an audit log: the filters of `splpd audit query`, applied while the
//! records stream past.

use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

use prost::Message as _;

use super::{Reading, VerifyError, VerifyReport, ensure_log, verify_log};
use crate::audit::ExchangeRecord;
use crate::audit::segment::{SegmentError, SegmentReader};

/// A text to match: exactly, or as a prefix when written with a trailing `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// The whole value.
    Exact(String),
    /// The value's beginning.
    Prefix(String),
}

/// The accounts a `host_user` names, each by name and by uid: `budi (uid 1000) as root (uid 0)`
/// gives `budi`, `uid 1000`, `root` and `uid 0` (see `config::history::host_account`).
fn host_accounts(host_user: &str) -> impl Iterator<Item = &str> {
    host_user
        .split(" as ")
        .flat_map(|account| match account.split_once(" (") {
            Some((name, uid)) => [Some(name), uid.strip_suffix(')')],
            None => [Some(account), None],
        })
        .flatten()
}

/// Which client addresses a query selects (`client_address`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressMatch {
    /// One address: 10.20.0.7, 2001:db8::7.
    One(IpAddr),
    /// A network, by its address and prefix length: 10.20.0.0/16, 2001:db8:1:2::/64.
    Network(IpAddr, u8),
    /// The address's text beginning so: `10.20.*`.
    Prefix(String),
}

impl std::str::FromStr for AddressMatch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?} is not an address: give an IP address (10.20.0.7, 2001:db8::7), a network (10.20.0.0/16, \
                 2001:db8:1:2::/64), or the beginning of one followed by '*' (10.20.*)"
            )
        };
        if let Some(prefix) = s.strip_suffix('*') {
            let address_text = |c: char| c.is_ascii_hexdigit() || c == '.' || c == ':';
            // Records write IPv6 in lowercase.
            return if prefix.chars().all(address_text) {
                Ok(Self::Prefix(prefix.to_ascii_lowercase()))
            } else {
                Err(bad())
            };
        }
        if let Some((address, bits)) = s.split_once('/') {
            let address: IpAddr = address.parse().map_err(|_| bad())?;
            let most = if address.is_ipv4() { 32 } else { 128 };
            let bits = match bits.parse::<u8>() {
                Ok(n) if n <= most && bits.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(format!("{s:?}: the prefix length after '/' must be 0 to {most}")),
            };
            // Records write an IPv4 address mapped into IPv6 as IPv4; so is a network of them.
            return match address {
                IpAddr::V6(v6) if bits >= 96 && v6.to_ipv4_mapped().is_some() => {
                    Ok(Self::Network(address.to_canonical(), bits - 96))
                }
                _ => Ok(Self::Network(address, bits)),
            };
        }
        s.parse().map(|a: IpAddr| Self::One(a.to_canonical())).map_err(|_| bad())
    }
}

impl AddressMatch {
    /// Whether the recorded address `value` matches; an empty or unreadable one never does.
    pub fn matches(&self, value: &str) -> bool {
        if let Self::Prefix(prefix) = self {
            return !value.is_empty() && value.starts_with(prefix.as_str());
        }
        let Ok(address) = value.parse::<IpAddr>() else { return false };
        match (self, address) {
            (Self::One(one), address) => *one == address,
            (Self::Network(IpAddr::V4(net), bits), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*bits)).unwrap_or(0);
                u32::from(*net) & mask == u32::from(a) & mask
            }
            (Self::Network(IpAddr::V6(net), bits), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*bits)).unwrap_or(0);
                u128::from(*net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl Pattern {
    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(text) => value == text,
            Self::Prefix(prefix) => value.starts_with(prefix.as_str()),
        }
    }
}

impl FromStr for Pattern {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.strip_suffix('*') {
            Some(prefix) => Self::Prefix(prefix.to_owned()),
            None => Self::Exact(s.to_owned()),
        })
    }
}

/// An HTTP status to match: one code, or a class such as `4xx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    /// Exactly this status.
    Code(u32),
    /// Any status of this hundred (4 for `4xx`).
    Class(u32),
}

impl StatusMatch {
    /// Whether `status` matches.
    pub fn matches(self, status: u32) -> bool {
        match self {
            Self::Code(code) => status == code,
            Self::Class(class) => status / 100 == class,
        }
    }
}

impl FromStr for StatusMatch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a status: give a code such as 404 or a class such as 4xx or 5xx");
        let lower = s.to_ascii_lowercase();
        if let Some(class) = lower.strip_suffix("xx") {
            return match class.parse::<u32>() {
                Ok(digit @ 1..=5) if class.len() == 1 => Ok(Self::Class(digit)),
                _ => Err(bad()),
            };
        }
        match s.parse::<u32>() {
            Ok(code @ 100..=599) => Ok(Self::Code(code)),
            _ => Err(bad()),
        }
    }
}

/// Which records a query selects; every filter given must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The client subsystem.
    pub client: Option<Pattern>,
    /// The service.
    pub service: Option<Pattern>,
    /// The HTTP status sent to the client; for a gRPC call, since its HTTP status is 200, the one
    /// the gateway's error or its gRPC status stands for (`audit::answered_status`: a message too
    /// large is 413, PERMISSION_DENIED 403).
    pub status: Option<StatusMatch>,
    /// The X-Road error type.
    pub error_type: Option<Pattern>,
    /// The request's method (`RELOAD` and `START` for configurations put in force).
    pub method: Option<Pattern>,
    /// The request's path.
    pub path: Option<Pattern>,
    /// The peer gateway the exchange was routed to or came from (`peer` in the record; empty for none).
    pub peer: Option<Pattern>,
    /// The IP address the client connected from (`client_address`).
    pub address: Option<AddressMatch>,
    /// The case or document number the client gave (`X-Road-Issue`, `issue`).
    pub issue: Option<Pattern>,
    /// The end user the client called for (`X-Road-UserId`, `user_id`).
    pub user_id: Option<Pattern>,
    /// The host account that made a configuration change on the gateway's host (`host_user`):
    /// the whole text, or either account in it by name or uid (see [`host_accounts`]).
    pub host_user: Option<Pattern>,
    /// Received at or after this time (nanoseconds since the Unix epoch).
    pub since_unix_nanos: Option<i64>,
    /// Received before this time.
    pub until_unix_nanos: Option<i64>,
    /// The exchange id, compared without regard to case.
    pub exchange_id: Option<String>,
}

impl Filter {
    /// Whether `record` is selected.
    pub fn matches(&self, r: &ExchangeRecord) -> bool {
        self.client.as_ref().is_none_or(|p| p.matches(&r.client))
            && self.service.as_ref().is_none_or(|p| p.matches(&r.service))
            && self.status.is_none_or(|s| s.matches(u32::from(crate::audit::answered_status(r))))
            && self.error_type.as_ref().is_none_or(|p| p.matches(&r.error_type))
            && self.method.as_ref().is_none_or(|p| p.matches(&r.method))
            && self.path.as_ref().is_none_or(|p| p.matches(&r.path))
            && self.peer.as_ref().is_none_or(|p| p.matches(&r.peer))
            && self.address.as_ref().is_none_or(|p| p.matches(&r.client_address))
            && self.issue.as_ref().is_none_or(|p| p.matches(&r.issue))
            && self.user_id.as_ref().is_none_or(|p| p.matches(&r.user_id))
            && self.host_user.as_ref().is_none_or(|p| {
                !r.host_user.is_empty()
                    && (p.matches(&r.host_user) || host_accounts(&r.host_user).any(|a| p.matches(a)))
            })
            && self.since_unix_nanos.is_none_or(|t| r.received_at_unix_nanos >= t)
            && self.until_unix_nanos.is_none_or(|t| r.received_at_unix_nanos < t)
            && self.exchange_id.as_ref().is_none_or(|id| r.exchange_id.eq_ignore_ascii_case(id))
    }
}

/// What a query went through.
#[derive(Debug, Clone, Default)]
pub struct QuerySummary {
    /// Records read.
    pub scanned: u64,
    /// Records selected (and handed on).
    pub matched: u64,
    /// Whether the query stopped at its limit.
    pub limited: bool,
    /// The torn tail the log ended with, if any (a warning, not an error), when not checked.
    pub torn_tail: Option<String>,
    /// What checking the log as it was read found: whether the records shown are those its
    /// signed checkpoints cover. `None` for a query told not to check.
    pub checked: Option<VerifyReport>,
}

/// Why a query stopped before the end of the log.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The directory holds no audit log, or cannot be listed.
    #[error(transparent)]
    NotALog(#[from] VerifyError),
    /// The log is damaged (or unreadable) here.
    #[error(transparent)]
    Segments(#[from] SegmentError),
    /// The folder's segments cannot be listed.
    #[error("{0}")]
    Start(String),
    /// A frame is intact but is not a record.
    #[error("record {seq}: the frame is intact but does not decode: {source}")]
    Decode {
        /// The record's sequence number.
        seq: u64,
        /// What prost said.
        #[source]
        source: prost::DecodeError,
    },
    /// The consumer of the records failed (writing the output).
    #[error("{0}")]
    Output(String),
}

/// Streams the records of the log in `dir` that `filter` selects to `each`, in log order, up to
/// `limit` of them.
///
/// With `check`, the log is verified as it is read ([`verify_log`], with `ca` when given), and
/// the summary's `checked` says whether the records are the ones the signed checkpoints cover:
/// a record changed and given a fresh checksum reads like any other. At the limit the log is read
/// on only to the checkpoint that covers the last record shown. Records before damage are handed
/// on either way.
pub fn query(
    dir: &Path,
    filter: &Filter,
    limit: Option<u64>,
    check: Option<Option<&[u8]>>,
    each: &mut dyn FnMut(u64, &ExchangeRecord) -> Result<(), String>,
) -> Result<QuerySummary, QueryError> {
    if let Some(ca) = check {
        return query_checked(dir, filter, limit, ca, each);
    }
    ensure_log(dir)?;
    // Every record there is, from the first segment on: an extracted archive starts after record
    // 0, and a query reads records, it does not check the log (verify does), so that nothing in
    // the folder is hidden from it, whatever a manifest or base.json says.
    let first = crate::audit::segment::list_segments(dir)
        .map_err(|e| QueryError::Start(format!("{}: {e}", dir.display())))?
        .first()
        .map_or(0, |(first, _)| *first);
    let mut reader = SegmentReader::open_from(dir, first)?;
    let mut summary = QuerySummary::default();
    let mut record = ExchangeRecord::default();
    if limit == Some(0) {
        summary.limited = true;
        return Ok(summary);
    }
    loop {
        let (seq, payload) = match reader.next_record() {
            Ok(Some(next)) => next,
            Ok(None) => break,
            Err(e) if e.is_torn_tail() => {
                summary.torn_tail = Some(e.to_string());
                break;
            }
            Err(e) => return Err(e.into()),
        };
        summary.scanned += 1;
        record.clear();
        record.merge(payload).map_err(|source| QueryError::Decode { seq, source })?;
        if !filter.matches(&record) {
            continue;
        }
        summary.matched += 1;
        each(seq, &record).map_err(QueryError::Output)?;
        if limit.is_some_and(|limit| summary.matched >= limit) {
            summary.limited = true;
            break;
        }
    }
    Ok(summary)
}

fn query_checked(
    dir: &Path,
    filter: &Filter,
    limit: Option<u64>,
    ca: Option<&[u8]>,
    each: &mut dyn FnMut(u64, &ExchangeRecord) -> Result<(), String>,
) -> Result<QuerySummary, QueryError> {
    let mut summary = QuerySummary { limited: limit == Some(0), ..QuerySummary::default() };
    let mut failed = None;
    let report = verify_log(dir, ca, &mut |seq, _, record, _| {
        summary.scanned += 1;
        let Some(record) = record else { return Reading::On };
        if summary.limited || failed.is_some() {
            return Reading::Enough;
        }
        if !filter.matches(record) {
            return Reading::On;
        }
        summary.matched += 1;
        if let Err(e) = each(seq, record) {
            // Output gone (a closed pipe): nothing more to show.
            failed = Some(e);
            return Reading::Enough;
        }
        summary.limited = limit.is_some_and(|limit| summary.matched >= limit);
        if summary.limited { Reading::Enough } else { Reading::On }
    })?;
    if let Some(e) = failed {
        return Err(QueryError::Output(e));
    }
    summary.checked = Some(report);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_classes_parse_and_match() {
        assert_eq!("404".parse(), Ok(StatusMatch::Code(404)));
        assert_eq!("4xx".parse(), Ok(StatusMatch::Class(4)));
        assert_eq!("5XX".parse(), Ok(StatusMatch::Class(5)));
        for bad in ["", "4x", "6xx", "0xx", "99", "600", "abc", "44xx", "04xx", "+4xx"] {
            assert!(bad.parse::<StatusMatch>().is_err(), "{bad}");
        }
        assert!(StatusMatch::Class(4).matches(403));
        assert!(!StatusMatch::Class(4).matches(503));
        assert!(StatusMatch::Code(200).matches(200));
    }

    #[test]
    fn patterns_match_exactly_or_by_prefix() {
        let exact: Pattern = "Client.AccessDenied".parse().unwrap_or_else(|e| match e {});
        assert!(exact.matches("Client.AccessDenied"));
        assert!(!exact.matches("Client.AccessDeniedX"));
        let prefix: Pattern = "Server.*".parse().unwrap_or_else(|e| match e {});
        assert!(prefix.matches("Server.ServerProxy.ServiceFailed"));
        assert!(!prefix.matches("Client.AccessDenied"));
    }

    #[test]
    fn addresses_match_one_a_network_or_a_prefix() {
        let m = |s: &str| s.parse::<AddressMatch>().unwrap();
        assert!(m("10.20.0.7").matches("10.20.0.7") && !m("10.20.0.7").matches("10.20.0.70"));
        assert!(m("::ffff:10.20.0.7").matches("10.20.0.7"), "as the gateway writes it");
        assert!(m("10.20.0.0/16").matches("10.20.255.1") && !m("10.20.0.0/16").matches("10.21.0.1"));
        assert!(m("0.0.0.0/0").matches("192.0.2.1") && !m("0.0.0.0/0").matches("2001:db8::1"));
        assert!(m("2001:db8:1:2::/64").matches("2001:db8:1:2:ffff::1"));
        assert!(!m("2001:db8:1:2::/64").matches("2001:db8:1:3::1"));
        assert!(m("10.20.*").matches("10.20.3.4") && !m("10.20.*").matches("10.2.0.1"));
        assert!(m("2001:DB8:*").matches("2001:db8::7"), "records write IPv6 in lowercase");
        assert!(m("::ffff:10.20.0.0/112").matches("10.20.3.4"), "a mapped network is an IPv4 one");
        assert_eq!(m("::ffff:10.20.0.0/112"), m("10.20.0.0/16"));
        assert!(!m("10.20.0.7").matches(""), "records without an address match no address");
        for bad in ["foo", "127.0.0.1:443", "[::1]", "10.0.0.0/33", "2001:db8::/129", "host*", "10.0.0.0/+8"] {
            let err = bad.parse::<AddressMatch>().unwrap_err();
            assert!(err.contains(bad) || err.contains("prefix length"), "{err}");
        }
    }

    #[test]
    fn every_given_filter_must_match() {
        let r = ExchangeRecord {
            exchange_id: "AB-cd".to_owned(),
            client: "ID/PEMDA/1602/DINKES".to_owned(),
            service: "ID/PEMDA/1602/DISDUKCAPIL/nik".to_owned(),
            status: 403,
            error_type: "Client.AccessDenied".to_owned(),
            method: "GET".to_owned(),
            path: "/r1/ID/PEMDA/1602/DISDUKCAPIL/nik/verify".to_owned(),
            received_at_unix_nanos: 100,
            client_address: "10.20.0.7".to_owned(),
            issue: "SPT/2025/0417".to_owned(),
            user_id: "ID/NIK/3271".to_owned(),
            ..ExchangeRecord::default()
        };
        assert!(Filter::default().matches(&r));
        let f = Filter {
            client: Some(Pattern::Exact("ID/PEMDA/1602/DINKES".to_owned())),
            method: Some(Pattern::Exact("GET".to_owned())),
            path: Some(Pattern::Prefix("/r1/ID/PEMDA/1602/".to_owned())),
            status: Some(StatusMatch::Class(4)),
            since_unix_nanos: Some(100),
            until_unix_nanos: Some(101),
            exchange_id: Some("ab-CD".to_owned()),
            address: Some("10.20.0.0/16".parse().unwrap()),
            issue: Some(Pattern::Prefix("SPT/2025/".to_owned())),
            user_id: Some(Pattern::Exact("ID/NIK/3271".to_owned())),
            ..Filter::default()
        };
        assert!(f.matches(&r));
        assert!(!Filter { issue: Some(Pattern::Exact("SPT/2025/0418".to_owned())), ..f.clone() }.matches(&r));
        assert!(!Filter { user_id: Some(Pattern::Prefix("ID/NIK/9".to_owned())), ..f.clone() }.matches(&r));
        assert!(!Filter { until_unix_nanos: Some(100), ..f.clone() }.matches(&r));
        assert!(!Filter { address: Some("10.20.0.70".parse().unwrap()), ..f.clone() }.matches(&r));
        assert!(!Filter { method: Some(Pattern::Exact("RELOAD".to_owned())), ..f.clone() }.matches(&r));
        assert!(!Filter { path: Some(Pattern::Exact("/r1/ID/PEMDA/1602/".to_owned())), ..f.clone() }.matches(&r));
        assert!(!Filter { service: Some(Pattern::Prefix("ID/PEMDA/1603".to_owned())), ..f }.matches(&r));
    }

    #[test]
    fn a_grpc_call_is_matched_by_the_status_its_grpc_status_stands_for() {
        let refused = ExchangeRecord { status: 200, grpc_status: Some(7), ..ExchangeRecord::default() };
        let ok = ExchangeRecord { status: 200, grpc_status: Some(0), ..ExchangeRecord::default() };
        let by = |status: StatusMatch| Filter { status: Some(status), ..Filter::default() };
        assert!(by(StatusMatch::Class(4)).matches(&refused) && by(StatusMatch::Code(403)).matches(&refused));
        assert!(!by(StatusMatch::Code(200)).matches(&refused));
        assert!(by(StatusMatch::Code(200)).matches(&ok) && !by(StatusMatch::Class(4)).matches(&ok));
    }

    #[test]
    fn a_host_account_is_found_by_either_account_it_names() {
        let change = |host_user: &str| ExchangeRecord {
            method: "RELOAD".to_owned(),
            host_user: host_user.to_owned(),
            ..ExchangeRecord::default()
        };
        let by = |pattern: &str| Filter {
            host_user: Some(match pattern.strip_suffix('*') {
                Some(prefix) => Pattern::Prefix(prefix.to_owned()),
                None => Pattern::Exact(pattern.to_owned()),
            }),
            ..Filter::default()
        };
        let sudo = change("budi (uid 1000) as root (uid 0)");
        for pattern in ["budi", "root", "uid 1000", "uid 0", "budi (uid 1000) as root (uid 0)", "bu*"] {
            assert!(by(pattern).matches(&sudo), "{pattern}");
        }
        for pattern in ["bud", "siti", "uid 100", "(uid 1000)"] {
            assert!(!by(pattern).matches(&sudo), "{pattern}");
        }
        assert!(by("uid 1001").matches(&change("uid 1001")), "an account without a name");
        assert!(by("uid 1001").matches(&change("uid 1001 as root (uid 0)")));
        // Exchanges and changes through the admin listener name no host account.
        assert!(!by("*").matches(&change("")));
    }
}
