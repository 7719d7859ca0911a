//! Reading a certificate presented by anyone on the network never panics, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(facts) = splpd_certs::facts::facts(data) {
        let _ = facts.identity();
    }
});
