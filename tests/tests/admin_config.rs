//! The admin listener's configuration API end to end: an operator reads the file, checks a new
//! version and sees the diff, puts it in force against the version seen, and undoes it; every
//! change is in the audit log under the operator's name, and a change that cannot be made
//! leaves both the file and the configuration in force as they were.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use http::{Method, StatusCode};
use splpd_gateway::reload::Reloader;
use splpd_proto::v1::ExchangeRecord;
use splpd_tests::{Call, ClientCert, Pki, Proto, Region, RegionBuilder, Upstream};

const NIK: &str = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify";
const RSUD: &str = "ID/PEMDA/1602/RSUD";
const DISHUB: &str = "ID/PEMDA/1602/DISHUB";
const BUDI: &str = "ID/PEMDA/1602/budi";

struct Setup {
    region: Region,
    pki: Pki,
    budi: ClientCert,
    _upstream: Upstream,
}

async fn setup() -> Setup {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let region = RegionBuilder::new(&pki)
        .service(NIK, &upstream.url(), "")
        .grant(&format!("service = \"{NIK}\"\nclient = \"{RSUD}\""))
        .toml(&format!("[admin]\naddress = \"127.0.0.1:0\"\noperators = [\"{BUDI}\"]"))
        .start()
        .await;
    let budi = pki.admin(BUDI);
    Setup { region, pki, budi, _upstream: upstream }
}

/// Runs the reloader as `splpd serve` does: watching the file, and serving the admin API.
fn attach(region: &Region) -> (Arc<Reloader>, tokio::sync::watch::Sender<bool>) {
    let reloader = Arc::new(Reloader::new(region.config_path(), Arc::clone(region.gateway())));
    region.gateway().attach_reloader(&reloader);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(Arc::clone(&reloader).run(None, stopped));
    (reloader, stop)
}

async fn call(s: &Setup, call: Call) -> splpd_tests::Reply {
    s.region.call_admin(Some(&s.budi), call).await.unwrap()
}

async fn rsud_calls_nik(s: &Setup) -> StatusCode {
    let reply = s.region.call(Some(&s.pki.client(RSUD)), Proto::H1, Call::get(format!("/r1/{NIK}/json/a"))).await;
    reply.unwrap().status
}

fn reloads(region: &Region) -> Vec<ExchangeRecord> {
    region.records().into_iter().filter(|r| r.method == "RELOAD").collect()
}

fn etag(reply: &splpd_tests::Reply) -> String {
    reply.header("etag").expect("an ETag").trim_matches('"').to_owned()
}

