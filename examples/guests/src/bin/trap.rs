//! Prints a line, then executes `unreachable` (a wasm trap).
fn main() {
    println!("about to trap");
    std::process::abort();
}
