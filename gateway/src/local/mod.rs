//! The gateway's own services, answered by the gateway itself on the listeners agencies already
//! use: gRPC health (`grpc.health.v1`), server reflection (`grpc.reflection.v1` and `v1alpha`),
//! the gRPC `splpd.v1.Directory`, and X-Road's REST metadata services (`GET /listClients`,
//! `/r1/{provider}/listMethods`, `/allowedMethods`, `/getOpenAPI?serviceCode=`).
//!
//! They are exchanges like any other: `exchange.rs` identifies the caller by its certificate,
//! checks the request's size limits and the audit log, and hands the call here; each call leaves
//! one audit record, and no answer is complete before its record is as durable as asked. In the
//! record the service is the gateway's own meta-service, `{gateway member}/{gateway code}/{name}`
//! (`ID/PEMDA/1602/gw1/listMethods`, `ID/PEMDA/1602/gw1/grpc.health.v1.Health`): see
//! [`Own::service_id`].
//!
//! One kind of recognised call is not answered here: a REST `listMethods`, `allowedMethods` or
//! `getOpenAPI` about a peer region's provider, which goes to that peer (`peer::route_directory`).

mod body;
pub mod directory;
mod grpc;
pub mod health;
mod reflection;
mod rest;

use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;
use splpd_certs::id::{ClientId, ServerId, ServiceId};

use crate::audit::{AuditMode, AuditSink, RecordBuilder};
use crate::config::Protocol;
use crate::error::GatewayError;
use crate::exchange::ResponseBody;
use crate::forward::{MeteredRequestBody, RequestHasher, xroad};
use crate::runtime::Snapshot;

pub use self::directory::{Directory, DirectoryError};

/// One of X-Road's REST metadata services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meta {
    /// `GET /listClients`: the members and subsystems known here.
    ListClients,
    /// `GET /r1/{provider}/listMethods`: a provider's services.
    ListMethods,
    /// `GET /r1/{provider}/allowedMethods`: those of a provider's services the caller may call.
    AllowedMethods,
    /// `GET /r1/{provider}/getOpenAPI?serviceCode=`: a REST service's OpenAPI document.
    GetOpenApi,
}

impl Meta {
    /// Every metadata service.
    pub const ALL: [Self; 4] = [Self::ListClients, Self::ListMethods, Self::AllowedMethods, Self::GetOpenApi];

    /// Its name in X-Road's protocol, which is also its service code.
    pub fn code(self) -> &'static str {
        match self {
            Self::ListClients => "listClients",
            Self::ListMethods => "listMethods",
            Self::AllowedMethods => "allowedMethods",
            Self::GetOpenApi => "getOpenAPI",
        }
    }

    fn under_provider(code: &str) -> Option<Self> {
        [Self::ListMethods, Self::AllowedMethods, Self::GetOpenApi].into_iter().find(|m| m.code() == code)
    }
}

/// One of the gateway's own gRPC services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnGrpc {
    /// `grpc.health.v1.Health`.
    Health,
    /// `grpc.reflection.v1.ServerReflection`.
    Reflection,
    /// `grpc.reflection.v1alpha.ServerReflection`, which older clients (grpcurl among them) try
    /// first or fall back to.
    ReflectionV1Alpha,
    /// `splpd.v1.Directory`, the gRPC form of the metadata services.
    Directory,
}

impl OwnGrpc {
    /// Every own gRPC service.
    pub const ALL: [Self; 4] = [Self::Health, Self::Reflection, Self::ReflectionV1Alpha, Self::Directory];

    /// Its fully-qualified gRPC service name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Health => "grpc.health.v1.Health",
            Self::Reflection => "grpc.reflection.v1.ServerReflection",
            Self::ReflectionV1Alpha => "grpc.reflection.v1alpha.ServerReflection",
            Self::Directory => "splpd.v1.Directory",
        }
    }

    /// The own service of this fully-qualified name, if it is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// A call the gateway answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Own {
    /// An X-Road REST metadata service.
    Rest(Meta),
    /// One of the gateway's gRPC services.
    Grpc(OwnGrpc),
}

