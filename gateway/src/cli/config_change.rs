//! `splpd config apply` and `splpd config undo`: change the configuration of a running gateway
//! with a diff shown first, a confirmation asked (or `--yes`), and the version replaced kept so
//! that the change can be undone.
//!
//! The new text is checked where it is to be put in force (relative file names taken from the
//! configuration's folder), shown as a unified diff, and written over the configuration file in
//! one rename; the running `splpd serve` notices the file change and reloads it, writing the new
//! version to its audit log before putting it in force (`RELOAD`, with the SHA-256 of the text).
//! The version it replaces goes to `HISTORY_DIR` beside the file, named by time and version.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use splpd_gateway::config::{self, ConfigError};
use splpd_gateway::reload::version_of;

/// Where replaced versions are kept, beside the configuration file.
const HISTORY_DIR: &str = "splpd-history";

/// Checks `new` as a replacement of the configuration at `current`, shows the change, asks, and
/// puts it in place.
pub(crate) fn apply(current: &Path, new: &Path, yes: bool) -> anyhow::Result<ExitCode> {
    let old_text = read(current)?;
    let new_text = read(new)?;
    let base = current.parent().map_or_else(|| PathBuf::from("."), Path::to_owned);
    match config::parse_in(new, &base, &new_text) {
        Ok(_) => {}
        Err(err @ ConfigError::Invalid(_)) => {
            eprintln!("{err}");
            eprintln!("{} is unchanged.", current.display());
            return Ok(ExitCode::FAILURE);
        }
        Err(err) => return Err(err.into()),
    }
    change(current, &old_text, &new_text, &new.display().to_string(), yes)
}

/// Puts back the version the last change replaced (the change itself is kept, so a second undo
/// redoes it).
pub(crate) fn undo(current: &Path, yes: bool) -> anyhow::Result<ExitCode> {
    let old_text = read(current)?;
    let history = history_dir(current);
    let Some(last) = latest(&history, current)? else {
        bail!(
            "{} holds no earlier version of {}: only changes made with `splpd config apply` can be undone",
            history.display(),
            current.display()
        );
    };
    let previous = read(&last)?;
    change(current, &old_text, &previous, &last.display().to_string(), yes)
}

fn change(current: &Path, old_text: &str, new_text: &str, source: &str, yes: bool) -> anyhow::Result<ExitCode> {
    let (old_version, new_version) = (version_of(old_text), version_of(new_text));
    if old_text == new_text {
        super::out::line(&format!("{} already holds this version ({new_version}); nothing to do.", current.display()));
        return Ok(ExitCode::SUCCESS);
    }
    let diff = similar::TextDiff::from_lines(old_text, new_text);
    let old_name = format!("{} (version {old_version}, in force)", current.display());
    let new_name = format!("{source} (version {new_version})");
    super::out::line(diff.unified_diff().context_radius(3).header(&old_name, &new_name).to_string().trim_end());
    if !yes && !confirm(current)? {
        super::out::line(&format!("Nothing changed: {} still holds version {old_version}.", current.display()));
        return Ok(ExitCode::FAILURE);
    }
    let kept = keep(current, old_text, &old_version)?;
    super::write_atomically(current, new_text.as_bytes())?;
    super::out::line(&format!(
        "{} now holds version {new_version}; version {old_version} is kept in {}.\nA running splpd serve reloads \
         it within a second and writes it to its audit log first; its log says \"configuration reloaded and in \
         force\" with version {new_version}, or why it refused it. To go back: splpd config undo --config {}",
        current.display(),
        kept.display(),
        current.display()
    ));
    Ok(ExitCode::SUCCESS)
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Asks, and reads the answer from standard input: `y` or `yes` (or `ya`) confirms; anything
/// else, or nothing at all (a script without `--yes`), declines.
fn confirm(current: &Path) -> anyhow::Result<bool> {
    let stdin = std::io::stdin();
    let mut err = std::io::stderr();
    write!(err, "Put this in force in {}? [y/N] ", current.display())?;
    err.flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes" | "ya"))
}

fn history_dir(current: &Path) -> PathBuf {
    current.parent().map_or_else(|| PathBuf::from("."), Path::to_owned).join(HISTORY_DIR)
}

/// Keeps `text`, the version being replaced, as `HISTORY_DIR/<UTC time>-<version>-<file name>`.
fn keep(current: &Path, text: &str, version: &str) -> anyhow::Result<PathBuf> {
    let dir = history_dir(current);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let now = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:09}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.nanosecond()
    );
    let name = current.file_name().map_or_else(|| "splpd.toml".into(), |n| n.to_string_lossy().into_owned());
    let path = dir.join(format!("{stamp}-{version}-{name}"));
    std::fs::write(&path, text).with_context(|| format!("keeping the replaced version in {}", path.display()))?;
    Ok(path)
}

/// The most recently kept version of `current` (the folder may keep other files' too).
fn latest(dir: &Path, current: &Path) -> anyhow::Result<Option<PathBuf>> {
    let suffix = format!("-{}", current.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut names: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(&suffix)))
        .collect();
    // The names start with the UTC time, so they sort in the order they were kept.
    names.sort();
    Ok(names.pop())
}