#[tokio::test]
async fn an_operator_checks_a_change_puts_it_in_force_against_the_version_seen_and_undoes_it() {
    let s = setup().await;
    let path = s.region.config_path().to_owned();
    let original = std::fs::read_to_string(&path).unwrap();

    // A gateway not run from a file it can change says so.
    let reply = call(&s, Call::get("/config")).await;
    assert_eq!(reply.status, StatusCode::NOT_IMPLEMENTED, "{}", reply.text());
    assert_eq!(reply.json()["type"], "Server.ConfigurationUnavailable");
    let (_reloader, stop) = attach(&s.region);

    // The file as it is, its version as the ETag.
    let reply = call(&s, Call::get("/config")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), original);
    assert!(reply.header("content-type").unwrap().starts_with("application/toml"));
    let v1 = etag(&reply);
    assert_eq!(v1, splpd_gateway::config::history::version_of(&original));
    assert_eq!(rsud_calls_nik(&s).await, StatusCode::OK);

    // A new version that gives the service to DISHUB instead of RSUD: checked, with the diff.
    let moved = original.replacen(&format!("client = \"{RSUD}\""), &format!("client = \"{DISHUB}\""), 1);
    assert_ne!(moved, original);
    let reply = call(&s, Call::post("/config/check", moved.clone())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let checked = reply.json();
    assert_eq!((checked["current"].as_str(), checked["changed"].as_bool()), (Some(v1.as_str()), Some(true)));
    let diff = checked["diff"].as_str().unwrap();
    assert!(
        diff.contains(&format!("-client = \"{RSUD}\"")) && diff.contains(&format!("+client = \"{DISHUB}\"")),
        "{diff}"
    );
    // Checking changes nothing.
    assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
    assert_eq!(rsud_calls_nik(&s).await, StatusCode::OK);

    // A change is made only against the version the operator saw.
    let reply = call(&s, Call::new(Method::PUT, "/config").body(moved.clone())).await;
    assert_eq!(reply.status, StatusCode::PRECONDITION_REQUIRED, "{}", reply.text());
    assert!(reply.json()["message"].as_str().unwrap().contains("If-Match"), "{}", reply.text());
    let stale = Call::new(Method::PUT, "/config").body(moved.clone()).header("if-match", "\"0000000000000000\"");
    let reply = call(&s, stale).await;
    assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED, "{}", reply.text());
    assert_eq!(reply.json()["type"], "Client.StaleConfiguration");
    assert_eq!(etag(&reply), v1, "a stale change is told the version to read");

    let put = Call::new(Method::PUT, "/config")
        .body(moved.clone())
        .header("if-match", format!("\"{v1}\""))
        .header("x-road-issue", "CHG-42 DISHUB takes over NIK checks");
    let reply = call(&s, put).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let changed = reply.json();
    let v2 = changed["version"].as_str().unwrap().to_owned();
    assert_eq!((changed["previous"].as_str(), changed["changed"].as_bool()), (Some(v1.as_str()), Some(true)));
    let kept = changed["kept"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(kept).unwrap(), original, "the replaced version is kept");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), moved);
    // In force at once.
    assert_eq!(rsud_calls_nik(&s).await, StatusCode::FORBIDDEN);

    // In the audit log, under the operator's name and certificate, with the reason given.
    let logged = reloads(&s.region);
    assert_eq!(logged.len(), 1, "{logged:#?}");
    assert_eq!((logged[0].client.as_str(), logged[0].issue.as_str()), (BUDI, "CHG-42 DISHUB takes over NIK checks"));
    assert_eq!(logged[0].client_cert_sha256, s.budi.sha256().to_vec());
    assert_eq!(logged[0].client_address, "127.0.0.1");
    assert_eq!(logged[0].request_body_sha256, splpd_tests::sha256(moved.as_bytes()));
    assert_eq!(logged[0].path, path.display().to_string());

    // The dashboard shows operators the version in force and who put it there.
    let page = call(&s, Call::get("/?lang=en")).await.text();
    assert!(page.contains(&format!("<th>Version in force</th><td>{v2}</td>")), "{page}");
    assert!(page.contains(&format!("by {BUDI} (CHG-42 DISHUB takes over NIK checks)")), "{page}");

    // The history lists the replaced version.
    let reply = call(&s, Call::get("/config/history")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let versions = reply.json()["versions"].as_array().unwrap().clone();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0]["version"], v1.as_str());

    // The file watcher sees a file holding the version in force, and does not reload it again.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(reloads(&s.region).len(), 1, "the change was reloaded a second time");
    // While an edit by hand is reloaded as ever, with no operator to name.
    let edited = format!("{moved}\n# edited by hand\n");
    std::fs::write(&path, &edited).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while reloads(&s.region).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the edit was not reloaded");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(reloads(&s.region)[1].client, "");
    let v2 = splpd_gateway::config::history::version_of(&edited);

    // An edit by hand that a reload refuses: undo would put back the version before the one in
    // force, silently dropping its change as well, so it is refused until the file is set right.
    let broken = format!("{edited}\n[gateway\n");
    std::fs::write(&path, &broken).unwrap();
    let v3 = splpd_gateway::config::history::version_of(&broken);
    let undo = Call::new(Method::POST, "/config/undo").header("if-match", format!("\"{v3}\""));
    let reply = call(&s, undo).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text());
    assert_eq!(reply.json()["type"], "Client.ConfigurationNotInForce");
    let message = reply.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains(&format!("holds version {v3}, which is not in force")), "{message}");
    assert!(message.contains(&format!("version {v2} is")), "{message}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), broken, "nothing was changed");
    // The text in force is in no file now; the gateway has it, to put back.
    let in_force = call(&s, Call::get("/config/in-force")).await;
    assert_eq!(in_force.status, StatusCode::OK, "{}", in_force.text());
    assert_eq!((in_force.text(), in_force.header("etag")), (edited.clone(), Some(format!("\"{v2}\"").as_str())));
    std::fs::write(&path, in_force.text()).unwrap();

    // Undo, against the version now in force: the original is back, and in force.
    let undo = Call::new(Method::POST, "/config/undo").header("if-match", format!("\"{v2}\""));
    let reply = call(&s, undo).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["version"], v1.as_str());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
    assert_eq!(rsud_calls_nik(&s).await, StatusCode::OK);
    let logged = reloads(&s.region);
    assert_eq!((logged.len(), logged[2].client.as_str()), (3, BUDI));
    assert_eq!(logged[2].request_body_sha256, splpd_tests::sha256(original.as_bytes()));
    let _ = stop.send(true);
    s.region.stop().await;
}

