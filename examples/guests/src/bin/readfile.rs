//! Prints `$GREETING` and the contents of the file named by argv[1]; exits 2 if it is missing.
fn main() {
    let greeting = std::env::var("GREETING").unwrap_or_default();
    println!("GREETING={greeting}");
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: readfile PATH");
        std::process::exit(2);
    };
    match std::fs::read_to_string(&path) {
        Ok(s) => print!("{s}"),
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            std::process::exit(2);
        }
    }
}
