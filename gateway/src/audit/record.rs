//! The audit record of one exchange (design §5), filled in phase by phase as the exchange moves
//! along the path and handed to an [`AuditSink`](super::AuditSink) when it ends. Personal data in
//! the query string enters the record only as a SHA-256 hash, never as text.

use std::fmt;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use http::{HeaderMap, HeaderName, Method, StatusCode, Uri};
use splpd_certs::id::{AdminId, ClientId, ServerId, ServiceId};
use splpd_proto::v1::{self as pb, ExchangeRecord};
use uuid::Uuid;

use crate::config::{ConnectionType, Protocol};

const USER_ID: HeaderName = HeaderName::from_static("x-road-userid");
const ISSUE: HeaderName = HeaderName::from_static("x-road-issue");
const REPRESENTED_PARTY: HeaderName = HeaderName::from_static("x-road-represented-party");
const PURPOSE: HeaderName = HeaderName::from_static("x-splp-purpose");

/// The first `keep` bytes of `text` (not cutting a character in two), then how long it was in
/// all: what the log keeps of a value too long to keep whole.
fn shortened(text: &[u8], keep: usize) -> String {
    let start = String::from_utf8_lossy(&text[..keep.min(text.len())]);
    format!("{}… ({} bytes in all)", start.trim_end_matches('\u{fffd}'), text.len())
}

/// The longest `X-Road-UserId`, `X-Road-Issue`, `X-Road-Represented-Party` or `X-SPLP-Purpose`
/// the gateway takes: each is kept in every record, and a reference, a user id or a purpose code
/// is far shorter.
pub const MAX_RECORDED_HEADER: usize = 512;

/// The wall-clock time in nanoseconds since the Unix epoch, the unit of every time in a record.
///
/// A clock set before 1970 reads as 0 ("did not happen") and one past 2262 as `i64::MAX`, rather
/// than a panic on the request path.
pub fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| i64::try_from(since.as_nanos()).unwrap_or(i64::MAX))
}

/// The status an exchange was answered with, as the metrics and traces count it: its HTTP
/// status, except for a gRPC answer, whose HTTP status is 200 whatever happened: there, for the
/// gateway's own error, the status it has over REST ([`crate::error::http_status_of_type`]: a
/// message too large is 413, not the 429 its gRPC code shares with a quota), else the HTTP
/// status its gRPC status stands for ([`crate::error::http_status_of_grpc`]), so that a refused
/// or failed gRPC call counts as one. Out of `u16`'s range is 0.
pub fn answered_status(r: &ExchangeRecord) -> u16 {
    let http = u16::try_from(r.status).unwrap_or(0);
    match r.grpc_status {
        // The gateway's own error: the status it has over REST (413 and 429 share a gRPC code).
        Some(grpc) if http == 200 && grpc != 0 => {
            crate::error::http_status_of_type(&r.error_type).unwrap_or_else(|| crate::error::http_status_of_grpc(grpc))
        }
        Some(grpc) if http == 200 => crate::error::http_status_of_grpc(grpc),
        _ => http,
    }
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, bytes).as_ref().to_vec()
}

/// The audit record of one exchange while the exchange is under way.
///
/// Each phase fills in what it learned; fields it never reaches stay empty, which the record
/// format reads as "did not happen". [`finish`](Self::finish) stamps the response time and yields
/// the [`ExchangeRecord`] for the sink.
#[derive(Debug, Clone)]
pub struct RecordBuilder {
    record: ExchangeRecord,
}

impl RecordBuilder {
    /// Starts the record of an exchange on `gateway` whose request head arrived at
    /// `received_at_unix_nanos`.
    pub fn new(gateway: &ServerId, received_at_unix_nanos: i64) -> Self {
        Self {
            record: ExchangeRecord {
                received_at_unix_nanos,
                gateway: gateway.to_string(),
                ..ExchangeRecord::default()
            },
        }
    }

    /// Starts the record of an exchange whose request head arrived just now.
    pub fn received_now(gateway: &ServerId) -> Self {
        Self::new(gateway, now_nanos())
    }

