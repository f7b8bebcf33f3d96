//! Connects to argv[1] (`ip:port`), sends `ping from wasm`, prints the reply line, exits 0;
//! exits 1 if the connection fails. WASI 0.2 sockets (build for wasm32-wasip2).
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7000".into());
    match TcpStream::connect(&addr) {
        Ok(mut s) => {
            s.write_all(b"ping from wasm\n").expect("write");
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).expect("read");
            if line.is_empty() {
                eprintln!("{addr} closed the connection without answering");
                std::process::exit(1);
            }
            print!("{line}");
        }
        Err(e) => {
            eprintln!("connect {addr}: {e}");
            std::process::exit(1);
        }
    }
}
