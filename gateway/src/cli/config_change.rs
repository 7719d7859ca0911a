//! `splpd config apply` and `splpd config undo`: change the configuration of a running gateway
//! with a diff shown first, a confirmation asked (or `--yes`), and the version replaced kept so
//! that the change can be undone.
//!
//! The new text is checked where it is to be put in force (relative file names taken from the
//! configuration's folder), shown as a unified diff, and written over the configuration file in
//! one rename; the running `splpd serve` notices the file change and reloads it, writing the new
//! version to its audit log before putting it in force (`RELOAD`, with the SHA-256 of the text).
//! The version it replaces goes to the history beside the file (`config::history`), as changes
//! made through the admin listener's `/config` do: either way can undo the other's change. So
//! that the reload's audit record can say who made the change and why, the command leaves a
//! note there first (`ChangeNote`: the host account, the reason, the SHA-256 of the old and the
//! new text), which the gateway takes only for a reload that puts that new text in place of that
//! old one.

use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use splpd_gateway::config::history::{self, ChangeNote, History, version_of};
use splpd_gateway::config::{self, ConfigError};

/// Checks `new` as a replacement of the configuration at `current`, shows the change, asks, and
/// puts it in place.
pub(crate) fn apply(current: &Path, new: &Path, issue: &str, yes: bool) -> anyhow::Result<ExitCode> {
    let old_text = read(current)?;
    let new_text = read(new)?;
    let base = history::folder_of(current);
    let new_config = match config::parse_running(new, &base, &new_text) {
        Ok(config) => config,
        Err(err @ ConfigError::Invalid(_)) => {
            eprintln!("{err}");
            eprintln!("{} is unchanged.", current.display());
            return Ok(ExitCode::FAILURE);
        }
        Err(err) => return Err(err.into()),
    };
    // An expired gateway certificate passes only as the one in force, lapsed (as on reload).
    let now = time::OffsetDateTime::now_utc();
    let cert = |c: &config::Config| splpd_gateway::tls::GatewayCert::load(&c.gateway.cert, &c.gateway.key).ok();
    if let Some(new_cert) = cert(&new_config).filter(|c| c.expired(now)) {
        // The file in force unreadable: the reload will tell, as it does for the listeners below.
        let in_force = config::parse_running(current, &base, &old_text).ok().as_ref().and_then(cert);
        let leaf = in_force.as_ref().and_then(|c| c.chain().first());
        if let Some(why) = leaf.and_then(|leaf| new_cert.expired_replacement(leaf, now)) {
            eprintln!("{}: [gateway] cert: {why}", new.display());
            eprintln!("{} is unchanged.", current.display());
            return Ok(ExitCode::FAILURE);
        }
    }
    // What the running gateway would refuse to reload (the file in force may itself be broken,
    // an edit whose reload was refused: then there is nothing to compare with).
    let in_file = config::parse_running(current, &history::folder_of(current), &old_text);
    if let Ok(old_config) = &in_file
        && let Err(err) = splpd_gateway::reload::check_listeners_kept(old_config, &new_config)
    {
        eprintln!("{}: {err}", new.display());
        eprintln!("{} is unchanged.", current.display());
        return Ok(ExitCode::FAILURE);
    }
    let changed = change(current, &old_text, &new_text, &new.display().to_string(), issue, yes)?;
    if changed == ExitCode::SUCCESS && matches!(in_file, Err(ConfigError::Invalid(_))) {
        // Which version was in force, only the running gateway knows; here the file's text is
        // the one kept, so that the refused edit is not lost.
        super::out::line(&format!(
            "Note: {} held version {}, which a running gateway refuses, so it may not have been in force. It is kept as the \
             version this change replaced, and `splpd config undo` will not put it back, since a gateway would refuse \
             it. The version that was in force is the gateway's: GET /config/in-force on its admin listener; a \
             change made there (`splpd config apply --admin`) keeps that version for undo instead.",
            current.display(),
            version_of(&old_text)
        ));
    }
    Ok(changed)
}

