//! `splpd demo`: builds a sandbox whose certificates verify against its CA, whose configuration
//! passes the checker, and whose `demo.json` names real files; it never clears a folder it did
//! not make.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn splpd(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_splpd")).args(args).current_dir(dir).output().unwrap()
}

#[test]
fn demo_builds_a_checked_sandbox_described_by_demo_json() {
    let tmp = tempfile::tempdir().unwrap();
    let out = splpd(&["demo", "--dir", "sandbox"], tmp.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("splpd.toml: ok, 2 services, 3 grants, 1 peer"), "{stdout}");

    let sandbox = tmp.path().join("sandbox");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sandbox.join("demo.json")).unwrap()).unwrap();
    let ca = manifest["ca_file"].as_str().unwrap();
    assert_eq!(manifest["gateway"], "ID/PEMDA/1602/gw1");
    let clients = manifest["clients"].as_array().unwrap();
    let identities: Vec<&str> = clients.iter().map(|c| c["identity"].as_str().unwrap()).collect();
    assert!(identities.contains(&"ID/PEMDA/1602/RSUD") && identities.contains(&"ID/PEMDA/1602/DISHUB"));
    for client in clients {
        let cert = client["cert"].as_str().unwrap();
        assert!(Path::new(client["key"].as_str().unwrap()).is_file());
        let verify = Command::new("openssl").args(["verify", "-CAfile", ca, cert]).output().unwrap();
        assert!(verify.status.success(), "{cert}: {}", String::from_utf8_lossy(&verify.stderr));
    }

    // The configuration it wrote passes on its own too.
    let check = splpd(&["config", "check", manifest["config"].as_str().unwrap()], tmp.path());
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    // Running it again rebuilds the same sandbox with a new CA.
    let before = std::fs::read(ca).unwrap();
    assert!(splpd(&["demo", "--dir", "sandbox"], tmp.path()).status.success());
    assert_ne!(std::fs::read(ca).unwrap(), before);
}

#[test]
fn demo_refuses_a_folder_it_did_not_make() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("important.txt"), "keep me").unwrap();
    let out = splpd(&["demo", "--dir", "."], tmp.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no earlier demo"));
    assert_eq!(std::fs::read_to_string(tmp.path().join("important.txt")).unwrap(), "keep me");
}
