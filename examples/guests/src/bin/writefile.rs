//! Writes argv[2] (default `written by wasm`) to the file argv[1] and reads it back.
//! Exits 0 if the round trip worked, 1 if the write failed (e.g. a read-only mount),
//! 2 on bad usage, 3 if the read-back differs.
fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: writefile PATH [CONTENT]");
        std::process::exit(2);
    };
    let content = args.next().unwrap_or_else(|| "written by wasm".to_string());
    if let Err(e) = std::fs::write(&path, &content) {
        println!("write {path} failed: {e}");
        std::process::exit(1);
    }
    match std::fs::read_to_string(&path) {
        Ok(back) if back == content => println!("wrote {path}: {back}"),
        Ok(back) => {
            println!("read back {back:?}, expected {content:?}");
            std::process::exit(3);
        }
        Err(e) => {
            println!("read back {path} failed: {e}");
            std::process::exit(3);
        }
    }
}
