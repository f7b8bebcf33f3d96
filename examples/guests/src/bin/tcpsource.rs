//! Bulk TCP source on 0.0.0.0:argv[1] (default 7001): each connection gets argv[2] MiB
//! (default 64) of bytes, then the connection is closed; one connection at a time. For
//! measuring port-forward throughput against a direct connection (WASI 0.2 sockets: build for
//! wasm32-wasip2).
use std::io::Write;
use std::net::TcpListener;

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(7001);
    let mib: usize = args.next().and_then(|m| m.parse().ok()).unwrap_or(64);
    let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind");
    println!("listening on {port}, {mib} MiB per connection");
    let block = vec![b'x'; 1 << 20];
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        for _ in 0..mib {
            if stream.write_all(&block).is_err() {
                break;
            }
        }
    }
}
