//! X-Road style identifiers (design §2): members, subsystems, services, gateway servers and operators.
//!
//! Each identifier is parsed once, strictly, at the edge of the system; inside the gateway only these
//! types travel, never strings. Errors name the part that is wrong and show a correct example.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest part we accept. X-Road does not fix one; 64 is far above any real region, agency or
/// service code and keeps a whole service identifier well under any URI length limit.
pub const MAX_PART_LEN: usize = 64;

/// The prefix of every identity URI in a certificate's subject alternative name.
pub const URN_PREFIX: &str = "urn:splp:";

/// Characters X-Road allows in an identifier part (X-Road §4.8), besides ASCII letters and digits.
const EXTRA_CHARS: &[u8] = b"'()+,-.=?";

/// Whether `c` may appear in an identifier part.
pub fn is_part_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || (c.is_ascii() && EXTRA_CHARS.contains(&(c as u8)))
}

/// Which part of an identifier a message speaks of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartName {
    /// The exchange instance, `ID`.
    Instance,
    /// The member class, such as `PEMDA` or `KL`.
    MemberClass,
    /// The member code, such as the Kemendagri region code `1602`.
    MemberCode,
    /// The subsystem (agency or application) code, such as `DINKES`.
    SubsystemCode,
    /// The service code, such as `nik-verify`.
    ServiceCode,
    /// The gateway server code, such as `gw1`.
    ServerCode,
    /// The operator's name in an admin identity.
    OperatorName,
}

impl PartName {
    fn as_str(self) -> &'static str {
        match self {
            Self::Instance => "instance",
            Self::MemberClass => "member class",
            Self::MemberCode => "member code",
            Self::SubsystemCode => "subsystem code",
            Self::ServiceCode => "service code",
            Self::ServerCode => "server code",
            Self::OperatorName => "operator name",
        }
    }
}

impl fmt::Display for PartName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds of identifier, for messages and for certificate URIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdKind {
    /// `INSTANCE/CLASS/MEMBER`.
    Member,
    /// `INSTANCE/CLASS/MEMBER/SUBSYSTEM`.
    Subsystem,
    /// `INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE`.
    Service,
    /// `INSTANCE/CLASS/MEMBER/SERVER`.
    Server,
    /// `INSTANCE/CLASS/MEMBER/OPERATOR`.
    Admin,
    /// One to four leading parts, as a trust scope or a route.
    Prefix,
}

impl IdKind {
    /// The lowercase word used in certificate URIs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Subsystem => "subsystem",
            Self::Service => "service",
            Self::Server => "server",
            Self::Admin => "admin",
            Self::Prefix => "prefix",
        }
    }

    fn parts(self) -> &'static [PartName] {
        use PartName::*;
        match self {
            Self::Member => &[Instance, MemberClass, MemberCode],
            Self::Subsystem => &[Instance, MemberClass, MemberCode, SubsystemCode],
            Self::Service => &[Instance, MemberClass, MemberCode, SubsystemCode, ServiceCode],
            Self::Server => &[Instance, MemberClass, MemberCode, ServerCode],
            Self::Admin => &[Instance, MemberClass, MemberCode, OperatorName],
            Self::Prefix => &[Instance, MemberClass, MemberCode, SubsystemCode],
        }
    }

    fn shape(self) -> &'static str {
        match self {
            Self::Member => "INSTANCE/CLASS/MEMBER, e.g. ID/PEMDA/1602",
            Self::Subsystem => "INSTANCE/CLASS/MEMBER/SUBSYSTEM, e.g. ID/PEMDA/1602/DINKES",
            Self::Service => "INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE, e.g. ID/PEMDA/1602/DISDUKCAPIL/nik-verify",
            Self::Server => "INSTANCE/CLASS/MEMBER/SERVER, e.g. ID/PEMDA/1602/gw1",
            Self::Admin => "INSTANCE/CLASS/MEMBER/OPERATOR, e.g. ID/PEMDA/1602/budi",
            Self::Prefix => "one to four parts of an identifier, e.g. ID/PEMDA/1602",
        }
    }
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IdKind {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        Ok(match s {
            "member" => Self::Member,
            "subsystem" => Self::Subsystem,
            "service" => Self::Service,
            "server" => Self::Server,
            "admin" => Self::Admin,
            "prefix" => Self::Prefix,
            _ => return Err(IdError::UnknownKind { found: s.to_owned() }),
        })
    }
}

