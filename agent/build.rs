//! Builds the eBPF programs (for `bpfel-unknown-none`, on the nightly
//! toolchain, through aya-build) and the gRPC code from `proto/` (through
//! protox, so no system `protoc` is needed).

use std::path::PathBuf;

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    build_protos()?;
    build_ebpf()?;
    // With AYA_BUILD_SKIP=1 (userspace-only work) nothing is built; leave an
    // empty object so the crate compiles and loading fails with a clear error.
    let object = PathBuf::from(std::env::var("OUT_DIR")?).join("vigil");
    if !object.exists() {
        std::fs::write(&object, b"")?;
    }
    Ok(())
}

fn build_ebpf() -> anyhow::Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root_dir = manifest.join("../ebpf/vigil-ebpf");
    let root_dir = root_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", root_dir.display()))?;
    // The common crate is a path dependency of the programs: rebuild on its changes too.
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("../ebpf/vigil-common/src").display()
    );
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "vigil-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

fn build_protos() -> anyhow::Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest.join("../proto");
    let dir = proto_root.join("vigil/v1");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "proto"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Ok(());
    }
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&proto_root]).context("compiling proto/vigil/v1")?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out.join("vigil_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))
        .with_context(|| format!("writing {}", descriptor_path.display()))?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_fds(fds)
        .context("generating gRPC code")?;
    Ok(())
}
