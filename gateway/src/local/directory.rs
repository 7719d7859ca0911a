//! The directory of one configuration, compiled with its runtime snapshot: which members and
//! subsystems are known here, which services each provider offers with which endpoints, and the
//! OpenAPI documents, read once so that answering never touches the disk. The REST metadata
//! services and the gRPC `splpd.v1.Directory` both answer from it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Serialize;
use splpd_certs::id::{ClientId, IdKind, IdPrefix, Identity, MemberId, ServerId, ServiceId};
use time::OffsetDateTime;

use crate::authorize::{AccessPolicy, Endpoints};
use crate::config::units::EndpointPattern;
use crate::config::{Config, Protocol};
use crate::error::GatewayError;

/// HTTP methods an OpenAPI path item may describe, in the order they are listed.
const OPENAPI_METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// A member or subsystem known to the gateway.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClientEntry {
    /// The member.
    pub member: MemberId,
    /// The subsystem, for a subsystem.
    pub subsystem: Option<ClientId>,
    /// The member's name, when the configuration gives one (the gateway's own member's is
    /// `[gateway] name`).
    pub name: Option<String>,
}

/// One operation of a service: a method (`*` for any) and a path under the service, with `*`
/// standing for one segment and `**` for the rest, as X-Road writes endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// `GET`, `POST`…, or `*`.
    pub method: String,
    /// `/nik/*`, or `/kesehatan.v1.Rujukan/*` for a gRPC service.
    pub path: String,
}

impl Endpoint {
    /// The endpoint a grant's pattern opens. gRPC methods are always `POST`.
    fn of_pattern(pattern: &EndpointPattern, protocol: Protocol) -> Self {
        let text = pattern.to_string();
        let path = match pattern.method() {
            Some(m) => text.strip_prefix(m).map_or(text.as_str(), str::trim_start).to_owned(),
            None => text,
        };
        let method = match (pattern.method(), protocol) {
            (_, Protocol::Grpc) => "POST",
            (Some(m), Protocol::Rest) => m,
            (None, Protocol::Rest) => "*",
        };
        Self { method: method.to_owned(), path }
    }
}

/// A service's OpenAPI document, as read when the configuration was loaded.
#[derive(Debug, Clone)]
pub struct Document {
    /// Its text.
    pub text: Bytes,
    /// `application/json` or `application/yaml`.
    pub media_type: &'static str,
}

/// A service of a provider.
#[derive(Debug, Clone)]
pub struct ServiceEntry {
    /// The service.
    pub id: ServiceId,
    /// REST or gRPC.
    pub protocol: Protocol,
    /// Its operations: from its OpenAPI document (JSON), or for a gRPC service one wildcard per
    /// gRPC service name it serves. Empty when they are not known: the service is offered as a
    /// whole.
    pub endpoints: Vec<Endpoint>,
    /// Its OpenAPI document, when it has one.
    pub document: Option<Document>,
    /// In `allowedMethods`, the terms of the caller's grants on it; default otherwise.
    pub terms: crate::authorize::GrantTerms,
}

impl ServiceEntry {
    /// X-Road's `service_type`: `OPENAPI` for a REST service described by an OpenAPI document,
    /// `REST` for one without, and `GRPC` (splpd's own addition) for a gRPC service.
    pub fn service_type(&self) -> &'static str {
        match (self.protocol, &self.document) {
            (Protocol::Grpc, _) => "GRPC",
            (Protocol::Rest, Some(_)) => "OPENAPI",
            (Protocol::Rest, None) => "REST",
        }
    }
}

