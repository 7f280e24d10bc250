//! Generates the connector's gRPC client (messages and the client only: a
//! page has no server and no socket) from the checked-in `.proto`, the same
//! contract the connector is built from, with `protox` (no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../confidant-connector/proto/confidant/connector/v1/connector.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["../confidant-connector/proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
