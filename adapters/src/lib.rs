//! The upstream side of splpd: how an exchange reaches the service that answers it: an agency's
//! HTTP/REST or gRPC backend, a peer region's gateway, or the national SPLP connector.
//!
//! The adapters arrive with the exchange path; this crate holds their shared vocabulary.

use splpd_certs::id::ServiceId;

/// Where an exchange for a service is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    /// An agency's own HTTP/REST backend.
    Rest,
    /// An agency's own gRPC backend.
    Grpc,
    /// Another region's gateway.
    Peer,
    /// The national SPLP connector.
    National,
}

/// The service an upstream answers for, with the kind of adapter that reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    /// The service being called.
    pub service: ServiceId,
    /// How it is reached.
    pub kind: UpstreamKind,
}
