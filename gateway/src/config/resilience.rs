//! The resilience settings of a service (`[service.health_check]`, `[service.outlier]`,
//! `[service.circuit]`, `[service.retry]`): their shape and defaults, their checks, and the
//! policy the upstream side runs them with (`splpd_adapters::upstreams::Policy`).

use serde::{Deserialize, Serialize};
use splpd_adapters::circuit::CircuitOptions;
use splpd_adapters::health::HealthCheckOptions;
use splpd_adapters::outlier::OutlierOptions;
use splpd_adapters::retry::RetryOptions;
use splpd_adapters::upstreams::Policy;

use super::diag::{Locator, Seg, at};
use super::model::{Protocol, Service};
use super::units::Span;

/// `[service.health_check]`: active health checks, on when the table is present.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    /// The path asked for under each endpoint's base URL; a REST endpoint passes with 2xx.
    pub path: String,
    /// For a gRPC service, the service named in the `grpc.health.v1.Health/Check` asked of each
    /// endpoint; empty asks about the server as a whole.
    pub grpc_service: String,
    /// Time between checks.
    pub interval: Span,
    /// Time allowed for an answer.
    pub timeout: Span,
    /// Passed checks in a row that bring an endpoint back.
    pub healthy_threshold: u32,
    /// Failed checks in a row that take an endpoint out.
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        let d = HealthCheckOptions::default();
        Self {
            path: d.path,
            grpc_service: d.grpc_service,
            interval: Span(d.interval),
            timeout: Span(d.timeout),
            healthy_threshold: d.healthy_threshold,
            unhealthy_threshold: d.unhealthy_threshold,
        }
    }
}

/// `[service.outlier]`: passive ejection of endpoints that fail in a row.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Outlier {
    /// Gateway failures in a row that eject an endpoint.
    pub consecutive_failures: u32,
    /// The first ejection's length; doubled for each ejection soon after the last.
    pub base_ejection: Span,
    /// The longest ejection.
    pub max_ejection: Span,
    /// Most of the endpoints ejected at once, in percent (at least one, never all, and only
    /// while another endpoint can take calls).
    pub max_ejected_percent: u32,
}

impl Default for Outlier {
    fn default() -> Self {
        let d = OutlierOptions::default();
        Self {
            consecutive_failures: d.consecutive_failures,
            base_ejection: Span(d.base_ejection),
            max_ejection: Span(d.max_ejection),
            max_ejected_percent: d.max_ejected_percent,
        }
    }
}

/// `[service.circuit]`: limits per endpoint, and the breaker that opens when they overflow.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Circuit {
    /// Most connections open to one endpoint.
    pub max_connections: u32,
    /// Most requests (gRPC calls) in flight to one endpoint.
    pub max_requests: u32,
    /// Most requests waiting for a slot; one more opens the circuit.
    pub max_pending: u32,
    /// How long an opened circuit refuses before it lets a probe through.
    pub open_for: Span,
}

impl Default for Circuit {
    fn default() -> Self {
        let d = CircuitOptions::default();
        Self {
            max_connections: d.max_connections,
            max_requests: d.max_requests,
            max_pending: d.max_pending,
            open_for: Span(d.open_for),
        }
    }
}

/// `[service.retry]`: retries of idempotent requests on another endpoint, within a budget.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    /// Attempts per request, the first included; 1 turns retries off.
    pub max_attempts: u32,
    /// Retries may add at most this percentage of the service's requests…
    pub budget_percent: u32,
    /// …plus this many per second.
    pub min_per_second: u32,
    /// Retry POST and PATCH too: only for a service whose every endpoint is safe to repeat.
    pub non_idempotent: bool,
}

impl Default for Retry {
    fn default() -> Self {
        let d = RetryOptions::default();
        Self {
            max_attempts: d.max_attempts,
            budget_percent: d.budget_percent,
            min_per_second: d.min_per_second,
            non_idempotent: d.non_idempotent,
        }
    }
}

/// The policy the upstream side runs a service with.
pub fn policy(s: &Service) -> Policy {
    Policy {
        service: s.id.to_string(),
        health: s.health_check.as_ref().map(|h| HealthCheckOptions {
            path: h.path.clone(),
            grpc_service: h.grpc_service.clone(),
            interval: h.interval.0,
            timeout: h.timeout.0,
            healthy_threshold: h.healthy_threshold,
            unhealthy_threshold: h.unhealthy_threshold,
        }),
        outlier: OutlierOptions {
            consecutive_failures: s.outlier.consecutive_failures,
            base_ejection: s.outlier.base_ejection.0,
            max_ejection: s.outlier.max_ejection.0,
            max_ejected_percent: s.outlier.max_ejected_percent,
        },
        circuit: CircuitOptions {
            max_connections: s.circuit.max_connections,
            max_requests: s.circuit.max_requests,
            max_pending: s.circuit.max_pending,
            open_for: s.circuit.open_for.0,
        },
        retry: RetryOptions {
            max_attempts: s.retry.max_attempts,
            budget_percent: s.retry.budget_percent,
            min_per_second: s.retry.min_per_second,
            non_idempotent: s.retry.non_idempotent,
        },
        grpc: s.protocol == Protocol::Grpc,
    }
}

