//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and generates prost messages and
//! tonic services. The encoded descriptor set is kept for gRPC server reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "patron/events/v1/events.proto",
    "patron/api/v1/events_service.proto",
    "patron/api/v1/customers_service.proto",
    "patron/api/v1/kpi_service.proto",
    "patron/api/v1/admin_service.proto",
    "patron/lifecycle/v1/lifecycle.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let files = protox::compile(PROTOS, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("patron_descriptor.bin"), files.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(files)?;
    Ok(())
}
