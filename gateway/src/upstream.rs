//! What the gateway shows of the upstream side: the attempts of an exchange in its audit record,
//! what to check when a connection failed (for the operator's log), and the state of every
//! service's endpoints (health, ejection, circuit) for status pages.

use http::Uri;
use splpd_adapters::http::{ConnectFault, UpstreamError};
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

/// Whose endpoint a failed connection was to, for [`connect_hint`].
pub(crate) enum Side<'a> {
    /// A service's upstream; `tls` for an `https://` one.
    Service { tls: bool },
    /// A peer gateway, trusted through `anchor`, identified as `id`.
    Peer { anchor: &'a str, id: &'a splpd_certs::id::ServerId },
}

/// What the operator should check after a failed connection, following the side the failure
/// points to ([`ConnectFault`]); `None` when there is nothing particular to say.
pub(crate) fn connect_hint(err: &UpstreamError, side: &Side<'_>) -> Option<String> {
    let fault = match err {
        UpstreamError::Connect { fault, .. } | UpstreamError::Broken { fault, .. } => *fault,
        UpstreamError::Timeout { .. } | UpstreamError::Saturated { .. } => return None,
    };
    let peer_certificate = |anchor: &str, id: &splpd_certs::id::ServerId| {
        format!(
            "that its certificate is issued by trust anchor {anchor:?} for the endpoint's host and carries \
             urn:splp:server:{}",
            id.part_strs().collect::<Vec<_>>().join(":")
        )
    };
    let hint = match (side, fault) {
        (Side::Service { .. }, Some(ConnectFault::Unreachable)) => {
            "check that the service runs and listens there".into()
        }
        (Side::Service { .. }, Some(ConnectFault::RefusedByFarSide)) => {
            "the service refused the gateway's certificate in the TLS handshake, or wanted one: if it wants the \
             gateway's own certificate, set [service.tls] client_cert = true; if it has it, the service must trust \
             the CA that issued it"
                .into()
        }
        (Side::Service { .. }, Some(ConnectFault::TheirCertificate)) => {
            "check that its certificate is issued for the name in the URL or [service.tls] server_name, by a CA the \
             gateway trusts ([service.tls] ca, or a trust anchor)"
                .into()
        }
        (Side::Service { .. }, Some(ConnectFault::NotTls)) => {
            "nothing speaks TLS there: is the upstream http:// rather than https://?".into()
        }
        (Side::Service { tls: true }, None) => "for an https:// upstream, check both sides of the TLS handshake: its \
                                               certificate (for the name in the URL or [service.tls] server_name, by \
                                               a CA the gateway trusts), and whether it wants the gateway's own \
                                               ([service.tls] client_cert = true)"
            .into(),
        (Side::Service { tls: false }, None) => return None,
        (Side::Peer { .. }, Some(ConnectFault::Unreachable)) => {
            "check that the peer gateway runs and listens there".into()
        }
        (Side::Peer { .. }, Some(ConnectFault::RefusedByFarSide)) => {
            "the peer refused this gateway's certificate in the handshake: it needs a [[trust_anchor]] for our CA, and \
             our certificate must be valid and not revoked on that CA's CRL"
                .into()
        }
        (Side::Peer { anchor, id }, Some(ConnectFault::TheirCertificate)) => {
            format!("check {}", peer_certificate(anchor, id))
        }
        (Side::Peer { .. }, Some(ConnectFault::NotTls)) => {
            "nothing speaks TLS there: is it the peer's exchange listener?".into()
        }
        (Side::Peer { anchor, id }, None) => format!(
            "check its endpoints, {}, and that it trusts our CA for this gateway's certificate",
            peer_certificate(anchor, id)
        ),
    };
    Some(hint)
}

/// What the operator should check after a connection to the national SPLP's API manager (its
/// API or token endpoint) failed, following the side the failure points to.
pub(crate) fn national_hint(fault: Option<ConnectFault>) -> Option<&'static str> {
    Some(match fault? {
        ConnectFault::Unreachable => {
            "check base_url and token_url in [national], and that this host may reach the API manager (a firewall \
             or a proxy in between?)"
        }
        ConnectFault::RefusedByFarSide => {
            "the API manager ended the TLS handshake with a certificate alert: ask its operators what it expects of \
             this gateway"
        }
        ConnectFault::TheirCertificate => {
            "check that the API manager's certificate is issued for the host in the URL by the CA of the \
             [[trust_anchor]] that [national] trust_anchor names (without that key, of an anchor with no scopes or \
             of this region: a neighbour's CA does not vouch for it)"
        }
        ConnectFault::NotTls => "nothing speaks TLS there: check the port in [national] base_url and token_url",
    })
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
