//! The upstream side of splpd: how an exchange reaches the service that answers it: an agency's
//! HTTP/REST or gRPC backend, a peer region's gateway, or the national SPLP connector. The
//! resilience units (balancing, health checks, outlier ejection, circuit breaking, retries) are
//! each testable without the network; `upstreams` puts them together for one service.

pub mod arriving;
pub mod balance;
pub mod circuit;
pub mod clock;
pub mod ended;
pub mod health;
pub mod http;
pub mod national;
pub mod oauth;
pub mod outlier;
pub mod peer;
pub mod retry;
pub mod upstreams;
