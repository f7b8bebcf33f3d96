//! The CRI log writer: guest output on stdout and stderr, log rotations and the final close,
//! then the file checked record by record against what was written
//! (`wasmcri::fuzzing::write_log`). Input: `[control][length][bytes]...` as decoded by
//! `wasmcri::fuzzing::log_ops` (bit 0 stderr, bit 1 rotate first, bits 2..8 repeat count).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmcri::fuzzing::{log_ops, write_log};

fuzz_target!(|data: &[u8]| {
    write_log(&log_ops(data)).expect("the log writer fails on a tmpfs");
});
