//! What the gateway shows of the upstream side: the attempts of an exchange in its audit record,
//! and the state of every service's endpoints (health, ejection, circuit) for status pages.

use http::Uri;
use splpd_adapters::upstreams::Attempt;
pub use splpd_adapters::upstreams::{CircuitStatus, EndpointStatus};
use splpd_certs::id::ServiceId;

use crate::audit::RecordBuilder;
use crate::exchange::Gateway;

/// Writes the attempts of an exchange into its record: the endpoint of the last attempt, the
/// retries before it, each attempt's outcome, and why the gateway retried, stopped or found no
/// endpoint at all.
pub fn record(record: &mut RecordBuilder, last: Option<&Uri>, attempts: &[Attempt], note: &str) {
    match last {
        Some(uri) => record.set_upstream(uri, u32::try_from(attempts.len().saturating_sub(1)).unwrap_or(u32::MAX)),
        // No endpoint took the request: nothing was forwarded.
        None if attempts.is_empty() => record.not_forwarded(),
        None => {}
    }
    record.set_attempts(attempts.iter().map(|a| (a.endpoint.as_str(), a.outcome.as_str())), note);
}

/// One service's endpoints as they stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    /// The service.
    pub service: ServiceId,
    /// Each endpoint, in configuration order.
    pub endpoints: Vec<EndpointStatus>,
}

impl Gateway {
    /// The state of every local service's endpoints now, ordered by service: whether each is
    /// offered requests, what health checks say, until when it is ejected, and its circuit.
    pub fn upstream_status(&self) -> Vec<ServiceStatus> {
        let snapshot = self.snapshot();
        let mut services: Vec<ServiceStatus> = snapshot
            .routes
            .values()
            .map(|route| ServiceStatus { service: route.id.clone(), endpoints: route.upstreams.status() })
            .collect();
        services.sort_by_key(|s| s.service.to_string());
        services
    }
}