#[tokio::test]
async fn a_change_that_cannot_be_made_leaves_the_file_and_the_configuration_in_force_alone() {
    let s = setup().await;
    let path = s.region.config_path().to_owned();
    let original = std::fs::read_to_string(&path).unwrap();
    let (_reloader, stop) = attach(&s.region);
    let v1 = splpd_gateway::config::history::version_of(&original);
    let put = |text: String| Call::new(Method::PUT, "/config").body(text).header("if-match", format!("\"{v1}\""));

    // A mistake: reported in the new text's own lines.
    let broken = format!("{original}\n[gateway\n");
    let broken_line = broken.lines().count();
    for reply in [call(&s, Call::post("/config/check", broken.clone())).await, call(&s, put(broken.clone())).await] {
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.text());
        assert_eq!(reply.json()["type"], "Client.InvalidConfiguration");
        let message = reply.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains(&format!("(new version):{broken_line}:")), "{message}");
        assert!(message.contains("Nothing was changed"), "{message}");
    }

    // A listener cannot move while the gateway runs.
    let moved = original.replacen("address = \"127.0.0.1:0\"\noperators", "address = \"127.0.0.1:1\"\noperators", 1);
    assert_ne!(moved, original);
    let reply = call(&s, put(moved)).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.text());
    assert!(reply.json()["message"].as_str().unwrap().contains("listeners are bound at start"), "{}", reply.text());

    // The audit log cannot take the change's record: the file goes back, nothing is in force.
    let denied = original.replacen(&format!("client = \"{RSUD}\""), &format!("client = \"{DISHUB}\""), 1);
    s.region.audit().set_failing(true);
    let reply = call(&s, put(denied.clone())).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.text());
    assert_eq!(reply.json()["type"], "Server.AuditUnavailable");
    s.region.audit().set_failing(false);

    // Nor does the file watcher reload anything after the file went back.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    // Nothing to undo: no change was made.
    let undo = Call::new(Method::POST, "/config/undo").header("if-match", format!("\"{v1}\""));
    let reply = call(&s, undo).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text());
    assert_eq!(reply.json()["type"], "Client.NothingToUndo");

    assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
    assert_eq!(rsud_calls_nik(&s).await, StatusCode::OK);
    assert!(reloads(&s.region).is_empty(), "{:#?}", reloads(&s.region));
    // Wrong methods and bodies are told what is taken.
    let reply = call(&s, Call::new(Method::DELETE, "/config")).await;
    assert_eq!((reply.status, reply.header("allow")), (StatusCode::METHOD_NOT_ALLOWED, Some("GET, PUT")));
    let reply = call(&s, put("a = \u{0}".to_owned()).body(vec![0xff, 0xfe])).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert!(reply.json()["message"].as_str().unwrap().contains("UTF-8"), "{}", reply.text());
    let _ = stop.send(true);
    s.region.stop().await;
}

