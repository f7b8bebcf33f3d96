//! Prints one 40 KiB line (written in pieces, newline only at the end), then `after`
//! (for partial-line splitting in the CRI log).
use std::io::Write;

fn main() {
    let mut out = std::io::stdout().lock();
    let piece = [b'x'; 1024];
    for _ in 0..40 {
        out.write_all(&piece).unwrap();
        out.flush().unwrap();
    }
    out.write_all(b"\nafter\n").unwrap();
    out.flush().unwrap();
}
