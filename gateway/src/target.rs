//! Parse target: reads `/r1/{serviceId}[/path][?query]` strictly (design §3). The service
//! identifier is decoded and validated part by part; the path under the service and the query
//! are checked, never rewritten, so what is forwarded is exactly what was checked.

use splpd_certs::id::ServiceId;

use crate::error::GatewayError;

/// The protocol version prefix of X-Road's Message Protocol for REST.
const R1: &str = "/r1/";

/// The parts of a request URI the exchange path uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// The service called.
    pub service: ServiceId,
    /// The path under the service, as received, starting with `/` (or `/` when empty).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
}

fn bad(message: String) -> GatewayError {
    GatewayError::BadRequest(message)
}

/// Parses a request's path and query. `max_len` bounds the whole path-and-query.
pub fn parse(path_and_query: &str, max_len: usize) -> Result<Target<'_>, GatewayError> {
    if path_and_query.len() > max_len {
        return Err(GatewayError::UriTooLong { len: path_and_query.len(), max: max_len });
    }
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let Some(rest) = path.strip_prefix(R1) else {
        return Err(if path.starts_with("/r") && path[2..].starts_with(|c: char| c.is_ascii_digit()) {
            bad("this gateway speaks version r1 of the X-Road REST protocol; call /r1/{serviceId}/…".to_owned())
        } else if path.trim_end_matches('/').eq_ignore_ascii_case("/listClients") {
            // The metadata service's name, spelt otherwise: the path is case-sensitive.
            bad(format!(
                "{:?} is not a path of this gateway: the region's members and subsystems are at /listClients",
                clip(path)
            ))
        } else {
            bad(format!(
                "{:?} is not an X-Road REST call; call /r1/INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE[/path], \
                 e.g. /r1/ID/PEMDA/1602/DISDUKCAPIL/nik-verify/nik/1602…",
                clip(path)
            ))
        });
    };
    // The first five segments are the service identifier; the rest is the path under it.
    let mut cut = rest.len();
    let mut seen = 0;
    for (i, b) in rest.bytes().enumerate() {
        if b == b'/' {
            seen += 1;
            if seen == 5 {
                cut = i;
                break;
            }
        }
    }
    let service = ServiceId::from_url_path(&rest[..cut]).map_err(|e| {
        if seen < 4 {
            // Fewer than five parts: the URL names no service at all.
            bad(format!(
                "the URL names no service: after /r1/ comes the service identifier \
                 INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE, then the path under it, e.g. \
                 /r1/ID/PEMDA/1602/DISDUKCAPIL/nik-verify/nik/1602…; a provider's services are listed at \
                 /r1/INSTANCE/CLASS/MEMBER/SUBSYSTEM/listMethods ({e})"
            ))
        } else {
            bad(e.to_string())
        }
    })?;
    let under = if cut == rest.len() { "/" } else { &rest[cut..] };
    check_path(under)?;
    if let Some(q) = query {
        check_query(q)?;
    }
    Ok(Target { service, path: under, query })
}

pub(crate) fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Decodes `%XX` escapes of one segment, refusing malformed ones.
pub(crate) fn decode_segment(seg: &str) -> Result<Vec<u8>, String> {
    decode_escapes(seg.as_bytes(), true)
        .ok_or_else(|| format!("{:?} has a `%` not followed by two hex digits; percent-encode it as %25", clip(seg)))
}

/// `bytes` with their `%XX` escapes decoded. A `%` not followed by two hex digits makes it
/// `None` when `strict`, and is kept as it is otherwise (as a lenient server decodes).
fn decode_escapes(bytes: &[u8], strict: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(value) => {
                    out.push(value);
                    i += 3;
                    continue;
                }
                None if strict => return None,
                None => {}
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Some(out)
}