/// What is wrong with an identifier. Every message names the kind, the part and the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The input has the wrong number of `/`-separated parts.
    #[error("invalid {kind} identifier {input:?}: it has {found} part(s) but needs {expected}; write it as {}", kind.shape())]
    WrongPartCount {
        /// What was being parsed.
        kind: IdKind,
        /// The text as given (cut short if very long).
        input: String,
        /// Parts wanted (for a prefix, the most allowed).
        expected: usize,
        /// Parts found.
        found: usize,
    },
    /// A part is empty, as in `ID//1602`.
    #[error("invalid {kind} identifier {input:?}: the {part} is empty; write it as {}", kind.shape())]
    EmptyPart {
        /// What was being parsed.
        kind: IdKind,
        /// The text as given.
        input: String,
        /// The empty part.
        part: PartName,
    },
    /// A part holds a character outside `A-Z a-z 0-9 ' ( ) + , - . = ?`.
    #[error(
        "invalid {kind} identifier {input:?}: the {part} {value:?} contains {ch:?}, which is not allowed; use only A-Z a-z 0-9 and ' ( ) + , - . = ?"
    )]
    BadChar {
        /// What was being parsed.
        kind: IdKind,
        /// The text as given.
        input: String,
        /// The part at fault.
        part: PartName,
        /// Its value.
        value: String,
        /// The first character not allowed.
        ch: char,
    },
    /// A part is longer than [`MAX_PART_LEN`].
    #[error("invalid {kind} identifier: the {part} is {len} characters long; at most {MAX_PART_LEN} are allowed")]
    TooLong {
        /// What was being parsed.
        kind: IdKind,
        /// The part at fault.
        part: PartName,
        /// Its length in bytes.
        len: usize,
    },
    /// A part is `.` or `..`, which would change meaning inside a URL path.
    #[error("invalid {kind} identifier {input:?}: the {part} is {value:?}; `.` and `..` are not identifier parts")]
    DotPart {
        /// What was being parsed.
        kind: IdKind,
        /// The text as given.
        input: String,
        /// The part at fault.
        part: PartName,
        /// Its value.
        value: String,
    },
    /// A URL or URI part has a malformed `%` escape or encodes a character that is not allowed.
    #[error("invalid {kind} identifier {input:?}: the {part} has a bad percent-encoding ({reason})")]
    BadEncoding {
        /// What was being parsed.
        kind: IdKind,
        /// The text as given.
        input: String,
        /// The part at fault.
        part: PartName,
        /// What is wrong with the escape.
        reason: String,
    },
    /// A certificate URI is not of the form `urn:splp:<kind>:<parts joined by ':'>`.
    #[error("invalid identity URI {input:?}: {reason}; expected e.g. urn:splp:subsystem:ID:PEMDA:1602:DINKES")]
    BadUrn {
        /// The URI as given.
        input: String,
        /// What is wrong.
        reason: String,
    },
    /// An identifier kind word is not one of the known ones.
    #[error("unknown identifier kind {found:?}; use one of member, subsystem, service, server, admin")]
    UnknownKind {
        /// The word given.
        found: String,
    },
}

/// Inputs quoted in messages are cut to this many characters so that a hostile identifier cannot
/// flood a log line.
const QUOTE_LIMIT: usize = 120;

fn quoted(input: &str) -> String {
    if input.chars().count() <= QUOTE_LIMIT {
        input.to_owned()
    } else {
        let mut s: String = input.chars().take(QUOTE_LIMIT).collect();
        s.push('…');
        s
    }
}

/// One validated part of an identifier.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Part(Box<str>);

