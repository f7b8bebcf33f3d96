//! A guest to attach to. Without arguments: prints `ready tty=<yes|no>` (whether its stdin
//! and stdout are terminals), then answers every line of stdin with `echo: <line>` until end
//! of input, then prints `eof` and exits 0. With the argument `chatter`: writes a numbered
//! 1 KiB line to stdout every millisecond, forever (for stalled attachers). With `idle`:
//! prints `idle` and sleeps forever, reading nothing.
use std::io::{BufRead, IsTerminal, Write};

fn main() {
    if std::env::args().any(|a| a == "chatter") {
        let pad = "x".repeat(1000);
        let mut out = std::io::stdout().lock();
        for n in 0u64.. {
            let _ = writeln!(out, "chatter {n} {pad}");
            let _ = out.flush();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    if std::env::args().any(|a| a == "idle") {
        println!("idle");
        let _ = std::io::stdout().flush();
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    println!("ready tty={}", if tty { "yes" } else { "no" });
    let _ = std::io::stdout().flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        println!("echo: {line}");
        let _ = std::io::stdout().flush();
    }
    println!("eof");
}
