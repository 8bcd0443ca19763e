//! Generates the prost messages and tonic client/server code for `proto/`.
//!
//! No `protoc` is needed: `protox` (pure Rust) parses the `.proto` files into
//! a `FileDescriptorSet`, and `tonic-prost-build` generates code from it.

use std::error::Error;

/// Root of the proto import path; package `renketsu.v1` lives in `renketsu/v1/`.
const INCLUDE_DIR: &str = "proto";

/// Every `.proto` file of the crate, relative to the crate root.
const PROTO_FILES: &[&str] = &[
    "proto/renketsu/v1/custodian.proto",
    "proto/renketsu/v1/linkage_unit.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    // compile_fds does not emit rerun-if-changed itself (only the protoc path does).
    println!("cargo:rerun-if-changed=build.rs");
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={file}");
    }

    let fds = protox::compile(PROTO_FILES, [INCLUDE_DIR])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
