//! X-Road's REST metadata services (Service Metadata Protocol for REST), answered from the
//! directory with X-Road's JSON shapes: `{"member": [...]}` for `listClients`, `{"service":
//! [...]}` for `listMethods` and `allowedMethods`, and the document itself for `getOpenAPI`.
//! Only JSON is offered (X-Road's `listClients` answers XML unless asked for JSON).

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use serde::Serialize;
use splpd_certs::id::{ClientId, ServiceId};

use super::body::{Pending, SummaryRx, add_request};
use super::directory::{ClientEntry, Endpoint, ServiceEntry};
use super::{Call, Meta};
use crate::audit::{BodyDigest, RecordBuilder};
use crate::error::GatewayError;
use crate::exchange::{self, ResponseBody};
use crate::forward::{self, BodyError, MeteredRequestBody, xroad};

/// An X-Road identifier in the JSON form of the metadata services.
#[derive(Debug, Serialize)]
struct XRoadId<'a> {
    object_type: &'static str,
    xroad_instance: &'a str,
    member_class: &'a str,
    member_code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subsystem_code: Option<&'a str>,
}

/// `listClients`.
#[derive(Debug, Serialize)]
struct ClientList<'a> {
    member: Vec<ClientJson<'a>>,
}

#[derive(Debug, Serialize)]
struct ClientJson<'a> {
    id: XRoadId<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

impl<'a> From<&'a ClientEntry> for ClientJson<'a> {
    fn from(c: &'a ClientEntry) -> Self {
        Self {
            id: XRoadId {
                object_type: if c.subsystem.is_some() { "SUBSYSTEM" } else { "MEMBER" },
                xroad_instance: c.member.instance(),
                member_class: c.member.class(),
                member_code: c.member.code(),
                subsystem_code: c.subsystem.as_ref().map(ClientId::code),
            },
            name: c.name.as_deref(),
        }
    }
}

/// `listMethods` and `allowedMethods`.
#[derive(Debug, Serialize)]
struct MethodList<'a> {
    service: Vec<MethodJson<'a>>,
}

#[derive(Debug, Serialize)]
struct MethodJson<'a> {
    object_type: &'static str,
    xroad_instance: &'a str,
    member_class: &'a str,
    member_code: &'a str,
    subsystem_code: &'a str,
    service_code: &'a str,
    service_type: &'static str,
    endpoint_list: &'a [Endpoint],
    /// allowedMethods only (not in X-Road's shape): the purposes one of which the caller must
    /// declare in X-SPLP-Purpose, and when its grants end.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    purposes: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    valid_until: Option<String>,
}

impl<'a> From<&'a ServiceEntry> for MethodJson<'a> {
    fn from(s: &'a ServiceEntry) -> Self {
        let provider = s.id.subsystem();
        let member = provider.member();
        Self {
            object_type: "SERVICE",
            xroad_instance: member.instance(),
            member_class: member.class(),
            member_code: member.code(),
            subsystem_code: provider.code(),
            service_code: s.id.code(),
            service_type: s.service_type(),
            endpoint_list: &s.endpoints,
            purposes: &s.terms.purposes,
            valid_until: s.terms.valid_until_text(),
        }
    }
}

/// An answer before it is sent: its media type and body.
struct Answer {
    media_type: &'static str,
    body: Bytes,
}

fn json(value: &impl Serialize) -> Result<Answer, GatewayError> {
    let body = serde_json::to_vec(value)
        .map_err(|e| GatewayError::Internal(format!("the metadata answer could not be written as JSON: {e}").into()))?;
    Ok(Answer { media_type: "application/json", body: body.into() })
}

/// The query's parameters, each at most once and each one `allowed`.
fn params(query: Option<&str>, meta: Meta, allowed: &[&str]) -> Result<Vec<(String, String)>, GatewayError> {
    let mut seen: Vec<(String, String)> = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if !allowed.contains(&name.as_ref()) {
            let hint = if allowed.is_empty() {
                format!("{} takes no parameters", meta.code())
            } else {
                format!("{} takes {}", meta.code(), allowed.join(", "))
            };
            return Err(GatewayError::BadRequest(format!("unknown query parameter {name:?}; {hint}")));
        }
        if seen.iter().any(|(n, _)| *n == name) {
            return Err(GatewayError::BadRequest(format!("query parameter {name:?} is given more than once")));
        }
        seen.push((name.into_owned(), value.into_owned()));
    }
    Ok(seen)
}

