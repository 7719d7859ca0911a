//! End-to-end test support: a region PKI made with the project's own CA tooling ([`pki`]), a
//! recording agency service over HTTP or HTTPS ([`upstream`]), a gateway started in-process from
//! a TOML configuration ([`region`]), HTTPS/HTTP clients that speak HTTP/1.1 or HTTP/2 with or
//! without a client certificate ([`client`]), a gRPC test service with its tonic client
//! ([`grpc`]), a stand-in OpenTelemetry collector ([`otlp`]), and the gateway's log as its operator
//! reads it ([`logs`]). Everything runs on loopback with real TLS.

// Test fixtures fail loudly: a panic is the right report for a broken test setup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod client;
pub mod grpc;
pub mod logs;
pub mod national;
pub mod otlp;
pub mod pki;
pub mod region;
pub mod relay;
pub mod upstream;

pub use client::{BoxError, Call, CallBody, Proto, Reply, request_hash, sha256};
pub use pki::{ClientCert, Pki};
pub use region::{PUBLIC, Region, RegionBuilder};
pub use upstream::{Received, Upstream, closed_port};
