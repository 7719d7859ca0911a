//! Compiles `proto/**/*.proto` with protox (a protobuf compiler written in
//! Rust, so no `protoc` is needed) and generates the prost messages and tonic
//! client and server code from the resulting descriptor set.

use std::{
    env,
    error::Error,
    fs,
    path::{Path, PathBuf},
};

/// The include root of the `.proto` files, relative to the crate.
const PROTO_DIR: &str = "proto";

/// The encoded `FileDescriptorSet` written to `OUT_DIR`, included by `lib.rs`.
const DESCRIPTOR_FILE: &str = "splpd_descriptor_set.bin";

/// The descriptor set of the gateway's own APIs alone (`splpd/**`), which its server reflection
/// offers: the sample agency packages are not the gateway's to describe.
const GATEWAY_DESCRIPTOR_FILE: &str = "splpd_gateway_descriptor_set.bin";

/// Where the gateway's own `.proto` files live, under [`PROTO_DIR`].
const GATEWAY_PROTOS: &str = "splpd";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_DIR}");
    println!("cargo:rerun-if-changed=build.rs");

    let mut protos = Vec::new();
    collect_protos(Path::new(PROTO_DIR), &mut protos)?;
    // Directory order differs between file systems; keep the output stable.
    protos.sort();

    let mut compiler = protox::Compiler::new([PROTO_DIR])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&protos)?;

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    fs::write(out_dir.join(DESCRIPTOR_FILE), compiler.encode_file_descriptor_set())?;

    let gateway_protos: Vec<&PathBuf> =
        protos.iter().filter(|p| p.starts_with(Path::new(PROTO_DIR).join(GATEWAY_PROTOS))).collect();
    let mut gateway = protox::Compiler::new([PROTO_DIR])?;
    gateway.include_imports(true).include_source_info(true);
    gateway.open_files(gateway_protos)?;
    fs::write(out_dir.join(GATEWAY_DESCRIPTOR_FILE), gateway.encode_file_descriptor_set())?;

    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

/// Appends every `.proto` file under `dir`, recursively, to `out`.
fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Box<dyn Error>> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
