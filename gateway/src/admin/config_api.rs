//! The admin API for the configuration file (design §6): read it, check a new version against it
//! and see the diff, put it in force, undo the last change. Changes carry the operator's
//! certificate, so their audit records name who made them and why (`X-Road-Issue`).
//!
//! | request | what |
//! |---|---|
//! | `GET /config` | the file as it is, `ETag` its version; `X-Splpd-Version-In-Force` the version running |
//! | `POST /config/check` | the body checked as the new file: its mistakes, or the diff; changes nothing |
//! | `PUT /config` | the body put in force, `If-Match` the version it replaces |
//! | `POST /config/undo` | the version the last change replaced, put back; `If-Match` as above |
//! | `GET /config/history` | the versions changes replaced, oldest first |
//! | `GET /config/previous` | the version the last change replaced, which undo puts back, `ETag` its version |
//!
//! `If-Match` is the confirmation the design asks for: a change is made only against the version
//! the operator checked it against, so two operators cannot overwrite each other unseen.

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serde_json::json;
use splpd_certs::id::AdminId;

use super::{AdminResponse, error, json_response, text};
use crate::exchange::Gateway;
use crate::reload::{ChangeError, Changed, ChangedBy, ReloadError, ReloadReport};

/// On `GET /config`, the version in force, to compare with the file's `ETag`: they differ while
/// the file holds an edit that was refused.
const VERSION_IN_FORCE: header::HeaderName = header::HeaderName::from_static("x-splpd-version-in-force");

/// The largest configuration the API takes; real ones are a few hundred KiB at most.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// The paths served here, and the methods each takes.
pub(super) const PATHS: [(&str, &str); 6] = [
    ("/config", "GET, PUT"),
    ("/config/check", "POST"),
    ("/config/undo", "POST"),
    ("/config/history", "GET"),
    ("/config/previous", "GET"),
    ("/config/in-force", "GET"),
];

/// Serves one configuration request; the path and method were checked against [`PATHS`].
pub(super) async fn handle(
    gateway: &Gateway,
    operator: &AdminId,
    cert_sha256: [u8; 32],
    remote: std::net::SocketAddr,
    req: Request<Incoming>,
) -> AdminResponse {
    let Some(reloader) = gateway.reloader() else {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "Server.ConfigurationUnavailable",
            "this gateway does not run from a configuration file it can change (it was not started with \
             `splpd serve --config FILE`); change its configuration where it is kept",
        );
    };
    let by = ChangedBy { operator: operator.clone(), cert_sha256, address: remote.ip(), issue: issue(req.headers()) };
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (path.as_str(), method.as_str()) {
        ("/config", "GET" | "HEAD") => {
            let mut resp = toml_response(reloader.current().await);
            // The file may hold a version that was refused; say which one runs.
            if let Some(v) = reloader.version_in_force()
                && let Ok(value) = header::HeaderValue::from_str(&format!("\"{v}\""))
            {
                resp.headers_mut().insert(VERSION_IN_FORCE, value);
            }
            resp
        }
        ("/config/previous", _) => match reloader.previous().await {
            // Nothing kept is a resource that is not there, not a conflict as for an undo.
            Err(e @ ChangeError::NoHistory { .. }) => {
                error(StatusCode::NOT_FOUND, "Client.NothingToUndo", &e.to_string())
            }
            outcome => toml_response(outcome),
        },
        // The text in force, which the file no longer holds after an edit a reload refused.
        ("/config/in-force", _) => match reloader.text_in_force() {
            Some((toml, version)) => toml_response(Ok((toml.to_string(), version))),
            None => error(
                StatusCode::NOT_FOUND,
                "Client.NotFound",
                "the text in force is not known: the gateway could not read its file when it started",
            ),
        },
        ("/config/history", _) => match reloader.history().await {
            Ok(kept) => {
                let versions: Vec<_> = kept
                    .iter()
                    .map(|k| json!({ "replaced_at": k.replaced_at, "version": k.version, "file": k.path.display().to_string() }))
                    .collect();
                json_response(
                    StatusCode::OK,
                    &json!({ "file": reloader.path().display().to_string(), "versions": versions }),
                )
            }
            Err(e) => failure(&e),
        },
        ("/config/check", _) => {
            let toml = match body_text(req).await {
                Ok(toml) => toml,
                Err(resp) => return resp,
            };
            match reloader.check(toml).await {
                Ok(checked) => json_response(
                    StatusCode::OK,
                    &json!({
                        "current": checked.current,
                        "in_force": checked.in_force,
                        "version": checked.version,
                        "changed": checked.changed,
                        "diff": checked.diff,
                        "needs_restart": needs_restart(&checked.report),
                        "next": format!(
                            "PUT /config with this body and If-Match: \"{}\" puts it in force", checked.current
                        ),
                    }),
                ),
                Err(e) => failure(&e),
            }
        }
        ("/config", "PUT") => {
            let expected = if_match(req.headers());
            // The body is read even when the answer is a refusal: an HTTP/2 stream answered
            // before its body is taken ends in a reset, which clients such as curl report as an
            // error of their own instead of the answer.
            let toml = match body_text(req).await {
                Ok(toml) => toml,
                Err(resp) => return resp,
            };
            let Some(expected) = expected else {
                return missing_if_match();
            };
            changed(reloader.apply(toml, &expected, &by).await)
        }
        _ => {
            // POST /config/undo.
            let Some(expected) = if_match(req.headers()) else {
                return missing_if_match();
            };
            changed(reloader.undo(&expected, &by).await)
        }
    }
}

