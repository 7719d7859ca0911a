//! The gateway's own errors, and the one place where each becomes an X-Road error type, an HTTP
//! status and a JSON body, or for gRPC calls a gRPC status code (design §3). Errors from the
//! service itself never pass through here: they reach the client untouched.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use http::StatusCode;

/// Why the gateway itself refused or failed an exchange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The request is malformed: bad URI, bad identifier, bad header.
    #[error("{0}")]
    BadRequest(String),
    /// The request URI is longer than the configured limit.
    #[error("the request URI is {len} bytes long; at most {max} are accepted")]
    UriTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The request headers are larger or more numerous than the configured limits.
    #[error("{0}")]
    HeadersTooLarge(String),
    /// The request body is larger than the service accepts.
    #[error("the request body is larger than the {limit} bytes {service} accepts")]
    BodyTooLarge {
        /// The service's limit in bytes.
        limit: u64,
        /// The service.
        service: String,
    },
    /// The caller did not send its request body within the time the service's answer is
    /// waited for, while the service was waiting for it.
    #[error("{0}")]
    RequestTimeout(String),
    /// The caller's own deadline (gRPC's `grpc-timeout`), nearer than the service's timeout,
    /// passed before the service answered: the caller's limit, not the service's failure.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The caller could not be identified.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller claimed an identity its credentials do not cover.
    #[error("{0}")]
    InvalidClientIdentity(String),
    /// No service of that identifier is known here.
    #[error("{0}")]
    UnknownService(String),
    /// The caller has no grant for this call.
    #[error("{0}")]
    AccessDenied(String),
    /// The caller is over its quota; retry after the given seconds.
    #[error("{message}")]
    RateLimited {
        /// What limit was hit.
        message: String,
        /// Seconds until a call would be allowed.
        retry_after_secs: u64,
    },
    /// The service's upstream could not be reached or broke the exchange off.
    #[error("{0}")]
    ServiceFailed(Failure),
    /// The service's upstream did not answer in time.
    #[error("{0}")]
    ServiceTimeout(Failure),
    /// A peer gateway's answer does not prove that it answers the request sent: its
    /// `X-Road-Request-Hash` differs from the hash of the request, or is missing.
    #[error("{0}")]
    RequestHashMismatch(Failure),
    /// No endpoint of the service can take the call now: none healthy, all ejected after
    /// failures, or their circuits open. Nothing was sent; the call may be retried later, after
    /// the seconds given where the gateway knows when an endpoint comes back.
    #[error("{0}")]
    ServiceUnavailable(Failure, Option<u64>),
    /// The audit log cannot take the exchange's record, so the exchange is refused (fail closed).
    #[error("{0}")]
    AuditUnavailable(String),
    /// The gateway holds as many connections as it is configured for, and sheds this one.
    #[error("{0}")]
    Overloaded(String),
    /// A fault inside the gateway.
    #[error("{0}")]
    Internal(Failure),
}

/// A wait as `Retry-After` says it: whole seconds, rounded up so a client that obeys it is not
/// refused again, and at least 1 since `Retry-After: 0` invites an immediate retry storm.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

