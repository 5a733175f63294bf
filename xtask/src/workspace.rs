//! Where things are in the workspace, as cargo sees it.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde_json::Value;
use vigil_harness::Binaries;

use crate::cmd;

/// The workspace root: xtask lives one level below it.
pub fn root() -> &'static Path {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    // CARGO_MANIFEST_DIR is absolute, so it always has a parent.
    xtask.parent().unwrap_or(xtask)
}

/// What `cargo metadata` says about the workspace (no dependencies resolved).
pub struct Metadata(Value);

impl Metadata {
    pub fn load() -> Result<Self> {
        let mut cmd = cmd::new("cargo");
        cmd.args(["metadata", "--format-version", "1", "--no-deps"]);
        let json = cmd::probe(&mut cmd)?;
        let value = serde_json::from_str(&json).context("parsing `cargo metadata` output")?;
        Ok(Self(value))
    }

    /// The target directory, honouring `CARGO_TARGET_DIR` and cargo config.
    pub fn target_dir(&self) -> Result<PathBuf> {
        self.0["target_directory"]
            .as_str()
            .map(PathBuf::from)
            .context("`cargo metadata` has no target_directory")
    }

    /// Whether `package` declares a target of `kind` (`bench`, `test`, ...) named `name`.
    pub fn has_target(&self, package: &str, kind: &str, name: &str) -> bool {
        let Some(packages) = self.0["packages"].as_array() else {
            return false;
        };
        packages
            .iter()
            .filter(|p| p["name"] == package)
            .filter_map(|p| p["targets"].as_array())
            .flatten()
            .any(|t| {
                t["name"] == name
                    && t["kind"]
                        .as_array()
                        .is_some_and(|kinds| kinds.iter().any(|k| k == kind))
            })
    }
}

/// The debug build of the daemon, as `cargo build -p vigil` leaves it.
pub fn vigil_debug_bin(meta: &Metadata) -> Result<PathBuf> {
    let bin = meta.target_dir()?.join("debug").join("vigil");
    if !cmd::exists(&bin)? {
        anyhow::bail!("{} is missing after the build", bin.display());
    }
    Ok(bin)
}

/// Builds `vigil` (with its eBPF object) and `vigil-workload` in release
/// mode: a debug daemon would overstate its own cost and memory several times.
pub fn build_release(target_dir: &Path) -> Result<Binaries> {
    build_release_bin("vigil", "vigil")?;
    build_release_bin("vigil-tests", "vigil-workload")?;
    Binaries::in_dir(&target_dir.join("release"))
}

/// `cargo build --release -p PACKAGE --bin BIN`.
pub fn build_release_bin(package: &str, bin: &str) -> Result<()> {
    cmd::run(cmd::new("cargo").args(["build", "--release", "-p", package, "--bin", bin]))
}

/// Builds the daemon binary (which embeds the eBPF object) in debug mode.
pub fn build_vigil() -> Result<()> {
    cmd::run(cmd::new("cargo").args(["build", "-p", "vigil", "--bin", "vigil"]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }

    #[test]
    fn has_target_matches_name_and_kind() {
        let meta = Metadata(serde_json::json!({
            "packages": [{
                "name": "vigil",
                "targets": [
                    { "name": "vigil", "kind": ["lib"] },
                    { "name": "scope", "kind": ["bench"] }
                ]
            }]
        }));
        assert!(meta.has_target("vigil", "bench", "scope"));
        assert!(!meta.has_target("vigil", "bench", "decode"));
        assert!(!meta.has_target("vigil", "test", "scope"));
        assert!(!meta.has_target("vigil-tests", "bench", "scope"));
    }
}
