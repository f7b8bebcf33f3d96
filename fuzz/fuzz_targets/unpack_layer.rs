//! Layer unpacking: a tar layer (plain, gzip or zstd) applied onto a fresh rootfs through the
//! store's unpacker, then the tree checked against the unpacker's safety rules
//! (`wasmcri::fuzzing::unpack_layers`).
//!
//! Input: one mode byte, then the layer blob. `(mode & 0x7f) % 3` picks the compression
//! (0 none, 1 gzip, 2 zstd); bit 7 applies the blob twice, as two layers of one image, so
//! whiteouts and replacements meet lower-layer content.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmcri::fuzzing::{LayerCompression, unpack_layers};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, blob)) = data.split_first() else {
        return;
    };
    let compression = match (mode & 0x7f) % 3 {
        0 => LayerCompression::None,
        1 => LayerCompression::Gzip,
        _ => LayerCompression::Zstd,
    };
    let layers: &[&[u8]] = if mode & 0x80 != 0 {
        &[blob, blob]
    } else {
        &[blob]
    };
    // Hostile input is meant to fail; only a panic (a broken promise) is a finding.
    let _ = unpack_layers(layers, compression);
});