impl GatewayError {
    /// The seconds a refused caller is told to wait before calling again (`Retry-After`, and
    /// `grpc-retry-pushback-ms` for gRPC), where the gateway knows them.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_secs, .. } => Some(*retry_after_secs),
            Self::ServiceUnavailable(_, after) => *after,
            _ => None,
        }
    }

    /// The X-Road error type: `Client.*` for the caller's mistakes, `Server.ServerProxy.*` for
    /// the provider side, `Server.*` for the gateway itself.
    pub fn xroad_type(&self) -> &'static str {
        match self {
            Self::BadRequest(_) | Self::UriTooLong { .. } | Self::HeadersTooLarge(_) => "Client.BadRequest",
            Self::BodyTooLarge { .. } => "Client.RequestTooLarge",
            Self::RequestTimeout(_) => "Client.RequestTimeout",
            Self::DeadlineExceeded(_) => "Client.DeadlineExceeded",
            Self::Unauthenticated(_) => "Client.Unauthenticated",
            Self::InvalidClientIdentity(_) => "Client.InvalidClientIdentity",
            Self::UnknownService(_) => "Client.UnknownService",
            Self::AccessDenied(_) => "Client.AccessDenied",
            Self::RateLimited { .. } => "Client.RateLimited",
            Self::ServiceFailed(_) => "Server.ServerProxy.ServiceFailed",
            Self::ServiceTimeout(_) => "Server.ServerProxy.ServiceTimeout",
            Self::RequestHashMismatch(_) => crate::peer::REQUEST_HASH_MISMATCH,
            Self::ServiceUnavailable(..) => "Server.ServerProxy.ServiceUnavailable",
            Self::AuditUnavailable(_) => "Server.AuditUnavailable",
            Self::Overloaded(_) => "Server.Overloaded",
            Self::Internal(_) => "Server.InternalError",
        }
    }

    /// The HTTP status the error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::InvalidClientIdentity(_) | Self::AccessDenied(_) => StatusCode::FORBIDDEN,
            Self::UnknownService(_) => StatusCode::NOT_FOUND,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::ServiceFailed(_) | Self::RequestHashMismatch(_) => StatusCode::BAD_GATEWAY,
            Self::ServiceTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::AuditUnavailable(_) | Self::ServiceUnavailable(..) | Self::Overloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC status code a gRPC call is answered with (the codes of `google.rpc.Code`), sent
    /// as `grpc-status` in a trailers-only response beside the X-Road type in `x-road-error`.
    pub fn grpc_code(&self) -> GrpcCode {
        match self {
            Self::BadRequest(_) | Self::UriTooLong { .. } | Self::HeadersTooLarge(_) => GrpcCode::InvalidArgument,
            Self::BodyTooLarge { .. } | Self::RateLimited { .. } => GrpcCode::ResourceExhausted,
            Self::Unauthenticated(_) => GrpcCode::Unauthenticated,
            Self::InvalidClientIdentity(_) | Self::AccessDenied(_) => GrpcCode::PermissionDenied,
            Self::UnknownService(_) => GrpcCode::NotFound,
            Self::ServiceFailed(_)
            | Self::RequestHashMismatch(_)
            | Self::AuditUnavailable(_)
            | Self::ServiceUnavailable(..)
            | Self::Overloaded(_) => GrpcCode::Unavailable,
            Self::ServiceTimeout(_) | Self::RequestTimeout(_) | Self::DeadlineExceeded(_) => GrpcCode::DeadlineExceeded,
            Self::Internal(_) => GrpcCode::Internal,
        }
    }

    /// The same error, its caller told which gateway's operator has the story it leaves out
    /// (`None` when it leaves nothing out).
    pub fn told_by(&self, gateway: &impl fmt::Display) -> Option<Self> {
        let mut told = self.clone();
        match &mut told {
            Self::ServiceFailed(f)
            | Self::ServiceTimeout(f)
            | Self::ServiceUnavailable(f, _)
            | Self::RequestHashMismatch(f)
            | Self::Internal(f)
                if f.operator.is_some() =>
            {
                f.gateway = Some(gateway.to_string());
                Some(told)
            }
            _ => None,
        }
    }

    /// The error as the gateway's process log keeps it: the operator's story
    /// ([`GatewayError::for_operator`]), but for the refusals whose message quotes the request
    /// back to its caller (its path and query, its identity, purpose or other header values),
    /// which may hold personal data such as a NIK: of those, the kind alone. The audit record
    /// keeps the call, the query only hashed, under the exchange's id, in files made for it; a
    /// process log is not. A refusal about the caller's certificate, its size or its timing quotes
    /// none of it, and is logged whole.
    pub fn for_log(&self) -> Cow<'_, str> {
        match self {
            Self::BadRequest(_) | Self::InvalidClientIdentity(_) | Self::UnknownService(_) | Self::AccessDenied(_) => {
                Cow::Borrowed(
                    "the caller's request was refused; what it was told quotes the request, which may hold personal \
                     data, so it is not logged: `splpd audit query --exchange-id ID` shows the call",
                )
            }
            _ => self.for_operator(),
        }
    }

    /// The error as the gateway's operator is told it, in its log: with what the caller is not
    /// told (see [`Failure`]).
    pub fn for_operator(&self) -> Cow<'_, str> {
        match self {
            Self::ServiceFailed(f)
            | Self::ServiceTimeout(f)
            | Self::ServiceUnavailable(f, _)
            | Self::RequestHashMismatch(f)
            | Self::Internal(f) => Cow::Borrowed(f.for_operator()),
            other => Cow::Owned(other.to_string()),
        }
    }

    /// The JSON body X-Road clients expect: `{"type", "message", "detail"}`; the detail is the
    /// exchange id, which an operator can look up in the audit log.
    pub fn json_body(&self, exchange_id: &str) -> String {
        serde_json::json!({
            "type": self.xroad_type(),
            "message": self.to_string(),
            "detail": exchange_id,
        })
        .to_string()
    }
}