/// A configuration's text, its version as the `ETag`.
fn toml_response(outcome: Result<(String, String), ChangeError>) -> AdminResponse {
    match outcome {
        Ok((toml, version)) => {
            let mut resp = text(StatusCode::OK, "application/toml; charset=utf-8", toml);
            if let Ok(etag) = header::HeaderValue::from_str(&format!("\"{version}\"")) {
                resp.headers_mut().insert(header::ETAG, etag);
            }
            resp
        }
        Err(e) => failure(&e),
    }
}

fn changed(outcome: Result<Changed, ChangeError>) -> AdminResponse {
    match outcome {
        Ok(c) => json_response(
            StatusCode::OK,
            &json!({
                "previous": c.previous,
                "version": c.version,
                "changed": c.kept.is_some(),
                "kept": c.kept.map(|p| p.display().to_string()),
                "diff": c.diff,
                "needs_restart": needs_restart(&c.report),
            }),
        ),
        Err(e) => failure(&e),
    }
}

fn needs_restart(report: &ReloadReport) -> serde_json::Value {
    let mut keys: Vec<String> = report.audit_needs_restart.iter().map(|k| format!("[audit] {k}")).collect();
    if report.telemetry_needs_restart {
        keys.push("[telemetry]".to_owned());
    }
    json!(keys)
}

/// The answer for a change not made, with what was wrong.
fn failure(e: &ChangeError) -> AdminResponse {
    let (status, kind) = match e {
        ChangeError::Stale { .. } => (StatusCode::PRECONDITION_FAILED, "Client.StaleConfiguration"),
        ChangeError::Refused(ReloadError::Unlogged(_)) => (StatusCode::SERVICE_UNAVAILABLE, "Server.AuditUnavailable"),
        ChangeError::Refused(ReloadError::Task(_)) | ChangeError::File(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "Server.InternalError")
        }
        ChangeError::Refused(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Client.InvalidConfiguration"),
        ChangeError::NoHistory { .. } => (StatusCode::CONFLICT, "Client.NothingToUndo"),
        ChangeError::NewFile { .. } | ChangeError::SecretDestination => (StatusCode::FORBIDDEN, "Client.AccessDenied"),
        ChangeError::FileNotInForce { .. } => (StatusCode::CONFLICT, "Client.ConfigurationNotInForce"),
    };
    let mut resp = error(status, kind, &format!("{e}\nNothing was changed."));
    if let ChangeError::Stale { current, .. } = e
        && let Ok(etag) = header::HeaderValue::from_str(&format!("\"{current}\""))
    {
        resp.headers_mut().insert(header::ETAG, etag);
    }
    resp
}

fn missing_if_match() -> AdminResponse {
    error(
        StatusCode::PRECONDITION_REQUIRED,
        "Client.BadRequest",
        "a change needs If-Match: \"VERSION\", the version of the file it replaces: check the change first \
         (POST /config/check shows the diff and the version), then send it with that header",
    )
}

/// The version named by `If-Match` (`"v"`, `W/"v"` or bare `v`). `*` and lists name no one
/// version, so they confirm nothing and count as missing.
fn if_match(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::IF_MATCH)?.to_str().ok()?.trim();
    let value = value.strip_prefix("W/").unwrap_or(value);
    let value = value.trim_matches('"');
    (!value.is_empty() && value != "*" && !value.contains(',')).then(|| value.to_owned())
}

fn issue(headers: &HeaderMap) -> String {
    headers.get("x-road-issue").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default()
}

/// The request's body as UTF-8 text, at most [`MAX_BODY`] bytes.
async fn body_text(req: Request<Incoming>) -> Result<String, AdminResponse> {
    let body: Bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Client.RequestTooLarge",
                &format!("a configuration file of more than {} MiB is not taken", MAX_BODY / (1024 * 1024)),
            ));
        }
        Err(e) => {
            return Err(error(StatusCode::BAD_REQUEST, "Client.BadRequest", &format!("reading the body: {e}")));
        }
    };
    String::from_utf8(body.to_vec()).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "Client.BadRequest",
            &format!("the configuration must be UTF-8 text; byte {} is not", e.utf8_error().valid_up_to()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_takes_quoted_weak_and_bare_versions() {
        let mut headers = HeaderMap::new();
        assert_eq!(if_match(&headers), None);
        for (sent, want) in [
            ("\"0123abcd\"", Some("0123abcd")),
            ("W/\"0123abcd\"", Some("0123abcd")),
            ("0123abcd", Some("0123abcd")),
            ("\"\"", None),
            ("*", None),
            ("\"0123abcd\", \"4567\"", None),
        ] {
            headers.insert(header::IF_MATCH, sent.parse().unwrap());
            assert_eq!(if_match(&headers).as_deref(), want, "{sent}");
        }
    }
}