    /// The exchange's `X-Road-Id`, in canonical lowercase hyphenated form.
    pub fn set_exchange_id(&mut self, id: Uuid) {
        self.record.exchange_id = id.hyphenated().to_string();
    }

    /// The exchange id set so far (empty before [`Self::set_exchange_id`]).
    pub fn exchange_id(&self) -> &str {
        &self.record.exchange_id
    }

    /// The client the gateway established, from the certificate or an opted-in `X-Road-Client`.
    pub fn set_client(&mut self, client: &ClientId) {
        self.record.client = client.to_string();
    }

    /// The operator who made a change through the admin listener, recorded where an exchange's
    /// client goes (an admin identifier has four parts, a client five).
    pub fn set_operator(&mut self, operator: &AdminId) {
        self.record.client = operator.to_string();
    }

    /// The request body's first bytes, for a service that keeps bodies (`store_bodies`).
    pub fn set_request_content(&mut self, kept: Vec<u8>) {
        self.record.request_body = kept;
    }

    /// The response body's first bytes, likewise.
    pub fn set_response_content(&mut self, kept: Vec<u8>) {
        self.record.response_body = kept;
    }

    /// The host account that changed the configuration on the gateway's host.
    pub fn set_host_user(&mut self, account: &str) {
        account.clone_into(&mut self.record.host_user);
    }

    /// The `X-Road-Issue` of a change made by an operator: the ticket or reason given.
    pub fn set_issue(&mut self, issue: &str) {
        issue.clone_into(&mut self.record.issue);
    }

    /// A configuration put in force, recorded where an exchange's request goes: `action`
    /// (`START`, `RELOAD`) as the method, the file as the path, the SHA-256 and size of its text
    /// as the request body's, and 200.
    pub fn set_configuration(&mut self, action: &str, file: &str, sha256: [u8; 32], size: u64) {
        action.clone_into(&mut self.record.method);
        file.clone_into(&mut self.record.path);
        self.record.request_body_sha256 = sha256.to_vec();
        self.record.request_body_bytes = size;
        self.record.status = 200;
    }

    /// What a reload loaded anew beyond the configuration's text (see the proto's `reloaded`).
    pub fn set_reloaded(&mut self, reloaded: Vec<String>) {
        self.record.reloaded = reloaded;
    }

    /// The IP address the client's connection came from; an IPv4 address mapped into IPv6 is
    /// written as IPv4.
    pub fn set_client_address(&mut self, address: std::net::IpAddr) {
        self.record.client_address = address.to_canonical().to_string();
    }

    /// The client's certificate (DER); only its SHA-256 is kept.
    pub fn set_client_cert(&mut self, der: &[u8]) {
        self.record.client_cert_sha256 = sha256(der);
    }

    /// The SHA-256 of the client's certificate, when identification already computed it.
    pub fn set_client_cert_sha256(&mut self, fingerprint: [u8; 32]) {
        self.record.client_cert_sha256 = fingerprint.to_vec();
    }

    /// How the client's connection was secured.
    pub fn set_connection_type(&mut self, connection: ConnectionType) {
        let connection = match connection {
            ConnectionType::Mtls => pb::ConnectionType::Mtls,
            ConnectionType::Tls => pb::ConnectionType::Tls,
            ConnectionType::Http => pb::ConnectionType::Http,
        };
        self.record.set_connection_type(connection);
    }

    /// The service a call named, before it is known whether this gateway has it.
    pub fn set_service_id(&mut self, service: &ServiceId) {
        self.record.service = service.to_string();
    }

    /// The service that was called and the protocol it speaks.
    pub fn set_service(&mut self, service: &ServiceId, protocol: Protocol) {
        self.set_service_id(service);
        let protocol = match protocol {
            Protocol::Rest => pb::Protocol::Rest,
            Protocol::Grpc => pb::Protocol::Grpc,
        };
        self.record.set_protocol(protocol);
    }

    /// The request line: method, path as sent, and the query string as a hash only. A path
    /// longer than `max_path` (the gateway refuses it, 414) is kept as its beginning and its
    /// length, so that a caller cannot fill the log with refused request lines.
    pub fn set_request(&mut self, method: &Method, uri: &Uri, max_path: usize) {
        method.as_str().clone_into(&mut self.record.method);
        let path = uri.path();
        self.record.path =
            if path.len() <= max_path { path.to_owned() } else { shortened(path.as_bytes(), max_path.min(256)) };
        self.set_query(uri.query());
    }

