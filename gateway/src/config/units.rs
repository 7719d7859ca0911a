//! Small value types of the configuration file: sizes, instants, durations, certificate
//! fingerprints and endpoint patterns. Each parses from the text an operator writes and explains
//! what it wanted when the text does not fit.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use time::OffsetDateTime;

/// A size in bytes, written as `65536`, `"64 KiB"`, `"10MiB"` or `"1GB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` kibibytes.
    pub const fn kib(n: u64) -> Self {
        Self(n * 1024)
    }
    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

const SIZE_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("kb", 1000),
    ("kib", 1 << 10),
    ("mb", 1000 * 1000),
    ("mib", 1 << 20),
    ("gb", 1000 * 1000 * 1000),
    ("gib", 1 << 30),
];

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let bad = || format!("{s:?} is not a size; write a number of bytes or e.g. \"64 KiB\", \"10 MiB\", \"1 GB\"");
        let n: u64 = num.parse().map_err(|_| bad())?;
        let unit = unit.trim().to_ascii_lowercase();
        let mult = SIZE_UNITS.iter().find(|(u, _)| *u == unit).map(|(_, m)| *m).ok_or_else(bad)?;
        n.checked_mul(mult).map(Self).ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl ByteSize {
    /// The size as people read it, in the largest unit it reaches: whole when it is a whole
    /// number of that unit, else to one decimal, rounded down ("5 GiB", "12.3 GiB").
    pub fn approx(self) -> String {
        let n = self.0;
        let (unit, name) = match n {
            n if n >= 1 << 40 => (1u64 << 40, "TiB"),
            n if n >= 1 << 30 => (1 << 30, "GiB"),
            n if n >= 1 << 20 => (1 << 20, "MiB"),
            n if n >= 1 << 10 => (1 << 10, "KiB"),
            n => return format!("{n} B"),
        };
        if n.is_multiple_of(unit) {
            return format!("{} {name}", n / unit);
        }
        // Tenths of the unit, in integers: no float casts.
        let tenths = u128::from(n) * 10 / u128::from(unit);
        format!("{}.{} {name}", tenths / 10, tenths % 10)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            n if n >= 1 << 30 && n % (1 << 30) == 0 => write!(f, "{} GiB", n >> 30),
            n if n >= 1 << 20 && n % (1 << 20) == 0 => write!(f, "{} MiB", n >> 20),
            n if n >= 1 << 10 && n % (1 << 10) == 0 => write!(f, "{} KiB", n >> 10),
            n => write!(f, "{n} B"),
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 65536 or \"64 KiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A span of time written as humans do: `"500ms"`, `"30s"`, `"5m"`, `"1h 30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(pub Duration);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Span;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with its unit, in quotes, such as \"500ms\", \"30s\" or \"5m\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Span, E> {
                humantime::parse_duration(s).map(Span).map_err(|e| {
                    E::custom(format!("{s:?} is not a duration ({e}); write e.g. \"500ms\", \"30s\", \"5m\""))
                })
            }
            // A bare number has no unit, which is the usual slip: say which to write.
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Span, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!("{v}: a duration cannot be negative"))),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Span, E> {
                Err(E::custom(format!(
                    "{v} has no unit: a duration is written in quotes with its unit, e.g. \"{v}s\" or \"{v}ms\""
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Span, E> {
                Err(E::custom(format!(
                    "{v} has no unit: a duration is written in quotes with its unit, in whole units, e.g. \"500ms\" \
                     for half a second"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(self.0))
    }
}

/// An instant with its UTC offset, written as a TOML date-time: `2026-01-01T00:00:00+07:00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(pub OffsetDateTime);

impl<'de> Deserialize<'de> for Instant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let dt = toml::value::Datetime::deserialize(d)?;
        let need = "write a full date and time with its offset, e.g. 2026-01-01T00:00:00+07:00 (WIB)";
        let (Some(date), Some(t), Some(offset)) = (dt.date, dt.time, dt.offset) else {
            return Err(de::Error::custom(format!("{dt} is not a complete instant; {need}")));
        };
        let offset_minutes = match offset {
            toml::value::Offset::Z => 0,
            toml::value::Offset::Custom { minutes } => minutes,
        };
        let build = || -> Result<OffsetDateTime, time::error::ComponentRange> {
            let month = time::Month::try_from(date.month)?;
            let date = time::Date::from_calendar_date(i32::from(date.year), month, date.day)?;
            let clock = time::Time::from_hms_nano(t.hour, t.minute, t.second.unwrap_or(0), t.nanosecond.unwrap_or(0))?;
            let offset = time::UtcOffset::from_whole_seconds(i32::from(offset_minutes) * 60)?;
            Ok(date.with_time(clock).assume_offset(offset))
        };
        build().map(Self).map_err(|e| de::Error::custom(format!("{dt} is not a valid instant ({e}); {need}")))
    }
}

impl Serialize for Instant {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.0.format(&time::format_description::well_known::Rfc3339).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

/// The SHA-256 fingerprint of a DER certificate, written as 64 hex digits, with or without
/// colons, optionally prefixed `sha256:` (as `splpd certs inspect` and `openssl x509
/// -fingerprint -sha256` print it).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl FromStr for Fingerprint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let t = t.strip_prefix("sha256:").or_else(|| t.strip_prefix("SHA256:")).unwrap_or(t);
        let t = t.strip_prefix("sha256 Fingerprint=").unwrap_or(t);
        let hex_digits: String = t.chars().filter(|c| *c != ':').collect();
        let mut out = [0u8; 32];
        hex::decode_to_slice(&hex_digits, &mut out).map_err(|_| {
            format!(
                "{s:?} is not a SHA-256 fingerprint; write the 64 hex digits that `splpd certs inspect` prints, \
                 e.g. \"sha256:AB:CD:…\""
            )
        })?;
        Ok(Self(out))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The HTTP methods a grant may name; `*` stands for any.
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*"];

/// Part of a service a grant opens: a method and a path pattern under the service, e.g.
/// `GET /nik/*` or `POST /verify`; for gRPC services `/pkg.Service/Method` or `/pkg.Service/*`.
/// In a path, `*` matches exactly one segment and a final `**` matches the rest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointPattern {
    method: Option<String>,
    segments: Vec<String>,
}

impl EndpointPattern {
    /// Whether a call with this method and path (the part after the service identifier) matches.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        // HEAD is GET without the body (RFC 9110 §9.3.2): what GET may read, HEAD may ask after.
        if let Some(m) = &self.method
            && m != method
            && !(m == "GET" && method == "HEAD")
        {
            return false;
        }
        let mut want = self.segments.iter();
        let mut have = path.strip_prefix('/').unwrap_or(path).split('/');
        loop {
            match (want.next().map(String::as_str), have.next()) {
                (Some("**"), _) => return true,
                (Some("*"), Some(seg)) if !seg.is_empty() => {}
                (Some(w), Some(seg)) if w == seg => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    /// The method this pattern is limited to, if any.
    pub fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }
}

impl FromStr for EndpointPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (method, path) = match t.split_once(' ') {
            Some((m, p)) => (Some(m), p.trim()),
            None => (None, t),
        };
        let method = match method {
            Some(m) if METHODS.contains(&m) => (m != "*").then(|| m.to_owned()),
            Some(m) => {
                return Err(format!(
                    "endpoint {s:?}: {m:?} is not an HTTP method; use one of {} (upper case)",
                    METHODS.join(", ")
                ));
            }
            None => None,
        };
        if !path.starts_with('/') {
            return Err(format!("endpoint {s:?}: the path must start with '/', e.g. \"GET /nik/*\""));
        }
        let segments: Vec<String> = path[1..].split('/').map(str::to_owned).collect();
        for (i, seg) in segments.iter().enumerate() {
            if seg == "." || seg == ".." {
                return Err(format!("endpoint {s:?}: `.` and `..` segments are not allowed"));
            }
            if seg == "**" && i + 1 != segments.len() {
                return Err(format!("endpoint {s:?}: `**` may only be the last segment"));
            }
            if seg.contains('*') && seg != "*" && seg != "**" {
                return Err(format!("endpoint {s:?}: `*` must be a whole segment (`/a/*/b`), not part of one"));
            }
            if seg.contains(['?', '#', ' ']) {
                return Err(format!("endpoint {s:?}: a path pattern holds no query, fragment or space"));
            }
        }
        Ok(Self { method, segments })
    }
}

impl fmt::Display for EndpointPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(m) = &self.method {
            write!(f, "{m} ")?;
        }
        write!(f, "/{}", self.segments.join("/"))
    }
}

