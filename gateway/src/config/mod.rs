//! The declarative configuration file (design §6): its model, loading, and whole-file validation
//! with errors that name `file:line:column` and say how to fix the mistake.

pub mod diag;
pub mod history;
pub mod model;
pub mod resilience;
pub mod units;
mod validate;

pub use validate::{header_identified_clients, unidentifiable_clients, unmapped_national_grants};

use std::path::{Path, PathBuf};

pub use diag::{ConfigError, Diagnostic};
pub use model::*;

/// The key [`Config::files`] names the audit log's folder by: the one named path that is not a
/// file the gateway reads.
pub const AUDIT_DIR: &str = "[audit] dir";

/// Reads, parses and validates a configuration file. Relative paths inside it are taken from the
/// file's own directory, and are returned resolved.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_text(path).map(|(config, _)| config)
}

/// Loads the configuration at `path`, and returns the text it was read from with it: what the
/// gateway records as in force at start must be the very text it loaded, not the file read again
/// (which a change may have replaced meanwhile).
pub fn load_with_text(path: &Path) -> Result<(Config, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    parse(path, &text).map(|config| (config, text))
}

/// Parses and validates configuration `text` as if read from `path`.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let base = history::folder_of(path);
    parse_in(path, &base, text)
}

/// Parses and validates configuration `text` read from `path`, its relative file names taken
/// from `base`: a new version checked where it is to be put in force, its mistakes reported in
/// its own file.
pub fn parse_in(path: &Path, base: &Path, text: &str) -> Result<Config, ConfigError> {
    parse_checked(path, base, text, validate::When::Starting)
}

/// [`parse_in`] for a configuration to replace the one a running gateway has in force: the same
/// checks, except that an expired gateway certificate is not a mistake in the file (it may be
/// the one in force, which lapsed while the gateway ran, and a new CRL or grant must still go in
/// force; the log and `/readyz` say it has lapsed). Whether it is the one in force is for the
/// caller to check: the reload does.
pub fn parse_running(path: &Path, base: &Path, text: &str) -> Result<Config, ConfigError> {
    parse_checked(path, base, text, validate::When::Running)
}

/// The configuration in `text`, read from `path`, as far as its shape goes: parsed, its file
/// names taken from beside `path`, not validated (its files are not read). `None` when it does not
/// parse. For knowing which files a configuration names even when it is refused.
pub fn parse_shape(path: &Path, text: &str) -> Option<Config> {
    let mut config: Config = toml::from_str(text).ok()?;
    config.resolve_paths(&history::folder_of(path));
    Some(config)
}

fn parse_checked(path: &Path, base: &Path, text: &str, when: validate::When) -> Result<Config, ConfigError> {
    let base = base.to_owned();
    let doc = match toml::de::DeTable::parse(text) {
        Ok(doc) => doc,
        Err(err) => {
            let mut loc = diag::Locator::new(path, text, None);
            let at = err.span().map_or(0, |s| s.start);
            loc.error_at(at, syntax_message(err.message()), Some(syntax_hint(err.message())));
            return Err(ConfigError::Invalid(loc.into_diagnostics()));
        }
    };
    let mut loc = diag::Locator::new(path, text, Some(doc));
    let mut config: Config = match toml::from_str(text) {
        Ok(config) => config,
        Err(err) => {
            let at = err.span().map_or(0, |s| s.start);
            let message = plain_types(err.message().trim());
            let hint = shape_hint(&message);
            loc.error_at(at, message, hint);
            return Err(ConfigError::Invalid(loc.into_diagnostics()));
        }
    };
    validate::validate(&config, &mut loc, &base, when);
    if loc.has_errors() {
        return Err(ConfigError::Invalid(loc.into_diagnostics()));
    }
    config.resolve_paths(&base);
    Ok(config)
}

const SYNTAX_HINT: &str = "this is not valid TOML here; compare with the example `splpd config example` prints \
                           (strings need double quotes, tables are [name], lists of tables [[name]])";