fn param<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// The provider in `/r1/{provider}/{meta}`.
fn provider(path: &str, meta: Meta) -> Result<ClientId, GatewayError> {
    let raw = path.strip_prefix("/r1/").and_then(|p| p.strip_suffix(meta.code())).map(|p| p.trim_end_matches('/'));
    let raw = raw
        .ok_or_else(|| GatewayError::BadRequest(format!("call {} at /r1/{{provider}}/{}", meta.code(), meta.code())))?;
    ClientId::from_url_path(raw).map_err(|e| GatewayError::BadRequest(format!("the provider in the path: {e}")))
}

fn answer(meta: Meta, call: &Call, parts: &Parts) -> Result<Answer, GatewayError> {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return Err(GatewayError::BadRequest(format!("{} is called with GET, not {}", meta.code(), parts.method)));
    }
    let directory = &call.snapshot.directory;
    let query = parts.uri.query();
    let path = parts.uri.path();
    match meta {
        Meta::ListClients => {
            let params = params(query, meta, &["xRoadInstance"])?;
            let member = directory.clients(param(&params, "xRoadInstance")).map(ClientJson::from).collect();
            json(&ClientList { member })
        }
        Meta::ListMethods => {
            params(query, meta, &[])?;
            let services = directory.services(&provider(path, meta)?)?;
            json(&MethodList { service: services.iter().map(MethodJson::from).collect() })
        }
        Meta::AllowedMethods => {
            params(query, meta, &[])?;
            let now = time::OffsetDateTime::now_utc();
            let allowed = directory.allowed(&call.snapshot.policy, &call.client, &provider(path, meta)?, now)?;
            json(&MethodList { service: allowed.iter().map(MethodJson::from).collect() })
        }
        Meta::GetOpenApi => {
            let params = params(query, meta, &["serviceCode"])?;
            let provider = provider(path, meta)?;
            let code = param(&params, "serviceCode").ok_or_else(|| {
                GatewayError::BadRequest(format!(
                    "getOpenAPI needs the query parameter serviceCode, e.g. /r1/{}/getOpenAPI?serviceCode=nik-verify",
                    provider.to_url_path()
                ))
            })?;
            let service: ServiceId = format!("{provider}/{code}")
                .parse()
                .map_err(|e| GatewayError::BadRequest(format!("serviceCode {code:?}: {e}")))?;
            let doc = directory.document(&service)?;
            Ok(Answer { media_type: doc.media_type, body: doc.text.clone() })
        }
    }
}

