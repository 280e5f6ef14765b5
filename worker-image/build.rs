//! Generates the client of the operator's progress service from the operator's own
//! `progress.proto` (one definition for both ends) with `protox`, a protobuf compiler in Rust,
//! so that building needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../operator/proto/progress.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["../operator/proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
