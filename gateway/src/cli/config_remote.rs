//! `splpd config apply --admin` and `splpd config undo --admin`: the same change as on the host,
//! made through the gateway's admin listener with the operator's certificate, so that the
//! gateway checks it, keeps the version it replaces, and writes the change to its audit log under
//! the operator's name (with `--issue` as the reason) before putting it in force.
//!
//! The diff comes from the gateway (`POST /config/check`), so it is against the file the gateway
//! runs from, and the change is sent with that file's version in `If-Match`: if someone else
//! changed it in between, the gateway refuses, and nothing is overwritten unseen.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use serde_json::Value;
use splpd_gateway::config::history;

use super::config::Remote;
use super::https::HttpClient;
use super::out;

/// How long one call to the admin listener may take; a change is checked and compiled there,
/// certificates loaded included.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Puts the text of `new` in force on the gateway at `remote`.
pub(crate) fn apply(remote: &Remote, issue: &str, new: &Path, yes: bool) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(new).with_context(|| format!("reading {}", new.display()))?;
    runtime()?.block_on(async {
        let admin = Admin::new(remote, issue)?;
        let checked = admin.call(Method::POST, "/config/check", Some(text.clone()), None).await?;
        if checked.status == StatusCode::UNPROCESSABLE_ENTITY {
            eprintln!("{}", in_own_file(&checked.message(), new));
            eprintln!("The configuration of the gateway at {} is unchanged.", admin.base);
            return Ok(ExitCode::FAILURE);
        }
        let checked = checked.json("/config/check")?;
        let current = text_field(&checked, "current")?;
        let version = text_field(&checked, "version")?;
        let in_force_already = checked["changed"] == false;
        if in_force_already && current == version {
            out::line(&format!("The gateway at {} already runs this version ({version}); nothing to do.", admin.base));
            return Ok(ExitCode::SUCCESS);
        }
        out::line(checked["diff"].as_str().unwrap_or_default().trim_end());
        if in_force_already {
            // The file holds an edit a reload refused: putting the version in force back over it
            // changes no configuration, but the file, which the next start reads.
            out::line(&format!(
                "The gateway at {} runs this version ({version}) already, but its configuration file holds version \
                 {current}, which a reload refused: this puts the file back to the version in force.",
                admin.base
            ));
        }
        warn_restart(&checked);
        admin.confirm_and_send(yes, &current, Method::PUT, "/config", Some(text)).await
    })
}

/// Puts back, on the gateway at `remote`, the version its latest change replaced.
pub(crate) fn undo(remote: &Remote, issue: &str, yes: bool) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let admin = Admin::new(remote, issue)?;
        let file = admin.call(Method::GET, "/config", None, None).await?;
        let in_force = file.in_force.clone();
        let current = file.toml("/config")?;
        // The file holds an edit a reload refused: the gateway would refuse the undo, which would
        // drop the version in force too; said before the question rather than after it.
        if let Some(in_force) = in_force.filter(|v| *v != current.1) {
            eprintln!(
                "The gateway at {} runs version {in_force}, but its configuration file holds version {}, which a \
                 reload refused (its log says why) or has not run yet. Undo would put back the version before \
                 {in_force} and drop that one as well: correct the file, or put version {in_force} back (GET \
                 /config/in-force has its text), first.",
                admin.base, current.1
            );
            return Ok(ExitCode::FAILURE);
        }
        let previous = admin.call(Method::GET, "/config/previous", None, None).await?;
        if previous.status == StatusCode::NOT_FOUND {
            eprintln!("{}", previous.message());
            return Ok(ExitCode::FAILURE);
        }
        let previous = previous.toml("/config/previous")?;
        if previous.0 == current.0 {
            out::line(&format!(
                "The gateway at {} already runs that version ({}); nothing to do.",
                admin.base, current.1
            ));
            return Ok(ExitCode::SUCCESS);
        }
        let old_name = format!("{}/config (version {}, in the file)", admin.base, current.1);
        let new_name = format!("{}/config/previous (version {})", admin.base, previous.1);
        out::line(history::unified_diff(&current.0, &previous.0, &old_name, &new_name).trim_end());
        admin.confirm_and_send(yes, &current.1, Method::POST, "/config/undo", None).await
    })
}

