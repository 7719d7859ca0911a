//! `grpc.health.v1.Health` of the gateway itself. The overall status (service `""`, or the name
//! of one of the gateway's own gRPC services) is `SERVING` while the audit log takes records
//! (without it the gateway refuses every exchange, so it cannot serve) and maintenance mode is
//! off (an operator is taking the gateway out of rotation). A service of the registry,
//! asked for by its X-Road identifier (`ID/PEMDA/1602/DINKES/rujukan`) or by a gRPC service name
//! it is mapped to (`kesehatan.v1.Rujukan`), is `SERVING` when the gateway is and the service
//! has endpoints that answer ([`answering`]). Anything else is `NOT_FOUND` to `Check` and
//! `SERVICE_UNKNOWN` to `Watch`, as the health protocol asks.

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use splpd_certs::id::ServiceId;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::{Call, OwnGrpc};
use crate::runtime::Route;

/// How often a `Watch` looks again. The audit log and the upstream checks have no change
/// notification to subscribe to; a look is a few loads, so once a second costs nothing and
/// reports a change within a second.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Whether a service has an endpoint that answers: one that its active health checks (when it
/// has them) find healthy and that passive outlier detection has not ejected. A circuit at its
/// limit does not count against it: that is load, not health.
pub fn answering(route: &Route) -> bool {
    route.upstreams.status().iter().any(|e| e.healthy && e.ejected_until.is_none())
}

/// The status of `service` as the health protocol names it, or `None` when it is not known here.
pub fn status_of(call: &Call, service: &str) -> Option<ServingStatus> {
    let (snapshot, audit) = (&call.snapshot, &call.audit);
    let up = |serving: bool| if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
    let gateway = audit.health().is_available() && !call.maintenance.is_on();
    if service.is_empty() || OwnGrpc::from_name(service).is_some() {
        return Some(up(gateway));
    }
    let route = match service.parse::<ServiceId>() {
        Ok(id) => snapshot.routes.get(&id),
        Err(_) => snapshot.grpc_services.get(service).and_then(|id| snapshot.routes.get(id)),
    }?;
    Some(up(gateway && answering(route)))
}

fn context<T>(request: &Request<T>) -> Result<Call, Status> {
    request
        .extensions()
        .get::<Call>()
        .cloned()
        .ok_or_else(|| Status::internal("the health service was called outside an exchange"))
}

/// `service` is not known here: what may be asked for instead, with one of this gateway's own
/// services as the example (a service of another region is its gateway's to report on).
fn unknown(call: &Call, service: &str) -> Status {
    let example = call.snapshot.routes.keys().map(ToString::to_string).min();
    let example = example.map_or_else(String::new, |id| format!(" such as {id}"));
    Status::not_found(format!(
        "{service:?} is not known here; ask for \"\" (the gateway), the identifier of one of this gateway's own \
         services{example}, or a gRPC service name the gateway routes"
    ))
}

/// The gateway's health service.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct HealthApi;

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthApi {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let call = context(&request)?;
        let service = &request.get_ref().service;
        let status = status_of(&call, service).ok_or_else(|| unknown(&call, service))?;
        Ok(Response::new(HealthCheckResponse { status: status.into() }))
    }

    type WatchStream = WatchStream;

    /// Sends the status at once, then again whenever it changes, until the caller goes away. It
    /// answers from the configuration the call started on, as every exchange does.
    async fn watch(&self, request: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let call = context(&request)?;
        let service = request.into_inner().service;
        let state = (call, service, None::<ServingStatus>);
        let stream = futures_util::stream::unfold(state, |(call, service, last)| async move {
            loop {
                let now = status_of(&call, &service).unwrap_or(ServingStatus::ServiceUnknown);
                if last != Some(now) {
                    let item = Ok(HealthCheckResponse { status: now.into() });
                    return Some((item, (call, service, Some(now))));
                }
                tokio::time::sleep(WATCH_INTERVAL).await;
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