impl Part {
    fn check(kind: IdKind, input: &str, part: PartName, value: &str) -> Result<Self, IdError> {
        if value.is_empty() {
            return Err(IdError::EmptyPart { kind, input: quoted(input), part });
        }
        if value.len() > MAX_PART_LEN {
            return Err(IdError::TooLong { kind, part, len: value.len() });
        }
        if let Some(ch) = value.chars().find(|c| !is_part_char(*c)) {
            return Err(IdError::BadChar { kind, input: quoted(input), part, value: quoted(value), ch });
        }
        if value == "." || value == ".." {
            return Err(IdError::DotPart { kind, input: quoted(input), part, value: value.to_owned() });
        }
        Ok(Self(value.into()))
    }

    /// The part as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Writes the part percent-encoded for a URL path segment or a URN: every allowed character
    /// is a legal `pchar` except `?`, which would start a query.
    fn write_encoded(&self, out: &mut String) {
        for c in self.0.chars() {
            if c == '?' {
                out.push_str("%3F");
            } else {
                out.push(c);
            }
        }
    }

    /// Decodes a percent-encoded URL segment or URN part and validates it.
    fn decode(kind: IdKind, input: &str, part: PartName, raw: &str) -> Result<Self, IdError> {
        if !raw.contains('%') || !raw.is_ascii() {
            // Non-ASCII text is refused by `check` with the offending character named.
            return Self::check(kind, input, part, raw);
        }
        let bytes = raw.as_bytes();
        let mut out = String::with_capacity(raw.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let bad = |reason: String| IdError::BadEncoding { kind, input: quoted(input), part, reason };
                let no_hex = || bad("`%` is not followed by two hex digits".to_owned());
                let hex = bytes.get(i + 1..i + 3).ok_or_else(no_hex)?;
                let hi = hex_val(hex[0]).ok_or_else(no_hex)?;
                let lo = hex_val(hex[1]).ok_or_else(no_hex)?;
                let c = char::from(hi << 4 | lo);
                if !is_part_char(c) {
                    return Err(bad(format!(
                        "%{}{} encodes {c:?}, which identifiers may not contain",
                        char::from(hex[0]),
                        char::from(hex[1])
                    )));
                }
                out.push(c);
                i += 3;
            } else {
                out.push(char::from(bytes[i]));
                i += 1;
            }
        }
        Self::check(kind, input, part, &out)
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits `input` on `sep` into exactly the parts `kind` has, validating each.
fn split_exact<const N: usize>(kind: IdKind, input: &str, sep: char, encoded: bool) -> Result<[Part; N], IdError> {
    let names = kind.parts();
    debug_assert_eq!(names.len(), N);
    let found = input.split(sep).count();
    if found != N {
        return Err(IdError::WrongPartCount { kind, input: quoted(input), expected: N, found });
    }
    let parts = input
        .split(sep)
        .zip(names)
        .map(
            |(raw, name)| {
                if encoded { Part::decode(kind, input, *name, raw) } else { Part::check(kind, input, *name, raw) }
            },
        )
        .collect::<Result<Vec<_>, _>>()?;
    parts.try_into().map_err(|_: Vec<Part>| IdError::WrongPartCount { kind, input: quoted(input), expected: N, found })
}

/// A member: `INSTANCE/CLASS/MEMBER`, e.g. `ID/PEMDA/1602`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId {
    instance: Part,
    class: Part,
    code: Part,
}

impl MemberId {
    /// The exchange instance (`ID`).
    pub fn instance(&self) -> &str {
        self.instance.as_str()
    }
    /// The member class (`PEMDA`, `KL`, …).
    pub fn class(&self) -> &str {
        self.class.as_str()
    }
    /// The member code (`1602`).
    pub fn code(&self) -> &str {
        self.code.as_str()
    }
    fn parts(&self) -> [&Part; 3] {
        [&self.instance, &self.class, &self.code]
    }
    fn from_parts([instance, class, code]: [Part; 3]) -> Self {
        Self { instance, class, code }
    }
}

/// A subsystem: an agency or one of its applications, `INSTANCE/CLASS/MEMBER/SUBSYSTEM`.
/// Every client of the gateway is a subsystem.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubsystemId {
    member: MemberId,
    code: Part,
}

