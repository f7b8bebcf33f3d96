//! Compiles `proto/api.proto` (the CRI) and `proto/admin.proto` (wasmcri's own admin API) with
//! protox (pure Rust) so building needs no `protoc`.

fn main() {
    // Read at run time, not with `env!`: a build script compiled in one checkout may be reused
    // from a shared target directory by another checkout.
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let proto_dir = std::path::Path::new(&manifest_dir).join("../proto");
    for (file, what) in [("api.proto", "CRI"), ("admin.proto", "admin")] {
        let proto = proto_dir.join(file);
        println!("cargo:rerun-if-changed={}", proto.display());
        let fds = protox::compile([&proto], [&proto_dir])
            .unwrap_or_else(|e| panic!("compile {what} {file}: {e}"));
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .compile_fds(fds)
            .unwrap_or_else(|e| panic!("generate {what} bindings: {e}"));
    }
}
