//! Lists the directory named by argv[1]: one `name size` line per entry, sorted, then `end`.
//! Exits 2 if it cannot be read.
fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: lsdir PATH");
        std::process::exit(2);
    };
    let entries = match std::fs::read_dir(&path) {
        Ok(rd) => rd,
        Err(e) => {
            eprintln!("cannot list {path}: {e}");
            std::process::exit(2);
        }
    };
    let mut lines: Vec<String> = entries
        .flatten()
        .map(|e| {
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            format!("{} {size}", e.file_name().to_string_lossy())
        })
        .collect();
    lines.sort();
    for l in lines {
        println!("{l}");
    }
    println!("end");
}