impl<'de> Deserialize<'de> for EndpointPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl Serialize for EndpointPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_approximately_in_their_largest_unit() {
        assert_eq!(ByteSize(5 << 30).approx(), "5 GiB");
        assert_eq!(ByteSize(5 * (1 << 30) + 300 * (1 << 20)).approx(), "5.2 GiB");
        assert_eq!(ByteSize(3 * (1 << 40) + (1 << 39)).approx(), "3.5 TiB");
        assert_eq!(ByteSize(1536).approx(), "1.5 KiB");
        assert_eq!(ByteSize(1000).approx(), "1000 B");
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!("65536".parse::<ByteSize>().unwrap(), ByteSize(65536));
        assert_eq!("64 KiB".parse::<ByteSize>().unwrap(), ByteSize::kib(64));
        assert_eq!("10MiB".parse::<ByteSize>().unwrap(), ByteSize::mib(10));
        assert_eq!("1 gb".parse::<ByteSize>().unwrap(), ByteSize(1_000_000_000));
        assert!("ten MiB".parse::<ByteSize>().unwrap_err().contains("not a size"));
        assert!("5 parsecs".parse::<ByteSize>().is_err());
        assert!("99999999999999 GiB".parse::<ByteSize>().unwrap_err().contains("too large"));
        assert_eq!(ByteSize::mib(64).to_string(), "64 MiB");
    }

    #[test]
    fn fingerprints_accept_the_printed_forms() {
        let hex = "AB".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        let a: Fingerprint = hex.parse().unwrap();
        assert_eq!(a, format!("sha256:{colons}").parse().unwrap());
        assert_eq!(a, format!("sha256 Fingerprint={colons}").parse().unwrap());
        assert_eq!(a.to_string(), colons);
        assert!("AB:CD".parse::<Fingerprint>().is_err());
        assert!("ZZ".repeat(32).parse::<Fingerprint>().is_err());
    }

    #[test]
    fn endpoint_patterns_match_by_segment() {
        let p: EndpointPattern = "GET /nik/*".parse().unwrap();
        assert!(p.matches("GET", "/nik/3201010101010001"));
        assert!(!p.matches("POST", "/nik/3201010101010001"));
        assert!(p.matches("HEAD", "/nik/3201010101010001"), "HEAD asks what GET reads");
        assert!(!p.matches("GET", "/nik/3201/extra"));
        assert!(!p.matches("GET", "/nik/"));
        assert!(!p.matches("GET", "/nik"));
        let any: EndpointPattern = "/records/**".parse().unwrap();
        assert!(any.matches("DELETE", "/records/a/b/c"));
        assert!(!any.matches("GET", "/other"));
        let grpc: EndpointPattern = "/kesehatan.v1.Rujukan/*".parse().unwrap();
        assert!(grpc.matches("POST", "/kesehatan.v1.Rujukan/Kirim"));
        let exact: EndpointPattern = "POST /verify".parse().unwrap();
        assert!(exact.matches("POST", "/verify"));
        assert!(!exact.matches("POST", "/verify/x"));
    }

    #[test]
    fn endpoint_patterns_refuse_nonsense() {
        for bad in ["FETCH /x", "get /x", "GET x", "/a/**/b", "/a/b*", "/a/../b", "/a?x=1"] {
            assert!(bad.parse::<EndpointPattern>().is_err(), "{bad}");
        }
    }

    #[test]
    fn instants_need_an_offset() {
        #[derive(Deserialize)]
        struct T {
            at: Instant,
        }
        let t: T = toml::from_str("at = 2026-01-01T00:00:00+07:00").unwrap();
        assert_eq!(t.at.0.unix_timestamp(), 1_767_200_400);
        let err = toml::from_str::<T>("at = 2026-01-01T00:00:00").err().unwrap();
        assert!(err.to_string().contains("offset"), "{err}");
        let err = toml::from_str::<T>("at = 2026-01-01").err().unwrap();
        assert!(err.to_string().contains("complete instant"), "{err}");
    }
}