/// For a list of tables written as a table: a sub-table's header whose `[[…]]` entry is missing
/// or misspelt above it.
const LIST_OF_TABLES_HINT: &str = "this key is a list of tables: each entry starts with its own `[[name]]` header, and \
    a sub-table such as `[service.health_check]` belongs to the `[[service]]` right above it; check the spelling of \
    the `[[…]]` header above";

/// The hint for a TOML syntax error: for a duplicate key, also the likeliest cause in this file.
fn syntax_hint(message: &str) -> String {
    if message.contains("duplicate key") {
        format!("{SYNTAX_HINT}; here often a `[name.part]` table with no `[[name]]` right above it (a misspelt header)")
    } else {
        SYNTAX_HINT.to_owned()
    }
}

fn syntax_message(message: &str) -> String {
    format!("TOML syntax error: {}", message.trim())
}

/// serde's message with the Rust type it expected said in words an operator reads ("expected
/// u32" is "expected a whole number from 0 to 4294967295").
fn plain_types(message: &str) -> String {
    const WORDS: [(&str, &str); 8] = [
        ("u8", "a whole number from 0 to 255"),
        ("u16", "a whole number from 0 to 65535"),
        ("u32", "a whole number from 0 to 4294967295"),
        ("u64", "a whole number of 0 or more"),
        ("usize", "a whole number of 0 or more"),
        ("i32", "a whole number"),
        ("i64", "a whole number"),
        ("f64", "a number"),
    ];
    for (rust, words) in WORDS {
        if let Some(before) = message.strip_suffix(&format!("expected {rust}")) {
            return format!("{before}expected {words}");
        }
    }
    message.to_owned()
}

/// A hint for the errors serde reports while fitting the file to the model.
fn shape_hint(message: &str) -> Option<String> {
    if message.contains(" identifier ") {
        return Some("identifier parts use only A-Z a-z 0-9 and ' ( ) + , - . = ?".to_owned());
    }
    if message.starts_with("unknown field") {
        Some("check the spelling: the keys this table accepts are listed above".to_owned())
    } else if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        Some(format!("add `{field} = …` to this table; the example `splpd config example` prints has it"))
    } else if message.starts_with("unknown variant") {
        Some("use one of the values listed above".to_owned())
    } else if message.starts_with("invalid type: map, expected a sequence") {
        // `[service.health_check]` with no `[[service]]` above it (misspelt, say `[[services]]`).
        Some(LIST_OF_TABLES_HINT.to_owned())
    } else if message.starts_with("invalid type") {
        Some("this key takes a value of the type named above".to_owned())
    } else {
        Some("the example `splpd config example` prints shows the keys and values this table takes".to_owned())
    }
}

impl Config {
    /// Makes every relative path absolute against `base`, the configuration file's directory.
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        self.for_each_path(|_, p| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        });
    }

    /// Every file or folder the configuration names, with the key that names it.
    pub fn files(&self) -> Vec<(&'static str, PathBuf)> {
        let mut files = Vec::new();
        self.clone().for_each_path(|key, p| files.push((key, std::mem::take(p))));
        files
    }

    fn for_each_path(&mut self, mut f: impl FnMut(&'static str, &mut PathBuf)) {
        f("[gateway] cert", &mut self.gateway.cert);
        f("[gateway] key", &mut self.gateway.key);
        for anchor in &mut self.trust_anchors {
            f("[[trust_anchor]] ca", &mut anchor.ca);
            anchor.crls.iter_mut().for_each(|p| f("[[trust_anchor]] crls", p));
        }
        for service in &mut self.services {
            service.openapi.iter_mut().for_each(|p| f("[[service]] openapi", p));
            if let Some(tls) = &mut service.tls {
                tls.ca.iter_mut().for_each(|p| f("[[service]] tls.ca", p));
            }
        }
        if let Some(national) = &mut self.national {
            national.client_secret_file.iter_mut().for_each(|p| f("[national] client_secret_file", p));
        }
        f(AUDIT_DIR, &mut self.audit.dir);
        self.audit.signing_key.iter_mut().for_each(|p| f("[audit] signing_key", p));
        self.audit.signing_cert.iter_mut().for_each(|p| f("[audit] signing_cert", p));
    }
}
