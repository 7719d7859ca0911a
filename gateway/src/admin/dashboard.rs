//! The operators' dashboard (`GET /` on the admin listener): one page, in Bahasa Indonesia or
//! English, of what `/readyz` and `/metrics` say, for a person rather than a scraper. Plain HTML
//! that refreshes itself, with no script and nothing loaded from elsewhere, so that it works on
//! an office network without internet access.

use std::fmt::Write as _;

use super::metrics::{RouteSnapshot, StateSnapshot};
use super::{MaintenanceState, Readiness};

/// The page's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lang {
    /// Bahasa Indonesia, the default.
    Id,
    /// English.
    En,
}

impl Lang {
    /// `?lang=en` or `?lang=id` when given; otherwise the first of the two that `Accept-Language`
    /// names; otherwise Bahasa Indonesia.
    pub(super) fn choose(query: Option<&str>, accept_language: Option<&str>) -> Self {
        let asked = query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("lang=")));
        match asked {
            Some("en") => return Self::En,
            Some("id") => return Self::Id,
            _ => {}
        }
        let accept = accept_language.unwrap_or_default().to_ascii_lowercase();
        let first = accept
            .split(',')
            .map(|l| l.split(';').next().unwrap_or_default().trim())
            .find(|l| l.starts_with("en") || l.starts_with("id"));
        if first.is_some_and(|l| l.starts_with("en")) { Self::En } else { Self::Id }
    }

    fn t(self, id: &'static str, en: &'static str) -> &'static str {
        match self {
            Self::Id => id,
            Self::En => en,
        }
    }
}

/// Text with `&`, `<`, `>`, `"` and `'` escaped for HTML.
struct Html<'a>(&'a str);