impl Own {
    /// REST or gRPC, for the audit record.
    pub fn protocol(self) -> Protocol {
        match self {
            Self::Rest(_) => Protocol::Rest,
            Self::Grpc(_) => Protocol::Grpc,
        }
    }

    /// The service the audit record and the `X-Road-Service` header name: the gateway's own
    /// meta-service, its member and server code standing where a provider's would, and the
    /// X-Road name (`listMethods`) or the gRPC service name (`grpc.health.v1.Health`) as the
    /// service code. The provider a REST call asked about is in the record's path. `None` only if
    /// the gateway's identifier could not form one, which its parts' syntax rules out.
    pub fn service_id(self, gateway: &ServerId) -> Option<ServiceId> {
        let code = match self {
            Self::Rest(meta) => meta.code(),
            Self::Grpc(api) => api.name(),
        };
        format!("{}/{}/{code}", gateway.member(), gateway.code()).parse().ok()
    }
}

impl Own {
    /// Every own service: the REST metadata services, then the gRPC ones.
    pub fn all() -> impl Iterator<Item = Self> {
        Meta::ALL.into_iter().map(Self::Rest).chain(OwnGrpc::ALL.into_iter().map(Self::Grpc))
    }
}

/// Whether a request is for the gateway itself, and which service. A gRPC call to one of
/// [`OwnGrpc`]'s names is, unless `x-road-service` names an agency's service (an agency's own
/// health or reflection is reached that way, through the gateway). A REST call is when its path is
/// `/listClients` or `/r1/{four identifier parts}/{listMethods|allowedMethods|getOpenAPI}`; those
/// service codes are reserved for the metadata services (the configuration check refuses them).
/// Recognised is not yet answered here: see `peer::route_directory` for those that go to a peer.
pub fn recognise<B>(req: &Request<B>, grpc: bool) -> Option<Own> {
    let path = req.uri().path();
    if grpc {
        if req.headers().contains_key(&xroad::SERVICE) {
            return None;
        }
        let (service, _method) = path.strip_prefix('/')?.split_once('/')?;
        return OwnGrpc::from_name(service).map(Own::Grpc);
    }
    if path == "/listClients" {
        return Some(Own::Rest(Meta::ListClients));
    }
    // On the path of every REST call: the last segment is compared first, which settles nearly
    // every call at once.
    let (provider, code) = path.strip_prefix("/r1/")?.rsplit_once('/')?;
    let meta = Meta::under_provider(code)?;
    (provider.split('/').count() == 4).then_some(Own::Rest(meta))
}

/// Whether a service code is reserved for X-Road's metadata services.
pub fn is_reserved_service_code(code: &str) -> bool {
    Meta::ALL.iter().any(|m| m.code() == code)
}

/// What an own call runs with: the configuration in force, who is calling, and where its record
/// goes. The gRPC services find it in their request's extensions.
#[derive(Debug, Clone)]
pub struct Call {
    /// The configuration the exchange started on.
    pub snapshot: Arc<Snapshot>,
    /// The identified caller.
    pub client: ClientId,
    /// The audit log.
    pub audit: Arc<dyn AuditSink>,
    /// The durability the record needs before the answer completes.
    pub mode: AuditMode,
    /// The exchange's X-Road-Id.
    pub exchange_id: String,
    /// The meta-service, as [`Own::service_id`] names it.
    pub service: Option<ServiceId>,
    /// Maintenance mode, in which the gateway's health says it is not serving.
    pub maintenance: Arc<crate::admin::Maintenance>,
}

