//! Prints one line to stdout and one to stderr, exits 0.
fn main() {
    println!("hello from wasm");
    eprintln!("hello from wasm on stderr");
}