impl std::fmt::Display for Html<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&#39;")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// The page.
pub(super) fn render(
    lang: Lang,
    state: &StateSnapshot,
    routes: &[RouteSnapshot],
    ready: &Readiness,
    maintenance: Option<&MaintenanceState>,
) -> String {
    let t = |id, en| lang.t(id, en);
    let mut h = String::with_capacity(8192);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"{}\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"10\">\
         <title>splpd {}</title><style>body{{font-family:sans-serif;margin:1.5em;color:#222}}\
         table{{border-collapse:collapse;margin:.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}\
         th{{background:#f0f0f0}}.ok{{color:#1a7f37}}.bad{{color:#cf222e}}.warn{{color:#9a6700}}.num{{text-align:right}}</style></head><body>\n",
        t("id", "en"),
        Html(&state.gateway)
    );
    let other = match lang {
        Lang::Id => "<a href=\"?lang=en\">English</a>",
        Lang::En => "<a href=\"?lang=id\">Bahasa Indonesia</a>",
    };
    let _ = writeln!(
        h,
        "<h1>splpd {}</h1><p>{other} · {}</p>",
        Html(&state.gateway),
        t("Halaman ini dimuat ulang setiap 10 detik.", "This page reloads every 10 seconds.")
    );

    if ready.reasons.is_empty() {
        let _ = writeln!(h, "<h2 class=\"ok\">{}</h2>", t("Siap melayani", "Ready"));
    } else {
        let _ = writeln!(h, "<h2 class=\"bad\">{}</h2><ul>", t("Tidak siap", "Not ready"));
        for r in &ready.reasons {
            let _ = writeln!(h, "<li>{}</li>", Html(r));
        }
        h.push_str("</ul>\n");
    }
    // What /readyz notes: not stopping the gateway, but for the operator to act on.
    if !ready.notes.is_empty() {
        let _ = writeln!(h, "<p class=\"warn\">{}</p><ul>", t("Perlu perhatian:", "Needs attention:"));
        for n in &ready.notes {
            let _ = writeln!(h, "<li class=\"warn\">{}</li>", Html(n));
        }
        h.push_str("</ul>\n");
    }
    match maintenance {
        Some(m) => {
            let _ = writeln!(
                h,
                "<p class=\"bad\">{}: {}</p>",
                t("Mode pemeliharaan aktif", "Maintenance mode is on"),
                Html(&m.describe())
            );
        }
        None => {
            let _ = writeln!(h, "<p>{}</p>", t("Mode pemeliharaan tidak aktif.", "Maintenance mode is off."));
        }
    }

    if let Some(c) = &state.config {
        let _ = writeln!(h, "<h2>{}</h2><table>", t("Konfigurasi", "Configuration"));
        let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", t("Berkas", "File"), Html(&c.file));
        let version = c.version.as_deref().unwrap_or("?");
        let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", t("Versi berlaku", "Version in force"), Html(version));
        let last = match &c.last_change {
            None => t("tidak ada sejak mulai", "none since start").to_owned(),
            Some(change) => {
                let at = change.at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
                let who = match (&change.by, &change.host_user) {
                    (Some(op), _) => format!("{} {op}", t("oleh", "by")),
                    (None, Some(account)) => format!("{} {account}", t("di host oleh", "on the host by")),
                    (None, None) => t("berkas dimuat ulang", "the file was reloaded").to_owned(),
                };
                let why = if change.issue.is_empty() { String::new() } else { format!(" ({})", change.issue) };
                format!("{} {at}, {who}{why}", change.version)
            }
        };
        let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", t("Perubahan terakhir", "Last change"), Html(&last));
        if let Some(refused) = &c.last_refused {
            let at = refused.at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
            let said = format!(
                "{} {at}: {}",
                refused.version,
                t(
                    "berkas konfigurasi (atau sertifikat, kunci atau CRL yang disebutnya) tidak dapat diberlakukan; \
                     konfigurasi yang berlaku tetap (lihat log)",
                    "the configuration file (or a certificate, key or CRL it names) could not be put in force; the \
                     configuration in force stays (see the log)"
                )
            );
            let _ = writeln!(
                h,
                "<tr><th>{}</th><td><span class=\"bad\">{}</span></td></tr>",
                t("Muat ulang ditolak", "Reload refused"),
                Html(&said)
            );
        }
        h.push_str("</table>\n");
    }

    let _ = writeln!(h, "<h2>{}</h2><table>", t("Log audit", "Audit log"));
    let available = if state.audit_available {
        format!("<span class=\"ok\">{}</span>", t("menerima catatan", "taking records"))
    } else {
        format!(
            "<span class=\"bad\">{}</span>",
            t("tidak dapat ditulis: setiap pertukaran ditolak", "cannot be written: every exchange is refused")
        )
    };
    let _ = writeln!(h, "<tr><th>{}</th><td>{available}</td></tr>", t("Keadaan", "State"));
    if let Some(c) = &state.audit {
        for (label, value) in [
            (t("Catatan ditulis sejak mulai", "Records written since start"), c.records),
            (t("Sinkronisasi ke disk", "Syncs to disk"), c.syncs),
            (t("Penulisan gagal", "Failed writes"), c.failed_batches),
            (t("Catatan dalam pohon Merkle", "Records in the Merkle tree"), c.tree_size),
        ] {
            let _ = writeln!(h, "<tr><th>{label}</th><td class=\"num\">{value}</td></tr>");
        }
        if let Some(disk) = c.disk {
            let class = if disk.is_low() { "bad" } else { "num" };
            let _ = writeln!(
                h,
                "<tr><th>{}</th><td class=\"{class}\">{}</td></tr>",
                t("Ruang kosong disk log", "Free space on the log's disk"),
                Html(&disk.describe_as(t("kosong dari", "free of")))
            );
        }
    }
    h.push_str("</table>\n");

    let _ = writeln!(
        h,
        "<h2>{}</h2><table><tr><th>{}</th><th>{}</th><th>2xx</th><th>4xx</th><th>5xx</th><th>{}</th><th>{}</th></tr>",
        t("Pertukaran sejak mulai", "Exchanges since start"),
        t("Layanan", "Service"),
        t("Jumlah", "Total"),
        t("Galat utama", "Main error"),
        t("Median waktu", "Median time")
    );
    if routes.is_empty() {
        let _ = writeln!(h, "<tr><td colspan=\"7\">{}</td></tr>", t("Belum ada pertukaran.", "No exchange yet."));
    }
    for r in routes {
        let name = match (r.service.as_str(), r.peer.as_str()) {
            ("", "") => t("(tanpa rute)", "(no route)").to_owned(),
            ("", peer) => format!("{} {peer}", t("gateway mitra", "peer gateway")),
            (service, "") => service.to_owned(),
            (service, peer) => format!("{service} ({} {peer})", t("dari gateway mitra", "from peer gateway")),
        };
        let class =
            |lo: u16, hi: u16| r.codes.iter().filter(|(c, _)| (lo..hi).contains(c)).map(|(_, n)| n).sum::<u64>();
        let total: u64 = r.codes.iter().map(|(_, n)| n).sum();
        let main_error =
            r.errors.iter().max_by_key(|(_, n)| *n).map_or_else(String::new, |(k, n)| format!("{k} ({n})"));
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"num\">{total}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            Html(&name),
            class(200, 300),
            class(400, 500),
            class(500, 600),
            Html(&main_error),
            median(r).unwrap_or_default()
        );
    }
    h.push_str("</table>\n");

    let _ = writeln!(
        h,
        "<h2>{}</h2><table><tr><th>{}</th><th>Endpoint</th><th>{}</th><th>{}</th></tr>",
        t("Endpoint layanan", "Service endpoints"),
        t("Layanan", "Service"),
        t("Keadaan", "State"),
        t("Permintaan berjalan", "Requests in flight")
    );
    for e in &state.endpoints {
        let up = if e.up && !e.checked {
            // Without health checks, nothing has looked: only failed calls would show it down.
            format!(
                "<span class=\"warn\">{}</span>",
                t(
                    "tidak diperiksa (tanpa health_check; hanya panggilan gagal yang menunjukkannya)",
                    "not checked (no health_check; only failed calls show it down)"
                )
            )
        } else if e.up {
            format!("<span class=\"ok\">{}</span>", t("sehat", "up"))
        } else {
            format!("<span class=\"bad\">{}</span>", t("tidak sehat atau dikeluarkan", "down or ejected"))
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{up}</td><td class=\"num\">{}</td></tr>",
            Html(&e.service),
            Html(&e.endpoint),
            e.in_flight
        );
    }
    h.push_str("</table>\n");

    let _ = writeln!(
        h,
        "<h2>{}</h2><table><tr><th>Listener</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
        t("Koneksi", "Connections"),
        t("Koneksi terbuka", "Open"),
        t("Permintaan berjalan", "Requests in flight"),
        t("Ditolak karena penuh", "Shed when full"),
        t("Jabat tangan TLS gagal", "TLS handshakes failed")
    );
    for l in &state.listeners {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td \
             class=\"num\">{}</td></tr>",
            Html(&l.name),
            l.connections,
            l.in_flight,
            l.shed,
            l.handshakes_failed
        );
    }
    h.push_str("</table>\n");
    if state.refusals_unrecorded > 0 {
        let _ = writeln!(
            h,
            "<p class=\"bad\">{}: {}</p>",
            t(
                "Penolakan pemanggil tanpa identitas yang tidak dicatat (koneksi ditutup tanpa jawaban, atau 401 \
                 polos; melewati [limits] refusals_per_address; alamatnya ada di log)",
                "Refusals of unidentified callers left unrecorded (the connection closed unanswered, or a bare 401; \
                 past [limits] refusals_per_address; the log names the addresses)"
            ),
            state.refusals_unrecorded
        );
    }
    let _ = writeln!(
        h,
        "<p>{} <a href=\"/metrics\">/metrics</a> · <a href=\"/readyz\">/readyz</a> · \
         <a href=\"/maintenance\">/maintenance</a></p>\n</body></html>",
        t("Untuk mesin:", "For machines:")
    );
    h
}

