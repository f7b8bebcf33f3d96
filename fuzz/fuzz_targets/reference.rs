//! Image references (`docker.io/library/x:tag@sha256:...`): parsing, normalisation and its
//! stability (`wasmcri::fuzzing::parse_reference`). Input: the reference as UTF-8 (the CRI
//! carries it in a protobuf string, so other bytes never reach the parser).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        // Invalid references are meant to fail; only a panic (a broken promise) is a finding.
        let _ = wasmcri::fuzzing::parse_reference(s);
    }
});
