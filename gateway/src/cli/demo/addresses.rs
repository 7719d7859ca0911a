//! Moves the sample configuration onto loopback ports chosen for this run, so that the sandbox
//! never collides with a real deployment on the same machine (or with another demo).
//!
//! The demo writes `examples/region-1602.toml` with only its addresses changed: each listener and
//! upstream line is replaced whole, marked with a `# demo:` comment naming what the example says.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use anyhow::{Context, bail};

/// Where everything of the sandbox listens.
#[derive(Debug, Clone, Copy)]
pub(super) struct SandboxAddrs {
    /// The gateway's mTLS listener (`public`).
    pub(super) public: SocketAddr,
    /// The gateway's plain-HTTP listener for the opted-in legacy application (`intranet`).
    pub(super) intranet: SocketAddr,
    /// The admin listener.
    pub(super) admin: SocketAddr,
    /// The in-process NIK check of Disdukcapil.
    pub(super) nik: SocketAddr,
    /// The in-process referral service of Dinkes.
    pub(super) rujukan: SocketAddr,
    /// The neighbouring region's gateway, the sample region's `[[peer]]`.
    pub(super) peer: SocketAddr,
}

/// Binds `N` loopback sockets at once, so the ports differ, and hands back their ports once the
/// sockets are closed again. Another program could take one in between; on a developer's machine
/// that is rare enough, and the gateway then says which address it could not bind.
pub(super) fn free_loopback_addrs<const N: usize>() -> anyhow::Result<[SocketAddr; N]> {
    let mut sockets = Vec::with_capacity(N);
    for _ in 0..N {
        sockets.push(TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free loopback port")?);
    }
    let mut addrs = [SocketAddr::from((Ipv4Addr::LOCALHOST, 0)); N];
    for (addr, socket) in addrs.iter_mut().zip(&sockets) {
        *addr = socket.local_addr()?;
    }
    Ok(addrs)
}

/// The placeholder national client secret the sandbox's configuration names.
pub(super) const NATIONAL_SECRET: &str = "national.secret";

const HEADER: &str = "\
# Written by `splpd demo`: examples/region-1602.toml, with its listeners, upstreams and peer
# moved to loopback ports chosen for this run (the lines marked `# demo:`), so that the sandbox
# never collides with a real deployment, and a placeholder national client secret. The demo serves
# it, with in-process sample services and the neighbouring region's gateway beside it.

";

/// The sample configuration with the sandbox's addresses. Fails if the example no longer holds
/// one of the lines it rewrites exactly once, so that a change to the example cannot silently
/// leave the sandbox on a real deployment's port.
pub(super) fn sandbox_config(example: &str, a: &SandboxAddrs) -> anyhow::Result<String> {
    let rewrites = [
        ("address = \"0.0.0.0:8443\"", format!("address = \"{}\"", a.public)),
        ("address = \"127.0.0.1:8080\"", format!("address = \"{}\"", a.intranet)),
        ("address = \"127.0.0.1:9443\"", format!("address = \"{}\"", a.admin)),
        ("upstreams = [\"http://127.0.0.1:9101\"]", format!("upstreams = [\"http://{}\"]", a.nik)),
        ("upstreams = [\"http://127.0.0.1:9102\"]", format!("upstreams = [\"http://{}\"]", a.rujukan)),
        ("endpoints = [\"https://127.0.0.1:18443\"]", format!("endpoints = [\"https://{}\"]", a.peer)),
        // The sandbox has no national SPLP; a placeholder secret lets the connector be set up.
        ("client_secret_env = \"SPLPD_NATIONAL_CLIENT_SECRET\"", format!("client_secret_file = \"{NATIONAL_SECRET}\"")),
    ];
    let mut text = format!("{HEADER}{example}");
    for (from, to) in rewrites {
        let line = format!("{from}\n");
        let found = text.matches(&line).count();
        if found != 1 {
            bail!(
                "the sample configuration holds the line `{from}` {found} times, where the demo expects it once; \
                 update the demo's rewrites (gateway/src/cli/demo/addresses.rs) with the example"
            );
        }
        text = text.replacen(&line, &format!("{to}  # demo: the example has {from}\n"), 1);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> SandboxAddrs {
        let at = |port: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        SandboxAddrs {
            public: at(40001),
            intranet: at(40002),
            admin: at(40003),
            nik: at(40004),
            rujukan: at(40005),
            peer: at(40006),
        }
    }

    #[test]
    fn every_address_of_the_example_moves_to_loopback() {
        let text = sandbox_config(super::super::EXAMPLE_CONFIG, &addrs()).unwrap();
        for old in ["0.0.0.0:8443\"", "127.0.0.1:8080\"", "127.0.0.1:9443\"", "9101\"]", "9102\"]"] {
            assert!(text.lines().all(|l| !l.starts_with(&format!("address = \"{old}"))), "{old} left");
        }
        assert!(text.contains("address = \"127.0.0.1:40001\"  # demo: the example has address = \"0.0.0.0:8443\""));
        assert!(text.contains("upstreams = [\"http://127.0.0.1:40005\"]"));
        assert!(text.contains("endpoints = [\"https://127.0.0.1:40006\"]"));
        assert!(text.contains("client_secret_file = \"national.secret\""));
        // Everything else is the example, verbatim.
        assert_eq!(text.lines().count(), super::super::EXAMPLE_CONFIG.lines().count() + HEADER.lines().count());
    }

    #[test]
    fn a_missing_line_is_an_error_not_a_silent_miss() {
        let example = super::super::EXAMPLE_CONFIG.replace("0.0.0.0:8443", "0.0.0.0:443");
        let err = sandbox_config(&example, &addrs()).unwrap_err();
        assert!(err.to_string().contains("0 times"), "{err}");
    }

    #[test]
    fn free_ports_are_distinct_loopback_ports() {
        let [a, b, c] = free_loopback_addrs::<3>().unwrap();
        assert!(a.ip().is_loopback() && a.port() != 0);
        assert!(a != b && b != c && a != c);
    }
}
