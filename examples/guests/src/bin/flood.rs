//! Writes to stdout without end (for the exec output cap): a hostile exec probe.
use std::io::Write;

fn main() {
    let mut out = std::io::stdout().lock();
    let chunk = [b'y'; 65536];
    loop {
        if out.write_all(&chunk).is_err() {
            return;
        }
    }
}