/// Why a configuration's directory could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// An OpenAPI document could not be read.
    #[error("service {service}: cannot read its OpenAPI document {}: {source}", .path.display())]
    Read {
        /// The service.
        service: ServiceId,
        /// The document.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not an OpenAPI document.
    #[error("service {service}: {} is not an OpenAPI document: {why}", .path.display())]
    NotOpenApi {
        /// The service.
        service: ServiceId,
        /// The file.
        path: PathBuf,
        /// What it is instead.
        why: Box<str>,
    },
    /// A JSON OpenAPI document is not JSON.
    #[error(
        "service {service}: its OpenAPI document {} is not valid JSON ({source}); fix it, or give a YAML \
         document a .yaml name", .path.display()
    )]
    Json {
        /// The service.
        service: ServiceId,
        /// The document.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// The directory of one configuration.
#[derive(Debug)]
pub struct Directory {
    /// This gateway, named in messages: over a peer link they reach another region's agency.
    gateway: ServerId,
    served: Vec<IdPrefix>,
    /// Who serves other regions' identifiers, to say where a provider of one is listed.
    elsewhere: Vec<(IdPrefix, crate::peer::Elsewhere)>,
    clients: Vec<ClientEntry>,
    providers: BTreeMap<ClientId, Vec<ServiceEntry>>,
}

impl Directory {
    /// Compiles the directory of a validated configuration, reading its OpenAPI documents.
    pub fn build(config: &Config) -> Result<Self, DirectoryError> {
        let mut providers: BTreeMap<ClientId, Vec<ServiceEntry>> = BTreeMap::new();
        for s in &config.services {
            let document = match &s.openapi {
                Some(path) => Some(read_document(&s.id, path)?),
                None => None,
            };
            let endpoints = match (s.protocol, &document) {
                (Protocol::Grpc, _) => s
                    .grpc_services
                    .iter()
                    .map(|name| Endpoint { method: "POST".to_owned(), path: format!("/{name}/*") })
                    .collect(),
                (Protocol::Rest, Some(doc)) if doc.media_type == JSON => {
                    openapi_endpoints(&s.id, s.openapi.as_deref(), doc)?
                }
                (Protocol::Rest, _) => Vec::new(),
            };
            let entry =
                ServiceEntry { id: s.id.clone(), protocol: s.protocol, endpoints, document, terms: Default::default() };
            providers.entry(s.id.subsystem().clone()).or_default().push(entry);
        }
        for services in providers.values_mut() {
            services.sort_by(|a, b| a.id.code().cmp(b.id.code()));
        }
        Ok(Self {
            gateway: config.gateway.id.clone(),
            served: config.gateway.served_prefixes(),
            elsewhere: crate::peer::elsewhere(config),
            clients: clients(config),
            providers,
        })
    }

    /// The members and subsystems known here, sorted, each member before its subsystems;
    /// only those of `instance` when given.
    pub fn clients<'a>(&'a self, instance: Option<&'a str>) -> impl Iterator<Item = &'a ClientEntry> + 'a {
        self.clients.iter().filter(move |c| instance.is_none_or(|i| c.member.instance() == i))
    }

    /// The services `provider` offers, sorted by service code; refused when the provider is not
    /// served by this gateway. (Over REST, a peer region's provider is asked of the peer before
    /// it comes to this: `peer::route_directory`.)
    pub fn services(&self, provider: &ClientId) -> Result<&[ServiceEntry], GatewayError> {
        if !self.served.iter().any(|p| provider.is_within(p)) {
            let served: Vec<String> = self.served.iter().map(ToString::to_string).collect();
            use crate::peer::Elsewhere;
            let ask = match self.elsewhere.iter().find(|(p, _)| provider.is_within(p)).map(|(_, by)| by) {
                Some(Elsewhere::Peer(peer)) => format!(
                    "peer gateway {peer} serves it, and this gateway asks it for you over REST: \
                     GET /r1/{0}/listMethods (or /r1/{0}/allowedMethods, /r1/{0}/getOpenAPI?serviceCode=)",
                    provider.to_url_path()
                ),
                Some(Elsewhere::National) => "it is reached through the national SPLP, which has no X-Road metadata \
                                              services: ask the gateway's operator which national APIs are mapped \
                                              ([[national.api]])"
                    .to_owned(),
                None => crate::peer::UNCONNECTED.to_owned(),
            };
            return Err(GatewayError::UnknownService(format!(
                "{provider} is not served by gateway {}, which serves {}; {ask}",
                self.gateway,
                served.join(", ")
            )));
        }
        match self.providers.get(provider) {
            Some(services) => Ok(services),
            // A subsystem the configuration names offers nothing; one it never names is most
            // likely a mistyped identifier, which an empty list would hide.
            None if self.clients.iter().any(|c| c.subsystem.as_ref() == Some(provider)) => Ok(&[]),
            None => Err(GatewayError::UnknownService(format!(
                "no subsystem {provider} is known to gateway {}, which serves its region (identifiers are \
                 case-sensitive); its listClients (GET /listClients, or splpd.v1.Directory/ListClients) lists the \
                 members and subsystems it knows",
                self.gateway
            ))),
        }
    }

    /// The services of `provider` that `client` holds a grant in force on at `now`, each with the
    /// endpoints its grants open: the service's own list when a grant opens every endpoint, else
    /// the grants' patterns, and the terms of those grants (the purpose to declare, the end).
    /// Purposes are not checked: the list shows what is open to a caller that declares the
    /// purpose its grant asks for.
    pub fn allowed(
        &self,
        policy: &AccessPolicy,
        client: &ClientId,
        provider: &ClientId,
        now: OffsetDateTime,
    ) -> Result<Vec<ServiceEntry>, GatewayError> {
        let mut allowed = Vec::new();
        for s in self.services(provider)? {
            let terms = || policy.terms(client, &s.id, now);
            match policy.allowed_endpoints(client, &s.id, now) {
                None => {}
                Some(Endpoints::All) => allowed.push(ServiceEntry { terms: terms(), ..s.clone() }),
                Some(Endpoints::Only(patterns)) => allowed.push(ServiceEntry {
                    endpoints: patterns.into_iter().map(|p| Endpoint::of_pattern(p, s.protocol)).collect(),
                    terms: terms(),
                    ..s.clone()
                }),
            }
        }
        Ok(allowed)
    }

    /// The OpenAPI document of `service`, or why there is none.
    pub fn document(&self, service: &ServiceId) -> Result<&Document, GatewayError> {
        let entry = self.services(service.subsystem())?.iter().find(|s| s.id == *service).ok_or_else(|| {
            GatewayError::UnknownService(format!(
                "no service {service} is known to gateway {}; GET /r1/{}/listMethods lists the services of {}",
                self.gateway,
                service.subsystem().to_url_path(),
                service.subsystem()
            ))
        })?;
        match (&entry.document, entry.protocol) {
            (Some(doc), _) => Ok(doc),
            (None, Protocol::Grpc) => Err(GatewayError::UnknownService(format!(
                "{service} is a gRPC service and has no OpenAPI document; describe it with its .proto files, or \
                 ask its own server reflection through the gateway (metadata x-road-service: {service}), where \
                 your grant opens its reflection service too"
            ))),
            (None, Protocol::Rest) => Err(GatewayError::UnknownService(format!(
                "{service} has no OpenAPI document registered at gateway {}, which serves it; ask its operator to \
                 set `openapi` for it",
                self.gateway
            ))),
        }
    }
}

