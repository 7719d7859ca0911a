//! The versions of a configuration file that changes replaced, kept beside it so that a change
//! can be undone, and the pieces every way of changing the file shares: the unified diff an
//! operator is shown, and the atomic write. Used by `splpd config apply` and `undo` on the host
//! and by the admin listener's `/config` API.
//!
//! A kept version is a plain copy named `<UTC time>-<version>-<file name>` in [`HISTORY_DIR`]:
//! an operator can read, compare or restore one with ordinary tools, and the names sort in the
//! order the versions were replaced.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// Where replaced versions are kept, beside the configuration file.
pub const HISTORY_DIR: &str = "splpd-history";

/// The first 16 hex digits of the SHA-256 of a configuration's text: how logs, the audit log's
/// records and the admin API name a version.
pub fn version_of(text: &str) -> String {
    version_of_digest(&splpd_certs::load::sha256(text.as_bytes()))
}

/// The version of a text whose SHA-256 is `digest`.
pub fn version_of_digest(digest: &[u8; 32]) -> String {
    hex::encode(&digest[..8])
}

/// The folder a configuration file's relative names are taken from, and its history kept in.
pub fn folder_of(path: &Path) -> PathBuf {
    path.parent().map_or_else(|| PathBuf::from("."), Path::to_owned)
}

/// A configuration file's name, for messages and the names of kept versions.
pub fn file_name_of(path: &Path) -> String {
    path.file_name().map_or_else(|| "splpd.toml".into(), |n| n.to_string_lossy().into_owned())
}

/// The unified diff from `old` to `new`, with three lines of context, headed by their names.
pub fn unified_diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    let diff = similar::TextDiff::from_lines(old, new);
    diff.unified_diff().context_radius(3).header(old_name, new_name).to_string()
}

/// Replaces `path` with `bytes` in one rename, after they are on disk: a reader (the running
/// gateway's reload) sees the old text or the new, never half. The new file has the old one's
/// mode from the start, and its owner and group where this process may set them (a root
/// `config apply` keeps a `root:splpd 0640` file readable by the gateway). A symbolic link is
/// followed, so that the link stays and its target is replaced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let old = std::fs::metadata(&path).ok();
    replace_file(&path, bytes, old.as_ref())
}

/// Writes `bytes` to a new file beside `path` and renames it over `path` once they are on disk,
/// with the mode, owner and group of `like` where this process may set them (else 0644, its
/// own). The new file is named by process and time, so that the gateway and a `config apply`
/// never share one, and made with `create_new` (O_CREAT | O_EXCL, which follows no link); the
/// rename replaces whatever is at `path`, a link included, itself.
fn replace_file(path: &Path, bytes: &[u8], like: Option<&std::fs::Metadata>) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let context = |what: &str, p: &Path, e: io::Error| io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()));
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{}.{nanos}.new", std::process::id()));
    let tmp = path.with_file_name(name);
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true).mode(like.map_or(0o644, |m| m.mode() & 0o7777));
        let mut file = options.open(&tmp).map_err(|e| context("writing", &tmp, e))?;
        if let Some(m) = like {
            // Not permitted unless root (or the owner keeping its group); the mode is kept anyway.
            let _ = std::os::unix::fs::fchown(&file, Some(m.uid()), Some(m.gid()));
        }
        file.write_all(bytes).map_err(|e| context("writing", &tmp, e))?;
        file.sync_all().map_err(|e| context("writing", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| context("replacing", path, e))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// One kept version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The file holding it.
    pub path: PathBuf,
    /// When it was replaced, as in its name (`20261124T130501.123456789Z`).
    pub replaced_at: String,
    /// Its version ([`version_of`] its text).
    pub version: String,
}

/// The kept versions of one configuration file.
#[derive(Debug, Clone)]
pub struct History {
    dir: PathBuf,
    /// `-<file name>`, the end of every kept version's name.
    suffix: String,
    file_name: String,
}

impl History {
    /// The history of the configuration file at `current`.
    pub fn of(current: &Path) -> Self {
        let dir = folder_of(current).join(HISTORY_DIR);
        let file_name = file_name_of(current);
        Self { dir, suffix: format!("-{file_name}"), file_name }
    }

