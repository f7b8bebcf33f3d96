//! Compiles `proto/api.proto` with protox (pure Rust) so building needs no `protoc`.

fn main() {
    // Read at run time, not with `env!`: a build script compiled in one checkout may be reused
    // from a shared target directory by another checkout.
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let proto_dir = std::path::Path::new(&manifest_dir).join("../proto");
    let proto = proto_dir.join("api.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let fds = protox::compile([&proto], [&proto_dir]).expect("compile CRI api.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
        .expect("generate CRI bindings");
}
