//! What the tests that run `splpd serve` as a real process share: the demo's sandbox made with
//! `splpd demo --no-serve`, and the serving process itself, killed when dropped so that a failing
//! test leaves no gateway behind.

#![allow(dead_code, reason = "each test file uses the part it needs")]

use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The demo's sandbox, made in `<dir>/sandbox`, as its `demo.json` describes it.
#[derive(Debug)]
pub(crate) struct Sandbox {
    /// The configuration file.
    pub(crate) config: PathBuf,
    /// The CA certificate that clients trust the gateway by.
    pub(crate) ca: String,
    /// `https://127.0.0.1:PORT` of the public listener.
    pub(crate) url: String,
    /// Its address.
    pub(crate) addr: SocketAddr,
    /// The audit directory the configuration names.
    pub(crate) audit: PathBuf,
    /// The folder with the sample clients' certificates and keys.
    pub(crate) pki: PathBuf,
}

impl Sandbox {
    /// Runs `splpd demo --dir sandbox --no-serve` in `dir`.
    pub(crate) fn new(dir: &Path) -> Self {
        let demo = Command::new(env!("CARGO_BIN_EXE_splpd"))
            .args(["demo", "--dir", "sandbox", "--no-serve"])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(demo.status.success(), "{}", String::from_utf8_lossy(&demo.stderr));
        let sandbox = dir.join("sandbox");
        let manifest: Value = serde_json::from_slice(&std::fs::read(sandbox.join("demo.json")).unwrap()).unwrap();
        let url = manifest["gateway_url"].as_str().unwrap().to_owned();
        Self {
            config: PathBuf::from(manifest["config"].as_str().unwrap()),
            ca: manifest["ca_file"].as_str().unwrap().to_owned(),
            addr: url.strip_prefix("https://").unwrap().parse().unwrap(),
            url,
            audit: PathBuf::from(manifest["audit_dir"].as_str().unwrap()),
            pki: sandbox.join("pki"),
        }
    }
}

/// A running `splpd serve`, its standard error appended to a log file.
#[derive(Debug)]
pub(crate) struct Serve {
    child: Child,
}

impl Serve {
    /// Starts it and waits until `addr` accepts connections. The audit log is opened (and
    /// recovered) before the listeners bind, so once a connection is accepted the log is ready.
    pub(crate) fn start(config: &Path, log: &Path, addr: SocketAddr) -> Self {
        let stderr = OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_splpd"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut serve = Self { child };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = serve.child.try_wait().unwrap() {
                panic!("splpd serve exited with {status}: {}", std::fs::read_to_string(log).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "splpd serve did not start listening at {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        serve
    }

    /// `kill -9`, and wait for the process to be gone.
    pub(crate) fn crash(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and wait (bounded) for a clean exit.
    pub(crate) fn stop(&mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(15);
        let exit = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "splpd serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(exit.success(), "splpd serve exited with {exit}");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
