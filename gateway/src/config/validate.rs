//! Whole-file checks that types alone cannot make: references between tables, overlapping trust
//! scopes, files that must exist and hold the right kind of object, addresses and URLs. Every
//! mistake found is reported, each at its place in the file.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use splpd_certs::facts::facts;
use splpd_certs::id::{IdKind, IdPrefix, Identity, ServerId};
use splpd_certs::load;

use super::diag::{Locator, Seg, at};
use super::model::{Config, ConnectionType, Protocol};

/// Whether a configuration is checked to start a gateway (or by `config check`), or to replace
/// the one a running gateway has in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum When {
    Starting,
    Running,
}

pub(super) fn validate(cfg: &Config, loc: &mut Locator<'_>, base: &Path, when: When) {
    let mut v = Validator { cfg, loc, base, when };
    v.gateway();
    v.listeners();
    v.trust_anchors();
    v.identities();
    v.services();
    v.groups();
    v.grants();
    v.quotas();
    v.peers();
    v.national();
    v.audit_and_limits();
    v.telemetry();
}

struct Validator<'c, 'l, 'a> {
    cfg: &'c Config,
    loc: &'l mut Locator<'a>,
    base: &'c Path,
    when: When,
}

/// The closest of `candidates` to `name`, if close enough to be a likely typo.
fn closest<'n>(name: &str, candidates: impl IntoIterator<Item = &'n str>) -> Option<&'n str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 5))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Whether a service is reached through a `[[peer]]` or `[national]` rather than served here.
fn routed_elsewhere(cfg: &Config, service: &splpd_certs::id::ServiceId) -> bool {
    routed_to_peer(cfg, service) || cfg.national.iter().flat_map(|n| &n.prefixes).any(|p| service.is_within(p))
}

/// Whether calls to `service` go to a peer gateway (one with endpoints: a peer without only calls
/// here).
fn routed_to_peer(cfg: &Config, service: &splpd_certs::id::ServiceId) -> bool {
    cfg.peers.iter().filter(|p| p.routes_calls()).flat_map(|p| &p.authoritative).any(|p| service.is_within(p))
}

/// National services named by grants that no `[[national.api]]` maps: under `[national]`
/// prefixes (and no peer's), so routed to the national SPLP, where every call to them is then
/// refused as an unknown service. Most often the API table was forgotten or the identifier typed
/// two ways.
pub fn unmapped_national_grants(cfg: &Config) -> Vec<String> {
    let Some(n) = &cfg.national else { return Vec::new() };
    let mut named: Vec<String> = Vec::new();
    for g in &cfg.grants {
        let national = n.prefixes.iter().any(|p| g.service.is_within(p)) && !routed_to_peer(cfg, &g.service);
        let text = g.service.to_string();
        if national && !n.apis.iter().any(|a| a.service == g.service) && !named.contains(&text) {
            named.push(text);
        }
    }
    named
}

/// Clients named by grants (directly or through a group) that nothing in the configuration could
/// ever identify: no trust anchor's scope covers them, no [[identity]] maps a certificate to them,
/// no [[peer]] speaks for them, and no listener names them. Such a grant can never be used, which
/// is most often a typo in the identifier.
pub fn unidentifiable_clients(cfg: &Config) -> Vec<String> {
    let identifiable = |c: &splpd_certs::id::ClientId| {
        cfg.trust_anchors.iter().flat_map(|a| &a.scopes).any(|s| c.is_within(s))
            || cfg.peers.iter().flat_map(|p| &p.authoritative).any(|p| c.is_within(p))
            || cfg.identities.iter().any(|m| m.id == c.to_string())
            || cfg.listeners.iter().flat_map(|l| &l.clients).any(|o| &o.client == c)
    };
    let mut named: Vec<String> = Vec::new();
    for g in &cfg.grants {
        let clients: Vec<&splpd_certs::id::ClientId> = match (&g.client, &g.group) {
            (Some(c), _) => vec![c],
            (None, Some(group)) => cfg.groups.iter().filter(|x| &x.name == group).flat_map(|x| &x.members).collect(),
            (None, None) => Vec::new(),
        };
        for c in clients {
            let text = c.to_string();
            if !identifiable(c) && !named.contains(&text) {
                named.push(text);
            }
        }
    }
    named
}

/// The clients a listener lets in without a certificate (`clients = [{ connection = "http" or
/// "tls" }]`), each said with what it opens: such a client is known by its `X-Road-Client` header
/// alone, so anything that can reach the listener's address can call as it, with its grants.
/// Meant for a legacy application that cannot hold a certificate, on an address only its host
/// reaches; an operator who copied the example without such an application should see it.
pub fn header_identified_clients(cfg: &Config) -> Vec<String> {
    let mut said = Vec::new();
    for listener in &cfg.listeners {
        for opt_in in &listener.clients {
            let how = match opt_in.connection {
                ConnectionType::Mtls => continue,
                ConnectionType::Tls => "over TLS without a certificate",
                ConnectionType::Http => "over plain HTTP",
            };
            let grants = cfg
                .grants
                .iter()
                .filter(|g| {
                    g.client.as_ref() == Some(&opt_in.client)
                        || g.group.as_ref().is_some_and(|name| {
                            cfg.groups.iter().any(|x| &x.name == name && x.members.contains(&opt_in.client))
                        })
                })
                .count();
            said.push(format!(
                "listener {:?} ({}) lets {} call {how}, known by its X-Road-Client header alone: anything that can \
                 reach that address can call as it, with its {grants} grant(s); keep the address reachable from that \
                 application's host only, and remove the opt-in once it holds a certificate (or if no such \
                 application exists)",
                listener.name, listener.address, opt_in.client
            ));
        }
    }
    said
}

fn did_you_mean<'n>(name: &str, candidates: impl IntoIterator<Item = &'n str>, what: &str) -> String {
    let candidates: Vec<&str> = candidates.into_iter().collect();
    match closest(name, candidates.iter().copied()) {
        Some(c) => format!("did you mean {c:?}?"),
        None if candidates.is_empty() => format!("no {what} is defined yet; define it first"),
        None => format!("the defined {what}s are: {}", candidates.join(", ")),
    }
}

fn is_intranet(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unique_local() || v6.is_unicast_link_local(),
    }
}