/// The identity of a calling application: a subsystem.
pub type ClientId = SubsystemId;

impl SubsystemId {
    /// The member the subsystem belongs to.
    pub fn member(&self) -> &MemberId {
        &self.member
    }
    /// The subsystem code (`DINKES`).
    pub fn code(&self) -> &str {
        self.code.as_str()
    }
    fn parts(&self) -> [&Part; 4] {
        let [a, b, c] = self.member.parts();
        [a, b, c, &self.code]
    }
    fn from_parts([i, c, m, s]: [Part; 4]) -> Self {
        Self { member: MemberId::from_parts([i, c, m]), code: s }
    }
}

/// A service: `INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE`, e.g. `ID/PEMDA/1602/DISDUKCAPIL/nik-verify`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId {
    subsystem: SubsystemId,
    code: Part,
}

impl ServiceId {
    /// The subsystem that provides the service.
    pub fn subsystem(&self) -> &SubsystemId {
        &self.subsystem
    }
    /// The service code (`nik-verify`).
    pub fn code(&self) -> &str {
        self.code.as_str()
    }
    fn parts(&self) -> [&Part; 5] {
        let [a, b, c, d] = self.subsystem.parts();
        [a, b, c, d, &self.code]
    }
    fn from_parts([i, c, m, s, v]: [Part; 5]) -> Self {
        Self { subsystem: SubsystemId::from_parts([i, c, m, s]), code: v }
    }

    /// Parses the five path segments that follow `/r1/` in an X-Road REST URL, each
    /// percent-decoded and validated.
    pub fn from_url_segments<'a>(segments: impl IntoIterator<Item = &'a str>) -> Result<Self, IdError> {
        let mut joined = String::new();
        for (i, seg) in segments.into_iter().enumerate() {
            if i > 0 {
                joined.push('/');
            }
            joined.push_str(seg);
        }
        Self::from_url_path(&joined)
    }
}

/// A gateway server: `INSTANCE/CLASS/MEMBER/SERVER`, e.g. `ID/PEMDA/1602/gw1`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerId {
    member: MemberId,
    code: Part,
}

impl ServerId {
    /// The member that runs the gateway.
    pub fn member(&self) -> &MemberId {
        &self.member
    }
    /// The server code (`gw1`).
    pub fn code(&self) -> &str {
        self.code.as_str()
    }
    fn parts(&self) -> [&Part; 4] {
        let [a, b, c] = self.member.parts();
        [a, b, c, &self.code]
    }
    fn from_parts([i, c, m, s]: [Part; 4]) -> Self {
        Self { member: MemberId::from_parts([i, c, m]), code: s }
    }
}

/// An operator of the gateway: `INSTANCE/CLASS/MEMBER/OPERATOR`, e.g. `ID/PEMDA/1602/budi`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AdminId {
    member: MemberId,
    operator: Part,
}

impl AdminId {
    /// The member whose gateway the operator runs.
    pub fn member(&self) -> &MemberId {
        &self.member
    }
    /// The operator's name.
    pub fn operator(&self) -> &str {
        self.operator.as_str()
    }
    fn parts(&self) -> [&Part; 4] {
        let [a, b, c] = self.member.parts();
        [a, b, c, &self.operator]
    }
    fn from_parts([i, c, m, s]: [Part; 4]) -> Self {
        Self { member: MemberId::from_parts([i, c, m]), operator: s }
    }
}