const JSON: &str = "application/json";
/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";
const YAML: &str = "application/yaml";

fn read_document(service: &ServiceId, path: &Path) -> Result<Document, DirectoryError> {
    let mut text = std::fs::read(path).map_err(|source| DirectoryError::Read {
        service: service.clone(),
        path: path.to_owned(),
        source,
    })?;
    // Some editors start a UTF-8 file with a byte order mark, which JSON parsers refuse: it is
    // neither parsed nor served.
    if text.starts_with(BOM) {
        text.drain(..BOM.len());
    }
    let media_type = media_type(path, &text);
    if let Err(why) = check_openapi(&text, media_type) {
        return Err(DirectoryError::NotOpenApi { service: service.clone(), path: path.to_owned(), why: why.into() });
    }
    Ok(Document { text: text.into(), media_type })
}

/// JSON or YAML, by the file's name, else by its first character.
fn media_type(path: &Path, text: &[u8]) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("json") => JSON,
        Some("yaml" | "yml") => YAML,
        // No telling extension: a JSON document starts with `{`.
        _ if text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') => JSON,
        _ => YAML,
    }
}

/// Whether the file `openapi` names is an OpenAPI document (or Swagger 2's): a JSON object, or
/// YAML, with a top-level `openapi` (`swagger`) field. The document is served to every caller,
/// so a wrong path (the gateway's key, a system file) must not start, not go out.
fn check_openapi(text: &[u8], media_type: &str) -> Result<(), String> {
    const KEYS: [&str; 2] = ["openapi", "swagger"];
    let text = text.strip_prefix(BOM).unwrap_or(text);
    // An example certificate in a document is fine; a private key never is.
    if text.windows(16).any(|w| w == b"PRIVATE KEY-----") {
        return Err("it holds a private key (PEM), which must never be served".into());
    }
    let json = serde_json::from_slice::<serde_json::Value>(text);
    let value = match (json, media_type) {
        (Ok(value), _) => value,
        (Err(e), JSON) => return Err(format!("it is not valid JSON ({e})")),
        // Not JSON, so YAML (of which JSON is a part).
        (Err(_), _) => return check_yaml_openapi(text, &KEYS),
    };
    let object = value.as_object().ok_or("its JSON is not an object")?;
    match KEYS.iter().any(|k| object.get(*k).is_some_and(serde_json::Value::is_string)) {
        true => Ok(()),
        false => Err("its JSON has no top-level \"openapi\" (or \"swagger\") version field".into()),
    }
}

