//! gRPC on the exchange path (design §3): how a gRPC call is recognised, which service it names,
//! how its deadline travels, and how the gateway's own errors become gRPC statuses.
//!
//! A gRPC call is an HTTP/2 `POST /package.Service/Method` with `content-type: application/grpc`
//! (or `application/grpc+proto` and the like). It goes through the same phases as a REST call;
//! only the target, the deadline and the shape of the gateway's errors differ:
//!
//! - the service is named by the metadata `x-road-service: {serviceId}`, or failing that by the
//!   registry's mapping from the fully-qualified gRPC service name (`[[service]] grpc_services`);
//! - the endpoint that grants and quotas see is the path `/package.Service/Method`, method `POST`;
//! - `grpc-timeout` bounds the wait for the service's answer, and goes upstream reduced by the
//!   time already spent in the gateway;
//! - the gateway's own errors are trailers-only responses (HTTP 200, `grpc-status`,
//!   `grpc-message`) carrying the X-Road error type in `x-road-error`; the service's own statuses
//!   pass through untouched.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt as _, Full};
use splpd_certs::id::{ClientId, ServiceId};

use crate::error::GatewayError;
use crate::exchange::ResponseBody;
use crate::forward::{self, xroad};

/// `grpc-status`: the call's status code, in the trailers (or in the headers of a trailers-only
/// response).
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`: the status message, percent-encoded.
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// `grpc-timeout`: how long the caller waits for the call.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
/// `grpc-retry-pushback-ms`: when a refused call may be retried (gRPC's retry design, A6).
pub const GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// The content type of the gateway's own gRPC answers.
const APPLICATION_GRPC: &str = "application/grpc";

/// Whether a request is a gRPC call: HTTP/2 with a gRPC content type. gRPC-Web
/// (`application/grpc-web…`), which travels over HTTP/1.1 too and frames its trailers in the
/// body, is not: it cannot be proxied transparently to a gRPC service.
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_2 && has_grpc_content_type(req.headers())
}

/// Whether the headers declare a gRPC content type: `application/grpc`, optionally followed by
/// `+format` or parameters.
pub fn has_grpc_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let value = value.trim();
    let Some(prefix) = value.get(..APPLICATION_GRPC.len()) else {
        return false;
    };
    prefix.eq_ignore_ascii_case(APPLICATION_GRPC)
        && matches!(value.as_bytes().get(APPLICATION_GRPC.len()), None | Some(b'+' | b';' | b' '))
}

/// Whether the headers declare gRPC-Web (`application/grpc-web`, `application/grpc-web-text`,
/// with any `+format`), which the gateway does not speak.
pub fn is_grpc_web(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().get(..APPLICATION_GRPC.len() + 4))
        .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc-web"))
}

/// The parts of a gRPC call the exchange path uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTarget<'a> {
    /// The service called.
    pub service: ServiceId,
    /// `/package.Service/Method`: the endpoint grants and quotas see, forwarded as is.
    pub path: &'a str,
    /// `package.Service`.
    pub grpc_service: &'a str,
    /// `Method`.
    pub method: &'a str,
}

fn bad(message: String) -> GatewayError {
    GatewayError::BadRequest(message)
}

/// A name part of a gRPC service or method: letters, digits and `_`, as protobuf identifiers
/// (and the `grpc_services` check of the configuration) have them.
fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Reads `/package.Service/Method` strictly: exactly two segments, a fully-qualified service
/// name and a method name, nothing percent-encoded, no query.
pub fn parse_path(path_and_query: &str, max_len: usize) -> Result<(&str, &str), GatewayError> {
    if path_and_query.len() > max_len {
        return Err(GatewayError::UriTooLong { len: path_and_query.len(), max: max_len });
    }
    let shown = || path_and_query.chars().take(80).collect::<String>();
    let hint = "a gRPC call's path is /package.Service/Method, e.g. /kesehatan.v1.Rujukan/Kirim";
    if path_and_query.contains('?') {
        return Err(bad(format!("the gRPC path {:?} has a query; {hint}", shown())));
    }
    // The REST form, which a developer who has seen the REST calls tries first.
    if path_and_query.starts_with("/r1/") {
        return Err(bad(format!(
            "{:?} is a REST path; {hint}: drop the /r1/… part and name the service in x-road-service metadata \
             (grpcurl -H 'x-road-service: ID/PEMDA/…/SUBSYSTEM/service')",
            shown()
        )));
    }
    let (service, method) = path_and_query
        .strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .ok_or_else(|| bad(format!("{:?} is not a gRPC method path; {hint}", shown())))?;
    if !service.split('.').all(is_ident) || !is_ident(method) {
        return Err(bad(format!(
            "{:?} is not a gRPC method path: names hold letters, digits, `_` and (in the service) `.`; {hint}",
            shown()
        )));
    }
    Ok((service, method))
}

/// The target of a gRPC call: the path, and the service named by `x-road-service` (parsed as
/// strictly as any identifier) or else mapped from the gRPC service name by `grpc_services`.
pub fn target<'a>(
    path_and_query: &'a str,
    headers: &HeaderMap,
    grpc_services: &HashMap<String, ServiceId>,
    max_len: usize,
) -> Result<GrpcTarget<'a>, GatewayError> {
    let (grpc_service, method) = parse_path(path_and_query, max_len)?;
    let mut named = headers.get_all(&xroad::SERVICE).iter();
    let service = match (named.next(), named.next()) {
        (Some(_), Some(_)) => {
            return Err(bad("x-road-service is sent more than once; name one service".to_owned()));
        }
        (Some(value), None) => {
            let text = value.to_str().map_err(|_| {
                bad("x-road-service is not valid text; write e.g. ID/PEMDA/1602/DINKES/rujukan".to_owned())
            })?;
            text.parse::<ServiceId>().map_err(|e| bad(format!("x-road-service: {e}")))?
        }
        (None, _) => grpc_services.get(grpc_service).cloned().ok_or_else(|| {
            GatewayError::UnknownService(format!(
                "no service of this gateway serves the gRPC service {grpc_service}; name the service in the \
                 metadata x-road-service (e.g. ID/PEMDA/1602/DINKES/rujukan), or ask the operator to map \
                 {grpc_service} in its grpc_services"
            ))
        })?,
    };
    Ok(GrpcTarget { service, path: path_and_query, grpc_service, method })
}

/// The caller's deadline from `grpc-timeout`, if it sent one: 1 to 8 digits and a unit (`H`,
/// `M`, `S`, `m`, `u`, `n`), as the gRPC over HTTP/2 specification writes it.
pub fn timeout(headers: &HeaderMap) -> Result<Option<Duration>, GatewayError> {
    let Some(value) = headers.get(&GRPC_TIMEOUT) else {
        return Ok(None);
    };
    parse_timeout(value.as_bytes()).map(Some).ok_or_else(|| {
        bad(format!(
            "grpc-timeout {:?} is malformed; write 1 to 8 digits and a unit (H, M, S, m, u, n), e.g. 500m",
            String::from_utf8_lossy(value.as_bytes())
        ))
    })
}

fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `grpc-timeout` for `d`, in the finest unit whose count fits the 8 digits allowed. Counts are
/// rounded down, so the service never gets more time than the caller has left.
pub fn encode_timeout(d: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = d.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    let (count, unit) =
        units.iter().map(|&(per, unit)| (nanos / per, unit)).find(|&(count, _)| count <= MAX).unwrap_or((MAX, 'H'));
    HeaderValue::from_str(&format!("{count}{unit}")).unwrap_or(HeaderValue::from_static("0n"))
}

/// The `grpc-status` of a response's trailers, or of the headers of a trailers-only response.
pub fn status_in(headers: &HeaderMap) -> Option<u32> {
    headers.get(&GRPC_STATUS)?.to_str().ok()?.trim().parse().ok()
}

/// A `grpc-message` value: UTF-8, with every byte outside printable ASCII and `%` itself
/// percent-encoded, as the specification asks.
pub fn encode_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A `grpc-message` as sent, decoded: `%XX` escapes (tonic escapes spaces too) back to their
/// bytes, read as UTF-8 with anything malformed replaced; a text with a malformed escape is
/// taken as it is.
pub fn decode_message(sent: &str) -> String {
    crate::target::decode_segment(sent)
        .map_or_else(|_| sent.to_owned(), |bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// The status the gateway's error makes: `grpc-status`, `grpc-message`, `x-road-error`, and for
/// a refusal with a known wait (over quota; a service whose endpoints come back at a known time)
/// `grpc-retry-pushback-ms`. Sent as trailers, or as the headers of a trailers-only response.
pub fn error_trailers(err: &GatewayError) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(GRPC_STATUS, HeaderValue::from(err.grpc_code().as_u32()));
    forward::set(&mut h, GRPC_MESSAGE, &encode_message(&err.to_string()));
    forward::set(&mut h, xroad::ERROR, err.xroad_type());
    if let Some(secs) = err.retry_after_secs() {
        h.insert(GRPC_RETRY_PUSHBACK_MS, HeaderValue::from(secs.saturating_mul(1000)));
    }
    h
}

/// The gateway's error as a gRPC answer: a trailers-only response (HTTP 200, no body) whose
/// headers carry the status and the exchange's X-Road headers.
pub fn error_response(
    err: &GatewayError,
    exchange_id: &str,
    client: Option<&ClientId>,
    service: Option<&ServiceId>,
) -> Response<ResponseBody> {
    let body = Full::new(Bytes::new()).map_err(|never| match never {}).boxed_unsync();
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(APPLICATION_GRPC));
    h.extend(error_trailers(err));
    forward::set(h, xroad::ID, exchange_id);
    if let Some(c) = client {
        forward::set(h, xroad::CLIENT, &c.to_string());
    }
    if let Some(s) = service {
        forward::set(h, xroad::SERVICE, &s.to_string());
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_message_decodes_as_it_was_encoded() {
        for text in ["over quota: 1 call/s", "100% sure", "bukan ASCII: é", ""] {
            assert_eq!(decode_message(&encode_message(text)), text);
        }
        assert_eq!(decode_message("message%20length%20too%20large"), "message length too large");
        assert_eq!(decode_message("50%"), "50%", "a lone % is kept");
    }
    use proptest::prelude::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn grpc_content_types_are_recognised_and_grpc_web_is_not() {
        for ct in ["application/grpc", "application/grpc+proto", "Application/GRPC;charset=utf-8", "application/grpc "]
        {
            assert!(has_grpc_content_type(&headers(&[("content-type", ct)])), "{ct}");
        }
        for ct in ["application/grpc-web", "application/grpc-web+proto", "application/json", "application/grp"] {
            assert!(!has_grpc_content_type(&headers(&[("content-type", ct)])), "{ct}");
        }
        for ct in ["application/grpc-web", "application/grpc-web+proto", "Application/gRPC-Web-Text"] {
            assert!(is_grpc_web(&headers(&[("content-type", ct)])), "{ct}");
        }
        for ct in ["application/grpc", "application/grpc+proto", "application/json", "application/grpc-w"] {
            assert!(!is_grpc_web(&headers(&[("content-type", ct)])), "{ct}");
        }
        assert!(!has_grpc_content_type(&HeaderMap::new()));
        let mut req = Request::new(());
        req.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        assert!(!is_grpc(&req), "HTTP/1.1 is not gRPC");
        *req.version_mut() = Version::HTTP_2;
        assert!(is_grpc(&req));
    }

    #[test]
    fn a_rest_path_on_a_grpc_call_is_told_how_grpc_names_the_service() {
        let err = parse_path("/r1/ID/PEMDA/1602/DINKES/rujukan/kesehatan.v1.Rujukan/Kirim", 1000).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("is a REST path") && message.contains("x-road-service"), "{message}");
    }

    #[test]
    fn method_paths_are_read_strictly() {
        assert_eq!(parse_path("/kesehatan.v1.Rujukan/Kirim", 100).unwrap(), ("kesehatan.v1.Rujukan", "Kirim"));
        assert_eq!(parse_path("/Greeter/Say_Hello", 100).unwrap(), ("Greeter", "Say_Hello"));
        for path in [
            "/",
            "/kesehatan.v1.Rujukan",
            "/kesehatan.v1.Rujukan/",
            "/kesehatan.v1.Rujukan/Kirim/x",
            "/kesehatan..v1.Rujukan/Kirim",
            "/.Rujukan/Kirim",
            "/kesehatan.v1.Rujukan/Ki%72im",
            "/kesehatan.v1.Rujukan/Kirim?x=1",
            "/r1/ID/PEMDA/1602/DINKES/rujukan",
            "kesehatan.v1.Rujukan/Kirim",
        ] {
            assert!(parse_path(path, 100).is_err(), "{path}");
        }
        assert!(matches!(parse_path("/a.B/C", 3), Err(GatewayError::UriTooLong { .. })));
    }

    #[test]
    fn the_service_comes_from_metadata_or_from_the_mapping() {
        let mapped: ServiceId = "ID/PEMDA/1602/DINKES/rujukan".parse().unwrap();
        let map = HashMap::from([("kesehatan.v1.Rujukan".to_owned(), mapped.clone())]);
        let path = "/kesehatan.v1.Rujukan/Kirim";
        let t = target(path, &HeaderMap::new(), &map, 100).unwrap();
        assert_eq!((t.service, t.path, t.method), (mapped, path, "Kirim"));

        let named = headers(&[("x-road-service", "ID/PEMDA/1602/RSUD/rujukan-v2")]);
        assert_eq!(target(path, &named, &map, 100).unwrap().service.to_string(), "ID/PEMDA/1602/RSUD/rujukan-v2");

        let unmapped = target("/other.v1.Thing/Do", &HeaderMap::new(), &map, 100).unwrap_err();
        assert!(matches!(unmapped, GatewayError::UnknownService(_)), "{unmapped:?}");
        for bad in [
            &[("x-road-service", "ID/PEMDA/1602/DINKES")][..],
            &[("x-road-service", "ID/PEMDA/1602/DINKES/rujukan/x")],
            &[("x-road-service", "ID/PEMDA/1602/DINKES/ruj ukan")],
            &[("x-road-service", "ID/PEMDA/1602/DINKES/a"), ("x-road-service", "ID/PEMDA/1602/DINKES/b")],
        ] {
            let err = target(path, &headers(bad), &map, 100).unwrap_err();
            assert!(matches!(err, GatewayError::BadRequest(_)), "{bad:?}: {err:?}");
        }
    }

    #[test]
    fn timeouts_are_parsed_and_encoded_as_the_specification_writes_them() {
        let parse = |s: &str| timeout(&headers(&[("grpc-timeout", s)]));
        assert_eq!(parse("1H").unwrap(), Some(Duration::from_secs(3600)));
        assert_eq!(parse("2M").unwrap(), Some(Duration::from_secs(120)));
        assert_eq!(parse("3S").unwrap(), Some(Duration::from_secs(3)));
        assert_eq!(parse("250m").unwrap(), Some(Duration::from_millis(250)));
        assert_eq!(parse("99999999u").unwrap(), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse("7n").unwrap(), Some(Duration::from_nanos(7)));
        assert_eq!(timeout(&HeaderMap::new()).unwrap(), None);
        for bad in ["", "m", "123456789m", "1.5S", "-1S", "10s", "10 m", "10"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(encode_timeout(Duration::from_nanos(7)), "7n");
        assert_eq!(encode_timeout(Duration::from_millis(50)), "50000000n");
        assert_eq!(encode_timeout(Duration::from_millis(250)), "250000u");
        assert_eq!(encode_timeout(Duration::from_secs(30)), "30000000u");
        assert_eq!(encode_timeout(Duration::from_secs(3600)), "3600000m");
        assert_eq!(encode_timeout(Duration::from_secs(100_000_000)), "1666666M");
        assert_eq!(encode_timeout(Duration::from_secs(u64::MAX)), "99999999H");
    }

    proptest! {
        #[test]
        fn an_encoded_timeout_never_exceeds_what_is_left(ns in 0u64..u64::MAX / 2) {
            let d = Duration::from_nanos(ns);
            let back = parse_timeout(encode_timeout(d).as_bytes()).unwrap();
            prop_assert!(back <= d);
            // Rounding down loses at most one part in 10^5.
            prop_assert!(d - back <= d / 100_000 + Duration::from_nanos(1));
        }
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(encode_message("no grant for ID/PEMDA/1602"), "no grant for ID/PEMDA/1602");
        assert_eq!(encode_message("100% sure"), "100%25 sure");
        assert_eq!(encode_message("kuota habis\n"), "kuota habis%0A");
        assert_eq!(encode_message("résumé"), "r%C3%A9sum%C3%A9");
    }

    #[test]
    fn a_known_wait_is_pushed_back_and_an_unknown_one_is_not() {
        let back_in = GatewayError::ServiceUnavailable("no endpoint can take calls now".into(), Some(30));
        assert_eq!(error_trailers(&back_in)[GRPC_RETRY_PUSHBACK_MS], "30000");
        let unknown = GatewayError::ServiceUnavailable("no endpoint can take calls now".into(), None);
        assert!(error_trailers(&unknown).get(GRPC_RETRY_PUSHBACK_MS).is_none());
    }

    #[test]
    fn an_error_is_a_trailers_only_answer_with_the_xroad_type() {
        let err = GatewayError::RateLimited { message: "over quota: 1 call/s".into(), retry_after_secs: 2 };
        let client: ClientId = "ID/PEMDA/1602/DINKES".parse().unwrap();
        let resp = error_response(&err, "id-1", Some(&client), None);
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["grpc-status"], "8");
        assert_eq!(h["grpc-message"], "over quota: 1 call/s");
        assert_eq!(h["x-road-error"], "Client.RateLimited");
        assert_eq!(h["grpc-retry-pushback-ms"], "2000");
        assert_eq!(h["x-road-id"], "id-1");
        assert_eq!(h["x-road-client"], "ID/PEMDA/1602/DINKES");
        assert!(hyper::body::Body::is_end_stream(resp.body()));
        assert_eq!(status_in(h), Some(8));
    }
}