/// Shared behaviour of the fixed-shape identifiers: parsing, display, URL and serde forms.
macro_rules! fixed_id {
    ($ty:ident, $kind:expr, $n:literal) => {
        impl $ty {
            /// The kind of identifier this type holds.
            pub const KIND: IdKind = $kind;

            /// Parses the `/`-separated form from a URL path, percent-decoding each part.
            pub fn from_url_path(path: &str) -> Result<Self, IdError> {
                split_exact::<$n>($kind, path, '/', true).map(Self::from_parts)
            }

            /// The `/`-separated form with each part percent-encoded for a URL path.
            pub fn to_url_path(&self) -> String {
                let mut out = String::new();
                for (i, part) in self.parts().iter().enumerate() {
                    if i > 0 {
                        out.push('/');
                    }
                    part.write_encoded(&mut out);
                }
                out
            }

            /// Whether `prefix` covers this identifier.
            pub fn is_within(&self, prefix: &IdPrefix) -> bool {
                prefix.covers(self.parts().iter().map(|p| p.as_str()))
            }

            /// The parts of the identifier, first to last.
            pub fn part_strs(&self) -> impl Iterator<Item = &str> {
                self.parts().into_iter().map(Part::as_str)
            }
        }

        impl FromStr for $ty {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                split_exact::<$n>($kind, s, '/', false).map(Self::from_parts)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for (i, part) in self.parts().iter().enumerate() {
                    if i > 0 {
                        f.write_char('/')?;
                    }
                    f.write_str(part.as_str())?;
                }
                Ok(())
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

fixed_id!(MemberId, IdKind::Member, 3);
fixed_id!(SubsystemId, IdKind::Subsystem, 4);
fixed_id!(ServiceId, IdKind::Service, 5);
fixed_id!(ServerId, IdKind::Server, 4);
fixed_id!(AdminId, IdKind::Admin, 4);

/// One to four leading parts of an identifier: a trust scope (what a CA may vouch for), the
/// authority of a peer gateway, or a routing prefix. `ID/PEMDA/1602` covers every subsystem,
/// service, server and operator of region 1602.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdPrefix(Vec<Part>);

impl IdPrefix {
    /// Whether this prefix covers an identifier with the given parts.
    pub fn covers<'a>(&self, parts: impl IntoIterator<Item = &'a str>) -> bool {
        let mut parts = parts.into_iter();
        self.0.iter().all(|p| parts.next() == Some(p.as_str()))
    }

    /// Whether one of the two prefixes covers the other, so that both claim some identifiers.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a == b)
    }

    /// How many parts the prefix has (1 to 4); longer prefixes are more specific.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a prefix has at least one part.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for IdPrefix {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let kind = IdKind::Prefix;
        let names = kind.parts();
        let found = s.split('/').count();
        if found > names.len() {
            return Err(IdError::WrongPartCount { kind, input: quoted(s), expected: names.len(), found });
        }
        s.split('/')
            .zip(names)
            .map(|(raw, name)| Part::check(kind, s, *name, raw))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

impl fmt::Display for IdPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_char('/')?;
            }
            f.write_str(part.as_str())?;
        }
        Ok(())
    }
}

impl Serialize for IdPrefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IdPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The identity a certificate carries: what the gateway knows about whoever holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// An agency application (client and/or service provider).
    Subsystem(SubsystemId),
    /// A gateway (this region's or a peer's).
    Server(ServerId),
    /// An operator at the regional ICT office.
    Admin(AdminId),
}

impl Identity {
    /// Parses an identifier of the given kind from its `/`-separated form.
    pub fn parse(kind: IdKind, s: &str) -> Result<Self, IdError> {
        match kind {
            IdKind::Subsystem => s.parse().map(Self::Subsystem),
            IdKind::Server => s.parse().map(Self::Server),
            IdKind::Admin => s.parse().map(Self::Admin),
            other => Err(IdError::BadUrn {
                input: s.to_owned(),
                reason: format!("a certificate identity is a subsystem, server or admin, not a {other}"),
            }),
        }
    }

    /// The identifier in its `/`-separated form, without the kind.
    pub fn id_string(&self) -> String {
        match self {
            Self::Subsystem(id) => id.to_string(),
            Self::Server(id) => id.to_string(),
            Self::Admin(id) => id.to_string(),
        }
    }

    /// The kind of identity.
    pub fn kind(&self) -> IdKind {
        match self {
            Self::Subsystem(_) => IdKind::Subsystem,
            Self::Server(_) => IdKind::Server,
            Self::Admin(_) => IdKind::Admin,
        }
    }

    /// The member the identity belongs to.
    pub fn member(&self) -> &MemberId {
        match self {
            Self::Subsystem(id) => id.member(),
            Self::Server(id) => id.member(),
            Self::Admin(id) => id.member(),
        }
    }