/// A failure on the provider's side or inside the gateway, told two ways. The caller (often
/// another agency) is told what failed and whether to try again, but not the service's internal
/// addresses, nor the gateway's configuration that the operator may have to fix: those are
/// the operator's, in the gateway's log under the exchange's id, which the caller has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    caller: String,
    operator: Option<String>,
    /// The gateway whose operator has the whole story, once known ([`GatewayError::told_by`]):
    /// behind a peer hop, the caller must know which region to ask.
    gateway: Option<String>,
}

impl Failure {
    /// What the caller is told, and the whole story for the operator. The caller's text is
    /// followed by where the operator finds the cause.
    pub fn hidden(caller: impl Into<String>, operator: impl Into<String>) -> Self {
        Self { caller: caller.into(), operator: Some(operator.into()), gateway: None }
    }

    /// The operator's text: the whole story.
    pub fn for_operator(&self) -> &str {
        self.operator.as_deref().unwrap_or(&self.caller)
    }
}

/// Words that are the same for the caller and the operator: nothing in them is internal.
impl From<String> for Failure {
    fn from(caller: String) -> Self {
        Self { caller, operator: None, gateway: None }
    }
}

impl From<&str> for Failure {
    fn from(caller: &str) -> Self {
        caller.to_owned().into()
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.caller)?;
        match (&self.operator, &self.gateway) {
            (None, _) => Ok(()),
            (Some(_), Some(gateway)) => {
                write!(f, "; the operator of gateway {gateway} finds the cause in its logs under this exchange's id")
            }
            (Some(_), None) => {
                f.write_str("; the gateway's operator finds the cause in its logs under this exchange's id")
            }
        }
    }
}

/// The gRPC status codes the gateway itself answers with or records (`google.rpc.Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GrpcCode {
    /// 0: the call succeeded.
    Ok = 0,
    /// 1: the client cancelled the call.
    Cancelled = 1,
    /// 3: the request is malformed.
    InvalidArgument = 3,
    /// 4: the deadline passed before the call completed.
    DeadlineExceeded = 4,
    /// 5: no such service.
    NotFound = 5,
    /// 7: the caller may not make this call.
    PermissionDenied = 7,
    /// 8: a quota or size limit was hit.
    ResourceExhausted = 8,
    /// 13: a fault inside the gateway.
    Internal = 13,
    /// 14: the service (or the audit log) cannot take the call now; it may be retried.
    Unavailable = 14,
    /// 16: the caller could not be identified.
    Unauthenticated = 16,
}

impl GrpcCode {
    /// The number sent in `grpc-status`.
    pub fn as_u32(self) -> u32 {
        self as u32
    }
}

/// The HTTP status a gRPC status code stands for, as `google.rpc.Code` documents the mapping
/// (`PERMISSION_DENIED` 403, `UNAVAILABLE` 503, …): for counting a gRPC answer, whose HTTP
/// status is 200 whatever happened, as what it was. Any code, a service's own included.
pub fn http_status_of_grpc(code: u32) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

