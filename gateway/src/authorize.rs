//! The authorize stage of the exchange path (design §4): may this client call this endpoint of this
//! service, for the purpose it declared, now? Groups are expanded and grants indexed by service and
//! client once per configuration snapshot, so a check is two hash lookups and a scan of a few grants.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use splpd_certs::id::{ClientId, ServiceId};
use time::OffsetDateTime;

use crate::config::Config;
use crate::config::units::EndpointPattern;

/// One `[[grant]]` as it applies to the clients it names.
#[derive(Debug)]
pub struct GrantRule {
    index: usize,
    group: Option<Box<str>>,
    endpoints: Box<[EndpointPattern]>,
    purposes: Box<[Box<str>]>,
    valid_from: Option<OffsetDateTime>,
    valid_until: Option<OffsetDateTime>,
}

/// The terms of a client's grants on a service, as the directory shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantTerms {
    /// The purposes one of which the client must declare in `X-SPLP-Purpose`; empty when it
    /// need declare none.
    pub purposes: Vec<String>,
    /// When the last of its grants ends; `None` when one does not.
    pub valid_until: Option<OffsetDateTime>,
}

impl GrantTerms {
    /// `valid_until` in RFC 3339, as the directory shows it.
    pub fn valid_until_text(&self) -> Option<String> {
        self.valid_until.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
    }
}

/// Where `now` falls against a grant's validity window.
enum Window {
    Early(OffsetDateTime),
    InForce,
    Late(OffsetDateTime),
}

impl GrantRule {
    /// The grant's position among the configuration's `[[grant]]` tables, counted from 0, so the
    /// audit log can say which grant let a call through.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The group through which the grant names the client, when it names a group.
    pub fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// The endpoints the grant opens; every endpoint when empty.
    pub fn endpoints(&self) -> &[EndpointPattern] {
        &self.endpoints
    }

    /// The purposes the grant is bound to; any purpose (or none) when empty.
    pub fn purposes(&self) -> impl Iterator<Item = &str> {
        self.purposes.iter().map(|p| &**p)
    }

    /// The first instant the grant holds, if it has one.
    pub fn valid_from(&self) -> Option<OffsetDateTime> {
        self.valid_from
    }

    /// The first instant the grant no longer holds, if it has one.
    pub fn valid_until(&self) -> Option<OffsetDateTime> {
        self.valid_until
    }

    /// Whether the grant opens `method path` (the path under the service, starting with `/`).
    pub fn covers(&self, method: &str, path: &str) -> bool {
        self.endpoints.is_empty() || self.endpoints.iter().any(|e| e.matches(method, path))
    }

    /// Whether `now` lies in `[valid_from, valid_until)`.
    pub fn is_in_force(&self, now: OffsetDateTime) -> bool {
        matches!(self.window(now), Window::InForce)
    }

    fn admits_purpose(&self, purpose: Option<&str>) -> bool {
        self.purposes.is_empty() || purpose.is_some_and(|p| self.purposes.iter().any(|q| **q == *p))
    }

    fn window(&self, now: OffsetDateTime) -> Window {
        match (self.valid_from, self.valid_until) {
            (Some(from), _) if now < from => Window::Early(from),
            (_, Some(until)) if now >= until => Window::Late(until),
            _ => Window::InForce,
        }
    }
}

/// A call as the authorize stage sees it, after the caller is identified and the target parsed.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    /// The authenticated client.
    pub client: &'a ClientId,
    /// The service called.
    pub service: &'a ServiceId,
    /// The HTTP method (`POST` for gRPC).
    pub method: &'a str,
    /// The path under the service, starting with `/` (for gRPC, `/pkg.Service/Method`).
    pub path: &'a str,
    /// The purpose declared in `X-SPLP-Purpose`, if any.
    pub purpose: Option<&'a str>,
}

/// What the directory may show of a client's rights on one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoints<'a> {
    /// A grant in force opens every endpoint.
    All,
    /// Only these endpoints, in configuration order.
    Only(Vec<&'a EndpointPattern>),
}

/// The grants on one service, by the client they name.
type ByClient = HashMap<ClientId, Box<[Arc<GrantRule>]>>;

