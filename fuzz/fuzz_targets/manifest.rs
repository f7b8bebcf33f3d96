//! Manifest, index and image config JSON: parsed as the store parses what it fetched, with
//! platform selection for indexes and the packaging decision for manifests
//! (`wasmcri::fuzzing::parse_manifest`). Input: the JSON bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Malformed JSON is meant to fail; only a panic (a broken promise) is a finding.
    let _ = wasmcri::fuzzing::parse_manifest(data);
});