impl Validator<'_, '_, '_> {
    fn err(&mut self, path: &[Seg<'_>], message: impl Into<String>, hint: impl Into<String>) {
        self.loc.error(path, message, Some(hint.into()));
    }

    fn file(&self, p: &Path) -> std::path::PathBuf {
        if p.is_relative() { self.base.join(p) } else { p.to_owned() }
    }

    fn address(&mut self, path: &[Seg<'_>], text: &str) -> Option<SocketAddr> {
        match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.err(
                    path,
                    format!("{text:?} is not an address to listen on"),
                    "write IP:port, e.g. \"0.0.0.0:8443\" or \"[::1]:9443\"; host names are not accepted, \
                     so the gateway binds exactly where you say",
                );
                None
            }
        }
    }

    fn telemetry(&mut self) {
        let Some(t) = &self.cfg.telemetry else { return };
        let endpoint = &t.otlp_endpoint;
        match url::Url::parse(endpoint) {
            Ok(u) if u.scheme() != "http" => self.err(
                at!["telemetry", "otlp_endpoint"],
                format!("{endpoint:?} uses the {} scheme; splpd sends OTLP over cleartext gRPC", u.scheme()),
                "run the collector (or its agent) on the gateway host or a trusted network, e.g. http://127.0.0.1:4317",
            ),
            Ok(u) if u.host_str().is_none_or(str::is_empty) || u.port().is_none() => {
                let missing = if u.host_str().is_none_or(str::is_empty) { "host" } else { "port" };
                self.err(
                    at!["telemetry", "otlp_endpoint"],
                    format!("{endpoint:?} names no {missing}"),
                    "write the collector's OTLP/gRPC address with its port, e.g. http://127.0.0.1:4317",
                );
            }
            Ok(u) if !matches!(u.path(), "" | "/") || u.query().is_some() => self.err(
                at!["telemetry", "otlp_endpoint"],
                format!("{endpoint:?} has a path or query"),
                "OTLP/gRPC takes the address only, e.g. http://127.0.0.1:4317",
            ),
            Ok(_) => {}
            Err(e) => self.err(
                at!["telemetry", "otlp_endpoint"],
                format!("{endpoint:?} is not a URL ({e})"),
                "write e.g. http://127.0.0.1:4317",
            ),
        }
        if let Some(r) = t.traces_sample_ratio
            && !(0.0..=1.0).contains(&r)
        {
            self.err(
                at!["telemetry", "traces_sample_ratio"],
                format!("traces_sample_ratio {r} is not between 0 and 1"),
                "0.1 sends one exchange in ten as a span, 1 every one, 0 none",
            );
        }
        if let Some(i) = t.metrics_interval
            && i.0 < std::time::Duration::from_millis(100)
        {
            self.err(
                at!["telemetry", "metrics_interval"],
                format!("metrics_interval {:?} is shorter than 100ms", i.0),
                "collectors expect metrics every 10 to 60 seconds; 15s is usual",
            );
        }
    }

    /// Checks a URL the gateway will connect to; `https_only` for peer gateways.
    fn url(&mut self, path: &[Seg<'_>], text: &str, https_only: bool) {
        let example = if https_only { "https://gw1.example.go.id:8443" } else { "http://10.0.0.5:8080/api" };
        match url::Url::parse(text) {
            Ok(u) if !(u.scheme() == "https" || (!https_only && u.scheme() == "http")) => {
                let wanted = if https_only { "https://" } else { "http:// or https://" };
                self.err(
                    path,
                    format!("{text:?} uses the {} scheme", u.scheme()),
                    format!("use {wanted}, e.g. {example}"),
                );
            }
            Ok(u) if u.host_str().is_none_or(str::is_empty) => {
                self.err(path, format!("{text:?} names no host"), format!("write e.g. {example}"));
            }
            Ok(u) if u.query().is_some() || u.fragment().is_some() => {
                self.err(
                    path,
                    format!("{text:?} has a query or fragment"),
                    "an upstream is a base URL; the caller's path and query are appended to it",
                );
            }
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                self.err(path, format!("{text:?} carries credentials"), "never put credentials in a URL");
            }
            Ok(_) => {}
            Err(e) => self.err(path, format!("{text:?} is not a URL ({e})"), format!("write e.g. {example}")),
        }
    }

    /// The hint for a file that could not be loaded: its permissions when the system said so
    /// (the account `config check` runs as should be the gateway's), else `otherwise`.
    fn load_hint(e: &load::LoadError, otherwise: &str) -> String {
        match e {
            load::LoadError::Read { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
                "make it readable by the account splpd runs as, e.g. `chgrp splpd FILE && chmod g+r FILE` (a key: \
                 0640, owned by root, group splpd), and run `config check` as that account"
                    .to_owned()
            }
            _ => otherwise.to_owned(),
        }
    }

    /// Reads a PEM/DER certificate file, reporting at `path` when it cannot be used.
    fn certificates(
        &mut self,
        path: &[Seg<'_>],
        file: &Path,
    ) -> Option<Vec<rustls_pki_types::CertificateDer<'static>>> {
        match load::read_certificates(&self.file(file)) {
            Ok(certs) => Some(certs),
            Err(e) => {
                let hint =
                    Self::load_hint(&e, "check the path (relative paths start at the configuration file's folder)");
                self.err(path, e.to_string(), hint);
                None
            }
        }
    }

    fn readable(&mut self, path: &[Seg<'_>], file: &Path, what: &str) {
        if let Err(e) = std::fs::File::open(self.file(file)) {
            self.err(
                path,
                format!("cannot read {what} {}: {e}", self.file(file).display()),
                "check the path (relative paths start at the configuration file's folder) and its permissions",
            );
        }
    }

    fn gateway(&mut self) {
        let gw = &self.cfg.gateway;
        let key = match load::read_private_key(&self.file(&gw.key)) {
            Ok(key) => Some(key),
            Err(e) => {
                let hint = Self::load_hint(&e, "point `key` at the gateway's PEM private key");
                self.err(at!["gateway", "key"], e.to_string(), hint);
                None
            }
        };
        if let Some(chain) = self.certificates(at!["gateway", "cert"], &gw.cert.clone()) {
            match facts(&chain[0]) {
                Ok(f) => match &f.identity {
                    Ok(Identity::Server(id)) if *id == gw.id => {}
                    Ok(other @ (Identity::Subsystem(_) | Identity::Admin(_))) => self.err(
                        at!["gateway", "cert"],
                        format!(
                            "the gateway certificate is {} certificate ({other}); a gateway needs a server certificate \
                             for {}",
                            if matches!(other, Identity::Admin(_)) { "an admin" } else { "an agency's (subsystem)" },
                            gw.id
                        ),
                        format!("issue one with `splpd certs issue --ca CA server {}`", gw.id),
                    ),
                    Ok(other) => self.err(
                        at!["gateway", "cert"],
                        format!("the gateway certificate is for {other}, but [gateway] id is {}", gw.id),
                        format!("issue one with `splpd certs issue --ca CA server {}`", gw.id),
                    ),
                    Err(why) => self.err(
                        at!["gateway", "cert"],
                        format!("the gateway certificate cannot be used: {why}"),
                        format!("issue one with `splpd certs issue --ca CA server {}`", gw.id),
                    ),
                },
                Err(e) => self.err(
                    at!["gateway", "cert"],
                    format!("the gateway certificate is unreadable: {e}"),
                    "check the file",
                ),
            }
            if let Some(key) = key
                && let Err(why) = load::check_key_pair(&chain, &key)
            {
                self.err(at!["gateway", "key"], why, "use the key file that was written with this certificate");
            }
            self.gateway_certificate(&chain);
        }
        let mut seen = HashSet::new();
        for (i, prefix) in gw.serves.iter().enumerate() {
            if !seen.insert(prefix) {
                self.err(at!["gateway", "serves", i], format!("{prefix} is listed twice"), "remove the duplicate");
            }
        }
    }

    /// What agencies and peer gateways would refuse the gateway's certificate for: outside its
    /// validity, not for TLS servers, or not issued by a CA this gateway's trust anchors name
    /// for its identifier (the CA that agencies and peers trust for this region).
    fn gateway_certificate(&mut self, chain: &[rustls_pki_types::CertificateDer<'static>]) {
        use splpd_certs::profile::{Problem, Role, check_as};
        use x509_parser::prelude::{FromDer, X509Certificate};
        let id = self.cfg.gateway.id.clone();
        let reissue = format!("issue a new one with `splpd certs issue --ca CA server {id}`");
        let Some(Ok((_, leaf))) = chain.first().map(|der| X509Certificate::from_der(der)) else { return };
        let peers = !self.cfg.peers.is_empty();
        for problem in check_as(&leaf, Role::Leaf, time::OffsetDateTime::now_utc()) {
            let fatal = match problem {
                // A certificate in force may lapse while the gateway runs (the reload checks that
                // an expired one is the one in force); none put in place may be early.
                Problem::Expired { .. } => self.when == When::Starting,
                Problem::NotYetValid { .. } => true,
                Problem::MissingServerAuth | Problem::LeafIsCa => true,
                // Peers take the gateway's certificate as a client's, and refuse it without.
                Problem::MissingClientAuth | Problem::NoExtendedKeyUsage => peers,
                _ => false,
            };
            if fatal {
                // Dates wrong either way may be this host's clock, not the certificate.
                let hint = match problem {
                    Problem::Expired { .. } | Problem::NotYetValid { .. } => format!(
                        "{reissue}; or, if the certificate's dates are right, check this host's clock, which reads {} \
                         (`timedatectl`, NTP)",
                        splpd_certs::inspect::rfc3339(time::OffsetDateTime::now_utc())
                    ),
                    _ => reissue.clone(),
                };
                self.err(at!["gateway", "cert"], format!("the gateway certificate cannot serve: {problem}"), hint);
            }
        }
        let parsed: Vec<X509Certificate<'_>> =
            chain.iter().filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c)).collect();
        let mut issuers = Vec::new();
        let mut unreadable = false;
        for a in &self.cfg.trust_anchors {
            // An unreadable CA file is reported where it is named.
            let Ok(cas) = load::read_certificates(&self.file(&a.ca)) else {
                unreadable = true;
                continue;
            };
            let signed = cas.iter().filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c)).any(|ca| {
                parsed.iter().any(|c| {
                    c.issuer().as_raw() == ca.subject().as_raw() && c.verify_signature(Some(ca.public_key())).is_ok()
                })
            });
            if signed {
                issuers.push(a);
            }
        }
        let fix_anchor = format!(
            "issue it from the CA that agencies and peers trust for this region, the one whose [[trust_anchor]] scopes \
             include {id} (`splpd certs issue --ca CA server {id}`)"
        );
        match issuers.as_slice() {
            // The CA may be the one that could not be read: that error, said where the file is
            // named, is the one to fix first, and this one would send the operator astray.
            [] if unreadable => {}
            [] => self.err(
                at!["gateway", "cert"],
                format!(
                    "the gateway certificate is issued by {}, which is not the CA of any [[trust_anchor]]: agencies \
                     and peer gateways, which trust this region's CA, would refuse it",
                    leaf.issuer()
                ),
                format!(
                    "{fix_anchor}; or, if it is, the region's [[trust_anchor]] `ca` names another CA's certificate: \
                     point it at that CA's ca.crt"
                ),
            ),
            found if !found.iter().any(|a| a.scopes.iter().any(|s| id.is_within(s))) => self.err(
                at!["gateway", "cert"],
                format!(
                    "the gateway certificate is issued by the CA of trust anchor {:?}, whose scopes do not include \
                     {id}: that CA may not vouch for this gateway, and peers refuse it",
                    found[0].name
                ),
                fix_anchor,
            ),
            _ => {}
        }
    }

    fn listeners(&mut self) {
        let cfg = self.cfg;
        if cfg.listeners.is_empty() {
            self.err(
                at!["gateway"],
                "there is no [[listener]]: the gateway would accept no calls",
                "add e.g. [[listener]] name = \"public\" address = \"0.0.0.0:8443\"",
            );
        }
        let mut names = HashSet::new();
        let mut addrs: Vec<(SocketAddr, String)> = Vec::new();
        for (i, l) in cfg.listeners.iter().enumerate() {
            if !names.insert(l.name.as_str()) {
                self.err(
                    at!["listener", i, "name"],
                    format!("listener name {:?} is used twice", l.name),
                    "give each listener its own name",
                );
            }
            let Some(addr) = self.address(at!["listener", i, "address"], &l.address) else { continue };
            if let Some((other_addr, other)) = addrs.iter().find(|(a, _)| clash(*a, addr)) {
                self.err(
                    at!["listener", i, "address"],
                    taken(addr, *other_addr, other),
                    "give each listener its own port, or distinct specific addresses (0.0.0.0 and [::] take the port on every \
                     address)",
                );
            }
            addrs.push((addr, l.name.clone()));
            let mut clients = HashSet::new();
            for (j, opt) in l.clients.iter().enumerate() {
                if !clients.insert(&opt.client) {
                    self.err(
                        at!["listener", i, "clients", j, "client"],
                        format!("{} is opted in twice", opt.client),
                        "keep one entry",
                    );
                }
                if opt.connection == ConnectionType::Mtls {
                    self.err(
                        at!["listener", i, "clients", j, "connection"],
                        "mtls needs no opt-in: it is the default for every client",
                        "remove this entry, or use \"tls\" or \"http\"",
                    );
                } else if !is_intranet(addr.ip()) {
                    self.err(
                        at!["listener", i, "clients", j, "connection"],
                        format!(
                            "{} is opted in to {:?} on {addr}, which is not a loopback or intranet address",
                            opt.client, opt.connection
                        ),
                        "take the identity from X-Road-Client only on a listener bound to 127.0.0.1, ::1 or a private \
                         (10/8, 172.16/12, 192.168/16) address; elsewhere require mTLS",
                    );
                }
            }
            if l.max_connections == Some(0) {
                self.err(
                    at!["listener", i, "max_connections"],
                    "max_connections = 0 would refuse every connection",
                    "remove it or set a positive limit",
                );
            }
        }
        if let Some(admin) = &cfg.admin {
            if let Some(addr) = self.address(at!["admin", "address"], &admin.address)
                && let Some((other_addr, other)) = addrs.iter().find(|(a, _)| clash(*a, addr))
            {
                self.err(
                    at!["admin", "address"],
                    taken(addr, *other_addr, other),
                    "give the admin listener its own address, ideally on loopback or the office network",
                );
            }
            let member = cfg.gateway.id.member();
            for (i, op) in admin.operators.iter().enumerate() {
                if op.member() != member {
                    self.err(
                        at!["admin", "operators", i],
                        format!("operator {op} belongs to another member than this gateway ({member})"),
                        format!("operators of this gateway are {member}/<name>"),
                    );
                }
            }
            for (i, viewer) in admin.viewers.iter().enumerate() {
                if viewer.member() != member {
                    self.err(
                        at!["admin", "viewers", i],
                        format!("viewer {viewer} belongs to another member than this gateway ({member})"),
                        format!("viewers of this gateway are {member}/<name>"),
                    );
                } else if admin.operators.contains(viewer) {
                    self.err(
                        at!["admin", "viewers", i],
                        format!("{viewer} is both an operator and a viewer"),
                        "list it under operators to let it make changes, or under viewers to let it only read",
                    );
                }
            }
        }
    }

    fn trust_anchors(&mut self) {
        let cfg = self.cfg;
        if cfg.trust_anchors.is_empty() {
            self.err(
                at!["gateway"],
                "there is no [[trust_anchor]]: no client certificate could ever be accepted",
                "add the region CA: [[trust_anchor]] name = \"region\" ca = \"pki/ca.crt\" scopes = [\"ID/PEMDA/1602\"]",
            );
        }
        let mut names = HashSet::new();
        let mut scopes: Vec<(&IdPrefix, &str, usize, usize)> = Vec::new();
        for (i, a) in cfg.trust_anchors.iter().enumerate() {
            if !names.insert(a.name.as_str()) {
                self.err(
                    at!["trust_anchor", i, "name"],
                    format!("trust anchor name {:?} is used twice", a.name),
                    "give each anchor its own name",
                );
            }
            if let Some(certs) = self.certificates(at!["trust_anchor", i, "ca"], &a.ca) {
                for (n, der) in certs.iter().enumerate() {
                    match facts(der) {
                        Ok(f) if f.is_ca => {}
                        Ok(f) => self.err(
                            at!["trust_anchor", i, "ca"],
                            format!(
                                "certificate {} in {} ({}) is not a CA certificate",
                                n + 1,
                                a.ca.display(),
                                f.subject
                            ),
                            "a trust anchor is the CA that issues certificates (ca.crt), not a certificate it issued",
                        ),
                        Err(e) => self.err(
                            at!["trust_anchor", i, "ca"],
                            format!("certificate {} in {}: {e}", n + 1, a.ca.display()),
                            "check the file",
                        ),
                    }
                }
            }
            let mut crls_read = true;
            for (j, crl) in a.crls.iter().enumerate() {
                if let Err(e) = load::read_crls(&self.file(crl)) {
                    crls_read = false;
                    let hint = Self::load_hint(
                        &e,
                        "check the path (relative to this file's folder), or publish the CA's CRL there with \
                         `splpd certs crl --ca DIR` (it writes DIR/crl.pem)",
                    );
                    self.err(at!["trust_anchor", i, "crls", j], e.to_string(), hint);
                }
            }
            if crls_read && !a.crls.is_empty() {
                self.crls_of_anchor(i, a);
            }
            for (j, scope) in a.scopes.iter().enumerate() {
                if let Some((other, other_name, _, _)) = scopes.iter().find(|(s, ..)| s.overlaps(scope)) {
                    let whose = if *other_name == a.name {
                        "this anchor".to_owned()
                    } else {
                        format!("trust anchor {other_name:?}")
                    };
                    self.err(
                        at!["trust_anchor", i, "scopes", j],
                        format!("scope {scope} overlaps {other} of {whose}"),
                        "each identifier may be vouched for by one CA only; narrow or remove one of the scopes",
                    );
                }
                scopes.push((scope, a.name.as_str(), i, j));
            }
        }
    }

    /// The anchor's CRLs as the gateway takes them: each signed by a CA of the anchor, in the
    /// profile the TLS library takes. A CRL that is not is told at its line in `crls`.
    fn crls_of_anchor(&mut self, i: usize, a: &crate::config::TrustAnchor) {
        let resolved = crate::config::TrustAnchor {
            ca: self.file(&a.ca),
            crls: a.crls.iter().map(|c| self.file(c)).collect(),
            ..a.clone()
        };
        // Silent: the gateway (or `config check`) loads the anchors again, and says then what
        // concerns it, once.
        let loaded = tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
            crate::tls::TrustStore::new(std::slice::from_ref(&resolved), &[])
        });
        let Err(crate::tls::TlsSetupError::CrlUnusable { path, reason, .. }) = loaded else {
            return;
        };
        let j = resolved.crls.iter().position(|c| *c == path).unwrap_or(0);
        // The reason ends with its fix, after the last "; ".
        let (what, fix) = reason.rsplit_once("; ").unwrap_or((reason.as_str(), "check the file"));
        self.err(
            at!["trust_anchor", i, "crls", j],
            format!("the CRL in {} {what}", a.crls.get(j).unwrap_or(&path).display()),
            fix,
        );
    }

    fn anchor_names(&self) -> impl Iterator<Item = &str> {
        self.cfg.trust_anchors.iter().map(|a| a.name.as_str())
    }

    fn identities(&mut self) {
        let cfg = self.cfg;
        let mut seen = HashSet::new();
        for (i, m) in cfg.identities.iter().enumerate() {
            if !seen.insert(m.fingerprint) {
                self.err(
                    at!["identity", i, "fingerprint"],
                    "this fingerprint is mapped twice",
                    "one certificate has one identity; keep one entry",
                );
            }
            if let Err(e) = Identity::parse(m.kind, &m.id) {
                self.err(at!["identity", i, "id"], e.to_string(), "write the identifier the certificate stands for");
            }
            if matches!(m.kind, IdKind::Member | IdKind::Service | IdKind::Prefix) {
                self.err(
                    at!["identity", i, "kind"],
                    format!("a certificate cannot stand for a {}", m.kind),
                    "use subsystem, server or admin",
                );
            }
            if !cfg.trust_anchors.iter().any(|a| a.name == m.anchor) {
                let hint = did_you_mean(&m.anchor, self.anchor_names(), "trust anchor");
                self.err(
                    at!["identity", i, "anchor"],
                    format!("identity names trust anchor {:?}, which is not defined", m.anchor),
                    hint,
                );
            }
        }
    }

    fn services(&mut self) {
        let cfg = self.cfg;
        let served = cfg.gateway.served_prefixes();
        let mut ids = HashSet::new();
        let mut grpc_names: HashMap<&str, usize> = HashMap::new();
        for (i, s) in cfg.services.iter().enumerate() {
            if !ids.insert(&s.id) {
                self.err(
                    at!["service", i, "id"],
                    format!("service {} is defined twice", s.id),
                    "merge the two [[service]] tables",
                );
            }
            if !served.iter().any(|p| s.id.is_within(p)) {
                let list: Vec<String> = served.iter().map(ToString::to_string).collect();
                self.err(
                    at!["service", i, "id"],
                    format!("service {} is not within what this gateway serves ({})", s.id, list.join(", ")),
                    "services of other regions are reached through [[peer]], national ones through [national]; \
                     or add the prefix to [gateway] serves",
                );
            }
            if crate::local::is_reserved_service_code(s.id.code()) {
                self.err(
                    at!["service", i, "id"],
                    format!("service code {} is reserved for X-Road's metadata service of that name", s.id.code()),
                    "give the service another code",
                );
            }
            if s.upstreams.is_empty() {
                self.err(
                    at!["service", i, "upstreams"],
                    format!("service {} has no upstream", s.id),
                    "add the base URL of the agency's server, e.g. upstreams = [\"http://10.0.0.5:8080\"]",
                );
            }
            for (j, u) in s.upstreams.iter().enumerate() {
                self.url(at!["service", i, "upstreams", j], u, false);
                // Without `tls.ca`, its certificate is checked against the anchors that may vouch
                // for servers: there must be one (the region's, or one with no scopes).
                let pinned = s.tls.as_ref().is_some_and(|t| t.ca.is_some());
                if u.starts_with("https://")
                    && !pinned
                    && !cfg.trust_anchors.iter().any(|a| cfg.vouches_for_servers(&a.name))
                {
                    self.err(
                        at!["service", i, "upstreams", j],
                        format!("{u:?} is https://, and no [[trust_anchor]] may vouch for its certificate"),
                        "set the service's tls.ca to the CA that signs it, or give that CA a [[trust_anchor]] with no \
                         scopes; an anchor scoped to another region's identifiers vouches for no host",
                    );
                }
            }
            if let Some(tls) = &s.tls {
                if !s.upstreams.iter().any(|u| u.starts_with("https://")) {
                    self.err(
                        at!["service", i, "tls"],
                        "[service.tls] is set but no upstream uses https://",
                        "use https:// upstreams or remove the tls table",
                    );
                }
                if let Some(ca) = &tls.ca {
                    self.certificates(at!["service", i, "tls", "ca"], ca);
                }
                if let Some(name) = &tls.server_name
                    && rustls_pki_types::ServerName::try_from(name.as_str()).is_err()
                {
                    self.err(
                        at!["service", i, "tls", "server_name"],
                        format!("{name:?} is neither a DNS name nor an IP address"),
                        "write the name the upstream's certificate carries, e.g. \"nik.disdukcapil.local\"",
                    );
                }
            }
            if s.protocol == Protocol::Rest && !s.grpc_services.is_empty() {
                self.err(
                    at!["service", i, "grpc_services"],
                    "grpc_services is set on a REST service",
                    "set protocol = \"grpc\" or remove grpc_services",
                );
            }
            for (j, name) in s.grpc_services.iter().enumerate() {
                let valid = !name.is_empty()
                    && name
                        .split('.')
                        .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                if !valid {
                    self.err(
                        at!["service", i, "grpc_services", j],
                        format!("{name:?} is not a fully-qualified gRPC service name"),
                        "write package and service, e.g. \"kesehatan.v1.Rujukan\"",
                    );
                } else if crate::local::OwnGrpc::from_name(name).is_some() {
                    self.err(
                        at!["service", i, "grpc_services", j],
                        format!("{name} is answered by the gateway itself"),
                        "remove it; callers reach the agency's own by naming the service in the metadata x-road-service",
                    );
                } else if let Some(first) = grpc_names.insert(name, i) {
                    self.err(
                        at!["service", i, "grpc_services", j],
                        format!("gRPC service {name} is already mapped to {}", cfg.services[first].id),
                        "a gRPC service name routes to one service only",
                    );
                }
            }
            for key in ["connect_timeout", "request_timeout", "idle_timeout"] {
                let value = match key {
                    "connect_timeout" => s.connect_timeout,
                    "request_timeout" => s.request_timeout,
                    _ => s.idle_timeout,
                };
                if value.is_some_and(|d| d.0.is_zero()) {
                    self.err(
                        at!["service", i, key],
                        format!("{key} is zero"),
                        "give a positive duration such as \"5s\", or leave it out for the default",
                    );
                }
            }
            if let Some(rl) = &s.rate_limit {
                self.rate(at!["service", i, "rate_limit"], rl.per_second, rl.burst);
            }
            if let Some(doc) = &s.openapi {
                let file = self.file(doc);
                if let Err(why) = crate::local::directory::check_openapi_file(&file) {
                    self.err(
                        at!["service", i, "openapi"],
                        why,
                        "point `openapi` at the service's OpenAPI document (JSON or YAML); it is served to every \
                         caller (relative paths start at the configuration file's folder)",
                    );
                }
            }
            super::resilience::check(self.loc, i, s);
            if s.max_request_body.is_some_and(|b| b.0 == 0) {
                self.err(
                    at!["service", i, "max_request_body"],
                    "max_request_body is zero",
                    "leave it out for the default or give a size such as \"1 MiB\"",
                );
            }
        }
    }

    fn rate(&mut self, path: &[Seg<'_>], per_second: u32, burst: Option<u32>) {
        // At the key's own line.
        let key = |name| [path, &[Seg::Key(name)]].concat();
        if per_second == 0 {
            self.err(
                &key("per_second"),
                "per_second = 0 would refuse every call",
                "remove the limit or set a positive rate; to close a service, remove its grants",
            );
        }
        if burst == Some(0) {
            self.err(
                &key("burst"),
                "burst = 0 would refuse every call",
                "leave burst out (it defaults to per_second) or make it positive",
            );
        }
    }

    /// `[audit] signing_key` and `signing_cert`: both or neither; the certificate the key's, and
    /// a server certificate for the gateway, as checkpoints are checked against it.
    fn signing_key(&mut self) {
        let cfg = self.cfg;
        let (key, cert) = match (&cfg.audit.signing_key, &cfg.audit.signing_cert) {
            (None, None) => return,
            (Some(_), None) => {
                self.err(
                    at!["audit", "signing_key"],
                    "signing_key is set without signing_cert, so its checkpoints could not be checked",
                    format!(
                        "add signing_cert: the key's certificate, issued with `splpd certs issue --ca CA server {}`",
                        cfg.gateway.id
                    ),
                );
                return;
            }
            (None, Some(_)) => {
                self.err(
                    at!["audit", "signing_cert"],
                    "signing_cert is set without signing_key",
                    "add the key it certifies as signing_key, or leave both out to sign with the gateway's key",
                );
                return;
            }
            (Some(key), Some(cert)) => (key, cert),
        };
        let fix = "point it at a PEM private key (ECDSA or Ed25519), or leave it out to sign with the gateway's key";
        let signer = match load::read_private_key(&self.file(key))
            .map_err(|e| (e.to_string(), Self::load_hint(&e, fix)))
            .and_then(|k| {
                crate::audit::checkpoint::CheckpointSigner::from_private_key(&k)
                    .map_err(|e| (e.to_string(), fix.to_owned()))
            }) {
            Ok(signer) => signer,
            Err((e, hint)) => {
                self.err(at!["audit", "signing_key"], e, hint);
                return;
            }
        };
        let Some(chain) = self.certificates(at!["audit", "signing_cert"], &cert.clone()) else { return };
        let fix = format!("issue one for signing_key with `splpd certs issue --ca CA server {}`", cfg.gateway.id);
        match facts(&chain[0]).map(|f| f.identity) {
            Ok(Ok(Identity::Server(id))) if id == cfg.gateway.id => {}
            Ok(Ok(other)) => self.err(
                at!["audit", "signing_cert"],
                format!("the signing certificate is for {other}; checkpoints are checked against {}'s", cfg.gateway.id),
                fix.clone(),
            ),
            Ok(Err(why)) => {
                self.err(at!["audit", "signing_cert"], format!("the signing certificate: {why}"), fix.clone());
            }
            Err(e) => self.err(at!["audit", "signing_cert"], e, fix.clone()),
        }
        let certified = crate::audit::verify::certificate_key_sha256(&chain[0]).ok();
        if certified.as_ref() != Some(signer.key_sha256()) {
            self.err(
                at!["audit", "signing_cert"],
                "the signing certificate is not signing_key's: their public keys differ",
                fix,
            );
        }
    }

    fn service_names(&self) -> Vec<String> {
        self.cfg.services.iter().map(|s| s.id.to_string()).collect()
    }

    fn unknown_service(&mut self, path: &[Seg<'_>], what: &str, id: &splpd_certs::id::ServiceId) {
        let names = self.service_names();
        let hint = did_you_mean(&id.to_string(), names.iter().map(String::as_str), "service");
        self.err(path, format!("{what} names service {id}, which is not defined in any [[service]]"), hint);
    }

    fn groups(&mut self) {
        let cfg = self.cfg;
        let mut names = HashSet::new();
        for (i, g) in cfg.groups.iter().enumerate() {
            if !names.insert(g.name.as_str()) {
                self.err(
                    at!["group", i, "name"],
                    format!("group {:?} is defined twice", g.name),
                    "merge the two [[group]] tables",
                );
            }
            if g.members.is_empty() {
                self.err(
                    at!["group", i, "members"],
                    format!("group {:?} has no members", g.name),
                    "list its subsystems, e.g. members = [\"ID/PEMDA/1602/DINKES\"]",
                );
            }
            let mut seen = HashSet::new();
            for (j, m) in g.members.iter().enumerate() {
                if !seen.insert(m) {
                    self.err(at!["group", i, "members", j], format!("{m} is listed twice"), "remove the duplicate");
                }
            }
        }
    }

    fn grants(&mut self) {
        let cfg = self.cfg;
        for (i, g) in cfg.grants.iter().enumerate() {
            match (&g.client, &g.group) {
                (Some(_), Some(_)) => self.err(
                    at!["grant", i, "group"],
                    "a grant names both a client and a group",
                    "split it into two grants",
                ),
                (None, None) => self.err(
                    at!["grant", i],
                    "a grant names neither a client nor a group",
                    "add client = \"ID/PEMDA/1602/DINKES\" or group = \"<name>\"",
                ),
                _ => {}
            }
            if let Some(group) = &g.group
                && !cfg.groups.iter().any(|x| &x.name == group)
            {
                let hint = did_you_mean(group, cfg.groups.iter().map(|x| x.name.as_str()), "group");
                self.err(at!["grant", i, "group"], format!("grant names group {group:?}, which is not defined"), hint);
            }
            let service = cfg.services.iter().find(|s| s.id == g.service);
            // A grant for another region's or a national service lets a client of this region
            // call out to it; the other side applies its own grants too.
            if service.is_none() && !routed_elsewhere(cfg, &g.service) {
                let ours = cfg.gateway.served_prefixes().iter().any(|p| g.service.is_within(p));
                if ours {
                    self.unknown_service(at!["grant", i, "service"], "grant", &g.service);
                } else {
                    self.err(
                        at!["grant", i, "service"],
                        format!(
                            "grant names service {}, which this gateway does not serve, and no [[peer]] (nor \
                             [national]) is authoritative for it",
                            g.service
                        ),
                        format!(
                            "to let a client of ours call out to it, add a [[peer]] table for the gateway that serves \
                             it, with authoritative = [\"{}\"]; or correct the service's identifier",
                            g.service.subsystem().member()
                        ),
                    );
                }
            }
            if let Some(s) = service.filter(|s| s.protocol == Protocol::Grpc) {
                for (j, e) in g.endpoints.iter().enumerate() {
                    if e.method().is_some_and(|m| m != "POST") {
                        self.err(
                            at!["grant", i, "endpoints", j],
                            format!("{} is a gRPC service; its endpoints have no HTTP method", s.id),
                            "write the gRPC method path, e.g. \"/kesehatan.v1.Rujukan/Kirim\" or \"/kesehatan.v1.Rujukan/*\"",
                        );
                    }
                }
            }
            for (j, p) in g.purposes.iter().enumerate() {
                if p.trim().is_empty() || p.chars().any(char::is_control) {
                    self.err(
                        at!["grant", i, "purposes", j],
                        format!("purpose {p:?} is empty or holds control characters"),
                        "write the purpose code callers send in X-SPLP-Purpose",
                    );
                }
            }
            if let (Some(from), Some(until)) = (g.valid_from, g.valid_until)
                && from >= until
            {
                self.err(
                    at!["grant", i, "valid_until"],
                    "valid_until is not after valid_from",
                    "the grant would never hold; check the dates",
                );
            }
        }
    }

    fn quotas(&mut self) {
        let cfg = self.cfg;
        let mut seen = HashSet::new();
        for (i, q) in cfg.quotas.iter().enumerate() {
            if !cfg.services.iter().any(|s| s.id == q.service) {
                self.unknown_service(at!["quota", i, "service"], "quota", &q.service);
            }
            if !seen.insert((&q.service, &q.client)) {
                self.err(
                    at!["quota", i],
                    format!("a quota for {} on {} is already set", q.client, q.service),
                    "keep one [[quota]] per client and service",
                );
            }
            self.rate(at!["quota", i], q.per_second, q.burst);
        }
    }

    fn peers(&mut self) {
        let cfg = self.cfg;
        let served = cfg.gateway.served_prefixes();
        let mut ids: HashSet<&ServerId> = HashSet::new();
        let mut claimed: Vec<(&IdPrefix, &ServerId)> = Vec::new();
        for (i, p) in cfg.peers.iter().enumerate() {
            if !ids.insert(&p.id) {
                self.err(
                    at!["peer", i, "id"],
                    format!("peer {} is defined twice", p.id),
                    "merge the two [[peer]] tables",
                );
            }
            if p.id == cfg.gateway.id {
                self.err(
                    at!["peer", i, "id"],
                    "a peer has this gateway's own identifier",
                    "a peer is another region's gateway",
                );
            }
            // Without endpoints a peer only calls here: the national SPLP, whose services go
            // through [national], so that all it speaks for must be national.
            let national = |prefix: &IdPrefix| {
                cfg.national.iter().flat_map(|n| &n.prefixes).any(|n| prefix.len() >= n.len() && n.overlaps(prefix))
            };
            let calls_in_only = cfg.national.is_some() && p.authoritative.iter().all(national);
            if !p.routes_calls() && !calls_in_only {
                self.err(
                    at!["peer", i, "endpoints"],
                    format!("peer {} has no endpoint", p.id),
                    "add its https:// address, e.g. endpoints = [\"https://gw1.example.go.id:8443\"]; only a peer \
                     authoritative for [national] prefixes alone (the national SPLP calling here) goes without",
                );
            }
            for (j, e) in p.endpoints.iter().enumerate() {
                self.url(at!["peer", i, "endpoints", j], e, true);
                // A peer gateway takes X-Road calls at /r1/… and gRPC at /package.Service/…: a
                // path before them would make every call a malformed one there.
                if let Ok(u) = url::Url::parse(e)
                    && !matches!(u.path(), "" | "/")
                {
                    self.err(
                        at!["peer", i, "endpoints", j],
                        format!("{e:?} has a path ({}); a peer gateway is called at its root", u.path()),
                        format!(
                            "write the address alone, e.g. \"{}://{}\"",
                            u.scheme(),
                            u.host_str().map_or_else(String::new, |h| match u.port() {
                                Some(port) => format!("{h}:{port}"),
                                None => h.to_owned(),
                            })
                        ),
                    );
                }
            }
            if p.authoritative.is_empty() {
                self.err(
                    at!["peer", i, "authoritative"],
                    format!("peer {} is authoritative for nothing", p.id),
                    "list the prefixes it serves, e.g. authoritative = [\"ID/PEMDA/1601\"]",
                );
            }
            for (j, prefix) in p.authoritative.iter().enumerate() {
                if let Some(ours) = served.iter().find(|s| s.overlaps(prefix)) {
                    self.err(
                        at!["peer", i, "authoritative", j],
                        format!("peer {} would be authoritative for {prefix}, which overlaps {ours} that this gateway serves", p.id),
                        "a peer may only speak for identifiers of its own region",
                    );
                }
                if let Some((_, other)) = claimed.iter().find(|(c, _)| *c == prefix) {
                    self.err(
                        at!["peer", i, "authoritative", j],
                        format!("{prefix} is already claimed by peer {other}"),
                        "one prefix routes to one peer; a longer prefix may refine a shorter one",
                    );
                }
                claimed.push((prefix, &p.id));
            }
            match cfg.trust_anchors.iter().find(|a| a.name == p.trust_anchor) {
                None => {
                    let hint = did_you_mean(&p.trust_anchor, self.anchor_names(), "trust anchor");
                    self.err(
                        at!["peer", i, "trust_anchor"],
                        format!("peer names trust anchor {:?}, which is not defined", p.trust_anchor),
                        hint,
                    );
                }
                Some(a) if !a.scopes.iter().any(|s| p.id.is_within(s)) => {
                    let covered = cfg.identities.iter().any(|m| m.kind == IdKind::Server && m.id == p.id.to_string());
                    if !covered {
                        let own = a.scopes.iter().any(|s| cfg.gateway.id.is_within(s));
                        let hint = if own {
                            format!(
                                "{:?} vouches for this gateway's own identity ({}), not the peer's; the peer's \
                                 certificate comes from its region's CA: give that CA a [[trust_anchor]] of its own \
                                 with scopes = [\"{}\"] and name it here",
                                a.name, cfg.gateway.id, p.id
                            )
                        } else {
                            format!(
                                "add \"{}\" to that anchor's scopes (the peer gateway alone: with \"{}\", every \
                                 agency of that region could call here directly, past its own gateway's grants and \
                                 log), or map the peer's certificate in an [[identity]]",
                                p.id,
                                p.id.member()
                            )
                        };
                        self.err(
                            at!["peer", i, "trust_anchor"],
                            format!(
                                "trust anchor {:?} may not vouch for {}: no scope of it covers the peer",
                                a.name, p.id
                            ),
                            hint,
                        );
                    }
                }
                Some(_) => {}
            }
        }
    }

    fn national(&mut self) {
        let cfg = self.cfg;
        let Some(n) = &cfg.national else { return };
        let served = cfg.gateway.served_prefixes();
        if n.prefixes.is_empty() {
            self.err(
                at!["national", "prefixes"],
                "[national] routes no prefix",
                "list the prefixes of national services, e.g. prefixes = [\"ID/KL\"]",
            );
        }
        for (j, prefix) in n.prefixes.iter().enumerate() {
            if let Some(ours) = served.iter().find(|s| s.overlaps(prefix)) {
                self.err(
                    at!["national", "prefixes", j],
                    format!("{prefix} overlaps {ours}, which this gateway serves"),
                    "national prefixes name national services only",
                );
            }
            if let Some(peer) = cfg.peers.iter().find(|p| p.routes_calls() && p.authoritative.contains(prefix)) {
                self.err(
                    at!["national", "prefixes", j],
                    format!("{prefix} is also routed to peer {}", peer.id),
                    "route each prefix one way; a [[peer]] for the national SPLP's calls to this gateway has no \
                     endpoints, so that nothing is routed to it",
                );
            }
        }
        self.url(at!["national", "base_url"], &n.base_url, true);
        self.url(at!["national", "token_url"], &n.token_url, true);
        match &n.trust_anchor {
            Some(name) if !cfg.trust_anchors.iter().any(|a| a.name == *name) => {
                let hint = did_you_mean(name, self.anchor_names(), "trust anchor");
                self.err(
                    at!["national", "trust_anchor"],
                    format!("[national] names trust anchor {name:?}, which is not defined"),
                    hint,
                );
            }
            Some(_) => {}
            None if !cfg.trust_anchors.iter().any(|a| cfg.vouches_for_servers(&a.name)) => self.err(
                at!["national"],
                "no [[trust_anchor]] may vouch for the API manager's certificate: each is scoped to other regions' \
                 identifiers",
                "give the national SPLP's CA a [[trust_anchor]] of its own, and name it in trust_anchor",
            ),
            None => {}
        }
        if n.tenant.is_empty() || n.tenant.contains(['/', '?', '#', ' ']) {
            self.err(
                at!["national", "tenant"],
                format!("tenant {:?} is not a tenant domain", n.tenant),
                "write the domain of /t/<tenant>/, e.g. \"okikab.go.id\"",
            );
        }
        match (&n.client_secret_file, &n.client_secret_env) {
            (Some(_), Some(_)) => self.err(
                at!["national", "client_secret_env"],
                "both client_secret_file and client_secret_env are set",
                "keep one",
            ),
            (None, None) => self.err(
                at!["national"],
                "no client secret is configured",
                "set client_secret_file (preferred) or client_secret_env",
            ),
            (Some(f), None) => self.readable(at!["national", "client_secret_file"], f, "client secret file"),
            (None, Some(_)) => {}
        }
        let header_ok = !n.token_header.is_empty()
            && n.token_header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !header_ok {
            self.err(
                at!["national", "token_header"],
                format!("{:?} is not a header name", n.token_header),
                "e.g. \"Authorization\" or \"AuthorizationSPLP\"",
            );
        }
        for (i, api) in n.apis.iter().enumerate() {
            if !n.prefixes.iter().any(|p| api.service.is_within(p)) {
                self.err(
                    at!["national", "api", i, "service"],
                    format!("{} is not under any national prefix", api.service),
                    "add its prefix to [national] prefixes",
                );
            }
            for (key, value) in [("api", &api.api), ("version", &api.version)] {
                if value.is_empty() || value.contains(['/', '?', '#', ' ']) {
                    self.err(
                        at!["national", "api", i, key],
                        format!("{key} {value:?} cannot be a URL segment"),
                        "write it as the API manager shows it, without slashes",
                    );
                }
            }
        }
    }

    fn audit_and_limits(&mut self) {
        let cfg = self.cfg;
        if cfg.audit.checkpoint_every == 0 {
            self.err(
                at!["audit", "checkpoint_every"],
                "checkpoint_every = 0",
                "sign a checkpoint every N records, e.g. 10000",
            );
        }
        if cfg.audit.segment_size.0 < 1 << 20 {
            self.err(
                at!["audit", "segment_size"],
                format!("segment_size {} is below 1 MiB", cfg.audit.segment_size),
                "use e.g. \"64 MiB\"",
            );
        }
        if cfg.audit.commit_delay.0 > std::time::Duration::from_millis(100) {
            self.err(
                at!["audit", "commit_delay"],
                format!(
                    "commit_delay {:?} is above 100ms: every exchange under load would wait that long",
                    cfg.audit.commit_delay.0
                ),
                "use e.g. \"1ms\", or \"0s\" to sync each batch at once",
            );
        }
        if cfg.audit.preallocate.0 > cfg.audit.segment_size.0 {
            self.err(
                at!["audit", "preallocate"],
                format!("preallocate {} is larger than segment_size {}", cfg.audit.preallocate, cfg.audit.segment_size),
                "use e.g. \"1 MiB\"",
            );
        }
        if cfg.audit.checkpoint_interval.0.is_zero() {
            self.err(at!["audit", "checkpoint_interval"], "checkpoint_interval is zero", "use e.g. \"1s\"");
        }
        // A record is at most 1 MiB framed (`audit::segment::MAX_RECORD_LEN`), and holds
        // both bodies and the rest of the exchange.
        let max_stored = crate::audit::segment::MAX_STORED_BODY;
        if cfg.audit.max_stored_body.bytes() > max_stored {
            self.err(
                at!["audit", "max_stored_body"],
                format!("max_stored_body {} is more than an audit record can hold", cfg.audit.max_stored_body),
                format!(
                    "keep at most {} KiB of each body; its SHA-256 covers the whole body anyway",
                    max_stored / 1024
                ),
            );
        }
        self.signing_key();
        let l = &cfg.limits;
        for (key, zero) in [
            ("max_header_bytes", l.max_header_bytes.0 == 0),
            ("max_headers", l.max_headers == 0),
            ("max_uri_length", l.max_uri_length == 0),
            ("max_request_body", l.max_request_body.0 == 0),
            ("header_read_timeout", l.header_read_timeout.0.is_zero()),
            ("handshake_timeout", l.handshake_timeout.0.is_zero()),
            ("idle_timeout", l.idle_timeout.0.is_zero()),
            ("send_timeout", l.send_timeout.0.is_zero()),
            ("max_connections", l.max_connections == 0),
            ("http2_max_concurrent_streams", l.http2_max_concurrent_streams == 0),
        ] {
            if zero {
                self.err(
                    at!["limits", key],
                    format!("{key} is zero, which would refuse every request"),
                    "leave it out for the default",
                );
            }
        }
        if l.connections_per_address == 0 {
            self.err(
                at!["limits", "connections_per_address"],
                "connections_per_address is zero, which would refuse every connection",
                "leave it out for the default (256 per address and listener)",
            );
        }
        if l.refusals_per_address == 0 {
            self.err(
                at!["limits", "refusals_per_address"],
                "refusals_per_address is zero, which would leave every refusal of a caller the gateway cannot \
                 identify unrecorded",
                "leave it out for the default (60 a minute per address)",
            );
        }
        // RFC 9113 §6.5.2: a window is at least the initial 65,535 bytes and at most 2^31-1.
        for (key, size) in
            [("http2_stream_window", l.http2_stream_window), ("http2_connection_window", l.http2_connection_window)]
        {
            if !(65_535..=0x7fff_ffff).contains(&size.0) {
                self.err(
                    at!["limits", key],
                    format!("{key} = {size} is outside what HTTP/2 allows (64 KiB - 1 to 2 GiB - 1)"),
                    "leave it out for the default, or use e.g. \"1 MiB\"",
                );
            }
        }
    }
}

/// Whether two listeners' addresses cannot both be bound: the same port (0 asks the system for
/// a free one, so never) on the same address, or where one is 0.0.0.0 or [::], which takes the
/// port on every address of its family ([::] on IPv4's too, as Linux binds it by default).
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    let covers =
        |wild: std::net::IpAddr, other: std::net::IpAddr| wild.is_unspecified() && (wild.is_ipv6() || other.is_ipv4());
    a.port() == b.port() && a.port() != 0 && (a.ip() == b.ip() || covers(a.ip(), b.ip()) || covers(b.ip(), a.ip()))
}