/// The access rights of one configuration snapshot, indexed for the request path.
#[derive(Debug, Default)]
pub struct AccessPolicy {
    /// service → client → the grants naming that client, directly or through a group, in
    /// configuration order. A grant naming a group is shared by all its members.
    grants: HashMap<ServiceId, ByClient>,
    /// client → the services some grant names it on, sorted, for the directory.
    services: HashMap<ClientId, Box<[ServiceId]>>,
    /// service → who to ask for a grant, quoted in denials.
    stewards: HashMap<ServiceId, Box<str>>,
}

impl AccessPolicy {
    /// Indexes the grants of `config`. The configuration is expected to be validated; a grant
    /// naming an unknown group simply names nobody through it.
    pub fn new(config: &Config) -> Self {
        let mut members: HashMap<&str, Vec<&ClientId>> = HashMap::new();
        for g in &config.groups {
            members.entry(g.name.as_str()).or_default().extend(&g.members);
        }
        let mut index: HashMap<ServiceId, HashMap<ClientId, Vec<Arc<GrantRule>>>> = HashMap::new();
        for (i, g) in config.grants.iter().enumerate() {
            let rule = Arc::new(GrantRule {
                index: i,
                group: g.group.as_deref().map(Into::into),
                endpoints: g.endpoints.clone().into(),
                purposes: g.purposes.iter().map(|p| p.as_str().into()).collect(),
                valid_from: g.valid_from.map(|t| t.0),
                valid_until: g.valid_until.map(|t| t.0),
            });
            let via_group = g.group.as_deref().and_then(|n| members.get(n)).into_iter().flatten().copied();
            let per_client = index.entry(g.service.clone()).or_default();
            for client in g.client.iter().chain(via_group) {
                let rules = per_client.entry(client.clone()).or_default();
                // A client named twice by one grant (directly and through its group, or twice in
                // a group) holds it once.
                if !rules.last().is_some_and(|r| Arc::ptr_eq(r, &rule)) {
                    rules.push(Arc::clone(&rule));
                }
            }
        }
        let mut services: HashMap<ClientId, Vec<ServiceId>> = HashMap::new();
        for (service, clients) in &index {
            for client in clients.keys() {
                services.entry(client.clone()).or_default().push(service.clone());
            }
        }
        let stewards = config
            .services
            .iter()
            .filter_map(|s| {
                let st = s.steward.as_ref()?;
                let who = match &st.contact {
                    Some(contact) => format!("{}, {contact}", st.name),
                    None => st.name.clone(),
                };
                Some((s.id.clone(), who.into()))
            })
            .collect();
        Self {
            grants: index
                .into_iter()
                .map(|(s, clients)| (s, clients.into_iter().map(|(c, r)| (c, r.into())).collect()))
                .collect(),
            services: services
                .into_iter()
                .map(|(c, mut s)| {
                    s.sort();
                    (c, s.into())
                })
                .collect(),
            stewards,
        }
    }

    /// Decides a call: the first grant (in configuration order) that allows it, or the most
    /// informative reason none does.
    pub fn check(&self, req: &AccessRequest<'_>, now: OffsetDateTime) -> Result<&GrantRule, Denial> {
        let rules = self.rules(req.client, req.service);
        match rules
            .iter()
            .find(|r| r.covers(req.method, req.path) && r.is_in_force(now) && r.admits_purpose(req.purpose))
        {
            Some(rule) => Ok(rule),
            None => Err(self.denial(req, rules, now)),
        }
    }