/// A hand edit that is refused leaves the file holding a version that is not in force: the
/// operator sees it in `GET /config`'s headers, on the dashboard and in `/metrics`, not only in
/// the log; the next good edit clears it from the dashboard.
#[tokio::test]
async fn a_refused_edit_of_the_file_shows_beside_the_version_still_in_force() {
    let s = setup().await;
    let (reloader, stop) = attach(&s.region);
    let path = s.region.config_path().to_owned();
    let good = std::fs::read_to_string(&path).unwrap();
    let before = call(&s, Call::new(Method::GET, "/config")).await;
    let in_force = etag(&before);
    assert_eq!(before.header("x-splpd-version-in-force"), Some(format!("\"{in_force}\"").as_str()));

    std::fs::write(&path, format!("{good}\n[[grant]]\nservice = \"ID/PEMDA/1602/NOWHERE/x\"\nclient = \"{RSUD}\"\n"))
        .unwrap();
    assert!(reloader.reload().await.is_err());
    let after = call(&s, Call::new(Method::GET, "/config")).await;
    assert_ne!(etag(&after), in_force, "the file as it is");
    assert_eq!(after.header("x-splpd-version-in-force"), Some(format!("\"{in_force}\"").as_str()));
    let metrics = call(&s, Call::new(Method::GET, "/metrics")).await.text();
    assert!(metrics.contains("splpd_config_reloads_refused_total 1"), "{metrics}");
    let page = call(&s, Call::new(Method::GET, "/?lang=en")).await.text();
    assert!(page.contains("Reload refused") && page.contains(&etag(&after)), "{page}");
    // /readyz stays ready (the version in force serves), and notes the refused edit.
    let ready = call(&s, Call::new(Method::GET, "/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK);
    let notes = ready.json()["notes"].as_array().cloned().unwrap_or_default();
    assert!(
        notes.len() == 1
            && notes[0].as_str().unwrap().contains(&format!("version {} was refused", etag(&after)))
            && notes[0].as_str().unwrap().contains("NOWHERE"),
        "{}",
        ready.text()
    );

    std::fs::write(&path, &good).unwrap();
    reloader.reload().await.unwrap();
    let page = call(&s, Call::new(Method::GET, "/?lang=en")).await.text();
    assert!(!page.contains("Reload refused"), "{page}");
    let ready = call(&s, Call::new(Method::GET, "/readyz")).await;
    assert_eq!(ready.json()["notes"], serde_json::json!([]), "{}", ready.text());
    let _ = stop.send(true);
}

/// A change made over a refused hand edit replaces the version in force, not the edit: undo
/// puts back the version that was in force, and the refused edit is kept, older, for reference.
#[tokio::test]
async fn a_change_over_a_refused_edit_is_undone_to_the_version_that_was_in_force() {
    let s = setup().await;
    let (reloader, stop) = attach(&s.region);
    let path = s.region.config_path().to_owned();
    let good = std::fs::read_to_string(&path).unwrap();
    let refused = format!("{good}\n[[grant]]\nservice = \"ID/PEMDA/1602/NOWHERE/x\"\nclient = \"{RSUD}\"\n");
    std::fs::write(&path, &refused).unwrap();
    assert!(reloader.reload().await.is_err());
    let v_refused = splpd_gateway::config::history::version_of(&refused);

    let moved = good.replacen(&format!("client = \"{RSUD}\""), &format!("client = \"{DISHUB}\""), 1);
    let put = Call::new(Method::PUT, "/config").body(moved.clone()).header("if-match", format!("\"{v_refused}\""));
    let reply = call(&s, put).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let kept = reply.json()["kept"].as_str().unwrap().to_owned();
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), good, "the version replaced is the one that was in force");
    assert_eq!(rsud_calls_nik(&s).await, StatusCode::FORBIDDEN);
    let history = call(&s, Call::get("/config/history")).await.json();
    let versions: Vec<&str> =
        history["versions"].as_array().unwrap().iter().map(|v| v["version"].as_str().unwrap()).collect();
    let v_good = splpd_gateway::config::history::version_of(&good);
    assert_eq!(versions, [v_refused.as_str(), v_good.as_str()], "the refused edit is kept too, before it");

    let v_moved = splpd_gateway::config::history::version_of(&moved);
    let undo = Call::new(Method::POST, "/config/undo").header("if-match", format!("\"{v_moved}\""));
    let reply = call(&s, undo).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), good);
    assert_eq!(rsud_calls_nik(&s).await, StatusCode::OK);
    let _ = stop.send(true);
    s.region.stop().await;
}

#[tokio::test]
async fn two_operators_changing_the_same_version_at_once_cannot_overwrite_each_other() {
    let s = setup().await;
    let path = s.region.config_path().to_owned();
    let original = std::fs::read_to_string(&path).unwrap();
    let (_reloader, stop) = attach(&s.region);
    let v1 = splpd_gateway::config::history::version_of(&original);
    let texts: Vec<String> = (1..=2).map(|n| format!("{original}\n# change {n}\n")).collect();
    let puts = texts.iter().map(|text| {
        let put = Call::new(Method::PUT, "/config").body(text.clone()).header("if-match", format!("\"{v1}\""));
        call(&s, put)
    });
    let replies = futures_util::future::join_all(puts).await;
    let statuses: Vec<StatusCode> = replies.iter().map(|r| r.status).collect();
    let won = statuses.iter().position(|s| *s == StatusCode::OK).expect("one change is made");
    let lost = 1 - won;
    assert_eq!(statuses[lost], StatusCode::PRECONDITION_FAILED, "{}", replies[lost].text());
    // The loser is told the winner's version, to read and check against.
    assert_eq!(etag(&replies[lost]), splpd_gateway::config::history::version_of(&texts[won]));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), texts[won]);
    assert_eq!(reloads(&s.region).len(), 1);
    let _ = stop.send(true);
    s.region.stop().await;
}

