//! `cargo xtask lint`: formatting and clippy, userspace and eBPF, and the
//! daemon's module layers (no import cycle, see [`crate::layers`]).

use std::process::Command;

use anyhow::{Result, bail};

use crate::{cmd, setup, workspace};

/// The eBPF crate: outside `default-members`, and compiled only by the
/// nightly for the BPF target, so it gets its own invocations.
const EBPF_DIR: &str = "ebpf/vigil-ebpf";
const EBPF_TARGET: &str = "bpfel-unknown-none";
/// The fuzz crate's manifest, from the workspace root.
const FUZZ_MANIFEST: &str = "agent/fuzz/Cargo.toml";

/// Whether the daemon's top-level modules import each other without a cycle.
fn layers_ok() -> Result<bool> {
    let graph = crate::layers::graph(&workspace::root().join("agent/src"))?;
    match crate::layers::cycle(&graph) {
        None => Ok(true),
        Some(c) => {
            println!(
                "  import cycle between top-level modules: {}",
                c.join(" -> ")
            );
            Ok(false)
        }
    }
}

pub fn lint() -> Result<()> {
    // Clippy runs build scripts, and agent/build.rs compiles the eBPF object.
    setup::ensure(setup::Scope::Toolchain, setup::Report::Changes)?;

    let mut checks: Vec<(&str, Command)> = Vec::new();

    let mut fmt = cmd::new("cargo");
    fmt.args(["fmt", "--all", "--check"]);
    checks.push(("fmt", fmt));

    let mut clippy = cmd::new("cargo");
    // vigil-ebpf is a member, but it is a no_std BPF program: on the host
    // target it cannot build, so --workspace must leave it out.
    clippy.args([
        "clippy",
        "--workspace",
        "--exclude",
        "vigil-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    checks.push(("clippy", clippy));

    // The fuzz crate is a workspace of its own (its own lock file, built
    // by cargo-fuzz on nightly), so `--workspace` does not reach it. Its
    // code is plain Rust: stable clippy checks it, without the eBPF object
    // (no target loads programs) and in a target directory of its own.
    let fuzz_manifest = workspace::root().join(FUZZ_MANIFEST);
    let mut fuzz_fmt = cmd::new("cargo");
    fuzz_fmt
        .args(["fmt", "--check", "--manifest-path"])
        .arg(&fuzz_manifest);
    checks.push(("fmt (fuzz crate)", fuzz_fmt));
    let mut fuzz_clippy = cmd::new("cargo");
    fuzz_clippy
        .args(["clippy", "--all-targets", "--manifest-path"])
        .arg(&fuzz_manifest)
        .args(["--", "-D", "warnings"])
        .env("AYA_BUILD_SKIP", "1")
        .env(
            "CARGO_TARGET_DIR",
            workspace::root().join("target/fuzz-clippy"),
        );
    checks.push(("clippy (fuzz crate)", fuzz_clippy));

    let ebpf_dir = workspace::root().join(EBPF_DIR);
    let mut ebpf_fmt = cmd::nightly("cargo");
    ebpf_fmt.args(["fmt", "--check"]).current_dir(&ebpf_dir);
    checks.push(("fmt (eBPF, nightly)", ebpf_fmt));

    let mut ebpf_clippy = cmd::nightly("cargo");
    ebpf_clippy
        .args(["clippy", "--target", EBPF_TARGET, "-Z", "build-std=core"])
        .args(["--", "-D", "warnings"])
        .current_dir(&ebpf_dir);
    checks.push(("clippy (eBPF, nightly)", ebpf_clippy));

    // Every check runs even after a failure, so one CI run shows them all.
    let mut results = Vec::new();
    println!("lint: module layers");
    results.push(("module layers", layers_ok()?));
    for (name, mut check) in checks {
        println!("lint: {name}");
        let ok = cmd::status(&mut check)?.success();
        results.push((name, ok));
    }

    println!();
    println!("lint summary");
    for (name, ok) in &results {
        println!("  {:<24} {}", name, if *ok { "ok" } else { "FAIL" });
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| *name)
        .collect();
    if !failed.is_empty() {
        bail!("lint: failed: {}", failed.join(", "));
    }
    Ok(())
}