    /// The raw query string (the bytes after the first `?`, exactly as received), kept only as
    /// its SHA-256: it often holds personal data such as a NIK. `None` when there was no `?`; an
    /// empty query after a `?` is hashed like any other, so the two stay distinguishable.
    pub fn set_query(&mut self, raw: Option<&str>) {
        self.record.query_sha256 = raw.map(|q| sha256(q.as_bytes())).unwrap_or_default();
    }

    /// The optional X-Road headers the log keeps: `X-Road-UserId`, `X-Road-Issue`,
    /// `X-Road-Represented-Party` and `X-SPLP-Purpose` (the first of each, if repeated). Returns
    /// the first over [`MAX_RECORDED_HEADER`], as its name is written and its length, which the
    /// exchange refuses: read here, the headers are looked up once per request.
    pub fn set_client_headers(&mut self, headers: &HeaderMap) -> Option<(&'static str, usize)> {
        // Header values are bytes; a non-UTF-8 one is kept lossily rather than dropped, so the
        // log still shows that the header was sent.
        // A value over the limit is refused (`Client.BadRequest`), and its record keeps the
        // beginning and its length, so a caller cannot fill the log with one header.
        let mut over = None;
        let mut text = |name: &HeaderName, shown: &'static str| match headers.get(name).map(|v| v.as_bytes()) {
            None => String::new(),
            Some(v) if v.len() <= MAX_RECORDED_HEADER => String::from_utf8_lossy(v).into_owned(),
            Some(v) => {
                over = over.or(Some((shown, v.len())));
                shortened(v, 64)
            }
        };
        self.record.purpose = text(&PURPOSE, "X-SPLP-Purpose");
        self.record.user_id = text(&USER_ID, "X-Road-UserId");
        self.record.issue = text(&ISSUE, "X-Road-Issue");
        self.record.represented_party = text(&REPRESENTED_PARTY, "X-Road-Represented-Party");
        over
    }

    /// The request is being sent upstream now. Only the first attempt counts: retries do not
    /// move the time, so it still shows when forwarding began.
    pub fn mark_forwarded(&mut self) {
        if self.record.forwarded_at_unix_nanos == 0 {
            self.record.forwarded_at_unix_nanos = now_nanos();
        }
    }

    /// Nothing was forwarded after all (no endpoint could take the request).
    pub fn not_forwarded(&mut self) {
        self.record.forwarded_at_unix_nanos = 0;
    }

    /// The upstream endpoint of the final attempt and how many retries preceded it. Only scheme,
    /// host and port are kept: credentials must not reach the log, and the path is already in
    /// the record.
    pub fn set_upstream(&mut self, upstream: &Uri, retries: u32) {
        let mut endpoint = String::new();
        if let Some(scheme) = upstream.scheme_str() {
            endpoint.push_str(scheme);
            endpoint.push_str("://");
        }
        endpoint.push_str(upstream.host().unwrap_or_default());
        if let Some(port) = upstream.port_u16() {
            // Writing to a String cannot fail.
            let _ = write!(endpoint, ":{port}");
        }
        self.record.upstream = endpoint;
        self.record.retries = retries;
    }

    /// Every attempt at the service's endpoints, and why the gateway retried, stopped retrying or
    /// found no endpoint to try.
    pub fn set_attempts<'a>(&mut self, attempts: impl IntoIterator<Item = (&'a str, &'a str)>, note: &str) {
        self.record.attempts = attempts
            .into_iter()
            .map(|(endpoint, outcome)| pb::UpstreamAttempt {
                endpoint: endpoint.to_owned(),
                outcome: outcome.to_owned(),
            })
            .collect();
        note.clone_into(&mut self.record.upstream_note);
    }

    /// The peer gateway the exchange came from or went to.
    pub fn set_peer(&mut self, peer: &ServerId) {
        self.record.peer = peer.to_string();
    }

    /// The upstream's response head has arrived now.
    pub fn mark_upstream_answered(&mut self) {
        self.record.upstream_answered_at_unix_nanos = now_nanos();
    }

    /// The HTTP status sent to the client.
    pub fn set_status(&mut self, status: StatusCode) {
        self.record.status = u32::from(status.as_u16());
    }

    /// The `grpc-status` the client received (0 for success).
    pub fn set_grpc_status(&mut self, code: u32) {
        self.record.grpc_status = Some(code);
    }

    /// The X-Road error type of a failed exchange, e.g. `Client.AccessDenied`.
    pub fn set_error_type(&mut self, error_type: &str) {
        error_type.clone_into(&mut self.record.error_type);
    }

    /// Size and hash of the request body as received from the client.
    pub fn set_request_body(&mut self, body: BodyDigest) {
        self.record.request_body_bytes = body.bytes;
        self.record.request_body_sha256 = body.sha256.to_vec();
    }

    /// The request body had not ended (or broke off) when the record was made: `bytes` of it had
    /// passed, and it has no hash, since it was not read whole.
    pub fn set_request_body_unfinished(&mut self, bytes: u64) {
        self.record.request_body_bytes = bytes;
        self.record.request_body_sha256.clear();
    }

    /// Size and hash of the response body as sent to the client.
    pub fn set_response_body(&mut self, body: BodyDigest) {
        self.record.response_body_bytes = body.bytes;
        self.record.response_body_sha256 = body.sha256.to_vec();
    }

    /// The X-Road request hash: the raw SHA-512 digest (64 bytes), not its base64 header text.
    pub fn set_request_hash(&mut self, sha512: &[u8]) {
        self.record.request_hash = sha512.to_vec();
    }

    /// The W3C trace-context trace id of the exchange.
    pub fn set_trace_id(&mut self, trace_id: [u8; 16]) {
        self.record.trace_id = trace_id.to_vec();
    }

    /// The record as filled in so far.
    pub fn record(&self) -> &ExchangeRecord {
        &self.record
    }

    /// A copy of the record as it stands, for the request record that `strict` mode makes
    /// durable before forwarding; the final record follows with the same exchange id.
    pub fn snapshot(&self) -> ExchangeRecord {
        self.record.clone()
    }

    /// The request record of a `strict` exchange: what is known before forwarding, marked as
    /// [`pb::RecordKind::Request`] so that no reader takes it for the exchange's own record.
    pub fn request_record(&self) -> ExchangeRecord {
        let mut record = self.record.clone();
        record.set_kind(pb::RecordKind::Request);
        record
    }

    /// The finished record, its response time stamped now.
    pub fn finish(self) -> ExchangeRecord {
        self.finish_at(now_nanos())
    }

    /// The finished record, with the time the last byte of the response went out.
    pub fn finish_at(mut self, responded_at_unix_nanos: i64) -> ExchangeRecord {
        self.record.responded_at_unix_nanos = responded_at_unix_nanos;
        fit_kept_bodies(&mut self.record);
        self.record
    }
}

