//! Compiles the checked-in `.proto` files with `protox` (pure Rust), so no
//! system `protoc` is needed. The `.proto` files stay the source of truth.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/confidant/v1/wire.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