    /// The folder it is kept in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the folder when missing, with the owner and group of the configuration's folder
    /// and its mode for owner and group (never for others), where this process may set them:
    /// whichever of the gateway (through the admin listener) and a root `config apply` makes it
    /// first, the other can still write there if it can write the configuration's folder.
    fn make_dir(&self) -> io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
        if !self.dir.is_dir() {
            // Made closed, and opened to the group only once it has its owner and group.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", self.dir.display())))?;
            if let Ok(parent) = std::fs::metadata(splpd_certs::pki::files::parent_of(&self.dir)) {
                // Not permitted unless root; the folder is usable by its maker either way.
                let _ = std::os::unix::fs::chown(&self.dir, Some(parent.uid()), Some(parent.gid()));
                let mode = (parent.mode() & 0o2770) | 0o700;
                let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(mode));
            }
        }
        self.check_closed()
    }

    /// Refuses a folder that every account may write to: anyone could then plant a version for
    /// `undo` to put in force, or a note naming someone else.
    fn check_closed(&self) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt as _;
        match std::fs::metadata(&self.dir) {
            Ok(m) if m.mode() & 0o002 != 0 => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} may be written by every account on this host, so the versions kept there cannot be trusted; \
                     `chmod o-w {}` (and check what it holds) before using it",
                    self.dir.display(),
                    self.dir.display()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Keeps `text`, the version being replaced, and returns where.
    pub fn keep(&self, text: &str) -> io::Result<PathBuf> {
        self.keep_at(text, time::OffsetDateTime::now_utc())
    }

    /// Keeps `texts` as replaced in that order, the last latest, each a nanosecond after the one
    /// before, so that their names sort so whatever the clock does between two writes. On an
    /// error, what it had kept is removed again.
    pub fn keep_in_order(&self, texts: &[&str]) -> io::Result<Vec<PathBuf>> {
        let now = time::OffsetDateTime::now_utc();
        let mut kept = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let at = now + time::Duration::nanoseconds(i64::try_from(i).unwrap_or(0));
            match self.keep_at(text, at) {
                Ok(path) => kept.push(path),
                Err(e) => {
                    for path in &kept {
                        let _ = std::fs::remove_file(path);
                    }
                    return Err(e);
                }
            }
        }
        Ok(kept)
    }

    fn keep_at(&self, text: &str, now: time::OffsetDateTime) -> io::Result<PathBuf> {
        self.make_dir()?;
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
        let path = self.dir.join(format!("{stamp}-{}-{}", version_of(text), self.file_name));
        std::fs::write(&path, text).map_err(|e| {
            io::Error::new(e.kind(), format!("keeping the replaced version in {}: {e}", path.display()))
        })?;
        Ok(path)
    }

    /// The kept versions, oldest first. A missing folder is an empty history.
    pub fn list(&self) -> io::Result<Vec<Kept>> {
        self.check_closed()?;
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io::Error::new(e.kind(), format!("reading {}: {e}", self.dir.display()))),
        };
        let mut kept: Vec<Kept> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .filter_map(|path| {
                // The folder may keep other files' versions too, whose names may end in this
                // one's (`a-b.toml` and `b.toml`): the name must be exactly time, version, file.
                let name = path.file_name()?.to_str()?.strip_suffix(&self.suffix)?.to_owned();
                let (replaced_at, version) = name.split_once('-')?;
                let stamp_like = replaced_at.len() == 26 && replaced_at.ends_with('Z') && replaced_at.contains('T');
                let version_like = version.len() == 16 && version.bytes().all(|b| b.is_ascii_hexdigit());
                (stamp_like && version_like).then(|| Kept {
                    replaced_at: replaced_at.to_owned(),
                    version: version.to_owned(),
                    path: path.clone(),
                })
            })
            .collect();
        // The names start with the UTC time, so they sort in the order they were kept.
        kept.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(kept)
    }

    /// The version the latest change replaced.
    pub fn latest(&self) -> io::Result<Option<Kept>> {
        Ok(self.list()?.pop())
    }

    /// Where a change made on the host leaves its [`ChangeNote`] of the text whose SHA-256 is
    /// `sha256`: hidden, not named like a kept version, and one file per text, so that removing
    /// one text's note can never remove another's.
    fn note_path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!(".{}.{sha256}.change", self.file_name))
    }

    /// Leaves `note` for the running gateway's reload of the text it describes. Written to a new
    /// file that is then renamed into place: a symbolic link planted there is replaced, not
    /// followed. Notes of other texts are removed, except the one of the text being replaced
    /// (its reload may still be pending): they describe texts no longer in the file.
    pub fn leave_note(&self, note: &ChangeNote) -> io::Result<()> {
        self.make_dir()?;
        let json = serde_json::to_vec_pretty(note).map_err(io::Error::other)?;
        replace_file(&self.note_path(&note.sha256), &json, None)?;
        let keep = [self.note_path(&note.sha256), self.note_path(&note.replaces)];
        let prefix = format!(".{}.", self.file_name);
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().filter_map(Result::ok) {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let hash = name.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix(".change"));
            if hash.is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                && !keep.contains(&entry.path())
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// The note left by the change that wrote the text whose SHA-256 is `sha256`. A missing or
    /// unreadable note is none.
    pub fn note_for(&self, sha256: &[u8; 32]) -> Option<ChangeNote> {
        let hex = hex::encode(sha256);
        let path = self.note_path(&hex);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                // The change goes on (the file is what it is), but without who made it: say why.
                tracing::warn!(
                    "cannot read {}: {e}; the change is recorded without the host account and issue that \
                     `config apply` gave: the gateway's account must be able to read {}",
                    path.display(),
                    self.dir.display()
                );
                return None;
            }
        };
        serde_json::from_slice::<ChangeNote>(&bytes).ok().filter(|n| n.sha256 == hex)
    }

    /// Removes the note of the text whose SHA-256 is `sha256` (now in force, or a change that
    /// failed); other texts' notes stay.
    pub fn clear_note_for(&self, sha256: &[u8; 32]) {
        let path = self.note_path(&hex::encode(sha256));
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::debug!("cannot remove {}: {e}; the next `config apply` removes it", path.display());
        }
    }
}

