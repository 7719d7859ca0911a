//! The upstream side of splpd: how an exchange reaches the service that answers it: an agency's
//! HTTP/REST or gRPC backend, a peer region's gateway, or the national SPLP connector.

pub mod http;
pub mod national;
pub mod oauth;
pub mod peer;