/// The YAML half of [`check_openapi`]. No YAML parser here: a top-level mapping key starts its
/// line, quoted or not (or follows the `{` of a one-line flow mapping).
fn check_yaml_openapi(text: &[u8], keys: &[&str]) -> Result<(), String> {
    let text = std::str::from_utf8(text).map_err(|_| "it is neither UTF-8 JSON nor YAML")?;
    let top_level = text.lines().any(|line| {
        let line = line.strip_prefix('{').map_or(line, str::trim_start);
        let Some((key, _)) = line.split_once(':') else { return false };
        let key = key.trim_end();
        keys.iter().any(|k| [*k, &format!("\"{k}\""), &format!("'{k}'")].contains(&key))
    });
    match top_level {
        true => Ok(()),
        false => Err("it has no top-level `openapi:` (or `swagger:`) version field; an OpenAPI document in YAML \
                      starts with one"
            .into()),
    }
}

/// Checks that `path` holds an OpenAPI document, for `config check`: why not, if not.
pub fn check_openapi_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read OpenAPI document {}: {e}", path.display()))?;
    check_openapi(&text, media_type(path, &text))
        .map_err(|why| format!("{} is not an OpenAPI document: {why}", path.display()))
}

/// The endpoints a JSON OpenAPI document describes: every method of every path, with templated
/// segments (`{nik}`) written `*`, as X-Road lists them.
fn openapi_endpoints(
    service: &ServiceId,
    path: Option<&Path>,
    doc: &Document,
) -> Result<Vec<Endpoint>, DirectoryError> {
    let value: serde_json::Value = serde_json::from_slice(&doc.text).map_err(|source| DirectoryError::Json {
        service: service.clone(),
        path: path.map(Path::to_owned).unwrap_or_default(),
        source,
    })?;
    let mut endpoints = Vec::new();
    let Some(paths) = value.get("paths").and_then(serde_json::Value::as_object) else {
        return Ok(endpoints);
    };
    for (template, item) in paths {
        let path: Vec<&str> = template.split('/').map(|seg| if seg.contains('{') { "*" } else { seg }).collect();
        for method in OPENAPI_METHODS {
            if item.get(method).is_some() {
                endpoints.push(Endpoint { method: method.to_ascii_uppercase(), path: path.join("/") });
            }
        }
    }
    Ok(endpoints)
}