/// Who changed the configuration file on the gateway's host (`splpd config apply` or `undo` with
/// `--config`), for the running gateway to name in the audit record of the configuration put in
/// force: the file alone says nothing of who wrote it. A note describes one change, from one
/// text to another, each by its SHA-256; it is as trustworthy as the accounts that can write the
/// history folder (those that can write the configuration's folder).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChangeNote {
    /// The version ([`version_of`]) of the text the change wrote, as operators see it.
    pub version: String,
    /// The SHA-256 of that text, in hex: the note is that text's only.
    pub sha256: String,
    /// The SHA-256 of the text it replaced, in hex: the note is of that change only.
    pub replaces: String,
    /// The host account, as [`host_account`] describes it.
    pub host_user: String,
    /// The reason given (`--issue`); may be empty.
    pub issue: String,
}

impl ChangeNote {
    /// A note of the change from `old` to `new`, made now by this process's account for `issue`.
    pub fn of(old: &str, new: &str, issue: &str) -> Self {
        let sha256 = splpd_certs::load::sha256(new.as_bytes());
        Self {
            version: version_of_digest(&sha256),
            sha256: hex::encode(sha256),
            replaces: hex::encode(splpd_certs::load::sha256(old.as_bytes())),
            host_user: host_account(),
            issue: issue.to_owned(),
        }
    }
}