/// Answers a REST metadata call: reads the (empty) request body so that its request hash is
/// complete, answers from the directory, and releases the answer once its record is durable.
pub(super) async fn serve(
    meta: Meta,
    call: &Call,
    parts: &Parts,
    body: MeteredRequestBody<Incoming>,
    mut summary: SummaryRx,
    pending: Pending,
) -> Result<Response<ResponseBody>, (RecordBuilder, GatewayError)> {
    let read = body.collect().await;
    let answered = match read {
        Ok(_) => answer(meta, call, parts),
        Err(BodyError::TooLarge { limit }) => {
            Err(GatewayError::BodyTooLarge { limit, service: meta.code().to_owned() })
        }
        Err(BodyError::Read(why)) => {
            Err(GatewayError::BadRequest(format!("the request body could not be read: {why}")))
        }
    };
    let mut record = pending.take();
    add_request(&mut record, &mut summary);
    let answer = match answered {
        Ok(answer) => answer,
        Err(err) => return Err((record, err)),
    };
    record.set_status(StatusCode::OK);
    record.set_response_body(BodyDigest::of(&answer.body));
    let request_hash = record.record().request_hash.clone();
    let ticket = call.audit.append(record.finish(), call.mode);

    let mut resp = Response::new(Full::new(answer.body).map_err(|never| match never {}).boxed_unsync());
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(answer.media_type));
    forward::set(h, xroad::ID, &call.exchange_id);
    forward::set(h, xroad::CLIENT, &call.client.to_string());
    if let Some(service) = &call.service {
        forward::set(h, xroad::SERVICE, &service.to_string());
    }
    if !request_hash.is_empty() {
        use base64::Engine as _;
        forward::set(h, xroad::REQUEST_HASH, &base64::engine::general_purpose::STANDARD.encode(&request_hash));
    }
    match ticket.await {
        Ok(()) => Ok(resp),
        Err(e) => {
            let err = GatewayError::AuditUnavailable(format!("the exchange could not be logged: {e}"));
            Ok(exchange::answer(false, &call.exchange_id, Some(&call.client), call.service.as_ref(), &err))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_checked() {
        assert_eq!(params(Some("serviceCode=nik-verify"), Meta::GetOpenApi, &["serviceCode"]).unwrap().len(), 1);
        assert_eq!(params(None, Meta::ListMethods, &[]).unwrap().len(), 0);
        let unknown = params(Some("x=1"), Meta::ListMethods, &[]).unwrap_err().to_string();
        assert!(unknown.contains("listMethods takes no parameters"), "{unknown}");
        let twice = params(Some("serviceCode=a&serviceCode=b"), Meta::GetOpenApi, &["serviceCode"]).unwrap_err();
        assert!(twice.to_string().contains("more than once"));
        let decoded = params(Some("serviceCode=nik%2Dverify"), Meta::GetOpenApi, &["serviceCode"]).unwrap();
        assert_eq!(param(&decoded, "serviceCode"), Some("nik-verify"));
    }

    #[test]
    fn providers_are_read_from_the_path() {
        let p = provider("/r1/ID/PEMDA/1602/DISDUKCAPIL/listMethods", Meta::ListMethods).unwrap();
        assert_eq!(p.to_string(), "ID/PEMDA/1602/DISDUKCAPIL");
        assert!(provider("/r1/ID/PEMDA/1602/DIS%2FX/listMethods", Meta::ListMethods).is_err());
    }

    #[test]
    fn json_shapes_follow_x_road() {
        let entry = ClientEntry {
            member: "ID/PEMDA/1602".parse().unwrap(),
            subsystem: Some("ID/PEMDA/1602/DINKES".parse().unwrap()),
            name: Some("Kabupaten".to_owned()),
        };
        let v = serde_json::to_value(ClientList { member: vec![ClientJson::from(&entry)] }).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"member": [{"id": {"object_type": "SUBSYSTEM", "xroad_instance": "ID",
                "member_class": "PEMDA", "member_code": "1602", "subsystem_code": "DINKES"}, "name": "Kabupaten"}]})
        );
        let service = ServiceEntry {
            id: "ID/PEMDA/1602/DINKES/rujukan".parse().unwrap(),
            protocol: crate::config::Protocol::Grpc,
            endpoints: vec![Endpoint { method: "POST".into(), path: "/kesehatan.v1.Rujukan/*".into() }],
            document: None,
            terms: crate::authorize::GrantTerms::default(),
        };
        let v = serde_json::to_value(MethodList { service: vec![MethodJson::from(&service)] }).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"service": [{"object_type": "SERVICE", "xroad_instance": "ID", "member_class": "PEMDA",
                "member_code": "1602", "subsystem_code": "DINKES", "service_code": "rujukan", "service_type": "GRPC",
                "endpoint_list": [{"method": "POST", "path": "/kesehatan.v1.Rujukan/*"}]}]})
        );
        // allowedMethods adds the terms of the caller's grants.
        let terms = crate::authorize::GrantTerms {
            purposes: vec!["rujukan-pasien".into()],
            valid_until: Some(time::macros::datetime!(2030-01-01 00:00 UTC)),
        };
        let v = serde_json::to_value(MethodJson::from(&ServiceEntry { terms, ..service })).unwrap();
        assert_eq!(v["purposes"], serde_json::json!(["rujukan-pasien"]));
        assert_eq!(v["valid_until"], "2030-01-01T00:00:00Z");
    }
}