/// The path under the service: no `.`/`..` segments (plain or encoded), no encoded `/`, `\` or
/// NUL that an upstream might decode into a different path, no empty segments inside it.
fn check_path(path: &str) -> Result<(), GatewayError> {
    // The URI syntax has no place for raw bytes outside ASCII, nor for controls (RFC 3986): a
    // service's parser may read them in another encoding than the gateway's checks did. Refused
    // over both versions (hyper lets raw UTF-8 through on either); browsers and HTTP libraries
    // percent-encode them.
    if let Some(b) = path.bytes().find(|b| !b.is_ascii_graphic()) {
        return Err(bad(format!(
            "the path {:?} holds the byte 0x{b:02X} unencoded; percent-encode it (UTF-8, e.g. %C3%A9 for é)",
            clip(path)
        )));
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() && i != last {
            return Err(bad(format!("the path {:?} has an empty segment (`//`); send it without one", clip(path))));
        }
        // Without an escape the segment is itself (ASCII, checked above): no decoding to do.
        let decoded = if seg.contains('%') { decode_segment(seg).map_err(bad)? } else { seg.as_bytes().to_vec() };
        // A service that decodes twice reads `%252e%252e` as `..` and `%252f` as `/`: a segment
        // holding an escape once decoded is checked decoded twice too.
        // Decoded leniently: a service that decodes twice may well keep a bad escape as it is.
        let again = decoded.contains(&b'%').then(|| decode_escapes(&decoded, false).unwrap_or_default());
        for (d, twice) in std::iter::once((&decoded, false)).chain(again.as_ref().map(|a| (a, true))) {
            // Servers that decode overlong UTF-8 read `%c0%ae` as `.` and `%c0%af` as `/`, which
            // no check here would have seen. Other bytes that are not UTF-8 (Latin-1 text, say)
            // are the service's to read.
            if overlong(d) {
                return Err(bad(format!(
                    "the path {:?} has the segment {:?}, whose escapes spell an overlong UTF-8 sequence (which some \
                     servers read as `.`, `/` or `\\`); send the segment's text as UTF-8, percent-encoded",
                    clip(path),
                    clip(seg)
                )));
            }
            // Java servers (Tomcat, Jetty, Spring) drop a segment's `;parameters` before they
            // resolve dots, so `..;x` is `..` to them: the name before any `;` must not be a dot.
            let name = d.split(|b| *b == b';').next().unwrap_or_default();
            if let Some(dots) = read_as_dots(name) {
                return Err(bad(format!(
                    "the path {:?} has the segment {:?}, which a service may read as `{}`: `.` and `..` segments are \
                     not allowed in any spelling (encoded, encoded twice, followed by `;` or by spaces, or in \
                     full-width dots); send the path without them",
                    clip(path),
                    clip(seg),
                    dots
                )));
            }
            if let Some(b) = d.iter().find(|b| matches!(b, b'/' | b'\\' | 0)) {
                let what = match (b, seg.contains('%'), twice) {
                    (b'/', _, false) => "an encoded `/` (%2F)",
                    (b'\\', false, _) => "a `\\`",
                    (b'\\', true, false) => "a `\\` (%5C)",
                    (0, _, false) => "a NUL (%00)",
                    _ => "an escape of `/`, `\\` or NUL encoded twice (%25…)",
                };
                return Err(bad(format!(
                    "the path {:?} has {what} inside the segment {:?}, which is not allowed: a service may read it \
                     as another path; send the segment without it",
                    clip(path),
                    clip(seg)
                )));
            }
        }
    }
    Ok(())
}

/// Whether `bytes` hold the start of an overlong UTF-8 sequence: a lead byte 0xC0 or 0xC1, or
/// 0xE0 followed by 0x80–0x9F, or 0xF0 followed by 0x80–0x8F (RFC 3629 forbids all of them).
fn overlong(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, b)| match b {
        0xC0 | 0xC1 => true,
        0xE0 => bytes.get(i + 1).is_some_and(|n| (0x80..=0x9F).contains(n)),
        0xF0 => bytes.get(i + 1).is_some_and(|n| (0x80..=0x8F).contains(n)),
        _ => false,
    })
}

/// Whether a segment's name (decoded, before any `;`) is `.` or `..` to some server: as it is,
/// with spaces or tabs after it (Windows servers drop them), or in dots that Unicode
/// normalisation (NFKC) folds into `.` (full-width U+FF0E, small U+FE52, leaders U+2024 and U+2025).
fn read_as_dots(name: &[u8]) -> Option<&'static str> {
    let text = std::str::from_utf8(name).ok()?.trim_end_matches([' ', '\t']);
    let mut dots = 0;
    for c in text.chars() {
        dots += match c {
            '.' | '\u{FF0E}' | '\u{FE52}' | '\u{2024}' => 1,
            '\u{2025}' => 2,
            _ => return None,
        };
    }
    match dots {
        1 => Some("."),
        2 => Some(".."),
        _ => None,
    }
}