/// The account this process runs for, in words for an audit record: the account it runs as,
/// and, where they differ, the one that logged in (the kernel's login uid, which `sudo` and `su`
/// keep: `budi (uid 1000) as root (uid 0)`). Names come from `/etc/passwd`; an account known
/// only to a directory service is `uid 1000`.
pub fn host_account() -> String {
    use std::os::unix::fs::MetadataExt as _;
    // The owner of /proc/self is the process's effective user.
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    let login = std::fs::read_to_string("/proc/self/loginuid")
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .filter(|&id| id != u32::MAX);
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let named = |id: u32| {
        let name = passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            (fields.nth(1)?.parse::<u32>().ok()? == id).then(|| name.to_owned())
        });
        name.map_or_else(|| format!("uid {id}"), |name| format!("{name} (uid {id})"))
    };
    match (login, uid) {
        (Some(login), Some(uid)) if login != uid => format!("{} as {}", named(login), named(uid)),
        (_, Some(uid)) => named(uid),
        (Some(login), None) => named(login),
        (None, None) => "an unknown account".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_versions_come_back_newest_last_and_other_files_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("splpd.toml");
        let history = History::of(&current);
        assert_eq!(history.latest().unwrap(), None, "no folder yet is an empty history");
        let first = history.keep("a = 1\n").unwrap();
        let second = history.keep("a = 2\n").unwrap();
        // Other configuration files' versions in the same folder, one whose name ends in this one's.
        History::of(&dir.path().join("other.toml")).keep("b = 1\n").unwrap();
        History::of(&dir.path().join("old-splpd.toml")).keep("c = 1\n").unwrap();
        let kept = history.list().unwrap();
        assert_eq!(kept.iter().map(|k| k.path.clone()).collect::<Vec<_>>(), vec![first, second.clone()]);
        assert_eq!(kept[1].version, version_of("a = 2\n"));
        assert!(kept[0].replaced_at.ends_with('Z') && kept[0].replaced_at.contains('T'), "{:?}", kept[0]);
        assert_eq!(history.latest().unwrap().unwrap().path, second);
        assert_eq!(std::fs::read_to_string(second).unwrap(), "a = 2\n");
    }

    #[test]
    fn an_atomic_write_keeps_the_files_permissions_and_leaves_no_temporary_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("splpd.toml");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // Through a symbolic link: the link stays, its target is replaced.
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        write_atomically(&link, b"newer").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "newer");
        let diff = unified_diff("a\nb\n", "a\nc\n", "old", "new");
        assert!(diff.contains("--- old") && diff.contains("+++ new") && diff.contains("-b\n+c"), "{diff}");
    }

    #[test]
    fn a_change_note_is_found_for_its_own_text_only_and_is_not_a_kept_version() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let sha = |t: &str| splpd_certs::load::sha256(t.as_bytes());
        let dir = tempfile::tempdir().unwrap();
        let history = History::of(&dir.path().join("splpd.toml"));
        assert_eq!(history.note_for(&sha("a = 1\n")), None, "no note yet");
        let note = ChangeNote::of("a = 0\n", "a = 1\n", "CHG-1");
        assert_eq!(note.version, version_of("a = 1\n"));
        history.leave_note(&note).unwrap();
        assert_eq!(history.note_for(&sha("a = 1\n")), Some(note.clone()));
        assert_eq!(history.note_for(&sha("a = 2\n")), None, "another text is not that change's");
        assert_eq!(history.list().unwrap(), Vec::new(), "a note is not a kept version");
        // The next change's note, from a = 1 to a = 2, keeps a = 1's (its reload may be pending).
        let next = ChangeNote::of("a = 1\n", "a = 2\n", "CHG-2");
        history.leave_note(&next).unwrap();
        history.clear_note_for(&sha("a = 2\n"));
        assert!(history.note_for(&sha("a = 1\n")).is_some(), "only the note of the text named is removed");
        // A later change's note removes those of texts no longer in the file.
        history.leave_note(&ChangeNote::of("a = 3\n", "a = 4\n", "CHG-4")).unwrap();
        assert_eq!(history.note_for(&sha("a = 1\n")), None);
        assert!(history.note_for(&sha("a = 4\n")).is_some());
        history.clear_note_for(&sha("a = 4\n"));
        history.clear_note_for(&sha("a = 1\n"));
        assert_eq!(history.note_for(&sha("a = 1\n")), None);

        // A link planted where the note goes is replaced, not followed.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "untouched").unwrap();
        std::os::unix::fs::symlink(&elsewhere, history.note_path(&note.sha256)).unwrap();
        history.leave_note(&note).unwrap();
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "untouched");
        assert!(!std::fs::symlink_metadata(history.note_path(&note.sha256)).unwrap().file_type().is_symlink());
        assert_eq!(history.note_for(&sha("a = 1\n")), Some(note.clone()));

        // The account this test runs as, by its uid.
        let uid = std::fs::metadata("/proc/self").unwrap().uid();
        assert!(note.host_user.contains(&format!("uid {uid}")), "{}", note.host_user);

        // The folder takes the configuration folder's mode for owner and group, never for others;
        // one that every account may write to is refused.
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o777)).unwrap();
        let other = History::of(&sub.join("splpd.toml"));
        other.keep("a = 1\n").unwrap();
        assert_eq!(std::fs::metadata(other.dir()).unwrap().permissions().mode() & 0o7777, 0o770);
        // Its owner and group are the configuration folder's where this process may set them
        // (as root: a root `config apply` leaves a folder the gateway's account can write).
        let (me, parent) = (std::fs::metadata("/proc/self").unwrap().uid(), std::fs::metadata(&sub).unwrap());
        let owned = dir.path().join("owned");
        std::fs::create_dir(&owned).unwrap();
        let _ = std::os::unix::fs::chown(&owned, Some(65534), Some(65534));
        let owner = std::fs::metadata(&owned).unwrap();
        History::of(&owned.join("splpd.toml")).keep("a = 1\n").unwrap();
        let made = std::fs::metadata(owned.join(HISTORY_DIR)).unwrap();
        if me == 0 {
            assert_eq!((made.uid(), made.gid()), (65534, 65534));
        } else {
            assert_eq!(made.uid(), me, "not root: its maker's");
        }
        assert_eq!(owner.uid() == 65534, me == 0);
        // A file named without a folder (`--config splpd.toml`) has its history folder owned
        // as the current folder is.
        assert_eq!(History::of(Path::new("splpd.toml")).dir(), Path::new("splpd-history"));
        assert_eq!(splpd_certs::pki::files::parent_of(Path::new("splpd-history")), Path::new("."));
        assert_eq!(parent.uid(), std::fs::metadata(other.dir()).unwrap().uid());
        std::fs::set_permissions(other.dir(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let err = other.list().unwrap_err().to_string();
        assert!(err.contains("every account") && err.contains("chmod o-w"), "{err}");
        assert!(other.keep("a = 2\n").is_err());
    }
}