    /// What `client` may call on `service` at `now`, ignoring purposes (the directory shows what
    /// is open to a caller that declares the right one); `None` when no grant is in force.
    pub fn allowed_endpoints(
        &self,
        client: &ClientId,
        service: &ServiceId,
        now: OffsetDateTime,
    ) -> Option<Endpoints<'_>> {
        let mut only = Vec::new();
        let mut any = false;
        for rule in self.rules(client, service).iter().filter(|r| r.is_in_force(now)) {
            if rule.endpoints.is_empty() {
                return Some(Endpoints::All);
            }
            any = true;
            for e in &rule.endpoints {
                if !only.contains(&e) {
                    only.push(e);
                }
            }
        }
        any.then_some(Endpoints::Only(only))
    }

    /// On what terms `client` may call `service` at `now`, for the directory: the purposes it
    /// must declare (none when one of its grants in force asks for none), and until when its
    /// grants hold (none when one has no end).
    pub fn terms(&self, client: &ClientId, service: &ServiceId, now: OffsetDateTime) -> GrantTerms {
        let rules: Vec<_> = self.rules(client, service).iter().filter(|r| r.is_in_force(now)).collect();
        let mut purposes: Vec<String> = Vec::new();
        if !rules.iter().any(|r| r.purposes.is_empty()) {
            for p in rules.iter().flat_map(|r| r.purposes()) {
                if !purposes.iter().any(|q| q == p) {
                    purposes.push(p.to_owned());
                }
            }
        }
        let valid_until = if rules.iter().any(|r| r.valid_until.is_none()) {
            None
        } else {
            rules.iter().filter_map(|r| r.valid_until).max()
        };
        GrantTerms { purposes, valid_until }
    }

    /// The services on which `client` holds a grant in force at `now`, sorted.
    pub fn services_for(&self, client: &ClientId, now: OffsetDateTime) -> impl Iterator<Item = &ServiceId> {
        self.services
            .get(client)
            .into_iter()
            .flat_map(|s| s.iter())
            .filter(move |s| self.rules(client, s).iter().any(|r| r.is_in_force(now)))
    }

    fn rules(&self, client: &ClientId, service: &ServiceId) -> &[Arc<GrantRule>] {
        self.grants.get(service).and_then(|m| m.get(client)).map_or(&[], |r| r)
    }

    /// Explains a refusal. A grant that gets further (covers the endpoint, then is in force) says
    /// more about what is missing than one that does not, so the furthest reason wins.
    #[cold]
    fn denial(&self, req: &AccessRequest<'_>, rules: &[Arc<GrantRule>], now: OffsetDateTime) -> Denial {
        let call = Box::new(DeniedCall {
            client: req.client.clone(),
            service: req.service.clone(),
            method: cut(req.method),
            path: cut(req.path),
        });
        if rules.is_empty() {
            let steward = self.stewards.get(req.service).map(|s| s.to_string());
            return Denial::NoGrant { call, steward };
        }
        let mut open = Vec::new(); // endpoints of grants in force that do not cover the call
        let mut early: Option<OffsetDateTime> = None;
        let mut late: Option<OffsetDateTime> = None;
        let mut purposes: Vec<String> = Vec::new(); // of grants in force that cover the call
        let mut in_force = false;
        for rule in rules {
            match (rule.covers(req.method, req.path), rule.window(now)) {
                (false, Window::InForce) => open.extend(rule.endpoints.iter().map(ToString::to_string)),
                (false, _) => {}
                (true, Window::Early(from)) => early = Some(early.map_or(from, |e| e.min(from))),
                (true, Window::Late(until)) => late = Some(late.map_or(until, |l| l.max(until))),
                (true, Window::InForce) => {
                    in_force = true;
                    purposes.extend(rule.purposes().map(str::to_owned));
                }
            }
        }
        if in_force {
            dedup(&mut purposes);
            match req.purpose {
                None => Denial::PurposeMissing { call, required: purposes },
                Some(given) => Denial::PurposeNotAllowed { call, given: cut(given), allowed: purposes },
            }
        } else if let Some(from) = early {
            // A grant that will hold is more useful news than one that has lapsed.
            Denial::NotYetValid { call, from }
        } else if let Some(until) = late {
            Denial::Expired { call, until }
        } else {
            dedup(&mut open);
            Denial::EndpointNotCovered { call, allowed: open }
        }
    }
}

/// The call a denial speaks of; boxed in [`Denial`] so that `Result<_, Denial>` stays small on the
/// path where calls are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedCall {
    /// The caller.
    pub client: ClientId,
    /// The service called.
    pub service: ServiceId,
    /// The method called (cut short if absurdly long).
    pub method: String,
    /// The path under the service (cut short if absurdly long).
    pub path: String,
}