/// Cuts the kept bodies (`store_bodies`) so that the record fits the largest frame: long headers
/// and a long path can leave less room than `[audit] max_stored_body` assumes, and a record that
/// cannot be framed would refuse the exchange. The response body is cut first, then the request
/// body; their sizes and hashes still describe the whole bodies.
fn fit_kept_bodies(record: &mut ExchangeRecord) {
    use prost::Message as _;
    // Most records keep no body: they are not measured (every exchange's record passes here).
    if record.request_body.is_empty() && record.response_body.is_empty() {
        return;
    }
    let max = crate::audit::segment::MAX_RECORD_LEN as usize;
    let len = record.encoded_len();
    if len <= max {
        return;
    }
    // A field's length prefix shrinks with it, so cutting `over` bytes is always enough.
    let mut over = len - max;
    for body in [&mut record.response_body, &mut record.request_body] {
        let cut = over.min(body.len());
        body.truncate(body.len() - cut);
        over -= cut;
    }
}

/// Size and SHA-256 of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyDigest {
    /// Length of the body in bytes.
    pub bytes: u64,
    /// SHA-256 over the body.
    pub sha256: [u8; 32],
}

impl BodyDigest {
    /// The digest of a body held whole in memory.
    pub fn of(body: &[u8]) -> Self {
        let mut hasher = BodyHasher::new();
        hasher.update(body);
        hasher.finish()
    }
}