/// Puts back the version the last change replaced (the change itself is kept, so a second undo
/// redoes it).
pub(crate) fn undo(current: &Path, issue: &str, yes: bool) -> anyhow::Result<ExitCode> {
    let old_text = read(current)?;
    let history = History::of(current);
    let Some(last) = history.latest()? else {
        bail!(
            "{} holds no earlier version of {}: only changes made with `splpd config apply` or the admin \
             listener's /config can be undone",
            history.dir().display(),
            current.display()
        );
    };
    // A file a running gateway would refuse (an edit by hand, with mistakes) is not the version
    // in force: putting back the version the last change replaced would drop the one in force too.
    if let Err(err @ ConfigError::Invalid(_)) = config::parse_running(current, &history::folder_of(current), &old_text)
    {
        eprintln!("{err}");
        bail!(
            "{} holds version {}, which a running gateway refuses, so the version before it is still in force; undo \
             would put back the version the last change replaced ({}) and drop that one as well: correct the file, \
             or edit it back, first",
            current.display(),
            version_of(&old_text),
            last.path.display()
        );
    }
    let previous = read(&last.path)?;
    // The version kept may be one a running gateway refused (an edit by hand that a change then
    // replaced): put back, the gateway would keep running on the one in force and fail at its
    // next start.
    if let Err(err @ ConfigError::Invalid(_)) = config::parse_running(current, &history::folder_of(current), &previous)
    {
        eprintln!("{err}");
        bail!(
            "the version the last change replaced ({}, kept in {}) is one a running gateway refuses now; undo would leave \
             {} broken, and the gateway would not start with it: {} is unchanged. To start from it, copy it, correct \
             it, and `splpd config apply` it",
            version_of(&previous),
            last.path.display(),
            current.display(),
            current.display()
        );
    }
    change(current, &old_text, &previous, &last.path.display().to_string(), issue, yes)
}

fn change(
    current: &Path,
    old_text: &str,
    new_text: &str,
    source: &str,
    issue: &str,
    yes: bool,
) -> anyhow::Result<ExitCode> {
    let (old_version, new_version) = (version_of(old_text), version_of(new_text));
    if old_text == new_text {
        super::out::line(&format!("{} already holds this version ({new_version}); nothing to do.", current.display()));
        return Ok(ExitCode::SUCCESS);
    }
    let old_name = format!("{} (version {old_version}, in the file)", current.display());
    let new_name = format!("{source} (version {new_version})");
    super::out::line(history::unified_diff(old_text, new_text, &old_name, &new_name).trim_end());
    if !yes && !confirm(&current.display().to_string())? {
        super::out::line(&format!("Nothing changed: {} still holds version {old_version}.", current.display()));
        return Ok(ExitCode::FAILURE);
    }
    let history = History::of(current);
    let kept = history.keep(old_text)?;
    let note = ChangeNote::of(old_text, new_text, issue);
    let written = history.leave_note(&note).and_then(|()| history::write_atomically(current, new_text.as_bytes()));
    if let Err(e) = written {
        // Nothing changed: no note, and no kept copy of the text still in force (which undo
        // would take for the change's).
        history.clear_note_for(&splpd_certs::load::sha256(new_text.as_bytes()));
        let _ = std::fs::remove_file(&kept);
        return Err(e.into());
    }
    super::out::line(&format!(
        "{} now holds version {new_version}; version {old_version} is kept in {}.\nA running splpd serve reloads \
         it within a second and writes it to its audit log first, as changed by {}; its log says \"configuration \
         reloaded and in force\" with version {new_version}, or why it refused it. To go back: splpd config undo \
         --config {}",
        current.display(),
        kept.display(),
        note.host_user,
        current.display()
    ));
    Ok(ExitCode::SUCCESS)
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Asks, and reads the answer from standard input: `y` or `yes` (or `ya`) confirms; anything
/// else, or nothing at all (a script without `--yes`), declines.
pub(crate) fn confirm(place: &str) -> anyhow::Result<bool> {
    let stdin = std::io::stdin();
    let mut err = std::io::stderr();
    write!(err, "Put this in force in {place}? [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes" | "ya"))
}