/// Every member and subsystem the configuration names: the gateway's own member and the
/// members it serves, the peers' members, the providers of services, and every client named by a
/// grant, a group, a listener opt-in or an identity mapping.
fn clients(config: &Config) -> Vec<ClientEntry> {
    let mut members: BTreeSet<MemberId> = BTreeSet::new();
    let mut subsystems: BTreeSet<ClientId> = BTreeSet::new();
    members.insert(config.gateway.id.member().clone());
    let member_of = |p: &IdPrefix| p.to_string().parse::<MemberId>().ok();
    members.extend(config.gateway.served_prefixes().iter().filter_map(member_of));
    members.extend(config.peers.iter().flat_map(|p| &p.authoritative).filter_map(member_of));
    subsystems.extend(config.services.iter().map(|s| s.id.subsystem().clone()));
    subsystems.extend(config.grants.iter().filter_map(|g| g.client.clone()));
    subsystems.extend(config.groups.iter().flat_map(|g| g.members.iter().cloned()));
    subsystems.extend(config.listeners.iter().flat_map(|l| l.clients.iter().map(|o| o.client.clone())));
    subsystems.extend(config.identities.iter().filter(|m| m.kind == IdKind::Subsystem).filter_map(|m| {
        match Identity::parse(IdKind::Subsystem, &m.id) {
            Ok(Identity::Subsystem(id)) => Some(id),
            _ => None,
        }
    }));
    members.extend(subsystems.iter().map(|s| s.member().clone()));
    let name = |m: &MemberId| (m == config.gateway.id.member()).then(|| config.gateway.name.clone()).flatten();
    let mut entries: Vec<ClientEntry> =
        members.iter().map(|m| ClientEntry { member: m.clone(), subsystem: None, name: name(m) }).collect();
    entries.extend(subsystems.into_iter().map(|s| ClientEntry {
        member: s.member().clone(),
        name: name(s.member()),
        subsystem: Some(s),
    }));
    // Each member before its subsystems (`None` sorts first).
    entries.sort_by(|a, b| (&a.member, &a.subsystem).cmp(&(&b.member, &b.subsystem)));
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("nik.json"),
            r#"{"openapi":"3.0.3","paths":{"/nik/{nik}":{"get":{},"parameters":[]},"/nik/{nik}/foto":{"get":{},"put":{}}}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("pajak.yaml"), "openapi: 3.0.3\npaths: {}\n").unwrap();
        let text = format!(
            r#"
[gateway]
id = "ID/PEMDA/1602/gw1"
name = "SPLPD Kabupaten Ogan Komering Ilir"
cert = "gw1.crt"
key = "gw1.key"

[[peer]]
id = "ID/PEMDA/1601/gw1"
endpoints = ["https://127.0.0.1:18443"]
authoritative = ["ID/PEMDA/1601"]
trust_anchor = "peer"

[[service]]
id = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify"
upstreams = ["http://127.0.0.1:1"]
openapi = "{dir}/nik.json"

[[service]]
id = "ID/PEMDA/1602/DISDUKCAPIL/akta"
upstreams = ["http://127.0.0.1:1"]

[[service]]
id = "ID/PEMDA/1602/BAPENDA/pajak"
upstreams = ["http://127.0.0.1:1"]
openapi = "{dir}/pajak.yaml"

[[service]]
id = "ID/PEMDA/1602/DINKES/rujukan"
protocol = "grpc"
upstreams = ["http://127.0.0.1:2"]
grpc_services = ["kesehatan.v1.Rujukan"]

{extra}
"#,
            dir = dir.path().display()
        );
        let config: Config = toml::from_str(&text).unwrap();
        (dir, config)
    }

    fn id<T: std::str::FromStr>(s: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        s.parse().unwrap()
    }

    #[test]
    fn providers_list_their_services_with_endpoints_from_the_openapi_document() {
        let (_dir, config) = config("");
        let d = Directory::build(&config).unwrap();
        let services = d.services(&id("ID/PEMDA/1602/DISDUKCAPIL")).unwrap();
        let codes: Vec<&str> = services.iter().map(|s| s.id.code()).collect();
        assert_eq!(codes, ["akta", "nik-verify"]);
        let nik = &services[1];
        assert_eq!(nik.service_type(), "OPENAPI");
        let eps: Vec<(&str, &str)> = nik.endpoints.iter().map(|e| (e.method.as_str(), e.path.as_str())).collect();
        assert_eq!(eps, [("GET", "/nik/*"), ("GET", "/nik/*/foto"), ("PUT", "/nik/*/foto")]);
        assert_eq!(services[0].service_type(), "REST");
        assert!(services[0].endpoints.is_empty());

        let grpc = &d.services(&id("ID/PEMDA/1602/DINKES")).unwrap()[0];
        assert_eq!(grpc.service_type(), "GRPC");
        assert_eq!(grpc.endpoints, [Endpoint { method: "POST".into(), path: "/kesehatan.v1.Rujukan/*".into() }]);

        let yaml = d.document(&id("ID/PEMDA/1602/BAPENDA/pajak")).unwrap();
        assert_eq!(yaml.media_type, "application/yaml");
        assert!(d.services(&id("ID/PEMDA/1602/BAPPEDA")).is_err(), "named nowhere in the configuration");
        // Another region's provider: where to ask, by whether a peer serves it.
        let foreign = d.services(&id("ID/PEMDA/1601/DINKES")).unwrap_err().to_string();
        assert!(foreign.contains("not served by gateway ID/PEMDA/1602/gw1"), "{foreign}");
        assert!(foreign.contains("peer gateway ID/PEMDA/1601/gw1 serves it"), "{foreign}");
        assert!(foreign.contains("GET /r1/ID/PEMDA/1601/DINKES/listMethods"), "{foreign}");
        let unconnected = d.services(&id("ID/PEMDA/1603/DINKES")).unwrap_err().to_string();
        assert!(unconnected.contains("whether that region is connected"), "{unconnected}");
    }

    #[test]
    fn documents_are_found_or_the_reason_is_given() {
        let (_dir, config) = config("");
        let d = Directory::build(&config).unwrap();
        let doc = d.document(&id("ID/PEMDA/1602/DISDUKCAPIL/nik-verify")).unwrap();
        assert_eq!(doc.media_type, "application/json");
        assert!(doc.text.starts_with(b"{\"openapi\""));
        let why = |s: &str| d.document(&id(s)).unwrap_err().to_string();
        assert!(why("ID/PEMDA/1602/DISDUKCAPIL/nope").contains("no service ID/PEMDA/1602/DISDUKCAPIL/nope"));
        assert!(why("ID/PEMDA/1602/DISDUKCAPIL/akta").contains("no OpenAPI document"));
        assert!(why("ID/PEMDA/1602/DINKES/rujukan").contains("gRPC service"));
    }

    #[test]
    fn a_provider_never_named_is_unknown_and_a_named_one_without_services_has_none() {
        let (_dir, config) = config(
            r#"
[[grant]]
service = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify"
client = "ID/PEMDA/1602/RSUD"
"#,
        );
        let d = Directory::build(&config).unwrap();
        let rsud: ClientId = "ID/PEMDA/1602/RSUD".parse().unwrap();
        assert!(d.clients(None).any(|c| c.subsystem.as_ref() == Some(&rsud)), "named by the configuration");
        assert!(d.services(&rsud).unwrap().is_empty());
        let typo: ClientId = "ID/PEMDA/1602/DISDUKCAPlL".parse().unwrap();
        let err = d.services(&typo).unwrap_err().to_string();
        assert!(
            err.contains("no subsystem ID/PEMDA/1602/DISDUKCAPlL is known") && err.contains("/listClients"),
            "{err}"
        );
    }

    #[test]
    fn a_json_document_with_a_byte_order_mark_is_served_without_it() {
        let (dir, config) = config("");
        let doc = r#"{"openapi":"3.0.3","paths":{"/nik/{nik}":{"get":{}}}}"#;
        std::fs::write(dir.path().join("nik.json"), [BOM, doc.as_bytes()].concat()).unwrap();
        let d = Directory::build(&config).unwrap();
        let served = d.document(&"ID/PEMDA/1602/DISDUKCAPIL/nik-verify".parse().unwrap()).unwrap();
        assert_eq!(served.text, doc.as_bytes());
    }

    #[test]
    fn a_document_that_cannot_be_read_or_parsed_is_refused_with_its_path() {
        let (dir, mut config) = config("");
        std::fs::write(dir.path().join("nik.json"), "{ not json").unwrap();
        let err = Directory::build(&config).unwrap_err().to_string();
        assert!(err.contains("nik.json is not an OpenAPI document: it is not valid JSON"), "{err}");
        config.services[0].openapi = Some(dir.path().join("missing.json"));
        let err = Directory::build(&config).unwrap_err().to_string();
        assert!(err.contains("cannot read its OpenAPI document") && err.contains("missing.json"), "{err}");
    }

    #[test]
    fn clients_are_every_member_and_subsystem_the_configuration_names() {
        let (_dir, config) = config(
            r#"
[[group]]
name = "kesehatan"
members = ["ID/PEMDA/1602/RSUD"]

[[grant]]
service = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify"
client = "ID/PEMDA/1601/DINKES"
"#,
        );
        let d = Directory::build(&config).unwrap();
        let shown: Vec<String> = d
            .clients(None)
            .map(|c| c.subsystem.as_ref().map_or_else(|| c.member.to_string(), ToString::to_string))
            .collect();
        assert_eq!(
            shown,
            [
                "ID/PEMDA/1601",
                "ID/PEMDA/1601/DINKES",
                "ID/PEMDA/1602",
                "ID/PEMDA/1602/BAPENDA",
                "ID/PEMDA/1602/DINKES",
                "ID/PEMDA/1602/DISDUKCAPIL",
                "ID/PEMDA/1602/RSUD",
            ]
        );
        let own = d.clients(None).find(|c| c.member.code() == "1602").unwrap();
        assert_eq!(own.name.as_deref(), Some("SPLPD Kabupaten Ogan Komering Ilir"));
        assert!(d.clients(None).filter(|c| c.member.code() == "1601").all(|c| c.name.is_none()));
        assert_eq!(d.clients(Some("EE")).count(), 0);
    }

    #[test]
    fn allowed_methods_follow_the_callers_grants() {
        let (_dir, config) = config(
            r#"
[[grant]]
service = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify"
client = "ID/PEMDA/1602/RSUD"
endpoints = ["GET /nik/*"]
purposes = ["pelayanan-kesehatan"]

[[grant]]
service = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify"
client = "ID/PEMDA/1602/SIMPEG"

[[grant]]
service = "ID/PEMDA/1602/DISDUKCAPIL/akta"
client = "ID/PEMDA/1602/SIMPEG"
valid_until = 2020-01-01T00:00:00Z

[[grant]]
service = "ID/PEMDA/1602/DINKES/rujukan"
client = "ID/PEMDA/1602/RSUD"
endpoints = ["/kesehatan.v1.Rujukan/Kirim"]
valid_until = 2099-01-01T00:00:00Z
"#,
        );
        let d = Directory::build(&config).unwrap();
        let policy = AccessPolicy::new(&config);
        let now = OffsetDateTime::now_utc();
        let disdukcapil = id("ID/PEMDA/1602/DISDUKCAPIL");
        let show = |client: &str, provider: &ClientId| -> Vec<(String, Vec<String>)> {
            d.allowed(&policy, &id(client), provider, now)
                .unwrap()
                .into_iter()
                .map(|s| {
                    (s.id.code().to_owned(), s.endpoints.iter().map(|e| format!("{} {}", e.method, e.path)).collect())
                })
                .collect()
        };
        assert_eq!(
            show("ID/PEMDA/1602/RSUD", &disdukcapil),
            [("nik-verify".to_owned(), vec!["GET /nik/*".to_owned()])]
        );
        // A grant on every endpoint shows the service's own list; a lapsed grant shows nothing.
        assert_eq!(
            show("ID/PEMDA/1602/SIMPEG", &disdukcapil),
            [(
                "nik-verify".to_owned(),
                vec!["GET /nik/*".to_owned(), "GET /nik/*/foto".to_owned(), "PUT /nik/*/foto".to_owned()]
            )]
        );
        assert!(show("ID/PEMDA/1602/DISHUB", &disdukcapil).is_empty());
        assert_eq!(
            show("ID/PEMDA/1602/RSUD", &id("ID/PEMDA/1602/DINKES")),
            [("rujukan".to_owned(), vec!["POST /kesehatan.v1.Rujukan/Kirim".to_owned()])]
        );

        // The terms come along: the purpose to declare, and when the grants end.
        let terms = |client: &str, provider: &str| {
            d.allowed(&policy, &id(client), &id(provider), now)
                .unwrap()
                .into_iter()
                .map(|s| s.terms)
                .collect::<Vec<_>>()
        };
        let rsud_nik = &terms("ID/PEMDA/1602/RSUD", "ID/PEMDA/1602/DISDUKCAPIL")[0];
        assert_eq!(
            (rsud_nik.purposes.as_slice(), rsud_nik.valid_until),
            (&["pelayanan-kesehatan".to_owned()][..], None)
        );
        let simpeg_nik = &terms("ID/PEMDA/1602/SIMPEG", "ID/PEMDA/1602/DISDUKCAPIL")[0];
        assert!(simpeg_nik.purposes.is_empty(), "no purpose to declare: {simpeg_nik:?}");
        let rujukan = &terms("ID/PEMDA/1602/RSUD", "ID/PEMDA/1602/DINKES")[0];
        assert_eq!(rujukan.valid_until, Some(time::macros::datetime!(2099-01-01 00:00 UTC)));
        // listMethods says nothing of anyone's grants.
        assert!(d.services(&disdukcapil).unwrap().iter().all(|s| s.terms == crate::authorize::GrantTerms::default()));
    }

    #[test]
    fn only_an_openapi_document_is_taken_for_one() {
        let ok = |text: &str, media| check_openapi(text.as_bytes(), media);
        assert_eq!(ok(r#"{"openapi": "3.0.3", "paths": {}}"#, JSON), Ok(()));
        assert_eq!(ok(r#"{"swagger": "2.0"}"#, JSON), Ok(()));
        assert_eq!(ok("# comment\r\n---\r\nopenapi: 3.1.0\r\ninfo: {}\r\n", YAML), Ok(()));
        assert_eq!(ok("\"openapi\": \"3.0.0\"\n", YAML), Ok(()));
        assert_eq!(ok("\u{feff}openapi: 3.1.0\n", YAML), Ok(()), "a byte order mark first");
        assert_eq!(ok("{\n  \"openapi\": \"3.0.3\"\n}\n", YAML), Ok(()), "JSON saved as .yaml");
        assert_eq!(ok("{openapi: 3.0.3, paths: {}}\n", YAML), Ok(()), "a one-line flow mapping");
        let with_example = "{\"openapi\": \"3.0.3\", \"x\": \"-----BEGIN CERTIFICATE-----\"}";
        assert_eq!(ok(with_example, JSON), Ok(()), "an example certificate in a document");
        let why = |text: &str, media| check_openapi(text.as_bytes(), media).unwrap_err();
        assert!(why("-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n", YAML).contains("private key"));
        let key_inside = "openapi: 3.0.0\nx: |\n  -----BEGIN EC PRIVATE KEY-----\n";
        assert!(why(key_inside, YAML).contains("private key"));
        assert!(why("{\"paths\": {}}", JSON).contains("no top-level"));
        assert!(why("[1, 2]", JSON).contains("not an object"));
        assert!(why("{not json", JSON).contains("not valid JSON"));
        assert!(why("root:x:0:0:root:/root:/bin/bash\n", YAML).contains("no top-level"));
        assert!(why("-----BEGIN CERTIFICATE-----\nMIIB\n", YAML).contains("no top-level"));
        // Nested, the key does not make a document.
        assert!(why("info:\n  openapi: 3.0.0\n", YAML).contains("no top-level"));
    }
}
