//! Changes of the configuration file made through the admin listener (design §6): the new text
//! is checked where it is to be put in force and shown as a diff against the file (`check`), then
//! put in force only against the version the operator saw (`apply`, `undo`, with `If-Match`).
//!
//! A change, one at a time with reloads: the new text is checked and compiled; the version it
//! replaces is kept in the history beside the file ([`History`]); the file is replaced in one
//! rename; the change goes to the audit log (`RELOAD`, naming the operator and the reason they
//! gave), and only then is it in force. When the log cannot take the record, the old text is
//! written back and nothing changes. The file watcher then sees a file that holds the version in
//! force, and does not reload it again.

use std::path::PathBuf;
use std::sync::Arc;

use splpd_certs::id::AdminId;

use super::{Author, Checker, ReloadError, ReloadReport, Reloader, configuration_record};
use crate::audit::AuditMode;
use crate::config::history::{self, History, Kept, version_of};
use crate::runtime::Snapshot;

/// Who made a change through the admin listener, for its audit record.
#[derive(Debug, Clone)]
pub struct ChangedBy {
    /// The operator's admin identifier.
    pub operator: AdminId,
    /// The SHA-256 of the operator's certificate.
    pub cert_sha256: [u8; 32],
    /// The address the operator's connection came from.
    pub address: std::net::IpAddr,
    /// The `X-Road-Issue` sent with the change: a ticket or a reason; may be empty.
    pub issue: String,
}

/// A new text checked against the file, not put in force.
#[derive(Debug)]
pub struct Checked {
    /// The version the file holds now, which `apply` must be given.
    pub current: String,
    /// The version in force, when known; differs from `current` when an edit of the file was
    /// refused.
    pub in_force: Option<String>,
    /// Whether putting the new text in force would change the configuration in force.
    pub changed: bool,
    /// The new text's version.
    pub version: String,
    /// The unified diff from the file to the new text; empty when they are the same.
    pub diff: String,
    /// What would need a restart.
    pub report: ReloadReport,
}

/// A change put in force.
#[derive(Debug)]
pub struct Changed {
    /// The version replaced.
    pub previous: String,
    /// The version now in force.
    pub version: String,
    /// Where the replaced version is kept; `None` when the text was the one in force already.
    pub kept: Option<PathBuf>,
    /// The unified diff from the replaced version.
    pub diff: String,
    /// What needs a restart to take effect.
    pub report: ReloadReport,
}

/// Why a change was not made. Nothing changed: neither the file nor the configuration in force.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The file is no longer at the version the operator checked the change against.
    #[error(
        "the configuration file holds version {current}, not {expected}: it changed since you read it; read it \
         again (GET /config), check your change against it (POST /config/check) and send it with If-Match: \
         \"{current}\""
    )]
    Stale {
        /// The version the file holds.
        current: String,
        /// The version the change was made against.
        expected: String,
    },
    /// The new text is refused: its mistakes, or what it cannot change while the gateway runs.
    #[error(transparent)]
    Refused(#[from] ReloadError),
    /// A change through the admin listener names a file the configuration in force does not
    /// name under that key.
    #[error(
        "{key} = {path:?} names a file the configuration in force does not name there: through the admin listener a \
         change may name only the files already in use, so that no operator's certificate can make the gateway read \
         others of its host; put the file in place on the gateway's host and make this change there (splpd config \
         apply --config FILE NEW)"
    )]
    NewFile {
        /// The key that names it.
        key: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A change through the admin listener would change where the national client secret is
    /// sent (`[national]` `token_url`, `base_url`, `client_secret_env`, and the CAs that may vouch
    /// for the API manager: `trust_anchor`, or the anchors' scopes without it).
    #[error(
        "[national] token_url, base_url and client_secret_env say where the gateway sends its national client secret \
         and tokens, and which of its environment variables is that secret, and [national] trust_anchor (or, without \
         it, the anchors' scopes and CRLs, and what the gateway serves) which CAs may vouch for the host it goes to: \
         through the admin listener they stay as they are; make this change on the gateway's host (splpd config apply \
         --config FILE NEW)"
    )]
    SecretDestination,
    /// There is no earlier version to go back to.
    #[error(
        "{dir} holds no earlier version of {file}: only changes made through the admin listener or `splpd config \
         apply` can be undone"
    )]
    NoHistory {
        /// The history folder.
        dir: PathBuf,
        /// The configuration file.
        file: PathBuf,
    },
    /// An undo asked for while the file holds a text that is not in force (an edit a reload
    /// refused): putting back the version before the one in force would silently drop that
    /// version's change too.
    #[error(
        "the configuration file holds version {file}, which is not in force (a reload refused it, the gateway's \
         log says why, or has not run yet); version {in_force} is. Undo puts back the version before {in_force}, which would drop \
         {in_force}'s change as well: correct the file, or put version {in_force} back (GET /config/in-force \
         has its text), then undo if you still want to"
    )]
    FileNotInForce {
        /// The version the file holds.
        file: String,
        /// The version in force.
        in_force: String,
    },
    /// The file or its history could not be read or written.
    #[error("{0}")]
    File(String),
}

