//! Configuration errors that point into the file: `file:line:column: message` and a hint, as a
//! compiler would print them, so that an operator can go straight to the mistake.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One mistake in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file itself could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file was read but has mistakes; all that could be found are listed.
    #[error("{}", DisplayAll(.0))]
    Invalid(Vec<Diagnostic>),
}

struct DisplayAll<'a>(&'a [Diagnostic]);

impl fmt::Display for DisplayAll<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in self.0 {
            writeln!(f, "{d}")?;
        }
        let n = self.0.len();
        write!(f, "{n} error{} in the configuration", if n == 1 { "" } else { "s" })
    }
}

/// One step of a path into the TOML document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'a> {
    /// A key of a table.
    Key(&'a str),
    /// An element of an array (or of an array of tables).
    Index(usize),
}

impl<'a> From<&'a str> for Seg<'a> {
    fn from(k: &'a str) -> Self {
        Self::Key(k)
    }
}

impl From<usize> for Seg<'_> {
    fn from(i: usize) -> Self {
        Self::Index(i)
    }
}

/// Builds a path into the document: `at!["grant", 3, "service"]`.
macro_rules! at {
    ($($seg:expr),* $(,)?) => { &[$($crate::config::diag::Seg::from($seg)),*][..] };
}
pub(crate) use at;

/// Maps paths and byte offsets in one file to lines and columns, and gathers diagnostics.
#[derive(Debug)]
pub struct Locator<'a> {
    file: &'a Path,
    text: &'a str,
    root: Option<Spanned<DeTable<'a>>>,
    diagnostics: Vec<Diagnostic>,
}

impl<'a> Locator<'a> {
    /// A locator for `text`, read from `file`; `root` is its parsed document when it parsed.
    pub fn new(file: &'a Path, text: &'a str, root: Option<Spanned<DeTable<'a>>>) -> Self {
        Self { file, text, root, diagnostics: Vec::new() }
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    /// The span of the deepest element of `path` present in the document: the value when the
    /// whole path exists, else the nearest table that should have held it.
    pub fn span(&self, path: &[Seg<'_>]) -> Range<usize> {
        let Some(root) = &self.root else { return 0..0 };
        let mut span = 0..0;
        let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
        let mut array: Option<&[Spanned<DeValue<'_>>]> = None;
        for seg in path {
            let next = match (*seg, table, array) {
                (Seg::Key(k), Some(t), _) => t.iter().find(|(key, _)| key.get_ref() == k).map(|(key, v)| {
                    // A table value's own span may be its whole body; the key is a better place.
                    if matches!(v.get_ref(), DeValue::Table(_) | DeValue::Array(_)) {
                        (key.span(), v)
                    } else {
                        (v.span(), v)
                    }
                }),
                (Seg::Index(i), _, Some(a)) => a.get(i).map(|v| (v.span(), v)),
                _ => None,
            };
            let Some((s, value)) = next else { break };
            span = s;
            table = None;
            array = None;
            match value.get_ref() {
                DeValue::Table(t) => table = Some(t),
                DeValue::Array(a) => array = Some(a),
                _ => {}
            }
        }
        span
    }

    /// Records a mistake at `path`.
    pub fn error(&mut self, path: &[Seg<'_>], message: impl Into<String>, hint: impl Into<Option<String>>) {
        let start = self.span(path).start;
        self.error_at(start, message, hint);
    }

    /// Records a mistake at a byte offset.
    pub fn error_at(&mut self, offset: usize, message: impl Into<String>, hint: impl Into<Option<String>>) {
        let (line, column) = self.line_col(offset);
        self.diagnostics.push(Diagnostic {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
            hint: hint.into(),
        });
    }

    /// The diagnostics gathered so far, in the order of the file.
    pub fn into_diagnostics(mut self) -> Vec<Diagnostic> {
        self.diagnostics.sort_by_key(|d| (d.line, d.column));
        self.diagnostics
    }

    /// Whether anything has been recorded.
    pub fn has_errors(&self) -> bool {
        !self.diagnostics.is_empty()
    }
}