/// Why a call was refused. Every message names the client, the service and what grant is missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// No grant names the client on the service, directly or through a group.
    #[error(
        "{} has no grant on {}; ask the service's data steward{} or the gateway operator for one",
        .call.client, .call.service, Steward(.steward.as_deref())
    )]
    NoGrant {
        /// The call refused.
        call: Box<DeniedCall>,
        /// Who the service's data steward is, when configured.
        steward: Option<String>,
    },
    /// The client's grants on the service do not open this endpoint.
    #[error("{} has no grant for {} {} on {}; {}", .call.client, .call.method, .call.path, .call.service, Open(.allowed))]
    EndpointNotCovered {
        /// The call refused.
        call: Box<DeniedCall>,
        /// The endpoints its grants in force do open.
        allowed: Vec<String>,
    },
    /// The grants covering the endpoint are bound to purposes and the call declared none.
    #[error(
        "{} called {} {} on {} without X-SPLP-Purpose, but its grants for it require one of {}",
        .call.client, .call.method, .call.path, .call.service, List(.required)
    )]
    PurposeMissing {
        /// The call refused.
        call: Box<DeniedCall>,
        /// The purposes any of which would do.
        required: Vec<String>,
    },
    /// The declared purpose is not one the grants covering the endpoint are bound to.
    #[error(
        "{} declared purpose {given:?} for {} {} on {}, but its grants for it allow only {}",
        .call.client, .call.method, .call.path, .call.service, List(.allowed)
    )]
    PurposeNotAllowed {
        /// The call refused.
        call: Box<DeniedCall>,
        /// The purpose declared (cut short if absurdly long).
        given: String,
        /// The purposes any of which would do.
        allowed: Vec<String>,
    },
    /// The grants covering the endpoint have not started to hold.
    #[error(
        "{}'s grant for {} {} on {} only holds from {}",
        .call.client, .call.method, .call.path, .call.service, Rfc3339(*.from)
    )]
    NotYetValid {
        /// The call refused.
        call: Box<DeniedCall>,
        /// When the earliest of them starts to hold.
        from: OffsetDateTime,
    },
    /// The grants covering the endpoint have lapsed.
    #[error(
        "{}'s grant for {} {} on {} expired at {}; ask the service's data steward to renew it",
        .call.client, .call.method, .call.path, .call.service, Rfc3339(*.until)
    )]
    Expired {
        /// The call refused.
        call: Box<DeniedCall>,
        /// When the last of them stopped holding.
        until: OffsetDateTime,
    },
}

impl Denial {
    /// The call refused.
    pub fn call(&self) -> &DeniedCall {
        match self {
            Self::NoGrant { call, .. }
            | Self::EndpointNotCovered { call, .. }
            | Self::PurposeMissing { call, .. }
            | Self::PurposeNotAllowed { call, .. }
            | Self::NotYetValid { call, .. }
            | Self::Expired { call, .. } => call,
        }
    }
}

/// Text from the request quoted in a message is cut short, so a hostile call cannot flood a log line.
const QUOTE_LIMIT: usize = 120;

fn cut(s: &str) -> String {
    match s.char_indices().nth(QUOTE_LIMIT) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

/// Removes repeats, keeping first occurrences in order (lists are a handful of items).
fn dedup(items: &mut Vec<String>) {
    let mut i = 0;
    while i < items.len() {
        if items[..i].contains(&items[i]) {
            items.remove(i);
        } else {
            i += 1;
        }
    }
}

struct Steward<'a>(Option<&'a str>);

impl fmt::Display for Steward<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(who) => write!(f, " ({who})"),
            None => Ok(()),
        }
    }
}

struct List<'a>(&'a [String]);

impl fmt::Display for List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{item:?}")?;
        }
        f.write_str("]")
    }
}

struct Open<'a>(&'a [String]);

impl fmt::Display for Open<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("none of its grants on this service is in force now")
        } else {
            write!(f, "its grants on it open only {}", self.0.join(", "))
        }
    }
}

