//! The splpd gateway: configuration, and (as the exchange path lands) the pipeline stages,
//! registry, policy, audit log, admin and telemetry. The `splpd` binary only wires these.

pub mod admin;
pub mod audit;
pub mod authorize;
pub mod coalesce;
pub mod config;
pub mod edge;
pub mod error;
pub mod exchange;
pub mod forward;
pub mod grpc;
pub mod identify;
pub mod limit;
pub mod linger;
pub mod local;
pub mod log_budget;
pub mod memory;
pub mod peer;
pub mod refusals;
pub mod reload;
pub(crate) mod respond;
pub mod runtime;
pub mod send_timeout;
pub mod server;
pub mod target;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod workers;
