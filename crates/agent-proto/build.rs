fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/agent.proto");
    // Default stubs (UNIMPLEMENTED) let RPCs be added without breaking
    // servers that predate them (fakes, older agents).
    tonic_prost_build::configure()
        .generate_default_stubs(true)
        .compile_protos(&["proto/agent.proto"], &["proto"])?;
    Ok(())
}