impl Reloader {
    /// The configuration file's text as it is now, and its version.
    pub async fn current(&self) -> Result<(String, String), ChangeError> {
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|e| ChangeError::File(format!("reading {}: {e}", self.path.display())))?;
        let version = version_of(&text);
        Ok((text, version))
    }

    /// The versions earlier changes replaced, oldest first.
    pub async fn history(&self) -> Result<Vec<Kept>, ChangeError> {
        let history = History::of(&self.path);
        tokio::task::spawn_blocking(move || history.list())
            .await
            .map_err(|e| ChangeError::File(e.to_string()))?
            .map_err(|e| ChangeError::File(e.to_string()))
    }

    /// The version the latest change replaced, which `undo` would put back: its text and version.
    pub async fn previous(&self) -> Result<(String, String), ChangeError> {
        let history = History::of(&self.path);
        let latest = history.latest().map_err(|e| ChangeError::File(e.to_string()))?;
        let Some(latest) = latest else {
            return Err(ChangeError::NoHistory { dir: history.dir().to_owned(), file: self.path.clone() });
        };
        let text = tokio::fs::read_to_string(&latest.path)
            .await
            .map_err(|e| ChangeError::File(format!("reading {}: {e}", latest.path.display())))?;
        Ok((text, latest.version))
    }

    /// Checks `text` as a replacement of the file, and shows the change; changes nothing.
    pub async fn check(&self, text: String) -> Result<Checked, ChangeError> {
        let (current_text, current) = self.current().await?;
        self.names_no_new_file(&text)?;
        let (_, report) = self.build(text.clone()).await?;
        let version = version_of(&text);
        let diff = self.diff(&current_text, &current, &text, &version, "new");
        // Against what is in force: the file may hold an edit whose reload was refused, and
        // putting that same text through here would still change the configuration.
        let in_force = self.version_in_force();
        let changed = in_force.as_deref().unwrap_or(&current) != version;
        Ok(Checked { current, in_force, version, changed, diff, report })
    }

    /// Puts `text` in force in place of version `expected` of the file.
    pub async fn apply(&self, text: String, expected: &str, by: &ChangedBy) -> Result<Changed, ChangeError> {
        let _one_at_a_time = self.changing.lock().await;
        self.names_no_new_file(&text)?;
        self.put_in_force(text, "new", expected, by).await
    }

    /// Refuses a text sent through the admin listener that names a file the configuration in
    /// force does not name under the same key, before anything reads it: an operator's
    /// certificate must not make the gateway read, or send on, what the host holds (its key as
    /// `client_secret_file`, towards a token URL of the sender's; a system CA bundle as a trust
    /// anchor; `/dev/zero`). New files are put in place on the host, and named there (`splpd
    /// config apply --config`). A text that does not parse names nothing yet: the check reports it.
    fn names_no_new_file(&self, text: &str) -> Result<(), ChangeError> {
        let Some(new) = crate::config::parse_shape(&self.path, text) else { return Ok(()) };
        let snap = self.gateway.snapshot();
        let in_force = snap.config.files();
        if let Some((key, path)) = new.files().into_iter().find(|named| !in_force.contains(named)) {
            return Err(ChangeError::NewFile { key, path });
        }
        // Where the national client secret, and the tokens it buys, are sent, and which
        // variable of the gateway's environment is sent as it, are the host's to change too.
        let destination = |c: &crate::config::Config| {
            c.national.as_ref().map(|n| {
                // The CAs the API manager's certificate may chain to, and their CRLs.
                let mut trusted: Vec<(PathBuf, Vec<PathBuf>)> = c
                    .trust_anchors
                    .iter()
                    .filter(|a| c.vouches_for_api_manager(&a.name))
                    .map(|a| (a.ca.clone(), a.crls.clone()))
                    .collect();
                trusted.sort();
                (n.token_url.clone(), n.base_url.clone(), n.client_secret_env.clone(), trusted)
            })
        };
        if destination(&new) != destination(&snap.config) {
            return Err(ChangeError::SecretDestination);
        }
        Ok(())
    }

    /// Puts back the version the latest change replaced, in place of version `expected`. The
    /// version it replaces is kept in turn, so a second undo redoes the change.
    pub async fn undo(&self, expected: &str, by: &ChangedBy) -> Result<Changed, ChangeError> {
        let _one_at_a_time = self.changing.lock().await;
        let (file_text, file_version) = self.current().await?;
        if let Some(in_force) = self.version_in_force()
            && self.digest_in_force() != Some(splpd_certs::load::sha256(file_text.as_bytes()))
        {
            return Err(ChangeError::FileNotInForce { file: file_version, in_force });
        }
        let (text, _) = self.previous().await?;
        // A kept version may be a hand edit that was never in force.
        self.names_no_new_file(&text)?;
        let source = format!("the version kept in {}", History::of(&self.path).dir().display());
        self.put_in_force(text, &source, expected, by).await
    }

    async fn put_in_force(
        &self,
        text: String,
        source: &str,
        expected: &str,
        by: &ChangedBy,
    ) -> Result<Changed, ChangeError> {
        let (old_text, previous) = self.current().await?;
        if previous != expected {
            return Err(ChangeError::Stale { current: previous, expected: expected.to_owned() });
        }
        let digest = splpd_certs::load::sha256(text.as_bytes());
        let version = version_of(&text);
        let diff = self.diff(&old_text, &previous, &text, &version, source);
        if text == old_text && self.digest_in_force() == Some(digest) {
            return Ok(Changed { previous, version, kept: None, diff, report: ReloadReport::default() });
        }
        let (snapshot, report) = self.build(text.clone()).await?;
        // The file may hold an edit a reload refused: it is kept too, but the version this
        // change replaces, and so the one undo puts back, is the one in force.
        // (Unless the change puts that text back: then only the refused edit is kept.)
        let in_force = self.text_in_force().map(|(t, _)| t).filter(|t| **t != *old_text && **t != *text);
        let mut kept = self.replace_file(old_text.clone(), in_force, text.clone()).await?;
        // In the audit log before it is in force, as every change is; without the record, the
        // file goes back to what it held.
        let reloaded = super::loaded_anew(&self.gateway.snapshot(), &snapshot);
        let record = configuration_record(
            &self.gateway,
            "RELOAD",
            &self.path,
            digest,
            text.len(),
            Author::Operator(by),
            reloaded,
        );
        if let Err(e) = self.gateway.operations_log().append(record, AuditMode::Sync).await {
            match self.write(old_text).await {
                // No change was made, so there is none to undo; the kept copy goes only once the
                // file holds its text again.
                Ok(()) => {
                    for kept in &kept {
                        if let Err(e) = tokio::fs::remove_file(kept).await {
                            tracing::warn!(
                                "cannot remove {} ({e}): undo would put back a version it does not replace",
                                kept.display()
                            );
                        }
                    }
                }
                Err(undo) => tracing::error!(
                    "{undo}; {} holds version {version}, which is not in force; the version in force is kept in {}",
                    self.path.display(),
                    kept.last().map_or_else(String::new, |k| k.display().to_string())
                ),
            }
            return Err(ReloadError::Unlogged(e.to_string()).into());
        }
        self.gateway.replace(snapshot);
        self.now_in_force(digest, std::sync::Arc::from(text.as_str()), Author::Operator(by), &report);
        self.changed_elsewhere.notify_one();
        tracing::info!(
            config = %self.path.display(),
            %version,
            %previous,
            operator = %by.operator,
            issue = %by.issue,
            "configuration changed through the admin listener and in force"
        );
        Ok(Changed { previous, version, kept: kept.pop(), diff, report })
    }

    /// Checks and compiles `text` as the file's new content, off the runtime.
    async fn build(&self, text: String) -> Result<(Snapshot, ReloadReport), ChangeError> {
        let check: Checker = self.checker();
        let path = self.path.clone();
        // Its mistakes are reported in the new text's own lines, not in the file's.
        let name = PathBuf::from(format!("{} (new version)", history::file_name_of(&path)));
        tokio::task::spawn_blocking(move || check.build(&name, &path, &text))
            .await
            .map_err(|e| ChangeError::from(ReloadError::Task(e.to_string())))?
            .map_err(ChangeError::from)
    }

    /// Keeps `old`, the file's text, in the history, then `in_force` when the file did not hold
    /// the text in force (a refused edit), so that the latest kept version is the one replaced in
    /// force; and writes `new` over the file. Returns where they are kept, the version replaced
    /// last.
    async fn replace_file(
        &self,
        old: String,
        in_force: Option<Arc<str>>,
        new: String,
    ) -> Result<Vec<PathBuf>, ChangeError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let history = History::of(&path);
            let texts: Vec<&str> = [Some(old.as_str()), in_force.as_deref()].into_iter().flatten().collect();
            let kept = history.keep_in_order(&texts)?;
            if let Err(e) = history::write_atomically(&path, new.as_bytes()) {
                // The file is unchanged: kept copies of it would make undo a no-op.
                for path in &kept {
                    let _ = std::fs::remove_file(path);
                }
                return Err(e);
            }
            Ok(kept)
        })
        .await
        .map_err(|e| ChangeError::File(e.to_string()))?
        .map_err(|e| ChangeError::File(e.to_string()))
    }

    async fn write(&self, text: String) -> Result<(), String> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || history::write_atomically(&path, text.as_bytes()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    fn diff(&self, old: &str, old_version: &str, new: &str, new_version: &str, source: &str) -> String {
        let file = self.path.display();
        history::unified_diff(
            old,
            new,
            &format!("{file} (version {old_version})"),
            &format!("{source} (version {new_version})"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_change_says_which_version_to_read_and_send() {
        let e = ChangeError::Stale { current: "aaaa".into(), expected: "bbbb".into() };
        let text = e.to_string();
        assert!(text.contains("holds version aaaa, not bbbb") && text.contains("If-Match: \"aaaa\""), "{text}");
    }
}