    /// Whether `prefix` covers this identity.
    pub fn is_within(&self, prefix: &IdPrefix) -> bool {
        match self {
            Self::Subsystem(id) => id.is_within(prefix),
            Self::Server(id) => id.is_within(prefix),
            Self::Admin(id) => id.is_within(prefix),
        }
    }

    fn parts(&self) -> [&Part; 4] {
        match self {
            Self::Subsystem(id) => id.parts(),
            Self::Server(id) => id.parts(),
            Self::Admin(id) => id.parts(),
        }
    }

    /// The URI written into a certificate's subject alternative name, e.g.
    /// `urn:splp:subsystem:ID:PEMDA:1602:DINKES`.
    pub fn to_urn(&self) -> String {
        let mut out = String::from(URN_PREFIX);
        out.push_str(self.kind().as_str());
        for part in self.parts() {
            out.push(':');
            part.write_encoded(&mut out);
        }
        out
    }

    /// Parses an identity URI from a certificate. Returns `Ok(None)` for URIs of other schemes or
    /// namespaces, which a certificate may carry alongside ours.
    pub fn from_urn(uri: &str) -> Result<Option<Self>, IdError> {
        let Some(rest) = strip_prefix_ignore_case(uri, URN_PREFIX) else {
            return Ok(None);
        };
        let bad = |reason: &str| IdError::BadUrn { input: quoted(uri), reason: reason.to_owned() };
        let (kind, parts) = rest.split_once(':').ok_or_else(|| bad("it names no identifier after the kind"))?;
        let kind = match kind {
            "subsystem" => IdKind::Subsystem,
            "server" => IdKind::Server,
            "admin" => IdKind::Admin,
            _ => return Err(bad("the kind must be subsystem, server or admin")),
        };
        Ok(Some(match kind {
            IdKind::Subsystem => Self::Subsystem(SubsystemId::from_parts(split_exact::<4>(kind, parts, ':', true)?)),
            IdKind::Server => Self::Server(ServerId::from_parts(split_exact::<4>(kind, parts, ':', true)?)),
            _ => Self::Admin(AdminId::from_parts(split_exact::<4>(kind, parts, ':', true)?)),
        }))
    }
}

