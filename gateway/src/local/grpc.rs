//! The gateway's own gRPC services, served by tonic's generated servers: `splpd.v1.Directory`
//! (the metadata services' gRPC form, answered from the same directory), health and reflection.
//! The call's context ([`Call`]) travels in the request's extensions; the answer streams back
//! through [`OwnBody`], which completes the audit record when it ends.

use std::convert::Infallible;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http::request::Parts;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body as _, Incoming};
use splpd_certs::id::{ClientId, ServiceId};
use splpd_proto::v1 as pb;
use splpd_proto::v1::directory_server::{Directory, DirectoryServer};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::HealthServer;
use tower::ServiceExt as _;
use tower::util::BoxCloneSyncService;

use super::body::{OwnBody, Pending, SummaryRx, add_request};
use super::directory::{ClientEntry, ServiceEntry};
use super::health::HealthApi;
use super::{Call, OwnGrpc, reflection};
use crate::audit::BodyHasher;
use crate::config::Protocol;
use crate::error::GatewayError;
use crate::exchange::{self, ResponseBody};
use crate::forward::{self, MeteredRequestBody, xroad};
use crate::grpc;

type OwnService = BoxCloneSyncService<http::Request<tonic::body::Body>, http::Response<tonic::body::Body>, Infallible>;

/// The reflection services, built once: they decode their descriptor sets when built.
struct Apis {
    reflection: Result<OwnService, String>,
    reflection_v1alpha: Result<OwnService, String>,
}

static APIS: LazyLock<Apis> = LazyLock::new(|| Apis {
    reflection: reflection::v1().map(BoxCloneSyncService::new).map_err(|e| e.to_string()),
    reflection_v1alpha: reflection::v1alpha().map(BoxCloneSyncService::new).map_err(|e| e.to_string()),
});

impl Apis {
    /// The service, for a request of at most `limit` bytes (`[limits] max_request_body`):
    /// health and the directory are built per call (a wrapper, no work) with that as tonic's
    /// message limit, so that a caller meets the gateway's limit and not tonic's 4 MiB. tonic
    /// sets aside room for a message's declared length before reading it, so the limit must be
    /// the gateway's, never none.
    fn get(&self, api: OwnGrpc, limit: u64) -> Result<OwnService, GatewayError> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let built = match api {
            OwnGrpc::Health => {
                return Ok(BoxCloneSyncService::new(HealthServer::new(HealthApi).max_decoding_message_size(limit)));
            }
            OwnGrpc::Directory => {
                return Ok(BoxCloneSyncService::new(
                    DirectoryServer::new(DirectoryApi).max_decoding_message_size(limit),
                ));
            }
            OwnGrpc::Reflection => &self.reflection,
            OwnGrpc::ReflectionV1Alpha => &self.reflection_v1alpha,
        };
        built
            .clone()
            .map_err(|why| GatewayError::Internal(format!("server reflection could not be set up: {why}").into()))
    }
}