/// What a listener is told whose address `addr` clashes with `other`'s `other_addr`.
fn taken(addr: SocketAddr, other_addr: SocketAddr, other: &str) -> String {
    if addr == other_addr {
        format!("{addr} is already the address of listener {other:?}")
    } else {
        format!("{addr} cannot be bound beside listener {other:?}'s {other_addr}: both take port {}", addr.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(closest("regoin", ["region", "bsre"]), Some("region"));
        assert_eq!(closest("zzzzzz", ["region", "bsre"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    /// A file the system would not let the checking account read is told as a matter of
    /// permissions (tests run as root, whom `chmod 000` does not stop, so the error is made here).
    #[test]
    fn an_unreadable_file_is_told_to_be_made_readable() {
        let read = |kind| load::LoadError::Read { path: "pki/gw1.key".into(), source: std::io::Error::from(kind) };
        let denied = Validator::load_hint(&read(std::io::ErrorKind::PermissionDenied), "point `key` at it");
        assert!(denied.contains("readable by the account splpd runs as"), "{denied}");
        assert_eq!(Validator::load_hint(&read(std::io::ErrorKind::NotFound), "point `key` at it"), "point `key` at it");
    }

    #[test]
    fn intranet_addresses() {
        for ip in ["127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.5.5", "::1", "fd00::1"] {
            assert!(is_intranet(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["0.0.0.0", "8.8.8.8", "::", "2001:db8::1"] {
            assert!(!is_intranet(ip.parse().unwrap()), "{ip}");
        }
    }
}
