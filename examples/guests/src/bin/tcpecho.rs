//! TCP echo server on 0.0.0.0:argv[1] (default 7000), one connection at a time; echoes each
//! line back prefixed with `echo: `. WASI 0.2 sockets (build for wasm32-wasip2).
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(7000);
    let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind");
    println!("listening on {port}");
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let mut reader = BufReader::new(&stream);
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            let _ = (&stream).write_all(format!("echo: {line}").as_bytes());
            line.clear();
        }
    }
}
