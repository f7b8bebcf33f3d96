//! Prints `started`, then a tick line every second, forever.
use std::io::Write;

fn main() {
    println!("started");
    let mut n: u64 = 0;
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        n += 1;
        println!("tick {n}");
        let _ = std::io::stdout().flush();
    }
}