/// Answers an own call, completing and appending its record. On a refusal the record comes back
/// with the error, for the exchange path to answer and log as it does every refusal.
pub async fn serve(
    own: Own,
    call: Call,
    record: RecordBuilder,
    req: Request<Incoming>,
) -> Result<http::Response<ResponseBody>, (RecordBuilder, GatewayError)> {
    let (parts, body) = req.into_parts();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let hasher = RequestHasher::new(parts.method.as_str(), target, &parts.headers);
    let limit = call.snapshot.limits.max_request_body.bytes();
    let (body, summary) = MeteredRequestBody::new(body, limit, hasher, None);
    let pending = body::Pending::new(record, Arc::clone(&call.audit), call.mode, own.protocol());
    if matches!(own, Own::Grpc(_)) && parts.method != http::Method::POST {
        let err = GatewayError::BadRequest(format!("a gRPC call is a POST, not a {}", parts.method));
        return Err((pending.take(), err));
    }
    match own {
        Own::Rest(meta) => rest::serve(meta, &call, &parts, body, summary, pending).await,
        Own::Grpc(api) => Ok(grpc::serve(api, call, parts, body, summary, pending).await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(path);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn grpc_calls_to_own_services_are_recognised_unless_an_agency_service_is_named() {
        for api in OwnGrpc::ALL {
            let path = format!("/{}/Some", api.name());
            assert_eq!(recognise(&req(&path, &[]), true), Some(Own::Grpc(api)));
            let named = req(&path, &[("x-road-service", "ID/PEMDA/1602/DINKES/rujukan")]);
            assert_eq!(recognise(&named, true), None, "{path}");
        }
        assert_eq!(recognise(&req("/kesehatan.v1.Rujukan/Kirim", &[]), true), None);
        assert_eq!(recognise(&req("/grpc.health.v1.Healthy/Check", &[]), true), None);
        // A gRPC call is never taken for a REST metadata service, nor the other way round.
        assert_eq!(recognise(&req("/listClients", &[]), true), None);
        assert_eq!(recognise(&req("/grpc.health.v1.Health/Check", &[]), false), None);
    }

    #[test]
    fn rest_metadata_paths_are_recognised() {
        let r = |p: &str| recognise(&req(p, &[]), false);
        assert_eq!(r("/listClients"), Some(Own::Rest(Meta::ListClients)));
        assert_eq!(r("/listClients?xRoadInstance=ID"), Some(Own::Rest(Meta::ListClients)));
        assert_eq!(r("/r1/ID/PEMDA/1602/DISDUKCAPIL/listMethods"), Some(Own::Rest(Meta::ListMethods)));
        assert_eq!(r("/r1/ID/PEMDA/1602/DISDUKCAPIL/allowedMethods"), Some(Own::Rest(Meta::AllowedMethods)));
        assert_eq!(
            r("/r1/ID/PEMDA/1602/DISDUKCAPIL/getOpenAPI?serviceCode=nik-verify"),
            Some(Own::Rest(Meta::GetOpenApi))
        );
        for other in [
            "/r1/ID/PEMDA/1602/DISDUKCAPIL/nik-verify/nik/1",
            "/r1/ID/PEMDA/1602/DISDUKCAPIL/nik-verify/listMethods",
            "/r1/ID/PEMDA/1602/listMethods",
            "/r1/ID/PEMDA/1602/DISDUKCAPIL/listClients",
            "/listClients/x",
            "/",
        ] {
            assert_eq!(r(other), None, "{other}");
        }
    }

    #[test]
    fn own_calls_are_logged_under_the_gateways_meta_services() {
        let gw: ServerId = "ID/PEMDA/1602/gw1".parse().unwrap();
        assert_eq!(Own::Rest(Meta::ListMethods).service_id(&gw).unwrap().to_string(), "ID/PEMDA/1602/gw1/listMethods");
        assert_eq!(
            Own::Grpc(OwnGrpc::ReflectionV1Alpha).service_id(&gw).unwrap().to_string(),
            "ID/PEMDA/1602/gw1/grpc.reflection.v1alpha.ServerReflection"
        );
        assert!(is_reserved_service_code("getOpenAPI") && !is_reserved_service_code("nik-verify"));
    }
}