/// How long a call to one of the gateway's own gRPC services may take for its request message
/// to arrive (a stream's answer starts at once, and is not held to it).
pub(crate) const OWN_CALL_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Answers a call to one of the gateway's gRPC services.
pub(super) async fn serve(
    api: OwnGrpc,
    call: Call,
    parts: Parts,
    body: MeteredRequestBody<Incoming>,
    mut summary: SummaryRx,
    pending: Pending,
) -> http::Response<ResponseBody> {
    let method = parts.uri.path().rsplit('/').next().unwrap_or_default().to_owned();
    let method = method.as_str();
    // The caller's own deadline, when nearer (a malformed one was refused before).
    let deadline = grpc::timeout(&parts.headers).ok().flatten().filter(|d| *d < OWN_CALL_WAIT);
    let mut req = http::Request::from_parts(parts, tonic::body::Body::new(body));
    req.extensions_mut().insert(call.clone());
    let limit = call.snapshot.limits.max_request_body.bytes();
    // A unary call is answered once its whole request message is in: a caller that declares
    // a message and stops sending it must not hold the call (and its memory) for ever.
    let resp = match APIS.get(api, limit) {
        Ok(service) => match tokio::time::timeout(deadline.unwrap_or(OWN_CALL_WAIT), service.oneshot(req)).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(never)) => match never {},
            Err(_) => status(&match deadline {
                Some(d) => GatewayError::DeadlineExceeded(format!(
                    "the call's own deadline of {d:?} (grpc-timeout) passed before its request message arrived whole"
                )),
                None => GatewayError::RequestTimeout(format!(
                    "the request message did not arrive whole within {OWN_CALL_WAIT:?}; send it at once"
                )),
            })
            .into_http(),
        },
        Err(err) => status(&err).into_http(),
    };
    let mut record = pending.take();
    let (mut parts, body) = resp.into_parts();
    in_scheme(&mut parts.headers, api, method, limit);
    record.set_status(parts.status);
    let h = &mut parts.headers;
    forward::set(h, xroad::ID, &call.exchange_id);
    forward::set(h, xroad::CLIENT, &call.client.to_string());
    if let Some(service) = &call.service {
        forward::set(h, xroad::SERVICE, &service.to_string());
    }
    if !body.is_end_stream() {
        let body = OwnBody::new(body, record, summary, Arc::clone(&call.audit), call.mode);
        return http::Response::from_parts(parts, http_body_util::combinators::UnsyncBoxBody::new(body));
    }
    // A trailers-only answer (a refusal): its status is in the headers, and the answer waits for
    // its record, as every refusal does.
    add_request(&mut record, &mut summary);
    record.set_response_body(BodyHasher::new().finish());
    if let Some(code) = grpc::status_in(&parts.headers) {
        record.set_grpc_status(code);
    }
    if let Some(e) = parts.headers.get(&xroad::ERROR).and_then(|v| v.to_str().ok()) {
        record.set_error_type(e);
    }
    match call.audit.append(record.finish(), call.mode).await {
        Ok(()) => {
            http::Response::from_parts(parts, Full::new(Bytes::new()).map_err(|never| match never {}).boxed_unsync())
        }
        Err(e) => {
            let err = GatewayError::AuditUnavailable(format!("the exchange could not be logged: {e}"));
            exchange::answer(true, &call.exchange_id, Some(&call.client), call.service.as_ref(), &err)
        }
    }
}

/// Puts a status that tonic made itself, without the gateway's words, into the gateway's scheme
/// (`x-road-error` on every refusal, a caller's mistake said as one): a request message that
/// does not decode (tonic's INTERNAL, the caller's INVALID_ARGUMENT here), one over the size
/// limit, a method the service does not have (UNIMPLEMENTED, with no words), and health's
/// NOT_FOUND. Statuses the gateway made already carry their X-Road type and are left alone.
fn in_scheme(h: &mut http::HeaderMap, api: OwnGrpc, method: &str, limit: u64) {
    let Some(code) = grpc::status_in(h) else { return };
    if code == 0 || h.contains_key(&xroad::ERROR) {
        return;
    }
    let said = grpc::decode_message(h.get(&grpc::GRPC_MESSAGE).and_then(|v| v.to_str().ok()).unwrap_or_default());
    let err = match code {
        // Over the limit: declared so (tonic's OUT_OF_RANGE), or found so as the body streamed
        // in (the metered body's error, which tonic passes on as UNKNOWN).
        11 | 2 if said.contains("message length too large") || said.contains(crate::forward::BODY_TOO_LARGE) => {
            GatewayError::BodyTooLarge { limit, service: api.name().to_owned() }
        }
        13 if said.starts_with("failed to decode") => GatewayError::BadRequest(format!(
            "the request is not a {}/{method} request message ({said}); `grpcurl ... describe {}` shows the \
             messages it takes",
            api.name(),
            api.name()
        )),
        // UNIMPLEMENTED without words is a method the service does not have (with words, tonic
        // says what else it does not do, such as a compression, and is left to say it).
        12 if said.is_empty() => {
            let words = format!(
                "{} has no method {method:?}; `grpcurl ... describe {}` lists its methods",
                api.name(),
                api.name()
            );
            forward::set(h, grpc::GRPC_MESSAGE, &grpc::encode_message(&words));
            forward::set(h, xroad::ERROR, "Client.BadRequest");
            return;
        }
        5 => {
            forward::set(h, xroad::ERROR, "Client.UnknownService");
            return;
        }
        _ => {
            forward::set(h, xroad::ERROR, if code == 13 { "Server.InternalError" } else { "Client.BadRequest" });
            return;
        }
    };
    for (name, value) in &grpc::error_trailers(&err) {
        h.insert(name, value.clone());
    }
}