/// Through the admin listener a change may name only the files the configuration in force names,
/// each under its own key: an operator's certificate must not make the gateway read the host's
/// other files, or its key under another key (sent, say, as a token secret).
#[tokio::test]
async fn a_change_through_the_admin_listener_may_not_name_a_new_file() {
    let s = setup().await;
    let (_reloader, stop) = attach(&s.region);
    let path = s.region.config_path().to_owned();
    let text = std::fs::read_to_string(&path).unwrap();
    let version = etag(&call(&s, Call::get("/config")).await);
    let key = s.region.gateway().snapshot().config.gateway.key.clone();
    let bundle = format!("{text}\n[[trust_anchor]]\nname = \"system\"\nca = \"/etc/ssl/certs/ca-certificates.crt\"\n");
    let key_as_crl = text.replacen("crls = [", &format!("crls = [{:?}, ", key.display().to_string()), 1);
    assert_ne!(key_as_crl, text, "the region's anchor lists its CRL");
    for (new, named) in [(bundle, "ca-certificates.crt"), (key_as_crl, "gw1.key")] {
        for (method, target) in [(Method::POST, "/config/check"), (Method::PUT, "/config")] {
            let sent = Call::new(method.clone(), target).header("if-match", format!("\"{version}\"")).body(new.clone());
            let reply = call(&s, sent).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{target}: {}", reply.text());
            let message = reply.json()["message"].as_str().unwrap().to_owned();
            assert!(message.contains(named) && message.contains("splpd config apply --config"), "{message}");
        }
    }
    // Nor may it say where the national client secret goes, or which variable is sent as it.
    let national = format!(
        "{text}\n[national]\nprefixes = [\"ID/KL\"]\nbase_url = \"https://splp.example\"\ntenant = \"t\"\n\
         token_url = \"https://collector.example/token\"\nclient_id = \"x\"\nclient_secret_env = \"HOME\"\n"
    );
    let reply = call(&s, Call::new(Method::POST, "/config/check").body(national)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    assert!(reply.json()["message"].as_str().unwrap().contains("token_url"), "{}", reply.text());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "nothing changed");
    // A change that names the same files passes.
    let same_files = format!("{text}\n# reviewed\n");
    let reply = call(&s, Call::new(Method::POST, "/config/check").body(same_files)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let _ = stop.send(true);
}

/// Which CAs may vouch for the national API manager is where its client secret goes, too: an
/// operator's certificate may not point `[national] trust_anchor` at a neighbour's CA, whose
/// holders could then answer for the API manager's host and be sent the secret.
#[tokio::test]
async fn a_change_through_the_admin_listener_may_not_change_who_vouches_for_the_api_manager() {
    let pki = Pki::new();
    std::fs::write(pki.dir().join("national.secret"), "rahasia\n").unwrap();
    let national = "[national]\nprefixes = [\"ID/KL\"]\nbase_url = \"https://splp.example\"\ntenant = \"t\"\n\
                    token_url = \"https://splp.example/token\"\nclient_id = \"x\"\nclient_secret_file = \"national.secret\"\n";
    let region = RegionBuilder::new(&pki)
        .toml(&format!("[admin]\naddress = \"127.0.0.1:0\"\noperators = [\"{BUDI}\"]"))
        .toml(national)
        .start()
        .await;
    let s = Setup { region, budi: pki.admin(BUDI), pki, _upstream: Upstream::start().await };
    let (_reloader, stop) = attach(&s.region);
    let path = s.region.config_path().to_owned();
    let text = std::fs::read_to_string(&path).unwrap();
    let pinned = text.replacen("client_id = \"x\"\n", "client_id = \"x\"\ntrust_anchor = \"peer-1601\"\n", 1);
    assert_ne!(pinned, text);
    let reply = call(&s, Call::new(Method::POST, "/config/check").body(pinned)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    let message = reply.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("[national] trust_anchor") && message.contains("splpd config apply --config"),
        "{message}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "nothing changed");
    let _ = stop.send(true);
}

/// An operator's connection opened before a new CRL revokes their certificate is refused from
/// then on, as an agency's is on the exchange listeners: a revoked operator must not go on
/// changing the gateway over a connection kept open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_connection_is_refused_once_a_new_crl_revokes_its_certificate() {
    use http_body_util::Empty;
    use hyper_util::rt::TokioIo;
    let s = setup().await;
    let (reloader, stop) = attach(&s.region);
    let (cert, serial) = s.pki.revocable_admin(BUDI);
    let config = splpd_tests::client::tls_config(s.region.roots(), Some(&cert), Proto::H1);
    let tcp = tokio::net::TcpStream::connect(s.region.admin_addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let get =
        || http::Request::get("/maintenance").header("host", "localhost").body(Empty::<bytes::Bytes>::new()).unwrap();
    assert_eq!(sender.send_request(get()).await.unwrap().status(), StatusCode::OK);
    s.pki.revoke(&serial);
    reloader.reload().await.unwrap();
    let refused = sender.send_request(get()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let _ = stop.send(true);
}
