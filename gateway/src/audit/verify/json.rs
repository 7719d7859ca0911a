//! An [`ExchangeRecord`] as JSON, for `splpd audit query` and proofs. Proto field names; bytes
//! as lowercase hex; each time twice, as RFC 3339 with nanoseconds under the name without
//! `_unix_nanos` (`null` for 0, "did not happen") and as the proto's integer; enums as words;
//! every field always present.

use std::fmt;

use serde::{Serialize, Serializer};
use splpd_proto::v1::{ConnectionType, Protocol, RecordKind};
use time::OffsetDateTime;

use crate::audit::ExchangeRecord;

/// Serializes the record it wraps as the JSON object described in the module docs.
#[derive(Debug, Clone, Copy)]
pub struct RecordJson<'a>(pub &'a ExchangeRecord);

impl Serialize for RecordJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let r = self.0;
        let mut map = serializer.serialize_map(Some(38))?;
        map.serialize_entry("exchange_id", &r.exchange_id)?;
        for (name, nanos) in [
            ("received_at", r.received_at_unix_nanos),
            ("forwarded_at", r.forwarded_at_unix_nanos),
            ("upstream_answered_at", r.upstream_answered_at_unix_nanos),
            ("responded_at", r.responded_at_unix_nanos),
        ] {
            map.serialize_entry(name, &rfc3339_nanos(nanos))?;
            map.serialize_entry(&format_args!("{name}_unix_nanos"), &nanos)?;
        }
        map.serialize_entry("client", &r.client)?;
        map.serialize_entry("client_cert_sha256", &Hex(&r.client_cert_sha256))?;
        map.serialize_entry("client_address", &r.client_address)?;
        map.serialize_entry("connection_type", connection_type(r.connection_type()))?;
        map.serialize_entry("service", &r.service)?;
        map.serialize_entry("protocol", protocol(r.protocol()))?;
        map.serialize_entry("method", &r.method)?;
        map.serialize_entry("path", &r.path)?;
        map.serialize_entry("query_sha256", &Hex(&r.query_sha256))?;
        map.serialize_entry("user_id", &r.user_id)?;
        map.serialize_entry("issue", &r.issue)?;
        map.serialize_entry("represented_party", &r.represented_party)?;
        map.serialize_entry("purpose", &r.purpose)?;
        map.serialize_entry("status", &r.status)?;
        map.serialize_entry("grpc_status", &r.grpc_status)?;
        map.serialize_entry("error_type", &r.error_type)?;
        map.serialize_entry("request_body_bytes", &r.request_body_bytes)?;
        map.serialize_entry("response_body_bytes", &r.response_body_bytes)?;
        map.serialize_entry("request_body_sha256", &Hex(&r.request_body_sha256))?;
        map.serialize_entry("response_body_sha256", &Hex(&r.response_body_sha256))?;
        map.serialize_entry("request_hash", &Hex(&r.request_hash))?;
        map.serialize_entry("peer", &r.peer)?;
        map.serialize_entry("upstream", &r.upstream)?;
        map.serialize_entry("trace_id", &Hex(&r.trace_id))?;
        map.serialize_entry("retries", &r.retries)?;
        map.serialize_entry("gateway", &r.gateway)?;
        map.serialize_entry("kind", kind(r.kind()))?;
        map.serialize_entry("attempts", &Attempts(&r.attempts))?;
        map.serialize_entry("upstream_note", &r.upstream_note)?;
        // Fields most records leave empty, only where they are set.
        if !r.reloaded.is_empty() {
            map.serialize_entry("reloaded", &r.reloaded)?;
        }
        if !r.recovered.is_empty() {
            map.serialize_entry("recovered", &r.recovered)?;
        }
        if !r.host_user.is_empty() {
            map.serialize_entry("host_user", &r.host_user)?;
        }
        if !r.request_body.is_empty() {
            map.serialize_entry("request_body", &Hex(&r.request_body))?;
        }
        if !r.response_body.is_empty() {
            map.serialize_entry("response_body", &Hex(&r.response_body))?;
        }
        map.end()
    }
}

fn connection_type(c: ConnectionType) -> &'static str {
    match c {
        ConnectionType::Unspecified => "unspecified",
        ConnectionType::Mtls => "mtls",
        ConnectionType::Tls => "tls",
        ConnectionType::Http => "http",
    }
}

fn protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Unspecified => "unspecified",
        Protocol::Rest => "rest",
        Protocol::Grpc => "grpc",
    }
}

fn kind(k: RecordKind) -> &'static str {
    match k {
        RecordKind::Exchange => "exchange",
        RecordKind::Request => "request",
    }
}

/// The upstream attempts as a list of `{"endpoint", "outcome"}` objects.
struct Attempts<'a>(&'a [splpd_proto::v1::UpstreamAttempt]);

impl Serialize for Attempts<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap as _, SerializeSeq as _};
        struct One<'a>(&'a splpd_proto::v1::UpstreamAttempt);
        impl Serialize for One<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("endpoint", &self.0.endpoint)?;
                map.serialize_entry("outcome", &self.0.outcome)?;
                map.end()
            }
        }
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for a in self.0 {
            seq.serialize_element(&One(a))?;
        }
        seq.end()
    }
}

/// Bytes as lowercase hex, written straight into the output.
struct Hex<'a>(&'a [u8]);

impl Serialize for Hex<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A time in nanoseconds since the Unix epoch as RFC 3339 in UTC with all nine digits of
/// nanoseconds (`2025-01-31T08:00:00.123456789Z`); `None` for 0, which means "did not happen".
pub fn rfc3339_nanos(nanos: i64) -> Option<String> {
    if nanos == 0 {
        return None;
    }
    // Every i64 of nanoseconds (years 1677 to 2262) is a time `time` can represent.
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos)).ok()?;
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    ))
}
