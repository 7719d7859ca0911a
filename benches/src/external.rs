//! nginx and haproxy configured for the gateway's job, as an operator would deploy them instead:
//! mTLS with client certificates verified against the region's CA, an access log written per
//! request, keep-alive connections to the upstream (HTTP/1.1 for HTTP, HTTP/2 for gRPC: nginx
//! `grpc_pass`, haproxy `proto h2`), one worker on one core. The harness never installs them.

use std::path::{Path, PathBuf};

use crate::pki::Sandbox;
use crate::upstream::Upstream;

/// A proxy the harness runs but does not build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum External {
    Nginx,
    Haproxy,
}

impl External {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Nginx => "nginx",
            Self::Haproxy => "haproxy",
        }
    }

    /// The Debian package that provides it.
    pub(crate) fn package(self) -> &'static str {
        self.name()
    }

    /// The installed binary, if any.
    pub(crate) fn binary(self) -> Option<PathBuf> {
        let name = self.name();
        ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    }

    /// The version line it prints, for the report.
    pub(crate) fn version(self, binary: &Path) -> String {
        let out = std::process::Command::new(binary).arg("-v").output();
        out.map(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text).lines().next().unwrap_or("").trim().to_owned()
        })
        .unwrap_or_default()
    }

    /// Writes its configuration and returns the arguments that run it in the foreground.
    pub(crate) fn prepare(self, sb: &Sandbox, port: u16, up: Upstream) -> anyhow::Result<Vec<String>> {
        match self {
            Self::Nginx => {
                let dir = sb.path("nginx");
                std::fs::create_dir_all(&dir)?;
                let conf = dir.join("nginx.conf");
                std::fs::write(&conf, nginx_config(sb, &dir, port, up))?;
                Ok(vec!["-p".into(), path(&dir), "-c".into(), path(&conf)])
            }
            Self::Haproxy => {
                let conf = sb.path("haproxy.cfg");
                std::fs::write(&conf, haproxy_config(sb, &sb.server_pem()?, port, up))?;
                // -db: stay in the foreground; the access log goes to standard output, which the
                // harness writes to a file.
                Ok(vec!["-db".into(), "-f".into(), path(&conf)])
            }
        }
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// nginx with one worker process and no master (so the harness measures one process), the
/// default `combined` access log to a file, and upstream buffers large enough that a 64 KiB
/// answer never goes to a temporary file.
fn nginx_config(sb: &Sandbox, dir: &Path, port: u16, up: Upstream) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile {nofile};
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{
    worker_connections {conns};
}}
http {{
    access_log {d}/access.log combined;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    http2_max_concurrent_streams 256;
    upstream http_upstream {{
        server {http};
        keepalive 64;
        keepalive_requests 100000000;
    }}
    upstream grpc_upstream {{
        server {grpc};
        keepalive 64;
        keepalive_requests 100000000;
    }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_client_certificate {ca};
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            proxy_pass http://http_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;
        }}
        location /kesehatan.v1.Rujukan/ {{
            grpc_pass grpc://grpc_upstream;
        }}
    }}
}}
"#,
        http = up.http,
        grpc = up.grpc,
        cert = sb.server_cert.display(),
        key = sb.server_key.display(),
        nofile = crate::procs::fd_limit(),
        conns = crate::procs::max_connections(),
        ca = sb.ca.display(),
    )
}

/// haproxy with one thread, an HTTP access log (`option httplog`) to standard output, and
/// connection reuse to the upstream.
fn haproxy_config(sb: &Sandbox, pem: &Path, port: u16, up: Upstream) -> String {
    format!(
        r#"global
    nbthread 1
    maxconn {maxconn}
    log stdout format raw local0

defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client 600s
    timeout server 600s
    timeout http-keep-alive 600s
    http-reuse always

frontend bench
    bind 127.0.0.1:{port} ssl crt {pem} ca-file {ca} verify required alpn h2,http/1.1
    use_backend grpc_upstream if {{ req.hdr(content-type) -m beg application/grpc }}
    default_backend http_upstream

backend http_upstream
    server up {http}

backend grpc_upstream
    server up {grpc} proto h2
"#,
        pem = pem.display(),
        maxconn = crate::procs::max_connections(),
        ca = sb.ca.display(),
        http = up.http,
        grpc = up.grpc,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (Sandbox, Upstream) {
        let sb = Sandbox::new().expect("sandbox");
        let up =
            Upstream { http: "127.0.0.1:9001".parse().expect("addr"), grpc: "127.0.0.1:9002".parse().expect("addr") };
        (sb, up)
    }

    #[test]
    fn nginx_verifies_client_certificates_logs_and_keeps_upstream_connections_alive() {
        let (sb, up) = fixture();
        let text = nginx_config(&sb, &sb.path("nginx"), 8443, up);
        assert!(text.contains("listen 127.0.0.1:8443 ssl http2;"));
        assert!(text.contains("ssl_verify_client on;"));
        assert!(text.contains(&format!("ssl_client_certificate {};", sb.ca.display())));
        assert!(text.contains("access_log "));
        assert!(text.contains("server 127.0.0.1:9001;\n        keepalive 64;"));
        assert!(text.contains("proxy_set_header Connection \"\";"));
        assert!(text.contains("grpc_pass grpc://grpc_upstream;"));
        assert!(text.contains("server 127.0.0.1:9002;"));
    }

    #[test]
    fn haproxy_verifies_client_certificates_logs_and_speaks_h2_to_the_grpc_upstream() {
        let (sb, up) = fixture();
        let text = haproxy_config(&sb, Path::new("/x/gw1.pem"), 8443, up);
        assert!(text.contains(&format!(
            "bind 127.0.0.1:8443 ssl crt /x/gw1.pem ca-file {} verify required alpn h2,http/1.1",
            sb.ca.display()
        )));
        assert!(text.contains("option httplog"));
        assert!(text.contains("http-reuse always"));
        assert!(text.contains("server up 127.0.0.1:9002 proto h2"));
        assert!(text.contains("server up 127.0.0.1:9001\n"));
    }
}
