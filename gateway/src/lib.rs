//! The splpd gateway: configuration, and (as the exchange path lands) the pipeline stages,
//! registry, policy, audit log, admin and telemetry. The `splpd` binary only wires these.

pub mod authorize;
pub mod config;
pub mod limit;
