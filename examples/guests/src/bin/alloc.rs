//! Allocates argv[1] MiB (default 64) one MiB at a time, touching every page, printing
//! progress; then prints `done` and exits 0 (for memory-limit / OOM tests).
use std::io::Write;

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let mut chunks: Vec<Vec<u8>> = Vec::with_capacity(mib);
    for i in 1..=mib {
        let mut chunk = vec![0u8; 1 << 20];
        for page in chunk.iter_mut().step_by(4096) {
            *page = i as u8;
        }
        chunks.push(chunk);
        println!("allocated {i} MiB");
        let _ = std::io::stdout().flush();
    }
    println!("done, holding {} MiB", chunks.len());
}
