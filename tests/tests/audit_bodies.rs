//! Bodies in the audit log (design §5: "bodies are not stored unless a service opts in"): a
//! service with `store_bodies` has the first `[audit] max_stored_body` bytes of each request and
//! response body in its exchanges' records, over HTTP/1.1 and HTTP/2; every other service's
//! records hold only the bodies' sizes and hashes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::{Method, StatusCode};
use splpd_tests::{Call, Pki, Proto, RegionBuilder, Upstream, sha256};

const KEPT: &str = "ID/PEMDA/1602/DISDUKCAPIL/pengaduan";
const PLAIN: &str = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify";
const RSUD: &str = "ID/PEMDA/1602/RSUD";

#[tokio::test]
async fn a_service_that_keeps_bodies_has_them_in_its_records_and_others_do_not() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let region = RegionBuilder::new(&pki)
        .service(KEPT, &upstream.url(), "store_bodies = true")
        .service(PLAIN, &upstream.url(), "")
        .grant(&format!("service = \"{KEPT}\"\nclient = \"{RSUD}\""))
        .grant(&format!("service = \"{PLAIN}\"\nclient = \"{RSUD}\""))
        .toml("[audit]\nmax_stored_body = \"1KiB\"")
        .start()
        .await;
    let rsud = pki.client(RSUD);

    // A small complaint, echoed back: both bodies whole in the record, over both protocols.
    for proto in [Proto::H1, Proto::H2] {
        let sent = format!("{{\"aduan\":\"antrean panjang\",\"proto\":\"{proto:?}\"}}");
        let call = Call::new(Method::POST, format!("/r1/{KEPT}/echo")).body(sent.clone());
        let reply = region.call(Some(&rsud), proto, call).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        let record = region.wait_records(1).await.into_iter().find(|r| r.exchange_id == reply.exchange_id()).unwrap();
        assert_eq!(record.request_body, sent.as_bytes(), "{proto:?}");
        assert_eq!(record.response_body, sent.as_bytes(), "{proto:?}");
        assert_eq!(record.request_body_sha256, sha256(sent.as_bytes()));
    }

    // A body larger than the limit: its first KiB kept, its size and hash over the whole.
    let big: Vec<u8> = (0..5000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let call = Call::new(Method::POST, format!("/r1/{KEPT}/echo")).body(big.clone());
    let reply = region.call(Some(&rsud), Proto::H1, call).await.unwrap();
    assert_eq!((reply.status, reply.body.len()), (StatusCode::OK, big.len()));
    let record = region.records().into_iter().find(|r| r.exchange_id == reply.exchange_id()).unwrap();
    assert_eq!(record.request_body, &big[..1024]);
    assert_eq!(record.response_body, &big[..1024]);
    assert_eq!((record.request_body_bytes, record.response_body_bytes), (5000, 5000));
    assert_eq!(record.request_body_sha256, sha256(&big));

    // Any other service: sizes and hashes only.
    let call = Call::new(Method::POST, format!("/r1/{PLAIN}/echo")).body("rahasia");
    let reply = region.call(Some(&rsud), Proto::H1, call).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let record = region.records().into_iter().find(|r| r.exchange_id == reply.exchange_id()).unwrap();
    assert!(record.request_body.is_empty() && record.response_body.is_empty(), "{record:?}");
    assert_eq!(record.request_body_bytes, 7);
    region.stop().await;
}