/// The query: well-formed escapes, and each parameter at most once (parameter pollution lets a
/// caller pass one value to the gateway's checks and another to the service). Once as any server
/// reads it: some split on `;` as well as `&` (older CGI and Python), some ignore the case of
/// names (ASP.NET).
fn check_query(query: &str) -> Result<(), GatewayError> {
    let mut names: Vec<Vec<u8>> = Vec::new();
    // After a `;`, a piece is a parameter only with a `=` (`from=2024-01-01;00:00` is one value).
    let pieces = query.split('&').flat_map(|pair| {
        let mut parts = pair.split(';');
        let first = parts.next();
        first.into_iter().chain(parts.filter(|p| p.contains('=')))
    });
    for pair in pieces.filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let mut name = decode_segment(&name.replace('+', " ")).map_err(bad)?;
        decode_segment(value).map_err(bad)?;
        name.make_ascii_lowercase();
        if names.contains(&name) {
            return Err(bad(format!(
                "the query parameter {:?} appears more than once (as some servers read it: names in any case, \
                 and `;` as well as `&` between parameters); send each parameter once",
                String::from_utf8_lossy(&name)
            )));
        }
        names.push(name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(uri: &str) -> Target<'_> {
        parse(uri, 8192).unwrap()
    }

    fn err(uri: &str) -> String {
        parse(uri, 8192).unwrap_err().to_string()
    }

    #[test]
    fn splits_service_path_and_query() {
        let t = ok("/r1/ID/PEMDA/1602/DISDUKCAPIL/nik-verify/nik/3201010101010001?nama=Budi");
        assert_eq!(t.service.to_string(), "ID/PEMDA/1602/DISDUKCAPIL/nik-verify");
        assert_eq!(t.path, "/nik/3201010101010001");
        assert_eq!(t.query, Some("nama=Budi"));
        let bare = ok("/r1/ID/PEMDA/1602/DISDUKCAPIL/nik-verify");
        assert_eq!(bare.path, "/");
        assert_eq!(bare.query, None);
        assert_eq!(ok("/r1/ID/PEMDA/1602/DISDUKCAPIL/nik-verify/").path, "/");
    }

    #[test]
    fn service_identifier_is_decoded_and_checked() {
        assert_eq!(ok("/r1/ID/PEMDA/1602/A/what%3F").service.code(), "what?");
        assert!(err("/r1/ID/PEMDA/1602/DISDUKCAPIL").contains("service identifier"));
        assert!(err("/r1/ID/PEMDA//DISDUKCAPIL/x").contains("member code is empty"));
        assert!(err("/r1/ID/PEMDA/1602/DIS%20DUK/x").contains("percent-encoding"));
        // Too few parts: the URL names no service, and the message shows what one looks like.
        for short in ["/r1/", "/r1/ID/PEMDA/1602/listMethods"] {
            let said = err(short);
            assert!(said.contains("the URL names no service") && said.contains("/listMethods"), "{short}: {said}");
        }
        // The metadata service's name in another case, or with a slash: told where it is.
        for near in ["/listclients", "/ListClients/"] {
            let said = err(near);
            assert!(said.contains("the region's members and subsystems are at /listClients"), "{near}: {said}");
        }
        assert!(err("/foo").contains("is not an X-Road REST call"));
    }

    #[test]
    fn traversal_is_refused_in_every_spelling() {
        for uri in [
            "/r1/ID/PEMDA/1602/A/s/../etc/passwd",
            "/r1/ID/PEMDA/1602/A/s/%2e%2e/x",
            "/r1/ID/PEMDA/1602/A/s/.%2E/x",
            "/r1/ID/PEMDA/1602/A/s/./x",
            "/r1/ID/PEMDA/1602/A/../s",
            // Java servers drop `;parameters` before resolving dots.
            "/r1/ID/PEMDA/1602/A/s/public/..;/admin",
            "/r1/ID/PEMDA/1602/A/s/nik/..;x",
            "/r1/ID/PEMDA/1602/A/s/nik/.;",
            "/r1/ID/PEMDA/1602/A/s/nik/%2e%2e%3bx/y",
            // Encoded twice, for a service that decodes twice.
            "/r1/ID/PEMDA/1602/A/s/nik/%252e%252e/y",
            "/r1/ID/PEMDA/1602/A/s/nik/.%252E;a/y",
        ] {
            assert!(parse(uri, 8192).is_err(), "{uri}");
        }
        let said = err("/r1/ID/PEMDA/1602/A/s/public/..;/admin");
        assert!(
            said.contains("\"..;\"") && said.contains("read as `..`") && said.contains("followed by `;`"),
            "{said}"
        );
        assert!(err("/r1/ID/PEMDA/1602/A/s/a%2Fb").contains("an encoded `/` (%2F) inside the segment \"a%2Fb\""));
        assert!(err("/r1/ID/PEMDA/1602/A/s/a%5Cb").contains("a `\\` (%5C)"));
        assert!(err("/r1/ID/PEMDA/1602/A/s/a\\b").contains("has a `\\` inside"));
        assert!(err("/r1/ID/PEMDA/1602/A/s/a%00").contains("NUL"));
        // A `;` elsewhere, and dots within a name, are a service's own business.
        assert_eq!(ok("/r1/ID/PEMDA/1602/A/s/a;v=1/..b/.x").path, "/a;v=1/..b/.x");
        // An encoded `%` is a `%`: refused only when what it spells, decoded again, would be.
        assert_eq!(ok("/r1/ID/PEMDA/1602/A/s/100%25/%2541").path, "/100%25/%2541");
        assert!(err("/r1/ID/PEMDA/1602/A/s/a%252f..%252fadmin").contains("encoded twice"));
        // A bad escape once decoded does not switch the second decoding off.
        assert!(err("/r1/ID/PEMDA/1602/A/s/a%252f..%252fadmin%25").contains("encoded twice"));
        assert!(err("/r1/ID/PEMDA/1602/A/s/%252e%252e;%25/x").contains("read as `..`"));
        assert!(err("/r1/ID/PEMDA/1602/A/s/a//b").contains("empty segment"));
        // Dots as other servers read them: with spaces after (Windows), full-width (NFKC), overlong.
        for seg in ["..%20", "..%09", ".%20%20", "%ef%bc%8e%ef%bc%8e", "%e2%80%a5", ".%ef%b9%92;x"] {
            let said = err(&format!("/r1/ID/PEMDA/1602/A/s/{seg}/admin"));
            assert!(said.contains("may read as `.") && said.contains("full-width dots"), "{seg}: {said}");
        }
        assert!(err("/r1/ID/PEMDA/1602/A/s/%c0%ae%c0%ae/admin").contains("overlong UTF-8"));
        assert!(err("/r1/ID/PEMDA/1602/A/s/%e0%80%ae/admin").contains("overlong UTF-8"));
        assert!(err("/r1/ID/PEMDA/1602/A/s/%25c0%25ae%25c0%25ae/admin").contains("overlong UTF-8"), "encoded twice");
        // Latin-1 text, not UTF-8, is the service's to read.
        assert_eq!(ok("/r1/ID/PEMDA/1602/A/s/nama/Jos%E9").path, "/nama/Jos%E9");
        // Names with dots and spaces or full-width dots among other text are names.
        assert_eq!(ok("/r1/ID/PEMDA/1602/A/s/...%20/a%20./%ef%bc%8ex").path, "/...%20/a%20./%ef%bc%8ex");
        assert_eq!(ok("/r1/ID/PEMDA/1602/A/s/caf%c3%a9").path, "/caf%c3%a9");
        assert!(err("/r1/ID/PEMDA/1602/A/s/caf\u{e9}").contains("the byte 0xC3 unencoded"));
        assert!(err("/r1/ID/PEMDA/1602/A/s/a%zz").contains("two hex digits"));
    }

    #[test]
    fn parameter_pollution_is_refused() {
        assert!(err("/r1/ID/PEMDA/1602/A/s?nik=1&nik=2").contains("\"nik\" appears more than once"));
        assert!(err("/r1/ID/PEMDA/1602/A/s?nik=1&n%69k=2").contains("appears more than once"));
        assert!(err("/r1/ID/PEMDA/1602/A/s?nik=1;nik=2").contains("appears more than once"));
        assert!(err("/r1/ID/PEMDA/1602/A/s?nik=1&NIK=2").contains("names in any case"));
        // A `;` inside a value is the value's, unless what follows it is a parameter (has a `=`).
        assert_eq!(ok("/r1/ID/PEMDA/1602/A/s?q=a;b&page=2").query, Some("q=a;b&page=2"));
        let times = "from=2024-01-01;00:00&to=2024-01-31;00:00";
        assert_eq!(ok(&format!("/r1/ID/PEMDA/1602/A/s?{times}")).query, Some(times));
        assert!(err("/r1/ID/PEMDA/1602/A/s?a=%G1").contains("two hex digits"));
        assert_eq!(ok("/r1/ID/PEMDA/1602/A/s?a=1&b=2&&").query, Some("a=1&b=2&&"));
    }

    #[test]
    fn other_versions_and_paths_say_what_is_expected() {
        assert!(err("/r2/ID/PEMDA/1602/A/s").contains("version r1"));
        assert!(err("/rest/ID/PEMDA/1602/A/s").contains("not an X-Road REST call"));
        assert!(err("/").contains("not an X-Road REST call"));
    }

    #[test]
    fn over_long_uris_are_refused_with_414() {
        let uri = format!("/r1/ID/PEMDA/1602/A/s/{}", "x".repeat(100));
        let e = parse(&uri, 64).unwrap_err();
        assert_eq!(e.status().as_u16(), 414);
    }

    proptest! {
        #[test]
        fn arbitrary_uris_never_panic(s in "/[ -~]{0,200}") {
            let _ = parse(&s, 8192);
        }

        #[test]
        fn accepted_paths_hold_no_traversal(segs in proptest::collection::vec("[a-zA-Z0-9.%;]{0,6}", 0..6)) {
            let uri = format!("/r1/ID/PEMDA/1602/A/s/{}", segs.join("/"));
            if let Ok(t) = parse(&uri, 8192) {
                for seg in t.path.split('/') {
                    let d = decode_segment(seg).unwrap();
                    let name = d.split(|b| *b == b';').next().unwrap_or_default();
                    prop_assert!(name != b"." && name != b"..");
                }
            }
        }
    }
}