/// The HTTP status the gateway answers its own error of X-Road type `error_type` with over REST
/// (the first, for `Client.BadRequest`'s several), for a gRPC exchange's record, whose HTTP
/// status is 200: `Client.RequestTooLarge` and `Client.RateLimited` share a gRPC code, not a
/// status. `None` for a type the gateway does not answer with (a peer's, `Client.ResponseAbandoned`).
pub fn http_status_of_type(error_type: &str) -> Option<u16> {
    if !error_type.starts_with("Client.") && !error_type.starts_with("Server.") {
        return None;
    }
    let said = String::new;
    let failed = || Failure::from(String::new());
    [
        GatewayError::BadRequest(said()),
        GatewayError::BodyTooLarge { limit: 0, service: said() },
        GatewayError::RequestTimeout(said()),
        GatewayError::DeadlineExceeded(said()),
        GatewayError::Unauthenticated(said()),
        GatewayError::InvalidClientIdentity(said()),
        GatewayError::UnknownService(said()),
        GatewayError::AccessDenied(said()),
        GatewayError::RateLimited { message: said(), retry_after_secs: 0 },
        GatewayError::ServiceFailed(failed()),
        GatewayError::ServiceTimeout(failed()),
        GatewayError::RequestHashMismatch(failed()),
        GatewayError::ServiceUnavailable(failed(), None),
        GatewayError::AuditUnavailable(said()),
        GatewayError::Overloaded(said()),
        GatewayError::Internal(failed()),
    ]
    .iter()
    .find(|e| e.xroad_type() == error_type)
    .map(|e| e.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_error_type_has_the_status_it_is_answered_with_over_rest() {
        assert_eq!(http_status_of_type("Client.RequestTooLarge"), Some(413));
        assert_eq!(http_status_of_type("Client.RateLimited"), Some(429));
        assert_eq!(http_status_of_type("Client.DeadlineExceeded"), Some(504));
        assert_eq!(http_status_of_type("Client.BadRequest"), Some(400));
        assert_eq!(http_status_of_type("Server.ServerProxy.ServiceUnavailable"), Some(503));
        assert_eq!(http_status_of_type("Client.ResponseAbandoned"), None);
        assert_eq!(http_status_of_type(""), None);
    }

    #[test]
    fn each_error_maps_to_its_type_and_status() {
        let cases = [
            (GatewayError::AccessDenied("x".into()), "Client.AccessDenied", 403),
            (GatewayError::RateLimited { message: "x".into(), retry_after_secs: 1 }, "Client.RateLimited", 429),
            (GatewayError::BodyTooLarge { limit: 1, service: "s".into() }, "Client.RequestTooLarge", 413),
            (GatewayError::HeadersTooLarge("x".into()), "Client.BadRequest", 431),
            (GatewayError::UriTooLong { len: 2, max: 1 }, "Client.BadRequest", 414),
            (GatewayError::ServiceFailed("x".into()), "Server.ServerProxy.ServiceFailed", 502),
            (GatewayError::ServiceTimeout("x".into()), "Server.ServerProxy.ServiceTimeout", 504),
            (GatewayError::AuditUnavailable("x".into()), "Server.AuditUnavailable", 503),
            (GatewayError::ServiceUnavailable("x".into(), None), "Server.ServerProxy.ServiceUnavailable", 503),
            (GatewayError::Overloaded("x".into()), "Server.Overloaded", 503),
        ];
        for (err, kind, status) in cases {
            assert_eq!(err.xroad_type(), kind);
            assert_eq!(err.status().as_u16(), status);
        }
    }

    #[test]
    fn each_error_maps_to_its_grpc_code() {
        let cases = [
            (GatewayError::AccessDenied("x".into()), 7),
            (GatewayError::InvalidClientIdentity("x".into()), 7),
            (GatewayError::RateLimited { message: "x".into(), retry_after_secs: 1 }, 8),
            (GatewayError::BodyTooLarge { limit: 1, service: "s".into() }, 8),
            (GatewayError::ServiceFailed("x".into()), 14),
            (GatewayError::AuditUnavailable("x".into()), 14),
            (GatewayError::ServiceUnavailable("x".into(), None), 14),
            (GatewayError::ServiceTimeout("x".into()), 4),
            (GatewayError::BadRequest("x".into()), 3),
            (GatewayError::HeadersTooLarge("x".into()), 3),
            (GatewayError::Unauthenticated("x".into()), 16),
            (GatewayError::UnknownService("x".into()), 5),
            (GatewayError::Internal("x".into()), 13),
        ];
        for (err, code) in cases {
            assert_eq!(err.grpc_code().as_u32(), code, "{err:?}");
        }
    }

    #[test]
    fn json_body_has_type_message_and_detail() {
        let err = GatewayError::AccessDenied("no grant".into());
        let v: serde_json::Value = serde_json::from_str(&err.json_body("abc")).unwrap();
        assert_eq!(v["type"], "Client.AccessDenied");
        assert_eq!(v["message"], "no grant");
        assert_eq!(v["detail"], "abc");
    }

    #[test]
    fn a_hidden_failure_tells_the_caller_less_than_the_operator() {
        let err = GatewayError::ServiceFailed(Failure::hidden(
            "S: the gateway could not connect to the service",
            "S: cannot connect to the service at 10.0.0.5:8080: refused",
        ));
        let v: serde_json::Value = serde_json::from_str(&err.json_body("abc")).unwrap();
        let told = v["message"].as_str().unwrap();
        assert!(told.starts_with("S: the gateway could not connect to the service; "), "{told}");
        assert!(told.contains("operator") && !told.contains("10.0.0.5"), "{told}");
        // Behind a peer hop the caller must know which region to ask.
        let named = err.told_by(&"ID/PEMDA/1602/gw1").unwrap().to_string();
        assert!(
            named.ends_with(
                "the operator of gateway ID/PEMDA/1602/gw1 finds the cause in its logs under this exchange's id"
            ),
            "{named}"
        );
        assert!(GatewayError::ServiceFailed("plain".into()).told_by(&"g").is_none());
        assert_eq!(err.for_operator(), "S: cannot connect to the service at 10.0.0.5:8080: refused");
        // Plain words are the same for both.
        let plain = GatewayError::ServiceTimeout("S: no answer within 1s".into());
        assert_eq!(
            (plain.to_string(), plain.for_operator().into_owned()),
            ("S: no answer within 1s".into(), "S: no answer within 1s".into())
        );
        assert_eq!(GatewayError::AccessDenied("no grant".into()).for_operator(), "no grant");
    }
}