/// The gateway's error as a gRPC status, with its X-Road type in `x-road-error`, as the gateway's
/// refusals of proxied calls carry it.
fn status(err: &GatewayError) -> Status {
    let mut status = Status::new(tonic::Code::from_i32(err.grpc_code().as_u32() as i32), err.to_string());
    if let Ok(value) = MetadataValue::try_from(err.xroad_type()) {
        status.metadata_mut().insert("x-road-error", value);
    }
    status
}

fn context<T>(request: &Request<T>) -> Result<Call, Status> {
    request
        .extensions()
        .get::<Call>()
        .cloned()
        .ok_or_else(|| status(&GatewayError::Internal("the directory was called outside an exchange".into())))
}

fn provider(text: &str) -> Result<ClientId, Status> {
    text.parse().map_err(|e| {
        status(&GatewayError::BadRequest(format!(
            "provider {text:?}: {e}; write the provider subsystem, e.g. ID/PEMDA/1602/DISDUKCAPIL"
        )))
    })
}

fn client_info(c: &ClientEntry) -> pb::ClientInfo {
    pb::ClientInfo {
        instance: c.member.instance().to_owned(),
        member_class: c.member.class().to_owned(),
        member_code: c.member.code().to_owned(),
        subsystem_code: c.subsystem.as_ref().map(|s| s.code().to_owned()),
        name: c.name.clone().unwrap_or_default(),
    }
}

fn service_info(s: &ServiceEntry) -> pb::ServiceInfo {
    let protocol = match s.protocol {
        Protocol::Rest => pb::Protocol::Rest,
        Protocol::Grpc => pb::Protocol::Grpc,
    };
    pb::ServiceInfo {
        service_id: s.id.to_string(),
        service_code: s.id.code().to_owned(),
        protocol: protocol.into(),
        endpoints: s
            .endpoints
            .iter()
            .map(|e| pb::Endpoint { method: e.method.clone(), path: e.path.clone() })
            .collect(),
        purposes: s.terms.purposes.clone(),
        valid_until: s.terms.valid_until_text(),
    }
}

/// `splpd.v1.Directory`: the metadata services over gRPC.
#[derive(Debug, Clone, Copy)]
struct DirectoryApi;

#[tonic::async_trait]
impl Directory for DirectoryApi {
    async fn list_clients(
        &self,
        request: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        let call = context(&request)?;
        let clients = call.snapshot.directory.clients(None).map(client_info).collect();
        Ok(Response::new(pb::ListClientsResponse { clients }))
    }

    async fn list_methods(
        &self,
        request: Request<pb::ListMethodsRequest>,
    ) -> Result<Response<pb::ListMethodsResponse>, Status> {
        let call = context(&request)?;
        let provider = provider(&request.get_ref().provider)?;
        let services = call.snapshot.directory.services(&provider).map_err(|e| status(&e))?;
        Ok(Response::new(pb::ListMethodsResponse { services: services.iter().map(service_info).collect() }))
    }