struct Rfc3339(OffsetDateTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.format(&time::format_description::well_known::Rfc3339) {
            Ok(text) => f.write_str(&text),
            // Only years outside 0..=9999 fail; time's own form still says when.
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const BASE: &str = r#"
[gateway]
id = "ID/PEMDA/1602/gw1"
cert = "gw.pem"
key = "gw.key"

[[service]]
id = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify"
upstreams = ["http://127.0.0.1:9001"]
steward = { name = "Kabid PIAK Disdukcapil", contact = "piak@okikab.go.id" }

[[service]]
id = "ID/PEMDA/1602/DINKES/rujukan"
upstreams = ["http://127.0.0.1:9002"]

[[group]]
name = "puskesmas"
members = ["ID/PEMDA/1602/PKM-KAYUAGUNG", "ID/PEMDA/1602/PKM-TUGUMULYO"]
"#;

    const NIK: &str = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify";
    const RUJUKAN: &str = "ID/PEMDA/1602/DINKES/rujukan";
    const DINKES: &str = "ID/PEMDA/1602/DINKES";
    const NOW: OffsetDateTime = datetime!(2026-03-01 10:00 +7);

    fn policy(grants: &str) -> AccessPolicy {
        let config: Config = toml::from_str(&format!("{BASE}{grants}")).unwrap();
        AccessPolicy::new(&config)
    }

    fn id<T: std::str::FromStr>(s: &str) -> T
    where
        T::Err: fmt::Debug,
    {
        s.parse().unwrap()
    }

    /// Checks `method path` by `client` on `service` at `now`.
    fn call(
        p: &AccessPolicy,
        client: &str,
        service: &str,
        method: &str,
        path: &str,
        purpose: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<usize, Denial> {
        let (client, service) = (id(client), id(service));
        let req = AccessRequest { client: &client, service: &service, method, path, purpose };
        p.check(&req, now).map(GrantRule::index)
    }

    fn get(p: &AccessPolicy, client: &str, path: &str) -> Result<usize, Denial> {
        call(p, client, NIK, "GET", path, None, NOW)
    }

    #[test]
    fn a_direct_grant_allows_and_is_named() {
        let p = policy(&format!("[[grant]]\nservice = \"{NIK}\"\nclient = \"{DINKES}\"\n"));
        assert_eq!(get(&p, DINKES, "/nik/3201010101010001"), Ok(0));
        assert_eq!(call(&p, DINKES, NIK, "POST", "/", Some("anything"), NOW), Ok(0));
    }

    #[test]
    fn no_grant_names_client_service_and_steward() {
        let p = policy("");
        let err = get(&p, DINKES, "/nik/1").unwrap_err();
        assert!(matches!(err, Denial::NoGrant { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "ID/PEMDA/1602/DINKES has no grant on ID/PEMDA/1602/DISDUKCAPIL/nik-verify; ask the service's data \
             steward (Kabid PIAK Disdukcapil, piak@okikab.go.id) or the gateway operator for one"
        );
        let err = call(&p, DINKES, RUJUKAN, "GET", "/", None, NOW).unwrap_err();
        assert!(err.to_string().ends_with("ask the service's data steward or the gateway operator for one"), "{err}");
    }

    #[test]
    fn a_grant_for_another_client_or_service_does_not_leak() {
        let p = policy(&format!(
            "[[grant]]\nservice = \"{NIK}\"\nclient = \"ID/PEMDA/1602/BAPPEDA\"\n\
             [[grant]]\nservice = \"{RUJUKAN}\"\nclient = \"{DINKES}\"\n"
        ));
        assert!(matches!(get(&p, DINKES, "/nik/1"), Err(Denial::NoGrant { .. })));
        // Same subsystem code under another region is another client.
        assert!(matches!(get(&p, "ID/PEMDA/1601/BAPPEDA", "/nik/1"), Err(Denial::NoGrant { .. })));
        assert_eq!(get(&p, "ID/PEMDA/1602/BAPPEDA", "/nik/1"), Ok(0));
        assert_eq!(call(&p, DINKES, RUJUKAN, "GET", "/", None, NOW), Ok(1));
    }

    #[test]
    fn group_members_are_granted_and_others_are_not() {
        let p = policy(&format!("[[grant]]\nservice = \"{NIK}\"\ngroup = \"puskesmas\"\n"));
        let client: ClientId = id("ID/PEMDA/1602/PKM-TUGUMULYO");
        let service: ServiceId = id(NIK);
        let req = AccessRequest { client: &client, service: &service, method: "GET", path: "/nik/1", purpose: None };
        let rule = p.check(&req, NOW).unwrap();
        assert_eq!(rule.group(), Some("puskesmas"));
        assert_eq!(get(&p, "ID/PEMDA/1602/PKM-KAYUAGUNG", "/nik/1"), Ok(0));
        assert!(matches!(get(&p, DINKES, "/nik/1"), Err(Denial::NoGrant { .. })));
    }

    #[test]
    fn endpoint_wildcards_match_one_segment_or_the_rest() {
        let p = policy(&format!(
            "[[grant]]\nservice = \"{NIK}\"\nclient = \"{DINKES}\"\nendpoints = [\"GET /nik/*\", \"/kk/**\"]\n"
        ));
        assert_eq!(get(&p, DINKES, "/nik/3201010101010001"), Ok(0));
        assert_eq!(call(&p, DINKES, NIK, "DELETE", "/kk/1/anggota/2", None, NOW), Ok(0));
        assert!(matches!(get(&p, DINKES, "/nik/1/foto"), Err(Denial::EndpointNotCovered { .. })));
        assert!(matches!(get(&p, DINKES, "/nik/"), Err(Denial::EndpointNotCovered { .. })));
        let err = call(&p, DINKES, NIK, "POST", "/nik/1", None, NOW).unwrap_err();
        assert!(matches!(err, Denial::EndpointNotCovered { .. }), "{err:?}");
        // What GET may read, HEAD may ask after.
        assert_eq!(call(&p, DINKES, NIK, "HEAD", "/nik/3201010101010001", None, NOW), Ok(0));
    }

    #[test]
    fn endpoint_not_covered_lists_what_the_grants_open() {
        let p = policy(&format!(
            "[[grant]]\nservice = \"{NIK}\"\nclient = \"{DINKES}\"\nendpoints = [\"GET /nik/*\"]\n\
             [[grant]]\nservice = \"{NIK}\"\ngroup = \"puskesmas\"\nendpoints = [\"POST /verify\"]\n\
             [[grant]]\nservice = \"{NIK}\"\nclient = \"{DINKES}\"\nendpoints = [\"GET /nik/*\", \"POST /verify\"]\n\
             [[grant]]\nservice = \"{NIK}\"\nclient = \"{DINKES}\"\nendpoints = [\"GET /kk/*\"]\n\
             valid_until = 2026-01-01T00:00:00+07:00\n"
        ));
        let err = call(&p, DINKES, NIK, "DELETE", "/nik/1", None, NOW).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ID/PEMDA/1602/DINKES has no grant for DELETE /nik/1 on ID/PEMDA/1602/DISDUKCAPIL/nik-verify; \
             its grants on it open only GET /nik/*, POST /verify"
        );
    }

    #[test]
    fn endpoint_not_covered_when_no_grant_is_in_force_says_so() {
        let p = policy(&format!(
            "[[grant]]\nservice = \"{NIK}\"\nclient = \"{DINKES}\"\nendpoints = [\"GET /kk/*\"]\n\
             valid_until = 2026-01-01T00:00:00+07:00\n"
        ));
        let err = get(&p, DINKES, "/nik/1").unwrap_err();
        assert!(err.to_string().ends_with("none of its grants on this service is in force now"), "{err}");
    }

    #[test]
    fn purpose_bound_grant_requires_a_declared_purpose() {
        let p = policy(&format!(
            "[[grant]]\nservice = \"{NIK}\"\nclient = \"{DINKES}\"\npurposes = [\"rujukan-pasien\", \"bpjs\"]\n"
        ));
        let err = get(&p, DINKES, "/nik/1").unwrap_err();
        assert_eq!(
            err,
            Denial::PurposeMissing {
                call: Box::new(DeniedCall {
                    client: id(DINKES),
                    service: id(NIK),
                    method: "GET".into(),
                    path: "/nik/1".into(),
                }),
                required: vec!["rujukan-pasien".into(), "bpjs".into()],
            }
        );
        assert!(err.to_string().contains("without X-SPLP-Purpose"), "{err}");
        assert!(err.to_string().ends_with("require one of [\"rujukan-pasien\", \"bpjs\"]"), "{err}");
        assert_eq!(call(&p, DINKES, NIK, "GET", "/nik/1", Some("bpjs"), NOW), Ok(0));
    }

    #[test]
    fn wrong_purpose_is_refused_and_the_allowed_ones_listed() {
        let p = policy(&format!(
            "[[grant]]\nservice = \"{NIK}\"\nclient = \"{DINKES}\"\npurposes = [\"rujukan-pasien\"]\n\
             [[grant]]\nservice = \"{NIK}\"\nclient = \"{DINKES}\"\npurposes = [\"bpjs\", \"rujukan-pasien\"]\n"
        ));
        let err = call(&p, DINKES, NIK, "GET", "/nik/1", Some("Rujukan-Pasien"), NOW).unwrap_err();
        assert!(
            matches!(&err, Denial::PurposeNotAllowed { given, allowed, .. }
            if given == "Rujukan-Pasien" && allowed == &["rujukan-pasien", "bpjs"]),
            "{err:?}"
        );
        assert!(err.to_string().contains("declared purpose \"Rujukan-Pasien\""), "{err}");
        assert_eq!(call(&p, DINKES, NIK, "GET", "/nik/1", Some("bpjs"), NOW), Ok(1));
    }

    #[test]
    fn unbound_grant_admits_any_purpose_or_none() {
        let p = policy(&format!("[[grant]]\nservice = \"{NIK}\"\nclient = \"{DINKES}\"\n"));
        assert_eq!(call(&p, DINKES, NIK, "GET", "/", None, NOW), Ok(0));
        assert_eq!(call(&p, DINKES, NIK, "GET", "/", Some("apa saja"), NOW), Ok(0));
    }

    #[test]
    fn validity_window_includes_its_start_and_excludes_its_end() {
        let p = policy(&format!(
            "[[grant]]\nservice = \"{NIK}\"\nclient = \"{DINKES}\"\n\
             valid_from = 2026-01-01T00:00:00+07:00\nvalid_until = 2026-07-01T00:00:00+07:00\n"
        ));
        let from = datetime!(2026-01-01 0:00 +7);
        let until = datetime!(2026-07-01 0:00 +7);
        let at = |now| call(&p, DINKES, NIK, "GET", "/", None, now);
        assert_eq!(at(from), Ok(0));
        // The same instant written in UTC is the same instant.
        assert_eq!(at(datetime!(2025-12-31 17:00 UTC)), Ok(0));
        assert_eq!(at(until - time::Duration::nanoseconds(1)), Ok(0));
        let err = at(from - time::Duration::nanoseconds(1)).unwrap_err();
        assert!(matches!(err, Denial::NotYetValid { from: f, .. } if f == from), "{err:?}");
        assert!(err.to_string().ends_with("only holds from 2026-01-01T00:00:00+07:00"), "{err}");
        let err = at(until).unwrap_err();
        assert!(matches!(err, Denial::Expired { until: u, .. } if u == until), "{err:?}");
        assert!(err.to_string().contains("expired at 2026-07-01T00:00:00+07:00"), "{err}");
    }

    #[test]
    fn one_allowing_grant_among_several_is_enough() {
        let p = policy(&format!(
            "[[grant]]\nservice = \"{NIK}\"\nclient = \"{DINKES}\"\nvalid_until = 2026-01-01T00:00:00+07:00\n\
             [[grant]]\nservice = \"{NIK}\"\nclient = \"{DINKES}\"\nendpoints = [\"POST /verify\"]\n\
             [[grant]]\nservice = \"{NIK}\"\ngroup = \"puskesmas\"\n\
             [[grant]]\nservice = \"{NIK}\"\nclient = \"{DINKES}\"\nendpoints = [\"GET /nik/*\"]\n"
        ));
        assert_eq!(get(&p, DINKES, "/nik/1"), Ok(3));
        assert_eq!(call(&p, DINKES, NIK, "POST", "/verify", None, NOW), Ok(1));
    }

    #[test]
    fn the_furthest_reason_wins() {
        // An expired grant for the endpoint says more than a grant in force for another endpoint.
        let p = policy(&format!(
            "[[grant]]\nservice = \"{NIK}\"\nclient = \"{DINKES}\"\nendpoints = [\"POST /verify\"]\n\
             [[grant]]\nservice = \"{NIK}\"\nclient = \"{DINKES}\"\nendpoints = [\"GET /nik/*\"]\n\
             valid_until = 2026-01-01T00:00:00+07:00\n\
             [[grant]]\nservice = \"{NIK}\"\nclient = \"{DINKES}\"\nendpoints = [\"GET /nik/*\"]\n\
             valid_from = 2026-06-01T00:00:00+07:00\n"
        ));
        let err = get(&p, DINKES, "/nik/1").unwrap_err();
        assert!(matches!(err, Denial::NotYetValid { from, .. } if from == datetime!(2026-06-01 0:00 +7)), "{err:?}");
        // A grant in force that only lacks the purpose says more than one that is not in force.
        let p = policy(&format!(
            "[[grant]]\nservice = \"{NIK}\"\nclient = \"{DINKES}\"\nvalid_until = 2026-01-01T00:00:00+07:00\n\
             [[grant]]\nservice = \"{NIK}\"\nclient = \"{DINKES}\"\npurposes = [\"bpjs\"]\n"
        ));
        let err = get(&p, DINKES, "/nik/1").unwrap_err();
        assert!(matches!(&err, Denial::PurposeMissing { required, .. } if required == &["bpjs"]), "{err:?}");
    }

    #[test]
    fn quoted_request_text_is_cut_short() {
        let p = policy(&format!("[[grant]]\nservice = \"{NIK}\"\nclient = \"{DINKES}\"\npurposes = [\"bpjs\"]\n"));
        let long = "x".repeat(10_000);
        let err = call(&p, DINKES, NIK, "GET", "/", Some(&long), NOW).unwrap_err();
        assert!(err.to_string().len() < 500, "{err}");
    }

    #[test]
    fn directory_helpers_show_grants_in_force() {
        let p = policy(&format!(
            "[[grant]]\nservice = \"{NIK}\"\nclient = \"{DINKES}\"\nendpoints = [\"GET /nik/*\", \"POST /verify\"]\n\
             [[grant]]\nservice = \"{NIK}\"\ngroup = \"puskesmas\"\nendpoints = [\"GET /nik/*\"]\n\
             [[grant]]\nservice = \"{NIK}\"\nclient = \"{DINKES}\"\nendpoints = [\"POST /verify\"]\n\
             purposes = [\"bpjs\"]\n\
             [[grant]]\nservice = \"{RUJUKAN}\"\nclient = \"{DINKES}\"\nvalid_until = 2026-01-01T00:00:00+07:00\n\
             [[grant]]\nservice = \"{RUJUKAN}\"\ngroup = \"puskesmas\"\n"
        ));
        let dinkes: ClientId = id(DINKES);
        let pkm: ClientId = id("ID/PEMDA/1602/PKM-KAYUAGUNG");
        let (nik, rujukan): (ServiceId, ServiceId) = (id(NIK), id(RUJUKAN));
        let shown = |e: Option<Endpoints<'_>>| match e {
            Some(Endpoints::Only(list)) => list.iter().map(ToString::to_string).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(shown(p.allowed_endpoints(&dinkes, &nik, NOW)), ["GET /nik/*", "POST /verify"]);
        assert_eq!(shown(p.allowed_endpoints(&pkm, &nik, NOW)), ["GET /nik/*"]);
        assert_eq!(p.allowed_endpoints(&dinkes, &rujukan, NOW), None);
        assert_eq!(p.allowed_endpoints(&pkm, &rujukan, NOW), Some(Endpoints::All));
        assert_eq!(p.services_for(&dinkes, NOW).collect::<Vec<_>>(), [&nik]);
        assert_eq!(p.services_for(&dinkes, datetime!(2025-12-01 0:00 +7)).count(), 2);
        assert_eq!(p.services_for(&pkm, NOW).collect::<Vec<_>>(), [&rujukan, &nik]);
        assert_eq!(p.services_for(&id("ID/PEMDA/1602/BAPPEDA"), NOW).count(), 0);
    }
}
