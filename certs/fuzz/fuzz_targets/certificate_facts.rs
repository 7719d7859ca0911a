//! Reading a certificate presented by anyone on the network never panics, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = splpd_certs::facts::facts(data);
});