/// The bucket bound under which half of the route's exchanges finished, as "≤ 25 ms".
fn median(r: &RouteSnapshot) -> Option<String> {
    let total = r.duration.count();
    if total == 0 {
        return None;
    }
    let mut seen = 0;
    for (i, n) in r.duration.buckets.iter().enumerate() {
        seen += n;
        if seen * 2 >= total {
            // From the bounds in nanoseconds, which are whole: 2_500_000 / 1e6 is exactly 2.5.
            #[allow(clippy::cast_precision_loss)]
            return Some(match super::metrics::BOUNDS_NANOS.get(i) {
                Some(ns) if *ns < 1_000_000_000 => format!("≤ {} ms", *ns as f64 / 1e6),
                Some(ns) => format!("≤ {} s", *ns as f64 / 1e9),
                None => "> 60 s".to_owned(),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_follows_the_query_then_accept_language_then_defaults_to_indonesian() {
        assert_eq!(Lang::choose(None, None), Lang::Id);
        assert_eq!(Lang::choose(None, Some("en-US,en;q=0.9")), Lang::En);
        assert_eq!(Lang::choose(None, Some("id-ID,id;q=0.9,en;q=0.8")), Lang::Id);
        assert_eq!(Lang::choose(None, Some("fr-FR, en;q=0.5")), Lang::En);
        assert_eq!(Lang::choose(Some("lang=id"), Some("en")), Lang::Id);
        assert_eq!(Lang::choose(Some("x=1&lang=en"), None), Lang::En);
    }

    #[test]
    fn text_from_outside_is_escaped() {
        assert_eq!(Html("<b onclick='x'>&\"</b>").to_string(), "&lt;b onclick=&#39;x&#39;&gt;&amp;&quot;&lt;/b&gt;");
    }
}
