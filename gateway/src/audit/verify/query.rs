//! Selecting records of an audit log: the filters of `splpd audit query`, applied while the
//! records stream past.

use std::path::Path;
use std::str::FromStr;

use prost::Message as _;

use super::{VerifyError, ensure_log};
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
    /// The HTTP status sent to the client.
    pub status: Option<StatusMatch>,
    /// The X-Road error type.
    pub error_type: Option<Pattern>,
    /// The request's method (`RELOAD` and `START` for configurations put in force).
    pub method: Option<Pattern>,
    /// The request's path.
    pub path: Option<Pattern>,
    /// The peer gateway the exchange crossed (`peer` in the record; empty for none).
    pub peer: Option<Pattern>,
    /// The IP address the client connected from (`client_address`).
    pub address: Option<Pattern>,
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
            && self.status.is_none_or(|s| s.matches(r.status))
            && self.error_type.as_ref().is_none_or(|p| p.matches(&r.error_type))
            && self.method.as_ref().is_none_or(|p| p.matches(&r.method))
            && self.path.as_ref().is_none_or(|p| p.matches(&r.path))
            && self.peer.as_ref().is_none_or(|p| p.matches(&r.peer))
            && self.address.as_ref().is_none_or(|p| p.matches(&r.client_address))
            && self.since_unix_nanos.is_none_or(|t| r.received_at_unix_nanos >= t)
            && self.until_unix_nanos.is_none_or(|t| r.received_at_unix_nanos < t)
            && self.exchange_id.as_ref().is_none_or(|id| r.exchange_id.eq_ignore_ascii_case(id))
    }
}

/// What a query went through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuerySummary {
    /// Records read.
    pub scanned: u64,
    /// Records selected (and handed on).
    pub matched: u64,
    /// Whether the query stopped at its limit.
    pub limited: bool,
    /// The torn tail the log ended with, if any (a warning, not an error).
    pub torn_tail: Option<String>,
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
/// `limit` of them. Records before any damage are handed on before the error is returned.
pub fn query(
    dir: &Path,
    filter: &Filter,
    limit: Option<u64>,
    each: &mut dyn FnMut(u64, &ExchangeRecord) -> Result<(), String>,
) -> Result<QuerySummary, QueryError> {
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
            address: Some(Pattern::Prefix("10.20.".to_owned())),
            ..Filter::default()
        };
        assert!(f.matches(&r));
        assert!(!Filter { until_unix_nanos: Some(100), ..f.clone() }.matches(&r));
        assert!(!Filter { address: Some(Pattern::Exact("10.20.0.70".to_owned())), ..f.clone() }.matches(&r));
        assert!(!Filter { method: Some(Pattern::Exact("RELOAD".to_owned())), ..f.clone() }.matches(&r));
        assert!(!Filter { path: Some(Pattern::Exact("/r1/ID/PEMDA/1602/".to_owned())), ..f.clone() }.matches(&r));
        assert!(!Filter { service: Some(Pattern::Prefix("ID/PEMDA/1603".to_owned())), ..f }.matches(&r));
    }
}
