//! Every identifier parser takes any text without panicking, and whatever it accepts prints back
//! to text that parses to the same identifier, in each of its forms.
#![no_main]

use libfuzzer_sys::fuzz_target;
use splpd_certs::id::{IdKind, IdPrefix, Identity, ServiceId, SubsystemId};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(id) = text.parse::<ServiceId>() {
        assert_eq!(id.to_string(), text);
        assert_eq!(ServiceId::from_url_path(&id.to_url_path()).as_ref(), Ok(&id));
    }
    if let Ok(id) = ServiceId::from_url_path(text) {
        assert_eq!(ServiceId::from_url_path(&id.to_url_path()).as_ref(), Ok(&id));
        assert_eq!(id.to_string().parse::<ServiceId>().as_ref(), Ok(&id));
    }
    if let Ok(id) = text.parse::<SubsystemId>() {
        let urn = Identity::Subsystem(id.clone()).to_urn();
        assert_eq!(Identity::from_urn(&urn), Ok(Some(Identity::Subsystem(id))));
    }
    if let Ok(Some(identity)) = Identity::from_urn(text) {
        assert_eq!(Identity::from_urn(&identity.to_urn()).as_ref(), Ok(&Some(identity.clone())));
        let again = Identity::parse(identity.kind(), &identity.id_string());
        assert_eq!(again.as_ref(), Ok(&identity));
    }
    if let Ok(prefix) = text.parse::<IdPrefix>() {
        assert_eq!(prefix.to_string(), text);
    }
    let _ = text.parse::<IdKind>();
});