/// The versions the gateway at `remote` keeps: its configuration file, and for each kept version
/// when it was replaced, its version and the file that keeps it.
pub(crate) fn history(remote: &Remote) -> anyhow::Result<(String, Vec<[String; 3]>)> {
    runtime()?.block_on(async {
        let admin = Admin::new(remote, "")?;
        let listed = admin.call(Method::GET, "/config/history", None, None).await?.json("/config/history")?;
        let field = |v: &Value, name: &str| v[name].as_str().unwrap_or_default().to_owned();
        let rows = listed["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| [field(v, "replaced_at"), field(v, "version"), field(v, "file")])
            .collect();
        Ok((format!("{} ({})", field(&listed, "file"), admin.base), rows))
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
}

/// The admin listener, reached with the operator's certificate.
struct Admin {
    client: HttpClient,
    base: String,
    issue: String,
    remote: Remote,
}

/// One answer of the admin listener.
struct Answer {
    status: StatusCode,
    etag: Option<String>,
    /// On `GET /config`: the version in force, which differs from the file's while the file
    /// holds an edit a reload refused.
    in_force: Option<String>,
    body: String,
}

impl Answer {
    /// What the gateway said: the `message` of its JSON error, or the body.
    fn message(&self) -> String {
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| self.body.trim().to_owned())
    }

    fn refused(&self, what: &str) -> anyhow::Error {
        anyhow::anyhow!("{what} answered {}: {}", self.status, self.message())
    }

    fn json(self, what: &str) -> anyhow::Result<Value> {
        if self.status != StatusCode::OK {
            return Err(self.refused(what));
        }
        serde_json::from_str(&self.body).with_context(|| format!("{what} answered something other than JSON"))
    }

    /// A configuration's text and version.
    fn toml(self, what: &str) -> anyhow::Result<(String, String)> {
        if self.status != StatusCode::OK {
            return Err(self.refused(what));
        }
        let version = self.etag.clone().unwrap_or_else(|| history::version_of(&self.body));
        Ok((self.body, version))
    }
}

impl Admin {
    fn new(remote: &Remote, issue: &str) -> anyhow::Result<Self> {
        let (Some(admin), Some(ca), Some(cert), Some(key)) = (&remote.admin, &remote.ca, &remote.cert, &remote.key)
        else {
            bail!("--admin needs --ca, --cert and --key");
        };
        let base = admin.trim_end_matches('/').to_owned();
        if !base.starts_with("https://") {
            bail!("--admin {admin}: the admin listener takes mutual TLS only; give it as https://HOST:PORT");
        }
        let client = super::https::client(ca, Some((cert, key)))?;
        Ok(Self { client, base, issue: issue.to_owned(), remote: remote.clone() })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        if_match: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut req = Request::builder().method(method.clone()).uri(&url);
        if let Some(version) = if_match {
            req = req.header(http::header::IF_MATCH, format!("\"{version}\""));
        }
        if !self.issue.is_empty() {
            req = req.header("x-road-issue", &self.issue);
        }
        let req = req.body(Full::new(body.map_or_else(Bytes::new, Bytes::from)))?;
        let exchange = async {
            let resp = self.client.request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            anyhow::Ok((parts, body))
        };
        let (parts, body) = tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .with_context(|| format!("{method} {url} took longer than {CALL_TIMEOUT:?}"))?
            .with_context(|| format!("{method} {url}"))
            .map_err(|e| explain_name_mismatch(e, &self.base))?;
        let version =
            |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(|v| v.trim_matches('"').to_owned());
        let (etag, in_force) = (version("etag"), version("x-splpd-version-in-force"));
        Ok(Answer { status: parts.status, etag, in_force, body: String::from_utf8_lossy(&body).into_owned() })
    }

    /// Asks (unless `yes`), then sends the change against version `current` and says what came of it.
    async fn confirm_and_send(
        &self,
        yes: bool,
        current: &str,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<ExitCode> {
        if !yes && !super::config_change::confirm(&format!("the gateway at {}", self.base))? {
            out::line(&format!("Nothing changed: the gateway at {} still runs version {current}.", self.base));
            return Ok(ExitCode::FAILURE);
        }
        // A change sent whole was checked first, and its restart note shown then.
        let noted = body.is_some();
        let answer = self.call(method, path, body, Some(current)).await?;
        if answer.status != StatusCode::OK {
            eprintln!("{}", answer.message());
            return Ok(ExitCode::FAILURE);
        }
        let done = answer.json(path)?;
        let version = text_field(&done, "version")?;
        let previous = text_field(&done, "previous")?;
        let kept = done["kept"].as_str().unwrap_or("its history");
        if !noted {
            warn_restart(&done);
        }
        let ca = self.remote.ca.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
        let cert = self.remote.cert.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
        let key = self.remote.key.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
        out::line(&format!(
            "The gateway at {} now runs version {version}, in force and in its audit log under your name; version \
             {previous} is kept on its host in {kept}.\nTo go back: splpd config undo --admin {} --ca {ca} --cert \
             {cert} --key {key}",
            self.base, self.base
        ));
        Ok(ExitCode::SUCCESS)
    }
}

/// The gateway names the new text `FILE (new version)`, after the file it runs from; here it is
/// the operator's own file, so its mistakes are shown at `NEW:LINE:COLUMN`.
fn in_own_file(message: &str, new: &Path) -> String {
    const MARK: &str = " (new version):";
    let lines: Vec<String> = message
        .lines()
        .map(|line| match line.find(MARK) {
            Some(at) if !line[..at].contains(' ') => format!("{}:{}", new.display(), &line[at + MARK.len()..]),
            _ => line.to_owned(),
        })
        .collect();
    lines.join("\n")
}

fn text_field(v: &Value, name: &str) -> anyhow::Result<String> {
    v[name].as_str().map(str::to_owned).with_context(|| format!("the gateway's answer has no {name:?}: {v}"))
}

/// Says which changed keys wait for a restart of the gateway.
fn warn_restart(v: &Value) {
    let keys: Vec<&str> = v["needs_restart"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if !keys.is_empty() {
        eprintln!("Note: {} take effect only when splpd is restarted.", keys.join(", "));
    }
}

/// rustls says only that the certificate is "not valid for name" (or `NotValidForName`, without
/// the names); say what to do about it.
fn explain_name_mismatch(e: anyhow::Error, base: &str) -> anyhow::Error {
    let said = format!("{e:#}");
    if said.contains("not valid for name") || said.contains("NotValidForName") {
        e.context(format!(
            "the gateway's certificate carries no name or address of {base}: use one it carries (`splpd certs inspect` \
             lists them), or issue it with that --dns or --ip as well"
        ))
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_the_certificate_does_not_carry_is_explained() {
        let context = rustls::CertificateError::NotValidForNameContext {
            expected: rustls::pki_types::ServerName::try_from("10.0.0.5").unwrap().to_owned(),
            presented: vec!["DnsName(\"splpd.okikab.go.id\")".into()],
        };
        for mismatch in [rustls::CertificateError::NotValidForName, context] {
            let e = anyhow::Error::new(rustls::Error::InvalidCertificate(mismatch));
            let said = format!("{:#}", explain_name_mismatch(e, "https://10.0.0.5:9443"));
            assert!(
                said.contains("carries no name or address of https://10.0.0.5:9443") && said.contains("--ip"),
                "{said}"
            );
        }
        let other = anyhow::anyhow!("connection refused");
        assert_eq!(format!("{:#}", explain_name_mismatch(other, "https://10.0.0.5:9443")), "connection refused");
    }
}
