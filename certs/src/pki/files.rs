//! Writing files without surprises: every output path is checked before anything is written;
//! existing files are replaced only when asked, and then by renaming a complete temporary file
//! over them; private keys are created with mode 0600 from the start, never chmod-ed afterwards.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use crate::pki::PkiError;
use crate::pki::keys::random_suffix;

/// Mode of private key files.
pub const SECRET_MODE: u32 = 0o600;
/// Mode of certificates, CRLs and state files.
pub const PUBLIC_MODE: u32 = 0o644;
/// Mode of the CA directory: only its owner may read the key inside.
pub const CA_DIR_MODE: u32 = 0o700;

/// A file a command will write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    /// Where it goes.
    pub path: PathBuf,
    /// What it holds.
    pub contents: Vec<u8>,
    /// Whether it is a private key (mode 0600).
    pub secret: bool,
}

/// The folder a file is in: the current one (`.`) for a name without a folder, where
/// `Path::parent` gives the empty path.
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Refuses, before anything is written, when an output exists and `force` is not set, when two
/// outputs are the same file, or when an output's directory does not exist.
pub fn check_outputs<'a>(paths: impl IntoIterator<Item = &'a Path>, force: bool) -> Result<(), PkiError> {
    let mut seen: Vec<PathBuf> = Vec::new();
    for path in paths {
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        if seen.contains(&absolute) {
            return Err(PkiError::SamePath { path: path.to_owned() });
        }
        seen.push(absolute);
        let dir = parent_of(path);
        if !dir.is_dir() {
            return Err(PkiError::Io {
                action: "create",
                path: path.to_owned(),
                cause: io::Error::new(io::ErrorKind::NotFound, format!("directory {} does not exist", dir.display())),
            });
        }
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => {
                return Err(PkiError::Io {
                    action: "write",
                    path: path.to_owned(),
                    cause: io::Error::new(io::ErrorKind::IsADirectory, "it is a directory"),
                });
            }
            Ok(_) if !force => return Err(PkiError::Exists { path: path.to_owned() }),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(PkiError::Io { action: "check", path: path.to_owned(), cause: e }),
        }
    }
    Ok(())
}

/// Writes every output after checking them all. Without `force`, each file is created afresh
/// (so a file that appeared since the check is not overwritten either), and the files already
/// written are removed again if a later one fails.
pub fn write_outputs(outputs: &[OutputFile], force: bool) -> Result<(), PkiError> {
    check_outputs(outputs.iter().map(|o| o.path.as_path()), force)?;
    let mut written: Vec<&Path> = Vec::new();
    for out in outputs {
        let result = if force {
            replace_atomically(&out.path, &out.contents, out.secret)
        } else {
            create_new(&out.path, &out.contents, out.secret)
        };
        if let Err(e) = result {
            if !force {
                for path in written {
                    let _ = fs::remove_file(path);
                }
            }
            return Err(e);
        }
        written.push(&out.path);
    }
    Ok(())
}

fn open_new(path: &Path, secret: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if secret { SECRET_MODE } else { PUBLIC_MODE });
    }
    #[cfg(not(unix))]
    let _ = secret;
    options.open(path)
}

fn write_and_sync(file: &mut File, contents: &[u8]) -> io::Result<()> {
    file.write_all(contents)?;
    file.sync_all()
}

/// Creates `path`, failing if it exists, and writes `contents` to it.
pub fn create_new(path: &Path, contents: &[u8], secret: bool) -> Result<(), PkiError> {
    let mut file = open_new(path, secret).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            PkiError::Exists { path: path.to_owned() }
        } else {
            PkiError::Io { action: "create", path: path.to_owned(), cause: e }
        }
    })?;
    write_and_sync(&mut file, contents).map_err(|e| {
        let _ = fs::remove_file(path);
        PkiError::Io { action: "write", path: path.to_owned(), cause: e }
    })
}

/// Writes `contents` to a temporary file next to `path` and renames it over `path`, so readers
/// see either the old file or the new one, never a partial one.
pub fn replace_atomically(path: &Path, contents: &[u8], secret: bool) -> Result<(), PkiError> {
    let dir = parent_of(path);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", random_suffix()));
    let result = (|| {
        let mut file = open_new(&tmp, secret).map_err(PkiError::io("create", &tmp))?;
        write_and_sync(&mut file, contents).map_err(PkiError::io("write", &tmp))?;
        fs::rename(&tmp, path).map_err(PkiError::io("replace", path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    } else if let Ok(d) = File::open(dir) {
        // Makes the rename itself durable; failure only weakens crash safety, so it is ignored.
        let _ = d.sync_all();
    }
    result
}

/// Creates a directory (and its parents) readable only by its owner.
pub fn create_private_dir(path: &Path) -> Result<(), PkiError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(CA_DIR_MODE);
    }
    builder.create(path).map_err(PkiError::io("create directory", path))
}

/// The folders [`create_parents`] made, removed again (those still empty, deepest first) when
/// dropped, unless [`kept`](Self::keep): a command that refuses leaves no folder behind either.
#[derive(Debug)]
#[must_use = "dropping it removes the folders it made"]
pub struct NewDirs {
    created: Vec<PathBuf>,
}

impl NewDirs {
    /// Keeps the folders: the outputs are written.
    pub fn keep(mut self) {
        self.created.clear();
    }
}

impl Drop for NewDirs {
    fn drop(&mut self) {
        for dir in self.created.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Creates the missing folders above each output (a path, and whether it is a private key), so
/// that an output may go into a folder of its own without a `mkdir` first. Above a private key
/// they get mode 0700, like the CA directory; otherwise the default mode.
pub fn create_parents<'a>(outputs: impl IntoIterator<Item = (&'a Path, bool)>) -> Result<NewDirs, PkiError> {
    let mut outputs: Vec<(&Path, bool)> = outputs.into_iter().collect();
    // A folder shared by a key and a certificate is made for the key, with the key's mode.
    outputs.sort_by_key(|(_, secret)| !secret);
    let mut made = NewDirs { created: Vec::new() };
    for (path, secret) in outputs {
        let missing: Vec<&Path> =
            parent_of(path).ancestors().take_while(|dir| !dir.as_os_str().is_empty() && !dir.exists()).collect();
        for dir in missing.into_iter().rev() {
            let mut builder = fs::DirBuilder::new();
            #[cfg(unix)]
            if secret {
                use std::os::unix::fs::DirBuilderExt as _;
                builder.mode(CA_DIR_MODE);
            }
            #[cfg(not(unix))]
            let _ = secret;
            match builder.create(dir) {
                Ok(()) => made.created.push(dir.to_owned()),
                // `a/..` in a path, or another process making it meanwhile.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                Err(e) => return Err(PkiError::Io { action: "create directory", path: dir.to_owned(), cause: e }),
            }
        }
    }
    Ok(made)
}

/// An exclusive hold on a CA directory while a command changes it, so that two operators
/// issuing at once cannot lose each other's index entries or reuse a CRL number.
#[derive(Debug)]
pub struct CaLock {
    path: PathBuf,
}

impl CaLock {
    /// Takes the lock, or says who holds it.
    pub fn acquire(path: PathBuf) -> Result<Self, PkiError> {
        match open_new(&path, false) {
            Ok(mut file) => {
                let _ = writeln!(file, "{}", std::process::id());
                Ok(Self { path })
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(PkiError::Locked { path }),
            Err(e) => Err(PkiError::Io { action: "create", path, cause: e }),
        }
    }
}

impl Drop for CaLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