    async fn allowed_methods(
        &self,
        request: Request<pb::AllowedMethodsRequest>,
    ) -> Result<Response<pb::AllowedMethodsResponse>, Status> {
        let call = context(&request)?;
        let provider = provider(&request.get_ref().provider)?;
        let now = time::OffsetDateTime::now_utc();
        let allowed = call
            .snapshot
            .directory
            .allowed(&call.snapshot.policy, &call.client, &provider, now)
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::AllowedMethodsResponse { services: allowed.iter().map(service_info).collect() }))
    }

    async fn get_open_api(
        &self,
        request: Request<pb::GetOpenApiRequest>,
    ) -> Result<Response<pb::GetOpenApiResponse>, Status> {
        let call = context(&request)?;
        let text = &request.get_ref().service;
        let service: ServiceId = text.parse().map_err(|e| {
            status(&GatewayError::BadRequest(format!(
                "service {text:?}: {e}; write the service identifier, e.g. ID/PEMDA/1602/DISDUKCAPIL/nik-verify"
            )))
        })?;
        let doc = call.snapshot.directory.document(&service).map_err(|e| status(&e))?;
        let document = String::from_utf8(doc.text.to_vec()).map_err(|_| {
            status(&GatewayError::Internal(format!("the OpenAPI document of {service} is not UTF-8 text").into()))
        })?;
        Ok(Response::new(pb::GetOpenApiResponse { document, media_type: doc.media_type.to_owned() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status as tonic sends it: its message percent-encoded, spaces included.
    fn status(code: u32, message: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(&grpc::GRPC_STATUS, http::HeaderValue::from(code));
        forward::set(&mut h, grpc::GRPC_MESSAGE, &grpc::encode_message(message).replace(' ', "%20"));
        h
    }

    #[test]
    fn statuses_tonic_makes_itself_are_put_in_the_gateways_scheme() {
        let directory = OwnGrpc::Directory;
        // A request that does not decode is the caller's mistake.
        let mut h = status(13, "failed to decode Protobuf message: ListMethodsRequest.provider: invalid wire type");
        in_scheme(&mut h, directory, "ListMethods", 1024);
        assert_eq!((grpc::status_in(&h), h[&xroad::ERROR].to_str().unwrap()), (Some(3), "Client.BadRequest"));
        let said = h[&grpc::GRPC_MESSAGE].to_str().unwrap();
        assert!(said.contains("splpd.v1.Directory/ListMethods") && said.contains("describe"), "{said}");
        // An unknown method keeps UNIMPLEMENTED and gets words.
        let mut h = status(12, "");
        in_scheme(&mut h, directory, "ListEverything", 1024);
        assert_eq!((grpc::status_in(&h), h[&xroad::ERROR].to_str().unwrap()), (Some(12), "Client.BadRequest"));
        assert!(h[&grpc::GRPC_MESSAGE].to_str().unwrap().contains("has no method \"ListEverything\""));
        // A body over the gateway's limit says so, with the limit: declared so, or found so.
        for said in [
            // tonic's words (tonic 0.14, codec/decode.rs) for a declared length over the limit.
            "Error, decoded message length too large: found 2048 bytes, the limit is: 1024 bytes".to_owned(),
            crate::forward::BodyError::TooLarge { limit: 1024 }.to_string(),
        ] {
            let mut h = status(if said.starts_with("Error") { 11 } else { 2 }, &said);
            in_scheme(&mut h, directory, "ListMethods", 1024);
            assert_eq!((grpc::status_in(&h), h[&xroad::ERROR].to_str().unwrap()), (Some(8), "Client.RequestTooLarge"));
        }
        // Other words of UNIMPLEMENTED are tonic's own, and kept.
        let mut h = status(12, "Content is compressed with `gzip` which isn't supported");
        in_scheme(&mut h, directory, "ListMethods", 1024);
        assert!(h[&grpc::GRPC_MESSAGE].to_str().unwrap().contains("gzip"));
        // Health's NOT_FOUND is an unknown service.
        let mut h = status(5, "unknown service");
        in_scheme(&mut h, OwnGrpc::Health, "Check", 1024);
        assert_eq!((grpc::status_in(&h), h[&xroad::ERROR].to_str().unwrap()), (Some(5), "Client.UnknownService"));
        // The gateway's own statuses, and OK, are left as they are.
        let mut h = status(7, "no grant");
        forward::set(&mut h, xroad::ERROR, "Client.AccessDenied");
        in_scheme(&mut h, directory, "ListMethods", 1024);
        assert_eq!((grpc::status_in(&h), h[&xroad::ERROR].to_str().unwrap()), (Some(7), "Client.AccessDenied"));
        let mut h = status(0, "");
        in_scheme(&mut h, directory, "ListMethods", 1024);
        assert!(h.get(&xroad::ERROR).is_none());
    }
}
