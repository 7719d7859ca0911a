//! The demo's calls to the gateway's own directory (X-Road's REST metadata services): how an
//! agency's developer finds the region's clients, a provider's services, which of them it may
//! call, and a service's OpenAPI document.

use std::path::Path;

use super::calls::{Outcome, SampleCall};
use super::out;

/// The provider whose services the directory calls ask about.
const PROVIDER: &str = "ID/PEMDA/1602/DISDUKCAPIL";

/// The neighbouring region's provider, whose services its own gateway lists.
const PEER_PROVIDER: &str = "ID/PEMDA/1601/DISDUKCAPIL";

/// The name of the call about [`PEER_PROVIDER`].
const PEER_LIST: &str = "listMethods 1601";

/// The directory calls, made by `client` with its `credentials`, through the gateway at `base`.
pub(super) fn calls(client: &'static str, credentials: (&Path, &Path), base: &str, ca_file: &Path) -> Vec<SampleCall> {
    let call = |name: &'static str, url: String, note: &str| {
        SampleCall::get(name, client, Some(credentials), url).header("X-Road-Client", client).explained(note, ca_file)
    };
    vec![
        call("listClients", format!("{base}/listClients"), "the members and subsystems the gateway knows"),
        call("listMethods", format!("{base}/r1/{PROVIDER}/listMethods"), "Disdukcapil's services and endpoints"),
        call(
            "allowedMethods",
            format!("{base}/r1/{PROVIDER}/allowedMethods"),
            "those of Disdukcapil's services this client's grants open",
        ),
        call(
            "getOpenAPI",
            format!("{base}/r1/{PROVIDER}/getOpenAPI?serviceCode=nik-verify"),
            "the NIK check's OpenAPI document",
        ),
        call(
            PEER_LIST,
            format!("{base}/r1/{PEER_PROVIDER}/listMethods"),
            "the neighbouring region's Disdukcapil: this gateway asks the neighbour's",
        ),
    ]
}

/// What an answer of the directory holds, in a few words.
fn gist(call: &SampleCall, body: &str) -> String {
    let Ok(json) = serde_json::from_str::<serde_json::Value>(body) else {
        return format!("{} bytes", body.len());
    };
    let names = |list: &str, key: &str| -> String {
        let items = json[list].as_array().map(Vec::as_slice).unwrap_or_default();
        let names: Vec<String> = items
            .iter()
            .map(|i| {
                let id = if key == "id" { &i["id"] } else { i };
                let code = id["service_code"].as_str().or(id["subsystem_code"].as_str());
                code.or(id["member_code"].as_str()).unwrap_or("?").to_owned()
            })
            .collect();
        format!("{} {list}: {}", names.len(), names.join(", "))
    };
    match call.name {
        "listClients" => names("member", "id"),
        "listMethods" | "allowedMethods" | PEER_LIST => names("service", "service"),
        _ => format!(
            "OpenAPI {}, \"{}\"",
            json["openapi"].as_str().unwrap_or("?"),
            json["info"]["title"].as_str().unwrap_or("?")
        ),
    }
}

/// Prints one directory call and what it got; returns whether that was what the sample expects.
pub(super) fn print_row(n: usize, call: &SampleCall, outcome: &Outcome) -> bool {
    // The path on the gateway: /listClients, or the provider's under /r1/.
    let path = call.url.split_once("://").and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..])).unwrap_or(&call.url);
    let short = call.client.rsplit('/').next().unwrap_or(call.client);
    out::line(&format!("  {n:<2} {:<16} {short:<12} {} {path}", call.name, call.method));
    out::line(&format!("     {:<16}    ({})", "", call.note));
    let ok = outcome.matches(call);
    let got = match &outcome.x_road_error {
        Some(error) => format!("{} {error}: {}", outcome.status.as_u16(), outcome.message()),
        None => format!("{} {}", outcome.status.as_u16(), gist(call, &outcome.body)),
    };
    let flag = if ok { "" } else { "   !! expected 200" };
    out::line(&format!("     {:<16} -> {got}{flag}", ""));
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_summed_up_in_a_few_words() {
        let cs = calls("ID/PEMDA/1602/RSUD", (Path::new("/c"), Path::new("/k")), "https://gw", Path::new("/ca"));
        let methods = r#"{"service":[{"subsystem_code":"DISDUKCAPIL","service_code":"nik-verify"},
            {"subsystem_code":"DISDUKCAPIL","service_code":"akta"}]}"#;
        assert_eq!(gist(&cs[1], methods), "2 service: nik-verify, akta");
        let clients =
            r#"{"member":[{"id":{"member_code":"1602"}},{"id":{"member_code":"1602","subsystem_code":"RSUD"}}]}"#;
        assert_eq!(gist(&cs[0], clients), "2 member: 1602, RSUD");
        assert_eq!(
            gist(&cs[3], r#"{"openapi":"3.0.3","info":{"title":"Verifikasi NIK"}}"#),
            "OpenAPI 3.0.3, \"Verifikasi NIK\""
        );
        assert!(cs[3].curl.ends_with("'https://gw/r1/ID/PEMDA/1602/DISDUKCAPIL/getOpenAPI?serviceCode=nik-verify'"));
        assert_eq!(gist(&cs[4], methods), "2 service: nik-verify, akta");
        assert!(cs[4].curl.ends_with(" https://gw/r1/ID/PEMDA/1601/DISDUKCAPIL/listMethods"), "{}", cs[4].curl);
    }
}
