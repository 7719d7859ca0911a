//! Active health checks: a background task per service asks each endpoint for a health path at
//! an interval, and takes an endpoint out after `unhealthy_threshold` failed checks in a row and
//! back after `healthy_threshold` passed ones. A passed check also ends an outlier ejection
//! early: the endpoint answers again, so there is no reason to wait the ejection out.
//!
//! A REST endpoint is asked for a path with a GET and passes with a 2xx answer. A gRPC endpoint
//! is asked the standard gRPC health protocol's `grpc.health.v1.Health/Check` and passes when it
//! says `SERVING`; one that does not implement that service (`UNIMPLEMENTED`) passes as long as it
//! answers, since taking out every server that lacks it would take the whole service down.

use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use http::HeaderMap;
use prost::Message as _;

/// A service's health-check settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckOptions {
    /// The path asked for, under each endpoint's base URL (REST services).
    pub path: String,
    /// The service asked about in `grpc.health.v1.Health/Check` (gRPC services); empty for the
    /// server as a whole.
    pub grpc_service: String,
    /// Time between checks of an endpoint.
    pub interval: Duration,
    /// Time allowed for an answer.
    pub timeout: Duration,
    /// Passed checks in a row that bring an endpoint back.
    pub healthy_threshold: u32,
    /// Failed checks in a row that take an endpoint out.
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheckOptions {
    fn default() -> Self {
        Self {
            path: "/".to_owned(),
            grpc_service: String::new(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// What the checks of one endpoint have shown so far. Endpoints start healthy, so that a
/// gateway serves at once; passive ejection covers the time until the first checks fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthTracker {
    healthy: bool,
    run: u32,
}

impl Default for HealthTracker {
    fn default() -> Self {
        Self { healthy: true, run: 0 }
    }
}

impl HealthTracker {
    /// A tracker whose endpoint starts healthy or not (a verdict carried over a reload).
    pub fn starting(healthy: bool) -> Self {
        Self { healthy, run: 0 }
    }

    /// Whether the endpoint counts as healthy.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Takes in one check's result; returns the new state when it changed.
    pub fn observe(&mut self, passed: bool, opts: &HealthCheckOptions) -> Option<bool> {
        if passed == self.healthy {
            self.run = 0;
            return None;
        }
        self.run += 1;
        let needed = if passed { opts.healthy_threshold } else { opts.unhealthy_threshold };
        if self.run >= needed.max(1) {
            self.healthy = passed;
            self.run = 0;
            Some(passed)
        } else {
            None
        }
    }
}

/// The path of the gRPC health protocol's check.
pub const GRPC_HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`; `status` is its `ServingStatus`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// `ServingStatus.SERVING`.
const SERVING: i32 = 1;
/// gRPC's `UNIMPLEMENTED` status code.
const UNIMPLEMENTED: &str = "12";

/// The body of a gRPC health check asking about `service`: one length-prefixed message.
pub fn grpc_check_body(service: &str) -> Bytes {
    let message = HealthCheckRequest { service: service.to_owned() }.encode_to_vec();
    let mut body = BytesMut::with_capacity(5 + message.len());
    body.put_u8(0);
    // A service name is far below 4 GiB.
    body.put_u32(message.len() as u32);
    body.put_slice(&message);
    body.freeze()
}

/// What one health check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// A 2xx answer (REST), or `SERVING` (gRPC).
    Passed,
    /// A gRPC endpoint that answers but has no health service: alive, and no more is known.
    NoHealthService,
    /// Anything else, and why, for the log.
    Failed(String),
}

impl Checked {
    /// Whether the check passes.
    pub fn passed(&self) -> bool {
        !matches!(self, Self::Failed(_))
    }
}

/// Reads a gRPC health check's answer: its HTTP status, its headers and trailers (the
/// `grpc-status`, which a trailers-only answer carries in its headers) and its body.
pub fn read_grpc_health(
    status: http::StatusCode,
    headers: &HeaderMap,
    trailers: Option<&HeaderMap>,
    body: &[u8],
) -> Checked {
    if status != http::StatusCode::OK {
        return Checked::Failed(format!("HTTP status {status}"));
    }
    let grpc_status = trailers
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok());
    match grpc_status {
        Some("0") => {}
        Some(UNIMPLEMENTED) => return Checked::NoHealthService,
        // What grpc.health.v1 answers for a service it does not know: most likely a misspelt name.
        Some("5") => {
            return Checked::Failed(
                "grpc-status 5 (NOT_FOUND): the server knows no service by the name asked about; check \
                 [service.health_check] grpc_service"
                    .to_owned(),
            );
        }
        Some(code) => return Checked::Failed(format!("grpc-status {code}")),
        None => return Checked::Failed("no grpc-status".to_owned()),
    }
    let Some((&0, rest)) = body.split_first() else {
        return Checked::Failed("no uncompressed message in the answer".to_owned());
    };
    let Some((len, rest)) = rest.split_first_chunk::<4>() else {
        return Checked::Failed("a message cut short".to_owned());
    };
    let Some(message) = rest.get(..u32::from_be_bytes(*len) as usize) else {
        return Checked::Failed("a message cut short".to_owned());
    };
    match HealthCheckResponse::decode(message) {
        Ok(r) if r.status == SERVING => Checked::Passed,
        Ok(r) => Checked::Failed(match r.status {
            0 => "status UNKNOWN".to_owned(),
            2 => "status NOT_SERVING".to_owned(),
            3 => "status SERVICE_UNKNOWN".to_owned(),
            n => format!("status {n}"),
        }),
        Err(e) => Checked::Failed(format!("an answer that is not a HealthCheckResponse: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trailers(status: &str) -> HeaderMap {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", status.parse().unwrap());
        t
    }

    fn answer(status: i32) -> Vec<u8> {
        let message = HealthCheckResponse { status }.encode_to_vec();
        let mut body = vec![0];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(&message);
        body
    }

    #[test]
    fn a_grpc_check_asks_about_the_named_service_in_one_uncompressed_message() {
        let body = grpc_check_body("kesehatan.v1.Rujukan");
        assert_eq!(body[0], 0, "not compressed");
        assert_eq!(u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize, body.len() - 5);
        let asked = HealthCheckRequest::decode(&body[5..]).unwrap();
        assert_eq!(asked.service, "kesehatan.v1.Rujukan");
        assert_eq!(&grpc_check_body("")[..], [0, 0, 0, 0, 0], "the whole server: an empty message");
    }

    #[test]
    fn a_grpc_check_passes_only_when_serving_or_when_there_is_no_health_service() {
        let ok = http::StatusCode::OK;
        let none = HeaderMap::new();
        assert_eq!(read_grpc_health(ok, &none, Some(&trailers("0")), &answer(1)), Checked::Passed);
        for (status, why) in [(2, "status NOT_SERVING"), (3, "status SERVICE_UNKNOWN"), (0, "status UNKNOWN")] {
            assert_eq!(read_grpc_health(ok, &none, Some(&trailers("0")), &answer(status)), Checked::Failed(why.into()));
        }
        // A trailers-only answer carries its status in the headers.
        let unimplemented = read_grpc_health(ok, &trailers("12"), None, &[]);
        assert_eq!(unimplemented, Checked::NoHealthService);
        assert!(unimplemented.passed());
        let unknown = read_grpc_health(ok, &trailers("5"), None, &[]);
        assert!(matches!(&unknown, Checked::Failed(why) if why.contains("grpc_service")), "{unknown:?}");
        let unavailable = read_grpc_health(ok, &trailers("14"), None, &[]);
        assert_eq!(unavailable, Checked::Failed("grpc-status 14".into()));
        assert!(!unavailable.passed());
        assert!(!read_grpc_health(http::StatusCode::BAD_GATEWAY, &none, None, &[]).passed());
        assert!(!read_grpc_health(ok, &none, None, &answer(1)).passed(), "no grpc-status at all");
        assert!(!read_grpc_health(ok, &none, Some(&trailers("0")), &answer(1)[..4]).passed(), "cut short");
        let mut compressed = answer(1);
        compressed[0] = 1;
        assert!(!read_grpc_health(ok, &none, Some(&trailers("0")), &compressed).passed());
    }

    fn opts() -> HealthCheckOptions {
        HealthCheckOptions { healthy_threshold: 2, unhealthy_threshold: 3, ..HealthCheckOptions::default() }
    }

    #[test]
    fn failures_in_a_row_take_an_endpoint_out_and_successes_bring_it_back() {
        let (o, mut t) = (opts(), HealthTracker::default());
        assert!(t.healthy());
        assert_eq!(t.observe(false, &o), None);
        assert_eq!(t.observe(false, &o), None);
        assert_eq!(t.observe(false, &o), Some(false));
        assert!(!t.healthy());
        assert_eq!(t.observe(true, &o), None);
        assert_eq!(t.observe(true, &o), Some(true));
        assert!(t.healthy());
    }

    #[test]
    fn an_interrupted_run_starts_over() {
        let (o, mut t) = (opts(), HealthTracker::default());
        t.observe(false, &o);
        t.observe(false, &o);
        t.observe(true, &o);
        assert_eq!(t.observe(false, &o), None);
        assert_eq!(t.observe(false, &o), None);
        assert!(t.healthy(), "two failures after a pass are not three in a row");
        assert_eq!(t.observe(false, &o), Some(false));
    }
}