/// RFC 8141 makes the `urn` scheme and the namespace identifier case-insensitive.
fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Subsystem(id) => write!(f, "subsystem {id}"),
            Self::Server(id) => write!(f, "server {id}"),
            Self::Admin(id) => write!(f, "admin {id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_each_kind_of_identifier() {
        let s: ServiceId = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify".parse().unwrap();
        assert_eq!(s.code(), "nik-verify");
        assert_eq!(s.subsystem().code(), "DISDUKCAPIL");
        assert_eq!(s.subsystem().member().code(), "1602");
        assert_eq!(s.subsystem().member().class(), "PEMDA");
        assert_eq!(s.subsystem().member().instance(), "ID");
        let g: ServerId = "ID/PEMDA/1602/gw1".parse().unwrap();
        assert_eq!(g.code(), "gw1");
        let m: MemberId = "ID/KL/KOMINFO".parse().unwrap();
        assert_eq!(m.to_string(), "ID/KL/KOMINFO");
        let a: AdminId = "ID/PEMDA/1602/budi".parse().unwrap();
        assert_eq!(a.operator(), "budi");
    }

    #[test]
    fn wrong_part_count_names_the_shape() {
        let err = "ID/PEMDA/1602".parse::<SubsystemId>().unwrap_err();
        assert!(matches!(err, IdError::WrongPartCount { expected: 4, found: 3, .. }), "{err:?}");
        assert!(err.to_string().contains("INSTANCE/CLASS/MEMBER/SUBSYSTEM"), "{err}");
        let err = "ID/PEMDA/1602/A/b/c".parse::<ServiceId>().unwrap_err();
        assert!(matches!(err, IdError::WrongPartCount { expected: 5, found: 6, .. }), "{err:?}");
    }

    #[test]
    fn empty_part_is_named() {
        let err = "ID//1602/DINKES".parse::<SubsystemId>().unwrap_err();
        assert!(err.to_string().contains("the member class is empty"), "{err}");
        let err = "ID/PEMDA/1602/".parse::<SubsystemId>().unwrap_err();
        assert!(err.to_string().contains("the subsystem code is empty"), "{err}");
        let err = "".parse::<MemberId>().unwrap_err();
        assert!(matches!(err, IdError::WrongPartCount { found: 1, .. }), "{err:?}");
    }

    #[test]
    fn bad_character_is_named_with_its_part() {
        let err = "ID/PEMDA/1602/DIN KES".parse::<SubsystemId>().unwrap_err();
        match &err {
            IdError::BadChar { part, ch, .. } => {
                assert_eq!(*part, PartName::SubsystemCode);
                assert_eq!(*ch, ' ');
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("subsystem code"), "{err}");
        for bad in ["ID/PEMDA/16:02", "ID/PEMDA/1602é", "ID/PE%MDA/1602", "ID/PEMDA/1602\n", "ID/PEMDA/a_b"] {
            assert!(matches!(bad.parse::<MemberId>(), Err(IdError::BadChar { .. })), "{bad}");
        }
    }

    #[test]
    fn over_long_part_is_refused() {
        let long = "A".repeat(MAX_PART_LEN + 1);
        let err = format!("ID/PEMDA/1602/{long}").parse::<SubsystemId>().unwrap_err();
        assert!(matches!(err, IdError::TooLong { part: PartName::SubsystemCode, len: 65, .. }), "{err:?}");
        let ok = "A".repeat(MAX_PART_LEN);
        assert!(format!("ID/PEMDA/1602/{ok}").parse::<SubsystemId>().is_ok());
    }

    #[test]
    fn dot_parts_are_refused() {
        assert!(matches!("ID/PEMDA/1602/..".parse::<SubsystemId>(), Err(IdError::DotPart { .. })));
        assert!(matches!("ID/PEMDA/./x".parse::<SubsystemId>(), Err(IdError::DotPart { .. })));
        assert!(matches!(ServiceId::from_url_path("ID/PEMDA/1602/%2E%2E/x"), Err(IdError::DotPart { .. })));
        assert!("ID/PEMDA/1602/a..b".parse::<SubsystemId>().is_ok());
    }

    #[test]
    fn url_form_encodes_question_mark_only() {
        let s: ServiceId = "ID/PEMDA/1602/A(1)/what?+x=y,'z'".parse().unwrap();
        let url = s.to_url_path();
        assert_eq!(url, "ID/PEMDA/1602/A(1)/what%3F+x=y,'z'");
        assert_eq!(ServiceId::from_url_path(&url).unwrap(), s);
        assert_eq!(ServiceId::from_url_segments(url.split('/')).unwrap(), s);
    }

    #[test]
    fn url_form_refuses_bad_escapes() {
        for bad in ["ID/PEMDA/1602/X/a%2", "ID/PEMDA/1602/X/a%zz", "ID/PEMDA/1602/X/a%2Fb", "ID/PEMDA/1602/X/%20"] {
            assert!(matches!(ServiceId::from_url_path(bad), Err(IdError::BadEncoding { .. })), "{bad}");
        }
        // The character refused is named.
        let said = ServiceId::from_url_path("ID/PEMDA/1602/X/nik%20verify").unwrap_err().to_string();
        assert!(said.contains("%20 encodes ' ', which identifiers may not contain"), "{said}");
        // Percent-encoding an allowed character is accepted and means the character itself.
        assert_eq!(ServiceId::from_url_path("ID/PEMDA/1602/X/%61").unwrap().code(), "a");
    }

    #[test]
    fn urns_round_trip_and_reject_junk() {
        let id = Identity::Subsystem("ID/PEMDA/1602/DINKES".parse().unwrap());
        assert_eq!(id.to_urn(), "urn:splp:subsystem:ID:PEMDA:1602:DINKES");
        assert_eq!(Identity::from_urn(&id.to_urn()).unwrap(), Some(id));
        let gw = Identity::Server("ID/PEMDA/1602/gw1".parse().unwrap());
        assert_eq!(Identity::from_urn("URN:SPLP:server:ID:PEMDA:1602:gw1").unwrap(), Some(gw));
        assert_eq!(Identity::from_urn("https://example.org/").unwrap(), None);
        assert_eq!(Identity::from_urn("spiffe://x/y").unwrap(), None);
        assert!(Identity::from_urn("urn:splp:subsystem:ID:PEMDA:1602").is_err());
        assert!(Identity::from_urn("urn:splp:service:ID:PEMDA:1602:A:b").is_err());
        assert!(Identity::from_urn("urn:splp:subsystem").is_err());
        assert!(Identity::from_urn("urn:splp:subsystem:ID:PEMDA:1602:DIN/KES").is_err());
    }

    #[test]
    fn prefixes_cover_and_overlap() {
        let region: IdPrefix = "ID/PEMDA/1602".parse().unwrap();
        let other: IdPrefix = "ID/PEMDA/1601".parse().unwrap();
        let agency: IdPrefix = "ID/PEMDA/1602/DINKES".parse().unwrap();
        let s: SubsystemId = "ID/PEMDA/1602/DINKES".parse().unwrap();
        assert!(s.is_within(&region));
        assert!(s.is_within(&agency));
        assert!(!s.is_within(&other));
        // A prefix is matched by whole parts, never by characters.
        let s2: SubsystemId = "ID/PEMDA/16021/DINKES".parse().unwrap();
        assert!(!s2.is_within(&region));
        assert!(region.overlaps(&agency) && agency.overlaps(&region));
        assert!(!region.overlaps(&other));
        assert!("ID/PEMDA/1602/A/b".parse::<IdPrefix>().is_err());
        assert!("ID//1602".parse::<IdPrefix>().is_err());
    }

    #[test]
    fn serde_uses_the_string_form() {
        let s: ServiceId = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify".parse().unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "\"ID/PEMDA/1602/DISDUKCAPIL/nik-verify\"");
        assert_eq!(serde_json::from_str::<ServiceId>(&json).unwrap(), s);
        let err = serde_json::from_str::<ServiceId>("\"ID/PEMDA\"").unwrap_err();
        assert!(err.to_string().contains("service identifier"), "{err}");
    }

    fn part() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[A-Za-z0-9'()+,\\-.=?]{1,64}")
            .unwrap()
            .prop_filter("dot parts are refused", |s| s != "." && s != "..")
    }

    proptest! {
        #[test]
        fn service_ids_round_trip(parts in proptest::collection::vec(part(), 5)) {
            let text = parts.join("/");
            let id: ServiceId = text.parse().unwrap();
            prop_assert_eq!(id.to_string(), text);
            prop_assert_eq!(ServiceId::from_url_path(&id.to_url_path()).unwrap(), id.clone());
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(serde_json::from_str::<ServiceId>(&json).unwrap(), id);
        }

        #[test]
        fn identities_round_trip_through_urns(parts in proptest::collection::vec(part(), 4), kind in 0..3u8) {
            let text = parts.join("/");
            let kind = [IdKind::Subsystem, IdKind::Server, IdKind::Admin][usize::from(kind)];
            let id = Identity::parse(kind, &text).unwrap();
            let urn = id.to_urn();
            prop_assert!(!urn.contains('?') && !urn.contains('/'));
            prop_assert_eq!(Identity::from_urn(&urn).unwrap(), Some(id));
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
            let _ = s.parse::<ServiceId>();
            let _ = s.parse::<IdPrefix>();
            let _ = ServiceId::from_url_path(&s);
            let _ = Identity::from_urn(&s);
        }

        #[test]
        fn a_disallowed_character_is_always_refused(
            parts in proptest::collection::vec(part(), 4),
            idx in 0..4usize,
            bad in "[^A-Za-z0-9'()+,\\-.=?/]",
        ) {
            let mut parts = parts;
            parts[idx].push_str(&bad);
            let text = parts.join("/");
            let is_bad = matches!(
                text.parse::<SubsystemId>(),
                Err(IdError::BadChar { .. } | IdError::TooLong { .. })
            );
            prop_assert!(is_bad);
        }
    }
}
