//! Generates the Workload API's types and server from proto/workload.proto
//! with the protoc shipped in `protoc-bin-vendored` (no system protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_with_config(
            config,
            &[std::path::PathBuf::from("proto/workload.proto")],
            &[std::path::PathBuf::from("proto"), include],
        )?;
    println!("cargo:rerun-if-changed=proto/workload.proto");
    Ok(())
}