/// Hashes a body chunk by chunk as it streams through, so that auditing never makes the gateway
/// buffer a body it could stream.
#[derive(Clone)]
pub struct BodyHasher {
    context: digest::Context,
    bytes: u64,
}

impl BodyHasher {
    /// A hasher that has seen no bytes yet.
    pub fn new() -> Self {
        Self { context: digest::Context::new(&digest::SHA256), bytes: 0 }
    }

    /// Takes in the next chunk of the body.
    pub fn update(&mut self, chunk: &[u8]) {
        self.context.update(chunk);
        self.bytes = self.bytes.saturating_add(chunk.len() as u64);
    }

    /// The size and hash of everything taken in.
    pub fn finish(self) -> BodyDigest {
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(self.context.finish().as_ref());
        BodyDigest { bytes: self.bytes, sha256 }
    }
}

impl Default for BodyHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for BodyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyHasher").field("bytes", &self.bytes).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value too long to keep is kept as its beginning, never a character cut in two, and its
    /// length.
    #[test]
    fn a_shortened_value_cuts_no_character_in_two() {
        let text = "é".repeat(40); // two bytes each: byte 63 is inside one
        let kept = shortened(text.as_bytes(), 63);
        assert_eq!(kept, format!("{}… (80 bytes in all)", "é".repeat(31)));
        assert!(!kept.contains('\u{fffd}'));
        assert_eq!(shortened(b"abc", 64), "abc… (3 bytes in all)");
    }

    fn gateway() -> ServerId {
        "ID/PEMDA/1602/gw1".parse().unwrap()
    }

    /// A gRPC answer is HTTP 200 whatever happened: it counts as the status the gateway's own
    /// error has over REST, else as the one its gRPC status stands for.
    #[test]
    fn a_grpc_answer_counts_as_the_status_its_error_stands_for() {
        let grpc = |code: u32, error_type: &str| ExchangeRecord {
            status: 200,
            grpc_status: Some(code),
            error_type: error_type.to_owned(),
            ..ExchangeRecord::default()
        };
        assert_eq!(answered_status(&grpc(8, "Client.RequestTooLarge")), 413);
        assert_eq!(answered_status(&grpc(8, "Client.RateLimited")), 429);
        assert_eq!(answered_status(&grpc(4, "Client.DeadlineExceeded")), 504);
        // The service's own status, and a cancel, by their gRPC codes.
        assert_eq!(answered_status(&grpc(7, "")), 403);
        assert_eq!(answered_status(&grpc(1, "Client.ResponseAbandoned")), 499);
        assert_eq!(answered_status(&grpc(0, "")), 200);
        let rest = ExchangeRecord { status: 404, ..ExchangeRecord::default() };
        assert_eq!(answered_status(&rest), 404);
    }

    #[test]
    fn kept_bodies_are_cut_so_that_a_record_with_long_headers_still_frames() {
        use prost::Message as _;
        let max = crate::audit::segment::MAX_RECORD_LEN as usize;
        let mut record = RecordBuilder::received_now(&gateway());
        let kept = vec![b'x'; 256 * 1024];
        record.set_request_content(kept.clone());
        record.set_response_content(kept.clone());
        // A small record keeps both bodies whole.
        let small = record.clone().finish();
        assert_eq!((small.request_body.len(), small.response_body.len()), (kept.len(), kept.len()));
        // Headers of 700 KB leave room for less: the response body is cut first.
        record.set_issue(&"i".repeat(700_000));
        let big = record.finish();
        assert!(big.encoded_len() <= max, "{} bytes", big.encoded_len());
        assert_eq!(big.request_body.len(), kept.len());
        assert!(big.response_body.len() < kept.len() && big.response_body.len() > max - 700_000 - kept.len() - 1024);
    }

    fn hex_sha256(bytes: &[u8]) -> String {
        hex::encode(digest::digest(&digest::SHA256, bytes))
    }

    #[test]
    fn keeps_the_query_only_as_its_hash() {
        let mut b = RecordBuilder::new(&gateway(), 1);
        let uri: Uri = "/r1/ID/PEMDA/1602/DISDUKCAPIL/nik-verify/nik?nik=3201234567890001".parse().unwrap();
        b.set_request(&Method::GET, &uri, 8192);
        let r = b.record();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/r1/ID/PEMDA/1602/DISDUKCAPIL/nik-verify/nik");
        assert_eq!(hex::encode(&r.query_sha256), hex_sha256(b"nik=3201234567890001"));
        assert!(!format!("{r:?}").contains("3201234567890001"));
    }

    #[test]
    fn tells_no_query_from_an_empty_one() {
        let mut b = RecordBuilder::new(&gateway(), 1);
        b.set_query(None);
        assert!(b.record().query_sha256.is_empty());
        b.set_query(Some(""));
        assert_eq!(hex::encode(&b.record().query_sha256), hex_sha256(b""));
    }

    #[test]
    fn upstream_keeps_no_credentials_path_or_query() {
        let mut b = RecordBuilder::new(&gateway(), 1);
        let uri: Uri = "https://user:secret@10.1.2.3:8443/api/nik?nik=3201".parse().unwrap();
        b.set_upstream(&uri, 2);
        assert_eq!(b.record().upstream, "https://10.1.2.3:8443");
        assert_eq!(b.record().retries, 2);
        b.set_upstream(&"http://[::1]:9000/".parse().unwrap(), 0);
        assert_eq!(b.record().upstream, "http://[::1]:9000");
    }

    #[test]
    fn phases_fill_the_record_and_forwarding_keeps_its_first_time() {
        let mut b = RecordBuilder::new(&gateway(), 5);
        let id = Uuid::new_v4();
        b.set_exchange_id(id);
        b.set_client(&"ID/PEMDA/1602/DINKES".parse().unwrap());
        b.set_client_cert(b"not really DER");
        b.set_connection_type(ConnectionType::Mtls);
        b.set_service(&"ID/PEMDA/1602/DISDUKCAPIL/nik-verify".parse().unwrap(), Protocol::Grpc);
        let mut headers = HeaderMap::new();
        headers.insert("x-road-userid", "petugas-17".parse().unwrap());
        headers.insert("x-splp-purpose", "verifikasi".parse().unwrap());
        b.set_client_headers(&headers);
        b.mark_forwarded();
        let first = b.record().forwarded_at_unix_nanos;
        assert!(first > 0);
        b.mark_forwarded();
        assert_eq!(b.record().forwarded_at_unix_nanos, first);
        b.mark_upstream_answered();
        b.set_status(StatusCode::OK);
        b.set_grpc_status(0);
        b.set_request_body(BodyDigest::of(b"abc"));
        let r = b.finish_at(42);

        assert_eq!(r.exchange_id, id.to_string());
        assert_eq!(r.gateway, "ID/PEMDA/1602/gw1");
        assert_eq!(r.client, "ID/PEMDA/1602/DINKES");
        assert_eq!(hex::encode(&r.client_cert_sha256), hex_sha256(b"not really DER"));
        assert_eq!(r.connection_type(), pb::ConnectionType::Mtls);
        assert_eq!(r.protocol(), pb::Protocol::Grpc);
        assert_eq!((r.user_id.as_str(), r.purpose.as_str(), r.issue.as_str()), ("petugas-17", "verifikasi", ""));
        assert!(r.upstream_answered_at_unix_nanos >= first);
        assert_eq!((r.received_at_unix_nanos, r.responded_at_unix_nanos), (5, 42));
        assert_eq!((r.status, r.grpc_status), (200, Some(0)));
        assert_eq!(r.request_body_bytes, 3);
        assert_eq!(hex::encode(&r.request_body_sha256), hex_sha256(b"abc"));
    }

    #[test]
    fn streamed_body_hashes_like_the_whole() {
        let mut h = BodyHasher::new();
        h.update(b"hello ");
        h.update(b"");
        h.update(b"world");
        assert_eq!(h.finish(), BodyDigest::of(b"hello world"));
    }
}
