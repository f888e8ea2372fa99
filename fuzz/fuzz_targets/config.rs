//! The configuration parser and validator on arbitrary text: every outcome is a `Config` or a
//! list of errors each naming a key path; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = coreplex::config::load(text) {
        assert!(!errors.is_empty());
    }
});