/// The most attempts a request may be given: more would only pile load on a failing service.
const MAX_ATTEMPTS: u32 = 10;

/// Checks the resilience settings of service `i`, reporting each mistake at its place.
pub(super) fn check(loc: &mut Locator<'_>, i: usize, s: &Service) {
    let mut err = |path: &[Seg<'_>], message: String, hint: &str| loc.error(path, message, Some(hint.to_owned()));
    let positive = "give a positive number, or leave the key out for the default";
    let duration = "give a positive duration such as \"5s\", or leave the key out for the default";
    if let Some(h) = &s.health_check {
        if !h.path.starts_with('/') || h.path.parse::<http::uri::PathAndQuery>().is_err() {
            err(
                at!["service", i, "health_check", "path"],
                format!("{:?} is not a path", h.path),
                "write the path under the endpoint's base URL, starting with /, e.g. \"/health\"",
            );
        }
        if s.protocol != Protocol::Grpc && !h.grpc_service.is_empty() {
            err(
                at!["service", i, "health_check", "grpc_service"],
                "grpc_service is set on a REST service".to_owned(),
                "leave it out: a REST service's endpoints are checked at `path`; grpc_service names what a gRPC \
                 service's endpoints are asked about",
            );
        }
        for (key, span) in [("interval", h.interval), ("timeout", h.timeout)] {
            if span.0.is_zero() {
                err(at!["service", i, "health_check", key], format!("{key} is zero"), duration);
            }
        }
        for (key, n) in [("healthy_threshold", h.healthy_threshold), ("unhealthy_threshold", h.unhealthy_threshold)] {
            if n == 0 {
                err(at!["service", i, "health_check", key], format!("{key} is 0"), positive);
            }
        }
    }
    let o = &s.outlier;
    if o.consecutive_failures == 0 {
        err(
            at!["service", i, "outlier", "consecutive_failures"],
            "consecutive_failures is 0".into(),
            "give the number of failures in a row that eject an endpoint, e.g. 5",
        );
    }
    for (key, span) in [("base_ejection", o.base_ejection), ("max_ejection", o.max_ejection)] {
        if span.0.is_zero() {
            err(at!["service", i, "outlier", key], format!("{key} is zero"), duration);
        }
    }
    if o.max_ejection.0 < o.base_ejection.0 {
        err(
            at!["service", i, "outlier", "max_ejection"],
            "max_ejection is shorter than base_ejection".into(),
            "max_ejection caps the doubling ejections; make it at least base_ejection",
        );
    }
    if o.max_ejected_percent > 100 {
        err(
            at!["service", i, "outlier", "max_ejected_percent"],
            format!("max_ejected_percent is {}", o.max_ejected_percent),
            "give a percentage from 0 to 100",
        );
    }
    let c = &s.circuit;
    for (key, n) in [("max_connections", c.max_connections), ("max_requests", c.max_requests)] {
        if n == 0 {
            err(at!["service", i, "circuit", key], format!("{key} is 0, which would refuse every call"), positive);
        }
    }
    if c.open_for.0.is_zero() {
        err(at!["service", i, "circuit", "open_for"], "open_for is zero".into(), duration);
    }
    let r = &s.retry;
    if r.max_attempts == 0 || r.max_attempts > MAX_ATTEMPTS {
        err(
            at!["service", i, "retry", "max_attempts"],
            format!("max_attempts is {}", r.max_attempts),
            "give 1 (no retries) to 10 attempts, the first included; 3 is the default",
        );
    }
    if r.budget_percent > 100 {
        err(
            at!["service", i, "retry", "budget_percent"],
            format!("budget_percent is {}", r.budget_percent),
            "give a percentage from 0 to 100: retries may add at most that share of the requests",
        );
    }
    if r.non_idempotent && s.protocol == Protocol::Grpc {
        err(
            at!["service", i, "retry", "non_idempotent"],
            "non_idempotent is set on a gRPC service".into(),
            "gRPC calls are retried only when the connection was refused, before anything was sent; remove the key",
        );
    }
}
