//! Compiles the checked-in connector `.proto` with `protox` (pure Rust, no
//! system `protoc`), then generates the tonic client and server from it.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/confidant/connector/v1/connector.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
